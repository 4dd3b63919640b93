//! Requests the text read cannot hold: a pipeline of hundreds of statements in one receive, or
//! bigger than the 8 KiB a backend reads at once. Their receives go to userspace whole, each a
//! record of its own, for it to name every statement; the request's record counts them, so
//! that one lost is known. Requests read whole, and single Query messages, cost a look at the
//! bytes already read.

use aya_ebpf::{helpers::bpf_probe_read_user_buf, macros::map, maps::PerCpuArray};
use tracer_common::{
    pg::{MAX_SPILLED, Spilled, kind},
    query::{MAX_TEXT, QueryDone},
    record::tool,
};

use crate::events;

/// A Sync message, which ends an extended-protocol request.
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

/// A receive's record: [`Spilled`], then the bytes.
#[repr(C)]
pub struct Receive {
    header: Spilled,
    /// Twice what is sent: see [`more`].
    bytes: [u8; 2 * MAX_SPILLED],
}

/// Where receives are copied: too big for the stack.
#[map]
static PG_SPILL_SCRATCH: PerCpuArray<Receive> = PerCpuArray::with_max_entries(1, 0);

/// A request's first receive, `received` bytes at `buffer` of which `read` holds the first
/// (all of them when they fit): spilled unless it is a single Query (its text, as far as read,
/// is what is shown) or the bytes read hold the request up to its Sync.
#[inline(always)]
pub fn begin(tid: u32, done: &mut QueryDone, read: &[u8; MAX_TEXT], buffer: u64, received: usize) {
    done.spilled = 0;
    let length = u32::from_be_bytes([read[1], read[2], read[3], read[4]]) as usize;
    if read[0] == b'Q' && length + 1 == received {
        return;
    }
    if (5..=MAX_TEXT).contains(&received) {
        let at = |i: usize| read[i & (MAX_TEXT - 1)];
        let tail = received - 5;
        if (0..5).all(|i| at(tail + i) == SYNC[i]) {
            return;
        }
    }
    more(tid, done, buffer, received);
}

/// More of a spilled request, or its first receive: sent.
#[inline(always)]
pub fn more(tid: u32, done: &mut QueryDone, buffer: u64, received: usize) {
    done.spilled += 1;
    let Some(receive) = PG_SPILL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let receive = unsafe { &mut *receive };
    // Masked, for the verifier to see a bound in the register the helper gets (a bound from
    // `min` alone stays on a copy LLVM compared): whatever the mask leaves fits the buffer,
    // and a pg backend never receives that much at once.
    let len = (received & (2 * MAX_SPILLED - 1)).min(MAX_SPILLED);
    let read = unsafe { bpf_probe_read_user_buf(buffer as *const u8, &mut receive.bytes[..len]) };
    receive.header = Spilled {
        kind: kind::SPILLED,
        pid: tid,
        index: done.spilled,
        received: received as u32,
        len: if read.is_ok() { len as u32 } else { 0 },
    };
    let size = size_of::<Spilled>() + receive.header.len as usize;
    let record = unsafe {
        core::slice::from_raw_parts(
            receive as *const Receive as *const u8,
            size.min(size_of::<Receive>()),
        )
    };
    events::emit_bytes_quietly(tool::PG, record);
}
