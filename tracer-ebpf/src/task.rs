//! Tasks: who they are, which cgroup they are in, and whether the user's filters keep them.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task},
};
use tracer_common::task::{COMM_LEN, Filter, Task, TaskLayout};

use crate::kernel::{read, read_bytes, read_or_zero, read_ptr};

#[unsafe(no_mangle)]
static FILTER: Global<Filter> = Global::new(unsafe { core::mem::zeroed() });

#[unsafe(no_mangle)]
static TASK_LAYOUT: Global<TaskLayout> = Global::new(unsafe { core::mem::zeroed() });

/// Deeper cgroup trees than this are not searched by the `--cgroup` filter.
const MAX_CGROUP_DEPTH: usize = 16;

/// The current task, or `None` when the user's filters exclude it.
#[inline(always)]
pub fn current() -> Option<Task> {
    let (pid, tid) = current_pid_tid()?;
    let task = unsafe { bpf_get_current_task() } as *const u8;
    identify(pid, tid, task, true, || {
        bpf_get_current_comm().unwrap_or_default()
    })
}

/// Process and thread ids of the current task, or `None` when the filters exclude it; cheap
/// where only `-p` is set, for paths that run millions of times a second.
#[inline(always)]
pub fn current_ids() -> Option<(u32, u32)> {
    let filter = FILTER.load();
    let (pid, tid) = current_pid_tid()?;
    if filter.pid != 0 && filter.pid != pid {
        return None;
    }
    if filter.comm[0] != 0 || filter.cgroup_id != 0 {
        current()?;
    }
    Some((pid, tid))
}

/// The current task, whatever the filters say (pids 0 outside tracer's pid namespace).
#[inline(always)]
pub fn current_unfiltered() -> Task {
    let (pid, tid) = current_pid_tid().unwrap_or_default();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let comm = || bpf_get_current_comm().unwrap_or_default();
    identify(pid, tid, task, false, comm).unwrap_or_default()
}

/// The task at `task` (a `struct task_struct *`), or `None` when the filters exclude it.
#[inline(always)]
pub fn of(task: *const u8) -> Option<Task> {
    let layout = TASK_LAYOUT.load();
    let (pid, tid) = ids_of(task)?;
    identify(pid, tid, task, true, || {
        let mut comm = [0u8; COMM_LEN];
        read_bytes(task, layout.task_comm, &mut comm);
        comm
    })
}

/// The current thread id, for looking up per-thread state (0 outside tracer's pid namespace).
#[inline(always)]
pub fn current_tid() -> u32 {
    current_pid_tid().map_or(0, |(_, tid)| tid)
}

/// Process and thread ids of the current task as tracer's pid namespace numbers them; `None`
/// for a task outside it (a sidecar sees its own namespace's processes only).
#[inline(always)]
pub fn current_pid_tid() -> Option<(u32, u32)> {
    if TASK_LAYOUT.load().pidns_ino == 0 {
        let pid_tgid = bpf_get_current_pid_tgid();
        return Some(((pid_tgid >> 32) as u32, pid_tgid as u32));
    }
    ids_of(unsafe { bpf_get_current_task() } as *const u8)
}

/// Process and thread ids of the task at `task`, as [`current_pid_tid`] gives them.
#[inline(always)]
pub fn ids_of(task: *const u8) -> Option<(u32, u32)> {
    let layout = TASK_LAYOUT.load();
    if layout.pidns_ino == 0 {
        return Some((
            read::<u32>(task, layout.task_tgid)?,
            read::<u32>(task, layout.task_pid)?,
        ));
    }
    let tid = namespace_nr(&layout, read_ptr(task, layout.task_thread_pid)?)?;
    let leader = read_ptr(task, layout.task_group_leader)?;
    let pid = namespace_nr(&layout, read_ptr(leader, layout.task_thread_pid)?)?;
    Some((pid, tid))
}

/// Pid namespaces below the host's searched for tracer's (containers are one or two deep).
const MAX_PIDNS_DEPTH: u32 = 8;

