//! `tracer pipeline` (hidden, for `cargo xtask bench events`): how many records per second the
//! ring-buffer pipeline delivers and decodes, one per `getppid()` of the process traced (`-p`),
//! and how many it lost. An empty program rides the same tracepoint, for the kernel's own cost.

use anyhow::Result;
use serde::Serialize;
use tracer_common::pipeline::Sample;

use crate::{
    event_loop::{Tool, Window, read_record},
    loader::Tracepoint,
    options::TraceOptions,
    output::{self, Output},
    session::{self, Context, Plan},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub trace: TraceOptions,
}

const TRACEPOINTS: &[Tracepoint] = &[
    Tracepoint {
        category: "syscalls",
        name: "sys_enter_getppid",
        program: "pipeline_sample",
        args: None,
        fields: &[],
    },
    Tracepoint {
        category: "syscalls",
        name: "sys_enter_getppid",
        program: "pipeline_empty",
        args: None,
        fields: &[],
    },
];

/// Room for a quarter of a second of records at 4 million a second.
const RING_BYTES: u32 = 32 << 20;

pub fn run(args: Args) -> Result<()> {
    let trace = args.trace.clone();
    session::run(&trace, Box::new(args), true)
}

impl Plan for Args {
    fn name(&self) -> &'static str {
        "pipeline"
    }

    fn records(&self) -> u32 {
        tracer_common::record::tool::PIPELINE
    }

    fn tracepoints(&self) -> Vec<Tracepoint> {
        TRACEPOINTS.to_vec()
    }

    fn settings(&self, _kernel: &crate::loader::Kernel) -> Result<Vec<crate::loader::Setting>> {
        Ok(vec![crate::loader::Setting::MapSize {
            name: "EVENTS",
            size: RING_BYTES,
        }])
    }

    fn start(self: Box<Self>, _context: &mut Context) -> Result<Box<dyn Tool>> {
        Ok(Box::new(Pipeline::default()))
    }
}

#[derive(Default)]
struct Pipeline {
    events: u64,
    /// Threads seen: the records are decoded, not only counted.
    max_tid: u32,
}

impl Tool for Pipeline {
    fn start(&mut self, _out: &mut Output) -> Result<()> {
        eprintln!("Tracing getppid() through the ring buffer... Hit Ctrl-C to end.");
        Ok(())
    }

    fn record(&mut self, data: &[u8], _out: &mut Output) -> Result<()> {
        let sample: Sample = read_record(data)?;
        self.events += 1;
        self.max_tid = self.max_tid.max(sample.tid);
        Ok(())
    }

    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()> {
        out.json_line(&SummaryJson {
            r#type: "summary",
            time: output::rfc3339(window.end),
            interval_s: window.length.as_secs_f64(),
            events: std::mem::take(&mut self.events),
            lost: window.lost,
        })?;
        Ok(())
    }
}

#[derive(Serialize)]
struct SummaryJson {
    r#type: &'static str,
    time: String,
    interval_s: f64,
    events: u64,
    lost: u64,
}
