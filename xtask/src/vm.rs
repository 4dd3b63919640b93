//! `cargo xtask test --kernel VERSION`: tracer's end-to-end tests inside Debian's kernels, in
//! QEMU's emulator (this machine's KVM cannot run them), with cgroup v2 only, as Kubernetes
//! nodes run. The guest is an initramfs: busybox, the static (musl) tracer and test binaries at
//! the paths they have here (the tests find their helpers where they were built), and the
//! kernel's modules for the disk and for KVM. Scratch files go to an ext4 disk, since the tests
//! need the page cache and writeback. The guest prints each test's result on its console and
//! passes its verdict back through QEMU's debug-exit port.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{image, kernels, rootfs, shell};

/// The suites that run in a guest's initramfs.
const SUITES: &[&str] = &["cli", "direct_reclaim", "oom", "writeback", "kvm_exit"];
/// The suites that run in a guest chrooted into Debian's root with the databases
/// ([`rootfs`]), unless a run leaves the databases out.
const DATABASE_SUITES: &[&str] = &["pg", "mysql"];
/// Suites left to the host, and why.
const HOST_ONLY: &[(&str, &str)] = &[
    (
        "serve",
        "PostgreSQL, MariaDB, Python's Prometheus client, docker",
    ),
    ("containers", "docker"),
    ("alerts", "Prometheus"),
    ("web_config", "Prometheus, curl"),
    ("kubernetes", "podman, docker"),
    ("pipeline", "a second CPU to itself"),
    ("report", "Chromium, PostgreSQL"),
];
/// Tests skipped in guests, and why.
const SKIPPED: &[(&str, &str)] = &[
    (
        "mysql::servers_started_later_are_read_as_their_own_kind_by_probes",
        "servers_started_later_are_traced_side_by_side loads the same programs; two more server starts cost the emulator ~100 s",
    ),
    (
        "mysql::compaction_stalls_are_charged_to_the_query_that_compacted",
        "its server starts cost the emulator ~100 s; the engine's compaction programs are pg's and mysql's alike, and direct-reclaim's compaction test reads the same tracepoints in every guest",
    ),
    (
        "cli::completions_complete_and_man_pages_have_examples",
        "needs bash, which the busybox initramfs lacks; nothing in it depends on the kernel",
    ),
    (
        "direct_reclaim::global_stalls_match_allocstall_and_pgsteal_direct",
        "under the emulator kswapd keeps up with any reader: no global direct reclaim to count (the memcg test covers the reclaim tracepoints)",
    ),
    (
        "pg::the_breakdown_adds_up_and_shows_a_run_queue_wait_as_schedstat_does",
        "guests have one CPU: the test shares one with a busy loop and needs another, idle, for its control",
    ),
];
/// Which tests a run takes.
#[derive(Clone, Copy)]
pub enum Filter<'a> {
    /// Those matching this (all where `None`), in every suite.
    All(Option<&'a str>),
    /// These suites alone, each with its libtest arguments: names to match, `--skip NAME`.
    Suites(&'a [(&'a str, &'a str)]),
}

impl<'a> Filter<'a> {
    /// The filter of `suite`'s tests, `None` where it does not run.
    fn of(&self, suite: &str) -> Option<&'a str> {
        match self {
            Filter::All(filter) => Some(filter.unwrap_or_default()),
            Filter::Suites(suites) => suites
                .iter()
                .find(|(name, _)| *name == suite)
                .map(|(_, filter)| *filter),
        }
    }
}

