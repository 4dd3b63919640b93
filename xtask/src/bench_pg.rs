//! `cargo xtask bench pg`: what tracing costs PostgreSQL, measured as pgbench -S throughput.

use std::{path::Path, process::Stdio};

use anyhow::{Context, Result};
use tracer_tests::{Cgroup, Postgres};

use crate::bench::{Tool, median};

/// The peer the goal names: at most half of its cost.
const BPFTRACE: &str = "bpftrace USDT histogram";

/// One way of running pgbench: untraced, or under a tracing tool.
struct Config {
    name: &'static str,
    /// The tool and the line it prints once attached; `None` runs untraced.
    tool: Option<(Vec<String>, &'static str)>,
}

pub fn run(tracer: &Path, rounds: usize, seconds: u32, rate: Option<u32>) -> Result<()> {
    // Two identical servers under load at once, only the second traced: the VM's throughput
    // swings by a third from one run to the next, but it swings for both alike, so the ratio of
    // their throughputs shows what tracing costs. The second runs a copy of the binary, so that
    // uprobes (which belong to the file) stay out of the first.
    //
    // Even so, the two seldom get exactly half of the CPU each, which moves the TPS ratio by a
    // few percent either way. The CPU time each server's processes take per transaction does
    // not depend on their share: it is measured too, with a cgroup per server (see
    // CpuAccount), and the trap and kernel-program time of a probe is spent in the backend that
    // hits it, so it lands there.
    let accounts = [
        CpuAccount::create("bench"),
        CpuAccount::create("bench-traced"),
    ];
    let plain = Postgres::start("bench");
    let traced = Postgres::start_own_binary("bench-traced");
    for (server, account) in [&plain, &traced].into_iter().zip(&accounts) {
        server.pgbench(&["-i", "-s", "10", "-q"]);
        // Backends fork from the postmaster, and so join its cgroup.
        account
            .cgroup
            .set("cgroup.procs", &server.pid().to_string());
    }
    let servers = [(&plain, &accounts[0]), (&traced, &accounts[1])];
    let server = &traced;
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
            name: BPFTRACE,
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
            name: "tracer pg --via socket",
            tool: tracer_pg(&["--via", "socket"]),
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
    let cpus = std::thread::available_parallelism()?.get() as f64;
    eprintln!("bench: warming up");
    pgbench_both(&servers, 5, rate)?;

    // Per configuration and round: traced TPS / plain TPS, and the traced server's CPU time per
    // transaction (with the tool's) / the plain one's.
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut costs: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut failed: Vec<Option<String>> = vec![None; configs.len()];
    for round in 1..=rounds {
        for (i, config) in configs.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            let tool = match &config.tool {
                Some((command, ready)) => match Tool::start(command, ready) {
                    Ok((tool, _)) => Some(tool),
                    Err(err) => {
                        failed[i] = Some(format!("{err:#}"));
                        continue;
                    }
                },
                None => None,
            };
            let tool_cpu = tool.as_ref().map_or(0.0, Tool::cpu_seconds);
            let [plain_run, traced_run] = pgbench_both(&servers, seconds, rate)?;
            let (plain_tps, traced_tps) = (plain_run.tps, traced_run.tps);
            let tool_cpu = tool.as_ref().map_or(0.0, Tool::cpu_seconds) - tool_cpu;
            drop(tool);
            costs[i].push(
                (traced_run.cpu_seconds + tool_cpu)
                    / traced_run.transactions
                    / (plain_run.cpu_seconds / plain_run.transactions),
            );
            // The tool's own process took CPU from both servers alike: charge it all to the
            // traced one. Either server's fair share is half the machine.
            let share = cpus * f64::from(seconds) / 2.0;
            let ratio = traced_tps / plain_tps * (share - tool_cpu) / share;
            eprintln!(
                "bench: round {round}: {:<28} {traced_tps:>7.0} tps beside {plain_tps:>7.0} untraced; \
                 CPU per transaction {:.1} us (tool {:.1} us) beside {:.1} us",
                config.name,
                (traced_run.cpu_seconds + tool_cpu) * 1e6 / traced_run.transactions,
                tool_cpu * 1e6 / traced_run.transactions,
                plain_run.cpu_seconds * 1e6 / plain_run.transactions,
            );
            ratios[i].push(ratio);
        }
    }

