//! `tracer oom`: OOM kills and the OOM reaper's work.

use crate::task::Task;

/// What a record is; every record starts with one.
pub mod kind {
    /// `oom:mark_victim`, a [`super::Victim`].
    pub const VICTIM: u32 = crate::record::kind(crate::record::tool::OOM, 1);
    /// `oom:start_task_reaping`, a [`super::Reaping`].
    pub const REAP_START: u32 = crate::record::kind(crate::record::tool::OOM, 2);
    /// `oom:finish_task_reaping`, a [`super::Reaping`].
    pub const REAP_FINISH: u32 = crate::record::kind(crate::record::tool::OOM, 3);
    /// `oom:skip_task_reaping`, a [`super::Reaping`].
    pub const REAP_SKIP: u32 = crate::record::kind(crate::record::tool::OOM, 4);
    /// `sched:sched_process_exit` of a victim's last thread: its memory is back. A
    /// [`super::Reaping`].
    pub const EXITED: u32 = crate::record::kind(crate::record::tool::OOM, 5);
}

/// The signal whose sending tells a kill from a mark.
pub const SIGKILL: i32 = 9;

/// A task chosen by the OOM killer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Victim {
    /// [`kind::VICTIM`].
    pub kind: u32,
    pub uid: u32,
    pub time_ns: u64,
    pub victim: Task,
    /// The task whose allocation ran out of memory (current at the tracepoint).
    pub trigger: Task,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    /// Inode of the memory cgroup whose limit was hit, or 0 for a system-wide OOM.
    pub oom_memcg: u64,
    pub oom_score_adj: i16,
    /// 1 when the OOM killer sent the victim SIGKILL; 0 when it found the victim already
    /// exiting and only marked it to hurry its memory back (`oom_kill` in /proc/vmstat does
    /// not count those).
    pub killed: u8,
    pub _pad: [u8; 5],
    /// The allocation that failed, as the trigger's last reclaim before the kill began it:
    /// order (-1 when none was seen) and gfp flags.
    pub alloc_order: i32,
    /// The page allocator's retries before giving up (global OOMs): the most reclaim rounds
    /// without progress (`oom:reclaim_retry_zone`), and compaction retries (`oom:compact_retry`).
    pub no_progress_loops: u32,
    pub compact_retries: u32,
    pub _pad2: u32,
    pub alloc_gfp: u64,
    /// The OOM memcg's usage and limit at the kill, in pages (0 for a global OOM).
    pub memcg_usage_pages: u64,
    pub memcg_limit_pages: u64,
}

/// What a thread's allocation went through, for the kill it may end in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Allocating {
    pub order: i32,
    pub no_progress_loops: u32,
    pub compact_retries: u32,
    pub _pad: u32,
    pub gfp: u64,
    /// When it last reclaimed: an entry older than a second is another allocation's.
    pub at_ns: u64,
}

/// The OOM reaper at work on a victim's memory, or the victim gone.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Reaping {
    /// [`kind::REAP_START`], [`kind::REAP_FINISH`], [`kind::REAP_SKIP`] or [`kind::EXITED`].
    pub kind: u32,
    /// The victim's thread id, as `mark_victim` reported it.
    pub pid: u32,
    pub time_ns: u64,
}

/// Offsets of what `mark_victim` does not hand over, from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OomLayout {
    /// Subsystem id of the memory controller.
    pub memory_subsys: u32,
    /// `mem_cgroup.memory` + `page_counter.usage`
    pub memcg_usage: u32,
    /// `mem_cgroup.memory` + `page_counter.max`
    pub memcg_max: u32,
    /// `cgroup_subsys_state.parent` (a memcg begins with its css)
    pub css_parent: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `task_struct.signal`
    pub task_signal: u32,
    /// `signal_struct.oom_score_adj`
    pub signal_oom_score_adj: u32,
    /// `signal_struct.live`, the threads not yet exiting: 0 once the last began to (for
    /// kernels whose `sched_process_exit` does not say so, before 6.16).
    pub signal_live: u32,
    /// `mm_struct.total_vm`
    pub mm_total_vm: u32,
    /// `mm_struct.pgtables_bytes`
    pub mm_pgtables_bytes: u32,
    /// `mm_struct.rss_stat`, an array of per-type page counters...
    pub mm_rss_stat: u32,
    /// ...this many bytes apart...
    pub rss_stat_stride: u32,
    /// ...with the count this far into each.
    pub rss_stat_count: u32,
    /// Indexes into it: `MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SHMEMPAGES`.
    pub mm_filepages: u32,
    pub mm_anonpages: u32,
    pub mm_shmempages: u32,
    /// Page size in KiB.
    pub page_kb: u32,
}

/// Pages within this many of a memory cgroup's limit count as "at the limit": the charge that
/// failed was at most a huge page plus a charge batch.
pub const MEMCG_OOM_MARGIN_PAGES: u64 = 1024;

plain_old_data!(Victim, Reaping, OomLayout, Allocating);
crate::record::records!(crate::record::tool::OOM => Victim, Reaping);
