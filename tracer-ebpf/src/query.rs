//! The per-query engine `tracer pg` and `tracer mysql` share, kernel side. Per server thread:
//! whether the filters keep it, the query it runs, and what the kernel takes from that query
//! (reclaim and compaction stalls, counters); and the record that reports a query when it
//! ends. Each database's module finds where queries begin and end (probes, sockets) and calls
//! in here.

use aya_ebpf::{
    EbpfContext, Global,
    bindings::bpf_perf_event_value,
    helpers::{
        bpf_get_current_task, bpf_ktime_get_ns, bpf_perf_event_read_value,
        bpf_probe_read_user_str_bytes,
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, PerfEventArray},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    query::{
        Backend, BlockIo, CompactionStatuses, MAX_COUNTERS, MAX_SERVERS, MAX_TEXT, NewBackend,
        QueryConfig, QueryDone,
    },
    task::Task,
};

use crate::{
    events,
    kernel::{field, read, read_or_zero, read_ptr},
    task,
};

/// A database tool, as the engine needs to know it.
pub trait Database {
    /// Its `tracer_common::record::tool`.
    const TOOL: u32;
    /// The kinds of its query records, new-backend records and records of a process that
    /// exec'd its server's binary.
    const QUERY: u32;
    const BACKEND: u32;
    const EXEC: u32;
    /// The kind of the record of the exit of one of its threads.
    const EXITED: u32;
    /// Its settings: its own read-only global, read a field at a time through [`setting!`].
    fn config() -> *const QueryConfig;
}

/// A field of a tool's settings, read alone: `Global::load()` would copy all of them (112
/// bytes) onto the 512-byte stack at each use, too much for 5.10's verifier in the socket
/// programs. `setting!(D, text_len)`.
macro_rules! setting {
    ($tool:ty, $($field:tt)+) => {
        unsafe {
            core::ptr::read_volatile(
                &raw const (*<$tool as $crate::query::Database>::config()).$($field)+,
            )
        }
    };
}

/// Bytes of query text to read.
#[inline(always)]
pub fn text_limit<D: Database>() -> usize {
    (setting!(D, text_len) as usize).min(MAX_TEXT)
}

/// Per server thread: the tool that traces it (if any), its counters, and the query it runs. An
/// LRU map is always preallocated: the per-query tools size it, other tools leave it at one
/// entry.
#[map]
static QUERY_THREADS: LruHashMap<u32, Thread> = LruHashMap::with_max_entries(1, 0);

/// Server processes (pids in tracer's namespace), each with the tool that traces it and its
/// children. Userspace fills it before anything is attached and adds servers started later.
#[map]
static QUERY_SERVERS: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_SERVERS, events::NO_PREALLOC);

/// The first slot of each thread's counters in `QUERY_COUNTERS`, kept by userspace.
#[map]
static QUERY_COUNTER_SLOTS: HashMap<u32, u32> =
    HashMap::with_max_entries(1024, events::NO_PREALLOC);

/// Per-task perf counters that userspace opens for each server thread.
#[map]
static QUERY_COUNTERS: PerfEventArray<u32> = PerfEventArray::new(0);

/// A finished query's record: the header, then as much text as was read.
#[repr(C)]
pub struct Record {
    pub done: QueryDone,
    pub text: [u8; MAX_TEXT],
}

/// Where records are assembled: too big for the stack.
#[map]
static QUERY_SCRATCH: PerCpuArray<Record> = PerCpuArray::with_max_entries(1, 0);

/// Per thread: the record of the query it runs, for queries whose text must be read at their
/// start (a buffer the server reuses before the end: PostgreSQL's receive buffer, MySQL's
/// network buffer, which the reply overwrites). Kept from one query to the next; sized by the
/// tools that use it.
#[map]
static QUERY_REQUESTS: LruHashMap<u32, Record> = LruHashMap::with_max_entries(1, 0);

