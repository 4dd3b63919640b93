//! `cargo xtask fuzz`: the libFuzzer targets of `tracer/fuzz/`, built the way cargo-fuzz builds
//! them (coverage instrumentation and AddressSanitizer, which RUSTC_BOOTSTRAP unlocks on the
//! stable toolchain) without needing cargo-fuzz installed, and run on a corpus seeded from
//! `tracer/fuzz/seeds/` and from this machine's own files of each kind.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::shell;

/// The host triple: naming it keeps the instrumentation off build scripts and proc macros.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What cargo-fuzz passes rustc for libFuzzer with AddressSanitizer.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Zsanitizer=address",
    "-Cdebug-assertions",
    "-Coverflow-checks",
    "--cfg=fuzzing",
];

/// How one target's run went, from libFuzzer's final statistics.
struct Run {
    target: String,
    seconds: f64,
    executions: u64,
    coverage: u64,
    features: u64,
    corpus: usize,
}

/// Fuzzes each target (or the one named) for `minutes`, after replaying its corpus; fails on
/// the first crash, hang or leak, leaving the input that caused it under target/fuzz/artifacts.
pub fn run(minutes: f64, only: Option<&str>) -> Result<()> {
    let targets = targets()?;
    let targets: Vec<&String> = match only {
        Some(name) if !targets.iter().any(|target| target == name) => {
            bail!("no fuzz target {name}: there are {}", targets.join(", "))
        }
        Some(name) => targets.iter().filter(|target| *target == name).collect(),
        None => targets.iter().collect(),
    };
    build()?;
    let mut runs = Vec::new();
    for target in targets {
        runs.push(fuzz(target, Duration::from_secs_f64(minutes * 60.0))?);
    }
    println!(
        "{:<20} {:>8} {:>12} {:>9} {:>9} {:>7}",
        "target", "seconds", "executions", "coverage", "features", "corpus"
    );
    for run in &runs {
        println!(
            "{:<20} {:>8.0} {:>12} {:>9} {:>9} {:>7}",
            run.target, run.seconds, run.executions, run.coverage, run.features, run.corpus
        );
    }
    Ok(())
}

/// The fuzz targets: the files of `tracer/fuzz/fuzz_targets/`.
fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            Some(name.strip_suffix(".rs")?.to_owned())
        })
        .collect();
    targets.sort();
    Ok(targets)
}

fn build() -> Result<()> {
    let mut cargo = shell::cargo();
    cargo
        .args(["build", "--release", "--package", "tracer-fuzz", "--bins"])
        .args(["--target", TRIPLE])
        .env("RUSTC_BOOTSTRAP", "1")
        // Linking eleven sanitized binaries with LTO took twenty minutes.
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("RUSTFLAGS", RUSTFLAGS.join(" "));
    shell::run(&mut cargo)
}

fn fuzz(target: &str, time: Duration) -> Result<Run> {
    let work = shell::workspace_root().join("target/fuzz");
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    let machine_seeds = work.join("machine-seeds").join(target);
    let seeds = fuzz_dir().join("seeds").join(target);
    for dir in [&corpus, &artifacts, &machine_seeds, &seeds] {
        std::fs::create_dir_all(dir)?;
    }
    seed_from_machine(target, &machine_seeds)?;
    let binary = shell::workspace_root()
        .join("target")
        .join(TRIPLE)
        .join("release")
        .join(target);
    let mut command = shell::cmd(&binary);
    command
        .arg(format!("-max_total_time={}", time.as_secs().max(1)))
        .arg(format!("-max_len={}", max_len(target)))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .arg(&seeds)
        .arg(&machine_seeds)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("+ {}", shell::describe(&command));
    let output = command.output().context("cannot start the fuzz target")?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // The panic's message, then libFuzzer's summary: the sanitizer's stack between them
        // is long, and the input reproduces it.
        let lines: Vec<&str> = log.lines().collect();
        let panic = lines.iter().position(|line| line.contains("panicked at"));
        let summary = lines.iter().rposition(|line| line.starts_with("SUMMARY"));
        for line in panic.map_or(&[][..], |at| &lines[at..(at + 4).min(lines.len())]) {
            eprintln!("{line}");
        }
        for line in &lines[summary.unwrap_or(lines.len().saturating_sub(20))..] {
            eprintln!("{line}");
        }
        bail!(
            "fuzz target {target} failed ({}); the input is under {}",
            output.status,
            artifacts.display()
        );
    }
    let stat = |name: &str| -> u64 {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    // The last status line: "#N DONE cov: C ft: F corp: ...".
    let status = log
        .lines()
        .rev()
        .find(|line| line.contains(" cov: "))
        .unwrap_or_default();
    let after = |key: &str| -> u64 {
        status
            .split_whitespace()
            .skip_while(|word| *word != key)
            .nth(1)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    Ok(Run {
        target: target.to_owned(),
        seconds: time.as_secs_f64(),
        executions: stat("number_of_executed_units"),
        coverage: after("cov:"),
        features: after("ft:"),
        corpus: std::fs::read_dir(&corpus)?.count(),
    })
}

/// Inputs past this are cut: the largest real inputs of each kind are far larger (a kernel's
/// BTF, a server binary), but the fuzzer learns from the structures, which small files have.
fn max_len(target: &str) -> usize {
    match target {
        "btf" | "elf" => 1 << 20,
        _ => 64 << 10,
    }
}

fn fuzz_dir() -> PathBuf {
    shell::workspace_root().join("tracer/fuzz")
}

/// Copies files of the target's kind from this machine into `dir`: tracepoint formats, mount
/// tables and cgroup files, small binaries and kernel modules' BTF.
fn seed_from_machine(target: &str, dir: &Path) -> Result<()> {
    let sources: Vec<PathBuf> = match target {
        "tracefs_format" => ["vmscan", "compaction", "writeback", "oom", "sched", "kvm"]
            .iter()
            .flat_map(|category| {
                glob_dir(&Path::new("/sys/kernel/tracing/events").join(category))
                    .into_iter()
                    .map(|event| event.join("format"))
            })
            .collect(),
        "cgroup_path" => vec![
            "/proc/self/mountinfo".into(),
            "/proc/self/cgroup".into(),
            "/proc/1/cgroup".into(),
        ],
        // The dynamic loader has USDT probes of its own.
        "elf" => [
            "/usr/bin/true",
            "/usr/bin/env",
            "/lib64/ld-linux-x86-64.so.2",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
        "btf" => glob_dir(Path::new("/sys/kernel/btf"))
            .into_iter()
            .filter(|path| path.metadata().is_ok_and(|meta| meta.len() < 64 << 10))
            .take(8)
            .collect(),
        _ => Vec::new(),
    };
    for (index, source) in sources.iter().enumerate() {
        if let Ok(bytes) = std::fs::read(source)
            && !bytes.is_empty()
        {
            std::fs::write(dir.join(format!("machine-{index}")), bytes)?;
        }
    }
    Ok(())
}

fn glob_dir(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}
