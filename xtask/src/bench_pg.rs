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
    let configs = [
        Config {
            name: "untraced",
            tool: None,
        },
        Config {
            name: "tracer pg",
            tool: Some((
                vec![
                    tracer.display().to_string(),
                    "pg".into(),
                    "-p".into(),
                    pid.clone(),
                ],
                "Tracing",
            )),
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
            name: "bcc dbstat",
            tool: Some((
                ["stdbuf", "-oL", "dbstat-bpfcc", "postgres", "-p", &pid]
                    .map(String::from)
                    .to_vec(),
                "Tracing",
            )),
        },
    ];
    let pgbench = |seconds: u32| -> Result<f64> {
        let out = server.pgbench(&["-S", "-c", "4", "-j", "2", "-n", "-T", &seconds.to_string()]);
        out.lines()
            .find_map(|line| {
                line.strip_prefix("tps = ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no tps in pgbench's output: {out}"))
    };
    eprintln!("bench: warming up");
    pgbench(5)?;

    let mut tps: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
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
            let result = pgbench(seconds)?;
            drop(tool);
            eprintln!(
                "bench: round {round}: {:<24} {result:>9.0} tps",
                config.name
            );
            tps[i].push(result);
        }
    }

    println!(
        "pg: pgbench -S -c 4 -j 2, {seconds} s per run, {rounds} alternating rounds; median TPS"
    );
    // Each round's loss against that round's untraced run, so that drift cancels out.
    let loss = |i: usize| -> f64 {
        median(
            tps[i]
                .iter()
                .zip(&tps[0])
                .map(|(traced, base)| 100.0 * (1.0 - traced / base)),
        )
    };
    for (i, config) in configs.iter().enumerate() {
        match &failed[i] {
            Some(reason) => println!("{:<24} could not run here: {reason}", config.name),
            None if i == 0 => println!(
                "{:<24} {:>9.0} tps",
                config.name,
                median(tps[i].iter().copied())
            ),
            None => println!(
                "{:<24} {:>9.0} tps  loss {:>5.1}%",
                config.name,
                median(tps[i].iter().copied()),
                loss(i)
            ),
        }
    }
    let (ours, bpftrace) = (loss(1), loss(2));
    println!("tracer loss / bpftrace loss: {:.2}", ours / bpftrace);
    println!(
        "goal (tracer's loss at most half of bpftrace's): {}",
        if ours <= bpftrace / 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
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

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
