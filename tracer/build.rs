//! Builds the kernel programs (`tracer-ebpf`) for bpfel-unknown-none so that `src/` can embed
//! them; `cargo xtask setup` installs what this needs (rust-src, bpf-linker).

use anyhow::{Context, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The fuzz targets (`--cfg fuzzing`) drive parsers and load nothing: they get empty
    // objects, and their sanitized builds skip two minutes of building the kernel programs.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        for target in ebpf.targets.iter().filter(|target| target.is_bin()) {
            std::fs::write(out_dir.join(&target.name), [])?;
        }
        return Ok(());
    }
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;

    // The kernel programs are built by the toolchain that builds tracer, on stable too: building
    // `core` for the BPF target needs `-Z build-std`, which RUSTC_BOOTSTRAP unlocks.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    // SAFETY: the build script is single-threaded here.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building the kernel programs failed; did `cargo xtask setup` run?")?;
    // An object per binary target: every tool's (`tracer`), and each tool's alone.
    for target in ebpf.targets.iter().filter(|target| target.is_bin()) {
        let object = out_dir.join(&target.name);
        strip_dwarf(&object).with_context(|| format!("stripping {}", object.display()))?;
    }
    Ok(())
}

/// Drops the DWARF sections from the kernel programs' object. The linker needs them to emit
/// BTF, which stays; aya has no use for them, yet walks their ~24k relocations at every load.
fn strip_dwarf(path: &std::path::Path) -> anyhow::Result<()> {
    let data = std::fs::read(path)?;
    let mut elf = object::build::elf::Builder::read(data.as_slice())?;
    for section in elf.sections.iter_mut() {
        let name = section.name.as_slice();
        if name.starts_with(b".debug_") || name.starts_with(b".rel.debug_") {
            section.delete = true;
        }
    }
    elf.delete_orphans();
    // The linker names sections from the symbol string table, which the builder rewrites on
    // its own; section names get a table of their own.
    let names = elf.sections.add();
    names.name = b".shstrtab"[..].into();
    names.sh_type = object::elf::SHT_STRTAB;
    names.data = object::build::elf::SectionData::SectionString;
    let mut stripped = Vec::new();
    elf.write(&mut stripped)?;
    std::fs::write(path, stripped)?;
    Ok(())
}
