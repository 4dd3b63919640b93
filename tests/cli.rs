//! Behaviour every tool shares: one-line errors for bad input, and nothing left attached after
//! tracer exits however it is stopped.

use std::time::{Duration, Instant};

use tracer_tests::{
    BpfObjects, Cgroup, Finished, Scratch, Tracer, assert_refused, run_tracer, tracer_bin,
};

fn as_is(_: &mut std::process::Command) {}

#[test]
fn bad_input_gets_one_line_and_a_nonzero_exit() {
    let tool = "direct-reclaim";
    assert_refused(&[tool, "-p", "4194304"], as_is, "no such process: 4194304");
    assert_refused(
        &[tool, "-c", "/sys/fs/cgroup/memory/no-such-cgroup"],
        as_is,
        "no such cgroup",
    );
    assert_refused(&[tool, "-c", "/tmp"], as_is, "not in a cgroup filesystem");
    assert_refused(
        &[tool, "--comm", "a-name-longer-than-15"],
        as_is,
        "--comm must be 1 to 15 bytes",
    );
    assert_refused(&[tool, "--events", "5"], as_is, "cannot be used with");
    assert_refused(&[tool, "-d", "5", "1", "3"], as_is, "cannot be used with");
    assert_refused(&[tool, "--min-us", "100"], as_is, "--events");
    assert_refused(&[tool, "0"], as_is, "expected a positive number of seconds");
    assert_refused(
        &[tool, "soon"],
        as_is,
        "expected a positive number of seconds",
    );
    assert_refused(&["no-such-tool"], as_is, "unrecognized subcommand");
    assert_refused(
        &["pg", "--breakdown", "sched,io"],
        as_is,
        "parts of --breakdown follow an equals sign: --breakdown=sched,io",
    );
}

