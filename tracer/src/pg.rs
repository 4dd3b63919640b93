//! `tracer pg`: which PostgreSQL queries are slow, and how much of their time the kernel took
//! from them in reclaim, with per-query counters.

mod servers;
mod sites;
pub(crate) mod wire;

use std::{
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use rustc_hash::{FxHashMap, FxHashSet};
use tracer_common::{
    pg::{Backend, NewBackend, QueryDone, Spilled, kind},
    query::origin,
    record::tool,
};

use crate::manual::Example;
use crate::{
    event_loop::{Tool, Window, read_record},
    loader::{Kernel, Probes, Setting, Tracepoint},
    metrics::Metrics,
    options::TraceOptions,
    output::Output,
    perf::Counter,
    processes,
    query::{self, Aside, BackendCounters, Client, Queries, Ran, counters},
    session, socket, sql,
    tls::{self, OpensslProbes},
};
use servers::{Servers, Target};
use sites::{ProbeSites, Sites};

/// What `tracer --help` and the man page show first.
pub const EXAMPLES: &[Example] = &[
    Example {
        what: "Every PostgreSQL server's queries: latency per normalized query, reclaim stalls inside them",
        command: "sudo tracer pg",
    },
    Example {
        what: "One server (a postmaster or any of its backends), a table every 10 seconds, a row per database",
        command: "sudo tracer pg -p 4321 --by database 10",
    },
    Example {
        what: "Where each query's time went: on CPU, run queue, blocked, sleeping, throttled, I/O",
        command: "sudo tracer pg --breakdown",
    },
    Example {
        what: "One line per query of 100 ms or more",
        command: "sudo tracer pg --slow 100",
    },
    Example {
        what: "Every statement exactly, through the server's USDT probes (a trap per probe)",
        command: "sudo tracer pg --via probes --json -d 60",
    },
];

#[derive(clap::Args, Debug)]
#[command(mut_arg("pid", |pid| pid.help(
    "Only this server: its postmaster's or any backend's pid (all of its backends, those \
     started later included)"
)))]
pub struct Args {
    #[command(flatten)]
    pub trace: TraceOptions,
    /// Trace every server running this postgres binary (default: every server; through the
    /// socket, also ones started later)
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    pub bin: Option<PathBuf>,
    /// --query-len: through the socket, of each request (statements past it are not seen)
    #[command(flatten)]
    pub query: query::Options,
    /// Which queries to time. Every probe a query passes costs it a trap into the kernel, and
    /// a simple-protocol query passes both kinds. Through the socket: requests with a Query
    /// message (simple) or an Execute (extended).
    #[arg(long, value_enum, default_value_t = Protocol::All)]
    pub protocol: Protocol,
    /// Where queries begin and end
    #[arg(long, value_enum, default_value_t = Via::Auto)]
    pub via: Via,
    /// Through the socket, take requests from the system call tracepoints even where the sock
    /// ones exist: what kernels before 6.3 get, for tests
    #[arg(long, hide = true)]
    pub via_syscalls: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The socket for plaintext backends; encrypted ones where OpenSSL hands over their
    /// plaintext (uprobes in the server's libssl), or else by probes in each such backend
    /// alone: no traps but in encrypted backends
    Auto,
    /// USDT probes in the server (uprobes on PortalRun() without them): each statement
    /// exactly, at the cost of a trap into the kernel at every probe
    Probes,
    /// The backend's client socket: from receiving a request to sending the ReadyForQuery
    /// that ends its answer. No traps; the statements of a multi-statement query or a
    /// pipeline share their request's time; plaintext connections only
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
    targets: Vec<Target>,
    servers: Servers,
    tracepoints: Vec<Tracepoint>,
    sites: Vec<ProbeSites>,
    counters: Vec<Counter>,
}

