//! Which PostgreSQL servers `tracer pg` traces: the binaries it probes, the postmasters running
//! them, and servers started after tracer (a process that execs postgres and turns out to be
//! the postmaster of a server tracer would have traced).

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::processes;

/// A postgres binary to attach to, as a path the kernel can resolve from here (through
/// /proc/PID/exe for a server in another mount namespace).
pub struct Target {
    pub path: PathBuf,
    /// What to call it in messages.
    pub shown: String,
}

/// The binaries to attach to and, with -p, the postmaster whose backends to keep. Without
/// `-p` or `--bin`, the binaries of the servers running; none when none runs and `wait` says
/// servers started later will do.
pub fn targets(
    pid: Option<u32>,
    bin: Option<&PathBuf>,
    wait: bool,
) -> Result<(Vec<Target>, Option<u32>)> {
    if let Some(bin) = bin {
        let shown = bin.display().to_string();
        let target = Target {
            path: bin.clone(),
            shown,
        };
        return Ok((vec![target], None));
    }
    if let Some(pid) = pid {
        let (exe, _) = processes::named(pid)?;
        // A backend's parent runs the same binary: the postmaster.
        let postmaster = match processes::parent(pid) {
            Some(parent)
                if processes::same_file(&processes::exe(parent).unwrap_or_default(), &exe) =>
            {
                parent
            }
            _ => pid,
        };
        let shown = processes::described(postmaster);
        return Ok((vec![Target { path: exe, shown }], Some(postmaster)));
    }
    let targets: Vec<Target> = processes::binaries(postmasters())
        .into_iter()
        .map(|(path, pid)| Target {
            path,
            shown: processes::shown(pid),
        })
        .collect();
    if targets.is_empty() && !wait {
        bail!(
            "no running PostgreSQL server found: start one, or name it with -p PID or --bin PATH"
        );
    }
    Ok((targets, None))
}

/// The servers traced, by postmaster pid, and which servers started later join them.
pub struct Servers {
    pub pids: Vec<u32>,
    /// A server started later must run one of these (`--bin`); empty: any postgres.
    binaries: Vec<PathBuf>,
    /// Whether servers started later join (not with -p, which names one).
    pub watch: bool,
}

impl Servers {
    /// The postmasters running one of `targets` now (all the servers with `bin`, or with `named`
    /// that one).
    pub fn running(targets: &[Target], named: Option<u32>, bin: Option<&PathBuf>) -> Self {
        let pids = match named {
            Some(pid) => vec![pid],
            None => postmasters()
                .into_iter()
                .filter(|&pid| runs_target(pid, targets))
                .collect(),
        };
        Self {
            pids,
            binaries: bin.into_iter().cloned().collect(),
            watch: named.is_none(),
        }
    }

    /// Whether process `pid`, which just exec'd postgres, is a new server to trace.
    pub fn admits(&self, pid: u32) -> bool {
        let runs_binary = self.binaries.is_empty()
            || self
                .binaries
                .iter()
                .any(|bin| processes::exe(pid).is_some_and(|exe| processes::same_file(&exe, bin)));
        self.watch && runs_binary && is_postmaster(pid) && !self.pids.contains(&pid)
    }

    pub fn add(&mut self, pid: u32) {
        self.pids.push(pid);
    }

    /// Forgets the servers that exited, and returns them.
    pub fn exited(&mut self) -> Vec<u32> {
        processes::take_exited(&mut self.pids)
    }
}

/// Processes running one of the target binaries (and, given servers, belonging to one).
pub fn running_backends(targets: &[Target], servers: &[u32]) -> Vec<u32> {
    let in_servers = |pid: u32| {
        servers.is_empty()
            || servers.contains(&pid)
            || processes::parent(pid).is_some_and(|parent| servers.contains(&parent))
    };
    processes::all()
        .filter(|&pid| runs_target(pid, targets) && in_servers(pid))
        .collect()
}

fn runs_target(pid: u32, targets: &[Target]) -> bool {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    targets
        .iter()
        .any(|target| processes::same_file(&exe, &target.path))
}

/// Processes running a binary named postgres whose parent does not: the postmasters.
fn postmasters() -> Vec<u32> {
    processes::all().filter(|&pid| is_postmaster(pid)).collect()
}

fn is_postmaster(pid: u32) -> bool {
    let is_postgres = |pid: u32| processes::runs_named(pid, &["postgres"]);
    is_postgres(pid) && !processes::parent(pid).is_some_and(is_postgres) && !runs_once(pid)
}

/// Whether `pid` runs postgres for something other than serving: initdb's bootstrap and
/// single-user runs, `postgres -C`, `--version` and the like.
fn runs_once(pid: u32) -> bool {
    const ONCE: &[&str] = &[
        "--boot",
        "--single",
        "--check",
        "-C",
        "--describe-config",
        "-V",
        "--version",
        "-?",
        "--help",
    ];
    processes::has_argument(pid, ONCE)
}

/// Whether backend `pid` has been through its startup (authentication, then its first
/// ReadyForQuery), as its process title tells.
pub fn past_startup(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|title| title_past_startup(&String::from_utf8_lossy(&title)))
}

/// A backend's title is `postgres: [cluster: ]user db host activity`, whose activity is
/// "authentication" or "startup" (or none yet) before its first ReadyForQuery, "idle" or a
/// command after; before the startup packet it is still the postmaster's command line. Without
/// update_process_title it stays at none: taken as not yet.
fn title_past_startup(title: &str) -> bool {
    let title = title.trim_end_matches(['\0', ' ']);
    if !title.contains("postgres: ") {
        return false;
    }
    let activity = title.rsplit(' ').next().unwrap_or_default();
    let in_startup = ["authentication", "startup"].contains(&activity)
        || activity.ends_with(')')
        || activity.ends_with("[local]");
    !in_startup
}

#[cfg(test)]
mod tests {
    use super::title_past_startup;

    #[test]
    fn a_backends_title_tells_whether_it_is_past_its_startup() {
        let before = [
            "/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/postgresql/15/main\0",
            "postgres: 15/main: app shop 10.0.0.7(51234) authentication",
            "postgres: app shop 10.0.0.7(51234) startup",
            "postgres: app shop [local] ",
        ];
        let after = [
            "postgres: app shop 10.0.0.7(51234) idle",
            "postgres: 15/main: app shop [local] SELECT",
            "postgres: app shop 10.0.0.7(51234) idle in transaction",
        ];
        assert!(before.iter().all(|title| !title_past_startup(title)));
        assert!(after.iter().all(|title| title_past_startup(title)));
    }
}
