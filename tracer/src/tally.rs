//! Time charged to keys (processes, cgroups, queries): how often, how long in all, the longest,
//! and the top of them as a table.

use std::{collections::HashMap, rc::Rc};

use serde::Serialize;

use crate::{
    cgroup,
    histogram::human_ns,
    output::{Align, Table},
    workload::Workload,
};

#[derive(Default, Clone, Debug)]
pub struct Tally {
    /// What the key is called: a comm, a cgroup path.
    pub name: String,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Pages that came with the time (reclaimed, written); 0 where that means nothing.
    pub pages: u64,
    /// The container of a cgroup key, where it is one.
    pub container: Option<Rc<Workload>>,
}

impl Tally {
    pub fn add(&mut self, ns: u64, pages: u64) {
        self.count += 1;
        self.total_ns += ns;
        self.max_ns = self.max_ns.max(ns);
        self.pages += pages;
    }
}

/// The `n` keys with the most time, most first (ties by key).
pub fn top<K: Copy + Ord>(tallies: &HashMap<K, Tally>, n: usize) -> Vec<(K, &Tally)> {
    let mut sorted: Vec<(K, &Tally)> = tallies.iter().map(|(&k, t)| (k, t)).collect();
    sorted.sort_by(|a, b| b.1.total_ns.cmp(&a.1.total_ns).then(a.0.cmp(&b.0)));
    sorted.truncate(n);
    sorted
}

/// Names cgroup tallies by path, with their containers.
pub fn name_cgroups(tallies: &mut HashMap<u64, Tally>, names: &mut cgroup::Names) {
    for (&id, tally) in tallies {
        tally.name = names.path(id);
        tally.container = names.workload(&tally.name);
    }
}

/// Column headers of a tally table.
pub struct Columns {
    pub key: &'static str,
    pub count: &'static str,
    /// `None` leaves the pages column out.
    pub pages: Option<&'static str>,
    pub name: &'static str,
}

pub fn table<K: ToString>(columns: &Columns, rows: &[(K, &Tally)]) -> String {
    let mut headers = vec![
        (columns.key, Align::Right),
        (columns.count, Align::Right),
        ("TOTAL", Align::Right),
        ("MAX", Align::Right),
    ];
    headers.extend(columns.pages.map(|pages| (pages, Align::Right)));
    let containers = rows.iter().any(|(_, tally)| tally.container.is_some());
    if containers {
        headers.push(("CONTAINER", Align::Left));
    }
    headers.push((columns.name, Align::Left));
    let mut table = Table::new(&headers);
    for (key, tally) in rows {
        let mut cells = vec![
            key.to_string(),
            tally.count.to_string(),
            human_ns(tally.total_ns),
            human_ns(tally.max_ns),
        ];
        if columns.pages.is_some() {
            cells.push(tally.pages.to_string());
        }
        if containers {
            let shown = tally.container.as_ref().map(|c| c.shown());
            cells.push(shown.unwrap_or_else(|| "-".into()));
        }
        cells.push(tally.name.clone());
        table.row(cells);
    }
    table.render()
}

/// One tally as NDJSON: the key's own fields come from the tool.
#[derive(Serialize)]
pub struct TallyJson<Key: Serialize> {
    #[serde(flatten)]
    pub key: Key,
    pub count: u64,
    pub total_us: f64,
    pub max_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<u64>,
}

/// Keys of process rows.
#[derive(Serialize)]
pub struct ProcessKey {
    pub pid: u32,
    pub comm: String,
}

/// Keys of cgroup rows.
#[derive(Serialize)]
pub struct CgroupKey {
    pub cgroup_id: u64,
    pub cgroup: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Rc<Workload>>,
}

impl<Key: Serialize> TallyJson<Key> {
    pub fn new(key: Key, tally: &Tally, with_pages: bool) -> Self {
        Self {
            key,
            count: tally.count,
            total_us: tally.total_ns as f64 / 1000.0,
            max_us: tally.max_ns as f64 / 1000.0,
            pages: with_pages.then_some(tally.pages),
        }
    }
}

/// All processes then all cgroups, most time first, as NDJSON rows.
pub fn process_rows(tallies: &HashMap<u32, Tally>, with_pages: bool) -> Vec<TallyJson<ProcessKey>> {
    top(tallies, usize::MAX)
        .into_iter()
        .map(|(pid, tally)| {
            let key = ProcessKey {
                pid,
                comm: tally.name.clone(),
            };
            TallyJson::new(key, tally, with_pages)
        })
        .collect()
}

pub fn cgroup_rows(tallies: &HashMap<u64, Tally>, with_pages: bool) -> Vec<TallyJson<CgroupKey>> {
    top(tallies, usize::MAX)
        .into_iter()
        .map(|(cgroup_id, tally)| {
            let key = CgroupKey {
                cgroup_id,
                cgroup: tally.name.clone(),
                container: tally.container.clone(),
            };
            TallyJson::new(key, tally, with_pages)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_renders() {
        let mut tallies: HashMap<u32, Tally> = HashMap::new();
        tallies.entry(7).or_default().add(3_000, 1);
        tallies.entry(7).or_default().add(1_000, 1);
        tallies.entry(9).or_default().add(10_000, 5);
        tallies.get_mut(&9).unwrap().name = "dd".into();
        let ranked = top(&tallies, 10);
        assert_eq!(ranked.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [9, 7]);
        assert_eq!(
            (ranked[1].1.count, ranked[1].1.total_ns, ranked[1].1.max_ns),
            (2, 4_000, 3_000)
        );
        let columns = Columns {
            key: "PID",
            count: "N",
            pages: None,
            name: "COMM",
        };
        assert_eq!(
            table(&columns, &ranked[..1]),
            "PID  N   TOTAL     MAX  COMM\n  9  1  10.0us  10.0us  dd\n"
        );
        // A container column appears when a row is one.
        let mut cgroups: HashMap<u64, Tally> = HashMap::new();
        let db = cgroups.entry(5).or_default();
        db.add(2_000, 0);
        db.name = "/docker/abc".into();
        db.container = Some(Rc::new(Workload {
            runtime: "docker",
            container_id: "4f1a8b3c9d2e4f5a".into(),
            container: "pg".into(),
            ..Workload::default()
        }));
        let columns = Columns {
            key: "ID",
            count: "N",
            pages: None,
            name: "CGROUP",
        };
        assert_eq!(
            table(&columns, &top(&cgroups, 1)),
            "ID  N  TOTAL    MAX  CONTAINER          CGROUP\n 5  1  2.0us  2.0us  pg (4f1a8b3c9d2e)  /docker/abc\n"
        );
        let json = serde_json::to_string(&cgroup_rows(&cgroups, false)[0]).unwrap();
        assert!(json.contains(r#""container":{"runtime":"docker","container_id":"4f1a8b3c9d2e4f5a","container":"pg"}"#), "{json}");
        let json = serde_json::to_string(&process_rows(&tallies, true)[0]).unwrap();
        assert_eq!(
            json,
            r#"{"pid":9,"comm":"dd","count":1,"total_us":10.0,"max_us":10.0,"pages":5}"#
        );
    }
}
