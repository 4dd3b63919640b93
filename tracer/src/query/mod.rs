//! The per-query engine `tracer pg` and `tracer mysql` share, userspace side: their common
//! options, the table of normalized queries with latency, reclaim and compaction stalls and
//! counters, slow query lines, summaries in text and NDJSON, and the serve metric. Each
//! database's module decodes its records into query text and hands it here.

pub mod breakdown;
pub mod counters;
mod totals;

use std::{collections::HashMap, io::Write, rc::Rc};

use anyhow::{Context, Result};
use rustc_hash::FxHashMap;
use serde::Serialize;
use tracer_common::query::{
    COUNTER_SLOTS, MAX_COUNTERS, MAX_SERVERS, MAX_TEXT, QueryConfig, QueryDone,
};

use crate::{
    cgroup::{self, Hierarchy},
    compaction,
    event_loop::Window,
    histogram::{LatencySummary, human_ns},
    loader::{AttachMode, Kernel, Probes, Setting, Tracepoint},
    metrics::{Labeler, Metrics, TopHistograms, top_key},
    output::{self, Align, Output, Table},
    perf::{self, Counter},
    sql,
    workload::Workload,
};

use breakdown::{BreakdownJson, BreakdownTotals};
pub use counters::BackendCounters;
pub use totals::{By, Client};
use totals::{Row, Totals};

const BEGIN_ARGS: &[&str] = &["int", "gfp_t"];
const END_ARGS: &[&str] = &["long unsigned int"];

