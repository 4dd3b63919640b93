//! What a person reads besides the README, made from the clap definitions so that it cannot
//! drift from them: the EXAMPLES that end every `--help`, man pages and shell completions.

use std::{io::Write, path::Path};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::{
    Man,
    roff::{Roff, bold, roman},
};

use crate::Cli;

/// One invocation a person needs, and what it shows.
pub struct Example {
    pub what: &'static str,
    pub command: &'static str,
}

/// Each subcommand's examples, by name; `""` is `tracer` itself.
const EXAMPLES: &[(&str, &[Example])] = &[
    ("", TRACER),
    ("direct-reclaim", crate::direct_reclaim::EXAMPLES),
    ("writeback", crate::writeback::EXAMPLES),
    ("oom", crate::oom::EXAMPLES),
    ("kvm-exit", crate::kvm_exit::EXAMPLES),
    ("pg", crate::pg::EXAMPLES),
    ("mysql", crate::mysql::EXAMPLES),
    ("serve", crate::serve::EXAMPLES),
    ("report", crate::report::EXAMPLES),
    ("completions", COMPLETIONS),
    ("man", MAN),
];

const TRACER: &[Example] = &[
    Example {
        what: "Which tasks stall in direct reclaim and compaction, and for how long",
        command: "sudo tracer direct-reclaim",
    },
    Example {
        what: "PostgreSQL queries: latency per normalized query, reclaim inside each",
        command: "sudo tracer pg",
    },
    Example {
        what: "OOM kills as they happen: victim, cgroup, memory",
        command: "sudo tracer oom",
    },
    Example {
        what: "Every tool at once, as Prometheus metrics on :9479",
        command: "sudo tracer serve",
    },
    Example {
        what: "Completion of commands and options in bash",
        command: "tracer completions bash > /etc/bash_completion.d/tracer",
    },
];

const COMPLETIONS: &[Example] = &[
    Example {
        what: "bash, for every user",
        command: "tracer completions bash > /etc/bash_completion.d/tracer",
    },
    Example {
        what: "zsh (a directory in $fpath)",
        command: "tracer completions zsh > /usr/local/share/zsh/site-functions/_tracer",
    },
    Example {
        what: "fish",
        command: "tracer completions fish > ~/.config/fish/completions/tracer.fish",
    },
];

const MAN: &[Example] = &[Example {
    what: "Install the man pages, then read one",
    command: "sudo tracer man /usr/local/share/man/man1 && man tracer-pg",
}];

fn examples(name: &str) -> &'static [Example] {
    EXAMPLES
        .iter()
        .find(|(tool, _)| *tool == name)
        .map_or(&[], |(_, examples)| examples)
}

/// tracer's command line, each `--help` ending in its examples.
pub fn command() -> clap::Command {
    let mut command = Cli::command().after_help(as_help(examples("")));
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        let text = as_help(examples(&name));
        if !text.is_empty() {
            command = command.mut_subcommand(name, |sub| sub.after_help(text));
        }
    }
    command
}

fn as_help(examples: &[Example]) -> String {
    if examples.is_empty() {
        return String::new();
    }
    let mut text = String::from("Examples:");
    for example in examples {
        text += &format!("\n  # {}\n  {}\n", example.what, example.command);
    }
    text.trim_end().to_owned()
}

