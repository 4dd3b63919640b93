//! What tracing costs a database, measured on two identical servers under load at once, only
//! the second traced: the VM's throughput swings by a third from one run to the next, but it
//! swings for both alike, so the ratio of their throughputs shows what tracing costs. The
//! second runs a copy of the server binary, so that uprobes (which belong to the file) stay out
//! of the first.
//!
//! Even so, the two seldom get exactly half of the CPU each, which moves the throughput ratio
//! by a few percent either way (unless each server has a CPU of its own: [`CpuAccount::pin`]).
//! The CPU time each server's processes take per transaction does
//! not depend on their share: it is measured too, with a cgroup per server (see [`CpuAccount`]),
//! and the trap and kernel-program time of a probe is spent in the server thread that hits it,
//! so it lands there.

use std::path::Path;

use anyhow::{Context, Result};
use tracer_tests::Cgroup;

use crate::bench::{Tool, median};

/// One way of running the load: untraced, or under a tracing tool.
pub struct Config {
    pub name: &'static str,
    /// The tool and the line it prints once attached; `None` runs untraced (the first).
    pub tool: Option<(Vec<String>, &'static str)>,
}

impl Config {
    pub fn untraced() -> Self {
        Self {
            name: "untraced",
            tool: None,
        }
    }

    /// `tracer` with these arguments.
    pub fn tracer(name: &'static str, tracer: &Path, args: &[&str]) -> Self {
        let mut command = vec![tracer.display().to_string()];
        command.extend(args.iter().map(|arg| arg.to_string()));
        Self {
            name,
            tool: Some((command, "Tracing")),
        }
    }

    /// A bpftrace program that prints "ready" once attached.
    pub fn bpftrace(name: &'static str, program: &str) -> Self {
        let program = format!("{program}\nBEGIN {{ printf(\"ready\\n\"); }}");
        Self {
            name,
            tool: Some((
                ["stdbuf", "-oL", "bpftrace", "-e", &program]
                    .map(String::from)
                    .to_vec(),
                "ready",
            )),
        }
    }
}

/// One server's run of the load.
pub struct Run {
    pub tps: f64,
    pub transactions: f64,
    /// CPU time its processes took meanwhile.
    pub cpu_seconds: f64,
}

/// The load on both servers at once, for so many seconds (at so many transactions per second
/// each, or as many as they take).
pub type RunBoth<'a> = dyn Fn(u32, Option<u32>) -> Result<[Run; 2]> + 'a;

/// How a benchmark was run, for its report.
pub struct Plan<'a> {
    /// The load, as the report's first line names it.
    pub load: String,
    pub configs: Vec<Config>,
    /// The peer the goal names (at most half of its cost), and the prefix of tracer's
    /// configurations measured against it.
    pub peer: &'static str,
    pub ours: &'static str,
    pub rounds: usize,
    pub seconds: u32,
    pub rate: Option<u32>,
    pub run_both: &'a RunBoth<'a>,
    /// The traced server's CPU, where the tool runs too, when the servers are pinned.
    pub tool_cpu: Option<usize>,
}

