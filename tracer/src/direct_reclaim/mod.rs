//! `tracer direct-reclaim`: tasks stalled in global direct reclaim and memory-cgroup reclaim,
//! and in direct compaction ([`compaction`]), with kswapd against the watermarks beside them
//! ([`kswapd`]).

mod compaction;
mod kswapd;

use std::{collections::HashMap, io::Write};

use anyhow::{Result, bail};
use prometheus_client::encoding::EncodeLabelSet;
use serde::Serialize;
use tracer_common::{
    direct_reclaim::{
        COMPACTION_TRY, COMPACTION_ZONE, GfpField, KCOMPACTD, KSWAPD_WOKEN, ReclaimKind, STALL,
        Stall, THROTTLED,
    },
    task::Task,
};

use crate::manual::Example;
use crate::{
    cgroup,
    event_loop::{Tool, Window, read_record},
    flags::Names,
    histogram::{Latencies, LatencySummary, human_ns},
    loader::{AttachMode, Kernel, Probes, Setting, Tracepoint},
    metrics::{Counters, Histograms, Labeler, Metrics},
    options::TraceOptions,
    output::{self, Output},
    session::{self, Context, Plan},
    tally::{self, CgroupKey, ProcessKey, Tally, TallyJson},
    tracefs::{Format, Tracefs},
};

/// What `tracer --help` and the man page show first.
pub const EXAMPLES: &[Example] = &[
    Example {
        what: "Stalls in reclaim and compaction until Ctrl-C: a histogram per kind, top processes and cgroups",
        command: "sudo tracer direct-reclaim",
    },
    Example {
        what: "A summary every 5 seconds, 12 times",
        command: "sudo tracer direct-reclaim 5 12",
    },
    Example {
        what: "One line per stall of 1 ms or more, as it ends",
        command: "sudo tracer direct-reclaim --events --min-us 1000",
    },
    Example {
        what: "Only the tasks of one cgroup (a container, a systemd service) and below",
        command: "sudo tracer direct-reclaim -c /sys/fs/cgroup/system.slice/postgresql.service",
    },
    Example {
        what: "A minute of NDJSON, one object per summary",
        command: "sudo tracer direct-reclaim --json -d 60",
    },
];

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub trace: TraceOptions,
    /// Print one line per stall instead of summaries
    #[arg(long, conflicts_with = "interval")]
    pub events: bool,
    /// With --events, only stalls of at least US microseconds
    #[arg(long, value_name = "US", requires = "events")]
    pub min_us: Option<u64>,
    /// Rows in the top processes and top cgroups tables
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

const BEGIN_ARGS: &[&str] = &["int", "gfp_t"];
const END_ARGS: &[&str] = &["long unsigned int"];
/// `gfp_flags` too, wherever the kernel puts it (see [`gfp_field`]).
const BEGIN_FIELDS: &[(&str, usize, usize)] = &[("order", 8, 4)];
const END_FIELDS: &[(&str, usize, usize)] = &[("nr_reclaimed", 8, 8)];

const TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_direct_reclaim_begin",
        program: "direct_reclaim_begin",
        args: Some(BEGIN_ARGS),
        fields: BEGIN_FIELDS,
    },
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_direct_reclaim_end",
        program: "direct_reclaim_end",
        args: Some(END_ARGS),
        fields: END_FIELDS,
    },
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_memcg_reclaim_begin",
        program: "memcg_reclaim_begin",
        args: Some(BEGIN_ARGS),
        fields: BEGIN_FIELDS,
    },
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_memcg_reclaim_end",
        program: "memcg_reclaim_end",
        args: Some(END_ARGS),
        fields: END_FIELDS,
    },
];

/// Room for a compaction storm between two drains (100 ms): each try writes a record per zone
/// it visits. With the 256 KiB every tool starts with, a storm of 1,462 tries in CI lost 423
/// records; 1 MiB holds four times as many, and creating it adds ~0.3 ms to startup (4 MiB:
/// ~1 ms).
const RING_BYTES: u32 = 1 << 20;

pub fn run(args: Args) -> Result<()> {
    let (trace, events) = (args.trace.clone(), args.events);
    session::run(&trace, Box::new(args), events)
}

