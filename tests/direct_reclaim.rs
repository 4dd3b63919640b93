//! `tracer direct-reclaim` against reclaim caused on purpose, checked with the kernel's own
//! counters.

use std::{collections::HashMap, path::Path, process::Command};

use tracer_tests::{
    Cgroup, Scratch, Tracer, cause_direct_compaction, cause_global_reclaim, cgroup_v2_only,
    huge_page_order, run, sh_in, summary, vmstat, vmstat_sum,
};

/// Global direct reclaim, caused on purpose (see [`cause_global_reclaim`]).
#[test]
fn global_stalls_match_allocstall_and_pgsteal_direct() {
    let tracer = Tracer::start(&["direct-reclaim", "--json"]);
    let before = vmstat();
    let reader_pid = cause_global_reclaim();
    let after = vmstat();
    let summary = summary(&tracer.stop());

    let allocstalls = vmstat_sum(&after, "allocstall_") - vmstat_sum(&before, "allocstall_");
    let pgsteal_direct = after["pgsteal_direct"] - before["pgsteal_direct"];
    let stalls = summary["global"]["stalls"].as_u64().unwrap();
    let pages = summary["global"]["pages_reclaimed"].as_u64().unwrap();
    eprintln!(
        "tracer: {stalls} stalls, {pages} pages; vmstat: {allocstalls} allocstalls, {pgsteal_direct} pgsteal_direct"
    );
    let moved = |name: &str| {
        after.get(name).copied().unwrap_or(0) as i64 - before.get(name).copied().unwrap_or(0) as i64
    };
    assert!(
        allocstalls > 0,
        "the workload caused no direct reclaim; vmstat rises: pgscan_kswapd {}, pgsteal_kswapd {}, nr_file_pages {}, compact_stall {}, htlb_buddy_alloc_success {}",
        moved("pgscan_kswapd"),
        moved("pgsteal_kswapd"),
        moved("nr_file_pages"),
        moved("compact_stall"),
        moved("htlb_buddy_alloc_success"),
    );
    // try_to_free_pages() counts one allocstall per begin/end pair it traces.
    assert_eq!(stalls, allocstalls, "{summary:#}");
    // nr_reclaimed also counts slab pages that shrinkers freed during the stall, which no
    // pgsteal counter sees; with a page-cache workload they are few.
    assert!(pages >= pgsteal_direct, "{pages} < {pgsteal_direct}");
    assert!(
        pages - pgsteal_direct <= pages / 20 + 1024,
        "{pages} vs {pgsteal_direct}"
    );
    let reader_row = summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["pid"] == reader_pid)
        .unwrap_or_else(|| panic!("reader {reader_pid} not among {summary:#}"));
    assert_eq!(reader_row["comm"], "cat");
    assert!(reader_row["count"].as_u64().unwrap() >= 1);
}

