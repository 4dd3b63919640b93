//! Why the OOM killer fired: the memory state at a kill, as the kernel's own OOM report shows
//! it but per cgroup and structured, and one verdict from those numbers.
//!
//! The kernel side hands over what must be read at the kill (the failing allocation, the
//! page allocator's retries, the memory cgroup's usage and limit); the rest is read here as
//! the record arrives, a few milliseconds later: page cache, shmem, dirty and writeback pages
//! stay as they were (the OOM reaper frees the victim's anonymous memory only), so anonymous
//! memory at the kill is the usage at the kill less them.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tracer_common::oom::Victim;

use crate::{flags::Names, watermarks::Watermarks};

/// Rows of the top tasks by RSS.
const TOP_TASKS: usize = 5;

/// The memory state at one kill.
#[derive(Serialize)]
pub struct Explanation {
    pub allocation: Allocation,
    /// The memory cgroup whose limit was hit, or the machine for a global OOM.
    pub pool: Pool,
    /// `vm.swappiness`.
    pub vm_swappiness: Option<u64>,
    pub swap_total_kb: u64,
    pub swap_free_kb: u64,
    pub watermarks: Watermarks,
    /// The pool's tasks with the most resident memory, as the record arrived (the victim
    /// may be gone by then).
    pub top_tasks: Vec<TaskRss>,
    pub verdict: String,
}

#[derive(Serialize)]
pub struct Allocation {
    /// The failing allocation's order, where its reclaim was seen.
    pub order: Option<i32>,
    pub gfp: Option<String>,
    /// The page allocator's most reclaim rounds without progress and its compaction retries
    /// (global OOMs; a memory cgroup's charge retries are not traced).
    pub no_progress_loops: u32,
    pub compact_retries: u32,
}

/// A pool of memory (a memory cgroup, or the machine), in KiB.
#[derive(Serialize, Default, Debug, Clone)]
pub struct Pool {
    /// The cgroup's path in the memory hierarchy; absent for the machine.
    pub memcg: Option<String>,
    /// Its limit (the machine: MemTotal).
    pub limit_kb: u64,
    /// Charged at the kill (the machine: MemTotal - MemFree at the kill's read).
    pub usage_kb: u64,
    /// Anonymous memory at the kill: usage less page cache and the kernel's own memory.
    pub anon_kb: u64,
    /// Page cache, shmem included.
    pub file_kb: u64,
    pub shmem_kb: u64,
    pub dirty_kb: u64,
    pub writeback_kb: u64,
    /// Swapped out from it, where the kernel counts it.
    pub swap_kb: Option<u64>,
    /// Its own swappiness (cgroup v1); absent where `vm.swappiness` rules (v2, the machine).
    pub swappiness: Option<u64>,
    /// How long after the kill the rest was read.
    pub read_after_ms: f64,
}

#[derive(Serialize, Debug)]
pub struct TaskRss {
    pub pid: u32,
    pub comm: String,
    pub rss_kb: u64,
}

impl Explanation {
    /// `memcg`: the OOM memcg's path and directory, `None` for a global OOM; `late_ns`: how
    /// long after the kill this runs.
    pub fn read(
        victim: &Victim,
        memcg: Option<(&str, PathBuf)>,
        gfp: &Names,
        late_ns: u64,
    ) -> Self {
        let meminfo = Meminfo::read();
        let mut pool = match &memcg {
            Some((path, dir)) => memcg_pool(path, dir, victim),
            None => meminfo.pool(),
        };
        pool.read_after_ms = late_ns as f64 / 1e6;
        let vm_swappiness = read_number(Path::new("/proc/sys/vm/swappiness"));
        let top_tasks = top_tasks(memcg.as_ref().map(|(_, dir)| dir.as_path()));
        let watermarks = Watermarks::read();
        let allocation = Allocation {
            order: (victim.alloc_order >= 0).then_some(victim.alloc_order),
            gfp: (victim.alloc_order >= 0).then(|| gfp.flags(victim.alloc_gfp)),
            no_progress_loops: victim.no_progress_loops,
            compact_retries: victim.compact_retries,
        };
        let (swap_total_kb, swap_free_kb) = (meminfo.kb("SwapTotal"), meminfo.kb("SwapFree"));
        let verdict = verdict(&pool, vm_swappiness, swap_free_kb, &watermarks);
        Self {
            allocation,
            pool,
            vm_swappiness,
            swap_total_kb,
            swap_free_kb,
            watermarks,
            top_tasks,
            verdict,
        }
    }

