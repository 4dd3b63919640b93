//! What a report shows, read from the tools' NDJSON: per-second series on one time axis, the
//! events marked on it, the findings the tools stated, and the tables of the window.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::output::parse_rfc3339;

/// Seconds since the epoch.
pub type Time = f64;

/// Series that share a chart, one value per second the tool printed.
pub struct Chart {
    pub title: String,
    pub unit: &'static str,
    pub times: Vec<Time>,
    pub series: Vec<Series>,
}

pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// Latencies over time: per second, counts in log2 buckets (`[2^i, 2^(i+1))` of `unit`).
pub struct Heatmap {
    pub title: String,
    pub unit: &'static str,
    pub times: Vec<Time>,
    pub counts: Vec<Vec<u64>>,
}

/// An event marked on every chart: an OOM kill, or the trigger of a recording.
pub struct Mark {
    pub time: Time,
    pub kind: &'static str,
    pub label: String,
    pub details: Vec<String>,
}

/// A verdict a tool printed, in as many seconds (or kills) as `times` says; the numbers are
/// those it gave first.
pub struct Finding {
    pub first: Time,
    pub times: usize,
    pub text: String,
}

pub struct Table {
    pub title: String,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

pub struct Timeline {
    /// The shared time axis.
    pub from: Time,
    pub to: Time,
    pub charts: Vec<Chart>,
    pub heatmaps: Vec<Heatmap>,
    pub marks: Vec<Mark>,
    /// Verdicts the tools printed, each once, first seen first.
    pub findings: Vec<Finding>,
    pub tables: Vec<Table>,
}

/// Series past this many in a chart are summed into `other`.
const MOST_SERIES: usize = 8;
/// Rows per table.
const MOST_ROWS: usize = 15;

impl Timeline {
    /// Reads NDJSON: a flight recording (each line names its `tool`) or a tool's `--json`
    /// output (the tool is told by what its summaries hold). `name` says where a line came from
    /// in errors.
    pub fn read(inputs: &[(String, &[u8])]) -> Result<Self> {
        let mut builder = Builder::default();
        for (name, ndjson) in inputs {
            for (number, line) in ndjson.split(|&byte| byte == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(json) = serde_json::from_slice::<Value>(line) else {
                    bail!(
                        "{name}:{}: not NDJSON (tracer report reads what tools print with --json, \
                         and serve's recordings)",
                        number + 1
                    );
                };
                builder.line(&json);
            }
        }
        builder.finish()
    }
}

#[derive(Default)]
struct Builder {
    charts: Vec<(String, ChartBuilder)>,
    heatmaps: Vec<(String, Heatmap)>,
    marks: Vec<Mark>,
    findings: Vec<Finding>,
    /// The recording's trigger and span, when reading one.
    span: Option<(Time, f64)>,
    processes: Tally<(u64, String)>,
    cgroups: Tally<String>,
    queries: Tally<(String, String, String, String)>,
    kills: Vec<Vec<String>>,
}

#[derive(Default)]
struct ChartBuilder {
    unit: &'static str,
    times: Vec<Time>,
    /// Per series, its value at each of `times` it has one.
    series: BTreeMap<String, BTreeMap<usize, f64>>,
    /// Fold all but the busiest into `other`.
    fold: bool,
}

impl ChartBuilder {
    fn add(&mut self, series: &str, value: f64) {
        let at = self.times.len() - 1;
        *self
            .series
            .entry(series.to_owned())
            .or_default()
            .entry(at)
            .or_default() += value;
    }

