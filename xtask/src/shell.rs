//! Running commands, loudly, and failing with their name when they fail.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};

pub fn cmd(program: impl AsRef<std::ffi::OsStr>) -> Command {
    Command::new(program)
}

/// The cargo that runs this xtask.
pub fn cargo() -> Command {
    let mut cargo = cmd(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(workspace_root());
    cargo
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs to completion, inheriting stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Runs quietly and returns stdout; fails unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!(
            "{} failed: {status}: {}",
            describe(cmd),
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Replaces this process.
pub fn exec(cmd: &mut Command) -> Result<()> {
    Err(cmd.exec()).with_context(|| format!("cannot run {}", describe(cmd)))
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
