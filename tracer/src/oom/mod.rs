//! `tracer oom`: every OOM kill, who it hit and why ([`explain`]), and how long its memory took
//! to come back.

mod explain;

use std::{collections::HashMap, io::Write, rc::Rc};

use anyhow::Result;
use prometheus_client::encoding::EncodeLabelSet;
use serde::Serialize;
use tracer_common::{
    oom::{OomLayout, Reaping, Victim, kind},
    task::Task,
};

use crate::manual::Example;
use crate::{
    cgroup::{self, Hierarchy},
    event_loop::{Tool, Window, read_record},
    flags::Names,
    histogram::human_ns,
    kernel_btf::KernelBtf,
    loader::{Kernel, Setting, Tracepoint},
    metrics::{Counters, Labeler, Metrics},
    options::TraceOptions,
    output::{self, Output},
    session::{self, Context, Plan},
    tracefs::Tracefs,
    workload::Workload,
};
use explain::kib;

/// What `tracer --help` and the man page show first.
pub const EXAMPLES: &[Example] = &[
    Example {
        what: "Each OOM kill as it happens, then a summary at Ctrl-C",
        command: "sudo tracer oom",
    },
    Example {
        what: "Kills and a summary every 60 seconds",
        command: "sudo tracer oom 60",
    },
    Example {
        what: "Only kills inside one cgroup and below (a Kubernetes pod's)",
        command: "sudo tracer oom -c /sys/fs/cgroup/kubepods.slice",
    },
    Example {
        what: "Kills of one command name only",
        command: "sudo tracer oom --comm postgres",
    },
    Example {
        what: "NDJSON, one object per kill and per summary, for a log pipeline",
        command: "sudo tracer oom --json",
    },
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Filters select victims: -p their process, -c their cgroup, --comm their name.
    #[command(flatten)]
    pub trace: TraceOptions,
}

const REAPER_ARGS: &[&str] = &["int"];
const REAPER_FIELDS: &[(&str, usize, usize)] = &[("pid", 8, 4)];

const TRACEPOINTS: &[Tracepoint] = &[
    // Before mark_victim, so that the SIGKILL sent to a victim is never missed.
    Tracepoint {
        category: "signal",
        name: "signal_generate",
        program: "signal_generate",
        args: Some(&[
            "int",
            "struct kernel_siginfo *",
            "struct task_struct *",
            "int",
            "int",
        ]),
        fields: &[("sig", 8, 4), ("pid", 36, 4)],
    },
    Tracepoint {
        category: "oom",
        name: "mark_victim",
        program: "mark_victim",
        args: Some(&["struct task_struct *", "uid_t"]),
        fields: &[
            ("pid", 8, 4),
            ("total_vm", 16, 8),
            ("anon_rss", 24, 8),
            ("file_rss", 32, 8),
            ("shmem_rss", 40, 8),
            ("uid", 48, 4),
            ("pgtables", 56, 8),
            ("oom_score_adj", 64, 2),
        ],
    },
    Tracepoint {
        category: "oom",
        name: "start_task_reaping",
        program: "start_task_reaping",
        args: Some(REAPER_ARGS),
        fields: REAPER_FIELDS,
    },
    Tracepoint {
        category: "oom",
        name: "finish_task_reaping",
        program: "finish_task_reaping",
        args: Some(REAPER_ARGS),
        fields: REAPER_FIELDS,
    },
    Tracepoint {
        category: "oom",
        name: "skip_task_reaping",
        program: "skip_task_reaping",
        args: Some(REAPER_ARGS),
        fields: REAPER_FIELDS,
    },
];

/// What the kill's explanation reads of the failing allocation: classic tracepoints, each
/// traced where the kernel has it.
const ALLOCATION_TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_direct_reclaim_begin",
        program: "oom_direct_reclaim_begin",
        args: None,
        fields: &[("order", 8, 4)],
    },
    Tracepoint {
        category: "vmscan",
        name: "mm_vmscan_memcg_reclaim_begin",
        program: "oom_memcg_reclaim_begin",
        args: None,
        fields: &[("order", 8, 4)],
    },
    Tracepoint {
        category: "oom",
        name: "reclaim_retry_zone",
        program: "oom_reclaim_retry",
        args: None,
        fields: &[("no_progress_loops", 48, 4)],
    },
    Tracepoint {
        category: "oom",
        name: "compact_retry",
        program: "oom_compact_retry",
        args: None,
        fields: &[("retries", 20, 4)],
    },
];

