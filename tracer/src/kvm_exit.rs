//! `tracer kvm-exit`: why guests leave the CPU and for how long, which exits reach the VMM in
//! userspace, and which emulated ports and MMIO addresses they hit.

use std::{collections::HashMap, hash::Hash, io::Write, path::Path};

use anyhow::{Result, bail};
use aya::{
    Pod,
    maps::{Map, PerCpuHashMap},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use serde::Serialize;
use tracer_common::kvm_exit::{
    AccessEvent, ExitEvent, ExitKey, ExitStats, HISTOGRAM_BUCKETS, ISA_SVM, ISA_VMX, KvmConfig,
    MmioKey, PioKey, UserspaceKey, Vcpu, kind,
};

use crate::manual::Example;
use crate::{
    event_loop::{Tool, Window, read_record},
    flags::Names,
    histogram::{human_ns, log2_quantile, render_log2},
    loader::{Kernel, Probes, Setting, Tracepoint},
    metrics::Metrics,
    options::TraceOptions,
    output::{self, Align, Output, Table},
    session::{self, Context, Plan},
    tracefs::Tracefs,
};

/// What `tracer --help` and the man page show first.
pub const EXAMPLES: &[Example] = &[
    Example {
        what: "Why guests exit and for how long, per reason, until Ctrl-C",
        command: "sudo tracer kvm-exit",
    },
    Example {
        what: "A summary every 5 seconds",
        command: "sudo tracer kvm-exit 5",
    },
    Example {
        what: "One VM (its QEMU process), one vCPU",
        command: "sudo tracer kvm-exit -p 4242 --vcpu 0",
    },
    Example {
        what: "One line per exit and port/MMIO access",
        command: "sudo tracer kvm-exit --events -d 1",
    },
    Example {
        what: "The 20 noisiest ports and MMIO addresses, as NDJSON",
        command: "sudo tracer kvm-exit --top 20 --json -d 30",
    },
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// -p takes the VM's process (the VMM, e.g. qemu)
    #[command(flatten)]
    pub trace: TraceOptions,
    /// Only this vCPU (its id in the VM)
    #[arg(long, value_name = "ID")]
    pub vcpu: Option<u32>,
    /// Print one line per exit and access instead of summaries
    #[arg(long, conflicts_with = "interval")]
    pub events: bool,
    /// Rows in the port and MMIO tables, and reasons with a histogram
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

const TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        category: "kvm",
        name: "kvm_exit",
        program: "kvm_exit",
        // The reason is not among its BTF arguments; the classic record has it.
        args: None,
        fields: &[("exit_reason", 8, 4), ("isa", 24, 4), ("vcpu_id", 56, 4)],
    },
    Tracepoint {
        category: "kvm",
        name: "kvm_entry",
        program: "kvm_entry",
        args: Some(&["struct kvm_vcpu *", "bool"]),
        fields: &[("vcpu_id", 8, 4)],
    },
    Tracepoint {
        category: "kvm",
        name: "kvm_userspace_exit",
        program: "kvm_userspace_exit",
        args: Some(&["__u32", "int"]),
        fields: &[("reason", 8, 4), ("errno", 12, 4)],
    },
    Tracepoint {
        category: "kvm",
        name: "kvm_pio",
        program: "kvm_pio",
        args: Some(&[
            "unsigned int",
            "unsigned int",
            "unsigned int",
            "unsigned int",
            "void *",
        ]),
        fields: &[("rw", 8, 4), ("port", 12, 4), ("size", 16, 4)],
    },
    Tracepoint {
        category: "kvm",
        name: "kvm_mmio",
        program: "kvm_mmio",
        args: Some(&["int", "int", "u64", "void *"]),
        fields: &[("type", 8, 4), ("len", 12, 4), ("gpa", 16, 8)],
    },
];

pub fn run(args: Args) -> Result<()> {
    let (trace, events) = (args.trace.clone(), args.events);
    session::run(&trace, Box::new(args), events)
}

