//! Direct compaction: an allocating task that found no free block of its order moves pages to
//! make one, zone by zone, before it may fall back to reclaim. The kernel has a tracepoint where
//! a try begins and where each zone's part ends, none where the try ends: the try is the time
//! from its beginning to its last zone's outcome, and userspace closes it when the task does
//! something else (tries again, reclaims) or goes quiet.
//!
//! All cold paths (a try costs milliseconds): classic tracepoints, whose record fields userspace
//! checks against the kernel's format files before attaching.

use aya_ebpf::{
    Global,
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::direct_reclaim::{
    COMPACTION_TRY, COMPACTION_ZONE, CompactionLayout, CompactionTry, CompactionZone, GfpField,
    KCOMPACTD, Kcompactd, kcompactd, zone_outcome,
};

use crate::{events, task};

/// A thread's try in progress.
#[derive(Clone, Copy)]
struct Compacting {
    start_ns: u64,
    /// The zone running now (from `mm_compaction_begin`), 0 between zones.
    zone_begin_ns: u64,
    zone_start_pfn: u64,
}

/// Tries in progress, by thread. LRU: a try has no end the kernel marks, and a thread that
/// never allocates again would otherwise hold its entry for good. LRU maps are preallocated,
/// at a startup cost in proportion to their size: 4096 is far more threads than compact at once.
#[map]
static COMPACTING: LruHashMap<u32, Compacting> = LruHashMap::with_max_entries(4096, 0);

#[unsafe(no_mangle)]
static COMPACTION_LAYOUT: Global<CompactionLayout> = Global::new(CompactionLayout {
    gfp: GfpField {
        offset: 16,
        size: 8,
    },
    priority_offset: 24,
    _pad: 0,
});

/// The thread went on to reclaim: its try is over, and what that reclaim's own compaction
/// checks say is none of the try's.
#[inline(always)]
pub fn moved_on(tid: u32) {
    let _ = COMPACTING.remove(tid);
}

#[tracepoint(category = "compaction", name = "mm_compaction_try_to_compact_pages")]
pub fn compaction_try_tp(ctx: TracePointContext) -> u32 {
    let Some(task) = task::current() else {
        return 0;
    };
    let layout = COMPACTION_LAYOUT.load();
    let gfp_flags = if layout.gfp.size == 4 {
        unsafe { ctx.read_at::<u32>(layout.gfp.offset as usize) }.map(u64::from)
    } else {
        unsafe { ctx.read_at::<u64>(layout.gfp.offset as usize) }
    };
    let start_ns = unsafe { bpf_ktime_get_ns() };
    let compacting = Compacting {
        start_ns,
        zone_begin_ns: 0,
        zone_start_pfn: 0,
    };
    if COMPACTING.insert(task.tid, compacting, 0).is_err() {
        cold_warn!("compaction: no room for the try of thread {}", task.tid);
        return 0;
    }
    events::emit(CompactionTry {
        record: COMPACTION_TRY,
        priority: unsafe { ctx.read_at(layout.priority_offset as usize) }.unwrap_or(-1),
        task,
        order: unsafe { ctx.read_at(8) }.unwrap_or(-1),
        _pad: 0,
        gfp_flags: gfp_flags.unwrap_or(0),
        start_ns,
    });
    0
}

#[tracepoint(category = "compaction", name = "mm_compaction_begin")]
pub fn compaction_begin_tp(ctx: TracePointContext) -> u32 {
    let tid = task::current_tid();
    if let Some(compacting) = COMPACTING.get_ptr_mut(tid) {
        let compacting = unsafe { &mut *compacting };
        compacting.zone_begin_ns = unsafe { bpf_ktime_get_ns() };
        compacting.zone_start_pfn = unsafe { ctx.read_at(8) }.unwrap_or(0);
    }
    0
}

#[tracepoint(category = "compaction", name = "mm_compaction_end")]
pub fn compaction_end_tp(ctx: TracePointContext) -> u32 {
    let tid = task::current_tid();
    let Some(compacting) = COMPACTING.get_ptr_mut(tid) else {
        return 0;
    };
    let compacting = unsafe { &mut *compacting };
    let sync: u8 = unsafe { ctx.read_at(40) }.unwrap_or(0);
    emit_zone(
        tid,
        compacting,
        zone_outcome::RAN,
        unsafe { ctx.read_at(44) }.unwrap_or(-1),
        (-1, -1),
        sync.into(),
    );
    compacting.zone_begin_ns = 0;
    0
}

#[tracepoint(category = "compaction", name = "mm_compaction_deferred")]
pub fn compaction_deferred_tp(ctx: TracePointContext) -> u32 {
    judged(&ctx, zone_outcome::DEFERRED, None)
}

#[tracepoint(category = "compaction", name = "mm_compaction_defer_reset")]
pub fn compaction_defer_reset_tp(ctx: TracePointContext) -> u32 {
    judged(&ctx, zone_outcome::RESET, None)
}

#[tracepoint(category = "compaction", name = "mm_compaction_suitable")]
pub fn compaction_suitable_tp(ctx: TracePointContext) -> u32 {
    let status = unsafe { ctx.read_at(20) }.unwrap_or(-1);
    judged(&ctx, zone_outcome::JUDGED, Some(status))
}

/// A zone of the current thread's try not run (deferred, or judged by its free pages), or
/// found at its watermark.
#[inline(always)]
fn judged(ctx: &TracePointContext, outcome: u32, status: Option<i32>) -> u32 {
    let tid = task::current_tid();
    let Some(compacting) = COMPACTING.get_ptr_mut(tid) else {
        return 0;
    };
    let zone = (
        unsafe { ctx.read_at(8) }.unwrap_or(-1),
        unsafe { ctx.read_at(12) }.unwrap_or(-1),
    );
    emit_zone(
        tid,
        unsafe { &*compacting },
        outcome,
        status.unwrap_or(-1),
        zone,
        0,
    );
    0
}

#[inline(always)]
fn emit_zone(
    tid: u32,
    compacting: &Compacting,
    outcome: u32,
    status: i32,
    (nid, zone): (i32, i32),
    sync: u32,
) {
    events::emit(CompactionZone {
        record: COMPACTION_ZONE,
        outcome,
        tid,
        status,
        nid,
        zone,
        sync,
        _pad: 0,
        try_start_ns: compacting.start_ns,
        zone_start_pfn: compacting.zone_start_pfn,
        begin_ns: compacting.zone_begin_ns,
        at_ns: unsafe { bpf_ktime_get_ns() },
    });
}

// kcompactd, apart from the tries: who asks it to work, and when it works.

#[tracepoint(category = "compaction", name = "mm_compaction_wakeup_kcompactd")]
pub fn kcompactd_asked_tp(ctx: TracePointContext) -> u32 {
    emit_kcompactd(&ctx, kcompactd::ASKED, true)
}

#[tracepoint(category = "compaction", name = "mm_compaction_kcompactd_wake")]
pub fn kcompactd_woke_tp(ctx: TracePointContext) -> u32 {
    emit_kcompactd(&ctx, kcompactd::WOKE, true)
}

#[tracepoint(category = "compaction", name = "mm_compaction_kcompactd_sleep")]
pub fn kcompactd_slept_tp(ctx: TracePointContext) -> u32 {
    emit_kcompactd(&ctx, kcompactd::SLEPT, false)
}

#[inline(always)]
fn emit_kcompactd(ctx: &TracePointContext, what: u32, has_order: bool) -> u32 {
    let Some(task) = task::current() else {
        return 0;
    };
    events::emit(Kcompactd {
        record: KCOMPACTD,
        what,
        nid: unsafe { ctx.read_at(8) }.unwrap_or(-1),
        order: if has_order {
            unsafe { ctx.read_at(12) }.unwrap_or(-1)
        } else {
            -1
        },
        task,
        at_ns: unsafe { bpf_ktime_get_ns() },
    });
    0
}
