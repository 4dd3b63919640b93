//! `tracer report`: a flight recording, or what tools printed with `--json`, as one
//! self-contained HTML page: reclaim, compaction, writeback, queries and KVM exits per second
//! on one time axis, OOM kills and the recording's trigger marked on it, latency heatmaps, and
//! the window's tables. serve draws the same page from its memory at `/report`.

mod draw;
mod page;
mod timeline;

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::manual::Example;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Flight recordings (serve's --record-dir) or NDJSON printed by tools with --json; several
    /// are drawn on one time axis
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Where to write the page; `-` for standard output [default: the first FILE, ending in
    /// .html]
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub const EXAMPLES: &[Example] = &[
    Example {
        what: "A page of the recording serve wrote at an OOM kill, beside it (.html)",
        command: "tracer report /var/lib/tracer/records/tracer-2026-12-07T234146.272083Z-oom_kill.ndjson",
    },
    Example {
        what: "Record a minute of reclaim stalls, then draw it",
        command: "sudo tracer direct-reclaim --json 1 60 > reclaim.ndjson && tracer report reclaim.ndjson",
    },
    Example {
        what: "Queries and reclaim side by side, on one time axis",
        command: "tracer report pg.ndjson reclaim.ndjson -o incident.html",
    },
    Example {
        what: "Every recording in a directory, one after another on one page",
        command: "tracer report /var/lib/tracer/records/*.ndjson -o records.html",
    },
    Example {
        what: "Print the page, for a pipe",
        command: "tracer report reclaim.ndjson -o -",
    },
];

pub fn run(args: Args) -> Result<()> {
    let contents = args
        .files
        .iter()
        .map(|path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display())))
        .collect::<Result<Vec<_>>>()?;
    let inputs: Vec<(String, &[u8])> = args
        .files
        .iter()
        .zip(&contents)
        .map(|(path, bytes)| (path.display().to_string(), bytes.as_slice()))
        .collect();
    let names: Vec<String> = args
        .files
        .iter()
        .map(|path| {
            path.file_name().map_or(path.display().to_string(), |name| {
                name.to_string_lossy().into()
            })
        })
        .collect();
    let html = render(&inputs, &names.join(", "))?;
    let output = args
        .output
        .unwrap_or_else(|| args.files[0].with_extension("html"));
    if output.as_os_str() == "-" {
        use std::io::Write as _;
        return Ok(std::io::stdout().write_all(html.as_bytes())?);
    }
    std::fs::write(&output, html).with_context(|| format!("cannot write {}", output.display()))?;
    println!("{}", output.display());
    Ok(())
}

/// The page for NDJSON `inputs` (each named for errors), titled `title`.
pub fn render(inputs: &[(String, &[u8])], title: &str) -> Result<String> {
    let timeline = timeline::Timeline::read(inputs)?;
    Ok(page::page(&timeline, title))
}
