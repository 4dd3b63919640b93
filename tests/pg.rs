//! `tracer pg` against a PostgreSQL server of the test's own, checked with pg_stat_statements.

use std::path::Path;

use tracer_tests::{
    Cgroup, CompactingFaults, Finished, Json, Postgres, Scratch, SwapDevice, Tracer,
    assert_refused, cgroup_v2_only, client_rows, proc_schedstat, proc_stat, query_calls,
    query_entry, run, summary, vmstat,
};

fn calls(summary: &Json, text: &str) -> u64 {
    query_entry(summary, text);
    query_calls(summary, text)
}

/// A `tracer pg --json` for each way of finding queries, all at once on the same server: what
/// each measures must be the same. The socket is watched two ways: through the sock
/// tracepoints, and through the system calls kernels before 6.3 have instead.
fn tracers(args: &[&str]) -> [(&'static str, Tracer); 4] {
    [
        ("probes", &["--via", "probes"][..]),
        ("default", &[]),
        ("socket", &["--via", "socket"]),
        ("socket (syscalls)", &["--via", "socket", "--via-syscalls"]),
    ]
    .map(|(name, via)| {
        let mut all = vec!["pg", "--json"];
        all.extend(via);
        all.extend(args);
        (name, Tracer::start(&all))
    })
}

/// Statements of each kind in a test pipeline, and pipelines sent.
const PIPELINED: usize = 200;
const PIPELINES: u64 = 5;

#[test]
fn query_counts_match_what_was_issued_and_pg_stat_statements() {
    let server = Postgres::start("counts");
    server.pgbench(&["-i", "-s", "1", "-q"]);
    // A backend that connected before tracer started.
    let mut early = server.session();
    early.query("SELECT 'connected'");
    let tracers = tracers(&["-p", &server.pid().to_string()]);
    server.psql("SELECT pg_stat_statements_reset()");

    for _ in 0..3 {
        early.query("SELECT 99");
    }
    // Simple protocol, from a backend that connected after tracer started.
    let mut session = server.session();
    for _ in 0..7 {
        session.query("SELECT 17");
    }
    for bid in 1..=5 {
        session.query(&format!(
            "SELECT count(*) FROM pgbench_branches WHERE bid = {bid}"
        ));
    }
    for list in ["1, 2, 3", "4, 5", "6"] {
        session.query(&format!(
            "SELECT count(*) FROM pgbench_accounts WHERE aid IN ({list})"
        ));
    }
    // Extended protocol: prepared statements, 2 clients x 40 transactions of one SELECT.
    server.pgbench(&["-M", "prepared", "-S", "-t", "40", "-c", "2", "-n"]);
    // Two statements in one Query message (psql -c sends it whole).
    server.psql("SELECT lower('One'); SELECT 2 + 3, 4");
    // Pipelines of 400 prepared statements, past the text read and past what a backend
    // receives at once (8 KiB).
    let script = Scratch::new("pipeline");
    let file = script.file("pipeline.sql");
    let statements = [
        "SELECT 5 * 5;\n",
        "SELECT relname FROM pg_class WHERE oid = 1259;\n",
    ];
    let pipeline = statements
        .map(|statement| statement.repeat(PIPELINED))
        .concat();
    std::fs::write(&file, format!("\\startpipeline\n{pipeline}\\endpipeline\n")).unwrap();
    run(std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&script.dir));
    let pipelines = PIPELINES.to_string();
    server.pgbench(&["-M", "prepared", "-f", &file, "-t", &pipelines, "-n"]);
    drop((early, session));

    let expected = [
        ("SELECT ?", "SELECT $1", 7 + 3),
        (
            "SELECT count(*) FROM pgbench_branches WHERE bid = ?",
            "SELECT count(*) FROM pgbench_branches WHERE bid = $1",
            5,
        ),
        (
            "SELECT count(*) FROM pgbench_accounts WHERE aid IN (...)",
            "SELECT count(*) FROM pgbench_accounts WHERE aid IN (%",
            3,
        ),
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1%",
            80,
        ),
        ("SELECT lower(?)", "SELECT lower($1)", 1),
        ("SELECT ? + ?, ?", "SELECT $1 + $2, $3", 1),
        (
            "SELECT ? * ?",
            "SELECT $1 * $2",
            PIPELINES * PIPELINED as u64,
        ),
        (
            "SELECT relname FROM pg_class WHERE oid = ?",
            "SELECT relname FROM pg_class WHERE oid = $1",
            PIPELINES * PIPELINED as u64,
        ),
    ];
    for (via, tracer) in tracers {
        let summary = summary(&tracer.stop());
        for (normalized, pattern, issued) in expected {
            let traced = calls(&summary, normalized);
            let statements = server.statement_calls(pattern);
            eprintln!(
                "{normalized}: issued {issued}, tracer --via {via} {traced}, pg_stat_statements {statements}"
            );
            assert_eq!(traced, issued, "--via {via}: {normalized}");
            assert_eq!(statements, issued, "{pattern}");
        }
        // Literals never show unless asked for.
        let texts = summary["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["query"].as_str().unwrap());
        assert!(
            texts
                .clone()
                .all(|text| !text.contains("17") && !text.contains("bid = 3")),
            "{summary:#}"
        );
        assert_eq!(summary["lost"], 0);
    }
}

