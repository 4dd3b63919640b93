//! `tracer pg`: PostgreSQL queries with the kernel time stolen from them.
//!
//! Query boundaries come from probes in the server or from its client sockets. One uprobe
//! program serves every probe site; its attach cookie names the [`Site`] (before 5.15, each
//! site has a program of its own). The socket programs see the backend receive a request and
//! send the ReadyForQuery that ends its answer; they run at every socket receive and send on
//! the machine, so they do little for any other process. A backend whose connection turns out
//! encrypted is read where OpenSSL hands over its plaintext ([`tls`]), or else left to probes
//! userspace attaches in that process alone. Per backend thread
//! they keep the query in progress, to which reclaim stalls and counter deltas are added.

use aya_ebpf::{
    EbpfContext, Global,
    helpers::{bpf_get_attach_cookie, bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::{btf_tracepoint, map, tracepoint, uprobe, uretprobe},
    maps::Array,
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
};
use tracer_common::{
    pg::{Backend, SITE_PROGRAMS, Site, kind, site},
    query::{QueryConfig, origin},
    record::tool,
};

mod spill;

use crate::{
    arch, events,
    kernel::field,
    query::{self, Database, Thread, link},
    socket::{self, offset},
    task, tls, usdt,
};

#[unsafe(no_mangle)]
static PG_CONFIG: Global<QueryConfig> = Global::new(unsafe { core::mem::zeroed() });

/// PostgreSQL to the per-query engine.
struct Pg;

impl Database for Pg {
    const TOOL: u32 = tool::PG;
    const QUERY: u32 = kind::QUERY;
    const BACKEND: u32 = kind::BACKEND;
    const EXEC: u32 = kind::EXEC;
    const EXITED: u32 = kind::EXITED;

    #[inline(always)]
    fn config() -> *const QueryConfig {
        &PG_CONFIG as *const Global<QueryConfig> as *const QueryConfig
    }
}

/// Probe sites, indexed by attach cookie.
#[map]
static PG_SITES: Array<Site> = Array::with_max_entries(256, 0);

#[uprobe]
pub fn pg_probe(ctx: ProbeContext) -> u32 {
    probe(&ctx, unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32)
}

/// Before Linux 5.15 there are no attach cookies: there each site has a program of its own,
/// whose number is the site's slot.
macro_rules! site_programs {
    ($($name:ident = $slot:literal),* $(,)?) => {
        $(
            #[uprobe]
            pub fn $name(ctx: ProbeContext) -> u32 {
                probe(&ctx, $slot)
            }
        )*
        const _: () = assert!([$($slot),*].len() == SITE_PROGRAMS as usize);
    };
}

site_programs!(
    pg_probe_1 = 1,
    pg_probe_2 = 2,
    pg_probe_3 = 3,
    pg_probe_4 = 4,
    pg_probe_5 = 5,
    pg_probe_6 = 6,
    pg_probe_7 = 7,
    pg_probe_8 = 8,
    pg_probe_9 = 9,
    pg_probe_10 = 10,
    pg_probe_11 = 11,
    pg_probe_12 = 12,
);

#[inline(always)]
fn probe(ctx: &ProbeContext, slot: u32) -> u32 {
    let Some(site) = PG_SITES.get(slot) else {
        return 0;
    };
    let tid = task::current_tid();
    let Some(thread) = query::traced_thread::<Pg>(tid) else {
        return 0;
    };
    let portal = thread.origin == origin::PORTAL as u8;
    match site.kind {
        site::QUERY_START => start_at_site(ctx, site, tid, thread, origin::SIMPLE),
        site::EXECUTE_START if !thread.active => {
            start_at_site(ctx, site, tid, thread, origin::PORTAL)
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
                    let pointer = (address + thread.detail) as *const u64;
                    unsafe { bpf_probe_read_user(pointer) }.unwrap_or(0)
                }
            };
            query::done::<Pg>(tid, thread, text);
        }
        site::QUERY_DONE if thread.active && thread.origin == origin::SIMPLE as u8 => {
            let text = usdt::read(ctx.regs, &site.query).unwrap_or(0);
            query::done::<Pg>(tid, thread, text);
        }
        _ => {}
    }
    0
}

