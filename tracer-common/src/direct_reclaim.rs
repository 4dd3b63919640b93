//! `tracer direct-reclaim`: allocation stalls in global and memory-cgroup reclaim.

use crate::task::Task;

/// Which reclaim a task stalled in.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReclaimKind {
    /// `vmscan:mm_vmscan_direct_reclaim_begin/end`: the whole machine is short of memory.
    Global = 0,
    /// `vmscan:mm_vmscan_memcg_reclaim_begin/end`: a memory cgroup hit its limit.
    Memcg = 1,
}

/// One finished reclaim stall.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Stall {
    pub task: Task,
    /// A [`ReclaimKind`] discriminant.
    pub kind: u32,
    /// Allocation order (2^order pages).
    pub order: i32,
    pub gfp_flags: u64,
    /// `bpf_ktime_get_ns()` when the stall began.
    pub start_ns: u64,
    pub latency_ns: u64,
    pub nr_reclaimed: u64,
}

plain_old_data!(Stall);
