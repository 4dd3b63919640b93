//! `tracer mysql`: which MySQL and MariaDB commands are slow, and how much of their time the
//! kernel took from them in reclaim, per normalized query, with counters. Commands come off
//! the server threads' sockets, with no trap into the kernel; connections the socket cannot
//! read (encrypted, compressed) through uprobes on `dispatch_command()` in their server alone
//! (neither server has USDT probes any more), found by its demangled signature, which also
//! says where the command and its packet are.

use std::{
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tracer_common::{
    mysql::{
        Accepted, COM_QUERY, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE, Connection, Login,
        MysqlLayout, Unreadable, command, kind, signature,
    },
    query::{QueryDone, origin},
};

mod connections;
mod servers;
mod statements;
mod unreadable;
pub(crate) mod wire;

use connections::{Connections, Sites};
use servers::Servers;
use statements::Statements;
use unreadable::PROGRAMS;

use crate::manual::Example;
use crate::{
    event_loop::{Tool, Window, read_record},
    loader::{Kernel, Probes, Setting, Tracepoint},
    metrics::Metrics,
    options::TraceOptions,
    output::Output,
    perf::Counter,
    processes,
    query::{self, BackendCounters, Client, Queries, counters},
    session, socket, sql,
    tls::OpensslProbes,
    usdt::Binary,
};

/// What `tracer --help` and the man page show first.
pub const EXAMPLES: &[Example] = &[
    Example {
        what: "Every MySQL and MariaDB server's commands: latency per normalized query, reclaim inside them",
        command: "sudo tracer mysql",
    },
    Example {
        what: "One server, a table every 10 seconds, a row per schema",
        command: "sudo tracer mysql -p 2345 --by database 10",
    },
    Example {
        what: "Where each query's time went: on CPU, run queue, blocked, sleeping",
        command: "sudo tracer mysql --breakdown=sched",
    },
    Example {
        what: "One line per query of 100 ms or more",
        command: "sudo tracer mysql --slow 100",
    },
    Example {
        what: "New connections too: accept, handshake, authentication, first command",
        command: "sudo tracer mysql --connections",
    },
];

#[derive(clap::Args, Debug)]
#[command(mut_arg("pid", |pid| pid.help(
    "Only this server: the pid of its mysqld or mariadbd (all of its connections)"
)))]
pub struct Args {
    #[command(flatten)]
    pub trace: TraceOptions,
    /// Trace every server running this binary (default: all running servers)
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    pub bin: Option<PathBuf>,
    #[command(flatten)]
    pub query: query::Options,
    /// Also follow new connections: accept to handshake, to authenticated, to the first
    /// command, and the listener's time per connection
    #[arg(long)]
    pub connections: bool,
    /// Where commands begin and end
    #[arg(long, value_enum, default_value_t = Via::Auto)]
    pub via: Via,
    /// Through the socket, take commands from the system call tracepoints even where the sock
    /// ones exist: what kernels before 6.3 get, for tests
    #[arg(long, hide = true)]
    pub via_syscalls: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The socket for plaintext connections; encrypted ones where OpenSSL hands over their
    /// plaintext (uprobes in the server's libssl, which only TLS threads call); for a server
    /// with compressed connections, probes in that server alone for them (every thread of a
    /// server with probes traps at each command)
    Auto,
    /// Uprobes on dispatch_command(): every command exactly, TLS connections too, at the cost
    /// of two traps into the kernel per command
    Probes,
    /// The server thread's client socket: from receiving a command to the last send of its
    /// answer. No traps; plaintext connections only; commands without an answer (COM_QUIT,
    /// COM_STMT_CLOSE) counted but not timed
    Socket,
}

/// The signatures of `dispatch_command()` tracer knows, demangled, and where each keeps its
/// arguments.
const SIGNATURES: &[(&str, u32)] = &[
    (
        "dispatch_command(enum_server_command, THD*, char*, unsigned int, bool)",
        signature::MARIADB,
    ),
    (
        "dispatch_command(THD*, COM_DATA const*, enum_server_command)",
        signature::MYSQL8,
    ),
];

pub fn run(args: Args) -> Result<()> {
    // -p names a server, not one process: the kernel side filters by server.
    let mut options = args.trace.clone();
    options.pid = None;
    let slow = args.query.slow.is_some();
    session::run(&options, Box::new(MysqlPlan::new(args)?), slow)
}

