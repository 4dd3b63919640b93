//! `tracer direct-reclaim`: allocation stalls in global and memory-cgroup reclaim, and in
//! direct compaction.

use crate::{
    record::{self, records, tool},
    task::Task,
};

/// The kind of a [`Stall`] record.
pub const STALL: u32 = record::kind(tool::DIRECT_RECLAIM, 1);
/// The kind of a [`CompactionTry`] record.
pub const COMPACTION_TRY: u32 = record::kind(tool::DIRECT_RECLAIM, 2);
/// The kind of a [`CompactionZone`] record.
pub const COMPACTION_ZONE: u32 = record::kind(tool::DIRECT_RECLAIM, 3);
/// The kind of a [`Kcompactd`] record.
pub const KCOMPACTD: u32 = record::kind(tool::DIRECT_RECLAIM, 4);
/// The kind of a [`KswapdWoken`] record.
pub const KSWAPD_WOKEN: u32 = record::kind(tool::DIRECT_RECLAIM, 5);
/// The kind of a [`Throttled`] record.
pub const THROTTLED: u32 = record::kind(tool::DIRECT_RECLAIM, 6);

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
    /// Whether a node's kswapd had been woken and not yet gone back to sleep when the stall
    /// began (global reclaim only).
    pub kswapd_awake: u32,
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

/// An allocating task began direct compaction (`compaction:mm_compaction_try_to_compact_pages`):
/// the kernel then tries the allocation's zones one by one, each ending in a [`CompactionZone`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CompactionTry {
    /// [`COMPACTION_TRY`].
    pub record: u32,
    /// `enum compact_priority`: 0 is the most thorough (sync, full), higher is lighter.
    pub priority: i32,
    pub task: Task,
    pub order: i32,
    pub _pad: u32,
    pub gfp_flags: u64,
    pub start_ns: u64,
}

/// How direct compaction left one zone of a try.
pub mod zone_outcome {
    /// It ran (`mm_compaction_begin` .. `mm_compaction_end`); the status is its result.
    pub const RAN: u32 = 0;
    /// Deferred after recent failures at this order (`mm_compaction_deferred`).
    pub const DEFERRED: u32 = 1;
    /// Judged unable to help or not needed (`mm_compaction_suitable`), so not run.
    pub const JUDGED: u32 = 2;
    /// Deferring reset (`mm_compaction_defer_reset`): a zone reached the order's watermark, in
    /// the try (a zone that needed no compaction says so only here) or once the allocation
    /// got its page.
    pub const RESET: u32 = 3;
}

/// What one zone of a [`CompactionTry`] came to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CompactionZone {
    /// [`COMPACTION_ZONE`].
    pub record: u32,
    /// A [`zone_outcome`].
    pub outcome: u32,
    pub tid: u32,
    /// `enum compact_result`, as the tracepoint's own symbol table names it.
    pub status: i32,
    /// Node and zone index where the tracepoint gives them (not `mm_compaction_end`: -1).
    pub nid: i32,
    pub zone: i32,
    /// Whether it ran synchronously (may wait on page locks and writeback).
    pub sync: u32,
    pub _pad: u32,
    /// The try's `start_ns`: which try this zone belongs to.
    pub try_start_ns: u64,
    /// First page frame of the zone that ran (`RAN` only).
    pub zone_start_pfn: u64,
    /// When it began running (`RAN` only), and when the outcome was known.
    pub begin_ns: u64,
    pub at_ns: u64,
}

/// What kcompactd, the background compaction thread of each node, was doing.
pub mod kcompactd {
    /// A task asked it to compact a node (`mm_compaction_wakeup_kcompactd`).
    pub const ASKED: u32 = 0;
    /// It woke to compact (`mm_compaction_kcompactd_wake`).
    pub const WOKE: u32 = 1;
    /// It went back to sleep (`mm_compaction_kcompactd_sleep`).
    pub const SLEPT: u32 = 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Kcompactd {
    /// [`KCOMPACTD`].
    pub record: u32,
    /// A [`kcompactd`] constant.
    pub what: u32,
    pub nid: i32,
    pub order: i32,
    /// The task that asked ([`kcompactd::ASKED`]) or kcompactd itself.
    pub task: Task,
    pub at_ns: u64,
}

/// Where `mm_compaction_try_to_compact_pages` keeps `gfp_mask` and `prio` on this kernel: the
/// mask grew from a 4-byte `gfp_t` to an `unsigned long` around Linux 5.16, moving `prio`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CompactionLayout {
    pub gfp: GfpField,
    pub priority_offset: u32,
    pub _pad: u32,
}

/// The most NUMA nodes whose kswapd is followed.
pub const MAX_NODES: u32 = 64;

/// One node's kswapd, kept in the kernel (written by the tracepoints of that node, read by
/// userspace before each summary): counters only grow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KswapdNode {
    /// The kswapd thread, known from its first wake-up seen.
    pub tid: u32,
    /// Set when a task wakes it or it wakes, cleared when it goes back to sleep.
    pub awake: u32,
    /// When it woke, 0 while it sleeps.
    pub woke_ns: u64,
    /// Its runs of `balance_pgdat()` (the kernel's `pageoutrun`).
    pub wakes: u64,
    /// Time from its wake-ups to its sleeps, up to its last sleep.
    pub awake_ns: u64,
    /// Pages it scanned and reclaimed (the kernel's `pgscan_kswapd`, `pgsteal_kswapd`).
    pub scanned: u64,
    pub reclaimed: u64,
}

/// A task woke a node's kswapd (`vmscan:mm_vmscan_wakeup_kswapd`): an allocation found free
/// memory under the low watermark.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KswapdWoken {
    /// [`KSWAPD_WOKEN`].
    pub record: u32,
    pub nid: i32,
    pub zone: i32,
    pub order: i32,
    pub task: Task,
}

/// A reclaiming task (direct or kswapd) was made to wait (`vmscan:mm_vmscan_throttled`, Linux
/// 5.16+).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Throttled {
    /// [`THROTTLED`].
    pub record: u32,
    pub nid: i32,
    /// `1 << enum vmscan_throttle_state`: writeback, isolated, noprogress, congested.
    pub reason: i32,
    pub usec_timeout: i32,
    pub usec_delayed: i32,
    pub _pad: u32,
    pub task: Task,
}

plain_old_data!(
    KswapdNode,
    KswapdWoken,
    Throttled,
    Stall,
    GfpField,
    CompactionTry,
    CompactionZone,
    Kcompactd,
    CompactionLayout
);
records!(tool::DIRECT_RECLAIM => Stall, CompactionTry, CompactionZone, Kcompactd, KswapdWoken, Throttled);
