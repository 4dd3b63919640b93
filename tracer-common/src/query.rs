//! The per-query engine `tracer pg` and `tracer mysql` share: a server's threads, the query
//! each runs, what the kernel took from it (reclaim stalls, counters), and the record that
//! reports it when it ends.

use crate::task::Task;

/// Bytes of query text a record can carry; `--query-len` chooses how many are read.
pub const MAX_TEXT: usize = 2048;
/// Counters read per query.
pub const MAX_COUNTERS: usize = 4;
/// Counter slots in the perf event array: backends times counters.
pub const COUNTER_SLOTS: u32 = 4096;
/// Server processes the per-query tools can trace at once (PostgreSQL postmasters, MySQL
/// servers).
pub const MAX_SERVERS: u32 = 1024;

/// Where a query's boundaries come from; a [`QueryDone`] says which.
pub mod origin {
    /// A portal run (`query__execute__start/done` or `PortalRun()`).
    pub const PORTAL: u32 = 0;
    /// A simple-protocol query (`query__start/done`).
    pub const SIMPLE: u32 = 1;
    /// A client request on the backend's socket, from its receipt to the ReadyForQuery that
    /// answers it. The record carries the request's first bytes (protocol messages) instead of
    /// query text.
    pub const SOCKET: u32 = 2;
    /// A MySQL command, from entry to return of `dispatch_command()`.
    pub const COMMAND: u32 = 3;
}

/// Settings of the kernel side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct QueryConfig {
    /// 1: only the servers userspace names in a map (and their children: PostgreSQL's
    /// backends); 0: any process reaching the tool's probes.
    pub filter_servers: u32,
    /// Bytes of query text to read, at most [`MAX_TEXT`].
    pub text_len: u32,
    /// Counters per backend, at most [`MAX_COUNTERS`].
    pub counters: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// With `--breakdown`, where the CPU-quota throttling of a task's cgroup is counted:
    /// `task_struct.sched_task_group` and `task_group.cfs_bandwidth.throttled_time` (0: not
    /// wanted, or a kernel without CFS bandwidth control).
    pub task_sched_task_group: u32,
    pub task_group_throttled_time: u32,
    /// Where the counters are kept in `task_struct`, when all of them are software counters
    /// the kernel keeps per task anyway: each is the sum of the `u64`s at up to two offsets
    /// (0: none). All zero: the counters are perf events userspace opens per backend.
    pub task_counters: [[u32; 2]; MAX_COUNTERS],
    /// Where a backend's process title is, read once per backend into its [`NewBackend`]
    /// record: `task_struct.mm` and `mm_struct.arg_start` (0: not wanted).
    pub task_mm: u32,
    pub mm_arg_start: u32,
}

/// The values this kernel gives two of compaction's statuses, from its tracepoint formats: a
/// try whose zones were all `skipped` is no stall (the kernel counts `compact_stall` for any
/// other), and a zone judged able to compact (`continue`) runs next, whose run has the say.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CompactionStatuses {
    pub skipped: i32,
    pub proceed: i32,
}

/// A process or thread, for records that say only which.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    pub kind: u32,
    pub pid: u32,
}

/// Bytes of a backend's process title read: PostgreSQL's `postgres: USER DATABASE HOST
/// ACTIVITY` (user and database names are at most 63 bytes each).
pub const TITLE_LEN: usize = 192;

/// A backend tracer has not seen before, at its first query: userspace opens its counters,
/// and learns where it runs and whom it serves (from its process title: empty where the tool
/// does not read it, or it was unreadable).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NewBackend {
    pub kind: u32,
    pub pid: u32,
    /// Its cgroup's id in the hierarchy described by `task::CgroupLayout`.
    pub cgroup_id: u64,
    /// NUL-terminated.
    pub title: [u8; TITLE_LEN],
}

/// A finished query. Its first `text_len` bytes of text follow it in the record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QueryDone {
    pub kind: u32,
    pub text_len: u32,
    pub task: Task,
    pub start_ns: u64,
    pub latency_ns: u64,
    /// Time this backend spent in direct or memory-cgroup reclaim during the query.
    pub reclaim_ns: u64,
    pub reclaim_count: u32,
    /// Its direct compaction tries during the query that the kernel counts as stalls
    /// (`compact_stall`), and the time of all its tries (each from its start to its last
    /// zone's outcome).
    pub compaction_count: u32,
    pub compaction_ns: u64,
    pub _pad: u32,
    /// 1 when `counters` hold the query's deltas (the backend's counters were open at its
    /// start).
    pub counters_valid: u32,
    pub counters: [u64; MAX_COUNTERS],
    /// An [`origin`] constant.
    pub origin: u32,
    /// For [`origin::SOCKET`]: the bytes the request's first receive returned, of which
    /// `text_len` follow. For [`origin::COMMAND`]: the MySQL command.
    pub received: u32,
    /// For [`origin::COMMAND`]: the server's object for the client's connection (MySQL's
    /// `THD`), to which prepared statements belong.
    pub session: u64,
    /// For a MySQL `COM_STMT_PREPARE`: the id the server gave the statement (0: not seen).
    pub statement: u32,
    /// For a PostgreSQL request the text cannot hold (a pipeline): how many of its receives
    /// were sent apart, whole (`tracer_common::pg::Spilled` records). 0: the text holds it.
    pub spilled: u32,
    /// Where the query's time went (with `--breakdown`; all 0 without).
    pub breakdown: Breakdown,
}

/// Where a query's time went, from the scheduler's switches and wake-ups of its thread: on a
/// CPU, runnable but waiting for one, blocked in uninterruptible sleep (disk I/O and other
/// D-state waits), or sleeping (locks, the client); and the pages it added to the page cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Breakdown {
    pub oncpu_ns: u64,
    pub runq_ns: u64,
    pub blocked_ns: u64,
    pub sleep_ns: u64,
    pub cache_misses: u64,
    /// How long the CPU quota of the thread's cgroup (`cpu.max`) held its CPU time back while
    /// the query ran, all its CPUs together: what the cgroup's `throttled_usec` rose by. A
    /// throttled thread is runnable: this is within the run-queue wait, not beside it.
    pub throttled_ns: u64,
    pub io: BlockIo,
}

/// The block I/O a thread submitted itself (bios as `block:block_bio_queue` sees them, before
/// the block layer merges or splits them into requests).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockIo {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub bios: u64,
    /// Of `read_bytes`, those read from a swap device: memory of the thread's swapped back in.
    pub swapin_bytes: u64,
}

plain_old_data!(
    QueryConfig,
    CompactionStatuses,
    Backend,
    NewBackend,
    QueryDone
);