impl PgPlan {
    fn new(args: Args) -> Result<Self> {
        let through_sockets = args.via != Via::Probes;
        let (targets, named) =
            servers::targets(args.trace.pid, args.bin.as_ref(), through_sockets)?;
        // Only probes tell postgres from other processes: through sockets, the kernel side
        // keeps the backends of the servers named to it.
        let servers = Servers::running(&targets, named, args.bin.as_ref());
        let mut tracepoints = query::RECLAIM_TRACEPOINTS.to_vec();
        tracepoints.extend(args.query.parts().tracepoints());
        if through_sockets {
            // A backend's receive and send: the boundaries of client requests, with no trap
            // into the kernel. The kernel programs take the buffers from the registers of the
            // system call below them.
            let sock = socket::sock_tracepoints(args.via_syscalls)?;
            tracepoints.push(socket::receive(sock, "pg_sock_received", "pg_received"));
            tracepoints.push(socket::send(sock, "pg_sock_sent", "pg_send"));
            if servers.watch {
                tracepoints.push(EXEC_TRACEPOINT);
            }
        }
        tracepoints.push(EXIT_TRACEPOINT);
        // Planned through the socket too: that tells a server from any other binary.
        let sites = targets
            .iter()
            .map(|target| sites::plan(target, args.protocol))
            .collect::<Result<Vec<_>>>()?;
        let counters = if args.query.no_counters {
            Vec::new()
        } else {
            counters::choose_counters(&args.query.counters)?
        };
        Ok(Self {
            args,
            targets,
            servers,
            tracepoints,
            sites,
            counters,
        })
    }

    /// Whether the kernel side keeps only the servers named to it.
    fn filters_servers(&self) -> bool {
        self.args.via != Via::Probes || !self.servers.watch
    }
}

/// The programs at `SSL_read()` and `SSL_write()`.
const TLS_PROGRAMS: tls::Programs = tls::Programs {
    read: "pg_tls_read",
    read_return: "pg_tls_read_return",
    write: "pg_tls_write",
};

/// A postmaster's libssl is probed in every process that maps it: its backends are forked.
/// Where it cannot be, its encrypted backends get probes of their own.
const OPENSSL_EVERYWHERE: bool = true;

/// A process exec'ing a new program: a server that starts after tracer.
const EXEC_TRACEPOINT: Tracepoint = query::exec_tracepoint("pg_exec");

/// A thread exiting: what was kept of it goes.
const EXIT_TRACEPOINT: Tracepoint = query::exit_tracepoint("pg_thread_exit");

impl session::Plan for PgPlan {
    fn name(&self) -> &'static str {
        "pg"
    }

    fn records(&self) -> u32 {
        tool::PG
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
            self.filters_servers(),
            options,
            counters,
            self.args.via != Via::Probes,
            true,
        )
    }

    fn prepare(&self, probes: &mut Probes) -> Result<()> {
        query::prepare(probes, &self.args.query)?;
        if self.filters_servers() {
            for &pid in &self.servers.pids {
                query::add_server(probes, tool::PG, pid)?;
            }
        }
        Ok(())
    }

    fn start(self: Box<Self>, context: &mut session::Context) -> Result<Box<dyn Tool>> {
        let Self {
            args,
            targets,
            servers,
            sites,
            counters,
            ..
        } = *self;
        let probes = &mut *context.probes;
        query::attach_compaction(context.kernel, probes);
        let counters = counters::usable(counters, probes);
        let cookies = context.kernel.btf.has_attach_cookies();
        if !cookies {
            probes.say(format_args!(
                "a program per probe site (no attach cookies before 5.15)"
            ));
        }
        let mut sites = Sites::new(sites, args.protocol, cookies);
        let sockets = match (&servers.pids[..], servers.watch) {
            ([], _) => "client sockets of the servers that start from now on".to_owned(),
            (pids, watch) => {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                let later = if watch {
                    " and servers started later"
                } else {
                    ""
                };
                format!(
                    "client sockets of the servers with postmaster pid {}{later}",
                    pids.join(", ")
                )
            }
        };
        let attached = match args.via {
            Via::Probes => {
                sites.attach_everywhere(probes)?;
                sites.used().join("; ")
            }
            Via::Socket => {
                crate::socket::check_registers(context.kernel, probes)?;
                sockets
            }
            Via::Auto => {
                crate::socket::check_registers(context.kernel, probes)?;
                sites.load_programs(probes)?;
                format!("{sockets}; encrypted backends through OpenSSL's probes")
            }
        };
        let mut tls = OpensslProbes::new(TLS_PROGRAMS);
        if args.via == Via::Auto {
            tls.load(probes)?;
            for &pid in &servers.pids {
                tls.probe(probes, pid, OPENSSL_EVERYWHERE);
            }
        }
        let mut counters = BackendCounters::new(counters);
        // Perf counters: running backends get theirs now, later ones when their first query
        // shows them.
        for pid in servers::running_backends(&targets, &servers.pids) {
            counters.add(probes, pid)?;
        }
        Ok(Box::new(Pg {
            banner: format!("Tracing PostgreSQL queries: {attached}... Hit Ctrl-C to end."),
            queries: Queries::new(
                &args.query,
                sql::Dialect::Postgres,
                counters,
                context.hierarchy,
            ),
            protocol: args.protocol,
            via: args.via,
            statements: wire::Statements::default(),
            servers,
            sites,
            tls,
            execs: Vec::new(),
            encrypted: Vec::new(),
            socket_backends: FxHashSet::default(),
            unseen_backends: 0,
            late_backends: 0,
            probed_backends: 0,
            tls_backends: 0,
            spilled: FxHashMap::default(),
            partly_seen: 0,
            last_check: Instant::now(),
        }))
    }
}

