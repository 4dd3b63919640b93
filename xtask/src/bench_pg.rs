//! `cargo xtask bench pg`: what tracing costs PostgreSQL, measured as pgbench -S throughput
//! and CPU per transaction on paired servers, saturated and at a fixed rate, in one run.

use std::{
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context, Result};
use tracer_tests::{Postgres, Scratch, Sysctl};

use crate::{
    bench::{Tool, program_stats},
    paired::{self, Config, CpuAccount, Plan, RunBoth},
};

/// Transactions per second per server for the fixed-rate half, unless `--rate` says: about a
/// third of what a server does saturated here. At 3000 the CPUs idle between queries, and each
/// query's wake-ups (a VM exit when a CPU leaves idle) made the untraced server's CPU per
/// transaction swing from 69 to 89 us between runs, burying tracing's 1-3 us; at 10000, 53-59.
const DEFAULT_RATE: u32 = 10000;

pub fn run(tracer: &Path, paired: &crate::bench::Paired) -> Result<()> {
    let mut accounts = [
        CpuAccount::create("bench"),
        CpuAccount::create("bench-traced"),
    ];
    let plain = Postgres::start("bench");
    let traced = Postgres::start_own_binary("bench-traced");
    let servers = [&plain, &traced];
    for (server, account) in servers.iter().zip(&accounts) {
        server.pgbench(&["-i", "-s", "10", "-q"]);
        // Backends fork from the postmaster, and so join its cgroup.
        account
            .cgroup
            .set("cgroup.procs", &server.pid().to_string());
    }

    let postgres = traced.binary().display().to_string();
    let histogram = format!(
        "usdt:{postgres}:postgresql:query__start {{ @start[tid] = nsecs; }}
         usdt:{postgres}:postgresql:query__done /@start[tid]/ {{
             @usecs = hist((nsecs - @start[tid]) / 1000); delete(@start[tid]); }}"
    );
    let pid = traced.pid().to_string();
    let bpftrace = "bpftrace USDT histogram";
    let configs = || {
        vec![
            Config::untraced(),
            Config::tracer("tracer pg", tracer, &["pg", "-p", &pid]),
            Config::bpftrace(bpftrace, &histogram),
            Config::tracer(
                "tracer pg --via probes",
                tracer,
                &["pg", "-p", &pid, "--via", "probes"],
            ),
            Config::tracer(
                "tracer pg --via socket",
                tracer,
                &["pg", "-p", &pid, "--via", "socket"],
            ),
            // Every column: its goal is bpftrace's cost at most (not half of it).
            Config::tracer(
                "tracer pg --breakdown",
                tracer,
                &["pg", "-p", &pid, "--breakdown"],
            ),
            Config {
                name: "bcc dbstat",
                tool: Some((
                    ["stdbuf", "-oL", "dbstat-bpfcc", "postgres", "-p", &pid]
                        .map(String::from)
                        .to_vec(),
                    "Tracing",
                )),
            },
        ]
    };
    let run_both = |accounts: &[CpuAccount; 2], seconds: u32, rate: Option<u32>| {
        let seconds = seconds.to_string();
        let mut args = vec!["-S", "-c", "4", "-j", "2", "-n", "-T", &seconds];
        let rate = rate.map(|rate| rate.to_string());
        if let Some(rate) = &rate {
            args.extend(["-R", rate]);
        }
        paired::run_both_with(
            accounts,
            |i| servers[i].pgbench_command(&args),
            |output| {
                Ok((
                    paired::field(output, "tps = ", "pgbench")?,
                    paired::field(
                        output,
                        "number of transactions actually processed: ",
                        "pgbench",
                    )?,
                ))
            },
        )
    };
    // Saturated, then at a fixed rate below saturation, where both servers do the same work.
    // Saturated, each server and its pgbench on a CPU of their own (with the tool beside the
    // traced one): unpinned, how the scheduler shares the CPUs between them moved each round's
    // CPU per transaction by 5-9 points (standard deviation), pinned by 2-4. At a fixed rate,
    // unpinned: there pinning made it noisier (5-9 points against 2-4, measured at 3000 tps).
    let fixed_rate = paired.rate.unwrap_or(DEFAULT_RATE);
    let pin = std::thread::available_parallelism()?.get() >= 2 && !paired.unpinned;
    for rate in [None, Some(fixed_rate)] {
        for (cpu, account) in accounts.iter_mut().enumerate() {
            account.pin((pin && rate.is_none()).then_some(cpu))?;
        }
        let run_both = |seconds, rate| run_both(&accounts, seconds, rate);
        paired::measure(Plan {
            load: "pg: pgbench -S -c 4 -j 2".into(),
            configs: configs(),
            peer: bpftrace,
            ours: "tracer pg",
            rounds: paired.rounds,
            seconds: paired.seconds,
            rate,
            run_both: &run_both,
            tool_cpu: accounts[1].cpu,
        })?;
        println!();
    }
    let breakdown = [
        tracer.display().to_string(),
        "pg".into(),
        "-p".into(),
        pid,
        "--breakdown".into(),
    ];
    program_costs(
        &breakdown,
        &|seconds, rate| run_both(&accounts, seconds, rate),
        paired.seconds,
        fixed_rate,
    )
}

