//! What programs on socket tracepoints (`sock:sock_recv_length`, `sock:sock_send_length`, or
//! before Linux 6.3 the system calls) need to see a server's requests and replies: the system
//! call below them, whose registers still hold its arguments.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs},
    programs::TracePointContext,
};

use crate::{
    arch::{
        SavedRegs,
        syscall::{READ, RECVFROM, SENDTO, WRITE},
        system_call,
    },
    kernel::{field, read_or_zero},
    task,
};

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

/// The kernel stack's size on x86-64 (without KASAN, as distributions build), at whose top a
/// task's user registers are saved.
const THREAD_SIZE: usize = 16 << 10;
/// Offset in x86-64's `struct pt_regs` of `dx`, followed by `si`, `di` and `orig_ax`, and its
/// size.
const PT_REGS_DX: usize = 96;
const PT_REGS_SIZE: usize = 168;

/// The current thread's system call number and its first three arguments, from the registers
/// it saved at entry: a program at the end of the call (or below it) needs none at its entry.
#[inline(always)]
fn syscall() -> (u64, Io) {
    let stack = task::layout().task_stack;
    if stack == 0 {
        let regs = unsafe { &*(bpf_task_pt_regs(bpf_get_current_task_btf()) as *const SavedRegs) };
        let (number, [fd, buffer, len]) = system_call(regs);
        return (number, Io { fd, buffer, len });
    }
    // Before 5.15 (no bpf_task_pt_regs): where task_pt_regs() finds them, on x86-64 (an arm64
    // kernel that old is refused the socket path by userspace).
    if cfg!(not(bpf_target_arch = "x86_64")) {
        return (
            u64::MAX,
            Io {
                fd: 0,
                buffer: 0,
                len: 0,
            },
        );
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let stack: *const u8 = read_or_zero(task, stack);
    let at = (THREAD_SIZE - PT_REGS_SIZE + PT_REGS_DX) as u32;
    let [len, buffer, fd, number]: [u64; 4] = read_or_zero(stack, at);
    (number, Io { fd, buffer, len })
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
    let (number, io) = syscall();
    (number == RECVFROM || number == READ).then_some(io)
}

/// The send() or write() below a sock tracepoint.
#[inline(always)]
pub fn send() -> Option<Io> {
    let (number, io) = syscall();
    (number == SENDTO || number == WRITE).then_some(io)
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
