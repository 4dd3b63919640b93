//! `tracer pg`: which PostgreSQL queries are slow, and how much of their time the kernel took
//! from them in reclaim, with per-query counters.

mod wire;

use std::{
    borrow::Cow,
    collections::HashMap,
    io::Write,
    os::{fd::OwnedFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    rc::Rc,
};

use anyhow::{Context, Result, bail};
use rustc_hash::FxHashMap;
use serde::Serialize;
use tracer_common::{
    pg::{Backend, QueryDone, Site, kind, site},
    query::{COUNTER_SLOTS, MAX_COUNTERS, MAX_SERVERS, MAX_TEXT, QueryConfig, origin},
};

use crate::{
    event_loop::{Tool, Window, read_record},
    histogram::{Latencies, LatencySummary, human_ns},
    kernel_btf::KernelBtf,
    loader::{Kernel, Probes, Setting, Tracepoint},
    metrics::{Metrics, TopHistograms},
    options::TraceOptions,
    output::{self, Align, Output, Table},
    perf::{self, Counter},
    session, sql,
    tracefs::Tracefs,
    usdt::Binary,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// -p takes a postmaster or any of its backends, and traces all of that server's backends
    #[command(flatten)]
    pub trace: TraceOptions,
    /// Trace every server running this postgres binary (default: all running servers)
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    pub bin: Option<PathBuf>,
    /// Bytes of query text to read from the backend (with --via socket: of each request)
    #[arg(long, value_name = "BYTES", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=MAX_TEXT as i64))]
    pub query_len: u32,
    /// Show query text as sent, literals included (they can hold secrets)
    #[arg(long)]
    pub raw: bool,
    /// Print one line per query that takes at least MS milliseconds
    #[arg(long, value_name = "MS")]
    pub slow: Option<f64>,
    /// Counters to charge queries with (default: LLC references and misses, or software
    /// counters without a hardware PMU)
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1..=MAX_COUNTERS)]
    pub counters: Vec<Counter>,
    /// Charge queries with no counters (a little less overhead)
    #[arg(long, conflicts_with = "counters")]
    pub no_counters: bool,
    /// Rows in the per-query table
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Which queries to time. Every probe a query passes costs it a trap into the kernel, and
    /// a simple-protocol query passes both kinds. Through the socket: requests with a Query
    /// message (simple) or an Execute (extended).
    #[arg(long, value_enum, default_value_t = Protocol::All)]
    pub protocol: Protocol,
    /// Where queries begin and end
    #[arg(long, value_enum, default_value_t = Via::Probes)]
    pub via: Via,
    /// With --via socket, take requests from the system call tracepoints even where the sock
    /// ones exist: what kernels before 6.3 get, for tests
    #[arg(long, hide = true)]
    pub via_syscalls: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// USDT probes in the server (uprobes on PortalRun() without them): each statement
    /// exactly, at the cost of a trap into the kernel at every probe
    Probes,
    /// The backend's client socket: from receiving a request to sending the ReadyForQuery
    /// that ends its answer. No traps; one call per round trip (a multi-statement query or a
    /// pipeline counts once); plaintext connections only; servers running when tracer starts
    Socket,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Simple-protocol queries, parse to commit (2 probe hits per query instead of 4)
    Simple,
    /// Portal runs: extended-protocol Executes, and each statement of a simple query as its
    /// execution alone
    Extended,
    /// Both: simple queries whole, extended-protocol Executes
    All,
}

const BEGIN_ARGS: &[&str] = &["int", "gfp_t"];
const END_ARGS: &[&str] = &["long unsigned int"];

/// Reclaim stalls, charged to the query the stalled backend is running.
const TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_direct_reclaim_begin",
        program: "query_direct_reclaim_begin",
        args: Some(BEGIN_ARGS),
        fields: &[],
    },
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_direct_reclaim_end",
        program: "query_direct_reclaim_end",
        args: Some(END_ARGS),
        fields: &[],
    },
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_memcg_reclaim_begin",
        program: "query_memcg_reclaim_begin",
        args: Some(BEGIN_ARGS),
        fields: &[],
    },
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_memcg_reclaim_end",
        program: "query_memcg_reclaim_end",
        args: Some(END_ARGS),
        fields: &[],
    },
];

