//! `tracer serve` against real kernel events: its /metrics, scraped and parsed by Prometheus's own
//! Python client, must count what the kernel counts.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use tracer_tests::{
    BpfObjects, Cgroup, Docker, Flavour, Json, MysqlServer, Postgres, Sample, Scratch, Tracer,
    assert_one_line_refusal, assert_refused, cause_direct_compaction, cause_global_reclaim,
    free_port, http_get, parse_metrics, query_entry, run, run_tracer, sample_sum, sh_in, summary,
    vmstat, vmstat_sum,
};

fn scrape(port: u16) -> Vec<Sample> {
    let (status, content_type, text) = http_get(port, "/metrics", None);
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let (status, content_type, openmetrics) =
        http_get(port, "/metrics", Some("application/openmetrics-text"));
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    // Both parsers must take what they are given, and find the same metrics. (Values can
    // move between the two scrapes: other processes on the machine reclaim too.)
    let samples = parse_metrics(&openmetrics, true);
    let plain = parse_metrics(&text, false);
    let names = |samples: &[Sample]| {
        let mut names: Vec<String> = samples.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(names(&samples), names(&plain));
    samples
}

/// Runs dd with a 256 MiB buffer in `memcg` (limited to 64 MiB), where it gets OOM-killed.
fn oom_kill_in(memcg: &Cgroup) -> u32 {
    let mut dd = sh_in(
        &[memcg],
        "exec dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null",
    )
    .spawn()
    .unwrap();
    let pid = dd.id();
    assert!(!dd.wait().unwrap().success(), "dd was not killed");
    pid
}

/// Asserts one OOM kill under `labels`, showing the OOM series when not.
fn assert_one_kill(samples: &[Sample], labels: &[(&str, &str)]) {
    let oom: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name.starts_with("tracer_oom"))
        .collect();
    assert_eq!(
        sample_sum(samples, "tracer_oom_kills_total", labels),
        1.0,
        "{oom:#?}"
    );
}