pub fn measure(plan: Plan) -> Result<()> {
    let Plan {
        load,
        configs,
        peer,
        ours,
        rounds,
        seconds,
        rate,
        run_both,
        tool_cpu,
    } = plan;
    let cpus = std::thread::available_parallelism()?.get() as f64;
    eprintln!("bench: warming up");
    run_both(5, rate)?;

    // Per configuration and round: traced TPS / plain TPS, and the traced server's CPU time per
    // transaction (with the tool's) / the plain one's.
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut costs: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut failed: Vec<Option<String>> = vec![None; configs.len()];
    for round in 1..=rounds {
        for (i, config) in configs.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            let tool = match &config.tool {
                Some((command, ready)) => match Tool::start(command, ready) {
                    Ok((tool, _)) => {
                        if tool_cpu.is_some() {
                            pin(tool.pid(), tool_cpu)?;
                        }
                        Some(tool)
                    }
                    Err(err) => {
                        failed[i] = Some(format!("{err:#}"));
                        continue;
                    }
                },
                None => None,
            };
            let tool_cpu = tool.as_ref().map_or(0.0, Tool::cpu_seconds);
            let [plain_run, traced_run] = run_both(seconds, rate)?;
            let (plain_tps, traced_tps) = (plain_run.tps, traced_run.tps);
            let tool_cpu = tool.as_ref().map_or(0.0, Tool::cpu_seconds) - tool_cpu;
            drop(tool);
            costs[i].push(
                (traced_run.cpu_seconds + tool_cpu)
                    / traced_run.transactions
                    / (plain_run.cpu_seconds / plain_run.transactions),
            );
            // The tool's own process took CPU from both servers alike: charge it all to the
            // traced one. Either server's fair share is half the machine.
            let share = cpus * f64::from(seconds) / 2.0;
            let ratio = traced_tps / plain_tps * (share - tool_cpu) / share;
            eprintln!(
                "bench: round {round}: {:<28} {traced_tps:>7.0} tps beside {plain_tps:>7.0} untraced; \
                 CPU per transaction {:.1} us (tool {:.1} us) beside {:.1} us",
                config.name,
                (traced_run.cpu_seconds + tool_cpu) * 1e6 / traced_run.transactions,
                tool_cpu * 1e6 / traced_run.transactions,
                plain_run.cpu_seconds * 1e6 / plain_run.transactions,
            );
            ratios[i].push(ratio);
        }
    }

    let pace = rate.map_or(String::new(), |rate| format!(" at {rate} tps each"));
    println!(
        "{load}{pace} on two identical servers at once, the second traced; \
         {seconds} s per run, {rounds} rounds; medians"
    );
    println!(
        "{:<28} {:>10} {:>8} {:>16} {:>9}",
        "", "TPS ratio", "TPS loss", "CPU/txn ratio", "CPU cost"
    );
    // Against the round's untraced pair, so that any difference between the servers cancels.
    let against_untraced = |values: &[Vec<f64>], i: usize, sign: f64| {
        median(
            values[i]
                .iter()
                .zip(&values[0])
                .map(|(traced, plain)| sign * 100.0 * (traced / plain - 1.0)),
        )
    };
    let loss = |i: usize| against_untraced(&ratios, i, -1.0);
    let cost = |i: usize| against_untraced(&costs, i, 1.0);
    for (i, config) in configs.iter().enumerate() {
        let (ratio, cpu) = (
            median(ratios[i].iter().copied()),
            median(costs[i].iter().copied()),
        );
        match &failed[i] {
            Some(reason) => println!("{:<28} could not run here: {reason}", config.name),
            None if i == 0 => println!("{:<28} {ratio:>10.3} {:>8} {cpu:>16.3}", config.name, ""),
            None => println!(
                "{:<28} {ratio:>10.3} {:>7.1}% {cpu:>16.3} {:>8.1}%",
                config.name,
                loss(i),
                cost(i)
            ),
        }
    }
    // Each of tracer's configurations against the peer the goal names.
    let peer = configs
        .iter()
        .position(|config| config.name == peer)
        .context("the peer's configuration")?;
    let verdict = |ours: f64, theirs: f64| {
        if ours <= theirs / 2.0 {
            "met"
        } else {
            "NOT met"
        }
    };
    let tracers = (0..configs.len()).filter(|&i| configs[i].name.starts_with(ours));
    for ours in tracers {
        let loss = match rate {
            Some(_) => "TPS loss not measured at a fixed rate".to_string(),
            None => format!(
                "TPS loss ratio {:.2} (goal, at most half: {})",
                loss(ours) / loss(peer),
                verdict(loss(ours), loss(peer)),
            ),
        };
        println!(
            "{} / {}: {loss}; CPU cost ratio {:.2} ({})",
            configs[ours].name,
            configs[peer].name,
            cost(ours) / cost(peer),
            verdict(cost(ours), cost(peer)),
        );
    }
    Ok(())
}

/// A cgroup that accounts the CPU time of a server's processes: in cgroup v1's cpuacct
/// hierarchy where there is one (accounting only, it changes no scheduling), else in the v2
/// hierarchy, whose `cpu.stat` counts usage without the cpu controller.
pub struct CpuAccount {
    pub cgroup: Cgroup,
    v1: bool,
    /// The CPU its processes and their load run on, once pinned.
    pub cpu: Option<usize>,
}

