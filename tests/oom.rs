//! `tracer oom` against OOM kills caused on purpose in a memory cgroup.

use std::os::unix::process::ExitStatusExt;

use tracer_tests::{Cgroup, Finished, Json, Tracer, assert_refused, sh_in, vmstat};

/// Runs dd with a 256 MiB buffer in a memory cgroup limited to 64 MiB, where the OOM killer
/// must kill it; returns dd's pid and the rise of `oom_kill` in /proc/vmstat.
fn oom_kill_in(memcg: &Cgroup) -> (u32, u64) {
    let before = vmstat()["oom_kill"];
    let mut dd = sh_in(
        &[memcg],
        "exec dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null",
    )
    .spawn()
    .unwrap();
    let pid = dd.id();
    let status = dd.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "dd was not killed: {status}"
    );
    (pid, vmstat()["oom_kill"] - before)
}

fn kills(finished: &Finished) -> Vec<Json> {
    finished.assert_success();
    finished.json_of_type("oom_kill")
}

fn summary(finished: &Finished) -> Json {
    finished
        .json_of_type("summary")
        .pop()
        .expect("a summary at exit")
}

#[test]
fn a_memcg_oom_kill_is_reported_exactly() {
    let memcg = Cgroup::memory("tracer-oom", "64M");
    let other = Cgroup::memory("tracer-oom-other", "max");
    let all = Tracer::start(&["oom", "--json"]);
    let text = Tracer::start(&["oom"]);
    let filtered = Tracer::start(&["oom", "--json", "-c", memcg.path_str()]);
    let elsewhere = Tracer::start(&["oom", "--json", "-c", other.path_str()]);
    let (pid, oom_kills) = oom_kill_in(&memcg);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (all, text) = (all.stop(), text.stop());
    let (filtered, elsewhere) = (filtered.stop(), elsewhere.stop());

    let killed: Vec<Json> = kills(&all)
        .into_iter()
        .filter(|kill| kill["killed"] == true)
        .collect();
    assert_eq!(
        killed.len() as u64,
        oom_kills,
        "tracer's kills vs vmstat oom_kill: {all:#?}"
    );
    let kill = &killed[0];
    assert_eq!(kill["victim"]["pid"], pid);
    assert_eq!(kill["victim"]["comm"], "dd");
    assert_eq!(kill["victim"]["cgroup"], memcg.relative());
    assert_eq!(kill["victim"]["cgroup_id"], memcg.id());
    assert_eq!(kill["constraint"], "memcg");
    assert_eq!(kill["oom_memcg"], memcg.relative());
    assert_eq!(kill["oom_memcg_id"], memcg.id());
    // dd itself ran out of memory: it is the trigger too.
    assert_eq!(kill["trigger"]["pid"], pid);
    assert_eq!(kill["trigger"]["cgroup"], memcg.relative());
    // Its 256 MiB buffer was mapped, at most 64 MiB of it resident.
    let anon = kill["anon_rss_kb"].as_u64().unwrap();
    assert!((32 << 10..=64 << 10).contains(&anon), "anon-rss {anon} KiB");
    assert!(kill["total_vm_kb"].as_u64().unwrap() >= 256 << 10);
    // The cgroup's own counter saw the same kill.
    assert_eq!(memcg.oom_kills(), 1);

    // The victim's exit, which gives its memory back, follows.
    let exits = all.json_of_type("oom_exit");
    assert!(exits.iter().any(|exit| exit["pid"] == pid), "{all:#?}");
    let totals = summary(&all);
    assert_eq!(totals["kills"], oom_kills);
    assert_eq!(totals["memcg_kills"], oom_kills);
    assert_eq!(totals["by_cgroup"][memcg.relative()], oom_kills);

    // Filters select victims by cgroup.
    assert_eq!(kills(&filtered).len(), killed.len());
    assert!(kills(&elsewhere).is_empty(), "{elsewhere:#?}");
    assert_eq!(summary(&elsewhere)["kills"], 0);

    // One line per kill in text.
    text.assert_success();
    let expected = format!("memcg OOM in {}: killed {pid} (dd)", memcg.relative());
    assert_eq!(text.stdout.matches(&expected).count(), 1, "{}", text.stdout);
}

#[test]
fn classic_tracepoints_report_the_same_kill() {
    let memcg = Cgroup::memory("tracer-oom-classic", "64M");
    let classic = Tracer::start(&["oom", "--json", "--attach", "classic"]);
    let (pid, oom_kills) = oom_kill_in(&memcg);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let classic = classic.stop();
    let killed: Vec<Json> = kills(&classic)
        .into_iter()
        .filter(|kill| kill["killed"] == true)
        .collect();
    assert_eq!(killed.len() as u64, oom_kills);
    assert_eq!(killed[0]["victim"]["pid"], pid);
    assert_eq!(killed[0]["victim"]["cgroup"], memcg.relative());
    assert_eq!(killed[0]["oom_memcg"], memcg.relative());
    assert!(killed[0]["anon_rss_kb"].as_u64().unwrap() >= 32 << 10);
}

#[test]
fn bad_input_gets_one_line() {
    for (args, expected) in [
        (&["oom", "-p", "4194304"][..], "no such process: 4194304"),
        (
            &["oom", "-c", "/sys/fs/cgroup/memory/no-such-cgroup"][..],
            "no such cgroup",
        ),
    ] {
        assert_refused(args, |_| {}, expected);
    }
}
