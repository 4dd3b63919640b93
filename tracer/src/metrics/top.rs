//! Per-query series for `tracer serve`: histograms per normalized query, too many to export
//! each, in bounded memory whatever the number of distinct queries.
//!
//! Each workload (the server's cgroup: a pod's container, a systemd unit) has a table of its
//! own, so that a busy pod cannot push a quiet one's queries out; a table's key is a query with
//! the database and user that ran it. In each table, at most `top` keys have series of their
//! own, the rest go to the workload's `other`. Series are stable: a query keeps its series
//! until one far busier, and seen more than once, takes its place (its counts then go to
//! `other`), and every counter only grows. Who deserves a series is judged from recent time
//! (halved every minute), kept for a bounded number of queries with the space-saving algorithm
//! (Metwally et al., 2005): when the table is full, a new query takes the place of the one with
//! the least time, inheriting that time as its error, so that no query busier than 1/capacity
//! of the time of all is lost from it.
//!
//! The calls of a query without a series wait beside its time until the next scrape, which
//! first gives series to queries far busier than series holders (their waiting calls become
//! the start of their series) and then moves every call still waiting to `other`: each scrape
//! shows every call, and a busy query that arrives between two scrapes is counted exactly from
//! its first call.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::Counter, family::Family},
    registry::Unit,
};

use super::{MetricLabel, WorkloadLabels};

/// Queries without a series whose recent time is tracked, per series exported: each
/// workload's least.
const CANDIDATES_PER_SERIES: usize = 50;
/// Queries without a series tracked in all workloads together, shared among them where that
/// gives each more than its least: the longer a new query is kept, the surer its first calls
/// stay its own when it proves busy (a flood of one-call shapes churns the table).
const CANDIDATE_BUDGET: usize = 10_000;
/// The share of a full candidate table that goes at once (its least busy), so that finding
/// them is paid once per many new queries.
const EVICTED_SHARE: usize = 10;
/// A query takes the place of the least busy series once it has this many times its recent time:
/// series do not come and go with every scrape.
const TAKEOVER: f64 = 2.0;
/// Recent time halves this often.
const HALF_LIFE_SECS: f64 = 60.0;

/// Log2 histograms of seconds per workload and key, each with its totals.
#[derive(Clone, Debug)]
pub struct TopHistograms(Arc<TopTable>);

#[derive(Debug)]
struct TopTable {
    name: String,
    help: String,
    top: usize,
    totals: Vec<TopTotal>,
    limits: WorkloadLimits,
    workloads: Mutex<HashMap<u64, WorkloadTable>>,
}

/// How many workloads have tables (past it, new ones share one whose labels say `other`), and
/// when the table of a cgroup that is gone goes.
#[derive(Debug)]
pub(super) struct WorkloadLimits {
    pub max_workloads: usize,
    pub grace: Duration,
    pub cgroup_mount: PathBuf,
    /// Updates past `max_workloads`, by metric.
    pub folded: Family<MetricLabel, Counter>,
}

/// The place of the workloads past the cap.
const OTHER_WORKLOAD: u64 = u64::MAX;

#[derive(Debug)]
struct WorkloadTable {
    labels: WorkloadLabels,
    updated: Instant,
    state: State,
}

/// The labels a key stands for: `database`, `user` and the query, as [`key`] joined them.
const LABELS: [&str; 3] = ["database", "user", "query"];

/// A table's key: the query run, in `database` by `user` (either empty where unknown).
pub fn key(buffer: &mut String, database: &str, user: &str, query: &str) {
    buffer.clear();
    for part in [database, "\0", user, "\0", query] {
        buffer.push_str(part);
    }
}

#[derive(Debug)]
struct State {
    /// The queries with series, at most `top`.
    exported: HashMap<Arc<str>, Exported>,
    other: TopSeries,
    /// Queries without a series, at most its workload's share of [`CANDIDATE_BUDGET`].
    candidates: HashMap<Arc<str>, Candidate>,
    /// The recent time of the busiest candidate last evicted: a new one may have had as much
    /// under another's name (its space-saving error).
    floor: f64,
    /// When recent times were last decayed.
    decayed: Instant,
}

#[derive(Debug, Default)]
struct Exported {
    series: TopSeries,
    recent: f64,
}