impl Plan for Args {
    fn name(&self) -> &'static str {
        "kvm-exit"
    }

    fn records(&self) -> u32 {
        tracer_common::record::tool::KVM_EXIT
    }

    fn tracepoints(&self) -> Vec<Tracepoint> {
        TRACEPOINTS.to_vec()
    }

    fn object(&self) -> Option<&'static [u8]> {
        Some(crate::tool_object!("kvm_exit"))
    }

    fn settings(&self, kernel: &Kernel) -> Result<Vec<Setting>> {
        if !Path::new("/dev/kvm").exists() {
            bail!("KVM is not available here: /dev/kvm is missing (is the kvm module loaded?)");
        }
        if let Some(pid) = self.trace.pid {
            require_vm(pid)?;
        }
        let config = KvmConfig {
            vcpu: self.vcpu.unwrap_or(Vcpu::UNKNOWN),
            events: self.events as u32,
            vcpu_id_offset: kernel.btf.member_offset("kvm_vcpu", "vcpu_id")?,
            _pad: 0,
        };
        Ok(vec![Setting::global("KVM_CONFIG", &config)])
    }

    fn start(self: Box<Self>, context: &mut Context) -> Result<Box<dyn Tool>> {
        Ok(Box::new(KvmExit {
            reasons: Reasons::read(&context.kernel.tracefs)?,
            events: self.events,
            top: self.top,
            seen: Counts::default(),
            window: Counts::default(),
            metrics: None,
        }))
    }
}

/// Fails unless `pid` has a KVM VM open.
fn require_vm(pid: u32) -> Result<()> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        bail!("no such process: {pid}");
    };
    let is_vm = fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:kvm-vm")
    });
    if !is_vm {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        bail!(
            "process {pid} ({}) is not a KVM VM: it has no VM open on /dev/kvm",
            comm.trim()
        );
    }
    Ok(())
}

/// Names of exit reasons, from the kernel's own tracepoint formats.
pub struct Reasons {
    vmx: Names,
    svm: Names,
    userspace: Names,
}

impl Reasons {
    fn read(tracefs: &Tracefs) -> Result<Self> {
        let exit = tracefs.format("kvm", "kvm_exit")?.print_fmt;
        let userspace = tracefs.format("kvm", "kvm_userspace_exit")?.print_fmt;
        Ok(Self::from_formats(&exit, &userspace))
    }

    fn from_formats(exit: &str, userspace: &str) -> Self {
        Self {
            vmx: Names::from_print_fmt(exit, "__print_symbolic", "exit_reason & 0xffff"),
            svm: Names::from_print_fmt(exit, "__print_symbolic", "exit_reason"),
            userspace: Names::from_print_fmt(userspace, "__print_symbolic", "reason"),
        }
    }

    /// `PAUSE_INSTRUCTION`, `pause`, `EPT_VIOLATION FAILED_VMENTRY`...
    pub fn exit(&self, isa: u32, reason: u32) -> String {
        match isa {
            ISA_VMX => {
                let name = self.vmx.symbol((reason & 0xffff) as u64);
                if reason & 0x8000_0000 != 0 {
                    format!("{name} FAILED_VMENTRY")
                } else {
                    name
                }
            }
            ISA_SVM => self.svm.symbol32(reason),
            _ => format!("reason {reason}"),
        }
    }

    pub fn userspace(&self, reason: u32) -> String {
        match reason {
            UserspaceKey::ERROR => "error".into(),
            UserspaceKey::RESTART => "restart".into(),
            reason => self.userspace.symbol(reason as u64),
        }
    }

    /// Whether an exit is a PAUSE (pause-loop exiting): a vCPU spinning in the guest.
    fn is_pause(&self, isa: u32, reason: u32) -> bool {
        matches!(
            self.exit(isa, reason).as_str(),
            "PAUSE_INSTRUCTION" | "pause"
        )
    }
}

fn isa_name(isa: u32) -> &'static str {
    match isa {
        ISA_VMX => "VMX",
        ISA_SVM => "SVM",
        _ => "?",
    }
}

/// What the kernel maps hold, summed over CPUs, or the difference of two such readings.
#[derive(Default, Clone)]
struct Counts {
    exits: HashMap<ExitKey, Exits>,
    userspace: HashMap<UserspaceKey, u64>,
    pio: HashMap<PioKey, u64>,
    mmio: HashMap<MmioKey, u64>,
    /// vCPU ids of vCPU threads, where kvm_exit/kvm_entry told them.
    vcpus: HashMap<u32, u32>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Exits {
    exits: u64,
    handled: u64,
    handling_ns: u64,
    handling_log2: [u64; HISTOGRAM_BUCKETS],
}

impl Default for Exits {
    fn default() -> Self {
        Self {
            exits: 0,
            handled: 0,
            handling_ns: 0,
            handling_log2: [0; HISTOGRAM_BUCKETS],
        }
    }
}

impl From<&ExitStats> for Exits {
    fn from(stats: &ExitStats) -> Self {
        Self {
            exits: stats.exits,
            handled: stats.handled,
            handling_ns: stats.handling_ns,
            handling_log2: stats.handling_log2,
        }
    }
}

impl Exits {
    fn add(&mut self, other: &Self) {
        self.exits += other.exits;
        self.handled += other.handled;
        self.handling_ns += other.handling_ns;
        for (total, count) in self.handling_log2.iter_mut().zip(other.handling_log2) {
            *total += count;
        }
    }