/// `tracer mysql` as `tracer serve` starts it.
pub fn plan(args: Args) -> Result<Box<dyn session::Plan>> {
    Ok(Box::new(MysqlPlan::new(args)?))
}

/// A server binary and where its `dispatch_command()` is.
#[derive(Debug)]
struct Target {
    path: PathBuf,
    shown: String,
    offset: u64,
    signature: u32,
    /// Its demangled name, for -v.
    function: &'static str,
    /// With --connections: where connections come in.
    way_in: Option<Sites>,
}

struct MysqlPlan {
    args: Args,
    targets: Vec<Target>,
    /// Server processes whose threads are traced (none and not watching: any process running
    /// a target).
    servers: Servers,
    counters: Vec<Counter>,
    tracepoints: Vec<Tracepoint>,
}

impl MysqlPlan {
    fn new(args: Args) -> Result<Self> {
        let (binaries, pids) = match (&args.trace.pid, &args.bin) {
            (Some(pid), _) => {
                let pid = *pid;
                (vec![processes::named(pid)?], vec![pid])
            }
            (None, Some(bin)) => (vec![(bin.clone(), bin.display().to_string())], Vec::new()),
            // Those running, and those that start later.
            (None, None) => {
                let pids = servers::running();
                let binaries = processes::binaries(pids.iter().copied())
                    .into_iter()
                    .map(|(exe, pid)| (exe, format!("{} (pid {pid})", processes::shown(pid))))
                    .collect();
                (binaries, pids)
            }
        };
        let watch = args.trace.pid.is_none() && args.bin.is_none();
        let servers = Servers { pids, watch };
        let mut targets = binaries
            .into_iter()
            .map(|(path, shown)| target(path, shown))
            .collect::<Result<Vec<_>>>()?;
        let mut tracepoints = query::RECLAIM_TRACEPOINTS.to_vec();
        tracepoints.extend(args.query.parts().tracepoints());
        let via_socket = args.via != Via::Probes;
        let sock = socket::sock_tracepoints(args.via_syscalls)?;
        if via_socket {
            tracepoints.push(socket::receive(
                sock,
                "mysql_sock_received",
                "mysql_received",
            ));
        }
        if args.connections {
            for target in &mut targets {
                let binary = Binary::open(&target.path)
                    .with_context(|| format!("cannot read {}", target.shown))?;
                target.way_in = Some(Sites::find(&binary, &target.shown, target.signature)?);
            }
            tracepoints.extend(ACCEPT_TRACEPOINTS);
        }
        // The end of an answer, or a handshake.
        if via_socket || args.connections {
            tracepoints.push(socket::send(sock, "mysql_sock_sent", "mysql_send"));
        }
        if servers.watch {
            tracepoints.push(EXEC_TRACEPOINT);
        }
        tracepoints.push(EXIT_TRACEPOINT);
        let counters = if args.query.no_counters {
            Vec::new()
        } else {
            counters::choose_counters(&args.query.counters)?
        };
        Ok(Self {
            args,
            targets,
            servers,
            counters,
            tracepoints,
        })
    }
}

/// A process exec'ing a new program: a server that starts after tracer.
const EXEC_TRACEPOINT: Tracepoint = query::exec_tracepoint("mysql_exec");

/// A thread exiting: what was kept of it goes.
const EXIT_TRACEPOINT: Tracepoint = query::exit_tracepoint("mysql_thread_exit");

/// TCP connections entering a listener's accept queue, and leaving it (`--connections`).
const ACCEPT_TRACEPOINTS: [Tracepoint; 3] = [
    Tracepoint {
        category: "sock",
        name: "inet_sock_set_state",
        program: "mysql_tcp_state",
        args: Some(&["struct sock *", "int", "int"]),
        fields: &[("skaddr", 8, 8), ("oldstate", 16, 4), ("newstate", 20, 4)],
    },
    Tracepoint {
        category: "syscalls",
        name: "sys_exit_accept4",
        program: "mysql_accept4",
        args: None,
        fields: &[("ret", 16, 8)],
    },
    Tracepoint {
        category: "syscalls",
        name: "sys_exit_accept",
        program: "mysql_accept",
        args: None,
        fields: &[("ret", 16, 8)],
    },
];

