//! `tracer writeback`: what the flusher threads write, why, and how long writers are made to
//! wait for it (dirty throttling).

use std::{collections::HashMap, io::Write};

use anyhow::Result;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Unit,
};
use serde::Serialize;
use tracer_common::writeback::{Throttle, Work, WritebackLayout, kind};

use crate::manual::Example;
use crate::{
    cgroup,
    event_loop::{Tool, Window, read_record},
    flags::Names,
    histogram::{Latencies, LatencySummary, human_ns},
    kernel_btf::KernelBtf,
    loader::{Kernel, Setting, Tracepoint},
    metrics::{Histograms, Labeler, Metrics, log2_seconds},
    options::TraceOptions,
    output::{self, Align, Output, Table},
    session::{self, Context, Plan},
    tally::{self, CgroupKey, ProcessKey, Tally, TallyJson},
};

/// What `tracer --help` and the man page show first.
pub const EXAMPLES: &[Example] = &[
    Example {
        what: "Pages written back by reason and device, and writers throttled for dirtying, until Ctrl-C",
        command: "sudo tracer writeback",
    },
    Example {
        what: "A summary every second, 10 times",
        command: "sudo tracer writeback 1 10",
    },
    Example {
        what: "One line per writeback pass and per throttle pause",
        command: "sudo tracer writeback --events",
    },
    Example {
        what: "Only one process's throttling",
        command: "sudo tracer writeback -p 1234",
    },
    Example {
        what: "A minute of NDJSON",
        command: "sudo tracer writeback --json -d 60",
    },
];

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub trace: TraceOptions,
    /// Print one line per writeback pass and per throttle pause instead of summaries
    #[arg(long, conflicts_with = "interval")]
    pub events: bool,
    /// Rows in the most-throttled tables
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

const WORK_ARGS: &[&str] = &["struct bdi_writeback *", "struct wb_writeback_work *"];
const WORK_FIELDS: &[(&str, usize, usize)] = &[
    ("name", 8, 32),
    ("nr_pages", 40, 8),
    ("sb_dev", 48, 4),
    ("reason", 68, 4),
    ("cgroup_ino", 72, 8),
];

const TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        category: "writeback",
        name: "writeback_start",
        program: "writeback_start",
        args: Some(WORK_ARGS),
        fields: WORK_FIELDS,
    },
    Tracepoint {
        category: "writeback",
        name: "writeback_written",
        program: "writeback_written",
        args: Some(WORK_ARGS),
        fields: WORK_FIELDS,
    },
    Tracepoint {
        category: "writeback",
        name: "balance_dirty_pages",
        program: "balance_dirty_pages",
        args: Some(&[
            "struct bdi_writeback *",
            "struct dirty_throttle_control *",
            "long unsigned int",
            "long unsigned int",
            "long unsigned int",
            "long unsigned int",
            "long int",
            "long unsigned int",
        ]),
        fields: &[("bdi", 8, 32), ("pause", 112, 8), ("cgroup_ino", 136, 8)],
    },
];

pub fn run(args: Args) -> Result<()> {
    let (trace, events) = (args.trace.clone(), args.events);
    session::run(&trace, Box::new(args), events)
}

impl Plan for Args {
    fn name(&self) -> &'static str {
        "writeback"
    }

    fn records(&self) -> u32 {
        tracer_common::record::tool::WRITEBACK
    }

    fn tracepoints(&self) -> Vec<Tracepoint> {
        TRACEPOINTS.to_vec()
    }

    fn object(&self) -> Option<&'static [u8]> {
        Some(crate::tool_object!("writeback"))
    }

    fn settings(&self, kernel: &Kernel) -> Result<Vec<Setting>> {
        Ok(vec![Setting::global(
            "WRITEBACK_LAYOUT",
            &layout(&kernel.btf)?,
        )])
    }

    fn start(self: Box<Self>, context: &mut Context) -> Result<Box<dyn Tool>> {
        let written = context
            .kernel
            .tracefs
            .format("writeback", "writeback_written")?;
        Ok(Box::new(Writeback {
            reasons: Names::from_print_fmt(&written.print_fmt, "__print_symbolic", "reason"),
            cgroups: cgroup::Names::new(context.hierarchy),
            devices: Devices::default(),
            passes: Passes::default(),
            events: self.events,
            top: self.top,
            window: Totals::default(),
            metrics: None,
        }))
    }
}

