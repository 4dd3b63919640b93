//! `tracer oom` against OOM kills caused on purpose in a memory cgroup.

use std::os::unix::process::ExitStatusExt;

use tracer_tests::{
    Cgroup, Finished, Json, SwapDevice, Sysctl, Tracer, assert_refused, cgroup_v2_only,
    meminfo_kib, sh_in, vmstat,
};

/// Runs dd with a 256 MiB buffer in a memory cgroup limited to 64 MiB, where the OOM killer
/// must kill it; returns dd's pid and the rise of `oom_kill` in /proc/vmstat.
fn oom_kill_in(memcg: &Cgroup) -> (u32, u64) {
    oom_kill_of(
        "exec dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null",
        memcg,
    )
}

fn oom_kill_of(script: &str, memcg: &Cgroup) -> (u32, u64) {
    let before = vmstat()["oom_kill"];
    let mut dd = sh_in(&[memcg], script).spawn().unwrap();
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

/// The kill the issue names: swap free, page cache (tmpfs) in the cgroup, and swappiness 0 (the
/// cgroup's on v1, `vm.swappiness` on v2) keeping anonymous and shared memory out of swap.
/// The explanation's numbers against the cgroup's own files read right after the kill; the
/// same work with swappiness 60 swaps and is not killed.
#[test]
fn a_kill_with_swap_free_is_blamed_on_swappiness_0() {
    let _swap = SwapDevice::on(512);
    let memcg = Cgroup::memory("tracer-oom-swappiness", "64M");
    let shm = TmpfsFile::new();
    let v2 = cgroup_v2_only();
    let swappiness = |value: &str| match v2 {
        true => Some(Sysctl::set("vm.swappiness", value)),
        false => {
            memcg.set("memory.swappiness", value);
            None
        }
    };
    if v2 {
        memcg.set("memory.swap.max", "max");
    }
    let _zero = swappiness("0");
    let tracer = Tracer::start(&["oom", "--json"]);
    let status = sh_in(
        &[&memcg],
        &format!(
            "exec dd if=/dev/zero of={} bs=1M count=24 2>/dev/null",
            shm.0.display()
        ),
    )
    .status()
    .unwrap();
    assert!(status.success(), "{status}");
    let (pid, oom_kills) = oom_kill_of(
        "exec dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null",
        &memcg,
    );
    let stat = memory_stat(&memcg);
    let swap_free = meminfo_kib("SwapFree:");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let finished = tracer.stop();
    assert_eq!(oom_kills, 1);

    let kills = kills(&finished);
    let kill = kills
        .iter()
        .find(|kill| kill["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("dd {pid} not among {kills:#?}"));
    let explanation = &kill["explanation"];
    let pool = &explanation["pool"];
    let kb = |field: &str| pool[field].as_u64().unwrap();
    let (file, shmem) = match v2 {
        true => (stat["file"], stat["shmem"]),
        false => (stat["total_cache"], stat["total_shmem"]),
    };
    eprintln!("{explanation:#}");
    assert_eq!(kb("limit_kb"), 64 << 10);
    assert!((60 << 10..=64 << 10).contains(&kb("usage_kb")), "{pool}");
    assert_eq!(kb("shmem_kb"), shmem / 1024);
    // The tmpfs file's 24 MiB, give or take pages the kernel charged elsewhere (5.10: 24 KiB).
    assert!(kb("shmem_kb") >= 23 << 10, "{pool}");
    assert!(
        kb("file_kb").abs_diff(file / 1024) <= 256,
        "{pool} vs {file}"
    );
    assert!(kb("anon_kb") >= 32 << 10, "{pool}");
    assert!(
        explanation["swap_free_kb"]
            .as_u64()
            .unwrap()
            .abs_diff(swap_free)
            <= 1024
    );
    assert_eq!(explanation["allocation"]["order"], 0, "{explanation}");
    if !v2 {
        assert_eq!(pool["swappiness"], 0);
    }
    let verdict = explanation["verdict"].as_str().unwrap();
    assert!(verdict.contains("swap free: swappiness 0"), "{verdict}");
    assert!(verdict.contains("out of swap"), "{verdict}");

    // With swappiness 60 the same work swaps out and goes on.
    drop(_zero);
    let _sixty = swappiness("60");
    let status = sh_in(
        &[&memcg],
        "exec dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null",
    )
    .status()
    .unwrap();
    assert!(
        status.success(),
        "dd was killed with swappiness 60: {status}"
    );
    assert_eq!(memcg.oom_kills(), 1);
}

/// A file on a tmpfs of its own (the guests have no /dev/shm), gone on drop: until then its
/// pages stay charged to the cgroup that wrote them.
struct TmpfsFile(std::path::PathBuf);

impl TmpfsFile {
    fn new() -> Self {
        let mount = std::env::temp_dir().join(format!("tracer-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&mount).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mount)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs: {status}");
        Self(mount.join("file"))
    }
}

impl Drop for TmpfsFile {
    fn drop(&mut self) {
        let mount = self.0.parent().unwrap();
        let _ = std::process::Command::new("umount").arg(mount).status();
        let _ = std::fs::remove_dir(mount);
    }
}

/// A memory cgroup's `memory.stat`, in bytes.
fn memory_stat(memcg: &Cgroup) -> std::collections::HashMap<String, u64> {
    memcg
        .read("memory.stat")
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
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