    fn minus(&self, earlier: &Self) -> Self {
        let mut handling_log2 = self.handling_log2;
        for (count, before) in handling_log2.iter_mut().zip(earlier.handling_log2) {
            *count -= before.min(*count);
        }
        Self {
            exits: self.exits.saturating_sub(earlier.exits),
            handled: self.handled.saturating_sub(earlier.handled),
            handling_ns: self.handling_ns.saturating_sub(earlier.handling_ns),
            handling_log2,
        }
    }
}

impl Counts {
    fn read(probes: &mut Probes) -> Result<Self> {
        let mut counts = Self::default();
        for (key, values) in per_cpu::<ExitKey, ExitStats>(probes.map_mut("KVM_EXITS")?)? {
            let exits = counts.exits.entry(key).or_default();
            values.iter().for_each(|stats| exits.add(&stats.into()));
        }
        counts.userspace = summed(probes.map_mut("KVM_USERSPACE")?)?;
        counts.pio = summed(probes.map_mut("KVM_PIO")?)?;
        counts.mmio = summed(probes.map_mut("KVM_MMIO")?)?;
        let vcpus: aya::maps::HashMap<_, u32, Vcpu> =
            aya::maps::HashMap::try_from(probes.map_mut("KVM_VCPUS")?)?;
        counts.vcpus = vcpus
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, vcpu)| vcpu.id != Vcpu::UNKNOWN)
            .map(|(tid, vcpu)| (tid, vcpu.id))
            .collect();
        Ok(counts)
    }

    /// What happened since `earlier`.
    fn minus(&self, earlier: &Self) -> Self {
        fn diff<K: Hash + Eq + Copy>(
            now: &HashMap<K, u64>,
            then: &HashMap<K, u64>,
        ) -> HashMap<K, u64> {
            now.iter()
                .map(|(key, count)| {
                    (
                        *key,
                        count.saturating_sub(then.get(key).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, count)| *count > 0)
                .collect()
        }
        Self {
            exits: self
                .exits
                .iter()
                .map(|(key, exits)| {
                    (
                        *key,
                        exits.minus(&earlier.exits.get(key).copied().unwrap_or_default()),
                    )
                })
                .filter(|(_, exits)| exits.exits + exits.handled > 0)
                .collect(),
            userspace: diff(&self.userspace, &earlier.userspace),
            pio: diff(&self.pio, &earlier.pio),
            mmio: diff(&self.mmio, &earlier.mmio),
            vcpus: self.vcpus.clone(),
        }
    }
}

fn per_cpu<K: Pod + Eq + Hash, V: Pod>(map: &mut Map) -> Result<Vec<(K, Vec<V>)>> {
    let map: PerCpuHashMap<_, K, V> = PerCpuHashMap::try_from(map)?;
    map.iter()
        .map(|entry| {
            let (key, values) = entry?;
            Ok((key, values.iter().copied().collect()))
        })
        .collect()
}

fn summed<K: Pod + Eq + Hash>(map: &mut Map) -> Result<HashMap<K, u64>> {
    Ok(per_cpu::<K, u64>(map)?
        .into_iter()
        .map(|(key, values)| (key, values.iter().sum()))
        .collect())
}

struct KvmExit {
    reasons: Reasons,
    events: bool,
    top: usize,
    /// Everything read so far, to take each window's difference from.
    seen: Counts,
    window: Counts,
    metrics: Option<KvmMetrics>,
}

/// `tracer serve`'s view of exits.
struct KvmMetrics {
    exits: Family<ExitLabels, Counter>,
    userspace: Family<ReasonLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    isa: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

impl Tool for KvmExit {
    fn start(&mut self, out: &mut Output) -> Result<()> {
        eprintln!("Tracing KVM exits... Hit Ctrl-C to end.");
        if self.events && !out.json {
            writeln!(
                out,
                "{:<8} {:>7} {:>7} {:>5} {:<14} DETAIL",
                "TIME", "PID", "TID", "VCPU", "EVENT"
            )?;
        }
        Ok(())
    }

    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()> {
        match read_record::<u32>(data)? {
            kind::EXIT => self.print_exit(&read_record(data)?, out),
            kind::USERSPACE | kind::PIO | kind::MMIO => self.print_access(&read_record(data)?, out),
            other => bail!("unknown kvm record kind {other}"),
        }
    }

    fn collect(&mut self, probes: &mut Probes) -> Result<()> {
        let now = Counts::read(probes)?;
        self.window = now.minus(&self.seen);
        self.seen = now;
        if let Some(metrics) = &self.metrics {
            for (key, exits) in &self.window.exits {
                let labels = ExitLabels {
                    isa: isa_name(key.isa),
                    reason: self.reasons.exit(key.isa, key.reason),
                };
                metrics.exits.get_or_create(&labels).inc_by(exits.exits);
            }
            for (key, &count) in &self.window.userspace {
                let reason = self.reasons.userspace(key.reason);
                let labels = ReasonLabel { reason };
                metrics.userspace.get_or_create(&labels).inc_by(count);
            }
        }
        Ok(())
    }

    fn register_metrics(&mut self, metrics: &mut Metrics) {
        self.metrics = Some(KvmMetrics {
            exits: metrics.register(
                "tracer_kvm_exits",
                "VM exits (kvm:kvm_exit), by instruction set (vmx, svm) and exit reason",
                None,
                Family::default(),
            ),
            userspace: metrics.register(
                "tracer_kvm_userspace_exits",
                "Exits to the VMM in userspace (kvm:kvm_userspace_exit), by reason",
                None,
                Family::default(),
            ),
        });
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        let summary = Summary::new(&self.reasons, &self.window, window.length.as_secs_f64());
        if self.events {
            eprintln!(
                "tracer: {} VM exits, {} exits to userspace; lost: {}",
                summary.total_exits, summary.total_userspace, window.lost
            );
            return Ok(());
        }
        if out.json {
            let json = SummaryJson {
                r#type: "summary",
                time: output::rfc3339(window.end),
                interval_s: window.length.as_secs_f64(),
                lost: window.lost,
                summary: &summary,
            };
            return Ok(out.json_line(&json)?);
        }
        summary.print(window, self.top, out)
    }
}

impl KvmExit {
    fn print_exit(&self, event: &ExitEvent, out: &mut Output) -> Result<()> {
        let time = out.clock().wall(event.time_ns);
        let reason = self.reasons.exit(event.exit.isa, event.exit.reason);
        if out.json {
            out.json_line(&ExitEventJson {
                r#type: "exit",
                time: output::rfc3339(time),
                pid: event.exit.pid,
                tid: event.exit.tid,
                vcpu: known(event.vcpu),
                isa: isa_name(event.exit.isa),
                reason: &reason,
                code: event.exit.reason,
                handling_ns: event.handling_ns,
            })?;
        } else {
            writeln!(
                out,
                "{:<8} {:>7} {:>7} {:>5} {:<14} {} {reason} handled in {}",
                output::clock_time(time),
                event.exit.pid,
                event.exit.tid,
                vcpu_label(event.vcpu),
                "exit",
                isa_name(event.exit.isa),
                human_ns(event.handling_ns)
            )?;
        }
        Ok(())
    }

    fn print_access(&self, event: &AccessEvent, out: &mut Output) -> Result<()> {
        let time = out.clock().wall(event.time_ns);
        let vcpu = self
            .seen
            .vcpus
            .get(&event.tid)
            .copied()
            .unwrap_or(Vcpu::UNKNOWN);
        let mut json = AccessEventJson {
            r#type: "",
            time: output::rfc3339(time),
            pid: event.pid,
            tid: event.tid,
            vcpu: known(vcpu),
            reason: None,
            port: None,
            write: None,
            size: None,
            gpa: None,
            kind: None,
            len: None,
        };
        let (name, detail) = match event.kind {
            kind::USERSPACE => {
                let reason = self.reasons.userspace(event.what);
                json.reason = Some(reason.clone());
                ("userspace_exit", reason)
            }
            kind::PIO => {
                (json.port, json.write, json.size) =
                    (Some(event.what), Some(event.detail != 0), Some(event.size));
                (
                    "pio",
                    format!(
                        "{} port {:#x} size {}",
                        direction(event.detail),
                        event.what,
                        event.size
                    ),
                )
            }
            _ => {
                (json.gpa, json.kind, json.len) = (
                    Some(event.gpa),
                    Some(mmio_kind(event.what)),
                    Some(event.detail),
                );
                (
                    "mmio",
                    format!(
                        "{} gpa {:#x} len {}",
                        mmio_kind(event.what),
                        event.gpa,
                        event.detail
                    ),
                )
            }
        };
        if out.json {
            json.r#type = name;
            out.json_line(&json)?;
        } else {
            writeln!(
                out,
                "{:<8} {:>7} {:>7} {:>5} {name:<14} {detail}",
                output::clock_time(time),
                event.pid,
                event.tid,
                vcpu_label(vcpu)
            )?;
        }
        Ok(())
    }
}

fn known(vcpu: u32) -> Option<u32> {
    (vcpu != Vcpu::UNKNOWN).then_some(vcpu)
}

fn vcpu_label(vcpu: u32) -> String {
    known(vcpu).map_or_else(|| "-".into(), |id| id.to_string())
}

fn direction(write: u32) -> &'static str {
    if write != 0 { "write" } else { "read" }
}

fn mmio_kind(kind: u32) -> &'static str {
    match kind {
        0 => "unsatisfied-read",
        1 => "read",
        _ => "write",
    }
}

