//! Loading tracer's kernel programs and attaching them, with errors a person can act on.

use std::{collections::HashMap, os::fd::AsFd, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Program, ProgramError, TracePoint, UProbe},
};
use tracer_common::task::{Filter, TaskLayout};

use crate::{kernel_btf::KernelBtf, perf, tracefs::Tracefs};

/// The kernel programs of every tool, built by build.rs: for `serve` and the tools that share
/// programs. Each of the others has an object of its own as well: see [`tool_object!`].
pub static ALL_TOOLS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// The object of one tool's programs alone, by its `tracer-ebpf/src/objects/` name.
#[macro_export]
macro_rules! tool_object {
    ($name:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name))
    };
}

/// What tracer reads about the running kernel before loading anything.
pub struct Kernel {
    pub btf: KernelBtf,
    pub tracefs: Tracefs,
}

impl Kernel {
    pub fn inspect() -> Result<Self> {
        let btf = KernelBtf::open(&crate::kernel_btf::default_path())?;
        if !btf.has_ring_buffer() {
            bail!(
                "this kernel has no BPF ring buffer (Linux 5.8+), which carries tracer's records"
            );
        }
        let tracefs = Tracefs::locate()?;
        Ok(Self { btf, tracefs })
    }
}

/// How tracepoints are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// BTF tracepoints where the kernel has them, else classic ones.
    #[default]
    Auto,
    /// BTF tracepoints (`tp_btf`) only.
    Btf,
    /// Classic tracepoints only.
    Classic,
}

/// A tracepoint a tool attaches to. Its kernel program exists twice: `program` as a BTF
/// tracepoint and `<program>_tp` as a classic one. What each expects of the kernel is checked
/// before it is attached.
#[derive(Clone, Copy)]
pub struct Tracepoint {
    pub category: &'static str,
    pub name: &'static str,
    pub program: &'static str,
    /// The C types of the arguments the BTF program reads, as the kernel's BTF spells them;
    /// `None` where the tool has only a classic program.
    pub args: Option<&'static [&'static str]>,
    /// Record fields the classic program reads at fixed offsets: (name, offset, size).
    pub fields: &'static [(&'static str, usize, usize)],
}

/// A tool's own load-time setting of the kernel programs.
pub enum Setting {
    /// A read-only global.
    Global { name: &'static str, bytes: Vec<u8> },
    /// The size of a map: entries, or bytes for a ring buffer.
    MapSize { name: &'static str, size: u32 },
    /// A map the tool created itself, to be used in place of the object's: for a perf event
    /// array with more slots than CPUs, which aya would cap. It needs a private mount
    /// namespace (see [`private_mounts`]); without one, the object's map is created as usual
    /// and [`Probes::own_maps`] says so.
    OwnMap {
        name: &'static str,
        map: std::os::fd::OwnedFd,
    },
}

impl Setting {
    pub fn global<T: aya::Pod>(name: &'static str, value: &T) -> Self {
        // SAFETY: `Pod` types are plain bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
        Self::Global {
            name,
            bytes: bytes.to_vec(),
        }
    }
}

/// The settings of several tools as one: a map two tools size gets the larger size.
pub fn merge_settings(settings: Vec<Setting>) -> Vec<Setting> {
    let mut merged: Vec<Setting> = Vec::with_capacity(settings.len());
    for setting in settings {
        if let Setting::MapSize { name, size } = &setting
            && let Some(Setting::MapSize { size: kept, .. }) = merged
                .iter_mut()
                .find(|kept| matches!(kept, Setting::MapSize { name: other, .. } if other == name))
        {
            *kept = (*kept).max(*size);
            continue;
        }
        merged.push(setting);
    }
    merged
}

/// What the kernel programs are told at load time.
pub struct Settings {
    /// The object to load: [`ALL_TOOLS`] or a tool's own.
    pub object: &'static [u8],
    pub filter: Filter,
    pub task_layout: TaskLayout,
    pub tool: Vec<Setting>,
}

/// Loaded kernel programs. Dropping it detaches and unloads everything.
pub struct Probes {
    ebpf: Ebpf,
    verbose: bool,
    /// Uprobes attached outside aya, and their links.
    uprobes: Vec<std::os::fd::OwnedFd>,
    /// Whether -v heard that uprobes are attached without links.
    said_no_links: bool,
    /// Whether [`Setting::OwnMap`]s replaced the object's maps.
    pub own_maps: bool,
    /// The kernel side's diagnostics, with -v.
    kernel_log: Option<KernelLogReader>,
}

pub type KernelLogReader = aya_log::EbpfLogger<KernelLog>;

/// Prints the kernel side's diagnostics (`cold_warn!` in tracer-ebpf) on stderr.
pub struct KernelLog;

impl log::Log for KernelLog {
    fn enabled(&self, _metadata: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        eprintln!("tracer: kernel side: {}", record.args());
    }

    fn flush(&self) {}
}

/// Fails unless this process may load tracing programs.
pub fn require_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        bail!(
            "tracer needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
        )
    }
}

