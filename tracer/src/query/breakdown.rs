//! `--breakdown`, userspace side: the parts a user chose, what each attaches, where the kernel
//! keeps what it reads, and how a query's parts are shown. The kernel side follows each thread
//! through the scheduler's switches and wake-ups, page-cache adds and bios while it runs a
//! query.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tracer_common::query::{Breakdown, QueryDone};

use prometheus_client::registry::Unit;

use crate::{
    loader::{Kernel, Probes, Tracepoint},
    metrics::TopTotal,
};

/// A part of `--breakdown`, each with what it attaches.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// On CPU, run queue, blocked (D state), sleeping: sched:sched_switch and sched_wakeup
    Sched,
    /// CPU-quota throttling of the backend's cgroup: read at each query's start and end
    Throttle,
    /// Pages missed in the page cache: filemap:mm_filemap_add_to_page_cache
    Cache,
    /// Block I/O submitted and swap-ins: block:block_bio_queue
    Io,
}

/// `--breakdown` alone: every part.
pub const ALL: [&str; 4] = ["sched", "throttle", "cache", "io"];

/// The parts chosen.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parts {
    pub sched: bool,
    pub throttle: bool,
    pub cache: bool,
    pub io: bool,
}

impl Parts {
    pub fn of(chosen: &[Part]) -> Self {
        Self {
            sched: chosen.contains(&Part::Sched),
            throttle: chosen.contains(&Part::Throttle),
            cache: chosen.contains(&Part::Cache),
            io: chosen.contains(&Part::Io),
        }
    }

    pub fn any(&self) -> bool {
        self.sched || self.throttle || self.cache || self.io
    }

    /// What these parts attach.
    pub fn tracepoints(&self) -> Vec<Tracepoint> {
        let mut tracepoints = Vec::new();
        if self.sched {
            tracepoints.push(Tracepoint {
                category: "sched",
                name: "sched_switch",
                program: "query_sched_switch",
                // With prev_state (Linux 5.18+); before, the classic record.
                args: Some(&[
                    "bool",
                    "struct task_struct *",
                    "struct task_struct *",
                    "unsigned int",
                ]),
                fields: &[("prev_state", 32, 8), ("next_pid", 56, 4)],
            });
            tracepoints.push(Tracepoint {
                category: "sched",
                name: "sched_wakeup",
                program: "query_sched_wakeup",
                args: Some(&["struct task_struct *"]),
                fields: &[("pid", 24, 4)],
            });
        }
        if self.cache {
            tracepoints.push(Tracepoint {
                category: "filemap",
                name: "mm_filemap_add_to_page_cache",
                program: "query_page_cache_add",
                args: None,
                fields: &[],
            });
        }
        if self.io {
            tracepoints.push(Tracepoint {
                category: "block",
                name: "block_bio_queue",
                program: "query_block_io",
                args: None,
                // And `rwbs` at 28: 8 bytes before Linux 5.17, 10 since.
                fields: &[("dev", 8, 4), ("nr_sector", 24, 4)],
            });
        }
        tracepoints
    }
}

/// What the kernel programs read for `--breakdown`, from this kernel's BTF and tracefs (all 0
/// without it).
#[derive(Default)]
pub struct Offsets {
    /// `task_struct.sched_task_group` and `task_group.cfs_bandwidth.throttled_time` (0 on a
    /// kernel without CFS bandwidth control).
    pub task_sched_task_group: u32,
    pub task_group_throttled_time: u32,
    /// Where `mm_filemap_add_to_page_cache`'s record keeps a folio's `order` (Linux 6.x); 0:
    /// a page each.
    pub page_cache_order: u32,
}

