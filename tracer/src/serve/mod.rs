//! `tracer serve`: several tools at once as a node agent, from one loaded object, one ring
//! buffer and one tokio runtime, with Prometheus metrics over HTTP and a flight recorder.
//! Each tool runs the same code as its command; serve hands it a summary window every second
//! and keeps what it prints.

mod http;
mod recorder;
mod web_config;

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    rc::Rc,
    time::{Duration, SystemTime},
};

use anyhow::{Result, bail};
use bytes::Bytes;
use clap::{FromArgMatches, ValueEnum};
use tracer_common::record;

use crate::manual::Example;
use crate::{
    event_loop::{self, Tool, Window, read_record},
    loader::{AttachMode, Probes},
    metrics::{Metrics, ToolLabel},
    options::{Timing, TraceOptions},
    output::Output,
    session::{Plan, Session, Started},
    workload::Workloads,
};

/// The port `tracer serve` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9479";

/// What `tracer --help` and the man page show first.
pub const EXAMPLES: &[Example] = &[
    Example {
        what: "The node agent: every tool, Prometheus metrics on :9479",
        command: "sudo tracer serve",
    },
    Example {
        what: "Also PostgreSQL and MySQL queries per pod",
        command: "sudo tracer serve --pg \"\" --mysql \"\"",
    },
    Example {
        what: "Only some tools, on localhost",
        command: "sudo tracer serve --tools direct-reclaim,oom --listen 127.0.0.1:9479",
    },
    Example {
        what: "Over TLS, with client certificates and passwords (node_exporter's web config)",
        command: "sudo tracer serve --web-config /etc/tracer/web-config.yml",
    },
    Example {
        what: "Record the minute around each OOM kill, stall of 100 ms or query of 500 ms or more",
        command: "sudo tracer serve --pg \"\" --record-dir /var/lib/tracer/records --stall-threshold 100 --query-threshold 500",
    },
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tools to run, comma-separated (default: direct-reclaim, writeback, oom, and kvm-exit
    /// where /dev/kvm exists)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "TOOLS")]
    pub tools: Vec<ToolName>,
    /// Address to serve /metrics and /healthz on
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// TLS, client certificates and basic auth, in the file format of Prometheus exporters'
    /// --web.config.file (docs/serve.md)
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,
    /// Also serve /debug/summary: every tool's last summary, query texts included
    #[arg(long)]
    pub debug_summary: bool,
    /// Series per metric before new workloads fold into an `other` series
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub max_series: usize,
    /// Seconds a gone container's series stay before they are dropped
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub grace: u64,
    /// Seconds of per-second summaries kept in memory for the flight recorder and /report
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub history: u64,
    /// Write a recording here on an OOM kill, or a stall or query over its threshold
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// Seconds before and after the trigger a recording covers
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub record_span: u64,
    /// Disk the recordings may take; the oldest go first
    #[arg(long, value_name = "MB", default_value_t = 100)]
    pub record_max_mb: u64,
    /// Record when a reclaim stall takes at least MS milliseconds
    #[arg(long, value_name = "MS")]
    pub stall_threshold: Option<f64>,
    /// Record when a query takes at least MS milliseconds
    #[arg(long, value_name = "MS")]
    pub query_threshold: Option<f64>,
    /// Also run `tracer pg` with these of its options (quoted, e.g. "--via socket -p 123";
    /// "" for its defaults)
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub pg: Option<String>,
    /// Also run `tracer mysql` with these of its options ("" for its defaults)
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub mysql: Option<String>,
    /// Only tasks in this cgroup or below it
    #[arg(short, long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Stop after SECS seconds
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Say how each probe was attached; show verifier logs on failure
    #[arg(short, long)]
    pub verbose: bool,
    /// How to attach tracepoints
    #[arg(long, value_enum, default_value_t, value_name = "HOW")]
    pub attach: AttachMode,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolName {
    DirectReclaim,
    Writeback,
    Oom,
    KvmExit,
}

impl ToolName {
    /// The tool with the options its command has by default.
    fn plan(self) -> Box<dyn Plan> {
        fn defaults<A: clap::Args + FromArgMatches>() -> A {
            parsed("", "").expect("every tool's options have defaults")
        }
        match self {
            Self::DirectReclaim => Box::new(defaults::<crate::direct_reclaim::Args>()),
            Self::Writeback => Box::new(defaults::<crate::writeback::Args>()),
            Self::Oom => Box::new(defaults::<crate::oom::Args>()),
            Self::KvmExit => Box::new(defaults::<crate::kvm_exit::Args>()),
        }
    }
}

/// A tool's options (`--pg "OPTIONS"`) as its command would take them.
fn parsed<A: clap::Args + FromArgMatches>(tool: &str, options: &str) -> Result<A> {
    let command = A::augment_args(clap::Command::new("tracer"));
    let words = std::iter::once(tool).chain(options.split_whitespace());
    let matches = command
        .try_get_matches_from(words)
        .map_err(|err| anyhow::anyhow!("--{tool}: {}", err.render()))?;
    Ok(A::from_arg_matches(&matches)?)
}

pub fn run(args: Args) -> Result<()> {
    // Bound first: a port in use fails before anything is loaded.
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", args.listen))?;
    listener.set_nonblocking(true)?;
    let web_config = args
        .web_config
        .as_deref()
        .map(web_config::WebConfig::load)
        .transpose()?;
    let duration = match args.duration {
        Some(secs) if secs > 0.0 && secs.is_finite() => Some(Duration::from_secs_f64(secs)),
        Some(_) => bail!("-d takes a positive number of seconds"),
        None => None,
    };
    let options = TraceOptions {
        interval: None,
        count: None,
        duration: None,
        pid: None,
        cgroup: args.cgroup.clone(),
        comm: None,
        json: true,
        verbose: args.verbose,
        attach: args.attach,
    };
    let names = if args.tools.is_empty() {
        let mut all = vec![ToolName::DirectReclaim, ToolName::Writeback, ToolName::Oom];
        if std::path::Path::new("/dev/kvm").exists() {
            all.push(ToolName::KvmExit);
        }
        all
    } else {
        args.tools.clone()
    };
    let mut plans: Vec<Box<dyn Plan>> = names.iter().map(|name| name.plan()).collect();
    let mut not_planned = Vec::new();
    let databases = [
        (
            "pg",
            args.pg
                .as_deref()
                .map(|o| parsed("pg", o).and_then(crate::pg::plan)),
        ),
        (
            "mysql",
            args.mysql
                .as_deref()
                .map(|o| parsed("mysql", o).and_then(crate::mysql::plan)),
        ),
    ];
    for (name, planned) in databases {
        match planned {
            Some(Ok(plan)) => plans.push(plan),
            Some(Err(error)) => not_planned.push((name, error)),
            None => {}
        }
    }
    let (mut session, started, mut failed) = Session::start(&options, plans, false)?;
    failed.extend(not_planned);
    if !started.is_empty() {
        for (name, error) in &failed {
            eprintln!("tracer: serve goes on without {name}: {error:#}");
        }
    }
    if started.is_empty() {
        let reasons: Vec<String> = failed
            .iter()
            .map(|(name, error)| format!("{name}: {error:#}"))
            .collect();
        bail!("none of the tools can run here ({})", reasons.join("; "));
    }
    let hierarchy = options.scope()?.hierarchy;
    let mut metrics = Metrics::new(
        args.max_series,
        Duration::from_secs(args.grace),
        hierarchy.mount.clone(),
        Workloads::default(),
    );
    let mut tools = Vec::new();
    for Started {
        name,
        records,
        mut tool,
    } in started
    {
        tool.register_metrics(&mut metrics);
        tools.push(Running {
            name,
            records,
            tool,
            out: Output::memory(),
            lost_seen: 0,
            lost_window: 0,
        });
    }
    let failed_names: Vec<&str> = failed.iter().map(|(name, _)| *name).collect();
    let running: Vec<&str> = tools.iter().map(|running| running.name).collect();
    metrics.register_health(&running, &failed_names);
    let health = http::Health {
        attached: tools.iter().map(|running| running.name).collect(),
        failed: failed
            .iter()
            .map(|(name, error)| (*name, format!("{error:#}")))
            .collect(),
    };
    let state = Rc::new(RefCell::new(http::State {
        metrics,
        summaries: BTreeMap::new(),
        health,
        recorder: recorder::Recorder::new(
            Duration::from_secs(args.history),
            args.record_dir.clone(),
            Duration::from_secs(args.record_span),
            args.record_max_mb << 20,
        ),
    }));
    let mut serving = Serving {
        tools,
        state: state.clone(),
        thresholds: recorder::Thresholds {
            stall_us: args.stall_threshold.map(|ms| ms * 1000.0),
            query_us: args.query_threshold.map(|ms| ms * 1000.0),
        },
        listen: args.listen,
    };
    let timing = Timing {
        interval: Some(Duration::from_secs(1)),
        count: None,
        duration,
    };
    let access = http::Access {
        web_config,
        debug_summary: args.debug_summary,
    };
    let server = http::serve(listener, state, access);
    let mut out = Output::stdout(false);
    event_loop::run_beside(
        &mut session.probes,
        &mut serving,
        timing,
        false,
        &mut out,
        server,
    )?;
    serving.state.borrow_mut().recorder.write_due(true)
}

/// One tool running under serve, printing into memory.
struct Running {
    name: &'static str,
    /// Which tool its records name.
    records: u32,
    tool: Box<dyn Tool>,
    out: Output,
    /// Its lost records so far, and in the window now ending.
    lost_seen: u64,
    lost_window: u64,
}

/// Every tool as one, for the event loop.
struct Serving {
    tools: Vec<Running>,
    state: Rc<RefCell<http::State>>,
    thresholds: recorder::Thresholds,
    listen: SocketAddr,
}

impl Tool for Serving {
    fn start(&mut self, _out: &mut Output) -> Result<()> {
        let names: Vec<&str> = self.tools.iter().map(|running| running.name).collect();
        eprintln!(
            "Tracing with {}; metrics on http://{}/metrics... Hit Ctrl-C to end.",
            names.join(", "),
            self.listen
        );
        Ok(())
    }

    fn record(&mut self, data: &[u8], _out: &mut Output) -> Result<()> {
        let tool = record::tool_of(read_record::<u32>(data)?);
        match self
            .tools
            .iter_mut()
            .find(|running| running.records == tool)
        {
            Some(running) => running.tool.record(data, &mut running.out),
            None => Ok(()),
        }
    }

    fn after_batch(&mut self, probes: &mut Probes) -> Result<()> {
        self.tools
            .iter_mut()
            .try_for_each(|running| running.tool.after_batch(probes))
    }

    fn collect(&mut self, probes: &mut Probes) -> Result<()> {
        let lost = probes.lost_by_tool()?;
        let state = self.state.borrow();
        for running in &mut self.tools {
            running.tool.collect(probes)?;
            let now = lost.get(running.records as usize).copied().unwrap_or(0);
            let label = ToolLabel {
                tool: running.name.to_owned(),
            };
            state
                .metrics
                .lost
                .get_or_create_owned(&label)
                .inc_by(now - running.lost_seen);
            running.lost_window = now - running.lost_seen;
            running.lost_seen = now;
        }
        Ok(())
    }

    fn summary(&mut self, window: &Window, _out: &mut Output) -> Result<()> {
        let mut second = Vec::new();
        let mut state = self.state.borrow_mut();
        for running in &mut self.tools {
            let own = Window {
                end: window.end,
                length: window.length,
                lost: running.lost_window,
                last: window.last,
            };
            running.tool.summary(&own, &mut running.out)?;
            let printed = named(running.name, &running.out.take_written());
            // The summary is the last line the tool printed; events come before it.
            let last = printed[..printed.len().saturating_sub(1)]
                .iter()
                .rposition(|&byte| byte == b'\n')
                .map_or(0, |newline| newline + 1);
            state
                .summaries
                .insert(running.name, Bytes::copy_from_slice(&printed[last..]));
            second.extend_from_slice(&printed);
        }
        state.metrics.tick();
        state
            .recorder
            .push(SystemTime::now(), Bytes::from(second), &self.thresholds);
        state.recorder.write_due(false)
    }
}

/// NDJSON objects with the name of the tool that printed them first: `{"tool":"oom",...}`.
fn named(tool: &str, ndjson: &[u8]) -> Vec<u8> {
    let mut named = Vec::with_capacity(ndjson.len() + 32);
    for line in ndjson.split_inclusive(|&byte| byte == b'\n') {
        match line.strip_prefix(b"{") {
            Some(rest) => {
                named.extend_from_slice(format!(r#"{{"tool":"{tool}","#).as_bytes());
                named.extend_from_slice(rest);
            }
            None => named.extend_from_slice(line),
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_tool_in_each_line() {
        let named = named("oom", b"{\"type\":\"summary\"}\n{\"type\":\"oom_kill\"}\n");
        assert_eq!(
            String::from_utf8(named).unwrap(),
            "{\"tool\":\"oom\",\"type\":\"summary\"}\n{\"tool\":\"oom\",\"type\":\"oom_kill\"}\n"
        );
    }

    #[test]
    fn every_tool_has_defaults() {
        let plans: Vec<Box<dyn Plan>> = ToolName::value_variants()
            .iter()
            .map(|tool| tool.plan())
            .collect();
        let mut records: Vec<u32> = plans.iter().map(|plan| plan.records()).collect();
        records.sort();
        records.dedup();
        assert_eq!(records.len(), plans.len(), "each its own records");
        assert!(!records.contains(&record::tool::PG));
    }
}
