//! Builds the kernel programs (`tracer-ebpf`) for bpfel-unknown-none so that `src/` can embed
//! them; `cargo xtask setup` installs what this needs (rust-src, bpf-linker).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, anyhow, bail};

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
    build_kernel_programs(ebpf, &metadata.target_directory, &out_dir)
        .context("building the kernel programs failed; did `cargo xtask setup` run?")?;
    // An object per binary target: every tool's (`tracer`), and each tool's alone.
    for target in ebpf.targets.iter().filter(|target| target.is_bin()) {
        let object = out_dir.join(&target.name);
        strip_dwarf(&object).with_context(|| format!("stripping {}", object.display()))?;
    }
    Ok(())
}

/// Builds every binary of `tracer-ebpf` (one object per tool, and `tracer` with them all) and
/// copies them into `out_dir`.
///
/// Like `aya_build::build_ebpf`, except for where: aya-build builds under `OUT_DIR`, which is
/// new for every profile, target and feature set that builds tracer (check, clippy, debug,
/// release, musl, tests), and each paid two minutes for `core` and the programs again. One
/// target directory per architecture builds them once.
fn build_kernel_programs(
    ebpf: &cargo_metadata::Package,
    target_directory: &cargo_metadata::camino::Utf8Path,
    out_dir: &Path,
) -> anyhow::Result<()> {
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // The programs and what they include; cargo also reruns this when tracer-ebpf's library
    // (a build-dependency) changes.
    println!("cargo:rerun-if-changed={root_dir}");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH")?;
    let bpf_target = match std::env::var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "big" => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let target_dir = target_directory.join("kernel-programs").join(&arch);
    // The programs are built by the cargo and toolchain that build tracer, on stable too:
    // building `core` for the BPF target needs `-Z build-std`, which RUSTC_BOOTSTRAP unlocks.
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--package", &ebpf.name])
        .args(["--bins", "--release", "--target", bpf_target])
        .args(["-Z", "build-std=core", "--target-dir", target_dir.as_str()])
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .output()
        .context("running cargo for the kernel programs")?;
    if !output.status.success() {
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo:warning={line}");
        }
        bail!("cargo build of {} failed: {}", ebpf.name, output.status);
    }
    let built = target_dir.join(bpf_target).join("release");
    for target in ebpf.targets.iter().filter(|target| target.is_bin()) {
        let object = built.join(&target.name);
        std::fs::copy(&object, out_dir.join(&target.name))
            .with_context(|| format!("copying {object}"))?;
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
