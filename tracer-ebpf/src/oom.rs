//! `tracer oom`: OOM kills (`oom:mark_victim`) and the OOM reaper's work.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_task, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, tracepoint},
    maps::LruHashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    direct_reclaim::GfpField,
    oom::{Allocating, MEMCG_OOM_MARGIN_PAGES, OomLayout, Reaping, SIGKILL, Victim, kind},
    task::{Task, TaskLayout},
};

use crate::{
    events,
    kernel::{field, read, read_or_zero, read_ptr},
    task,
};

#[unsafe(no_mangle)]
static OOM_LAYOUT: Global<OomLayout> = Global::new(unsafe { core::mem::zeroed() });

/// LRU maps are always preallocated: `tracer oom` sizes these, other tools leave them at one
/// entry.
///
/// The thread each thread last sent SIGKILL to. The OOM killer sends the victim SIGKILL right
/// before marking it; a victim marked without one was already exiting and is not killed.
#[map]
static SIGKILL_SENT: LruHashMap<u32, u32> = LruHashMap::with_max_entries(1, 0);

/// Victims not gone yet: process id -> the victim thread's id (as the reaper names it).
#[map]
static VICTIMS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(1, 0);

/// Each allocating thread's last reclaim and retries, by thread id: the kill it ends in names
/// the allocation.
#[map]
static ALLOCATING: LruHashMap<u32, Allocating> = LruHashMap::with_max_entries(1, 0);

/// Where the reclaim begin records keep `gfp_flags` on this kernel.
#[unsafe(no_mangle)]
static OOM_GFP_FIELD: Global<GfpField> = Global::new(GfpField {
    offset: 16,
    size: 8,
});

/// An entry of [`ALLOCATING`] older than this is another allocation's.
const ALLOCATION_NS: u64 = 1_000_000_000;

/// Memory cgroups nested deeper than this are not searched for the one at its limit.
const MAX_MEMCG_DEPTH: usize = 16;
/// `page_counter.max` of a memory cgroup without a limit is `LONG_MAX / PAGE_SIZE`.
const UNLIMITED_PAGES: u64 = 1 << 50;

/// Memory counters as `mark_victim` records them, in KiB.
struct Memory {
    total_vm_kb: u64,
    anon_rss_kb: u64,
    file_rss_kb: u64,
    shmem_rss_kb: u64,
    pgtables_kb: u64,
    oom_score_adj: i16,
}

/// Whether the current task has just sent SIGKILL to thread `tid`; forgets it either way.
#[inline(always)]
fn sent_sigkill_to(tid: u32) -> bool {
    let sender = task::current_tid();
    let target = unsafe { SIGKILL_SENT.get(sender) }.copied();
    let _ = SIGKILL_SENT.remove(sender);
    target == Some(tid)
}

#[inline(always)]
fn sigkill_generated(sig: i32, target_tid: u32) {
    if sig == SIGKILL {
        let _ = SIGKILL_SENT.insert(task::current_tid(), target_tid, 0);
    }
}

#[inline(always)]
fn emit_victim(victim: Task, uid: u32, memory: Memory) {
    let killed = sent_sigkill_to(victim.tid);
    if victim.pid != 0 && VICTIMS.insert(victim.pid, victim.tid, 0).is_err() {
        cold_warn!("oom: no room to follow victim {} to its exit", victim.pid);
    }
    let layout = OOM_LAYOUT.load();
    let task_layout = task::layout();
    let now = unsafe { bpf_ktime_get_ns() };
    let trigger = task::current_unfiltered();
    let allocating = unsafe { ALLOCATING.get(kernel_tid()) }
        .copied()
        .filter(|allocating| now.saturating_sub(allocating.at_ns) < ALLOCATION_NS)
        .unwrap_or(Allocating {
            order: -1,
            ..Allocating::default()
        });
    let (oom_memcg, memcg_usage_pages, memcg_limit_pages) = memcg_at_limit(&layout, &task_layout);
    events::emit(Victim {
        kind: kind::VICTIM,
        uid,
        time_ns: now,
        victim,
        trigger,
        total_vm_kb: memory.total_vm_kb,
        anon_rss_kb: memory.anon_rss_kb,
        file_rss_kb: memory.file_rss_kb,
        shmem_rss_kb: memory.shmem_rss_kb,
        pgtables_kb: memory.pgtables_kb,
        oom_memcg,
        oom_score_adj: memory.oom_score_adj,
        killed: killed as u8,
        _pad: [0; 5],
        alloc_order: allocating.order,
        no_progress_loops: allocating.no_progress_loops,
        compact_retries: allocating.compact_retries,
        _pad2: 0,
        alloc_gfp: allocating.gfp,
        memcg_usage_pages,
        memcg_limit_pages,
    });
}