/// One-query connections over TLS, as health checks and cron jobs make them: the default mode
/// counts each from its first query, where OpenSSL hands over the plaintext.
/// Two databases and two users in one server run the same statements at different rates, over
/// connections of one query each and over long sessions: each row (database, user, query) is
/// that database's and user's own pg_stat_statements count, and `--by database` (here through
/// the probes) sums each database's.
#[test]
fn rows_are_per_database_and_user_as_pg_stat_statements_counts_them() {
    let server = Postgres::start("clients");
    for (database, user) in [("shop", "alice"), ("crm", "bob")] {
        server.psql(&format!("CREATE ROLE {user} LOGIN"));
        server.psql(&format!("CREATE DATABASE {database} OWNER {user}"));
    }
    let pid = server.pid().to_string();
    let by_query = Tracer::start(&["pg", "--json", "-p", &pid]);
    let by_database = Tracer::start(&[
        "pg", "--json", "--via", "probes", "--by", "database", "-p", &pid,
    ]);
    server.psql("SELECT pg_stat_statements_reset()");
    let pages = "SELECT count(*) FROM pg_class WHERE relpages > 7";
    let mut shop = server.session_as("alice", "shop");
    let mut crm = server.session_as("bob", "crm");
    for round in 0..30 {
        shop.query(pages);
        if round < 12 {
            server.psql_as("alice", "shop", pages);
        }
        if round < 9 {
            crm.query(pages);
        }
        if round < 5 {
            shop.query("SELECT 17");
        }
        if round < 4 {
            server.psql_as("bob", "crm", pages);
        }
        if round < 3 {
            server.psql_as("alice", "crm", "SELECT 17");
        }
    }
    drop((shop, crm));
    let summary = summary(&by_query.stop());
    for (normalized, pattern) in [
        (
            "SELECT count(*) FROM pg_class WHERE relpages > ?",
            "SELECT count(*) FROM pg_class WHERE relpages > $1",
        ),
        ("SELECT ?", "SELECT $1"),
    ] {
        let traced = client_rows(&summary, normalized);
        let statements = server.statement_calls_by_client(pattern);
        eprintln!("{normalized}: tracer {traced:?}, pg_stat_statements {statements:?}");
        assert_eq!(traced, statements, "{summary:#}");
    }
    let want = [("shop", 12 + 30 + 5), ("crm", 4 + 9 + 3)];
    let summary = tracer_tests::summary(&by_database.stop());
    for (database, calls) in want {
        let row = (summary["queries"].as_array().unwrap().iter())
            .find(|row| row["database"] == database)
            .unwrap_or_else(|| panic!("no {database} in {summary:#}"));
        let statements: u64 = server
            .psql(&format!(
                "SELECT sum(calls) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
                 WHERE d.datname = '{database}'"
            ))
            .parse()
            .unwrap();
        eprintln!(
            "{database}: issued {calls}, tracer --by database {}, pg_stat_statements {statements}",
            row["calls"]
        );
        assert_eq!(row["calls"], calls, "{summary:#}");
        assert_eq!(statements, calls);
        assert!(
            row.get("query").is_none() && row.get("user").is_none(),
            "{row:#}"
        );
    }
}

#[test]
fn tls_backends_are_read_through_openssl_by_default_and_unseen_through_the_socket() {
    let server = Postgres::start_tls("tls");
    let [(_, probes), (_, default), sockets @ ..] = tracers(&["-p", &server.pid().to_string()]);
    for _ in 0..8 {
        server.psql_over_tls("SELECT 'encrypted'");
    }
    server.psql("SELECT 'plain'");
    assert_eq!(server.statement_calls("SELECT $1"), 9);
    assert_eq!(calls(&summary(&probes.stop()), "SELECT ?"), 9);
    let default = summary(&default.stop());
    let count = |field: &str| default[field].as_u64().unwrap();
    assert_eq!(calls(&default, "SELECT ?"), 9, "{default:#}");
    assert_eq!(count("tls_backends"), 8, "{default:#}");
    // And the one that asked pg_stat_statements.
    assert_eq!(count("socket_backends"), 10, "{default:#}");
    for field in ["probed_backends", "late_backends", "encrypted_backends"] {
        assert_eq!(count(field), 0, "{field}: {default:#}");
    }
    // The socket sees only the plain one, and says what it missed.
    for (via, tracer) in sockets {
        let finished = tracer.stop();
        assert!(
            finished.stderr.contains("is encrypted"),
            "{via}: {finished:#?}"
        );
        let socket = summary(&finished);
        assert_eq!(calls(&socket, "SELECT ?"), 1, "{via}");
        assert_eq!(socket["encrypted_backends"], 8, "{via}: {socket:#}");
    }
}