/// A backend's socket receive and send: the boundaries of client requests, with no trap into
/// the kernel. The kernel programs take the buffers from the registers of the system call
/// below them (recv() or read(), send() or write()).
const SOCKET_TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        category: "sock",
        name: "sock_recv_length",
        program: "pg_sock_received",
        args: Some(SOCK_LENGTH_ARGS),
        fields: &[("ret", 20, 4)],
    },
    Tracepoint {
        category: "sock",
        name: "sock_send_length",
        program: "pg_sock_sent",
        args: Some(SOCK_LENGTH_ARGS),
        fields: &[("ret", 20, 4)],
    },
];

const SOCK_LENGTH_ARGS: &[&str] = &["struct sock *", "int", "int"];

/// The same before Linux 6.3, which has no sock tracepoints: the system calls PostgreSQL
/// makes, recv() and send(). Enabling any of them takes every system call on the machine
/// through the slower path of traced ones.
const SYSCALL_TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        category: "syscalls",
        name: "sys_exit_recvfrom",
        program: "pg_received",
        args: None,
        fields: &[("ret", 16, 8)],
    },
    Tracepoint {
        category: "syscalls",
        name: "sys_enter_sendto",
        program: "pg_send",
        args: None,
        fields: &[("buff", 24, 8), ("len", 32, 8)],
    },
];

/// Ring buffer for query records: at 40k queries/s of ~300 bytes, 100 ms of them.
const RING_BYTES: u32 = 16 << 20;

/// `tracer pg` as `tracer serve` starts it: the servers and probes it found, ready to load.
pub fn plan(args: Args) -> Result<Box<dyn session::Plan>> {
    Ok(Box::new(PgPlan::new(args)?))
}

pub fn run(args: Args) -> Result<()> {
    // -p names a server, not one process: the kernel side filters by postmaster.
    let mut options = args.trace.clone();
    options.pid = None;
    let slow = args.slow.is_some();
    session::run(&options, Box::new(PgPlan::new(args)?), slow)
}

/// What `tracer pg` found to trace before loading anything.
struct PgPlan {
    args: Args,
    socket: bool,
    targets: Vec<Target>,
    servers: Vec<u32>,
    tracepoints: Vec<Tracepoint>,
    probes: Vec<ProbeSites>,
    counters: Vec<Counter>,
}

impl PgPlan {
    fn new(args: Args) -> Result<Self> {
        let socket = args.via == Via::Socket;
        let (targets, server_pid) = targets(&args)?;
        // Only probes tell postgres from other processes: through sockets, the kernel side
        // keeps the backends of the servers running now.
        let servers = match server_pid {
            Some(pid) => vec![pid],
            None if socket => running_servers(&targets)?,
            None => Vec::new(),
        };
        if servers.len() > MAX_SERVERS {
            bail!(
                "{} PostgreSQL servers run here, more than tracer tells apart ({MAX_SERVERS}): name one with -p PID",
                servers.len()
            );
        }
        let mut tracepoints = TRACEPOINTS.to_vec();
        if socket {
            let sock = !args.via_syscalls
                && Tracefs::locate()?
                    .format("sock", "sock_recv_length")
                    .is_ok();
            tracepoints.extend(if sock {
                SOCKET_TRACEPOINTS
            } else {
                SYSCALL_TRACEPOINTS
            });
        }
        // Planned through the socket too: that tells a server from any other binary.
        let probes = targets
            .iter()
            .map(|target| probe_sites(target, args.protocol))
            .collect::<Result<Vec<_>>>()?;
        let counters = if args.no_counters {
            Vec::new()
        } else {
            choose_counters(&args.counters)?
        };
        Ok(Self {
            args,
            socket,
            targets,
            servers,
            tracepoints,
            probes,
            counters,
        })
    }
}