/// One window's facts, for text and NDJSON alike.
#[derive(Serialize)]
struct Summary {
    total_exits: u64,
    /// PAUSE exits (pause-loop exiting), the classic sign of vCPUs spinning on locks.
    pause_exits: u64,
    exits: Vec<ReasonRow>,
    exits_by_vcpu: Vec<VcpuRow>,
    total_userspace: u64,
    userspace_exits: Vec<UserspaceRow>,
    pio: Vec<PioRow>,
    mmio: Vec<MmioRow>,
}

#[derive(Serialize, Debug)]
struct ReasonRow {
    isa: &'static str,
    reason: String,
    code: u32,
    count: u64,
    rate_per_s: f64,
    share: f64,
    handled: u64,
    mean_ns: u64,
    /// Upper bound of the log2 bucket holding the 99th percentile.
    p99_ns: u64,
    /// Counts per log2 bucket of nanoseconds: index i holds [2^i, 2^(i+1)).
    log2_nsecs: Vec<u64>,
}

#[derive(Serialize)]
struct VcpuRow {
    pid: u32,
    tid: u32,
    vcpu: Option<u32>,
    isa: &'static str,
    reason: String,
    count: u64,
}

#[derive(Serialize)]
struct UserspaceRow {
    pid: u32,
    tid: u32,
    vcpu: Option<u32>,
    reason: String,
    count: u64,
}

