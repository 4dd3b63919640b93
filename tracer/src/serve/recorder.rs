//! The flight recorder: the last `--history` of what every tool printed, second by second, kept
//! in memory; when something goes wrong (an OOM kill, a reclaim stall or a query over its
//! threshold), the stretch before it and after it is written to `--record-dir`, so what led up
//! to it can be read afterwards. Disk use is bounded: the oldest recordings go first.

use std::{
    collections::VecDeque,
    io::Write as _,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use bytes::Bytes;

use crate::output::rfc3339;

pub struct Recorder {
    /// NDJSON printed by the tools, per second.
    history: VecDeque<(SystemTime, Bytes)>,
    keep: Duration,
    dir: Option<PathBuf>,
    /// How long before and after a trigger a recording covers.
    span: Duration,
    max_bytes: u64,
    pending: Vec<Pending>,
    /// Recordings written so far.
    pub written: u64,
}

struct Pending {
    reason: String,
    at: SystemTime,
}

/// What makes a recording.
pub struct Thresholds {
    pub stall_us: Option<f64>,
    pub query_us: Option<f64>,
}

impl Recorder {
    pub fn new(keep: Duration, dir: Option<PathBuf>, span: Duration, max_bytes: u64) -> Self {
        Self {
            history: VecDeque::new(),
            keep: keep.max(span),
            dir,
            span,
            max_bytes,
            pending: Vec::new(),
            written: 0,
        }
    }

    /// How long the history goes back.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// What the tools printed over the history kept, second by second, oldest first.
    pub fn history(&self) -> Vec<Bytes> {
        self.history
            .iter()
            .map(|(_, lines)| lines.clone())
            .collect()
    }

    /// One second's NDJSON; looks in it for what triggers a recording. A threshold crossed is
    /// noted in the second as a `threshold` line, for whoever draws it.
    pub fn push(&mut self, now: SystemTime, lines: Bytes, thresholds: &Thresholds) {
        let mut lines = lines;
        if let Some(trigger) = trigger(&lines, thresholds) {
            if let Some((value_us, threshold_us)) = trigger.crossed {
                let mut noted = lines.to_vec();
                noted.extend_from_slice(
                    serde_json::json!({
                        "type": "threshold",
                        "time": rfc3339(now),
                        "reason": trigger.reason,
                        "value_us": value_us,
                        "threshold_us": threshold_us,
                    })
                    .to_string()
                    .as_bytes(),
                );
                noted.push(b'\n');
                lines = Bytes::from(noted);
            }
            if self.dir.is_some() && self.pending.is_empty() {
                self.pending.push(Pending {
                    reason: trigger.reason.into(),
                    at: now,
                });
            }
        }
        self.history.push_back((now, lines));
        while self
            .history
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at).unwrap_or_default() > self.keep)
        {
            self.history.pop_front();
        }
    }

    /// Writes the recordings whose stretch after the trigger has passed, or all of them with
    /// `now` (tracer is stopping).
    pub fn write_due(&mut self, now: bool) -> Result<()> {
        let due: Vec<Pending> = std::mem::take(&mut self.pending)
            .into_iter()
            .filter_map(|pending| {
                let passed = pending.at.elapsed().unwrap_or_default() >= self.span;
                if now || passed {
                    Some(pending)
                } else {
                    self.pending.push(pending);
                    None
                }
            })
            .collect();
        for pending in due {
            self.write(&pending)?;
        }
        Ok(())
    }

    fn write(&mut self, pending: &Pending) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let stamp = rfc3339(pending.at).replace(':', "");
        let path = dir.join(format!("tracer-{stamp}-{}.ndjson", pending.reason));
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        );
        writeln!(
            file,
            r#"{{"type":"recording","reason":"{}","time":"{}","span_s":{}}}"#,
            pending.reason,
            rfc3339(pending.at),
            self.span.as_secs_f64()
        )?;
        let from = pending.at - self.span;
        for (_, lines) in self.history.iter().filter(|(at, _)| *at >= from) {
            file.write_all(lines)?;
        }
        file.flush()?;
        self.written += 1;
        self.prune(dir.clone())
    }

    /// Removes the oldest recordings until they fit in `max_bytes`.
    fn prune(&self, dir: PathBuf) -> Result<()> {
        let mut recordings: Vec<(PathBuf, u64)> = std::fs::read_dir(&dir)?
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with("tracer-") && name.ends_with(".ndjson")
            })
            .filter_map(|entry| Some((entry.path(), entry.metadata().ok()?.len())))
            .collect();
        // Named by time: oldest first.
        recordings.sort();
        let mut total: u64 = recordings.iter().map(|(_, size)| size).sum();
        for (path, size) in recordings {
            if total <= self.max_bytes {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= size;
        }
        Ok(())
    }
}

