//! The tracepoints that show a server's socket receives and sends: `sock:sock_recv_length` and
//! `sock:sock_send_length` from Linux 6.3, else the system calls a server makes, recv() and
//! send(). Enabling a system-call tracepoint takes every system call on the machine through the
//! slower path of traced ones; the sock tracepoints cost nothing where nobody listens.

use anyhow::Result;

use crate::{
    loader::{Kernel, Probes, Tracepoint},
    tracefs::Tracefs,
};

const SOCK_LENGTH_ARGS: &[&str] = &["struct sock *", "int", "int"];

/// Whether this kernel has the sock tracepoints (and they are wanted).
pub fn sock_tracepoints(via_syscalls: bool) -> Result<bool> {
    Ok(!via_syscalls
        && Tracefs::locate()?
            .format("sock", "sock_recv_length")
            .is_ok())
}

/// Receives: `program` on the sock tracepoint, or `syscall_program` at recvfrom()'s end.
pub fn receive(sock: bool, program: &'static str, syscall_program: &'static str) -> Tracepoint {
    if sock {
        Tracepoint {
            category: "sock",
            name: "sock_recv_length",
            program,
            args: Some(SOCK_LENGTH_ARGS),
            fields: &[("ret", 20, 4)],
        }
    } else {
        Tracepoint {
            category: "syscalls",
            name: "sys_exit_recvfrom",
            program: syscall_program,
            args: None,
            fields: &[("ret", 16, 8)],
        }
    }
}

/// Sends: `program` on the sock tracepoint, or `syscall_program` at sendto()'s start.
pub fn send(sock: bool, program: &'static str, syscall_program: &'static str) -> Tracepoint {
    if sock {
        Tracepoint {
            category: "sock",
            name: "sock_send_length",
            program,
            args: Some(SOCK_LENGTH_ARGS),
            fields: &[("ret", 20, 4)],
        }
    } else {
        Tracepoint {
            category: "syscalls",
            name: "sys_enter_sendto",
            program: syscall_program,
            args: None,
            fields: &[("fd", 16, 8), ("buff", 24, 8), ("len", 32, 8)],
        }
    }
}

/// Where the programs find the system call's registers on a kernel without
/// `bpf_task_pt_regs` (before 5.15): said with -v on x86-64; arm64's are not read there.
pub fn check_registers(kernel: &Kernel, probes: &Probes) -> Result<()> {
    if kernel.btf.has_task_pt_regs() {
        return Ok(());
    }
    if cfg!(target_arch = "aarch64") {
        anyhow::bail!(
            "requests are read off sockets on arm64 from Linux 5.15 (bpf_task_pt_regs): use \
             --via probes"
        );
    }
    probes.say(format_args!(
        "system call registers read at the top of the task's stack (no bpf_task_pt_regs before \
         5.15)"
    ));
    Ok(())
}
