//! `cargo xtask bench mysql`: what tracing costs MariaDB, measured as sysbench
//! oltp_point_select throughput and CPU per transaction on paired servers.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};
use tracer_tests::{Flavour, MysqlServer};

use crate::paired::{self, Config, CpuAccount, Plan};

/// sysbench's tables: small enough to prepare in seconds, and all in the buffer pool.
const TABLES: &str = "--tables=2";
const TABLE_SIZE: &str = "--table-size=20000";

pub fn run(tracer: &Path, paired: &crate::bench::Paired) -> Result<()> {
    let accounts = [
        CpuAccount::create("bench-mysql"),
        CpuAccount::create("bench-mysql-traced"),
    ];
    let options = ["--performance-schema=OFF", "--max-connections=64"];
    let plain = MysqlServer::start_from(
        Flavour::Mariadb,
        "bench",
        true,
        Some(&accounts[0].cgroup),
        &options,
    );
    let traced = MysqlServer::start_from(
        Flavour::Mariadb,
        "bench-traced",
        true,
        Some(&accounts[1].cgroup),
        &options,
    );
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
    let mariadbd = traced.dir.join("mariadbd").display().to_string();
    let function = "_Z16dispatch_command19enum_server_commandP3THDPcjb";
    let histogram = format!(
        "uprobe:{mariadbd}:{function} {{ @start[tid] = nsecs; }}
         uretprobe:{mariadbd}:{function} /@start[tid]/ {{
             @usecs = hist((nsecs - @start[tid]) / 1000); delete(@start[tid]); }}"
    );
    let pid = traced.pid().to_string();
    let bpftrace = "bpftrace uprobe histogram";
    let configs = vec![
        Config::untraced(),
        Config::tracer("tracer mysql", tracer, &["mysql", "-p", &pid]),
        Config::bpftrace(bpftrace, &histogram),
        Config::tracer(
            "tracer mysql --via socket",
            tracer,
            &["mysql", "-p", &pid, "--via", "socket"],
        ),
    ];
    let run_both = |seconds: u32, rate: Option<u32>| {
        let time = format!("--time={seconds}");
        let rate = rate.map(|rate| format!("--rate={rate}"));
        let mut args = vec!["--threads=4", &time];
        args.extend(rate.as_deref());
        args.push("run");
        paired::run_both_with(&accounts, |i| sysbench(servers[i], &args), transactions)
    };
    paired::measure(Plan {
        load: "mysql: sysbench oltp_point_select --threads=4 (prepared statements)".into(),
        configs,
        peer: bpftrace,
        ours: "tracer mysql",
        rounds: paired.rounds,
        seconds: paired.seconds,
        rate: paired.rate,
        run_both: &run_both,
        tool_cpu: None,
    })
}

fn sysbench(server: &MysqlServer, args: &[&str]) -> Command {
    let mut command = Command::new("sysbench");
    command
        .args([
            "oltp_point_select",
            "--db-driver=mysql",
            "--mysql-user=root",
        ])
        .arg(format!(
            "--mysql-socket={}",
            server.dir.join("socket").display()
        ))
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