/// Why a second calls for a recording.
struct Trigger {
    reason: &'static str,
    /// For a threshold crossed: the value and the threshold (us).
    crossed: Option<(f64, f64)>,
}

/// Why `lines` (one second of NDJSON) calls for a recording, if it does.
fn trigger(lines: &[u8], thresholds: &Thresholds) -> Option<Trigger> {
    let over = |limit: Option<f64>, us: Option<f64>| limit.zip(us).filter(|(l, us)| us >= l);
    for line in lines.split(|&byte| byte == b'\n') {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        match json["type"].as_str() {
            Some("oom_kill") if json["killed"] == true => {
                return Some(Trigger {
                    reason: "oom_kill",
                    crossed: None,
                });
            }
            Some("summary") => {
                let stall = ["global", "memcg"]
                    .iter()
                    .filter_map(|kind| json[kind]["latency"]["max_us"].as_f64())
                    .fold(None, |max: Option<f64>, us| {
                        Some(max.map_or(us, |m| m.max(us)))
                    });
                if let Some((limit, us)) = over(thresholds.stall_us, stall) {
                    return Some(Trigger {
                        reason: "reclaim_stall",
                        crossed: Some((us, limit)),
                    });
                }
                let query = json["latency"]["max_us"].as_f64();
                if let Some((limit, us)) = over(thresholds.query_us, query) {
                    return Some(Trigger {
                        reason: "slow_query",
                        crossed: Some((us, limit)),
                    });
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(history: &mut Recorder, at: SystemTime, line: &str) {
        let none = Thresholds {
            stall_us: Some(1000.0),
            query_us: None,
        };
        history.push(at, Bytes::from(format!("{line}\n")), &none);
    }

    #[test]
    fn records_the_stretch_around_an_oom_kill_and_keeps_disk_use_bounded() {
        let dir = std::env::temp_dir().join(format!("tracer-recorder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let span = Duration::from_secs(2);
        let mut recorder = Recorder::new(Duration::from_secs(60), Some(dir.clone()), span, 450);
        let start = SystemTime::now() - Duration::from_secs(30);
        let at = |secs| start + Duration::from_secs(secs);
        second(&mut recorder, at(0), r#"{"type":"summary","n":0}"#);
        second(&mut recorder, at(1), r#"{"type":"summary","n":1}"#);
        second(&mut recorder, at(2), r#"{"type":"summary","n":2}"#);
        second(&mut recorder, at(3), r#"{"type":"oom_kill","killed":true}"#);
        second(&mut recorder, at(4), r#"{"type":"summary","n":4}"#);
        recorder.write_due(false).unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains(r#""reason":"oom_kill""#), "{text}");
        // Two seconds before the kill and what came after it; not the first second.
        assert_eq!(lines[1..].len(), 4, "{text}");
        assert!(lines[1].contains(r#""n":1"#), "{text}");
        // A stall over the threshold makes another; the oldest goes to stay within 450 bytes.
        second(
            &mut recorder,
            at(5),
            r#"{"type":"summary","memcg":{"latency":{"max_us":5000.0}}}"#,
        );
        recorder.write_due(true).unwrap();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].ends_with("-reclaim_stall.ndjson"), "{names:?}");
        // The second that crossed the threshold says so.
        let text = std::fs::read_to_string(dir.join(&names[0])).unwrap();
        let crossed = text.lines().last().unwrap();
        assert!(crossed.contains(r#""type":"threshold""#), "{text}");
        assert!(crossed.contains(r#""value_us":5000.0"#), "{text}");
        assert!(crossed.contains(r#""threshold_us":1000.0"#), "{text}");
        assert_eq!(recorder.written, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
