//! `tracer pg`: PostgreSQL queries with the kernel time stolen from them.
//!
//! Query boundaries come from probes in the server or from its client sockets. One uprobe
//! program serves every probe site; its attach cookie names the [`Site`]. The socket programs
//! see the backend receive a request and send the ReadyForQuery that ends its answer; they run at
//! every socket receive and send on the machine, so they do little for any other process. Per backend
//! thread they keep the query in progress, to which reclaim stalls and counter deltas are added.

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{bpf_perf_event_value, pt_regs},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_perf_event_read_value, bpf_probe_read_user, bpf_probe_read_user_buf,
        bpf_probe_read_user_str_bytes, bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, map, tracepoint, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerfEventArray},
    programs::{BtfTracePointContext, ProbeContext, TracePointContext},
};
use tracer_common::{
    pg::{
        Backend, MAX_COUNTERS, MAX_SERVERS, MAX_TEXT, PgConfig, QueryDone, Site, kind, origin, site,
    },
    record::tool,
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

/// Per backend thread: the record of the request it answers on its socket, which holds the
/// request's first bytes from its receipt until the reply goes out (the receive buffer is
/// reused by then). Kept from one request to the next; sized by `tracer pg --via socket`.
#[map]
static PG_REQUESTS: LruHashMap<u32, Record> = LruHashMap::with_max_entries(1, 0);

#[derive(Clone, Copy)]
struct Thread {
    traced: bool,
    /// Whether a query runs, and its [`origin`].
    active: bool,
    origin: u8,
    /// Portal runs nested inside the query.
    depth: u8,
    /// Whether userspace heard that the thread's connection is encrypted.
    encrypted: bool,
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
    let portal = thread.origin == origin::PORTAL as u8;
    match site.kind {
        site::QUERY_START => start_at_site(&ctx, site, tid, thread, origin::SIMPLE),
        site::EXECUTE_START if !thread.active => {
            start_at_site(&ctx, site, tid, thread, origin::PORTAL)
        }
        // A portal inside a simple query, or nested in another portal run.
        site::EXECUTE_START if portal => thread.depth += 1,
        site::EXECUTE_DONE if thread.active && portal => {
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
        site::QUERY_DONE if thread.active && thread.origin == origin::SIMPLE as u8 => {
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
    let traced = in_servers() && task::current().is_some();
    let thread = Thread {
        traced,
        active: false,
        origin: 0,
        depth: 0,
        encrypted: false,
        counter_slot: NO_SLOT,
        start_ns: 0,
        bias: 0,
        reclaim_begin_ns: 0,
        reclaim_ns: 0,
        reclaim_count: 0,
        counters_valid: 0,
        counters: [0; MAX_COUNTERS],
    };
    if PG_THREADS.insert(tid, thread, 0).is_err() {
        cold_warn!("pg: no room for thread {}", tid);
        return None;
    }
    if traced {
        events::emit(Backend {
            kind: kind::BACKEND,
            pid: tid,
        });
    }
    PG_THREADS.get_ptr_mut(tid)
}

#[inline(always)]
fn start_at_site(ctx: &ProbeContext, site: &Site, tid: u32, thread: &mut Thread, origin: u32) {
    thread.bias = unsafe { (*ctx.regs).rip }.wrapping_sub(site.address);
    start(tid, thread, origin);
}

#[inline(always)]
fn start(tid: u32, thread: &mut Thread, origin: u32) {
    thread.active = true;
    thread.origin = origin as u8;
    thread.depth = 0;
    thread.reclaim_begin_ns = 0;
    thread.reclaim_ns = 0;
    thread.reclaim_count = 0;
    let per_backend_events = PG_CONFIG.load().task_counters[0][0] == 0;
    if per_backend_events
        && thread.counter_slot == NO_SLOT
        && let Some(&slot) = unsafe { PG_COUNTER_SLOTS.get(tid) }
    {
        thread.counter_slot = slot;
    }
    thread.counters_valid = read_counters(thread.counter_slot, &mut thread.counters) as u32;
    thread.start_ns = unsafe { bpf_ktime_get_ns() };
}

/// Whether the current process is one of the servers' postmasters or their children.
#[inline(always)]
fn in_servers() -> bool {
    let config = PG_CONFIG.load();
    let count = (config.server_count as usize).min(MAX_SERVERS);
    if count == 0 {
        return true;
    }
    let Some((pid, _)) = task::current_pid_tid() else {
        return false;
    };
    let parent = parent_pid();
    config.servers[..count]
        .iter()
        .any(|&server| server == pid || server == parent)
}

#[inline(always)]
fn parent_pid() -> u32 {
    let config = PG_CONFIG.load();
    let current = unsafe { bpf_get_current_task() } as *const u8;
    read_ptr(current, config.task_real_parent)
        .and_then(task::ids_of)
        .map_or(0, |(pid, _)| pid)
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
    for (value, &[first, second]) in values.iter_mut().zip(fields) {
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

/// A probed query ends: sends its record with its text, read from `text`.
#[inline(always)]
fn done(tid: u32, thread: &mut Thread, text: u64) {
    let Some(scratch) = PG_SCRATCH.get_ptr_mut(0) else {
        thread.active = false;
        return;
    };
    let scratch = unsafe { &mut *scratch };
    finish(tid, thread, &mut scratch.done);
    let limit = (PG_CONFIG.load().text_len as usize).min(MAX_TEXT);
    let len = if text == 0 {
        0
    } else {
        unsafe { bpf_probe_read_user_str_bytes(text as *const u8, &mut scratch.text[..limit]) }
            .map_or(0, |bytes| bytes.len())
    };
    scratch.done.text_len = len as u32;
    scratch.done.received = 0;
    send(scratch);
}

/// Sends a record with the `done.text_len` bytes of text after its header.
#[inline(always)]
fn send(record: &Record) {
    let size = (size_of::<QueryDone>() + record.done.text_len as usize).min(size_of::<Record>());
    let bytes = unsafe { core::slice::from_raw_parts(record as *const Record as *const u8, size) };
    events::emit_bytes_quietly(tool::PG, bytes);
}

/// Ends the thread's query and fills in `record`, all but the text.
#[inline(always)]
fn finish(tid: u32, thread: &mut Thread, record: &mut QueryDone) {
    let now = unsafe { bpf_ktime_get_ns() };
    thread.active = false;
    let mut end = [0u64; MAX_COUNTERS];
    let counters_valid = thread.counters_valid != 0 && read_counters(thread.counter_slot, &mut end);
    record.kind = kind::QUERY;
    record.task = Task {
        pid: task::current_pid_tid().map_or(0, |(pid, _)| pid),
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
    record.origin = thread.origin as u32;
}

/// The traced thread calling, or `None` for any other.
#[inline(always)]
fn traced_thread(tid: u32) -> Option<&'static mut Thread> {
    let thread = unsafe { &mut *thread(tid)? };
    thread.traced.then_some(thread)
}

/// Message types a client begins a request with: Query, Parse, Bind, Execute, Describe, Close,
/// Sync, FunctionCall, Flush. Not: Terminate, copy data, passwords, a startup packet (its
/// first byte is its length's top byte, 0), or TLS records.
const REQUEST_TYPES: &[u8] = b"QPBEDCSFH";

/// The first byte of a TLS record of application data.
const TLS_APPLICATION_DATA: u8 = 23;

/// Bytes that end a backend's reply: ReadyForQuery, five bytes long, then the transaction
/// status.
const READY_FOR_QUERY: [u8; 5] = [b'Z', 0, 0, 0, 5];

/// A field of a classic tracepoint's record: read in place, where a helper call would cost more.
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    unsafe { *(ctx.as_ptr() as *const u8).add(offset).cast::<T>() }
}

/// System call numbers (x86-64) of the calls whose arguments are (fd, buffer, length).
const READ: u64 = 0;
const WRITE: u64 = 1;
const SENDTO: u64 = 44;
const RECVFROM: u64 = 45;

/// The registers the current thread's system call saved at entry: its arguments are there
/// still, so a program at the end of the call (or below it) needs none at its entry.
#[inline(always)]
fn syscall_regs() -> &'static pt_regs {
    unsafe { &*(bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs) }
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn pg_sock_received(ctx: BtfTracePointContext) -> i32 {
    received(ctx.arg::<i32>(1) as i64);
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn pg_sock_received_tp(ctx: TracePointContext) -> u32 {
    received(field::<i32>(&ctx, 20) as i64);
    0
}

/// Where the kernel lacks the sock tracepoints (before 6.3).
#[tracepoint(category = "syscalls", name = "sys_exit_recvfrom")]
pub fn pg_received_tp(ctx: TracePointContext) -> u32 {
    received(field(&ctx, 16));
    0
}

/// The current thread received `received` bytes (or an error) from a socket.
#[inline(always)]
fn received(received: i64) {
    let tid = task::current_tid();
    let Some(thread) = traced_thread(tid) else {
        return;
    };
    if thread.active || received <= 0 {
        return;
    }
    let regs = syscall_regs();
    if regs.orig_rax != RECVFROM && regs.orig_rax != READ {
        return;
    }
    let buffer = regs.rsi;
    let Ok(first) = (unsafe { bpf_probe_read_user(buffer as *const u8) }) else {
        return;
    };
    if !REQUEST_TYPES.contains(&first) {
        if first == TLS_APPLICATION_DATA && !thread.encrypted {
            thread.encrypted = true;
            events::emit(Backend {
                kind: kind::ENCRYPTED,
                pid: tid,
            });
        }
        return;
    }
    let Some(request) = request(tid) else {
        cold_warn!("pg: no room for the request of backend {}", tid);
        events::count_lost(tool::PG);
        return;
    };
    let limit = (PG_CONFIG.load().text_len as usize).min(MAX_TEXT);
    let len = (received as usize).min(limit);
    let text = &mut request.text[..len];
    if unsafe { bpf_probe_read_user_buf(buffer as *const u8, text) }.is_err() {
        return;
    }
    request.done.text_len = len as u32;
    request.done.received = received.min(u32::MAX as i64) as u32;
    start(tid, thread, origin::SOCKET);
}

/// The thread's request record, made at its first request.
#[inline(always)]
fn request(tid: u32) -> Option<&'static mut Record> {
    if let Some(request) = PG_REQUESTS.get_ptr_mut(tid) {
        return Some(unsafe { &mut *request });
    }
    // Too big for the stack: a new one is copied from scratch.
    let scratch = unsafe { &*PG_SCRATCH.get_ptr_mut(0)? };
    PG_REQUESTS.insert(tid, scratch, 0).ok()?;
    Some(unsafe { &mut *PG_REQUESTS.get_ptr_mut(tid)? })
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn pg_sock_sent(ctx: BtfTracePointContext) -> i32 {
    let sent = ctx.arg::<i32>(1) > 0;
    sending(|| sent.then(send_arguments)?);
    0
}

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn pg_sock_sent_tp(ctx: TracePointContext) -> u32 {
    let sent = field::<i32>(&ctx, 20) > 0;
    sending(|| sent.then(send_arguments)?);
    0
}

/// The buffer and length of the send() or write() below a sock tracepoint.
#[inline(always)]
fn send_arguments() -> Option<(u64, u64)> {
    let regs = syscall_regs();
    (regs.orig_rax == SENDTO || regs.orig_rax == WRITE).then_some((regs.rsi, regs.rdx))
}

/// Where the kernel lacks the sock tracepoints.
#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn pg_send_tp(ctx: TracePointContext) -> u32 {
    sending(|| Some((field(&ctx, 24), field(&ctx, 32))));
    0
}

/// The current thread sends to a socket, from the buffer and length `arguments` finds (looked
/// for only in a backend answering a request): a reply ending in ReadyForQuery ends the
/// request.
#[inline(always)]
fn sending(arguments: impl FnOnce() -> Option<(u64, u64)>) {
    let tid = task::current_tid();
    let Some(thread) = traced_thread(tid) else {
        return;
    };
    if !thread.active || thread.origin != origin::SOCKET as u8 {
        return;
    }
    let Some((buffer, len)) = arguments() else {
        return;
    };
    if len < 6 {
        return;
    }
    let tail = (buffer + len - 6) as *const [u8; 6];
    match unsafe { bpf_probe_read_user(tail) } {
        Ok(tail) if tail[..5] == READY_FOR_QUERY => {}
        _ => return,
    }
    let Some(request) = PG_REQUESTS.get_ptr_mut(tid) else {
        // Evicted by more backends answering requests at once than the map holds.
        cold_warn!(
            "pg: the request of backend {} was evicted before its reply",
            tid
        );
        thread.active = false;
        events::count_lost(tool::PG);
        return;
    };
    let request = unsafe { &mut *request };
    finish(tid, thread, &mut request.done);
    send(request);
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
