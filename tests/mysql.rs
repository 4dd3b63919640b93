//! `tracer mysql` against servers of the test's own, MariaDB and Oracle MySQL, checked with
//! their performance_schema.

use tracer_tests::{
    Cgroup, CompactingFaults, Flavour, Json, Link, MysqlServer, Scratch, Tracer, assert_refused,
    client_rows, proc_schedstat, query_calls, query_entry, run, summary, vmstat, write_uncached,
};

fn calls(summary: &Json, query: &str) -> u64 {
    query_entry(summary, query);
    query_calls(summary, query)
}

/// Each way tracer finds commands: uprobes on dispatch_command(), the sock tracepoints, the
/// system calls (what kernels before 6.3 get).
const VIAS: [&[&str]; 3] = [
    &["--via", "probes"],
    &["--via", "socket"],
    &["--via", "socket", "--via-syscalls"],
];

/// `tracer mysql --json -p PID` and the way to find commands.
fn tracer_mysql(server: &MysqlServer, via: &[&str], more: &[&str]) -> Tracer {
    let pid = server.pid().to_string();
    let mut args = vec!["mysql", "--json", "-p", &pid];
    args.extend(via);
    args.extend(more);
    eprintln!("{:?}: tracer {args:?}", server.flavour);
    Tracer::start(&args)
}

/// The server's own count (performance_schema) of statements issued over one-query
/// connections. MariaDB 10.11's now and then misses one of them (7 of 8, 5 of 6: twice in
/// some twenty CI runs, while every client succeeded and tracer counted every statement):
/// there it may be one short. Tracer's own count is held to what was issued all the same.
fn assert_server_counted(server: &MysqlServer, counted: u64, issued: u64, what: &str) {
    match server.flavour {
        Flavour::Mariadb => assert!(
            counted == issued || counted + 1 == issued,
            "{what}: performance_schema {counted} of {issued}"
        ),
        Flavour::Mysql => assert_eq!(counted, issued, "{what}"),
    }
}

/// Runs `test` against each server, each way tracer finds commands of `vias`.
fn on_each_server(vias: &[&[&str]], test: fn(Flavour, &[&str])) {
    for flavour in Flavour::all() {
        for via in vias {
            test(flavour, via);
        }
    }
}

#[test]
fn query_counts_match_what_was_issued_and_performance_schema() {
    on_each_server(&VIAS, query_counts);
}