#[derive(Clone, Copy)]
pub struct Thread {
    /// The tool tracing it (`tracer_common::record::tool`), 0 for none, as decided when the
    /// thread first showed up.
    tool: u8,
    /// Whether its tool heard of it (a [`NewBackend`] record, at its first query).
    announced: bool,
    /// Whether a query runs, and its `origin`.
    pub active: bool,
    pub origin: u8,
    /// Portal runs nested inside a PostgreSQL query.
    pub depth: u8,
    /// How the thread's connection can be read: a [`link`].
    pub link: u8,
    /// Where a database module reading requests off the socket is in one (MySQL: its header
    /// read, its payload not yet), and what it is, for the sends that answer it.
    pub step: u8,
    pub command: u8,
    /// First slot of the thread's counters, once userspace opened them.
    counter_slot: u32,
    start_ns: u64,
    /// What the database module keeps to read at the query's end: PostgreSQL's load bias,
    /// MySQL's packet.
    pub detail: u64,
    /// For an answer whose end shows only at the next request: when its last part was sent
    /// (0: none yet), and where the query's time had gone by then.
    answered_ns: u64,
    sched_at_answer: [u64; 4],
    reclaim_count: u32,
    reclaim_begin_ns: u64,
    reclaim_ns: u64,
    /// Its direct compaction: the try open now (its start, 0: none; its last zone's outcome;
    /// whether the kernel counts it as a stall), and the tries done in the query.
    compaction_start_ns: u64,
    compaction_last_ns: u64,
    compaction_stalled: bool,
    compaction_count: u32,
    compaction_ns: u64,
    counters_valid: u32,
    counters: [u64; MAX_COUNTERS],
    /// Where the query's time went so far, by [`sched`] state, what the thread does now and
    /// since when; the pages it added to the page cache; the block I/O it submitted.
    sched_ns: [u64; 4],
    sched_state: u8,
    sched_since_ns: u64,
    /// When it was last woken: the end of its sleep, if after the sleep began.
    woken_ns: u64,
    cache_misses: u64,
    io: BlockIo,
    /// The thread's cgroup's throttled time at the query's start.
    throttled_at_start: u64,
}

const NO_SLOT: u32 = u32::MAX;

/// What a thread in a query is doing, as the scheduler's tracepoints tell; each is the index
/// of its time in `Thread::sched_ns`.
mod sched {
    pub const RUNNING: u8 = 0;
    /// Preempted or woken, waiting for a CPU.
    pub const RUNNABLE: u8 = 1;
    /// In uninterruptible sleep (D).
    pub const BLOCKED: u8 = 2;
    /// In any other sleep (S, stopped, ...).
    pub const SLEEPING: u8 = 3;
}

/// How a server thread's requests can be read; userspace hears when one is not plain.
pub mod link {
    /// Off its socket.
    pub const PLAIN: u8 = 0;
    /// Encrypted (TLS): by probes in the server.
    pub const ENCRYPTED: u8 = 1;
    /// Encrypted, and OpenSSL's probes hand over its plaintext ([`crate::tls`]).
    pub const TLS: u8 = 2;
    /// By probes in the server alone: MySQL's compressed protocol, GSSAPI encryption.
    pub const OPAQUE: u8 = 3;
}

/// The thread's state, created when it first shows up with the tool that traces it.
#[inline(always)]
fn thread<D: Database>(tid: u32) -> Option<&'static mut Thread> {
    if let Some(thread) = QUERY_THREADS.get_ptr_mut(tid) {
        return Some(unsafe { &mut *thread });
    }
    // From a template in read-only data: a `Thread` built on the stack would take a third of
    // 5.10's 512 bytes.
    let template: &Thread = &NEW_THREAD;
    if QUERY_THREADS.insert(tid, template, 0).is_err() {
        cold_warn!("per-query tools: no room for thread {}", tid);
        return None;
    }
    let thread = unsafe { &mut *QUERY_THREADS.get_ptr_mut(tid)? };
    thread.tool = owner::<D>() as u8;
    Some(thread)
}

static NEW_THREAD: Thread = Thread {
    tool: 0,
    announced: false,
    active: false,
    origin: 0,
    depth: 0,
    link: link::PLAIN,
    step: 0,
    command: 0,
    counter_slot: NO_SLOT,
    start_ns: 0,
    detail: 0,
    answered_ns: 0,
    sched_at_answer: [0; 4],
    reclaim_count: 0,
    reclaim_begin_ns: 0,
    reclaim_ns: 0,
    compaction_start_ns: 0,
    compaction_last_ns: 0,
    compaction_stalled: false,
    compaction_count: 0,
    compaction_ns: 0,
    counters_valid: 0,
    counters: [0; MAX_COUNTERS],
    sched_ns: [0; 4],
    sched_state: sched::RUNNING,
    sched_since_ns: 0,
    woken_ns: 0,
    cache_misses: 0,
    io: BlockIo {
        read_bytes: 0,
        write_bytes: 0,
        bios: 0,
        swapin_bytes: 0,
    },
    throttled_at_start: 0,
};

/// The tool that traces the current task: the one whose server it is or whose server is its
/// parent (a PostgreSQL backend); for a tool without servers named, that tool, as only its
/// probes in the processes it chose bring a thread here.
#[inline(always)]
fn owner<D: Database>() -> u32 {
    if task::current().is_none() {
        return 0;
    }
    if setting!(D, filter_servers) == 0 {
        return D::TOOL;
    }
    let Some((pid, _)) = task::current_pid_tid() else {
        return 0;
    };
    server_tool(pid, parent_pid::<D>())
}

