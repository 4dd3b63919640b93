//! The plaintext of a server's encrypted connections, where OpenSSL hands it over: in the
//! buffer `SSL_read()` filled when it returns, and the one `SSL_write()` is given. Only
//! threads that speak TLS call them, so uprobes there cost plaintext connections nothing.
//! Each database has its own three programs, which call in here and then treat the bytes as
//! they would a socket's.

use aya_ebpf::{
    macros::map,
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{events, socket::Io};

/// Each thread's `SSL_read()` in progress, from its entry to its return.
#[map]
static TLS_READS: HashMap<u32, Io> = HashMap::with_max_entries(4096, events::NO_PREALLOC);

/// `SSL_read(ssl, buffer, len)` begins in thread `tid`, a server's.
#[inline(always)]
pub fn read_begins(ctx: &ProbeContext, tid: u32) {
    let Some(io) = arguments(ctx) else {
        return;
    };
    if TLS_READS.insert(tid, io, 0).is_err() {
        cold_warn!("tls: no room for the read of thread {}", tid);
    }
}

/// `SSL_read()` returns in thread `tid`: what it read into, and how much (or an error).
#[inline(always)]
pub fn read_returns(ctx: &RetProbeContext, tid: u32) -> Option<(Io, i64)> {
    let io = *unsafe { TLS_READS.get(tid) }?;
    let _ = TLS_READS.remove(tid);
    Some((io, ctx.ret::<i32>() as i64))
}

/// `SSL_write(ssl, buffer, len)`'s plaintext.
#[inline(always)]
pub fn written(ctx: &ProbeContext) -> Option<Io> {
    arguments(ctx)
}

/// The connection's `SSL` object stands for its socket: it names the connection as long as it
/// lasts.
#[inline(always)]
fn arguments(ctx: &ProbeContext) -> Option<Io> {
    Some(Io {
        fd: ctx.arg(0)?,
        buffer: ctx.arg(1)?,
        len: ctx.arg::<i32>(2)?.max(0) as u64,
    })
}
