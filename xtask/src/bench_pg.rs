//! `cargo xtask bench pg`: what tracing costs PostgreSQL, measured as pgbench -S throughput.

use std::{path::Path, process::Stdio};

use anyhow::{Context, Result};
use tracer_tests::Postgres;

use crate::bench::{Tool, median};

/// One way of running pgbench: untraced, or under a tracing tool.
struct Config {
    name: &'static str,
    /// The tool and the line it prints once attached; `None` runs untraced.
    tool: Option<(Vec<String>, &'static str)>,
}

pub fn run(tracer: &Path, rounds: usize, seconds: u32) -> Result<()> {
    // Two identical servers under load at once, only the second traced: the VM's throughput
    // swings by a third from one run to the next, but it swings for both alike, so the ratio of
    // their throughputs shows what tracing costs. The second runs a copy of the binary, so that
    // uprobes (which belong to the file) stay out of the first.
    let plain = Postgres::start("bench");
    let traced = Postgres::start_own_binary("bench-traced");
    for server in [&plain, &traced] {
        server.pgbench(&["-i", "-s", "10", "-q"]);
    }
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
    let cpus = std::thread::available_parallelism()?.get() as f64;
    eprintln!("bench: warming up");
    pgbench_both(&plain, &traced, 5)?;

    // Per configuration and round: traced TPS / plain TPS.
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
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
            let (plain_tps, traced_tps) = pgbench_both(&plain, &traced, seconds)?;
            let tool_cpu = tool.as_ref().map_or(0.0, Tool::cpu_seconds) - tool_cpu;
            drop(tool);
            // The tool's own process took CPU from both servers alike: charge it all to the
            // traced one. Either server's fair share is half the machine.
            let share = cpus * f64::from(seconds) / 2.0;
            let ratio = traced_tps / plain_tps * (share - tool_cpu) / share;
            eprintln!(
                "bench: round {round}: {:<28} {traced_tps:>7.0} tps beside {plain_tps:>7.0} untraced, \
                 tool {:.1} us CPU per traced transaction",
                config.name,
                tool_cpu * 1e6 / (traced_tps * f64::from(seconds)),
            );
            ratios[i].push(ratio);
        }
    }

    println!(
        "pg: pgbench -S -c 4 -j 2 on two identical servers at once, the second traced; \
         {seconds} s per run, {rounds} rounds; medians of traced/untraced TPS"
    );
    // Against the round's untraced pair, so that any difference between the servers cancels.
    let loss = |i: usize| {
        median(
            ratios[i]
                .iter()
                .zip(&ratios[0])
                .map(|(traced, plain)| 100.0 * (1.0 - traced / plain)),
        )
    };
    for (i, config) in configs.iter().enumerate() {
        let ratio = median(ratios[i].iter().copied());
        match &failed[i] {
            Some(reason) => println!("{:<28} could not run here: {reason}", config.name),
            None if i == 0 => println!("{:<28} {ratio:.3}", config.name),
            None => println!("{:<28} {ratio:.3}  loss {:>5.1}%", config.name, loss(i)),
        }
    }
    let bpftrace = 2;
    for ours in [1, 3] {
        println!(
            "{} / bpftrace: loss ratio {:.2}; goal (at most half): {}",
            configs[ours].name,
            loss(ours) / loss(bpftrace),
            if loss(ours) <= loss(bpftrace) / 2.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    Ok(())
}

/// pgbench -S on both servers at once; their TPS.
fn pgbench_both(plain: &Postgres, traced: &Postgres, seconds: u32) -> Result<(f64, f64)> {
    let seconds = seconds.to_string();
    let args = ["-S", "-c", "4", "-j", "2", "-n", "-T", &seconds];
    let runs = [plain, traced].map(|server| {
        server
            .pgbench_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    });
    let [plain, traced] = runs.map(|child| -> Result<f64> {
        let output = child?.wait_with_output()?;
        let out = String::from_utf8_lossy(&output.stdout);
        out.lines()
            .find_map(|line| {
                line.strip_prefix("tps = ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .with_context(|| {
                format!(
                    "no tps in pgbench's output: {out}{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })
    });
    Ok((plain?, traced?))
}
