//! tracer: bcc-style eBPF tools that show why latency happens inside the kernel.
//!
//! A library only so that the fuzz targets (`tracer/fuzz/`) can reach the parsers through
//! [`fuzzing`]; everything else is the command line's.

mod cgroup;
mod compaction;
mod event_loop;
mod flags;
pub mod fuzzing;
mod histogram;
mod kernel_btf;
mod loader;
mod manual;
mod metrics;
mod options;
mod output;
mod perf;
mod pidns;
mod processes;
mod query;
mod report;
mod session;
mod socket;
mod sql;
mod tally;
mod tls;
mod tracefs;
mod usdt;
mod watermarks;
mod workload;

mod direct_reclaim;
mod kvm_exit;
mod mysql;
mod oom;
mod pg;
mod pipeline;
mod serve;
mod writeback;

use std::process::ExitCode;

use clap::{FromArgMatches, Parser, Subcommand, error::ErrorKind};

#[derive(Parser, Debug)]
#[command(name = "tracer", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    tool: ToolCommand,
}

#[derive(Subcommand, Debug)]
enum ToolCommand {
    /// Stalls in global direct reclaim and memory-cgroup reclaim: who, how long, how much
    DirectReclaim(direct_reclaim::Args),
    /// Dirty-page writeback by reason and device, and writers throttled for dirtying pages
    Writeback(writeback::Args),
    /// OOM kills: victim, cgroup, memory, trigger, memcg or global, and the reaper's work
    Oom(oom::Args),
    /// PostgreSQL queries: latency per normalized query, reclaim stalls inside them, counters
    Pg(pg::Args),
    /// KVM: why guests exit and for how long, exits to the VMM, noisy ports and MMIO addresses
    KvmExit(kvm_exit::Args),
    /// MySQL and MariaDB commands: latency per normalized query, reclaim stalls inside them,
    /// counters
    Mysql(mysql::Args),
    /// Run several tools at once as a node agent: Prometheus metrics per container and pod
    /// over HTTP, and a flight recorder
    Serve(serve::Args),
    /// Draw a flight recording or tools' --json output as one HTML page that needs no network
    Report(report::Args),
    /// Print the shell completion script of SHELL
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (tracer.1 and tracer-TOOL.1 for each tool) into DIR
    Man { dir: std::path::PathBuf },
    /// The ring-buffer pipeline at its limit (for `cargo xtask bench events`)
    #[command(hide = true)]
    Pipeline(pipeline::Args),
}

