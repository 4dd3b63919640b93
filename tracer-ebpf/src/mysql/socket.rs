//! `tracer mysql --via socket`: each command from the server thread's receipt of it to the
//! last send of its answer before the thread reads again, off the socket tracepoints, with no
//! trap into the kernel per command. MySQL's client protocol frames every packet with a
//! 3-byte length and a sequence id, 0 for a command's first packet; servers read that header
//! and then the payload, which begins with the command. Commands without an answer
//! (`COM_QUIT`, `COM_STMT_CLOSE`, `COM_STMT_SEND_LONG_DATA`) are counted at receipt, their
//! time unseen.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::{btf_tracepoint, tracepoint, uprobe, uretprobe},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
};
use tracer_common::{
    mysql::{
        COM_STMT_CLOSE, COM_STMT_PREPARE, COM_STMT_SEND_LONG_DATA, Login, Unreadable, command,
        kind, unreadable,
    },
    query::origin,
    record::tool,
};

use super::{MYSQL_LAYOUT, Mysql, connections};
use crate::{
    events,
    kernel::field,
    query::{self, Thread, link},
    socket::{self, offset},
    task, tls,
};

/// `Thread::step` between a command's header and its payload, and between a handshake
/// response's header and its payload.
const AWAITING_PAYLOAD: u8 = 1;
const AWAITING_LOGIN: u8 = 2;

/// An SSL request's payload: the fixed part of a handshake response alone.
const SSL_REQUEST_LEN: i64 = 32;