impl Plan for Args {
    fn name(&self) -> &'static str {
        "direct-reclaim"
    }

    fn records(&self) -> u32 {
        tracer_common::record::tool::DIRECT_RECLAIM
    }

    fn tracepoints(&self) -> Vec<Tracepoint> {
        TRACEPOINTS.to_vec()
    }

    fn object(&self) -> Option<&'static [u8]> {
        Some(crate::tool_object!("direct_reclaim"))
    }

    fn settings(&self, kernel: &Kernel) -> Result<Vec<Setting>> {
        let mut settings = vec![
            Setting::global("GFP_FIELD", &gfp_field(&kernel.tracefs)?),
            Setting::global("KSWAPD_NODE_COUNT", &kswapd::node_count()),
            Setting::MapSize {
                name: "EVENTS",
                size: RING_BYTES,
            },
        ];
        if let Some(layout) = compaction::layout(&kernel.tracefs)? {
            settings.push(Setting::global("COMPACTION_LAYOUT", &layout));
        }
        Ok(settings)
    }

    fn start(self: Box<Self>, context: &mut Context) -> Result<Box<dyn Tool>> {
        let begin = context
            .kernel
            .tracefs
            .format("vmscan", "mm_vmscan_direct_reclaim_begin")?;
        let kswapd = context
            .attach_or_say(kswapd::TRACEPOINTS, "kswapd")
            .then(kswapd::Nodes::new);
        let throttling = context.attach_or_say(kswapd::THROTTLING, "reclaim throttling");
        Ok(Box::new(DirectReclaim {
            compaction: attach_compaction(context),
            kswapd,
            throttling,
            tries: Default::default(),
            kcompactd: Default::default(),
            gfp: Names::from_print_fmt(&begin.print_fmt, "__print_flags", "gfp_flags"),
            cgroups: cgroup::Names::new(context.hierarchy),
            min_ns: self.min_us.unwrap_or(0) * 1000,
            events: self.events,
            top: self.top,
            window: Default::default(),
            printed_events: 0,
            metrics: None,
        }))
    }
}

/// Attaches direct compaction's tracepoints where the kernel has them; says so where not, and
/// reclaim is traced all the same.
fn attach_compaction(context: &mut Context) -> Option<compaction::Statuses> {
    let attached = compaction::Statuses::read(&context.kernel.tracefs).and_then(|statuses| {
        context.probes.attach_tracepoints(
            context.kernel,
            compaction::TRACEPOINTS,
            AttachMode::Classic,
            None,
        )?;
        Ok(statuses)
    });
    match attached {
        Ok(statuses) => Some(statuses),
        Err(error) => {
            eprintln!("tracer: direct compaction not traced: {error:#}");
            context.probes.detach(compaction::TRACEPOINTS);
            None
        }
    }
}

/// Where the classic begin tracepoints keep `gfp_flags` on this kernel (both share one record
/// layout): its size changed from 4 to 8 bytes over the kernels users run.
pub(crate) fn gfp_field(tracefs: &Tracefs) -> Result<GfpField> {
    let format = tracefs.format("vmscan", "mm_vmscan_direct_reclaim_begin")?;
    gfp_field_of(&format)
}

fn gfp_field_of(format: &Format) -> Result<GfpField> {
    match format.fields.iter().find(|field| field.name == "gfp_flags") {
        Some(field) if field.size == 4 || field.size == 8 => Ok(GfpField {
            offset: field.offset as u32,
            size: field.size as u32,
        }),
        Some(field) => bail!(
            "vmscan:mm_vmscan_direct_reclaim_begin's gfp_flags is {} bytes on this kernel",
            field.size
        ),
        None => bail!("vmscan:mm_vmscan_direct_reclaim_begin has no gfp_flags on this kernel"),
    }
}

struct DirectReclaim {
    /// `None` where the kernel cannot show compaction.
    compaction: Option<compaction::Statuses>,
    tries: compaction::Tries,
    kcompactd: compaction::KcompactdClock,
    /// `None` where the kernel cannot show kswapd.
    kswapd: Option<kswapd::Nodes>,
    /// Whether the kernel shows reclaim throttling (5.16+).
    throttling: bool,
    gfp: Names,
    cgroups: cgroup::Names,
    min_ns: u64,
    events: bool,
    top: usize,
    window: Totals,
    printed_events: u64,
    metrics: Option<StallMetrics>,
}

