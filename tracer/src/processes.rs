//! Processes as /proc shows them (numbered in tracer's own pid namespace): which run, their
//! threads, parents and binaries. A binary is reached through `/proc/PID/exe`, so that a server
//! in another mount namespace (a container beside tracer's) can be probed.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Every process.
pub fn all() -> impl Iterator<Item = u32> {
    numbered("/proc")
}

/// The threads of `pid`.
pub fn threads(pid: u32) -> impl Iterator<Item = u32> {
    numbered(&format!("/proc/{pid}/task"))
}

fn numbered(dir: &str) -> impl Iterator<Item = u32> + use<> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

/// The binary a process named with `-p` runs, and how messages name the process; or, in one
/// line that every tool words alike, why it cannot be read.
pub fn named(pid: u32) -> anyhow::Result<(PathBuf, String)> {
    crate::options::check_pid(pid)?;
    let shown = described(pid);
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    std::fs::metadata(&exe)
        .map_err(|err| anyhow::anyhow!("cannot read {shown}: {}: {err}", exe.display()))?;
    Ok((exe, shown))
}

/// `process PID (COMM)`.
pub fn described(pid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("process {pid} ({})", crate::output::printable(comm.trim()))
}

/// `/proc/PID/exe`, while the process runs.
pub fn exe(pid: u32) -> Option<PathBuf> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    exe.exists().then_some(exe)
}

/// Whether the binary `pid` runs is named one of `names`.
pub fn runs_named(pid: u32, names: &[&str]) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|name| names.iter().any(|n| name == *n))
    })
}

/// Takes the processes that exited out of `pids`, and returns them.
pub fn take_exited(pids: &mut Vec<u32>) -> Vec<u32> {
    let (gone, running) = pids.iter().partition(|pid| exe(**pid).is_none());
    *pids = running;
    gone
}

/// Whether one of `pid`'s arguments is one of `args` (a server run to initialize or to print
/// its version rather than to serve, say).
pub fn has_argument(pid: u32, args: &[&str]) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|&byte| byte == 0)
            .any(|arg| args.iter().any(|wanted| wanted.as_bytes() == arg))
    })
}

/// The binary `pid` runs, as messages show it (`pid N` when it cannot be read), its control
/// characters escaped.
pub fn shown(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).map_or_else(
        |_| format!("pid {pid}"),
        |path| crate::output::printable(&path.to_string_lossy()),
    )
}

pub fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm may hold spaces and parentheses: fields resume after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn same_file(a: &Path, b: &Path) -> bool {
    matches!((file_id(a), file_id(b)), (Some(a), Some(b)) if a == b)
}

/// What tells a file from any other, wherever it is reached from: device and inode.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// The distinct binaries `pids` run, each once: its `/proc/PID/exe` and the pid.
pub fn binaries(pids: impl IntoIterator<Item = u32>) -> Vec<(PathBuf, u32)> {
    let mut binaries: Vec<(PathBuf, u32)> = Vec::new();
    for pid in pids {
        let Some(exe) = exe(pid) else { continue };
        if !binaries.iter().any(|(seen, _)| same_file(seen, &exe)) {
            binaries.push((exe, pid));
        }
    }
    binaries
}
