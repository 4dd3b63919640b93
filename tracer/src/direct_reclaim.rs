//! `tracer direct-reclaim`: tasks stalled in global direct reclaim and memory-cgroup reclaim.

use std::{collections::HashMap, io::Write};

use anyhow::{Result, bail};
use prometheus_client::encoding::EncodeLabelSet;
use serde::Serialize;
use tracer_common::direct_reclaim::{GfpField, ReclaimKind, Stall};

use crate::{
    cgroup,
    event_loop::{Tool, Window, read_record},
    flags::Names,
    histogram::{Latencies, LatencySummary, human_ns},
    loader::{Kernel, Setting, Tracepoint},
    metrics::{Counters, Histograms, Labeler, Metrics},
    options::TraceOptions,
    output::{self, Output},
    session::{self, Context, Plan},
    tally::{self, CgroupKey, ProcessKey, Tally, TallyJson},
    tracefs::{Format, Tracefs},
};

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

    fn settings(&self, kernel: &Kernel) -> Result<Vec<Setting>> {
        Ok(vec![Setting::global(
            "GFP_FIELD",
            &gfp_field(&kernel.tracefs)?,
        )])
    }

    fn start(self: Box<Self>, context: &mut Context) -> Result<Box<dyn Tool>> {
        let begin = context
            .kernel
            .tracefs
            .format("vmscan", "mm_vmscan_direct_reclaim_begin")?;
        Ok(Box::new(DirectReclaim {
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

/// Where the classic begin tracepoints keep `gfp_flags` on this kernel (both share one record
/// layout): its size changed from 4 to 8 bytes over the kernels users run.
fn gfp_field(tracefs: &Tracefs) -> Result<GfpField> {
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
    processes: HashMap<u32, Tally>,
    cgroups: HashMap<u64, Tally>,
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
        eprintln!("Tracing direct and memory-cgroup reclaim stalls... Hit Ctrl-C to end.");
        if self.events && !out.json {
            writeln!(
                out,
                "{:<8} {:<16} {:>7} {:>7} {:<6} {:>10} {:>7} {:>5} {:<24} CGROUP",
                "TIME", "COMM", "PID", "TID", "KIND", "LAT(us)", "PAGES", "ORDER", "GFP"
            )?;
        }
        Ok(())
    }

    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        let stall: Stall = read_record(data)?;
        let totals = &mut self.window;
        let kind = if stall.kind == ReclaimKind::Memcg as u32 {
            &mut totals.memcg
        } else {
            &mut totals.global
        };
        kind.latencies.record(stall.latency_ns);
        kind.pages += stall.nr_reclaimed;
        let comm = output::comm(&stall.task.comm);
        let process = totals.processes.entry(stall.task.pid).or_default();
        process.name.clone_from(&comm);
        process.add(stall.latency_ns, stall.nr_reclaimed);
        let cgroup = totals.cgroups.entry(stall.task.cgroup_id).or_default();
        cgroup.add(stall.latency_ns, stall.nr_reclaimed);

        if let Some(metrics) = &self.metrics {
            let workload = metrics
                .labeler
                .labels(&self.cgroups.path(stall.task.cgroup_id));
            let kind = KindLabel {
                kind: kind_name(stall.kind),
            };
            let seconds = stall.latency_ns as f64 / 1e9;
            metrics
                .stalls
                .get(kind.clone(), workload.clone())
                .observe(seconds);
            metrics.pages.get(kind, workload).inc_by(stall.nr_reclaimed);
        }
        if self.events && stall.latency_ns >= self.min_ns {
            self.printed_events += 1;
            self.print_event(&stall, &comm, out)?;
        }
        Ok(())
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        let mut totals = std::mem::take(&mut self.window);
        tally::name_cgroups(&mut totals.cgroups, &mut self.cgroups);
        if self.events {
            let stalls = totals.global.latencies.count() + totals.memcg.latencies.count();
            eprintln!(
                "tracer: {stalls} stalls ({} global, {} memcg), {} printed; lost: {}",
                totals.global.latencies.count(),
                totals.memcg.latencies.count(),
                self.printed_events,
                window.lost
            );
            return Ok(());
        }
        if out.json {
            return Ok(out.json_line(&SummaryJson::new(&totals, window))?);
        }
        self.print_summary(&totals, window, out)
    }

    fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.metrics = Some(StallMetrics {
            stalls: metrics.histograms(
                "tracer_reclaim_stall",
                "Time tasks stalled in reclaim, by kind: global (direct reclaim) or memcg",
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
    fn print_event(&mut self, stall: &Stall, comm: &str, out: &mut Output) -> Result<()> {
        let time = out.clock().wall(stall.start_ns + stall.latency_ns);
        let cgroup = self.cgroups.path(stall.task.cgroup_id);
        let gfp = self.gfp.flags(stall.gfp_flags);
        if out.json {
            out.json_line(&StallJson {
                r#type: "stall",
                time: output::rfc3339(time),
                kind: kind_name(stall.kind),
                pid: stall.task.pid,
                tid: stall.task.tid,
                comm,
                cgroup_id: stall.task.cgroup_id,
                cgroup: &cgroup,
                order: stall.order,
                gfp: &gfp,
                gfp_flags: format!("{:#x}", stall.gfp_flags),
                latency_us: stall.latency_ns as f64 / 1000.0,
                pages_reclaimed: stall.nr_reclaimed,
            })?;
        } else {
            writeln!(
                out,
                "{:<8} {:<16} {:>7} {:>7} {:<6} {:>10.1} {:>7} {:>5} {:<24} {}",
                output::clock_time(time),
                comm,
                stall.task.pid,
                stall.task.tid,
                kind_name(stall.kind),
                stall.latency_ns as f64 / 1000.0,
                stall.nr_reclaimed,
                stall.order,
                gfp,
                cgroup
            )?;
        }
        Ok(())
    }

    fn print_summary(&self, totals: &Totals, window: &Window, out: &mut Output) -> Result<()> {
        let time = output::clock_time(window.end);
        let secs = window.length.as_secs_f64();
        if totals.global.latencies.count() + totals.memcg.latencies.count() == 0 {
            writeln!(
                out,
                "{time}  no reclaim stalls (global or memory-cgroup) in {secs:.1}s; lost: {}",
                window.lost
            )?;
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
struct SummaryJson {
    r#type: &'static str,
    time: String,
    interval_s: f64,
    lost: u64,
    global: KindJson,
    memcg: KindJson,
    processes: Vec<TallyJson<ProcessKey>>,
    cgroups: Vec<TallyJson<CgroupKey>>,
}

#[derive(Serialize)]
struct KindJson {
    stalls: u64,
    pages_reclaimed: u64,
    latency: LatencySummary,
}

impl SummaryJson {
    fn new(totals: &Totals, window: &Window) -> Self {
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
            memcg: kind(&totals.memcg),
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