pub fn run(args: Args) -> Result<()> {
    let trace = args.trace.clone();
    session::run(&trace, Box::new(args), true)
}

impl Plan for Args {
    fn name(&self) -> &'static str {
        "oom"
    }

    fn records(&self) -> u32 {
        tracer_common::record::tool::OOM
    }

    fn tracepoints(&self) -> Vec<Tracepoint> {
        let mut tracepoints = TRACEPOINTS.to_vec();
        tracepoints.push(process_exit());
        tracepoints
    }

    fn object(&self) -> Option<&'static [u8]> {
        Some(crate::tool_object!("oom"))
    }

    fn settings(&self, kernel: &Kernel) -> Result<Vec<Setting>> {
        Ok(vec![
            Setting::global("OOM_LAYOUT", &layout(&kernel.btf)?),
            Setting::MapSize {
                name: "SIGKILL_SENT",
                size: 4096,
            },
            Setting::MapSize {
                name: "VICTIMS",
                size: 1024,
            },
            Setting::MapSize {
                name: "ALLOCATING",
                size: 4096,
            },
            Setting::global(
                "OOM_GFP_FIELD",
                &crate::direct_reclaim::gfp_field(&kernel.tracefs)?,
            ),
        ])
    }

    fn start(self: Box<Self>, context: &mut Context) -> Result<Box<dyn Tool>> {
        for tracepoint in ALLOCATION_TRACEPOINTS {
            let what = format!("{}:{}", tracepoint.category, tracepoint.name);
            context.attach_or_say(std::slice::from_ref(tracepoint), &what);
        }
        let begin = context
            .kernel
            .tracefs
            .format("vmscan", "mm_vmscan_direct_reclaim_begin")?;
        let memory = Hierarchy::for_memory()?;
        Ok(Box::new(Oom {
            cgroups: cgroup::Names::new(context.hierarchy),
            memcgs: cgroup::Names::new(&memory),
            memory_mount: memory.mount,
            gfp: Names::from_print_fmt(&begin.print_fmt, "__print_flags", "gfp_flags"),
            victims: HashMap::new(),
            window: Totals::default(),
            metrics: None,
        }))
    }
}

/// A victim's exit: `sched_process_exit` says whether the thread group died with it from Linux
/// 6.16; before, the kernel program reads the task's count of live threads.
fn process_exit() -> Tracepoint {
    const SAYS_GROUP_DEAD: Tracepoint = Tracepoint {
        category: "sched",
        name: "sched_process_exit",
        program: "sched_process_exit",
        args: Some(&["struct task_struct *", "bool"]),
        fields: &[("group_dead", 32, 1)],
    };
    const TASK_ONLY: Tracepoint = Tracepoint {
        category: "sched",
        name: "sched_process_exit",
        program: "sched_process_exit_live",
        args: Some(&["struct task_struct *"]),
        fields: &[],
    };
    let says = Tracefs::locate()
        .and_then(|tracefs| tracefs.format("sched", "sched_process_exit"))
        .is_ok_and(|format| format.fields.iter().any(|field| field.name == "group_dead"));
    if says { SAYS_GROUP_DEAD } else { TASK_ONLY }
}

fn layout(btf: &KernelBtf) -> Result<OomLayout> {
    let enumerator = |name: &str| {
        btf.enum_value(name)
            .map(|value| value as u32)
            .ok_or_else(|| anyhow::anyhow!("the kernel's BTF has no {name}"))
    };
    anyhow::ensure!(
        btf.member_offset("mem_cgroup", "css")? == 0,
        "struct mem_cgroup does not begin with its css on this kernel"
    );
    // Linux 6.2+ counts RSS in an array of percpu_counters, older kernels in a struct holding an
    // array of atomics (`percpu_counter` exists there too, for other counts).
    let (rss_stat, stride, count) = match btf.array_stride("mm_struct", "rss_stat") {
        Ok(stride) => (
            btf.member_offset("mm_struct", "rss_stat")?,
            stride,
            btf.member_offset("percpu_counter", "count")?,
        ),
        Err(_) => (
            btf.member_offset("mm_struct", "rss_stat.count")?,
            btf.array_stride("mm_struct", "rss_stat.count")?,
            0,
        ),
    };
    Ok(OomLayout {
        memory_subsys: cgroup::subsystem_id("memory")?,
        memcg_usage: btf.member_offset("mem_cgroup", "memory.usage")?,
        memcg_max: btf.member_offset("mem_cgroup", "memory.max")?,
        css_parent: btf.member_offset("cgroup_subsys_state", "parent")?,
        task_mm: btf.member_offset("task_struct", "mm")?,
        task_signal: btf.member_offset("task_struct", "signal")?,
        signal_oom_score_adj: btf.member_offset("signal_struct", "oom_score_adj")?,
        signal_live: btf.member_offset("signal_struct", "live")?,
        mm_total_vm: btf.member_offset("mm_struct", "total_vm")?,
        mm_pgtables_bytes: btf.member_offset("mm_struct", "pgtables_bytes")?,
        mm_rss_stat: rss_stat,
        rss_stat_stride: stride,
        rss_stat_count: count,
        mm_filepages: enumerator("MM_FILEPAGES")?,
        mm_anonpages: enumerator("MM_ANONPAGES")?,
        mm_shmempages: enumerator("MM_SHMEMPAGES")?,
        page_kb: (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } / 1024) as u32,
    })
}