/// A query's recent time as space-saving counts it: at most `error` of it may be another's,
/// whose place it took; its calls since it came in; and its calls since the last scrape.
#[derive(Debug, Default, Clone)]
struct Candidate {
    recent: f64,
    error: f64,
    calls: u64,
    waiting: TopSeries,
}

impl Candidate {
    /// The recent time it surely had.
    fn sure(&self) -> f64 {
        self.recent - self.error
    }

    /// Who deserves a series first: a query that came back before one seen once (which may
    /// never come again: a flood of one-off shapes must not take the series that busy queries'
    /// first calls need), then the busiest.
    fn deserving(&self, other: &Self) -> std::cmp::Ordering {
        (self.calls > 1)
            .cmp(&(other.calls > 1))
            .then(self.sure().total_cmp(&other.sure()))
    }
}

impl TopHistograms {
    pub(super) fn new(
        name: &str,
        help: &str,
        top: usize,
        totals: Vec<TopTotal>,
        limits: WorkloadLimits,
    ) -> Self {
        Self(Arc::new(TopTable {
            name: name.to_owned(),
            help: help.to_owned(),
            top,
            totals,
            limits,
            workloads: Mutex::new(HashMap::new()),
        }))
    }

    /// A call of `key` ([`key`]) in the workload at `place` (a cgroup id, `labels` its labels)
    /// took `seconds`, with `totals` in the order of the table's.
    pub fn observe(
        &self,
        place: u64,
        labels: impl FnOnce() -> WorkloadLabels,
        key: &str,
        seconds: f64,
        totals: impl IntoIterator<Item = f64>,
    ) {
        let table = &self.0;
        let mut workloads = table.lock();
        let workloads_len = workloads.len().max(1);
        let place = match workloads.contains_key(&place) {
            false if workloads.len() >= table.limits.max_workloads => {
                let metric = MetricLabel {
                    metric: table.name.clone(),
                };
                table.limits.folded.get_or_create(&metric).inc();
                OTHER_WORKLOAD
            }
            _ => place,
        };
        let workload = workloads.entry(place).or_insert_with(|| WorkloadTable {
            labels: match place {
                OTHER_WORKLOAD => WorkloadLabels::other(),
                _ => labels(),
            },
            updated: Instant::now(),
            state: State::default(),
        });
        workload.updated = Instant::now();
        let state = &mut workload.state;
        let series = match state.exported.get_mut(key) {
            Some(exported) => {
                exported.recent += seconds;
                &mut exported.series
            }
            None => {
                let share = CANDIDATE_BUDGET / workloads_len;
                let capacity = share.max(table.top * CANDIDATES_PER_SERIES);
                state.note_candidate(key, seconds, capacity)
            }
        };
        series.latency.observe(seconds);
        add_totals(&mut series.totals, totals);
    }
}

impl TopTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, WorkloadTable>> {
        self.workloads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Tables of cgroups gone for the grace period go.
    fn expire(&self, workloads: &mut HashMap<u64, WorkloadTable>) {
        let limits = &self.limits;
        workloads.retain(|&place, workload| {
            place == OTHER_WORKLOAD
                || workload.updated.elapsed() <= limits.grace
                || crate::workload::cgroup_exists(&limits.cgroup_mount, &workload.labels.cgroup)
        });
    }
}

impl Default for State {
    fn default() -> Self {
        Self {
            exported: HashMap::new(),
            other: TopSeries::default(),
            candidates: HashMap::new(),
            floor: 0.0,
            decayed: Instant::now(),
        }
    }
}

impl State {
    /// Space-saving: a query new to a full table takes the place of the least busy ones (whose
    /// waiting calls go to `other`), with their recent time as its error. Returns where the
    /// call waits.
    fn note_candidate(&mut self, key: &str, seconds: f64, capacity: usize) -> &mut TopSeries {
        if !self.candidates.contains_key(key) {
            if self.candidates.len() >= capacity.max(1) {
                self.evict_least_busy(capacity.max(1));
            }
            let candidate = Candidate {
                recent: self.floor,
                error: self.floor,
                ..Candidate::default()
            };
            self.candidates.insert(Arc::from(key), candidate);
        }
        let candidate = self.candidates.get_mut(key).expect("inserted above");
        candidate.recent += seconds;
        candidate.calls += 1;
        &mut candidate.waiting
    }