/// The tool tracing server `pid`, or `parent`'s; 0 for none.
#[inline(always)]
fn server_tool(pid: u32, parent: u32) -> u32 {
    match unsafe { QUERY_SERVERS.get(pid) } {
        Some(&tool) => tool,
        None => unsafe { QUERY_SERVERS.get(parent) }.copied().unwrap_or(0),
    }
}

/// Whether the filters keep the calling process, for probes outside queries (a server's
/// listener); no state is kept.
#[inline(always)]
pub fn traced_process<D: Database>() -> bool {
    owner::<D>() == D::TOOL
}

/// Whether process `pid` or `parent` is one of `D`'s servers (with none named, any is).
#[inline(always)]
pub fn named_server<D: Database>(pid: u32, parent: u32) -> bool {
    setting!(D, filter_servers) == 0 || server_tool(pid, parent) == D::TOOL
}

/// The calling thread if `D` traces it, or `None` for any other. A thread first seen by another
/// tool is claimed by a tool without servers named (its probes fire only in processes it
/// chose).
#[inline(always)]
pub fn traced_thread<D: Database>(tid: u32) -> Option<&'static mut Thread> {
    let thread = thread::<D>(tid)?;
    if thread.tool == 0 && setting!(D, filter_servers) == 0 {
        thread.tool = owner::<D>() as u8;
    }
    if thread.tool != D::TOOL as u8 {
        return None;
    }
    Some(thread)
}

/// Tells userspace of a thread that runs its first query, with its process title where `D`
/// wants it: read in the thread itself, for a backend that exits before userspace could look in
/// `/proc`, and at its first query, when PostgreSQL's backend has named its user and database
/// there (at its first receive, the startup packet, the title is still the postmaster's).
#[inline(always)]
fn announce<D: Database>(tid: u32) {
    let Some(mut entry) = events::reserve_as::<NewBackend>(D::TOOL) else {
        return;
    };
    let (task_mm, arg_start_offset) = (setting!(D, task_mm), setting!(D, mm_arg_start));
    let record = entry.as_mut_ptr();
    // Every field is written before the record is submitted.
    let cgroup_id = task::current_cgroup_id();
    let title = unsafe {
        (*record).kind = D::BACKEND;
        (*record).pid = tid;
        (*record).cgroup_id = cgroup_id;
        (*record).title[0] = 0;
        &mut (*record).title
    };
    if task_mm != 0 {
        let current = unsafe { bpf_get_current_task() } as *const u8;
        if let Some(mm) = read_ptr(current, task_mm)
            && let Some(arg_start) = read::<u64>(mm, arg_start_offset)
        {
            // It zeroes the title when the read fails.
            let _ = unsafe { bpf_probe_read_user_str_bytes(arg_start as *const u8, title) };
        }
    }
    entry.submit(0);
}

/// A thread exits (`sched_process_exit`): what was kept of it goes, for its id to start afresh
/// when it comes back as another thread, and userspace forgets what it knew of one of `D`'s.
#[inline(always)]
pub fn thread_exit<D: Database>() {
    let tid = task::current_tid();
    let Some(thread) = (unsafe { QUERY_THREADS.get(tid) }) else {
        return;
    };
    let tool = thread.tool;
    // Threads of no tool's go with any tool's program; another tool's, with its own.
    if tool != 0 && tool != D::TOOL as u8 {
        return;
    }
    let _ = QUERY_THREADS.remove(tid);
    if tool != 0 {
        let kind = D::EXITED;
        events::emit_as(D::TOOL, Backend { kind, pid: tid });
    }
}

/// A process execs a new program: whatever was decided about its threads goes (it may be a
/// server starting, which userspace then adds).
#[inline(always)]
pub fn forget_thread(tid: u32) {
    let _ = QUERY_THREADS.remove(tid);
}

/// A process exec'd a program (`sched_process_exec`): its threads start afresh, and one whose
/// name `is_server` takes may be a server started after tracer, for userspace to trace.
#[inline(always)]
pub fn exec<D: Database>(is_server: impl Fn(&[u8; 16]) -> bool) {
    let Some((pid, tid)) = task::current_pid_tid() else {
        return;
    };
    forget_thread(tid);
    if aya_ebpf::helpers::bpf_get_current_comm().is_ok_and(|comm| is_server(&comm)) {
        let kind = D::EXEC;
        events::emit_now(D::TOOL, Backend { kind, pid });
    }
}

