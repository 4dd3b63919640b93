//! Output formats: plain text tables and NDJSON, on a buffered stdout, with wall-clock times for
//! kernel timestamps.

use std::{
    borrow::Cow,
    fmt::Write as _,
    io::{self, BufWriter, Stdout, Write},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

/// Where a tool writes: buffered stdout (tools write freely, the run loop flushes once per
/// batch of records), or memory, where `tracer serve` collects what each tool would print.
pub struct Output {
    out: Sink,
    pub json: bool,
    clock: Clock,
}

enum Sink {
    Stdout(BufWriter<Stdout>),
    Memory(Vec<u8>),
}

impl Output {
    pub fn stdout(json: bool) -> Self {
        Self {
            out: Sink::Stdout(BufWriter::with_capacity(64 * 1024, io::stdout())),
            json,
            clock: Clock::new(),
        }
    }

    /// NDJSON kept in memory until taken.
    pub fn memory() -> Self {
        Self {
            out: Sink::Memory(Vec::new()),
            json: true,
            clock: Clock::new(),
        }
    }

    /// What was written to memory since the last call.
    pub fn take_written(&mut self) -> Vec<u8> {
        match &mut self.out {
            Sink::Memory(written) => std::mem::take(written),
            Sink::Stdout(_) => Vec::new(),
        }
    }

    /// One NDJSON line.
    pub fn json_line(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut *self, value)?;
        self.write_all(b"\n")
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl Write for Output {
    /// Text goes out with its control characters escaped: names and query texts come from
    /// whoever runs a process, and an escape sequence in a comm must not drive the terminal of
    /// the person reading. (JSON escapes its own.)
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = match (self.json, std::str::from_utf8(buf)) {
            (false, Ok(text)) => escape_controls(text, "\n\t"),
            _ => Cow::Borrowed(buf),
        };
        match &mut self.out {
            Sink::Stdout(out) => out.write_all(&text)?,
            Sink::Memory(out) => out.extend_from_slice(&text),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Sink::Stdout(out) => out.flush(),
            Sink::Memory(_) => Ok(()),
        }
    }
}

/// Turns `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) into wall-clock time.
pub struct Clock {
    boot_realtime_ns: i128,
}

impl Clock {
    fn new() -> Self {
        let realtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Self {
            boot_realtime_ns: realtime - monotonic_ns() as i128,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = (self.boot_realtime_ns + ktime_ns as i128).max(0) as u64;
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

/// The kernel's CLOCK_MONOTONIC, which `bpf_ktime_get_ns()` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `HH:MM:SS` in local time, as bcc tools print it.
pub fn clock_time(time: SystemTime) -> String {
    // `as _`: time_t, whose width libc's musl binding is about to change.
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as _;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// RFC 3339 in UTC with microseconds, for NDJSON.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as _;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::gmtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        since.subsec_micros()
    )
}

/// Seconds since the epoch of an RFC 3339 time in UTC, as [`rfc3339`] writes it.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<i32>);
    let (whole, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock = whole.splitn(3, ':').map(str::parse::<i32>);
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = date.next()?.ok()? - 1900;
    tm.tm_mon = date.next()?.ok()? - 1;
    tm.tm_mday = date.next()?.ok()?;
    tm.tm_hour = clock.next()?.ok()?;
    tm.tm_min = clock.next()?.ok()?;
    tm.tm_sec = clock.next()?.ok()?;
    // SAFETY: timegm reads the struct it is given.
    let secs = unsafe { libc::timegm(&mut tm) };
    let fraction: f64 = format!("0.{fraction}").parse().ok()?;
    Some(secs as f64 + fraction)
}

/// `text` for a one-line message: control characters (a comm or a path may hold any) escaped.
pub fn printable(text: &str) -> String {
    String::from_utf8_lossy(&escape_controls(text, "")).into_owned()
}

/// `text` with its control characters, but those in `kept`, written as `\xNN` (C0 and DEL) or
/// `\u{NN}` (C1, which some terminals take as escapes too).
fn escape_controls<'a>(text: &'a str, kept: &str) -> Cow<'a, [u8]> {
    let escaped = |c: char| c.is_control() && !kept.contains(c);
    if !text.contains(escaped) {
        return Cow::Borrowed(text.as_bytes());
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if !escaped(c) => out.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out.into_bytes())
}

/// A task's comm as text.
pub fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// A text table: left-aligned text columns, right-aligned numbers, widths fitted to the cells.
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                self.rows
                    .iter()
                    .map(|row| row[i].chars().count())
                    .chain([header.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let headers = self.columns.iter().map(|(header, _)| header.to_string());
        for cells in std::iter::once(headers.collect::<Vec<_>>()).chain(self.rows.iter().cloned()) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let width = widths[i];
                let last = i + 1 == cells.len();
                let _ = match self.columns[i].1 {
                    Align::Right => write!(line, "{cell:>width$}"),
                    Align::Left if last => write!(line, "{cell}"),
                    Align::Left => write!(line, "{cell:<width$}"),
                };
                if !last {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut table = Table::new(&[
            ("PID", Align::Right),
            ("COMM", Align::Left),
            ("MS", Align::Right),
        ]);
        table.row(vec!["7".into(), "postgres".into(), "12.5".into()]);
        table.row(vec!["12345".into(), "cat".into(), "3.0".into()]);
        assert_eq!(
            table.render(),
            "  PID  COMM        MS\n    7  postgres  12.5\n12345  cat        3.0\n"
        );
    }

    #[test]
    fn escapes_control_characters_in_text() {
        let mut out = Output::memory();
        out.json = false;
        writeln!(out, "evil\x1b[2J\u{9b}31m\tname").unwrap();
        assert_eq!(
            String::from_utf8(out.take_written()).unwrap(),
            "evil\\x1b[2J\\u{9b}31m\tname\n"
        );
        assert_eq!(printable("a\nb\x07"), "a\\x0ab\\x07");
        assert_eq!(printable("plain é"), "plain é");
    }

    #[test]
    fn formats_times() {
        let time = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(rfc3339(time), "2023-11-14T22:13:20.123456Z");
        assert_eq!(comm(b"cat\0\0\0"), "cat");
    }
}
