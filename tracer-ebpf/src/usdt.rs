//! Reading USDT probe arguments as userspace decoded their specs.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user},
};
use tracer_common::usdt::Arg;

/// The value of `arg` at the probe site whose registers are `regs`.
#[inline(always)]
pub fn read(regs: *const pt_regs, arg: &Arg) -> Option<u64> {
    let raw = match arg.location {
        Arg::CONSTANT => arg.value as u64,
        Arg::REGISTER => register(regs, arg.register)?,
        Arg::MEMORY => {
            let address = register(regs, arg.register)?.wrapping_add(arg.value as u64);
            unsafe { bpf_probe_read_user(address as *const u64) }.ok()?
        }
        _ => return None,
    };
    Some(arg.fit(raw))
}

/// A register by its offset in `pt_regs` (the verifier allows no variable offsets into the
/// context itself, hence the probe read).
#[inline(always)]
fn register(regs: *const pt_regs, offset: u32) -> Option<u64> {
    let at = (regs as *const u8).wrapping_add(offset as usize) as *const u64;
    unsafe { bpf_probe_read_kernel(at) }.ok()
}