/// A query begins on the thread.
#[inline(always)]
pub fn start<D: Database>(tid: u32, thread: &mut Thread, origin: u32) {
    if !thread.announced {
        thread.announced = true;
        announce::<D>(tid);
    }
    thread.active = true;
    thread.origin = origin as u8;
    thread.depth = 0;
    thread.reclaim_begin_ns = 0;
    thread.reclaim_ns = 0;
    thread.reclaim_count = 0;
    thread.compaction_start_ns = 0;
    thread.compaction_ns = 0;
    thread.compaction_count = 0;
    let per_thread_events = setting!(D, task_counters[0][0]) == 0;
    if per_thread_events
        && thread.counter_slot == NO_SLOT
        && let Some(&slot) = unsafe { QUERY_COUNTER_SLOTS.get(tid) }
    {
        thread.counter_slot = slot;
    }
    thread.counters_valid = read_counters::<D>(thread.counter_slot, &mut thread.counters) as u32;
    thread.sched_ns = [0; 4];
    thread.answered_ns = 0;
    thread.cache_misses = 0;
    thread.io = BlockIo::default();
    thread.throttled_at_start = throttled_time::<D>();
    thread.sched_state = sched::RUNNING;
    thread.start_ns = unsafe { bpf_ktime_get_ns() };
    thread.sched_since_ns = thread.start_ns;
}

#[inline(always)]
fn parent_pid<D: Database>() -> u32 {
    let current = unsafe { bpf_get_current_task() } as *const u8;
    read_ptr(current, setting!(D, task_real_parent))
        .and_then(task::ids_of)
        .map_or(0, |(pid, _)| pid)
}

/// Reads the counters into `values`: from the current task where the kernel keeps them, else
/// from the thread's perf events from slot `first` on. False when there are none.
#[inline(always)]
fn read_counters<D: Database>(first: u32, values: &mut [u64; MAX_COUNTERS]) -> bool {
    if setting!(D, task_counters[0][0]) != 0 {
        return read_task_counters::<D>(values);
    }
    if first == NO_SLOT {
        return false;
    }
    let count = setting!(D, counters) as usize;
    let map = &QUERY_COUNTERS as *const PerfEventArray<u32> as *mut core::ffi::c_void;
    for (i, value) in values.iter_mut().enumerate() {
        if i >= count {
            break;
        }
        let mut read: bpf_perf_event_value = unsafe { core::mem::zeroed() };
        let size = size_of::<bpf_perf_event_value>() as u32;
        let index = (first + i as u32) as u64;
        if unsafe { bpf_perf_event_read_value(map, index, &mut read, size) } != 0 {
            return false;
        }
        *value = read.counter;
    }
    true
}

/// Per-task counts the kernel keeps in `task_struct` (faults, context switches, migrations):
/// reading them costs nothing between queries, where a perf event is switched with the task.
#[inline(always)]
fn read_task_counters<D: Database>(values: &mut [u64; MAX_COUNTERS]) -> bool {
    let current = unsafe { bpf_get_current_task() } as *const u8;
    for (i, value) in values.iter_mut().enumerate() {
        let (first, second) = (
            setting!(D, task_counters[i][0]),
            setting!(D, task_counters[i][1]),
        );
        // Each read is a helper call: two neighbours are read at once.
        let sum = match (first, second) {
            (0, _) => Some(0),
            (_, 0) => read::<u64>(current, first),
            _ if second == first + 8 => read::<[u64; 2]>(current, first).map(|[a, b]| a + b),
            _ => read::<u64>(current, first)
                .zip(read::<u64>(current, second))
                .map(|(a, b)| a + b),
        };
        let Some(sum) = sum else {
            return false;
        };
        *value = sum;
    }
    true
}

/// The per-CPU record being assembled.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Record> {
    Some(unsafe { &mut *QUERY_SCRATCH.get_ptr_mut(0)? })
}

/// The thread's request record, made at its first request.
#[inline(always)]
pub fn request(tid: u32) -> Option<&'static mut Record> {
    if let Some(request) = request_of(tid) {
        return Some(request);
    }
    // Too big for the stack: a new one is copied from scratch.
    let scratch = scratch()?;
    QUERY_REQUESTS.insert(tid, scratch, 0).ok()?;
    request_of(tid)
}

/// The thread's request record, if it has one (an LRU map may have evicted it).
#[inline(always)]
pub fn request_of(tid: u32) -> Option<&'static mut Record> {
    Some(unsafe { &mut *QUERY_REQUESTS.get_ptr_mut(tid)? })
}