    /// Makes room in a table of `capacity`: its least busy tenth goes (more where the table
    /// outgrew a capacity that shrank).
    fn evict_least_busy(&mut self, capacity: usize) {
        let mut recents: Vec<f64> = self.candidates.values().map(|c| c.recent).collect();
        let going = (recents.len() + 1 - capacity) + capacity / EVICTED_SHARE;
        let going = going.min(recents.len());
        let (_, &mut threshold, _) = recents.select_nth_unstable_by(going - 1, f64::total_cmp);
        let mut left = going;
        let other = &mut self.other;
        self.candidates.retain(|_, candidate| {
            let stays = left == 0 || candidate.recent > threshold;
            if !stays {
                left -= 1;
                other.add(&candidate.waiting);
            }
            stays
        });
        self.floor = self.floor.max(threshold);
    }

    /// Before a scrape: recent time decays, queries without a series take the free series (of
    /// `top`; those that came back first, the busiest first), then the places of series far
    /// less busy (whose counts go to `other`), with the calls they had waiting; the calls still
    /// waiting go to `other`.
    fn rebalance(&mut self, top: usize) {
        self.promote(top);
        for candidate in self.candidates.values_mut() {
            self.other.add(&std::mem::take(&mut candidate.waiting));
        }
    }

    fn promote(&mut self, top: usize) {
        let elapsed = self.decayed.elapsed().as_secs_f64();
        self.decayed = Instant::now();
        let factor = 0.5f64.powf(elapsed / HALF_LIFE_SECS);
        for candidate in self.candidates.values_mut() {
            candidate.recent *= factor;
            candidate.error *= factor;
        }
        for exported in self.exported.values_mut() {
            exported.recent *= factor;
        }
        self.floor *= factor;
        loop {
            let busiest = self
                .candidates
                .iter()
                .max_by(|a, b| a.1.deserving(b.1))
                .map(|(key, candidate)| (key.clone(), candidate.sure(), candidate.calls));
            let Some((busiest, sure, calls)) = busiest else {
                return;
            };
            if self.exported.len() >= top {
                let least = self
                    .exported
                    .iter()
                    .min_by(|a, b| a.1.recent.total_cmp(&b.1.recent))
                    .map(|(key, exported)| (key.clone(), exported.recent));
                let Some((least, least_recent)) = least else {
                    return;
                };
                if calls < 2 || sure <= TAKEOVER * least_recent || sure <= 0.0 {
                    return;
                }
                if let Some(evicted) = self.exported.remove(&least) {
                    self.other.add(&evicted.series);
                    let candidate = Candidate {
                        recent: evicted.recent,
                        ..Candidate::default()
                    };
                    self.candidates.insert(least, candidate);
                }
            }
            let series = self.candidates.remove(&busiest).unwrap_or_default().waiting;
            let exported = Exported {
                series,
                recent: sure,
            };
            self.exported.insert(busiest, exported);
        }
    }
}

/// A counter per key beside [`TopHistograms`], in the family `<name>_<suffix>`; totals that
/// share a suffix are one family, told apart by their `part` label.
#[derive(Clone, Debug)]
pub struct TopTotal {
    pub suffix: &'static str,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub part: Option<&'static str>,
}

#[derive(Debug, Clone, Default)]
struct TopSeries {
    latency: Log2Series,
    totals: Vec<f64>,
}

impl TopSeries {
    fn add(&mut self, other: &Self) {
        self.latency.add(&other.latency);
        add_totals(&mut self.totals, other.totals.iter().copied());
    }
}

fn add_totals(sums: &mut Vec<f64>, values: impl IntoIterator<Item = f64>) {
    for (i, value) in values.into_iter().enumerate() {
        match sums.get_mut(i) {
            Some(sum) => *sum += value,
            None => sums.push(value),
        }
    }
}

