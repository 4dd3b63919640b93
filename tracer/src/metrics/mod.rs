//! Prometheus metrics for `tracer serve`, with `prometheus-client`: each tool registers its own
//! and keeps them up to date as its records arrive. Latencies are histograms on tracer's log2
//! layout (bucket bounds 1us, 2us, 4us, ... in seconds), so nothing is re-bucketed.
//!
//! Series labelled by workload are bounded: past `--max-series` per metric, new workloads fold
//! into one series whose labels say `other`, and series of cgroups that are gone are dropped
//! after a grace period; both are counted.

use std::{
    cell::RefCell,
    collections::HashMap,
    hash::Hash,
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder, prometheus_text, text::encode},
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::{Metric, Registry, Unit},
};

use crate::workload::{Workload, Workloads};

mod top;

pub use top::{TopHistograms, TopTotal, key as top_key};

/// Where an event happened: the container, pod and cgroup of the task (or cgroup) involved.
/// Labels with nothing to say (no container, no pod) are left out.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct WorkloadLabels {
    pub container_id: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub runtime: String,
    pub cgroup: String,
}

impl WorkloadLabels {
    /// The series workloads past the cap are folded into.
    pub(crate) fn other() -> Self {
        Self {
            cgroup: "other".into(),
            ..Self::default()
        }
    }

    fn new(cgroup: &str, workload: Option<&Workload>) -> Self {
        let mut labels = Self {
            cgroup: cgroup.to_owned(),
            ..Self::default()
        };
        if let Some(workload) = workload {
            labels.container_id = workload.container_id.clone();
            labels.container = workload.container.clone();
            labels.pod = workload.pod.clone();
            labels.namespace = workload.namespace.clone();
            labels.runtime = workload.runtime.to_owned();
        }
        labels
    }

    /// The labels with something to say, by name.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        let labels = [
            ("container_id", &self.container_id),
            ("container", &self.container),
            ("pod", &self.pod),
            ("namespace", &self.namespace),
            ("runtime", &self.runtime),
            ("cgroup", &self.cgroup),
        ];
        (labels.into_iter())
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| (key, value.as_str()))
            .collect()
    }
}

impl EncodeLabelSet for WorkloadLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        for label in self.pairs() {
            EncodeLabel::encode(&label, encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Labels of a metric's name, for tracer's own bookkeeping metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: String,
}

/// Labels of lost-event counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabel {
    pub tool: String,
}

/// A log2 histogram of seconds: 1us, 2us, 4us ... about 35 minutes.
pub fn log2_seconds() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 2.0, 32))
}

pub type Histograms<L> = PerWorkload<L, Histogram, fn() -> Histogram>;
pub type Counters<L> = PerWorkload<L, Counter>;

/// Every metric `tracer serve` exposes.
pub struct Metrics {
    registry: Registry,
    limits: Rc<Limits>,
    labeler: Labeler,
    per_workload: Vec<Rc<dyn Expiring>>,
    pub lost: Family<ToolLabel, Counter>,
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    resident_bytes: Gauge,
    cpu_seen: f64,
}

struct Limits {
    max_series: usize,
    grace: Duration,
    /// Where cgroup paths are, to tell whether a cgroup is gone.
    cgroup_mount: PathBuf,
    folded: Family<MetricLabel, Counter>,
    dropped: Family<MetricLabel, Counter>,
}

impl Metrics {
    pub fn new(
        max_series: usize,
        grace: Duration,
        cgroup_mount: PathBuf,
        workloads: Workloads,
    ) -> Self {
        let mut registry = Registry::default();
        let limits = Limits {
            max_series,
            grace,
            cgroup_mount,
            folded: Family::default(),
            dropped: Family::default(),
        };
        registry.register(
            "tracer_series_folded",
            "Updates of series past --max-series, folded into the metric's 'other' series",
            limits.folded.clone(),
        );
        registry.register(
            "tracer_series_dropped",
            "Series dropped because their cgroup was gone for the grace period",
            limits.dropped.clone(),
        );
        let lost = Family::<ToolLabel, Counter>::default();
        registry.register(
            "tracer_lost_events",
            "Records a tool's kernel side could not deliver: the ring buffer was full",
            lost.clone(),
        );
        let cpu_seconds = Counter::default();
        registry.register_with_unit(
            "process_cpu",
            "CPU time tracer itself used (user and system)",
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "tracer's own resident memory",
            Unit::Bytes,
            resident_bytes.clone(),
        );
        Self {
            registry,
            limits: Rc::new(limits),
            labeler: Labeler(Rc::new(RefCell::new(workloads))),
            per_workload: Vec::new(),
            lost,
            cpu_seconds,
            resident_bytes,
            cpu_seen: 0.0,
        }
    }