fn layout(btf: &KernelBtf) -> Result<WritebackLayout> {
    Ok(WritebackLayout {
        work_nr_pages: btf.member_offset("wb_writeback_work", "nr_pages")?,
        work_sb: btf.member_offset("wb_writeback_work", "sb")?,
        work_reason: btf.member_offset("wb_writeback_work", "reason")?,
        sb_dev: btf.member_offset("super_block", "s_dev")?,
        wb_bdi: btf.member_offset("bdi_writeback", "bdi")?,
        bdi_dev_name: btf.member_offset("backing_dev_info", "dev_name")?,
        // Kernels without CONFIG_CGROUP_WRITEBACK write back for the root cgroup only.
        wb_memcg_css: btf
            .member_offset("bdi_writeback", "memcg_css")
            .unwrap_or(u32::MAX),
        jiffy_ns: jiffy_ns(),
    })
}

/// The length of a jiffy: the resolution of the coarse clocks is one tick.
fn jiffy_ns() -> u32 {
    let mut resolution = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut resolution) };
    resolution.tv_nsec as u32
}

/// A start matched with the written record of the same pass.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub start: Work,
    pub end: Work,
}

impl Pass {
    /// `work->nr_pages` is what the work may still write: the pass wrote the difference.
    pub fn pages(&self) -> u64 {
        (self.start.nr_pages - self.end.nr_pages).max(0) as u64
    }

    pub fn duration_ns(&self) -> u64 {
        self.end.time_ns.saturating_sub(self.start.time_ns)
    }
}

/// Pairs `writeback_written` with the `writeback_start` of the same pass. `wb_writeback()`
/// traces the two back to back on one flusher thread, so a pass is keyed by thread; a start
/// that a thread follows with another start, or with a written record for another work, never
/// completed.
#[derive(Default)]
pub struct Passes {
    open: HashMap<u32, Work>,
    /// Starts that never saw their written record.
    pub abandoned: u64,
    /// Written records without a start (the start came before tracer attached).
    pub unmatched: u64,
}

impl Passes {
    pub fn start(&mut self, work: Work) {
        if self.open.insert(work.task.tid, work).is_some() {
            self.abandoned += 1;
        }
    }

    pub fn written(&mut self, end: Work) -> Option<Pass> {
        match self.open.remove(&end.task.tid) {
            Some(start) if start.reason == end.reason && start.bdi == end.bdi => {
                Some(Pass { start, end })
            }
            Some(_) => {
                self.abandoned += 1;
                self.unmatched += 1;
                None
            }
            None => {
                self.unmatched += 1;
                None
            }
        }
    }

    /// Passes started and not finished yet.
    pub fn in_progress(&self) -> usize {
        self.open.len()
    }
}

/// Block device names for backing-device names such as `253:0`.
#[derive(Default)]
struct Devices {
    names: HashMap<String, String>,
}

impl Devices {
    /// `vda` for `253:0`; the bdi name itself when it is no block device (or is gone).
    fn name(&mut self, bdi: &str) -> String {
        self.names
            .entry(bdi.to_owned())
            .or_insert_with(|| {
                std::fs::read_to_string(format!("/sys/dev/block/{bdi}/uevent"))
                    .ok()
                    .and_then(|uevent| {
                        uevent
                            .lines()
                            .find_map(|line| line.strip_prefix("DEVNAME=").map(str::to_owned))
                    })
                    .unwrap_or_else(|| bdi.to_owned())
            })
            .clone()
    }
}

struct Writeback {
    reasons: Names,
    cgroups: cgroup::Names,
    devices: Devices,
    passes: Passes,
    events: bool,
    top: usize,
    window: Totals,
    metrics: Option<WritebackMetrics>,
}

/// `tracer serve`'s view of writeback.
struct WritebackMetrics {
    pages: Family<PassLabels, Counter>,
    passes: Family<PassLabels, Histogram, fn() -> Histogram>,
    pauses: Histograms<DeviceLabel>,
    labeler: Labeler,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    reason: String,
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    device: String,
}

