//! Direct compaction beside reclaim: each try of an allocating task, put together from its
//! zones' records, and kcompactd's background work kept apart.
//!
//! The kernel marks where a try begins and where each zone's part ends, not where the try
//! ends: a try is over when its thread tries again or reclaims, or after [`QUIET_NS`] without
//! news. Its status is the kernel's own (`try_to_compact_pages()` returns the highest status of
//! its zones). Two silent cases are told by the deferring resets that follow: a zone already at
//! its watermark returns success with no zone tracepoint but resets its deferring, and an
//! allocation that got its page after compaction resets it again. So a try is a stall where the
//! kernel counts `compact_stall` (any status but skipped, or a reset), and it got its page where
//! the kernel counts `compact_success` (a reset past the one a successful zone makes).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use serde::Serialize;
use tracer_common::direct_reclaim::{
    CompactionLayout, CompactionTry, CompactionZone, GfpField, Kcompactd, kcompactd, zone_outcome,
};

pub use crate::compaction::Statuses;
use crate::{
    histogram::{Latencies, LatencySummary, human_ns},
    loader::Tracepoint,
    output,
    tracefs::{Format, Tracefs},
};

/// Classic tracepoints only: cold paths, and their BTF arguments are kernel structs.
pub const TRACEPOINTS: &[Tracepoint] = &[
    classic(
        "mm_compaction_try_to_compact_pages",
        "compaction_try",
        &[("order", 8, 4)],
    ),
    classic(
        "mm_compaction_begin",
        "compaction_begin",
        &[("zone_start", 8, 8)],
    ),
    classic(
        "mm_compaction_end",
        "compaction_end",
        &[("sync", 40, 1), ("status", 44, 4)],
    ),
    classic("mm_compaction_deferred", "compaction_deferred", ZONE_FIELDS),
    classic(
        "mm_compaction_defer_reset",
        "compaction_defer_reset",
        ZONE_FIELDS,
    ),
    classic(
        "mm_compaction_suitable",
        "compaction_suitable",
        &[("nid", 8, 4), ("idx", 12, 4), ("ret", 20, 4)],
    ),
    classic(
        "mm_compaction_wakeup_kcompactd",
        "kcompactd_asked",
        &[("nid", 8, 4), ("order", 12, 4)],
    ),
    classic(
        "mm_compaction_kcompactd_wake",
        "kcompactd_woke",
        &[("nid", 8, 4), ("order", 12, 4)],
    ),
    classic(
        "mm_compaction_kcompactd_sleep",
        "kcompactd_slept",
        &[("nid", 8, 4)],
    ),
];

const ZONE_FIELDS: &[(&str, usize, usize)] = &[("nid", 8, 4), ("idx", 12, 4)];

const fn classic(
    name: &'static str,
    program: &'static str,
    fields: &'static [(&'static str, usize, usize)],
) -> Tracepoint {
    Tracepoint {
        category: "compaction",
        name,
        program,
        args: None,
        fields,
    }
}

/// How long a try may go without news before it counts as over.
const QUIET_NS: u64 = 1_000_000_000;

/// Where this kernel keeps the try record's `gfp_mask` and `prio`; `None` when it has no
/// compaction tracepoints (built without CONFIG_COMPACTION).
pub fn layout(tracefs: &Tracefs) -> Result<Option<CompactionLayout>> {
    match tracefs.format("compaction", "mm_compaction_try_to_compact_pages") {
        Ok(format) => layout_of(&format).map(Some),
        Err(_) => Ok(None),
    }
}

