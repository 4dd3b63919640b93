//! `tracer report` and serve's `/report`, drawn by a real browser (headless Chromium) from
//! recordings of real incidents: what the page shows is checked against what was recorded.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value as Json;
use tracer_tests::*;

/// Each `<svg>` of a page: its attributes, and what it holds.
fn svgs(dom: &str) -> Vec<(HashMap<String, String>, &str)> {
    dom.split("<svg ")
        .skip(1)
        .map(|chunk| {
            let body = chunk.split("</svg>").next().unwrap();
            let attributes = elements(&format!("<svg {body}"), "svg").remove(0);
            (attributes, body)
        })
        .collect()
}

fn number(attributes: &HashMap<String, String>, name: &str) -> f64 {
    attributes[name]
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {attributes:?}"))
}

fn seconds_since_epoch(time: &Json) -> f64 {
    let text = time.as_str().unwrap();
    let output = std::process::Command::new("date")
        .args(["-u", "-d", text, "+%s.%N"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Where a chart puts `time` on its x axis.
fn x_of(svg: &HashMap<String, String>, time: f64) -> f64 {
    let (from, to) = (number(svg, "data-from"), number(svg, "data-to"));
    let (left, right) = (number(svg, "data-left"), number(svg, "data-right"));
    left + (time - from) / (to - from) * (right - left)
}

fn report(files: &[&str], page: &str) {
    let mut args = vec!["report"];
    args.extend(files);
    args.extend(["-o", page]);
    let finished = run_tracer(&args, |_| {});
    finished.assert_success();
    assert_eq!(finished.stdout.trim(), page);
}

/// Charts by title, each with the tool whose summaries feed it.
const RECLAIM_CHARTS: [&str; 3] = [
    "Reclaim and compaction stalls",
    "Stall time by cgroup",
    "Pages reclaimed",
];
const WRITEBACK_CHARTS: [&str; 2] = ["Writeback pages by reason", "Dirty-page throttling"];

/// Every line chart has one point per second its tool printed, in each of its lines.
fn assert_a_point_per_second(dom: &str, seconds_of: impl Fn(&str) -> usize) -> Vec<String> {
    let mut titles = Vec::new();
    for (svg, body) in svgs(dom)
        .into_iter()
        .filter(|(svg, _)| svg["class"] == "chart")
    {
        let title = svg["data-title"].clone();
        let seconds = seconds_of(&title);
        assert!(seconds > 0, "{title}");
        assert_eq!(number(&svg, "data-seconds") as usize, seconds, "{title}");
        let lines = elements(body, "polyline");
        assert!(!lines.is_empty(), "{title} has no lines");
        for line in lines {
            let points = line["points"].split(' ').count();
            assert_eq!(points, seconds, "{title}: {}", line["data-name"]);
        }
        titles.push(title);
    }
    titles
}

#[test]
fn an_oom_kill_after_reclaim_is_drawn_where_it_happened() {
    let port = free_port();
    let records = Scratch::new("report-records");
    let memcg = Cgroup::memory("tracer-report-memcg", "256M");
    let oomcg = Cgroup::memory("tracer-report-oom", "64M");
    let scratch = Scratch::new("report");
    let serve = Tracer::start(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--tools",
        "direct-reclaim,writeback,oom",
        "--record-dir",
        records.dir.to_str().unwrap(),
        "--record-span",
        "3",
    ]);
    // Beside it, a serve that marks seconds with a stall over 1 ms.
    let marking_port = free_port();
    let marking = Tracer::start(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{marking_port}"),
        "--tools",
        "direct-reclaim",
        "--stall-threshold",
        "1",
    ]);
    // Reclaim in a memory cgroup right before the kill, as a leak inside a pod looks.
    let file = scratch.file("data");
    run(&mut sh_in(
        &[&memcg],
        &format!("dd if=/dev/zero of={file} bs=1M count=512 status=none && cat {file} > /dev/null"),
    ));
    let mut dd = sh_in(
        &[&oomcg],
        "exec dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null",
    )
    .spawn()
    .unwrap();
    let victim = dd.id();
    assert!(!dd.wait().unwrap().success(), "dd was not killed");
    assert_eq!(oomcg.oom_kills(), 1);

    // The recording comes --record-span after the kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    let recording = loop {
        let found = std::fs::read_dir(&records.dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.to_string_lossy().ends_with("-oom_kill.ndjson"));
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no recording");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Written in one go, but give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    let (status, kind, live) = http_get(port, "/report", None);
    serve.stop().assert_success();
    let (_, _, marked) = http_get(marking_port, "/report", None);
    marking.stop().assert_success();
    assert_eq!(status, 200, "{live}");
    assert_eq!(kind, "text/html; charset=utf-8");

    let text = std::fs::read_to_string(&recording).unwrap();
    let lines: Vec<Json> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summaries = |tool: &str| {
        lines
            .iter()
            .filter(|line| line["tool"] == tool && line["type"] == "summary")
            .collect::<Vec<_>>()
    };
    let kill = lines
        .iter()
        .find(|line| line["type"] == "oom_kill" && line["victim"]["pid"] == victim)
        .expect("the kill in the recording");
    let killed_at = seconds_since_epoch(&kill["time"]);
    let trigger_at = seconds_since_epoch(&lines[0]["time"]);

    let page = scratch.file("oom.html");
    report(&[recording.to_str().unwrap()], &page);
    let drawn = draw_in_chromium(Path::new(&page), "report-oom-kill.png");
    assert!(drawn.console.is_empty(), "{:?}", drawn.console);
    let dom = &drawn.dom;

    // Every chart a second per second recorded, reclaim's and writeback's.
    let titles = assert_a_point_per_second(dom, |title| {
        if RECLAIM_CHARTS.contains(&title) {
            summaries("direct-reclaim").len()
        } else if WRITEBACK_CHARTS.contains(&title) {
            summaries("writeback").len()
        } else if title == "OOM kills" {
            summaries("oom").len()
        } else {
            panic!("a chart of what? {title}")
        }
    });
    assert_eq!(
        titles.len(),
        RECLAIM_CHARTS.len() + WRITEBACK_CHARTS.len() + 1
    );

    // The kill marked at its time on every chart and heatmap; the trigger in the middle.
    let all = svgs(dom);
    assert!(all.len() > titles.len(), "no heatmaps");
    for (svg, body) in &all {
        let kills = elements(body, "g")
            .into_iter()
            .filter(|g| g["class"] == "mark oom_kill")
            .collect::<Vec<_>>();
        assert_eq!(kills.len(), 1, "{}", svg["data-title"]);
        let mark = &kills[0];
        assert!(
            (number(mark, "data-time") - killed_at).abs() < 1e-3,
            "{mark:?}"
        );
        let x = x_of(svg, killed_at);
        assert!((number(mark, "data-x") - x).abs() < 0.2, "{mark:?}: x {x}");
        assert!(mark["title"].contains(&format!("({victim})")), "{mark:?}");
        let trigger = elements(body, "g")
            .into_iter()
            .find(|g| g["class"] == "mark trigger")
            .expect("the trigger marked");
        let middle = (number(svg, "data-from") + number(svg, "data-to")) / 2.0;
        assert!((number(&trigger, "data-time") - trigger_at).abs() < 1e-3);
        assert!((middle - trigger_at).abs() < 1e-3, "{svg:?}");
    }

    // The reclaim heatmap holds every stall recorded, each in its second.
    let (_, heatmap) = all
        .iter()
        .find(|(svg, _)| svg.get("data-title").map(String::as_str) == Some("Reclaim stall latency"))
        .expect("a reclaim heatmap");
    let cells: u64 = elements(heatmap, "rect")
        .iter()
        .map(|cell| {
            let title = &cell["title"];
            let count = title.split(": ").nth(1).and_then(|t| t.split(' ').next());
            count.and_then(|c| c.parse::<u64>().ok()).unwrap()
        })
        .sum();
    let stalls: u64 = summaries("direct-reclaim")
        .iter()
        .map(|s| s["global"]["stalls"].as_u64().unwrap() + s["memcg"]["stalls"].as_u64().unwrap())
        .sum();
    assert!(stalls > 0, "no reclaim recorded around the kill");
    assert_eq!(cells, stalls);

    // The kill's row, and the page drawn at once.
    assert!(
        dom.contains(&format!("dd ({victim})")),
        "no row for the kill"
    );
    eprintln!(
        "recording of {} lines drawn in {:?}",
        lines.len(),
        drawn.drawing
    );
    assert!(drawn.drawing < Duration::from_secs(2));

    // serve's /report draws the same kill from its memory.
    let live_marks = elements(&live, "g");
    assert!(
        live_marks
            .iter()
            .any(|g| g["class"] == "mark oom_kill"
                && (number(g, "data-time") - killed_at).abs() < 1e-3),
        "/report has no mark of the kill"
    );

    // The other serve marked the seconds whose slowest stall passed 1 ms: one of them is a
    // second of the recording's with such a stall.
    let over: Vec<f64> = summaries("direct-reclaim")
        .iter()
        .filter(|s| {
            ["global", "memcg"]
                .iter()
                .any(|kind| s[kind]["latency"]["max_us"].as_f64().unwrap() >= 1000.0)
        })
        .map(|s| seconds_since_epoch(&s["time"]))
        .collect();
    assert!(!over.is_empty(), "no stall over 1 ms recorded");
    let crossings: Vec<f64> = elements(&marked, "g")
        .iter()
        .filter(|g| g["class"] == "mark threshold")
        .map(|g| number(g, "data-time"))
        .collect();
    assert!(
        over.iter()
            .any(|t| crossings.iter().any(|c| (c - t).abs() < 1.5)),
        "recorded over 1 ms at {over:?}, marked at {crossings:?}"
    );

    // An hour of such seconds: the recording's seconds over and over, each a second later.
    let seconds = summaries("direct-reclaim").len();
    let first = seconds_since_epoch(&summaries("direct-reclaim")[0]["time"]);
    let mut hour = String::new();
    for second in 0..3600 {
        let time = Json::from(rfc3339(first + second as f64));
        for tool in ["direct-reclaim", "writeback", "oom"] {
            let mut line = summaries(tool)[second % seconds].clone();
            line["time"] = time.clone();
            hour.push_str(&line.to_string());
            hour.push('\n');
        }
    }
    let mut kill = kill.clone();
    kill["time"] = Json::from(rfc3339(first + 1800.5));
    hour.push_str(&kill.to_string());
    hour.push('\n');
    let hour_file = scratch.file("hour.ndjson");
    std::fs::write(&hour_file, hour).unwrap();
    let page = scratch.file("hour.html");
    report(&[&hour_file], &page);
    let size = std::fs::metadata(&page).unwrap().len();
    let drawn = draw_in_chromium(Path::new(&page), "report-hour.png");
    eprintln!("an hour: {} KiB, drawn in {:?}", size >> 10, drawn.drawing);
    assert!(drawn.console.is_empty(), "{:?}", drawn.console);
    assert!(size < 5 << 20, "{size} bytes");
    assert!(drawn.drawing < Duration::from_secs(2));
    assert_a_point_per_second(&drawn.dom, |_| 3600);
}

/// `seconds` since the epoch in RFC 3339, as tracer writes times.
fn rfc3339(seconds: f64) -> String {
    let whole = seconds.floor();
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: gmtime_r writes the struct it is given.
    unsafe { libc::gmtime_r(&(whole as libc::time_t), &mut tm) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ((seconds - whole) * 1e6) as u64
    )
}

#[test]
fn a_pg_workload_with_its_breakdown_is_drawn_second_by_second() {
    let server = Postgres::start("report");
    server.psql("SELECT pg_stat_statements_reset()");
    let pid = server.pid().to_string();
    let pg = Tracer::start(&["pg", "-p", &pid, "--json", "--breakdown", "1"]);
    let mut session = server.session();
    let started = Instant::now();
    let mut calls: u64 = 0;
    while started.elapsed() < Duration::from_secs(4) {
        session.query("SELECT 17");
        calls += 1;
        if calls.is_multiple_of(100) {
            session.query("SELECT pg_sleep(0.05) IS NULL");
        }
    }
    drop(session);
    std::thread::sleep(Duration::from_millis(300));
    let finished = pg.stop();
    finished.assert_success();
    let scratch = Scratch::new("report-pg");
    let ndjson = scratch.file("pg.ndjson");
    std::fs::write(&ndjson, &finished.stdout).unwrap();
    let seconds = finished.json_of_type("summary").len();
    assert!(seconds >= 4, "{seconds} summaries");

    let page = scratch.file("pg.html");
    report(&[&ndjson], &page);
    let drawn = draw_in_chromium(Path::new(&page), "report-pg-breakdown.png");
    assert!(drawn.console.is_empty(), "{:?}", drawn.console);
    let titles = assert_a_point_per_second(&drawn.dom, |_| seconds);
    assert_eq!(
        titles,
        [
            "pg: query latency",
            "pg: queries",
            "pg: where query time went"
        ]
    );
    // The breakdown's parts, each a line.
    let (_, parts) = svgs(&drawn.dom)
        .into_iter()
        .find(|(svg, _)| svg["data-title"] == "pg: where query time went")
        .unwrap();
    let names: Vec<String> = elements(parts, "polyline")
        .into_iter()
        .map(|line| line["data-name"].clone())
        .collect();
    for part in ["oncpu", "runq", "sleep"] {
        assert!(names.iter().any(|name| name == part), "{names:?}");
    }
    // The queries table counts what the server counted.
    let statement = server.statement_calls("SELECT $1");
    assert_eq!(statement, calls);
    let row = drawn
        .dom
        .split("<tr>")
        .find(|row| row.contains("<td class=\"query\">SELECT ?</td>"))
        .expect("a row for SELECT ?");
    let cells: Vec<&str> = row
        .split("<td")
        .skip(1)
        .map(|cell| cell.split('>').nth(1).unwrap().trim_end_matches("</td"))
        .collect();
    assert_eq!(cells[4], statement.to_string(), "{row}");
    assert!(drawn.drawing < Duration::from_secs(2));
}