impl CpuAccount {
    pub fn create(name: &str) -> Self {
        let root = Path::new("/sys/fs/cgroup");
        let (hierarchy, v1) = if root.join("cpuacct/cpuacct.usage").exists() {
            ("cpuacct", true)
        } else if root.join("unified/cgroup.procs").exists() {
            ("unified", false)
        } else {
            (".", false)
        };
        Self {
            cgroup: Cgroup::create(hierarchy, name),
            v1,
            cpu: None,
        }
    }

    /// Keeps its processes (those in it now, and what they fork: a postmaster's backends) and
    /// the load [`run_both_with`] drives at them on `cpu` alone (`None`: anywhere again): then
    /// neither server takes the other's CPU time, and a saturated server's CPU per transaction
    /// does not move with how the scheduler shares the machine between them.
    pub fn pin(&mut self, cpu: Option<usize>) -> Result<()> {
        for pid in self.cgroup.read("cgroup.procs").lines() {
            pin(pid.parse()?, cpu)?;
        }
        self.cpu = cpu;
        Ok(())
    }

    /// CPU time its processes took so far.
    pub fn seconds(&self) -> Result<f64> {
        let (file, field, per_second) = if self.v1 {
            ("cpuacct.usage", "", 1e9)
        } else {
            ("cpu.stat", "usage_usec", 1e6)
        };
        let text = self.cgroup.read(file);
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(field)?.trim().parse::<f64>().ok())
            .with_context(|| format!("no {field} in {file}: {text}"))?;
        Ok(value / per_second)
    }
}

/// Runs `load` on both servers at once, each with its CPU account; `parse` reads a run's
/// output into (TPS, transactions).
pub fn run_both_with(
    accounts: &[CpuAccount; 2],
    load: impl Fn(usize) -> std::process::Command,
    parse: impl Fn(&str) -> Result<(f64, f64)>,
) -> Result<[Run; 2]> {
    use std::process::Stdio;
    let cpu_before = [accounts[0].seconds()?, accounts[1].seconds()?];
    let children = [0, 1].map(|i| {
        let mut command = load(i);
        if let Some(cpu) = accounts[i].cpu {
            command = pinned(command, cpu);
        }
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    });
    let outputs = children.map(|child| -> Result<String> {
        let output = child?.wait_with_output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    });
    let mut runs = Vec::new();
    for ((output, account), before) in outputs.into_iter().zip(accounts).zip(cpu_before) {
        let (tps, transactions) = parse(&output?)?;
        runs.push(Run {
            tps,
            transactions,
            cpu_seconds: account.seconds()? - before,
        });
    }
    Ok(runs
        .try_into()
        .unwrap_or_else(|_| unreachable!("a run per server")))
}

/// Every thread of process `pid` on `cpu` alone (`None`: on any).
fn pin(pid: u32, cpu: Option<usize>) -> Result<()> {
    let cpus = match cpu {
        Some(cpu) => cpu.to_string(),
        None => format!("0-{}", std::thread::available_parallelism()?.get() - 1),
    };
    let status = std::process::Command::new("taskset")
        .args([
            "--all-tasks",
            "--cpu-list",
            "--pid",
            &cpus,
            &pid.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset")?;
    anyhow::ensure!(status.success(), "taskset {pid}: {status}");
    Ok(())
}

/// `command` run on `cpu` alone.
fn pinned(command: std::process::Command, cpu: usize) -> std::process::Command {
    let mut taskset = std::process::Command::new("taskset");
    taskset
        .args(["--cpu-list", &cpu.to_string()])
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => taskset.env(name, value),
            None => taskset.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        taskset.current_dir(dir);
    }
    taskset
}

/// The number after `prefix` on the first line that has it.
pub fn field(output: &str, prefix: &str, what: &str) -> Result<f64> {
    output
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once(prefix)?;
            rest.trim_start_matches(['(', ' '])
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no '{prefix}' in {what}'s output: {output}"))
}