/// Loading, begun before the settings are known: a thread sets up its private mounts (see
/// [`private_mounts`]) and probes the kernel's BPF features while the caller reads the kernel's
/// BTF, then loads the object once handed the settings.
pub struct Loading {
    settings: std::sync::mpsc::Sender<Settings>,
    thread: std::thread::JoinHandle<Result<(Ebpf, bool)>>,
    verbose: bool,
}

impl Loading {
    pub fn begin(verbose: bool) -> Self {
        raise_memlock_limit(verbose);
        let (settings, received) = std::sync::mpsc::channel::<Settings>();
        let thread = std::thread::spawn(move || {
            let private = private_mounts();
            if let Err(err) = &private
                && verbose
            {
                eprintln!("tracer: loading without a private mount namespace: {err}");
            }
            aya::features();
            let settings = received.recv().context("loading abandoned")?;
            let own_maps = private.is_ok();
            Ok((load(&settings, own_maps, verbose)?, own_maps))
        });
        Self {
            settings,
            thread,
            verbose,
        }
    }

    /// Hands over the settings; the object loads while the caller goes on.
    pub fn load(self, settings: Settings) -> Self {
        // A send fails only when the thread is gone, which `finish` reports.
        let _ = self.settings.send(settings);
        self
    }

    pub fn finish(self) -> Result<Probes> {
        let (mut ebpf, own_maps) = self
            .thread
            .join()
            .expect("the loading thread does not panic")
            .map_err(|err| anyhow!("cannot load tracer's eBPF object: {err:#}"))?;
        let kernel_log = if self.verbose && ebpf.map("AYA_LOGS").is_some() {
            Some(aya_log::EbpfLogger::init_with_logger(&mut ebpf, KernelLog)?)
        } else {
            None
        };
        Ok(Probes {
            ebpf,
            verbose: self.verbose,
            uprobes: Vec::new(),
            said_no_links: false,
            own_maps,
            kernel_log,
        })
    }
}

fn load(settings: &Settings, own_maps: bool, verbose: bool) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    // The kernel side's diagnostics (aya-log) are for -v; off, each costs a branch.
    let log_level: u8 = if verbose { u8::MAX } else { 0 };
    // Our programs have no CO-RE relocations: nothing needs the kernel's full BTF.
    loader
        .btf(None)
        .override_global("FILTER", &settings.filter, true)
        .override_global("TASK_LAYOUT", &settings.task_layout, true)
        // Only objects with a diagnostic hold aya-log's level.
        .override_global("AYA_LOG_LEVEL", &log_level, false);
    let mut pins = Vec::new();
    for setting in &settings.tool {
        match setting {
            Setting::Global { name, bytes } => {
                loader.override_global(name, bytes.as_slice(), true);
            }
            Setting::MapSize { name, size } => {
                loader.map_max_entries(name, *size);
            }
            Setting::OwnMap { name, map } if own_maps => {
                // aya reuses a map pinned where it would pin one.
                let path = Path::new(PRIVATE_BPFFS).join(name);
                perf::pin(map, &path)?;
                pins.push((*name, path));
            }
            Setting::OwnMap { .. } => {}
        }
    }
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    Ok(loader.load(settings.object)?)
}