/// A C++ symbol's demangled name, as `dispatch_command(THD*, ...)`.
pub(crate) fn demangled(name: &str) -> Option<String> {
    cpp_demangle::Symbol::new(name)
        .ok()
        .and_then(|symbol| symbol.demangle().ok())
}

/// Finds `dispatch_command()` in a binary by its demangled signature.
fn target(path: PathBuf, shown: String) -> Result<Target> {
    let binary = Binary::open(&path).with_context(|| format!("cannot read {shown}"))?;
    let found = binary.find_symbol(|name| {
        name.contains("dispatch_command")
            && demangled(name).is_some_and(|d| SIGNATURES.iter().any(|(s, _)| *s == d))
    });
    let Some((name, _, offset)) = found else {
        let wanted: Vec<&str> = SIGNATURES.iter().map(|(s, _)| *s).collect();
        bail!(
            "{shown} is not a MySQL or MariaDB server: it has no {}",
            wanted.join(" or ")
        );
    };
    let offset = binary.entry_probe_offset(offset);
    let demangled = demangled(&name).unwrap_or_default();
    let &(function, signature) = SIGNATURES
        .iter()
        .find(|(s, _)| *s == demangled)
        .expect("matched above");
    Ok(Target {
        path,
        shown,
        offset,
        signature,
        function,
        way_in: None,
    })
}

impl session::Plan for MysqlPlan {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn records(&self) -> u32 {
        tracer_common::record::tool::MYSQL
    }

    fn tracepoints(&self) -> Vec<Tracepoint> {
        self.tracepoints.clone()
    }

    fn settings(&self, kernel: &Kernel) -> Result<Vec<Setting>> {
        let (options, counters) = (&self.args.query, &self.counters);
        // Each command's first bytes, kept from its start.
        let filter_servers = self.servers.watch || !self.servers.pids.is_empty();
        let mut settings = query::settings(
            kernel,
            "MYSQL_CONFIG",
            filter_servers,
            options,
            counters,
            true,
            false,
        )?;
        let btf = &kernel.btf;
        let socket_of_fd = match self.args.connections {
            true => [
                btf.member_offset("task_struct", "files")?,
                btf.member_offset("files_struct", "fdt")?,
                btf.member_offset("fdtable", "fd")?,
                btf.member_offset("file", "private_data")?,
                btf.member_offset("socket", "sk")?,
            ],
            false => [0; 5],
        };
        let layout = MysqlLayout {
            // What --bin names; each server traced has its own in MYSQL_SIGNATURES.
            signature: self.targets.first().map_or(0, |target| target.signature),
            connections: self.args.connections as u32,
            via_socket: (self.args.via != Via::Probes) as u32,
            socket_of_fd,
        };
        settings.push(Setting::global("MYSQL_LAYOUT", &layout));
        Ok(settings)
    }

    fn prepare(&self, probes: &mut Probes) -> Result<()> {
        query::prepare(probes, &self.args.query)?;
        for &pid in &self.servers.pids {
            let exe = processes::exe(pid).unwrap_or_default();
            let target = self
                .targets
                .iter()
                .find(|target| processes::same_file(&exe, &target.path));
            if let Some(target) = target {
                servers::add(probes, pid, target.signature)?;
            }
        }
        Ok(())
    }

