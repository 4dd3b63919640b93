//! `cargo xtask manual`: tracer's man pages and shell completions, which tracer makes from its
//! own command-line definitions (`tracer man`, `tracer completions`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::shell;

/// Where each completion script goes, under the directory written and in the image: the
/// places bash-completion, zsh and fish look for their vendors' scripts.
pub const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "share/bash-completion/completions/tracer"),
    ("zsh", "share/zsh/vendor-completions/_tracer"),
    ("fish", "share/fish/vendor_completions.d/tracer.fish"),
];

/// Where the man pages go, under the directory written.
pub const MAN_PAGES: &str = "share/man/man1";

/// Writes the man pages and completion scripts of `tracer` under `prefix` (as under /usr).
pub fn write(tracer: &Path, prefix: &Path) -> Result<()> {
    let man = prefix.join(MAN_PAGES);
    let pages = shell::output(shell::cmd(tracer).arg("man").arg(&man))?;
    for (shell_name, path) in COMPLETIONS {
        let script = shell::output(shell::cmd(tracer).args(["completions", shell_name]))?;
        let path = prefix.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        std::fs::write(&path, script).with_context(|| format!("write {}", path.display()))?;
    }
    eprintln!(
        "xtask: {} man pages in {}, completions for {} under {}",
        pages.lines().count(),
        man.display(),
        COMPLETIONS
            .iter()
            .map(|(shell, _)| *shell)
            .collect::<Vec<_>>()
            .join(", "),
        prefix.display()
    );
    Ok(())
}

/// The default place: target/manual.
pub fn default_prefix() -> PathBuf {
    shell::workspace_root().join("target/manual")
}
