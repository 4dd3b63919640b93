//! `tracer pg`: PostgreSQL queries, their latency, the reclaim stalls inside them and their
//! counters.

pub use crate::query::{Backend, NewBackend, QueryDone};
use crate::usdt::Arg;

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

/// Uprobe programs with one probe site each (`pg_probe_1`, ...), for kernels without attach
/// cookies (before 5.15).
pub const SITE_PROGRAMS: u32 = 12;

/// Bytes of a receive sent apart, at most: what a backend reads at once
/// (`PQ_RECV_BUFFER_SIZE`).
pub const MAX_SPILLED: usize = 8192;

/// A receive of a request the text cannot hold, sent whole before the request's record; its
/// `len` bytes follow.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Spilled {
    /// [`kind::SPILLED`].
    pub kind: u32,
    /// The backend thread.
    pub pid: u32,
    /// Which of the request's receives: 1 for its first.
    pub index: u32,
    /// What the receive returned, and how much of it follows (less past [`MAX_SPILLED`], 0
    /// when it could not be read).
    pub received: u32,
    pub len: u32,
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

/// What a record is; every record starts with one.
pub mod kind {
    /// A query finished: a [`super::QueryDone`].
    pub const QUERY: u32 = crate::record::kind(crate::record::tool::PG, 1);
    /// A backend ran its first query since tracer started: a [`super::NewBackend`].
    pub const BACKEND: u32 = crate::record::kind(crate::record::tool::PG, 2);
    /// A backend's connection is encrypted (it began a TLS handshake or asked for GSSAPI
    /// encryption), so its requests cannot be read from its socket: a [`super::Backend`], once
    /// per backend.
    pub const ENCRYPTED: u32 = crate::record::kind(crate::record::tool::PG, 3);
    /// A process exec'd a program named postgres (maybe a server starting): a
    /// [`super::Backend`] with its pid.
    pub const EXEC: u32 = crate::record::kind(crate::record::tool::PG, 4);
    /// A receive of a request the text cannot hold: a [`super::Spilled`] and its bytes.
    pub const SPILLED: u32 = crate::record::kind(crate::record::tool::PG, 5);
    /// A backend that ran queries exited: a [`super::Backend`].
    pub const EXITED: u32 = crate::record::kind(crate::record::tool::PG, 6);
}

plain_old_data!(Site, Spilled);
