//! Test helpers for the engine's unit tests and (feature `testkit`) the end-to-end
//! tests: a real `redis-server` on a free loopback port (never a fake), in the clear or
//! TLS-only with a test CA that `openssl` makes. A missing `redis-server` or `openssl`
//! fails the tests that use it: `scripts/test.sh` installs both. Not part of a
//! production build.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` this test started (stopped by PID on drop).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// TLS-only (`--port 0 --tls-port`), requiring client certificates.
    tls: bool,
}

/// The PEM files of a TLS-only test Redis, in its directory: `ca.pem` (which signed the
/// server and client certificates), `client.pem` and `client.key`, and `other-ca.pem`
/// (a CA that signed nothing, for the wrong-CA case).
#[derive(Debug, Clone)]
pub struct RedisTlsFiles {
    pub ca: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
    pub other_ca: std::path::PathBuf,
}

/// Runs `openssl` in `dir`, failing the test with its output if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl not found: scripts/test.sh installs it (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for IP 127.0.0.1 and a client certificate, all P-256.
fn make_test_pki(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=roomcast test {ca}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(dir, &args);
    }
    for (who, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, cnf) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.cnf"),
        );
        std::fs::write(dir.join(&cnf), ext).expect("write ext file");
        let mut args = vec!["req"];
        args.extend(ec);
        let subj = format!("/CN=roomcast test {who}");
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &cnf,
                "-out",
                &pem,
            ],
        );
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl RedisServer {
    pub fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            tls: false,
        };
        s.spawn();
        s
    }

    /// A TLS-only server (no clear port) that requires a client certificate signed by
    /// its CA; [`RedisServer::tls_files`] names the PEM files.
    pub fn start_tls() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            tls: true,
        };
        make_test_pki(s.dir.path());
        s.spawn();
        s
    }

    /// `redis://` or, for a TLS server, `rediss://`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    pub fn tls_files(&self) -> RedisTlsFiles {
        let d = self.dir.path();
        RedisTlsFiles {
            ca: d.join("ca.pem"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            other_ca: d.join("other-ca.pem"),
        }
    }

    pub fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        if self.tls {
            let d = self.dir.path();
            cmd.args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(d.join("server.pem"))
                .arg("--tls-key-file")
                .arg(d.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.pem"))
                .args(["--tls-auth-clients", "yes"]);
        } else {
            cmd.args(["--port", &port]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: scripts/test.sh installs it (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            use std::io::{Read, Write};
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                // A TLS port cannot answer a clear PING: listening is the sign there.
                if self.tls {
                    return;
                }
                let mut buf = [0u8; 16];
                if c.write_all(b"PING\r\n").is_ok()
                    && c.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server exited at start with {status}");
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then a fresh empty server on the same port.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