/// Reclaim stalls, charged to the query the stalled thread is running.
pub const RECLAIM_TRACEPOINTS: &[Tracepoint] = &[
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

/// Direct compaction, charged to the query the compacting thread is running. Classic
/// tracepoints only: cold paths, and their BTF arguments are kernel structs.
const COMPACTION_TRACEPOINTS: &[Tracepoint] = &[
    compaction_tracepoint("mm_compaction_try_to_compact_pages", "query_compaction_try"),
    compaction_tracepoint("mm_compaction_end", "query_compaction_end"),
    compaction_tracepoint("mm_compaction_deferred", "query_compaction_deferred"),
    compaction_tracepoint("mm_compaction_defer_reset", "query_compaction_defer_reset"),
    Tracepoint {
        fields: &[("ret", 20, 4)],
        ..compaction_tracepoint("mm_compaction_suitable", "query_compaction_suitable")
    },
];

const fn compaction_tracepoint(name: &'static str, program: &'static str) -> Tracepoint {
    Tracepoint {
        category: "compaction",
        name,
        program,
        args: None,
        fields: &[],
    }
}

/// Attaches compaction inside queries where the kernel has its tracepoints, unless a tool
/// beside (serve's pg and mysql) did; says so where not, and the rest is traced all the same.
pub fn attach_compaction(kernel: &Kernel, probes: &mut Probes) {
    if probes.attached(COMPACTION_TRACEPOINTS) {
        return;
    }
    let attached = compaction::Statuses::read(&kernel.tracefs).and_then(|_| {
        probes.attach_tracepoints(kernel, COMPACTION_TRACEPOINTS, AttachMode::Classic, None)
    });
    if let Err(error) = attached {
        eprintln!("tracer: compaction inside queries not traced: {error:#}");
        probes.detach(COMPACTION_TRACEPOINTS);
    }
}

/// A thread exiting, for `program` (the engine's exit program, as a database's module names
/// it): what was kept of it goes.
pub const fn exit_tracepoint(program: &'static str) -> Tracepoint {
    Tracepoint {
        category: "sched",
        name: "sched_process_exit",
        program,
        args: None,
        fields: &[],
    }
}

/// A process exec'ing a new program, for `program` (the engine's exec program, as a
/// database's module names it): a server that starts after tracer.
pub const fn exec_tracepoint(program: &'static str) -> Tracepoint {
    Tracepoint {
        category: "sched",
        name: "sched_process_exec",
        program,
        args: Some(&["struct task_struct *", "pid_t", "struct linux_binprm *"]),
        fields: &[],
    }
}

/// Ring buffer for query records: at 40k queries/s of ~300 bytes, 100 ms of them.
const RING_BYTES: u32 = 16 << 20;

/// The load-time settings every per-query tool has: its `QueryConfig` global (named `global`),
/// whether it traces only the servers it names ([`add_server`]), text length and counters, and
/// the engine's maps sized; with `requests`, the per-thread request records too (preallocated,
/// an LRU map: 9 MB); with `titles`, each new backend's process title is read.
pub fn settings(
    kernel: &Kernel,
    global: &'static str,
    filter_servers: bool,
    options: &Options,
    counters: &[Counter],
    requests: bool,
    titles: bool,
) -> Result<Vec<Setting>> {
    let (task_mm, mm_arg_start) = match titles {
        true => (
            kernel.btf.member_offset("task_struct", "mm")?,
            kernel.btf.member_offset("mm_struct", "arg_start")?,
        ),
        false => (0, 0),
    };
    let per_thread_events = counters::needs_perf_events(counters);
    let offsets = breakdown::Offsets::find(kernel, options.parts())?;
    let config = QueryConfig {
        filter_servers: filter_servers as u32,
        task_sched_task_group: offsets.task_sched_task_group,
        task_group_throttled_time: offsets.task_group_throttled_time,
        text_len: options.query_len,
        counters: counters.len() as u32,
        task_real_parent: counters::real_parent(&kernel.btf)?,
        task_counters: if per_thread_events {
            Default::default()
        } else {
            counters::task_counters(&kernel.btf, counters)?
        },
        task_mm,
        mm_arg_start,
    };
    let mut settings = vec![
        Setting::global(global, &config),
        Setting::global("QUERY_PAGE_CACHE_ORDER", &offsets.page_cache_order),
        Setting::MapSize {
            name: "EVENTS",
            size: RING_BYTES,
        },
        Setting::MapSize {
            name: "QUERY_THREADS",
            size: 16384,
        },
    ];
    if let Ok(statuses) = compaction::Statuses::read(&kernel.tracefs) {
        let statuses = statuses.kernel_side();
        settings.push(Setting::global("QUERY_COMPACTION_STATUSES", &statuses));
    }
    if requests {
        settings.push(Setting::MapSize {
            name: "QUERY_REQUESTS",
            size: 4096,
        });
    }
    if per_thread_events {
        settings.push(Setting::OwnMap {
            name: "QUERY_COUNTERS",
            map: perf::create_event_array("QUERY_COUNTERS", COUNTER_SLOTS)?,
        });
    }
    Ok(settings)
}

/// Names process `pid` a server of `tool`'s (`tracer_common::record::tool`): its threads and
/// its children's are traced.
pub fn add_server(probes: &mut Probes, tool: u32, pid: u32) -> Result<()> {
    let mut servers: aya::maps::HashMap<_, u32, u32> =
        aya::maps::HashMap::try_from(probes.map_mut("QUERY_SERVERS")?)?;
    servers
        .insert(pid, tool, 0)
        .with_context(|| format!("cannot trace server {pid}: at most {MAX_SERVERS} at once"))
}

/// Forgets server `pid` (it exited: its pid may come back as anything).
pub fn remove_server(probes: &mut Probes, pid: u32) -> Result<()> {
    let mut servers: aya::maps::HashMap<_, u32, u32> =
        aya::maps::HashMap::try_from(probes.map_mut("QUERY_SERVERS")?)?;
    match servers.remove(&pid) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Options every per-query tool takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Bytes of query text to read from the server
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
    /// What a row of the table stands for
    #[arg(long, value_enum, default_value_t = By::Query)]
    pub by: By,
    /// Where each query's time went: on a CPU, waiting for one, throttled, blocked (D state:
    /// disk and other uninterruptible waits), sleeping (locks, the client); the pages it
    /// missed in the page cache, the block I/O it submitted. Alone: every part
    #[arg(
        long,
        value_enum,
        value_name = "PARTS",
        value_delimiter = ',',
        num_args = 0..,
        require_equals = true,
        default_missing_values = breakdown::ALL,
    )]
    pub breakdown: Vec<breakdown::Part>,
}

impl Options {
    /// The `--breakdown` parts chosen.
    pub fn parts(&self) -> breakdown::Parts {
        breakdown::Parts::of(&self.breakdown)
    }
}

/// What the engine sets up once its programs are loaded, before anything is attached.
pub fn prepare(probes: &mut Probes, options: &Options) -> Result<()> {
    if options.parts().io {
        breakdown::name_swap_devices(probes)?;
    }
    Ok(())
}

/// What a request ran: query text, or a statement's key.
pub enum Ran<'a> {
    Text(std::borrow::Cow<'a, str>),
    Key(Rc<str>),
}

