//! `tracer serve --web-config`: the endpoint behind TLS, client certificates and basic auth,
//! scraped by curl and by a real Prometheus with the right and the wrong credentials, and held
//! by no client: a slow one, or two hundred at once.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use tracer_tests::{
    Finished, Prometheus, Scratch, Tracer, assert_refused, free_port, http_get, proc_status_kib,
    run,
};

/// A certificate authority of the test's own, and the certificates it signs (openssl).
struct Authority {
    dir: PathBuf,
    name: String,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Self {
        let authority = Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
        };
        authority.openssl(name, &[]);
        authority
    }

    fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// A certificate for `name` (server: for 127.0.0.1), signed by this authority: its
    /// certificate and key.
    fn sign(&self, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let ca_key = self.dir.join(format!("{}.key", self.name));
        let usage = if server {
            "subjectAltName=IP:127.0.0.1"
        } else {
            "extendedKeyUsage=clientAuth"
        };
        self.openssl(
            name,
            &[
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                usage,
                "-CA",
                self.cert().to_str().unwrap(),
                "-CAkey",
                ca_key.to_str().unwrap(),
            ],
        );
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }

    fn openssl(&self, name: &str, args: &[&str]) {
        let path = |ext: &str| self.dir.join(format!("{name}.{ext}"));
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-new", "-newkey", "ec", "-nodes", "-days", "1",
            ])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .args(args)
            .arg("-keyout")
            .arg(path("key"))
            .arg("-out")
            .arg(path("crt"))
            .stderr(std::process::Stdio::null()));
    }
}

/// What curl got: its exit code, the HTTP status (0 when none) and the body.
fn curl(args: &[&str], port: u16, path: &str) -> (i32, u16, String) {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code}",
        ])
        .args(args)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl (cargo xtask setup --test)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        output.status.code().unwrap_or(-1),
        status.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape me, gently";

