//! `tracer mysql --connections`: a new connection's way in. The listener accepts it and hands
//! it on (MariaDB: `handle_accepted_socket()` hands a `CONNECT` to `create_new_thread()`;
//! MySQL: `process_new_connection()` hands a `Channel_info` to the connection handler's
//! `add_connection()`); a server thread makes its `THD` from it (`CONNECT::create_thd()`,
//! `Channel_info::create_thd()`), sends the handshake (its first socket send), authenticates
//! the client (`acl_authenticate()`), and runs its first command. Before all that, a TCP
//! connection waits in the listener's accept queue from its handshake's end (the kernel's
//! `inet_sock_set_state`, SYN_RECV to ESTABLISHED) to the end of the `accept()` that takes
//! it (its socket found from the descriptor returned, as no kprobe or fexit may exist).

use aya_ebpf::{
    helpers::bpf_get_current_task,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, tracepoint, uprobe, uretprobe},
    maps::{HashMap, LruHashMap},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
};
use tracer_common::mysql::{Accepted, Connection, kind, signature};

use super::Mysql;
use crate::{
    events,
    kernel::{field, read_ptr},
    query, task,
};

/// Connections the listener or a server thread is busy with at once.
const IN_FLIGHT: u32 = 4096;

/// Per listener thread: when it took the connection it is handing on.
#[map]
static MYSQL_LISTENING: HashMap<u32, u64> = HashMap::with_max_entries(64, 0);

/// Per `CONNECT`: when the listener took it.
#[map]
static MYSQL_ACCEPTED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(IN_FLIGHT, 0);

/// Per server thread logging a connection in: the connection so far, and its `THD`.
#[map]
static MYSQL_LOGGING_IN: LruHashMap<u32, LoggingIn> = LruHashMap::with_max_entries(IN_FLIGHT, 0);

/// Per `THD` logged in: the connection until its first command (a thread pool may run that
/// on another thread).
#[map]
static MYSQL_LOGGED_IN: LruHashMap<u64, Connection> = LruHashMap::with_max_entries(IN_FLIGHT, 0);

/// TCP connections in a listener's accept queue, by socket: since when (any listener's: which
/// server's shows only at `accept()`).
#[map]
static MYSQL_QUEUED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(IN_FLIGHT, 0);

/// Per listener thread: how long the connection it accepted waited in the queue.
#[map]
static MYSQL_QUEUE_WAITS: HashMap<u32, u64> = HashMap::with_max_entries(64, 0);