impl session::Plan for PgPlan {
    fn name(&self) -> &'static str {
        "pg"
    }

    fn tracepoints(&self) -> Vec<Tracepoint> {
        self.tracepoints.clone()
    }

    fn settings(&self, kernel: &Kernel) -> Result<Vec<Setting>> {
        let per_backend_events = needs_perf_events(&self.counters);
        let servers = &self.servers;
        let mut config = QueryConfig {
            server_count: servers.len() as u32,
            text_len: self.args.query_len,
            counters: self.counters.len() as u32,
            task_real_parent: real_parent(&kernel.btf)?,
            task_counters: if per_backend_events {
                Default::default()
            } else {
                task_counters(&kernel.btf, &self.counters)?
            },
            ..Default::default()
        };
        config.servers[..servers.len()].copy_from_slice(servers);
        let mut settings = vec![
            Setting::global("PG_CONFIG", &config),
            Setting::MapSize {
                name: "EVENTS",
                size: RING_BYTES,
            },
            Setting::MapSize {
                name: "QUERY_THREADS",
                size: 16384,
            },
        ];
        if self.socket {
            // Preallocated (an LRU map): 9 MB, room for more backends than servers allow.
            settings.push(Setting::MapSize {
                name: "PG_REQUESTS",
                size: 4096,
            });
        }
        if per_backend_events {
            settings.push(Setting::OwnMap {
                name: "QUERY_COUNTERS",
                map: perf::create_event_array("QUERY_COUNTERS", COUNTER_SLOTS)?,
            });
        }
        Ok(settings)
    }

    fn start(self: Box<Self>, context: &mut session::Context) -> Result<Box<dyn Tool>> {
        let Self {
            args,
            socket,
            targets,
            servers,
            probes: planned,
            counters,
            ..
        } = *self;
        let probes = &mut *context.probes;
        let counters = if !needs_perf_events(&counters) || probes.own_maps {
            counters
        } else {
            eprintln!(
                "tracer: per-query counters need a private mount namespace (CAP_SYS_ADMIN): leaving them out"
            );
            Vec::new()
        };
        let attached = if socket {
            let pids: Vec<String> = servers.iter().map(u32::to_string).collect();
            format!(
                "client sockets of the servers with postmaster pid {}",
                pids.join(", ")
            )
        } else {
            let mut cookie = 0;
            for sites in &planned {
                attach(probes, sites, &mut cookie)?;
            }
            let used: Vec<&str> = planned.iter().map(|sites| sites.used.as_str()).collect();
            used.join("; ")
        };
        let mut counters = BackendCounters::new(counters);
        // Perf counters: running backends get theirs now, later ones when their first query
        // shows them.
        for pid in running_backends(&targets, &servers) {
            counters.add(probes, pid)?;
        }
        Ok(Box::new(Pg {
            banner: format!("Tracing PostgreSQL queries: {attached}... Hit Ctrl-C to end."),
            counters,
            raw: args.raw,
            protocol: args.protocol,
            statements: wire::Statements::default(),
            encrypted_backends: 0,
            slow_ns: args.slow.map(|ms| (ms * 1e6) as u64),
            top: args.top,
            normalizer: sql::Normalizer::new(sql::Dialect::Postgres),
            window: Totals::default(),
            new_backends: Vec::new(),
            metrics: None,
        }))
    }
}

fn real_parent(btf: &KernelBtf) -> Result<u32> {
    btf.member_offset("task_struct", "real_parent")
}

/// Whether `counters` are read through perf events opened per backend: hardware ones are, and
/// then all of them; software ones alone are read where the kernel keeps them in every task,
/// which costs nothing between queries (a perf event is switched at every context switch).
fn needs_perf_events(counters: &[Counter]) -> bool {
    counters
        .iter()
        .any(|counter| counter.task_members().is_none())
}

/// Where the kernel keeps each of `counters` in `task_struct`.
fn task_counters(btf: &KernelBtf, counters: &[Counter]) -> Result<[[u32; 2]; MAX_COUNTERS]> {
    let mut fields = [[0; 2]; MAX_COUNTERS];
    for (offsets, counter) in fields.iter_mut().zip(counters) {
        let members = counter.task_members().unwrap_or_default();
        for (offset, member) in offsets.iter_mut().zip(members) {
            *offset = btf.member_offset("task_struct", member)?;
        }
    }
    Ok(fields)
}

/// A postgres binary to attach to, as a path the kernel can resolve from here (through
/// /proc/PID/exe for a server in another mount namespace).
struct Target {
    path: PathBuf,
    /// What to call it in messages.
    shown: String,
}

/// The binaries to attach to and, with -p, the postmaster whose backends to keep.
fn targets(args: &Args) -> Result<(Vec<Target>, Option<u32>)> {
    if let Some(bin) = &args.bin {
        let shown = bin.display().to_string();
        return Ok((
            vec![Target {
                path: bin.clone(),
                shown,
            }],
            None,
        ));
    }
    if let Some(pid) = args.trace.pid {
        crate::options::check_pid(pid)?;
        let exe = exe_of(pid).with_context(|| format!("no such process: {pid}"))?;
        let parent = parent_of(pid);
        // A backend's parent runs the same binary: the postmaster.
        let postmaster = match parent {
            Some(parent) if same_file(&exe_of(parent).unwrap_or_default(), &exe) => parent,
            _ => pid,
        };
        let shown = format!("{} (pid {postmaster})", link_target(pid));
        return Ok((vec![Target { path: exe, shown }], Some(postmaster)));
    }
    let mut targets: Vec<Target> = Vec::new();
    let mut seen = Vec::new();
    for pid in postmasters() {
        let exe = exe_of(pid).unwrap_or_default();
        let Ok(meta) = std::fs::metadata(&exe) else {
            continue;
        };
        if !seen.contains(&(meta.dev(), meta.ino())) {
            seen.push((meta.dev(), meta.ino()));
            targets.push(Target {
                path: exe,
                shown: link_target(pid),
            });
        }
    }
    if targets.is_empty() {
        bail!(
            "no running PostgreSQL server found: start one, or name it with -p PID or --bin PATH"
        );
    }
    Ok((targets, None))
}

