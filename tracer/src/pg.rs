//! `tracer pg`: which PostgreSQL queries are slow, and how much of their time the kernel took
//! from them in reclaim, with per-query counters.

mod wire;

use std::{borrow::Cow, path::PathBuf, rc::Rc};

use anyhow::{Context, Result, bail};
use tracer_common::{
    pg::{Backend, QueryDone, SITE_PROGRAMS, Site, kind, site},
    query::{MAX_SERVERS, origin},
};

use crate::{
    event_loop::{Tool, Window, read_record},
    loader::{Kernel, Probes, Setting, Tracepoint},
    metrics::Metrics,
    options::TraceOptions,
    output::Output,
    perf::{self, Counter},
    processes,
    query::{self, BackendCounters, Queries, Unseen, counters},
    session, socket, sql,
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
    /// --query-len: with --via socket, of each request
    #[command(flatten)]
    pub query: query::Options,
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

/// `tracer pg` as `tracer serve` starts it: the servers and probes it found, ready to load.
pub fn plan(args: Args) -> Result<Box<dyn session::Plan>> {
    Ok(Box::new(PgPlan::new(args)?))
}

pub fn run(args: Args) -> Result<()> {
    // -p names a server, not one process: the kernel side filters by postmaster.
    let mut options = args.trace.clone();
    options.pid = None;
    let slow = args.query.slow.is_some();
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
        let mut tracepoints = query::RECLAIM_TRACEPOINTS.to_vec();
        if socket {
            // A backend's receive and send: the boundaries of client requests, with no trap
            // into the kernel. The kernel programs take the buffers from the registers of the
            // system call below them.
            let sock = socket::sock_tracepoints(args.via_syscalls)?;
            tracepoints.push(socket::receive(sock, "pg_sock_received", "pg_received"));
            tracepoints.push(socket::send(sock, "pg_sock_sent", "pg_send"));
        }
        // Planned through the socket too: that tells a server from any other binary.
        let probes = targets
            .iter()
            .map(|target| probe_sites(target, args.protocol))
            .collect::<Result<Vec<_>>>()?;
        let counters = if args.query.no_counters {
            Vec::new()
        } else {
            counters::choose_counters(&args.query.counters)?
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

    fn records(&self) -> u32 {
        tracer_common::record::tool::PG
    }

    fn tracepoints(&self) -> Vec<Tracepoint> {
        self.tracepoints.clone()
    }

    fn settings(&self, kernel: &Kernel) -> Result<Vec<Setting>> {
        let (options, counters) = (&self.args.query, &self.counters);
        // Through the socket: each request's first bytes, kept from its receipt.
        query::settings(
            kernel,
            "PG_CONFIG",
            &self.servers,
            options,
            counters,
            self.socket,
        )
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
        let counters = counters::usable(counters, probes);
        let attached = if socket {
            crate::socket::say_registers(context.kernel, probes);
            let pids: Vec<String> = servers.iter().map(u32::to_string).collect();
            format!(
                "client sockets of the servers with postmaster pid {}",
                pids.join(", ")
            )
        } else {
            let mut cookie = 0;
            let cookies = context.kernel.btf.has_attach_cookies();
            if !cookies {
                probes.say(format_args!(
                    "a program per probe site (no attach cookies before 5.15)"
                ));
            }
            for sites in &planned {
                attach(probes, sites, &mut cookie, cookies)?;
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
            queries: Queries::new(&args.query, sql::Dialect::Postgres, counters),
            protocol: args.protocol,
            statements: wire::Statements::default(),
            encrypted_backends: 0,
        }))
    }
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
        let exe = processes::exe(pid).with_context(|| format!("no such process: {pid}"))?;
        // A backend's parent runs the same binary: the postmaster.
        let postmaster = match processes::parent(pid) {
            Some(parent)
                if processes::same_file(&processes::exe(parent).unwrap_or_default(), &exe) =>
            {
                parent
            }
            _ => pid,
        };
        let shown = format!("{} (pid {postmaster})", processes::shown(pid));
        return Ok((vec![Target { path: exe, shown }], Some(postmaster)));
    }
    let targets: Vec<Target> = processes::binaries(postmasters())
        .into_iter()
        .map(|(path, pid)| Target {
            path,
            shown: processes::shown(pid),
        })
        .collect();
    if targets.is_empty() {
        bail!(
            "no running PostgreSQL server found: start one, or name it with -p PID or --bin PATH"
        );
    }
    Ok((targets, None))
}