impl Probes {
    /// Attaches each tracepoint, as a BTF tracepoint when `mode` allows and the kernel has it,
    /// else as a classic one.
    pub fn attach_tracepoints(
        &mut self,
        kernel: &Kernel,
        tracepoints: &[Tracepoint],
        mode: AttachMode,
        index: Option<&aya::Btf>,
    ) -> Result<()> {
        let formats = tracepoints
            .iter()
            .map(|tp| kernel.tracefs.format(tp.category, tp.name))
            .collect::<Result<Vec<_>>>()?;
        // Whether each can be a BTF tracepoint, as far as the kernel's BTF tells.
        let mut btf_results: Vec<Result<()>> = tracepoints
            .iter()
            .map(|tp| match (index, tp.args) {
                (_, None) => Err(anyhow!("tracer has no BTF program for it")),
                (None, _) => Err(anyhow!("--attach classic")),
                (Some(_), Some(expected)) => match kernel.btf.tracepoint_args(tp.name) {
                    Some(args) if args == expected => Ok(()),
                    Some(args) => Err(anyhow!(
                        "its arguments are ({}) on this kernel",
                        args.join(", ")
                    )),
                    None => Err(anyhow!("the kernel's BTF has no btf_trace_{}", tp.name)),
                },
            })
            .collect();
        if let Some(index) = index {
            self.load_btf(tracepoints, &mut btf_results, index);
        }
        let mut classic = Vec::new();
        for ((tp, format), btf_result) in tracepoints.iter().zip(&formats).zip(btf_results) {
            let btf_result = btf_result.and_then(|()| {
                let program: &mut BtfTracePoint = self.program(tp.program)?;
                program.attach()?;
                Ok(())
            });
            let why_not_btf = match btf_result {
                Ok(()) => {
                    self.say(format_args!("{}:{}: BTF tracepoint", tp.category, tp.name));
                    continue;
                }
                Err(err) if mode == AttachMode::Btf => {
                    return Err(err.context(format!(
                        "cannot attach {}:{} as a BTF tracepoint",
                        tp.category, tp.name
                    )));
                }
                Err(err) => err,
            };
            format
                .expect_fields(tp.fields)
                .with_context(|| format!("cannot attach {}:{}", tp.category, tp.name))?;
            classic.push((tp, why_not_btf));
        }
        let attached = self.attach_classic(classic.iter().map(|(tp, _)| *tp).collect());
        for ((tp, why_not_btf), attached) in classic.iter().zip(attached) {
            attached?;
            self.say(format_args!(
                "{}:{}: classic tracepoint (not BTF: {why_not_btf:#})",
                tp.category, tp.name
            ));
        }
        Ok(())
    }

    /// Whether a tool sharing the programs of `tracepoints` attached them already (a program
    /// is loaded once attached, and unloaded when detached).
    pub fn attached(&mut self, tracepoints: &[Tracepoint]) -> bool {
        tracepoints.iter().all(|tp| {
            let classic = format!("{}_tp", tp.program);
            (self.program::<BtfTracePoint>(tp.program)).is_ok_and(|program| program.fd().is_ok())
                || (self.program::<TracePoint>(&classic)).is_ok_and(|program| program.fd().is_ok())
        })
    }

    /// Detaches and unloads the programs of `tracepoints`, both kinds (a tool that could not
    /// start, while others go on).
    pub fn detach(&mut self, tracepoints: &[Tracepoint]) {
        for tp in tracepoints {
            if let Ok(program) = self.program::<BtfTracePoint>(tp.program) {
                let _ = program.unload();
            }
            if let Ok(program) = self.program::<TracePoint>(&format!("{}_tp", tp.program)) {
                let _ = program.unload();
            }
        }
    }