/// Statement `index` of `count` in the request `done` ended: its equal share, timed as if they
/// ran one after the other (integer remainders go to the first).
fn share(done: &QueryDone, count: u64, index: u64) -> QueryDone {
    let part = |total: u64| total / count + if index == 0 { total % count } else { 0 };
    let latency = done.latency_ns / count;
    let mut share = *done;
    share.start_ns = done.start_ns + index * latency;
    share.latency_ns = part(done.latency_ns);
    share.reclaim_ns = part(done.reclaim_ns);
    share.reclaim_count = part(done.reclaim_count.into()) as u32;
    share.compaction_ns = part(done.compaction_ns);
    share.compaction_count = part(done.compaction_count.into()) as u32;
    for value in breakdown::values(&mut share.breakdown) {
        *value = part(*value);
    }
    for counter in &mut share.counters {
        *counter = part(*counter);
    }
    share
}

/// Something a summary says beside the queries, with how many: "unseen: the requests of 2 TLS
/// backends", "3 backends through their sockets".
pub struct Aside {
    /// Its NDJSON field, always there.
    pub field: &'static str,
    pub count: u64,
    /// Its text, shown when `count` is not 0.
    pub text: String,
}

/// The queries of one summary window, and what prints them.
pub struct Queries {
    pub counters: BackendCounters,
    raw: bool,
    normalizer: sql::Normalizer,
    top: usize,
    breakdown: breakdown::Parts,
    ledger: Ledger,
    /// Threads seen for the first time, whose counters to open once the probes are at hand.
    new_threads: Vec<u32>,
}

/// Where a server's threads run: their cgroup, and its container where it is one.
struct Place {
    cgroup: String,
    workload: Option<Rc<Workload>>,
}

impl Place {
    /// Its container as tables show one; outside containers, `-` or (`cgroup`) the cgroup.
    fn shown(&self, cgroup: bool) -> String {
        match (&self.workload, cgroup) {
            (Some(workload), _) => workload.shown(),
            (None, true) => self.cgroup.clone(),
            (None, false) => "-".to_owned(),
        }
    }
}

/// What the engine knows of a server thread.
#[derive(Default)]
struct ServerThread {
    /// Its cgroup's id, where it ran its first query.
    place: u64,
    client: Client,
}

/// Where calls are entered: the window's rows and the metric, under who ran them and where.
struct Ledger {
    by: By,
    slow_ns: Option<u64>,
    window: Totals,
    /// Each server thread's, from its first query to its exit.
    threads: FxHashMap<u32, ServerThread>,
    /// Where servers run: the cgroups of their threads, and their containers.
    places: cgroup::Names,
    metrics: Option<QueryMetrics>,
}

/// `tracer serve`'s latency per workload and normalized query, and its breakdown's totals.
struct QueryMetrics {
    histograms: TopHistograms,
    values: Vec<breakdown::CallValue>,
    labeler: Labeler,
    /// Where each call's key is joined.
    key: String,
}

impl Ledger {
    fn place(&mut self, cgroup_id: u64) -> Place {
        let cgroup = self.places.path(cgroup_id);
        let workload = self.places.workload(&cgroup);
        Place { cgroup, workload }
    }

    /// Adds a finished query to the window (and the metric); true when it is slow.
    fn record(&mut self, key: &str, done: &QueryDone) -> bool {
        let unknown = ServerThread::default();
        let thread = self.threads.get(&done.task.tid).unwrap_or(&unknown);
        let (place, client) = (thread.place, &thread.client);
        let (group, row) = self.by.row(place, client, key);
        self.window.row(group, row).record(done);
        self.window.all.record(done.latency_ns);
        if let Some(metrics) = &mut self.metrics {
            let database = client.database.as_deref().unwrap_or_default();
            let user = client.user.as_deref().unwrap_or_default();
            top_key(&mut metrics.key, database, user, key);
            let places = &mut self.places;
            let labels = || metrics.labeler.labels(&places.path(place));
            let totals = metrics.values.iter().map(|value| value(done));
            let seconds = done.latency_ns as f64 / 1e9;
            (metrics.histograms).observe(place, labels, &metrics.key, seconds, totals);
        }
        self.slow_ns.is_some_and(|slow| done.latency_ns >= slow)
    }
}

