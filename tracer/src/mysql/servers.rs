//! Which MySQL and MariaDB servers `tracer mysql` traces, and servers started after it: a
//! process that execs mysqld or mariadbd to serve (not to make a data directory or print its
//! version). Each server's `dispatch_command()` signature is told to the kernel side by pid, so
//! MySQL and MariaDB servers are traced side by side.

use anyhow::{Context, Result};
use tracer_common::{query::MAX_SERVERS, record::tool};

use crate::{loader::Probes, processes, query};

/// The servers traced, by pid.
pub struct Servers {
    pub pids: Vec<u32>,
    /// Whether servers started later join (not with -p or --bin, which name what to trace).
    pub watch: bool,
}

impl Servers {
    /// Whether process `pid`, which just exec'd mysqld or mariadbd, is a new server to trace.
    pub fn admits(&self, pid: u32) -> bool {
        self.watch && serves(pid) && !self.pids.contains(&pid)
    }

    /// Forgets the servers that exited, and returns them.
    pub fn exited(&mut self) -> Vec<u32> {
        processes::take_exited(&mut self.pids)
    }
}

/// The servers running now.
pub fn running() -> Vec<u32> {
    processes::all().filter(|&pid| serves(pid)).collect()
}

/// Whether `pid` runs mysqld or mariadbd to serve: not `--initialize`, `--bootstrap` (what
/// mariadb-install-db runs), `--version` or `--help`.
fn serves(pid: u32) -> bool {
    const ONCE: &[&str] = &[
        "--initialize",
        "--initialize-insecure",
        "--bootstrap",
        "--version",
        "-V",
        "--help",
        "-?",
    ];
    processes::runs_named(pid, &["mysqld", "mariadbd"]) && !processes::has_argument(pid, ONCE)
}

/// Starts tracing server `pid`, whose `dispatch_command()` has `signature`.
pub fn add(probes: &mut Probes, pid: u32, signature: u32) -> Result<()> {
    let mut signatures: aya::maps::HashMap<_, u32, u32> =
        aya::maps::HashMap::try_from(probes.map_mut("MYSQL_SIGNATURES")?)?;
    signatures
        .insert(pid, signature, 0)
        .with_context(|| format!("cannot trace server {pid}: at most {MAX_SERVERS} at once"))?;
    query::add_server(probes, tool::MYSQL, pid)
}

/// Forgets server `pid` (it exited: its pid may come back as anything).
pub fn remove(probes: &mut Probes, pid: u32) -> Result<()> {
    let mut signatures: aya::maps::HashMap<_, u32, u32> =
        aya::maps::HashMap::try_from(probes.map_mut("MYSQL_SIGNATURES")?)?;
    match signatures.remove(&pid) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
        Err(err) => return Err(err.into()),
    }
    query::remove_server(probes, pid)
}