#[test]
fn semaphore_gated_probes_fire_in_a_server_started_after_tracer() {
    let tracer = Tracer::start(&[
        "pg",
        "--json",
        "--bin",
        Postgres::bin_dir().join("postgres").to_str().unwrap(),
    ]);
    let server = Postgres::start("late");
    let mut session = server.session();
    for _ in 0..4 {
        session.query("SELECT 'after tracer'");
    }
    drop(session);
    let summary = summary(&tracer.stop());
    // query__start is gated by a semaphore: without it set in the new server, nothing fires.
    assert_eq!(calls(&summary, "SELECT ?"), 4);
    assert_eq!(server.statement_calls("SELECT $1"), 4);
}

/// The default mode as a user starts it, with no server named, before the server: it must
/// find the server when it starts, read its plaintext backends' requests off their sockets and
/// its TLS backends' through OpenSSL, with clients of both kinds at once, multi-statement
/// queries and pipelines, each working from the moment it connects.
#[test]
fn the_default_mode_counts_a_later_servers_plain_and_tls_queries_at_once() {
    let tracer = Tracer::start(&["pg", "--json", "-v"]);
    let server = Postgres::start_tls("later");
    let pipeline = |name: &str, before: &str| {
        let script = server.dir.join(name);
        let text = format!(
            "{before}\\startpipeline\nSELECT length('piped');\nSELECT 7 * 6;\n\\endpipeline\n"
        );
        std::fs::write(&script, text).unwrap();
        script.to_str().unwrap().to_owned()
    };
    let (plain_script, tls_script) = (pipeline("plain.sql", ""), pipeline("tls.sql", ""));
    server.psql("SELECT pg_stat_statements_reset()");
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut session = server.session_over_tls();
            for _ in 0..25 {
                session.query("SELECT 'encrypted' || 'tls'");
            }
            drop(session);
            server.pgbench_over_tls(&["-M", "prepared", "-t", "10", "-n", "-f", &tls_script]);
        });
        scope.spawn(|| {
            let mut session = server.session();
            for _ in 0..30 {
                session.query("SELECT upper('plain')");
            }
            drop(session);
            for _ in 0..3 {
                server.psql("SELECT lower('One'); SELECT 2 + 3; SELECT abs(-4)");
            }
            server.pgbench(&["-M", "prepared", "-t", "30", "-n", "-f", &plain_script]);
        });
    });
    let finished = tracer.stop();
    eprintln!("{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains(&format!("postmaster pid {}", server.pid())),
        "{finished:#?}"
    );
    let summary = summary(&finished);
    let expected = [
        ("SELECT ? || ?", "SELECT $1 || $2", 25),
        ("SELECT upper(?)", "SELECT upper($1)", 30),
        ("SELECT lower(?)", "SELECT lower($1)", 3),
        ("SELECT ? + ?", "SELECT $1 + $2", 3),
        ("SELECT abs(?)", "SELECT abs($1)", 3),
        ("SELECT length(?)", "SELECT length($1)", 40),
        ("SELECT ? * ?", "SELECT $1 * $2", 40),
    ];
    for (normalized, pattern, issued) in expected {
        let traced = calls(&summary, normalized);
        let statements = server.statement_calls(pattern);
        eprintln!(
            "{normalized}: issued {issued}, tracer {traced}, pg_stat_statements {statements}"
        );
        assert_eq!(statements, issued, "{pattern}");
        assert_eq!(traced, issued, "{normalized}: {summary:#}");
    }
    // A psql session and pgbench's two connections over TLS (its first runs nothing), through
    // OpenSSL's probes; the plain ones through their sockets.
    let count = |field: &str| summary[field].as_u64().unwrap();
    assert_eq!(count("tls_backends"), 3, "{summary:#}");
    assert_eq!(count("probed_backends") + count("encrypted_backends"), 0);
    assert!(count("socket_backends") >= 5, "{summary:#}");
    assert_eq!(summary["lost"], 0);
}

