//! `cargo xtask bench pg`: what tracing costs PostgreSQL, measured as pgbench -S throughput.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tracer_tests::Postgres;

use crate::bench::median;

/// One way of running pgbench: untraced, or under a tracing tool.
struct Config {
    name: &'static str,
    /// The tool and the line it prints once attached; `None` runs untraced.
    tool: Option<(Vec<String>, &'static str)>,
}

pub fn run(tracer: &Path, rounds: usize, seconds: u32) -> Result<()> {
    let server = Postgres::start("bench");
    eprintln!("bench: pgbench -i -s 10");
    server.pgbench(&["-i", "-s", "10", "-q"]);
    let postgres = server.binary().display().to_string();
    let histogram = format!(
        "usdt:{postgres}:postgresql:query__start {{ @start[tid] = nsecs; }}
         usdt:{postgres}:postgresql:query__done /@start[tid]/ {{
             @usecs = hist((nsecs - @start[tid]) / 1000); delete(@start[tid]); }}
         BEGIN {{ printf(\"ready\\n\"); }}"
    );
    let pid = server.pid().to_string();
    let tracer_pg = |extra: &[&str]| {
        let mut command = vec![tracer.display().to_string(), "pg".into(), "-p".into()];
        command.push(pid.clone());
        command.extend(extra.iter().map(|arg| arg.to_string()));
        Some((command, "Tracing"))
    };
    let configs = [
        Config {
            name: "untraced",
            tool: None,
        },
        Config {
            name: "tracer pg",
            tool: tracer_pg(&[]),
        },
        Config {
            name: "bpftrace USDT histogram",
            tool: Some((
                ["stdbuf", "-oL", "bpftrace", "-e", &histogram]
                    .map(String::from)
                    .to_vec(),
                "ready",
            )),
        },
        Config {
            name: "tracer pg --protocol simple",
            tool: tracer_pg(&["--protocol", "simple"]),
        },
        Config {
            name: "bcc dbstat",
            tool: Some((
                ["stdbuf", "-oL", "dbstat-bpfcc", "postgres", "-p", &pid]
                    .map(String::from)
                    .to_vec(),
                "Tracing",
            )),
        },
    ];
    let pgbench = |seconds: u32| -> Result<Run> {
        let before = busy_ticks()?;
        let out = server.pgbench(&["-S", "-c", "4", "-j", "2", "-n", "-T", &seconds.to_string()]);
        let busy = busy_ticks()? - before;
        let field = |prefix: &str| {
            out.lines()
                .find_map(|line| {
                    line.strip_prefix(prefix)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .with_context(|| format!("no {prefix:?} in pgbench's output: {out}"))
        };
        let transactions: f64 = field("number of transactions actually processed: ")?;
        Ok(Run {
            tps: field("tps = ")?,
            cpu_us: busy as f64 * 1e6 / ticks_per_second() / transactions,
        })
    };
    eprintln!("bench: warming up");
    pgbench(5)?;

    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); configs.len()];
    let mut failed: Vec<Option<String>> = vec![None; configs.len()];
    for round in 1..=rounds {
        for (i, config) in configs.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            let tool = match &config.tool {
                Some((command, ready)) => match Tool::start(command, ready) {
                    Ok(tool) => Some(tool),
                    Err(err) => {
                        failed[i] = Some(format!("{err:#}"));
                        continue;
                    }
                },
                None => None,
            };
            let run = pgbench(seconds)?;
            drop(tool);
            eprintln!(
                "bench: round {round}: {:<28} {:>9.0} tps {:>6.1} us CPU/transaction",
                config.name, run.tps, run.cpu_us
            );
            runs[i].push(run);
        }
    }

    println!("pg: pgbench -S -c 4 -j 2, {seconds} s per run, {rounds} alternating rounds; medians");
    // Each round against that round's untraced run, so that drift cancels out.
    let loss = |i: usize| {
        median(
            runs[i]
                .iter()
                .zip(&runs[0])
                .map(|(traced, base)| 100.0 * (1.0 - traced.tps / base.tps)),
        )
    };
    let extra_cpu = |i: usize| {
        median(
            runs[i]
                .iter()
                .zip(&runs[0])
                .map(|(traced, base)| traced.cpu_us - base.cpu_us),
        )
    };
    for (i, config) in configs.iter().enumerate() {
        let tps = median(runs[i].iter().map(|run| run.tps));
        let cpu = median(runs[i].iter().map(|run| run.cpu_us));
        match &failed[i] {
            Some(reason) => println!("{:<28} could not run here: {reason}", config.name),
            None if i == 0 => println!(
                "{:<28} {tps:>9.0} tps {cpu:>6.1} us CPU/transaction",
                config.name
            ),
            None => println!(
                "{:<28} {tps:>9.0} tps {cpu:>6.1} us CPU/transaction  loss {:>5.1}%  +{:.1} us",
                config.name,
                loss(i),
                extra_cpu(i)
            ),
        }
    }
    let bpftrace = 2;
    for ours in [1, 3] {
        println!(
            "{} / bpftrace: TPS loss {:.2}, extra CPU {:.2}; goal (loss at most half): {}",
            configs[ours].name,
            loss(ours) / loss(bpftrace),
            extra_cpu(ours) / extra_cpu(bpftrace),
            if loss(ours) <= loss(bpftrace) / 2.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    Ok(())
}

/// One pgbench run: throughput, and the machine's busy CPU time per transaction (steal time,
/// which the VM's neighbours cause, left out).
#[derive(Clone, Copy)]
struct Run {
    tps: f64,
    cpu_us: f64,
}

/// Busy ticks of all CPUs so far: user, nice, system, irq and softirq from /proc/stat.
fn busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    Ok([0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum())
}

fn ticks_per_second() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// A tracing tool running in the background until dropped (SIGINT).
struct Tool {
    child: Child,
}

impl Tool {
    fn start(command: &[String], ready: &'static str) -> Result<Self> {
        let (reader, writer) = std::io::pipe()?;
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()
            .with_context(|| format!("cannot run {}", command[0]))?;
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        while let Ok(line) = received.recv_timeout(Duration::from_secs(30)) {
            if line.contains(ready) {
                // Keep draining so the tool never blocks on a full pipe.
                std::thread::spawn(move || received.iter().for_each(drop));
                return Ok(Self { child });
            }
            seen.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        let why = seen
            .iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        bail!("{} never became ready: {why}", command[0])
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        crate::bench::stop(&mut self.child);
    }
}
