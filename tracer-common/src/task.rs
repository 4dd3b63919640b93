//! Who an event happened to, and which tasks a tool looks at.

pub const COMM_LEN: usize = 16;

/// The task an event belongs to; the kernel side of every tool fills one in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Task {
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Id of the task's cgroup in the hierarchy described by [`CgroupLayout`].
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// Which tasks a tool looks at. Zero fields match everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    /// Only this process (tgid).
    pub pid: u32,
    pub _pad: u32,
    /// Only tasks in this cgroup or below it (cgroup id = inode number of its directory).
    pub cgroup_id: u64,
    /// Only tasks with exactly this comm (NUL-padded).
    pub comm: [u8; COMM_LEN],
}

/// Where the running kernel keeps a task's identity and cgroup: struct member offsets read from
/// its BTF at load time, so the kernel programs need no compiled-in kernel layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskLayout {
    /// Subsystem id of the cgroup v1 hierarchy to use, or [`TaskLayout::UNIFIED`].
    pub v1_subsys: u32,
    /// `task_struct.pid` (the thread id)
    pub task_pid: u32,
    /// `task_struct.tgid` (the process id)
    pub task_tgid: u32,
    /// `task_struct.comm`
    pub task_comm: u32,
    /// `task_struct.cgroups`
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp`
    pub css_set_dfl_cgrp: u32,
    /// `css_set.subsys`
    pub css_set_subsys: u32,
    /// `cgroup_subsys_state.cgroup`
    pub css_cgroup: u32,
    /// `cgroup.self` + `cgroup_subsys_state.parent`
    pub cgroup_parent: u32,
    /// `cgroup.self`
    pub cgroup_self: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id`
    pub kernfs_node_id: u32,
    /// Pids as tracer's own pid namespace numbers them, when it is not the host's (a sidecar
    /// container): its inode number (0: the host's, no translation)...
    pub pidns_ino: u32,
    /// ...and where a task's `struct pid` keeps them: `task_struct.thread_pid`,
    /// `task_struct.group_leader`, `pid.level`, `pid.numbers` (of `struct upid`, this many
    /// bytes apart), `upid.ns`, `pid_namespace.ns.inum`; `upid.nr` is at 0.
    pub task_thread_pid: u32,
    pub task_group_leader: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_ns: u32,
    pub pidns_inum: u32,
    /// 0 where `bpf_task_pt_regs` (Linux 5.15+) finds a system call's saved registers; before,
    /// `task_struct.stack`, at whose top x86-64 saves them.
    pub task_stack: u32,
}

impl TaskLayout {
    /// Use the cgroup v2 (unified) hierarchy.
    pub const UNIFIED: u32 = u32::MAX;
}

plain_old_data!(Task, Filter, TaskLayout);