#[test]
fn reclaim_stalls_are_charged_to_the_query_that_stalled() {
    let server = Postgres::start("reclaim");
    // 128 MiB the backend will read in 1 MiB pieces.
    let data = server.uncached_file("data.bin", 128);
    let memcg = Cgroup::memory("tracer-pg", "32M");
    let mut session = server.session();
    let backend = session.query("SELECT pg_backend_pid()");
    let tracers = tracers(&["-p", &backend]);
    // Faults in some 12k pages (50 MB of text), before the cgroup could not hold them.
    let faults_before = page_faults(&backend);
    session.query("SELECT length(repeat('x', 50000000))");
    let backend_faults = page_faults(&backend) - faults_before;
    memcg.set("cgroup.procs", &backend);
    session.query("SELECT 'idle control'");
    let read = Postgres::read_in_pieces(&data);
    assert_eq!(session.query(&read), (128u64 << 20).to_string());
    drop(session);
    for (via, tracer) in tracers {
        eprintln!("--via {via}:");
        let finished = tracer.stop();
        check_reclaim_and_counters(&finished, &memcg, backend_faults);
    }
}

/// Direct compaction inside a query: one that touches 64 MB where huge-page faults compact
/// ([`CompactingFaults`]). The query's compaction stalls are its backend's as `tracer direct-reclaim` counts
/// them (itself held to vmstat's `compact_stall` by its own test), and its compaction time
/// theirs; the control query has none.
#[test]
fn compaction_stalls_are_charged_to_the_query_that_compacted() {
    let server = Postgres::start("compaction");
    let mut session = server.session();
    let backend = session.query("SELECT pg_backend_pid()");
    let tracers = tracers(&["-p", &backend]);
    let whole = Tracer::start(&["direct-reclaim", "--json", "--events"]);
    let compacting = CompactingFaults::new();
    let stalls_before = vmstat()["compact_stall"];
    session.query("SELECT length(repeat('x', 64000000))");
    let stalls = vmstat()["compact_stall"] - stalls_before;
    drop(compacting);
    session.query("SELECT 'control'");
    drop(session);
    let events = whole.stop().json_of_type("compaction");
    let tid: u64 = backend.parse().unwrap();
    let backends: Vec<&Json> = (events.iter()).filter(|line| line["tid"] == tid).collect();
    let backend_us: f64 = (backends.iter())
        .map(|line| line["latency_us"].as_f64().unwrap())
        .sum();
    eprintln!(
        "compact_stall rose by {stalls}; the backend's stalls: {}, {backend_us:.0} us",
        backends.len()
    );
    assert!(
        !backends.is_empty(),
        "the query did not compact: {events:#?}"
    );
    for (via, tracer) in tracers {
        let summary = summary(&tracer.stop());
        let query = query_entry(&summary, "SELECT length(repeat(?, ?))");
        let control = query_entry(&summary, "SELECT ?");
        let (count, us) = (&query["compaction_stalls"], &query["compaction_us"]);
        eprintln!("--via {via}: the query's compaction: {count} stalls, {us} us");
        assert_eq!(count.as_u64().unwrap(), backends.len() as u64, "{query:#}");
        assert!(count.as_u64().unwrap() <= stalls);
        // Its time is its tries', stalls or not (a try that skipped every zone is next to
        // nothing), and within the query's.
        let us = us.as_f64().unwrap();
        assert!(
            us >= backend_us && us <= backend_us * 1.01 + 100.0,
            "{query:#}"
        );
        assert!(
            us <= query["latency"]["max_us"].as_f64().unwrap(),
            "{query:#}"
        );
        assert_eq!(control["compaction_stalls"], 0, "{control:#}");
        assert_eq!(control["compaction_us"], 0.0, "{control:#}");
    }
}

fn check_reclaim_and_counters(finished: &Finished, memcg: &Cgroup, backend_faults: u64) {
    let summary = summary(finished);
    let reading = query_entry(
        &summary,
        "SELECT sum(length(pg_read_binary_file(?, piece * ?, ?))) FROM generate_series(?, ?) piece",
    );
    let control = query_entry(&summary, "SELECT ?");
    eprintln!(
        "reading: {} us of reclaim in {} stalls; control: {} us; memcg failcnt {}",
        reading["reclaim_us"],
        reading["reclaim_stalls"],
        control["reclaim_us"],
        memcg.read("memory.failcnt").trim()
    );
    assert!(reading["reclaim_us"].as_f64().unwrap() > 0.0, "{reading:#}");
    assert!(reading["reclaim_stalls"].as_u64().unwrap() > 0);
    assert_eq!(control["reclaim_us"], 0.0, "{control:#}");
    assert_eq!(control["reclaim_stalls"], 0);

    // Counters: without a hardware PMU, software ones, and tracer says so.
    let faulting = query_entry(&summary, "SELECT length(repeat(?, ?))");
    assert_eq!(faulting["counted_calls"], 1, "{faulting:#}");
    if has_hardware_pmu() {
        assert!(
            faulting["counters"]["llc-references"].as_u64().unwrap() > 0,
            "{faulting:#}"
        );
    } else {
        assert!(
            finished.stderr.contains("no hardware PMU here"),
            "{}",
            finished.stderr
        );
        // The query's faults are the backend's between the two reads, less the few it took
        // receiving the query and sending the result (which, through the socket, are some).
        let faults = faulting["counters"]["page-faults"].as_u64().unwrap();
        eprintln!("faulting query: {faults} page faults; the backend took {backend_faults}");
        // 50 MB: thousands of faults on 4 KiB pages, some hundreds where huge pages serve part
        // of it (932 in the 6.12 guest).
        assert!(faults > 100, "{faulting:#}");
        assert!(
            faults <= backend_faults && faults * 100 >= backend_faults * 95,
            "tracer counted {faults} page faults, the backend took {backend_faults}"
        );
    }
}

