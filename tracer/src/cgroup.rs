//! Cgroups, v1 and v2: which hierarchy to report, what `--cgroup PATH` means in the kernel, and
//! the path of a cgroup id seen in an event.
//!
//! A cgroup's id, as the kernel programs read it (`cgroup->kn->id`), is the inode number of its
//! directory in the cgroup filesystem, so userspace maps ids to paths with `stat`.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tracer_common::task::TaskLayout;

use crate::{
    kernel_btf::KernelBtf,
    workload::{Workload, Workloads},
};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// Subsystem id of a v1 hierarchy's first controller, or [`TaskLayout::UNIFIED`].
    pub v1_subsys: u32,
}

/// The cgroup `--cgroup PATH` names.
#[derive(Debug)]
pub struct Target {
    pub hierarchy: Hierarchy,
    pub id: u64,
}

impl Hierarchy {
    /// The hierarchy events are attributed in by default: wherever the memory controller is,
    /// since memory is what tracer's tools are about (v1 `memory`, else the unified hierarchy).
    pub fn for_memory() -> Result<Self> {
        let mounts = mounts()?;
        let subsys = v1_subsystems()?;
        if let Some(mount) = mounts
            .iter()
            .find(|m| m.v1_controllers.iter().any(|c| c == "memory"))
        {
            return mount.hierarchy(&subsys);
        }
        mounts
            .iter()
            .find(|m| m.unified)
            .context("no cgroup filesystem is mounted")?
            .hierarchy(&subsys)
    }

    /// Offsets the kernel programs need to read a task's identity and its cgroup in this
    /// hierarchy (pids as the host numbers them; see `pidns` for a namespace of tracer's own).
    pub fn task_layout(&self, btf: &KernelBtf) -> Result<TaskLayout> {
        let cgroup_self = btf.member_offset("cgroup", "self")?;
        Ok(TaskLayout {
            v1_subsys: self.v1_subsys,
            task_pid: btf.member_offset("task_struct", "pid")?,
            task_tgid: btf.member_offset("task_struct", "tgid")?,
            task_comm: btf.member_offset("task_struct", "comm")?,
            task_cgroups: btf.member_offset("task_struct", "cgroups")?,
            css_set_dfl_cgrp: btf.member_offset("css_set", "dfl_cgrp")?,
            css_set_subsys: btf.member_offset("css_set", "subsys")?,
            css_cgroup: btf.member_offset("cgroup_subsys_state", "cgroup")?,
            cgroup_parent: btf.member_offset("cgroup", "self.parent")?,
            cgroup_self,
            cgroup_kn: btf.member_offset("cgroup", "kn")?,
            kernfs_node_id: btf.member_offset("kernfs_node", "id")?,
            task_stack: if btf.has_task_pt_regs() {
                0
            } else {
                btf.member_offset("task_struct", "stack")?
            },
            ..TaskLayout::default()
        })
    }
}

impl Target {
    pub fn resolve(path: &Path) -> Result<Self> {
        let path = path
            .canonicalize()
            .with_context(|| format!("no such cgroup: {}", path.display()))?;
        let mounts = mounts()?;
        let mount = mounts
            .iter()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .with_context(|| format!("{} is not in a cgroup filesystem", path.display()))?;
        if !path.is_dir() {
            bail!("{} is not a cgroup directory", path.display());
        }
        let hierarchy = mount.hierarchy(&v1_subsystems()?)?;
        let id = std::fs::metadata(&path)?.ino();
        Ok(Self { hierarchy, id })
    }
}

#[derive(Debug)]
pub(crate) struct Mount {
    mount_point: PathBuf,
    unified: bool,
    v1_controllers: Vec<String>,
}

impl Mount {
    fn hierarchy(&self, subsystems: &[String]) -> Result<Hierarchy> {
        let v1_subsys = if self.unified {
            TaskLayout::UNIFIED
        } else {
            let controller = self.v1_controllers.first().with_context(|| {
                format!(
                    "{} is a cgroup v1 hierarchy without controllers, which tracer cannot follow",
                    self.mount_point.display()
                )
            })?;
            subsystems
                .iter()
                .position(|name| name == controller)
                .with_context(|| format!("unknown cgroup controller {controller}"))?
                as u32
        };
        Ok(Hierarchy {
            mount: self.mount_point.clone(),
            v1_subsys,
        })
    }
}

