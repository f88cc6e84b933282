//! Tools the test command installs, for the tests that run them (promtool, helm,
//! hadolint, kubernetes-validate, python3): where to find them and how to run them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A tool from the test command's tool directories (`target/tools-venv/bin`,
/// `target/tools-bin`), else from `PATH`; missing, the test fails and says so.
pub fn tool(name: &str) -> PathBuf {
    let r = repo();
    let local = [
        r.join("target/tools-venv/bin").join(name),
        r.join("target/tools-bin").join(name),
    ];
    if let Some(p) = local.into_iter().find(|p| p.is_file()) {
        return p;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `bash scripts/test.sh` (it installs it)")
        })
}

/// Runs `cmd`, failing the test unless it succeeds; returns its stdout and stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}