struct Pg {
    banner: String,
    queries: Queries,
    protocol: Protocol,
    via: Via,
    /// Statements parsed by each backend, for requests seen on sockets.
    statements: wire::Statements,
    servers: Servers,
    /// Probe sites, and the probes of encrypted backends OpenSSL's probes cannot read.
    sites: Sites,
    tls: OpensslProbes,
    /// Processes that exec'd postgres, and encrypted backends, to act on after the batch.
    execs: Vec<u32>,
    encrypted: Vec<u32>,
    /// Backends whose requests came through their sockets in this window.
    socket_backends: FxHashSet<u32>,
    /// Since tracer started: encrypted backends whose requests no probe shows, those probed
    /// only once past their startup, those that got probes of their own, and those OpenSSL's
    /// probes read.
    unseen_backends: u64,
    late_backends: u64,
    probed_backends: u64,
    tls_backends: u64,
    /// Requests the text cannot hold (pipelines), by backend: their receives so far.
    spilled: FxHashMap<u32, SpilledRequest>,
    /// Such requests seen only in part.
    partly_seen: u64,
    last_check: Instant,
}

/// A request's receives, as the kernel sent them.
#[derive(Default)]
struct SpilledRequest {
    bytes: Vec<u8>,
    receives: u32,
    /// Whether bytes are missing: a receive past what the kernel sends, or past
    /// [`MAX_REQUEST_BYTES`].
    cut: bool,
}

/// Bytes of one request kept, at most, and of all requests at once.
const MAX_REQUEST_BYTES: usize = 4 << 20;
const MAX_SPILLED_BYTES: usize = 16 << 20;

/// How often backends and servers that exited are looked for, to let their probes go.
const EXITED_CHECKS: Duration = Duration::from_secs(1);