/// What each kernel program of `tracer pg --breakdown` costs, by the kernel's own accounting
/// (bpf_stats): runs per second and time per run under the fixed-rate load, with a cold file
/// read beside it by an untraced process (page-cache adds and bios: the lookup every other task
/// on the machine pays).
fn program_costs(command: &[String], run_both: &RunBoth, seconds: u32, rate: u32) -> Result<()> {
    let _stats = Sysctl::set("kernel.bpf_stats_enabled", "1");
    let scratch = Scratch::new("bench-cold");
    let file = scratch.file("cold");
    shell(
        Command::new("dd")
            .args([
                "if=/dev/zero",
                "bs=1M",
                "count=512",
                "conv=fsync",
                "status=none",
            ])
            .arg(format!("of={file}")),
    )?;
    let (tool, _) = Tool::start(command, "Tracing")?;
    let before = program_stats(tool.pid());
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let reads = std::thread::scope(|scope| {
        let reader = scope.spawn(|| -> Result<u64> {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                // Out of the page cache (GNU dd: posix_fadvise DONTNEED), then read back.
                shell(Command::new("dd").arg(format!("if={file}")).args([
                    "iflag=nocache",
                    "count=0",
                    "status=none",
                ]))?;
                shell(Command::new("dd").arg(format!("if={file}")).args([
                    "of=/dev/null",
                    "bs=1M",
                    "status=none",
                ]))?;
                reads += 1;
            }
            Ok(reads)
        });
        let load = run_both(seconds, Some(rate));
        stop.store(true, Ordering::Relaxed);
        load.and(reader.join().expect("reader"))
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = program_stats(tool.pid());
    tool.stop()?;
    println!(
        "## tracer pg --breakdown: each kernel program's cost (bpf_stats, {rate} tps per server, \
         {reads} cold reads of 512 MiB beside)\n"
    );
    println!("| program | runs/s | ns per run | CPU |\n|---|---|---|---|");
    let mut programs: Vec<_> = after.iter().collect();
    programs.sort();
    for (name, &(time, runs)) in programs {
        let (time0, runs0) = before.get(name).copied().unwrap_or_default();
        let (time, runs) = (time - time0, runs - runs0);
        if runs == 0 {
            continue;
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.2}% |",
            name.split('#').next().unwrap_or(name),
            runs as f64 / elapsed,
            time as f64 / runs as f64,
            100.0 * time as f64 / 1e9 / elapsed
        );
    }
    println!();
    Ok(())
}

fn shell(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("{command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?}: {status}");
    Ok(())
}