/// The thread's request record at its query's end; if more threads ran queries at once than
/// the map holds and it was evicted, the query ends unreported and is counted lost.
#[inline(always)]
pub fn request_at_end<D: Database>(tid: u32, thread: &mut Thread) -> Option<&'static mut Record> {
    let request = request_of(tid);
    if request.is_none() {
        cold_warn!(
            "per-query tools: the request of thread {} was evicted before its end",
            tid
        );
        thread.active = false;
        events::count_lost(D::TOOL);
    }
    request
}

/// A query ends: sends its record with its text, read as a C string at `text` (0: none).
#[inline(always)]
pub fn done<D: Database>(tid: u32, thread: &mut Thread, text: u64) {
    let Some(scratch) = scratch() else {
        thread.active = false;
        return;
    };
    finish::<D>(tid, thread, &mut scratch.done);
    let limit = text_limit::<D>();
    let len = if text == 0 {
        0
    } else {
        unsafe { bpf_probe_read_user_str_bytes(text as *const u8, &mut scratch.text[..limit]) }
            .map_or(0, |bytes| bytes.len())
    };
    scratch.done.text_len = len as u32;
    scratch.done.received = 0;
    scratch.done.session = 0;
    scratch.done.statement = 0;
    send::<D>(scratch);
}

/// Sends a record with the `done.text_len` bytes of text after its header.
#[inline(always)]
pub fn send<D: Database>(record: &Record) {
    let size = (size_of::<QueryDone>() + record.done.text_len as usize).min(size_of::<Record>());
    let bytes = unsafe { core::slice::from_raw_parts(record as *const Record as *const u8, size) };
    events::emit_bytes_quietly(D::TOOL, bytes);
}

/// Ends the thread's query and fills in `record`, all but the text.
#[inline(always)]
pub fn finish<D: Database>(tid: u32, thread: &mut Thread, record: &mut QueryDone) {
    finish_at::<D>(tid, thread, record, unsafe { bpf_ktime_get_ns() });
}

/// The thread sent part of its answer, which may be the last: if so, the query ended now, and
/// what the thread does until its next request shows the end (waiting for a CPU, for the
/// client) is not the query's.
#[inline(always)]
pub fn answered(thread: &mut Thread) {
    let now = unsafe { bpf_ktime_get_ns() };
    on_cpu(thread);
    enter(thread, sched::RUNNING, now);
    thread.answered_ns = now;
    thread.sched_at_answer = thread.sched_ns;
}

/// A query whose end shows only now: it ended with its last [`answered`] part (now, if none).
#[inline(always)]
pub fn finish_answered<D: Database>(tid: u32, thread: &mut Thread, record: &mut QueryDone) {
    // One inlined finish: two would not fit 5.10's stack.
    let end_ns = match thread.answered_ns {
        0 => unsafe { bpf_ktime_get_ns() },
        answered_ns => answered_ns,
    };
    finish_at::<D>(tid, thread, record, end_ns);
}

/// The same, for a query that ended at `end_ns`, seen only now.
#[inline(always)]
fn finish_at<D: Database>(tid: u32, thread: &mut Thread, record: &mut QueryDone, end_ns: u64) {
    thread.active = false;
    let mut end = [0u64; MAX_COUNTERS];
    let counters_valid =
        thread.counters_valid != 0 && read_counters::<D>(thread.counter_slot, &mut end);
    record.kind = D::QUERY;
    record.task = Task {
        pid: task::current_pid_tid().map_or(0, |(pid, _)| pid),
        tid,
        cgroup_id: 0,
        comm: [0; 16],
    };
    record.start_ns = thread.start_ns;
    record.latency_ns = end_ns.saturating_sub(thread.start_ns);
    record.reclaim_ns = thread.reclaim_ns;
    record.reclaim_count = thread.reclaim_count;
    close_compaction(thread);
    record.compaction_ns = thread.compaction_ns;
    record.compaction_count = thread.compaction_count;
    record.counters_valid = counters_valid as u32;
    for ((delta, end), start) in record.counters.iter_mut().zip(end).zip(thread.counters) {
        *delta = if counters_valid {
            end.wrapping_sub(start)
        } else {
            0
        };
    }
    record.origin = thread.origin as u32;
    // It ends on a CPU, in the thread's own context: now, or at its last answer.
    if thread.answered_ns != end_ns {
        on_cpu(thread);
        enter(thread, sched::RUNNING, end_ns);
        thread.sched_at_answer = thread.sched_ns;
    }
    // Field by field: a whole `Breakdown` built first would take 80 bytes of 5.10's stack.
    let (parts, breakdown) = (&thread.sched_at_answer, &mut record.breakdown);
    breakdown.oncpu_ns = parts[sched::RUNNING as usize];
    breakdown.runq_ns = parts[sched::RUNNABLE as usize];
    breakdown.blocked_ns = parts[sched::BLOCKED as usize];
    breakdown.sleep_ns = parts[sched::SLEEPING as usize];
    breakdown.cache_misses = thread.cache_misses;
    breakdown.throttled_ns = throttled_time::<D>().saturating_sub(thread.throttled_at_start);
    breakdown.io = thread.io;
}

