//! `tracer pg`: PostgreSQL queries with the kernel time stolen from them.
//!
//! One uprobe program serves every probe site; its attach cookie names the [`Site`]. Per backend
//! thread it keeps the query in progress, to which reclaim stalls and counter deltas are added.

use aya_ebpf::{
    EbpfContext, Global,
    bindings::bpf_perf_event_value,
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_perf_event_read_value, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
    },
    macros::{btf_tracepoint, map, tracepoint, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerfEventArray},
    programs::{BtfTracePointContext, ProbeContext, TracePointContext},
};
use tracer_common::{
    pg::{Backend, MAX_COUNTERS, MAX_TEXT, PgConfig, QueryDone, Site, kind, site},
    task::Task,
};

use crate::{
    events,
    kernel::{read, read_ptr},
    task, usdt,
};

#[unsafe(no_mangle)]
static PG_CONFIG: Global<PgConfig> = Global::new(unsafe { core::mem::zeroed() });

/// Probe sites, indexed by attach cookie.
#[map]
static PG_SITES: Array<Site> = Array::with_max_entries(256, 0);

/// Per backend thread: whether the filters keep it, its counters, and the query it runs. An LRU
/// map is always preallocated: `tracer pg` sizes it, other tools leave it at one entry.
#[map]
static PG_THREADS: LruHashMap<u32, Thread> = LruHashMap::with_max_entries(1, 0);

/// The first slot of each backend's counters in `PG_COUNTERS`, kept by userspace.
#[map]
static PG_COUNTER_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(1024, events::NO_PREALLOC);

/// Per-task perf counters that userspace opens for each backend.
#[map]
static PG_COUNTERS: PerfEventArray<u32> = PerfEventArray::new(0);

/// A finished query's record: the header, then as much text as was read.
#[repr(C)]
struct Record {
    done: QueryDone,
    text: [u8; MAX_TEXT],
}

/// Where records are assembled: too big for the stack.
#[map]
static PG_SCRATCH: PerCpuArray<Record> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
struct Thread {
    traced: bool,
    /// Whether a query runs, and whether it came in by the simple protocol.
    active: bool,
    simple: bool,
    /// Portal runs nested inside the query.
    depth: u8,
    /// First slot of the thread's counters, once userspace opened them.
    counter_slot: u32,
    start_ns: u64,
    /// Instruction pointer minus link-time address at the start site.
    bias: u64,
    reclaim_begin_ns: u64,
    reclaim_ns: u64,
    reclaim_count: u32,
    counters_valid: u32,
    counters: [u64; MAX_COUNTERS],
}

const NO_SLOT: u32 = u32::MAX;

#[uprobe]
pub fn pg_probe(ctx: ProbeContext) -> u32 {
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let Some(site) = PG_SITES.get(cookie as u32) else {
        return 0;
    };
    let tid = task::current_tid();
    let Some(thread) = thread(tid) else {
        return 0;
    };
    let thread = unsafe { &mut *thread };
    if !thread.traced {
        return 0;
    }
    match site.kind {
        site::QUERY_START => start(&ctx, site, tid, thread, true),
        site::EXECUTE_START if !thread.active => start(&ctx, site, tid, thread, false),
        // A portal inside a simple query, or nested in another portal run.
        site::EXECUTE_START if !thread.simple => thread.depth += 1,
        site::EXECUTE_DONE if thread.active && !thread.simple => {
            if thread.depth > 0 {
                thread.depth -= 1;
                return 0;
            }
            // The text of the portal's query is in the global `debug_query_string`.
            let text = match site.query_string {
                0 => 0,
                address => {
                    let pointer = (address + thread.bias) as *const u64;
                    unsafe { bpf_probe_read_user(pointer) }.unwrap_or(0)
                }
            };
            done(tid, thread, text);
        }
        site::QUERY_DONE if thread.active && thread.simple => {
            let text = usdt::read(ctx.regs, &site.query).unwrap_or(0);
            done(tid, thread, text);
        }
        _ => {}
    }
    0
}

/// The thread's state, created at its first probe with the filters' verdict.
#[inline(always)]
fn thread(tid: u32) -> Option<*mut Thread> {
    if let Some(thread) = PG_THREADS.get_ptr_mut(tid) {
        return Some(thread);
    }
    let config = PG_CONFIG.load();
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let in_server =
        config.server_pid == 0 || pid == config.server_pid || parent_pid() == config.server_pid;
    let traced = in_server && task::current().is_some();
    let thread = Thread {
        traced,
        active: false,
        simple: false,
        depth: 0,
        counter_slot: NO_SLOT,
        start_ns: 0,
        bias: 0,
        reclaim_begin_ns: 0,
        reclaim_ns: 0,
        reclaim_count: 0,
        counters_valid: 0,
        counters: [0; MAX_COUNTERS],
    };
    PG_THREADS.insert(tid, thread, 0).ok()?;
    if traced {
        events::emit(Backend {
            kind: kind::BACKEND,
            pid: tid,
        });
    }
    PG_THREADS.get_ptr_mut(tid)
}