fn exe_of(pid: u32) -> Option<PathBuf> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    exe.exists().then_some(exe)
}

fn link_target(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_or_else(|_| format!("pid {pid}"), |path| path.display().to_string())
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm may hold spaces and parentheses: fields resume after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Processes running one of the target binaries (and, given servers, belonging to one).
fn running_backends(targets: &[Target], servers: &[u32]) -> Vec<u32> {
    let in_servers = |pid: u32| {
        servers.is_empty()
            || servers.contains(&pid)
            || parent_of(pid).is_some_and(|parent| servers.contains(&parent))
    };
    processes()
        .filter(|&pid| runs_target(pid, targets) && in_servers(pid))
        .collect()
}

fn runs_target(pid: u32, targets: &[Target]) -> bool {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    targets.iter().any(|target| same_file(&exe, &target.path))
}

/// The postmasters running one of the target binaries.
fn running_servers(targets: &[Target]) -> Result<Vec<u32>> {
    let servers: Vec<u32> = postmasters()
        .into_iter()
        .filter(|&pid| runs_target(pid, targets))
        .collect();
    if servers.is_empty() {
        let shown: Vec<&str> = targets.iter().map(|target| target.shown.as_str()).collect();
        bail!(
            "no PostgreSQL server runs {}: --via socket traces servers running when it starts",
            shown.join(", ")
        );
    }
    Ok(servers)
}

fn processes() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

/// Processes running a binary named postgres whose parent does not: the postmasters.
fn postmasters() -> Vec<u32> {
    let is_postgres = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.file_name().is_some_and(|name| name == "postgres"))
    };
    processes()
        .filter(|&pid| is_postgres(pid) && !parent_of(pid).is_some_and(is_postgres))
        .collect()
}

/// Where to attach in one binary: USDT probes where it has them, else uprobes on PortalRun.
struct ProbeSites {
    sites: Vec<(perf::Uprobe, Site, String)>,
    /// What was chosen, for the banner.
    used: String,
}

fn probe_sites(target: &Target, protocol: Protocol) -> Result<ProbeSites> {
    let binary = Binary::open(&target.path)?;
    let query_string = binary
        .symbol("debug_query_string")
        .map_or(0, |(address, _)| address);
    let query = [
        ("query__start", site::QUERY_START),
        ("query__done", site::QUERY_DONE),
    ];
    let execute = [
        ("query__execute__start", site::EXECUTE_START),
        ("query__execute__done", site::EXECUTE_DONE),
    ];
    let (wanted, used) = match protocol {
        Protocol::Simple => (query.to_vec(), "USDT postgresql:query__start/done"),
        Protocol::Extended => (
            execute.to_vec(),
            "USDT postgresql:query__execute__start/done",
        ),
        Protocol::All => (
            [query, execute].concat(),
            "USDT postgresql:query__start/done and query__execute__start/done",
        ),
    };
    let mut sites = Vec::new();
    for probe in binary.probes("postgresql")? {
        let Some(&(_, kind)) = wanted.iter().find(|(name, _)| *name == probe.name) else {
            continue;
        };
        let query = match kind {
            site::QUERY_START | site::QUERY_DONE => probe.arg(0)?,
            _ => Default::default(),
        };
        let uprobe = perf::Uprobe {
            path: target.path.clone(),
            offset: probe.file_offset,
            semaphore: probe.semaphore,
            retprobe: false,
        };
        let site = Site {
            kind,
            query,
            address: probe.address,
            query_string,
            ..Site::default()
        };
        sites.push((uprobe, site, format!("postgresql:{}", probe.name)));
    }
    let starts = |kind| sites.iter().any(|(_, site, _)| site.kind == kind);
    if starts(site::QUERY_START) || starts(site::EXECUTE_START) {
        return Ok(ProbeSites {
            sites,
            used: format!("{} ({used})", target.shown),
        });
    }
    // No USDT: a portal run per statement, from the exported PortalRun().
    let (address, offset) = binary.symbol("PortalRun").with_context(|| {
        format!(
            "{} is not a PostgreSQL server: it has neither postgresql USDT probes nor a PortalRun symbol",
            target.shown
        )
    })?;
    if protocol == Protocol::Simple {
        bail!(
            "{} has no postgresql:query__start/done USDT probes: only portal runs can be traced (--protocol extended)",
            target.shown
        );
    }
    let sites = [(site::EXECUTE_START, false), (site::EXECUTE_DONE, true)]
        .map(|(kind, retprobe)| {
            let uprobe = perf::Uprobe {
                path: target.path.clone(),
                offset,
                semaphore: 0,
                retprobe,
            };
            let site = Site {
                kind,
                address,
                query_string,
                ..Site::default()
            };
            (uprobe, site, "PortalRun".to_owned())
        })
        .into_iter()
        .collect();
    Ok(ProbeSites {
        sites,
        used: format!(
            "{} (no USDT probes: uprobes on PortalRun() entry and return)",
            target.shown
        ),
    })
}