    fn start(self: Box<Self>, context: &mut session::Context) -> Result<Box<dyn Tool>> {
        let Self {
            args,
            targets,
            servers,
            counters,
            ..
        } = *self;
        let probes = &mut *context.probes;
        query::attach_compaction(context.kernel, probes);
        let counters = counters::usable(counters, probes);
        if args.via != Via::Probes {
            crate::socket::check_registers(context.kernel, probes)?;
        }
        match args.via {
            Via::Probes => {
                for target in &targets {
                    let attached =
                        unreadable::attach_dispatch(probes, &target.path, target.offset, None)?;
                    probes.keep(attached);
                    probes.say(format_args!(
                        "{} at {:#x} in {}, entry and return",
                        target.function,
                        target.offset,
                        target.path.display()
                    ));
                }
            }
            // Loaded now: an unreadable connection must not wait for the verifier.
            Via::Auto => {
                for (program, _) in PROGRAMS {
                    probes.load_uprobe(program)?;
                }
            }
            Via::Socket => {}
        }
        // In each server alone: its threads share one address space.
        let mut tls = OpensslProbes::new(unreadable::TLS_PROGRAMS);
        if args.via == Via::Auto {
            tls.load(probes)?;
            for &pid in &servers.pids {
                tls.probe(probes, pid, false);
            }
        }
        let mut ways_in = Vec::new();
        for target in &targets {
            if let Some(way_in) = &target.way_in {
                way_in.attach(probes, &target.path)?;
                ways_in.extend(processes::file_id(&target.path));
            }
        }
        let mut counters = BackendCounters::new(counters);
        // Perf counters: running server threads get theirs now, later ones at their first
        // command.
        for tid in servers.pids.iter().flat_map(|&pid| processes::threads(pid)) {
            counters.add(probes, tid)?;
        }
        let mut shown: Vec<&str> = targets.iter().map(|t| t.shown.as_str()).collect();
        if servers.watch {
            shown.push(match shown.is_empty() {
                true => "servers that start from now on",
                false => "servers started later",
            });
        }
        Ok(Box::new(Mysql {
            banner: format!(
                "Tracing MySQL commands: {} ({})... Hit Ctrl-C to end.",
                shown.join("; "),
                match args.via {
                    Via::Probes => "dispatch_command",
                    Via::Socket => "through the socket",
                    Via::Auto =>
                        "through the socket; encrypted connections through OpenSSL's probes, compressed ones through probes in their server",
                }
            ),
            queries: Queries::new(
                &args.query,
                sql::Dialect::Mysql,
                counters,
                context.hierarchy,
            ),
            statements: Statements::default(),
            connections: args.connections.then(|| Connections::new(&servers.pids)),
            unreadable: unreadable::UnreadableConnections::new(
                args.via,
                targets.into_iter().map(|t| (t.path, t.offset)),
                tls,
            ),
            via: args.via,
            servers,
            execs: Vec::new(),
            ways_in,
            last_check: Instant::now(),
        }))
    }
}

struct Mysql {
    banner: String,
    queries: Queries,
    statements: Statements,
    /// With --connections.
    connections: Option<Connections>,
    /// Connections the socket cannot read.
    unreadable: unreadable::UnreadableConnections,
    via: Via,
    servers: Servers,
    /// Processes that exec'd mysqld or mariadbd, to look at after the batch.
    execs: Vec<u32>,
    /// With --connections: the binaries whose way in is probed, by file.
    ways_in: Vec<(u64, u64)>,
    last_check: Instant,
}

/// How often servers that exited are looked for, to let their probes go.
const EXITED_CHECKS: Duration = Duration::from_secs(1);

impl Mysql {
    /// Traces server `pid`, started since tracer: its binary read as the ones at start are.
    fn follow(&mut self, probes: &mut Probes, pid: u32) -> Result<()> {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let shown = processes::shown(pid);
        let target = target(exe.clone(), shown.clone())?;
        if self.connections.is_some()
            && let Some(file) = processes::file_id(&exe)
            && !self.ways_in.contains(&file)
        {
            let binary = Binary::open(&exe).with_context(|| format!("cannot read {shown}"))?;
            Sites::find(&binary, &shown, target.signature)?.attach(probes, &exe)?;
            self.ways_in.push(file);
        }
        if self.via == Via::Probes {
            let attached = unreadable::attach_dispatch(probes, &exe, target.offset, Some(pid))?;
            probes.keep(attached);
        }
        servers::add(probes, pid, target.signature)?;
        self.servers.pids.push(pid);
        self.unreadable.add_server(probes, pid, &exe, target.offset);
        if let Some(connections) = &mut self.connections {
            connections.add_server(pid);
        }
        eprintln!(
            "tracer: tracing a MySQL server started since: pid {pid} ({shown}, {})",
            target.function
        );
        Ok(())
    }