/// Cgroup filesystems, from /proc/self/mountinfo.
fn mounts() -> Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory`
pub(crate) fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = unescape(left.split(' ').nth(4)?);
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let super_options = right.nth(1)?;
    let controllers = |options: &str| -> Vec<String> {
        const NOT_CONTROLLERS: [&str; 6] = [
            "rw",
            "ro",
            "xattr",
            "noprefix",
            "clone_children",
            "cpuset_v2_mode",
        ];
        options
            .split(',')
            .filter(|o| !o.contains('=') && !NOT_CONTROLLERS.contains(o))
            .map(str::to_owned)
            .collect()
    };
    match fstype {
        "cgroup2" => Some(Mount {
            mount_point,
            unified: true,
            v1_controllers: Vec::new(),
        }),
        "cgroup" => Some(Mount {
            mount_point,
            unified: false,
            v1_controllers: controllers(super_options),
        }),
        _ => None,
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// The subsystem id of a controller, e.g. `memory`.
pub fn subsystem_id(controller: &str) -> Result<u32> {
    v1_subsystems()?
        .iter()
        .position(|name| name == controller)
        .map(|id| id as u32)
        .with_context(|| format!("this kernel has no {controller} cgroup controller"))
}

/// Controller names in subsystem-id order: /proc/cgroups lists them that way.
fn v1_subsystems() -> Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/cgroups")?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Paths of cgroup ids in one hierarchy, rescanned when an unknown id shows up (cgroups come
/// and go while tracer runs), at most once a second; and their containers.
pub struct Names {
    root: PathBuf,
    paths: HashMap<u64, String>,
    scanned: Option<Instant>,
    workloads: Workloads,
}

impl Names {
    pub fn new(hierarchy: &Hierarchy) -> Self {
        Self {
            root: hierarchy.mount.clone(),
            paths: HashMap::new(),
            scanned: None,
            workloads: Workloads::default(),
        }
    }

    /// The container of the cgroup at `path`, where it is one.
    pub fn workload(&mut self, path: &str) -> Option<Rc<Workload>> {
        self.workloads.of(path)
    }

    /// The cgroup's path relative to the hierarchy's root (`/` for the root itself), or
    /// `cgroup:<id>` for one that is already gone.
    pub fn path(&mut self, id: u64) -> String {
        if !self.paths.contains_key(&id)
            && self
                .scanned
                .is_none_or(|at| at.elapsed() > Duration::from_secs(1))
        {
            self.scan();
        }
        self.paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup:{id}"))
    }

    fn scan(&mut self) {
        self.scanned = Some(Instant::now());
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let relative = dir.strip_prefix(&self.root).unwrap_or(&dir);
            self.paths
                .insert(meta.ino(), format!("/{}", relative.display()));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            pending.extend(
                entries
                    .flatten()
                    .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|entry| entry.path()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let v1 = parse_mountinfo_line(
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
        )
        .unwrap();
        assert_eq!(v1.mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(v1.v1_controllers, ["memory"]);
        let joint = parse_mountinfo_line(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct,xattr",
        )
        .unwrap();
        assert_eq!(joint.v1_controllers, ["cpu", "cpuacct"]);
        let named = parse_mountinfo_line(
            "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
        )
        .unwrap();
        assert!(named.v1_controllers.is_empty());
        assert!(named.hierarchy(&["memory".into()]).is_err());
        let v2 =
            parse_mountinfo_line("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate")
                .unwrap();
        assert!(v2.unified);
        assert!(parse_mountinfo_line("22 1 0:5 / /proc rw - proc proc rw").is_none());
        let spaced = parse_mountinfo_line("1 2 0:3 / /a\\040b rw - cgroup2 cgroup2 rw").unwrap();
        assert_eq!(spaced.mount_point, Path::new("/a b"));
    }
}
