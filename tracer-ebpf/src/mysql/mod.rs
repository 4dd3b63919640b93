//! `tracer mysql`: each command a MySQL or MariaDB server thread runs, from entry to return of
//! `dispatch_command()`, through the per-query engine. The command and the first bytes of its
//! packet (the SQL text of a query) are kept at entry: the reply reuses the network buffer,
//! where a prepared statement's id is read at return.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::{btf_tracepoint, map, tracepoint, uprobe, uretprobe},
    maps::HashMap,
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
};
use tracer_common::{
    mysql::{COM_QUERY, COM_STMT_PREPARE, MysqlLayout, command::INIT_DB, kind, signature},
    query::{MAX_SERVERS, QueryConfig, origin},
    record::tool,
};

mod connections;
mod socket;

use crate::{
    events,
    query::{self, Database, link},
    task,
};

#[unsafe(no_mangle)]
pub(super) static MYSQL_CONFIG: Global<QueryConfig> = Global::new(unsafe { core::mem::zeroed() });

#[unsafe(no_mangle)]
pub(super) static MYSQL_LAYOUT: Global<MysqlLayout> = Global::new(unsafe { core::mem::zeroed() });

/// Each traced server's `dispatch_command()` [`signature`], by pid: MySQL and MariaDB servers
/// side by side, and servers started after tracer, each read as its binary says.
#[map]
static MYSQL_SIGNATURES: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_SERVERS, events::NO_PREALLOC);

/// The signature of the server the current thread belongs to.
#[inline(always)]
fn server_signature() -> u32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match unsafe { MYSQL_SIGNATURES.get(pid) } {
        Some(&signature) => signature,
        None => MYSQL_LAYOUT.load().signature,
    }
}

/// MySQL to the per-query engine.
struct Mysql;

impl Database for Mysql {
    const TOOL: u32 = tool::MYSQL;
    const QUERY: u32 = kind::QUERY;
    const BACKEND: u32 = kind::BACKEND;
    const EXEC: u32 = kind::EXEC;
    const EXITED: u32 = kind::EXITED;

    #[inline(always)]
    fn config() -> *const QueryConfig {
        &MYSQL_CONFIG as *const Global<QueryConfig> as *const QueryConfig
    }
}

#[uprobe]
pub fn mysql_dispatch(ctx: ProbeContext) -> u32 {
    let tid = task::current_tid();
    let Some(thread) = query::traced_thread::<Mysql>(tid) else {
        return 0;
    };
    // Beside the socket's programs, the probes take only what those and OpenSSL's cannot
    // read.
    if MYSQL_LAYOUT.load().via_socket != 0 && !matches!(thread.link, link::ENCRYPTED | link::OPAQUE)
    {
        return 0;
    }
    let [first, second, third, fourth] = crate::arch::arguments(ctx.regs);
    let (command, session, packet, len) = match server_signature() {
        signature::MARIADB => (first as u32, second, third, fourth as usize),
        signature::MYSQL8 => {
            let command = third as u32;
            let data = second;
            if command == COM_QUERY || command == COM_STMT_PREPARE || command == INIT_DB {
                // A query's COM_DATA (or a schema's): its text's address, then its length.
                let address = unsafe { bpf_probe_read_user(data as *const u64) }.unwrap_or(0);
                let len = unsafe { bpf_probe_read_user((data + 8) as *const u32) }.unwrap_or(0);
                (command, first, address, len as usize)
            } else {
                // Other commands' data begins with what identifies them (a statement id).
                (command, first, data, 8)
            }
        }
        _ => return 0,
    };
    if MYSQL_LAYOUT.load().connections != 0 {
        connections::command(session);
    }
    // The reply overwrites the packet: its first bytes are kept now.
    let Some(request) = query::request(tid) else {
        cold_warn!("mysql: no room for the command of thread {}", tid);
        events::count_lost(tool::MYSQL);
        return 0;
    };
    let len = len.min(query::text_limit::<Mysql>());
    let text = &mut request.text[..len];
    let read = unsafe { bpf_probe_read_user_buf(packet as *const u8, text) }.is_ok();
    request.done.text_len = if read { len as u32 } else { 0 };
    request.done.received = command;
    request.done.session = session;
    request.done.statement = 0;
    query::start::<Mysql>(tid, thread, origin::COMMAND);
    thread.detail = packet;
    0
}

/// The id the server gave the statement it just prepared, from its answer, which both servers
/// write into the network buffer the command came in (the statement's text is one byte, the
/// command, past its start).
#[inline(always)]
fn prepared_statement_in_buffer(text: u64) -> u32 {
    prepared_statement(text - 1)
}

/// The id in a `COM_STMT_PREPARE`'s answer at `answer`: a 12-byte packet of sequence 1
/// beginning `00 <id as u32>` (0: none such there).
#[inline(always)]
fn prepared_statement(answer: u64) -> u32 {
    match unsafe { bpf_probe_read_user(answer as *const [u8; 9]) } {
        Ok([12, 0, 0, 1, 0, a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

#[uretprobe]
pub fn mysql_dispatch_return(_ctx: RetProbeContext) -> u32 {
    let tid = task::current_tid();
    let Some(thread) = query::traced_thread::<Mysql>(tid) else {
        return 0;
    };
    if !thread.active || thread.origin != origin::COMMAND as u8 {
        return 0;
    }
    let Some(request) = query::request_at_end::<Mysql>(tid, thread) else {
        return 0;
    };
    query::finish::<Mysql>(tid, thread, &mut request.done);
    if request.done.received == COM_STMT_PREPARE {
        request.done.statement = prepared_statement_in_buffer(thread.detail);
    }
    query::send::<Mysql>(request);
    0
}

/// A process exec'd a program: a mysqld or mariadbd may be a new server for userspace to trace.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn mysql_exec(_ctx: BtfTracePointContext) -> i32 {
    query::exec::<Mysql>(is_server);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn mysql_exec_tp(_ctx: TracePointContext) -> u32 {
    query::exec::<Mysql>(is_server);
    0
}

/// A thread exits: what was kept of it goes.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn mysql_thread_exit_tp(_ctx: TracePointContext) -> u32 {
    query::thread_exit::<Mysql>();
    0
}

#[inline(always)]
fn is_server(comm: &[u8; 16]) -> bool {
    comm.starts_with(b"mysqld\0") || comm.starts_with(b"mariadbd\0")
}