/// Tools whose attach mode the report shows: the name in the report and tracer's arguments.
const TOOLS: &[(&str, &str)] = &[
    ("direct-reclaim", "direct-reclaim"),
    ("writeback", "writeback"),
    ("oom", "oom"),
    ("kvm-exit", "kvm-exit"),
];
/// The same for the database tools, run in Debian's root (`$PG_BIN` is PostgreSQL's bin
/// directory there): their probes, and the socket boundaries (or the syscall fallback).
const DATABASE_TOOLS: &[(&str, &str)] = &[
    ("pg", "pg --bin $PG_BIN/postgres"),
    (
        "mysql:socket",
        "mysql --via socket --bin /usr/sbin/mariadbd",
    ),
];
/// How each suite runs: one test at a time (they share the machine's counters), each test's
/// seconds said (an unstable option: RUSTC_BOOTSTRAP=1 where they run).
const LIBTEST_ARGS: &[&str] = &[
    "--test-threads=1",
    "--color",
    "never",
    "-Z",
    "unstable-options",
    "--report-time",
];
/// The mysql suite's tests run in CI's second database guest: about 170 of the suite's
/// 900 s in the emulator, as 5.10, 6.1 and 6.12 take 200 s less than the first database guest
/// (the guests' --report-time shows where it goes).
const MYSQL_SECOND_GUEST: [&str; 1] = ["new_connections_are_followed_on_their_way_in"];
/// How many of a run's slowest tests are named after its verdict.
const SLOWEST_SHOWN: usize = 5;
/// Longest a suite may run in a guest, and the whole guest, before they count as hung.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);
const DATABASE_SUITE_TIMEOUT: Duration = Duration::from_secs(1200);
const GUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// One kernel's run.
struct Outcome {
    name: String,
    /// suite::test -> ok, FAILED, ignored
    tests: BTreeMap<String, String>,
    /// suite::test -> its seconds (libtest's --report-time), to see where a run's time goes.
    test_seconds: BTreeMap<String, f64>,
    /// tool -> attach mode, or why it could not attach
    attach: BTreeMap<String, String>,
    passed: bool,
    seconds: f64,
    /// What the failed tests printed (libtest's `---- name stdout ----` sections).
    failures: String,
}

/// Runs the guest suites on `which` ("5.10", "6.1", "6.12", "host", "guests" for the three
/// guests, or "all" for the guests and the host) and prints a report; fails if any test failed.
/// With `databases`, the database suites too (slow under the emulator: CI leaves them out).
pub fn test(which: &str, filter: Filter, databases: bool) -> Result<()> {
    let guests = kernels::RELEASES.iter().map(|release| release.version);
    let versions: Vec<&str> = match which {
        "all" => guests.chain(["host"]).collect(),
        "guests" => guests.collect(),
        version => vec![version],
    };
    let binaries = Binaries::build(databases)?;
    let outcomes = versions
        .into_iter()
        .map(|version| {
            // Apart for the database suites, which may run beside the same kernel's others.
            let guest = match databases {
                true => format!("{version}-databases"),
                false => version.to_owned(),
            };
            run(version, &guest, &binaries, filter)
        })
        .collect::<Result<Vec<_>>>()?;
    conclude(&outcomes, databases, which == "all")
}

/// CI's guests: the three kernels without the database suites and, on 5.10, the kernel with
/// the most fallbacks (no sock tracepoints, attach cookies or bpf_task_pt_regs there), the
/// whole mysql suite (MariaDB and Oracle MySQL) and pg's query counts. Each guest has one vCPU
/// and this machine two cores: two run at once, the database guest beside 5.10, 6.1 and 6.12
/// one after another, then a second database guest with the mysql suite's
/// [`MYSQL_SECOND_GUEST`] tests, so that both end together.
pub fn test_beside_databases() -> Result<()> {
    // Built and fetched before either starts, so that neither copies what the other writes.
    let guests = Binaries::build(false)?;
    let databases = Binaries::build(true)?;
    for release in kernels::RELEASES {
        kernels::fetch(release)?;
    }
    let moved = MYSQL_SECOND_GUEST.join(" ");
    let rest = MYSQL_SECOND_GUEST
        .map(|test| format!("--skip {test}"))
        .join(" ");
    let (first, second, beside) = std::thread::scope(|scope| {
        let beside = scope.spawn(|| {
            let filter = Filter::Suites(&[("mysql", &rest), ("pg", "query_counts")]);
            run("5.10", "5.10-databases", &databases, filter)
        });
        let first = ["5.10", "6.1", "6.12"]
            .map(|version| run(version, version, &guests, Filter::All(None)));
        let filter = Filter::Suites(&[("mysql", &moved)]);
        let second = run("5.10", "5.10-databases-2", &databases, filter);
        (
            first,
            second,
            beside.join().expect("a guest's run does not panic"),
        )
    });
    let [a, b, c] = first;
    let guests_passed = conclude(&[a?, b?, c?], false, false);
    conclude(&[beside?.merge(second?)], true, false).and(guests_passed)
}