/// kswapd against the kernel's own counters, from a moment it slept to the next: its runs of
/// `balance_pgdat()` (`pageoutrun`), the pages it scanned and reclaimed (`pgscan_kswapd`,
/// `pgsteal_kswapd`); who woke it; the watermarks as `/proc` has them; and the verdict, which
/// speaks when most global stalls began while kswapd was awake.
#[test]
fn kswapd_runs_and_pages_match_pageoutrun_and_pgsteal_kswapd() {
    let tracer = Tracer::start(&["direct-reclaim", "--json"]);
    let before = vmstat_once_kswapd_sleeps();
    let reader_pid = cause_global_reclaim();
    let after = vmstat_once_kswapd_sleeps();
    let summary = summary(&tracer.stop());

    let moved = |name: &str| after[name] - before[name];
    let kswapd = &summary["kswapd"];
    let count = |field: &str| kswapd[field].as_u64().unwrap();
    eprintln!(
        "tracer: {kswapd}; vmstat: pageoutrun {}, pgscan_kswapd {}, pgsteal_kswapd {}",
        moved("pageoutrun"),
        moved("pgscan_kswapd"),
        moved("pgsteal_kswapd")
    );
    assert!(moved("pageoutrun") > 0, "the workload never woke kswapd");
    assert_eq!(count("wakes"), moved("pageoutrun"));
    if multi_gen_lru() {
        // The multi-generation LRU's tracepoint counts the pages it looked at, its
        // pgscan_kswapd those it took off the list (6.12: 180,621 and 180,616).
        let scanned = count("pages_scanned");
        assert!(scanned >= moved("pgscan_kswapd"), "{scanned}");
        assert!(
            scanned - moved("pgscan_kswapd") <= scanned / 100,
            "{scanned}"
        );
    } else {
        assert_eq!(count("pages_scanned"), moved("pgscan_kswapd"));
    }
    assert_eq!(count("pages_reclaimed"), moved("pgsteal_kswapd"));
    assert!(kswapd["awake_ms"].as_f64().unwrap() > 0.0, "{kswapd}");
    let woken_by = kswapd["woken_by"].as_array().unwrap();
    assert!(
        woken_by.iter().any(|waker| waker["pid"] == reader_pid),
        "the reader {reader_pid} never woke kswapd: {kswapd}"
    );

    let watermarks = &summary["watermarks"];
    for setting in ["min_free_kbytes", "watermark_scale_factor"] {
        let value = std::fs::read_to_string(format!("/proc/sys/vm/{setting}")).unwrap();
        assert_eq!(watermarks[setting], value.trim().parse::<u64>().unwrap());
    }
    // Each zone's watermarks as /proc/zoneinfo has them, boost (which kswapd undoes) aside.
    let zones: Vec<(String, [u64; 3])> = watermarks["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|zone| {
            let pages = |name: &str| zone[name].as_u64().unwrap() - zone["boost"].as_u64().unwrap();
            let name = format!("{} {}", zone["node"], zone["zone"].as_str().unwrap());
            (name, [pages("min"), pages("low"), pages("high")])
        })
        .collect();
    assert_eq!(zones, zones_with_memory());

    let stalls = summary["global"]["stalls"].as_u64().unwrap();
    let while_awake = summary["stalls_while_kswapd_awake"].as_u64().unwrap();
    assert!(while_awake <= stalls, "{summary:#}");
    // An allocation wakes kswapd before it reclaims itself, and kswapd sleeps only once free
    // memory is over the high watermark: global stalls begin with kswapd awake.
    assert!(
        while_awake * 2 >= stalls,
        "{stalls} stalls, {while_awake} while kswapd was awake"
    );
    let verdict = summary["verdict"].as_str();
    assert_eq!(verdict.is_some(), stalls > 0, "{summary:#}");
    if let Some(verdict) = verdict {
        assert!(
            verdict.contains(&format!("began {stalls} times")),
            "{verdict}"
        );
    }
}

/// Whether reclaim runs on the multi-generation LRU (Linux 6.1+, where built and enabled).
fn multi_gen_lru() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/lru_gen/enabled").is_ok_and(|enabled| {
        u32::from_str_radix(enabled.trim().trim_start_matches("0x"), 16) != Ok(0)
    })
}

/// `/proc/vmstat` once kswapd has slept a while: its counters still for half a second.
fn vmstat_once_kswapd_sleeps() -> HashMap<String, u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = vmstat();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = vmstat();
        let still = ["pageoutrun", "pgscan_kswapd", "pgsteal_kswapd"]
            .iter()
            .all(|name| now[*name] == last[*name]);
        if still {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "kswapd never slept");
        last = now;
    }
}

/// `node zone` and the min, low and high watermarks less boost of each zone with memory, from
/// `/proc/zoneinfo`.
fn zones_with_memory() -> Vec<(String, [u64; 3])> {
    let zoneinfo = std::fs::read_to_string("/proc/zoneinfo").unwrap();
    let mut zones = Vec::new();
    let mut current: Option<(String, HashMap<String, u64>)> = None;
    for line in zoneinfo.lines().chain(["Node end, zone end"]) {
        if let Some(rest) = line.strip_prefix("Node ") {
            if let Some((zone, values)) = current.take()
                && values.get("managed").is_some_and(|&pages| pages > 0)
            {
                // 5.10's zoneinfo has no boost line.
                let boost = values.get("boost").copied().unwrap_or(0);
                let less_boost = |name: &str| values[name] - boost;
                zones.push((
                    zone,
                    [less_boost("min"), less_boost("low"), less_boost("high")],
                ));
            }
            let (node, zone) = rest.split_once(", zone").unwrap();
            current = Some((format!("{} {}", node.trim(), zone.trim()), HashMap::new()));
        } else if let Some((_, values)) = &mut current
            && let [name, value] = line.split_whitespace().collect::<Vec<_>>()[..]
            && let Ok(value) = value.parse()
        {
            values.entry(name.to_owned()).or_insert(value);
        }
    }
    zones
}