/// The current thread, if a server's: its threads are the server process's own, so any other
/// process (the clients on the same machine, above all) is turned away by its pid before any
/// map lookup.
#[inline(always)]
fn server_thread() -> Option<(u32, &'static mut Thread)> {
    let (pid, tid) = task::current_pid_tid()?;
    if !query::named_server::<Mysql>(pid, pid) {
        return None;
    }
    Some((tid, query::traced_thread::<Mysql>(tid)?))
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn mysql_sock_received(ctx: BtfTracePointContext) -> i32 {
    received(ctx.arg::<i32>(1) as i64);
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn mysql_sock_received_tp(ctx: TracePointContext) -> u32 {
    received(field::<i32>(&ctx, offset::SOCK_LENGTH) as i64);
    0
}

/// Where the kernel lacks the sock tracepoints (before 6.3).
#[tracepoint(category = "syscalls", name = "sys_exit_recvfrom")]
pub fn mysql_received_tp(ctx: TracePointContext) -> u32 {
    received(field(&ctx, offset::SYSCALL_RET));
    0
}

/// The current thread received `received` bytes (or an error) from a socket.
#[inline(always)]
fn received(received: i64) {
    if MYSQL_LAYOUT.load().via_socket == 0 {
        return;
    }
    let Some((tid, thread)) = server_thread() else {
        return;
    };
    // Its connection's commands are OpenSSL's probes' or the server's.
    if thread.link != link::PLAIN {
        return;
    }
    let Some(io) = socket::receive() else {
        return;
    };
    read(tid, thread, io, received, true);
}

/// Server thread `tid` read `received` bytes (or an error) into `io`: off its socket, or (not
/// `socket`) decrypted.
#[inline(always)]
fn read(tid: u32, thread: &mut Thread, io: socket::Io, received: i64, socket: bool) {
    if thread.step == AWAITING_LOGIN {
        thread.step = 0;
        if received > 0 {
            login(tid, io.buffer, received as u32);
        }
        return;
    }
    if thread.active && thread.origin == origin::SOCKET as u8 {
        if thread.step == AWAITING_PAYLOAD {
            thread.step = 0;
            if received > 0 {
                payload(tid, thread, io, io.buffer, received as usize);
            } else {
                thread.active = false;
            }
            return;
        }
        // The server reads again: its answer is over.
        end(tid, thread);
    }
    if received < 4 {
        return;
    }
    let Ok([a, b, c, sequence]) = (unsafe { bpf_probe_read_user(io.buffer as *const [u8; 4]) })
    else {
        return;
    };
    // A TLS record (a handshake, or data of a connection encrypted before tracer started), or
    // the 7-byte header of the compressed protocol (a plaintext packet of 7 bytes read whole
    // holds 3 bytes of payload).
    let len = u32::from_le_bytes([a, b, c, 0]) as i64;
    if socket
        && (a == TLS_HANDSHAKE || a == TLS_APPLICATION_DATA)
        && b == TLS_MAJOR_VERSION
        && (1..=4).contains(&c)
    {
        unreadable(tid, thread, unreadable::ENCRYPTED);
        return;
    }
    if received == 7 && len != 3 && sequence == 0 {
        let why = match socket {
            true => unreadable::COMPRESSED,
            false => unreadable::COMPRESSED_IN_TLS,
        };
        unreadable(tid, thread, why);
        return;
    }
    // An SSL request: the connection goes encrypted. Said here rather than at the client
    // hello after it, which OpenSSL's socket BIO reads with read(), unseen before Linux 6.3.
    if socket && sequence == 1 && len == SSL_REQUEST_LEN && !thread.active {
        unreadable(tid, thread, unreadable::ENCRYPTED);
        return;
    }
    // A new connection's handshake response: sequence 1, or 2 after an SSL request. Whom the
    // connection serves comes from it (userspace tells it from a large command's later part).
    if (sequence == 1 || sequence == 2) && len > SSL_REQUEST_LEN && !thread.active {
        if received == 4 {
            thread.step = AWAITING_LOGIN;
        } else if received == len + 4 {
            login(tid, io.buffer + 4, len as u32);
        }
        return;
    }
    // A command's first packet, read alone or whole (a TLS record or a packet's middle is
    // neither).
    if sequence != 0 || len == 0 || (received != 4 && received != len + 4) {
        return;
    }
    if MYSQL_LAYOUT.load().connections != 0 {
        connections::command(tid as u64);
    }
    query::start::<Mysql>(tid, thread, origin::SOCKET);
    if received == 4 {
        thread.step = AWAITING_PAYLOAD;
    } else {
        payload(tid, thread, io, io.buffer + 4, len as usize);
    }
}

/// The calling thread, if a server's whose connection OpenSSL's probes read.
#[inline(always)]
fn tls_thread() -> Option<(u32, &'static mut Thread)> {
    let (tid, thread) = server_thread()?;
    if thread.link == link::OPAQUE {
        return None;
    }
    thread.link = link::TLS;
    Some((tid, thread))
}

#[uprobe]
pub fn mysql_tls_read(ctx: ProbeContext) -> u32 {
    if let Some((tid, _)) = tls_thread() {
        tls::read_begins(&ctx, tid);
    }
    0
}

#[uretprobe]
pub fn mysql_tls_read_return(ctx: RetProbeContext) -> u32 {
    if let Some((tid, thread)) = tls_thread()
        && let Some((io, received)) = tls::read_returns(&ctx, tid)
    {
        read(tid, thread, io, received, false);
    }
    0
}

#[uprobe]
pub fn mysql_tls_write(ctx: ProbeContext) -> u32 {
    if let Some((tid, thread)) = tls_thread() {
        answer(tid, thread, || tls::written(&ctx));
    }
    0
}

/// The first bytes of TLS records: a handshake (a client hello opens one) and application
/// data; then the version, 3 and 1 to 4 (a plaintext header alike would announce a packet of
/// 66 KiB or more, of exactly one of a few lengths).
const TLS_HANDSHAKE: u8 = 22;
const TLS_APPLICATION_DATA: u8 = 23;
const TLS_MAJOR_VERSION: u8 = 3;

/// A server's greeting to a new connection, the one packet it sends with sequence 0, begins
/// with the protocol's version.
const PROTOCOL_VERSION: u8 = 10;

/// The thread's connection cannot be read off its socket (`why`, an [`unreadable`] kind):
/// userspace hears it once, and OpenSSL's probes (for TLS) or probes in the server take its
/// commands, where attached.
#[inline(always)]
fn unreadable(tid: u32, thread: &mut Thread, why: u32) {
    let link = match why {
        unreadable::ENCRYPTED => link::ENCRYPTED,
        _ => link::OPAQUE,
    };
    if thread.link == link {
        return;
    }
    thread.link = link;
    events::emit_now(
        tool::MYSQL,
        Unreadable {
            kind: kind::UNREADABLE,
            tid,
            pid: task::current_pid_tid().map_or(0, |(pid, _)| pid),
            why,
            at_ns: unsafe { bpf_ktime_get_ns() },
        },
    );
}

/// The command's payload at `buffer`, read from `io`: its command byte, then what it is
/// about.
#[inline(always)]
fn payload(tid: u32, thread: &mut Thread, io: socket::Io, buffer: u64, len: usize) {
    let Some(request) = query::request(tid) else {
        cold_warn!("mysql: no room for the command of thread {}", tid);
        events::count_lost(tool::MYSQL);
        thread.active = false;
        return;
    };
    let pid = task::current_pid_tid().map_or(0, |(pid, _)| pid);
    request.done.session = ((pid as u64) << 32) | (io.fd & 0xffff_ffff);
    request.done.statement = 0;
    let command = unsafe { bpf_probe_read_user(buffer as *const u8) }.unwrap_or(0) as u32;
    request.done.received = command;
    thread.command = command as u8;
    let len = (len - 1).min(query::text_limit::<Mysql>());
    let text = &mut request.text[..len];
    let read = unsafe { bpf_probe_read_user_buf((buffer + 1) as *const u8, text) }.is_ok();
    request.done.text_len = if read { len as u32 } else { 0 };
    if command == command::QUIT || command == COM_STMT_CLOSE || command == COM_STMT_SEND_LONG_DATA {
        end(tid, thread);
    }
}

/// Sends the handshake response of `len` bytes at `buffer`, read by thread `tid`.
#[inline(always)]
fn login(tid: u32, buffer: u64, len: u32) {
    let Some(mut entry) = events::reserve::<Login>() else {
        return;
    };
    let record = entry.as_mut_ptr();
    // Every field is written before the record is submitted (the helper zeroes the bytes when
    // the read fails).
    let bytes = unsafe {
        (*record).kind = kind::LOGIN;
        (*record).tid = tid;
        (*record).len = len;
        &mut (*record).bytes
    };
    let _ = unsafe { bpf_probe_read_user_buf(buffer as *const u8, bytes) };
    entry.submit(0);
}

/// The thread's command is over; its record goes out.
#[inline(always)]
fn end(tid: u32, thread: &mut Thread) {
    let Some(request) = query::request_at_end::<Mysql>(tid, thread) else {
        return;
    };
    query::finish_answered::<Mysql>(tid, thread, &mut request.done);
    query::send::<Mysql>(request);
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn mysql_sock_sent(ctx: BtfTracePointContext) -> i32 {
    if ctx.arg::<i32>(1) > 0 {
        sent(socket::send);
    }
    0
}

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn mysql_sock_sent_tp(ctx: TracePointContext) -> u32 {
    if field::<i32>(&ctx, offset::SOCK_LENGTH) > 0 {
        sent(socket::send);
    }
    0
}

/// Where the kernel lacks the sock tracepoints.
#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn mysql_send_tp(ctx: TracePointContext) -> u32 {
    sent(|| Some(socket::sendto_arguments(&ctx)));
    0
}

/// The current thread sends to a socket: a handshake (`--connections`), or part of the answer
/// to a command, whose end is the last such send.
#[inline(always)]
fn sent(arguments: impl FnOnce() -> Option<socket::Io>) {
    let layout = MYSQL_LAYOUT.load();
    if layout.connections != 0 {
        connections::sent();
    }
    if layout.via_socket == 0 {
        return;
    }
    let Some((tid, thread)) = server_thread() else {
        return;
    };
    if thread.link != link::PLAIN {
        // A greeting: the thread serves a new connection, which may be readable.
        if let Some(io) = arguments()
            && let Ok([_, _, _, 0, PROTOCOL_VERSION]) =
                unsafe { bpf_probe_read_user(io.buffer as *const [u8; 5]) }
        {
            thread.link = link::PLAIN;
        }
        return;
    }
    answer(tid, thread, arguments);
}

/// Server thread `tid` sends the plaintext `arguments` finds: part of its command's answer.
#[inline(always)]
fn answer(tid: u32, thread: &mut Thread, arguments: impl FnOnce() -> Option<socket::Io>) {
    if !thread.active || thread.origin != origin::SOCKET as u8 || thread.step != 0 {
        return;
    }
    query::answered(thread);
    if thread.command != COM_STMT_PREPARE as u8 {
        return;
    }
    // The answer's first packet names the statement prepared.
    let (Some(io), Some(request)) = (arguments(), query::request_of(tid)) else {
        return;
    };
    if request.done.statement == 0 {
        request.done.statement = super::prepared_statement(io.buffer);
    }
}
