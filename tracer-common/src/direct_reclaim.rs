//! `tracer direct-reclaim`: allocation stalls in global and memory-cgroup reclaim.

use crate::{
    record::{self, records, tool},
    task::Task,
};

/// The kind of a [`Stall`] record.
pub const STALL: u32 = record::kind(tool::DIRECT_RECLAIM, 1);

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
    /// [`STALL`].
    pub record: u32,
    /// A [`ReclaimKind`] discriminant.
    pub kind: u32,
    pub task: Task,
    /// Allocation order (2^order pages).
    pub order: i32,
    pub gfp_flags: u64,
    /// `bpf_ktime_get_ns()` when the stall began.
    pub start_ns: u64,
    pub latency_ns: u64,
    pub nr_reclaimed: u64,
}

/// Where the classic begin tracepoints' records keep `gfp_flags`: an `unsigned long` at 16 from
/// Linux 5.16 or so, a 4-byte `gfp_t` at 12 before.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GfpField {
    pub offset: u32,
    pub size: u32,
}

plain_old_data!(Stall, GfpField);
records!(tool::DIRECT_RECLAIM => Stall);