    /// A command finished; `packet` is its first bytes.
    fn command(&mut self, done: &QueryDone, packet: &[u8], out: &mut Output) -> Result<()> {
        // Statement commands begin with the statement's id.
        let statement = packet.first_chunk().map_or(0, |&id| u32::from_le_bytes(id));
        let session = done.session;
        let tid = done.task.tid;
        match done.received {
            COM_QUERY => {
                // Off the socket, the payload; from the probes, the parsed text alone.
                let text = match done.origin {
                    origin::SOCKET => wire::query_text(packet),
                    _ => packet,
                };
                if !text.is_empty() {
                    let text = sql::text(text);
                    self.queries.add_text(&text, done, out)?;
                    // Counted in the schema it ran in; what follows, in the new one.
                    if let Some(schema) = wire::use_statement(&text) {
                        self.queries.client_of(tid).database = Some(schema.into());
                    }
                    return Ok(());
                }
            }
            command::INIT_DB => {
                self.queries
                    .add_key(&command_name(done.received), done, out)?;
                let schema = sql::text(packet);
                self.queries.client_of(tid).database = Some(Rc::from(&*schema));
                return Ok(());
            }
            COM_STMT_PREPARE if done.statement != 0 => {
                let text = sql::text(packet);
                let key = self.queries.key(&text);
                self.statements.prepared(session, done.statement, key);
            }
            COM_STMT_EXECUTE => {
                let key = self.statements.executed(session, statement);
                return self.queries.add_key(&key, done, out);
            }
            COM_STMT_CLOSE => self.statements.closed(session, statement),
            command::QUIT | command::CHANGE_USER | command::RESET_CONNECTION => {
                self.statements.ended(session)
            }
            _ => {}
        }
        self.queries
            .add_key(&command_name(done.received), done, out)?;
        match done.received {
            // The thread may serve another connection next: whom, its handshake tells.
            command::QUIT => *self.queries.client_of(tid) = Client::default(),
            command::CHANGE_USER => {
                let changed = (done.origin == origin::SOCKET)
                    .then(|| wire::change_user(packet))
                    .flatten();
                *self.queries.client_of(tid) = match changed {
                    Some((user, database)) => Client {
                        database: database.map(Rc::from),
                        user: Some(user.into()),
                    },
                    None => Client::default(),
                };
            }
            _ => {}
        }
        Ok(())
    }
}

impl Tool for Mysql {
    fn start(&mut self, _out: &mut Output) -> Result<()> {
        eprintln!("{}", self.banner);
        Ok(())
    }

    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        match read_record::<u32>(data)? {
            kind::BACKEND => {
                let backend: tracer_common::query::NewBackend = read_record(data)?;
                self.queries.new_thread(backend.pid, backend.cgroup_id);
                Ok(())
            }
            kind::LOGIN => {
                let login: Login = read_record(data)?;
                let payload = &login.bytes[..(login.len as usize).min(login.bytes.len())];
                if let Some((user, database)) = wire::login(payload) {
                    *self.queries.client_of(login.tid) = Client {
                        database: database.map(Rc::from),
                        user: Some(user.into()),
                    };
                }
                Ok(())
            }
            kind::EXITED => {
                let exited: tracer_common::query::Backend = read_record(data)?;
                self.queries.thread_exited(exited.pid);
                Ok(())
            }
            kind::EXEC => {
                let exec: tracer_common::query::Backend = read_record(data)?;
                self.execs.push(exec.pid);
                Ok(())
            }
            kind::QUERY => {
                let done: QueryDone = read_record(data)?;
                let bytes = &data[size_of::<QueryDone>()..];
                let bytes = &bytes[..(done.text_len as usize).min(bytes.len())];
                self.command(&done, bytes, out)
            }
            kind::CONNECTION => {
                let connection: Connection = read_record(data)?;
                if let Some(connections) = &mut self.connections {
                    connections.connection(&connection);
                }
                Ok(())
            }
            kind::UNREADABLE => {
                self.unreadable.record(read_record::<Unreadable>(data)?);
                Ok(())
            }
            kind::ACCEPTED => {
                let accepted: Accepted = read_record(data)?;
                if let Some(connections) = &mut self.connections {
                    connections.accepted(&accepted);
                }
                Ok(())
            }
            other => bail!("unknown mysql record kind {other}"),
        }
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        self.queries
            .summary(window, &self.unreadable.asides(), out)?;
        match &mut self.connections {
            Some(connections) => connections.summary(window, out),
            None => Ok(()),
        }
    }

    fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.queries.register_metrics(
            metrics,
            "tracer_mysql_query",
            "MySQL command latency by workload, schema, user and normalized query (other commands by name): at most --top series per workload, the rest as its 'other'",
        );
        if let Some(connections) = &mut self.connections {
            connections.register_metrics(metrics);
        }
    }

    fn after_batch(&mut self, probes: &mut Probes) -> Result<()> {
        for pid in std::mem::take(&mut self.execs) {
            if self.servers.admits(pid)
                && let Err(err) = self.follow(probes, pid)
            {
                eprintln!("tracer: not tracing process {pid}: {err:#}");
            }
        }
        self.unreadable.after_batch(probes);
        if self.last_check.elapsed() >= EXITED_CHECKS {
            self.last_check = Instant::now();
            self.unreadable.forget_exited();
            for pid in self.servers.exited() {
                servers::remove(probes, pid)?;
            }
        }
        self.queries.after_batch(probes)
    }
}