/// `tracer serve`'s view of stalls.
struct StallMetrics {
    stalls: Histograms<KindLabel>,
    pages: Counters<KindLabel>,
    labeler: Labeler,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Everything one summary reports.
#[derive(Default)]
struct Totals {
    global: KindTotals,
    memcg: KindTotals,
    compaction: compaction::Totals,
    kswapd: kswapd::Totals,
    /// Global stalls that began while kswapd was awake.
    while_kswapd_awake: u64,
    processes: HashMap<u32, Tally>,
    cgroups: HashMap<u64, Tally>,
}

impl Totals {
    fn stalls(&self) -> u64 {
        self.global.latencies.count()
            + self.memcg.latencies.count()
            + self.compaction.latencies.count()
    }
}

#[derive(Default)]
struct KindTotals {
    latencies: Latencies,
    pages: u64,
}

fn kind_name(kind: u32) -> &'static str {
    if kind == ReclaimKind::Memcg as u32 {
        "memcg"
    } else {
        "global"
    }
}

impl Tool for DirectReclaim {
    fn start(&mut self, out: &mut Output) -> Result<()> {
        eprintln!(
            "Tracing direct and memory-cgroup reclaim stalls{}... Hit Ctrl-C to end.",
            if self.compaction.is_some() {
                " and direct compaction"
            } else {
                ""
            }
        );
        if self.events && !out.json {
            writeln!(
                out,
                "{:<8} {:<16} {:>7} {:>7} {:<7} {:>10} {:>7} {:<15} {:>5} {:<24} CGROUP",
                "TIME", "COMM", "PID", "TID", "KIND", "LAT(us)", "PAGES", "STATUS", "ORDER", "GFP"
            )?;
        }
        Ok(())
    }

    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        match read_record::<u32>(data)? {
            STALL => self.stall(read_record(data)?, out)?,
            COMPACTION_TRY => {
                let Some(statuses) = &self.compaction else {
                    return Ok(());
                };
                if let Some(over) = self.tries.begin(read_record(data)?, statuses) {
                    self.finish(over, out)?;
                }
            }
            COMPACTION_ZONE => {
                if let Some(statuses) = &self.compaction {
                    self.tries.zone(read_record(data)?, statuses);
                }
            }
            KCOMPACTD => self
                .kcompactd
                .record(&read_record(data)?, &mut self.window.compaction.kcompactd),
            KSWAPD_WOKEN => self.window.kswapd.woken(&read_record(data)?),
            THROTTLED => self.window.kswapd.throttled(&read_record(data)?),
            other => bail!("unknown direct-reclaim record kind {other:#x}"),
        }
        Ok(())
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        // Tries that went quiet are over; when tracing ends, all are.
        let now = (!window.last).then(output::monotonic_ns);
        for over in self.tries.quiet(now) {
            self.finish(over, out)?;
        }
        let mut totals = std::mem::take(&mut self.window);
        tally::name_cgroups(&mut totals.cgroups, &mut self.cgroups);
        if self.events {
            eprintln!(
                "tracer: {} stalls ({} global, {} memcg, {} compaction), {} printed; lost: {}",
                totals.stalls(),
                totals.global.latencies.count(),
                totals.memcg.latencies.count(),
                totals.compaction.latencies.count(),
                self.printed_events,
                window.lost
            );
            return Ok(());
        }
        if out.json {
            return Ok(out.json_line(&SummaryJson::new(&totals, window, self))?);
        }
        self.print_summary(&totals, window, out)
    }

    fn collect(&mut self, probes: &mut Probes) -> Result<()> {
        if let Some(nodes) = &mut self.kswapd {
            nodes.collect(probes.map_mut("KSWAPD_NODES")?, &mut self.window.kswapd)?;
        }
        Ok(())
    }

    fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.metrics = Some(StallMetrics {
            stalls: metrics.histograms(
                "tracer_reclaim_stall",
                "Time tasks stalled in reclaim or compaction, by kind: global (direct \
                 reclaim), memcg, or compaction (direct compaction)",
            ),
            pages: metrics.counters(
                "tracer_reclaim_pages_reclaimed",
                "Pages reclaimed by stalled tasks, by kind",
            ),
            labeler: metrics.labeler(),
        });
    }
}

impl DirectReclaim {
    fn stall(&mut self, stall: Stall, out: &mut Output) -> Result<()> {
        // The thread went on from compaction to reclaim.
        if let Some(over) = self.tries.moved_on(stall.task.tid, stall.start_ns) {
            self.finish(over, out)?;
        }
        let kind = if stall.kind == ReclaimKind::Memcg as u32 {
            &mut self.window.memcg
        } else {
            &mut self.window.global
        };
        kind.latencies.record(stall.latency_ns);
        kind.pages += stall.nr_reclaimed;
        if stall.kswapd_awake != 0 {
            self.window.while_kswapd_awake += 1;
        }
        self.count(
            &stall.task,
            kind_name(stall.kind),
            stall.latency_ns,
            stall.nr_reclaimed,
        );
        if self.events && stall.latency_ns >= self.min_ns {
            self.printed_events += 1;
            self.print_stall(&stall, out)?;
        }
        Ok(())
    }