    /// `tracer_tool_up{tool}`: 1 for each tool serve runs, 0 for each it was asked for and
    /// could not start (`/healthz` says why); and `tracer_build_info{version}`.
    pub fn register_health(&mut self, running: &[&str], failed: &[&str]) {
        let up = Family::<ToolLabel, Gauge>::default();
        for (tools, value) in [(running, 1), (failed, 0)] {
            for tool in tools {
                let label = ToolLabel {
                    tool: tool.to_string(),
                };
                up.get_or_create(&label).set(value);
            }
        }
        // Each running tool's lost count from the first scrape, at 0: a series that appears
        // only with the first loss hides it from `increase()`, and changes what a scrape holds.
        for tool in running {
            let label = ToolLabel {
                tool: tool.to_string(),
            };
            self.lost.get_or_create(&label).inc_by(0);
        }
        self.registry.register(
            "tracer_tool_up",
            "Whether each tool serve was asked for runs (1) or could not start (0)",
            up,
        );
        self.registry.register(
            "tracer_build",
            "tracer's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
    }

    /// Workload labels for cgroup paths, shared by every tool.
    pub fn labeler(&self) -> Labeler {
        self.labeler.clone()
    }

    /// A metric whose labels are few by nature (a reason, a device).
    pub fn register<M: Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: M,
    ) -> M {
        match unit {
            Some(unit) => self
                .registry
                .register_with_unit(name, help, unit, metric.clone()),
            None => self.registry.register(name, help, metric.clone()),
        }
        metric
    }

    /// A counter per workload and `L`.
    pub fn counters<L: Labels>(&mut self, name: &str, help: &str) -> Counters<L> {
        self.per_workload(name, help, None, Family::default())
    }

    /// A log2 histogram of seconds per workload and `L`.
    pub fn histograms<L: Labels>(&mut self, name: &str, help: &str) -> Histograms<L> {
        let family = Family::new_with_constructor(log2_seconds as fn() -> Histogram);
        self.per_workload(name, help, Some(Unit::Seconds), family)
    }

