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
    /// Twice what is sent: see [`masked`].
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
        let tail = masked(received - 5, MAX_TEXT - 1);
        if (0..5).all(|i| read[(tail + i) & (MAX_TEXT - 1)] == SYNC[i]) {
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
    let len = masked(received.min(MAX_SPILLED), 2 * MAX_SPILLED - 1);
    let read = unsafe { bpf_probe_read_user_buf(buffer as *const u8, &mut receive.bytes[..len]) };
    let len = if read.is_ok() { len } else { 0 };
    receive.header = Spilled {
        kind: kind::SPILLED,
        pid: tid,
        index: done.spilled,
        received: received as u32,
        len: len as u32,
    };
    let size = masked(size_of::<Spilled>() + len, 2 * MAX_SPILLED - 1);
    let record =
        unsafe { core::slice::from_raw_parts(receive as *const Receive as *const u8, size) };
    events::emit_bytes_quietly(tool::PG, record);
}

/// `value & mask`, as a value the verifier sees bounded where it is used: through memory LLVM
/// cannot see through, so that the mask stays on the very register used. A bound from a
/// comparison stays with the register compared, and LLVM may use a copy (or drop a mask it
/// proved useless), which the verifiers before 5.11 do not bound with it. `value` is within
/// `mask` wherever this is used: the mask changes nothing but what the verifier knows.
#[inline(always)]
fn masked(value: usize, mask: usize) -> usize {
    let value = unsafe { core::ptr::read_volatile(&value) };
    value & mask
}