impl Tool for Pg {
    fn start(&mut self, _out: &mut Output) -> Result<()> {
        eprintln!("{}", self.banner);
        Ok(())
    }

    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        match read_record::<u32>(data)? {
            kind::BACKEND => {
                let backend: NewBackend = read_record(data)?;
                self.queries.new_thread(backend.pid, backend.cgroup_id);
                *self.queries.client_of(backend.pid) = client(&backend.title);
                Ok(())
            }
            kind::EXITED => {
                let exited: Backend = read_record(data)?;
                self.queries.thread_exited(exited.pid);
                Ok(())
            }
            kind::QUERY => self.query(data, out),
            kind::ENCRYPTED => {
                let backend: Backend = read_record(data)?;
                self.encrypted.push(backend.pid);
                Ok(())
            }
            kind::EXEC => {
                let exec: Backend = read_record(data)?;
                self.execs.push(exec.pid);
                Ok(())
            }
            kind::SPILLED => {
                let receive: Spilled = read_record(data)?;
                let bytes = &data[size_of::<Spilled>()..];
                self.spilled_receive(&receive, &bytes[..(receive.len as usize).min(bytes.len())]);
                Ok(())
            }
            other => bail!("unknown pg record kind {other}"),
        }
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        let (socket, tls, probed, unseen, late, partly) = (
            std::mem::take(&mut self.socket_backends).len() as u64,
            self.tls_backends,
            self.probed_backends,
            self.unseen_backends,
            self.late_backends,
            self.partly_seen,
        );
        let asides = [
            Aside {
                field: "socket_backends",
                count: socket,
                text: format!("{socket} backends through their sockets or OpenSSL"),
            },
            Aside {
                field: "tls_backends",
                count: tls,
                text: format!("{tls} encrypted through OpenSSL's probes"),
            },
            Aside {
                field: "probed_backends",
                count: probed,
                text: format!("{probed} encrypted through probes of their own"),
            },
            Aside {
                field: "late_backends",
                count: late,
                text: format!(
                    "{late} of them probed past their startup (queries before may be missing)"
                ),
            },
            Aside {
                field: "encrypted_backends",
                count: unseen,
                text: format!("unseen: the requests of {unseen} encrypted backends"),
            },
            Aside {
                field: "partly_seen_requests",
                count: partly,
                text: format!(
                    "{partly} pipelined requests seen in part (a receive lost, or over \
                     {} MiB): statements past the part not counted",
                    MAX_REQUEST_BYTES >> 20
                ),
            },
        ];
        let shown = match self.via {
            Via::Probes => &asides[4..],
            _ => &asides[..],
        };
        self.queries.summary(window, shown, out)
    }

    fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.queries.register_metrics(
            metrics,
            "tracer_pg_query",
            "PostgreSQL query latency by workload, database, user and normalized query: at most --top series per workload, the rest as its 'other'",
        );
    }

    fn after_batch(&mut self, probes: &mut Probes) -> Result<()> {
        for pid in std::mem::take(&mut self.execs) {
            if !self.servers.admits(pid) {
                continue;
            }
            // Its binary read now, for its encrypted backends not to wait for it; a binary
            // named postgres that cannot be read as PostgreSQL's (a tenant's impostor, a build
            // stripped of its symbols) is turned away.
            if self.via == Via::Auto
                && let Err(err) = self.sites.plan_binary_of(pid)
            {
                eprintln!(
                    "tracer: not tracing process {pid}: {err:#}; `--via socket` traces a server \
                     without reading its binary"
                );
                continue;
            }
            self.servers.add(pid);
            query::add_server(probes, tool::PG, pid)?;
            eprintln!(
                "tracer: tracing a PostgreSQL server started since: postmaster pid {pid} ({})",
                processes::shown(pid)
            );
            if self.via == Via::Auto {
                self.tls.attach_starting(probes, pid, OPENSSL_EVERYWHERE);
            }
        }
        self.tls.retry(probes);
        for pid in std::mem::take(&mut self.encrypted) {
            self.encrypted_backend(probes, pid);
        }
        if self.last_check.elapsed() >= EXITED_CHECKS {
            self.last_check = Instant::now();
            self.sites.forget_exited();
            self.tls.forget_exited();
            self.spilled
                .retain(|&pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
            for pid in self.servers.exited() {
                query::remove_server(probes, pid)?;
            }
        }
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
            return self.queries.add_text(&sql::text(bytes), &done, out);
        }
        self.socket_backends.insert(done.task.pid);
        // A request the text cannot hold came whole, receive by receive, before its record.
        let spilled = self.spilled.remove(&done.task.pid);
        let (bytes, complete) = match (&spilled, done.spilled) {
            (_, 0) => (bytes, done.received as usize <= bytes.len()),
            (Some(spilled), sent) => {
                let whole = spilled.receives == sent && !spilled.cut;
                if !whole {
                    self.partly_seen += 1;
                }
                (&spilled.bytes[..], whole)
            }
            (None, _) => {
                self.partly_seen += 1;
                (bytes, false)
            }
        };
        let queries = &mut self.queries;
        let key_of = |text: &[u8]| Rc::from(queries.key(&sql::text(text)));
        let protocol = self.protocol;
        let ran: Vec<Ran> = self
            .statements
            .request(done.task.pid, bytes, complete, key_of)
            .into_iter()
            .filter_map(|query| match query {
                wire::Query::Simple(text) if protocol != Protocol::Extended => {
                    Some(Ran::Text(sql::text(text)))
                }
                wire::Query::Prepared(key) if protocol != Protocol::Simple => Some(Ran::Key(key)),
                _ => None,
            })
            .collect();
        self.queries.add_request(&ran, &done, out)
    }

    /// A receive of a request the text cannot hold, ahead of the request's record.
    fn spilled_receive(&mut self, receive: &Spilled, bytes: &[u8]) {
        // A backend that never ends its request (or many of them) does not grow this for ever.
        let kept: usize = self.spilled.values().map(|r| r.bytes.len()).sum();
        let request = self.spilled.entry(receive.pid).or_default();
        // What an earlier request of the backend left (its record lost) goes.
        if receive.index == 1 {
            *request = SpilledRequest::default();
        }
        request.receives += 1;
        request.cut |= receive.len < receive.received;
        if request.bytes.len() + bytes.len() <= MAX_REQUEST_BYTES
            && kept + bytes.len() <= MAX_SPILLED_BYTES
        {
            request.bytes.extend_from_slice(bytes);
        } else {
            request.cut = true;
        }
    }

    /// A backend's connection turned out encrypted: through the socket its requests are
    /// unseen; by default, probes in it alone take over. They take some milliseconds to
    /// attach: a backend already past its startup by then may have run queries unseen.
    fn encrypted_backend(&mut self, probes: &mut Probes, pid: u32) {
        // A backend gone already is known by its server no more: one of a server that
        // OpenSSL's probes read, if all are.
        let server = processes::parent(pid);
        let read = match server {
            Some(server) => self.tls.covers(server),
            None => self.servers.pids.iter().all(|&pid| self.tls.covers(pid)),
        };
        if self.via == Via::Auto && read {
            self.tls_backends += 1;
            return;
        }
        let attached = match self.via {
            Via::Auto => self
                .sites
                .attach_backend(probes, pid)
                .inspect(|()| self.probed_backends += 1),
            _ => Err(anyhow::anyhow!("--via socket cannot read its requests")),
        };
        if attached.is_ok() && servers::past_startup(pid) {
            if self.late_backends == 0 {
                eprintln!(
                    "tracer: encrypted backend {pid} was past its startup when its probes were \
                     attached: queries it ran before may be missing"
                );
            }
            self.late_backends += 1;
        }
        if let Err(err) = attached {
            let hint = match self.via {
                Via::Socket => " (the default --via auto reads such backends)",
                _ => "",
            };
            let message = format_args!("backend {pid} is encrypted: {err:#}{hint}");
            match self.unseen_backends {
                0 => eprintln!("tracer: {message}"),
                _ => probes.say(message),
            }
            self.unseen_backends += 1;
        }
    }
}

