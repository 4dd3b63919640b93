//! Delivery of records to userspace through one ring buffer, counting what does not fit.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use tracer_common::record::{Record, TOOL_SLOTS};

/// For every hash map: entries are allocated as they are used. The object holds every tool's
/// maps and all of them are created at load; preallocated, they would slow every tool's start.
pub const NO_PREALLOC: u32 = BPF_F_NO_PREALLOC;

/// Userspace sizes it at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Records that found the ring buffer full, per tool and CPU; userspace sums and reports them.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(TOOL_SLOTS, 0);

/// Room for one record, or `None` (counted as lost) when the buffer is full.
#[inline(always)]
pub fn reserve<T: Record + 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count_lost(T::TOOL);
    }
    entry
}

/// Room for one record of `tool`'s (a record type tools share), or `None` (counted as lost).
#[inline(always)]
pub fn reserve_as<T: 'static>(tool: u32) -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count_lost(tool);
    }
    entry
}

/// Sends one record, or counts it as lost.
#[inline(always)]
pub fn emit<T: Record + 'static>(record: T) {
    if let Some(mut entry) = reserve::<T>() {
        entry.write(record);
        entry.submit(0);
    }
}

/// Sends one record of `tool`'s (a record type tools share), or counts it as lost.
#[inline(always)]
pub fn emit_as<T: 'static>(tool: u32, record: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(0);
        }
        None => count_lost(tool),
    }
}

/// Sends one record of `tool`'s and wakes userspace at once, for records it must act on
/// quickly (attach something), or counts it as lost.
#[inline(always)]
pub fn emit_now<T: 'static>(tool: u32, record: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(BPF_RB_FORCE_WAKEUP as u64);
        }
        None => count_lost(tool),
    }
}

/// Sends one record without waking userspace, which drains the buffer on a timer (hot paths,
/// as [`emit_bytes_quietly`]), or counts it as lost.
#[inline(always)]
pub fn emit_quietly<T: Record + 'static>(record: T) {
    if let Some(mut entry) = reserve::<T>() {
        entry.write(record);
        entry.submit(BPF_RB_NO_WAKEUP as u64);
    }
}

/// Sends a record of variable length without waking userspace, which drains the buffer on a
/// timer (hot paths: a wake-up per record would cost more than the record), or counts it as
/// lost.
#[inline(always)]
pub fn emit_bytes_quietly(tool: u32, record: &[u8]) {
    if EVENTS
        .output::<[u8]>(record, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count_lost(tool);
    }
}

/// Counts a record of `tool` that could not be sent.
#[inline(always)]
pub fn count_lost(tool: u32) {
    if let Some(lost) = LOST.get_ptr_mut(tool) {
        // Per-CPU slot: no other writer can race this increment.
        unsafe { *lost += 1 };
    }
}