/// One kernel's run of the suites in `binaries`, in the guest `guest` (its directory under
/// target/vm), said when it ends.
fn run(version: &str, guest: &str, binaries: &Binaries, filter: Filter) -> Result<Outcome> {
    let outcome = if version == "host" {
        run_on_host(binaries, filter)?
    } else {
        let kernel = kernels::fetch(kernels::release(version)?)?;
        boot(&kernel, guest, binaries, filter)?
    };
    eprintln!(
        "kernel {}: {} in {:.0} s",
        outcome.name,
        if outcome.passed { "passed" } else { "FAILED" },
        outcome.seconds
    );
    let mut slowest: Vec<_> = outcome.test_seconds.iter().collect();
    slowest.sort_by(|a, b| b.1.total_cmp(a.1));
    for (test, seconds) in slowest.iter().take(SLOWEST_SHOWN) {
        eprintln!("  {seconds:>6.0} s  {test}");
    }
    if !outcome.passed {
        eprint!("{}", outcome.failures);
    }
    Ok(outcome)
}

/// Prints and keeps the report (in the README too for the whole matrix); fails if a test did.
fn conclude(outcomes: &[Outcome], databases: bool, whole_matrix: bool) -> Result<()> {
    let report = report(outcomes, databases);
    println!("{report}");
    let root = shell::workspace_root();
    std::fs::write(root.join("target/kernel-matrix.md"), &report)?;
    if whole_matrix {
        update_readme(&root.join("README.md"), &report)?;
    }
    if outcomes.iter().any(|outcome| !outcome.passed) {
        bail!("tests failed on a kernel: see the report above");
    }
    Ok(())
}

/// What a guest runs: the static binaries, and Debian's root for the database suites.
struct Binaries {
    tracer: PathBuf,
    /// Suite name -> test binary.
    suites: BTreeMap<String, PathBuf>,
    /// Other files the tests run (kvm-guest, prepared.pl, prepared.py).
    helpers: Vec<PathBuf>,
    /// Debian's root for the database suites, if they run, and Oracle MySQL's, as images for
    /// guests (the host's tests take its tree).
    rootfs: Option<PathBuf>,
    mysql_root: Option<(PathBuf, PathBuf)>,
}

impl Binaries {
    fn build(databases: bool) -> Result<Self> {
        let root = shell::workspace_root();
        let tracer = image::static_binary()?;
        let mut cargo = shell::cargo();
        cargo.args([
            "test",
            "--no-run",
            "--package",
            "tracer-tests",
            "--target",
            image::TARGET,
            "--message-format=json",
        ]);
        let database_suites = if databases { DATABASE_SUITES } else { &[] };
        for suite in SUITES.iter().chain(database_suites) {
            cargo.args(["--test", suite]);
        }
        let messages = shell::output(&mut cargo)?;
        let mut suites = BTreeMap::new();
        for line in messages.lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(executable), Some(name)) = (
                message["executable"].as_str(),
                message["target"]["name"].as_str(),
            ) else {
                continue;
            };
            if message["profile"]["test"] == true {
                suites.insert(name.to_owned(), PathBuf::from(executable));
            }
        }
        let mut helpers = vec![
            root.join("target")
                .join(image::TARGET)
                .join("debug/kvm-guest"),
        ];
        if databases {
            helpers.push(root.join("tests/support/prepared.pl"));
            helpers.push(root.join("tests/support/prepared.py"));
        }
        for helper in &helpers {
            if !helper.exists() {
                bail!("{} was not built", helper.display());
            }
        }
        let (rootfs, mysql_root) = if databases {
            let mysql = (rootfs::MYSQL.image()?, rootfs::MYSQL.tree()?);
            (Some(rootfs::GUEST_DATABASES.image()?), Some(mysql))
        } else {
            (None, None)
        };
        Ok(Self {
            tracer,
            suites,
            helpers,
            rootfs,
            mysql_root,
        })
    }
}