/// A live process that is not the server a query tool wants is named, and refused, alike.
#[test]
fn the_query_tools_word_a_wrong_process_alike() {
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    let named = format!("tracer: process {pid} (sleep) is not a ");
    assert_refused(
        &["pg", "-p", &pid],
        as_is,
        &format!("{named}PostgreSQL server"),
    );
    assert_refused(
        &["mysql", "-p", &pid],
        as_is,
        &format!("{named}MySQL or MariaDB server"),
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// A process whose binary has a corrupt section table still runs (the loader reads only the
/// program headers), and any container can run one: the query tools refuse it in one line
/// naming it, as they do a sound binary of another program.
#[test]
fn corrupt_binaries_are_refused_in_one_line() {
    let scratch = Scratch::new("corrupt-elf");
    let sleep = std::fs::read("/bin/sleep").unwrap();
    for (what, at, bytes) in [
        ("section table offset", 0x28, &u64::MAX.to_le_bytes()[..]),
        ("section count", 0x3c, &[0xff, 0xff][..]),
        ("section names' index", 0x3e, &[0xfe, 0xff][..]),
    ] {
        let mut elf = sleep.clone();
        elf[at..at + bytes.len()].copy_from_slice(bytes);
        let path = scratch.dir.join("sleep");
        std::fs::write(&path, elf).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut sleeper = std::process::Command::new(&path).arg("30").spawn().unwrap();
        let pid = sleeper.id().to_string();
        for tool in ["pg", "mysql"] {
            let finished = run_tracer(&[tool, "-p", &pid], as_is);
            tracer_tests::assert_one_line_refusal(
                &format!("{tool} -p on a binary with a corrupt {what}"),
                finished,
                &format!("process {pid} (sleep)"),
            );
        }
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
}

/// As in a sidecar container without the host's pid namespace: tracer is pid 1 of its own,
/// and the pids it takes and shows are that namespace's.
#[test]
fn pids_are_those_of_tracers_own_pid_namespace() {
    let memcg = Cgroup::memory("tracer-pidns", "64M");
    let scratch = Scratch::new("pidns");
    let (out, err, victim) = (
        scratch.file("out"),
        scratch.file("err"),
        scratch.file("victim"),
    );
    // In the namespace: tracer, then a dd it must see OOM-killed; dd's pid as the namespace
    // numbers it goes to a file. A second tracer takes -p with a pid of the namespace.
    let script = format!(
        "{tracer} oom --json -d 6 > {out} 2> {err} &
         for i in $(seq 300); do grep -q Tracing {err} && break; sleep 0.1; done
         sleep 30 & sleeper=$!
         {tracer} direct-reclaim -p $sleeper -d 1 > /dev/null 2> {err}.p || echo refused >> {err}.p
         sh -c 'echo $$ > {cgroup}/cgroup.procs; exec dd if=/dev/zero of=/dev/null bs=256M count=1' &
         echo $! > {victim}; wait $! 2> /dev/null; kill $sleeper; wait",
        tracer = tracer_bin().display(),
        cgroup = memcg.path.display(),
    );
    // The same kill as the host's namespace numbers it, to tell the two numberings apart.
    let host = Tracer::start(&["oom", "--json"]);
    let status = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .status()
        .expect("run unshare");
    assert!(status.success());
    let victim: u32 = std::fs::read_to_string(&victim)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let finished = Finished {
        status,
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    };
    let kills = finished.json_of_type("oom_kill");
    assert_eq!(kills.len(), 1, "{finished:#?}");
    assert_eq!(kills[0]["victim"]["pid"], victim, "{finished:#?}");
    let host_kills = host.stop().json_of_type("oom_kill");
    assert_eq!(host_kills.len(), 1, "{host_kills:?}");
    assert_ne!(
        host_kills[0]["victim"]["pid"], victim,
        "the host's pid, not the new namespace's"
    );
    let with_pid = std::fs::read_to_string(format!("{err}.p")).unwrap();
    assert!(
        !with_pid.contains("refused"),
        "-p in the namespace: {with_pid}"
    );
}

#[test]
fn usage_errors_exit_2_runtime_errors_exit_1() {
    assert_eq!(
        run_tracer(&["direct-reclaim", "--bogus"], as_is)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run_tracer(&["direct-reclaim", "-p", "4194304"], as_is)
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn refuses_without_privileges() {
    // A copy that user nobody may run, wherever the checkout lives.
    let scratch = Scratch::new("unprivileged");
    let copy = scratch.dir.join("tracer");
    std::fs::copy(tracer_bin(), &copy).unwrap();
    for path in [&scratch.dir, &copy] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    // As user nobody: giving up root drops every capability.
    assert_refused(
        &["direct-reclaim"],
        |command| {
            let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
            *command = std::process::Command::new(&copy);
            command.args(args);
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(command, || {
                    let nobody = 65534;
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(nobody, nobody, nobody) != 0
                        || libc::setresuid(nobody, nobody, nobody) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
        "needs root (or CAP_BPF and CAP_PERFMON)",
    );
}

#[test]
fn refuses_a_kernel_without_btf() {
    assert_refused(
        &["direct-reclaim"],
        |command| {
            command.env("TRACER_BTF", "/nonexistent/vmlinux");
        },
        "this kernel has no BTF (/nonexistent/vmlinux is missing)",
    );
}

#[test]
fn refuses_without_tracefs() {
    assert_refused(
        &["direct-reclaim"],
        |command| {
            command.env("TRACER_TRACEFS", "/nonexistent/tracing");
        },
        "tracefs is not available at /nonexistent/tracing",
    );
}

#[test]
fn refuses_a_kernel_lacking_a_tracepoint() {
    // A tracefs whose kernel has no vmscan tracepoints.
    let scratch = Scratch::new("tracefs");
    std::fs::create_dir_all(scratch.dir.join("events/sched")).unwrap();
    assert_refused(
        &["direct-reclaim"],
        |command| {
            command.env("TRACER_TRACEFS", &scratch.dir);
        },
        "this kernel has no tracepoint vmscan:mm_vmscan_direct_reclaim_begin",
    );
}

/// Stops tracer with `signal` and checks every program and link it loaded is gone.
fn assert_detaches_on(signal: libc::c_int) {
    let before = BpfObjects::now();
    let tracer = Tracer::start(&["direct-reclaim"]);
    let attached = BpfObjects::since(&before);
    let ours: Vec<_> = attached
        .programs
        .iter()
        .filter(|(_, name)| name.contains("reclaim"))
        .collect();
    assert!(
        ours.len() >= 4,
        "tracer's programs are not loaded: {attached:?}"
    );
    assert!(
        attached.links.len() >= 4,
        "tracer's links are not there: {attached:?}"
    );

    let finished = tracer.stop_with(signal);
    if signal == libc::SIGKILL {
        assert!(!finished.status.success());
    } else {
        finished.assert_success();
        assert!(
            finished.stdout.contains("reclaim stalls"),
            "no final summary: {finished:#?}"
        );
    }

    // The kernel frees programs after an RCU grace period: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = BpfObjects::now();
        let left = BpfObjects {
            programs: attached
                .programs
                .intersection(&now.programs)
                .cloned()
                .collect(),
            links: attached.links.intersection(&now.links).copied().collect(),
        };
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still loaded after signal {signal}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigint_detaches_everything() {
    assert_detaches_on(libc::SIGINT);
}

#[test]
fn sigterm_detaches_everything() {
    assert_detaches_on(libc::SIGTERM);
}

#[test]
fn sigkill_leaves_nothing_attached() {
    assert_detaches_on(libc::SIGKILL);
}

/// Every tool a user runs, each with its completions and man page.
const TOOLS: [&str; 8] = [
    "direct-reclaim",
    "writeback",
    "oom",
    "kvm-exit",
    "pg",
    "mysql",
    "serve",
    "report",
];

/// As a user installs them: bash completes tool names and options from the script `tracer
/// completions bash` prints, and `tracer man DIR` writes a page per tool that ends in examples.
#[test]
fn completions_complete_and_man_pages_have_examples() {
    let script = Scratch::new("completions");
    let bash = script.file("tracer.bash");
    let printed = run_tracer(&["completions", "bash"], as_is);
    assert!(printed.status.success(), "{printed:#?}");
    std::fs::write(&bash, &printed.stdout).unwrap();
    // As bash calls a completion function: the words, and the command, current and previous
    // word as arguments.
    let complete = |line: &str| -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let output = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {bash}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; \
                 COMP_POINT=${{#COMP_LINE}}; _tracer tracer '{}' '{}'; echo \"${{COMPREPLY[@]}}\"",
                words
                    .iter()
                    .map(|word| format!("'{word}'"))
                    .collect::<Vec<_>>()
                    .join(" "),
                words.len() - 1,
                words[words.len() - 1],
                words[words.len() - 2],
            ))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let tools = complete("tracer ");
    for tool in TOOLS {
        assert!(tools.split_whitespace().any(|word| word == tool), "{tools}");
    }
    let options = complete("tracer pg --br");
    assert_eq!(options.trim(), "--breakdown", "{options}");

    let pages = Scratch::new("man");
    let written = run_tracer(&["man", &pages.file("man1")], as_is);
    assert!(written.status.success(), "{written:#?}");
    for tool in TOOLS {
        let page = std::fs::read_to_string(pages.file(&format!("man1/tracer-{tool}.1")))
            .unwrap_or_else(|err| panic!("no page for {tool}: {err}; wrote {written:#?}"));
        let examples = page.split(".SH EXAMPLES").nth(1).unwrap_or_default();
        // roff writes a hyphen as \-.
        let command = format!("tracer {}", tool.replace('-', "\\-"));
        let shown = examples.matches(&command).count();
        assert_eq!(shown, 5, "tracer-{tool}.1 shows {shown} examples:\n{page}");
    }
}

/// `tracer report` is handed what it cannot draw: it says what and where in one line.
#[test]
fn report_refuses_what_is_not_a_tools_ndjson() {
    let scratch = Scratch::new("report-input");
    let missing = scratch.file("missing.ndjson");
    let refused = |file: &str, expected: &str| {
        let finished = run_tracer(&["report", file, "-o", &scratch.file("page.html")], as_is);
        tracer_tests::assert_one_line_refusal(&format!("report {file}"), finished, expected);
    };
    refused(&missing, &format!("cannot read {missing}"));
    // A tool's text output, not --json.
    let text = scratch.file("text.out");
    std::fs::write(&text, "Tracing direct reclaim... Hit Ctrl-C to end.\n").unwrap();
    refused(&text, &format!("{text}:1: not NDJSON"));
    let nothing = scratch.file("nothing.ndjson");
    std::fs::write(&nothing, "{\"type\":\"lost\",\"count\":1}\n").unwrap();
    refused(&nothing, "nothing to draw");
    assert!(!std::path::Path::new(&scratch.file("page.html")).exists());
}
