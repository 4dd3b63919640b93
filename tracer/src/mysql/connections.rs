//! `tracer mysql --connections`: how long a new client waits to get in, and where. From the
//! listener's accept to the server's handshake, to authentication done, to the first command;
//! the listener's own time per accepted connection, which saturates in a connection storm;
//! before that, a TCP connection's wait in the kernel's accept queue, and the connections the
//! kernel turned away from full queues (`ListenOverflows`, `ListenDrops` of the servers'
//! network namespaces). Each server kind has its own functions for it, found by their
//! demangled signatures.

use std::io::Write as _;

use anyhow::{Result, bail};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Unit,
};
use serde::Serialize;
use tracer_common::mysql::{Accepted, Connection, signature};

use super::demangled;
use crate::{
    event_loop::Window,
    histogram::{Latencies, LatencySummary},
    loader::Probes,
    metrics::{Metrics, log2_seconds},
    output::{self, Output},
    perf,
    usdt::Binary,
};

/// A function followed, demangled, with the programs at its entry and return.
type Function = (&'static str, &'static str, Option<&'static str>);

/// MariaDB's way in: the listener's `handle_accepted_socket()` hands a `CONNECT` on
/// (`create_new_thread()`), a server thread makes its THD (`CONNECT::create_thd()`) and
/// authenticates it.
const MARIADB: &[Function] = &[
    (
        "handle_accepted_socket(st_mysql_socket, st_mysql_socket)",
        "mysql_accepted",
        Some("mysql_accepted_return"),
    ),
    ("create_new_thread(CONNECT*)", "mysql_handing_on", None),
    ("CONNECT::create_thd(THD*)", "mysql_logging_in", None),
    (
        "acl_authenticate(THD*, unsigned int)",
        "mysql_authenticating",
        Some("mysql_authenticated"),
    ),
];

/// MySQL 8's: the listener hands a `Channel_info` on (`process_new_connection()`, then the
/// connection handler's `add_connection()`), a server thread makes the THD from it.
const MYSQL8: &[Function] = &[
    (
        "Connection_handler_manager::process_new_connection(Channel_info*)",
        "mysql_accepted",
        Some("mysql_accepted_return"),
    ),
    (
        "Per_thread_connection_handler::add_connection(Channel_info*)",
        "mysql_handing_on",
        None,
    ),
    ("Channel_info::create_thd()", "mysql_logging_in", None),
    (
        "acl_authenticate(THD*, enum_server_command)",
        "mysql_authenticating",
        Some("mysql_authenticated"),
    ),
];

fn functions(kind: u32) -> &'static [Function] {
    match kind {
        signature::MYSQL8 => MYSQL8,
        _ => MARIADB,
    }
}