struct Oom {
    /// Paths in the hierarchy tasks are reported in.
    cgroups: cgroup::Names,
    /// Paths in the memory controller's hierarchy, where limits live.
    memcgs: cgroup::Names,
    memory_mount: std::path::PathBuf,
    gfp: Names,
    /// Victims by thread id (what the reaper reports), until their memory is back.
    victims: HashMap<u32, Killed>,
    window: Totals,
    metrics: Option<KillMetrics>,
}

/// `tracer serve`'s view of kills.
struct KillMetrics {
    kills: Counters<ConstraintLabel>,
    labeler: Labeler,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConstraintLabel {
    constraint: &'static str,
}

#[derive(Clone)]
struct Killed {
    time_ns: u64,
    comm: String,
    reap_start_ns: Option<u64>,
}

#[derive(Default)]
struct Totals {
    kills: u64,
    memcg_kills: u64,
    marked_exiting: u64,
    reaped: u64,
    skipped: u64,
    max_reap_ns: u64,
    /// Victims whose last thread exited, and the longest that took after the kill.
    exited: u64,
    max_exit_ns: u64,
    /// Kills per victim cgroup path.
    by_cgroup: HashMap<String, u64>,
}

impl Tool for Oom {
    fn start(&mut self, _out: &mut Output) -> Result<()> {
        eprintln!("Tracing OOM kills... Hit Ctrl-C to end.");
        Ok(())
    }

    fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.metrics = Some(KillMetrics {
            kills: metrics.counters(
                "tracer_oom_kills",
                "OOM kills, by the victim's workload and constraint: memcg (a memory cgroup's limit) or global",
            ),
            labeler: metrics.labeler(),
        });
    }

    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        match read_record::<u32>(data)? {
            kind::VICTIM => self.victim(read_record(data)?, out),
            kind::REAP_START | kind::REAP_FINISH | kind::REAP_SKIP | kind::EXITED => {
                self.reaping(read_record(data)?, out)
            }
            other => anyhow::bail!("unknown oom record kind {other}"),
        }
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        let totals = std::mem::take(&mut self.window);
        if out.json {
            out.json_line(&SummaryJson {
                r#type: "summary",
                time: output::rfc3339(window.end),
                interval_s: window.length.as_secs_f64(),
                lost: window.lost,
                kills: totals.kills,
                memcg_kills: totals.memcg_kills,
                global_kills: totals.kills - totals.memcg_kills,
                marked_exiting: totals.marked_exiting,
                reaped: totals.reaped,
                reaping_skipped: totals.skipped,
                max_reap_us: totals.max_reap_ns as f64 / 1000.0,
                exited: totals.exited,
                max_exit_us: totals.max_exit_ns as f64 / 1000.0,
                by_cgroup: totals.by_cgroup,
            })?;
            return Ok(());
        }
        writeln!(
            out,
            "{}  {} OOM kills in {:.1}s ({} memcg, {} global); {} victims marked while already exiting; lost: {}",
            output::clock_time(window.end),
            totals.kills,
            window.length.as_secs_f64(),
            totals.memcg_kills,
            totals.kills - totals.memcg_kills,
            totals.marked_exiting,
            window.lost
        )?;
        let mut by_cgroup: Vec<_> = totals.by_cgroup.iter().collect();
        by_cgroup.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (cgroup, kills) in by_cgroup {
            writeln!(out, "  {kills:>5}  {cgroup}")?;
        }
        if totals.exited > 0 {
            writeln!(
                out,
                "Victims gone: {} (the slowest {} after its kill)",
                totals.exited,
                human_ns(totals.max_exit_ns)
            )?;
        }
        if totals.reaped + totals.skipped > 0 {
            writeln!(
                out,
                "OOM reaper: {} reaped (longest {}), {} skipped",
                totals.reaped,
                human_ns(totals.max_reap_ns),
                totals.skipped
            )?;
        }
        Ok(())
    }
}

