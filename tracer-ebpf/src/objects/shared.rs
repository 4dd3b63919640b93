// The machinery every object holds, included by each object's root (`src/main.rs` and
// `src/objects/*.rs`): paths are written from `src/objects/`.

#[macro_use]
#[path = "../diagnostics.rs"]
mod diagnostics;
#[path = "../events.rs"]
mod events;
#[path = "../kernel.rs"]
mod kernel;
#[path = "../task.rs"]
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible, as the probe-read and ring-buffer helpers require.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
