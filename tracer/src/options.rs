//! Options every tool takes, with bcc's conventions: `interval [count]`, `-d`, `-p`, `-c`,
//! `--comm`, and what they become: a kernel-side filter and a schedule of summaries.

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use clap::Args;
use tracer_common::task::{COMM_LEN, Filter};

use crate::{
    cgroup::{Hierarchy, Target},
    loader::AttachMode,
};

#[derive(Args, Debug, Clone)]
pub struct TraceOptions {
    /// Print a summary every INTERVAL seconds (default: once, at the end)
    #[arg(value_name = "INTERVAL", value_parser = positive_seconds)]
    pub interval: Option<Duration>,
    /// Stop after COUNT summaries
    #[arg(value_name = "COUNT", requires = "interval", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after SECS seconds
    #[arg(short, long, value_name = "SECS", value_parser = positive_seconds, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Only this process (and all its threads)
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only tasks in this cgroup or below it: a directory of a cgroup v1 or v2 filesystem
    #[arg(short, long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Only tasks with this command name
    #[arg(long, value_name = "COMM")]
    pub comm: Option<String>,
    /// Print NDJSON: one object per line
    #[arg(long)]
    pub json: bool,
    /// Say how each probe was attached; show verifier logs on failure
    #[arg(short, long)]
    pub verbose: bool,
    /// How to attach tracepoints
    #[arg(long, value_enum, default_value_t, value_name = "HOW")]
    pub attach: AttachMode,
}

fn positive_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        // `--breakdown sched` leaves `sched` to the interval: say how to write it.
        _ if text
            .split(',')
            .all(|part| crate::query::breakdown::ALL.contains(&part)) =>
        {
            Err(format!(
                "expected a positive number of seconds, got {text:?}; parts of --breakdown follow an equals sign: --breakdown={text}"
            ))
        }
        _ => Err(format!(
            "expected a positive number of seconds, got {text:?}"
        )),
    }
}

/// When summaries are printed and when tracing stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub interval: Option<Duration>,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// What the kernel programs keep, and the cgroup hierarchy events are attributed in.
pub struct Scope {
    pub filter: Filter,
    pub hierarchy: Hierarchy,
}

impl TraceOptions {
    pub fn timing(&self) -> Timing {
        Timing {
            interval: self.interval,
            count: self.count,
            duration: self.duration,
        }
    }

    /// Checks the filters against the system and turns them into a kernel-side [`Filter`].
    pub fn scope(&self) -> Result<Scope> {
        let mut filter = Filter::default();
        if let Some(pid) = self.pid {
            check_pid(pid)?;
            filter.pid = pid;
        }
        if let Some(comm) = &self.comm {
            if comm.is_empty() || comm.len() >= COMM_LEN {
                bail!(
                    "--comm must be 1 to {} bytes (the kernel's comm length)",
                    COMM_LEN - 1
                );
            }
            filter.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        }
        let hierarchy = match &self.cgroup {
            Some(path) => {
                let target = Target::resolve(path)?;
                filter.cgroup_id = target.id;
                target.hierarchy
            }
            None => Hierarchy::for_memory()?,
        };
        Ok(Scope { filter, hierarchy })
    }
}

/// Fails unless `pid` is a process here. Pids are those of tracer's own pid namespace, the
/// host's or a sidecar container's: the kernel programs number tasks the same way.
pub fn check_pid(pid: u32) -> Result<()> {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        bail!("no such process: {pid}");
    }
    Ok(())
}
