//! tracer's kernel programs: one module per tool, plus the machinery they share.
#![no_std]
#![no_main]

#[macro_use]
mod diagnostics;
mod events;
mod kernel;
mod task;
mod usdt;

mod direct_reclaim;
mod kvm_exit;
mod mysql;
mod oom;
mod pg;
mod pipeline;
mod query;
mod socket;
mod tls;
mod writeback;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible, as the probe-read and ring-buffer helpers require.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