/// The `tracer` command.
pub fn main() -> ExitCode {
    // Errors reach the user as one line, never with a backtrace; yet with RUST_BACKTRACE=1 set
    // anyhow captured one for each, and startup makes several it then explains away (~1 ms).
    // Panics keep theirs: RUST_LIB_BACKTRACE rules library backtraces alone.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let parsed = manual::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            err.exit()
        }
        Err(err) => return fail(&err.render().to_string(), 2),
    };
    let result = match cli.tool {
        ToolCommand::DirectReclaim(args) => direct_reclaim::run(args),
        ToolCommand::Writeback(args) => writeback::run(args),
        ToolCommand::Oom(args) => oom::run(args),
        ToolCommand::Pg(args) => pg::run(args),
        ToolCommand::KvmExit(args) => kvm_exit::run(args),
        ToolCommand::Mysql(args) => mysql::run(args),
        ToolCommand::Serve(args) => serve::run(args),
        ToolCommand::Report(args) => report::run(args),
        ToolCommand::Pipeline(args) => pipeline::run(args),
        ToolCommand::Completions { shell } => {
            manual::write_completions(shell, &mut std::io::stdout());
            Ok(())
        }
        ToolCommand::Man { dir } => manual::write_man_pages(&dir).map(|pages| {
            for page in pages {
                println!("{}", page.display());
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("{err:#}"), 1),
    }
}

/// One line on stderr: bad input is not worth a backtrace or a usage screen. Messages that
/// span lines (clap's, for one) are cut at their first blank line and joined; control
/// characters are escaped.
fn fail(message: &str, code: u8) -> ExitCode {
    let paragraph = message.trim().split("\n\n").next().unwrap_or_default();
    let line = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    // Paths and names in it may be a tenant's, escape sequences and all.
    eprintln!("tracer: {}", output::printable(line));
    ExitCode::from(code)
}

/// `tracer ... | head` closing the pipe is a normal way to stop.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<direct_reclaim::Args, clap::Error> {
        let cli = Cli::try_parse_from(["tracer", "direct-reclaim"].iter().chain(args))?;
        match cli.tool {
            ToolCommand::DirectReclaim(args) => Ok(args),
            _ => unreachable!("parsed direct-reclaim"),
        }
    }

    fn rejected(args: &[&str]) -> ErrorKind {
        parse(args).expect_err("should be rejected").kind()
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn takes_bcc_style_interval_and_count() {
        let timing = parse(&["2.5", "3"]).unwrap().trace.timing();
        assert_eq!(timing.interval, Some(Duration::from_millis(2500)));
        assert_eq!(timing.count, Some(3));
        assert_eq!(timing.duration, None);
        let timing = parse(&["-d", "10"]).unwrap().trace.timing();
        assert_eq!(
            (timing.interval, timing.duration),
            (None, Some(Duration::from_secs(10)))
        );
    }

    #[test]
    fn takes_filters_and_modes() {
        let args = parse(&[
            "-p", "1", "--comm", "postgres", "--events", "--min-us", "50", "--json",
        ])
        .unwrap();
        assert_eq!(args.trace.pid, Some(1));
        assert_eq!(args.trace.comm.as_deref(), Some("postgres"));
        assert!(args.events && args.trace.json);
        assert_eq!(args.min_us, Some(50));
        assert_eq!(args.trace.attach, loader::AttachMode::Auto);
        assert_eq!(
            parse(&["--attach", "classic"]).unwrap().trace.attach,
            loader::AttachMode::Classic
        );
    }

    #[test]
    fn rejects_what_makes_no_sense() {
        assert_eq!(rejected(&["0"]), ErrorKind::ValueValidation);
        assert_eq!(rejected(&["-d", "-1"]), ErrorKind::UnknownArgument);
        assert_eq!(rejected(&["1", "0"]), ErrorKind::ValueValidation);
        assert_eq!(rejected(&["-p", "0"]), ErrorKind::ValueValidation);
        assert_eq!(rejected(&["--events", "1"]), ErrorKind::ArgumentConflict);
        assert_eq!(
            rejected(&["-d", "5", "1", "2"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            rejected(&["--min-us", "5"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(rejected(&["--attach", "kprobe"]), ErrorKind::InvalidValue);
    }

    #[test]
    fn turns_filters_into_kernel_filter() {
        let scope = parse(&["-p", "1", "--comm", "cat"])
            .unwrap()
            .trace
            .scope()
            .unwrap();
        assert_eq!(scope.filter.pid, 1);
        assert_eq!(&scope.filter.comm[..4], b"cat\0");
        assert_eq!(scope.filter.cgroup_id, 0);
        assert!(
            parse(&["--comm", "sixteen-chars-xx"])
                .unwrap()
                .trace
                .scope()
                .is_err()
        );
        assert!(parse(&["-p", "4194304"]).unwrap().trace.scope().is_err());

        // A cgroup filter picks that cgroup's hierarchy and its inode as the id.
        let memory = cgroup::Hierarchy::for_memory().unwrap();
        let mount = memory.mount.to_str().unwrap();
        let scope = parse(&["-c", mount]).unwrap().trace.scope().unwrap();
        assert_eq!(scope.hierarchy, memory);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            scope.filter.cgroup_id,
            std::fs::metadata(mount).unwrap().ino()
        );
    }
}
