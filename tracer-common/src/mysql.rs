//! `tracer mysql`: MySQL and MariaDB commands, their latency, the reclaim stalls inside them and
//! their counters, through the per-query engine.

use crate::record::{kind as record_kind, tool};

/// What a record is; every record starts with one.
pub mod kind {
    use super::{record_kind, tool};
    /// A command finished: a `query::QueryDone` whose `received` is the command
    /// (`enum_server_command`), followed by the first bytes of its packet.
    pub const QUERY: u32 = record_kind(tool::MYSQL, 1);
    /// A server thread ran its first command since tracer started: a `query::NewBackend`.
    pub const BACKEND: u32 = record_kind(tool::MYSQL, 2);
    /// A new connection ran its first command, or failed to log in: a [`super::Connection`].
    pub const CONNECTION: u32 = record_kind(tool::MYSQL, 3);
    /// The listener handed an accepted connection on: a [`super::Accepted`].
    pub const ACCEPTED: u32 = record_kind(tool::MYSQL, 4);
    /// A server thread's connection cannot be read off its socket: a `query::Backend` (the
    /// thread), once per connection, with the kind of the [`super::Unreadable`] it sends.
    pub const UNREADABLE: u32 = record_kind(tool::MYSQL, 5);
    /// A process exec'd a program named mysqld or mariadbd (maybe a server starting): a
    /// `query::Backend` with its pid.
    pub const EXEC: u32 = record_kind(tool::MYSQL, 6);
    /// A server thread that ran commands exited: a `query::Backend`.
    pub const EXITED: u32 = record_kind(tool::MYSQL, 7);
    /// A new connection's handshake response, read by its server thread: a [`super::Login`].
    pub const LOGIN: u32 = record_kind(tool::MYSQL, 8);
}

/// Why a connection's commands cannot be read off its socket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Unreadable {
    pub kind: u32,
    /// The server thread, and its process: read in the kernel, for a thread may be gone
    /// (its one-query connection closed, the server's thread cache full) before userspace
    /// reads the record.
    pub tid: u32,
    pub pid: u32,
    /// An [`unreadable`] kind.
    pub why: u32,
    /// When the socket showed it (`bpf_ktime_get_ns()`).
    pub at_ns: u64,
}

pub mod unreadable {
    /// TLS: a handshake record, or data of a connection encrypted before tracer started.
    pub const ENCRYPTED: u32 = 1;
    pub const COMPRESSED: u32 = 2;
    /// Compressed inside TLS, as OpenSSL's probes hand it over.
    pub const COMPRESSED_IN_TLS: u32 = 3;
}

/// How `dispatch_command()` takes its arguments, as its signature says.
pub mod signature {
    /// MariaDB: `dispatch_command(enum_server_command, THD*, char* packet, unsigned int
    /// length, bool)`.
    pub const MARIADB: u32 = 1;
    /// MySQL 8: `dispatch_command(THD*, COM_DATA const*, enum_server_command)`; a query's
    /// `COM_DATA` begins with its text's address and length.
    pub const MYSQL8: u32 = 2;
}

/// Commands whose packet is SQL text.
pub const COM_QUERY: u32 = 3;
pub const COM_STMT_PREPARE: u32 = 22;
/// Commands whose packet begins with a prepared statement's id.
pub const COM_STMT_EXECUTE: u32 = 23;
pub const COM_STMT_SEND_LONG_DATA: u32 = 24;
pub const COM_STMT_CLOSE: u32 = 25;

/// Commands that end a connection's prepared statements.
pub mod command {
    pub const QUIT: u32 = 1;
    pub const CHANGE_USER: u32 = 17;
    pub const RESET_CONNECTION: u32 = 31;
    pub const INIT_DB: u32 = 2;
}

/// Bytes of a handshake response sent: its fixed part (32), a user name (at most 32 and its
/// NUL), an authentication response (at most 33 with its length) and a database name (at most
/// 64 and its NUL).
pub const LOGIN_BYTES: usize = 192;

/// A new connection's handshake response (`HandshakeResponse41`), whom the connection serves.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Login {
    pub kind: u32,
    /// The server thread that read it.
    pub tid: u32,
    /// The payload's length, of which the first [`LOGIN_BYTES`] (at most) are in `bytes`.
    pub len: u32,
    pub bytes: [u8; LOGIN_BYTES],
}

/// Settings of the kernel side beside its `query::QueryConfig`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MysqlLayout {
    /// A [`signature`] constant: that of the servers not in `MYSQL_SIGNATURES` (a binary named
    /// by `--bin`), 0 when there are none such.
    pub signature: u32,
    /// 1: follow new connections (`--connections`).
    pub connections: u32,
    /// 1: commands from the socket (`--via socket`, `--via auto`); `dispatch_command()`'s
    /// probes, where attached, serve only the connections the socket cannot read.
    pub via_socket: u32,
    /// With `--connections`: where the kernel keeps what leads from a file descriptor to its
    /// socket (`task_struct.files`, `files_struct.fdt`, `fdtable.fd`, `file.private_data`,
    /// `socket.sk`).
    pub socket_of_fd: [u32; 5],
}

/// A new connection's way in, in kernel time (ns). Each phase ends where the next begins.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Connection {
    pub kind: u32,
    /// 1: authentication failed, and `first_command_ns` is 0.
    pub failed: u32,
    /// The server thread that logged it in.
    pub pid: u32,
    pub tid: u32,
    /// The listener took it from `accept()` (0: before tracer started).
    pub accepted_ns: u64,
    /// The server sent its handshake (0: not seen).
    pub handshake_ns: u64,
    pub authenticated_ns: u64,
    /// The server began its first command.
    pub first_command_ns: u64,
}

/// The listener's (or the thread-pool listener's) time for one accepted connection, from
/// `accept()` to handing it on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Accepted {
    pub kind: u32,
    pub pid: u32,
    pub busy_ns: u64,
    /// How long the kernel kept it in the listener's accept queue (TCP; 0: not seen).
    pub queued_ns: u64,
}

plain_old_data!(MysqlLayout, Connection, Accepted, Unreadable, Login);
crate::record::records!(tool::MYSQL => Connection, Accepted, Unreadable, Login);
