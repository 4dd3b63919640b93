//! `cargo xtask bench events`: the ring-buffer pipeline at its limit. A thread on CPU 1 calls
//! getppid() as fast as it can while a tracer on CPU 0 takes a record of each: `tracer
//! pipeline` (tracer's ring buffer, event loop and decoding), and a bpftrace one-liner that
//! prints each. Reports events delivered per second and lost, and each program's kernel time
//! per event (bpf_stats) beside an empty program's on the same tracepoint.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};

use tracer_tests::Sysctl;

use crate::bench::{median, program_stats, stop_with_usage};

/// One measured run.
#[derive(Default, Clone, Copy)]
struct Run {
    calls_per_s: f64,
    delivered_per_s: f64,
    lost_per_s: f64,
    /// Kernel time per event of the tool's program, and of the empty one where there is one.
    program_ns: f64,
    empty_ns: f64,
}

pub fn run(tracer: &Path, rounds: usize, seconds: f64) -> Result<()> {
    let _stats = Sysctl::set("kernel.bpf_stats_enabled", "1");
    let pid = std::process::id().to_string();
    let tracer_command = vec![
        "taskset".to_owned(),
        "-c".into(),
        "0".into(),
        tracer.display().to_string(),
        "pipeline".into(),
        "--json".into(),
        "-p".into(),
        pid.clone(),
    ];
    let script = format!(
        "tracepoint:syscalls:sys_enter_getppid /pid == {pid}/ {{ printf(\"%d %d %lld\\n\", pid, tid, nsecs); }}
         BEGIN {{ printf(\"ready\\n\"); }}"
    );
    let bpftrace_command = ["taskset", "-c", "0", "bpftrace", "-e", &script]
        .map(String::from)
        .to_vec();
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        runs[0].push(measure(
            &tracer_command,
            "Tracing",
            seconds,
            Output::TracerJson,
        )?);
        runs[1].push(measure(&bpftrace_command, "ready", seconds, Output::Lines)?);
    }
    let medians: Vec<Run> = runs
        .iter()
        .map(|runs| Run {
            calls_per_s: median(runs.iter().map(|r| r.calls_per_s)),
            delivered_per_s: median(runs.iter().map(|r| r.delivered_per_s)),
            lost_per_s: median(runs.iter().map(|r| r.lost_per_s)),
            program_ns: median(runs.iter().map(|r| r.program_ns)),
            empty_ns: median(runs.iter().map(|r| r.empty_ns)),
        })
        .collect();
    println!(
        "events: getppid() from one thread on CPU 1, a record of each to a tracer on CPU 0; {rounds} rounds of {seconds} s, medians"
    );
    println!(
        "{:<26} {:>10} {:>12} {:>10} {:>16}",
        "tool", "calls/s", "delivered/s", "lost/s", "kernel ns/event"
    );
    let (tracer, bpftrace) = (medians[0], medians[1]);
    for (name, run) in [("tracer pipeline", tracer), ("bpftrace printf", bpftrace)] {
        println!(
            "{name:<26} {:>10.0} {:>12.0} {:>10.0} {:>16.1}",
            run.calls_per_s, run.delivered_per_s, run.lost_per_s, run.program_ns
        );
    }
    println!(
        "{:<26} {:>10} {:>12} {:>10} {:>16.1}",
        "empty program (same tp)", "", "", "", tracer.empty_ns
    );
    let kernel_ratio = tracer.program_ns / tracer.empty_ns;
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "tracer / bpftrace: delivered {:.2}x, kernel time per event {:.2}x",
        tracer.delivered_per_s / bpftrace.delivered_per_s,
        tracer.program_ns / bpftrace.program_ns
    );
    println!(
        "goals: at least 2 million events/s delivered on one core {} ({:.2}M/s); kernel cost within 2x of an empty program {} ({kernel_ratio:.2}x)",
        verdict(tracer.delivered_per_s >= 2e6),
        tracer.delivered_per_s / 1e6,
        verdict(kernel_ratio <= 2.0)
    );
    Ok(())
}

/// What a tool prints about the events it got.
#[derive(Clone, Copy)]
enum Output {
    /// tracer's summary: `events` and `lost`.
    TracerJson,
    /// A line per event; bpftrace says "Lost N events" for what it dropped.
    Lines,
}

fn measure(command: &[String], ready: &str, seconds: f64, output: Output) -> Result<Run> {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", command[0]))?;
    let lines = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let summary = Arc::new(Mutex::new(String::new()));
    let readers = [
        child
            .stdout
            .take()
            .map(Box::new)
            .map(|r| r as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(Box::new)
            .map(|r| r as Box<dyn std::io::Read + Send>),
    ];
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for reader in readers.into_iter().flatten() {
        let (lines, lost, summary, ready_tx) = (
            lines.clone(),
            lost.clone(),
            summary.clone(),
            ready_tx.clone(),
        );
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = ready_tx.send(());
                } else if let Some(count) = line
                    .strip_prefix("Lost ")
                    .and_then(|rest| rest.split(' ').next())
                {
                    lost.fetch_add(count.parse().unwrap_or(0), Ordering::Relaxed);
                } else if line.starts_with("{\"type\":\"summary\"") {
                    *summary.lock().unwrap() = line;
                } else {
                    lines.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        bail!("{} never became ready", command[3.min(command.len() - 1)]);
    }
    let before = program_stats(child.id());
    let calls = call_getppid(Duration::from_secs_f64(seconds));
    // What the kernel side sent is drained within its 100 ms timer.
    std::thread::sleep(Duration::from_millis(300));
    let after = program_stats(child.id());
    stop_with_usage(child.id() as i32)?;
    std::thread::sleep(Duration::from_millis(200));
    let (delivered, lost) = match output {
        Output::TracerJson => {
            let summary = summary.lock().unwrap().clone();
            let json: serde_json::Value = serde_json::from_str(&summary)
                .with_context(|| format!("no summary from tracer: {summary:?}"))?;
            (
                json["events"].as_f64().unwrap_or(0.0),
                json["lost"].as_f64().unwrap_or(0.0),
            )
        }
        Output::Lines => (
            lines.load(Ordering::Relaxed) as f64,
            lost.load(Ordering::Relaxed) as f64,
        ),
    };
    let per_event = |name: &str| -> f64 {
        let (time, count) = after
            .iter()
            .filter(|(program, _)| program.starts_with(name))
            .map(|(program, (time, count))| {
                let (time0, count0) = before.get(program).copied().unwrap_or_default();
                (time - time0, count - count0)
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        time as f64 / count.max(1) as f64
    };
    let (program_ns, empty_ns) = match output {
        Output::TracerJson => (per_event("pipeline_sample"), per_event("pipeline_empty")),
        Output::Lines => (per_event(""), f64::NAN),
    };
    Ok(Run {
        calls_per_s: calls as f64 / seconds,
        delivered_per_s: delivered / seconds,
        lost_per_s: lost / seconds,
        program_ns,
        empty_ns,
    })
}

/// Calls getppid() from a thread on CPU 1 for `length`; returns how often.
fn call_getppid(length: Duration) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // SAFETY: a cpu_set_t set up with the libc macros, for this thread.
            unsafe {
                let mut cpus: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(1, &mut cpus);
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &cpus);
            }
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..1000 {
                    unsafe { libc::getppid() };
                }
                calls += 1000;
            }
            calls
        })
    };
    std::thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    caller.join().unwrap_or(0)
}