    /// The lines under a kill's line in the text output.
    pub fn render(&self) -> String {
        let pool = &self.pool;
        let swappiness = match (pool.swappiness, self.vm_swappiness) {
            (Some(own), _) => format!("swappiness {own} (the cgroup's)"),
            (None, Some(vm)) => format!("swappiness {vm} (vm.swappiness)"),
            (None, None) => "swappiness ?".into(),
        };
        let allocation = match (&self.allocation.order, &self.allocation.gfp) {
            (Some(order), Some(gfp)) => format!("order {order} {gfp}"),
            _ => "not seen".into(),
        };
        let tasks: Vec<String> = self
            .top_tasks
            .iter()
            .map(|task| format!("{} ({}) {}", task.comm, task.pid, kib(task.rss_kb)))
            .collect();
        format!(
            "  allocation: {allocation}; reclaim rounds without progress {}, compaction retries {}\n  \
             {}: limit {} usage {} anon {} file {} (shmem {}, dirty {}, writeback {}){}; {swappiness}; \
             swap free {} of {}\n  top by RSS: {}\n  => {}\n",
            self.allocation.no_progress_loops,
            self.allocation.compact_retries,
            pool.memcg.as_deref().unwrap_or("machine"),
            kib(pool.limit_kb),
            kib(pool.usage_kb),
            kib(pool.anon_kb),
            kib(pool.file_kb),
            kib(pool.shmem_kb),
            kib(pool.dirty_kb),
            kib(pool.writeback_kb),
            pool.swap_kb
                .map(|swap| format!(" swap {}", kib(swap)))
                .unwrap_or_default(),
            kib(self.swap_free_kb),
            kib(self.swap_total_kb),
            if tasks.is_empty() {
                "none left".into()
            } else {
                tasks.join(", ")
            },
            self.verdict,
        )
    }
}

/// One verdict from the numbers, the first that holds: swap free while swappiness 0 kept
/// anonymous and shared memory out of it; page cache that reclaim could not free in time; else
/// what filled the pool.
pub fn verdict(
    pool: &Pool,
    vm_swappiness: Option<u64>,
    swap_free_kb: u64,
    watermarks: &Watermarks,
) -> String {
    let limit = pool.limit_kb.max(1);
    let share = |kb: u64| kb * 100 / limit;
    let swappiness = pool.swappiness.or(vm_swappiness);
    let swap_backed = pool.anon_kb + pool.shmem_kb;
    if swap_free_kb > 0 && swappiness == Some(0) && swap_backed * 2 >= pool.usage_kb {
        let whose = match pool.swappiness {
            Some(_) => "in this cgroup",
            None => "(vm.swappiness)",
        };
        return format!(
            "killed with {} swap free: swappiness 0 {whose} kept anon ({}) and shmem ({}) out of swap",
            kib(swap_free_kb),
            kib(pool.anon_kb),
            kib(pool.shmem_kb),
        );
    }
    let reclaimable = pool.file_kb.saturating_sub(pool.shmem_kb);
    if reclaimable * 10 >= limit {
        return format!(
            "killed with {} of page cache ({} dirty, {} under writeback) that reclaim did not free in time",
            kib(reclaimable),
            kib(pool.dirty_kb),
            kib(pool.writeback_kb),
        );
    }
    match &pool.memcg {
        Some(_) => format!(
            "memcg limit {} reached by anon ({}%); page cache {}",
            kib(pool.limit_kb),
            share(pool.anon_kb),
            kib(pool.file_kb),
        ),
        None => {
            let free: u64 = watermarks.zones.iter().map(|zone| zone.free).sum();
            let min: u64 = watermarks.zones.iter().map(|zone| zone.min).sum();
            format!(
                "the machine ran out: anon {} ({}% of memory), page cache {}, {} swap free; free pages {free} against min {min}",
                kib(pool.anon_kb),
                share(pool.anon_kb),
                kib(pool.file_kb),
                kib(swap_free_kb),
            )
        }
    }
}

/// The OOM memcg's state: usage and limit from the kill's record, the rest from its files.
fn memcg_pool(path: &str, dir: &Path, victim: &Victim) -> Pool {
    let page_kb = page_kb();
    let stat = Stat::read(&dir.join("memory.stat"));
    // cgroup v1 names (hierarchical `total_*`) or v2's (hierarchical already); bytes both.
    let kb = |v1: &str, v2: &str| {
        stat.get(&format!("total_{v1}"))
            .or_else(|| stat.get(v2))
            .unwrap_or(0)
            / 1024
    };
    let file_kb = kb("cache", "file");
    let usage_kb = victim.memcg_usage_pages * page_kb;
    let v2_swap = read_number(&dir.join("memory.swap.current")).map(|bytes| bytes / 1024);
    Pool {
        memcg: Some(path.to_owned()),
        limit_kb: victim.memcg_limit_pages * page_kb,
        usage_kb,
        anon_kb: usage_kb.saturating_sub(file_kb + kb("kernel", "kernel")),
        file_kb,
        shmem_kb: kb("shmem", "shmem"),
        dirty_kb: kb("dirty", "file_dirty"),
        writeback_kb: kb("writeback", "file_writeback"),
        swap_kb: stat.get("total_swap").map(|bytes| bytes / 1024).or(v2_swap),
        swappiness: read_number(&dir.join("memory.swappiness")),
        read_after_ms: 0.0,
    }
}