/// The number a `struct pid *` has in tracer's pid namespace, if it has one there: a pid holds
/// a number per namespace from the host's down to its own, each with its namespace. (Userspace
/// cannot tell how deep its own namespace is: ancestors are out of its sight.)
#[inline(always)]
fn namespace_nr(layout: &TaskLayout, pid: *const u8) -> Option<u32> {
    let deepest = read::<u32>(pid, layout.pid_level)?.min(MAX_PIDNS_DEPTH);
    for level in 1..=MAX_PIDNS_DEPTH {
        if level > deepest {
            break;
        }
        let upid = layout.pid_numbers + level * layout.upid_size;
        let namespace = read_ptr(pid, upid + layout.upid_ns)?;
        if read::<u32>(namespace, layout.pidns_inum)? == layout.pidns_ino {
            return read::<u32>(pid, upid);
        }
    }
    None
}

#[inline(always)]
fn identify(
    pid: u32,
    tid: u32,
    task: *const u8,
    filtered: bool,
    comm: impl FnOnce() -> [u8; COMM_LEN],
) -> Option<Task> {
    let filter = FILTER.load();
    if filtered && filter.pid != 0 && filter.pid != pid {
        return None;
    }
    let comm = comm();
    if filtered && filter.comm[0] != 0 && filter.comm != comm {
        return None;
    }
    let layout = TASK_LAYOUT.load();
    let cgroup = cgroup_of(&layout, task);
    let cgroup_id = cgroup_id(&layout, cgroup);
    if filtered && filter.cgroup_id != 0 && !is_under(&layout, cgroup, cgroup_id, filter.cgroup_id)
    {
        return None;
    }
    Some(Task {
        pid,
        tid,
        cgroup_id,
        comm,
    })
}

/// The id of the current task's cgroup in the configured hierarchy (0 if unreadable).
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    let layout = TASK_LAYOUT.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    cgroup_id(&layout, cgroup_of(&layout, task))
}

/// `struct cgroup *` of `task` in the configured hierarchy (null if unreadable).
#[inline(always)]
fn cgroup_of(layout: &TaskLayout, task: *const u8) -> *const u8 {
    if layout.v1_subsys == TaskLayout::UNIFIED {
        let css_set: *const u8 = read_or_zero(task, layout.task_cgroups);
        read_or_zero(css_set, layout.css_set_dfl_cgrp)
    } else {
        read_or_zero(
            subsys_state(layout, task, layout.v1_subsys),
            layout.css_cgroup,
        )
    }
}

/// `task->cgroups->subsys[subsys]`: the task's state in one controller (for the memory
/// controller, its `struct mem_cgroup *`); null if unreadable.
#[inline(always)]
pub fn subsys_state(layout: &TaskLayout, task: *const u8, subsys: u32) -> *const u8 {
    let css_set: *const u8 = read_or_zero(task, layout.task_cgroups);
    read_or_zero(css_set, layout.css_set_subsys + 8 * subsys)
}

pub fn layout() -> TaskLayout {
    TASK_LAYOUT.load()
}

/// The id (kernfs inode number) of a `struct cgroup *`; 0 if unreadable (reads through a null
/// pointer fail and give 0).
#[inline(always)]
pub fn cgroup_id(layout: &TaskLayout, cgroup: *const u8) -> u64 {
    let kn: *const u8 = read_or_zero(cgroup, layout.cgroup_kn);
    read_or_zero(kn, layout.kernfs_node_id)
}

/// Whether `cgroup` (whose id is `id`) is `target` or one of its descendants.
#[inline(always)]
fn is_under(layout: &TaskLayout, mut cgroup: *const u8, id: u64, target: u64) -> bool {
    if id == target {
        return true;
    }
    if cgroup.is_null() {
        return false;
    }
    for _ in 0..MAX_CGROUP_DEPTH {
        // `cgroup.self.parent` points at the parent's embedded `self` css.
        let Some(parent_css) = read_ptr(cgroup, layout.cgroup_parent) else {
            return false;
        };
        cgroup = parent_css.wrapping_sub(layout.cgroup_self as usize);
        if cgroup_id(layout, cgroup) == target {
            return true;
        }
    }
    false
}