    fn per_workload<L: Labels, M, C>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        family: Family<(L, WorkloadLabels), M, C>,
    ) -> PerWorkload<L, M, C>
    where
        M: Metric + Clone,
        C: MetricConstructor<M> + Clone + Send + Sync + 'static,
        Family<(L, WorkloadLabels), M, C>: Metric,
    {
        let family = self.register(name, help, unit, family);
        let series = PerWorkload(Rc::new(Series {
            name: name.to_owned(),
            family,
            seen: RefCell::new(HashMap::new()),
            limits: self.limits.clone(),
        }));
        self.per_workload.push(series.0.clone());
        series
    }

    /// Histograms per workload and query: at most `top` series per workload, each with these
    /// `totals` beside it, the rest as the workload's `other` ([`top`]); as many workloads as
    /// keep the metric within `--max-series`.
    pub fn top_histograms(
        &mut self,
        name: &str,
        help: &str,
        top: usize,
        totals: Vec<TopTotal>,
    ) -> TopHistograms {
        let limits = top::WorkloadLimits {
            max_workloads: (self.limits.max_series / (top + 1)).max(1),
            grace: self.limits.grace,
            cgroup_mount: self.limits.cgroup_mount.clone(),
            folded: self.limits.folded.clone(),
        };
        let histograms = TopHistograms::new(name, help, top, totals, limits);
        self.registry
            .register_collector(Box::new(histograms.clone()));
        histograms
    }

    /// Once a second: tracer's own CPU and memory, and series of workloads that are gone.
    pub fn tick(&mut self) {
        if let Some((cpu, resident)) = own_usage() {
            self.cpu_seconds.inc_by((cpu - self.cpu_seen).max(0.0));
            self.cpu_seen = cpu;
            self.resident_bytes.set(resident as i64);
        }
        for series in &self.per_workload {
            series.expire();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn openmetrics(&self) -> String {
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// The Prometheus text exposition (format 0.0.4), for scrapers that do not ask for
    /// OpenMetrics.
    pub fn prometheus_text(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// Label sets of per-workload metrics.
pub trait Labels:
    Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static
{
}
impl<T: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> Labels for T {}

/// Turns cgroup paths into workload labels, cached.
#[derive(Clone)]
pub struct Labeler(Rc<RefCell<Workloads>>);

impl Labeler {
    pub fn labels(&self, cgroup: &str) -> WorkloadLabels {
        let workload = self.0.borrow_mut().of(cgroup);
        WorkloadLabels::new(cgroup, workload.as_deref())
    }
}

/// One metric's series per workload, bounded.
pub struct PerWorkload<L, M, C = fn() -> M>(Rc<Series<L, M, C>>);

impl<L, M, C> Clone for PerWorkload<L, M, C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

struct Series<L, M, C> {
    name: String,
    family: Family<(L, WorkloadLabels), M, C>,
    /// When each series was last updated.
    seen: RefCell<HashMap<(L, WorkloadLabels), Instant>>,
    limits: Rc<Limits>,
}

impl<L: Labels, M: Clone, C: MetricConstructor<M>> PerWorkload<L, M, C> {
    /// The series of `labels` in `workload`, or the metric's `other` series past the cap.
    pub fn get(&self, labels: L, workload: WorkloadLabels) -> M {
        let series = &self.0;
        let mut seen = series.seen.borrow_mut();
        let mut key = (labels, workload);
        let known = seen.contains_key(&key);
        if !known && seen.len() >= series.limits.max_series {
            series
                .limits
                .folded
                .get_or_create_owned(&MetricLabel {
                    metric: series.name.clone(),
                })
                .inc();
            key.1 = WorkloadLabels::other();
        }
        seen.insert(key.clone(), Instant::now());
        series.family.get_or_create_owned(&key)
    }
}

trait Expiring {
    fn expire(&self);
}

impl<L: Labels, M, C: MetricConstructor<M>> Expiring for Series<L, M, C> {
    fn expire(&self) {
        let limits = &self.limits;
        let gone: Vec<(L, WorkloadLabels)> = self
            .seen
            .borrow()
            .iter()
            .filter(|((_, workload), updated)| {
                updated.elapsed() > limits.grace
                    && workload.cgroup != "other"
                    && !crate::workload::cgroup_exists(&limits.cgroup_mount, &workload.cgroup)
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut seen = self.seen.borrow_mut();
        for key in gone {
            seen.remove(&key);
            self.family.remove(&key);
            limits
                .dropped
                .get_or_create_owned(&MetricLabel {
                    metric: self.name.clone(),
                })
                .inc();
        }
    }
}

/// tracer's CPU seconds and resident bytes, from /proc.
fn own_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc_pid_stat(5), in clock ticks.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Some((ticks / hz, pages * page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Kind {
        kind: String,
    }

    fn metrics(max_series: usize) -> (Metrics, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        let metrics = Metrics::new(
            max_series,
            Duration::ZERO,
            dir.0.clone(),
            Workloads::default(),
        );
        (metrics, dir)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "tracer-metrics-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn kind(kind: &str) -> Kind {
        Kind { kind: kind.into() }
    }

    #[test]
    fn histograms_follow_the_log2_layout() {
        let (mut metrics, dir) = metrics(10);
        std::fs::create_dir(dir.0.join("db")).unwrap();
        let stalls = metrics.histograms::<Kind>("tracer_reclaim_stall", "Stalls");
        let labels = metrics.labeler().labels("/db");
        stalls.get(kind("memcg"), labels.clone()).observe(3e-6);
        stalls.get(kind("memcg"), labels).observe(100e-6);
        let text = metrics.openmetrics();
        assert!(
            text.contains("# TYPE tracer_reclaim_stall_seconds histogram"),
            "{text}"
        );
        let bucket = |le: &str| {
            format!(
                "tracer_reclaim_stall_seconds_bucket{{le=\"{le}\",kind=\"memcg\",cgroup=\"/db\"}}"
            )
        };
        // 3us is in the bucket up to 4us, 100us in the one up to 128us.
        assert!(
            text.contains(&format!("{} 0\n", bucket("0.000002"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1\n", bucket("0.000004"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 2\n", bucket("0.000128"))),
            "{text}"
        );
    }

    #[test]
    fn folds_past_the_cap_and_drops_series_of_cgroups_gone() {
        let (mut metrics, dir) = metrics(2);
        for name in ["a", "b"] {
            std::fs::create_dir(dir.0.join(name)).unwrap();
        }
        let kills = metrics.counters::<Kind>("tracer_oom_kills", "Kills");
        let labeler = metrics.labeler();
        for cgroup in ["/a", "/b", "/c", "/d", "/a"] {
            kills.get(kind("memcg"), labeler.labels(cgroup)).inc();
        }
        let text = metrics.openmetrics();
        assert!(text.contains("cgroup=\"/a\"} 2"), "{text}");
        assert!(text.contains("cgroup=\"other\"} 2"), "{text}");
        assert!(
            text.contains("tracer_series_folded_total{metric=\"tracer_oom_kills\"} 2"),
            "{text}"
        );
        // /c and /d never existed, /b is removed: only /a stays (and the folded series).
        std::fs::remove_dir(dir.0.join("b")).unwrap();
        metrics.tick();
        let text = metrics.openmetrics();
        assert!(!text.contains("cgroup=\"/b\""), "{text}");
        assert!(text.contains("cgroup=\"/a\"} 2"), "{text}");
        assert!(
            text.contains("tracer_series_dropped_total{metric=\"tracer_oom_kills\"} 1"),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
    }
}