impl Offsets {
    pub fn find(kernel: &Kernel, parts: Parts) -> Result<Self> {
        let switch_args = kernel
            .btf
            .tracepoint_args("sched_switch")
            .map_or(0, |args| args.len());
        if parts.sched && switch_args != 4 && !crate::pidns::is_hosts() {
            bail!(
                "--breakdown=sched in a pid namespace of tracer's own needs Linux 5.18+ \
                 (sched_switch with prev_state): the classic record numbers tasks as the host does"
            );
        }
        if parts.io {
            let format = kernel.tracefs.format("block", "block_bio_queue")?;
            let rwbs = format.fields.iter().find(|field| field.name == "rwbs");
            if !rwbs.is_some_and(|rwbs| rwbs.offset == 28 && rwbs.size >= 2) {
                bail!("block:block_bio_queue has no rwbs at offset 28 on this kernel");
            }
        }
        let btf = &kernel.btf;
        let (task_sched_task_group, task_group_throttled_time) = btf
            .member_offset("task_struct", "sched_task_group")
            .ok()
            .zip(
                btf.member_offset("task_group", "cfs_bandwidth.throttled_time")
                    .ok(),
            )
            .filter(|_| parts.throttle)
            .unwrap_or_default();
        let page_cache_order = kernel
            .tracefs
            .format("filemap", "mm_filemap_add_to_page_cache")
            .ok()
            .filter(|_| parts.cache)
            .and_then(|format| {
                let order = format
                    .fields
                    .into_iter()
                    .find(|field| field.name == "order")?;
                (order.size == 1).then_some(order.offset as u32)
            })
            .unwrap_or(0);
        Ok(Self {
            task_sched_task_group,
            task_group_throttled_time,
            page_cache_order,
        })
    }
}

/// Names the block devices that hold swap areas to the kernel side, so that a read there
/// counts as a swap-in. Swap files are not told apart from their file system's other reads:
/// they count as reads only. Swap areas switched on later are not seen.
pub fn name_swap_devices(probes: &mut Probes) -> Result<()> {
    let mut devices: aya::maps::HashMap<_, u32, u8> =
        aya::maps::HashMap::try_from(probes.map_mut("QUERY_SWAP_DEVICES")?)?;
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    for device in swap_partitions(&swaps) {
        // A device node tracer's mount namespace lacks (a container's /dev) is not known.
        let Ok(meta) = std::fs::metadata(device) else {
            continue;
        };
        let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
        // The kernel's own numbering: 12 bits of major above 20 of minor.
        let dev = (libc::major(rdev) << 20) | libc::minor(rdev);
        devices
            .insert(dev, 1, 0)
            .with_context(|| format!("cannot name swap device {device}"))?;
    }
    Ok(())
}

/// The block devices among `/proc/swaps`' swap areas.
fn swap_partitions(swaps: &str) -> impl Iterator<Item = &str> {
    swaps.lines().skip(1).filter_map(|line| {
        let mut columns = line.split_whitespace();
        let (name, kind) = (columns.next()?, columns.next()?);
        (kind == "partition").then_some(name)
    })
}

/// Every value of a breakdown, to sum or share them alike.
pub fn values(parts: &mut Breakdown) -> impl Iterator<Item = &mut u64> {
    [
        &mut parts.oncpu_ns,
        &mut parts.runq_ns,
        &mut parts.throttled_ns,
        &mut parts.blocked_ns,
        &mut parts.sleep_ns,
        &mut parts.cache_misses,
        &mut parts.io.read_bytes,
        &mut parts.io.write_bytes,
        &mut parts.io.bios,
        &mut parts.io.swapin_bytes,
    ]
    .into_iter()
}

#[derive(Serialize)]
pub struct BreakdownTotals {
    pub total: BreakdownJson,
    pub per_call: BreakdownJson,
}

/// A breakdown over `calls` calls of `latency_ns` in all, with the chosen parts only: times in
/// microseconds, and what the wall time holds beyond them (`rest_us`: ideally 0, shown rather
/// than hidden).
#[derive(Serialize, Default)]
pub struct BreakdownJson {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    sched: Option<SchedJson>,
    /// Within `runq_us`: the cgroup's CPU quota throttling.
    #[serde(skip_serializing_if = "Option::is_none")]
    throttled_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_misses: Option<f64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    io: Option<IoJson>,
}

#[derive(Serialize)]
struct SchedJson {
    oncpu_us: f64,
    runq_us: f64,
    blocked_us: f64,
    sleep_us: f64,
    rest_us: f64,
}

#[derive(Serialize)]
struct IoJson {
    read_bytes: f64,
    write_bytes: f64,
    bios: f64,
    /// Pages.
    swapins: f64,
}

