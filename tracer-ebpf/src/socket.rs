//! What programs on socket tracepoints (`sock:sock_recv_length`, `sock:sock_send_length`, or
//! before Linux 6.3 the system calls) need to see a server's requests and replies: the system
//! call below them, whose registers still hold its arguments.

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_current_task_btf, bpf_task_pt_regs},
    programs::TracePointContext,
};

/// A field of a classic tracepoint's record: read in place, where a helper call would cost more.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    unsafe { *(ctx.as_ptr() as *const u8).add(offset).cast::<T>() }
}

/// Offsets in the classic tracepoints' records.
pub mod offset {
    /// `sock:sock_recv_length` and `sock:sock_send_length`: `ret`.
    pub const SOCK_LENGTH: usize = 20;
    /// `syscalls:sys_exit_*`: `ret`.
    pub const SYSCALL_RET: usize = 16;
    /// `syscalls:sys_enter_sendto`: `fd`, `buff`, `len`.
    pub const SENDTO_FD: usize = 16;
    pub const SENDTO_BUFFER: usize = 24;
    pub const SENDTO_LEN: usize = 32;
}

/// System call numbers (x86-64) of the calls whose arguments are (fd, buffer, length).
const READ: u64 = 0;
const WRITE: u64 = 1;
const SENDTO: u64 = 44;
const RECVFROM: u64 = 45;

/// The registers the current thread's system call saved at entry: its arguments are there
/// still, so a program at the end of the call (or below it) needs none at its entry.
#[inline(always)]
fn syscall_regs() -> &'static pt_regs {
    unsafe { &*(bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs) }
}

/// A receive's or a send's socket and buffer.
#[derive(Clone, Copy)]
pub struct Io {
    pub fd: u64,
    pub buffer: u64,
    pub len: u64,
}

/// The recv() or read() below a sock tracepoint or at a system call's end.
#[inline(always)]
pub fn receive() -> Option<Io> {
    let regs = syscall_regs();
    (regs.orig_rax == RECVFROM || regs.orig_rax == READ).then_some(Io {
        fd: regs.rdi,
        buffer: regs.rsi,
        len: regs.rdx,
    })
}

/// The send() or write() below a sock tracepoint.
#[inline(always)]
pub fn send() -> Option<Io> {
    let regs = syscall_regs();
    (regs.orig_rax == SENDTO || regs.orig_rax == WRITE).then_some(Io {
        fd: regs.rdi,
        buffer: regs.rsi,
        len: regs.rdx,
    })
}

/// The send() at a `syscalls:sys_enter_sendto` tracepoint.
#[inline(always)]
pub fn sendto_arguments(ctx: &TracePointContext) -> Io {
    Io {
        fd: field(ctx, offset::SENDTO_FD),
        buffer: field(ctx, offset::SENDTO_BUFFER),
        len: field(ctx, offset::SENDTO_LEN),
    }
}