impl Oom {
    fn victim(&mut self, victim: Victim, out: &mut Output) -> Result<()> {
        let described = |task: &Task, names: &mut cgroup::Names| -> TaskJson {
            let (pid, comm, cgroup_id) = match task.pid {
                // The classic tracepoint names the victim by thread id only.
                0 => from_proc(task.tid),
                pid => (pid, output::comm(&task.comm), task.cgroup_id),
            };
            let cgroup = (cgroup_id != 0).then(|| names.path(cgroup_id));
            TaskJson {
                pid,
                tid: task.tid,
                comm,
                container: cgroup.as_deref().and_then(|path| names.workload(path)),
                cgroup_id,
                cgroup,
            }
        };
        let killed = described(&victim.victim, &mut self.cgroups);
        let trigger = described(&victim.trigger, &mut self.cgroups);
        let oom_memcg = (victim.oom_memcg != 0).then(|| self.memcgs.path(victim.oom_memcg));
        let exiting = victim.killed == 0;
        let explanation = (!exiting).then(|| {
            let memcg = oom_memcg.as_deref().map(|path| {
                let dir = self.memory_mount.join(path.trim_start_matches('/'));
                (path, dir)
            });
            let late_ns = output::monotonic_ns().saturating_sub(victim.time_ns);
            explain::Explanation::read(&victim, memcg, &self.gfp, late_ns)
        });

        let constraint = if oom_memcg.is_some() {
            "memcg"
        } else {
            "global"
        };
        let totals = &mut self.window;
        if exiting {
            totals.marked_exiting += 1;
        } else {
            if let Some(metrics) = &self.metrics {
                let workload = metrics
                    .labeler
                    .labels(killed.cgroup.as_deref().unwrap_or("?"));
                metrics
                    .kills
                    .get(ConstraintLabel { constraint }, workload)
                    .inc();
            }
            totals.kills += 1;
            totals.memcg_kills += oom_memcg.is_some() as u64;
            let cgroup = killed.cgroup.clone().unwrap_or_else(|| "?".into());
            *totals.by_cgroup.entry(cgroup).or_default() += 1;
        }
        self.victims.insert(
            victim.victim.tid,
            Killed {
                time_ns: victim.time_ns,
                comm: killed.comm.clone(),
                reap_start_ns: None,
            },
        );

        let time = out.clock().wall(victim.time_ns);
        if out.json {
            return Ok(out.json_line(&VictimJson {
                r#type: "oom_kill",
                time: output::rfc3339(time),
                constraint,
                oom_memcg_id: victim.oom_memcg,
                oom_memcg,
                killed: !exiting,
                uid: victim.uid,
                total_vm_kb: victim.total_vm_kb,
                anon_rss_kb: victim.anon_rss_kb,
                file_rss_kb: victim.file_rss_kb,
                shmem_rss_kb: victim.shmem_rss_kb,
                pgtables_kb: victim.pgtables_kb,
                oom_score_adj: victim.oom_score_adj,
                victim: killed,
                trigger,
                explanation,
            })?);
        }
        let constraint = match &oom_memcg {
            Some(path) => format!("memcg OOM in {path}"),
            None => "global OOM".into(),
        };
        let action = if exiting { "marked exiting" } else { "killed" };
        writeln!(
            out,
            "{} {constraint}: {action} {} ({}) uid {} cgroup {}{} anon-rss {} file-rss {} shmem-rss {} total-vm {} pgtables {} oom_score_adj {}; triggered by {} ({}) in {}",
            output::clock_time(time),
            killed.pid,
            killed.comm,
            victim.uid,
            killed.cgroup.as_deref().unwrap_or("?"),
            killed
                .container
                .as_deref()
                .map(|container| format!(" container {}", container.shown()))
                .unwrap_or_default(),
            kib(victim.anon_rss_kb),
            kib(victim.file_rss_kb),
            kib(victim.shmem_rss_kb),
            kib(victim.total_vm_kb),
            kib(victim.pgtables_kb),
            victim.oom_score_adj,
            trigger.pid,
            trigger.comm,
            trigger.cgroup.as_deref().unwrap_or("?"),
        )?;
        if let Some(explanation) = explanation {
            write!(out, "{}", explanation.render())?;
        }
        Ok(())
    }