fn layout_of(format: &Format) -> Result<CompactionLayout> {
    let field = |name: &str| format.fields.iter().find(|field| field.name == name);
    let (Some(gfp), Some(priority)) = (field("gfp_mask"), field("prio")) else {
        bail!("compaction:mm_compaction_try_to_compact_pages has no gfp_mask or prio here");
    };
    if !matches!(gfp.size, 4 | 8) || priority.size != 4 {
        bail!("compaction:mm_compaction_try_to_compact_pages is laid out unlike any known kernel");
    }
    Ok(CompactionLayout {
        gfp: GfpField {
            offset: gfp.offset as u32,
            size: gfp.size as u32,
        },
        priority_offset: priority.offset as u32,
        _pad: 0,
    })
}

/// One try, as far as it has gone.
pub struct Try {
    pub begun: CompactionTry,
    pub zones: Vec<CompactionZone>,
    /// The highest status of its zones, as `try_to_compact_pages()` returns it.
    pub result: i32,
    /// Deferring resets seen (see the module's comment).
    pub resets: u32,
    pub last_ns: u64,
}

impl Try {
    pub fn latency_ns(&self) -> u64 {
        self.last_ns - self.begun.start_ns
    }

    /// Whether the kernel counts it in `compact_stall`: unless every zone was skipped.
    pub fn stalled(&self, statuses: &Statuses) -> bool {
        self.result != statuses.skipped() || self.resets > 0
    }

    /// Whether the allocation got its page (the kernel's `compact_success`, else
    /// `compact_fail`). A single reset after a zone that did not succeed is the allocation's;
    /// it could also be a zone's at its watermark whose page then went to another task, which
    /// is rarer.
    pub fn got_page(&self, statuses: &Statuses) -> bool {
        self.resets >= 2 || (self.resets == 1 && !statuses.is(self.result, "success"))
    }
}

/// Tries in progress, by thread.
#[derive(Default)]
pub struct Tries {
    open: HashMap<u32, Try>,
}

impl Tries {
    /// A try began; the thread's previous one, if any, is over.
    pub fn begin(&mut self, begun: CompactionTry, statuses: &Statuses) -> Option<Try> {
        let tried = Try {
            begun,
            zones: Vec::new(),
            result: statuses.skipped(),
            resets: 0,
            last_ns: begun.start_ns,
        };
        self.open.insert(begun.task.tid, tried)
    }

    /// A zone of a try came to an outcome.
    pub fn zone(&mut self, zone: CompactionZone, statuses: &Statuses) {
        let Some(tried) = self.open.get_mut(&zone.tid) else {
            return;
        };
        if tried.begun.start_ns != zone.try_start_ns {
            return;
        }
        // A zone judged able to compact runs next, and its run has the say.
        if zone.outcome == zone_outcome::JUDGED && statuses.is(zone.status, "continue") {
            return;
        }
        tried.last_ns = zone.at_ns;
        if zone.outcome == zone_outcome::RESET {
            tried.resets += 1;
            return;
        }
        let status = if zone.outcome == zone_outcome::DEFERRED {
            statuses.value("deferred").unwrap_or(zone.status)
        } else {
            zone.status
        };
        tried.result = tried.result.max(status);
        tried.zones.push(CompactionZone { status, ..zone });
    }

    /// The thread went on to reclaim at `at_ns`: a try of its that began before is over.
    pub fn moved_on(&mut self, tid: u32, at_ns: u64) -> Option<Try> {
        let begun = self.open.get(&tid)?.begun.start_ns;
        (begun <= at_ns).then(|| self.open.remove(&tid)).flatten()
    }

    /// Tries without news since `QUIET_NS` before `now_ns`, or all of them when `now_ns` is
    /// `None` (tracing ends).
    pub fn quiet(&mut self, now_ns: Option<u64>) -> Vec<Try> {
        let over: Vec<u32> = self
            .open
            .iter()
            .filter(|(_, tried)| now_ns.is_none_or(|now| tried.last_ns + QUIET_NS <= now))
            .map(|(tid, _)| *tid)
            .collect();
        over.iter()
            .filter_map(|tid| self.open.remove(tid))
            .collect()
    }
}

