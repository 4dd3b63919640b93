//! `tracer mysql` against a MariaDB server of the test's own, checked with performance_schema.

use tracer_tests::{Finished, Json, Mariadb, Tracer, assert_refused};

fn summary(finished: &Finished) -> Json {
    finished.assert_success();
    let summaries = finished.json_of_type("summary");
    assert_eq!(summaries.len(), 1, "{finished:#?}");
    summaries[0].clone()
}

fn calls(summary: &Json, query: &str) -> u64 {
    summary["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["query"] == query)
        .map_or(0, |entry| entry["calls"].as_u64().unwrap())
}

#[test]
fn query_counts_match_what_was_issued_and_performance_schema() {
    let server = Mariadb::start("counts");
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT)");
    server.sql("INSERT INTO shop.items VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    // A connection made before tracer started.
    let mut early = server.session();
    early.query("SELECT 'connected'");
    let tracer = Tracer::start(&["mysql", "--json", "-p", &server.pid().to_string()]);
    server.sql("TRUNCATE performance_schema.events_statements_summary_by_digest");

    for _ in 0..3 {
        early.query("SELECT 99");
    }
    // A failing statement mid-session shifts nothing after it.
    early.fail("SELEC 1");
    for _ in 0..4 {
        early.query("SELECT 17");
    }
    // A connection made after tracer started.
    let mut late = server.session();
    for id in 1..=5 {
        late.query(&format!(
            "SELECT name FROM shop.items WHERE id = {id} OR id = 1 LIMIT 1"
        ));
    }
    for list in ["1, 2, 3", "2", "3, 1"] {
        late.query(&format!(
            "SELECT COUNT(*) FROM shop.items WHERE id IN ({list})"
        ));
    }
    drop((early, late));
    // Other commands, counted by name.
    let socket = format!("--socket={}", server.dir.join("socket").display());
    let ping = std::process::Command::new("mariadb-admin")
        .args([&socket, "--user=root", "ping"])
        .output()
        .unwrap();
    assert!(ping.status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let summary = summary(&tracer.stop());

    let expected = [
        ("SELECT ?", "SELECT ?", 3 + 4),
        (
            "SELECT name FROM shop.items WHERE id = ? OR id = ? LIMIT ?",
            "SELECT NAME FROM `shop` . `items` WHERE ID = ? OR ID = ? LIMIT ?",
            5,
        ),
        (
            "SELECT COUNT(*) FROM shop.items WHERE id IN (...)",
            // performance_schema keeps a one-item list apart: IN (?) beside IN (...).
            "SELECT COUNT ( * ) FROM `shop` . `items` WHERE ID IN (%",
            3,
        ),
    ];
    for (normalized, digest, issued) in expected {
        let traced = calls(&summary, normalized);
        let counted = server.digest_count(digest);
        eprintln!("{normalized}: issued {issued}, tracer {traced}, performance_schema {counted}");
        assert_eq!(traced, issued, "{normalized}: {summary:#}");
        let digests = server.sql(
            "SELECT DIGEST_TEXT, COUNT_STAR FROM performance_schema.events_statements_summary_by_digest",
        );
        assert_eq!(counted, issued, "{digest} not among:\n{digests}");
    }
    // The failed statement is a call of its own; the ping is counted by name.
    assert_eq!(calls(&summary, "SELEC ?"), 1);
    assert_eq!(calls(&summary, "COM_PING"), 1, "{summary:#}");
    // Literals never show unless asked for.
    let texts = summary["queries"].as_array().unwrap().iter();
    let texts: Vec<&str> = texts.map(|q| q["query"].as_str().unwrap()).collect();
    assert!(
        texts.iter().all(|t| !t.contains("17") && !t.contains("99")),
        "{texts:?}"
    );
    assert_eq!(summary["lost"], 0);
}

#[test]
fn raw_shows_literals_and_slow_lines_name_the_server() {
    let server = Mariadb::start("raw");
    let tracer = Tracer::start(&[
        "mysql",
        "--json",
        "--raw",
        "--slow",
        "0",
        "-p",
        &server.pid().to_string(),
    ]);
    let mut session = server.session();
    session.query("SELECT 4242");
    drop(session);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let finished = tracer.stop();
    let slow = finished.json_of_type("slow_query");
    let line = slow
        .iter()
        .find(|line| line["query"] == "SELECT 4242")
        .unwrap_or_else(|| panic!("{finished:#?}"));
    assert_eq!(line["pid"], server.pid());
}

#[test]
fn bad_input_gets_one_line() {
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    assert_refused(
        &["mysql", "-p", &pid],
        |_| {},
        "is not a MySQL or MariaDB server: it has no dispatch_command(",
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_refused(
        &["mysql", "--bin", "/bin/true"],
        |_| {},
        "/bin/true is not a MySQL or MariaDB server",
    );
}
