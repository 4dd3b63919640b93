//! `--breakdown`, userspace side: what it attaches, where the kernel keeps what it reads, and
//! how a query's parts are shown. The kernel side follows each thread through the
//! scheduler's switches and wake-ups while it runs a query.

use anyhow::{Result, bail};
use serde::Serialize;
use tracer_common::query::Breakdown;

use crate::loader::{Kernel, Tracepoint};

/// What `--breakdown` attaches: the scheduler's switches and wake-ups, and pages joining the
/// page cache.
pub fn tracepoints() -> Vec<Tracepoint> {
    vec![
        Tracepoint {
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
        },
        Tracepoint {
            category: "sched",
            name: "sched_wakeup",
            program: "query_sched_wakeup",
            args: Some(&["struct task_struct *"]),
            fields: &[("pid", 24, 4)],
        },
        Tracepoint {
            category: "filemap",
            name: "mm_filemap_add_to_page_cache",
            program: "query_page_cache_add",
            args: None,
            fields: &[],
        },
    ]
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
    pub fn find(kernel: &Kernel, wanted: bool) -> Result<Self> {
        if !wanted {
            return Ok(Self::default());
        }
        let switch_args = kernel
            .btf
            .tracepoint_args("sched_switch")
            .map_or(0, |args| args.len());
        if switch_args != 4 && !crate::pidns::is_hosts() {
            bail!(
                "--breakdown in a pid namespace of tracer's own needs Linux 5.18+ (sched_switch \
                 with prev_state): the classic record numbers tasks as the host does"
            );
        }
        let btf = &kernel.btf;
        let (task_sched_task_group, task_group_throttled_time) = btf
            .member_offset("task_struct", "sched_task_group")
            .ok()
            .zip(
                btf.member_offset("task_group", "cfs_bandwidth.throttled_time")
                    .ok(),
            )
            .unwrap_or_default();
        let page_cache_order = kernel
            .tracefs
            .format("filemap", "mm_filemap_add_to_page_cache")
            .ok()
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

/// Every value of a breakdown, to sum or share them alike.
pub fn values(parts: &mut Breakdown) -> impl Iterator<Item = &mut u64> {
    [
        &mut parts.oncpu_ns,
        &mut parts.runq_ns,
        &mut parts.throttled_ns,
        &mut parts.blocked_ns,
        &mut parts.sleep_ns,
        &mut parts.cache_misses,
    ]
    .into_iter()
}

#[derive(Serialize)]
pub struct BreakdownTotals {
    pub total: BreakdownJson,
    pub per_call: BreakdownJson,
}

/// A breakdown in microseconds, over `calls` calls of `latency_ns` in all: the parts, and what
/// the wall time holds beyond them (`rest_us`: ideally 0, shown rather than hidden).
#[derive(Serialize)]
pub struct BreakdownJson {
    oncpu_us: f64,
    runq_us: f64,
    /// Within `runq_us`: the cgroup's CPU quota throttling.
    throttled_us: f64,
    blocked_us: f64,
    sleep_us: f64,
    pub rest_us: f64,
    cache_misses: f64,
}

impl BreakdownJson {
    pub fn of(parts: &Breakdown, latency_ns: u64, calls: u64) -> Self {
        let per = |ns: u64| ns as f64 / 1000.0 / calls.max(1) as f64;
        let sum = parts.oncpu_ns + parts.runq_ns + parts.blocked_ns + parts.sleep_ns;
        Self {
            oncpu_us: per(parts.oncpu_ns),
            runq_us: per(parts.runq_ns),
            throttled_us: per(parts.throttled_ns),
            blocked_us: per(parts.blocked_ns),
            sleep_us: per(parts.sleep_ns),
            rest_us: (latency_ns as f64 - sum as f64) / 1000.0 / calls.max(1) as f64,
            cache_misses: parts.cache_misses as f64 / calls.max(1) as f64,
        }
    }
}