impl BreakdownJson {
    pub fn of(chosen: Parts, parts: &Breakdown, latency_ns: u64, calls: u64) -> Self {
        let per = |value: u64| value as f64 / calls.max(1) as f64;
        let us = |ns: u64| per(ns) / 1000.0;
        Self {
            sched: chosen.sched.then(|| SchedJson {
                oncpu_us: us(parts.oncpu_ns),
                runq_us: us(parts.runq_ns),
                blocked_us: us(parts.blocked_ns),
                sleep_us: us(parts.sleep_ns),
                rest_us: rest_ns(parts, latency_ns) / 1000.0 / calls.max(1) as f64,
            }),
            throttled_us: chosen.throttle.then(|| us(parts.throttled_ns)),
            cache_misses: chosen.cache.then(|| per(parts.cache_misses)),
            io: chosen.io.then(|| IoJson {
                read_bytes: per(parts.io.read_bytes),
                write_bytes: per(parts.io.write_bytes),
                bios: per(parts.io.bios),
                swapins: per(parts.io.swapin_bytes / PAGE),
            }),
        }
    }
}

/// What `latency_ns` holds beyond the scheduler's parts (negative if they overran it).
fn rest_ns(parts: &Breakdown, latency_ns: u64) -> f64 {
    let sum = parts.oncpu_ns + parts.runq_ns + parts.blocked_ns + parts.sleep_ns;
    latency_ns as f64 - sum as f64
}

const PAGE: u64 = 4096;

/// The table's columns for the chosen parts, and a row's cells (of a query's totals over its
/// calls).
pub fn headers(chosen: Parts) -> Vec<&'static str> {
    let mut headers = Vec::new();
    if chosen.sched {
        headers.extend(["ON CPU", "RUNQ"]);
    }
    if chosen.throttle {
        headers.push("THROTTLED");
    }
    if chosen.sched {
        headers.extend(["BLOCKED", "SLEEP", "REST"]);
    }
    if chosen.cache {
        headers.push("MISS/CALL");
    }
    if chosen.io {
        headers.extend(["READ/CALL", "WRITE/CALL", "BIO/CALL", "SWAPIN/CALL"]);
    }
    headers
}

pub fn cells(chosen: Parts, parts: &Breakdown, latency_ns: u64, calls: u64) -> Vec<String> {
    let human = crate::histogram::human_ns;
    let per = |value: u64| format!("{:.1}", value as f64 / calls.max(1) as f64);
    let bytes = |value: u64| human_bytes(value / calls.max(1));
    let mut cells = Vec::new();
    if chosen.sched {
        cells.extend([human(parts.oncpu_ns), human(parts.runq_ns)]);
    }
    if chosen.throttle {
        cells.push(human(parts.throttled_ns));
    }
    if chosen.sched {
        cells.extend([
            human(parts.blocked_ns),
            human(parts.sleep_ns),
            format!("{:.0}us", rest_ns(parts, latency_ns) / 1000.0),
        ]);
    }
    if chosen.cache {
        cells.push(per(parts.cache_misses));
    }
    if chosen.io {
        cells.extend([
            bytes(parts.io.read_bytes),
            bytes(parts.io.write_bytes),
            per(parts.io.bios),
            per(parts.io.swapin_bytes / PAGE),
        ]);
    }
    cells
}

/// A `--slow` line's breakdown: "cpu 1.2 runq 0.3 ... ms, 12 pages missed, 96K read: ".
pub fn slow_line(chosen: Parts, parts: &Breakdown) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut said = Vec::new();
    if chosen.sched {
        said.push(format!(
            "cpu {:.3} runq {:.3} blocked {:.3} sleep {:.3} ms",
            ms(parts.oncpu_ns),
            ms(parts.runq_ns),
            ms(parts.blocked_ns),
            ms(parts.sleep_ns)
        ));
    }
    if chosen.throttle {
        said.push(format!("throttled {:.3} ms", ms(parts.throttled_ns)));
    }
    if chosen.cache {
        said.push(format!("{} pages missed", parts.cache_misses));
    }
    if chosen.io {
        said.push(format!(
            "{} read {} written in {} bios, {} pages swapped in",
            human_bytes(parts.io.read_bytes),
            human_bytes(parts.io.write_bytes),
            parts.io.bios,
            parts.io.swapin_bytes / PAGE
        ));
    }
    match said.is_empty() {
        true => String::new(),
        false => format!("{}: ", said.join(", ")),
    }
}

/// A value of one call, as `tracer serve` totals it per query.
pub type CallValue = fn(&QueryDone) -> f64;