/// Minor plus major page faults of a process, as /proc/PID/stat counts them (fields 10, 12).
fn page_faults(pid: &str) -> u64 {
    let stat = proc_stat(pid.parse().unwrap());
    stat[7].parse::<u64>().unwrap() + stat[9].parse::<u64>().unwrap()
}

fn has_hardware_pmu() -> bool {
    std::fs::read_dir("/sys/bus/event_source/devices")
        .unwrap()
        .flatten()
        .any(|device| device.file_name().to_string_lossy().starts_with("cpu"))
}

#[test]
fn slow_queries_get_a_line_each() {
    let server = Postgres::start("slow");
    let tracer = Tracer::start(&[
        "pg",
        "--json",
        "--slow",
        "100",
        "-p",
        &server.pid().to_string(),
    ]);
    let mut session = server.session();
    session.query("SELECT pg_sleep(0.2)::text");
    session.query("SELECT 1");
    drop(session);
    let finished = tracer.stop();
    let slow = finished.json_of_type("slow_query");
    assert_eq!(slow.len(), 1, "{finished:#?}");
    assert_eq!(slow[0]["query"], "SELECT pg_sleep(?)::text");
    assert!(slow[0]["latency_us"].as_f64().unwrap() >= 200_000.0);
}

#[test]
fn what_is_not_postgres_is_refused_in_one_line() {
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id().to_string();
    let cases = [
        (
            vec!["pg", "-p", sleeper_pid.as_str()],
            "is not a PostgreSQL server",
        ),
        (
            vec!["pg", "--bin", "/bin/true"],
            "is not a PostgreSQL server",
        ),
        (
            vec!["pg", "--bin", "/nonexistent/postgres"],
            "cannot open /nonexistent/postgres",
        ),
        (vec!["pg", "-p", "4194304"], "no such process: 4194304"),
        (
            vec!["pg", "--via", "socket", "-p", sleeper_pid.as_str()],
            "is not a PostgreSQL server",
        ),
        (
            vec!["pg", "--bin", "/bin/true", "-p", "1"],
            "cannot be used with",
        ),
    ];
    for (args, expected) in cases {
        assert_refused(&args, |_| {}, expected);
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(Path::new("/bin/true").exists());
}

#[test]
fn protocol_chooses_which_probes_queries_pass() {
    let server = Postgres::start("protocol");
    server.pgbench(&["-i", "-s", "1", "-q"]);
    let pid = server.pid().to_string();
    let probes = |protocol| {
        Tracer::start(&[
            "pg",
            "--json",
            "--via",
            "probes",
            "--protocol",
            protocol,
            "-p",
            &pid,
        ])
    };
    let (simple, portals) = (probes("simple"), probes("extended"));
    let executes = Tracer::start(&[
        "pg",
        "--json",
        "--via",
        "socket",
        "--protocol",
        "extended",
        "-p",
        &pid,
    ]);
    let mut session = server.session();
    for _ in 0..6 {
        session.query("SELECT 17");
    }
    drop(session);
    server.pgbench(&["-M", "prepared", "-S", "-t", "25", "-c", "1", "-n"]);
    let (simple, portals, executes) = (simple.stop(), portals.stop(), executes.stop());
    assert!(
        simple.stderr.contains("USDT postgresql:query__start/done)"),
        "{simple:#?}"
    );
    let (simple, portals, executes) = (summary(&simple), summary(&portals), summary(&executes));
    let prepared = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

    // Simple-protocol queries only: the prepared statement's Executes pass no probe.
    assert_eq!(calls(&simple, "SELECT ?"), 6);
    let texts: Vec<_> = simple["queries"].as_array().unwrap().iter().collect();
    assert!(texts.iter().all(|q| q["query"] != prepared), "{simple:#}");
    // Portal runs: both, the simple queries timed as their execution.
    assert_eq!(calls(&portals, "SELECT ?"), 6);
    assert_eq!(calls(&portals, prepared), 25);
    // Through the socket, extended-protocol Executes only.
    assert_eq!(calls(&executes, prepared), 25);
    let texts: Vec<_> = executes["queries"].as_array().unwrap().iter().collect();
    assert!(
        texts.iter().all(|q| q["query"] != "SELECT ?"),
        "{executes:#}"
    );
    assert_eq!(server.statement_calls("SELECT abalance%"), 25);
}

/// `--breakdown`: where a query's time went. A CPU-bound query sharing its CPU with a busy
/// loop waits for it about as long as the kernel's own schedstat says; the same on an idle
/// CPU hardly waits; and for every query the parts add up to its latency.
#[test]
fn the_breakdown_adds_up_and_shows_a_run_queue_wait_as_schedstat_does() {
    let server = Postgres::start("breakdown");
    let mut session = server.session();
    let backend = session.query("SELECT pg_backend_pid()");
    let tracer = Tracer::start(&["pg", "--json", "--breakdown", "--slow", "0", "-p", &backend]);
    // taskset -p says what it did on stdout, which would land amid the test harness's lines.
    let pin = |cpu: &str| {
        run(std::process::Command::new("taskset")
            .args(["-pc", cpu, &backend])
            .stdout(std::process::Stdio::null()))
    };
    let wait_ns = || proc_schedstat(&backend)[1];

    pin("0");
    let mut hog = std::process::Command::new("taskset")
        .args(["-c", "0", "sh", "-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let before = wait_ns();
    session.query("SELECT count(*) FROM generate_series(1, 4000000) AS crowded");
    let waited = wait_ns() - before;
    let _ = hog.kill();
    let _ = hog.wait();
    pin("1");
    session.query("SELECT sum(n) FROM generate_series(1, 4000000) AS alone(n)");
    drop(session);

    let finished = tracer.stop();
    let slow = finished.json_of_type("slow_query");
    let line = |text: &str| {
        slow.iter()
            .find(|line| line["query"] == text)
            .unwrap_or_else(|| panic!("no slow line for {text}: {finished:#?}"))
    };
    let us = |line: &Json, part: &str| line["breakdown"][part].as_f64().unwrap();
    let crowded = line("SELECT count(*) FROM generate_series(?, ?) AS crowded");
    let alone = line("SELECT sum(n) FROM generate_series(?, ?) AS alone(n)");
    let schedstat_us = waited as f64 / 1000.0;
    eprintln!(
        "crowded: {:.0} us, on CPU {:.0}, run queue {:.0} (schedstat {schedstat_us:.0}); \
         alone: {:.0} us, run queue {:.0}",
        crowded["latency_us"].as_f64().unwrap(),
        us(crowded, "oncpu_us"),
        us(crowded, "runq_us"),
        alone["latency_us"].as_f64().unwrap(),
        us(alone, "runq_us"),
    );
    // The busy loop takes about half the CPU: the query waits a good part of its time, as
    // much as schedstat counts (which also holds the moments around the query).
    assert!(us(crowded, "runq_us") > 0.2 * crowded["latency_us"].as_f64().unwrap());
    assert!(
        (us(crowded, "runq_us") - schedstat_us).abs() <= 0.15 * schedstat_us + 5000.0,
        "{crowded:#}"
    );
    assert!(
        us(alone, "runq_us") < 0.05 * alone["latency_us"].as_f64().unwrap(),
        "{alone:#}"
    );
    // Every query's parts add up to its latency: nothing is left out.
    for line in &slow {
        let latency = line["latency_us"].as_f64().unwrap();
        let rest = us(line, "rest_us");
        assert!(rest.abs() <= 0.01 * latency + 20.0, "{line:#}");
    }
}

/// `--breakdown`'s page-cache misses and block I/O: a sequential scan of a table whose file was
/// just dropped from the page cache misses the pages the kernel then added for that file (as
/// fincore counts them, before and after) and reads what the backend's `/proc/PID/io` says it
/// read; the second scan, nothing.
#[test]
fn page_cache_misses_and_reads_are_what_a_cold_scan_costs() {
    let server = Postgres::start("cache");
    // 80 MB: past a quarter of shared_buffers, so scans go through a small ring of buffers and
    // read from the page cache each time.
    server.psql(
        "CREATE TABLE cold AS SELECT n, repeat('x', 100) AS pad FROM generate_series(1, 600000) n",
    );
    // Hint bits set now, not by the measured scan (which would write pages back).
    server.psql("VACUUM FREEZE cold");
    server.psql("CHECKPOINT");
    let file = format!(
        "{}/{}",
        server.data(),
        server.psql("SELECT pg_relation_filepath('cold')")
    );
    run(&mut std::process::Command::new("sync"));
    // GNU dd drops a whole file's cached pages so (posix_fadvise DONTNEED).
    run(std::process::Command::new("dd")
        .arg(format!("if={file}"))
        .args(["iflag=nocache", "count=0", "status=none"]));
    let tracer = Tracer::start(&[
        "pg",
        "--json",
        "--breakdown",
        "--slow",
        "0",
        "-p",
        &server.pid().to_string(),
    ]);
    let mut session = server.session();
    // The backend's own reads: parallel workers would read part of the table in their own.
    session.execute("SET max_parallel_workers_per_gather = 0");
    let backend = session.query("SELECT pg_backend_pid()");
    let cold = cached_pages(&file);
    let read_before = read_bytes(&backend);
    session.query("SELECT count(*) FROM cold AS first_scan");
    let read = read_bytes(&backend) - read_before;
    let warm = cached_pages(&file);
    session.query("SELECT count(*) FROM cold AS second_scan");
    let again = cached_pages(&file);
    drop(session);
    let finished = tracer.stop();
    let slow = finished.json_of_type("slow_query");
    let part = |scan: &str, part: &str| {
        let text = format!("SELECT count(*) FROM cold AS {scan}");
        let line = slow.iter().find(|line| line["query"] == text.as_str());
        let line = line.unwrap_or_else(|| panic!("{text}: {finished:#?}"));
        line["breakdown"][part].as_f64().unwrap() as u64
    };
    let (first, second) = (
        part("first_scan", "cache_misses"),
        part("second_scan", "cache_misses"),
    );
    let added = warm - cold;
    eprintln!(
        "file pages cached: {cold} before, {warm} after the first scan, {again} after the \
         second; tracer: first scan missed {first}, second {second}"
    );
    assert!(added > 10_000, "the scan read the file from disk: {added}");
    assert_eq!(first, added);
    assert_eq!(second, again - warm);
    assert_eq!(second, 0);
    let (traced, bios) = (part("first_scan", "read_bytes"), part("first_scan", "bios"));
    eprintln!("read: {traced} bytes in {bios} bios by tracer, {read} by /proc/PID/io");
    assert_eq!(traced, read);
    assert!(bios > 0 && bios <= read / 4096, "{bios} bios");
    assert_eq!(part("second_scan", "read_bytes"), 0);
    assert_eq!(part("first_scan", "swapins"), 0);
}

/// `--breakdown`'s swap-ins: a temporary table in the backend's own memory (its local
/// buffers), pushed out to a swap device by its memory cgroup, is swapped back in by the scan
/// that reads it: as many pages as /proc/vmstat's `pswpin` rose by.
#[test]
fn swap_ins_are_the_pages_the_kernel_swapped_in() {
    let swap = SwapDevice::on(512);
    let server = Postgres::start("swap");
    let memcg = Cgroup::memory("tracer-swap", "max");
    // The helper's v2 cgroups do not swap; this one must.
    let _ = std::fs::write(format!("{}/memory.swap.max", memcg.path_str()), "max");
    let mut session = server.session();
    let backend = session.query("SELECT pg_backend_pid()");
    memcg.set("cgroup.procs", &backend);
    // Charged to the cgroup: the memory the backend touches from now on.
    session.execute("SET temp_buffers = '256MB'");
    session.execute(
        "CREATE TEMP TABLE held AS SELECT n, repeat('x', 100) AS pad \
         FROM generate_series(1, 500000) n",
    );
    session.query("SELECT count(*) FROM held AS warm");
    // Out to swap: a limit far below what the cgroup holds reclaims the difference (v2's
    // memory.high, which reclaims what it can; memory.max would OOM-kill the backend when
    // reclaim lags, as it does under the emulator).
    let limit = if cgroup_v2_only() {
        "memory.high"
    } else {
        "memory.limit_in_bytes"
    };
    // v1 refuses the limit (EBUSY) when its reclaim retries cannot get under it, each try
    // having pushed more out: what the scan then swaps in is what the test counts.
    for _ in 0..10 {
        match std::fs::write(memcg.path.join(limit), "16M") {
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => continue,
            written => {
                written.unwrap();
                break;
            }
        }
    }
    memcg.set(limit, if cgroup_v2_only() { "max" } else { "-1" });
    let swapped: u64 = swap_used_kib(&swap.device);
    let tracer = Tracer::start(&[
        "pg",
        "--json",
        "--breakdown=io",
        "--slow",
        "0",
        "-p",
        &backend,
    ]);
    let pswpin = vmstat()["pswpin"];
    session.query("SELECT count(*) FROM held AS swapped_in");
    let rose = vmstat()["pswpin"] - pswpin;
    drop(session);
    let finished = tracer.stop();
    let slow = finished.json_of_type("slow_query");
    let text = "SELECT count(*) FROM held AS swapped_in";
    let line = slow.iter().find(|line| line["query"] == text);
    let parts = &line.unwrap_or_else(|| panic!("{text}: {finished:#?}"))["breakdown"];
    let swapins = parts["swapins"].as_f64().unwrap() as u64;
    eprintln!(
        "{swapped} KiB on {} before the scan; pswpin rose by {rose}, tracer: {swapins} pages \
         swapped in, {} bytes read",
        swap.device, parts["read_bytes"]
    );
    assert!(rose > 5_000, "the scan swapped the table in: {rose}");
    // Nothing else on the machine swaps; another process touching the backend's pages (none
    // does) would count in pswpin alone.
    assert!(
        swapins <= rose && swapins >= rose * 99 / 100,
        "{swapins} of {rose}"
    );
    assert!(parts["read_bytes"].as_f64().unwrap() as u64 >= swapins * 4096);
    assert!(parts.get("oncpu_us").is_none(), "only the io part: {parts}");
}

/// What the process has read from block devices, as its `/proc/PID/io` says.
fn read_bytes(pid: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let line = io
        .lines()
        .find_map(|line| line.strip_prefix("read_bytes: "));
    line.unwrap().trim().parse().unwrap()
}

/// What a swap area holds, in KiB, as /proc/swaps says.
fn swap_used_kib(device: &str) -> u64 {
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap();
    let line = swaps.lines().find(|line| line.starts_with(device)).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Pages of `file` in the page cache, as fincore counts them.
fn cached_pages(file: &str) -> u64 {
    let output = std::process::Command::new("fincore")
        .args(["--noheadings", "--output", "PAGES", file])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// `--breakdown`'s throttling: a CPU-bound query in a cgroup with a small CPU quota is held
/// back as long as the cgroup's own `cpu.stat` says (`throttled_usec`, v1's `throttled_time`);
/// the same query outside, not at all.
#[test]
fn cpu_quota_throttling_is_what_the_cgroup_counted() {
    // A fifth of a CPU: cgroup v2's cpu.max, or v1's CFS quota in the cpu hierarchy.
    let v2 = cgroup_v2_only();
    let (quota, hierarchy, counter, to_us) = if v2 {
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
        let quota = Cgroup::create("unified", "tracer-quota");
        quota.set("cpu.max", "20000 100000");
        (quota, "/sys/fs/cgroup", "throttled_usec ", 1.0)
    } else {
        let quota = Cgroup::create("cpu", "tracer-quota");
        quota.set("cpu.cfs_period_us", "100000");
        quota.set("cpu.cfs_quota_us", "20000");
        (quota, "/sys/fs/cgroup/cpu", "throttled_time ", 1e-3)
    };
    let server = Postgres::start("quota");
    let mut session = server.session();
    let backend = session.query("SELECT pg_backend_pid()");
    // Where the backend was: "0::/path" (v2), "N:cpu,cpuacct:/path" (v1).
    let home = std::fs::read_to_string(format!("/proc/{backend}/cgroup")).unwrap();
    let home = home
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            let ours = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "cpu")
            };
            ours.then(|| path.to_owned())
        })
        .unwrap();
    let tracer = Tracer::start(&["pg", "--json", "--breakdown", "--slow", "0", "-p", &backend]);
    let throttled_us = || {
        let stat = quota.read("cpu.stat");
        let line = stat.lines().find_map(|line| line.strip_prefix(counter));
        line.unwrap().trim().parse::<f64>().unwrap() * to_us
    };
    quota.set("cgroup.procs", &backend);
    let before = throttled_us();
    session.query("SELECT count(*) FROM generate_series(1, 3000000) AS held");
    let rose = throttled_us() - before;
    std::fs::write(format!("{hierarchy}{home}/cgroup.procs"), &backend).unwrap();
    session.query("SELECT sum(n) FROM generate_series(1, 3000000) AS free(n)");
    drop(session);

    let finished = tracer.stop();
    let slow = finished.json_of_type("slow_query");
    let throttled = |text: &str| {
        let line = slow.iter().find(|line| line["query"] == text);
        let line = line.unwrap_or_else(|| panic!("{text}: {finished:#?}"));
        let parts = &line["breakdown"];
        eprintln!(
            "{text}: {:.0} us, run queue {:.0}, throttled {:.0}",
            line["latency_us"].as_f64().unwrap(),
            parts["runq_us"].as_f64().unwrap(),
            parts["throttled_us"].as_f64().unwrap()
        );
        parts["throttled_us"].as_f64().unwrap()
    };
    let held = throttled("SELECT count(*) FROM generate_series(?, ?) AS held");
    let free = throttled("SELECT sum(n) FROM generate_series(?, ?) AS free(n)");
    eprintln!("the cgroup's throttled_usec rose by {rose:.0}");
    assert!(
        rose > 100_000.0,
        "a fifth of a CPU throttles a CPU-bound query: {rose}"
    );
    assert!(
        (held - rose).abs() <= 0.05 * rose + 2000.0,
        "{held} against {rose}"
    );
    assert_eq!(free, 0.0);
}
