//! `cargo xtask bench mysql`: what tracing costs MariaDB and Oracle MySQL, measured as sysbench
//! oltp_point_select throughput and CPU per transaction on paired servers of each kind,
//! saturated and at a fixed rate, in one run.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};
use tracer_tests::{Flavour, MysqlServer};

use crate::paired::{self, Config, CpuAccount, Plan};

/// sysbench's tables: small enough to prepare in seconds, and all in the buffer pool.
const TABLES: &str = "--tables=2";
const TABLE_SIZE: &str = "--table-size=20000";
/// Transactions per second per server for the fixed-rate half, unless `--rate` says: about a
/// third of what a server does saturated here, as bench pg's.
const DEFAULT_RATE: u32 = 8000;

/// The servers to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Server {
    Mariadb,
    Mysql,
}

pub fn run(tracer: &Path, paired: &crate::bench::Paired, servers: &[Server]) -> Result<()> {
    for &server in servers {
        let flavour = match server {
            Server::Mariadb => Flavour::Mariadb,
            Server::Mysql => Flavour::Mysql,
        };
        run_on(tracer, paired, flavour)?;
    }
    Ok(())
}

fn run_on(tracer: &Path, paired: &crate::bench::Paired, flavour: Flavour) -> Result<()> {
    let mut accounts = [
        CpuAccount::create("bench-mysql"),
        CpuAccount::create("bench-mysql-traced"),
    ];
    let options = ["--performance-schema=OFF", "--max-connections=64"];
    let start = |name, account: &CpuAccount| {
        MysqlServer::start_from(flavour, name, true, Some(&account.cgroup), &options)
    };
    let plain = start("bench", &accounts[0]);
    let traced = start("bench-traced", &accounts[1]);
    let servers = [&plain, &traced];
    for server in servers {
        server.sql("CREATE DATABASE sbtest");
        let output = sysbench(server, &["prepare"]).output()?;
        if !output.status.success() {
            bail!(
                "sysbench prepare: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    // Each server runs a copy of its binary: bpftrace's uprobes, by path, trap in it alone.
    let (binary, function) = match flavour {
        Flavour::Mariadb => (
            "mariadbd",
            "_Z16dispatch_command19enum_server_commandP3THDPcjb",
        ),
        Flavour::Mysql => (
            "mysqld",
            "_Z16dispatch_commandP3THDPK8COM_DATA19enum_server_command",
        ),
    };
    let binary = traced.dir.join(binary).display().to_string();
    let histogram = format!(
        "uprobe:{binary}:{function} {{ @start[tid] = nsecs; }}
         uretprobe:{binary}:{function} /@start[tid]/ {{
             @usecs = hist((nsecs - @start[tid]) / 1000); delete(@start[tid]); }}"
    );
    let pid = traced.pid().to_string();
    let bpftrace = "bpftrace uprobe histogram";
    let configs = || {
        vec![
            Config::untraced(),
            Config::tracer("tracer mysql", tracer, &["mysql", "-p", &pid]),
            Config::bpftrace(bpftrace, &histogram),
            Config::tracer(
                "tracer mysql --via probes",
                tracer,
                &["mysql", "-p", &pid, "--via", "probes"],
            ),
            Config::tracer(
                "tracer mysql --via socket",
                tracer,
                &["mysql", "-p", &pid, "--via", "socket"],
            ),
        ]
    };
    let run_both = |accounts: &[CpuAccount; 2], seconds: u32, rate: Option<u32>| {
        let time = format!("--time={seconds}");
        let rate = rate.map(|rate| format!("--rate={rate}"));
        let mut args = vec!["--threads=4", &time];
        args.extend(rate.as_deref());
        args.push("run");
        paired::run_both_with(accounts, |i| sysbench(servers[i], &args), transactions)
    };
    // As bench pg: saturated with each server and its load on a CPU of their own (the tool
    // beside the traced one), then at a fixed rate, unpinned.
    let fixed_rate = paired.rate.unwrap_or(DEFAULT_RATE);
    let pin = std::thread::available_parallelism()?.get() >= 2 && !paired.unpinned;
    for rate in [None, Some(fixed_rate)] {
        for (cpu, account) in accounts.iter_mut().enumerate() {
            account.pin((pin && rate.is_none()).then_some(cpu))?;
        }
        let run_both = |seconds, rate| run_both(&accounts, seconds, rate);
        paired::measure(Plan {
            load: format!(
                "mysql: {flavour:?}, sysbench oltp_point_select --threads=4 (prepared statements)"
            ),
            configs: configs(),
            peer: bpftrace,
            ours: "tracer mysql",
            rounds: paired.rounds,
            seconds: paired.seconds,
            rate,
            run_both: &run_both,
            tool_cpu: accounts[1].cpu,
        })?;
        println!();
    }
    Ok(())
}

fn sysbench(server: &MysqlServer, args: &[&str]) -> Command {
    let mut command = Command::new("sysbench");
    command
        .args([
            "oltp_point_select",
            "--db-driver=mysql",
            "--mysql-user=root",
            // Plaintext, as a local application's connection.
            "--mysql-ssl=off",
        ])
        .arg(format!("--mysql-socket={}", server.socket().display()))
        .args(["--mysql-db=sbtest", TABLES, TABLE_SIZE])
        .args(args);
    command
}

/// TPS and transactions from sysbench's "transactions: 12345 (1234.56 per sec.)".
fn transactions(output: &str) -> Result<(f64, f64)> {
    let line = output
        .lines()
        .find(|line| line.trim_start().starts_with("transactions:"))
        .with_context(|| format!("no transactions in sysbench's output: {output}"))?;
    let mut numbers = line
        .split_whitespace()
        .filter_map(|word| word.trim_start_matches('(').parse::<f64>().ok());
    match (numbers.next(), numbers.next()) {
        (Some(transactions), Some(tps)) => Ok((tps, transactions)),
        _ => bail!("cannot read sysbench's '{line}'"),
    }
}
