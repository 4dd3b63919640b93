//! tracer's own pid namespace. In a sidecar container sharing a database's pid namespace (and
//! not the host's), pids the user gives and reads are that namespace's: the kernel programs
//! translate every task's ids into it, from where the running kernel keeps them.

use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, bail};
use tracer_common::task::TaskLayout;

use crate::kernel_btf::KernelBtf;

/// The initial pid namespace's inode number is fixed (PROC_PID_INIT_INO).
const HOST_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

/// Whether tracer runs in the host's pid namespace.
pub fn is_hosts() -> bool {
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|ns| ns.ino() == HOST_PID_NAMESPACE)
}

/// Sets `layout` up to number tasks as tracer's pid namespace does (nothing to do in the
/// host's).
pub fn apply(layout: &mut TaskLayout, btf: &KernelBtf) -> Result<()> {
    let ns = std::fs::metadata("/proc/self/ns/pid").context("cannot read /proc/self/ns/pid")?;
    if ns.ino() == HOST_PID_NAMESPACE {
        return Ok(());
    }
    layout.pidns_ino = ns.ino() as u32;
    layout.task_thread_pid = btf.member_offset("task_struct", "thread_pid")?;
    layout.task_group_leader = btf.member_offset("task_struct", "group_leader")?;
    layout.pid_level = btf.member_offset("pid", "level")?;
    layout.pid_numbers = btf.member_offset("pid", "numbers")?;
    layout.upid_size = btf.array_stride("pid", "numbers")?;
    layout.upid_ns = btf.member_offset("upid", "ns")?;
    layout.pidns_inum = btf.member_offset("pid_namespace", "ns.inum")?;
    if btf.member_offset("upid", "nr")? != 0 {
        bail!("struct upid does not begin with its nr on this kernel");
    }
    Ok(())
}