/// The web config: the server's certificate, clients' certificates required and checked
/// against `client_ca`, and one basic-auth user.
fn web_config(dir: &Path, client_ca: &Path) -> PathBuf {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let path = dir.join("web-config.yml");
    // Paths relative to the file, as exporters read them.
    let text = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n\
         basic_auth_users:\n  {USER}: {hash}\n",
        client_ca.file_name().unwrap().to_str().unwrap()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(port: u16, config: &Path) -> Tracer {
    let listen = format!("127.0.0.1:{port}");
    Tracer::start(&[
        "serve",
        "--tools",
        "oom",
        "--listen",
        &listen,
        "--web-config",
        config.to_str().unwrap(),
    ])
}

#[test]
fn only_a_client_with_the_right_certificate_and_password_reads_metrics() {
    let scratch = Scratch::new("web-config");
    let dir = &scratch.dir;
    let ca = Authority::new(dir, "ca");
    ca.sign("server", true);
    let (client_cert, client_key) = ca.sign("scraper", false);
    let stranger = Authority::new(dir, "stranger-ca");
    let (stranger_cert, stranger_key) = stranger.sign("stranger", false);
    let port = free_port();
    let tracer = serve(port, &web_config(dir, &ca.cert()));

    let ca_file = ca.cert();
    let trust = ["--cacert", ca_file.to_str().unwrap()];
    let client = [
        "--cert",
        client_cert.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
    ];
    let login = format!("{USER}:{PASSWORD}");
    let with = |extra: &[&str], path: &str| {
        let args: Vec<&str> = trust.iter().chain(extra).copied().collect();
        curl(&args, port, path)
    };
    let certified = |extra: &[&str], path: &str| {
        let args: Vec<&str> = client.iter().chain(extra).copied().collect();
        with(&args, path)
    };

    let (code, status, body) = certified(&["--user", &login], "/metrics");
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body.contains("tracer_build_info{"), "{body}");
    let wrong = format!("{USER}:not the password");
    assert_eq!(certified(&["--user", &wrong], "/metrics").1, 401);
    assert_eq!(certified(&["--user", "nobody:x"], "/metrics").1, 401);
    assert_eq!(certified(&[], "/metrics").1, 401);
    // The kubelet's probes present no password; health tells which tools run, no more.
    let (_, status, health) = certified(&[], "/healthz");
    assert_eq!(status, 200, "{health}");
    // Query texts are not served unless asked for.
    assert_eq!(certified(&["--user", &login], "/debug/summary").1, 404);
    // The report holds them too: behind the same password (503 until its first second).
    assert_eq!(certified(&[], "/report").1, 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (_, status, page) = loop {
        let answer = certified(&["--user", &login], "/report");
        if answer.1 != 503 || std::time::Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<svg class=\"chart\""), "{page}");

    // Without a client certificate, or with one another authority signed, no TLS session.
    let (code, status, _) = with(&["--user", &login], "/metrics");
    assert!(
        code != 0 && status == 0,
        "no certificate: curl {code}, {status}"
    );
    let stranger_args = [
        "--cert",
        stranger_cert.to_str().unwrap(),
        "--key",
        stranger_key.to_str().unwrap(),
        "--user",
        &login,
    ];
    let (code, status, _) = with(&stranger_args, "/metrics");
    assert!(code != 0 && status == 0, "stranger: curl {code}, {status}");
    // Plain HTTP gets no metrics.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("tracer_build_info"),
        "plain HTTP served metrics"
    );

    // A real Prometheus with the right settings scrapes it; with a wrong password or
    // without its certificate it cannot.
    let job = |name: &str, auth: &str, cert: bool| {
        let cert = if cert {
            format!(
                "      cert_file: {}\n      key_file: {}\n",
                client_cert.display(),
                client_key.display()
            )
        } else {
            String::new()
        };
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n{cert}\
             {auth}    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            ca_file.display()
        )
    };
    let basic = |password: &str| {
        format!("    basic_auth:\n      username: {USER}\n      password: '{password}'\n")
    };
    let jobs = [
        job("right", &basic(PASSWORD), true),
        job("wrong-password", &basic("guess"), true),
        job("no-certificate", &basic(PASSWORD), false),
    ]
    .concat();
    let prometheus = Prometheus::start(&jobs, None);
    prometheus.wait_for("every job scraped", |p| {
        let targets = p.targets();
        targets.len() == 3 && targets.values().all(|t| t["health"] != "unknown")
    });
    let targets = prometheus.targets();
    assert_eq!(targets["right"]["health"], "up", "{targets:#?}");
    let wrong = &targets["wrong-password"];
    assert_eq!(wrong["health"], "down");
    assert!(
        wrong["lastError"].as_str().unwrap().contains("401"),
        "{wrong:#?}"
    );
    assert_eq!(targets["no-certificate"]["health"], "down");
    let build_info = prometheus.api("/api/v1/query?query=tracer_build_info");
    let result = build_info["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{build_info:#?}");
    assert_eq!(result[0]["metric"]["job"], "right");

    // A rotated certificate is served at the next connection, without a restart.
    let (cert, key) = Authority {
        dir: dir.to_owned(),
        name: "ca".into(),
    }
    .sign("renewed", true);
    std::fs::rename(key, dir.join("server.key")).unwrap();
    std::fs::rename(cert, dir.join("server.crt")).unwrap();
    let renewed = || {
        let output = Command::new("curl")
            .args(["--silent", "--verbose", "--output", "/dev/null"])
            .args(trust)
            .args(client)
            .args(["--user", &login])
            .arg(format!("https://127.0.0.1:{port}/metrics"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).contains("CN=renewed")
    };
    let started = Instant::now();
    while !renewed() {
        assert!(started.elapsed() < Duration::from_secs(10), "never renewed");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(prometheus);
    let finished: Finished = tracer.stop();
    finished.assert_success();
    assert!(
        finished.stderr.contains("--web-config reloaded"),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_slow_client_holds_nobody_and_two_hundred_scrapers_are_served() {
    let scratch = Scratch::new("web-config-load");
    let dir = &scratch.dir;
    let ca = Authority::new(dir, "ca");
    ca.sign("server", true);
    let (client_cert, client_key) = ca.sign("scraper", false);
    let port = free_port();
    let tracer = serve(port, &web_config(dir, &ca.cert()));
    let ca_file = ca.cert();
    let login = format!("{USER}:{PASSWORD}");
    let tls = [
        "--cacert",
        ca_file.to_str().unwrap(),
        "--cert",
        client_cert.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
        "--user",
        &login,
    ];

    let scrape = || {
        let started = Instant::now();
        let (code, status, body) = curl(&tls, port, "/metrics");
        assert_eq!((code, status), (0, 200), "{body}");
        started.elapsed()
    };
    // A client that stalls its TLS handshake: a record header, then a byte a second.
    let mut handshake = TcpStream::connect(("127.0.0.1", port)).unwrap();
    handshake
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let header = [0x16, 0x03, 0x01, 0x01, 0x00];
    let mut sent = 0;
    assert_cut_off_while_others_are_served("a stalled handshake", &scrape, || {
        let byte = header.get(sent).copied().unwrap_or(1);
        sent += 1;
        handshake.write_all(&[byte]).is_ok() && !handshake.read(&mut [0; 64]).is_ok_and(|n| n == 0)
    });
    // A client in a TLS session that sends its request's headers a byte a second (openssl
    // s_client sends what it is given, as it comes).
    let mut session = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-CAfile", tls[1], "-cert", tls[3], "-key", tls[5]])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut input = session.stdin.take().unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let mut bytes = request.iter().chain(std::iter::repeat(&b'x'));
    assert_cut_off_while_others_are_served("a slow request", &scrape, || {
        std::thread::sleep(Duration::from_secs(1));
        let _ = input.write_all(&[*bytes.next().unwrap()]);
        session.try_wait().unwrap().is_none()
    });

    // Two hundred scrapers at once, each on its own connection.
    let before = proc_status_kib(tracer.pid(), "VmRSS");
    let url = format!("https://127.0.0.1:{port}/metrics");
    let output = Command::new("curl")
        .args(["--silent", "--parallel", "--parallel-max", "200"])
        .args(["--max-time", "60", "--output", "/dev/null"])
        .args(["--write-out", "%{http_code}\n"])
        .args(tls)
        .args(std::iter::repeat_n(&url, 200))
        .output()
        .unwrap();
    let codes = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        codes.lines().filter(|code| *code == "200").count(),
        200,
        "{codes}"
    );
    let peak = proc_status_kib(tracer.pid(), "VmHWM");
    assert!(
        peak < before + 64 * 1024,
        "RSS {before} KiB before 200 scrapers, peak {peak} KiB"
    );
    eprintln!("200 scrapers: RSS {before} KiB before, peak {peak} KiB");
    tracer.stop().assert_success();
}

/// Runs `step` (a slow client's next move, saying whether its connection is still open) and a
/// scrape in turn until the client is cut off, which must come within the server's timeouts
/// (10 s) with every scrape answered at once meanwhile.
fn assert_cut_off_while_others_are_served(
    what: &str,
    scrape: &dyn Fn() -> Duration,
    mut step: impl FnMut() -> bool,
) {
    let opened = Instant::now();
    let mut slowest = Duration::ZERO;
    while step() {
        assert!(
            opened.elapsed() < Duration::from_secs(25),
            "{what}: the client was never cut off"
        );
        slowest = slowest.max(scrape());
    }
    let held = opened.elapsed();
    assert!(
        held > Duration::from_secs(5),
        "{what}: cut off at once ({held:?})"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "{what}: a scrape beside it took {slowest:?}"
    );
    eprintln!("{what}: cut off after {held:?}, slowest scrape {slowest:?}");
}

#[test]
fn a_bad_web_config_gets_one_line() {
    let scratch = Scratch::new("web-config-bad");
    let dir = &scratch.dir;
    let ca = Authority::new(dir, "ca");
    ca.sign("server", true);
    let cases = [
        ("missing.yml", None, "missing.yml"),
        (
            "unknown.yml",
            Some("http_server_config:\n  http2: false\n"),
            "unknown field `http_server_config`",
        ),
        (
            "plain.yml",
            Some("basic_auth_users:\n  alice: hunter2\n"),
            "alice's password is not a bcrypt hash",
        ),
        (
            "any-cert.yml",
            Some(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 client_auth_type: RequireAnyClientCert\n",
            ),
            "RequireAnyClientCert",
        ),
        (
            "no-ca.yml",
            Some(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 client_auth_type: RequireAndVerifyClientCert\n",
            ),
            "needs a client_ca_file",
        ),
        (
            "no-key.yml",
            Some("tls_server_config:\n  cert_file: server.crt\n  key_file: nokey.pem\n"),
            "nokey.pem",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        assert_refused(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--web-config",
                path.to_str().unwrap(),
            ],
            |_| {},
            expected,
        );
    }
    // Without the file's protection the port is as it was: plain HTTP.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let tracer = Tracer::start(&["serve", "--tools", "oom", "--listen", &listen]);
    assert_eq!(http_get(port, "/metrics", None).0, 200);
    tracer.stop().assert_success();
}

/// The Kubernetes overlay's example web config, its placeholder filled in, is served as its
/// comments say: Prometheus with its certificate and password reads metrics, the kubelet's
/// probe (no certificate, no password) reads health, nobody reads metrics without a password.
#[test]
fn the_overlays_example_web_config_is_served_as_it_says() {
    let scratch = Scratch::new("web-config-example");
    let dir = &scratch.dir;
    let ca = Authority::new(dir, "ca");
    let (cert, key) = ca.sign("server", true);
    std::fs::rename(cert, dir.join("tls.crt")).unwrap();
    std::fs::rename(key, dir.join("tls.key")).unwrap();
    let (client_cert, client_key) = ca.sign("prometheus", false);
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/web-config/web-config.example.yml");
    let example = std::fs::read_to_string(example).unwrap();
    let path = dir.join("web-config.yml");
    std::fs::write(&path, &example).unwrap();
    assert_refused(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--web-config",
            path.to_str().unwrap(),
        ],
        |_| {},
        "prometheus's password is not a bcrypt hash",
    );
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    std::fs::write(&path, example.replace("<bcrypt hash>", &hash)).unwrap();
    let port = free_port();
    let tracer = serve(port, &path);
    let ca_file = ca.cert();
    let login = format!("prometheus:{PASSWORD}");
    let trust = ["--cacert", ca_file.to_str().unwrap()];
    let prometheus = [
        trust[0],
        trust[1],
        "--cert",
        client_cert.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
        "--user",
        &login,
    ];
    assert_eq!(curl(&prometheus, port, "/metrics").1, 200);
    // The kubelet does not check the server's certificate either.
    assert_eq!(curl(&["--insecure"], port, "/healthz").1, 200);
    assert_eq!(curl(&trust, port, "/metrics").1, 401);
    tracer.stop().assert_success();
}