#[inline(always)]
fn start_at_site(ctx: &ProbeContext, site: &Site, tid: u32, thread: &mut Thread, origin: u32) {
    // The load bias, to find the server's globals by their link-time addresses.
    thread.detail = arch::instruction_pointer(ctx.regs).wrapping_sub(site.address);
    query::start::<Pg>(tid, thread, origin);
}

/// Message types a client begins a request with: Query, Parse, Bind, Execute, Describe, Close,
/// Sync, FunctionCall, Flush. Not: Terminate, copy data, passwords, a startup packet (its
/// first byte is its length's top byte, 0), or TLS records.
const REQUEST_TYPES: &[u8] = b"QPBEDCSFH";

/// The first bytes of TLS records: a handshake (the client's hello opens one) and application
/// data; then the major version, 3.
const TLS_HANDSHAKE: u8 = 22;
const TLS_APPLICATION_DATA: u8 = 23;
const TLS_MAJOR_VERSION: u8 = 3;

/// A GSSENCRequest: length 8, then the code 80877104, big-endian.
const GSS_ENCRYPTION_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 48];

/// Bytes that end a backend's reply: ReadyForQuery, five bytes long, then the transaction
/// status.
const READY_FOR_QUERY: [u8; 5] = [b'Z', 0, 0, 0, 5];