/// Direct compaction, caused on purpose (see [`cause_direct_compaction`]): each try the kernel
/// counts a stall is one, split as the kernel splits them into tries that got their page and
/// tries that failed; kcompactd's wake-ups are counted apart.
#[test]
fn compaction_stalls_match_compact_stall_success_and_fail() {
    let json = Tracer::start(&["direct-reclaim", "--json"]);
    let events = Tracer::start(&["direct-reclaim", "--json", "--events"]);
    let text = Tracer::start(&["direct-reclaim"]);
    let before = vmstat();
    let asker = cause_direct_compaction();
    let after = vmstat();
    let (summary, events, text) = (summary(&json.stop()), events.stop(), text.stop());

    let moved = |name: &str| after[name] - before[name];
    let compaction = &summary["compaction"];
    eprintln!(
        "tracer: {compaction}; vmstat: compact_stall {}, compact_success {}, compact_fail {}, compact_daemon_wake {}",
        moved("compact_stall"),
        moved("compact_success"),
        moved("compact_fail"),
        moved("compact_daemon_wake")
    );
    assert!(moved("compact_stall") > 0, "no direct compaction happened");
    assert_eq!(compaction["stalls"], moved("compact_stall"));
    assert_eq!(compaction["succeeded"], moved("compact_success"));
    assert_eq!(compaction["failed"], moved("compact_fail"));
    assert_eq!(
        compaction["kcompactd"]["wakes"],
        moved("compact_daemon_wake")
    );

    // One line per stall, the asker's at the order of a huge page.
    events.assert_success();
    let lines = events.json_of_type("compaction");
    assert_eq!(lines.len() as u64, moved("compact_stall"));
    let asked: Vec<_> = lines.iter().filter(|line| line["pid"] == asker).collect();
    assert!(!asked.is_empty(), "no stall of the asker {asker}");
    for line in &asked {
        assert_eq!(line["order"], huge_page_order(), "{line}");
        assert!(line["latency_us"].as_f64().unwrap() > 0.0, "{line}");
    }
    // A zone deferred after earlier failures makes a stall without running: the asker's may
    // all be such (seen once in four runs here), but not every stall of the window.
    assert!(
        lines.iter().any(|line| line["zones"]
            .as_array()
            .unwrap()
            .iter()
            .any(|zone| zone["outcome"] == "ran")),
        "no zone of any stall ran compaction: {lines:#?}"
    );
    let asker_row = summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["pid"] == asker)
        .unwrap_or_else(|| panic!("asker {asker} not among {summary:#}"));
    assert_eq!(asker_row["comm"], "sh");

    text.assert_success();
    let stalls = format!("Direct compaction: {} stalls", moved("compact_stall"));
    assert!(text.stdout.contains(&stalls), "{}", text.stdout);
    assert!(text.stdout.contains("kcompactd (background): woke"));
}

/// A kernel without compaction's tracepoints (built without CONFIG_COMPACTION) is said so in one
/// line, and reclaim is traced all the same.
#[test]
fn a_kernel_without_compaction_still_traces_reclaim() {
    let scratch = Scratch::new("no-compaction");
    let tracefs = Path::new("/sys/kernel/tracing/events/vmscan");
    for event in std::fs::read_dir(tracefs).unwrap() {
        let event = event.unwrap().path();
        let Ok(format) = std::fs::read(event.join("format")) else {
            continue;
        };
        let copy = scratch
            .dir
            .join("events/vmscan")
            .join(event.file_name().unwrap());
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::write(copy.join("format"), format).unwrap();
    }
    let finished = tracer_tests::run_tracer(&["direct-reclaim", "--json", "-d", "1"], |command| {
        command.env("TRACER_TRACEFS", &scratch.dir);
    });
    finished.assert_success();
    assert!(
        finished.stderr.contains(
            "tracer: direct compaction not traced: this kernel has no tracepoint compaction:"
        ),
        "{finished:#?}"
    );
    let summary = summary(&finished);
    assert_eq!(summary["global"]["stalls"], 0);
    assert!(summary.get("compaction").is_none(), "{summary:#}");
}