#[derive(Default)]
struct Totals {
    /// Passes and pages by reason name, and by device.
    by_reason: HashMap<String, Tally>,
    by_device: HashMap<String, Tally>,
    pass_latencies: Latencies,
    pauses: Latencies,
    throttled_processes: HashMap<u32, Tally>,
    throttled_cgroups: HashMap<u64, Tally>,
    abandoned: u64,
    unmatched: u64,
}

impl Tool for Writeback {
    fn register_metrics(&mut self, metrics: &mut Metrics) {
        let histograms = || Family::new_with_constructor(log2_seconds as fn() -> Histogram);
        self.metrics = Some(WritebackMetrics {
            pages: metrics.register(
                "tracer_writeback_pages",
                "Pages the flusher threads wrote back, by reason and device",
                None,
                Family::default(),
            ),
            passes: metrics.register(
                "tracer_writeback_pass",
                "Time of each pass of a flusher thread over a writeback work, by reason and device",
                Some(Unit::Seconds),
                histograms(),
            ),
            pauses: metrics.histograms(
                "tracer_dirty_throttle_pause",
                "Pauses writers were made to sleep for dirtying pages too fast, by device",
            ),
            labeler: metrics.labeler(),
        });
    }

    fn start(&mut self, out: &mut Output) -> Result<()> {
        eprintln!("Tracing writeback and dirty throttling... Hit Ctrl-C to end.");
        if self.events && !out.json {
            writeln!(
                out,
                "{:<8} {:<16} {:>7} {:<9} {:<8} {:<14} {:>9} {:>10}",
                "TIME", "COMM", "PID", "EVENT", "DEVICE", "REASON", "PAGES", "TIME(ms)"
            )?;
        }
        Ok(())
    }

    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        match read_record::<u32>(data)? {
            kind::START => self.passes.start(read_record(data)?),
            kind::WRITTEN => {
                let before = (self.passes.abandoned, self.passes.unmatched);
                let pass = self.passes.written(read_record(data)?);
                self.window.abandoned += self.passes.abandoned - before.0;
                self.window.unmatched += self.passes.unmatched - before.1;
                if let Some(pass) = pass {
                    self.pass(&pass, out)?;
                }
            }
            kind::THROTTLE => self.throttle(&read_record(data)?, out)?,
            other => anyhow::bail!("unknown writeback record kind {other}"),
        }
        Ok(())
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        let mut totals = std::mem::take(&mut self.window);
        tally::name_cgroups(&mut totals.throttled_cgroups, &mut self.cgroups);
        let in_progress = self.passes.in_progress();
        if self.events {
            eprintln!(
                "tracer: {} writeback passes, {} throttle pauses; {} passes never completed, {} unmatched, {in_progress} in progress; lost: {}",
                totals.pass_latencies.count(),
                totals.pauses.count(),
                totals.abandoned,
                totals.unmatched,
                window.lost
            );
            return Ok(());
        }
        if out.json {
            let summary = SummaryJson::new(&totals, window, in_progress);
            return Ok(out.json_line(&summary)?);
        }
        self.print_summary(&totals, window, in_progress, out)
    }
}

impl Writeback {
    fn pass(&mut self, pass: &Pass, out: &mut Output) -> Result<()> {
        let reason = self.reasons.symbol(pass.end.reason as u64);
        let bdi = output::comm(&pass.end.bdi);
        let device = self.devices.name(&bdi);
        let (pages, ns) = (pass.pages(), pass.duration_ns());
        let totals = &mut self.window;
        totals
            .by_reason
            .entry(reason.clone())
            .or_default()
            .add(ns, pages);
        let by_device = totals.by_device.entry(device.clone()).or_default();
        by_device.name.clone_from(&bdi);
        by_device.add(ns, pages);
        totals.pass_latencies.record(ns);
        if let Some(metrics) = &self.metrics {
            let labels = PassLabels {
                reason: reason.clone(),
                device: device.clone(),
            };
            metrics.pages.get_or_create(&labels).inc_by(pages);
            metrics
                .passes
                .get_or_create(&labels)
                .observe(ns as f64 / 1e9);
        }
        if !self.events {
            return Ok(());
        }
        let task = &pass.end.task;
        let time = out.clock().wall(pass.end.time_ns);
        let comm = output::comm(&task.comm);
        if out.json {
            out.json_line(&PassJson {
                r#type: "writeback",
                time: output::rfc3339(time),
                pid: task.pid,
                tid: task.tid,
                comm: &comm,
                bdi: &bdi,
                device: &device,
                reason: &reason,
                pages,
                bytes: pages * page_size(),
                duration_us: ns as f64 / 1000.0,
                sb_dev: dev_name(pass.end.sb_dev),
                cgroup_ino: pass.end.cgroup_ino,
            })?;
        } else {
            writeln!(
                out,
                "{:<8} {:<16} {:>7} {:<9} {:<8} {:<14} {:>9} {:>10.2}",
                output::clock_time(time),
                comm,
                task.pid,
                "writeback",
                device,
                reason,
                pages,
                ns as f64 / 1e6
            )?;
        }
        Ok(())
    }