    /// A try of direct compaction is over.
    fn finish(&mut self, tried: compaction::Try, out: &mut Output) -> Result<()> {
        let Some(statuses) = &self.compaction else {
            return Ok(());
        };
        if !self.window.compaction.add(&tried, statuses) {
            return Ok(());
        }
        self.count(&tried.begun.task, "compaction", tried.latency_ns(), 0);
        if self.events && tried.latency_ns() >= self.min_ns {
            self.printed_events += 1;
            self.print_compaction(&tried, out)?;
        }
        Ok(())
    }

    /// What the stalls say about the watermarks, where kswapd is traced.
    fn verdict(
        &self,
        totals: &Totals,
        watermarks: &crate::watermarks::Watermarks,
    ) -> Option<String> {
        self.kswapd.as_ref()?;
        let stalls = totals.global.latencies.count();
        kswapd::verdict(stalls, totals.while_kswapd_awake, watermarks)
    }

    /// Counts a stall of any kind in the tables and metrics.
    fn count(&mut self, task: &Task, kind: &'static str, latency_ns: u64, pages: u64) {
        let totals = &mut self.window;
        let process = totals.processes.entry(task.pid).or_default();
        process.name = output::comm(&task.comm);
        process.add(latency_ns, pages);
        totals
            .cgroups
            .entry(task.cgroup_id)
            .or_default()
            .add(latency_ns, pages);
        if let Some(metrics) = &self.metrics {
            let workload = metrics.labeler.labels(&self.cgroups.path(task.cgroup_id));
            let kind = KindLabel { kind };
            metrics
                .stalls
                .get(kind.clone(), workload.clone())
                .observe(latency_ns as f64 / 1e9);
            if pages > 0 {
                metrics.pages.get(kind, workload).inc_by(pages);
            }
        }
    }

    fn print_stall(&mut self, stall: &Stall, out: &mut Output) -> Result<()> {
        let time = out.clock().wall(stall.start_ns + stall.latency_ns);
        let comm = output::comm(&stall.task.comm);
        let cgroup = self.cgroups.path(stall.task.cgroup_id);
        let gfp = self.gfp.flags(stall.gfp_flags);
        if out.json {
            return Ok(out.json_line(&StallJson {
                r#type: "stall",
                time: output::rfc3339(time),
                kind: kind_name(stall.kind),
                pid: stall.task.pid,
                tid: stall.task.tid,
                comm: &comm,
                cgroup_id: stall.task.cgroup_id,
                cgroup: &cgroup,
                order: stall.order,
                gfp: &gfp,
                gfp_flags: format!("{:#x}", stall.gfp_flags),
                latency_us: stall.latency_ns as f64 / 1000.0,
                pages_reclaimed: stall.nr_reclaimed,
            })?);
        }
        let line = EventLine {
            task: &stall.task,
            kind: kind_name(stall.kind),
            latency_ns: stall.latency_ns,
            pages: &stall.nr_reclaimed.to_string(),
            status: "-",
            order: stall.order,
            gfp: &gfp,
            cgroup: &cgroup,
        };
        line.write(time, out)
    }

    fn print_compaction(&mut self, tried: &compaction::Try, out: &mut Output) -> Result<()> {
        let Some(statuses) = &self.compaction else {
            return Ok(());
        };
        let begun = &tried.begun;
        let time = out.clock().wall(tried.last_ns);
        let comm = output::comm(&begun.task.comm);
        let cgroup = self.cgroups.path(begun.task.cgroup_id);
        let gfp = self.gfp.flags(begun.gfp_flags);
        let status = statuses.name(tried.result);
        if out.json {
            return Ok(out.json_line(&CompactionJson {
                r#type: "compaction",
                time: output::rfc3339(time),
                pid: begun.task.pid,
                tid: begun.task.tid,
                comm: &comm,
                cgroup_id: begun.task.cgroup_id,
                cgroup: &cgroup,
                order: begun.order,
                gfp: &gfp,
                gfp_flags: format!("{:#x}", begun.gfp_flags),
                priority: begun.priority,
                latency_us: tried.latency_ns() as f64 / 1000.0,
                status: &status,
                got_page: tried.got_page(statuses),
                zones: tried
                    .zones
                    .iter()
                    .map(|zone| compaction::ZoneJson::new(zone, statuses))
                    .collect(),
            })?);
        }
        let line = EventLine {
            task: &begun.task,
            kind: "compact",
            latency_ns: tried.latency_ns(),
            pages: "-",
            status: &status,
            order: begun.order,
            gfp: &gfp,
            cgroup: &cgroup,
        };
        line.write(time, out)
    }