#[derive(Serialize)]
struct PioRow {
    pid: u32,
    port: u32,
    write: bool,
    size: u32,
    count: u64,
}

#[derive(Serialize)]
struct MmioRow {
    pid: u32,
    gpa: u64,
    kind: &'static str,
    len: u32,
    count: u64,
}

impl Summary {
    fn new(reasons: &Reasons, counts: &Counts, seconds: f64) -> Self {
        let vcpu = |tid: u32| counts.vcpus.get(&tid).copied();
        let mut by_reason: HashMap<(u32, u32), Exits> = HashMap::new();
        for (key, exits) in &counts.exits {
            by_reason
                .entry((key.isa, key.reason))
                .or_default()
                .add(exits);
        }
        let total_exits: u64 = by_reason.values().map(|exits| exits.exits).sum();
        let mut exits: Vec<ReasonRow> = by_reason
            .iter()
            .map(|(&(isa, code), exits)| ReasonRow {
                isa: isa_name(isa),
                reason: reasons.exit(isa, code),
                code,
                count: exits.exits,
                rate_per_s: exits.exits as f64 / seconds.max(f64::EPSILON),
                share: exits.exits as f64 / total_exits.max(1) as f64,
                handled: exits.handled,
                mean_ns: exits.handling_ns / exits.handled.max(1),
                p99_ns: log2_quantile(&exits.handling_log2, 0.99),
                log2_nsecs: trimmed(&exits.handling_log2),
            })
            .collect();
        exits.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
        let pause_exits = by_reason
            .iter()
            .filter(|((isa, code), _)| reasons.is_pause(*isa, *code))
            .map(|(_, exits)| exits.exits)
            .sum();
        let mut exits_by_vcpu: Vec<VcpuRow> = counts
            .exits
            .iter()
            .map(|(key, exits)| VcpuRow {
                pid: key.pid,
                tid: key.tid,
                vcpu: vcpu(key.tid),
                isa: isa_name(key.isa),
                reason: reasons.exit(key.isa, key.reason),
                count: exits.exits,
            })
            .collect();
        exits_by_vcpu.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then((a.pid, a.tid).cmp(&(b.pid, b.tid)))
        });
        let mut userspace_exits: Vec<UserspaceRow> = counts
            .userspace
            .iter()
            .map(|(key, &count)| UserspaceRow {
                pid: key.pid,
                tid: key.tid,
                vcpu: vcpu(key.tid),
                reason: reasons.userspace(key.reason),
                count,
            })
            .collect();
        userspace_exits.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then((a.pid, a.tid, &a.reason).cmp(&(b.pid, b.tid, &b.reason)))
        });
        let mut pio: Vec<PioRow> = counts
            .pio
            .iter()
            .map(|(key, &count)| PioRow {
                pid: key.pid,
                port: key.port,
                write: key.write != 0,
                size: key.size,
                count,
            })
            .collect();
        pio.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then((a.pid, a.port).cmp(&(b.pid, b.port)))
        });
        let mut mmio: Vec<MmioRow> = counts
            .mmio
            .iter()
            .map(|(key, &count)| MmioRow {
                pid: key.pid,
                gpa: key.gpa,
                kind: mmio_kind(key.kind),
                len: key.len,
                count,
            })
            .collect();
        mmio.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then((a.pid, a.gpa).cmp(&(b.pid, b.gpa)))
        });
        Self {
            total_exits,
            pause_exits,
            exits,
            exits_by_vcpu,
            total_userspace: counts.userspace.values().sum(),
            userspace_exits,
            pio,
            mmio,
        }
    }

    fn print(&self, window: &Window, top: usize, out: &mut Output) -> Result<()> {
        let secs = window.length.as_secs_f64();
        writeln!(
            out,
            "{}  KVM exits in {secs:.1}s; lost: {}",
            output::clock_time(window.end),
            window.lost
        )?;
        if self.total_exits == 0 {
            write!(out, "\nkvm:kvm_exit saw no VM exits")?;
            if self.total_userspace > 0 {
                write!(
                    out,
                    " although vCPUs exited to userspace {} times: this KVM backend does not trace VM exits",
                    self.total_userspace
                )?;
            }
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "\nVM exits (kvm:kvm_exit): {} ({:.0}/s)",
                self.total_exits,
                self.total_exits as f64 / secs
            )?;
            let mut table = Table::new(&[
                ("REASON", Align::Left),
                ("ISA", Align::Left),
                ("EXITS", Align::Right),
                ("RATE/s", Align::Right),
                ("SHARE", Align::Right),
                ("MEAN", Align::Right),
                ("P99", Align::Right),
            ]);
            for row in &self.exits {
                table.row(vec![
                    row.reason.clone(),
                    row.isa.into(),
                    row.count.to_string(),
                    format!("{:.0}", row.rate_per_s),
                    format!("{:.1}%", 100.0 * row.share),
                    human_ns(row.mean_ns),
                    format!("<{}", human_ns(row.p99_ns + 1)),
                ]);
            }
            write!(out, "{}", table.render())?;
            if self.pause_exits > 0 {
                writeln!(
                    out,
                    "PAUSE exits: {} ({:.1}% of exits): vCPUs spinning in the guest (pause-loop exiting; see kvm_intel ple_gap/ple_window)",
                    self.pause_exits,
                    100.0 * self.pause_exits as f64 / self.total_exits as f64
                )?;
            }
            let mut by_vcpu = Table::new(&[
                ("PID", Align::Right),
                ("TID", Align::Right),
                ("VCPU", Align::Right),
                ("EXITS", Align::Right),
                ("REASON", Align::Left),
            ]);
            for row in self.exits_by_vcpu.iter().take(top) {
                by_vcpu.row(vec![
                    row.pid.to_string(),
                    row.tid.to_string(),
                    row.vcpu.map_or("-".into(), |id| id.to_string()),
                    row.count.to_string(),
                    row.reason.clone(),
                ]);
            }
            write!(out, "\nBy VM and vCPU:\n{}", by_vcpu.render())?;
            for row in self.exits.iter().take(3) {
                writeln!(
                    out,
                    "\nHandling time of {} exits (exit to next entry):",
                    row.reason
                )?;
                write!(out, "{}", render_log2(&row.log2_nsecs, "nsecs"))?;
            }
        }
        if self.total_userspace == 0 {
            writeln!(out, "\nNo exits to userspace.")?;
            return Ok(());
        }
        writeln!(
            out,
            "\nExits to userspace (kvm:kvm_userspace_exit): {}",
            self.total_userspace
        )?;
        let mut table = Table::new(&[
            ("PID", Align::Right),
            ("TID", Align::Right),
            ("VCPU", Align::Right),
            ("EXITS", Align::Right),
            ("REASON", Align::Left),
        ]);
        for row in &self.userspace_exits {
            table.row(vec![
                row.pid.to_string(),
                row.tid.to_string(),
                row.vcpu.map_or("-".into(), |id| id.to_string()),
                row.count.to_string(),
                row.reason.clone(),
            ]);
        }
        write!(out, "{}", table.render())?;
        if !self.pio.is_empty() {
            let mut table = Table::new(&[
                ("PORT", Align::Right),
                ("DIR", Align::Left),
                ("SIZE", Align::Right),
                ("ACCESSES", Align::Right),
                ("PID", Align::Right),
            ]);
            for row in self.pio.iter().take(top) {
                table.row(vec![
                    format!("{:#x}", row.port),
                    direction(row.write as u32).into(),
                    row.size.to_string(),
                    row.count.to_string(),
                    row.pid.to_string(),
                ]);
            }
            write!(
                out,
                "\nPort I/O (kvm:kvm_pio), top {top}:\n{}",
                table.render()
            )?;
        }
        if !self.mmio.is_empty() {
            let mut table = Table::new(&[
                ("GPA", Align::Right),
                ("KIND", Align::Left),
                ("LEN", Align::Right),
                ("ACCESSES", Align::Right),
                ("PID", Align::Right),
            ]);
            for row in self.mmio.iter().take(top) {
                table.row(vec![
                    format!("{:#x}", row.gpa),
                    row.kind.into(),
                    row.len.to_string(),
                    row.count.to_string(),
                    row.pid.to_string(),
                ]);
            }
            write!(out, "\nMMIO (kvm:kvm_mmio), top {top}:\n{}", table.render())?;
        }
        Ok(())
    }
}

