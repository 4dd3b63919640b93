//! Debian's kernels, fetched from Debian's archive with apt (which checks every package against
//! the archive's signed indexes), resolved through the cloud meta package (security updates bump
//! the ABI number), and kept under target/kernels with the checksums of what was extracted.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::shell;

/// A Debian release's kernel: its version, and the suites it comes from.
pub struct Release {
    pub version: &'static str,
    codename: &'static str,
}

/// The kernels users run: Debian 11, 12 and 13.
pub const RELEASES: &[Release] = &[
    Release {
        version: "5.10",
        codename: "bullseye",
    },
    Release {
        version: "6.1",
        codename: "bookworm",
    },
    Release {
        version: "6.12",
        codename: "trixie",
    },
];

/// Modules the guest loads, with what they need: the disk, KVM inside the emulator, and loop
/// devices (a swap area for pg's swap-in test).
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "kvm_amd", "loop"];

/// A kernel ready to boot.
pub struct Kernel {
    pub version: &'static str,
    /// Its full release, as `uname -r` says.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// The modules to load, in order (decompressed).
    pub modules: Vec<PathBuf>,
}

pub fn release(version: &str) -> Result<&'static Release> {
    RELEASES
        .iter()
        .find(|release| release.version == version)
        .with_context(|| {
            let known: Vec<&str> = RELEASES.iter().map(|r| r.version).collect();
            format!(
                "no kernel {version}: one of {}, host or all",
                known.join(", ")
            )
        })
}

/// The release's kernel, from the cache if it is there and intact.
pub fn fetch(release: &Release) -> Result<Kernel> {
    let dir = shell::workspace_root()
        .join("target/kernels")
        .join(release.version);
    let sums = dir.join("SHA256SUMS");
    if !sums.exists() || !checked(&dir)? {
        download(release, &dir)?;
    }
    load(release, &dir)
}

/// Whether the extracted files still match their checksums.
fn checked(dir: &Path) -> Result<bool> {
    let status = Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(dir)
        .status()?;
    Ok(status.success())
}

fn download(release: &Release, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let apt_dir = dir.join("apt");
    for sub in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt_dir.join(sub))?;
    }
    let codename = release.codename;
    let sources = apt_dir.join("sources.list");
    std::fs::write(
        &sources,
        format!(
            "deb http://deb.debian.org/debian {codename} main\n\
             deb http://security.debian.org/debian-security {codename}-security main\n"
        ),
    )?;
    // apt with a configuration of its own: the host's sources and state stay as they are.
    let apt = |program: &str| {
        let mut command = Command::new(program);
        for (option, value) in [
            ("Dir::Etc::sourcelist", sources.display().to_string()),
            ("Dir::Etc::sourceparts", "-".into()),
            (
                "Dir::State::lists",
                apt_dir.join("lists").display().to_string(),
            ),
            ("Dir::Cache", apt_dir.join("cache").display().to_string()),
            ("Dir::State::status", "/dev/null".into()),
            ("APT::Architecture", "amd64".into()),
            ("APT::Sandbox::User", "root".into()),
        ] {
            command.arg("-o").arg(format!("{option}={value}"));
        }
        command.current_dir(&apt_dir);
        command
    };
    eprintln!("kernels: fetching Debian {codename}'s cloud kernel");
    shell::run(apt("apt-get").args(["-q", "update"]))?;
    let depends = shell::output(apt("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
    let package = depends
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends: linux-image-"))
        .map(|rest| format!("linux-image-{rest}"))
        .with_context(|| format!("no kernel package behind linux-image-cloud-amd64: {depends}"))?;
    shell::run(apt("apt-get").args(["-q", "download", &package]))?;
    let deb = std::fs::read_dir(&apt_dir)?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .context("apt-get download left no package")?;
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    shell::run(shell::cmd("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/*' '*/modules/*'",
        deb.display(),
        tree.display()
    )))?;
    // xz-compressed modules (Debian 13) decompressed for busybox's insmod.
    shell::run(
        shell::cmd("find")
            .arg(&tree)
            .args(["-name", "*.ko.xz", "-exec", "xz", "-d", "{}", "+"]),
    )?;
    // The package leaves modules.dep to depmod at install; depmod reads <base>/lib/modules.
    if tree.join("usr/lib/modules").is_dir() && !tree.join("lib").exists() {
        std::os::unix::fs::symlink("usr/lib", tree.join("lib"))?;
    }
    let version = std::fs::read_dir(tree.join("lib/modules"))?
        .filter_map(|entry| Some(entry.ok()?.file_name()))
        .next()
        .context("no modules in the kernel package")?;
    shell::run(shell::cmd("depmod").arg("-b").arg(&tree).arg(&version))?;
    shell::run(
        shell::cmd("sh")
            .arg("-c")
            .arg(
                "find tree -type f \\( -name 'vmlinuz-*' -o -name '*.ko' -o -name modules.dep \\) \
         -exec sha256sum {} + > SHA256SUMS",
            )
            .current_dir(dir),
    )?;
    std::fs::remove_dir_all(&apt_dir)?;
    Ok(())
}

fn load(release: &Release, dir: &Path) -> Result<Kernel> {
    let boot = dir.join("tree/boot");
    let vmlinuz = std::fs::read_dir(&boot)?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the kernel package")?;
    let name = vmlinuz.file_name().unwrap().to_string_lossy().into_owned();
    let uname = name.trim_start_matches("vmlinuz-").to_owned();
    let modules_dir = dir.join("tree/lib/modules").join(&uname);
    let modules = modules_in_order(&modules_dir)?;
    Ok(Kernel {
        version: release.version,
        release: uname,
        vmlinuz,
        modules,
    })
}

/// [`MODULES`] and what they depend on, dependencies first, from modules.dep; built-in ones
/// (not in it) are left out.
fn modules_in_order(dir: &Path) -> Result<Vec<PathBuf>> {
    let deps = std::fs::read_to_string(dir.join("modules.dep"))?;
    let entry = |name: &str| -> Option<(String, Vec<String>)> {
        deps.lines().find_map(|line| {
            let (module, needs) = line.split_once(':')?;
            let file = Path::new(module)
                .file_name()?
                .to_string_lossy()
                .into_owned();
            let stem = file.split(".ko").next()?.replace('-', "_");
            (stem == name).then(|| {
                let needs = needs.split_whitespace().map(str::to_owned).collect();
                (module.to_owned(), needs)
            })
        })
    };
    let mut ordered: Vec<PathBuf> = Vec::new();
    for name in MODULES {
        let Some((module, needs)) = entry(name) else {
            continue;
        };
        // modules.dep lists what a module needs, deepest last: load in reverse.
        for path in needs.iter().rev().chain([&module]) {
            let path = dir.join(path.trim_end_matches(".xz"));
            if !path.exists() {
                bail!("{} is missing from the kernel package", path.display());
            }
            if !ordered.contains(&path) {
                ordered.push(path);
            }
        }
    }
    Ok(ordered)
}