/// Whom a backend serves, from its process title: `postgres: [CLUSTER: ]USER DATABASE HOST
/// ACTIVITY` (names with spaces in them are not told apart).
fn client(title: &[u8]) -> Client {
    let end = title
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(title.len());
    let title = String::from_utf8_lossy(&title[..end]);
    let Some(rest) = title.strip_prefix("postgres: ") else {
        return Client::default();
    };
    let mut words = rest.split(' ').filter(|word| !word.is_empty()).peekable();
    words.next_if(|word| word.ends_with(':'));
    match (words.next(), words.next(), words.next()) {
        (Some(user), Some(database), Some(_host)) => Client {
            database: Some(database.into()),
            user: Some(user.into()),
        },
        _ => Client::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backends_title_names_its_user_and_database() {
        let named = |title: &str| {
            let client = client(title.as_bytes());
            (
                client.user.as_deref().map(str::to_owned),
                client.database.as_deref().map(str::to_owned),
            )
        };
        let both = |user: &str, database: &str| (Some(user.to_owned()), Some(database.to_owned()));
        assert_eq!(
            named("postgres: alice shop [local] SELECT\0junk"),
            both("alice", "shop")
        );
        assert_eq!(
            named("postgres: 16/main: bob crm 10.0.0.7(51234) idle in transaction"),
            both("bob", "crm")
        );
        // Processes that serve no client, and titles of other programs.
        assert_eq!(named("postgres: 16/main: checkpointer "), (None, None));
        assert_eq!(named("postgres: checkpointer"), (None, None));
        assert_eq!(
            named("/usr/lib/postgresql/16/bin/postgres -D /data"),
            (None, None)
        );
        assert_eq!(named(""), (None, None));
    }
}