#[test]
fn metrics_count_what_the_kernel_counts_and_an_oom_kill_is_recorded() {
    let port = free_port();
    let records = Scratch::new("records");
    let memcg = Cgroup::memory("tracer-serve-memcg", "256M");
    let oomcg = Cgroup::memory("tracer-serve-oom", "64M");
    let scratch = Scratch::new("serve");
    let before_objects = BpfObjects::now();
    let serve = Tracer::start(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--tools",
        "direct-reclaim,writeback,oom",
        "--record-dir",
        records.dir.to_str().unwrap(),
        "--record-span",
        "2",
        "--debug-summary",
    ]);
    let events = Tracer::start(&[
        "direct-reclaim",
        "--json",
        "--events",
        "-c",
        memcg.path_str(),
    ]);
    let before = vmstat();

    cause_global_reclaim();
    cause_direct_compaction();
    let file = scratch.file("data");
    run(&mut sh_in(
        &[&memcg],
        &format!("dd if=/dev/zero of={file} bs=1M count=512 status=none && cat {file} > /dev/null"),
    ));
    run(&mut Command::new("sync"));
    run(Command::new("dd").args([
        "if=/dev/zero",
        &format!("of={}", scratch.file("synced")),
        "bs=1M",
        "count=64",
        "status=none",
    ]));
    run(&mut Command::new("sync"));
    let killed_at = Instant::now();
    let victim = oom_kill_in(&oomcg);
    std::thread::sleep(Duration::from_millis(500));
    let after = vmstat();
    let samples = scrape(port);

    // Global direct reclaim: one stall per allocstall, as the kernel counts them.
    let allocstalls = vmstat_sum(&after, "allocstall_") - vmstat_sum(&before, "allocstall_");
    let global = sample_sum(
        &samples,
        "tracer_reclaim_stall_seconds_count",
        &[("kind", "global")],
    );
    eprintln!("global: {global} stalls in /metrics, {allocstalls} allocstalls");
    assert!(allocstalls > 0, "the workload caused no direct reclaim");
    assert_eq!(global as u64, allocstalls);

    // Direct compaction: one stall per compact_stall. A try is reported once its task moves on
    // or it has gone a second without news (the kernel marks no end of a try): a later scrape
    // has them all.
    let compact_stalls = after["compact_stall"] - before["compact_stall"];
    let compaction = |samples: &[Sample]| {
        sample_sum(
            samples,
            "tracer_reclaim_stall_seconds_count",
            &[("kind", "compaction")],
        ) as u64
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut exported = compaction(&samples);
    while exported < compact_stalls && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        exported = compaction(&scrape(port));
    }
    eprintln!("compaction: {exported} stalls in /metrics, {compact_stalls} compact_stall");
    assert!(
        compact_stalls > 0,
        "the workload caused no direct compaction"
    );
    assert_eq!(exported, compact_stalls);

    // Memory-cgroup reclaim: the histogram counts every stall the events show, under the
    // cgroup's labels, and the pages they reclaimed.
    let stalls = events.stop().json_of_type("stall");
    let cgroup = memcg.relative();
    let memcg_labels = [("kind", "memcg"), ("cgroup", cgroup.as_str())];
    let count = sample_sum(
        &samples,
        "tracer_reclaim_stall_seconds_count",
        &memcg_labels,
    );
    let pages = sample_sum(
        &samples,
        "tracer_reclaim_pages_reclaimed_total",
        &memcg_labels,
    );
    let event_pages: u64 = stalls
        .iter()
        .map(|stall| stall["pages_reclaimed"].as_u64().unwrap())
        .sum();
    eprintln!(
        "memcg: {count} stalls, {pages} pages in /metrics; {} events",
        stalls.len()
    );
    assert!(!stalls.is_empty());
    assert_eq!(count as usize, stalls.len());
    assert_eq!(pages as u64, event_pages);
    let buckets = samples
        .iter()
        .filter(|s| s.name == "tracer_reclaim_stall_seconds_bucket" && s.labels["cgroup"] == cgroup)
        .filter(|s| s.labels["kind"] == "memcg");
    let bounds: Vec<f64> = buckets
        .filter_map(|s| s.labels["le"].parse().ok())
        .collect();
    let mut log2: Vec<f64> = (0..32).map(|i| 1e-6 * f64::from(1u32 << i)).collect();
    log2.push(f64::INFINITY);
    assert_eq!(bounds, log2, "log2 buckets of seconds, 1us to 2^31us");

    // Writeback: sync wrote at least the 64 MiB.
    let synced = sample_sum(
        &samples,
        "tracer_writeback_pages_total",
        &[("reason", "sync")],
    );
    assert!(
        synced >= (64 << 20) as f64 / 4096.0,
        "{synced} pages synced"
    );

    // The OOM kill, under the victim's cgroup, as the kernel counts kills.
    let kills = sample_sum(&samples, "tracer_oom_kills_total", &[]);
    let memcg_kills = sample_sum(
        &samples,
        "tracer_oom_kills_total",
        &[("constraint", "memcg"), ("cgroup", &oomcg.relative())],
    );
    assert_eq!(kills as u64, after["oom_kill"] - before["oom_kill"]);
    assert_eq!(memcg_kills, 1.0);
    for tool in ["direct-reclaim", "writeback", "oom"] {
        assert_eq!(
            sample_sum(&samples, "tracer_lost_events_total", &[("tool", tool)]),
            0.0
        );
    }
    assert!(sample_sum(&samples, "process_resident_memory_bytes", &[]) > 1e6);

    // What it says about itself.
    let (status, _, health) = http_get(port, "/healthz", None);
    assert_eq!(status, 200);
    let health: Json = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["attached"],
        serde_json::json!(["direct-reclaim", "writeback", "oom"])
    );
    let (_, _, summaries) = http_get(port, "/debug/summary", None);
    let summaries: Vec<Json> = summaries
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let tools: Vec<&str> = summaries
        .iter()
        .map(|s| s["tool"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        ["direct-reclaim", "oom", "writeback"],
        "{summaries:#?}"
    );
    assert!(summaries.iter().all(|s| s["type"] == "summary"));

    // The flight recorder wrote the seconds around the kill once its span passed.
    while killed_at.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let recordings: Vec<_> = std::fs::read_dir(&records.dir).unwrap().flatten().collect();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let recording = std::fs::read_to_string(recordings[0].path()).unwrap();
    let lines: Vec<Json> = recording
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["reason"], "oom_kill");
    let kill = lines
        .iter()
        .position(|line| line["type"] == "oom_kill" && line["victim"]["pid"] == victim)
        .unwrap_or_else(|| panic!("no kill of {victim} in {recording}"));
    // The kill is explained in the recording as `tracer oom` explains it.
    let pool = &lines[kill]["explanation"]["pool"];
    assert_eq!(pool["memcg"], oomcg.relative(), "{}", lines[kill]);
    assert!(lines[kill]["explanation"]["verdict"].is_string());
    let summaries_before = lines[1..kill]
        .iter()
        .filter(|line| line["type"] == "summary")
        .count();
    assert!(
        summaries_before >= 3,
        "a second of summaries before the kill: {recording}"
    );

    // SIGTERM: out within a second, nothing left attached.
    let stopping = Instant::now();
    serve.stop_with(libc::SIGTERM).assert_success();
    assert!(stopping.elapsed() < Duration::from_secs(1));
    let left = BpfObjects::left_since(&before_objects);
    assert!(left.is_empty(), "still loaded: {left:?}");
}