    fn print_summary(&self, totals: &Totals, window: &Window, out: &mut Output) -> Result<()> {
        let time = output::clock_time(window.end);
        let secs = window.length.as_secs_f64();
        let what = if self.compaction.is_some() {
            "global, memory-cgroup or compaction"
        } else {
            "global or memory-cgroup"
        };
        if totals.stalls() == 0 {
            writeln!(
                out,
                "{time}  no reclaim stalls ({what}) in {secs:.1}s; lost: {}",
                window.lost
            )?;
            if self.compaction.is_some() && totals.compaction.kcompactd.woke > 0 {
                write!(out, "{}", totals.compaction.kcompactd_line())?;
            }
            if self.kswapd.is_some() && totals.kswapd.any() {
                let mut text = String::new();
                totals.kswapd.render(self.throttling, &mut text);
                write!(out, "{text}")?;
            }
            return Ok(());
        }
        writeln!(
            out,
            "{time}  reclaim stalls in {secs:.1}s; lost: {}",
            window.lost
        )?;
        for (title, kind) in [
            ("Global direct reclaim", &totals.global),
            ("Memory-cgroup reclaim", &totals.memcg),
        ] {
            let latencies = &kind.latencies;
            if latencies.count() == 0 {
                writeln!(out, "\n{title}: no stalls")?;
                continue;
            }
            writeln!(
                out,
                "\n{title}: {} stalls, {} stalled, {} pages reclaimed",
                latencies.count(),
                human_ns(latencies.total_ns()),
                kind.pages
            )?;
            write!(out, "{}", latencies.render_log2())?;
            writeln!(out, "     {}", latencies.percentiles_line())?;
        }
        let mut text = String::new();
        if self.compaction.is_some() {
            totals.compaction.render(&mut text);
        }
        if self.kswapd.is_some() {
            totals.kswapd.render(self.throttling, &mut text);
        }
        let watermarks = crate::watermarks::Watermarks::read();
        watermarks.render(&mut text);
        if let Some(verdict) = self.verdict(totals, &watermarks) {
            text.push_str(&format!("=> {verdict}\n"));
        }
        write!(out, "{text}")?;
        let columns = |key, name| tally::Columns {
            key,
            count: "STALLS",
            pages: Some("PAGES"),
            name,
        };
        let processes = tally::top(&totals.processes, self.top);
        let cgroups = tally::top(&totals.cgroups, self.top);
        writeln!(out, "\nTop processes by stall time:")?;
        write!(out, "{}", tally::table(&columns("PID", "COMM"), &processes))?;
        writeln!(out, "\nTop cgroups by stall time:")?;
        write!(
            out,
            "{}",
            tally::table(&columns("CGROUP ID", "CGROUP"), &cgroups)
        )?;
        Ok(())
    }
}

/// One `--events` line of text, for a stall of any kind.
struct EventLine<'a> {
    task: &'a Task,
    kind: &'static str,
    latency_ns: u64,
    pages: &'a str,
    status: &'a str,
    order: i32,
    gfp: &'a str,
    cgroup: &'a str,
}

impl EventLine<'_> {
    fn write(&self, time: std::time::SystemTime, out: &mut Output) -> Result<()> {
        writeln!(
            out,
            "{:<8} {:<16} {:>7} {:>7} {:<7} {:>10.1} {:>7} {:<15} {:>5} {:<24} {}",
            output::clock_time(time),
            output::comm(&self.task.comm),
            self.task.pid,
            self.task.tid,
            self.kind,
            self.latency_ns as f64 / 1000.0,
            self.pages,
            self.status,
            self.order,
            self.gfp,
            self.cgroup
        )?;
        Ok(())
    }
}