#[derive(Clone, Copy)]
struct LoggingIn {
    connection: Connection,
    session: u64,
}

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// TCP's states, as `inet_sock_set_state` numbers them.
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_RECV: i32 = 3;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn mysql_tcp_state(ctx: BtfTracePointContext) -> i32 {
    state_changed(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn mysql_tcp_state_tp(ctx: TracePointContext) -> u32 {
    state_changed(field(&ctx, 8), field(&ctx, 16), field(&ctx, 20));
    0
}

/// A TCP socket changed state: a connection whose handshake ended is in its listener's queue.
#[inline(always)]
fn state_changed(socket: u64, old: i32, new: i32) {
    if old == TCP_SYN_RECV && new == TCP_ESTABLISHED {
        let _ = MYSQL_QUEUED.insert(socket, now(), 0);
    }
}

/// `syscalls:sys_exit_accept4` and `sys_exit_accept`: `ret`.
const ACCEPT_RET: usize = 16;

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn mysql_accept4_tp(ctx: TracePointContext) -> u32 {
    accepted(field(&ctx, ACCEPT_RET));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn mysql_accept_tp(ctx: TracePointContext) -> u32 {
    accepted(field(&ctx, ACCEPT_RET));
    0
}

/// A process accepted a connection as file descriptor `fd` (or failed): if a server's, its
/// socket's wait in the queue is its listener thread's to report.
#[inline(always)]
fn accepted(fd: i64) {
    if fd < 0 || !query::traced_process::<Mysql>() {
        return;
    }
    let Some(socket) = socket_of(fd as u64) else {
        return;
    };
    let Some(&queued_ns) = (unsafe { MYSQL_QUEUED.get(socket) }) else {
        return;
    };
    let _ = MYSQL_QUEUED.remove(socket);
    let _ = MYSQL_QUEUE_WAITS.insert(task::current_tid(), now() - queued_ns, 0);
}

/// The `struct sock` behind the current task's descriptor `fd`: its file in the task's table,
/// the `struct socket` the file holds, the `sock` that holds.
#[inline(always)]
fn socket_of(fd: u64) -> Option<u64> {
    let [files, fdt, fds, private_data, sk] = super::MYSQL_LAYOUT.load().socket_of_fd;
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let table = read_ptr(read_ptr(read_ptr(task, files)?, fdt)?, fds)?;
    let file = read_ptr(table, (fd * 8) as u32)?;
    let socket = read_ptr(file, private_data)?;
    read_ptr(socket, sk).map(|sk| sk as u64)
}

#[uprobe]
pub fn mysql_accepted(_ctx: ProbeContext) -> u32 {
    if query::traced_process::<Mysql>() {
        let _ = MYSQL_LISTENING.insert(task::current_tid(), now(), 0);
    }
    0
}

/// `create_new_thread(CONNECT*)` or `Per_thread_connection_handler::add_connection(this,
/// Channel_info*)`, called by the listener: the connection's object is what a server thread
/// makes its `THD` from.
#[uprobe]
pub fn mysql_handing_on(ctx: ProbeContext) -> u32 {
    let Some(&accepted_ns) = (unsafe { MYSQL_LISTENING.get(task::current_tid()) }) else {
        return 0;
    };
    // The registers read in place: the verifier refuses a context pointer chosen by a branch.
    let [first, second, ..] = crate::arch::arguments(ctx.regs);
    let connect = match super::server_signature() {
        signature::MYSQL8 => second,
        _ => first,
    };
    let _ = MYSQL_ACCEPTED.insert(connect, accepted_ns, 0);
    0
}

#[uretprobe]
pub fn mysql_accepted_return(_ctx: RetProbeContext) -> u32 {
    let tid = task::current_tid();
    let Some(&accepted_ns) = (unsafe { MYSQL_LISTENING.get(tid) }) else {
        return 0;
    };
    let _ = MYSQL_LISTENING.remove(tid);
    let queued_ns = unsafe { MYSQL_QUEUE_WAITS.get(tid) }.copied();
    let _ = MYSQL_QUEUE_WAITS.remove(tid);
    events::emit(Accepted {
        kind: kind::ACCEPTED,
        pid: task::current_pid_tid().map_or(0, |(pid, _)| pid),
        busy_ns: now() - accepted_ns,
        queued_ns: queued_ns.unwrap_or(0),
    });
    0
}

/// `CONNECT::create_thd(this, THD*)` or `Channel_info::create_thd(this)`, on the thread that
/// logs the connection in.
#[uprobe]
pub fn mysql_logging_in(ctx: ProbeContext) -> u32 {
    let Some((pid, tid)) = task::current_pid_tid() else {
        return 0;
    };
    if !query::traced_process::<Mysql>() {
        return 0;
    }
    let connect = ctx.arg::<u64>(0).unwrap_or(0);
    let accepted_ns = unsafe { MYSQL_ACCEPTED.get(connect) }.copied();
    let _ = MYSQL_ACCEPTED.remove(connect);
    let connection = Connection {
        kind: kind::CONNECTION,
        pid,
        tid,
        accepted_ns: accepted_ns.unwrap_or(0),
        ..Default::default()
    };
    let logging_in = LoggingIn {
        connection,
        session: 0,
    };
    if MYSQL_LOGGING_IN.insert(tid, logging_in, 0).is_err() {
        cold_warn!("mysql: no room for the connection of thread {}", tid);
    }
    0
}

/// The current thread sends to a socket: if it is logging a connection in, the first send is
/// the handshake.
#[inline(always)]
pub fn sent() {
    let Some(logging_in) = MYSQL_LOGGING_IN.get_ptr_mut(task::current_tid()) else {
        return;
    };
    let connection = unsafe { &mut (*logging_in).connection };
    if connection.handshake_ns == 0 {
        connection.handshake_ns = now();
    }
}

/// `acl_authenticate(THD*, ...)`: also reached by `COM_CHANGE_USER`, with no login under way.
#[uprobe]
pub fn mysql_authenticating(ctx: ProbeContext) -> u32 {
    if let Some(logging_in) = MYSQL_LOGGING_IN.get_ptr_mut(task::current_tid()) {
        unsafe { (*logging_in).session = ctx.arg::<u64>(0).unwrap_or(0) };
    }
    0
}

#[uretprobe]
pub fn mysql_authenticated(ctx: RetProbeContext) -> u32 {
    let tid = task::current_tid();
    let Some(&LoggingIn {
        mut connection,
        session,
    }) = (unsafe { MYSQL_LOGGING_IN.get(tid) })
    else {
        return 0;
    };
    let _ = MYSQL_LOGGING_IN.remove(tid);
    connection.authenticated_ns = now();
    // acl_authenticate() returns a bool (MariaDB) or an int (MySQL), not 0 on failure.
    let failed = ctx.ret::<u64>() as u8 != 0;
    if failed || session == 0 {
        connection.failed = failed as u32;
        events::emit(connection);
    } else if MYSQL_LOGGED_IN
        .insert(logged_in_key(tid, session), connection, 0)
        .is_err()
    {
        cold_warn!("mysql: no room for the connection of thread {}", tid);
    }
    0
}

/// Whom a logged-in connection's first command is expected from: its `THD` where
/// `dispatch_command()` says which runs (a thread pool may run it on another thread); through
/// the socket, the thread that logged it in.
#[inline(always)]
fn logged_in_key(tid: u32, session: u64) -> u64 {
    if super::MYSQL_LAYOUT.load().via_socket != 0 {
        tid as u64
    } else {
        session
    }
}

/// A command begins, of `session` (a `THD`, or the thread through the socket): the first of a
/// connection logged in ends its way in.
#[inline(always)]
pub fn command(session: u64) {
    let Some(&connection) = (unsafe { MYSQL_LOGGED_IN.get(session) }) else {
        return;
    };
    let _ = MYSQL_LOGGED_IN.remove(session);
    let mut connection = connection;
    connection.first_command_ns = now();
    events::emit(connection);
}