    /// Loads the BTF program of each tracepoint whose result is still `Ok`, and records how
    /// that went. The verifier takes most of the time of starting up: they load on two threads.
    fn load_btf(&mut self, tracepoints: &[Tracepoint], results: &mut [Result<()>], index: &Btf) {
        let verbose = self.verbose;
        let mut loads: Vec<BtfLoad> = tracepoints
            .iter()
            .zip(results.iter_mut())
            .filter(|(_, result)| result.is_ok())
            .map(|(tracepoint, result)| BtfLoad {
                tracepoint,
                result,
                program: None,
            })
            .collect();
        for (name, program) in self.ebpf.programs_mut() {
            if let Some(load) = loads
                .iter_mut()
                .find(|load| load.tracepoint.program == name)
            {
                load.program = Some(program);
            }
        }
        on_two_threads(&mut loads, |load| load.run(index, verbose));
    }

    /// Loads (where not loaded yet) and attaches classic programs, on two threads: the
    /// verifier and opening each tracepoint's perf event take most of starting up.
    fn attach_classic(&mut self, tracepoints: Vec<&Tracepoint>) -> Vec<Result<()>> {
        let verbose = self.verbose;
        let mut programs: HashMap<String, &mut TracePoint> = self
            .ebpf
            .programs_mut()
            .filter(|(name, _)| {
                tracepoints
                    .iter()
                    .any(|tp| *name == format!("{}_tp", tp.program))
            })
            .filter_map(|(name, program)| Some((name.to_owned(), program.try_into().ok()?)))
            .collect();
        let mut jobs: Vec<ClassicAttach> = tracepoints
            .into_iter()
            .map(|tracepoint| {
                let name = format!("{}_tp", tracepoint.program);
                ClassicAttach {
                    tracepoint,
                    program: programs.remove(&name),
                    result: Err(anyhow!("tracer's eBPF object has no program {name}")),
                    name,
                }
            })
            .collect();
        on_two_threads(&mut jobs, |job| job.run(verbose));
        jobs.into_iter().map(|job| job.result).collect()
    }

    /// Attaches the uprobe program `program` (loading it first) at `uprobe`, with `cookie` for
    /// `bpf_get_attach_cookie()`, in every process.
    pub fn attach_uprobe(
        &mut self,
        program: &str,
        uprobe: &perf::Uprobe,
        cookie: u64,
    ) -> Result<()> {
        let attached = self.attach_uprobe_in(program, uprobe, cookie, None)?;
        self.keep(attached);
        Ok(())
    }

    /// Loads the uprobe program `program`, unless loaded: ahead of time where attaching must
    /// not wait for the verifier.
    pub fn load_uprobe(&mut self, program: &str) -> Result<&mut UProbe> {
        let verbose = self.verbose;
        let loaded: &mut UProbe = self.program(program)?;
        if loaded.fd().is_err() {
            loaded
                .load()
                .map_err(|err| rejected(program, err, verbose))?;
        }
        Ok(loaded)
    }

    /// Keeps what [`Self::attach_uprobe_in`] attached for as long as everything else.
    pub fn keep(&mut self, attached: Vec<std::os::fd::OwnedFd>) {
        self.uprobes.extend(attached);
    }

    /// The same in process `pid` alone (`None`: every process); dropping what it returns
    /// detaches it.
    pub fn attach_uprobe_in(
        &mut self,
        program: &str,
        uprobe: &perf::Uprobe,
        cookie: u64,
        pid: Option<u32>,
    ) -> Result<Vec<std::os::fd::OwnedFd>> {
        let loaded = self.load_uprobe(program)?;
        let event = perf::open_uprobe(uprobe, pid)?;
        let link = perf::attach(loaded.fd()?.as_fd(), &event, cookie)?;
        if link.is_none() && !self.said_no_links {
            self.said_no_links = true;
            self.say(format_args!(
                "uprobes hold their programs themselves (no BPF links for them before 5.15)"
            ));
        }
        Ok(link.into_iter().chain([event]).collect())
    }