#[btf_tracepoint(function = "sock_recv_length")]
pub fn pg_sock_received(ctx: BtfTracePointContext) -> i32 {
    received(ctx.arg::<i32>(1) as i64);
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn pg_sock_received_tp(ctx: TracePointContext) -> u32 {
    received(field::<i32>(&ctx, offset::SOCK_LENGTH) as i64);
    0
}

/// Where the kernel lacks the sock tracepoints (before 6.3).
#[tracepoint(category = "syscalls", name = "sys_exit_recvfrom")]
pub fn pg_received_tp(ctx: TracePointContext) -> u32 {
    received(field(&ctx, offset::SYSCALL_RET));
    0
}

/// The current thread received `received` bytes (or an error) from a socket.
#[inline(always)]
fn received(received: i64) {
    // Before any lookup: a backend's every other receive finds nothing (EAGAIN).
    if received <= 0 {
        return;
    }
    let tid = task::current_tid();
    let Some(thread) = query::traced_thread::<Pg>(tid) else {
        return;
    };
    // An encrypted backend's requests are OpenSSL's probes' or its own (or unseen); during a
    // request, only more of it is read (a pipeline spilled).
    if thread.link != link::PLAIN || (thread.active && thread.origin != origin::SOCKET as u8) {
        return;
    }
    let Some(io) = socket::receive() else {
        return;
    };
    request(tid, thread, io.buffer, received, true);
}

/// Backend `tid` received `received` bytes at `buffer`, off its socket or (`socket` false)
/// decrypted: a request begins a query.
#[inline(always)]
fn request(tid: u32, thread: &mut Thread, buffer: u64, received: i64, socket: bool) {
    if thread.active {
        // More of the request: a pipeline bigger than a receive.
        if thread.origin == origin::SOCKET as u8
            && let Some(request) = query::request_of(tid)
            && request.done.spilled > 0
        {
            spill::more(tid, &mut request.done, buffer, received as usize);
        }
        return;
    }
    let Some(request) = query::request(tid) else {
        cold_warn!("pg: no room for the request of backend {}", tid);
        events::count_lost(tool::PG);
        return;
    };
    // One read for the text and the bytes that tell what it is (at least 8, for a
    // GSSENCRequest), not a read of each: each is a helper call that guards against faults.
    let len = (received as usize).min(query::text_limit::<Pg>());
    let text = &mut request.text[..len.max(8)];
    if unsafe { bpf_probe_read_user_buf(buffer as *const u8, text) }.is_err() {
        return;
    }
    let read = &request.text;
    let first = [
        read[0], read[1], read[2], read[3], read[4], read[5], read[6], read[7],
    ];
    if !REQUEST_TYPES.contains(&first[0]) {
        let tls = matches!(first[0], TLS_HANDSHAKE | TLS_APPLICATION_DATA)
            && first[1] == TLS_MAJOR_VERSION;
        let gss = received == 8 && first == GSS_ENCRYPTION_REQUEST;
        if socket && (tls || gss) {
            // As early as the handshake: userspace has its round trips to attach probes
            // where OpenSSL's cannot read it.
            thread.link = if tls { link::ENCRYPTED } else { link::OPAQUE };
            events::emit_now(
                tool::PG,
                Backend {
                    kind: kind::ENCRYPTED,
                    pid: tid,
                },
            );
        }
        return;
    }
    request.done.text_len = len as u32;
    request.done.received = received.min(u32::MAX as i64) as u32;
    spill::begin(
        tid,
        &mut request.done,
        &request.text,
        buffer,
        received as usize,
    );
    query::start::<Pg>(tid, thread, origin::SOCKET);
}

/// The calling thread, if a backend whose connection OpenSSL's probes read.
#[inline(always)]
fn tls_backend() -> Option<(u32, &'static mut Thread)> {
    let tid = task::current_tid();
    let thread = query::traced_thread::<Pg>(tid)?;
    if thread.link == link::OPAQUE {
        return None;
    }
    thread.link = link::TLS;
    Some((tid, thread))
}

#[uprobe]
pub fn pg_tls_read(ctx: ProbeContext) -> u32 {
    if let Some((tid, _)) = tls_backend() {
        tls::read_begins(&ctx, tid);
    }
    0
}

#[uretprobe]
pub fn pg_tls_read_return(ctx: RetProbeContext) -> u32 {
    if let Some((tid, thread)) = tls_backend()
        && let Some((io, read)) = tls::read_returns(&ctx, tid)
        && read > 0
    {
        request(tid, thread, io.buffer, read, false);
    }
    0
}

#[uprobe]
pub fn pg_tls_write(ctx: ProbeContext) -> u32 {
    if let Some((tid, thread)) = tls_backend()
        && let Some(io) = tls::written(&ctx)
    {
        answer(tid, thread, io);
    }
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn pg_sock_sent(ctx: BtfTracePointContext) -> i32 {
    let sent = ctx.arg::<i32>(1) > 0;
    sending(|| sent.then(socket::send)?);
    0
}

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn pg_sock_sent_tp(ctx: TracePointContext) -> u32 {
    let sent = field::<i32>(&ctx, offset::SOCK_LENGTH) > 0;
    sending(|| sent.then(socket::send)?);
    0
}

/// Where the kernel lacks the sock tracepoints.
#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn pg_send_tp(ctx: TracePointContext) -> u32 {
    sending(|| Some(socket::sendto_arguments(&ctx)));
    0
}

/// The current thread sends to a socket, from the buffer and length `arguments` finds (looked
/// for only in a plaintext backend answering a request).
#[inline(always)]
fn sending(arguments: impl FnOnce() -> Option<socket::Io>) {
    let tid = task::current_tid();
    let Some(thread) = query::traced_thread::<Pg>(tid) else {
        return;
    };
    if !thread.active || thread.origin != origin::SOCKET as u8 || thread.link != link::PLAIN {
        return;
    }
    if let Some(io) = arguments() {
        answer(tid, thread, io);
    }
}

/// Backend `tid` sends `io` (its plaintext): a reply ending in ReadyForQuery ends the request.
#[inline(always)]
fn answer(tid: u32, thread: &mut Thread, io: socket::Io) {
    if !thread.active || thread.origin != origin::SOCKET as u8 {
        return;
    }
    let socket::Io { buffer, len, .. } = io;
    if len < 6 {
        return;
    }
    let tail = (buffer + len - 6) as *const [u8; 6];
    match unsafe { bpf_probe_read_user(tail) } {
        Ok(tail) if tail[..5] == READY_FOR_QUERY => {}
        _ => return,
    }
    let Some(request) = query::request_at_end::<Pg>(tid, thread) else {
        return;
    };
    query::finish::<Pg>(tid, thread, &mut request.done);
    query::send::<Pg>(request);
}

/// A process exec'd a program: its threads start afresh, and a postgres may be a new server
/// for userspace to trace.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn pg_exec(_ctx: BtfTracePointContext) -> i32 {
    query::exec::<Pg>(is_server);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn pg_exec_tp(_ctx: TracePointContext) -> u32 {
    query::exec::<Pg>(is_server);
    0
}

/// A thread exits: what was kept of it goes.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn pg_thread_exit_tp(_ctx: TracePointContext) -> u32 {
    query::thread_exit::<Pg>();
    0
}

#[inline(always)]
fn is_server(comm: &[u8; 16]) -> bool {
    comm.starts_with(b"postgres\0")
}