    fn throttle(&mut self, throttle: &Throttle, out: &mut Output) -> Result<()> {
        let task = &throttle.task;
        let comm = output::comm(&task.comm);
        let totals = &mut self.window;
        totals.pauses.record(throttle.pause_ns);
        let process = totals.throttled_processes.entry(task.pid).or_default();
        process.name.clone_from(&comm);
        process.add(throttle.pause_ns, 0);
        let cgroup = totals.throttled_cgroups.entry(task.cgroup_id).or_default();
        cgroup.add(throttle.pause_ns, 0);
        let bdi = output::comm(&throttle.bdi);
        let device = self.devices.name(&bdi);
        if let Some(metrics) = &self.metrics {
            let workload = metrics.labeler.labels(&self.cgroups.path(task.cgroup_id));
            let device = DeviceLabel {
                device: device.clone(),
            };
            let seconds = throttle.pause_ns as f64 / 1e9;
            metrics.pauses.get(device, workload).observe(seconds);
        }
        if !self.events {
            return Ok(());
        }
        let time = out.clock().wall(throttle.time_ns);
        if out.json {
            let cgroup = self.cgroups.path(task.cgroup_id);
            out.json_line(&ThrottleJson {
                r#type: "throttle",
                time: output::rfc3339(time),
                pid: task.pid,
                tid: task.tid,
                comm: &comm,
                cgroup_id: task.cgroup_id,
                cgroup: &cgroup,
                bdi: &bdi,
                device: &device,
                pause_us: throttle.pause_ns as f64 / 1000.0,
            })?;
        } else {
            writeln!(
                out,
                "{:<8} {:<16} {:>7} {:<9} {:<8} {:<14} {:>9} {:>10.2}",
                output::clock_time(time),
                comm,
                task.pid,
                "throttle",
                device,
                "-",
                "-",
                throttle.pause_ns as f64 / 1e6
            )?;
        }
        Ok(())
    }

