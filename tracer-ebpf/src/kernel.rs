//! Reading kernel memory at offsets userspace found in the kernel's BTF.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};

/// The `T` at `base + offset`.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }.ok()
}

/// The non-null pointer at `base + offset`.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    read::<*const u8>(base, offset).filter(|ptr| !ptr.is_null())
}

/// Fills `buf` from `base + offset`, leaving it zeroed when the read fails.
#[inline(always)]
pub fn read_bytes(base: *const u8, offset: u32, buf: &mut [u8]) {
    let src = base.wrapping_add(offset as usize);
    if unsafe { bpf_probe_read_kernel_buf(src, buf) }.is_err() {
        buf.fill(0);
    }
}