    /// The reaper's progress on a victim, or its exit: the two ways its memory comes back.
    fn reaping(&mut self, reaping: Reaping, out: &mut Output) -> Result<()> {
        let Some(victim) = self.victims.get_mut(&reaping.pid) else {
            // A victim the filters left out, or marked before tracer started.
            return Ok(());
        };
        let since_kill_ns = reaping.time_ns.saturating_sub(victim.time_ns);
        let mut reap_ns = None;
        let outcome = match reaping.kind {
            kind::REAP_START => {
                victim.reap_start_ns = Some(reaping.time_ns);
                return Ok(());
            }
            kind::REAP_FINISH => {
                reap_ns = victim
                    .reap_start_ns
                    .map(|start| reaping.time_ns.saturating_sub(start));
                self.window.reaped += 1;
                self.window.max_reap_ns = self.window.max_reap_ns.max(reap_ns.unwrap_or(0));
                "reaped"
            }
            kind::REAP_SKIP => {
                self.window.skipped += 1;
                "skipped"
            }
            _ => {
                self.window.exited += 1;
                self.window.max_exit_ns = self.window.max_exit_ns.max(since_kill_ns);
                "exited"
            }
        };
        let comm = victim.comm.clone();
        if reaping.kind == kind::EXITED {
            self.victims.remove(&reaping.pid);
        }
        let time = out.clock().wall(reaping.time_ns);
        if out.json {
            return Ok(out.json_line(&AftermathJson {
                r#type: if reaping.kind == kind::EXITED {
                    "oom_exit"
                } else {
                    "oom_reaper"
                },
                time: output::rfc3339(time),
                pid: reaping.pid,
                comm: &comm,
                outcome,
                reap_us: reap_ns.map(|ns| ns as f64 / 1000.0),
                since_kill_us: since_kill_ns as f64 / 1000.0,
            })?);
        }
        let who = format!("{} ({comm})", reaping.pid);
        let after = human_ns(since_kill_ns);
        match (outcome, reap_ns) {
            ("exited", _) => writeln!(
                out,
                "{} {who} exited {after} after the OOM kill",
                output::clock_time(time)
            )?,
            (_, Some(ns)) => writeln!(
                out,
                "{} oom_reaper {outcome} {who} in {}, {after} after the OOM kill",
                output::clock_time(time),
                human_ns(ns)
            )?,
            _ => writeln!(
                out,
                "{} oom_reaper {outcome} {who}, {after} after the OOM kill",
                output::clock_time(time)
            )?,
        }
        Ok(())
    }
}

/// Process id, comm and (not known here) cgroup of a thread, while /proc still has it.
fn from_proc(tid: u32) -> (u32, String, u64) {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_owned())
    };
    let pid = field("Tgid:")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or(tid);
    (pid, field("Name:").unwrap_or_else(|| "?".into()), 0)
}

#[derive(Serialize)]
struct TaskJson {
    pid: u32,
    tid: u32,
    comm: String,
    cgroup_id: u64,
    cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Rc<Workload>>,
}

#[derive(Serialize)]
struct VictimJson {
    r#type: &'static str,
    time: String,
    /// `memcg` when a memory cgroup's limit was hit, else `global`.
    constraint: &'static str,
    oom_memcg_id: u64,
    oom_memcg: Option<String>,
    /// False when the victim was already exiting and only marked.
    killed: bool,
    uid: u32,
    total_vm_kb: u64,
    anon_rss_kb: u64,
    file_rss_kb: u64,
    shmem_rss_kb: u64,
    pgtables_kb: u64,
    oom_score_adj: i16,
    victim: TaskJson,
    trigger: TaskJson,
    /// The memory state at the kill and its verdict (kills only, not marks).
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<explain::Explanation>,
}

#[derive(Serialize)]
struct AftermathJson<'a> {
    r#type: &'static str,
    time: String,
    pid: u32,
    comm: &'a str,
    outcome: &'static str,
    reap_us: Option<f64>,
    since_kill_us: f64,
}

