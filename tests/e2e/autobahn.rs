//! WebSocket conformance: the Autobahn|Testsuite (cases 1-10; 12/13 are
//! permessage-deflate, which roomcast does not negotiate) against `/ws/echo`, which runs
//! the same reader, writer and limits as `/ws`. `scripts/test.sh` installs the suite
//! with `scripts/autobahn/install.sh`. Setting ROOMCAST_SKIP_AUTOBAHN=1 skips it
//! explicitly (say so when you do); otherwise a missing suite fails this test.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{Server, token};

fn run_script() -> PathBuf {
    if let Ok(p) = std::env::var("AUTOBAHN_RUN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/autobahn/run.sh")
}

#[tokio::test]
async fn autobahn_cases_1_to_10_have_no_failures() {
    if std::env::var("ROOMCAST_SKIP_AUTOBAHN").as_deref() == Ok("1") {
        eprintln!("autobahn: skipped because ROOMCAST_SKIP_AUTOBAHN=1");
        return;
    }
    let script = run_script();
    assert!(
        script.exists(),
        "Autobahn runner not found at {} (set AUTOBAHN_RUN, or run scripts/test.sh which installs it)",
        script.display()
    );
    let wstest = std::env::var("WSTEST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/opt/autobahn/bin/wstest"));
    assert!(
        wstest.exists(),
        "wstest not installed at {}: run `bash scripts/autobahn/install.sh` (scripts/test.sh does)",
        wstest.display()
    );

    // Conformance needs 16 MiB messages (group 9) and hundreds of quick connections.
    let server = Server::start(&[
        ("ROOMCAST_ECHO_ENDPOINT", "true"),
        ("ROOMCAST_MAX_FRAME_BYTES", "20000000"),
        ("ROOMCAST_OUTBOX_MAX_BYTES", "67108864"),
        ("ROOMCAST_CONNECT_RATE_PER_IP", "100000"),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let out = server.dir.path().join("autobahn");
    let url = format!(
        "ws://{}/ws/echo?token={}",
        server.addr,
        token("autobahn", false)
    );
    let run = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&url)
        .arg(&out)
        .env("EXCLUDE", "12.*,13.*")
        .env("RUN_TIMEOUT", "900")
        .env("WSTEST", &wstest)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(1000), run)
        .await
        .expect("autobahn finished in time")
        .expect("run autobahn");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("RESULT: PASS"),
        "Autobahn failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
