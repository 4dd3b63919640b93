//! `cargo xtask bench pg`: what tracing costs PostgreSQL, measured as pgbench -S throughput
//! and CPU per transaction on paired servers, saturated and at a fixed rate, in one run.

use std::path::Path;

use anyhow::Result;
use tracer_tests::Postgres;

use crate::paired::{self, Config, CpuAccount, Plan};

/// Transactions per second per server for the fixed-rate half, unless `--rate` says.
const DEFAULT_RATE: u32 = 3000;

pub fn run(tracer: &Path, paired: &crate::bench::Paired) -> Result<()> {
    let accounts = [
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
    let run_both = |seconds: u32, rate: Option<u32>| {
        let seconds = seconds.to_string();
        let mut args = vec!["-S", "-c", "4", "-j", "2", "-n", "-T", &seconds];
        let rate = rate.map(|rate| rate.to_string());
        if let Some(rate) = &rate {
            args.extend(["-R", rate]);
        }
        paired::run_both_with(
            &accounts,
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
    // Saturated, then at a fixed rate below saturation, where CPU cost shows with less noise.
    for rate in [None, Some(paired.rate.unwrap_or(DEFAULT_RATE))] {
        paired::measure(Plan {
            load: "pg: pgbench -S -c 4 -j 2".into(),
            configs: configs(),
            peer: bpftrace,
            ours: "tracer pg",
            rounds: paired.rounds,
            seconds: paired.seconds,
            rate,
            run_both: &run_both,
        })?;
        println!();
    }
    Ok(())
}
