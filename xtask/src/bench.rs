//! Benchmarks that measure tracer beside its peers and print ratios.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// Time from exec until attached, and peak RSS: tracer direct-reclaim beside libbpf-tools
    /// drsnoop and a bpftrace one-liner on the same tracepoints.
    Startup {
        /// Runs of each tool, alternating between them; medians are reported.
        #[arg(long, default_value_t = 15)]
        runs: usize,
    },
    /// pgbench -S on two identical servers at once, the second untraced or under `tracer pg`
    /// (full per-query table), a bpftrace USDT latency histogram or bcc's dbstat, in turn;
    /// prints the TPS loss of each.
    Pg(Paired),
    /// sysbench oltp_point_select on two identical servers at once (MariaDB, then Oracle
    /// MySQL), the second untraced or under `tracer mysql` (full per-query table; the default,
    /// probes, or through the socket) or a bpftrace uprobe latency histogram on
    /// dispatch_command, in turn, saturated and at a fixed rate; prints the TPS loss and CPU
    /// cost of each.
    Mysql {
        #[command(flatten)]
        paired: Paired,
        /// Only this server (default: both).
        #[arg(long, value_enum)]
        server: Option<crate::bench_mysql::Server>,
    },
    /// tracer serve with its tools under a continuous event storm (reclaim, writeback, OOM
    /// kills, pgbench against a traced server), scraped every second: RSS over the run, events
    /// lost, scrape latency.
    Soak {
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
    },
    /// tracer serve --pg while its server receives a flood of distinct statement shapes beside
    /// twenty busy queries: serve's RSS, and the busy queries' exported counts against
    /// pg_stat_statements.
    Shapes {
        /// Distinct shapes over the run.
        #[arg(long, default_value_t = 1_000_000)]
        shapes: u64,
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// A THP-heavy allocation storm over fragmented memory, untraced and under tracer
    /// direct-reclaim (which traces direct compaction): tracer's kernel and own CPU time over
    /// the storm's.
    Compaction {
        /// Rounds; each runs the storm untraced and traced.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The ring-buffer pipeline at its limit: getppid() as fast as one thread calls it, a
    /// record of each through tracer (tracer pipeline) or a bpftrace one-liner; events
    /// delivered per second, lost, and kernel time per event beside an empty program's.
    Events {
        /// Rounds; each runs both tools once.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

/// How the paired-server benchmarks run.
#[derive(clap::Args)]
pub struct Paired {
    /// Rounds; each runs every configuration once.
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 8)]
    pub seconds: u32,
    /// Transactions per second per server (pgbench -R, sysbench --rate) instead of as many as
    /// they take: servers that are not saturated show tracing's CPU cost with less noise, but
    /// no TPS loss.
    #[arg(long, value_name = "TPS")]
    pub rate: Option<u32>,
    /// Let the scheduler place the servers, their load and the tool anywhere (saturated, pg's
    /// bench pins each server and its pgbench to a CPU of its own, the tool beside the traced
    /// one)
    #[arg(long)]
    pub unpinned: bool,
}

impl Bench {
    pub fn run(self, tracer: &Path) -> Result<()> {
        match self {
            Bench::Startup { runs } => startup(tracer, runs),
            Bench::Pg(paired) => crate::bench_pg::run(tracer, &paired),
            Bench::Mysql { paired, server } => {
                use crate::bench_mysql::Server;
                let servers = server.map_or(vec![Server::Mariadb, Server::Mysql], |s| vec![s]);
                crate::bench_mysql::run(tracer, &paired, &servers)
            }
            Bench::Soak { minutes } => crate::bench_soak::run(tracer, minutes),
            Bench::Shapes { shapes, minutes } => crate::bench_shapes::run(tracer, shapes, minutes),
            Bench::Events { rounds, seconds } => crate::bench_events::run(tracer, rounds, seconds),
            Bench::Compaction { rounds } => crate::bench_compaction::run(tracer, rounds),
        }
    }
}

/// A tool under measurement and the line it prints once its probes are attached.
struct Contender {
    name: &'static str,
    command: Vec<String>,
    ready: &'static str,
}

const BPFTRACE_RECLAIM: &str = "
tracepoint:vmscan:mm_vmscan_direct_reclaim_begin,
tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin { @start[tid] = nsecs; }
tracepoint:vmscan:mm_vmscan_direct_reclaim_end,
tracepoint:vmscan:mm_vmscan_memcg_reclaim_end /@start[tid]/ {
    @usecs = hist((nsecs - @start[tid]) / 1000); delete(@start[tid]);
}
BEGIN { printf(\"ready\\n\"); }";

/// `tracer` is the binary `cargo build --release` makes (glibc); the image ships a static one.
fn startup(tracer: &Path, runs: usize) -> Result<()> {
    let shipped = crate::image::static_binary()?;
    let command = |binary: &Path, args: &[&str]| -> Vec<String> {
        std::iter::once(binary.display().to_string())
            .chain(args.iter().map(|arg| arg.to_string()))
            .collect()
    };
    // The first two are measured against the peers that follow, on the same tracepoints; the
    // last two have no peer and are kept from growing.
    let contenders = [
        Contender {
            name: "tracer direct-reclaim",
            command: command(&shipped, &["direct-reclaim"]),
            ready: "Tracing",
        },
        Contender {
            name: "  (glibc, cargo build)",
            command: command(tracer, &["direct-reclaim"]),
            ready: "Tracing",
        },
        Contender {
            name: "drsnoop (libbpf-tools)",
            // Line-buffered, so its header shows up when it is printed: right after attaching.
            command: ["stdbuf", "-oL", "drsnoop"].map(String::from).to_vec(),
            ready: "TIME",
        },
        Contender {
            name: "bpftrace one-liner",
            command: ["stdbuf", "-oL", "bpftrace", "-e", BPFTRACE_RECLAIM]
                .map(String::from)
                .to_vec(),
            ready: "ready",
        },
        Contender {
            name: "tracer pg",
            command: command(&shipped, &["pg"]),
            ready: "Tracing",
        },
        Contender {
            name: "tracer serve",
            command: command(&shipped, &["serve", "--listen", "127.0.0.1:0"]),
            ready: "Tracing",
        },
    ];
    let mut samples: Vec<Vec<(Duration, u64)>> = vec![Vec::new(); contenders.len()];
    // One warm-up round so every tool's binary and libraries are in the page cache.
    for round in 0..=runs {
        for (contender, samples) in contenders.iter().zip(&mut samples) {
            let sample =
                measure(contender).with_context(|| format!("measuring {}", contender.name))?;
            if round > 0 {
                samples.push(sample);
            }
        }
    }

    println!(
        "startup: time from exec until attached, and peak RSS; median of {runs} alternating runs"
    );
    println!("tracer is the static binary the image ships, unless said otherwise");
    println!(
        "{:<24} {:>10} {:>14}",
        "tool", "ready (ms)", "peak RSS (MB)"
    );
    let medians: Vec<(f64, f64)> = samples
        .iter()
        .map(|samples| {
            let ms = median(samples.iter().map(|(time, _)| time.as_secs_f64() * 1e3));
            let mb = median(samples.iter().map(|(_, kib)| *kib as f64 / 1024.0));
            (ms, mb)
        })
        .collect();
    for (contender, (ms, mb)) in contenders.iter().zip(&medians) {
        println!("{:<24} {ms:>10.1} {mb:>14.1}", contender.name);
    }
    let (drsnoop_ms, drsnoop_mb) = medians[2];
    for (build, (ms, mb)) in ["static", "glibc"].iter().zip(&medians[..2]) {
        for (peer, (peer_ms, peer_mb)) in contenders[2..4].iter().zip(&medians[2..4]) {
            println!(
                "tracer ({build}) / {:<22} time {:.2}x  RSS {:.2}x",
                peer.name,
                ms / peer_ms,
                mb / peer_mb
            );
        }
        // Issue #27's goal: half of drsnoop's on both.
        let met = *ms <= 0.5 * drsnoop_ms && *mb <= 0.5 * drsnoop_mb;
        println!(
            "goal ({build}: tracer <= 0.5x drsnoop on both): {}",
            if met { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// How long a tool may take to attach before the benchmark gives up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the tool, waits for its ready line, stops it with SIGINT and returns the time to
/// ready and its peak RSS in KiB.
fn measure(contender: &Contender) -> Result<(Duration, u64)> {
    let (tool, ready) = Tool::start(&contender.command, contender.ready)?;
    let (_, usage) = tool.stop()?;
    Ok((ready, usage.ru_maxrss as u64))
}

/// A tool under measurement, running until stopped (on drop, too) as Ctrl-C would stop it.
pub(crate) struct Tool {
    child: Child,
    stopped: bool,
}

impl Tool {
    /// Starts `command` and waits until it prints a line containing `ready`; returns the tool
    /// and the time from exec to that line.
    pub(crate) fn start(command: &[String], ready: &str) -> Result<(Self, Duration)> {
        let (reader, writer) = std::io::pipe()?;
        let start = Instant::now();
        let child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()
            .with_context(|| format!("cannot run {}", command[0]))?;
        let tool = Self {
            child,
            stopped: false,
        };
        // Lines arrive on a thread, so that a tool that never gets ready cannot hang the
        // benchmark; it reads to the end, so that the tool never blocks on a full pipe.
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let _ = lines.send((line, start.elapsed()));
            }
        });
        let mut seen = Vec::new();
        while let Ok((line, at)) = received.recv_timeout(READY_TIMEOUT) {
            if line.contains(ready) {
                return Ok((tool, at));
            }
            seen.push(line);
        }
        let (status, _) = tool.stop()?;
        let why = seen
            .iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        bail!(
            "{} never became ready ({}): {why}",
            command[0],
            ExitStatus::from_raw(status)
        )
    }

    /// Stops the tool as Ctrl-C would; returns its wait status and resource usage.
    pub(crate) fn stop(mut self) -> Result<(i32, libc::rusage)> {
        self.stopped = true;
        stop_with_usage(self.child.id() as i32)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the tool has used so far (utime + stime).
    pub(crate) fn cpu_seconds(&self) -> f64 {
        // Fields 14 and 15 of proc_pid_stat(5).
        let ticks: f64 = tracer_tests::proc_stat(self.child.id())
            .iter()
            .skip(11)
            .take(2)
            .filter_map(|field| field.parse::<f64>().ok())
            .sum();
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = stop_with_usage(self.child.id() as i32);
        }
    }
}

/// SIGINT, again after 3 s (bpftrace sometimes misses the first one), then SIGKILL; returns
/// the wait status and resource usage.
pub(crate) fn stop_with_usage(pid: i32) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let start = Instant::now();
    let mut signals = [libc::SIGINT, libc::SIGINT, libc::SIGKILL].into_iter();
    let mut next_signal = start;
    loop {
        if Instant::now() >= next_signal
            && let Some(signal) = signals.next()
        {
            unsafe { libc::kill(pid, signal) };
            next_signal += Duration::from_secs(3);
        }
        match unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) } {
            0 => std::thread::sleep(Duration::from_millis(10)),
            reaped if reaped > 0 => return Ok((status, usage)),
            _ => bail!("wait4: {}", std::io::Error::last_os_error()),
        }
    }
}

pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Run time (ns) and run count of every BPF program the process holds, by name.
pub(crate) fn program_stats(pid: u32) -> HashMap<String, (u64, u64)> {
    let names: HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|info| (info.id(), info.name_as_str().unwrap_or("").to_owned()))
        .collect();
    let mut stats = HashMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return stats;
    };
    for fd in fds.flatten() {
        let is_program = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-prog");
        if !is_program {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |name: &str| -> u64 {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        let id = field("prog_id:") as u32;
        let name = names.get(&id).cloned().unwrap_or_default();
        stats.insert(
            format!("{name}#{id}"),
            (field("run_time_ns:"), field("run_cnt:")),
        );
    }
    stats
}