/// Where a binary's way-in functions are: (demangled name, offset), and which server kind's
/// they are.
#[derive(Debug)]
pub struct Sites(Vec<(&'static str, u64)>, u32);

impl Sites {
    /// The way in of a server of this [`signature`] kind.
    pub fn find(binary: &Binary, shown: &str, kind: u32) -> Result<Self> {
        let mut sites = Vec::new();
        for &(function, _, _) in functions(kind) {
            let short = function.split('(').next().unwrap_or(function);
            let short = short.rsplit("::").next().unwrap_or(short);
            let found = binary.find_symbol(|name| {
                name.contains(short) && demangled(name).is_some_and(|d| d == function)
            });
            let Some((_, _, offset)) = found else {
                bail!(
                    "{shown} has no {function}: --connections cannot follow its way in (stripped of .dynsym, or another version)"
                );
            };
            sites.push((function, binary.entry_probe_offset(offset)));
        }
        Ok(Self(sites, kind))
    }

    pub fn attach(&self, probes: &mut Probes, path: &std::path::Path) -> Result<()> {
        for (&(function, offset), &(_, entry, exit)) in self.0.iter().zip(functions(self.1)) {
            for (program, retprobe) in [(Some(entry), false), (exit, true)] {
                let Some(program) = program else { continue };
                let uprobe = perf::Uprobe {
                    path: path.to_path_buf(),
                    offset,
                    semaphore: 0,
                    retprobe,
                };
                probes.attach_uprobe(program, &uprobe, 0)?;
            }
            probes.say(format_args!(
                "{function} at {offset:#x} in {}",
                path.display()
            ));
        }
        Ok(())
    }
}

/// The phases, as NDJSON and `tracer serve` name them, and as the text summary titles them.
const PHASES: [(&str, &str); 3] = [
    ("accept_to_handshake", "accept -> handshake sent"),
    (
        "handshake_to_authenticated",
        "handshake sent -> authenticated",
    ),
    (
        "authenticated_to_first_command",
        "authenticated -> first command",
    ),
];

pub struct Connections {
    window: Totals,
    metrics: Option<ConnectionMetrics>,
    /// The servers' network namespaces, one server each, with their listen counters when last
    /// read.
    namespaces: Vec<(u32, ListenCounters)>,
}

#[derive(Default)]
struct Totals {
    connections: u64,
    failed: u64,
    accepted_before: u64,
    phases: [Latencies; 3],
    listener_busy: Latencies,
    accept_queue: Latencies,
}

/// `TcpExt` counters of a network namespace: connections turned away because a listener's
/// accept queue was full, and all those dropped at a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ListenCounters {
    overflows: u64,
    drops: u64,
}

struct ConnectionMetrics {
    phases: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    listener_busy: Histogram,
    accept_queue: Histogram,
    failed: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

impl Connections {
    /// For `servers` (none: unknown until they connect, and no listen counters).
    pub fn new(servers: &[u32]) -> Self {
        let mut namespaces: Vec<(u32, ListenCounters, std::path::PathBuf)> = Vec::new();
        for &pid in servers {
            let Ok(namespace) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            if namespaces.iter().any(|(_, _, seen)| *seen == namespace) {
                continue;
            }
            if let Some(counters) = listen_counters(pid) {
                namespaces.push((pid, counters, namespace));
            }
        }
        Self {
            window: Totals::default(),
            metrics: None,
            namespaces: namespaces
                .into_iter()
                .map(|(pid, counters, _)| (pid, counters))
                .collect(),
        }
    }

    /// Server `pid`, started since tracer: its listen counters too, if its network namespace
    /// has none counted yet.
    pub fn add_server(&mut self, pid: u32) {
        let namespace = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let Some(new) = namespace(pid) else { return };
        if self
            .namespaces
            .iter()
            .any(|(known, _)| namespace(*known).as_ref() == Some(&new))
        {
            return;
        }
        if let Some(counters) = listen_counters(pid) {
            self.namespaces.push((pid, counters));
        }
    }

    pub fn connection(&mut self, connection: &Connection) {
        let totals = &mut self.window;
        totals.connections += 1;
        totals.failed += connection.failed as u64;
        totals.accepted_before += (connection.accepted_ns == 0) as u64;
        let times = [
            connection.accepted_ns,
            connection.handshake_ns,
            connection.authenticated_ns,
            connection.first_command_ns,
        ];
        for (i, phase) in times.windows(2).enumerate() {
            let [begin, end] = [phase[0], phase[1]];
            if begin == 0 || end < begin {
                continue;
            }
            totals.phases[i].record(end - begin);
            if let Some(metrics) = &self.metrics {
                let label = PhaseLabel { phase: PHASES[i].0 };
                metrics
                    .phases
                    .get_or_create(&label)
                    .observe(seconds(end - begin));
            }
        }
        if let Some(metrics) = &self.metrics
            && connection.failed != 0
        {
            metrics.failed.inc();
        }
    }

    pub fn accepted(&mut self, accepted: &Accepted) {
        self.window.listener_busy.record(accepted.busy_ns);
        if accepted.queued_ns != 0 {
            self.window.accept_queue.record(accepted.queued_ns);
        }
        if let Some(metrics) = &self.metrics {
            metrics.listener_busy.observe(seconds(accepted.busy_ns));
            if accepted.queued_ns != 0 {
                metrics.accept_queue.observe(seconds(accepted.queued_ns));
            }
        }
    }

    /// What the servers' listeners turned away since last asked.
    fn turned_away(&mut self) -> ListenCounters {
        let mut window = ListenCounters::default();
        for (pid, last) in &mut self.namespaces {
            let Some(now) = listen_counters(*pid) else {
                continue;
            };
            window.overflows += now.overflows.saturating_sub(last.overflows);
            window.drops += now.drops.saturating_sub(last.drops);
            *last = now;
        }
        window
    }

    pub fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.metrics = Some(ConnectionMetrics {
            phases: metrics.register(
                "tracer_mysql_connection_phase",
                "How long new MySQL connections took to get in, by phase: accept to handshake sent, to authenticated, to the first command",
                Some(Unit::Seconds),
                Family::new_with_constructor(log2_seconds as fn() -> Histogram),
            ),
            listener_busy: metrics.register(
                "tracer_mysql_listener_busy",
                "The listener's time per accepted MySQL connection, from accept to handing it on",
                Some(Unit::Seconds),
                log2_seconds(),
            ),
            accept_queue: metrics.register(
                "tracer_mysql_accept_queue_wait",
                "How long new TCP connections to MySQL waited in the kernel's accept queue before the listener took them",
                Some(Unit::Seconds),
                log2_seconds(),
            ),
            failed: metrics.register(
                "tracer_mysql_connection_failures",
                "New MySQL connections that failed to authenticate",
                None,
                Counter::default(),
            ),
        });
    }

    pub fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        let totals = std::mem::take(&mut self.window);
        let turned_away = self.turned_away();
        if out.json {
            let phases = PHASES.iter().zip(&totals.phases);
            out.json_line(&ConnectionsJson {
                r#type: "connections",
                time: output::rfc3339(window.end),
                connections: totals.connections,
                failed: totals.failed,
                accepted_before_tracing: totals.accepted_before,
                phases: phases.map(|((name, _), l)| (*name, l.summary())).collect(),
                listener_busy: totals.listener_busy.summary(),
                accept_queue: totals.accept_queue.summary(),
                listen_overflows: turned_away.overflows,
                listen_drops: turned_away.drops,
            })?;
            return Ok(());
        }
        writeln!(
            out,
            "\nNew connections: {} ({} failed to authenticate, {} accepted before tracing)",
            totals.connections, totals.failed, totals.accepted_before
        )?;
        if !self.namespaces.is_empty() {
            writeln!(
                out,
                "Turned away by full listen queues: {} overflows, {} drops (TcpExt)",
                turned_away.overflows, turned_away.drops
            )?;
        }
        let sections = PHASES.iter().map(|(_, title)| *title).zip(&totals.phases);
        let queue = "waited in the accept queue (TCP)";
        let listener = "listener busy per accepted connection";
        let before = [(queue, &totals.accept_queue)];
        let after = [(listener, &totals.listener_busy)];
        for (title, latencies) in before.into_iter().chain(sections).chain(after) {
            if latencies.count() == 0 {
                continue;
            }
            writeln!(out, "{title}: {}", latencies.count())?;
            write!(out, "{}", latencies.render_log2())?;
            writeln!(out, "     {}", latencies.percentiles_line())?;
        }
        Ok(())
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[derive(Serialize)]
struct ConnectionsJson {
    r#type: &'static str,
    time: String,
    connections: u64,
    failed: u64,
    accepted_before_tracing: u64,
    phases: std::collections::BTreeMap<&'static str, LatencySummary>,
    listener_busy: LatencySummary,
    accept_queue: LatencySummary,
    listen_overflows: u64,
    listen_drops: u64,
}

/// A network namespace's listen counters, as process `pid` sees them.
fn listen_counters(pid: u32) -> Option<ListenCounters> {
    let netstat = std::fs::read_to_string(format!("/proc/{pid}/net/netstat")).ok()?;
    parse_listen_counters(&netstat)
}

/// `ListenOverflows` and `ListenDrops` from `/proc/net/netstat`: a line of `TcpExt:` names,
/// then one of their values.
fn parse_listen_counters(netstat: &str) -> Option<ListenCounters> {
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let value = |wanted: &str| {
        let at = names.split_whitespace().position(|name| name == wanted)?;
        values.split_whitespace().nth(at)?.parse().ok()
    };
    Some(ListenCounters {
        overflows: value("ListenOverflows")?,
        drops: value("ListenDrops")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_run_from_one_step_to_the_next() {
        let mut connections = Connections::new(&[]);
        let connection = |accepted_ns, first_command_ns| Connection {
            accepted_ns,
            handshake_ns: 10_000,
            authenticated_ns: 30_000,
            first_command_ns,
            ..Default::default()
        };
        connections.connection(&connection(4_000, 70_000));
        // Accepted before tracing: no first phase. Failed: no last.
        connections.connection(&connection(0, 0));
        let totals = &connections.window;
        assert_eq!(totals.connections, 2);
        assert_eq!(totals.accepted_before, 1);
        let counts = totals.phases.each_ref().map(|l| l.count());
        assert_eq!(counts, [1, 2, 1]);
        assert_eq!(totals.phases[0].total_ns(), 6_000);
        assert_eq!(totals.phases[2].total_ns(), 40_000);
    }

    #[test]
    fn reads_the_listen_counters_of_a_namespace() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\n\
                       TcpExt: 0 17 21 5\n\
                       IpExt: InNoRoutes\n\
                       IpExt: 0\n";
        let counters = parse_listen_counters(netstat).unwrap();
        assert_eq!(
            counters,
            ListenCounters {
                overflows: 17,
                drops: 21
            }
        );
        assert!(listen_counters(std::process::id()).is_some());
    }

    #[test]
    fn finds_each_servers_way_in() {
        let binary = Binary::open(std::path::Path::new("/usr/sbin/mariadbd")).unwrap();
        let sites = Sites::find(&binary, "mariadbd", signature::MARIADB).unwrap();
        assert_eq!(sites.0.len(), MARIADB.len());
        // Oracle MySQL, where `cargo xtask test` made its root.
        if let Some(root) = std::env::var_os("TRACER_MYSQL_ROOT") {
            let mysqld = std::path::Path::new(&root).join("usr/sbin/mysqld");
            let binary = Binary::open(&mysqld).unwrap();
            let sites = Sites::find(&binary, "mysqld", signature::MYSQL8).unwrap();
            assert_eq!(sites.0.len(), MYSQL8.len());
        }
        let refused = Sites::find(
            &Binary::open("/bin/true".as_ref()).unwrap(),
            "/bin/true",
            signature::MARIADB,
        );
        let message = format!("{:#}", refused.err().unwrap());
        assert!(
            message.contains("has no handle_accepted_socket("),
            "{message}"
        );
    }
}
