//! `deploy/`: the Dockerfile passes hadolint, the compose file has the services and
//! mounts it promises, and the Helm chart lints, renders and validates against the
//! Kubernetes schemas, with its drain, probes, sizing and autoscaling as documented.
//! The tools come from `scripts/test.sh` (hadolint and kubernetes-validate from PyPI
//! into `target/tools-venv`, helm built from the Go module proxy into
//! `target/tools-bin`); a missing one fails the test and says so. No Docker engine or
//! Kubernetes cluster runs here: nothing is built or installed.

use std::process::Command;

use crate::support::tools::{repo, run, tool};

#[test]
fn the_dockerfile_passes_hadolint_and_matches_the_servers_shutdown() {
    let file = repo().join("deploy/docker/Dockerfile");
    run(Command::new(tool("hadolint")).arg(&file));
    let text = std::fs::read_to_string(&file).expect("Dockerfile");
    for needle in [
        "AS build",
        "USER 10001:10001",
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK",
        "\"roomcast\", \"health\", \"/healthz\"",
        "ROOMCAST_SHUTDOWN_DRAIN_DELAY_MS=5000",
        "ROOMCAST_SHUTDOWN_TIMEOUT_MS=20000",
    ] {
        assert!(text.contains(needle), "the Dockerfile lacks {needle}");
    }
}

#[test]
fn the_compose_cluster_has_three_nodes_redis_scylla_prometheus_and_grafana() {
    let dir = repo().join("deploy/compose");
    // PyYAML is in the tools venv (scripts/test.sh installs it).
    let script = r#"
import os, sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
s = d["services"]
want = {"node1", "node2", "node3", "redis", "scylla", "migrate", "prometheus", "grafana"}
assert want <= set(s), sorted(s)
for n in ("node1", "node2", "node3"):
    env = s[n]["environment"]
    assert env["REDIS_URL"].startswith("redis://redis:"), env
    assert env["ROOMCAST_SCYLLA_NODES"] == "scylla:9042", env
    assert s[n]["stop_grace_period"] == "30s"
    assert s[n]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
ids = {s[n]["environment"]["ROOMCAST_NODE_ID"] for n in ("node1", "node2", "node3")}
assert len(ids) == 3, ids
for svc in s.values():
    for v in svc.get("volumes", []):
        host = v.split(":")[0]
        if host.startswith("."):
            p = os.path.join(os.path.dirname(sys.argv[1]), host)
            assert os.path.exists(p), p
print("ok")
"#;
    let text = run(Command::new(tool("python3"))
        .arg("-c")
        .arg(script)
        .arg(dir.join("docker-compose.yml")));
    assert!(text.contains("ok"), "{text}");
    let prom = std::fs::read_to_string(dir.join("prometheus.yml")).expect("prometheus.yml");
    assert!(prom.contains("node1:8000") && prom.contains("roomcast.rules.yml"));
}

/// `helm template` with the secrets a real install sets.
fn render(extra: &[&str]) -> String {
    let mut cmd = Command::new(tool("helm"));
    cmd.arg("template")
        .arg("chat")
        .arg(repo().join("deploy/helm/roomcast"))
        .args([
            "--set",
            "secrets.values.JWT_SECRET=s3cret-s3cret-s3cret-s3cret-s3cret",
        ])
        .args(["--set", "secrets.values.REDIS_URL=redis://:pw@redis:6379/0"])
        .args(extra);
    run(&mut cmd)
}

#[test]
fn the_helm_chart_lints_renders_and_validates_against_the_kubernetes_schemas() {
    let chart = repo().join("deploy/helm/roomcast");
    let text = run(Command::new(tool("helm"))
        .arg("lint")
        .arg("--strict")
        .arg(&chart));
    assert!(text.contains("0 chart(s) failed"), "{text}");
    let rendered = render(&[]);
    // The CRD kind is not in the Kubernetes schemas: validate the rest, check it here.
    let docs: Vec<&str> = rendered
        .split("\n---")
        .filter(|d| d.contains("kind:"))
        .collect();
    let kinds: Vec<String> = docs
        .iter()
        .filter_map(|d| {
            d.lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .map(str::to_owned)
        })
        .collect();
    for k in [
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        if d.contains("kind: ServiceMonitor") {
            assert!(
                d.contains("path: /metrics") && d.contains("port: http"),
                "{d}"
            );
            continue;
        }
        let f = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&f, d).expect("write");
        files.push(f);
    }
    let text = run(Command::new(tool("kubernetes-validate"))
        .args(["--strict", "-k", "1.30.0"])
        .args(&files));
    assert!(!text.contains("ERROR"), "{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        files.len(),
        "every manifest was validated: {text}"
    );

    // The drain matches the server's shutdown: 5 s drain delay + 20 s shutdown + 10.
    for needle in [
        "terminationGracePeriodSeconds: 35",
        "ROOMCAST_SHUTDOWN_DRAIN_DELAY_MS: \"5000\"",
        "ROOMCAST_SHUTDOWN_TIMEOUT_MS: \"20000\"",
        "command: [\"sleep\", \"5\"]",
        "path: /readyz",
        "path: /healthz",
        // 128 MiB + 10,000 connections x 10 KiB.
        "memory: 225Mi",
        "memory: 450Mi",
        "name: roomcast_connections",
        "averageValue: \"7000\"",
        "sessionAffinity: None",
        "runAsNonRoot: true",
    ] {
        assert!(
            rendered.contains(needle),
            "the chart lacks {needle}:\n{rendered}"
        );
    }
    assert!(
        !rendered.contains("replicas:"),
        "the HPA owns the replica count"
    );
    // Sizing follows the values; without autoscaling the replica count is fixed.
    let other = render(&[
        "--set",
        "capacity.connectionsPerPod=50000",
        "--set",
        "autoscaling.enabled=false",
        "--set",
        "secrets.existingSecret=chat-secrets",
    ]);
    assert!(other.contains("memory: 616Mi"), "{other}");
    assert!(other.contains("replicas: 3"));
    assert!(!other.contains("kind: HorizontalPodAutoscaler"));
    assert!(!other.contains("kind: Secret") && other.contains("name: chat-secrets"));
}