#[test]
fn a_tool_that_cannot_run_is_reported_once_and_the_rest_go_on() {
    let port = free_port();
    // A mount namespace whose /dev has no kvm: kvm-exit cannot run, oom can.
    let tracer = tracer_tests::tracer_bin();
    let script =
        "mount --make-rprivate / && mount -t tmpfs none /dev && touch /dev/null && exec \"$@\"";
    let serve = Tracer::start_command(
        Command::new("unshare")
            .args(["-m", "sh", "-c", script, "sh"])
            .arg(tracer)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--tools",
                "oom,kvm-exit",
            ]),
    );
    let (status, _, health) = http_get(port, "/healthz", None);
    assert_eq!(status, 200);
    let health: Json = serde_json::from_str(&health).unwrap();
    assert_eq!(health["attached"], serde_json::json!(["oom"]));
    let why = health["failed"]["kvm-exit"].as_str().unwrap();
    assert!(why.contains("/dev/kvm is missing"), "{why}");
    // And for Prometheus (the TracerToolFailed alert).
    let samples = scrape(port);
    let mut up: Vec<(&str, f64)> = samples
        .iter()
        .filter(|sample| sample.name == "tracer_tool_up")
        .map(|sample| (sample.labels["tool"].as_str(), sample.value))
        .collect();
    up.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(up, [("kvm-exit", 0.0), ("oom", 1.0)]);
    let finished = serve.stop_with(libc::SIGTERM);
    finished.assert_success();
    let reported: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|line| line.contains("kvm-exit"))
        .collect();
    assert_eq!(reported.len(), 1, "{}", finished.stderr);
    assert!(
        reported[0].starts_with("tracer: serve goes on without kvm-exit: KVM is not available")
    );
}

#[test]
fn bad_input_gets_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let listen = format!("127.0.0.1:{port}");
    assert_refused(&["serve", "--listen", &listen], |_| {}, "cannot listen on");
    assert_refused(
        &["serve", "--listen", "127.0.0.1:0", "--tools", "oom,nosuch"],
        |_| {},
        "invalid value 'nosuch'",
    );
    let finished = run_tracer(&["serve", "--listen", "127.0.0.1:0", "-d", "0"], |_| {});
    assert_one_line_refusal("serve -d 0", finished, "positive number of seconds");
}

#[test]
fn a_docker_containers_id_and_name_label_its_oom_kill() {
    let docker = Docker::start();
    let image = docker.busybox_image();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let serve = Tracer::start(&["serve", "--listen", &listen, "--tools", "oom"]);
    let oom = Tracer::start(&["oom", "--json"]);
    let dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"];
    let mut args = vec!["--memory", "64m", image];
    args.extend(dd);
    // Killed: 128 + SIGKILL.
    let container = docker.container("tracer-oom", &args, &[137]);
    let id = container.id();
    std::thread::sleep(Duration::from_millis(300));
    let samples = scrape(port);
    let labels = [
        ("container_id", id.as_str()),
        ("container", container.name.as_str()),
        ("runtime", "docker"),
        ("constraint", "memcg"),
    ];
    assert_one_kill(&samples, &labels);
    serve.stop_with(libc::SIGTERM).assert_success();

    // The foreground tool names it the same way.
    let finished = oom.stop();
    let kill = finished
        .json_of_type("oom_kill")
        .into_iter()
        .find(|kill| kill["killed"] == true)
        .unwrap_or_else(|| panic!("no kill: {finished:#?}"));
    let victim = &kill["victim"];
    assert_eq!(victim["container"]["container_id"], id.as_str());
    assert_eq!(victim["container"]["container"], container.name.as_str());
    assert_eq!(victim["container"]["runtime"], "docker");
    assert_eq!(victim["cgroup"], format!("/docker/{id}"));
}

