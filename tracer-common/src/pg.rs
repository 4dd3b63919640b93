//! `tracer pg`: PostgreSQL queries, their latency, the reclaim stalls inside them and their
//! counters.

use crate::{task::Task, usdt::Arg};

/// Bytes of query text a record can carry; `--query-len` chooses how many are read.
pub const MAX_TEXT: usize = 2048;
/// Counters read per query.
pub const MAX_COUNTERS: usize = 4;
/// Counter slots in the perf event array: backends times counters.
pub const COUNTER_SLOTS: u32 = 4096;
/// Servers a tracer can tell apart by postmaster.
pub const MAX_SERVERS: usize = 16;

/// What happens at a probe site.
pub mod site {
    /// `postgresql:query__start(query)`: a simple-protocol query begins.
    pub const QUERY_START: u32 = 1;
    /// `postgresql:query__done(query)`: it ends.
    pub const QUERY_DONE: u32 = 2;
    /// `postgresql:query__execute__start`, or entry to `PortalRun()`: a portal runs (an
    /// extended-protocol Execute, unless inside a simple query).
    pub const EXECUTE_START: u32 = 3;
    /// `postgresql:query__execute__done`, or return from `PortalRun()`.
    pub const EXECUTE_DONE: u32 = 4;
}

/// One attached probe site, found by the kernel program through its attach cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Site {
    /// A [`site`] constant.
    pub kind: u32,
    pub _pad: u32,
    /// Where the query text pointer is, for query start and done.
    pub query: Arg,
    /// The site's link-time address: the instruction pointer minus it is the load bias.
    pub address: u64,
    /// Link-time address of the global `debug_query_string` (the text of the query being
    /// executed, in both protocols), or 0.
    pub query_string: u64,
}

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
}

/// Settings of the kernel side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PgConfig {
    /// Only backends of the first `server_count` of these postmasters (and those themselves);
    /// with none, any process reaching a probe.
    pub servers: [u32; MAX_SERVERS],
    pub server_count: u32,
    /// Bytes of query text to read, at most [`MAX_TEXT`].
    pub text_len: u32,
    /// Counters per backend, at most [`MAX_COUNTERS`].
    pub counters: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// Where the counters are kept in `task_struct`, when all of them are software counters
    /// the kernel keeps per task anyway: each is the sum of the `u64`s at up to two offsets
    /// (0: none). All zero: the counters are perf events userspace opens per backend.
    pub task_counters: [[u32; 2]; MAX_COUNTERS],
}

/// What a record is; every record starts with one.
pub mod kind {
    /// A query finished: a [`super::QueryDone`].
    pub const QUERY: u32 = crate::record::kind(crate::record::tool::PG, 1);
    /// A backend ran its first query since tracer started: a [`super::Backend`].
    pub const BACKEND: u32 = crate::record::kind(crate::record::tool::PG, 2);
    /// A backend's connection is TLS-encrypted, so its requests cannot be read from its
    /// socket: a [`super::Backend`], once per backend.
    pub const ENCRYPTED: u32 = crate::record::kind(crate::record::tool::PG, 3);
}

/// A backend tracer has not seen before; userspace opens its counters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    pub kind: u32,
    pub pid: u32,
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
    /// 1 when `counters` hold the query's deltas (the backend's counters were open at its
    /// start).
    pub counters_valid: u32,
    pub counters: [u64; MAX_COUNTERS],
    /// An [`origin`] constant.
    pub origin: u32,
    /// For [`origin::SOCKET`]: the bytes the request's first receive returned, of which
    /// `text_len` follow.
    pub received: u32,
}

plain_old_data!(Site, PgConfig, Backend, QueryDone);
crate::record::records!(crate::record::tool::PG => Backend, QueryDone);
