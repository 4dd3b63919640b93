//! Types shared by tracer's kernel programs (`tracer-ebpf`) and its userspace (`tracer`).
//!
//! Everything here is `#[repr(C)]` and crosses the kernel boundary byte for byte, either as a
//! ring-buffer record or as a global written at load time.
#![no_std]

/// Marks types that are plain bytes so userspace may read them from maps and ring buffers.
macro_rules! plain_old_data {
    ($($ty:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: `#[repr(C)]`, `Copy`, and made only of integers and byte arrays.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

pub mod direct_reclaim;
pub mod kvm_exit;
pub mod mysql;
pub mod oom;
pub mod pg;
pub mod pipeline;
pub mod query;
pub mod record;
pub mod task;
pub mod usdt;
pub mod writeback;