/// Attaches every site, each with its own cookie.
fn attach(probes: &mut Probes, sites: &ProbeSites, cookie: &mut u64) -> Result<()> {
    for (uprobe, site, name) in &sites.sites {
        *cookie += 1;
        let mut sites: aya::maps::Array<_, Site> =
            aya::maps::Array::try_from(probes.map_mut("PG_SITES")?)?;
        sites
            .set(*cookie as u32, site, 0)
            .context("more probe sites than tracer has room for")?;
        probes.attach_uprobe("pg_probe", uprobe, *cookie)?;
        let semaphore = if uprobe.semaphore != 0 {
            ", semaphore"
        } else {
            ""
        };
        probes.say(format_args!(
            "{name} at {:#x} in {}{semaphore}",
            uprobe.offset,
            uprobe.path.display()
        ));
    }
    Ok(())
}

/// The counters to use: the user's, else LLC where the CPU exposes a PMU, else software ones.
fn choose_counters(requested: &[Counter]) -> Result<Vec<Counter>> {
    let tid = unsafe { libc::gettid() } as u32;
    if !requested.is_empty() {
        for counter in requested {
            counter
                .open(tid)
                .with_context(|| format!("counter {} is not available here", counter.name()))?;
        }
        return Ok(requested.to_vec());
    }
    match Counter::LlcReferences.open(tid) {
        Ok(_) => Ok(vec![Counter::LlcReferences, Counter::LlcMisses]),
        Err(err) => {
            eprintln!(
                "tracer: no hardware PMU here ({err}): counting page-faults, context-switches and cpu-migrations per query instead of LLC"
            );
            Ok(vec![
                Counter::PageFaults,
                Counter::ContextSwitches,
                Counter::CpuMigrations,
            ])
        }
    }
}

/// Per-query counters. Those the kernel keeps in every task are read there; the others are
/// per-backend perf events, opened when a backend runs its first traced query and closed when
/// it is gone. Either way they count the backend thread itself wherever it runs, so a query
/// that moves to another CPU is still charged exactly its own events.
struct BackendCounters {
    kinds: Vec<Counter>,
    /// Whether they are perf events opened per backend (see [`needs_perf_events`]).
    per_backend_events: bool,
    open: HashMap<u32, (u32, Vec<OwnedFd>)>,
    free_slots: Vec<u32>,
}

impl BackendCounters {
    fn new(kinds: Vec<Counter>) -> Self {
        let per_backend = kinds.len().max(1) as u32;
        Self {
            free_slots: (0..COUNTER_SLOTS / per_backend)
                .rev()
                .map(|slot| slot * per_backend)
                .collect(),
            per_backend_events: needs_perf_events(&kinds),
            kinds,
            open: HashMap::new(),
        }
    }

    fn add(&mut self, probes: &mut Probes, tid: u32) -> Result<()> {
        if !self.per_backend_events || self.open.contains_key(&tid) {
            return Ok(());
        }
        self.forget_exited(probes)?;
        let Some(first) = self.free_slots.pop() else {
            return Ok(()); // More backends than slots: the rest go without counters.
        };
        let mut fds = Vec::new();
        for counter in &self.kinds {
            match counter.open(tid) {
                Ok(fd) => fds.push(fd),
                // The backend is already gone.
                Err(_) => {
                    self.free_slots.push(first);
                    return Ok(());
                }
            }
        }
        {
            let events = probes.map_mut("QUERY_COUNTERS")?;
            let map_fd = perf_map_fd(events)?;
            for (i, fd) in fds.iter().enumerate() {
                perf::store_event(map_fd, first + i as u32, fd)?;
            }
        }
        let mut slots: aya::maps::HashMap<_, u32, u32> =
            aya::maps::HashMap::try_from(probes.map_mut("QUERY_COUNTER_SLOTS")?)?;
        slots.insert(tid, first, 0)?;
        self.open.insert(tid, (first, fds));
        Ok(())
    }

