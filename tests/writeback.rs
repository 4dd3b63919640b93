//! `tracer writeback` against writeback and throttling caused on purpose.

use std::process::Command;

use tracer_tests::{Json, Scratch, Sysctl, Tracer, assert_refused, run, summary};

const PAGE: u64 = 4096;

fn pages_by_reason(summary: &Json, reason: &str) -> u64 {
    summary["by_reason"][reason]["pages"].as_u64().unwrap_or(0)
}

/// Writes `mib` MiB of zeroes to `path` through the page cache and returns dd's pid.
fn write_file(path: &str, mib: u64) -> u32 {
    let mut dd = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={path}"),
            "bs=1M",
            &format!("count={mib}"),
            "status=none",
        ])
        .spawn()
        .unwrap();
    let pid = dd.id();
    assert!(dd.wait().unwrap().success());
    pid
}

#[test]
fn sync_writes_at_least_what_was_written_under_reason_sync() {
    let scratch = Scratch::new("sync");
    run(&mut Command::new("sync"));
    let summary_tracer = Tracer::start(&["writeback", "--json"]);
    let events_tracer = Tracer::start(&["writeback", "--json", "--events"]);
    write_file(&scratch.file("data"), 64);
    run(&mut Command::new("sync"));
    let summary = summary(&summary_tracer.stop());
    let events = events_tracer.stop();

    let sync_pages = pages_by_reason(&summary, "sync");
    eprintln!("sync wrote {sync_pages} pages; summary {summary:#}");
    assert!(sync_pages >= 64 * 1024 * 1024 / PAGE, "{summary:#}");
    assert_eq!(summary["by_reason"]["sync"]["bytes"], sync_pages * PAGE);

    // One event per pass; their pages add up to the summary's.
    events.assert_success();
    let passes = events.json_of_type("writeback");
    let event_pages: u64 = passes
        .iter()
        .filter(|pass| pass["reason"] == "sync")
        .map(|pass| pass["pages"].as_u64().unwrap())
        .sum();
    assert_eq!(event_pages, sync_pages);
    assert!(
        passes
            .iter()
            .all(|pass| pass["comm"].as_str().unwrap().starts_with("kworker"))
    );
    let device = summary["by_device"].as_object().unwrap();
    assert!(!device.is_empty());
    assert_eq!(summary["passes_never_completed"], 0);
}

#[test]
fn a_low_background_threshold_makes_background_writeback() {
    let scratch = Scratch::new("background");
    // Restoring the ratio also clears the byte threshold that replaced it.
    let _ratio = Sysctl::set(
        "vm.dirty_background_ratio",
        &current("vm.dirty_background_ratio"),
    );
    let _bytes = Sysctl::set("vm.dirty_background_bytes", &(16u64 << 20).to_string());
    let tracer = Tracer::start(&["writeback", "--json"]);
    write_file(&scratch.file("data"), 256);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let summary = summary(&tracer.stop());
    let background = pages_by_reason(&summary, "background");
    eprintln!("background wrote {background} pages");
    assert!(background > 0, "no background writeback: {summary:#}");
}

#[test]
fn a_writer_over_the_dirty_limit_is_throttled_under_its_pid() {
    let scratch = Scratch::new("throttle");
    let _ratio = Sysctl::set("vm.dirty_ratio", &current("vm.dirty_ratio"));
    let _background_ratio = Sysctl::set(
        "vm.dirty_background_ratio",
        &current("vm.dirty_background_ratio"),
    );
    let _background = Sysctl::set("vm.dirty_background_bytes", &(4u64 << 20).to_string());
    let _limit = Sysctl::set("vm.dirty_bytes", &(8u64 << 20).to_string());
    let all = Tracer::start(&["writeback", "--json"]);
    let only_dd = Tracer::start(&["writeback", "--json", "--events", "--comm", "dd"]);
    let no_one = Tracer::start(&["writeback", "--json", "--comm", "no-such-comm"]);
    let dd = write_file(&scratch.file("data"), 256);
    let (all, only_dd, no_one) = (
        summary(&all.stop()),
        only_dd.stop(),
        summary(&no_one.stop()),
    );

    let pauses = all["throttle_pause"]["count"].as_u64().unwrap();
    let row = all["throttled_processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["pid"] == dd)
        .unwrap_or_else(|| panic!("dd ({dd}) not throttled: {all:#}"));
    eprintln!(
        "dd throttled {} times for {} us",
        row["count"], row["total_us"]
    );
    assert_eq!(row["comm"], "dd");
    assert!(row["count"].as_u64().unwrap() > 0);
    assert!(row["total_us"].as_f64().unwrap() > 0.0);
    assert!(pauses >= row["count"].as_u64().unwrap());

    // Filtered to dd, every throttle event is dd's, and there are as many as dd's row says.
    only_dd.assert_success();
    let throttles = only_dd.json_of_type("throttle");
    assert!(
        throttles
            .iter()
            .all(|t| t["pid"] == dd && t["comm"] == "dd"),
        "{throttles:?}"
    );
    assert_eq!(throttles.len() as u64, row["count"].as_u64().unwrap());
    assert_eq!(no_one["throttle_pause"]["count"], 0);
}

#[test]
fn classic_tracepoints_see_the_same_sync() {
    let scratch = Scratch::new("classic");
    run(&mut Command::new("sync"));
    let btf = Tracer::start(&["writeback", "--json"]);
    let classic = Tracer::start(&["writeback", "--json", "--attach", "classic"]);
    write_file(&scratch.file("data"), 16);
    run(&mut Command::new("sync"));
    let (btf, classic) = (summary(&btf.stop()), summary(&classic.stop()));
    assert!(
        pages_by_reason(&btf, "sync") >= 16 * 1024 * 1024 / PAGE,
        "{btf:#}"
    );
    assert_eq!(
        pages_by_reason(&btf, "sync"),
        pages_by_reason(&classic, "sync")
    );
    let devices = btf["by_device"].as_object().unwrap();
    for (device, written) in devices {
        assert_eq!(
            written["pages"], classic["by_device"][device]["pages"],
            "{device}"
        );
    }
}

#[test]
fn bad_input_gets_one_line() {
    for (args, expected) in [
        (
            &["writeback", "-p", "4194304"][..],
            "no such process: 4194304",
        ),
        (
            &["writeback", "-c", "/sys/fs/cgroup/memory/no-such-cgroup"][..],
            "no such cgroup",
        ),
        (&["writeback", "--events", "1"][..], "cannot be used with"),
    ] {
        assert_refused(args, |_| {}, expected);
    }
}

fn current(name: &str) -> String {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}