/// The time the CPU quota of the current task's cgroup has throttled it, in all (0 without
/// `--breakdown`).
#[inline(always)]
fn throttled_time<D: Database>() -> u64 {
    let throttled_time = setting!(D, task_group_throttled_time);
    if throttled_time == 0 {
        return 0;
    }
    let current = unsafe { bpf_get_current_task() } as *const u8;
    let group: *const u8 = read_or_zero(current, setting!(D, task_sched_task_group));
    read_or_zero(group, throttled_time)
}

/// The thread `tid`'s state, if it runs a query.
#[inline(always)]
fn in_query(tid: u32) -> Option<&'static mut Thread> {
    let thread = unsafe { &mut *QUERY_THREADS.get_ptr_mut(tid)? };
    thread.active.then_some(thread)
}

/// The time `thread` spent in its state until `now`, added to its part; then it is in `state`.
#[inline(always)]
fn enter(thread: &mut Thread, state: u8, now: u64) {
    let spent = now.saturating_sub(thread.sched_since_ns);
    // Masked, so that the verifier sees the index in bounds; read as volatile, so that the
    // compiler, knowing the state on some path, keeps the mask there too.
    let state_now = unsafe { core::ptr::read_volatile(&thread.sched_state) } & 3;
    thread.sched_ns[state_now as usize] += spent;
    thread.sched_state = state;
    thread.sched_since_ns = now;
}

/// `thread` is on a CPU (in its own context, or leaving one). If its state says otherwise, the
/// switch that brought it on went unseen (here about once in thirty half-second busy
/// commands): it ran since its wakeup, if one came in that state, else since the state began.
/// Its wait for the CPU in between, unknown, is counted as running.
#[inline(always)]
fn on_cpu(thread: &mut Thread) {
    let (state, since, woken_ns) = (thread.sched_state, thread.sched_since_ns, thread.woken_ns);
    if state == sched::RUNNING {
        return;
    }
    if matches!(state, sched::BLOCKED | sched::SLEEPING) && woken_ns > since {
        enter(thread, sched::RUNNING, woken_ns);
    } else {
        thread.sched_state = sched::RUNNING;
    }
}