    fn forget_exited(&mut self, probes: &mut Probes) -> Result<()> {
        let gone: Vec<u32> = self
            .open
            .keys()
            .copied()
            .filter(|tid| !Path::new(&format!("/proc/{tid}")).exists())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let mut slots: aya::maps::HashMap<_, u32, u32> =
            aya::maps::HashMap::try_from(probes.map_mut("QUERY_COUNTER_SLOTS")?)?;
        for tid in gone {
            let _ = slots.remove(&tid);
            if let Some((first, _fds)) = self.open.remove(&tid) {
                self.free_slots.push(first);
            }
        }
        Ok(())
    }
}

fn perf_map_fd(map: &aya::maps::Map) -> Result<std::os::fd::BorrowedFd<'_>> {
    use std::os::fd::AsFd;
    match map {
        aya::maps::Map::PerfEventArray(data) => Ok(data.fd().as_fd()),
        _ => bail!("QUERY_COUNTERS is not a perf event array"),
    }
}

struct Pg {
    banner: String,
    counters: BackendCounters,
    raw: bool,
    protocol: Protocol,
    /// Statements parsed by each backend, for requests seen on sockets.
    statements: wire::Statements,
    /// Backends found talking TLS since tracer started, whose requests the socket hides.
    encrypted_backends: u64,
    slow_ns: Option<u64>,
    top: usize,
    normalizer: sql::Normalizer,
    window: Totals,
    /// Backends seen for the first time, whose counters to open once the probes are at hand.
    new_backends: Vec<u32>,
    /// `tracer serve`'s latency per normalized query.
    metrics: Option<TopHistograms>,
}

#[derive(Default)]
struct Totals {
    all: Latencies,
    queries: FxHashMap<Rc<str>, QueryStats>,
}

#[derive(Default)]
struct QueryStats {
    latencies: Latencies,
    reclaim_ns: u64,
    reclaim_count: u64,
    counters: [u64; MAX_COUNTERS],
    /// Calls whose counters were read (with perf counters, a backend's first query goes
    /// without).
    counted_calls: u64,
}

impl Tool for Pg {
    fn start(&mut self, _out: &mut Output) -> Result<()> {
        eprintln!("{}", self.banner);
        Ok(())
    }

    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        match read_record::<u32>(data)? {
            kind::BACKEND => {
                let backend: Backend = read_record(data)?;
                self.new_backends.push(backend.pid);
                Ok(())
            }
            kind::QUERY => self.query(data, out),
            kind::ENCRYPTED => {
                let backend: Backend = read_record(data)?;
                if self.encrypted_backends == 0 {
                    eprintln!(
                        "tracer: backend {} talks TLS: --via socket cannot read its requests (--via probes can)",
                        backend.pid
                    );
                }
                self.encrypted_backends += 1;
                Ok(())
            }
            other => bail!("unknown pg record kind {other}"),
        }
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        let totals = std::mem::take(&mut self.window);
        if out.json {
            return Ok(out.json_line(&self.summary_json(&totals, window))?);
        }
        self.print_summary(&totals, window, out)
    }

    fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.metrics = Some(metrics.top_histograms(
            "tracer_query",
            "PostgreSQL query latency by normalized query: the --top with the most time at each scrape, the rest as 'other'",
            "query",
            self.top,
        ));
    }

    fn after_batch(&mut self, probes: &mut Probes) -> Result<()> {
        for tid in std::mem::take(&mut self.new_backends) {
            self.counters.add(probes, tid)?;
        }
        Ok(())
    }
}