    fn print_summary(
        &self,
        totals: &Totals,
        window: &Window,
        in_progress: usize,
        out: &mut Output,
    ) -> Result<()> {
        let time = output::clock_time(window.end);
        let secs = window.length.as_secs_f64();
        let passes = totals.pass_latencies.count();
        writeln!(
            out,
            "{time}  writeback in {secs:.1}s; lost: {}",
            window.lost
        )?;
        if passes == 0 {
            writeln!(out, "\nNo writeback passes.")?;
        } else {
            let pages: u64 = totals.by_reason.values().map(|t| t.pages).sum();
            writeln!(
                out,
                "\nWritten: {pages} pages ({}) in {passes} passes",
                bytes(pages)
            )?;
            let mut table = Table::new(&[
                ("REASON", Align::Left),
                ("PASSES", Align::Right),
                ("PAGES", Align::Right),
                ("BYTES", Align::Right),
                ("TIME", Align::Right),
            ]);
            for (reason, tally) in sorted(&totals.by_reason) {
                table.row(vec![
                    reason.clone(),
                    tally.count.to_string(),
                    tally.pages.to_string(),
                    bytes(tally.pages),
                    human_ns(tally.total_ns),
                ]);
            }
            write!(out, "{}", table.render())?;
            let mut table = Table::new(&[
                ("DEVICE", Align::Left),
                ("BDI", Align::Left),
                ("PASSES", Align::Right),
                ("PAGES", Align::Right),
                ("BYTES", Align::Right),
            ]);
            for (device, tally) in sorted(&totals.by_device) {
                table.row(vec![
                    device.clone(),
                    tally.name.clone(),
                    tally.count.to_string(),
                    tally.pages.to_string(),
                    bytes(tally.pages),
                ]);
            }
            writeln!(out)?;
            write!(out, "{}", table.render())?;
            writeln!(out, "\nWriteback pass duration:")?;
            write!(out, "{}", totals.pass_latencies.render_log2())?;
            writeln!(out, "     {}", totals.pass_latencies.percentiles_line())?;
        }
        if totals.abandoned + totals.unmatched + in_progress as u64 > 0 {
            writeln!(
                out,
                "Passes never completed: {}; written without a start: {}; in progress: {in_progress}",
                totals.abandoned, totals.unmatched
            )?;
        }
        let pauses = &totals.pauses;
        if pauses.count() == 0 {
            writeln!(out, "\nNo task was throttled for dirtying pages.")?;
            return Ok(());
        }
        writeln!(
            out,
            "\nDirty throttling: {} pauses, {} in all",
            pauses.count(),
            human_ns(pauses.total_ns())
        )?;
        write!(out, "{}", pauses.render_log2())?;
        writeln!(out, "     {}", pauses.percentiles_line())?;
        let columns = |key, name| tally::Columns {
            key,
            count: "PAUSES",
            pages: None,
            name,
        };
        writeln!(out, "\nMost throttled processes:")?;
        let processes = tally::top(&totals.throttled_processes, self.top);
        write!(out, "{}", tally::table(&columns("PID", "COMM"), &processes))?;
        writeln!(out, "\nMost throttled cgroups:")?;
        let cgroups = tally::top(&totals.throttled_cgroups, self.top);
        write!(
            out,
            "{}",
            tally::table(&columns("CGROUP ID", "CGROUP"), &cgroups)
        )?;
        Ok(())
    }
}

/// Entries by pages written, most first.
fn sorted(tallies: &HashMap<String, Tally>) -> Vec<(&String, &Tally)> {
    let mut sorted: Vec<_> = tallies.iter().collect();
    sorted.sort_by(|a, b| b.1.pages.cmp(&a.1.pages).then(a.0.cmp(b.0)));
    sorted
}

fn page_size() -> u64 {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

fn bytes(pages: u64) -> String {
    let bytes = (pages * page_size()) as f64;
    match bytes {
        b if b >= (1u64 << 30) as f64 => format!("{:.1}GiB", b / (1u64 << 30) as f64),
        b if b >= (1u64 << 20) as f64 => format!("{:.1}MiB", b / (1u64 << 20) as f64),
        b => format!("{:.1}KiB", b / 1024.0),
    }
}

/// `major:minor` of a kernel `dev_t` (20 bits of minor).
fn dev_name(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & ((1 << 20) - 1))
}

#[derive(Serialize)]
struct PassJson<'a> {
    r#type: &'static str,
    time: String,
    pid: u32,
    tid: u32,
    comm: &'a str,
    bdi: &'a str,
    device: &'a str,
    reason: &'a str,
    pages: u64,
    bytes: u64,
    duration_us: f64,
    sb_dev: String,
    cgroup_ino: u64,
}

#[derive(Serialize)]
struct ThrottleJson<'a> {
    r#type: &'static str,
    time: String,
    pid: u32,
    tid: u32,
    comm: &'a str,
    cgroup_id: u64,
    cgroup: &'a str,
    bdi: &'a str,
    device: &'a str,
    pause_us: f64,
}

#[derive(Serialize)]
struct WrittenJson {
    passes: u64,
    pages: u64,
    bytes: u64,
    total_us: f64,
}

