//! Helpers for tracer's end-to-end tests: run tracer, cause real kernel events, read the kernel's
//! own counters. Everything a test changes on the machine is put back when its guard drops.

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
};

pub use serde_json::Value as Json;

/// The tracer binary under test: `TRACER_BIN` (set by `cargo xtask test`), else the debug build.
pub fn tracer_bin() -> PathBuf {
    std::env::var_os("TRACER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tracer"))
}

pub fn tracer() -> Command {
    Command::new(tracer_bin())
}

/// A tracer started in the background, attached once it has said so on stderr.
pub struct Tracer {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Lines read from stderr so far: up to and including the "Tracing..." banner, and those
    /// [`Self::stderr_line`] went through.
    seen: Vec<String>,
}

/// What a stopped tracer printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Tracer {
    /// Starts `tracer ARGS` and waits until its probes are attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_command(tracer().args(args))
    }

    /// Starts a command that runs tracer (under unshare, say) and waits until it is attached.
    pub fn start_command(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracer");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let mut tracer = Self {
            child,
            stdout,
            stderr,
            seen: Vec::new(),
        };
        tracer.wait_until_attached(&format!("{command:?}"));
        tracer
    }

    fn wait_until_attached(&mut self, command: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let attached = line.starts_with("Tracing");
                    self.seen.push(line);
                    if attached {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.child.kill();
        panic!("{command} did not attach: {:?}", self.seen);
    }

    /// The next line on stderr that `wanted` takes, if one comes within `limit`.
    pub fn stderr_line(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = self.stderr.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if wanted(&line) {
                return Some(line);
            }
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` and collects everything tracer printed.
    pub fn stop_with(mut self, signal: libc::c_int) -> Finished {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        Finished {
            status,
            stdout: self.stdout.iter().collect::<Vec<_>>().join("\n"),
            stderr: std::mem::take(&mut self.seen)
                .into_iter()
                .chain(self.stderr.iter())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Ctrl-C.
    pub fn stop(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for tracer") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tracer did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Finished {
    /// Asserts tracer exited by itself with status 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "tracer failed: {self:#?}");
        self
    }

    /// Every stdout line parsed as JSON.
    pub fn json_lines(&self) -> Vec<Json> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}\n{self:#?}"))
            })
            .collect()
    }

    /// The JSON lines whose `type` is `kind`.
    pub fn json_of_type(&self, kind: &str) -> Vec<Json> {
        self.json_lines()
            .into_iter()
            .filter(|line| line["type"] == kind)
            .collect()
    }
}

/// The one summary of a `--json` run that ended by itself, or fails the test.
pub fn summary(finished: &Finished) -> Json {
    finished.assert_success();
    let summaries = finished.json_of_type("summary");
    assert_eq!(summaries.len(), 1, "one summary expected: {finished:#?}");
    summaries[0].clone()
}

/// The entry of a normalized query in a per-query tool's summary, or fails the test.
pub fn query_entry<'a>(summary: &'a Json, text: &str) -> &'a Json {
    query_entry_if_any(summary, text)
        .unwrap_or_else(|| panic!("{text:?} not among {:#}", summary["queries"]))
}

/// Calls of a query text across every row it has (rows are per database and user, as
/// pg_stat_statements' are), 0 for a text tracer never saw.
pub fn query_calls(summary: &Json, text: &str) -> u64 {
    summary["queries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["query"] == text)
        .map(|entry| entry["calls"].as_u64().unwrap())
        .sum()
}

/// The rows of a query text as (database, user, calls), `?` for a name not known, sorted.
pub fn client_rows(summary: &Json, text: &str) -> Vec<(String, String, u64)> {
    let mut rows: Vec<(String, String, u64)> = (summary["queries"].as_array().unwrap().iter())
        .filter(|row| row["query"] == text)
        .map(|row| {
            let name = |field: &str| row[field].as_str().unwrap_or("?").to_owned();
            (
                name("database"),
                name("user"),
                row["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Writes `mib` MiB of zeros to `file` with O_DIRECT, so that none of it is in the page cache:
/// whoever reads it first has its pages charged to them.
pub fn write_uncached(file: &Path, mib: u64) {
    run(Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "oflag=direct", "status=none"])
        .arg(format!("count={mib}"))
        .arg(format!("of={}", file.display())));
}

/// The same, `None` for a query the summary does not have.
pub fn query_entry_if_any<'a>(summary: &'a Json, text: &str) -> Option<&'a Json> {
    summary["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["query"] == text)
}

/// Runs tracer to completion (for inputs it must reject).
pub fn run_tracer(args: &[&str], configure: impl FnOnce(&mut Command)) -> Finished {
    let mut command = tracer();
    command.args(args);
    configure(&mut command);
    command.output().expect("run tracer").into()
}

impl From<std::process::Output> for Finished {
    fn from(output: std::process::Output) -> Self {
        Self {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// The fields of /proc/PID/stat after the parenthesized comm (which may hold spaces), so that
/// field N of proc_pid_stat(5) is at index N - 3; empty when the process is gone.
pub fn proc_stat(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.to_owned()))
        .map(|fields| fields.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// `/proc/PID/schedstat`: time on a CPU, time runnable waiting for one (both ns), timeslices.
pub fn proc_schedstat(pid: &str) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect()
}

/// Runs tracer and asserts it refused with exactly one line on stderr mentioning `expected`.
pub fn assert_refused(
    args: &[&str],
    configure: impl FnOnce(&mut Command),
    expected: &str,
) -> Finished {
    assert_one_line_refusal(&format!("{args:?}"), run_tracer(args, configure), expected)
}

/// Asserts that a finished tracer (run as `what`) refused with exactly one line on stderr
/// mentioning `expected`.
pub fn assert_one_line_refusal(what: &str, finished: Finished, expected: &str) -> Finished {
    assert!(
        !finished.status.success(),
        "{what} succeeded: {finished:#?}"
    );
    assert!(
        finished.status.code().is_some(),
        "{what} died of a signal: {finished:#?}"
    );
    let stderr = finished.stderr.trim_end();
    assert_eq!(
        stderr.lines().count(),
        1,
        "{what} printed more than one line:\n{stderr}"
    );
    assert!(stderr.starts_with("tracer: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "{what}: expected {expected:?} in {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        finished.stdout.is_empty(),
        "{what} printed to stdout: {}",
        finished.stdout
    );
    finished
}

/// /proc/vmstat counters.
pub fn vmstat() -> HashMap<String, u64> {
    std::fs::read_to_string("/proc/vmstat")
        .expect("read /proc/vmstat")
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of the counters whose name starts with `prefix`, e.g. `allocstall_`.
pub fn vmstat_sum(counters: &HashMap<String, u64>, prefix: &str) -> u64 {
    counters
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, value)| value)
        .sum()
}

/// A process's `/proc/PID/status` field in KiB (`VmHWM`: its peak RSS).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

pub fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/meminfo"))
}

/// Global direct reclaim on purpose: a sparse file is read (page cache, no disk I/O) while huge
/// pages hold all but 2 GiB of memory (a quarter of a small machine's), so the reader must
/// reclaim page cache to go on. Returns the reader's pid; every setting is back when it
/// returns. (Under QEMU's emulator kswapd keeps up with the reader: the kernel matrix skips the
/// test that needs this.)
pub fn cause_global_reclaim() -> u32 {
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    let free_kib = meminfo_kib("MemFree:");
    let huge_pages = (free_kib - (2 << 20).min(free_kib / 4)) / 2048;
    let _reserved = Sysctl::set("vm.nr_hugepages", &huge_pages.to_string());
    // Two and a half times what is left free.
    let left_kib = meminfo_kib("MemFree:");
    let scratch = Scratch::new("sparse");
    let sparse = scratch.file("sparse");
    run(Command::new("truncate").args(["-s", &format!("{}K", left_kib * 5 / 2), &sparse]));
    let mut reader = Command::new("sh")
        .args(["-c", &format!("exec cat {sparse} > /dev/null")])
        .spawn()
        .unwrap();
    let pid = reader.id();
    assert!(reader.wait().unwrap().success());
    pid
}

/// `len` bytes of private anonymous memory with `advice` (`MADV_HUGEPAGE` or not), or `None`
/// where mmap refuses.
pub fn map_anonymous(len: usize, advice: libc::c_int) -> Option<*mut u8> {
    // SAFETY: a fresh private mapping, handed to the caller to unmap.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if at == libc::MAP_FAILED {
            return None;
        }
        libc::madvise(at, len, advice);
        Some(at.cast())
    }
}

/// Memory fragmented as a long-running process leaves it: two mappings touched page by page in
/// turn, one of them then unmapped, so the free memory it leaves is all single pages between
/// the other's (no swap: they cannot be reclaimed, only moved). Unmapped on drop.
pub struct Fragmented {
    kept: *mut u8,
    len: usize,
}

impl Fragmented {
    /// Each over 40% of free memory (4 GiB at most). A sixth was not enough: a 6.12 guest then
    /// found its huge pages without compacting.
    pub fn new() -> Self {
        std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = ((meminfo_kib("MemFree:") * 2 / 5).min(4 << 20) as usize * 1024) / page * page;
        let map = || map_anonymous(len, libc::MADV_NOHUGEPAGE).expect("mmap");
        let (kept, unmapped) = (map(), map());
        for offset in (0..len).step_by(page) {
            unsafe {
                kept.add(offset).write_volatile(1);
                unmapped.add(offset).write_volatile(1);
            }
        }
        unsafe { libc::munmap(unmapped.cast(), len) };
        Self { kept, len }
    }
}

impl Default for Fragmented {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Fragmented {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.kept.cast(), self.len) };
    }
}

/// Direct compaction on purpose: memory [`Fragmented`], then huge pages asked for past the free
/// memory still in whole blocks, so that the asking task must move the kept pages to get them.
/// Returns that task's pid; the huge pages are given back when it returns.
///
/// It asks again and again, as a pool resized by a job would be: the pool stops growing at its
/// first failed allocation, and a zone where compaction failed lately is deferred (skipped
/// without running) for up to 64 tries after, so that one ask may make deferred tries alone.
pub fn cause_direct_compaction() -> u32 {
    let _fragmented = Fragmented::new();
    let huge_pages = meminfo_kib("MemFree:") * 9 / 10 / meminfo_kib("Hugepagesize:");
    let _given_back = Sysctl::set("vm.nr_hugepages", "0");
    let mut asker = Command::new("sh")
        .args([
            "-c",
            &format!(
                "for ask in $(seq 66); do echo {huge_pages} > /proc/sys/vm/nr_hugepages; done"
            ),
        ])
        .spawn()
        .unwrap();
    let pid = asker.id();
    assert!(asker.wait().unwrap().success());
    pid
}

/// Memory in which a task's huge-page faults compact: [`Fragmented`], its whole free blocks
/// held by a huge page pool, and transparent huge pages on and defragmented by the faulting
/// task (`defrag=always`, as many databases' hosts have it). Put back on drop.
pub struct CompactingFaults {
    _settings: [Sysctl; 3],
    _fragmented: Fragmented,
}

impl CompactingFaults {
    pub fn new() -> Self {
        let fragmented = Fragmented::new();
        let huge_pages = meminfo_kib("MemFree:") * 9 / 10 / meminfo_kib("Hugepagesize:");
        let pool = Sysctl::set("vm.nr_hugepages", &huge_pages.to_string());
        let thp = Path::new("/sys/kernel/mm/transparent_hugepage");
        Self {
            // In this order, so that the pool goes first on drop.
            _settings: [
                pool,
                Sysctl::write(thp.join("enabled"), "always"),
                Sysctl::write(thp.join("defrag"), "always"),
            ],
            _fragmented: fragmented,
        }
    }
}

impl Default for CompactingFaults {
    fn default() -> Self {
        Self::new()
    }
}

/// log2 of the huge page size in pages: the order of the allocations
/// [`cause_direct_compaction`] makes.
pub fn huge_page_order() -> u64 {
    let page_kib = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024;
    (meminfo_kib("Hugepagesize:") / page_kib)
        .trailing_zeros()
        .into()
}

/// A cgroup the test owns, removed (after its tasks are killed) on drop.
pub struct Cgroup {
    pub path: PathBuf,
}

/// Whether the machine has cgroup v2 only (a Kubernetes node, the test kernels' guests) rather
/// than v1's memory controller beside a v2 hierarchy without it (this project's test machine).
pub fn cgroup_v2_only() -> bool {
    !Path::new("/sys/fs/cgroup/memory").is_dir()
        && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

impl Cgroup {
    /// `/sys/fs/cgroup/<controller>/<name>` in a cgroup v1 hierarchy, or in the v2 hierarchy
    /// with `controller = "unified"` (wherever it is mounted).
    pub fn create(controller: &str, name: &str) -> Self {
        let mut root = Path::new("/sys/fs/cgroup").join(controller);
        if controller == "unified" && cgroup_v2_only() {
            root = PathBuf::from("/sys/fs/cgroup");
        }
        assert!(root.is_dir(), "no cgroup hierarchy at {}", root.display());
        let path = root.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self { path }
    }

    /// A memory cgroup limited to `limit` (as "64M", or "max" for none): in cgroup v1's memory
    /// hierarchy, or with
    /// cgroup v2 only, in the v2 hierarchy with the memory controller enabled.
    pub fn memory(name: &str, limit: &str) -> Self {
        if cgroup_v2_only() {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
            let cgroup = Self::create("unified", name);
            cgroup.set("memory.max", limit);
            // As v1 without swap: no swapping out instead of reclaim or an OOM kill.
            let _ = std::fs::write(cgroup.path.join("memory.swap.max"), "0");
            cgroup
        } else {
            let cgroup = Self::create("memory", name);
            if limit != "max" {
                cgroup.set("memory.limit_in_bytes", limit);
            }
            cgroup
        }
    }

    /// The memory charged to it now (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub fn memory_usage(&self) -> u64 {
        ["memory.usage_in_bytes", "memory.current"]
            .iter()
            .find_map(|file| self.read(file).trim().parse().ok())
            .expect("a memory cgroup")
    }

    /// Limits it to `bytes`.
    pub fn limit_memory(&self, bytes: u64) {
        let file = match cgroup_v2_only() {
            true => "memory.max",
            false => "memory.limit_in_bytes",
        };
        self.set(file, &bytes.to_string());
    }

    /// OOM kills in it so far (v1 `memory.oom_control`, v2 `memory.events`).
    pub fn oom_kills(&self) -> u64 {
        ["memory.oom_control", "memory.events"]
            .iter()
            .flat_map(|file| {
                self.read(file)
                    .lines()
                    .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
            })
            .next()
            .unwrap_or(0)
    }

    /// Charges that found it at its limit so far, each of which made it reclaim (v1
    /// `memory.failcnt`, v2 `memory.events`' `max`).
    pub fn limit_hits(&self) -> u64 {
        match cgroup_v2_only() {
            true => (self.read("memory.events").lines())
                .find_map(|line| line.strip_prefix("max ")?.trim().parse().ok())
                .unwrap_or(0),
            false => self.read("memory.failcnt").trim().parse().unwrap_or(0),
        }
    }

    pub fn set(&self, file: &str, value: &str) {
        std::fs::write(self.path.join(file), value)
            .unwrap_or_else(|err| panic!("write {value} to {file}: {err}"));
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path.join(file)).unwrap_or_default()
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The id tracer reports for it: its directory's inode number.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).unwrap().ino()
    }

    /// Its path as tracer prints it: relative to the hierarchy's mount.
    pub fn relative(&self) -> String {
        format!("/{}", self.path.file_name().unwrap().to_str().unwrap())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for pid in self.read("cgroup.procs").lines() {
            // Quietly: a process gone meanwhile would print into the guests' result lines.
            let _ = Command::new("kill")
                .args(["-9", pid])
                .stderr(Stdio::null())
                .status();
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove {}", self.path.display());
    }
}

/// Runs `sh -c SCRIPT` inside the given cgroups (it joins them before running the script).
pub fn sh_in(cgroups: &[&Cgroup], script: &str) -> Command {
    let joins: String = cgroups
        .iter()
        .map(|cgroup| {
            let path = cgroup.path.display().to_string().replace('\'', "'\\''");
            format!("echo $$ > '{path}/cgroup.procs'; ")
        })
        .collect();
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!("{joins}{script}"));
    command
}

/// Runs to completion, failing the test unless it exits 0.
pub fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A scratch directory on a disk-backed filesystem, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self { dir }
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A sysctl set for the test's duration and restored on drop.
pub struct Sysctl {
    path: PathBuf,
    saved: String,
}

impl Sysctl {
    pub fn set(name: &str, value: &str) -> Self {
        Self::write(Path::new("/proc/sys").join(name.replace('.', "/")), value)
    }

    /// Any such knob by its path (a module's parameter), put back on drop.
    pub fn write(path: PathBuf, value: &str) -> Self {
        let saved = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        // A choice among several shows as "always [madvise] never".
        let saved = match saved
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
        {
            Some((chosen, _)) => chosen.to_owned(),
            None => saved,
        };
        std::fs::write(&path, value)
            .unwrap_or_else(|err| panic!("set {}={value}: {err}", path.display()));
        Self { path, saved }
    }
}

/// A swap area on a loop device over a scratch file, switched off and removed on drop; with
/// zswap off meanwhile (it keeps swapped pages in memory: no I/O to count).
pub struct SwapDevice {
    pub device: String,
    _zswap: Option<Sysctl>,
    _file: Scratch,
}

impl SwapDevice {
    pub fn on(mib: u64) -> Self {
        let file = Scratch::new("swap");
        let image = file.dir.join("swap.img");
        // Options busybox (the guests') and util-linux share.
        run(Command::new("truncate")
            .arg(format!("-s{mib}M"))
            .arg(&image));
        let output = Command::new("losetup").arg("-f").output().expect("losetup");
        assert!(output.status.success(), "losetup: {output:?}");
        let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        run(Command::new("losetup").arg(&device).arg(&image));
        let zswap = Path::new("/sys/module/zswap/parameters/enabled");
        let swap = Self {
            device,
            _zswap: zswap.exists().then(|| Sysctl::write(zswap.into(), "N")),
            _file: file,
        };
        run(Command::new("mkswap")
            .arg(&swap.device)
            .stdout(std::process::Stdio::null()));
        run(Command::new("swapon").arg(&swap.device));
        swap
    }
}

impl Drop for SwapDevice {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.device).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, self.saved.trim());
    }
}

/// Ids of the BPF programs and links loaded in the kernel right now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfObjects {
    pub programs: BTreeSet<(u32, String)>,
    pub links: BTreeSet<u32>,
}

impl BpfObjects {
    pub fn now() -> Self {
        Self {
            programs: aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .map(|info| (info.id(), info.name_as_str().unwrap_or("").to_owned()))
                .collect(),
            links: aya::programs::loaded_links()
                .filter_map(Result::ok)
                .map(|info| info.id())
                .collect(),
        }
    }

    /// What is loaded now and was not in `before`.
    pub fn since(before: &Self) -> Self {
        let now = Self::now();
        Self {
            programs: now.programs.difference(&before.programs).cloned().collect(),
            links: now.links.difference(&before.links).copied().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.links.is_empty()
    }

    /// What is still loaded of what was not in `before`, after the kernel has had up to 5 s
    /// to free it (it frees programs after an RCU grace period).
    pub fn left_since(before: &Self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = Self::since(before);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A PostgreSQL server of the test's own: a fresh cluster on a private port and socket
/// directory, with pg_stat_statements, stopped and removed on drop.
pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    /// The server binary: Debian's, or a copy of the server's own.
    server: PathBuf,
}

impl Postgres {
    /// The newest PostgreSQL installed from Debian's packages.
    pub fn bin_dir() -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (cargo xtask setup --test)")
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("postgres").exists())
            .collect();
        versions.sort();
        versions.pop().expect("a PostgreSQL server binary")
    }

    pub fn start(name: &str) -> Self {
        Self::start_from(name, false, false)
    }

    /// A server running a copy of the binary: uprobes attached to it (they belong to the file)
    /// leave servers running Debian's own untouched.
    pub fn start_own_binary(name: &str) -> Self {
        Self::start_from(name, true, false)
    }

    /// A server that also takes TLS connections on 127.0.0.1 (see [`Self::psql_over_tls`]),
    /// with a self-signed certificate.
    pub fn start_tls(name: &str) -> Self {
        Self::start_from(name, false, true)
    }

    fn start_from(name: &str, own_binary: bool, tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("chown").arg("postgres").arg(&dir));
        let port = 40000 + (std::process::id() % 10000) as u16 + name.len() as u16;
        let bin = Self::bin_dir();
        let mut server = bin.join("postgres");
        if own_binary {
            let copy = dir.join("postgres");
            std::fs::copy(&server, &copy).unwrap();
            server = copy;
        }
        let server = Self {
            dir,
            port,
            bin,
            server,
        };
        server.as_postgres(
            "initdb",
            &["-A", "trust", "-U", "postgres", "-D", &server.data()],
        );
        let mut options = format!(
            "-p {port} -k {} -c shared_preload_libraries=pg_stat_statements -c fsync=off",
            server.dir.display()
        );
        if tls {
            let (cert, key) = self_signed_certificate(&server.dir);
            run(Command::new("chown").arg("postgres").arg(&cert).arg(&key));
            options += &format!(
                " -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            );
        } else {
            options += " -c listen_addresses=''";
        }
        let log = server.dir.join("log");
        let data = server.data();
        server.as_postgres(
            "pg_ctl",
            &[
                "-p",
                server.server.to_str().unwrap(),
                "-D",
                &data,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        server.psql("CREATE EXTENSION pg_stat_statements");
        server
    }

    pub fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_owned()
    }

    /// A file of `mib` MiB of zeros the server may read, written with O_DIRECT so that none of
    /// it is in the page cache yet.
    pub fn uncached_file(&self, name: &str, mib: u64) -> PathBuf {
        let file = self.dir.join(name);
        write_uncached(&file, mib);
        run(Command::new("chown").arg("postgres").arg(&file));
        file
    }

    /// A query that reads `file` (of 128 MiB) in 1 MiB pieces and returns its length.
    pub fn read_in_pieces(file: &Path) -> String {
        format!(
            "SELECT sum(length(pg_read_binary_file('{}', piece * 1048576, 1048576))) FROM generate_series(0, 127) piece",
            file.display()
        )
    }

    fn as_postgres(&self, program: &str, args: &[&str]) {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        let pidfile = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap();
        pidfile.lines().next().unwrap().trim().parse().unwrap()
    }

    pub fn binary(&self) -> PathBuf {
        self.server.clone()
    }

    /// Connection arguments for psql and pgbench.
    pub fn connection(&self) -> Vec<String> {
        self.connection_as("postgres", "postgres")
    }

    /// Connection arguments for `user`, to `database`.
    pub fn connection_as(&self, user: &str, database: &str) -> Vec<String> {
        [
            "-h",
            self.dir.to_str().unwrap(),
            "-p",
            &self.port.to_string(),
            "-U",
            user,
            database,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Like [`Self::psql`], as `user` in `database`.
    pub fn psql_as(&self, user: &str, database: &str, sql: &str) -> String {
        self.psql_on(&self.connection_as(user, database), sql)
    }

    /// Like [`Self::session`], as `user` in `database`.
    pub fn session_as(&self, user: &str, database: &str) -> SqlSession {
        self.session_on(&self.connection_as(user, database))
    }

    /// Runs SQL through psql in a session of its own (simple protocol); returns its output rows.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on(&self.connection(), sql)
    }

    /// Like [`Self::psql`], over a TLS connection to a server started with
    /// [`Self::start_tls`].
    pub fn psql_over_tls(&self, sql: &str) -> String {
        self.psql_on(&[self.tls_conninfo()], sql)
    }

    fn tls_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
            self.port
        )
    }

    /// Like [`Self::pgbench`], over TLS connections.
    pub fn pgbench_over_tls(&self, args: &[&str]) -> String {
        pgbench_output(self.pgbench_on(&[self.tls_conninfo()], args), args)
    }

    /// psql running the file at `path`, statement by statement.
    pub fn psql_file(&self, path: &Path) {
        let output = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(self.connection())
            .arg("-f")
            .arg(path)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql -f {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn psql_on(&self, connection: &[String], sql: &str) -> String {
        let output = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(connection)
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// pgbench with the given arguments.
    pub fn pgbench(&self, args: &[&str]) -> String {
        pgbench_output(self.pgbench_command(args), args)
    }

    /// pgbench with the given arguments, to be run by the caller.
    pub fn pgbench_command(&self, args: &[&str]) -> Command {
        self.pgbench_on(&self.connection(), args)
    }

    fn pgbench_on(&self, connection: &[String], args: &[&str]) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pgbench"))
            .args(args)
            .args(connection);
        command
    }

    /// A psql session kept open, for queries that must share a backend.
    pub fn session(&self) -> SqlSession {
        self.session_on(&self.connection())
    }

    /// A psql session over TLS (see [`Self::psql_over_tls`]).
    pub fn session_over_tls(&self) -> SqlSession {
        self.session_on(&[self.tls_conninfo()])
    }

    fn session_on(&self, connection: &[String]) -> SqlSession {
        SqlSession::spawn(
            Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(connection),
        )
    }

    /// `calls` of pg_stat_statements entries whose query text matches `pattern` (LIKE).
    pub fn statement_calls(&self, pattern: &str) -> u64 {
        let sql = format!(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '{}'",
            pattern.replace('\'', "''")
        );
        self.psql(&sql).parse().unwrap()
    }

    /// `calls` of pg_stat_statements entries whose query text matches `pattern` (LIKE), by
    /// database and user: `(database, user, calls)`, sorted.
    pub fn statement_calls_by_client(&self, pattern: &str) -> Vec<(String, String, u64)> {
        let sql = format!(
            "SELECT d.datname, r.rolname, sum(s.calls) FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid \
             WHERE s.query LIKE '{}' GROUP BY 1, 2 ORDER BY 1, 2",
            pattern.replace('\'', "''")
        );
        let rows = self.psql(&sql);
        (rows.lines())
            .map(|row| {
                let fields: Vec<&str> = row.split('|').collect();
                (
                    fields[0].into(),
                    fields[1].into(),
                    fields[2].parse().unwrap(),
                )
            })
            .collect()
    }
}

/// Runs pgbench and returns its output, failing the test when it fails.
fn pgbench_output(mut command: Command, args: &[&str]) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "pgbench {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET path` from a server on 127.0.0.1:`port`, optionally with an Accept header: the status
/// code, the Content-Type and the body.
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> (u16, String, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let accept = accept.map_or(String::new(), |accept| format!("Accept: {accept}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// One sample of a metrics exposition, as Prometheus's own Python client parses it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Parses an exposition with the Python client's OpenMetrics parser (strict) or its Prometheus
/// text-format parser, from Debian's python3-prometheus-client; panics on what they reject.
pub fn parse_metrics(text: &str, openmetrics: bool) -> Vec<Sample> {
    use std::io::Write;
    let parser = if openmetrics {
        "prometheus_client.openmetrics.parser"
    } else {
        "prometheus_client.parser"
    };
    let script = format!(
        "import json, sys, {parser} as p\n\
         out = [dict(name=s.name, labels=s.labels, value=s.value)\n\
                for f in p.text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n\
         print(json.dumps(out))"
    );
    let mut python = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Debian's python3 (cargo xtask setup --test)");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the {parser} parser rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Json = serde_json::from_slice(&output.stdout).unwrap();
    samples
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| Sample {
            name: sample["name"].as_str().unwrap().to_owned(),
            labels: sample["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            value: sample["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include all of `labels`.
pub fn sample_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
        .sum()
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A docker engine (Debian's docker.io): the running one, or one started here with the host's
/// network left alone and stopped on drop.
pub struct Docker {
    started: Option<Child>,
}

/// A root filesystem of busybox alone (Debian's static build): the tools the tests run in
/// containers, and /tmp.
pub fn busybox_root() -> Scratch {
    let root = Scratch::new("busybox-root");
    let bin = root.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("busybox-static (cargo xtask setup --test)");
    for tool in ["sh", "dd", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
    }
    std::fs::create_dir(root.dir.join("tmp")).unwrap();
    root
}

/// Makes an image of the directory `root` with `importer` (`docker import - NAME`, `podman
/// import - NAME`), which reads it as tar on its stdin.
pub fn import_image(root: &Path, importer: &mut Command) {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = importer
        .stdin(tar.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success() && tar.wait().unwrap().success(),
        "{importer:?}"
    );
}

/// A container the test made, removed on drop.
pub struct Container<'a> {
    docker: &'a Docker,
    pub name: String,
}

impl Docker {
    pub fn start() -> Self {
        let mut docker = Self { started: None };
        if docker.answers() {
            return docker;
        }
        let dir = std::env::temp_dir().join("tracer-dockerd");
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        docker.started = Some(
            Command::new("/usr/sbin/dockerd")
                .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
                .arg("--pidfile")
                .arg(dir.join("pid"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("dockerd (cargo xtask setup --test installs docker.io)"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !docker.answers() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        docker
    }

    fn answers(&self) -> bool {
        self.command()
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Debian's docker client.
    pub fn command(&self) -> Command {
        Command::new("/usr/bin/docker")
    }

    /// Runs `docker ARGS` to completion and returns its stdout, failing the test unless it
    /// exits with one of `codes`.
    pub fn run(&self, args: &[&str], codes: &[i32]) -> String {
        let output = self.command().args(args).output().unwrap();
        assert!(
            output
                .status
                .code()
                .is_some_and(|code| codes.contains(&code)),
            "docker {args:?}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// An image with busybox (Debian's static build) and nothing else, made here: no registry.
    pub fn busybox_image(&self) -> &'static str {
        const IMAGE: &str = "tracer-test-busybox";
        if !self.has_image(IMAGE) {
            let root = busybox_root();
            import_image(&root.dir, self.command().args(["import", "-", IMAGE]));
        }
        IMAGE
    }

    fn has_image(&self, image: &str) -> bool {
        self.command()
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|output| output.status.success())
    }

    /// A Debian (bookworm) base made here by debootstrap from Debian's archive: no registry.
    pub fn debian_image(&self) -> &'static str {
        const IMAGE: &str = "tracer-test-debian";
        if self.has_image(IMAGE) {
            return IMAGE;
        }
        let root = Scratch::new("debian-image");
        let target = root.dir.join("root");
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&target)
            .arg("http://deb.debian.org/debian")
            .stdout(Stdio::null()));
        import_image(&target, self.command().args(["import", "-", IMAGE]));
        IMAGE
    }

    /// PostgreSQL from Debian's packages on [`Self::debian_image`]: the server is pid 1 of its
    /// container, with pg_stat_statements, on a Unix socket only.
    pub fn postgres_image(&self) -> &'static str {
        const IMAGE: &str = "tracer-test-postgres";
        if self.has_image(IMAGE) {
            return IMAGE;
        }
        let base = self.debian_image();
        let context = Scratch::new("postgres-image");
        std::fs::write(
            context.dir.join("start"),
            "#!/bin/sh
set -e
             bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
             data=/var/lib/postgresql/data
             mkdir -p /var/run/postgresql $data && chown postgres /var/run/postgresql $data
             [ -s $data/PG_VERSION ] || setpriv --reuid postgres --regid postgres --init-groups              $bin/initdb -A trust -U postgres -D $data > /dev/null
             exec setpriv --reuid postgres --regid postgres --init-groups $bin/postgres -D $data              -c shared_preload_libraries=pg_stat_statements -c listen_addresses= -c fsync=off
",
        )
        .unwrap();
        std::fs::write(
            context.dir.join("Dockerfile"),
            format!(
                "FROM {base}
                 RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q                  --no-install-recommends postgresql > /dev/null && rm -rf /var/lib/apt/lists/*
                 COPY start /start
                 RUN chmod 755 /start
                 CMD [\"/start\"]
"
            ),
        )
        .unwrap();
        let status = self
            .command()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--quiet", "--network", "host", "--tag", IMAGE])
            .arg(&context.dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "docker build {IMAGE}");
        IMAGE
    }

    /// tracer's own image: `TRACER_IMAGE` (set by `cargo xtask test`), else `tracer:latest`
    /// as `cargo xtask image` left it.
    pub fn tracer_image(&self) -> String {
        let image = std::env::var("TRACER_IMAGE").unwrap_or_else(|_| "tracer:latest".into());
        assert!(
            self.has_image(&image),
            "no image {image}: run cargo xtask image"
        );
        image
    }

    /// A container named `name` (made unique) from `docker run ARGS`, which may exit with one
    /// of `codes`.
    pub fn container(&self, name: &str, args: &[&str], codes: &[i32]) -> Container<'_> {
        let name = format!("{name}-{}", std::process::id());
        let _ = self.command().args(["rm", "-f", &name]).output();
        let mut all = vec!["run", "--name", &name, "--network", "none"];
        all.extend(args);
        self.run(&all, codes);
        Container { docker: self, name }
    }
}

impl Container<'_> {
    pub fn id(&self) -> String {
        self.docker
            .run(&["inspect", "-f", "{{.Id}}", &self.name], &[0])
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .docker
            .command()
            .args(["rm", "-f", &self.name])
            .output();
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(dockerd) = &mut self.started {
            unsafe { libc::kill(dockerd.id() as i32, libc::SIGTERM) };
            wait_timeout(dockerd, Duration::from_secs(30));
        }
    }
}

/// The Python of the project's own virtual environment (made by `cargo xtask setup --test`),
/// with kubernetes-validate and PyYAML.
pub fn project_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/python/bin/python")
}

/// A self-signed certificate for localhost and its key (readable by its owner alone, which
/// servers require), made in `dir`: `server.crt`, `server.key`.
pub fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    run(Command::new("openssl")
        .args(["req", "-new", "-x509", "-days", "1", "-nodes"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (cert, key)
}

/// How a client connects to a MySQL-protocol server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Plain,
    /// TLS, over the Unix socket as well.
    Encrypted,
    /// The compressed protocol (zlib).
    Compressed,
}

/// Which MySQL-protocol server a test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Debian's MariaDB.
    Mariadb,
    /// Oracle MySQL, from the root `cargo xtask test` makes of Debian sid's packages.
    Mysql,
}

impl Flavour {
    /// The servers the mysql suite runs against: MariaDB, and Oracle MySQL where its root was
    /// made (`TRACER_MYSQL_ROOT`, which `cargo xtask test` sets on the host).
    pub fn all() -> Vec<Flavour> {
        match mysql_root() {
            Some(_) => vec![Flavour::Mariadb, Flavour::Mysql],
            None => {
                eprintln!("no TRACER_MYSQL_ROOT: Oracle MySQL is left out");
                vec![Flavour::Mariadb]
            }
        }
    }
}

/// `program` run chrooted in `root` (a path inside it).
fn chrooted(root: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut chroot = Command::new("chroot");
    chroot.arg(root).arg(program);
    chroot
}

/// A data directory as `flavour`'s installer makes it (in `root`, if it runs there), made
/// once per test process and copied for each server: under the emulator the installer takes
/// tens of seconds. Those of test processes gone are removed first.
fn installed_data(flavour: Flavour, root: Option<&Path>) -> &'static Path {
    static TEMPLATES: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    TEMPLATES[flavour as usize].get_or_init(|| {
        let prefix = format!("tracer-{flavour:?}-template-").to_lowercase();
        let tmp = root.unwrap_or(Path::new("/")).join("tmp");
        for left in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = left.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(&prefix)
                .and_then(|pid| pid.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(left.path());
            }
        }
        let folder = Path::new("/tmp").join(format!("{prefix}{}", std::process::id()));
        let template = root
            .unwrap_or(Path::new("/"))
            .join(folder.strip_prefix("/").unwrap());
        let _ = std::fs::remove_dir_all(&template);
        std::fs::create_dir_all(&template).unwrap();
        let data = format!("--datadir={}", folder.join("data").display());
        let output = match root {
            Some(root) => chrooted(root, "/usr/sbin/mysqld")
                .args([
                    "--no-defaults",
                    "--initialize-insecure",
                    "--user=root",
                    &data,
                ])
                .arg(format!("--tmpdir={}", folder.display()))
                .output(),
            None => Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=root", "--skip-test-db", &data])
                .output(),
        }
        .expect("the server's installer (cargo xtask setup --test, cargo xtask test)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        template.join("data")
    })
}

fn mysql_root() -> Option<PathBuf> {
    std::env::var_os("TRACER_MYSQL_ROOT").map(PathBuf::from)
}

/// A MySQL or MariaDB server of the test's own: a fresh data directory, a private Unix socket
/// and no TCP, performance_schema on, TLS offered (as MySQL does by default: MariaDB gets a
/// certificate); stopped and removed on drop. Oracle MySQL runs chrooted
/// in its root (sid's binaries need sid's libraries), as does its client; its folder is in
/// that root.
pub struct MysqlServer {
    pub flavour: Flavour,
    /// The server's folder, as the host sees it: data, socket, log, files for the server.
    pub dir: PathBuf,
    /// Oracle MySQL's root.
    root: Option<PathBuf>,
    server: Child,
}

impl MysqlServer {
    pub fn start(flavour: Flavour, name: &str) -> Self {
        Self::start_with(flavour, name, None, &[])
    }

    /// A server started in `cgroup`, with more server options.
    pub fn start_with(
        flavour: Flavour,
        name: &str,
        cgroup: Option<&Cgroup>,
        options: &[&str],
    ) -> Self {
        Self::start_from(flavour, name, false, cgroup, options)
    }

    /// With `own_binary`, the server runs a copy of its binary of its own (uprobes on it stay
    /// out of other servers).
    pub fn start_from(
        flavour: Flavour,
        name: &str,
        own_binary: bool,
        cgroup: Option<&Cgroup>,
        options: &[&str],
    ) -> Self {
        let root = match flavour {
            Flavour::Mariadb => None,
            Flavour::Mysql => Some(mysql_root().expect("TRACER_MYSQL_ROOT (cargo xtask test)")),
        };
        let folder = format!("tmp/tracer-{flavour:?}-{name}-{}", std::process::id()).to_lowercase();
        let dir = root.as_deref().unwrap_or(Path::new("/")).join(&folder);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let inside = Path::new("/").join(&folder);
        let data = format!("--datadir={}", inside.join("data").display());
        // Not $TMPDIR, which may be outside MySQL's root.
        let tmpdir = format!("--tmpdir={}", inside.display());
        let (mut command, binary) = match (&root, own_binary) {
            (Some(root), _) => {
                let mut mysqld = PathBuf::from("/usr/sbin/mysqld");
                if own_binary {
                    std::fs::copy(root.join("usr/sbin/mysqld"), dir.join("mysqld")).unwrap();
                    mysqld = inside.join("mysqld");
                }
                (chrooted(root, mysqld), "mysqld")
            }
            (None, true) => {
                std::fs::copy("/usr/sbin/mariadbd", dir.join("mariadbd")).unwrap();
                (Command::new(dir.join("mariadbd")), "mariadbd")
            }
            (None, false) => (Command::new("mariadbd"), "mariadbd"),
        };
        let template = installed_data(flavour, root.as_deref());
        run(Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(dir.join("data")));
        command.args([
            "--no-defaults",
            "--user=root",
            "--skip-networking",
            "--performance-schema=ON",
        ]);
        match flavour {
            // No X protocol listener; files anywhere may be read (LOAD_FILE). MySQL made its
            // own certificate.
            Flavour::Mysql => {
                command.args(["--mysqlx=OFF", "--secure-file-priv=", &tmpdir]);
            }
            Flavour::Mariadb => {
                let (cert, key) = self_signed_certificate(&dir);
                command.arg(format!("--ssl-cert={}", cert.display()));
                command.arg(format!("--ssl-key={}", key.display()));
            }
        }
        command
            .args(options)
            .arg(&data)
            .arg(format!("--socket={}", inside.join("socket").display()))
            .arg(format!("--pid-file={}", inside.join("pid").display()))
            .arg(format!("--log-error={}", inside.join("log").display()));
        // Through sh, which joins the cgroup and becomes the server (chroot too: the pid is
        // the server's).
        let joins = cgroup.map_or(String::new(), |cgroup| {
            format!("echo $$ > {}/cgroup.procs; ", cgroup.path.display())
        });
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|arg| arg.to_owned()).collect();
        let server = Command::new("sh")
            .arg("-c")
            .arg(format!("{joins}exec \"$0\" \"$@\""))
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(binary);
        let server = Self {
            flavour,
            dir,
            root,
            server,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server
            .client()
            .args(["-e", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "{flavour:?} did not start: see {}",
                server.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// Where the server sees `path`, a path under its folder.
    pub fn inside(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => Path::new("/").join(path.strip_prefix(root).unwrap()),
            None => path.to_owned(),
        }
    }

    /// The server's socket as the host reaches it.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// One of the server's own client programs (`mysql`, `mysqladmin`; MariaDB's names), run
    /// where the server runs, connected as root over the socket by `link`.
    pub fn program(&self, mariadb: &str, mysql: &str, link: Link) -> Command {
        let mut program = match &self.root {
            Some(root) => chrooted(root, mysql),
            None => Command::new(mariadb),
        };
        let socket = self.inside(&self.socket());
        program.arg(format!("--socket={}", socket.display()));
        program.arg("--user=root");
        let option = match (link, self.flavour) {
            (Link::Plain, Flavour::Mariadb) => "--skip-ssl",
            (Link::Plain, Flavour::Mysql) => "--ssl-mode=DISABLED",
            (Link::Encrypted, Flavour::Mariadb) => "--ssl",
            (Link::Encrypted, Flavour::Mysql) => "--ssl-mode=REQUIRED",
            (Link::Compressed, Flavour::Mariadb) => "--compress",
            (Link::Compressed, Flavour::Mysql) => "--compression-algorithms=zlib",
        };
        program.arg(option);
        program
    }

    /// The client, in batch mode.
    pub fn client(&self) -> Command {
        self.client_over(Link::Plain)
    }

    /// The client, in batch mode, connecting over `link`.
    pub fn client_over(&self, link: Link) -> Command {
        let mut client = self.program("mariadb", "mysql", link);
        client.args(["--batch", "--skip-column-names"]);
        client
    }

    /// Runs SQL in a connection of its own; returns its output rows.
    pub fn sql(&self, sql: &str) -> String {
        let output = self.client().args(["-e", sql]).output().unwrap();
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Waits until the server has closed every other connection: a session's last command
    /// ends when its server thread reads the close, which takes the server its time.
    pub fn wait_for_sessions_to_end(&self) {
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(60) {
            if self.status("Threads_connected") == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server kept connections open for a minute");
    }

    /// A server status variable (`SHOW GLOBAL STATUS`), read through a connection of its own.
    pub fn status(&self, name: &str) -> u64 {
        let row = self.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"));
        row.split_whitespace().last().unwrap().parse().unwrap()
    }

    /// How often performance_schema saw statements whose digest text matches `pattern` (LIKE).
    pub fn digest_count(&self, pattern: &str) -> u64 {
        let sql = format!(
            "SELECT COALESCE(SUM(COUNT_STAR), 0) FROM performance_schema.events_statements_summary_by_digest WHERE TRIM(DIGEST_TEXT) LIKE '{}'",
            pattern.replace('\'', "''")
        );
        self.sql(&sql).parse().unwrap()
    }

    /// How many statements of this instrument (`statement/com/Execute`) the server ran.
    pub fn statement_count(&self, event: &str) -> u64 {
        let sql = format!(
            "SELECT COUNT_STAR FROM performance_schema.events_statements_summary_global_by_event_name WHERE EVENT_NAME = '{event}'"
        );
        self.sql(&sql).parse().unwrap()
    }

    /// A connection that prepares statements on the server, through the flavour's own kind of
    /// client library: MariaDB's (Perl's DBD::MariaDB, support/prepared.pl), Oracle's (its
    /// Python driver, support/prepared.py). Lines such as `prepare NAME SQL`, `execute NAME
    /// ARG...`, `close NAME`, each answered "ok" or "error" by [`SqlSession::query`].
    pub fn prepared_session(&self) -> SqlSession {
        let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("support");
        let mut client = match self.flavour {
            Flavour::Mariadb => {
                let mut perl = Command::new("perl");
                perl.arg(support.join("prepared.pl"));
                perl
            }
            // In the MySQL root, whose Python has the driver.
            Flavour::Mysql => {
                let script = self.dir.join("prepared.py");
                std::fs::copy(support.join("prepared.py"), &script).unwrap();
                // PYTHONPATH: where xtask's rootfs.rs installed it.
                let mut python = chrooted(self.root.as_ref().unwrap(), "env");
                python
                    .args(["PYTHONPATH=/usr/local/lib/tracer-python", "python3"])
                    .arg(self.inside(&script));
                python
            }
        };
        SqlSession::spawn(client.arg(self.inside(&self.socket())))
    }

    /// A client connection kept open: statements sent one by one share it.
    pub fn session(&self) -> SqlSession {
        self.session_over(Link::Plain)
    }

    /// The client as `user` (no password) over `link`, in `database` where one is named.
    pub fn client_as(&self, link: Link, user: &str, database: Option<&str>) -> Command {
        let mut client = self.client_over(link);
        client.arg(format!("--user={user}"));
        if let Some(database) = database {
            client.arg(format!("--database={database}"));
        }
        client
    }

    /// A client connection kept open, as `user` in `database` where one is named.
    pub fn session_as(&self, user: &str, database: Option<&str>) -> SqlSession {
        SqlSession::spawn(
            self.client_as(Link::Plain, user, database)
                .args(["--force", "--unbuffered"])
                .stderr(Stdio::null()),
        )
    }

    /// The same over `link`.
    pub fn session_over(&self, link: Link) -> SqlSession {
        // An error ends a batch client unless forced on.
        SqlSession::spawn(
            self.client_over(link)
                .args(["--force", "--unbuffered"])
                .stderr(Stdio::null()),
        )
    }
}

impl Drop for MysqlServer {
    fn drop(&mut self) {
        unsafe { libc::kill(self.server.id() as i32, libc::SIGTERM) };
        let _ = wait_timeout(&mut self.server, Duration::from_secs(30));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One connection of a line-oriented SQL client (psql, mariadb in batch mode): one backend,
/// one server thread.
pub struct SqlSession {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: mpsc::Receiver<String>,
}

impl SqlSession {
    fn spawn(client: &mut Command) -> Self {
        let mut child = client
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs one statement returning one row, and returns that row.
    pub fn query(&mut self, sql: &str) -> String {
        self.send(sql);
        self.stdout
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    /// Sends a statement that returns no row (SET, CREATE, or one that fails: its error goes
    /// to the client's stderr): the next `query` waits for it.
    pub fn execute(&mut self, sql: &str) {
        self.send(sql);
    }

    fn send(&mut self, sql: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{sql};").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for SqlSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// deploy/prometheus/: the rules' one source, and the Prometheus Operator's copy of them.
pub fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/rules.yml")
}

pub fn prometheus_rule_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/prometheus-operator/prometheusrule.yaml")
}

/// The PrometheusRule holding `rules` (rules.yml's text): its groups, under `spec`.
pub fn prometheus_rule(rules: &str) -> String {
    let groups: String = rules
        .lines()
        .skip_while(|line| line.starts_with('#'))
        .map(|line| match line {
            "" => "\n".to_owned(),
            line => format!("  {line}\n"),
        })
        .collect();
    format!(
        "# Made by `cargo xtask rules` from deploy/prometheus/rules.yml: edit that, not this.\n\
         # With the Prometheus Operator: kubectl apply -f deploy/kubernetes/prometheus-operator/\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: tracer\n  namespace: tracer\n  labels:\n    app.kubernetes.io/name: tracer\n\
         spec:\n{groups}"
    )
}

/// Prometheus's server, scraping every second.
pub struct Prometheus {
    child: Child,
    port: u16,
    _dir: Scratch,
}

impl Prometheus {
    /// Prometheus with these `scrape_configs` (YAML list items, indented two spaces) and
    /// `rules`.
    pub fn start(scrape_configs: &str, rules: Option<&Path>) -> Self {
        let dir = Scratch::new("prometheus");
        let rules = rules.map_or(String::new(), |rules| {
            format!("rule_files:\n  - {}\n", rules.display())
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             {rules}scrape_configs:\n{scrape_configs}"
        );
        std::fs::write(dir.dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.file("prometheus.yml")))
            .arg(format!("--storage.tsdb.path={}", dir.file("data")))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (cargo xtask setup --test)");
        let prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        prometheus.wait_for("it to be ready", |p| p.get("/-/ready").is_some());
        prometheus
    }

    /// The body of a 200 answer to GET `path`.
    pub fn get(&self, path: &str) -> Option<String> {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let (status, _, body) = http_get(self.port, path, None);
        (status == 200).then_some(body)
    }

    pub fn api(&self, path: &str) -> Json {
        let body = self.get(path).unwrap_or_else(|| panic!("GET {path}"));
        serde_json::from_str(&body).unwrap_or_else(|err| panic!("{err}: {body}"))
    }

    pub fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Prometheus: no {what} in 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The alerts named `name` in `state` (pending, firing).
    pub fn alerts(&self, name: &str, state: &str) -> Vec<Json> {
        let alerts = self.api("/api/v1/alerts");
        alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|alert| alert["labels"]["alertname"] == name && alert["state"] == state)
            .cloned()
            .collect()
    }
}

impl Prometheus {
    /// Each scrape target's state, by job: `health` ("up", "down") and `lastError`.
    pub fn targets(&self) -> HashMap<String, Json> {
        let targets = self.api("/api/v1/targets");
        targets["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|target| {
                let job = target["labels"]["job"].as_str().unwrap().to_owned();
                (job, target.clone())
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A page as headless Chromium (Debian's `chromium`) drew it.
pub struct Drawn {
    /// The DOM once the page loaded.
    pub dom: String,
    /// What the page said on its console (errors, uncaught exceptions).
    pub console: Vec<String>,
    /// How much longer a screenshot of it took than one of an empty page: the time to load,
    /// lay out and paint it.
    pub drawing: Duration,
}

/// Loads `page` in headless Chromium, with no network, and saves a screenshot of it to
/// `target/test-artifacts/<screenshot>`.
pub fn draw_in_chromium(page: &Path, screenshot: &str) -> Drawn {
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    // A run that hangs fails the test in a minute rather than holding the suite.
    let chromium = || {
        let mut command = Command::new("timeout");
        command.args([
            "--kill-after=5",
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            // Nothing from the network: the page must hold everything it shows.
            "--proxy-server=127.0.0.1:9",
            "--enable-logging=stderr",
            "--v=0",
        ]);
        command
    };
    let output = chromium()
        .args(["--dump-dom", &url])
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium: {output:?}");
    let console = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join(screenshot);
    let shoot = |url: &str, png: &Path| {
        let started = Instant::now();
        let shot = chromium()
            .args([
                "--window-size=1050,2400",
                &format!("--screenshot={}", png.display()),
                url,
            ])
            .output()
            .expect("run chromium");
        assert!(shot.status.success(), "chromium: {shot:?}");
        started.elapsed()
    };
    // Chromium's own start, measured the same way, on a page of one line.
    let blank = png.with_extension("blank.html");
    std::fs::write(&blank, "<!doctype html><title>blank</title><p>blank</p>\n").unwrap();
    let empty = shoot(
        &format!("file://{}", blank.display()),
        &png.with_extension("blank.png"),
    );
    let taken = shoot(&url, &png);
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "{png:?}");
    // The DOM beside the screenshot, for whoever looks into a failure.
    std::fs::write(png.with_extension("dom.html"), &output.stdout).unwrap();
    Drawn {
        dom: String::from_utf8(output.stdout).unwrap(),
        console,
        drawing: taken.saturating_sub(empty),
    }
}

/// The start tags named `tag` in `html`, each as its attributes (values unescaped of `&quot;`
/// and `&amp;`), with the text of the element's first `<title>` child under `title`.
pub fn elements(html: &str, tag: &str) -> Vec<HashMap<String, String>> {
    let open = format!("<{tag} ");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let end = rest.find('>').unwrap_or(rest.len());
        let mut attributes = HashMap::new();
        let mut text = &rest[..end];
        while let Some(eq) = text.find("=\"") {
            let name = text[..eq].trim().trim_end_matches('/').to_owned();
            let value_end = text[eq + 2..].find('"').map_or(text.len(), |e| eq + 2 + e);
            let value = text[eq + 2..value_end]
                .replace("&quot;", "\"")
                .replace("&amp;", "&");
            attributes.insert(name, value);
            text = &text[(value_end + 1).min(text.len())..];
        }
        if let Some(title) = rest[(end + 1).min(rest.len())..]
            .trim_start()
            .strip_prefix("<title>")
            .and_then(|after| after.split_once("</title>"))
        {
            attributes.insert("title".into(), title.0.replace("&amp;", "&"));
        }
        found.push(attributes);
    }
    found
}
