//! Reading kernel memory at offsets userspace found in the kernel's BTF.

use aya_ebpf::{
    EbpfContext,
    cty::c_void,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        generated::bpf_probe_read_kernel as bpf_probe_read_kernel_raw,
    },
    programs::TracePointContext,
};

/// The `T` at `base + offset`.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }.ok()
}

/// The `T` at `base + offset`, or zero when the read fails (the helper zeroes it), without a
/// branch. Prefer it to `read(..).unwrap_or(0)`: each such pair of paths, one with a known zero
/// and one with an unknown value, doubles what the verifier of kernels before 6.4 walks (they
/// cannot prune a path whose stack holds a value where the other holds a zero). Eight of
/// them in `tracer oom` made 5.10 and 6.1 give up (E2BIG).
#[inline(always)]
pub fn read_or_zero<T>(base: *const u8, offset: u32) -> T {
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    unsafe {
        bpf_probe_read_kernel_raw(
            value.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(offset as usize) as *const c_void,
        );
        value.assume_init()
    }
}

/// The non-null pointer at `base + offset`.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    read::<*const u8>(base, offset).filter(|ptr| !ptr.is_null())
}

/// Fills `buf` from `base + offset`; the helper zeroes it when the read fails.
#[inline(always)]
pub fn read_bytes(base: *const u8, offset: u32, buf: &mut [u8]) {
    let src = base.wrapping_add(offset as usize);
    let _ = unsafe { bpf_probe_read_kernel_buf(src, buf) };
}

/// The field at `offset` of a classic tracepoint's record, read in place: no helper call, no
/// failure (the verifier checks the offset against the record's bounds and alignment).
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    unsafe { *(ctx.as_ptr() as *const u8).add(offset).cast::<T>() }
}