/// Processes running one of the target binaries (and, given servers, belonging to one).
fn running_backends(targets: &[Target], servers: &[u32]) -> Vec<u32> {
    let in_servers = |pid: u32| {
        servers.is_empty()
            || servers.contains(&pid)
            || processes::parent(pid).is_some_and(|parent| servers.contains(&parent))
    };
    processes::all()
        .filter(|&pid| runs_target(pid, targets) && in_servers(pid))
        .collect()
}

fn runs_target(pid: u32, targets: &[Target]) -> bool {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    targets
        .iter()
        .any(|target| processes::same_file(&exe, &target.path))
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

/// Processes running a binary named postgres whose parent does not: the postmasters.
fn postmasters() -> Vec<u32> {
    let is_postgres = |pid: u32| processes::runs_named(pid, &["postgres"]);
    processes::all()
        .filter(|&pid| is_postgres(pid) && !processes::parent(pid).is_some_and(is_postgres))
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

/// Attaches every site, each with its own cookie, or without `cookies`, its own program.
fn attach(probes: &mut Probes, sites: &ProbeSites, cookie: &mut u64, cookies: bool) -> Result<()> {
    for (uprobe, site, name) in &sites.sites {
        *cookie += 1;
        let mut sites: aya::maps::Array<_, Site> =
            aya::maps::Array::try_from(probes.map_mut("PG_SITES")?)?;
        sites
            .set(*cookie as u32, site, 0)
            .context("more probe sites than tracer has room for")?;
        if cookies {
            probes.attach_uprobe("pg_probe", uprobe, *cookie)?;
        } else if *cookie <= u64::from(SITE_PROGRAMS) {
            probes.attach_uprobe(&format!("pg_probe_{cookie}"), uprobe, 0)?;
        } else {
            bail!(
                "more than {SITE_PROGRAMS} probe sites on a kernel without attach cookies \
                 (before 5.15): try --via socket"
            );
        }
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

struct Pg {
    banner: String,
    queries: Queries,
    protocol: Protocol,
    /// Statements parsed by each backend, for requests seen on sockets.
    statements: wire::Statements,
    /// Backends found talking TLS since tracer started, whose requests the socket hides.
    encrypted_backends: u64,
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
                self.queries.new_thread(backend.pid);
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
        let unseen = Unseen {
            field: "encrypted_backends",
            count: self.encrypted_backends,
            text: format!("the requests of {} TLS backends", self.encrypted_backends),
        };
        self.queries.summary(window, &[unseen], out)
    }

    fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.queries.register_metrics(
            metrics,
            "tracer_pg_query",
            "PostgreSQL query latency by normalized query: the --top with the most time at each scrape, the rest as 'other'",
        );
    }

    fn after_batch(&mut self, probes: &mut Probes) -> Result<()> {
        self.queries.after_batch(probes)
    }
}

impl Pg {
    fn query(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        let done: QueryDone = read_record(data)?;
        // As much text as was read follows the header: the query's, or the request's bytes.
        let bytes = &data[size_of::<QueryDone>()..];
        let bytes = &bytes[..(done.text_len as usize).min(bytes.len())];
        if done.origin != origin::SOCKET {
            return self.queries.add_text(&utf8(bytes), &done, out);
        }
        let complete = done.received as usize <= bytes.len();
        let queries = &mut self.queries;
        let key_of = |text: &[u8]| Rc::from(queries.key(&utf8(text)));
        match self
            .statements
            .request(done.task.pid, bytes, complete, key_of)
        {
            Some(wire::Query::Simple(sent)) if self.protocol != Protocol::Extended => {
                self.queries.add_text(&utf8(sent), &done, out)
            }
            Some(wire::Query::Prepared(key)) if self.protocol != Protocol::Simple => {
                self.queries.add_key(&key, &done, out)
            }
            _ => Ok(()),
        }
    }
}

fn utf8(text: &[u8]) -> Cow<'_, str> {
    // Invalid mostly where the text was cut inside a character.
    String::from_utf8_lossy(text)
}