/// What tenants control, at its worst: a cgroup named with quotes, braces and escapes, a process
/// named with a terminal escape sequence, and a docker config.v2.json of 100 MB. serve's labels
/// stay valid (Prometheus's own parsers read them) and name the kill exactly; the file is not
/// read (serve's peak RSS stays far below it) and is refused in one line; the foreground tool
/// shows the escape sequence escaped.
#[test]
fn hostile_names_and_files_leave_labels_valid_and_memory_bounded() {
    let root = Scratch::new("hostile-root");
    let id = "ab".repeat(32);
    let config = root
        .dir
        .join(format!("var/lib/docker/containers/{id}/config.v2.json"));
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    // Sparse: 100 MB to read, none on disk.
    std::fs::File::create(&config)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    // All a label's syntax, a tab and an escape sequence (the kernel refuses a newline).
    let parent = Cgroup::memory("tracer-hostile \"q\" \\ {a=\"b\"},\t\x1b[31m", "max");
    let memcg = Cgroup {
        path: parent.path.join(format!("docker-{id}.scope")),
    };
    std::fs::create_dir(&memcg.path).unwrap();
    memcg.limit_memory(64 << 20);
    let escape = root.dir.join("\x1b[2Jdd");
    std::os::unix::fs::symlink("/bin/dd", &escape).unwrap();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let serve = Tracer::start_command(
        tracer_tests::tracer()
            .args(["serve", "--listen", &listen, "--tools", "oom"])
            .env("TRACER_HOST_ROOT", &root.dir),
    );
    let oom = Tracer::start(&["oom"]);
    let script = format!(
        "exec '{}' if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null",
        escape.display()
    );
    assert!(
        !sh_in(&[&memcg], &script).status().unwrap().success(),
        "dd was not killed"
    );
    std::thread::sleep(Duration::from_millis(300));
    let samples = scrape(port);
    let cgroup = format!("{}/docker-{id}.scope", parent.relative());
    let labels = [
        ("cgroup", cgroup.as_str()),
        ("container_id", id.as_str()),
        ("runtime", "docker"),
    ];
    assert_one_kill(&samples, &labels);
    let peak_kib = tracer_tests::proc_status_kib(serve.pid(), "VmHWM");
    let served = serve.stop_with(libc::SIGTERM);
    served.assert_success();
    assert!(peak_kib < 64 << 10, "serve's peak RSS: {peak_kib} KiB");
    let refusals: Vec<&str> = served
        .stderr
        .lines()
        .filter(|line| line.contains("config.v2.json"))
        .collect();
    assert_eq!(refusals.len(), 1, "{}", served.stderr);
    assert!(refusals[0].starts_with("tracer: "), "{}", refusals[0]);

    let shown = oom.stop();
    assert!(
        shown.stdout.contains("\\x1b[2Jdd") && !shown.stdout.contains('\x1b'),
        "{}",
        shown.stdout
    );
}