/// The guest's /init: mounts, modules, the suites, the verdict.
fn init_script(suites: &[&String], tracer: &Path, filter: Filter) -> String {
    let mut skip = String::new();
    for (test, _) in SKIPPED {
        let name = test.split_once("::").map_or(*test, |(_, name)| name);
        skip.push_str(&format!(" --skip {name}"));
    }
    let databases = suites
        .iter()
        .any(|suite| DATABASE_SUITES.contains(&suite.as_str()));
    let mut attach: Vec<String> = TOOLS
        .iter()
        .map(|(name, args)| format!("attach '{name}' $TRACER_BIN {args}"))
        .collect();
    if databases {
        attach.extend(
            DATABASE_TOOLS
                .iter()
                .map(|(name, args)| format!("attach '{name}' in_root $TRACER_BIN {args}")),
        );
    }
    let attach = attach.join("\n");
    let mut runs = Vec::new();
    for suite in suites {
        let Some(filter) = filter.of(suite) else {
            continue;
        };
        let run = if DATABASE_SUITES.contains(&suite.as_str()) {
            let limit = DATABASE_SUITE_TIMEOUT.as_secs();
            format!("run {suite} {limit} in_root /suites/{suite} {filter}{skip}")
        } else {
            let limit = SUITE_TIMEOUT.as_secs();
            format!("run {suite} {limit} /suites/{suite} {filter}{skip}")
        };
        runs.push(run);
    }
    let runs = runs.join("\n");
    let tracer = tracer.display();
    let libtest = LIBTEST_ARGS.join(" ");
    // The checkout's top directory, where the binaries are, for the database root to see.
    let top = tracer.to_string();
    let top = top.split('/').nth(1).unwrap_or_default();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
# RUSTC_BOOTSTRAP: libtest's --report-time (each test's seconds) is unstable.
export PATH=/bin:/sbin TRACER_BIN={tracer} RUSTC_BOOTSTRAP=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
# Loopback, for the databases' TCP (TLS) clients.
ip link set lo up
for module in $(cat /modules.order); do insmod $module || echo "=== insmod $module failed"; done
# Not on /tmp, which may hold the binaries (a checkout under /tmp).
mkdir -p /scratch && mount -t ext4 /dev/vda /scratch && export TMPDIR=/scratch || echo "=== no scratch disk"
# Debian's root with the databases, if given: the same mounts, binaries and scratch disk.
if [ -b /dev/vdb ]; then
    mkdir -p /root && mount -t ext4 /dev/vdb /root &&
    mount -t proc proc /root/proc && mount -o rbind /sys /root/sys && mount -o rbind /dev /root/dev &&
    mkdir -p /root/scratch /root/suites /root/{top} && mount -o bind /scratch /root/scratch &&
    mount -o bind /suites /root/suites && mount -o bind /{top} /root/{top} ||
    echo "=== no database root"
    export PG_BIN=$(ls -d /root/usr/lib/postgresql/*/bin | tail -n 1 | sed s,^/root,,)
fi
# Oracle MySQL's root, if given, inside the database root, where the mysql suite runs.
if [ -b /dev/vdc ]; then
    r=/root/mysql-root
    mkdir -p $r && mount -t ext4 /dev/vdc $r && mount -t proc proc $r/proc &&
    mount -o rbind /sys $r/sys && mount -o rbind /dev $r/dev &&
    export TRACER_MYSQL_ROOT=/mysql-root || echo "=== no MySQL root"
fi
printf '#!/bin/sh\nexec chroot /root /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"\n' > /bin/in_root
chmod +x /bin/in_root
echo "=== kernel $(uname -r)"
# kvm_amd (SVM, which the emulator offers) emits kvm:kvm_exit, unlike this project's host.
[ -e /dev/kvm ] && echo "=== kvm yes" && export TRACER_KVM_EXIT_FIRES=1 || echo "=== kvm no"
[ -d /sys/kernel/tracing/events/sock/sock_recv_length ] && echo "=== sock yes" || echo "=== sock no"
attach() {{
    name=$1; shift
    said=$(timeout -s KILL 120 "$@" -v -d 1 2>&1 >/dev/null) || {{
        # What -v said before the refusal (the verifier's log), for the console log.
        echo "$said" | tail -n 60 | while read -r line; do echo "=== refusal $name $line"; done
        said="refused: $(echo "$said" | tail -n 1 | grep . || echo no answer in 120 s)"
    }}
    echo "$said" | while read -r line; do echo "=== attach $name $line"; done
}}
{attach}
status=0
run() {{
    suite=$1; limit=$2; shift 2
    echo "=== suite $suite"
    timeout -s KILL $limit "$@" {libtest} || {{
        code=$?
        status=1
        echo "=== suite $suite ended: $code"
    }}
}}
{runs}
echo "=== verdict $status"
printf "\\$(printf %o $status)" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
"#
    )
}

/// Builds the initramfs for `kernel`.
fn initramfs(
    kernel: &kernels::Kernel,
    binaries: &Binaries,
    filter: Filter,
    dir: &Path,
) -> Result<PathBuf> {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for sub in [
        "bin", "sbin", "proc", "sys", "dev", "tmp", "suites", "modules",
    ] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    // At the paths they have here: the tests find tracer and their helpers where they were
    // built.
    for binary in [&binaries.tracer].into_iter().chain(&binaries.helpers) {
        let inside = root.join(binary.strip_prefix("/")?);
        std::fs::create_dir_all(inside.parent().unwrap())?;
        std::fs::copy(binary, &inside)?;
    }
    let mut names = Vec::new();
    for (name, binary) in &binaries.suites {
        std::fs::copy(binary, root.join("suites").join(name))?;
        names.push(name);
    }
    let mut order = String::new();
    for module in &kernel.modules {
        let name = module.file_name().unwrap();
        std::fs::copy(module, root.join("modules").join(name))?;
        order.push_str(&format!("/modules/{}\n", name.to_string_lossy()));
    }
    std::fs::write(root.join("modules.order"), order)?;
    let init = root.join("init");
    std::fs::write(&init, init_script(&names, &binaries.tracer, filter))?;
    shell::run(shell::cmd("chmod").arg("+x").arg(&init))?;
    let image = dir.join("initrd.gz");
    shell::run(shell::cmd("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio --quiet -o -H newc | gzip -1 > '{}'",
        root.display(),
        image.display()
    )))?;
    Ok(image)
}

fn boot(
    kernel: &kernels::Kernel,
    guest: &str,
    binaries: &Binaries,
    filter: Filter,
) -> Result<Outcome> {
    let dir = shell::workspace_root().join("target/vm").join(guest);
    std::fs::create_dir_all(&dir)?;
    let initrd = initramfs(kernel, binaries, filter, &dir)?;
    let disk = dir.join("scratch.img");
    let _ = std::fs::remove_file(&disk);
    shell::run(shell::cmd("truncate").args(["-s", "8G"]).arg(&disk))?;
    shell::run(shell::cmd("mkfs.ext4").args(["-q", "-F"]).arg(&disk))?;
    let console = dir.join("console.log");
    let started = Instant::now();
    eprintln!("kernel {}: booting {}", kernel.version, kernel.release);
    let mut qemu = Command::new("timeout");
    qemu.arg(GUEST_TIMEOUT.as_secs().to_string())
        .args(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max,-cx16"])
        // One vCPU: with two, the emulator let a CPU run kernel text another was patching
        // (attaching a tracepoint puts an int3 there for a moment) and the guest oopsed.
        .args(["-m", "2G", "-smp", "1", "-kernel"])
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 oops=panic quiet loglevel=1 cgroup_no_v1=all rdinit=/init",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive",
        ])
        // A disk as fast as the host's page cache never makes a writer wait for writeback;
        // 32 MiB/s is a real disk's pace.
        .arg(format!(
            "file={},format=raw,if=virtio,throttling.bps-write={}",
            disk.display(),
            32 << 20
        ))
        .arg("-serial")
        .arg(format!("file:{}", console.display()));
    // /dev/vdb and /dev/vdc; the guest's writes go to a throwaway overlay.
    let mysql_root = binaries.mysql_root.as_ref().map(|(image, _)| image);
    for root in binaries.rootfs.iter().chain(mysql_root) {
        qemu.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            root.display()
        ));
    }
    let status = qemu
        .status()
        .context("qemu-system-x86_64 (cargo xtask setup --matrix)")?;
    let _ = std::fs::remove_file(&disk);
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    // The guest writes its status N to the debug-exit port, and QEMU exits with (N << 1) | 1;
    // its console says it too.
    let said = log.lines().find_map(|line| {
        line.trim()
            .strip_prefix("=== verdict ")?
            .parse::<i32>()
            .ok()
    });
    let verdict = match status.code() {
        Some(code) if code & 1 == 1 => Some(code >> 1),
        _ => said,
    };
    let mut outcome = parse(&format!("{} ({})", kernel.version, kernel.release), &log);
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome.passed = verdict == Some(0) && !outcome.tests.is_empty();
    if verdict.is_none() {
        eprintln!(
            "kernel {}: no verdict from the guest (qemu: {status}); its console: {}",
            kernel.version,
            console.display()
        );
    }
    Ok(outcome)
}

/// The same suites on the running kernel, for the report's last column.
fn run_on_host(binaries: &Binaries, filter: Filter) -> Result<Outcome> {
    let started = Instant::now();
    let mut log = format!(
        "=== kernel {}\n",
        shell::output(Command::new("uname").arg("-r"))?
    );
    log += &format!(
        "=== kvm {}\n=== sock {}\n",
        if Path::new("/dev/kvm").exists() {
            "yes"
        } else {
            "no"
        },
        if Path::new("/sys/kernel/tracing/events/sock/sock_recv_length").exists() {
            "yes"
        } else {
            "no"
        }
    );
    let pg_bin = shell::output(
        Command::new("sh").args(["-c", "ls -d /usr/lib/postgresql/*/bin | tail -n 1"]),
    )
    .unwrap_or_default();
    let database_tools = if binaries.rootfs.is_some() {
        DATABASE_TOOLS
    } else {
        &[]
    };
    for (tool, args) in TOOLS.iter().chain(database_tools) {
        let args = args.replace("$PG_BIN", pg_bin.trim());
        let output = Command::new(&binaries.tracer)
            .args(args.split_whitespace())
            .args(["-v", "-d", "1"])
            .output()?;
        let said = String::from_utf8_lossy(&output.stderr);
        for line in said.lines() {
            log += &format!("=== attach {tool} {line}\n");
        }
        if !output.status.success() {
            let last = said.lines().last().unwrap_or_default();
            log += &format!("=== attach {tool} refused: {last}\n");
        }
    }
    let mut passed = true;
    for (name, binary) in &binaries.suites {
        let Some(filter) = filter.of(name) else {
            continue;
        };
        log += &format!("=== suite {name}\n");
        let output = Command::new(binary)
            .args(LIBTEST_ARGS)
            .args(filter.split_whitespace())
            .env("RUSTC_BOOTSTRAP", "1")
            .env("TRACER_BIN", &binaries.tracer)
            .envs(
                binaries
                    .mysql_root
                    .as_ref()
                    .map(|(_, tree)| ("TRACER_MYSQL_ROOT", tree)),
            )
            .output()?;
        passed &= output.status.success();
        log += &String::from_utf8_lossy(&output.stdout);
    }
    let mut outcome = parse("host", &log);
    outcome.name = format!("host ({})", outcome.name.trim());
    outcome.passed = passed;
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

impl Outcome {
    /// One kernel's outcome from two guests that each ran some of its tests.
    fn merge(mut self, other: Outcome) -> Outcome {
        self.tests.extend(other.tests);
        self.test_seconds.extend(other.test_seconds);
        for (tool, mode) in other.attach {
            self.attach.entry(tool).or_insert(mode);
        }
        self.passed &= other.passed;
        self.seconds += other.seconds;
        self.failures += &other.failures;
        self
    }
}

/// Reads a run's console: its kernel, test results and attach modes.
fn parse(name: &str, log: &str) -> Outcome {
    let mut outcome = Outcome {
        name: name.to_owned(),
        tests: BTreeMap::new(),
        test_seconds: BTreeMap::new(),
        attach: BTreeMap::new(),
        passed: false,
        seconds: 0.0,
        failures: String::new(),
    };
    let mut suite = String::new();
    let mut in_failure = false;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("---- ") && line.ends_with(" stdout ----") {
            in_failure = true;
            outcome.failures += &format!("[{suite}] ");
        } else if line.starts_with("failures:") || line.starts_with("=== ") {
            in_failure = false;
        }
        if in_failure {
            outcome.failures += line;
            outcome.failures.push('\n');
        }
        if let Some(kernel) = line.strip_prefix("=== kernel ") {
            if name == "host" {
                outcome.name = kernel.to_owned();
            }
        } else if let Some(name) = line.strip_prefix("=== suite ") {
            suite = name.to_owned();
        } else if let Some(rest) = line.strip_prefix("=== attach ") {
            let (tool, message) = rest.split_once(' ').unwrap_or((rest, ""));
            let mode = attach_mode(tool, message);
            let entry = outcome.attach.entry(tool.to_owned()).or_default();
            if let Some(mode) = mode
                && !entry.contains(&mode)
            {
                if !entry.is_empty() {
                    entry.push_str(" + ");
                }
                entry.push_str(&mode);
            }
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some((test, result)) = rest.rsplit_once(" ... ")
        {
            let test = format!("{suite}::{test}");
            // "ok <12.345s>" with --report-time.
            let (result, seconds) = result.split_once(" <").unwrap_or((result, ""));
            if let Ok(seconds) = seconds.trim_end_matches("s>").parse() {
                outcome.test_seconds.insert(test.clone(), seconds);
            }
            outcome.tests.insert(test, result.trim().to_owned());
        }
    }
    outcome
}

/// What a line of `tracer TOOL -v` says about how it attached.
fn attach_mode(tool: &str, line: &str) -> Option<String> {
    // The database tools attach the reclaim tracepoints too; their row is about the queries.
    let database_tool = DATABASE_TOOLS.iter().any(|(name, _)| *name == tool);
    let line = line.strip_prefix("tracer: ").unwrap_or(line);
    if database_tool && line.starts_with("vmscan:") {
        None
    } else if line.contains(": BTF tracepoint") {
        Some("tp_btf".into())
    } else if line.starts_with("syscalls:") && line.contains(": classic tracepoint") {
        Some("syscall fallback".into())
    } else if line.contains(": classic tracepoint") {
        Some("classic".into())
    } else if line.starts_with("postgresql:") && line.contains(" at 0x") {
        Some("USDT".into())
    } else if line.contains("no attach cookies") {
        Some("a program per site".into())
    } else if line.contains("no bpf_task_pt_regs") {
        Some("registers from the task's stack".into())
    } else if line.contains(" at 0x") && line.contains(", entry") {
        Some("uprobe".into())
    } else if line.starts_with("refused: ") {
        Some(line.replace("refused: tracer: ", "refused: "))
    } else {
        None
    }
}

/// The README's matrix is this run's report, between its markers.
fn update_readme(readme: &Path, report: &str) -> Result<()> {
    const START: &str = "<!-- kernel-matrix: written by cargo xtask test --kernel all -->\n";
    const END: &str = "<!-- kernel-matrix end -->";
    let text = std::fs::read_to_string(readme)?;
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        bail!("README.md has no kernel-matrix markers");
    };
    let updated = format!("{}{START}{report}{}", &text[..start], &text[end..]);
    std::fs::write(readme, updated)?;
    Ok(())
}