/// Buckets up to the last non-empty one.
fn trimmed(buckets: &[u64]) -> Vec<u64> {
    let used = buckets
        .iter()
        .rposition(|&count| count > 0)
        .map_or(0, |i| i + 1);
    buckets[..used].to_vec()
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    r#type: &'static str,
    time: String,
    interval_s: f64,
    lost: u64,
    #[serde(flatten)]
    summary: &'a Summary,
}

#[derive(Serialize)]
struct ExitEventJson<'a> {
    r#type: &'static str,
    time: String,
    pid: u32,
    tid: u32,
    vcpu: Option<u32>,
    isa: &'static str,
    reason: &'a str,
    code: u32,
    handling_ns: u64,
}

/// An exit to userspace (`reason`), a port access (`port`, `write`, `size`) or an MMIO access
/// (`gpa`, `kind`, `len`).
#[derive(Serialize)]
struct AccessEventJson {
    r#type: &'static str,
    time: String,
    pid: u32,
    tid: u32,
    vcpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    write: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpa: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    len: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own formats, as Linux 6.18 has them.
    fn reasons() -> Reasons {
        let print_fmt = |format: &str| {
            format
                .lines()
                .find_map(|line| line.strip_prefix("print fmt: "))
                .expect("a print fmt")
                .to_owned()
        };
        Reasons::from_formats(
            &print_fmt(include_str!("../fixtures/kvm_exit.format")),
            &print_fmt(include_str!("../fixtures/kvm_userspace_exit.format")),
        )
    }

