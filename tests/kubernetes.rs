//! deploy/kubernetes: every manifest checked against the Kubernetes API schema, and the
//! DaemonSet's pod run for real by podman, scraped while it sees known reclaim stalls.
//!
//! No cluster can run here. The kustomizations are rendered by tests/support/kube.py (no
//! kustomize binary can be installed here) and validated by kubernetes-validate --strict;
//! podman runs the DaemonSet's pod template wrapped in a Pod. podman ignores hostPID, so host
//! pids are tested with `podman run --pid=host` on their own.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tracer_tests::{
    Finished, Json, Scratch, Tracer, busybox_root, free_port, http_get, import_image,
    parse_metrics, project_python, sample_sum,
};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn support(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("support")
        .join(script)
}

/// `kube.py ARGS`: rendered YAML.
fn kube(args: &[&str]) -> String {
    let output = Command::new(project_python())
        .arg(support("kube.py"))
        .args(args)
        .output()
        .expect("the project's Python (cargo xtask setup --test)");
    assert!(
        output.status.success(),
        "kube.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn validate(path: &Path) -> Finished {
    Command::new(project_python().with_file_name("kubernetes-validate"))
        .args(["--strict", "--no-warn"])
        .arg(path)
        .output()
        .unwrap()
        .into()
}

/// YAML as JSON, through the same Python.
fn yaml_to_json(yaml: &str) -> Vec<Json> {
    use std::io::Write;
    let mut python = Command::new(project_python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    python
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    serde_json::from_slice::<Vec<Json>>(&output.stdout).unwrap()
}

#[test]
fn every_manifest_passes_the_api_schema_and_a_broken_one_does_not() {
    let scratch = Scratch::new("manifests");
    for (variant, dir) in [
        ("base", deploy()),
        ("least-privilege", deploy().join("least-privilege")),
        ("web-config", deploy().join("web-config")),
    ] {
        let rendered = kube(&["render", dir.to_str().unwrap()]);
        let path = scratch.dir.join(format!("{variant}.yaml"));
        std::fs::write(&path, &rendered).unwrap();
        let finished = validate(&path);
        assert!(finished.status.success(), "{variant}: {finished:#?}");
        let kinds: Vec<String> = yaml_to_json(&rendered)
            .iter()
            .map(|doc| doc["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            ["Namespace", "ServiceAccount", "DaemonSet", "Service"],
            "{variant}"
        );
        assert_eq!(
            finished.stdout.matches(" passed ").count(),
            4,
            "{finished:#?}"
        );
    }
    let least = yaml_to_json(&kube(&[
        "render",
        deploy().join("least-privilege").to_str().unwrap(),
    ]));
    let security = &least[2]["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["add"][0], "BPF");

    // The web config overlay: serve reads the file where the Secrets are mounted, and the
    // kubelet probes over HTTPS (tests/web_config.rs serves the example file).
    let web = yaml_to_json(&kube(&[
        "render",
        deploy().join("web-config").to_str().unwrap(),
    ]));
    let container = &web[2]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    let config = args
        .iter()
        .find_map(|arg| arg.strip_prefix("--web-config="))
        .expect("--web-config in the overlay's args");
    let mounted = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == "web-config")
        .unwrap();
    assert_eq!(
        Path::new(config).parent().unwrap(),
        Path::new(mounted["mountPath"].as_str().unwrap())
    );
    assert!(
        args.contains(&"--record-dir=/var/lib/tracer/records"),
        "{args:?}"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }

    // The PodMonitors (their CRD has no schema here) must select the DaemonSet's pods and
    // port; the web config's scrapes over HTTPS.
    let base = yaml_to_json(&kube(&["render", deploy().to_str().unwrap()]));
    let template = &base[2]["spec"]["template"];
    for monitor in [
        "prometheus-operator/podmonitor.yaml",
        "web-config/podmonitor.yaml",
    ] {
        let monitor_yaml = std::fs::read_to_string(deploy().join(monitor)).unwrap();
        let monitor = &yaml_to_json(&monitor_yaml)[0];
        for (label, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&template["metadata"]["labels"][label], value);
        }
        let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
        assert_eq!(
            &template["spec"]["containers"][0]["ports"][0]["name"],
            &endpoint["port"]
        );
        if monitor_yaml.contains("basicAuth") {
            assert_eq!(endpoint["scheme"], "https");
        }
    }

    // A misspelled field and a wrong type are rejected.
    let daemonset = std::fs::read_to_string(deploy().join("daemonset.yaml")).unwrap();
    for (what, broken) in [
        (
            "misspelled field",
            daemonset.replace("tolerations:", "toleration:"),
        ),
        (
            "wrong type",
            daemonset.replace("containerPort: 9479", "containerPort: metrics"),
        ),
    ] {
        assert_ne!(broken, daemonset, "{what}: nothing to break");
        let path = scratch.dir.join("broken.yaml");
        std::fs::write(&path, broken).unwrap();
        let finished = validate(&path);
        assert!(!finished.status.success(), "{what} passed: {finished:#?}");
        assert!(
            finished.stdout.contains("did not validate"),
            "{what}: {finished:#?}"
        );
    }
}

/// podman with what this machine needs: its root lacks CAP_SYS_RESOURCE, so no container may
/// raise its limits above the current ones.
fn podman() -> Command {
    let mut podman = Command::new("podman");
    podman.env("CONTAINERS_CONF", support("containers.conf"));
    podman
}

fn podman_ok(args: &[&str]) -> String {
    let output = podman().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// tracer's image (saved by cargo xtask image) and busybox, in podman's store.
fn podman_images() -> (String, &'static str) {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tracer-image.tar");
    podman_ok(&["load", "--quiet", "--input", archive.to_str().unwrap()]);
    let image = std::env::var("TRACER_IMAGE").unwrap_or_else(|_| "tracer:latest".into());
    const BUSYBOX: &str = "localhost/tracer-test-busybox:latest";
    let root = busybox_root();
    import_image(
        &root.dir,
        podman().args(["import", "--quiet", "-", "tracer-test-busybox"]),
    );
    (format!("localhost/{image}"), BUSYBOX)
}

/// The memory cgroup of a podman container's main process, relative to the v1 memory mount.
fn memory_cgroup(container: &str) -> String {
    let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", container]);
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    cgroups
        .lines()
        .find_map(|line| line.split_once(":memory:").map(|(_, path)| path.to_owned()))
        .expect("a memory cgroup")
}

/// A workload that stalls in memory-cgroup reclaim: 512 MiB through a 256 MiB limit, after
/// `delay` seconds (time to start watching it), then "done".
fn reclaiming(delay: u32) -> String {
    format!(
        "sleep {delay}; dd if=/dev/zero of=/tmp/f bs=1M count=512 2>/dev/null; cat /tmp/f > /dev/null; echo done; sleep 600"
    )
}

/// Waits until a podman container printed "done".
fn wait_done(container: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !podman_ok(&["logs", container]).contains("done") {
        assert!(Instant::now() < deadline, "{container} never finished");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The memcg stalls a host-side tracer saw in `cgroup`.
fn stalls_seen_by(tracer: Tracer) -> u64 {
    let finished = tracer.stop();
    finished.assert_success();
    finished.json_of_type("summary")[0]["memcg"]["stalls"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_daemonsets_pod_runs_in_podman_and_counts_a_pods_reclaim_stalls() {
    let (tracer_image, busybox) = podman_images();
    let port = free_port();
    let name = format!("tracer-ds-{}", std::process::id());
    // The DaemonSet's pod as rendered, adapted to a single machine without a cluster:
    // host networking on a free port (podman maps no ports then), the image as podman named
    // it, and a second container whose reclaim stalls the agent must count. podman ignores
    // hostPID, so the pod gets a pid namespace of its own, shared by both containers.
    let pod = kube(&["pod", deploy().to_str().unwrap(), &name]);
    let adapt = format!(
        "import sys, yaml\n\
         pod = yaml.safe_load(sys.stdin)\n\
         spec = pod['spec']\n\
         spec['hostNetwork'] = True\n\
         spec['shareProcessNamespace'] = True\n\
         agent = spec['containers'][0]\n\
         del agent['ports']\n\
         agent['image'] = '{tracer_image}'\n\
         agent['args'] = [a if not a.startswith('--listen') else '--listen=127.0.0.1:{port}' for a in agent['args']]\n\
         for probe in ('readinessProbe', 'livenessProbe'):\n\
         \x20   agent[probe]['httpGet']['port'] = {port}\n\
         spec['containers'].append(dict(name='workload', image='{busybox}',\n\
         \x20   command=['/bin/busybox', 'sh', '-c', '{workload}'],\n\
         \x20   resources=dict(limits=dict(memory='256Mi'))))\n\
         yaml.safe_dump(pod, sys.stdout)\n",
        workload = reclaiming(4),
    );
    let scratch = Scratch::new("pod");
    let pod_path = scratch.dir.join("pod.yaml");
    let mut python = Command::new(project_python())
        .args(["-c", &adapt])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&pod_path).unwrap())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        python
            .stdin
            .take()
            .unwrap()
            .write_all(pod.as_bytes())
            .unwrap();
    }
    assert!(python.wait().unwrap().success());
    let _ = podman().args(["pod", "rm", "-f", &name]).output();
    podman_ok(&["kube", "play", pod_path.to_str().unwrap()]);
    let cleanup = PodGuard(name.clone());

    let workload = format!("{name}-workload");
    let cgroup = format!("/sys/fs/cgroup/memory{}", memory_cgroup(&workload));
    let oracle = Tracer::start(&["direct-reclaim", "--json", "-c", &cgroup]);
    wait_done(&workload);
    std::thread::sleep(Duration::from_millis(300));
    let expected = stalls_seen_by(oracle);
    assert!(expected > 0, "the workload did not stall");

    let (status, _, health) = http_get(port, "/healthz", None);
    assert_eq!(status, 200, "{health}");
    let (_, _, text) = http_get(port, "/metrics", Some("application/openmetrics-text"));
    let samples = parse_metrics(&text, true);
    let counted = sample_sum(
        &samples,
        "tracer_reclaim_stall_seconds_count",
        &[("kind", "memcg"), ("runtime", "podman")],
    );
    eprintln!(
        "pod's agent: {counted} memcg stalls; host tracer in the workload's cgroup: {expected}"
    );
    assert_eq!(counted as u64, expected);

    // SIGTERM on stop: the agent exits 0. (Stopped on its own: stopping the pod first stops
    // its infra container, pid 1 of the shared pid namespace, whose end SIGKILLs the rest.)
    let agent = format!("{name}-tracer");
    podman_ok(&["stop", "--time", "10", &agent]);
    let code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &agent]);
    let logs = podman().args(["logs", &agent]).output().unwrap();
    assert_eq!(code, "0", "{}", String::from_utf8_lossy(&logs.stderr));
    drop(cleanup);
}

struct PodGuard(String);

impl Drop for PodGuard {
    fn drop(&mut self) {
        let _ = podman().args(["pod", "rm", "-f", &self.0]).output();
    }
}

/// In the host's pid namespace (`podman run --pid=host`, as hostPID gives the DaemonSet) the
/// agent sees the stalls of containers outside its own.
#[test]
fn with_the_hosts_pid_namespace_it_sees_other_containers() {
    let (tracer_image, busybox) = podman_images();
    let port = free_port();
    let agent = format!("tracer-hostpid-{}", std::process::id());
    let workload = format!("tracer-hostpid-workload-{}", std::process::id());
    let _ = podman().args(["rm", "-f", &agent, &workload]).output();
    let listen = format!("--listen=127.0.0.1:{port}");
    podman_ok(&[
        "run",
        "--detach",
        "--name",
        &agent,
        "--privileged",
        "--pid=host",
        "--network=host",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        &tracer_image,
        "serve",
        &listen,
        "--tools",
        "direct-reclaim",
    ]);
    let _guards = (
        ContainerGuard(agent.clone()),
        ContainerGuard(workload.clone()),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get_status(port) != 200 {
        assert!(
            Instant::now() < deadline,
            "{}",
            podman_ok(&["logs", &agent])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let workload_script = reclaiming(3);
    podman_ok(&[
        "run",
        "--detach",
        "--name",
        &workload,
        "--network=none",
        "--memory=256m",
        busybox,
        "/bin/busybox",
        "sh",
        "-c",
        &workload_script,
    ]);
    let cgroup = format!("/sys/fs/cgroup/memory{}", memory_cgroup(&workload));
    let oracle = Tracer::start(&["direct-reclaim", "--json", "-c", &cgroup]);
    wait_done(&workload);
    std::thread::sleep(Duration::from_millis(300));
    let expected = stalls_seen_by(oracle);
    let (_, _, text) = http_get(port, "/metrics", None);
    let samples = parse_metrics(&text, false);
    let workload_id = podman_ok(&["inspect", "--format", "{{.Id}}", &workload]);
    let counted = sample_sum(
        &samples,
        "tracer_reclaim_stall_seconds_count",
        &[("kind", "memcg"), ("container_id", &workload_id)],
    );
    assert!(expected > 0);
    assert_eq!(counted as u64, expected);
}

fn http_get_status(port: u16) -> u16 {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .ok()
        .map_or(0, |_| http_get(port, "/healthz", None).0)
}

struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "--time", "1", &self.0]).output();
    }
}