    pub fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("tracer's eBPF object has no map {name}"))
    }

    pub fn say(&self, message: std::fmt::Arguments) {
        if self.verbose {
            eprintln!("tracer: {message}");
        }
    }

    fn program<'a, P>(&'a mut self, name: &str) -> Result<&'a mut P>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let program = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("tracer's eBPF object has no program {name}"))?;
        Ok(program.try_into()?)
    }

    /// Records the kernel side could not deliver since loading (ring buffer full).
    pub fn lost(&self) -> Result<u64> {
        Ok(self.lost_by_tool()?.iter().sum())
    }

    /// The same per tool, indexed by `tracer_common::record::tool`.
    pub fn lost_by_tool(&self) -> Result<Vec<u64>> {
        let lost: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("LOST")
                .context("eBPF object has no LOST map")?,
        )?;
        (0..tracer_common::record::TOOL_SLOTS)
            .map(|tool| Ok(lost.get(&tool, 0)?.iter().sum()))
            .collect()
    }

    /// The reader of the kernel side's diagnostics, with -v.
    pub fn take_kernel_log(&mut self) -> Option<KernelLogReader> {
        self.kernel_log.take()
    }

    /// The ring buffer every tool's kernel side writes its records to.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("eBPF object has no EVENTS map")?;
        Ok(RingBuf::try_from(map)?)
    }
}

/// Detaches everything side by side. Closing a perf event attachment (a classic tracepoint, a
/// uprobe) waits for RCU grace periods, 40-80 ms each here: one after another, Ctrl-C took
/// 0.88 s for direct-reclaim; side by side the waits partly overlap (0.58 s).
impl Drop for Probes {
    fn drop(&mut self) {
        let mut closes: Vec<Box<dyn FnOnce() + Send + '_>> = Vec::new();
        for fd in self.uprobes.drain(..) {
            closes.push(Box::new(move || drop(fd)));
        }
        for (_, program) in self.ebpf.programs_mut() {
            let unload: Box<dyn FnOnce() + Send> = match program {
                Program::TracePoint(p) if p.fd().is_ok() => Box::new(move || drop(p.unload())),
                Program::BtfTracePoint(p) if p.fd().is_ok() => Box::new(move || drop(p.unload())),
                Program::UProbe(p) if p.fd().is_ok() => Box::new(move || drop(p.unload())),
                _ => continue,
            };
            closes.push(unload);
        }
        // A few closes per thread: enough overlap without a thread per probe of a large serve.
        let per_thread = closes.len().div_ceil(32).max(1);
        let mut closes = closes.into_iter();
        std::thread::scope(|scope| {
            loop {
                let batch: Vec<_> = closes.by_ref().take(per_thread).collect();
                if batch.is_empty() {
                    break;
                }
                scope.spawn(move || batch.into_iter().for_each(|close| close()));
            }
        });
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the memory cgroup. Raising
/// it can fail (a container without CAP_SYS_RESOURCE), which only matters on the older kernels,
/// where creating a map then says so.
fn raise_memlock_limit(verbose: bool) {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 && verbose {
        eprintln!(
            "tracer: cannot raise RLIMIT_MEMLOCK ({}): kernels before 5.11 may refuse maps",
            std::io::Error::last_os_error()
        );
    }
}

/// Where the loading thread mounts a bpffs of its own to hand aya the tool's own maps.
const PRIVATE_BPFFS: &str = "/tmp";

/// The kernel-side names of `tracepoints` for loading BTF tracepoints, unless `mode` rules
/// them out.
pub fn tracepoint_index(
    kernel: &Kernel,
    tracepoints: &[Tracepoint],
    mode: AttachMode,
) -> Result<Option<aya::Btf>> {
    if mode == AttachMode::Classic {
        return Ok(None);
    }
    let names: Vec<&str> = tracepoints
        .iter()
        .filter(|tp| tp.args.is_some())
        .map(|tp| tp.name)
        .collect();
    kernel.btf.tracepoint_index(&names).map(Some)
}

/// Gives the loading thread a mount namespace of its own, for two things aya 0.14 cannot be
/// told otherwise:
///
/// - Its `EbpfLoader::new()` reads and parses all of the kernel's BTF (~30 ms and ~19 MB at
///   every start) even for objects like ours that have no CO-RE relocations to resolve with it
///   (aya after 0.14 parses it lazily). Here that file reads empty, so the eager parse fails at
///   once and is dropped, as `.btf(None)` would drop it anyway.
/// - It reuses a map pinned where it is told to pin one, which is how a tool's own map takes
///   the place of the object's. The pins go to a bpffs mounted only here, so they vanish with
///   the thread, however tracer ends.
///
/// Where this is not permitted (no CAP_SYS_ADMIN), loading works as before, only slower.
fn private_mounts() -> std::io::Result<()> {
    let cstr = |s: &str| std::ffi::CString::new(s).expect("no NUL in constant");
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let (root, null, btf) = (
        cstr("/"),
        cstr("/dev/null"),
        cstr("/sys/kernel/btf/vmlinux"),
    );
    let (bpf, pins) = (cstr("bpf"), cstr(PRIVATE_BPFFS));
    let none = std::ptr::null();
    let private = libc::MS_REC | libc::MS_PRIVATE;
    // SAFETY: plain syscalls on NUL-terminated strings; they change only this thread's view of
    // the mounts (unshare gives it a private copy of the mount namespace).
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(none, root.as_ptr(), none, private, none.cast()))?;
        check(libc::mount(
            null.as_ptr(),
            btf.as_ptr(),
            none,
            libc::MS_BIND,
            none.cast(),
        ))?;
        check(libc::mount(
            bpf.as_ptr(),
            pins.as_ptr(),
            bpf.as_ptr(),
            0,
            none.cast(),
        ))?;
    }
    Ok(())
}