/// `name value` lines.
struct Stat(Vec<(String, u64)>);

impl Stat {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Self(
            text.lines()
                .filter_map(|line| {
                    let (name, value) = line.split_once(' ')?;
                    Some((name.to_owned(), value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    }
}

/// `/proc/meminfo`, in KiB.
struct Meminfo(Stat);

impl Meminfo {
    fn read() -> Self {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self(Stat(
            text.lines()
                .filter_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    let value = value.trim().trim_end_matches(" kB").parse().ok()?;
                    Some((name.to_owned(), value))
                })
                .collect(),
        ))
    }

    fn kb(&self, name: &str) -> u64 {
        self.0.get(name).unwrap_or(0)
    }

    fn pool(&self) -> Pool {
        let file_kb = self.kb("Cached");
        Pool {
            memcg: None,
            limit_kb: self.kb("MemTotal"),
            usage_kb: self.kb("MemTotal") - self.kb("MemFree"),
            anon_kb: self.kb("AnonPages"),
            file_kb,
            shmem_kb: self.kb("Shmem"),
            dirty_kb: self.kb("Dirty"),
            writeback_kb: self.kb("Writeback"),
            swap_kb: Some(self.kb("SwapTotal") - self.kb("SwapFree")),
            swappiness: None,
            read_after_ms: 0.0,
        }
    }
}

/// The tasks of a memory cgroup and its children (the machine's, for a global OOM) with the
/// most resident memory.
fn top_tasks(memcg_dir: Option<&Path>) -> Vec<TaskRss> {
    let pids: Vec<u32> = match memcg_dir {
        Some(dir) => {
            let mut pids = Vec::new();
            cgroup_pids(dir, 0, &mut pids);
            pids
        }
        None => std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect(),
    };
    let mut tasks: Vec<TaskRss> = pids
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::trim)
            };
            let rss_kb = field("VmRSS:")?.trim_end_matches(" kB").parse().ok()?;
            Some(TaskRss {
                pid,
                comm: field("Name:")?.to_owned(),
                rss_kb,
            })
        })
        .collect();
    tasks.sort_by_key(|task| std::cmp::Reverse(task.rss_kb));
    tasks.truncate(TOP_TASKS);
    tasks
}

fn cgroup_pids(dir: &Path, depth: usize, pids: &mut Vec<u32>) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    pids.extend(
        procs
            .lines()
            .filter_map(|pid| pid.trim().parse::<u32>().ok()),
    );
    if depth >= 16 {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            cgroup_pids(&entry.path(), depth + 1, pids);
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn page_kb() -> u64 {
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } / 1024) as u64
}

pub fn kib(kb: u64) -> String {
    match kb {
        kb if kb >= 1 << 20 => format!("{:.1}GiB", kb as f64 / (1u64 << 20) as f64),
        kb if kb >= 1 << 10 => format!("{:.1}MiB", kb as f64 / 1024.0),
        kb => format!("{kb}KiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memcg(anon_mib: u64, file_mib: u64, shmem_mib: u64, swappiness: Option<u64>) -> Pool {
        Pool {
            memcg: Some("/db".into()),
            limit_kb: 64 << 10,
            usage_kb: (anon_mib + file_mib) << 10,
            anon_kb: anon_mib << 10,
            file_kb: file_mib << 10,
            shmem_kb: shmem_mib << 10,
            swappiness,
            ..Pool::default()
        }
    }

    #[test]
    fn the_verdict_names_what_the_numbers_show() {
        let none = Watermarks::default();
        // Swap free and swappiness 0: the cgroup's own, or the machine's.
        let said = verdict(&memcg(40, 24, 24, Some(0)), Some(60), 512 << 10, &none);
        assert_eq!(
            said,
            "killed with 512.0MiB swap free: swappiness 0 in this cgroup kept anon (40.0MiB) and shmem (24.0MiB) out of swap"
        );
        let said = verdict(&memcg(40, 24, 24, None), Some(0), 512 << 10, &none);
        assert!(said.contains("swappiness 0 (vm.swappiness)"), "{said}");
        // Without swap, swappiness does not matter: anon filled the limit.
        let said = verdict(&memcg(63, 0, 0, Some(0)), Some(60), 0, &none);
        assert_eq!(
            said,
            "memcg limit 64.0MiB reached by anon (98%); page cache 0KiB"
        );
        // Page cache reclaim did not free in time.
        let said = verdict(&memcg(40, 24, 0, Some(60)), Some(60), 0, &none);
        assert!(
            said.starts_with("killed with 24.0MiB of page cache"),
            "{said}"
        );
    }
}