/// The id of the memory cgroup, from the allocating task's up to the root, whose usage has
/// reached its limit (a memcg OOM charges there and fails), with its usage and limit in pages.
/// Zeros when none has: a global OOM.
#[inline(always)]
fn memcg_at_limit(layout: &OomLayout, task_layout: &TaskLayout) -> (u64, u64, u64) {
    let current = unsafe { bpf_get_current_task() } as *const u8;
    // A `struct mem_cgroup` begins with its css, so the css pointer is the memcg pointer.
    let mut memcg = task::subsys_state(task_layout, current, layout.memory_subsys);
    if memcg.is_null() {
        return (0, 0, 0);
    }
    let mut at_limit = core::ptr::null();
    let (mut usage_pages, mut limit_pages) = (0, 0);
    for _ in 0..MAX_MEMCG_DEPTH {
        let usage: u64 = read_or_zero(memcg, layout.memcg_usage);
        let max: u64 = read_or_zero(memcg, layout.memcg_max);
        if (max.wrapping_sub(1) < UNLIMITED_PAGES - 1) & (usage + MEMCG_OOM_MARGIN_PAGES >= max) {
            at_limit = memcg;
            (usage_pages, limit_pages) = (usage, max);
            break;
        }
        memcg = read_or_zero(memcg, layout.css_parent);
        if memcg.is_null() {
            break;
        }
    }
    let id = task::cgroup_id(task_layout, read_or_zero(at_limit, task_layout.css_cgroup));
    (id, usage_pages, limit_pages)
}

// The allocation behind a kill: its reclaim and the page allocator's retries, per thread.

/// The current thread's id as the kernel numbers it: a sidecar's namespace has no number for
/// the host's threads.
#[inline(always)]
fn kernel_tid() -> u32 {
    aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32
}

/// The current thread's entry, begun anew for a new allocation.
#[inline(always)]
fn allocating(now: u64) -> Option<&'static mut Allocating> {
    let tid = kernel_tid();
    let fresh = unsafe { ALLOCATING.get(tid) }
        .is_some_and(|allocating| now.saturating_sub(allocating.at_ns) < ALLOCATION_NS);
    if !fresh {
        let _ = ALLOCATING.insert(tid, Allocating::default(), 0);
    }
    let allocating = unsafe { &mut *ALLOCATING.get_ptr_mut(tid)? };
    allocating.at_ns = now;
    Some(allocating)
}