#[derive(Serialize)]
struct SummaryJson {
    r#type: &'static str,
    time: String,
    interval_s: f64,
    lost: u64,
    by_reason: HashMap<String, WrittenJson>,
    by_device: HashMap<String, WrittenJson>,
    pass_duration: LatencySummary,
    passes_never_completed: u64,
    passes_without_start: u64,
    passes_in_progress: usize,
    throttle_pause: LatencySummary,
    throttled_processes: Vec<TallyJson<ProcessKey>>,
    throttled_cgroups: Vec<TallyJson<CgroupKey>>,
}

impl SummaryJson {
    fn new(totals: &Totals, window: &Window, in_progress: usize) -> Self {
        let written = |tallies: &HashMap<String, Tally>| {
            tallies
                .iter()
                .map(|(key, tally)| {
                    let written = WrittenJson {
                        passes: tally.count,
                        pages: tally.pages,
                        bytes: tally.pages * page_size(),
                        total_us: tally.total_ns as f64 / 1000.0,
                    };
                    (key.clone(), written)
                })
                .collect()
        };
        Self {
            r#type: "summary",
            time: output::rfc3339(window.end),
            interval_s: window.length.as_secs_f64(),
            lost: window.lost,
            by_reason: written(&totals.by_reason),
            by_device: written(&totals.by_device),
            pass_duration: totals.pass_latencies.summary(),
            passes_never_completed: totals.abandoned,
            passes_without_start: totals.unmatched,
            passes_in_progress: in_progress,
            throttle_pause: totals.pauses.summary(),
            throttled_processes: tally::process_rows(&totals.throttled_processes, false),
            throttled_cgroups: tally::cgroup_rows(&totals.throttled_cgroups, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::task::Task;

    use super::*;

    fn work(kind: u32, tid: u32, reason: u32, nr_pages: i64, time_ns: u64) -> Work {
        let mut bdi = [0; 32];
        bdi[..5].copy_from_slice(b"253:0");
        Work {
            kind,
            reason,
            task: Task {
                pid: tid,
                tid,
                ..Task::default()
            },
            time_ns,
            nr_pages,
            cgroup_ino: 1,
            sb_dev: 0,
            _pad: 0,
            bdi,
        }
    }

    #[test]
    fn pairs_passes_per_thread() {
        let mut passes = Passes::default();
        passes.start(work(kind::START, 10, 2, i64::MAX, 1_000));
        passes.start(work(kind::START, 11, 0, 4096, 1_500));
        let sync = passes
            .written(work(kind::WRITTEN, 10, 2, i64::MAX - 300, 5_000))
            .unwrap();
        assert_eq!((sync.pages(), sync.duration_ns()), (300, 4_000));
        let background = passes
            .written(work(kind::WRITTEN, 11, 0, 96, 2_500))
            .unwrap();
        assert_eq!(
            (background.pages(), background.duration_ns()),
            (4000, 1_000)
        );
        assert_eq!(
            (passes.abandoned, passes.unmatched, passes.in_progress()),
            (0, 0, 0)
        );
    }

    #[test]
    fn counts_passes_that_never_complete() {
        let mut passes = Passes::default();
        // The flusher started a pass and, with no written record, started another.
        passes.start(work(kind::START, 10, 3, 1000, 1));
        passes.start(work(kind::START, 10, 3, 1000, 2));
        assert_eq!(passes.abandoned, 1);
        // A written record whose start tracer never saw.
        assert!(passes.written(work(kind::WRITTEN, 99, 3, 10, 3)).is_none());
        assert_eq!(passes.unmatched, 1);
        // A written record of another work than the open start: neither completes.
        assert!(passes.written(work(kind::WRITTEN, 10, 2, 10, 4)).is_none());
        assert_eq!((passes.abandoned, passes.unmatched), (2, 2));
        // A pass still running when the summary is printed.
        passes.start(work(kind::START, 12, 0, 10, 5));
        assert_eq!(passes.in_progress(), 1);
    }

    #[test]
    fn never_counts_negative_pages() {
        let pass = Pass {
            start: work(kind::START, 1, 0, 10, 5),
            end: work(kind::WRITTEN, 1, 0, 20, 4),
        };
        assert_eq!((pass.pages(), pass.duration_ns()), (0, 0));
    }

    #[test]
    fn names_devices() {
        assert_eq!(dev_name(253 << 20 | 1), "253:1");
        assert_eq!(Devices::default().name("0:999"), "0:999");
    }
}