/// A window's direct compaction.
#[derive(Default)]
pub struct Totals {
    pub latencies: Latencies,
    /// Stalls whose allocation got its page, and those that failed.
    pub succeeded: u64,
    pub failed: u64,
    /// Stalls by the kernel's name of their status.
    pub statuses: BTreeMap<String, u64>,
    /// Tries that found nothing to do in any zone (not stalls, as the kernel counts them).
    pub skipped: u64,
    pub kcompactd: KcompactdTotals,
}

impl Totals {
    /// Counts a finished try; says whether it was a stall.
    pub fn add(&mut self, tried: &Try, statuses: &Statuses) -> bool {
        if !tried.stalled(statuses) {
            self.skipped += 1;
            return false;
        }
        self.latencies.record(tried.latency_ns());
        if tried.got_page(statuses) {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        *self
            .statuses
            .entry(statuses.name(tried.result))
            .or_default() += 1;
        true
    }

    pub fn render(&self, out: &mut String) {
        let latencies = &self.latencies;
        if latencies.count() == 0 {
            out.push_str(&format!(
                "\nDirect compaction: no stalls ({} tries skipped at once)\n",
                self.skipped
            ));
        } else {
            let statuses: Vec<String> = self
                .statuses
                .iter()
                .map(|(status, count)| format!("{status} {count}"))
                .collect();
            out.push_str(&format!(
                "\nDirect compaction: {} stalls, {} stalled, {} got their page, {} failed \
                 ({}); {} tries skipped at once\n",
                latencies.count(),
                human_ns(latencies.total_ns()),
                self.succeeded,
                self.failed,
                statuses.join(", "),
                self.skipped
            ));
            out.push_str(&latencies.render_log2());
            out.push_str(&format!("     {}\n", latencies.percentiles_line()));
        }
        out.push_str(&self.kcompactd_line());
    }

    pub fn kcompactd_line(&self) -> String {
        self.kcompactd.line()
    }

    pub fn json(&self) -> CompactionJson {
        CompactionJson {
            stalls: self.latencies.count(),
            skipped_tries: self.skipped,
            succeeded: self.succeeded,
            failed: self.failed,
            statuses: self.statuses.clone(),
            latency: self.latencies.summary(),
            kcompactd: KcompactdJson {
                wakes: self.kcompactd.woke,
                awake_ms: self.kcompactd.awake_ns as f64 / 1e6,
                asked_by: self
                    .kcompactd
                    .askers
                    .iter()
                    .map(|((pid, comm), count)| AskerJson {
                        pid: *pid,
                        comm: comm.clone(),
                        count: *count,
                    })
                    .collect(),
            },
        }
    }
}

/// kcompactd over a window: its wake-ups, the time it worked, who asked.
#[derive(Default)]
pub struct KcompactdTotals {
    pub woke: u64,
    pub awake_ns: u64,
    /// Requests by (pid, comm) of the task that asked.
    pub askers: BTreeMap<(u32, String), u64>,
}

impl KcompactdTotals {
    fn line(&self) -> String {
        let askers = busiest(&self.askers);
        let asked = if askers.is_empty() {
            String::new()
        } else {
            format!("; asked by {askers}")
        };
        format!(
            "kcompactd (background): woke {} times, worked {}{asked}\n",
            self.woke,
            human_ns(self.awake_ns)
        )
    }
}

/// The three tasks with the most requests of a background thread, as `comm (pid) count`.
pub fn busiest(requests: &BTreeMap<(u32, String), u64>) -> String {
    let mut busiest: Vec<_> = requests.iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(a.1));
    let busiest: Vec<String> = busiest
        .iter()
        .take(3)
        .map(|((pid, comm), count)| format!("{comm} ({pid}) {count}"))
        .collect();
    busiest.join(", ")
}

/// Times kcompactd's work from its wake-up to its sleep, per node.
#[derive(Default)]
pub struct KcompactdClock {
    awake_since: HashMap<i32, u64>,
}