#[inline(always)]
fn reclaim_begins(ctx: &TracePointContext) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };
    let field = OOM_GFP_FIELD.load();
    let gfp = if field.size == 4 {
        unsafe { ctx.read_at::<u32>(field.offset as usize) }.map(u64::from)
    } else {
        unsafe { ctx.read_at::<u64>(field.offset as usize) }
    };
    if let Some(allocating) = allocating(now) {
        allocating.order = unsafe { ctx.read_at(8) }.unwrap_or(-1);
        allocating.gfp = gfp.unwrap_or(0);
    }
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn oom_direct_reclaim_begin_tp(ctx: TracePointContext) -> u32 {
    reclaim_begins(&ctx)
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn oom_memcg_reclaim_begin_tp(ctx: TracePointContext) -> u32 {
    reclaim_begins(&ctx)
}

#[tracepoint(category = "oom", name = "reclaim_retry_zone")]
pub fn oom_reclaim_retry_tp(ctx: TracePointContext) -> u32 {
    let loops: i32 = unsafe { ctx.read_at(48) }.unwrap_or(0);
    if let Some(allocating) = allocating(unsafe { bpf_ktime_get_ns() }) {
        allocating.no_progress_loops = allocating.no_progress_loops.max(loops.max(0) as u32);
    }
    0
}

#[tracepoint(category = "oom", name = "compact_retry")]
pub fn oom_compact_retry_tp(ctx: TracePointContext) -> u32 {
    let retries: i32 = unsafe { ctx.read_at(20) }.unwrap_or(0);
    if let Some(allocating) = allocating(unsafe { bpf_ktime_get_ns() }) {
        allocating.compact_retries = allocating.compact_retries.max(retries.max(0) as u32);
    }
    0
}

/// Reads what the classic record carries from the task itself (zeros where unreadable).
#[inline(always)]
fn memory_of(layout: &OomLayout, victim: *const u8) -> Memory {
    let kb = |pages: i64| pages.max(0) as u64 * layout.page_kb as u64;
    let signal: *const u8 = read_or_zero(victim, layout.task_signal);
    let mm: *const u8 = read_or_zero(victim, layout.task_mm);
    let rss = |index: u32| -> u64 {
        let at = layout.mm_rss_stat + index * layout.rss_stat_stride + layout.rss_stat_count;
        kb(read_or_zero(mm, at))
    };
    Memory {
        total_vm_kb: kb(read_or_zero(mm, layout.mm_total_vm)),
        anon_rss_kb: rss(layout.mm_anonpages),
        file_rss_kb: rss(layout.mm_filepages),
        shmem_rss_kb: rss(layout.mm_shmempages),
        pgtables_kb: read_or_zero::<i64>(mm, layout.mm_pgtables_bytes).max(0) as u64 / 1024,
        oom_score_adj: read_or_zero(signal, layout.signal_oom_score_adj),
    }
}

/// Arguments: the victim's `struct task_struct *` and its uid.
#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(ctx: BtfTracePointContext) -> i32 {
    let victim_ptr: *const u8 = ctx.arg(0);
    let Some(victim) = task::of(victim_ptr) else {
        return 0;
    };
    emit_victim(
        victim,
        ctx.arg(1),
        memory_of(&OOM_LAYOUT.load(), victim_ptr),
    );
    0
}

// Classic record (Linux 6.4+): pid, comm, and the counters, in KiB.
const PID: usize = 8;
const TOTAL_VM: usize = 16;
const ANON_RSS: usize = 24;
const FILE_RSS: usize = 32;
const SHMEM_RSS: usize = 40;
const UID: usize = 48;
const PGTABLES: usize = 56;
const OOM_SCORE_ADJ: usize = 64;

/// The classic record names the victim by thread id only. Most often the victim is the task
/// that ran out of memory, the current one, and is described as such; otherwise its process
/// and comm are left for userspace to find in /proc (pid 0 says so).
#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    let tid = field::<i32>(&ctx, PID) as u32;
    // The record has the host's thread id.
    let victim = if tid == aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32 {
        match task::current() {
            Some(current) => current,
            None => return 0,
        }
    } else {
        Task {
            pid: 0,
            tid,
            cgroup_id: 0,
            comm: [0; 16],
        }
    };
    let memory = Memory {
        total_vm_kb: field(&ctx, TOTAL_VM),
        anon_rss_kb: field(&ctx, ANON_RSS),
        file_rss_kb: field(&ctx, FILE_RSS),
        shmem_rss_kb: field(&ctx, SHMEM_RSS),
        pgtables_kb: field(&ctx, PGTABLES),
        oom_score_adj: field(&ctx, OOM_SCORE_ADJ),
    };
    emit_victim(victim, field(&ctx, UID), memory);
    0
}

