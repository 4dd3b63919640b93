//! A summary window's queries in rows, as `--by` groups them: per workload (the server's
//! cgroup), database, user and query; at most a bounded number of rows, the least busy folded
//! into one row of their group.

use std::rc::Rc;

use rustc_hash::FxHashMap;
use tracer_common::query::{Breakdown, MAX_COUNTERS, QueryDone};

use super::breakdown;
use crate::histogram::Latencies;

/// Whom a backend serves, as its server tells (`None` where it does not).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Client {
    pub database: Option<Rc<str>>,
    pub user: Option<Rc<str>>,
}

/// What a row of the per-query table stands for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum By {
    /// A normalized query, in one database, by one user, in one workload
    #[default]
    Query,
    /// All queries in one database (of one workload)
    Database,
    /// All queries of one user (of one workload)
    User,
    /// All queries of one workload: a container, or the server's cgroup outside containers
    Container,
}

/// What the rows of one group share: a workload (a cgroup id) and a client, as far as `--by`
/// keeps them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    pub place: u64,
    pub client: Client,
}

impl By {
    /// The group and row key of a query counted under `key`, run by `client` in `place`.
    pub fn row<'a>(self, place: u64, client: &Client, key: &'a str) -> (Group, &'a str) {
        let client = match self {
            By::Query => client.clone(),
            By::Database => Client {
                database: client.database.clone(),
                user: None,
            },
            By::User => Client {
                database: None,
                user: client.user.clone(),
            },
            By::Container => Client::default(),
        };
        let key = if self == By::Query { key } else { "" };
        (Group { place, client }, key)
    }
}

/// The row of the queries folded away in each group, with their totals.
pub const OTHER_QUERIES: &str = "(other queries)";

/// Rows a window keeps per row shown (`--top`).
const ROWS_PER_SHOWN: usize = 50;

/// A window's rows, at most `capacity` of them: past it, the half with the least time is
/// folded into their groups' [`OTHER_QUERIES`] rows, so that any number of distinct query
/// shapes costs bounded memory (a row holds a histogram of a few KiB).
pub struct Totals {
    pub all: Latencies,
    groups: FxHashMap<Group, FxHashMap<Rc<str>, QueryStats>>,
    rows: usize,
    capacity: usize,
}

/// One row, as [`Totals::ranked`] lists them.
pub struct Row<'a> {
    pub group: &'a Group,
    pub query: &'a Rc<str>,
    pub stats: &'a QueryStats,
}

impl Totals {
    pub fn new(top: usize) -> Self {
        Self {
            all: Latencies::default(),
            groups: FxHashMap::default(),
            rows: 0,
            capacity: (top * ROWS_PER_SHOWN).max(ROWS_PER_SHOWN),
        }
    }

    /// The row of `key` in `group`, made if new (room made first, when the table is full).
    pub fn row(&mut self, group: Group, key: &str) -> &mut QueryStats {
        let known = |totals: &Self| {
            (totals.groups.get(&group)).is_some_and(|queries| queries.contains_key(key))
        };
        if self.rows >= self.capacity && !known(self) {
            self.fold_least_busy();
        }
        let queries = self.groups.entry(group).or_default();
        if !queries.contains_key(key) {
            queries.insert(Rc::from(key), QueryStats::default());
            self.rows += 1;
        }
        queries.get_mut(key).expect("inserted above")
    }

    /// Keeps the `top` busiest rows, the others folded into their groups' [`OTHER_QUERIES`].
    pub fn fold_beyond(&mut self, top: usize) {
        let beyond: Vec<(Group, Rc<str>)> = (self.ranked().into_iter())
            .filter(|row| &**row.query != OTHER_QUERIES)
            .skip(top)
            .map(|row| (row.group.clone(), row.query.clone()))
            .collect();
        for (group, key) in beyond {
            self.fold(&group, &key);
        }
    }

    fn fold_least_busy(&mut self) {
        let mut rows: Vec<(u64, Group, Rc<str>)> = (self.groups.iter())
            .flat_map(|(group, queries)| {
                (queries.iter())
                    .filter(|(key, _)| &***key != OTHER_QUERIES)
                    .map(move |(key, stats)| {
                        (stats.latencies.total_ns(), group.clone(), key.clone())
                    })
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
        for (_, group, key) in rows.into_iter().take(self.capacity / 2) {
            self.fold(&group, &key);
        }
    }

    /// Moves the row of `key` into its group's [`OTHER_QUERIES`].
    fn fold(&mut self, group: &Group, key: &str) {
        let Some(queries) = self.groups.get_mut(group) else {
            return;
        };
        let Some(stats) = queries.remove(key) else {
            return;
        };
        match queries.get_mut(OTHER_QUERIES) {
            Some(other) => {
                other.add(&stats);
                self.rows -= 1;
            }
            None => {
                queries.insert(Rc::from(OTHER_QUERIES), stats);
            }
        }
    }

    /// Rows by total time, most first.
    pub fn ranked(&self) -> Vec<Row<'_>> {
        let mut ranked: Vec<Row> = (self.groups.iter())
            .flat_map(|(group, queries)| {
                (queries.iter()).map(move |(query, stats)| Row {
                    group,
                    query,
                    stats,
                })
            })
            .collect();
        ranked.sort_by(|a, b| {
            (b.stats
                .latencies
                .total_ns()
                .cmp(&a.stats.latencies.total_ns()))
            .then_with(|| a.query.cmp(b.query))
            .then_with(|| a.group.client.database.cmp(&b.group.client.database))
            .then_with(|| a.group.client.user.cmp(&b.group.client.user))
            .then_with(|| a.group.place.cmp(&b.group.place))
        });
        ranked
    }

    #[cfg(test)]
    pub fn rows(&self) -> usize {
        self.groups.values().map(|queries| queries.len()).sum()
    }
}

#[derive(Default)]
pub struct QueryStats {
    pub latencies: Latencies,
    pub reclaim_ns: u64,
    pub reclaim_count: u64,
    pub compaction_ns: u64,
    pub compaction_count: u64,
    pub counters: [u64; MAX_COUNTERS],
    /// Calls whose counters were read (with perf counters, a thread's first query goes
    /// without).
    pub counted_calls: u64,
    /// The sums of its calls' breakdowns.
    pub breakdown: Breakdown,
}

impl QueryStats {
    /// A call ended.
    pub fn record(&mut self, done: &QueryDone) {
        self.latencies.record(done.latency_ns);
        self.reclaim_ns += done.reclaim_ns;
        self.reclaim_count += done.reclaim_count as u64;
        self.compaction_ns += done.compaction_ns;
        self.compaction_count += done.compaction_count as u64;
        let mut part = done.breakdown;
        let sums = breakdown::values(&mut self.breakdown).zip(breakdown::values(&mut part));
        for (sum, part) in sums {
            *sum += *part;
        }
        if done.counters_valid != 0 {
            self.counted_calls += 1;
            for (total, delta) in self.counters.iter_mut().zip(done.counters) {
                *total += delta;
            }
        }
    }

