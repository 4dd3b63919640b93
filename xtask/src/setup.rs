//! Installs what tracer's build and tests need, once: each step checks before it acts, so a set-up
//! machine passes through in well under a second.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result, bail};

use crate::shell;

/// The bpf-linker release known to link our programs; built against the toolchain's own LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Default)]
pub struct Needs {
    pub test: bool,
    pub bench: bool,
    /// The container image: the musl target and a docker engine.
    pub image: bool,
    /// Test kernels in QEMU: the emulator and what guests are made of.
    pub kernels: bool,
    /// tracer for arm64 as well: its musl target, a cross toolchain, and qemu-user to run it.
    pub aarch64: bool,
}

/// Debian packages the end-to-end tests drive: PostgreSQL (server, psql, pgbench and
/// pg_stat_statements), MariaDB (server, client, Perl's driver for prepared statements), openssl
/// for TLS servers' certificates and a slow TLS client, curl for scrapes over TLS, Prometheus's own Python client, whose parsers check what
/// `tracer serve` exposes, Prometheus itself (promtool tests the alerting rules; the server
/// fires them), a docker engine with what to make container
/// images from without a registry (a static busybox, debootstrap), and podman (with its pause
/// process) to run the DaemonSet's pod; headless Chromium loads `tracer report`'s pages.
const TEST_PACKAGES: &[&str] = &[
    "postgresql",
    "mariadb-server",
    "mariadb-client",
    "libdbd-mariadb-perl",
    "openssl",
    "curl",
    "python3-prometheus-client",
    "prometheus",
    "docker.io",
    "busybox-static",
    "debootstrap",
    "podman",
    "catatonit",
    "chromium",
];
/// What `cargo xtask image` builds with: musl's C compiler for the C of tracer's crates (ring,
/// rustls's cryptography) in the static binary, and docker.
const IMAGE_PACKAGES: &[&str] = &["musl-tools", "docker.io"];
/// What the kernel matrix boots guests with: musl's C compiler for the static binary, the
/// emulator, a static busybox, the initramfs and scratch-disk tools, xz for Debian 13's modules
/// and depmod for their dependencies.
const KERNEL_PACKAGES: &[&str] = &[
    "musl-tools",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "e2fsprogs",
    "xz-utils",
    "kmod",
];
/// What tracer for arm64 is built with on an x86-64 machine (the C of ring, the link) and run
/// with (`qemu-aarch64`).
const AARCH64_PACKAGES: &[&str] = &[
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-user",
];
/// Peer tools the benchmarks measure tracer against, and what they load.
const BENCH_PACKAGES: &[&str] = &[
    "bpftrace",
    "libbpf-tools",
    "bpfcc-tools",
    "postgresql",
    "mariadb-server",
    "sysbench",
];

pub fn run(needs: Needs) -> Result<()> {
    let sysroot = sysroot()?;
    rust_src(&sysroot)?;
    bpf_linker(&sysroot)?;
    if needs.image || needs.kernels {
        musl_target(&sysroot, crate::image::TARGET)?;
    }
    if needs.aarch64 {
        musl_target(&sysroot, crate::image::Arch::Aarch64.triple())?;
    }
    let mut packages = Vec::new();
    if needs.image {
        packages.extend_from_slice(IMAGE_PACKAGES);
    }
    if needs.test {
        packages.extend_from_slice(TEST_PACKAGES);
    }
    if needs.bench {
        packages.extend_from_slice(BENCH_PACKAGES);
    }
    if needs.kernels {
        packages.extend_from_slice(KERNEL_PACKAGES);
    }
    if needs.aarch64 {
        packages.extend_from_slice(AARCH64_PACKAGES);
    }
    packages.sort_unstable();
    packages.dedup();
    debian_packages(&packages)?;
    if needs.test {
        python_environment()?;
    }
    Ok(())
}

/// Python packages from PyPI, in a virtual environment of the project's own (`target/python`):
/// kubernetes-validate, which checks the manifests against the Kubernetes API schema, and
/// Oracle's own MySQL driver, whose prepared statements and query attributes are what MySQL's
/// clients send (pure Python: it needs no client library of the host's).
pub fn python_environment() -> Result<()> {
    const PACKAGES: &[&str] = &[
        "kubernetes-validate==1.37.0",
        "mysql-connector-python==26.10.0",
    ];
    let venv = shell::workspace_root().join("target/python");
    let marker = venv.join(PACKAGES.join(" "));
    if marker.exists() {
        return Ok(());
    }
    if !venv.join("bin/pip").exists() {
        shell::run(shell::cmd("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    shell::run(
        shell::cmd(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PACKAGES),
    )?;
    fs::write(marker, "")?;
    Ok(())
}

/// The active toolchain's sysroot: the one that builds both tracer and its kernel programs.
fn sysroot() -> Result<PathBuf> {
    let out = shell::output(
        shell::cmd("rustc")
            .current_dir(shell::workspace_root())
            .args(["--print", "sysroot"]),
    )?;
    Ok(PathBuf::from(out.trim()))
}

/// The image's static binary is built for musl.
fn musl_target(sysroot: &std::path::Path, triple: &str) -> Result<()> {
    if sysroot.join("lib/rustlib").join(triple).is_dir() {
        return Ok(());
    }
    shell::run(
        shell::cmd("rustup")
            .current_dir(shell::workspace_root())
            .args(["target", "add", triple]),
    )
}

/// `-Z build-std=core` compiles `core` for bpfel-unknown-none from source.
fn rust_src(sysroot: &std::path::Path) -> Result<()> {
    if sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        return Ok(());
    }
    shell::run(
        shell::cmd("rustup")
            .current_dir(shell::workspace_root())
            .args(["component", "add", "rust-src"]),
    )
}

/// bpf-linker must read the bitcode rustc writes, so it is built against the very libLLVM of the
/// active toolchain (Debian has no LLVM 22); a linker built against another one is rebuilt.
fn bpf_linker(sysroot: &std::path::Path) -> Result<()> {
    let lib = sysroot.join("lib");
    let linked_here = shell::output(shell::cmd("ldd").arg(installed_bpf_linker()))
        .is_ok_and(|ldd| ldd.contains(&*lib.to_string_lossy()) && !ldd.contains("not found"));
    if linked_here {
        return Ok(());
    }
    let llvm = fs::read_dir(&lib)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .find_map(|name| {
            let stem = name.strip_prefix("lib")?.strip_suffix(".so")?;
            stem.starts_with("LLVM-").then(|| stem.to_owned())
        })
        .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
    let Some(major) = llvm
        .strip_prefix("LLVM-")
        .and_then(|rest| rest.split('-').next())
    else {
        bail!("cannot tell the LLVM version of {llvm}");
    };
    let rustflags = format!(
        "-L native={lib} -l dylib={llvm} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib.display()
    );
    shell::run(
        shell::cmd(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(std::env::temp_dir())
            .env("RUSTFLAGS", rustflags)
            .args([
                "install",
                "bpf-linker",
                "--force",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{major},no-llvm-linking")),
    )
}

fn installed_bpf_linker() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    cargo_home.join("bin/bpf-linker")
}

fn debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            !shell::output(shell::cmd("dpkg-query").args(["-W", "-f=${Status}", package]))
                .is_ok_and(|status| status == "install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !shell::is_root() {
        bail!(
            "missing Debian packages {}: run as root to install them",
            missing.join(" ")
        );
    }
    shell::run(shell::cmd("apt-get").args(["update", "-q"]))?;
    shell::run(
        shell::cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}
