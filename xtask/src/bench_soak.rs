//! `cargo xtask bench soak`: `tracer serve` with its tools under a continuous event storm
//! (memory-cgroup reclaim, writeback, OOM kills, pgbench against a traced server), scraped
//! every second. Reports RSS over the run, events lost (and any the kernel counted that tracer
//! neither saw nor reported lost), and scrape latency.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use tracer_tests::{Cgroup, Postgres, Scratch, free_port, http_get, sh_in, vmstat};

use crate::bench::{Tool, median};

pub fn run(tracer: &Path, minutes: f64) -> Result<()> {
    let length = Duration::from_secs_f64(minutes * 60.0);
    let server = Postgres::start_own_binary("soak");
    server.pgbench(&["-i", "-s", "2", "-q"]);
    let records = Scratch::new("soak-records");
    let port = free_port();
    let pg = format!("-p {} --top 20", server.pid());
    let command: Vec<String> = [
        &tracer.display().to_string(),
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--tools",
        "direct-reclaim,writeback,oom",
        "--pg",
        &pg,
        "--record-dir",
        records.dir.to_str().unwrap_or_default(),
        "--record-span",
        "5",
    ]
    .map(String::from)
    .to_vec();
    let (serve, _) = Tool::start(&command, "Tracing")?;
    let pid = serve.pid();
    // The reset's own call is counted after it: traced too.
    server.psql("SELECT pg_stat_statements_reset()");
    let before = vmstat();

    // OOM kills are compared in the soak's own cgroup: the machine's oom_kill counts kills
    // anywhere, and serve drops the series of cgroups gone for --grace.
    let oomcg = Arc::new(Cgroup::memory("tracer-soak-oom", "64M"));
    let stop = Arc::new(AtomicBool::new(false));
    let storms = storms(&server, &stop, &oomcg);
    let start = Instant::now();
    let mut scrapes = Vec::new();
    let mut rss = Vec::new();
    let mut next = start;
    while start.elapsed() < length {
        next += Duration::from_secs(1);
        let asked = Instant::now();
        let (status, _, _) = http_get(port, "/metrics", None);
        scrapes.push(asked.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        if scrapes.len() % 10 == 1 {
            rss.push((start.elapsed().as_secs_f64(), resident_mb(pid)));
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    for storm in storms {
        let _ = storm.join();
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = vmstat();
    let (_, _, metrics) = http_get(port, "/metrics", None);
    let cpu = serve.cpu_seconds();
    serve.stop()?;

    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let lost = sum("tracer_lost_events_total");
    let kills = metrics
        .lines()
        .filter(|line| line.starts_with("tracer_oom_kills_total"))
        .filter(|line| line.contains(&format!("cgroup=\"{}\"", oomcg.relative())))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    let queries = sum("tracer_pg_query_seconds_count");
    let stalls = sum("tracer_reclaim_stall_seconds_count");
    let written = sum("tracer_writeback_pages_total");
    let issued: f64 = server
        .psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements")
        .parse()
        .unwrap_or(f64::NAN);
    let kernel_kills = oomcg.oom_kills() as f64;
    let kernel_written = after["nr_written"] - before["nr_written"];
    let secs = start.elapsed().as_secs_f64();

    println!(
        "soak: tracer serve under reclaim, writeback, OOM kills and pgbench for {minutes} min, scraped every second"
    );
    println!(
        "events: {stalls} reclaim stalls, {written} pages written back (vmstat nr_written: {kernel_written}), {kills} OOM kills in the soak's cgroup (its own count: {kernel_kills}), {queries} queries (pg_stat_statements: {issued}); lost and reported: {lost}"
    );
    let unreported = (issued - queries - lost).max(0.0) + (kernel_kills - kills).max(0.0);
    println!(
        "events the kernel or server counted that tracer neither saw nor reported lost: {unreported}"
    );
    println!(
        "tracer's CPU: {cpu:.1} s in {secs:.0} s ({:.1}% of a core)",
        100.0 * cpu / secs
    );
    // RSS after warm-up (the first tenth, at least two minutes where the run allows).
    let warm_up = (secs / 10.0).max(120.0_f64.min(secs / 2.0));
    let warm: Vec<(f64, f64)> = rss.iter().copied().filter(|(t, _)| *t >= warm_up).collect();
    let (slope_mb_per_s, mean) = fit(&warm);
    let per_hour = 100.0 * slope_mb_per_s * 3600.0 / mean;
    println!(
        "RSS: {:.1} MB at start, {:.1} MB after warm-up ({warm_up:.0} s), {:.1} MB at the end, max {:.1} MB; slope after warm-up {per_hour:+.2}% per hour",
        rss.first().map_or(f64::NAN, |s| s.1),
        warm.first().map_or(f64::NAN, |s| s.1),
        rss.last().map_or(f64::NAN, |s| s.1),
        rss.iter().map(|s| s.1).fold(0.0, f64::max),
    );
    let series = |prefix: &str| {
        (metrics.lines())
            .filter(|line| line.starts_with(prefix) && !line.starts_with('#'))
            .count()
    };
    println!(
        "exported: {} samples, {} of them tracer_pg_query_* (per workload, database, user and query)",
        series(""),
        series("tracer_pg_query_")
    );
    let p99 = percentile(&scrapes, 0.99);
    println!(
        "scrape latency over {} scrapes: p50 {:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        scrapes.len(),
        median(scrapes.iter().copied()),
        scrapes.iter().copied().fold(0.0, f64::max)
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "goals: RSS growth under 1%/hour {}; nothing lost unreported {}; scrape p99 under 10 ms {}",
        verdict(per_hour < 1.0),
        verdict(unreported == 0.0),
        verdict(p99 < 10.0)
    );
    Ok(())
}

/// The storm, on threads that run until `stop`.
fn storms(
    server: &Postgres,
    stop: &Arc<AtomicBool>,
    oomcg: &Arc<Cgroup>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    let spawn = |threads: &mut Vec<_>, work: Box<dyn Fn() + Send>| {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                work();
            }
        }));
    };
    // Queries: pgbench -S at a steady rate, 10 s at a time.
    let pgbench =
        server.pgbench_command(&["-S", "-c", "2", "-j", "1", "-T", "10", "-R", "2000", "-n"]);
    let program = pgbench.get_program().to_owned();
    let args: Vec<std::ffi::OsString> = pgbench.get_args().map(ToOwned::to_owned).collect();
    spawn(
        &mut threads,
        Box::new(move || {
            let _ = Command::new(&program)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }),
    );
    // Memory-cgroup reclaim: 512 MiB through a 256 MiB cgroup.
    let scratch = Arc::new(Scratch::new("soak"));
    let memcg = Arc::new(Cgroup::memory("tracer-soak", "256M"));
    let (reclaim_dir, reclaim_cg) = (scratch.clone(), memcg.clone());
    spawn(
        &mut threads,
        Box::new(move || {
            let file = reclaim_dir.file("reclaim");
            let script = format!(
                "dd if=/dev/zero of={file} bs=1M count=512 status=none && cat {file} > /dev/null; rm -f {file}"
            );
            let _ = sh_in(&[&reclaim_cg], &script).status();
        }),
    );
    // Writeback: 64 MiB and sync, every 2 s.
    let sync_dir = scratch.clone();
    spawn(
        &mut threads,
        Box::new(move || {
            let file = sync_dir.file("sync");
            let _ = Command::new("sh")
                .args(["-c", &format!("dd if=/dev/zero of={file} bs=1M count=64 status=none && sync && rm -f {file}")])
                .status();
            std::thread::sleep(Duration::from_secs(2));
        }),
    );
    // An OOM kill a minute.
    let oomcg = oomcg.clone();
    let stop_oom = stop.clone();
    spawn(
        &mut threads,
        Box::new(move || {
            let _ = sh_in(
                &[&oomcg],
                "exec dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null",
            )
            .status();
            for _ in 0..60 {
                if stop_oom.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }),
    );
    threads
}

fn resident_mb(pid: u32) -> f64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(f64::NAN);
    pages * 4096.0 / 1e6
}

/// Least-squares slope (per second) and mean of `(time, value)` samples.
fn fit(samples: &[(f64, f64)]) -> (f64, f64) {
    let n = samples.len() as f64;
    if n < 2.0 {
        return (f64::NAN, f64::NAN);
    }
    let (mean_t, mean_v) = (
        samples.iter().map(|s| s.0).sum::<f64>() / n,
        samples.iter().map(|s| s.1).sum::<f64>() / n,
    );
    let covariance: f64 = samples
        .iter()
        .map(|(t, v)| (t - mean_t) * (v - mean_v))
        .sum();
    let variance: f64 = samples.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    (covariance / variance, mean_v)
}

fn percentile(values: &[f64], quantile: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
    sorted.get(index).copied().unwrap_or(f64::NAN)
}
