//! `cargo xtask bench compaction`: what tracing direct compaction costs a THP-heavy allocation
//! storm. Memory is fragmented as the tests fragment it, then one thread faults in anonymous
//! memory advised for huge pages (each fault wants a 2 MiB block and, with THP's `defrag` at
//! `madvise`, compacts for it in the faulting thread), untraced and under `tracer
//! direct-reclaim`, in turn. tracer's cost is the kernel time of all its programs (bpf_stats)
//! plus its own CPU time during the storm, over the storm thread's CPU time.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Result, bail};
use tracer_tests::{Fragmented, Sysctl, map_anonymous, meminfo_kib, vmstat};

use crate::bench::{median, program_stats, stop_with_usage};

/// One storm.
struct Storm {
    /// CPU time of the faulting thread.
    cpu_ns: u64,
    stalls: u64,
    /// tracer's programs' kernel time and its own CPU time over the storm.
    tracer_ns: u64,
}

pub fn run(tracer: &Path, rounds: usize) -> Result<()> {
    let _stats = Sysctl::set("kernel.bpf_stats_enabled", "1");
    let thp = Path::new("/sys/kernel/mm/transparent_hugepage");
    if !thp.join("enabled").exists() {
        bail!("this kernel has no transparent huge pages: no THP storm to trace");
    }
    let _thp = Sysctl::write(thp.join("enabled"), "madvise");
    let _defrag = Sysctl::write(thp.join("defrag"), "madvise");
    let (mut untraced, mut traced) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        untraced.push(storm(None)?);
        traced.push(storm(Some(tracer))?);
    }
    println!(
        "compaction: anonymous memory faulted in with MADV_HUGEPAGE over fragmented memory; {rounds} rounds, medians"
    );
    println!(
        "{:<28} {:>12} {:>14} {:>16}",
        "run", "stalls", "storm CPU ms", "tracer CPU ms"
    );
    for (name, runs) in [("untraced", &untraced), ("tracer direct-reclaim", &traced)] {
        println!(
            "{name:<28} {:>12.0} {:>14.1} {:>16.2}",
            median(runs.iter().map(|r| r.stalls as f64)),
            median(runs.iter().map(|r| r.cpu_ns as f64 / 1e6)),
            median(runs.iter().map(|r| r.tracer_ns as f64 / 1e6)),
        );
    }
    let cost = median(
        traced
            .iter()
            .map(|r| r.tracer_ns as f64 / r.cpu_ns.max(1) as f64),
    );
    println!(
        "goal: tracing adds under 1% CPU to the storm {} ({:.3}%: tracer's kernel programs and its own CPU over the storm's)",
        if cost < 0.01 { "met" } else { "NOT met" },
        cost * 100.0
    );
    Ok(())
}

fn storm(tracer: Option<&Path>) -> Result<Storm> {
    let fragmented = Fragmented::new();
    let tracer = match tracer {
        Some(path) => Some(start(path)?),
        None => None,
    };
    let before = (vmstat(), tracer.map(tracer_ns));
    let len = (meminfo_kib("MemFree:") * 9 / 10) as usize * 1024;
    let cpu_ns = std::thread::spawn(move || fault_in_huge_pages(len))
        .join()
        .expect("storm thread");
    let after = (vmstat(), tracer.map(tracer_ns));
    if let Some(pid) = tracer {
        stop_with_usage(pid as i32)?;
    }
    drop(fragmented);
    Ok(Storm {
        cpu_ns,
        stalls: after.0["compact_stall"] - before.0["compact_stall"],
        tracer_ns: after.1.unwrap_or(0) - before.1.unwrap_or(0),
    })
}

/// Starts `tracer direct-reclaim` and waits until it traces.
fn start(tracer: &Path) -> Result<u32> {
    let child = Command::new(tracer)
        .arg("direct-reclaim")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stderr = std::io::BufReader::new(child.stderr.unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line)? > 0 {
        if line.contains("Tracing") {
            // Keep reading (and dropping) what it says, so it never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return Ok(pid);
        }
        line.clear();
    }
    bail!("tracer direct-reclaim ended before tracing")
}

/// tracer's CPU time (/proc/PID/schedstat, ns) and its programs' kernel time.
fn tracer_ns(pid: u32) -> u64 {
    let own: u64 = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let programs: u64 = program_stats(pid).values().map(|(time, _)| time).sum();
    own + programs
}

/// Faults in `len` bytes advised for huge pages, a page at a time; returns this thread's CPU
/// time. The memory is unmapped before it returns.
fn fault_in_huge_pages(len: usize) -> u64 {
    let thread_cpu = || {
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    let start = thread_cpu();
    let Some(at) = map_anonymous(len, libc::MADV_HUGEPAGE) else {
        return 0;
    };
    unsafe {
        for offset in (0..len).step_by(4096) {
            at.add(offset).write_volatile(1);
        }
        let spent = thread_cpu() - start;
        libc::munmap(at.cast(), len);
        std::thread::sleep(Duration::from_millis(100));
        spent
    }
}