impl Pg {
    fn query(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        let done: QueryDone = read_record(data)?;
        // As much text as was read follows the header: the query's, or the request's bytes.
        let bytes = &data[size_of::<QueryDone>()..];
        let bytes = &bytes[..(done.text_len as usize).min(bytes.len())];
        let Self {
            normalizer,
            raw,
            statements,
            protocol,
            ..
        } = self;
        let (text, prepared);
        let key = if done.origin == origin::SOCKET {
            let complete = done.received as usize <= bytes.len();
            let key_of = |text: &[u8]| Rc::from(table_key(normalizer, *raw, &utf8(text)));
            match statements.request(done.task.pid, bytes, complete, key_of) {
                Some(wire::Query::Simple(sent)) if *protocol != Protocol::Extended => {
                    text = utf8(sent);
                    table_key(normalizer, *raw, &text)
                }
                Some(wire::Query::Prepared(key)) if *protocol != Protocol::Simple => {
                    prepared = key;
                    &*prepared
                }
                _ => return Ok(()),
            }
        } else {
            text = utf8(bytes);
            table_key(normalizer, *raw, &text)
        };
        let stats = match self.window.queries.get_mut(key) {
            Some(stats) => stats,
            None => self.window.queries.entry(Rc::from(key)).or_default(),
        };
        stats.latencies.record(done.latency_ns);
        stats.reclaim_ns += done.reclaim_ns;
        stats.reclaim_count += done.reclaim_count as u64;
        if done.counters_valid != 0 {
            stats.counted_calls += 1;
            for (total, delta) in stats.counters.iter_mut().zip(done.counters) {
                *total += delta;
            }
        }
        self.window.all.record(done.latency_ns);
        if let Some(metrics) = &self.metrics {
            metrics.observe(key, done.latency_ns as f64 / 1e9);
        }
        if self.slow_ns.is_some_and(|slow| done.latency_ns >= slow) {
            let key = key.to_owned();
            self.print_slow(&done, &key, out)?;
        }
        Ok(())
    }

    fn print_slow(&self, done: &QueryDone, query: &str, out: &mut Output) -> Result<()> {
        let time = out.clock().wall(done.start_ns + done.latency_ns);
        if out.json {
            out.json_line(&SlowJson {
                r#type: "slow_query",
                time: output::rfc3339(time),
                pid: done.task.pid,
                latency_us: done.latency_ns as f64 / 1000.0,
                reclaim_us: done.reclaim_ns as f64 / 1000.0,
                reclaim_stalls: done.reclaim_count,
                counters: self.counter_values(&done.counters, done.counters_valid != 0),
                query,
            })?;
        } else {
            writeln!(
                out,
                "{} {:>7} {:>10.3} {:>10.3} {}",
                output::clock_time(time),
                done.task.pid,
                done.latency_ns as f64 / 1e6,
                done.reclaim_ns as f64 / 1e6,
                query
            )?;
        }
        Ok(())
    }