    fn finish(self, title: String) -> Chart {
        let seconds = self.times.len();
        // In time order: recordings given in any order, or overlapping, draw forwards.
        let order = time_order(&self.times);
        let mut series: Vec<Series> = self
            .series
            .into_iter()
            .map(|(name, values)| {
                let mut dense = vec![0.0; seconds];
                for (at, value) in values {
                    dense[order[at]] = value;
                }
                Series {
                    name,
                    values: dense,
                }
            })
            .collect();
        if self.fold && series.len() > MOST_SERIES {
            let total = |series: &Series| series.values.iter().sum::<f64>();
            series.sort_by(|a, b| total(b).total_cmp(&total(a)));
            let rest = series.split_off(MOST_SERIES - 1);
            let mut other = vec![0.0; seconds];
            for folded in rest {
                other
                    .iter_mut()
                    .zip(folded.values)
                    .for_each(|(sum, value)| *sum += value);
            }
            series.push(Series {
                name: "other".into(),
                values: other,
            });
        }
        let mut times = self.times;
        times.sort_by(f64::total_cmp);
        Chart {
            title,
            unit: self.unit,
            times,
            series,
        }
    }
}

/// Where each of `times` goes when they are sorted.
fn time_order(times: &[Time]) -> Vec<usize> {
    let mut sorted: Vec<usize> = (0..times.len()).collect();
    sorted.sort_by(|&a, &b| times[a].total_cmp(&times[b]));
    let mut place = vec![0; times.len()];
    for (position, index) in sorted.into_iter().enumerate() {
        place[index] = position;
    }
    place
}

/// Rows summed over the window: count, total and max time (us), pages or calls, and a
/// second total (reclaim inside queries).
type Tally<K> = HashMap<K, [f64; 5]>;

fn tally<K: std::hash::Hash + Eq>(tally: &mut Tally<K>, key: K, row: &Value, latency: &Value) {
    let entry = tally.entry(key).or_default();
    entry[0] += num(&row["count"]).max(num(&row["calls"]));
    entry[1] += num(&latency["total_us"]);
    entry[2] = entry[2].max(num(&latency["max_us"]));
    entry[3] += num(&row["pages"]);
    entry[4] += num(&row["reclaim_us"]);
}

fn num(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// A cgroup row's workload, as a person knows it: pod and container, else container, else
/// the cgroup's path.
fn workload(row: &Value) -> String {
    let container = &row["container"];
    let name = container["container"]
        .as_str()
        .or(container["container_id"].as_str());
    match (container["pod"].as_str(), name) {
        (Some(pod), Some(name)) => format!("{pod}/{name}"),
        (None, Some(name)) => name.to_owned(),
        _ => text(&row["cgroup"]),
    }
}

impl Builder {
    fn chart(&mut self, key: &str, unit: &'static str, time: Time) -> &mut ChartBuilder {
        let at = match self.charts.iter().position(|(title, _)| title == key) {
            Some(at) => at,
            None => {
                let chart = ChartBuilder {
                    unit,
                    ..Default::default()
                };
                self.charts.push((key.to_owned(), chart));
                self.charts.len() - 1
            }
        };
        let chart = &mut self.charts[at].1;
        chart.times.push(time);
        chart
    }

    fn heatmap(&mut self, key: &str, unit: &'static str, time: Time, latencies: &[&Value]) {
        let at = match self.heatmaps.iter().position(|(title, _)| title == key) {
            Some(at) => at,
            None => {
                let heatmap = Heatmap {
                    title: key.to_owned(),
                    unit,
                    times: Vec::new(),
                    counts: Vec::new(),
                };
                self.heatmaps.push((key.to_owned(), heatmap));
                self.heatmaps.len() - 1
            }
        };
        let heatmap = &mut self.heatmaps[at].1;
        let mut counts: Vec<u64> = Vec::new();
        for latency in latencies {
            let buckets = latency["log2_usecs"]
                .as_array()
                .or(latency["log2_nsecs"].as_array());
            for (bucket, count) in buckets.into_iter().flatten().enumerate() {
                if counts.len() <= bucket {
                    counts.resize(bucket + 1, 0);
                }
                counts[bucket] += count.as_u64().unwrap_or(0);
            }
        }
        heatmap.times.push(time);
        heatmap.counts.push(counts);
    }

    /// A verdict, as one finding with the others that differ from it in their numbers alone.
    fn finding(&mut self, verdict: &Value, time: Time) {
        let Some(verdict) = verdict.as_str() else {
            return;
        };
        let words = |text: &str| text.replace(|c: char| c.is_ascii_digit() || c == '.', "");
        match self
            .findings
            .iter_mut()
            .find(|seen| words(&seen.text) == words(verdict))
        {
            Some(seen) => seen.times += 1,
            None => self.findings.push(Finding {
                first: time,
                times: 1,
                text: verdict.to_owned(),
            }),
        }
    }

    fn line(&mut self, json: &Value) {
        let Some(time) = json["time"].as_str().and_then(parse_rfc3339) else {
            return;
        };
        match json["type"].as_str() {
            Some("summary") => self.summary(json, time),
            Some("oom_kill") => self.kill(json, time),
            Some("threshold") => self.threshold(json, time),
            Some("recording") => {
                let reason = text(&json["reason"]);
                self.span = Some((time, num(&json["span_s"])));
                self.marks.push(Mark {
                    time,
                    kind: "trigger",
                    label: format!("recording's trigger: {}", reason.replace('_', " ")),
                    details: Vec::new(),
                });
            }
            _ => {}
        }
    }

    fn summary(&mut self, json: &Value, time: Time) {
        let per_second = 1.0
            / json["interval_s"]
                .as_f64()
                .filter(|s| *s > 0.0)
                .unwrap_or(1.0);
        let tool = json["tool"].as_str();
        if json.get("global").is_some() {
            self.reclaim(json, time, per_second);
        } else if json.get("by_reason").is_some() {
            self.writeback(json, time, per_second);
        } else if json.get("queries").is_some() {
            // A tool's own --json output does not name it.
            let tool = tool.unwrap_or(match () {
                _ if json.get("socket_backends").is_some() => "pg",
                _ if json.get("tls_connections").is_some() => "mysql",
                _ => "queries",
            });
            self.queries(json, tool, time, per_second);
        } else if json.get("kills").is_some() {
            let kills = self.chart("OOM kills", "kills/s", time);
            kills.add("kills", num(&json["kills"]) * per_second);
        } else if json.get("total_exits").is_some() {
            let chart = self.chart("KVM exits by reason", "exits/s", time);
            chart.fold = true;
            let exits = json["exits"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            for exit in exits {
                chart.add(&text(&exit["reason"]), num(&exit["count"]) * per_second);
            }
            let handling: Vec<&Value> = exits.iter().collect();
            self.heatmap("KVM exit handling time", "ns", time, &handling);
        }
    }

    fn reclaim(&mut self, json: &Value, time: Time, per_second: f64) {
        let compaction = json.get("compaction");
        let stalls = self.chart("Reclaim and compaction stalls", "ms/s", time);
        for kind in ["global", "memcg"] {
            stalls.add(
                kind,
                num(&json[kind]["latency"]["total_us"]) / 1e3 * per_second,
            );
        }
        if let Some(compaction) = compaction {
            stalls.add(
                "compaction",
                num(&compaction["latency"]["total_us"]) / 1e3 * per_second,
            );
        }
        let by_cgroup = self.chart("Stall time by cgroup", "ms/s", time);
        by_cgroup.fold = true;
        for row in json["cgroups"].as_array().into_iter().flatten() {
            by_cgroup.add(&workload(row), num(&row["total_us"]) / 1e3 * per_second);
        }
        let pages = self.chart("Pages reclaimed", "pages/s", time);
        for kind in ["global", "memcg"] {
            pages.add(kind, num(&json[kind]["pages_reclaimed"]) * per_second);
        }
        if let Some(kswapd) = json.get("kswapd") {
            pages.add("kswapd", num(&kswapd["pages_reclaimed"]) * per_second);
        }
        let latencies = [&json["global"]["latency"], &json["memcg"]["latency"]];
        self.heatmap("Reclaim stall latency", "us", time, &latencies);
        if let Some(compaction) = compaction {
            self.heatmap(
                "Compaction stall latency",
                "us",
                time,
                &[&compaction["latency"]],
            );
        }
        self.finding(&json["verdict"], time);
        for row in json["processes"].as_array().into_iter().flatten() {
            let key = (row["pid"].as_u64().unwrap_or(0), text(&row["comm"]));
            tally(&mut self.processes, key, row, row);
        }
        for row in json["cgroups"].as_array().into_iter().flatten() {
            tally(&mut self.cgroups, workload(row), row, row);
        }
    }

    fn writeback(&mut self, json: &Value, time: Time, per_second: f64) {
        let pages = self.chart("Writeback pages by reason", "pages/s", time);
        pages.fold = true;
        pages.add("all", 0.0);
        for (reason, row) in json["by_reason"].as_object().into_iter().flatten() {
            pages.add(reason, num(&row["pages"]) * per_second);
            pages.add("all", num(&row["pages"]) * per_second);
        }
        let pause = &json["throttle_pause"];
        let throttled = self.chart("Dirty-page throttling", "ms/s", time);
        throttled.add("paused", num(&pause["total_us"]) / 1e3 * per_second);
        self.heatmap("Dirty-throttling pauses", "us", time, &[pause]);
    }

    fn queries(&mut self, json: &Value, tool: &str, time: Time, per_second: f64) {
        let latency = &json["latency"];
        let percentiles = self.chart(&format!("{tool}: query latency"), "ms", time);
        for percentile in ["p50", "p90", "p99"] {
            percentiles.add(percentile, num(&latency[format!("{percentile}_us")]) / 1e3);
        }
        let calls = self.chart(&format!("{tool}: queries"), "calls/s", time);
        calls.add("calls", num(&latency["count"]) * per_second);
        let rows = json["queries"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        // Left out at the end where no query had a breakdown (no --breakdown).
        let parts = self.chart(&format!("{tool}: where query time went"), "ms/s", time);
        for row in rows {
            let total = row["breakdown"]["total"].as_object().into_iter().flatten();
            for (part, us) in total.filter(|(part, _)| part.ends_with("_us")) {
                parts.add(part.trim_end_matches("_us"), num(us) / 1e3 * per_second);
            }
        }
        self.heatmap(&format!("{tool}: query latency"), "us", time, &[latency]);
        for row in rows {
            let key = (
                tool.to_owned(),
                text(&row["query"]),
                text(&row["database"]),
                text(&row["user"]),
            );
            tally(&mut self.queries, key, row, &row["latency"]);
        }
    }

    fn kill(&mut self, json: &Value, time: Time) {
        let victim = &json["victim"];
        let explanation = &json["explanation"];
        let who = format!("{} ({})", text(&victim["comm"]), num(&victim["pid"]));
        let cgroup = text(&json["oom_memcg"]);
        let anon = format!("{} KiB", num(&json["anon_rss_kb"]));
        let verdict = text(&explanation["verdict"]);
        let killed = json["killed"] == true;
        let mut details = vec![
            format!("{} OOM, memcg {cgroup}", text(&json["constraint"])),
            format!(
                "anon RSS {anon}, trigger {}",
                text(&json["trigger"]["comm"])
            ),
        ];
        if !verdict.is_empty() {
            details.push(verdict.clone());
        }
        self.marks.push(Mark {
            time,
            kind: "oom_kill",
            label: match killed {
                true => format!("OOM kill: {who}"),
                false => format!("OOM victim already exiting: {who}"),
            },
            details,
        });
        if killed {
            self.finding(&explanation["verdict"], time);
        }
        self.kills
            .push(vec![clock(time), who, cgroup, anon, verdict]);
    }

    /// A threshold crossed: one mark for a run of seconds over it.
    fn threshold(&mut self, json: &Value, time: Time) {
        let reason = text(&json["reason"]).replace('_', " ");
        let value_ms = num(&json["value_us"]) / 1e3;
        let last = self
            .marks
            .iter_mut()
            .rev()
            .find(|mark| mark.kind == "threshold");
        if let Some(run) = last.filter(|mark| mark.label.ends_with(&reason)) {
            let seconds = run.details.len() + 1;
            if time - run.time <= seconds as f64 + 0.5 {
                run.details
                    .push(format!("{} {value_ms:.1} ms", clock(time)));
                return;
            }
        }
        self.marks.push(Mark {
            time,
            kind: "threshold",
            label: format!(
                "over --{}-threshold ({:.1} ms): {reason}",
                if reason == "slow query" {
                    "query"
                } else {
                    "stall"
                },
                num(&json["threshold_us"]) / 1e3
            ),
            details: vec![format!("{} {value_ms:.1} ms", clock(time))],
        });
    }

    fn finish(self) -> Result<Timeline> {
        let times = self
            .charts
            .iter()
            .flat_map(|(_, chart)| chart.times.iter())
            .chain(self.marks.iter().map(|mark| &mark.time))
            .copied();
        let (mut from, mut to) =
            times.fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if from > to {
            bail!("no summaries or events in it: nothing to draw");
        }
        // A summary's time ends its second.
        from -= 1.0;
        // A recording's trigger in the middle.
        if let Some((trigger, span)) = self.span {
            let half = (trigger - from).max(to - trigger).max(span);
            (from, to) = (trigger - half, trigger + half);
        }
        let mut tables = Vec::new();
        let ms = |us: f64| format!("{:.1}", us / 1e3);
        let rows = |tally: Tally<Vec<String>>, columns: &dyn Fn(&[f64; 5]) -> Vec<String>| {
            let mut sorted: Vec<(Vec<String>, [f64; 5])> = tally.into_iter().collect();
            sorted.sort_by(|a, b| b.1[1].total_cmp(&a.1[1]));
            sorted
                .into_iter()
                .take(MOST_ROWS)
                .map(|(mut key, sums)| {
                    key.extend(columns(&sums));
                    key
                })
                .collect::<Vec<_>>()
        };
        let stall_columns = |sums: &[f64; 5]| {
            vec![
                format!("{}", sums[0]),
                ms(sums[1]),
                ms(sums[2]),
                format!("{}", sums[3]),
            ]
        };
        let processes = self
            .processes
            .into_iter()
            .map(|((pid, comm), sums)| (vec![pid.to_string(), comm], sums))
            .collect();
        let processes = rows(processes, &stall_columns);
        let cgroups = rows(
            self.cgroups
                .into_iter()
                .map(|(cgroup, sums)| (vec![cgroup], sums))
                .collect(),
            &stall_columns,
        );
        let queries = rows(
            self.queries
                .into_iter()
                .map(|((tool, query, database, user), sums)| {
                    (vec![tool, query, database, user], sums)
                })
                .collect(),
            &|sums| {
                vec![
                    format!("{}", sums[0]),
                    ms(sums[1]),
                    format!("{:.3}", sums[1] / sums[0].max(1.0) / 1e3),
                    ms(sums[4]),
                ]
            },
        );
        for (title, header, rows) in [
            (
                "Processes that stalled in reclaim or compaction",
                &["PID", "COMM", "STALLS", "TOTAL ms", "MAX ms", "PAGES"][..],
                processes,
            ),
            (
                "Cgroups that stalled",
                &["CGROUP", "STALLS", "TOTAL ms", "MAX ms", "PAGES"][..],
                cgroups,
            ),
            (
                "Queries",
                &[
                    "TOOL",
                    "QUERY",
                    "DATABASE",
                    "USER",
                    "CALLS",
                    "TOTAL ms",
                    "MEAN ms",
                    "RECLAIM ms",
                ][..],
                queries,
            ),
            (
                "OOM kills",
                &["TIME (UTC)", "VICTIM", "MEMCG", "ANON RSS", "WHY"][..],
                self.kills,
            ),
        ] {
            if !rows.is_empty() {
                tables.push(Table {
                    title: title.into(),
                    header: header.to_vec(),
                    rows,
                });
            }
        }
        let mut marks = self.marks;
        marks.sort_by(|a, b| a.time.total_cmp(&b.time));
        Ok(Timeline {
            from,
            to,
            charts: self
                .charts
                .into_iter()
                .map(|(title, chart)| chart.finish(title))
                .filter(|chart| !chart.series.is_empty())
                .collect(),
            heatmaps: self
                .heatmaps
                .into_iter()
                .map(|(_, mut heatmap)| {
                    let mut seconds: Vec<(Time, Vec<u64>)> =
                        heatmap.times.into_iter().zip(heatmap.counts).collect();
                    seconds.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (heatmap.times, heatmap.counts) = seconds.into_iter().unzip();
                    heatmap
                })
                .filter(|heatmap| heatmap.counts.iter().flatten().any(|&count| count > 0))
                .collect(),
            marks,
            findings: self.findings,
            tables,
        })
    }
}

/// `HH:MM:SS` of a time, in UTC.
pub fn clock(time: Time) -> String {
    let secs = time.rem_euclid(86_400.0) as u64;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[Value]) -> Timeline {
        let ndjson: String = lines.iter().map(|line| format!("{line}\n")).collect();
        Timeline::read(&[("test".into(), ndjson.as_bytes())]).unwrap()
    }

    fn chart<'a>(timeline: &'a Timeline, title: &str) -> &'a Chart {
        let found = timeline.charts.iter().find(|chart| chart.title == title);
        found.unwrap_or_else(|| panic!("no chart {title}"))
    }

    #[test]
    fn the_busiest_cgroups_have_lines_and_the_rest_is_other() {
        let cgroups: Vec<Value> = (1..=10)
            .map(|n| serde_json::json!({"cgroup": format!("/cg{n}"), "count": 1, "total_us": n * 1000}))
            .collect();
        let second = |time: &str| {
            serde_json::json!({"type": "summary", "time": time, "interval_s": 0.5,
                "global": {"stalls": 0}, "memcg": {"stalls": 10}, "cgroups": cgroups})
        };
        let timeline = read(&[
            second("2026-12-07T10:00:01.000000Z"),
            second("2026-12-07T10:00:02.000000Z"),
        ]);
        let by_cgroup = chart(&timeline, "Stall time by cgroup");
        let names: Vec<&str> = by_cgroup.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "/cg10", "/cg9", "/cg8", "/cg7", "/cg6", "/cg5", "/cg4", "other"
            ]
        );
        // Per second: each half-second interval counts twice.
        assert_eq!(by_cgroup.series[0].values, [20.0, 20.0]);
        assert_eq!(by_cgroup.series[7].values, [(1 + 2 + 3) as f64 * 2.0; 2]);
        assert_eq!(timeline.to - timeline.from, 2.0);
    }

    #[test]
    fn a_query_tools_own_output_is_named_for_it_and_writeback_sums_its_reasons() {
        let pg = serde_json::json!({"type": "summary", "time": "2026-12-07T10:00:01Z",
            "interval_s": 1.0, "socket_backends": 2, "latency": {"count": 3, "p99_us": 2000.0},
            "queries": []});
        let writeback = serde_json::json!({"type": "summary", "time": "2026-12-07T10:00:01Z",
            "interval_s": 1.0, "by_reason": {"periodic": {"pages": 5}, "sync": {"pages": 7}},
            "throttle_pause": {"total_us": 0.0}});
        let timeline = read(&[pg, writeback]);
        let titles: Vec<&str> = timeline.charts.iter().map(|c| c.title.as_str()).collect();
        // No query had a breakdown: no chart of one.
        assert_eq!(
            titles,
            [
                "pg: query latency",
                "pg: queries",
                "Writeback pages by reason",
                "Dirty-page throttling"
            ]
        );
        assert_eq!(
            chart(&timeline, "pg: query latency").series[2].values,
            [2.0]
        );
        let pages = &chart(&timeline, "Writeback pages by reason").series;
        assert_eq!(pages[0].name, "all");
        assert_eq!(pages[0].values, [12.0]);
    }

    #[test]
    fn recordings_in_any_order_are_drawn_forwards() {
        let second = |time: &str, kills: u64| serde_json::json!({"type": "summary", "time": time, "interval_s": 1.0, "kills": kills});
        let timeline = read(&[
            second("2026-12-07T10:00:05Z", 5),
            second("2026-12-07T10:00:01Z", 1),
            second("2026-12-07T10:00:03Z", 3),
        ]);
        let kills = chart(&timeline, "OOM kills");
        assert!(kills.times.is_sorted());
        assert_eq!(kills.series[0].values, [1.0, 3.0, 5.0]);
    }

    #[test]
    fn kvm_exits_are_drawn_by_reason_per_second() {
        let second = serde_json::json!({"type": "summary", "time": "2026-12-07T10:00:01Z",
            "interval_s": 2.0, "total_exits": 30, "exits": [
                {"reason": "HLT", "count": 20}, {"reason": "IO_INSTRUCTION", "count": 10}]});
        let timeline = read(&[second]);
        let exits = chart(&timeline, "KVM exits by reason");
        let rates: Vec<(&str, f64)> = exits
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.values[0]))
            .collect();
        assert_eq!(rates, [("HLT", 10.0), ("IO_INSTRUCTION", 5.0)]);
        // No exit had a handling time: no heatmap of them.
        assert!(timeline.heatmaps.is_empty());
    }

    #[test]
    fn a_run_of_seconds_over_a_threshold_is_one_mark() {
        let crossed = |time: &str| {
            serde_json::json!({"type": "threshold", "time": time, "reason": "reclaim_stall",
                "value_us": 5000.0, "threshold_us": 1000.0})
        };
        let timeline = read(&[
            crossed("2026-12-07T10:00:01Z"),
            crossed("2026-12-07T10:00:02Z"),
            crossed("2026-12-07T10:00:09Z"),
        ]);
        let marks: Vec<(&str, usize)> = timeline
            .marks
            .iter()
            .map(|mark| (mark.label.as_str(), mark.details.len()))
            .collect();
        let label = "over --stall-threshold (1.0 ms): reclaim stall";
        assert_eq!(marks, [(label, 2), (label, 1)]);
    }

    #[test]
    fn a_recordings_trigger_sits_in_the_middle() {
        let recording = serde_json::json!({"type": "recording", "reason": "oom_kill",
            "time": "2026-12-07T10:00:10Z", "span_s": 5.0});
        let second = serde_json::json!({"type": "summary", "time": "2026-12-07T10:00:06Z",
            "interval_s": 1.0, "kills": 0});
        let timeline = read(&[recording, second]);
        let trigger = parse_rfc3339("2026-12-07T10:00:10Z").unwrap();
        assert_eq!((timeline.from, timeline.to), (trigger - 5.0, trigger + 5.0));
        assert_eq!(timeline.marks[0].kind, "trigger");
    }
}
