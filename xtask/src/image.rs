//! `cargo xtask image`: tracer as an OCI image, made without a registry: a static musl binary
//! in a `FROM scratch` image, loaded into the local docker and saved for `docker load` or
//! `ctr import` elsewhere.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::shell;

/// The architectures tracer is built for: fleets mix x86-64 and arm64 nodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    Aarch64,
}

impl Arch {
    /// This machine's.
    pub const HOST: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };

    /// The musl target: a static binary needs nothing from the image.
    pub const fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's cross toolchain for the C in tracer's crates (ring) and the link.
    pub const fn cross_prefix(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }
}

/// The host's musl target.
pub const TARGET: &str = Arch::HOST.triple();

/// The image's name and tag.
pub fn name() -> String {
    format!("tracer:{}", env!("CARGO_PKG_VERSION"))
}

/// Where the image is saved.
pub fn archive() -> PathBuf {
    shell::workspace_root().join("target/tracer-image.tar")
}

/// Builds tracer as a static (musl) binary for the host and returns its path.
pub fn static_binary() -> Result<PathBuf> {
    static_binary_for(Arch::HOST)
}

/// Builds tracer as a static (musl) binary for `arch` (its kernel programs built for it too)
/// and returns its path.
pub fn static_binary_for(arch: Arch) -> Result<PathBuf> {
    let triple = arch.triple();
    let mut cargo = shell::cargo();
    cargo.args([
        "build",
        "--release",
        "--package",
        "tracer",
        "--target",
        triple,
    ]);
    if arch != Arch::HOST {
        let prefix = arch.cross_prefix();
        let target = triple.replace('-', "_");
        cargo
            .env(format!("CC_{target}"), format!("{prefix}-gcc"))
            .env(format!("AR_{target}"), format!("{prefix}-ar"))
            .env(
                format!("CARGO_TARGET_{}_LINKER", target.to_uppercase()),
                format!("{prefix}-gcc"),
            );
    }
    shell::run(&mut cargo)?;
    Ok(shell::workspace_root()
        .join("target")
        .join(triple)
        .join("release/tracer"))
}

/// Builds the image into `docker`'s store and saves it; returns its name.
pub fn build(docker: &tracer_tests::Docker) -> Result<String> {
    let root = shell::workspace_root();
    let binary = static_binary()?;
    let context = root.join("target/image");
    std::fs::create_dir_all(&context)?;
    std::fs::copy(&binary, context.join("tracer"))
        .with_context(|| format!("copy {}", binary.display()))?;
    crate::manual::write(&binary, &context.join("usr"))?;
    let revision = shell::output(
        shell::cmd("git")
            .current_dir(&root)
            .args(["rev-parse", "HEAD"]),
    )
    .map(|sha| sha.trim().to_owned())
    .unwrap_or_else(|_| "unknown".into());
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             LABEL org.opencontainers.image.title=\"tracer\" \\\n      \
             org.opencontainers.image.description=\"{}\" \\\n      \
             org.opencontainers.image.version=\"{}\" \\\n      \
             org.opencontainers.image.revision=\"{revision}\" \\\n      \
             org.opencontainers.image.licenses=\"{}\"\n\
             COPY tracer /tracer\n\
             COPY usr /usr\n\
             ENTRYPOINT [\"/tracer\"]\n\
             CMD [\"serve\"]\n",
            "bcc-style eBPF tracing of why latency happens inside the Linux kernel",
            env!("CARGO_PKG_VERSION"),
            env!("CARGO_PKG_LICENSE"),
        ),
    )?;
    let name = name();
    shell::run(
        docker
            .command()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--quiet", "--tag", &name, "--tag", "tracer:latest"])
            .arg(&context),
    )?;
    let archive = archive();
    shell::run(
        docker
            .command()
            .args(["save", "--output"])
            .arg(&archive)
            .args([&name, "tracer:latest"]),
    )?;
    let size = std::fs::metadata(&archive)?.len();
    eprintln!(
        "xtask: image {name}: {:.1} MB, saved to {}",
        size as f64 / 1e6,
        archive.display()
    );
    Ok(name)
}