/// A tenant floods its database with four million short queries, pipelined as a batch job sends
/// them: each is counted or reported lost, never dropped unsaid; another tenant's OOM kill in
/// the middle of it is recorded; /metrics answers throughout; serve's memory stays bounded.
#[test]
fn a_tenants_query_flood_is_counted_and_other_workloads_stay_served() {
    const PIPELINE: usize = 100;
    const TRANSACTIONS_PER_CLIENT: usize = 20_000;
    let server = Postgres::start("serve-flood");
    let oomcg = Cgroup::memory("tracer-serve-flood-oom", "64M");
    let script = Scratch::new("flood");
    let file = script.file("flood.sql");
    let queries = "SELECT 1;\n".repeat(PIPELINE);
    std::fs::write(&file, format!("\\startpipeline\n{queries}\\endpipeline\n")).unwrap();
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(&script.dir));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pg = format!("-p {}", server.pid());
    let serve = Tracer::start(&["serve", "--listen", &listen, "--tools", "oom", "--pg", &pg]);
    server.psql("SELECT pg_stat_statements_reset()");
    let transactions = TRANSACTIONS_PER_CLIENT.to_string();
    let mut flood = server
        .pgbench_command(&[
            "-n",
            "-M",
            "prepared",
            "-f",
            &file,
            "-c",
            "2",
            "-j",
            "2",
            "-t",
            &transactions,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let counted = |samples: &[Sample]| {
        let count = |metric: &str, labels: &[(&str, &str)]| sample_sum(samples, metric, labels);
        let queries = count("tracer_pg_query_seconds_count", &[("query", "SELECT ?")]);
        let lost = count("tracer_lost_events_total", &[("tool", "pg")]);
        (queries as u64, lost as u64)
    };
    // While it floods, another tenant's process is OOM-killed, and /metrics answers.
    let script = "exec dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null";
    assert!(!sh_in(&[&oomcg], script).status().unwrap().success());
    assert!(flood.try_wait().unwrap().is_none(), "the flood ended first");
    scrape(port);
    assert!(flood.wait().unwrap().success());
    let sent = server.statement_calls("SELECT $1");
    assert_eq!(sent, (2 * TRANSACTIONS_PER_CLIENT * PIPELINE) as u64);
    // Every query is counted or said lost, once serve caught up (a debug build lags seconds
    // behind such a flood): its counts stop moving.
    let settled = Instant::now();
    let mut before = (u64::MAX, u64::MAX);
    let (samples, queries, lost) = loop {
        let samples = scrape(port);
        let (queries, lost) = counted(&samples);
        if queries >= sent || (queries, lost) == before {
            break (samples, queries, lost);
        }
        assert!(
            settled.elapsed() < Duration::from_secs(120),
            "serve never caught up"
        );
        before = (queries, lost);
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!(
        "flood: {sent} sent, {queries} counted in {:?} more, {lost} records said lost",
        settled.elapsed()
    );
    // A lost record may hold a pipeline's worth of queries: what is missing must be said.
    assert!(queries <= sent);
    assert!(
        queries == sent || lost > 0,
        "{} queries missing, none said lost",
        sent - queries
    );
    assert_one_kill(&samples, &[("cgroup", &oomcg.relative())]);
    let peak_kib = tracer_tests::proc_status_kib(serve.pid(), "VmHWM");
    serve.stop_with(libc::SIGTERM).assert_success();
    // Half the DaemonSet's memory limit; serve --pg peaks near 72 MiB (a debug build) without
    // a flood.
    assert!(peak_kib < 128 << 10, "serve's peak RSS: {peak_kib} KiB");
}

/// A tenant's process that calls itself postgres, from a folder named with an escape sequence,
/// under a 64 KiB title full of them: serve --pg, which follows servers started later, turns it
/// away in one line naming it (escaped), and goes on counting the real server's queries.
#[test]
fn an_impostor_postgres_with_a_64_kib_title_is_turned_away_in_one_line() {
    let server = Postgres::start("serve-impostor");
    let tenant = Scratch::new("impostor");
    let folder = tenant.dir.join("\x1b[2Jtenant");
    std::fs::create_dir(&folder).unwrap();
    let impostor = folder.join("postgres");
    std::fs::copy("/bin/sleep", &impostor).unwrap();
    let line = "postgres: \x1b[31mapp\x1b[0m shop [local] idle \x1b]0;owned\x07 ";
    let title = line.repeat((64 << 10) / line.len());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Tracer::start(&["serve", "--listen", &listen, "--tools", "oom", "--pg", ""]);
    let mut started = Command::new("bash")
        .args(["-c", "exec -a \"$TITLE\" \"$IMPOSTOR\" 60"])
        .env("TITLE", &title)
        .env("IMPOSTOR", &impostor)
        .spawn()
        .unwrap();
    let pid = started.id().to_string();
    let names_it = |line: &str| line.contains(&pid);
    let refusal = serve.stderr_line(names_it, Duration::from_secs(10));
    server.psql("SELECT pg_stat_statements_reset()");
    for _ in 0..3 {
        server.psql("SELECT 5");
    }
    let counted = || {
        let samples = scrape(port);
        sample_sum(
            &samples,
            "tracer_pg_query_seconds_count",
            &[("query", "SELECT ?")],
        ) as u64
    };
    let asked = Instant::now();
    while counted() < 3 && asked.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counted(), server.statement_calls("SELECT $1"));
    let _ = started.kill();
    let _ = started.wait();
    let peak_kib = tracer_tests::proc_status_kib(serve.pid(), "VmHWM");
    let served = serve.stop_with(libc::SIGTERM);
    served.assert_success();
    // Half the DaemonSet's memory limit; serve --pg peaks near 72 MiB (a debug build) without it.
    assert!(peak_kib < 128 << 10, "serve's peak RSS: {peak_kib} KiB");
    let refusal = refusal.unwrap_or_else(|| panic!("nothing said of {pid}: {}", served.stderr));
    let lines: Vec<&str> = served.stderr.lines().filter(|l| names_it(l)).collect();
    assert_eq!(lines, [refusal.as_str()], "one line");
    assert!(refusal.starts_with("tracer: not tracing"), "{refusal}");
    assert!(refusal.contains("\\x1b[2Jtenant/postgres"), "{refusal}");
    assert!(refusal.len() < 1024, "{refusal}");
    assert!(!served.stderr.contains('\x1b'), "{}", served.stderr);
}

/// Twenty-five thousand distinct query shapes (generated aliases, as ORMs and schema-per-tenant
/// databases make them): serve keeps at most --top series and `other`, counts every call, and
/// its memory stays bounded (it grew by 250 MB before).
#[test]
fn many_distinct_query_shapes_keep_serve_bounded() {
    const SHAPES: u64 = 25_000;
    let server = Postgres::start("serve-shapes");
    let scratch = Scratch::new("shapes");
    let file = scratch.dir.join("shapes.sql");
    let sql: String = (0..SHAPES)
        .map(|i| format!("SELECT {i} AS a{i};\n"))
        .collect();
    std::fs::write(&file, sql).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pg = format!("-p {} --top 5", server.pid());
    let serve = Tracer::start(&["serve", "--listen", &listen, "--tools", "oom", "--pg", &pg]);
    server.psql_file(&file);
    let counts = |samples: &[Sample]| -> Vec<u64> {
        (samples.iter())
            .filter(|sample| sample.name == "tracer_pg_query_seconds_count")
            .map(|sample| sample.value as u64)
            .collect()
    };
    let asked = Instant::now();
    let series = loop {
        let series = counts(&scrape(port));
        if series.iter().sum::<u64>() >= SHAPES || asked.elapsed() > Duration::from_secs(30) {
            break series;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(series.iter().sum::<u64>(), SHAPES, "{series:?}");
    assert_eq!(series.len(), 5 + 1, "{series:?}");
    let peak_kib = tracer_tests::proc_status_kib(serve.pid(), "VmHWM");
    serve.stop_with(libc::SIGTERM).assert_success();
    // Half the DaemonSet's memory limit; serve --pg peaks near 72 MiB (a debug build) without
    // them.
    assert!(peak_kib < 128 << 10, "serve's peak RSS: {peak_kib} KiB");
}

#[test]
fn pg_query_latency_per_normalized_query_and_a_slow_query_recorded() {
    let server = Postgres::start("serve");
    let records = Scratch::new("pg-records");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    server.psql("SELECT pg_stat_statements_reset()");
    let pg = format!("-p {} --top 2 --breakdown", server.pid());
    let serve = Tracer::start(&[
        "serve",
        "--listen",
        &listen,
        "--tools",
        "oom",
        "--pg",
        &pg,
        "--record-dir",
        records.dir.to_str().unwrap(),
        "--record-span",
        "1",
        "--query-threshold",
        "150",
    ]);
    let mut session = server.session();
    let slept_at = Instant::now();
    session.query("SELECT pg_sleep(0.2) IS NULL");
    for _ in 0..7 {
        session.query("SELECT 17");
    }
    for table in ["pg_class", "pg_proc", "pg_type"] {
        session.query(&format!("SELECT count(*) > 0 FROM {table}"));
    }
    drop(session);
    std::thread::sleep(Duration::from_millis(300));
    let samples = scrape(port);
    let count = |query: &str| {
        sample_sum(
            &samples,
            "tracer_pg_query_seconds_count",
            &[("query", query)],
        ) as u64
    };
    // --top 2: `SELECT ?` came back and took a series first; of the queries seen once, the
    // sleep has the most time and took the other; the rest is one series.
    assert_eq!(count("SELECT ?"), 7);
    assert_eq!(count("SELECT pg_sleep(?) IS NULL"), 1);
    assert_eq!(count("other"), 3);
    assert_eq!(server.statement_calls("SELECT $1"), 7);
    assert_eq!(server.statement_calls("SELECT count(*) > $1 FROM %"), 3);
    let slow = sample_sum(
        &samples,
        "tracer_pg_query_seconds_bucket",
        &[("query", "SELECT pg_sleep(?) IS NULL"), ("le", "0.131072")],
    );
    assert_eq!(slow, 0.0, "200 ms is above the 131 ms bound");
    // Its breakdown: asleep for the 200 ms, and the parts add up to its time.
    let sleep = &[("query", "SELECT pg_sleep(?) IS NULL")];
    let part = |part: &str| {
        let labels = [sleep[0], ("part", part)];
        sample_sum(&samples, "tracer_pg_query_breakdown_seconds_total", &labels)
    };
    let latency = sample_sum(&samples, "tracer_pg_query_seconds_sum", sleep);
    let parts: f64 = ["oncpu", "runq", "blocked", "sleep"].map(part).iter().sum();
    eprintln!(
        "pg_sleep(0.2): {latency} s, asleep {} s, parts {parts} s",
        part("sleep")
    );
    assert!(part("sleep") >= 0.19 && part("sleep") <= latency);
    assert!((latency - parts).abs() < 0.002, "{parts} of {latency}");
    for family in ["throttled_seconds", "page_cache_misses", "bios", "swapins"] {
        let name = format!("tracer_pg_query_{family}_total");
        assert!(samples.iter().any(|sample| sample.name == name), "{name}");
    }

    while slept_at.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(200));
    }
    serve.stop_with(libc::SIGTERM).assert_success();
    let recordings: Vec<_> = std::fs::read_dir(&records.dir).unwrap().flatten().collect();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let name = recordings[0].file_name().to_string_lossy().into_owned();
    assert!(name.ends_with("-slow_query.ndjson"), "{name}");
}

#[test]
fn reclaim_inside_a_query_is_exported_on_its_series() {
    let server = Postgres::start("serve-reclaim");
    // 128 MiB a backend confined to 32 MiB reads.
    let data = server.uncached_file("data.bin", 128);
    let memcg = Cgroup::memory("tracer-serve-pg", "32M");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pg = format!("-p {}", server.pid());
    let serve = Tracer::start(&["serve", "--listen", &listen, "--tools", "oom", "--pg", &pg]);
    // The foreground tool beside it, for the stalls each call had.
    let foreground = Tracer::start(&["pg", "--json", "-p", &server.pid().to_string()]);
    let mut session = server.session();
    let backend = session.query("SELECT pg_backend_pid()");
    memcg.set("cgroup.procs", &backend);
    session.query("SELECT 'idle control'");
    let read = Postgres::read_in_pieces(&data);
    assert_eq!(session.query(&read), (128u64 << 20).to_string());
    drop(session);
    std::thread::sleep(Duration::from_millis(300));
    let samples = scrape(port);
    let summary = summary(&foreground.stop());
    serve.stop_with(libc::SIGTERM).assert_success();
    let reading =
        "SELECT sum(length(pg_read_binary_file(?, piece * ?, ?))) FROM generate_series(?, ?) piece";
    for (query, must_stall) in [(reading, true), ("SELECT ?", false)] {
        let labels = [("query", query)];
        let stalls = sample_sum(&samples, "tracer_pg_query_reclaim_stalls_total", &labels);
        let seconds = sample_sum(&samples, "tracer_pg_query_reclaim_seconds_total", &labels);
        let table = query_entry(&summary, query);
        eprintln!(
            "{query}: {stalls} stalls, {seconds} s exported; the table {} stalls, {} us",
            table["reclaim_stalls"], table["reclaim_us"]
        );
        assert_eq!(stalls as u64, table["reclaim_stalls"].as_u64().unwrap());
        // Each tool times the stalls with its own programs: a few ns apart per stall.
        let table_seconds = table["reclaim_us"].as_f64().unwrap() / 1e6;
        let apart = (seconds - table_seconds).abs();
        assert!(apart <= 0.02 * table_seconds, "{seconds} {table_seconds}");
        assert_eq!(stalls > 0.0, must_stall, "{query}");
    }
}

#[test]
fn pg_and_mysql_at_once_each_count_their_own_queries() {
    for flavour in Flavour::all() {
        pg_and_mysql_at_once(flavour);
    }
}

fn pg_and_mysql_at_once(flavour: Flavour) {
    let pg = Postgres::start("serve-both");
    let mariadb = MysqlServer::start(flavour, "serve-both");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (pg_options, mysql_options) = (format!("-p {}", pg.pid()), format!("-p {}", mariadb.pid()));
    // The reclaim programs both tools use are attached once: adding mysql to pg adds only
    // its socket programs (receive, send), its OpenSSL probes in the server (three) and its
    // thread exit tracepoint (one).
    let serve_with = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--listen",
            &listen,
            "--tools",
            "oom",
            "--pg",
            &pg_options,
        ];
        args.extend(extra);
        let before = BpfObjects::now();
        let serve = Tracer::start(&args);
        (serve, BpfObjects::since(&before).links.len())
    };
    let (pg_alone, links_alone) = serve_with(&[]);
    pg_alone.stop_with(libc::SIGTERM).assert_success();
    let (serve, links_both) = serve_with(&["--mysql", &mysql_options]);
    assert_eq!(links_both, links_alone + 2 + 3 + 1);
    let (_, _, health) = http_get(port, "/healthz", None);
    let health: Json = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["attached"],
        serde_json::json!(["oom", "pg", "mysql"])
    );
    for _ in 0..3 {
        pg.psql("SELECT 5");
    }
    let mut session = mariadb.session();
    for _ in 0..4 {
        session.query("SELECT 6");
    }
    drop(session);
    std::thread::sleep(Duration::from_millis(300));
    let samples = scrape(port);
    let count = |metric: &str| sample_sum(&samples, metric, &[("query", "SELECT ?")]) as u64;
    assert_eq!(count("tracer_pg_query_seconds_count"), 3);
    assert_eq!(count("tracer_mysql_query_seconds_count"), 4);
    serve.stop_with(libc::SIGTERM).assert_success();
}

