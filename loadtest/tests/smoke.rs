//! Keeps the load tools honest: runs `roomcast-load` (room over two worker processes,
//! idle, churn) and `roomcast-goose` briefly against the real `roomcast` binary and
//! checks their verdicts and reports. Small and bounded; the figures themselves are
//! measured in release builds (docs/PERFORMANCE.md), not here.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const SECRET: &str = "smoke-secret-0123456789abcdef";

/// The server binary cargo built in this same invocation (next to this test's
/// directory: target/<profile>/roomcast).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("roomcast");
    assert!(
        bin.exists(),
        "{} not built: run the workspace's tests (cargo test --workspace)",
        bin.display()
    );
    bin
}

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(server_binary())
        .env("JWT_SECRET", SECRET)
        .env("PORT", "0")
        .env("ROOMCAST_BIND", "127.0.0.1")
        .env("ROOMCAST_DATA_DIR", dir.path())
        .env("RATE_LIMIT_MAX_MESSAGES", "1000000")
        .env("ROOMCAST_CONNECT_RATE_PER_IP", "100000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn roomcast");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .expect("address")
        .to_owned();
    Server {
        child,
        url: addr,
        _dir: dir,
    }
}

fn load(server: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast-load"))
        .args(args)
        .args([
            "--url",
            &format!("ws://{}", server.url),
            "--secret",
            SECRET,
            "--server-pid",
            &server.child.id().to_string(),
        ])
        .output()
        .expect("run roomcast-load");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_fan_out_driver_runs_every_scenario_and_judges_the_slo() {
    let server = start_server();
    let (ok, out) = load(
        &server,
        &[
            "room",
            "--rooms",
            "3",
            "--members",
            "6",
            "--publishers",
            "2",
            "--rates",
            "30",
            "--step-secs",
            "2",
            "--procs",
            "2",
            "--slo",
        ],
    );
    assert!(ok, "{out}");
    let step: serde_json::Value = out
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a JSON step line");
    assert_eq!(step["sent"], 60, "{out}");
    assert_eq!(
        step["expected"], 300,
        "each message reaches the other 5 members"
    );
    assert_eq!(
        (
            step["delivered"].as_u64(),
            step["lost"].as_u64(),
            step["pass"].as_bool()
        ),
        (Some(300), Some(0), Some(true))
    );

    let (ok, out) = load(
        &server,
        &[
            "idle",
            "--connections",
            "40",
            "--rooms",
            "4",
            "--hold-secs",
            "1",
            "--procs",
            "2",
            "--slo",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("\"held\":40"), "{out}");

    let (ok, out) = load(
        &server,
        &[
            "churn",
            "--rate",
            "40",
            "--duration-secs",
            "1",
            "--rooms",
            "4",
            "--slo",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("\"failures\":0"), "{out}");

    // Targets other than loopback are refused.
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast-load"))
        .args(["idle", "--url", "ws://10.0.0.1:80", "--secret", SECRET])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_goose_suite_reports_websocket_and_rest_timings_and_enforces_thresholds() {
    let server = start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let goose = |threshold: &str| {
        Command::new(env!("CARGO_BIN_EXE_roomcast-goose"))
            .current_dir(dir.path())
            .env("ROOMCAST_JWT_SECRET", SECRET)
            .args([
                "--host",
                &format!("http://{}", server.url),
                "--users",
                "6",
                "--increase-rate",
                "6",
                "--run-time",
                "3s",
                "--quiet",
                "--no-reset-metrics",
            ])
            .args([
                "--threshold",
                threshold,
                "--report-file",
                "goose.json",
                "--report-file",
                "goose.md",
            ])
            .output()
            .expect("run roomcast-goose")
    };
    let out = goose("error-rate<1%");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(dir.path().join("goose.md")).expect("markdown report");
    for name in [
        "| WS | connect |",
        "| WS | ack |",
        "| WS | delivery |",
        "| GET | history page |",
        "| GET | /healthz |",
        "| POST | REST create conversation |",
        "| POST | REST send |",
        "| GET | REST unread |",
        "| PUT | REST mark read |",
    ] {
        assert!(report.contains(name), "report lacks {name}:\n{report}");
    }
    assert!(dir.path().join("goose.json").exists());
    // A breached threshold is a failed run.
    let out = goose("p99<0.001ms");
    assert!(!out.status.success(), "an impossible threshold passed");
}