#[derive(Serialize)]
struct SummaryJson {
    r#type: &'static str,
    time: String,
    interval_s: f64,
    lost: u64,
    kills: u64,
    memcg_kills: u64,
    global_kills: u64,
    marked_exiting: u64,
    reaped: u64,
    reaping_skipped: u64,
    max_reap_us: f64,
    exited: u64,
    max_exit_us: f64,
    by_cgroup: HashMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sched_process_exit` before Linux 6.16 (here Debian 13's 6.12): no `group_dead`.
    const EXIT_6_12: &str = "name: sched_process_exit
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d prio=%d\", REC->comm, REC->pid, REC->prio
";

    #[test]
    fn an_exit_record_without_group_dead_is_not_read_as_one() {
        let format = crate::tracefs::Format::parse(EXIT_6_12);
        let refused = format
            .expect_fields(&[("group_dead", 32, 1)])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("no field group_dead"), "{refused}");
    }

    fn oom() -> Oom {
        let nowhere = Hierarchy {
            mount: "/nonexistent".into(),
            v1_subsys: tracer_common::task::TaskLayout::UNIFIED,
        };
        Oom {
            cgroups: cgroup::Names::new(&nowhere),
            memcgs: cgroup::Names::new(&nowhere),
            memory_mount: "/nonexistent".into(),
            gfp: Names::default(),
            victims: HashMap::new(),
            window: Totals::default(),
            metrics: None,
        }
    }

    fn victim(tid: u32, killed: bool, oom_memcg: u64) -> Victim {
        let task = Task {
            pid: tid,
            tid,
            cgroup_id: 0,
            comm: *b"dd\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        Victim {
            kind: kind::VICTIM,
            uid: 0,
            time_ns: 1_000,
            victim: task,
            trigger: task,
            total_vm_kb: 0,
            anon_rss_kb: 0,
            file_rss_kb: 0,
            shmem_rss_kb: 0,
            pgtables_kb: 0,
            oom_memcg,
            oom_score_adj: 0,
            killed: killed as u8,
            _pad: [0; 5],
            alloc_order: 0,
            no_progress_loops: 0,
            compact_retries: 0,
            _pad2: 0,
            alloc_gfp: 0,
            memcg_usage_pages: 0,
            memcg_limit_pages: 0,
        }
    }

    fn event(kind: u32, pid: u32, time_ns: u64) -> Reaping {
        Reaping { kind, pid, time_ns }
    }

    #[test]
    fn follows_victims_until_their_memory_is_back() {
        let (mut oom, mut out) = (oom(), Output::memory());
        oom.victim(victim(7, true, 42), &mut out).unwrap();
        oom.victim(victim(8, false, 0), &mut out).unwrap();
        let written = String::from_utf8(out.take_written()).unwrap();
        assert_eq!(
            written.matches(r#""type":"oom_kill""#).count(),
            2,
            "{written}"
        );
        assert_eq!(
            (
                oom.window.kills,
                oom.window.memcg_kills,
                oom.window.marked_exiting
            ),
            (1, 1, 1)
        );

        // The reaper takes 7's memory, then 7 exits; 8 exits and the reaper skips it.
        oom.reaping(event(kind::REAP_START, 7, 2_001_000), &mut out)
            .unwrap();
        oom.reaping(event(kind::REAP_FINISH, 7, 2_004_000), &mut out)
            .unwrap();
        assert_eq!((oom.window.reaped, oom.window.max_reap_ns), (1, 3_000));
        oom.reaping(event(kind::EXITED, 7, 2_005_000), &mut out)
            .unwrap();
        oom.reaping(event(kind::EXITED, 8, 6_000), &mut out)
            .unwrap();
        assert_eq!((oom.window.exited, oom.window.max_exit_ns), (2, 2_004_000));
        assert!(oom.victims.is_empty());

        // Records about tasks tracer never saw marked are ignored.
        oom.reaping(event(kind::REAP_SKIP, 9, 1), &mut out).unwrap();
        assert_eq!(oom.window.skipped, 0);
    }

    #[test]
    fn prints_sizes() {
        assert_eq!(kib(512), "512KiB");
        assert_eq!(kib(262_144), "256.0MiB");
        assert_eq!(kib(3 << 20), "3.0GiB");
    }
}
