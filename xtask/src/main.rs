//! `cargo xtask`: everything tracer needs to be set up, built, tested and measured on a fresh
//! machine, done by the project itself.

mod bench;
mod bench_compaction;
mod bench_events;
mod bench_mysql;
mod bench_pg;
mod bench_shapes;
mod bench_soak;
mod fuzz;
mod image;
mod kernels;
mod manual;
mod paired;
mod rootfs;
mod setup;
mod shell;
mod vm;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Set up, build, test and benchmark tracer")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (rust-src, bpf-linker, Debian packages); idempotent.
    Setup {
        /// Also what the end-to-end tests need.
        #[arg(long)]
        test: bool,
        /// Also the peers the benchmarks compare against.
        #[arg(long)]
        bench: bool,
    },
    /// Set up and build tracer (its kernel programs are embedded in the binary).
    Build {
        #[arg(long)]
        release: bool,
        /// A static (musl, release) binary for this architecture, e.g. aarch64 on an x86-64
        /// machine
        #[arg(long, value_enum)]
        target: Option<image::Arch>,
    },
    /// Set up, build and run tracer with the given arguments, e.g. `cargo xtask run -- direct-reclaim`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then check formatting and lints and run every test (end-to-end tests need root),
    /// then the tests that run in a guest on Debian's kernels in QEMU, less the database suites.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
        /// Instead, run the tests that can run in a guest on a Debian kernel in QEMU, the
        /// database suites included: 5.10, 6.1, 6.12, guests (those three), host (the same
        /// tests here), or all of them, and print the matrix.
        #[arg(long, value_name = "VERSION")]
        kernel: Option<String>,
    },
    /// Set up and build tracer's container image (a static binary, FROM scratch), load it into
    /// the local docker and save it to target/tracer-image.tar.
    Image,
    /// Set up, build tracer and write its man pages and shell completions (bash, zsh, fish)
    /// under DIR, as under /usr: share/man/man1, share/bash-completion/completions, ...
    Manual {
        #[arg(default_value_os_t = manual::default_prefix())]
        dir: PathBuf,
    },
    /// Fuzz the parsers that read what tenants control (libFuzzer, AddressSanitizer): each
    /// target, or the one named, replays its corpus and then runs for MINUTES.
    Fuzz {
        #[arg(long, default_value_t = 1.0)]
        minutes: f64,
        target: Option<String>,
    },
    /// Write the Prometheus Operator's PrometheusRule from deploy/prometheus/rules.yml.
    Rules,
    /// Set up and run a benchmark against peer tools.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
}

fn main() {
    if let Err(err) = run(Cli::parse().task) {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup { test, bench } => setup::run(setup::Needs {
            test,
            bench,
            image: test,
            kernels: test,
            aarch64: false,
        }),
        Task::Image => {
            setup::run(setup::Needs {
                image: true,
                ..Default::default()
            })?;
            image::build(&tracer_tests::Docker::start()).map(drop)
        }
        Task::Rules => {
            let rules = std::fs::read_to_string(tracer_tests::rules_file())?;
            let path = tracer_tests::prometheus_rule_file();
            std::fs::write(&path, tracer_tests::prometheus_rule(&rules))?;
            eprintln!("xtask: wrote {}", path.display());
            Ok(())
        }
        Task::Manual { dir } => {
            setup::run(setup::Needs::default())?;
            manual::write(&build(true)?, &dir)
        }
        Task::Build {
            target: Some(arch), ..
        } => {
            setup::run(setup::Needs {
                image: true,
                aarch64: arch == image::Arch::Aarch64,
                ..Default::default()
            })?;
            let binary = image::static_binary_for(arch)?;
            println!("{}", binary.display());
            Ok(())
        }
        Task::Build { release, .. } => {
            setup::run(setup::Needs::default())?;
            build(release).map(drop)
        }
        Task::Run { release, args } => {
            setup::run(setup::Needs::default())?;
            let tracer = build(release)?;
            shell::exec(shell::cmd(tracer).args(args))
        }
        Task::Test {
            kernel: Some(kernel),
            filter,
        } => {
            setup::run(setup::Needs {
                test: true,
                kernels: true,
                ..Default::default()
            })?;
            vm::test(&kernel, vm::Filter::All(filter.as_deref()), true)
        }
        Task::Test { filter, .. } => test(filter),
        Task::Fuzz { minutes, target } => {
            setup::run(setup::Needs::default())?;
            fuzz::run(minutes, target.as_deref())
        }
        Task::Bench { bench } => {
            setup::run(setup::Needs {
                bench: true,
                // The startup bench measures the static binary the image ships.
                image: true,
                ..Default::default()
            })?;
            if matches!(bench, bench::Bench::Mysql { .. }) {
                // Oracle MySQL beside MariaDB.
                let root = rootfs::MYSQL.tree()?;
                // SAFETY: set before any thread of ours starts.
                unsafe { std::env::set_var("TRACER_MYSQL_ROOT", root) };
            }
            let tracer = build(true)?;
            bench.run(&tracer)
        }
    }
}