fn query_counts(flavour: Flavour, via: &[&str]) {
    let server = MysqlServer::start(flavour, "counts");
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT)");
    server.sql("INSERT INTO shop.items VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    // A connection made before tracer started.
    let mut early = server.session();
    early.query("SELECT 'connected'");
    let tracer = tracer_mysql(&server, via, &[]);
    server.sql("TRUNCATE performance_schema.events_statements_summary_by_digest");

    for _ in 0..3 {
        early.query("SELECT 99");
    }
    // A failing statement mid-session shifts nothing after it.
    early.execute("SELEC 1");
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
    let ping = server
        .program("mariadb-admin", "mysqladmin", Link::Plain)
        .arg("ping")
        .output()
        .unwrap();
    assert!(ping.status.success());
    server.wait_for_sessions_to_end();
    let summary = summary(&tracer.stop());

    // MySQL quotes the column names in its digests, MariaDB does not.
    let expected = [
        ("SELECT ?", "SELECT ?", 3 + 4),
        (
            "SELECT name FROM shop.items WHERE id = ? OR id = ? LIMIT ?",
            "SELECT NAME FROM `shop` . `items` WHERE %ID% = ? OR %ID% = ? LIMIT ?",
            5,
        ),
        (
            "SELECT COUNT(*) FROM shop.items WHERE id IN (...)",
            // performance_schema keeps a one-item list apart: IN (?) beside IN (...).
            "SELECT COUNT ( * ) FROM `shop` . `items` WHERE %ID% IN (%",
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

/// Two schemas and two users run the same statement at different rates, over connections of
/// one statement each (plaintext and encrypted), long sessions and a session that switches
/// schema with USE: each row
/// (schema, user, query) is what was issued, and each schema's is performance_schema's count
/// in that schema.
#[test]
fn rows_are_per_schema_and_user() {
    for flavour in Flavour::all() {
        rows_per_schema_and_user(flavour);
    }
}

fn rows_per_schema_and_user(flavour: Flavour) {
    let server = MysqlServer::start(flavour, "clients");
    for schema in ["shop", "crm"] {
        server.sql(&format!(
            "CREATE DATABASE {schema}; CREATE TABLE {schema}.items (id INT PRIMARY KEY); \
             INSERT INTO {schema}.items VALUES (1), (2), (3)"
        ));
    }
    server.sql(
        "CREATE USER 'alice'@'localhost', 'bob'@'localhost'; \
         GRANT ALL ON shop.* TO 'alice'@'localhost'; GRANT ALL ON crm.* TO 'alice'@'localhost'; \
         GRANT ALL ON crm.* TO 'bob'@'localhost'",
    );
    let tracer = tracer_mysql(&server, &[], &[]);
    server.sql("TRUNCATE performance_schema.events_statements_summary_by_digest");
    let items = "SELECT COUNT(*) FROM items WHERE id > 1";
    let one_shot = |user: &str, schema: &str, link: Link| {
        let output = server
            .client_as(link, user, Some(schema))
            .args(["-e", items])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let mut shop = server.session_as("alice", Some("shop"));
    let mut crm = server.session_as("bob", Some("crm"));
    let mut switching = server.session_as("alice", None);
    switching.execute("USE crm");
    for round in 0..20 {
        shop.query(items);
        if round < 6 {
            one_shot("alice", "shop", Link::Plain);
        }
        if round < 7 {
            crm.query(items);
        }
        if round < 3 {
            one_shot("bob", "crm", Link::Plain);
            // Encrypted: the handshake response comes through OpenSSL.
            one_shot("bob", "crm", Link::Encrypted);
        }
        if round < 4 {
            switching.query(items);
        }
    }
    drop((shop, crm, switching));
    server.wait_for_sessions_to_end();
    let summary = summary(&tracer.stop());
    let rows = client_rows(&summary, "SELECT COUNT(*) FROM items WHERE id > ?");
    let expected = [
        ("crm", "alice", 4),
        ("crm", "bob", 7 + 3 + 3),
        ("shop", "alice", 20 + 6),
    ];
    let expected: Vec<(String, String, u64)> = (expected.iter())
        .map(|(schema, user, calls)| (schema.to_string(), user.to_string(), *calls))
        .collect();
    eprintln!("{flavour:?}: tracer {rows:?}, issued {expected:?}");
    assert_eq!(rows, expected, "{summary:#}");
    for (schema, issued) in [("shop", 26), ("crm", 17)] {
        let counted: u64 = server
            .sql(&format!(
                "SELECT COALESCE(SUM(COUNT_STAR), 0) FROM performance_schema.events_statements_summary_by_digest \
                 WHERE SCHEMA_NAME = '{schema}' AND DIGEST_TEXT LIKE 'SELECT COUNT ( * ) FROM `items` WHERE % > ?%'"
            ))
            .parse()
            .unwrap();
        assert_server_counted(
            &server,
            counted,
            issued,
            &format!("performance_schema in {schema}"),
        );
    }
}

/// The default mode, as a user runs it, with clients that start working at once: plaintext
/// connections through the socket, encrypted ones through OpenSSL's probes from their first
/// command, compressed ones through probes in their server, one-query connections among
/// them. Those probes take milliseconds to attach: a compressed connection that came before
/// they were in place may have lost commands, and must be said to be late.
#[test]
fn the_default_mode_counts_encrypted_and_compressed_connections() {
    for flavour in Flavour::all() {
        default_mode(flavour);
    }
}

fn default_mode(flavour: Flavour) {
    let server = MysqlServer::start(flavour, "default");
    let tracer = tracer_mysql(&server, &[], &[]);
    server.sql("TRUNCATE performance_schema.events_statements_summary_by_digest");
    let mut clients = Vec::new();
    let connections = 8;
    for i in 1..=connections {
        for (link, sql) in [
            (Link::Plain, format!("SELECT {i}")),
            (Link::Encrypted, format!("SELECT {i} + {i}")),
            (Link::Compressed, format!("SELECT {i} * {i}")),
        ] {
            let client = (server.client_over(link).args(["-e", &sql]))
                .stdout(std::process::Stdio::null())
                .spawn();
            clients.push(client.unwrap());
        }
    }
    // A pooled connection: an encrypted session that runs several statements.
    let mut pooled = server.session_over(Link::Encrypted);
    for i in 1..=5 {
        pooled.query(&format!("SELECT {i} - {i}"));
    }
    drop(pooled);
    for mut client in clients {
        assert!(client.wait().unwrap().success());
    }
    server.wait_for_sessions_to_end();
    let summary = summary(&tracer.stop());
    let late = summary["late_connections"].as_u64().unwrap();
    eprintln!(
        "{flavour:?}: through OpenSSL {}, probed {}, late {late}, unseen {}",
        summary["tls_connections"],
        summary["probed_connections"],
        summary["unreadable_connections"]
    );
    assert_eq!(summary["unreadable_connections"], 0, "{summary:#}");
    // Each encrypted one-query connection, and the pooled one, through OpenSSL; the
    // compressed ones through probes in the server.
    assert_eq!(summary["tls_connections"], connections + 1, "{summary:#}");
    assert_eq!(summary["probed_connections"], connections, "{summary:#}");
    let shapes = [
        ("SELECT ?", "SELECT ?", connections, Link::Plain),
        ("SELECT ? + ?", "SELECT ? + ?", connections, Link::Encrypted),
        (
            "SELECT ? * ?",
            "SELECT ? * ?",
            connections,
            Link::Compressed,
        ),
        ("SELECT ? - ?", "SELECT ? - ?", 5, Link::Encrypted),
    ];
    let mut missed = 0;
    for (normalized, digest, issued, link) in shapes {
        let traced = query_calls(&summary, normalized);
        let counted = server.digest_count(digest);
        eprintln!("{link:?} {normalized}: issued {issued}, tracer {traced}, server {counted}");
        assert_server_counted(&server, counted, issued, digest);
        match link {
            Link::Compressed => assert!(traced <= issued, "{summary:#}"),
            _ => assert_eq!(traced, issued, "{summary:#}"),
        }
        missed += issued - traced;
    }
    // What was missed belongs to compressed connections said to be late, one statement each.
    assert!(missed <= late, "{summary:#}");
    assert_eq!(summary["lost"], 0);

    // Through the socket alone, they are unseen, counted, and said so in one line; the
    // plaintext connections beside them are all there.
    let tracer = tracer_mysql(&server, &["--via", "socket"], &[]);
    for link in [
        Link::Encrypted,
        Link::Compressed,
        Link::Plain,
        Link::Encrypted,
    ] {
        run(server
            .client_over(link)
            .args(["-e", "SELECT 7 / 7"])
            .stdout(std::process::Stdio::null()));
    }
    server.wait_for_sessions_to_end();
    let finished = tracer.stop();
    let through_socket = tracer_tests::summary(&finished);
    assert_eq!(
        through_socket["unreadable_connections"], 3,
        "{through_socket:#}"
    );
    assert_eq!(calls(&through_socket, "SELECT ? / ?"), 1);
    let said: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|l| l.contains("is encrypted"))
        .collect();
    assert_eq!(said.len(), 1, "{}", finished.stderr);
    assert!(said[0].contains("the default --via auto reads such connections"));
}

/// Prepared statements: each execute is counted under its statement's text, from connections
/// made before and after tracer started; one prepared before tracer started counts as such.
/// The server counts executes only in all (MariaDB 10.11 leaves
/// `prepared_statements_instances.COUNT_EXECUTE` at 0): per text, tracer's calls are checked
/// against what was issued, and in all against the server's count.
#[test]
fn prepared_statements_count_under_their_text() {
    on_each_server(&VIAS, prepared_statements);
}

fn prepared_statements(flavour: Flavour, via: &[&str]) {
    let server = MysqlServer::start(flavour, "prepared");
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT)");
    server.sql("INSERT INTO shop.items VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    let by_id = "SELECT name FROM shop.items WHERE id = ?";
    let in_list = "SELECT COUNT(*) FROM shop.items WHERE id IN (?, ?)";
    let before = "SELECT name FROM shop.items WHERE id > ?";
    let duplicate = "INSERT INTO shop.items VALUES (?, 'again')";
    let mut early = server.prepared_session();
    assert_eq!(early.query(&format!("prepare before {before}")), "ok");
    let tracer = tracer_mysql(&server, via, &[]);
    let (executes, prepares) = ("statement/com/Execute", "statement/com/Prepare");
    let (closes, resets) = ("statement/com/Close stmt", "statement/com/Reset stmt");
    server.sql("TRUNCATE performance_schema.events_statements_summary_by_digest");
    let executed_before = server.statement_count(executes);
    let prepared_before = server.statement_count(prepares);
    let (closed_before, reset_before) = (
        server.statement_count(closes),
        server.statement_count(resets),
    );

    let ok = |session: &mut tracer_tests::SqlSession, line: &str| {
        assert_eq!(session.query(line), "ok", "{line}");
    };
    for id in 0..4 {
        ok(&mut early, &format!("execute before {id}"));
    }
    ok(&mut early, &format!("prepare by_id {by_id}"));
    for id in 1..=5 {
        ok(&mut early, &format!("execute by_id {id}"));
    }
    // A statement that fails to prepare, and one that fails to run, shift nothing after them.
    assert_eq!(early.query("prepare broken SELEC ?"), "error");
    ok(&mut early, &format!("prepare duplicate {duplicate}"));
    assert_eq!(early.query("execute duplicate 1"), "error");
    let mut late = server.prepared_session();
    ok(&mut late, &format!("prepare by_id {by_id}"));
    ok(&mut late, &format!("prepare in_list {in_list}"));
    for (a, b) in [(1, 2), (2, 3), (3, 1)] {
        ok(&mut late, &format!("execute in_list {a} {b}"));
    }
    ok(&mut late, "execute by_id 2");
    ok(&mut late, "execute by_id 3");
    ok(&mut late, "close in_list");
    drop((early, late));
    server.wait_for_sessions_to_end();
    let counted = server.statement_count(executes) - executed_before;
    let prepared = server.statement_count(prepares) - prepared_before;
    let closed = server.statement_count(closes) - closed_before;
    let reset = server.statement_count(resets) - reset_before;
    let summary = summary(&tracer.stop());

    let expected = [
        ("SELECT name FROM shop.items WHERE id = ?", 5 + 2),
        ("SELECT COUNT(*) FROM shop.items WHERE id IN (...)", 3),
        ("COM_STMT_EXECUTE (statement prepared before tracing)", 4),
        ("INSERT INTO shop.items VALUES (?, ?)", 1),
    ];
    for (key, issued) in expected {
        let traced = calls(&summary, key);
        eprintln!("{key}: issued {issued}, tracer {traced}");
        assert_eq!(traced, issued, "{key}: {summary:#}");
    }
    // Oracle MySQL also counts each prepared statement's executes by its text.
    if flavour == Flavour::Mysql {
        let by_text = [
            ("SELECT NAME FROM `shop` . `items` WHERE %ID% = ?", 5 + 2),
            (
                "SELECT COUNT ( * ) FROM `shop` . `items` WHERE %ID% IN (...)",
                3,
            ),
            ("SELECT NAME FROM `shop` . `items` WHERE %ID% > ?", 4),
            ("INSERT INTO `shop` . `items` VALUES (...)", 1),
        ];
        for (digest, issued) in by_text {
            let counted = server.digest_count(&format!("EXECUTE {digest}"));
            assert_eq!(counted, issued, "EXECUTE {digest}");
        }
    }
    let issued: u64 = expected.iter().map(|(_, issued)| issued).sum();
    eprintln!("executes: issued {issued}, performance_schema {counted}");
    assert_eq!(counted, issued);
    // Five statements prepared after tracer started (one failed), one closed by the client,
    // the others by their connections' end. The client library resets the statement
    // (COM_STMT_RESET) and closes it (COM_STMT_CLOSE), though under load the close at times
    // never reaches the server before the connection ends: the server's counts say which.
    assert_eq!(calls(&summary, "COM_STMT_PREPARE"), 5);
    assert_eq!(prepared, 5);
    eprintln!("closes: {closed}, resets: {reset} (performance_schema)");
    assert!(closed + reset > 0, "the client closed nothing");
    assert_eq!(
        query_calls(&summary, "COM_STMT_CLOSE"),
        closed,
        "{summary:#}"
    );
    assert_eq!(
        query_calls(&summary, "COM_STMT_RESET"),
        reset,
        "{summary:#}"
    );
    assert_eq!(summary["lost"], 0);
}

/// N new connections give N entries in each phase, as many as the server counted; those that
/// fail to authenticate end there.
#[test]
fn new_connections_are_followed_on_their_way_in() {
    on_each_server(&VIAS, connections);
}

fn connections(flavour: Flavour, via: &[&str]) {
    let server = MysqlServer::start(flavour, "connections");
    let tracer = tracer_mysql(&server, via, &["--connections"]);
    let status = |name: &str| server.status(name);
    // Each status read is a connection of its own, also followed.
    let (connections_before, aborted_before) = (status("Connections"), status("Aborted_connects"));
    let (good, bad) = (10, 2);
    for _ in 0..good {
        server.sql("SELECT 1");
    }
    for _ in 0..bad {
        let refused = server
            .client()
            .arg("--user=nobody")
            .arg("-e")
            .arg("SELECT 1")
            .output();
        assert!(!refused.unwrap().status.success());
    }
    let aborted = status("Aborted_connects") - aborted_before;
    let counted = status("Connections") - connections_before;
    // Not waiting for sessions to end: each look at the server is a connection followed.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let finished = tracer.stop();
    let lines = finished.json_of_type("connections");
    let sum = |field: &dyn Fn(&Json) -> u64| lines.iter().map(field).sum::<u64>();
    let phase =
        |name: &'static str| move |line: &Json| line["phases"][name]["count"].as_u64().unwrap();

    // The four status reads, the good and the bad.
    let made = 4 + good + bad;
    let followed = sum(&|line| line["connections"].as_u64().unwrap());
    eprintln!(
        "connections: made {made}, tracer {followed}, server {counted} (from the first read on)"
    );
    assert_eq!(followed, made);
    // The server's count taken by the first read includes that read.
    assert_eq!(counted + 1, made, "the server's count");
    assert_eq!(sum(&|line| line["failed"].as_u64().unwrap()), bad);
    assert_eq!(aborted, bad);
    assert_eq!(
        sum(&|line| line["accepted_before_tracing"].as_u64().unwrap()),
        0
    );
    assert_eq!(sum(&phase("accept_to_handshake")), made);
    assert_eq!(sum(&phase("handshake_to_authenticated")), made);
    assert_eq!(sum(&phase("authenticated_to_first_command")), made - bad);
    assert_eq!(
        sum(&|line| line["listener_busy"]["count"].as_u64().unwrap()),
        made
    );
}

/// A listener that stops taking connections, as a stalled or saturated server's does: TCP
/// clients wait in the kernel's accept queue (each wait is tracer's to measure), and with a
/// queue of two (`--back-log=1`) the kernel turns the rest away, which its own
/// `ListenOverflows` counts. Those whose handshake ended in a SYN cookie are lost for good
/// (the client believes it is connected and waits for a greeting that never comes): they
/// fail, as they would in production.
#[test]
fn a_stalled_listener_shows_in_queue_waits_and_overflows() {
    on_each_server(&[&[]], stalled_listener);
}

fn stalled_listener(flavour: Flavour, via: &[&str]) {
    let port = 20000 + (std::process::id() % 10000) as u16 + flavour as u16;
    let port_option = format!("--port={port}");
    let options = [
        "--skip-networking=0",
        "--bind-address=127.0.0.1",
        &port_option,
        "--back-log=1",
    ];
    let server = MysqlServer::start_with(flavour, "stalled", None, &options);
    // root logs in through the Unix socket alone (MariaDB's unix_socket authentication).
    server.sql("CREATE USER tcp@'127.0.0.1'");
    let tracer = tracer_mysql(&server, via, &["--connections"]);
    let connections = || server.status("Connections");
    let connections_before = connections();
    let overflows_before = listen_overflows();
    let stall = std::time::Duration::from_millis(500);
    let pid = server.pid().to_string();
    run(std::process::Command::new("kill").args(["-STOP", &pid]));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            server
                .client()
                .args([
                    "--protocol=TCP",
                    "--host=127.0.0.1",
                    &port_option,
                    "--user=tcp",
                ])
                .args(["--connect-timeout=3", "-e", &format!("SELECT {i}")])
                // Their failures are expected, and on a guest's console would split the
                // test's result line.
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // The stall begins once the queue is full: clients start slowly under an emulator.
    let asked = std::time::Instant::now();
    while accept_queue(port) < 2 && asked.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(stall);
    run(std::process::Command::new("kill").args(["-CONT", &pid]));
    let mut connected = 0;
    for mut client in clients {
        connected += client.wait().unwrap().success() as u64;
    }
    let overflows = listen_overflows() - overflows_before;
    // Those the server took, some after their client gave up; and the read itself.
    let accepted = connections() - connections_before - 1;
    let finished = tracer.stop();
    let lines = finished.json_of_type("connections");
    let sum = |field: &dyn Fn(&Json) -> u64| lines.iter().map(field).sum::<u64>();
    let queue = |line: &Json, field: &str| line["accept_queue"][field].as_f64().unwrap();
    let waited = sum(&|line| queue(line, "count") as u64);
    let longest = lines
        .iter()
        .map(|line| queue(line, "max_us"))
        .fold(0.0, f64::max);
    let turned_away = sum(&|line| line["listen_overflows"].as_u64().unwrap());
    eprintln!(
        "{flavour:?}: {connected} of 6 connected, {accepted} accepted, {waited} waits in the \
         queue, the longest {longest} us; overflows: tracer {turned_away}, kernel {overflows}"
    );
    // Each TCP connection the server took was accepted after its wait, the first ones after
    // the stall.
    assert!(connected >= 2, "the queue holds two");
    assert_eq!(waited, accepted, "{finished:#?}");
    assert!(longest >= 0.8 * stall.as_micros() as f64, "{longest}");
    assert!(overflows > 0, "a queue of two, six clients");
    assert_eq!(turned_away, overflows);
}

/// How many connections wait in the accept queue of the TCP listener on `port` (the
/// `rx_queue` of its LISTEN line in /proc/net/tcp).
fn accept_queue(port: u16) -> u64 {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    tcp.lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields[1].ends_with(&local) && fields[3] == "0A")
        .filter_map(|fields| u64::from_str_radix(fields[4].split(':').nth(1)?, 16).ok())
        .sum()
}

/// The kernel's `ListenOverflows` in this network namespace (the servers').
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|name| name == "ListenOverflows");
    values
        .split_whitespace()
        .nth(at.unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn raw_shows_literals_and_slow_lines_name_the_server() {
    on_each_server(&VIAS[..1], raw_and_slow);
}

fn raw_and_slow(flavour: Flavour, _via: &[&str]) {
    let server = MysqlServer::start(flavour, "raw");
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
    server.wait_for_sessions_to_end();
    let finished = tracer.stop();
    let slow = finished.json_of_type("slow_query");
    let line = slow
        .iter()
        .find(|line| line["query"] == "SELECT 4242")
        .unwrap_or_else(|| panic!("{finished:#?}"));
    assert_eq!(line["pid"], server.pid());
}

/// `--breakdown` through the engine pg shares: a command busy on a CPU is on CPU as long as its
/// thread's `/proc/.../schedstat` says, one in `SLEEP()` sleeps, and each one's parts add up to
/// its latency; probes and the socket alike.
#[test]
fn the_breakdown_is_what_the_connections_thread_spent() {
    on_each_server(&VIAS[..2], breakdown);
}

fn breakdown(flavour: Flavour, via: &[&str]) {
    let server = MysqlServer::start(flavour, "breakdown");
    let tracer = tracer_mysql(&server, via, &["--breakdown=sched", "--slow", "0", "-v"]);
    let mut session = server.session();
    let thread = session.query(
        "SELECT THREAD_OS_ID FROM performance_schema.threads WHERE PROCESSLIST_ID = CONNECTION_ID()",
    );
    let schedstat = format!("{}/task/{thread}", server.pid());
    let oncpu_before = proc_schedstat(&schedstat)[0];
    // MySQL 9 has no MD5(); a constant argument would be computed once.
    session.query("SELECT BENCHMARK(1000000, SHA2(RAND(), 256))");
    let oncpu = (proc_schedstat(&schedstat)[0] - oncpu_before) as f64 / 1000.0;
    session.query("SELECT SLEEP(0.2)");
    drop(session);
    server.wait_for_sessions_to_end();
    let finished = tracer.stop();
    let slow = finished.json_of_type("slow_query");
    let line = |text: &str| {
        let line = slow.iter().find(|line| line["query"] == text);
        line.unwrap_or_else(|| panic!("{text}: {finished:#?}"))
            .clone()
    };
    // With -v: the kernel side says when it saw a thread's state change out of order.
    for line in finished
        .stderr
        .lines()
        .filter(|l| l.contains("kernel side"))
    {
        eprintln!("{line}");
    }
    let (busy, asleep) = (
        line("SELECT BENCHMARK(?, SHA2(RAND(), ?))"),
        line("SELECT SLEEP(?)"),
    );
    let us = |line: &Json, part: &str| line["breakdown"][part].as_f64().unwrap();
    eprintln!(
        "busy: {} us on CPU by tracer, {oncpu:.0} by schedstat (of {} us: {}); asleep: {} of {} us",
        us(&busy, "oncpu_us"),
        busy["latency_us"],
        busy["breakdown"],
        us(&asleep, "sleep_us"),
        asleep["latency_us"]
    );
    // schedstat's span also holds the reply and the read of the next command; tracer's wall
    // time on a CPU also holds the interrupts served meanwhile, which schedstat leaves out.
    let busy_us = us(&busy, "oncpu_us");
    assert!(
        (busy_us - oncpu).abs() <= 0.02 * oncpu + 2000.0,
        "{busy_us} against {oncpu}"
    );
    assert!(us(&asleep, "sleep_us") >= 190_000.0);
    for line in [&busy, &asleep] {
        let latency = line["latency_us"].as_f64().unwrap();
        assert!(
            us(line, "rest_us").abs() <= 0.01 * latency + 20.0,
            "{line:#}"
        );
    }
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

/// `tracer mysql` started with no server running, as an agent on a node before its database
/// pods: a MariaDB and an Oracle MySQL server start after it, side by side, and each one's
/// statements are counted from the first, by clients that start working at once, plaintext,
/// encrypted and compressed, exactly as its performance_schema counts them.
#[test]
fn servers_started_later_are_traced_side_by_side() {
    servers_started_later(&[]);
}

/// The same with probes alone, where each server's commands are read as its own kind's.
#[test]
fn servers_started_later_are_read_as_their_own_kind_by_probes() {
    servers_started_later(&["--via", "probes"]);
}

fn servers_started_later(via: &[&str]) {
    let running = std::fs::read_dir("/proc").unwrap().filter(|entry| {
        let comm = entry.as_ref().unwrap().path().join("comm");
        std::fs::read_to_string(comm).is_ok_and(|comm| ["mysqld\n", "mariadbd\n"].contains(&&*comm))
    });
    assert_eq!(running.count(), 0, "a server already runs");
    let mut args = vec!["mysql", "--json"];
    args.extend(via);
    let mut tracer = Tracer::start(&args);
    let servers: Vec<MysqlServer> = Flavour::all()
        .into_iter()
        .map(|flavour| MysqlServer::start(flavour, "later"))
        .collect();
    for server in &servers {
        let followed = tracer.stderr_line(
            |line| line.contains("tracing a MySQL server started since"),
            std::time::Duration::from_secs(10),
        );
        let followed = followed.expect("no server followed");
        assert!(
            servers
                .iter()
                .any(|s| followed.contains(&format!("pid {} ", s.pid()))),
            "{followed}"
        );
        server.sql("TRUNCATE performance_schema.events_statements_summary_by_digest");
    }
    // Each server its own statement shapes, so that each count is that server's.
    let kind = |server: &MysqlServer| format!("{:?}", server.flavour).to_lowercase();
    let links = [
        (Link::Plain, "plain"),
        (Link::Encrypted, "encrypted"),
        (Link::Compressed, "compressed"),
    ];
    let mut clients = Vec::new();
    for i in 1..=6 {
        for server in &servers {
            for (link, name) in links {
                let sql = format!("SELECT {i} AS {name}_{}", kind(server));
                let mut client = server.client_over(link);
                client
                    .args(["-e", &sql])
                    .stdout(std::process::Stdio::null());
                clients.push(client.spawn().unwrap());
            }
        }
    }
    for mut client in clients {
        assert!(client.wait().unwrap().success());
    }
    servers
        .iter()
        .for_each(MysqlServer::wait_for_sessions_to_end);
    let finished = tracer.stop();
    let summary = summary(&finished);
    let mut missed = 0;
    for server in &servers {
        for (link, name) in links {
            let shape = format!("{name}_{}", kind(server));
            let normalized = format!("SELECT ? AS {shape}");
            let counted = server.digest_count(&format!("SELECT ? AS `{shape}`"))
                + server.digest_count(&normalized);
            let traced = query_calls(&summary, &normalized);
            eprintln!("{via:?} {normalized}: issued 6, tracer {traced}, server {counted}");
            assert_server_counted(server, counted, 6, &normalized);
            match (link, via.is_empty()) {
                // The default mode's probes for compressed connections come after the first
                // ones (said to be late).
                (Link::Compressed, true) => assert!(traced <= 6, "{summary:#}"),
                _ => assert_eq!(traced, 6, "{normalized}: {summary:#}"),
            }
            missed += 6 - traced;
        }
    }
    if via.is_empty() {
        assert_eq!(summary["unreadable_connections"], 0, "{summary:#}");
        assert!(
            missed <= summary["late_connections"].as_u64().unwrap(),
            "{summary:#}"
        );
    }
    assert_eq!(summary["lost"], 0);
    // The installers' runs (--initialize, --bootstrap) were no servers.
    let followed = finished
        .stderr
        .matches("tracing a MySQL server started since")
        .count();
    assert_eq!(followed, servers.len(), "{}", finished.stderr);
}

/// A query that reads more than its server's memory cgroup holds stalls in reclaim, charged to
/// it; a query beside it shows none.
#[test]
fn reclaim_stalls_are_charged_to_the_query_that_stalled() {
    on_each_server(&VIAS[..2], reclaim_stalls);
}

fn reclaim_stalls(flavour: Flavour, via: &[&str]) {
    let memcg = Cgroup::memory("tracer-mysql-reclaim", "max");
    // A small server: performance_schema's own memory would not fit.
    let options = [
        "--max-allowed-packet=1G",
        "--innodb-buffer-pool-size=8M",
        "--performance-schema=OFF",
    ];
    let server = MysqlServer::start_with(flavour, "reclaim", Some(&memcg), &options);
    // LOAD_FILE reads the file through the page cache into the server's memory: the file
    // twice over (64 MiB each, MySQL's copy bigger) does not fit beside what the server holds
    // now (MariaDB ~75 MiB, MySQL ~225 MiB). Below 160 MiB more, MySQL's own code pages were
    // reclaimed and read back so often that the query never ended.
    let headroom: u64 = match flavour {
        Flavour::Mariadb => 96,
        Flavour::Mysql => 160,
    };
    // On a disk: in the guests the checkout's directory, where MariaDB's is, is the
    // initramfs, in memory for good. MySQL's is in its root, on a disk of its own.
    let scratch = Scratch::new("mysql-reclaim");
    let file = match flavour {
        Flavour::Mariadb => scratch.dir.join("big"),
        Flavour::Mysql => server.dir.join("big"),
    };
    write_uncached(&file, 64);
    let file = server.inside(&file).display().to_string();
    memcg.limit_memory(memcg.memory_usage() + (headroom << 20));
    let tracer = tracer_mysql(&server, via, &[]);
    let mut session = server.session();
    session.query("SELECT 1");
    // What the cgroup holds, as its memory.stat (v2) or the usage alone (v1) says it.
    let held = || {
        let stat = memcg.read("memory.stat");
        let kept = ["anon ", "file "].map(|name| {
            (stat.lines())
                .find_map(|line| line.strip_prefix(name)?.parse::<u64>().ok())
                .map_or(String::new(), |bytes| {
                    format!("{name}{} MiB, ", bytes >> 20)
                })
        });
        format!(
            "{}{}usage {} MiB",
            kept[0],
            kept[1],
            memcg.memory_usage() >> 20
        )
    };
    let (hits, before) = (memcg.limit_hits(), held());
    let read = session.query(&format!("SELECT LENGTH(LOAD_FILE('{file}'))"));
    let hits = memcg.limit_hits() - hits;
    assert_eq!(read, (64 << 20).to_string(), "the server read the file");
    let limit = memcg.read("memory.max") + &memcg.read("memory.limit_in_bytes");
    eprintln!(
        "the query's charges found its cgroup at its limit ({}) {hits} times; before: {before}; after: {}",
        limit.trim(),
        held()
    );
    assert!(hits > 0, "the query made its cgroup reclaim");
    drop(session);
    server.wait_for_sessions_to_end();
    let summary = summary(&tracer.stop());
    let stalled = query_entry(&summary, "SELECT LENGTH(LOAD_FILE(?))");
    let control = query_entry(&summary, "SELECT ?");
    eprintln!(
        "stalled: {} stalls, {} us; control: {} stalls",
        stalled["reclaim_stalls"], stalled["reclaim_us"], control["reclaim_stalls"]
    );
    assert!(
        stalled["reclaim_stalls"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert!(stalled["reclaim_us"].as_f64().unwrap() > 0.0);
    assert_eq!(control["reclaim_stalls"], 0);
    assert_eq!(control["reclaim_us"], 0.0);
}

/// Direct compaction inside a command, as pg's test makes it: a query that builds a 64 MB
/// string where huge-page faults compact ([`CompactingFaults`]). Its compaction stalls are
/// its server's as `tracer direct-reclaim` counts them (no other thread of the server
/// allocates so much meanwhile), and its time theirs; the control query has none. Oracle
/// MySQL alone: MariaDB turns transparent huge pages off for itself (`THP_enabled: 0` in its
/// /proc/PID/status), so that its faults never compact.
#[test]
fn compaction_stalls_are_charged_to_the_query_that_compacted() {
    for via in [&[][..], &["--via", "probes"]] {
        compaction_stalls(Flavour::Mysql, via);
    }
}

fn compaction_stalls(flavour: Flavour, via: &[&str]) {
    let options = ["--max-allowed-packet=1G"];
    let server = MysqlServer::start_with(flavour, "compaction", None, &options);
    let tracer = tracer_mysql(&server, via, &[]);
    let mut session = server.session();
    session.query("SELECT 'control'");
    let whole = Tracer::start(&["direct-reclaim", "--json", "--events"]);
    let compacting = CompactingFaults::new();
    let stalls_before = vmstat()["compact_stall"];
    session.query("SELECT LENGTH(REPEAT('x', 64000000))");
    let stalls = vmstat()["compact_stall"] - stalls_before;
    drop(compacting);
    drop(session);
    server.wait_for_sessions_to_end();
    let events = whole.stop().json_of_type("compaction");
    let servers: Vec<&Json> = (events.iter())
        .filter(|line| line["pid"] == server.pid())
        .collect();
    let server_us: f64 = (servers.iter())
        .map(|line| line["latency_us"].as_f64().unwrap())
        .sum();
    let summary = summary(&tracer.stop());
    let query = query_entry(&summary, "SELECT LENGTH(REPEAT(?, ?))");
    let control = query_entry(&summary, "SELECT ?");
    let (count, us) = (&query["compaction_stalls"], &query["compaction_us"]);
    eprintln!(
        "{flavour:?}: compact_stall rose by {stalls}; the server's stalls: {}, {server_us:.0} us; \
         the query's: {count}, {us} us",
        servers.len()
    );
    assert!(
        !servers.is_empty(),
        "the query did not compact: {events:#?}"
    );
    assert_eq!(count.as_u64().unwrap(), servers.len() as u64, "{query:#}");
    assert!(count.as_u64().unwrap() <= stalls);
    let us = us.as_f64().unwrap();
    assert!(
        us >= server_us && us <= server_us * 1.01 + 100.0,
        "{query:#}"
    );
    assert_eq!(control["compaction_stalls"], 0, "{control:#}");
    assert_eq!(control["compaction_us"], 0.0, "{control:#}");
}
