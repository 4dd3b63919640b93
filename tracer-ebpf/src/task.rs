//! The current task: who it is, which cgroup it is in, and whether the user's filters keep it.

use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
    },
};
use tracer_common::task::{CgroupLayout, Filter, Task};

#[unsafe(no_mangle)]
static FILTER: Global<Filter> = Global::new(Filter {
    pid: 0,
    _pad: 0,
    cgroup_id: 0,
    comm: [0; 16],
});

#[unsafe(no_mangle)]
static CGROUP_LAYOUT: Global<CgroupLayout> = Global::new(CgroupLayout {
    v1_subsys: CgroupLayout::UNIFIED,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    css_set_subsys: 0,
    css_cgroup: 0,
    cgroup_parent: 0,
    cgroup_self: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    _pad: 0,
});

/// Deeper cgroup trees than this are not searched by the `--cgroup` filter.
const MAX_CGROUP_DEPTH: usize = 16;

/// The current task, or `None` when the user's filters exclude it.
#[inline(always)]
pub fn current() -> Option<Task> {
    let filter = FILTER.load();
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if filter.pid != 0 && filter.pid != pid {
        return None;
    }
    let comm = bpf_get_current_comm().unwrap_or_default();
    if filter.comm[0] != 0 && filter.comm != comm {
        return None;
    }
    let layout = CGROUP_LAYOUT.load();
    let cgroup = current_cgroup(&layout);
    let cgroup_id = cgroup.map_or(0, |cgroup| cgroup_id(&layout, cgroup));
    if filter.cgroup_id != 0 && !is_under(&layout, cgroup, cgroup_id, filter.cgroup_id) {
        return None;
    }
    Some(Task {
        pid,
        tid: pid_tgid as u32,
        cgroup_id,
        comm,
    })
}

/// The current thread id, for looking up per-thread state.
#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// `struct cgroup *` of the current task in the configured hierarchy.
#[inline(always)]
fn current_cgroup(layout: &CgroupLayout) -> Option<*const u8> {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let css_set = read_ptr(task, layout.task_cgroups)?;
    if layout.v1_subsys == CgroupLayout::UNIFIED {
        read_ptr(css_set, layout.css_set_dfl_cgrp)
    } else {
        let css = read_ptr(css_set, layout.css_set_subsys + 8 * layout.v1_subsys)?;
        read_ptr(css, layout.css_cgroup)
    }
}

#[inline(always)]
fn cgroup_id(layout: &CgroupLayout, cgroup: *const u8) -> u64 {
    read_ptr(cgroup, layout.cgroup_kn)
        .and_then(|kn| read::<u64>(kn, layout.kernfs_node_id))
        .unwrap_or(0)
}

/// Whether `cgroup` (whose id is `id`) is `target` or one of its descendants.
#[inline(always)]
fn is_under(layout: &CgroupLayout, cgroup: Option<*const u8>, id: u64, target: u64) -> bool {
    if id == target {
        return true;
    }
    let Some(mut cgroup) = cgroup else {
        return false;
    };
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

#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }.ok()
}

#[inline(always)]
fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    read::<*const u8>(base, offset).filter(|ptr| !ptr.is_null())
}