    #[test]
    fn decodes_vmx_and_svm_reasons() {
        let reasons = reasons();
        assert_eq!(reasons.exit(ISA_VMX, 40), "PAUSE_INSTRUCTION");
        assert_eq!(reasons.exit(ISA_VMX, 48), "EPT_VIOLATION");
        assert_eq!(reasons.exit(ISA_VMX, 12), "HLT");
        assert_eq!(
            reasons.exit(ISA_VMX, 0x8000_0021),
            "INVALID_STATE FAILED_VMENTRY"
        );
        assert_eq!(reasons.exit(ISA_SVM, 0x77), "pause");
        assert_eq!(reasons.exit(ISA_SVM, 0x040 + 14), "PF excp");
        assert_eq!(reasons.exit(ISA_SVM, 0x400), "npf");
        assert_eq!(reasons.exit(ISA_SVM, 0x8000_0001), "vmgexit_mmio_read");
        assert_eq!(reasons.exit(ISA_SVM, u32::MAX), "invalid_guest_state");
        assert_eq!(reasons.exit(ISA_VMX, 999), "999");
        assert!(reasons.is_pause(ISA_VMX, 40) && reasons.is_pause(ISA_SVM, 0x77));
        assert!(!reasons.is_pause(ISA_VMX, 12));
    }