/// Writes `tracer.1` and a `tracer-TOOL.1` per subcommand into `dir`; returns their paths.
pub fn write_man_pages(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut top = command().disable_help_subcommand(true);
    top.build();
    std::iter::once(("", top.clone()))
        .chain(
            top.get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(|sub| (sub.get_name(), sub.clone())),
        )
        .map(|(name, command)| -> Result<_> {
            let man = Man::new(command)
                .source(format!("tracer {}", env!("CARGO_PKG_VERSION")))
                .manual("tracer");
            let path = dir.join(man.get_filename());
            let mut page = Vec::new();
            render(&man, examples(name), name.is_empty(), &mut page)?;
            std::fs::write(&path, page)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// clap_mangen's sections, with EXAMPLES in place of its untitled after-help text and a SEE
/// ALSO that links the pages.
fn render(man: &Man, examples: &[Example], top: bool, out: &mut dyn Write) -> Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if top {
        man.render_subcommands_section(out)?;
    }
    let mut roff = Roff::default();
    if !examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for example in examples {
            roff.control("TP", [])
                .text([bold(example.command)])
                .text([roman(example.what)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let pages: Vec<String> = EXAMPLES
        .iter()
        .map(|(name, _)| match name {
            &"" => "tracer(1)".to_owned(),
            name => format!("tracer-{name}(1)"),
        })
        .collect();
    roff.text([roman(format!(
        "{}; the README and docs/ of tracer's source tree.",
        pages.join(", ")
    ))]);
    roff.to_writer(out)?;
    man.render_version_section(out)?;
    Ok(())
}

/// The completion script of `shell` for every subcommand and option.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut command(), "tracer", out);
}

#[cfg(test)]
mod tests {
    use clap::{FromArgMatches, error::ErrorKind};

    use super::*;

    /// The words of a documented command line as a shell would split them, up to a pipe,
    /// redirection, `&&` or comment; without a leading `sudo`.
    fn words(line: &str) -> Vec<String> {
        // Split as the shell splits: quotes group words (`--pg "--top 20"`) and go.
        let mut split: Vec<(String, bool)> = Vec::new();
        let (mut word, mut quoted, mut quote, mut started) = (String::new(), false, None, false);
        for c in line.chars() {
            match (quote, c) {
                (None, '"' | '\'') => (quote, quoted, started) = (Some(c), true, true),
                (Some(open), c) if c == open => quote = None,
                (None, c) if c.is_whitespace() => {
                    if started {
                        split.push((std::mem::take(&mut word), quoted));
                    }
                    (quoted, started) = (false, false);
                }
                (_, c) => {
                    word.push(c);
                    started = true;
                }
            }
        }
        if started {
            split.push((word, quoted));
        }
        let mut words = Vec::new();
        for (word, quoted) in split {
            let operator = matches!(&*word, "|" | ">" | ">>" | "&&" | "&" | ";");
            if !quoted && (operator || word.starts_with('#')) {
                break;
            }
            words.push(word);
        }
        if words.first().is_some_and(|word| word == "sudo") {
            words.remove(0);
        }
        words
    }

    /// `line` with each `$(...)` replaced by a number, as the shell would replace a pid.
    fn substituted(line: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        while let Some(start) = rest.find("$(") {
            out += &rest[..start];
            out += "1";
            rest = rest[start..]
                .find(')')
                .map_or("", |end| &rest[start + end + 1..]);
        }
        out + rest
    }

    fn parses(line: &str) -> Result<(), String> {
        let substituted = substituted(line);
        let words = words(&substituted);
        let matches = match command().try_get_matches_from(&words) {
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) =>
            {
                return Ok(());
            }
            matches => matches,
        };
        matches
            .map_err(|err| err.to_string())
            .and_then(|matches| Cli::from_arg_matches(&matches).map_err(|err| err.to_string()))
            .map(drop)
            .map_err(|err| format!("`{line}` does not parse: {err}"))
    }

    #[test]
    fn every_example_parses_and_every_tool_has_five() {
        for (name, examples) in EXAMPLES {
            for example in *examples {
                parses(example.command).unwrap();
            }
            let is_tool = command()
                .find_subcommand(name)
                .is_some_and(|sub| sub.get_name() != "completions" && sub.get_name() != "man");
            if is_tool {
                assert_eq!(examples.len(), 5, "{name} has {} examples", examples.len());
            }
        }
        for sub in command().get_subcommands().filter(|sub| !sub.is_hide_set()) {
            assert!(
                !examples(sub.get_name()).is_empty(),
                "{} has no examples",
                sub.get_name()
            );
        }
    }

    /// Every `tracer` command the README and docs/ show: lines after a `$ ` prompt and lines
    /// of `sh` blocks, and inline code that begins with `tracer` or `sudo tracer`. A `$(...)`
    /// substitution stands for a number (a pid).
    fn documented_commands() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("README.md")];
        if let Ok(docs) = std::fs::read_dir(root.join("docs")) {
            files.extend(docs.flatten().map(|entry| entry.path()));
        }
        // `tracer` alone is its name, not a command.
        let is_command = |line: &str| {
            let words = words(line);
            words.len() > 1 && words[0] == "tracer"
        };
        let mut commands = Vec::new();
        for file in files
            .iter()
            .filter(|file| file.extension() == Some("md".as_ref()))
        {
            let text = std::fs::read_to_string(file).unwrap();
            let mut block: Option<&str> = None;
            let mut found = Vec::new();
            for line in text.lines() {
                if let Some(tag) = line.trim_start().strip_prefix("```") {
                    block = if block.is_some() { None } else { Some(tag) };
                    continue;
                }
                match block {
                    Some(tag) => {
                        let command = line
                            .trim()
                            .strip_prefix("$ ")
                            .or((tag == "sh").then_some(line.trim()));
                        found.extend(
                            command
                                .filter(|command| is_command(command))
                                .map(str::to_owned),
                        );
                    }
                    None => {
                        let spans = line.split('`').skip(1).step_by(2);
                        found.extend(spans.filter(|span| is_command(span)).map(str::to_owned));
                    }
                }
            }
            let file = file.file_name().unwrap().to_string_lossy().into_owned();
            commands.extend(found.into_iter().map(|command| (file.clone(), command)));
        }
        commands
    }

    #[test]
    fn every_documented_command_parses() {
        let commands = documented_commands();
        assert!(commands.len() > 10, "found only {commands:?}");
        let failures: Vec<String> = commands
            .iter()
            .filter_map(|(file, line)| parses(line).err().map(|err| format!("{file}: {err}")))
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn man_pages_have_options_and_examples() {
        let dir = std::env::temp_dir().join(format!("tracer-man-{}", std::process::id()));
        let pages = write_man_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|page| page.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "tracer.1",
            "tracer-pg.1",
            "tracer-direct-reclaim.1",
            "tracer-serve.1",
        ] {
            assert!(names.iter().any(|name| name == expected), "{names:?}");
        }
        let pg = std::fs::read_to_string(dir.join("tracer-pg.1")).unwrap();
        assert!(
            pg.contains(".SH EXAMPLES") && pg.contains("\\-\\-breakdown"),
            "{pg}"
        );
        assert!(
            pg.contains(".SH OPTIONS") && pg.contains("tracer\\-mysql(1)"),
            "{pg}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