    fn add(&mut self, other: &QueryStats) {
        self.latencies.add(&other.latencies);
        self.reclaim_ns += other.reclaim_ns;
        self.reclaim_count += other.reclaim_count;
        self.compaction_ns += other.compaction_ns;
        self.compaction_count += other.compaction_count;
        for (total, more) in self.counters.iter_mut().zip(other.counters) {
            *total += more;
        }
        self.counted_calls += other.counted_calls;
        let mut more = other.breakdown;
        let sums = breakdown::values(&mut self.breakdown).zip(breakdown::values(&mut more));
        for (sum, part) in sums {
            *sum += *part;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(place: u64, database: &str) -> Group {
        let client = Client {
            database: Some(Rc::from(database)),
            user: Some(Rc::from("alice")),
        };
        Group { place, client }
    }

    fn call(totals: &mut Totals, group: Group, key: &str, latency_ns: u64) {
        let mut done: QueryDone = unsafe { std::mem::zeroed() };
        done.latency_ns = latency_ns;
        totals.row(group, key).record(&done);
        totals.all.record(latency_ns);
    }

    /// However many distinct queries a window sees, it keeps a bounded number of rows, loses no
    /// call and keeps a busy query's own row.
    #[test]
    fn a_window_of_any_number_of_shapes_keeps_bounded_rows_and_every_call() {
        let mut window = Totals::new(2);
        let shapes = 10_000;
        for i in 0..shapes {
            call(&mut window, group(1, "shop"), &format!("SELECT {i}"), 1_000);
            call(&mut window, group(1, "shop"), "SELECT busy", 1_000_000);
        }
        assert!(window.rows() <= window.capacity);
        assert_eq!(window.rows(), window.rows);
        let calls = |window: &Totals| -> u64 {
            let ranked = window.ranked();
            ranked.iter().map(|row| row.stats.latencies.count()).sum()
        };
        assert_eq!(calls(&window), 2 * shapes);
        let ranked = window.ranked();
        assert_eq!(ranked[0].query.as_ref(), "SELECT busy");
        assert_eq!(ranked[0].stats.latencies.count(), shapes);
        let other = ranked.iter().find(|row| &**row.query == OTHER_QUERIES);
        let other = &other.expect("an other row").stats.latencies;
        assert_eq!(other.total_ns(), other.count() * 1_000);
        // What NDJSON summaries show: the rows the table shows, and the rest in one.
        window.fold_beyond(2);
        assert_eq!(window.rows(), 3);
        assert_eq!(calls(&window), 2 * shapes);
    }

    /// The same query in two databases (or workloads) is two rows; `--by database` sums a
    /// database's queries; a busy group's rows fold into its own `other`, not a quiet one's.
    #[test]
    fn rows_are_per_group_and_fold_within_their_group() {
        let mut window = Totals::new(1);
        call(&mut window, group(1, "shop"), "SELECT ?", 3);
        call(&mut window, group(1, "crm"), "SELECT ?", 5);
        call(&mut window, group(2, "shop"), "SELECT ?", 7);
        call(&mut window, group(1, "shop"), "UPDATE t", 11);
        assert_eq!(window.rows(), 4);
        window.fold_beyond(1);
        let ranked = window.ranked();
        let rows: Vec<(u64, Option<&str>, &str, u64)> = (ranked.iter())
            .map(|row| {
                let database = row.group.client.database.as_deref();
                let total = row.stats.latencies.total_ns();
                (row.group.place, database, &**row.query, total)
            })
            .collect();
        assert_eq!(
            rows,
            [
                (1, Some("shop"), "UPDATE t", 11),
                (2, Some("shop"), OTHER_QUERIES, 7),
                (1, Some("crm"), OTHER_QUERIES, 5),
                (1, Some("shop"), OTHER_QUERIES, 3),
            ]
        );
        let mut by_database = Totals::new(1);
        for (place, database, key, latency) in [(1, "shop", "A", 3), (1, "shop", "B", 4)] {
            let (group, key) = By::Database.row(place, &group(place, database).client, key);
            call(&mut by_database, group, key, latency);
        }
        let ranked = by_database.ranked();
        assert_eq!(ranked.len(), 1);
        assert_eq!(ranked[0].stats.latencies.total_ns(), 7);
        assert_eq!(ranked[0].group.client.user, None);
    }
}