#[inline(always)]
fn start(ctx: &ProbeContext, site: &Site, tid: u32, thread: &mut Thread, simple: bool) {
    thread.active = true;
    thread.simple = simple;
    thread.depth = 0;
    thread.bias = unsafe { (*ctx.regs).rip }.wrapping_sub(site.address);
    thread.reclaim_begin_ns = 0;
    thread.reclaim_ns = 0;
    thread.reclaim_count = 0;
    if thread.counter_slot == NO_SLOT
        && let Some(&slot) = unsafe { PG_COUNTER_SLOTS.get(tid) }
    {
        thread.counter_slot = slot;
    }
    thread.counters_valid = read_counters(thread.counter_slot, &mut thread.counters) as u32;
    thread.start_ns = unsafe { bpf_ktime_get_ns() };
}

#[inline(always)]
fn parent_pid() -> u32 {
    let config = PG_CONFIG.load();
    let current = unsafe { bpf_get_current_task() } as *const u8;
    read_ptr(current, config.task_real_parent)
        .and_then(|parent| read(parent, task::layout().task_tgid))
        .unwrap_or(0)
}

/// Reads the counters into `values`: from the current task where the kernel keeps them, else
/// from the backend's perf events from slot `first` on. False when there are none.
#[inline(always)]
fn read_counters(first: u32, values: &mut [u64; MAX_COUNTERS]) -> bool {
    let config = PG_CONFIG.load();
    if config.task_counters[0][0] != 0 {
        return read_task_counters(&config.task_counters, values);
    }
    if first == NO_SLOT {
        return false;
    }
    let count = config.counters as usize;
    let map = &PG_COUNTERS as *const PerfEventArray<u32> as *mut core::ffi::c_void;
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
fn read_task_counters(fields: &[[u32; 2]; MAX_COUNTERS], values: &mut [u64; MAX_COUNTERS]) -> bool {
    let current = unsafe { bpf_get_current_task() } as *const u8;
    for (value, offsets) in values.iter_mut().zip(fields) {
        *value = 0;
        for &offset in offsets {
            if offset != 0 {
                let Some(count) = read::<u64>(current, offset) else {
                    return false;
                };
                *value += count;
            }
        }
    }
    true
}

#[inline(always)]
fn done(tid: u32, thread: &mut Thread, text: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    thread.active = false;
    let mut end = [0u64; MAX_COUNTERS];
    let counters_valid = thread.counters_valid != 0 && read_counters(thread.counter_slot, &mut end);
    let Some(scratch) = PG_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    let record = &mut scratch.done;
    record.kind = kind::QUERY;
    record.task = Task {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        tid,
        cgroup_id: 0,
        comm: [0; 16],
    };
    record.start_ns = thread.start_ns;
    record.latency_ns = now - thread.start_ns;
    record.reclaim_ns = thread.reclaim_ns;
    record.reclaim_count = thread.reclaim_count;
    record.counters_valid = counters_valid as u32;
    for ((delta, end), start) in record.counters.iter_mut().zip(end).zip(thread.counters) {
        *delta = if counters_valid {
            end.wrapping_sub(start)
        } else {
            0
        };
    }
    record.simple = thread.simple as u32;
    let limit = (PG_CONFIG.load().text_len as usize).min(MAX_TEXT);
    let len = if text == 0 {
        0
    } else {
        unsafe { bpf_probe_read_user_str_bytes(text as *const u8, &mut scratch.text[..limit]) }
            .map_or(0, |bytes| bytes.len())
    };
    scratch.done.text_len = len as u32;
    let size = (size_of::<QueryDone>() + len).min(size_of::<Record>());
    let bytes = unsafe { core::slice::from_raw_parts(scratch as *const Record as *const u8, size) };
    events::emit_bytes_quietly(bytes);
}

/// A reclaim stall of the current thread begins: note it on its query, if it runs one.
#[inline(always)]
fn reclaim_begin() {
    if let Some(thread) = PG_THREADS.get_ptr_mut(task::current_tid()) {
        let thread = unsafe { &mut *thread };
        if thread.active {
            thread.reclaim_begin_ns = unsafe { bpf_ktime_get_ns() };
        }
    }
}

#[inline(always)]
fn reclaim_end() {
    if let Some(thread) = PG_THREADS.get_ptr_mut(task::current_tid()) {
        let thread = unsafe { &mut *thread };
        if thread.active && thread.reclaim_begin_ns != 0 {
            thread.reclaim_ns += unsafe { bpf_ktime_get_ns() } - thread.reclaim_begin_ns;
            thread.reclaim_count += 1;
            thread.reclaim_begin_ns = 0;
        }
    }
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn pg_direct_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    reclaim_begin();
    0
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn pg_direct_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    reclaim_end();
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn pg_memcg_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    reclaim_begin();
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn pg_memcg_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    reclaim_end();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn pg_direct_reclaim_begin_tp(_ctx: TracePointContext) -> u32 {
    reclaim_begin();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn pg_direct_reclaim_end_tp(_ctx: TracePointContext) -> u32 {
    reclaim_end();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn pg_memcg_reclaim_begin_tp(_ctx: TracePointContext) -> u32 {
    reclaim_begin();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn pg_memcg_reclaim_end_tp(_ctx: TracePointContext) -> u32 {
    reclaim_end();
    0
}