/// A load error without the verifier's log, which is only printed with `-v`.
fn rejected(program: &str, err: ProgramError, verbose: bool) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if verbose {
                eprintln!("tracer: verifier log for {program}:\n{verifier_log}");
            }
            let hint = if verbose {
                ""
            } else {
                " (-v shows the verifier log)"
            };
            anyhow!("the kernel rejected program {program}: {io_error}{hint}")
        }
        err => anyhow!("cannot load program {program}: {err}"),
    }
}

/// Runs `run` on each item, half of them on a second thread: the verifier takes most of the
/// time of starting up.
fn on_two_threads<T: Send>(items: &mut [T], run: impl Fn(&mut T) + Sync) {
    let (first, second) = items.split_at_mut(items.len() / 2);
    std::thread::scope(|scope| {
        scope.spawn(|| first.iter_mut().for_each(&run));
        second.iter_mut().for_each(&run);
    });
}

/// Loading and attaching one tracepoint's classic program.
struct ClassicAttach<'a> {
    tracepoint: &'a Tracepoint,
    name: String,
    program: Option<&'a mut TracePoint>,
    result: Result<()>,
}

impl ClassicAttach<'_> {
    fn run(&mut self, verbose: bool) {
        let Some(program) = self.program.as_deref_mut() else {
            return;
        };
        let tp = self.tracepoint;
        self.result = (|| {
            if program.fd().is_err() {
                program
                    .load()
                    .map_err(|err| rejected(&self.name, err, verbose))?;
            }
            program
                .attach(tp.category, tp.name)
                .with_context(|| format!("cannot attach {}:{}", tp.category, tp.name))?;
            Ok(())
        })();
    }
}

/// Loading one tracepoint's BTF program.
struct BtfLoad<'a> {
    tracepoint: &'a Tracepoint,
    result: &'a mut Result<()>,
    program: Option<&'a mut Program>,
}

impl BtfLoad<'_> {
    fn run(&mut self, index: &Btf, verbose: bool) {
        let name = self.tracepoint.program;
        *self.result = match self.program.as_deref_mut() {
            None => Err(anyhow!("tracer's eBPF object has no program {name}")),
            Some(program) => <&mut BtfTracePoint>::try_from(program)
                .map_err(anyhow::Error::from)
                .and_then(|program| {
                    program
                        .load(self.tracepoint.name, index)
                        .map_err(|err| rejected(name, err, verbose))
                }),
        };
    }
}