    let pace = rate.map_or(String::new(), |rate| format!(" at {rate} tps each"));
    println!(
        "pg: pgbench -S -c 4 -j 2{pace} on two identical servers at once, the second traced; \
         {seconds} s per run, {rounds} rounds; medians"
    );
    println!(
        "{:<28} {:>10} {:>8} {:>16} {:>9}",
        "", "TPS ratio", "TPS loss", "CPU/txn ratio", "CPU cost"
    );
    // Against the round's untraced pair, so that any difference between the servers cancels.
    let against_untraced = |values: &[Vec<f64>], i: usize, sign: f64| {
        median(
            values[i]
                .iter()
                .zip(&values[0])
                .map(|(traced, plain)| sign * 100.0 * (traced / plain - 1.0)),
        )
    };
    let loss = |i: usize| against_untraced(&ratios, i, -1.0);
    let cost = |i: usize| against_untraced(&costs, i, 1.0);
    for (i, config) in configs.iter().enumerate() {
        let (ratio, cpu) = (
            median(ratios[i].iter().copied()),
            median(costs[i].iter().copied()),
        );
        match &failed[i] {
            Some(reason) => println!("{:<28} could not run here: {reason}", config.name),
            None if i == 0 => println!("{:<28} {ratio:>10.3} {:>8} {cpu:>16.3}", config.name, ""),
            None => println!(
                "{:<28} {ratio:>10.3} {:>7.1}% {cpu:>16.3} {:>8.1}%",
                config.name,
                loss(i),
                cost(i)
            ),
        }
    }
    // Each of tracer's configurations against the peer the goal names.
    let bpftrace = configs
        .iter()
        .position(|config| config.name == BPFTRACE)
        .expect("the bpftrace configuration");
    let verdict = |ours: f64, theirs: f64| {
        if ours <= theirs / 2.0 {
            "met"
        } else {
            "NOT met"
        }
    };
    let tracers = (0..configs.len()).filter(|&i| configs[i].name.starts_with("tracer pg"));
    for ours in tracers {
        let loss = match rate {
            Some(_) => "TPS loss not measured at a fixed rate".to_string(),
            None => format!(
                "TPS loss ratio {:.2} (goal, at most half: {})",
                loss(ours) / loss(bpftrace),
                verdict(loss(ours), loss(bpftrace)),
            ),
        };
        println!(
            "{} / bpftrace: {loss}; CPU cost ratio {:.2} ({})",
            configs[ours].name,
            cost(ours) / cost(bpftrace),
            verdict(cost(ours), cost(bpftrace)),
        );
    }
    Ok(())
}

/// One server's pgbench run.
struct Run {
    tps: f64,
    transactions: f64,
    /// CPU time its processes took meanwhile.
    cpu_seconds: f64,
}

/// pgbench -S on both servers at once.
fn pgbench_both(
    servers: &[(&Postgres, &CpuAccount); 2],
    seconds: u32,
    rate: Option<u32>,
) -> Result<[Run; 2]> {
    let seconds = seconds.to_string();
    let mut args = vec!["-S", "-c", "4", "-j", "2", "-n", "-T", &seconds];
    let rate = rate.map(|rate| rate.to_string());
    if let Some(rate) = &rate {
        args.extend(["-R", rate]);
    }
    let cpu_before = [servers[0].1.seconds()?, servers[1].1.seconds()?];
    let children = servers.map(|(server, _)| {
        server
            .pgbench_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    });
    let outputs = children.map(|child| -> Result<String> {
        let output = child?.wait_with_output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    });
    let mut runs = Vec::new();
    for ((output, (_, account)), before) in outputs.into_iter().zip(servers).zip(cpu_before) {
        let output = output?;
        let field = |prefix: &str| -> Result<f64> {
            output
                .lines()
                .find_map(|line| {
                    line.strip_prefix(prefix)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .with_context(|| format!("no '{prefix}' in pgbench's output: {output}"))
        };
        runs.push(Run {
            tps: field("tps = ")?,
            transactions: field("number of transactions actually processed: ")?,
            cpu_seconds: account.seconds()? - before,
        });
    }
    Ok(runs
        .try_into()
        .unwrap_or_else(|_| unreachable!("a run per server")))
}

/// A cgroup that accounts the CPU time of a server's processes: in cgroup v1's cpuacct
/// hierarchy where there is one (accounting only, it changes no scheduling), else in the v2
/// hierarchy, whose `cpu.stat` counts usage without the cpu controller.
struct CpuAccount {
    cgroup: Cgroup,
    v1: bool,
}

impl CpuAccount {
    fn create(name: &str) -> Self {
        let root = Path::new("/sys/fs/cgroup");
        let (hierarchy, v1) = if root.join("cpuacct/cpuacct.usage").exists() {
            ("cpuacct", true)
        } else if root.join("unified/cgroup.procs").exists() {
            ("unified", false)
        } else {
            (".", false)
        };
        Self {
            cgroup: Cgroup::create(hierarchy, name),
            v1,
        }
    }

    /// CPU time its processes took so far.
    fn seconds(&self) -> Result<f64> {
        let (file, field, per_second) = if self.v1 {
            ("cpuacct.usage", "", 1e9)
        } else {
            ("cpu.stat", "usage_usec", 1e6)
        };
        let text = self.cgroup.read(file);
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(field)?.trim().parse::<f64>().ok())
            .with_context(|| format!("no {field} in {file}: {text}"))?;
        Ok(value / per_second)
    }
}
