//! `cargo xtask bench shapes`: `tracer serve --pg` against a server that receives a flood of
//! distinct statement shapes (schema-per-tenant databases and generated aliases do this) beside
//! twenty busy queries. Reports serve's RSS over the run against the 128 MB goal, and the busy
//! queries' exported counts against pg_stat_statements'.

use std::{
    io::Write,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tracer_tests::{Postgres, free_port, http_get};

use crate::bench::Tool;

/// Busy queries: the one ranked `j` runs `2 * (HOT - j)` times a second, every distinct shape
/// once.
const HOT: usize = 20;

/// Distinct shapes differ in a column alias, which pg_stat_statements does not tell apart (its
/// query ids hash the parse tree) while tracer's normalized texts do; the busy queries differ
/// in their number of columns too, so that the server counts each apart.
fn busy_query(rank: usize, value: &str) -> String {
    format!("SELECT {} AS hot_{rank}", vec![value; rank + 2].join(", "))
}

pub fn run(tracer: &Path, shapes: u64, minutes: f64) -> Result<()> {
    let length = Duration::from_secs_f64(minutes * 60.0);
    let server = Postgres::start_own_binary("shapes");
    let port = free_port();
    let pg = format!("-p {} --top {HOT}", server.pid());
    let command: Vec<String> = [
        &tracer.display().to_string(),
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--tools",
        "oom",
        "--pg",
        &pg,
    ]
    .map(String::from)
    .to_vec();
    let (serve, _) = Tool::start(&command, "Tracing")?;
    let pid = serve.pid();
    server.psql("SELECT pg_stat_statements_reset()");

    let mut psql = std::process::Command::new("psql")
        .args(["-X", "-q", "-o", "/dev/null"])
        .args(server.connection())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("psql")?;
    let mut input = std::io::BufWriter::new(psql.stdin.take().context("psql's stdin")?);
    let seconds = length.as_secs().max(1);
    let per_second = shapes.div_ceil(seconds);
    let start = Instant::now();
    let mut issued_hot = [0u64; HOT];
    let mut rss = Vec::new();
    let mut sent = 0u64;
    // Scraped as the PodMonitor does: series are rebalanced before each scrape.
    const SCRAPE_INTERVAL: u64 = 15;
    for second in 0..seconds {
        // A tenth of a second's statements at a time, the busy ones among the distinct ones.
        for tenth in 0..10u64 {
            let mut text = String::new();
            let distinct = per_second * (tenth + 1) / 10 - per_second * tenth / 10;
            for _ in 0..distinct.min(shapes - sent) {
                text.push_str(&format!("SELECT 1 AS shape_{sent};\n"));
                sent += 1;
            }
            for (rank, issued) in issued_hot.iter_mut().enumerate() {
                let calls = (2 * (HOT - rank) as u64) * (tenth + 1) / 10
                    - (2 * (HOT - rank) as u64) * tenth / 10;
                for _ in 0..calls {
                    text.push_str(&busy_query(rank, &second.to_string()));
                    text.push_str(";\n");
                    *issued += 1;
                }
            }
            input.write_all(text.as_bytes())?;
            input.flush()?;
            let due = start + Duration::from_millis(second * 1000 + (tenth + 1) * 100);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        if second % 10 == 0 {
            rss.push(resident_mb(pid, "VmRSS"));
        }
        if second % SCRAPE_INTERVAL == 0 {
            http_get(port, "/metrics", None);
        }
    }
    drop(input);
    psql.wait()?;
    let behind = start.elapsed().as_secs_f64() - seconds as f64;
    std::thread::sleep(Duration::from_secs(3));
    let (_, _, metrics) = http_get(port, "/metrics", None);
    let peak = resident_mb(pid, "VmHWM");
    serve.stop()?;

    // A query's series, in any workload, database and user (its label comes last).
    let count_of = |query: &str| -> f64 {
        let label = format!("query=\"{query}\"}} ");
        metrics
            .lines()
            .filter(|line| line.starts_with("tracer_pg_query_seconds_count{"))
            .filter(|line| line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let series = metrics
        .lines()
        .filter(|line| line.starts_with("tracer_pg_query_seconds_count{"))
        .count();
    println!(
        "shapes: {sent} distinct statement shapes in {seconds} s ({per_second}/s) beside {HOT} busy queries ({} calls), psql {behind:.1} s behind at the end; tracer serve --pg \"--top {HOT}\"",
        issued_hot.iter().sum::<u64>()
    );
    println!(
        "RSS: {:.1} MB after 10 s, {:.1} MB at the end, peak {peak:.1} MB (goal: under 128 MB: {})",
        rss.get(1).copied().unwrap_or(f64::NAN),
        rss.last().copied().unwrap_or(f64::NAN),
        if peak < 128.0 { "met" } else { "NOT met" }
    );
    println!("exported series of tracer_pg_query_seconds: {series}");
    let mut exact = 0;
    for (rank, issued) in issued_hot.iter().enumerate() {
        let exported = count_of(&busy_query(rank, "?"));
        let counted: f64 = server
            .psql(&format!(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '% AS hot\\_{rank}'"
            ))
            .parse()
            .unwrap_or(f64::NAN);
        exact += (exported == counted) as usize;
        println!(
            "  hot_{rank}: issued {issued}, pg_stat_statements {counted}, exported {exported} ({:+})",
            exported - counted
        );
    }
    let other = count_of("other");
    println!(
        "busy queries exported exactly: {exact} of {HOT} (goal: all); query=\"other\": {other} calls"
    );
    Ok(())
}

fn resident_mb(pid: u32, field: &str) -> f64 {
    tracer_tests::proc_status_kib(pid, field) as f64 / 1024.0
}
