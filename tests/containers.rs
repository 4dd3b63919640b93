//! tracer's own image run for real in docker: as a sidecar sharing a PostgreSQL container's pid
//! namespace, and as a host-wide container. Both images are built here, without a registry.
//!
//! This machine's root lacks CAP_SYS_RESOURCE, so `--privileged` fails here; the stand-in
//! grants every other capability and lifts the same confinements. Real hosts use
//! `--privileged`, as the README says.

use std::time::{Duration, Instant};

use tracer_tests::{
    Container, Docker, Finished, Json, Tracer, free_port, http_get, parse_metrics, query_entry,
    sample_sum,
};

const PRIVILEGED: &[&str] = &[
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
];

/// A tracer container started in the background, attached once it has said so.
struct TracerContainer<'a> {
    docker: &'a Docker,
    container: Container<'a>,
}

impl<'a> TracerContainer<'a> {
    fn start(docker: &'a Docker, name: &str, options: &[&str], args: &[&str]) -> Self {
        let image = docker.tracer_image();
        let mut all = vec!["--detach"];
        all.extend(PRIVILEGED);
        all.extend(options);
        all.push(&image);
        all.extend(args);
        let container = Self {
            docker,
            container: docker.container(name, &all, &[0]),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = container.logs();
            if logs.stderr.contains("Tracing") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not attach: {logs:#?}",
                container.container.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        container
    }

    fn logs(&self) -> Finished {
        let name = &self.container.name;
        self.docker
            .command()
            .args(["logs", name])
            .output()
            .unwrap()
            .into()
    }

    /// SIGTERM through `docker stop`, and what it printed.
    fn stop(self) -> Finished {
        let name = &self.container.name;
        self.docker.run(&["stop", "--time", "10", name], &[0]);
        let code = self
            .docker
            .run(&["inspect", "-f", "{{.State.ExitCode}}", name], &[0]);
        assert_eq!(code, "0", "{:#?}", self.logs());
        self.logs()
    }
}

fn psql(docker: &Docker, container: &str, statements: &[&str]) -> String {
    let mut args = vec![
        "exec", container, "psql", "-X", "-q", "-A", "-t", "-U", "postgres",
    ];
    for statement in statements {
        args.extend(["-c", statement]);
    }
    docker.run(&args, &[0])
}

/// A PostgreSQL container, ready for queries, with pg_stat_statements.
fn postgres<'a>(docker: &'a Docker, name: &str) -> Container<'a> {
    let image = docker.postgres_image();
    let db = docker.container(name, &["--detach", image], &[0]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while docker
        .command()
        .args(["exec", &db.name, "psql", "-U", "postgres", "-c", "SELECT 1"])
        .output()
        .is_ok_and(|output| !output.status.success())
    {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not start in its container"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    psql(docker, &db.name, &["CREATE EXTENSION pg_stat_statements"]);
    db
}

#[test]
fn a_sidecar_counts_the_database_containers_queries_in_its_pids() {
    let docker = Docker::start();
    let db = postgres(&docker, "tracer-pg");
    // The postmaster is pid 1 of the database container, so of the sidecar's too.
    let share = format!("--pid=container:{}", db.name);
    let sidecar_options = [share.as_str(), "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"];
    let probes = TracerContainer::start(
        &docker,
        "tracer-sidecar",
        &sidecar_options,
        &["pg", "-p", "1", "--json", "--slow", "0"],
    );
    let socket = TracerContainer::start(
        &docker,
        "tracer-sidecar-socket",
        &sidecar_options,
        &["pg", "-p", "1", "--json", "--via", "socket"],
    );
    psql(&docker, &db.name, &["SELECT pg_stat_statements_reset()"]);
    let mut statements = vec!["SELECT pg_backend_pid()"];
    statements.extend(["SELECT 17"; 7]);
    let backend: u32 = psql(&docker, &db.name, &statements)
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let calls = psql(
        &docker,
        &db.name,
        &["SELECT calls FROM pg_stat_statements WHERE query = 'SELECT $1'"],
    );
    assert_eq!(calls, "7");

    for (how, sidecar) in [("probes", probes), ("socket", socket)] {
        let finished = sidecar.stop();
        let summaries = finished.json_of_type("summary");
        assert_eq!(summaries.len(), 1, "{how}: {finished:#?}");
        assert_eq!(query_entry(&summaries[0], "SELECT ?")["calls"], 7, "{how}");
        if how == "probes" {
            // Each query's line shows its backend as the containers number it.
            let slow = finished.json_of_type("slow_query");
            let selects: Vec<&Json> = slow.iter().filter(|q| q["query"] == "SELECT ?").collect();
            assert_eq!(selects.len(), 7, "{finished:#?}");
            assert!(
                selects.iter().all(|q| q["pid"] == backend),
                "{backend}: {selects:#?}"
            );
            assert!(backend < 1000, "a pid of the container: {backend}");
        }
    }
}

/// Two PostgreSQL containers run the same statement at different rates, over connections of
/// one query each and over a session: `tracer serve --pg` gives each container series of its
/// own (labelled with the container, the database and the user), each equal to that
/// container's own pg_stat_statements count.
#[test]
fn serve_gives_each_database_container_its_own_query_series() {
    let docker = Docker::start();
    let busy = postgres(&docker, "tracer-pg-busy");
    let quiet = postgres(&docker, "tracer-pg-quiet");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let serve = Tracer::start(&["serve", "--listen", &listen, "--tools", "oom", "--pg", ""]);
    for db in [&busy, &quiet] {
        psql(&docker, &db.name, &["SELECT pg_stat_statements_reset()"]);
    }
    let session = ["SELECT 17"; 40];
    for _ in 0..3 {
        psql(&docker, &busy.name, &session);
        psql(&docker, &busy.name, &["SELECT 17"]);
    }
    psql(&docker, &quiet.name, &session[..4]);
    psql(&docker, &quiet.name, &["SELECT 17"]);
    let issued = |db: &Container| -> u64 {
        let calls = "SELECT calls FROM pg_stat_statements WHERE query = 'SELECT $1'";
        psql(&docker, &db.name, &[calls]).parse().unwrap()
    };
    let expected = [(&busy, issued(&busy)), (&quiet, issued(&quiet))];
    assert_eq!(expected.map(|(_, calls)| calls), [123, 5]);
    // Serve counts what its ring buffer holds as it drains it: the series reach their counts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, text) = http_get(port, "/metrics", None);
        assert_eq!(status, 200);
        let samples = parse_metrics(&text, false);
        let counted = expected.map(|(db, _)| {
            let labels = [
                ("container", db.name.as_str()),
                ("database", "postgres"),
                ("user", "postgres"),
                ("query", "SELECT ?"),
            ];
            sample_sum(&samples, "tracer_pg_query_seconds_count", &labels) as u64
        });
        if counted == expected.map(|(_, calls)| calls) {
            let series = text.lines().filter(|line| {
                line.starts_with("tracer_pg_query_seconds_count") && line.contains("SELECT ?")
            });
            series.for_each(|line| eprintln!("{line}"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series {counted:?}, pg_stat_statements {:?}:\n{text}",
            expected.map(|(_, calls)| calls)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    serve.stop_with(libc::SIGTERM).assert_success();
}

#[test]
fn a_host_wide_container_names_an_oom_killed_container() {
    let docker = Docker::start();
    let busybox = docker.busybox_image();
    let tracer = TracerContainer::start(
        &docker,
        "tracer-host",
        &[
            "--pid=host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "-v",
            "/var/lib/docker/containers:/var/lib/docker/containers:ro",
        ],
        &["oom", "--json"],
    );
    let dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"];
    let mut args = vec!["--memory", "64m", busybox];
    args.extend(dd);
    let victim = docker.container("tracer-victim", &args, &[137]);
    let id = victim.id();
    std::thread::sleep(Duration::from_millis(300));
    let finished = tracer.stop();
    let kill = finished
        .json_of_type("oom_kill")
        .into_iter()
        .find(|kill| kill["killed"] == true)
        .unwrap_or_else(|| panic!("no kill: {finished:#?}"));
    assert_eq!(kill["victim"]["comm"], "dd");
    assert_eq!(kill["victim"]["container"]["container_id"], id.as_str());
    assert_eq!(
        kill["victim"]["container"]["container"],
        victim.name.as_str()
    );
    assert_eq!(kill["constraint"], "memcg");
}

/// The image carries what `cargo xtask image` puts in it besides the binary: the man pages and
/// the completion scripts, where man and the shells look under /usr.
#[test]
fn the_image_carries_man_pages_and_completions() {
    let docker = Docker::start();
    let image = docker.tracer_image();
    let container = docker.container("tracer-manual", &[&image, "--version"], &[0]);
    let out = tracer_tests::Scratch::new("image-manual");
    let copied = |path: &str| -> String {
        let local = out.file(path.rsplit('/').next().unwrap());
        docker.run(&["cp", &format!("{}:{path}", container.name), &local], &[0]);
        std::fs::read_to_string(&local).unwrap()
    };
    let page = copied("/usr/share/man/man1/tracer-pg.1");
    assert!(page.contains(".SH EXAMPLES"), "{page}");
    let bash = copied("/usr/share/bash-completion/completions/tracer");
    assert!(
        bash.contains("complete -F _tracer") || bash.contains("-F _tracer"),
        "{bash}"
    );
    for path in [
        "/usr/share/zsh/vendor-completions/_tracer",
        "/usr/share/fish/vendor_completions.d/tracer.fish",
    ] {
        assert!(copied(path).contains("direct-reclaim"), "{path}");
    }
}