/// Arguments: sig, info, the target `struct task_struct *`, group, result.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate(ctx: BtfTracePointContext) -> i32 {
    let sig: i32 = ctx.arg(0);
    if sig == SIGKILL {
        let target: *const u8 = ctx.arg(2);
        sigkill_generated(sig, task::ids_of(target).map_or(0, |(_, tid)| tid));
    }
    0
}

const SIG: usize = 8;
const TARGET_PID: usize = 36;

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn signal_generate_tp(ctx: TracePointContext) -> u32 {
    let sig: i32 = unsafe { ctx.read_at(SIG) }.unwrap_or(0);
    if sig == SIGKILL {
        sigkill_generated(
            sig,
            unsafe { ctx.read_at::<i32>(TARGET_PID) }.unwrap_or(0) as u32,
        );
    }
    0
}

#[inline(always)]
fn reaping(kind: u32, pid: i32) {
    events::emit(Reaping {
        kind,
        pid: pid as u32,
        time_ns: unsafe { bpf_ktime_get_ns() },
    });
}

/// The exit of a victim's last thread, which gives its memory back.
#[inline(always)]
fn exited(group_dead: bool) {
    if !group_dead {
        return;
    }
    let Some((pid, _)) = task::current_pid_tid() else {
        return;
    };
    if let Some(&tid) = unsafe { VICTIMS.get(pid) } {
        let _ = VICTIMS.remove(pid);
        reaping(kind::EXITED, tid as i32);
    }
}

/// Arguments: the exiting task (current) and whether its thread group is now dead.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    exited(ctx.arg::<u8>(1) != 0);
    0
}

const GROUP_DEAD: usize = 32;

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit_tp(ctx: TracePointContext) -> u32 {
    exited(unsafe { ctx.read_at::<u8>(GROUP_DEAD) }.unwrap_or(0) != 0);
    0
}

/// Before Linux 6.16 `sched_process_exit` has only the task: its thread group is dead once no
/// thread is live (each decrements `signal->live` before this tracepoint).
#[inline(always)]
fn group_dead_now() -> bool {
    let layout = OOM_LAYOUT.load();
    let current = unsafe { bpf_get_current_task() } as *const u8;
    read_ptr(current, layout.task_signal)
        .and_then(|signal| read::<i32>(signal, layout.signal_live))
        .is_some_and(|live| live == 0)
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_live(_ctx: BtfTracePointContext) -> i32 {
    exited(group_dead_now());
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit_live_tp(_ctx: TracePointContext) -> u32 {
    exited(group_dead_now());
    0
}

#[btf_tracepoint(function = "start_task_reaping")]
pub fn start_task_reaping(ctx: BtfTracePointContext) -> i32 {
    reaping(kind::REAP_START, ctx.arg(0));
    0
}

#[btf_tracepoint(function = "finish_task_reaping")]
pub fn finish_task_reaping(ctx: BtfTracePointContext) -> i32 {
    reaping(kind::REAP_FINISH, ctx.arg(0));
    0
}

#[btf_tracepoint(function = "skip_task_reaping")]
pub fn skip_task_reaping(ctx: BtfTracePointContext) -> i32 {
    reaping(kind::REAP_SKIP, ctx.arg(0));
    0
}

#[tracepoint(category = "oom", name = "start_task_reaping")]
pub fn start_task_reaping_tp(ctx: TracePointContext) -> u32 {
    reaping(kind::REAP_START, unsafe { ctx.read_at(PID) }.unwrap_or(0));
    0
}

#[tracepoint(category = "oom", name = "finish_task_reaping")]
pub fn finish_task_reaping_tp(ctx: TracePointContext) -> u32 {
    reaping(kind::REAP_FINISH, unsafe { ctx.read_at(PID) }.unwrap_or(0));
    0
}

#[tracepoint(category = "oom", name = "skip_task_reaping")]
pub fn skip_task_reaping_tp(ctx: TracePointContext) -> u32 {
    reaping(kind::REAP_SKIP, unsafe { ctx.read_at(PID) }.unwrap_or(0));
    0
}