impl Queries {
    pub fn new(
        options: &Options,
        dialect: sql::Dialect,
        counters: BackendCounters,
        hierarchy: &Hierarchy,
    ) -> Self {
        let ledger = Ledger {
            by: options.by,
            slow_ns: options.slow.map(|ms| (ms * 1e6) as u64),
            window: Totals::new(options.top),
            threads: FxHashMap::default(),
            places: cgroup::Names::new(hierarchy),
            metrics: None,
        };
        Self {
            counters,
            raw: options.raw,
            normalizer: sql::Normalizer::new(dialect),
            top: options.top,
            breakdown: options.parts(),
            ledger,
            new_threads: Vec::new(),
        }
    }

    /// What a query is counted under: its text normalized, or as sent with --raw.
    pub fn key<'a>(&'a mut self, text: &'a str) -> &'a str {
        table_key(&mut self.normalizer, self.raw, text)
    }

    /// A query of this text finished (a text of several statements: each is a call).
    pub fn add_text(&mut self, text: &str, done: &QueryDone, out: &mut Output) -> Result<()> {
        self.add_request(&[Ran::Text(text.into())], done, out)
    }

    /// A query counted under `key` (already normalized) finished.
    pub fn add_key(&mut self, key: &str, done: &QueryDone, out: &mut Output) -> Result<()> {
        if self.ledger.record(key, done) {
            self.print_slow(done, key, out)?;
        }
        Ok(())
    }

    /// A request that ran these finished: each statement is a call. The wire tells only when
    /// the whole answer ends: several statements share the request's time, stalls and
    /// counters equally.
    pub fn add_request(&mut self, ran: &[Ran], done: &QueryDone, out: &mut Output) -> Result<()> {
        let dialect = self.normalizer.dialect();
        match ran {
            [Ran::Key(key)] => return self.add_key(key, done, out),
            [Ran::Text(text)]
                if sql::single_statement(text) || sql::statements(text, dialect).len() == 1 =>
            {
                let key = table_key(&mut self.normalizer, self.raw, text);
                if self.ledger.record(key, done) {
                    let key = key.to_owned();
                    self.print_slow(done, &key, out)?;
                }
                return Ok(());
            }
            _ => {}
        }
        let mut keys: Vec<String> = Vec::new();
        for item in ran {
            match item {
                Ran::Text(text) => {
                    for statement in sql::statements(text, dialect) {
                        keys.push(
                            table_key(&mut self.normalizer, self.raw, statement.trim()).to_owned(),
                        );
                    }
                }
                Ran::Key(key) => keys.push(key.to_string()),
            }
        }
        for (i, key) in keys.iter().enumerate() {
            self.add_key(key, &share(done, keys.len() as u64, i as u64), out)?;
        }
        Ok(())
    }

    /// A server thread ran its first query since tracer started, in the cgroup of this id.
    pub fn new_thread(&mut self, tid: u32, cgroup_id: u64) {
        self.new_threads.push(tid);
        self.ledger.threads.entry(tid).or_default().place = cgroup_id;
    }

    /// Whom server thread `tid` serves (its queries are counted under it), as the database's
    /// module learns it.
    pub fn client_of(&mut self, tid: u32) -> &mut Client {
        &mut self.ledger.threads.entry(tid).or_default().client
    }

    /// A server thread exited.
    pub fn thread_exited(&mut self, tid: u32) {
        self.ledger.threads.remove(&tid);
    }

    /// Opens the counters of the threads seen since the last call.
    pub fn after_batch(&mut self, probes: &mut Probes) -> Result<()> {
        for tid in std::mem::take(&mut self.new_threads) {
            self.counters.add(probes, tid)?;
        }
        Ok(())
    }

    /// `tracer serve`: latency per normalized query as the metric `name`.
    pub fn register_metrics(&mut self, metrics: &mut Metrics, name: &str, help: &str) {
        let (totals, values) = breakdown::exported(self.breakdown).into_iter().unzip();
        let histograms = metrics.top_histograms(name, help, self.top, totals);
        self.ledger.metrics = Some(QueryMetrics {
            histograms,
            values,
            labeler: metrics.labeler(),
            key: String::new(),
        });
    }

    /// Prints the window's summary and starts a new window.
    pub fn summary(&mut self, window: &Window, asides: &[Aside], out: &mut Output) -> Result<()> {
        let mut totals = std::mem::replace(&mut self.ledger.window, Totals::new(self.top));
        if out.json {
            // The rows the table shows, and the rest in one: serve's flight recorder keeps
            // minutes of these lines (with a row per distinct shape, 60 MB a minute of a
            // shape flood's history).
            totals.fold_beyond(self.top);
            let summary = self.summary_json(&totals, window, asides);
            return Ok(out.json_line(&summary)?);
        }
        self.print_summary(&totals, window, asides, out)
    }