/// One key's histogram: counts per log2 bucket of `log2_seconds`, the last for +Inf.
#[derive(Debug, Clone, Default)]
struct Log2Series {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

const LOG2_BUCKETS: usize = 32;

impl Log2Series {
    fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LOG2_BUCKETS + 1];
        }
        // The first bound at or above it, as a classic histogram places it.
        let micros = seconds * 1e6;
        let index = if micros <= 1.0 {
            0
        } else {
            (micros.log2().ceil() as usize).min(LOG2_BUCKETS)
        };
        self.buckets[index] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    fn add(&mut self, other: &Self) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LOG2_BUCKETS + 1];
        }
        for (total, count) in self.buckets.iter_mut().zip(&other.buckets) {
            *total += count;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = (0..=LOG2_BUCKETS)
            .map(|i| match i {
                LOG2_BUCKETS => f64::INFINITY,
                i => 1e-6 * (1u64 << i) as f64,
            })
            .zip(self.buckets.iter().copied().chain(std::iter::repeat(0)))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }
}

impl Collector for TopHistograms {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let table = &self.0;
        let mut workloads = table.lock();
        table.expire(&mut workloads);
        // Series in a stable order: by workload, then key; each workload's `other` last.
        let mut series: Vec<(Vec<(&str, &str)>, &TopSeries)> = Vec::new();
        let mut places: Vec<&mut WorkloadTable> = workloads.values_mut().collect();
        places.sort_by(|a, b| a.labels.cgroup.cmp(&b.labels.cgroup));
        for workload in places {
            workload.state.rebalance(table.top);
            let (labels, state) = (workload.labels.pairs(), &workload.state);
            let mut keys: Vec<(&str, &TopSeries)> = (state.exported.iter())
                .map(|(key, exported)| (&**key, &exported.series))
                .collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (key, one) in keys {
                let mut all = labels.clone();
                let parts = LABELS.iter().zip(key.splitn(3, '\0'));
                all.extend(
                    parts
                        .filter(|(_, value)| !value.is_empty())
                        .map(|(k, v)| (*k, v)),
                );
                series.push((all, one));
            }
            if state.other.latency.count > 0 {
                let mut all = labels;
                all.push(("query", "other"));
                series.push((all, &state.other));
            }
        }
        if series.is_empty() {
            return Ok(());
        }
        let unit = Unit::Seconds;
        let mut family = encoder.encode_descriptor(
            &table.name,
            &table.help,
            Some(&unit),
            MetricType::Histogram,
        )?;
        for (labels, one) in &series {
            one.latency.encode(family.encode_family(labels)?)?;
        }
        // Each family once, with the totals of its parts.
        let mut suffixes: Vec<&str> = table.totals.iter().map(|total| total.suffix).collect();
        suffixes.dedup();
        for suffix in suffixes {
            let members =
                || (table.totals.iter().enumerate()).filter(|(_, total)| total.suffix == suffix);
            let Some((_, first)) = members().next() else {
                continue;
            };
            let name = format!("{}_{suffix}", table.name);
            let mut family = encoder.encode_descriptor(
                &name,
                first.help,
                first.unit.as_ref(),
                MetricType::Counter,
            )?;
            for (labels, one) in &series {
                for (i, total) in members() {
                    let mut labels = labels.clone();
                    labels.extend(total.part.map(|part| ("part", part)));
                    let value = one.totals.get(i).copied().unwrap_or(0.0);
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn table(top: usize, totals: Vec<TopTotal>) -> (Registry, TopHistograms) {
        let mut registry = Registry::default();
        let limits = WorkloadLimits {
            max_workloads: 2,
            grace: Duration::from_secs(3600),
            cgroup_mount: PathBuf::from("/nonexistent"),
            folded: Family::default(),
        };
        let queries = TopHistograms::new("tracer_query", "Queries", top, totals, limits);
        registry.register_collector(Box::new(queries.clone()));
        (registry, queries)
    }

    impl TopHistograms {
        /// A call of `query` in a workload without labels, database or user.
        fn call(&self, query: &str, seconds: f64, totals: impl IntoIterator<Item = f64>) {
            let mut buffer = String::new();
            key(&mut buffer, "", "", query);
            self.observe(0, WorkloadLabels::default, &buffer, seconds, totals);
        }
    }

    fn count(text: &str, query: &str) -> u64 {
        let line = format!("tracer_query_seconds_count{{query=\"{query}\"}} ");
        let Some(at) = text.find(&line) else {
            panic!("no {line} in {text}");
        };
        let value = text[at + line.len()..].split_whitespace().next().unwrap();
        value.parse().unwrap()
    }

    /// The first queries take the free series; a far busier one takes the place of the least
    /// busy at the next scrape, with its calls since the last one; `other` only grows.
    #[test]
    fn series_go_to_the_busiest_and_counters_only_grow() {
        let (registry, queries) = table(2, Vec::new());
        queries.call("SELECT ?", 0.5, []);
        queries.call("SELECT ?", 0.5, []);
        queries.call("UPDATE t SET a = ?", 3e-6, []);
        queries.call("INSERT INTO t VALUES (?)", 0.2, []);
        queries.call("DELETE FROM t", 0.001, []);
        let text = exposition(&registry);
        assert!(
            text.contains("# TYPE tracer_query_seconds histogram"),
            "{text}"
        );
        assert_eq!(count(&text, "SELECT ?"), 2);
        // INSERT took UPDATE's series with the call it had waiting: counted from its first.
        assert_eq!(count(&text, "INSERT INTO t VALUES (?)"), 1);
        // DELETE's call, and UPDATE's, whose series INSERT took.
        assert_eq!(count(&text, "other"), 2);
        assert!(!text.contains("UPDATE"), "{text}");
        queries.call("INSERT INTO t VALUES (?)", 0.2, []);
        queries.call("DELETE FROM t", 0.001, []);
        queries.call("UPDATE t SET a = ?", 3e-6, []);
        let text = exposition(&registry);
        assert_eq!(count(&text, "SELECT ?"), 2);
        assert_eq!(count(&text, "INSERT INTO t VALUES (?)"), 2);
        assert_eq!(count(&text, "other"), 4);
        // UPDATE's two calls of 3 us, under other, in the bucket up to 4 us.
        let bucket = "tracer_query_seconds_bucket{le=\"0.000004\",query=\"other\"} 2";
        assert!(text.contains(bucket), "{text}");
    }

    /// However many distinct queries come, the table keeps a bounded number of them, and every
    /// call is in a series or in `other`.
    #[test]
    fn any_number_of_distinct_queries_take_bounded_memory_and_lose_no_call() {
        let (registry, queries) = table(2, Vec::new());
        let calls = 100_000;
        for i in 0..calls {
            queries.call(&format!("SELECT {i}"), 1e-3, []);
            // One busy query among them.
            queries.call("SELECT busy", 0.1, []);
        }
        let text = exposition(&registry);
        {
            let workloads = queries.0.lock();
            let state = &workloads[&0].state;
            assert_eq!(state.exported.len(), 2);
            assert!(state.candidates.len() <= CANDIDATE_BUDGET);
        }
        let all: u64 = text
            .lines()
            .filter(|line| line.starts_with("tracer_query_seconds_count"))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(all, 2 * calls);
        assert_eq!(count(&text, "SELECT busy"), calls);
    }

    /// A query of two calls a second among 1,667 new one-call shapes a second (`cargo xtask
    /// bench shapes`' flood), scraped after its first second and every 15 s: none of its calls,
    /// its first ones included, is folded away; the shapes that came first hold no series.
    #[test]
    fn a_busy_query_among_a_flood_of_shapes_keeps_its_first_calls() {
        let (registry, queries) = table(2, Vec::new());
        let mut shape = 0;
        for second in 0..31 {
            if second % 15 == 1 {
                exposition(&registry);
            }
            for half in 0..2 {
                for _ in 0..(1667 / 2 + half) {
                    queries.call(&format!("SELECT {shape} AS shape"), 1e-3, []);
                    shape += 1;
                }
                queries.call("SELECT busy", 1e-3, []);
            }
        }
        let text = exposition(&registry);
        assert_eq!(count(&text, "SELECT busy"), 62);
    }

    /// A free series goes to a query that came back before a slower one seen once (a cold
    /// backend's first statement): the busy query's first calls are its own.
    #[test]
    fn a_query_that_comes_back_takes_a_free_series_before_a_slow_one_off() {
        let (registry, queries) = table(1, Vec::new());
        queries.call("SELECT 1 AS shape_1", 0.5, []);
        queries.call("SELECT busy", 1e-3, []);
        queries.call("SELECT busy", 1e-3, []);
        let text = exposition(&registry);
        assert_eq!(count(&text, "SELECT busy"), 2);
        assert_eq!(count(&text, "other"), 1);
        // With series free and nobody seen twice, a one-off has one.
        let (registry, queries) = table(1, Vec::new());
        queries.call("SELECT 1 AS shape_1", 0.5, []);
        assert_eq!(count(&exposition(&registry), "SELECT 1 AS shape_1"), 1);
    }

    /// Each workload has its own top: a busy pod's queries do not push a quiet one's out.
    /// Series carry the workload's labels, the database and the user; workloads past the cap
    /// share one `other` table.
    #[test]
    fn each_workload_has_its_own_top_and_labels() {
        let (registry, queries) = table(1, Vec::new());
        let labels = |cgroup: &str, pod: &str| {
            let (cgroup, pod) = (cgroup.to_owned(), pod.to_owned());
            move || WorkloadLabels {
                pod,
                namespace: "shop".into(),
                cgroup,
                ..WorkloadLabels::default()
            }
        };
        let mut buffer = String::new();
        for _ in 0..1000 {
            key(&mut buffer, "orders", "alice", "SELECT ?");
            queries.observe(1, labels("/busy", "busy-0"), &buffer, 0.1, []);
            key(&mut buffer, "orders", "alice", "UPDATE t SET a = ?");
            queries.observe(1, labels("/busy", "busy-0"), &buffer, 0.2, []);
        }
        key(&mut buffer, "crm", "bob", "SELECT ?");
        queries.observe(2, labels("/quiet", "quiet-0"), &buffer, 1e-6, []);
        // A third workload past the cap of two.
        queries.observe(3, labels("/late", "late-0"), &buffer, 1e-6, []);
        let text = exposition(&registry);
        let count = |labels: &str| {
            let line = format!("tracer_query_seconds_count{{{labels}}} ");
            let at = text
                .find(&line)
                .unwrap_or_else(|| panic!("no {line} in {text}"));
            let value = text[at + line.len()..].split_whitespace().next().unwrap();
            value.parse::<u64>().unwrap()
        };
        // The busiest of the two (the update, with twice the time) has the one series.
        let busy = "pod=\"busy-0\",namespace=\"shop\",cgroup=\"/busy\"";
        assert_eq!(
            count(&format!(
                "{busy},database=\"orders\",user=\"alice\",query=\"UPDATE t SET a = ?\""
            )),
            1000
        );
        assert_eq!(count(&format!("{busy},query=\"other\"")), 1000);
        let quiet = "pod=\"quiet-0\",namespace=\"shop\",cgroup=\"/quiet\"";
        assert_eq!(
            count(&format!(
                "{quiet},database=\"crm\",user=\"bob\",query=\"SELECT ?\""
            )),
            1
        );
        assert_eq!(
            count("cgroup=\"other\",database=\"crm\",user=\"bob\",query=\"SELECT ?\""),
            1
        );
    }

    #[test]
    fn the_top_queries_carry_their_totals_and_other_the_rest() {
        let total = |suffix, unit, part| TopTotal {
            suffix,
            help: "Parts",
            unit,
            part,
        };
        let totals = vec![
            total("breakdown", Some(Unit::Seconds), Some("oncpu")),
            total("breakdown", Some(Unit::Seconds), Some("sleep")),
            total("bios", None, None),
        ];
        let (registry, queries) = table(1, totals);
        queries.call("SELECT ?", 0.5, [0.25, 0.25, 3.0]);
        queries.call("SELECT ?", 0.5, [0.5, 0.0, 1.0]);
        queries.call("UPDATE t SET a = ?", 0.1, [0.125, 0.0, 2.0]);
        queries.call("DELETE FROM t", 0.1, [0.0, 0.0, 5.0]);
        let text = exposition(&registry);
        for line in [
            "# TYPE tracer_query_breakdown_seconds counter",
            "tracer_query_breakdown_seconds_total{query=\"SELECT ?\",part=\"oncpu\"} 0.75",
            "tracer_query_breakdown_seconds_total{query=\"SELECT ?\",part=\"sleep\"} 0.25",
            "tracer_query_breakdown_seconds_total{query=\"other\",part=\"oncpu\"} 0.125",
            "tracer_query_bios_total{query=\"SELECT ?\"} 4",
            "tracer_query_bios_total{query=\"other\"} 7",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // And for scrapers that ask for Prometheus' text format.
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let line = "tracer_query_breakdown_seconds_total{query=\"SELECT ?\",part=\"oncpu\"} 0.75";
        assert!(text.contains(line), "{line} in {text}");
    }
}