/// A command other than a query, as the table counts it: `COM_PING`.
fn command_name(command: u32) -> String {
    const NAMES: [&str; 32] = [
        "COM_SLEEP",
        "COM_QUIT",
        "COM_INIT_DB",
        "COM_QUERY",
        "COM_FIELD_LIST",
        "COM_CREATE_DB",
        "COM_DROP_DB",
        "COM_REFRESH",
        "COM_SHUTDOWN",
        "COM_STATISTICS",
        "COM_PROCESS_INFO",
        "COM_CONNECT",
        "COM_PROCESS_KILL",
        "COM_DEBUG",
        "COM_PING",
        "COM_TIME",
        "COM_DELAYED_INSERT",
        "COM_CHANGE_USER",
        "COM_BINLOG_DUMP",
        "COM_TABLE_DUMP",
        "COM_CONNECT_OUT",
        "COM_REGISTER_SLAVE",
        "COM_STMT_PREPARE",
        "COM_STMT_EXECUTE",
        "COM_STMT_SEND_LONG_DATA",
        "COM_STMT_CLOSE",
        "COM_STMT_RESET",
        "COM_SET_OPTION",
        "COM_STMT_FETCH",
        "COM_DAEMON",
        "COM_BINLOG_DUMP_GTID",
        "COM_RESET_CONNECTION",
    ];
    NAMES
        .get(command as usize)
        .map_or_else(|| format!("COM_{command}"), |name| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_both_servers_by_their_mangled_names() {
        let demangle = |name: &str| cpp_demangle::Symbol::new(name).unwrap().demangle().unwrap();
        assert_eq!(
            demangle("_Z16dispatch_command19enum_server_commandP3THDPcjb"),
            SIGNATURES[0].0
        );
        assert_eq!(
            demangle("_Z16dispatch_commandP3THDPK8COM_DATA19enum_server_command"),
            SIGNATURES[1].0
        );
        assert_eq!(command_name(14), "COM_PING");
        assert_eq!(command_name(250), "COM_250");
    }

    #[test]
    fn refuses_what_is_no_server() {
        let err = target(PathBuf::from("/bin/true"), "/bin/true".into()).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("is not a MySQL or MariaDB server"),
            "{message}"
        );
        assert!(message.contains(SIGNATURES[0].0), "{message}");
    }

    #[test]
    fn finds_each_servers_dispatch_command() {
        let mariadbd = std::path::Path::new("/usr/sbin/mariadbd");
        assert!(
            mariadbd.exists(),
            "cargo xtask setup --test installs mariadb-server"
        );
        let mariadb = target(mariadbd.to_path_buf(), "mariadbd".into()).unwrap();
        assert_eq!(mariadb.signature, signature::MARIADB);
        assert!(mariadb.offset > 0);
        // Oracle MySQL, where `cargo xtask test` made its root.
        if let Some(root) = std::env::var_os("TRACER_MYSQL_ROOT") {
            let mysqld = std::path::Path::new(&root).join("usr/sbin/mysqld");
            let mysql = target(mysqld.clone(), "mysqld".into()).unwrap();
            assert_eq!(mysql.signature, signature::MYSQL8);
            // Built for CET: probed past the endbr64 it begins with, which would be
            // single-stepped.
            let code = std::fs::read(&mysqld).unwrap();
            let at = mysql.offset as usize;
            assert_eq!(code[at - 4..at], [0xf3, 0x0f, 0x1e, 0xfa]);
        }
    }
}
