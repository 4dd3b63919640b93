//! What differs between the architectures the programs are built for (x86-64, arm64; build.rs
//! sets `bpf_target_arch` to tracer's own): the registers a probe reads, the system call
//! numbers, and where a task's user registers are saved.

use aya_ebpf::bindings::pt_regs;

/// The first four integer arguments of the function a probe sits at the start of. Each
/// register is read once, in place: the verifier refuses a context pointer moved first.
#[inline(always)]
pub fn arguments(regs: *const pt_regs) -> [u64; 4] {
    use core::ptr::read_volatile as read;
    // SAFETY: `regs` is the probe's context, which the verifier lets programs read.
    #[cfg(bpf_target_arch = "x86_64")]
    unsafe {
        [
            read(&(*regs).rdi),
            read(&(*regs).rsi),
            read(&(*regs).rdx),
            read(&(*regs).rcx),
        ]
    }
    #[cfg(bpf_target_arch = "aarch64")]
    unsafe {
        [
            read(&(*regs).regs[0]),
            read(&(*regs).regs[1]),
            read(&(*regs).regs[2]),
            read(&(*regs).regs[3]),
        ]
    }
}

/// Where the probed instruction is.
#[inline(always)]
pub fn instruction_pointer(regs: *const pt_regs) -> u64 {
    // SAFETY: as above.
    #[cfg(bpf_target_arch = "x86_64")]
    unsafe {
        (*regs).rip
    }
    #[cfg(bpf_target_arch = "aarch64")]
    unsafe {
        (*regs).pc
    }
}

/// Numbers of the system calls whose arguments are (fd, buffer, length).
#[cfg(bpf_target_arch = "x86_64")]
pub mod syscall {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
}

/// Numbers of the system calls whose arguments are (fd, buffer, length).
#[cfg(bpf_target_arch = "aarch64")]
pub mod syscall {
    pub const READ: u64 = 63;
    pub const WRITE: u64 = 64;
    pub const SENDTO: u64 = 206;
    pub const RECVFROM: u64 = 207;
}

/// The kernel's `struct pt_regs` as far as tracer reads it: the user registers a task saved
/// entering the kernel, its system call's number and first three arguments.
#[cfg(bpf_target_arch = "x86_64")]
pub type SavedRegs = pt_regs;

/// arm64's: the user registers (`x0` becomes the call's result at its end), then `orig_x0`
/// (the first argument as it came in) and the call's number.
#[cfg(bpf_target_arch = "aarch64")]
#[repr(C)]
pub struct SavedRegs {
    user: pt_regs,
    orig_x0: u64,
    syscallno: i32,
}

/// The call's number and its first three arguments.
#[inline(always)]
pub fn system_call(regs: &SavedRegs) -> (u64, [u64; 3]) {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        (regs.orig_rax, [regs.rdi, regs.rsi, regs.rdx])
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        let user = &regs.user;
        (
            regs.syscallno as u64,
            [regs.orig_x0, user.regs[1], user.regs[2]],
        )
    }
}
