//! kswapd against the watermarks: who woke each node's kswapd, how long it stayed awake, what it
//! scanned and reclaimed, and whether it was awake when a task fell into direct reclaim.
//!
//! kswapd's counters are kept per node in a map that userspace reads before each summary (its
//! reclaim runs a tracepoint per 32 pages); wake-up requests and throttling go out as records.
//! All classic tracepoints, whose record fields userspace checks against the kernel's format
//! files before attaching.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use tracer_common::direct_reclaim::{
    KSWAPD_WOKEN, KswapdNode, KswapdWoken, MAX_NODES, THROTTLED, Throttled,
};

use crate::{events, task};

#[map]
static KSWAPD_NODES: Array<KswapdNode> = Array::with_max_entries(MAX_NODES, 0);

/// Nodes the machine may have: the nodes [`any_awake`] looks at.
#[unsafe(no_mangle)]
static KSWAPD_NODE_COUNT: Global<u32> = Global::new(1);

#[inline(always)]
fn node(ctx: &TracePointContext) -> Option<&'static mut KswapdNode> {
    let nid: u32 = unsafe { ctx.read_at(8) }.ok()?;
    let node = KSWAPD_NODES.get_ptr_mut(nid)?;
    Some(unsafe { &mut *node })
}

/// Whether any node's kswapd was woken and has not gone back to sleep.
#[inline(always)]
pub fn any_awake() -> bool {
    let count = KSWAPD_NODE_COUNT.load();
    for nid in 0..MAX_NODES {
        if nid >= count {
            break;
        }
        if KSWAPD_NODES.get(nid).is_some_and(|node| node.awake != 0) {
            return true;
        }
    }
    false
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_wakeup_kswapd")]
pub fn kswapd_woken_tp(ctx: TracePointContext) -> u32 {
    if let Some(node) = node(&ctx) {
        node.awake = 1;
    }
    let Some(task) = task::current() else {
        return 0;
    };
    events::emit(KswapdWoken {
        record: KSWAPD_WOKEN,
        nid: unsafe { ctx.read_at(8) }.unwrap_or(-1),
        zone: unsafe { ctx.read_at(12) }.unwrap_or(-1),
        order: unsafe { ctx.read_at(16) }.unwrap_or(-1),
        task,
    });
    0
}

/// kswapd begins a run of `balance_pgdat()`: once per wake-up, and again without sleeping when
/// it finds the free pool low after a short nap.
#[tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_wake")]
pub fn kswapd_wake_tp(ctx: TracePointContext) -> u32 {
    if let Some(node) = node(&ctx) {
        node.tid = bpf_get_current_pid_tgid() as u32;
        node.awake = 1;
        node.wakes += 1;
        if node.woke_ns == 0 {
            node.woke_ns = unsafe { bpf_ktime_get_ns() };
        }
    }
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_sleep")]
pub fn kswapd_sleep_tp(ctx: TracePointContext) -> u32 {
    if let Some(node) = node(&ctx) {
        node.awake = 0;
        if node.woke_ns != 0 {
            node.awake_ns += unsafe { bpf_ktime_get_ns() } - node.woke_ns;
            node.woke_ns = 0;
        }
    }
    0
}

/// Every reclaimer's pass over an inactive list: kswapd's are counted.
#[tracepoint(category = "vmscan", name = "mm_vmscan_lru_shrink_inactive")]
pub fn kswapd_shrink_tp(ctx: TracePointContext) -> u32 {
    let Some(node) = node(&ctx) else {
        return 0;
    };
    if node.tid == 0 || node.tid != bpf_get_current_pid_tgid() as u32 {
        return 0;
    }
    node.scanned += unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0);
    node.reclaimed += unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_throttled")]
pub fn reclaim_throttled_tp(ctx: TracePointContext) -> u32 {
    let Some(task) = task::current() else {
        return 0;
    };
    events::emit(Throttled {
        record: THROTTLED,
        nid: unsafe { ctx.read_at(8) }.unwrap_or(-1),
        usec_timeout: unsafe { ctx.read_at(12) }.unwrap_or(0),
        usec_delayed: unsafe { ctx.read_at(16) }.unwrap_or(0),
        reason: unsafe { ctx.read_at(20) }.unwrap_or(0),
        _pad: 0,
        task,
    });
    0
}