    fn print_slow(&self, done: &QueryDone, query: &str, out: &mut Output) -> Result<()> {
        let time = out.clock().wall(done.start_ns + done.latency_ns);
        let client = (self.ledger.threads.get(&done.task.tid)).map(|thread| &thread.client);
        if out.json {
            out.json_line(&SlowJson {
                r#type: "slow_query",
                time: output::rfc3339(time),
                pid: done.task.pid,
                latency_us: done.latency_ns as f64 / 1000.0,
                reclaim_us: done.reclaim_ns as f64 / 1000.0,
                reclaim_stalls: done.reclaim_count,
                compaction_us: done.compaction_ns as f64 / 1000.0,
                compaction_stalls: done.compaction_count,
                counters: self.counter_values(&done.counters, done.counters_valid != 0),
                breakdown: self.breakdown.any().then(|| {
                    BreakdownJson::of(self.breakdown, &done.breakdown, done.latency_ns, 1)
                }),
                database: client.and_then(|client| client.database.as_deref()),
                user: client.and_then(|client| client.user.as_deref()),
                query,
            })?;
        } else {
            let parts = breakdown::slow_line(self.breakdown, &done.breakdown);
            writeln!(
                out,
                "{} {:>7} {:>10.3} {:>10.3} {:>10.3} {parts}{}",
                output::clock_time(time),
                done.task.pid,
                done.latency_ns as f64 / 1e6,
                done.reclaim_ns as f64 / 1e6,
                done.compaction_ns as f64 / 1e6,
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

    fn print_summary(
        &mut self,
        totals: &Totals,
        window: &Window,
        asides: &[Aside],
        out: &mut Output,
    ) -> Result<()> {
        let time = output::clock_time(window.end);
        let secs = window.length.as_secs_f64();
        let all = &totals.all;
        let asides: String = asides
            .iter()
            .filter(|aside| aside.count > 0)
            .map(|aside| format!("; {}", aside.text))
            .collect();
        if all.count() == 0 {
            writeln!(
                out,
                "{time}  no queries in {secs:.1}s; lost: {}{asides}",
                window.lost
            )?;
            return Ok(());
        }
        writeln!(
            out,
            "{time}  {} queries in {secs:.1}s ({:.0}/s), {} in all; lost: {}{asides}",
            all.count(),
            all.count() as f64 / secs,
            human_ns(all.total_ns()),
            window.lost
        )?;
        write!(out, "{}", all.render_log2())?;
        writeln!(out, "     {}\n", all.percentiles_line())?;
        let rows: Vec<Row> = totals.ranked().into_iter().take(self.top).collect();
        let places: Vec<Place> = (rows.iter())
            .map(|row| self.ledger.place(row.group.place))
            .collect();
        let by = self.ledger.by;
        let shows = |by_it: By, known: &dyn Fn(&Row) -> bool| {
            by == by_it || (by == By::Query && rows.iter().any(known))
        };
        let database = shows(By::Database, &|row| row.group.client.database.is_some());
        let user = shows(By::User, &|row| row.group.client.user.is_some());
        let container = by == By::Container || places.iter().any(|place| place.workload.is_some());
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
            ("COMPACT", Align::Right),
            ("CSTALLS", Align::Right),
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
        columns.extend(
            breakdown::headers(self.breakdown)
                .into_iter()
                .map(|header| (header, Align::Right)),
        );
        let labels = [
            (database, "DATABASE"),
            (user, "USER"),
            (container, "CONTAINER"),
            (by == By::Query, "QUERY"),
        ];
        columns.extend(
            (labels.iter())
                .filter(|(shown, _)| *shown)
                .map(|(_, name)| (*name, Align::Left)),
        );
        let mut table = Table::new(&columns);
        for (row, place) in rows.iter().zip(&places) {
            let stats = row.stats;
            let latencies = &stats.latencies;
            let mut cells = vec![
                latencies.count().to_string(),
                human_ns(latencies.total_ns()),
                human_ns(latencies.total_ns() / latencies.count().max(1)),
                human_ns(latencies.quantile_ns(0.5)),
                human_ns(latencies.quantile_ns(0.99)),
                human_ns(latencies.max_ns()),
                human_ns(stats.reclaim_ns),
                stats.reclaim_count.to_string(),
                human_ns(stats.compaction_ns),
                stats.compaction_count.to_string(),
            ];
            let per_call = |total: u64| match stats.counted_calls {
                0 => "-".to_string(),
                calls => format!("{:.1}", total as f64 / calls as f64),
            };
            if llc {
                cells.push(match stats.counters[0] {
                    0 => "-".into(),
                    references => format!(
                        "{:.1}",
                        100.0 * (1.0 - stats.counters[1] as f64 / references as f64)
                    ),
                });
            } else {
                cells.extend(
                    stats.counters[..self.counters.kinds.len()]
                        .iter()
                        .map(|&total| per_call(total)),
                );
            }
            cells.extend(breakdown::cells(
                self.breakdown,
                &stats.breakdown,
                latencies.total_ns(),
                latencies.count(),
            ));
            let known = |name: &Option<Rc<str>>| name.as_deref().unwrap_or("-").to_owned();
            let client = &row.group.client;
            let label_cells = [
                (database, known(&client.database)),
                (user, known(&client.user)),
                (container, place.shown(by == By::Container)),
                (by == By::Query, shorten(row.query, 120)),
            ];
            cells.extend(
                (label_cells.into_iter())
                    .filter(|(shown, _)| *shown)
                    .map(|(_, cell)| cell),
            );
            table.row(cells);
        }
        write!(out, "{}", table.render())?;
        Ok(())
    }

    fn summary_json<'a>(
        &mut self,
        totals: &'a Totals,
        window: &Window,
        asides: &[Aside],
    ) -> SummaryJson<'a> {
        let by = self.ledger.by;
        let queries = (totals.ranked().into_iter())
            .map(|row| {
                let stats = row.stats;
                let place = self.ledger.place(row.group.place);
                QueryJson {
                    query: (by == By::Query).then_some(&**row.query),
                    database: row.group.client.database.as_deref(),
                    user: row.group.client.user.as_deref(),
                    cgroup: place.cgroup,
                    container: place.workload,
                    calls: stats.latencies.count(),
                    latency: stats.latencies.summary(),
                    reclaim_us: stats.reclaim_ns as f64 / 1000.0,
                    reclaim_stalls: stats.reclaim_count,
                    compaction_us: stats.compaction_ns as f64 / 1000.0,
                    compaction_stalls: stats.compaction_count,
                    counted_calls: stats.counted_calls,
                    breakdown: self.breakdown.any().then(|| {
                        let (parts, total) = (self.breakdown, stats.latencies.total_ns());
                        let calls = stats.latencies.count();
                        BreakdownTotals {
                            total: BreakdownJson::of(parts, &stats.breakdown, total, 1),
                            per_call: BreakdownJson::of(parts, &stats.breakdown, total, calls),
                        }
                    }),
                    counters: (self.counters.kinds.iter())
                        .zip(stats.counters)
                        .map(|(counter, total)| (counter.name(), total))
                        .collect(),
                }
            })
            .collect();
        SummaryJson {
            r#type: "summary",
            time: output::rfc3339(window.end),
            interval_s: window.length.as_secs_f64(),
            lost: window.lost,
            asides: asides
                .iter()
                .map(|aside| (aside.field, aside.count))
                .collect(),
            counters: self
                .counters
                .kinds
                .iter()
                .map(|counter| counter.name())
                .collect(),
            latency: totals.all.summary(),
            queries,
        }
    }
}

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
    compaction_us: f64,
    compaction_stalls: u32,
    counters: Option<HashMap<&'static str, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown: Option<BreakdownJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    query: &'a str,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    r#type: &'static str,
    time: String,
    interval_s: f64,
    lost: u64,
    /// What the tool says beside the queries, by field (pg: `encrypted_backends`).
    #[serde(flatten)]
    asides: HashMap<&'static str, u64>,
    counters: Vec<&'static str>,
    latency: LatencySummary,
    queries: Vec<QueryJson<'a>>,
}

#[derive(Serialize)]
struct QueryJson<'a> {
    /// With `--by query`.
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    cgroup: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Rc<Workload>>,
    calls: u64,
    latency: LatencySummary,
    reclaim_us: f64,
    reclaim_stalls: u64,
    compaction_us: f64,
    compaction_stalls: u64,
    /// Calls whose counters were read; `counters` are their totals.
    counted_calls: u64,
    counters: HashMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown: Option<BreakdownTotals>,
}
