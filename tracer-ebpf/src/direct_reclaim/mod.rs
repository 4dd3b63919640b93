//! `tracer direct-reclaim`: time tasks spend stalled in global and memory-cgroup reclaim, and
//! in direct compaction ([`compaction`]).

mod compaction;
mod kswapd;

use aya_ebpf::{
    Global,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, tracepoint},
    maps::HashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    direct_reclaim::{GfpField, ReclaimKind, STALL, Stall},
    task::Task,
};

use crate::{events, task};

#[derive(Clone, Copy)]
struct Begin {
    task: Task,
    start_ns: u64,
    gfp_flags: u64,
    order: i32,
    kswapd_awake: bool,
}

/// Stalls in progress, by (kind, thread).
#[map]
static IN_RECLAIM: HashMap<u64, Begin> = HashMap::with_max_entries(16384, events::NO_PREALLOC);

#[inline(always)]
fn key(kind: ReclaimKind, tid: u32) -> u64 {
    ((kind as u64) << 32) | tid as u64
}

#[inline(always)]
fn begin(kind: ReclaimKind, order: i32, gfp_flags: u64) {
    let Some(task) = task::current() else {
        return;
    };
    compaction::moved_on(task.tid);
    let begin = Begin {
        task,
        start_ns: unsafe { bpf_ktime_get_ns() },
        gfp_flags,
        order,
        kswapd_awake: kind == ReclaimKind::Global && kswapd::any_awake(),
    };
    if IN_RECLAIM.insert(key(kind, task.tid), begin, 0).is_err() {
        cold_warn!(
            "direct-reclaim: no room to time the stall of thread {}",
            task.tid
        );
    }
}

#[inline(always)]
fn end(kind: ReclaimKind, nr_reclaimed: u64) {
    let key = key(kind, task::current_tid());
    let Some(begin) = (unsafe { IN_RECLAIM.get(key) }).copied() else {
        return;
    };
    let _ = IN_RECLAIM.remove(key);
    events::emit(Stall {
        record: STALL,
        kind: kind as u32,
        task: begin.task,
        order: begin.order,
        kswapd_awake: begin.kswapd_awake.into(),
        gfp_flags: begin.gfp_flags,
        start_ns: begin.start_ns,
        latency_ns: unsafe { bpf_ktime_get_ns() } - begin.start_ns,
        nr_reclaimed,
    });
}

// BTF tracepoints: arguments are the tracepoint's C arguments.

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin(ctx: BtfTracePointContext) -> i32 {
    begin(ReclaimKind::Global, ctx.arg(0), ctx.arg(1));
    0
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn direct_reclaim_end(ctx: BtfTracePointContext) -> i32 {
    end(ReclaimKind::Global, ctx.arg(0));
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin(ctx: BtfTracePointContext) -> i32 {
    begin(ReclaimKind::Memcg, ctx.arg(0), ctx.arg(1));
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end(ctx: BtfTracePointContext) -> i32 {
    end(ReclaimKind::Memcg, ctx.arg(0));
    0
}

// Classic tracepoints: arguments are fields of the record whose layout userspace checks against
// the kernel's format files before attaching.

const ORDER: usize = 8;
const NR_RECLAIMED: usize = 8;

#[unsafe(no_mangle)]
static GFP_FIELD: Global<GfpField> = Global::new(GfpField {
    offset: 16,
    size: 8,
});

/// The begin record's `gfp_flags`, of the size this kernel gives it.
#[inline(always)]
fn gfp_flags(ctx: &TracePointContext) -> Option<u64> {
    let field = GFP_FIELD.load();
    let offset = field.offset as usize;
    if field.size == 4 {
        unsafe { ctx.read_at::<u32>(offset) }.ok().map(u64::from)
    } else {
        unsafe { ctx.read_at::<u64>(offset) }.ok()
    }
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin_tp(ctx: TracePointContext) -> u32 {
    let (order, gfp_flags) = (unsafe { ctx.read_at(ORDER) }, gfp_flags(&ctx));
    begin(
        ReclaimKind::Global,
        order.unwrap_or(0),
        gfp_flags.unwrap_or(0),
    );
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn direct_reclaim_end_tp(ctx: TracePointContext) -> u32 {
    end(
        ReclaimKind::Global,
        unsafe { ctx.read_at(NR_RECLAIMED) }.unwrap_or(0),
    );
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin_tp(ctx: TracePointContext) -> u32 {
    let (order, gfp_flags) = (unsafe { ctx.read_at(ORDER) }, gfp_flags(&ctx));
    begin(
        ReclaimKind::Memcg,
        order.unwrap_or(0),
        gfp_flags.unwrap_or(0),
    );
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end_tp(ctx: TracePointContext) -> u32 {
    end(
        ReclaimKind::Memcg,
        unsafe { ctx.read_at(NR_RECLAIMED) }.unwrap_or(0),
    );
    0
}