/// Builds tracer and returns the path of its binary.
fn build(release: bool) -> Result<PathBuf> {
    let mut cargo = shell::cargo();
    cargo.args(["build", "--package", "tracer"]);
    if release {
        cargo.arg("--release");
    }
    shell::run(&mut cargo)?;
    let profile = if release { "release" } else { "debug" };
    Ok(shell::workspace_root()
        .join("target")
        .join(profile)
        .join("tracer"))
}

/// How long `cargo xtask test` fuzzes each target.
const FUZZ_MINUTES_IN_CI: f64 = 0.1;

fn test(filter: Option<String>) -> Result<()> {
    setup::run(setup::Needs {
        test: true,
        image: true,
        kernels: true,
        ..Default::default()
    })?;
    shell::run(shell::cargo().args(["fmt", "--all", "--", "--check"]))?;
    shell::run(shell::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The kernel programs only build for the BPF target; they read registers and system
    // calls of tracer's architecture: x86-64's and arm64's are both checked.
    for arch in ["x86_64", "aarch64"] {
        shell::run(
            shell::cargo()
                .env("RUSTC_BOOTSTRAP", "1")
                .env("AYA_BPF_TARGET_ARCH", arch)
                .args([
                    "clippy",
                    "--package",
                    "tracer-ebpf",
                    "--release",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--target-dir",
                ])
                .arg(shell::workspace_root().join("target/clippy").join(arch))
                .args(["--", "-D", "warnings"]),
        )?;
    }
    let tracer = build(false)?;
    if !shell::is_root() {
        anyhow::bail!("the end-to-end tests load eBPF programs: run `sudo cargo xtask test`");
    }
    // The container tests run the image in a docker engine that stays up while they run.
    let docker = tracer_tests::Docker::start();
    let image = image::build(&docker)?;
    // Oracle MySQL, beside Debian's MariaDB, for the mysql suite.
    let mysql_root = rootfs::MYSQL.tree()?;
    // The end-to-end tests share the machine's memory and counters: one at a time.
    let mut cargo = shell::cargo();
    cargo
        .env("TRACER_BIN", &tracer)
        .env("TRACER_IMAGE", &image)
        .env("TRACER_MYSQL_ROOT", &mysql_root)
        .args(["test", "--workspace", "--exclude", "tracer-ebpf", "--"]);
    cargo.args(&filter).arg("--test-threads=1");
    shell::run(&mut cargo)?;
    if filter.is_none() {
        // Each fuzz target replays its seeds and fuzzes a little: `cargo xtask fuzz` for long.
        fuzz::run(FUZZ_MINUTES_IN_CI, None)?;
    }
    // Then the guests' tests on Debian's kernels (5.10, 6.1, 6.12), with cgroup v2 only and
    // KVM inside (see the README's Kernels), less the database suites: under the emulator they
    // would take longer than all the rest (`--kernel all` runs them): of those, the query counts
    // on 5.10, beside the others.
    if filter.is_none() {
        vm::test_beside_databases()?;
    }
    Ok(())
}