/// The report: a table of tools' attach modes and one of test results, kernel by kernel.
fn report(outcomes: &[Outcome], databases: bool) -> String {
    let mut out = String::new();
    let header = |out: &mut String, first: &str| {
        out.push_str(&format!("| {first} |"));
        for outcome in outcomes {
            out.push_str(&format!(" {} |", outcome.name));
        }
        out.push('\n');
        out.push_str(&"|---".repeat(outcomes.len() + 1));
        out.push_str("|\n");
    };
    header(&mut out, "tool: attach mode");
    let database_tools = if databases { DATABASE_TOOLS } else { &[] };
    for (tool, _) in TOOLS.iter().chain(database_tools) {
        out.push_str(&format!("| `{tool}` |"));
        for outcome in outcomes {
            let mode = outcome.attach.get(*tool).map_or("-", String::as_str);
            out.push_str(&format!(" {mode} |"));
        }
        out.push('\n');
    }
    out.push('\n');
    header(&mut out, "test");
    let tests: std::collections::BTreeSet<&String> = outcomes
        .iter()
        .flat_map(|outcome| outcome.tests.keys())
        .collect();
    for test in tests {
        out.push_str(&format!("| `{test}` |"));
        for outcome in outcomes {
            let skipped = SKIPPED.iter().any(|(name, _)| name == test);
            let result = match outcome.tests.get(test) {
                Some(result) => result.as_str(),
                None if skipped && !outcome.name.starts_with("host") => "skipped",
                None => "not run",
            };
            out.push_str(&format!(" {result} |"));
        }
        out.push('\n');
    }
    out.push_str("| wall time |");
    for outcome in outcomes {
        out.push_str(&format!(" {:.0} s |", outcome.seconds));
    }
    out.push('\n');
    let left_out = DATABASE_SUITES
        .iter()
        .filter(|_| !databases)
        .map(|suite| (*suite, "left out of this run: CI's subset"));
    let host_only: Vec<String> = left_out
        .chain(HOST_ONLY.iter().copied())
        .map(|(suite, needs)| format!("`{suite}` ({needs})"))
        .collect();
    out.push_str(&format!(
        "\nNot run in guests, for what they need: {}.\n",
        host_only.join(", ")
    ));
    for (test, why) in SKIPPED {
        out.push_str(&format!("Skipped in guests: `{test}`: {why}.\n"));
    }
    out
}