/// What `tracer serve` exports per query: reclaim and compaction, and the chosen parts; each
/// total, and its value in a call.
pub fn exported(chosen: Parts) -> Vec<(TopTotal, CallValue)> {
    let time = |part, value: CallValue| {
        let help =
            "Where the time of queries went: on CPU, in the run queue, blocked (D), sleeping";
        let total = TopTotal {
            suffix: "breakdown",
            help,
            unit: Some(Unit::Seconds),
            part: Some(part),
        };
        (total, value)
    };
    let count = |suffix, help, unit, value: CallValue| {
        let total = TopTotal {
            suffix,
            help,
            unit,
            part: None,
        };
        (total, value)
    };
    fn seconds(ns: u64) -> f64 {
        ns as f64 / 1e9
    }
    // The reclaim and compaction the table shows, whatever the parts.
    let mut exported = vec![
        count(
            "reclaim",
            "Time queries stalled in direct or memory-cgroup reclaim",
            Some(Unit::Seconds),
            |done| seconds(done.reclaim_ns),
        ),
        count(
            "reclaim_stalls",
            "Direct or memory-cgroup reclaim stalls inside queries",
            None,
            |done| done.reclaim_count as f64,
        ),
        count(
            "compaction",
            "Time queries spent in direct compaction",
            Some(Unit::Seconds),
            |done| seconds(done.compaction_ns),
        ),
        count(
            "compaction_stalls",
            "Direct compaction stalls inside queries, as the kernel counts compact_stall",
            None,
            |done| done.compaction_count as f64,
        ),
    ];
    if chosen.sched {
        exported.extend([
            time("oncpu", |done| seconds(done.breakdown.oncpu_ns)),
            time("runq", |done| seconds(done.breakdown.runq_ns)),
            time("blocked", |done| seconds(done.breakdown.blocked_ns)),
            time("sleep", |done| seconds(done.breakdown.sleep_ns)),
        ]);
    }
    if chosen.throttle {
        exported.push(count(
            "throttled",
            "How long the CPU quota of their cgroup held queries back",
            Some(Unit::Seconds),
            |done| seconds(done.breakdown.throttled_ns),
        ));
    }
    if chosen.cache {
        exported.push(count(
            "page_cache_misses",
            "Pages queries added to the page cache",
            None,
            |done| done.breakdown.cache_misses as f64,
        ));
    }
    if chosen.io {
        exported.extend([
            count(
                "block_read",
                "Block I/O read by queries",
                Some(Unit::Bytes),
                |done| done.breakdown.io.read_bytes as f64,
            ),
            count(
                "block_written",
                "Block I/O written by queries themselves",
                Some(Unit::Bytes),
                |done| done.breakdown.io.write_bytes as f64,
            ),
            count("bios", "Bios queries submitted", None, |done| {
                done.breakdown.io.bios as f64
            }),
            count("swapins", "Pages queries swapped in", None, |done| {
                (done.breakdown.io.swapin_bytes / PAGE) as f64
            }),
        ]);
    }
    exported
}

fn human_bytes(bytes: u64) -> String {
    let units = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    match units.iter().find(|&&(size, _)| bytes >= size) {
        Some(&(size, unit)) => format!("{:.1}{unit}", bytes as f64 / size as f64),
        None => format!("{bytes}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_partitions_are_the_block_devices_of_proc_swaps() {
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /dev/vda3                               partition\t4194300\t\t0\t\t-2\n\
                     /swapfile                               file\t\t1048572\t\t0\t\t-3\n\
                     /dev/zram0                              partition\t8388604\t\t0\t\t100\n";
        assert_eq!(
            swap_partitions(swaps).collect::<Vec<_>>(),
            ["/dev/vda3", "/dev/zram0"]
        );
    }

    #[test]
    fn only_the_chosen_parts_are_shown() {
        let parts = Breakdown {
            oncpu_ns: 3_000,
            sleep_ns: 1_000,
            ..Default::default()
        };
        let sched = Parts::of(&[Part::Sched]);
        let json = serde_json::to_value(BreakdownJson::of(sched, &parts, 5_000, 1)).unwrap();
        assert_eq!(json["oncpu_us"], 3.0);
        assert_eq!(json["rest_us"], 1.0);
        assert!(json.get("read_bytes").is_none() && json.get("throttled_us").is_none());
        assert_eq!(headers(sched).len(), cells(sched, &parts, 5_000, 1).len());
        let io = Parts::of(&[Part::Io, Part::Cache]);
        let json = serde_json::to_value(BreakdownJson::of(io, &parts, 5_000, 1)).unwrap();
        assert!(json.get("oncpu_us").is_none() && json.get("rest_us").is_none());
        assert_eq!(json["swapins"], 0.0);
        assert_eq!(headers(io).len(), cells(io, &parts, 5_000, 1).len());
    }
}