#[test]
fn mysql_through_the_socket_with_its_connections() {
    let mariadb = MysqlServer::start(Flavour::Mariadb, "serve-socket");
    let port = free_port();
    let options = format!("-p {} --via socket --connections", mariadb.pid());
    let listen = format!("127.0.0.1:{port}");
    let serve = Tracer::start(&[
        "serve", "--listen", &listen, "--tools", "oom", "--mysql", &options,
    ]);
    let connections = 5;
    for _ in 0..connections {
        mariadb.sql("SELECT 7");
    }
    std::thread::sleep(Duration::from_millis(300));
    let samples = scrape(port);
    let queries = sample_sum(
        &samples,
        "tracer_mysql_query_seconds_count",
        &[("query", "SELECT ?")],
    );
    assert_eq!(queries as u64, connections);
    for phase in [
        "accept_to_handshake",
        "handshake_to_authenticated",
        "authenticated_to_first_command",
    ] {
        let count = sample_sum(
            &samples,
            "tracer_mysql_connection_phase_seconds_count",
            &[("phase", phase)],
        );
        assert_eq!(count as u64, connections, "{phase}");
    }
    let busy = sample_sum(&samples, "tracer_mysql_listener_busy_seconds_count", &[]);
    assert_eq!(busy as u64, connections);
    serve.stop_with(libc::SIGTERM).assert_success();
}