#[derive(Serialize)]
struct StallJson<'a> {
    r#type: &'static str,
    time: String,
    kind: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    cgroup_id: u64,
    cgroup: &'a str,
    order: i32,
    gfp: &'a str,
    gfp_flags: String,
    latency_us: f64,
    pages_reclaimed: u64,
}

#[derive(Serialize)]
struct CompactionJson<'a> {
    r#type: &'static str,
    time: String,
    pid: u32,
    tid: u32,
    comm: &'a str,
    cgroup_id: u64,
    cgroup: &'a str,
    order: i32,
    gfp: &'a str,
    gfp_flags: String,
    priority: i32,
    latency_us: f64,
    status: &'a str,
    got_page: bool,
    zones: Vec<compaction::ZoneJson>,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    r#type: &'static str,
    time: String,
    interval_s: f64,
    lost: u64,
    global: KindJson,
    /// Of `global`'s stalls, those that began while kswapd was awake.
    stalls_while_kswapd_awake: u64,
    memcg: KindJson,
    /// Absent where the kernel cannot show compaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    compaction: Option<compaction::CompactionJson>,
    /// Absent where the kernel cannot show kswapd.
    #[serde(skip_serializing_if = "Option::is_none")]
    kswapd: Option<kswapd::KswapdJson<'a>>,
    watermarks: crate::watermarks::Watermarks,
    /// What the numbers say about the watermarks, when they say something.
    verdict: Option<String>,
    processes: Vec<TallyJson<ProcessKey>>,
    cgroups: Vec<TallyJson<CgroupKey>>,
}

#[derive(Serialize)]
struct KindJson {
    stalls: u64,
    pages_reclaimed: u64,
    latency: LatencySummary,
}

impl<'a> SummaryJson<'a> {
    fn new(totals: &'a Totals, window: &Window, tool: &DirectReclaim) -> Self {
        let watermarks = crate::watermarks::Watermarks::read();
        let kind = |kind: &KindTotals| KindJson {
            stalls: kind.latencies.count(),
            pages_reclaimed: kind.pages,
            latency: kind.latencies.summary(),
        };
        Self {
            r#type: "summary",
            time: output::rfc3339(window.end),
            interval_s: window.length.as_secs_f64(),
            lost: window.lost,
            global: kind(&totals.global),
            stalls_while_kswapd_awake: totals.while_kswapd_awake,
            memcg: kind(&totals.memcg),
            compaction: tool.compaction.is_some().then(|| totals.compaction.json()),
            kswapd: tool
                .kswapd
                .is_some()
                .then(|| totals.kswapd.json(tool.throttling)),
            verdict: tool.verdict(totals, &watermarks),
            watermarks,
            processes: tally::process_rows(&totals.processes, true),
            cgroups: tally::cgroup_rows(&totals.cgroups, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mm_vmscan_direct_reclaim_begin` as Linux 5.10 (Debian 11) and 6.18 lay it out.
    fn begin_format(gfp: &str) -> Format {
        Format::parse(&format!(
            "name: mm_vmscan_direct_reclaim_begin\nformat:\n\
             \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
             \tfield:int order;\toffset:8;\tsize:4;\tsigned:1;\n\
             \t{gfp}\n\nprint fmt: \"order=%d\", REC->order\n"
        ))
    }

    #[test]
    fn gfp_flags_are_read_where_each_kernel_keeps_them() {
        let linux_5_10 = begin_format("field:gfp_t gfp_flags;\toffset:12;\tsize:4;\tsigned:0;");
        let linux_6_18 =
            begin_format("field:unsigned long gfp_flags;\toffset:16;\tsize:8;\tsigned:0;");
        let field = gfp_field_of(&linux_5_10).unwrap();
        assert_eq!((field.offset, field.size), (12, 4));
        let field = gfp_field_of(&linux_6_18).unwrap();
        assert_eq!((field.offset, field.size), (16, 8));
        // The rest of the record is checked before a classic program reads it.
        assert!(linux_5_10.expect_fields(BEGIN_FIELDS).is_ok());
        // A layout no program reads is refused, not read as garbage.
        let odd = begin_format("field:u16 gfp_flags;\toffset:12;\tsize:2;\tsigned:0;");
        let refused = gfp_field_of(&odd).unwrap_err().to_string();
        assert!(refused.contains("is 2 bytes"), "{refused}");
        let moved = Format::parse("format:\n\tfield:int order;\toffset:12;\tsize:4;\tsigned:1;\n");
        assert!(moved.expect_fields(BEGIN_FIELDS).is_err());
    }
}
