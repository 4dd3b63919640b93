//! The alerting rules in deploy/prometheus/: promtool checks them and runs their unit tests,
//! and a real Prometheus scraping `tracer serve` fires them on a real OOM kill.

use std::process::Command;

use tracer_tests::{
    Cgroup, Finished, Prometheus, Scratch, Tracer, free_port, prometheus_rule,
    prometheus_rule_file, rules_file, sh_in,
};

fn promtool(args: &[&str]) -> Finished {
    Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (cargo xtask setup --test)")
        .into()
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let rules = rules_file();
    let checked = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(checked.status.success(), "{checked:#?}");
    let tests = rules.with_file_name("rules.test.yml");
    let tested = promtool(&["test", "rules", tests.to_str().unwrap()]);
    assert!(tested.status.success(), "{tested:#?}");

    // The Prometheus Operator's copy is made from the same file.
    let text = std::fs::read_to_string(&rules).unwrap();
    let operator = std::fs::read_to_string(prometheus_rule_file()).unwrap();
    assert!(
        operator == prometheus_rule(&text),
        "prometheusrule.yaml is not rules.yml's: run `cargo xtask rules`"
    );

    // The unit tests catch what a plain increase() misses: a new container's first kill (its
    // series starts at 1).
    let scratch = Scratch::new("rules");
    let naive = text.replace(
        "or (tracer_oom_kills_total unless tracer_oom_kills_total offset 10m)",
        "",
    );
    assert_ne!(naive, text);
    std::fs::write(scratch.dir.join("rules.yml"), naive).unwrap();
    std::fs::copy(&tests, scratch.dir.join("rules.test.yml")).unwrap();
    let broken = promtool(&["test", "rules", &scratch.file("rules.test.yml")]);
    assert!(!broken.status.success(), "{broken:#?}");
    assert!(
        broken.stderr.contains("alertname: TracerOomKill"),
        "{broken:#?}"
    );
}

/// A real Prometheus scrapes `tracer serve` and evaluates the rules: an OOM kill in a memory
/// cgroup, the first of its workload, takes TracerOomKill to firing for that cgroup alone.
#[test]
fn prometheus_fires_the_oom_alert_on_a_kill() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let serve = Tracer::start(&["serve", "--listen", &listen, "--tools", "oom"]);
    let job = format!(
        "  - job_name: tracer\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    );
    let prometheus = Prometheus::start(&job, Some(&rules_file()));
    prometheus.wait_for("scrape of tracer", |p| {
        p.api("/api/v1/query?query=tracer_build_info")["data"]["result"]
            .as_array()
            .is_some_and(|result| !result.is_empty())
    });
    assert!(prometheus.alerts("TracerOomKill", "firing").is_empty());

    let memcg = Cgroup::memory("tracer-alerts-oom", "64M");
    let script = "exec dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null";
    assert!(!sh_in(&[&memcg], script).status().unwrap().success());
    prometheus.wait_for("TracerOomKill firing", |p| {
        !p.alerts("TracerOomKill", "firing").is_empty()
    });
    let firing = prometheus.alerts("TracerOomKill", "firing");
    assert_eq!(firing.len(), 1, "{firing:#?}");
    assert_eq!(firing[0]["labels"]["cgroup"], memcg.relative().as_str());
    assert_eq!(firing[0]["labels"]["constraint"], "memcg");
    assert!(
        firing[0]["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("tracer oom"),
        "{firing:#?}"
    );
    // Nothing else is wrong with this node.
    for quiet in ["TracerToolFailed", "TracerLostEvents", "TracerDown"] {
        assert!(prometheus.alerts(quiet, "firing").is_empty(), "{quiet}");
    }
    serve.stop_with(libc::SIGTERM).assert_success();
}