/// Memory-cgroup reclaim inside a v1 memory cgroup of the test's own, seen by several tracers
/// at once: unfiltered (text and JSON), filtered to that cgroup (v1, v2, events, classic
/// tracepoints) and filtered to an empty cgroup.
#[test]
fn memcg_stalls_are_attributed_and_filtered_by_cgroup() {
    let memcg = Cgroup::memory("tracer-memcg", "256M");
    let other = Cgroup::memory("tracer-other", "max");
    // With v1's memory controller, the workload also sits in a v2 cgroup, which -c takes too;
    // with cgroup v2 only, the memory cgroup is a v2 one already.
    let unified = (!cgroup_v2_only()).then(|| Cgroup::create("unified", "tracer-v2"));
    let scratch = Scratch::new("memcg");
    let file = scratch.file("data");

    let text = Tracer::start(&["direct-reclaim", "--top", "50"]);
    let json = Tracer::start(&["direct-reclaim", "--json", "--top", "50"]);
    let filtered = Tracer::start(&["direct-reclaim", "--json", "-c", memcg.path_str()]);
    let elsewhere = Tracer::start(&["direct-reclaim", "--json", "-c", other.path_str()]);
    let by_v2 = unified
        .as_ref()
        .map(|unified| Tracer::start(&["direct-reclaim", "--json", "-c", unified.path_str()]));
    let events = Tracer::start(&[
        "direct-reclaim",
        "--json",
        "--events",
        "-c",
        memcg.path_str(),
    ]);
    let classic = Tracer::start(&[
        "direct-reclaim",
        "--json",
        "--attach",
        "classic",
        "-v",
        "-c",
        memcg.path_str(),
    ]);
    let before = vmstat();
    let joined: Vec<&Cgroup> = [Some(&memcg), unified.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    run(&mut sh_in(
        &joined,
        &format!(
            "dd if=/dev/zero of={file} bs=1M count=1024 status=none && cat {file} > /dev/null"
        ),
    ));
    let after = vmstat();
    let (text, json) = (text.stop(), summary(&json.stop()));
    let (filtered, elsewhere) = (summary(&filtered.stop()), summary(&elsewhere.stop()));
    let by_v2 = by_v2.map(|by_v2| summary(&by_v2.stop()));
    let (events, classic) = (events.stop(), classic.stop());

    let stalls = filtered["memcg"]["stalls"].as_u64().unwrap();
    let pages = filtered["memcg"]["pages_reclaimed"].as_u64().unwrap();
    eprintln!("memcg: {stalls} stalls, {pages} pages reclaimed");
    assert!(
        stalls > 0,
        "no memcg reclaim under a 256M limit: {filtered:#}"
    );
    assert_eq!(filtered["global"]["stalls"], 0);

    // Every stall is charged to the test's cgroup, by id and by path.
    let cgroups = filtered["cgroups"].as_array().unwrap();
    assert_eq!(cgroups.len(), 1, "{filtered:#}");
    assert_eq!(cgroups[0]["cgroup_id"], memcg.id());
    assert_eq!(cgroups[0]["cgroup"], memcg.relative());
    assert_eq!(cgroups[0]["count"], stalls);

    // pgsteal_anon/file count every reclaimer; the per-reclaimer pgsteal_* counters skip
    // memcg reclaim, so the difference is what memcg reclaim took.
    let rise = |name: &str| after[name] - before[name];
    let memcg_pgsteal = rise("pgsteal_anon") + rise("pgsteal_file")
        - [
            "pgsteal_kswapd",
            "pgsteal_direct",
            "pgsteal_khugepaged",
            "pgsteal_proactive",
        ]
        .iter()
        .filter(|name| after.contains_key(**name))
        .map(|name| rise(name))
        .sum::<u64>();
    // As for global reclaim: before Linux 6.3 or so nr_reclaimed also counts slab pages freed by
    // shrinkers, which no pgsteal counter sees.
    assert!(
        pages >= memcg_pgsteal,
        "tracer's {pages} pages < vmstat's {memcg_pgsteal}"
    );
    assert!(
        pages - memcg_pgsteal <= pages / 20 + 1024,
        "tracer's {pages} pages vs vmstat's {memcg_pgsteal}"
    );

    // Unfiltered, the same stalls show up under the same cgroup.
    let row = json["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["cgroup_id"] == memcg.id())
        .unwrap_or_else(|| panic!("{} missing: {json:#}", memcg.relative()));
    assert_eq!(row["count"], stalls);
    assert_eq!(row["pages"], pages);

    // Filters: an empty cgroup sees nothing; the v2 cgroup the workload also sat in sees all.
    assert_eq!(elsewhere["memcg"]["stalls"], 0, "{elsewhere:#}");
    if let (Some(by_v2), Some(unified)) = (&by_v2, &unified) {
        assert_eq!(by_v2["memcg"]["stalls"], stalls, "{by_v2:#}");
        assert_eq!(by_v2["cgroups"][0]["cgroup_id"], unified.id());
    }

    // One event per stall, each in the cgroup.
    events.assert_success();
    let stall_events = events.json_of_type("stall");
    assert_eq!(stall_events.len() as u64, stalls);
    assert!(
        stall_events
            .iter()
            .all(|e| e["kind"] == "memcg" && e["cgroup"] == memcg.relative())
    );
    assert!(
        stall_events
            .iter()
            .all(|e| e["gfp"].as_str().unwrap().starts_with("GFP_")),
        "{:#}",
        stall_events[0]
    );
    let event_pages: u64 = stall_events
        .iter()
        .map(|e| e["pages_reclaimed"].as_u64().unwrap())
        .sum();
    assert_eq!(event_pages, pages);

    // Classic tracepoints see exactly what BTF tracepoints see.
    assert_eq!(summary(&classic)["memcg"]["stalls"], stalls);
    assert!(
        classic
            .stderr
            .contains("vmscan:mm_vmscan_memcg_reclaim_begin: classic tracepoint"),
        "{}",
        classic.stderr
    );

    // The text table carries the JSON's counts.
    text.assert_success();
    for (title, counts) in [
        ("Global direct reclaim", &json["global"]),
        ("Memory-cgroup reclaim", &json["memcg"]),
    ] {
        let expected = match counts["stalls"].as_u64().unwrap() {
            0 => format!("{title}: no stalls"),
            n => format!("{title}: {n} stalls, "),
        };
        assert!(
            text.stdout.contains(&expected),
            "{expected:?} not in:\n{}",
            text.stdout
        );
    }
    let table_row = text
        .stdout
        .lines()
        .find(|line| line.ends_with(&format!(" {}", memcg.relative())))
        .unwrap_or_else(|| panic!("no table row for the cgroup:\n{}", text.stdout));
    let columns: Vec<&str> = table_row.split_whitespace().collect();
    assert_eq!(columns[0], memcg.id().to_string());
    assert_eq!(columns[1], stalls.to_string());
    assert_eq!(columns[4], pages.to_string());
}

#[test]
fn an_idle_window_says_no_stall_happened() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let finished = tracer_tests::run_tracer(&["direct-reclaim", "-p", &pid, "-d", "1"], |_| {});
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    finished.assert_success();
    assert!(
        finished
            .stdout
            .contains("no reclaim stalls (global, memory-cgroup or compaction) in 1.0s; lost: 0"),
        "{finished:#?}"
    );
}

#[test]
fn intervals_print_count_summaries_then_stop() {
    let finished =
        tracer_tests::run_tracer(&["direct-reclaim", "--json", "-p", "1", "0.3", "3"], |_| {});
    let summaries = finished.assert_success().json_of_type("summary");
    assert_eq!(summaries.len(), 3, "{finished:#?}");
    for summary in summaries {
        let secs = summary["interval_s"].as_f64().unwrap();
        assert!((0.25..0.6).contains(&secs), "{summary:#}");
        assert_eq!(summary["lost"], 0);
    }
}