/// A CPU switched from thread `prev` (leaving in `prev_state`, or preempted) to `next`: the
/// two lookups every other thread on the machine pays.
#[inline(always)]
fn switched(prev: u32, preempted: bool, prev_state: u64, next: u32) {
    let (prev_tid, next_tid) = (prev, next);
    let (prev, next) = (in_query(prev), in_query(next));
    if prev.is_none() && next.is_none() {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(thread) = prev {
        if thread.sched_state != sched::RUNNING {
            cold_warn!(
                "per-query tools: thread {} left a CPU counted in state {} for {} ns: its switch-in went unseen",
                prev_tid,
                thread.sched_state,
                now.saturating_sub(thread.sched_since_ns)
            );
        }
        on_cpu(thread);
        let state = if preempted || prev_state & 0xff == 0 {
            sched::RUNNABLE
        } else if prev_state & TASK_UNINTERRUPTIBLE != 0 {
            sched::BLOCKED
        } else {
            sched::SLEEPING
        };
        enter(thread, state, now);
    }
    if let Some(thread) = next {
        if thread.sched_state == sched::RUNNING {
            cold_warn!(
                "per-query tools: thread {} came on a CPU counted as running for {} ns: its switch-out went unseen",
                next_tid,
                now.saturating_sub(thread.sched_since_ns)
            );
        }
        // A sleep ends at its wakeup, if one was seen since: then the wait for a CPU.
        let woken_ns = thread.woken_ns;
        if matches!(thread.sched_state, sched::BLOCKED | sched::SLEEPING)
            && woken_ns > thread.sched_since_ns
            && woken_ns <= now
        {
            enter(thread, sched::RUNNABLE, woken_ns);
        }
        enter(thread, sched::RUNNING, now);
    }
}

/// `TASK_UNINTERRUPTIBLE`, in `task_struct.__state` and in the classic record's `prev_state`.
const TASK_UNINTERRUPTIBLE: u64 = 2;

/// A sleeping thread was woken: from now it waits for a CPU. Only the time is kept, for its
/// switch-in to split the sleep from the wait: the wakeup may run on another CPU, and a state
/// written here could land after that switch-in, leaving a running thread counted as waiting.
#[inline(always)]
fn woken(tid: u32) {
    if let Some(thread) = in_query(tid) {
        thread.woken_ns = unsafe { bpf_ktime_get_ns() };
    }
}

/// The thread id, as tracer numbers it, of a task at a BTF tracepoint (0 outside tracer's pid
/// namespace, a key no thread has).
#[inline(always)]
fn tid_of(task: *const u8) -> u32 {
    task::ids_of(task).map_or(0, |(_, tid)| tid)
}

/// Since Linux 5.18 the tracepoint passes `prev_state`; older kernels take the classic one.
#[btf_tracepoint(function = "sched_switch")]
pub fn query_sched_switch(ctx: BtfTracePointContext) -> i32 {
    let preempted: u8 = ctx.arg(0);
    let (prev, next): (*const u8, *const u8) = (ctx.arg(1), ctx.arg(2));
    let prev_state: u32 = ctx.arg(3);
    switched(
        tid_of(prev),
        preempted != 0,
        prev_state.into(),
        tid_of(next),
    );
    0
}

/// `sched:sched_switch`'s record: `prev_state` (a `long`: 0 for runnable, the preempted
/// included, `TASK_REPORT_MAX` = 0x100 when preempted) and `next_pid` (the host's numbering:
/// only where tracer runs in the host's pid namespace, which the plan checks).
const SWITCH_PREV_STATE: usize = 32;
const SWITCH_NEXT_PID: usize = 56;
const WAKEUP_PID: usize = 24;

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn query_sched_switch_tp(ctx: TracePointContext) -> u32 {
    let prev_state: i64 = field(&ctx, SWITCH_PREV_STATE);
    let next: i32 = field(&ctx, SWITCH_NEXT_PID);
    // The record runs in the context of the task leaving.
    switched(task::current_tid(), false, prev_state as u64, next as u32);
    0
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn query_sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    woken(tid_of(ctx.arg(0)));
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup")]
pub fn query_sched_wakeup_tp(ctx: TracePointContext) -> u32 {
    woken(field::<i32>(&ctx, WAKEUP_PID) as u32);
    0
}

/// Where `filemap:mm_filemap_add_to_page_cache`'s record keeps `order` (a folio of 2^order
/// pages joined the page cache); 0 on kernels whose record has none (a page each).
#[unsafe(no_mangle)]
static QUERY_PAGE_CACHE_ORDER: Global<u32> = Global::new(0);

/// A folio joined the page cache, read in by the task in whose context this fires.
#[tracepoint(category = "filemap", name = "mm_filemap_add_to_page_cache")]
pub fn query_page_cache_add_tp(ctx: TracePointContext) -> u32 {
    if let Some(thread) = in_query(task::current_tid()) {
        let order: u8 = match QUERY_PAGE_CACHE_ORDER.load() {
            0 => 0,
            offset => read_or_zero(ctx.as_ptr() as *const u8, offset),
        };
        thread.cache_misses += 1 << (order & 31);
    }
    0
}

/// Block devices holding swap areas (`dev_t` as the kernel numbers them), named by userspace:
/// a read there is a swap-in.
#[map]
static QUERY_SWAP_DEVICES: HashMap<u32, u8> = HashMap::with_max_entries(32, 0);

/// `block:block_bio_queue`'s record: the device, the bio's sectors, and its flags as text
/// (`rwbs`: "R", "W", "FWS", ...; an `F` first is a flush before the data).
const BIO_DEV: usize = 8;
const BIO_SECTORS: usize = 24;
const BIO_RWBS: usize = 28;

/// A bio was submitted in the current task's context: what a backend reads itself (its reads,
/// their readahead, swap-ins of its memory) or writes itself (an fsync's writeback), as
/// `/proc/PID/io`'s `read_bytes` counts it. The kernel's own writeback is not the query's.
#[tracepoint(category = "block", name = "block_bio_queue")]
pub fn query_block_io_tp(ctx: TracePointContext) -> u32 {
    if let Some(thread) = in_query(task::current_tid()) {
        let rwbs: [u8; 2] = field(&ctx, BIO_RWBS);
        let op = if rwbs[0] == b'F' { rwbs[1] } else { rwbs[0] };
        let bytes = u64::from(field::<u32>(&ctx, BIO_SECTORS)) << 9;
        if op == b'R' {
            thread.io.read_bytes += bytes;
            let dev: u32 = field(&ctx, BIO_DEV);
            if unsafe { QUERY_SWAP_DEVICES.get(dev) }.is_some() {
                thread.io.swapin_bytes += bytes;
            }
        } else if op == b'W' {
            thread.io.write_bytes += bytes;
        } else {
            return 0;
        }
        thread.io.bios += 1;
    }
    0
}

/// A reclaim stall of the current thread begins: note it on its query, if it runs one. A
/// compaction try before it is over.
#[inline(always)]
fn reclaim_begin() {
    if let Some(thread) = in_query(task::current_tid()) {
        close_compaction(thread);
        thread.reclaim_begin_ns = unsafe { bpf_ktime_get_ns() };
    }
}

#[inline(always)]
fn reclaim_end() {
    if let Some(thread) = in_query(task::current_tid())
        && thread.reclaim_begin_ns != 0
    {
        thread.reclaim_ns += unsafe { bpf_ktime_get_ns() } - thread.reclaim_begin_ns;
        thread.reclaim_count += 1;
        thread.reclaim_begin_ns = 0;
    }
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn query_direct_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    reclaim_begin();
    0
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn query_direct_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    reclaim_end();
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn query_memcg_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    reclaim_begin();
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn query_memcg_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    reclaim_end();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn query_direct_reclaim_begin_tp(_ctx: TracePointContext) -> u32 {
    reclaim_begin();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn query_direct_reclaim_end_tp(_ctx: TracePointContext) -> u32 {
    reclaim_end();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn query_memcg_reclaim_begin_tp(_ctx: TracePointContext) -> u32 {
    reclaim_begin();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn query_memcg_reclaim_end_tp(_ctx: TracePointContext) -> u32 {
    reclaim_end();
    0
}

// Direct compaction inside queries. The kernel marks where a try begins and where each zone's
// part ends, not where the try ends: a try lasts until its last zone's outcome, and is over
// when the thread tries again, reclaims or ends its query (as `tracer direct-reclaim` puts
// tries together, here summed per query in the kernel). Cold paths (a try costs
// milliseconds): classic tracepoints, whose fields userspace checks before attaching.

/// Compaction's statuses as this kernel numbers them, from userspace.
#[unsafe(no_mangle)]
static QUERY_COMPACTION_STATUSES: Global<CompactionStatuses> = Global::new(CompactionStatuses {
    skipped: 0,
    proceed: 0,
});

/// Offset of `mm_compaction_suitable`'s status (`ret`).
const SUITABLE_STATUS: usize = 20;

/// The thread's open try, if any, is over: counted in its query.
#[inline(always)]
fn close_compaction(thread: &mut Thread) {
    if thread.compaction_start_ns != 0 {
        thread.compaction_ns += thread.compaction_last_ns - thread.compaction_start_ns;
        thread.compaction_count += thread.compaction_stalled as u32;
        thread.compaction_start_ns = 0;
    }
}

#[tracepoint(category = "compaction", name = "mm_compaction_try_to_compact_pages")]
pub fn query_compaction_try_tp(_ctx: TracePointContext) -> u32 {
    if let Some(thread) = in_query(task::current_tid()) {
        close_compaction(thread);
        let now = unsafe { bpf_ktime_get_ns() };
        thread.compaction_start_ns = now;
        thread.compaction_last_ns = now;
        thread.compaction_stalled = false;
    }
    0
}

/// A zone of the current thread's try came to an outcome; `stalled`: one the kernel counts.
#[inline(always)]
fn zone_outcome(stalled: bool) {
    if let Some(thread) = in_query(task::current_tid())
        && thread.compaction_start_ns != 0
    {
        thread.compaction_last_ns = unsafe { bpf_ktime_get_ns() };
        thread.compaction_stalled |= stalled;
    }
}

#[tracepoint(category = "compaction", name = "mm_compaction_end")]
pub fn query_compaction_end_tp(_ctx: TracePointContext) -> u32 {
    zone_outcome(true);
    0
}

#[tracepoint(category = "compaction", name = "mm_compaction_deferred")]
pub fn query_compaction_deferred_tp(_ctx: TracePointContext) -> u32 {
    zone_outcome(true);
    0
}

/// A zone at its watermark resets its deferring (success with no run), as does an allocation
/// that got its page after compaction.
#[tracepoint(category = "compaction", name = "mm_compaction_defer_reset")]
pub fn query_compaction_defer_reset_tp(_ctx: TracePointContext) -> u32 {
    zone_outcome(true);
    0
}

#[tracepoint(category = "compaction", name = "mm_compaction_suitable")]
pub fn query_compaction_suitable_tp(ctx: TracePointContext) -> u32 {
    let status: i32 = field(&ctx, SUITABLE_STATUS);
    let statuses = QUERY_COMPACTION_STATUSES.load();
    // Able to compact: the zone's run comes next and has the say.
    if status != statuses.proceed {
        zone_outcome(status != statuses.skipped);
    }
    0
}