impl KcompactdClock {
    pub fn record(&mut self, event: &Kcompactd, totals: &mut KcompactdTotals) {
        match event.what {
            kcompactd::ASKED => {
                let comm = output::comm(&event.task.comm);
                *totals.askers.entry((event.task.pid, comm)).or_default() += 1;
            }
            kcompactd::WOKE => {
                totals.woke += 1;
                self.awake_since.insert(event.nid, event.at_ns);
            }
            _ => {
                if let Some(since) = self.awake_since.remove(&event.nid) {
                    totals.awake_ns += event.at_ns.saturating_sub(since);
                }
            }
        }
    }
}

#[derive(Serialize)]
pub struct CompactionJson {
    stalls: u64,
    skipped_tries: u64,
    succeeded: u64,
    failed: u64,
    statuses: BTreeMap<String, u64>,
    latency: LatencySummary,
    kcompactd: KcompactdJson,
}

#[derive(Serialize)]
struct KcompactdJson {
    wakes: u64,
    awake_ms: f64,
    asked_by: Vec<AskerJson>,
}

#[derive(Serialize)]
struct AskerJson {
    pid: u32,
    comm: String,
    count: u64,
}

/// One zone of a try, for `--events --json`.
#[derive(Serialize)]
pub struct ZoneJson {
    node: Option<i32>,
    zone: Option<String>,
    outcome: &'static str,
    status: String,
    mode: Option<&'static str>,
    latency_us: Option<f64>,
}

impl ZoneJson {
    pub fn new(zone: &CompactionZone, statuses: &Statuses) -> Self {
        let ran = zone.outcome == zone_outcome::RAN;
        Self {
            node: (zone.nid >= 0).then_some(zone.nid),
            zone: (zone.zone >= 0).then(|| statuses.zone(zone.zone)),
            outcome: match zone.outcome {
                zone_outcome::RAN => "ran",
                zone_outcome::DEFERRED => "deferred",
                _ => "judged",
            },
            status: statuses.name(zone.status),
            mode: ran.then_some(if zone.sync != 0 { "sync" } else { "async" }),
            latency_us: (ran && zone.begin_ns != 0)
                .then(|| zone.at_ns.saturating_sub(zone.begin_ns) as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mm_compaction_try_to_compact_pages` as Linux 5.10 (Debian 11) and 6.18 lay it out.
    fn try_format(fields: &str) -> Format {
        Format::parse(&format!(
            "name: mm_compaction_try_to_compact_pages\nformat:\n\
             \tfield:int order;\toffset:8;\tsize:4;\tsigned:1;\n{fields}\n\
             print fmt: \"order=%d\", REC->order\n"
        ))
    }

    #[test]
    fn gfp_mask_and_priority_are_read_where_each_kernel_keeps_them() {
        let linux_5_10 = try_format(
            "\tfield:gfp_t gfp_mask;\toffset:12;\tsize:4;\tsigned:0;\n\
             \tfield:int prio;\toffset:16;\tsize:4;\tsigned:1;",
        );
        let linux_6_18 = try_format(
            "\tfield:unsigned long gfp_mask;\toffset:16;\tsize:8;\tsigned:0;\n\
             \tfield:int prio;\toffset:24;\tsize:4;\tsigned:1;",
        );
        let layout = layout_of(&linux_5_10).unwrap();
        assert_eq!((layout.gfp.offset, layout.gfp.size), (12, 4));
        assert_eq!(layout.priority_offset, 16);
        let layout = layout_of(&linux_6_18).unwrap();
        assert_eq!((layout.gfp.offset, layout.gfp.size), (16, 8));
        assert_eq!(layout.priority_offset, 24);
        let odd = try_format("\tfield:u16 gfp_mask;\toffset:12;\tsize:2;\tsigned:0;");
        assert!(layout_of(&odd).is_err());
    }
}