    #[test]
    fn decodes_userspace_exits() {
        let reasons = reasons();
        assert_eq!(reasons.userspace(2), "KVM_EXIT_IO");
        assert_eq!(reasons.userspace(5), "KVM_EXIT_HLT");
        assert_eq!(reasons.userspace(6), "KVM_EXIT_MMIO");
        assert_eq!(reasons.userspace(UserspaceKey::RESTART), "restart");
    }

    fn stats(exits: u64, handling: &[(usize, u64)]) -> ExitStats {
        let mut stats = ExitStats {
            exits,
            handled: 0,
            handling_ns: 0,
            handling_log2: [0; HISTOGRAM_BUCKETS],
        };
        for &(bucket, count) in handling {
            stats.handled += count;
            stats.handling_ns += count * (1 << bucket);
            stats.handling_log2[bucket] += count;
        }
        stats
    }

    #[test]
    fn aggregates_per_cpu_readings_into_a_reason_table() {
        let reasons = reasons();
        let key = |tid, reason| ExitKey {
            pid: 100,
            tid,
            isa: ISA_VMX,
            reason,
        };
        // Two vCPUs, each read from two CPUs, as the kernel's per-CPU maps hand them over.
        let readings = [
            (
                key(101, 40),
                [stats(600, &[(9, 590), (12, 10)]), stats(300, &[(9, 300)])],
            ),
            (key(102, 40), [stats(100, &[(10, 100)]), stats(0, &[])]),
            (
                key(102, 48),
                [stats(50, &[(11, 49)]), stats(50, &[(11, 50)])],
            ),
        ];
        let mut counts = Counts::default();
        for (key, per_cpu) in readings {
            let exits = counts.exits.entry(key).or_default();
            per_cpu.iter().for_each(|stats| exits.add(&stats.into()));
        }
        counts.vcpus.insert(101, 0);
        let summary = Summary::new(&reasons, &counts, 2.0);
        assert_eq!((summary.total_exits, summary.pause_exits), (1100, 1000));
        let pause = &summary.exits[0];
        assert_eq!(
            (pause.reason.as_str(), pause.count, pause.handled),
            ("PAUSE_INSTRUCTION", 1000, 1000)
        );
        assert_eq!((pause.rate_per_s, pause.share), (500.0, 1000.0 / 1100.0));
        assert_eq!(
            pause.mean_ns,
            (590 * 512 + 10 * 4096 + 300 * 512 + 100 * 1024) / 1000
        );
        // 99% of 1000 falls in the 1024-2047 ns bucket.
        assert_eq!(pause.p99_ns, 2047);
        assert_eq!(summary.exits[1].reason, "EPT_VIOLATION");
        assert_eq!(
            summary.exits[1].handled, 99,
            "an exit whose entry was not seen yet"
        );
        let first = &summary.exits_by_vcpu[0];
        assert_eq!((first.tid, first.vcpu, first.count), (101, Some(0), 900));
    }

    #[test]
    fn takes_differences_between_readings() {
        let key = ExitKey {
            pid: 1,
            tid: 2,
            isa: ISA_SVM,
            reason: 0x77,
        };
        let mut earlier = Counts::default();
        earlier
            .exits
            .entry(key)
            .or_default()
            .add(&(&stats(10, &[(5, 10)])).into());
        earlier.pio.insert(
            PioKey {
                pid: 1,
                port: 0x3f8,
                write: 1,
                size: 1,
            },
            4,
        );
        let mut now = earlier.clone();
        now.exits
            .get_mut(&key)
            .unwrap()
            .add(&(&stats(5, &[(6, 4)])).into());
        *now.pio.values_mut().next().unwrap() += 3;
        let window = now.minus(&earlier);
        let exits = window.exits[&key];
        assert_eq!(
            (
                exits.exits,
                exits.handled,
                exits.handling_log2[5],
                exits.handling_log2[6]
            ),
            (5, 4, 0, 4)
        );
        assert_eq!(window.pio.values().copied().collect::<Vec<_>>(), [3]);
        // Nothing new, nothing listed.
        assert!(now.minus(&now).exits.is_empty() && now.minus(&now).pio.is_empty());
    }
}