    fn counter_values(
        &self,
        values: &[u64; MAX_COUNTERS],
        valid: bool,
    ) -> Option<HashMap<&'static str, u64>> {
        valid.then(|| {
            self.counters
                .kinds
                .iter()
                .zip(values)
                .map(|(counter, value)| (counter.name(), *value))
                .collect()
        })
    }

    /// Queries by total time, most first.
    fn ranked<'a>(&self, totals: &'a Totals) -> Vec<(&'a Rc<str>, &'a QueryStats)> {
        let mut ranked: Vec<_> = totals.queries.iter().collect();
        ranked.sort_by(|a, b| {
            b.1.latencies
                .total_ns()
                .cmp(&a.1.latencies.total_ns())
                .then(a.0.cmp(b.0))
        });
        ranked
    }

    fn print_summary(&self, totals: &Totals, window: &Window, out: &mut Output) -> Result<()> {
        let time = output::clock_time(window.end);
        let secs = window.length.as_secs_f64();
        let all = &totals.all;
        let unseen = match self.encrypted_backends {
            0 => String::new(),
            backends => format!("; unseen: the requests of {backends} TLS backends"),
        };
        if all.count() == 0 {
            writeln!(
                out,
                "{time}  no queries in {secs:.1}s; lost: {}{unseen}",
                window.lost
            )?;
            return Ok(());
        }
        writeln!(
            out,
            "{time}  {} queries in {secs:.1}s ({:.0}/s), {} in all; lost: {}{unseen}",
            all.count(),
            all.count() as f64 / secs,
            human_ns(all.total_ns()),
            window.lost
        )?;
        write!(out, "{}", all.render_log2())?;
        writeln!(out, "     {}\n", all.percentiles_line())?;
        let llc = self.counters.kinds.first() == Some(&Counter::LlcReferences);
        let mut columns = vec![
            ("CALLS", Align::Right),
            ("TOTAL", Align::Right),
            ("MEAN", Align::Right),
            ("P50", Align::Right),
            ("P99", Align::Right),
            ("MAX", Align::Right),
            ("RECLAIM", Align::Right),
            ("STALLS", Align::Right),
        ];
        if llc {
            columns.push(("LLC HIT%", Align::Right));
        } else {
            columns.extend(
                self.counters
                    .kinds
                    .iter()
                    .map(|counter| (per_call_header(*counter), Align::Right)),
            );
        }
        columns.push(("QUERY", Align::Left));
        let mut table = Table::new(&columns);
        for (query, stats) in self.ranked(totals).into_iter().take(self.top) {
            let latencies = &stats.latencies;
            let mut row = vec![
                latencies.count().to_string(),
                human_ns(latencies.total_ns()),
                human_ns(latencies.total_ns() / latencies.count().max(1)),
                human_ns(latencies.quantile_ns(0.5)),
                human_ns(latencies.quantile_ns(0.99)),
                human_ns(latencies.max_ns()),
                human_ns(stats.reclaim_ns),
                stats.reclaim_count.to_string(),
            ];
            let per_call = |total: u64| match stats.counted_calls {
                0 => "-".to_string(),
                calls => format!("{:.1}", total as f64 / calls as f64),
            };
            if llc {
                row.push(match stats.counters[0] {
                    0 => "-".into(),
                    references => format!(
                        "{:.1}",
                        100.0 * (1.0 - stats.counters[1] as f64 / references as f64)
                    ),
                });
            } else {
                row.extend(
                    stats.counters[..self.counters.kinds.len()]
                        .iter()
                        .map(|&total| per_call(total)),
                );
            }
            row.push(shorten(query, 120));
            table.row(row);
        }
        write!(out, "{}", table.render())?;
        Ok(())
    }

    fn summary_json<'a>(&self, totals: &'a Totals, window: &Window) -> SummaryJson<'a> {
        SummaryJson {
            r#type: "summary",
            time: output::rfc3339(window.end),
            interval_s: window.length.as_secs_f64(),
            lost: window.lost,
            encrypted_backends: self.encrypted_backends,
            counters: self
                .counters
                .kinds
                .iter()
                .map(|counter| counter.name())
                .collect(),
            latency: totals.all.summary(),
            queries: self
                .ranked(totals)
                .into_iter()
                .map(|(query, stats)| QueryJson {
                    query,
                    calls: stats.latencies.count(),
                    latency: stats.latencies.summary(),
                    reclaim_us: stats.reclaim_ns as f64 / 1000.0,
                    reclaim_stalls: stats.reclaim_count,
                    counted_calls: stats.counted_calls,
                    counters: self
                        .counters
                        .kinds
                        .iter()
                        .zip(stats.counters)
                        .map(|(counter, total)| (counter.name(), total))
                        .collect(),
                })
                .collect(),
        }
    }
}

fn utf8(text: &[u8]) -> Cow<'_, str> {
    // Invalid mostly where the text was cut inside a character.
    String::from_utf8_lossy(text)
}

/// What a query is counted under: its text normalized, or as sent with --raw.
fn table_key<'a>(normalizer: &'a mut sql::Normalizer, raw: bool, text: &'a str) -> &'a str {
    if raw {
        text
    } else {
        normalizer.normalize(text)
    }
}

fn per_call_header(counter: Counter) -> &'static str {
    match counter {
        Counter::LlcReferences => "LLCREF/CALL",
        Counter::LlcMisses => "LLCMISS/CALL",
        Counter::PageFaults => "FAULTS/CALL",
        Counter::ContextSwitches => "CSW/CALL",
        Counter::CpuMigrations => "MIGR/CALL",
    }
}

fn shorten(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[derive(Serialize)]
struct SlowJson<'a> {
    r#type: &'static str,
    time: String,
    pid: u32,
    latency_us: f64,
    reclaim_us: f64,
    reclaim_stalls: u32,
    counters: Option<HashMap<&'static str, u64>>,
    query: &'a str,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    r#type: &'static str,
    time: String,
    interval_s: f64,
    lost: u64,
    /// Backends found talking TLS so far, whose requests --via socket cannot read.
    encrypted_backends: u64,
    counters: Vec<&'static str>,
    latency: LatencySummary,
    queries: Vec<QueryJson<'a>>,
}

#[derive(Serialize)]
struct QueryJson<'a> {
    query: &'a str,
    calls: u64,
    latency: LatencySummary,
    reclaim_us: f64,
    reclaim_stalls: u64,
    /// Calls whose counters were read; `counters` are their totals.
    counted_calls: u64,
    counters: HashMap<&'static str, u64>,
}
