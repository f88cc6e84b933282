//! The `roomcast` binary: `roomcast [serve]` runs the server, `roomcast token` mints a
//! token with the configured (or dev) secret, `roomcast health` probes a running
//! server (the container image's healthcheck: the runtime image has no curl).

use std::io::Write;
use std::process::ExitCode;

use roomcast_server::config::Config;
use roomcast_server::{auth, resolve_secret, shutdown, telemetry};

const USAGE: &str = "usage:
  roomcast [serve]                       run the server (configuration: environment, see README)
  roomcast token --user ID [--name NAME] [--admin] [--ttl SECONDS]
                                         print a token signed with JWT_SECRET or the dev secret
  roomcast migrate                       create or upgrade the CQL keyspace named by
                                         ROOMCAST_SCYLLA_* (idempotent; safe from several nodes)
  roomcast health [PATH]                 GET http://127.0.0.1:$PORT/PATH (default /healthz);
                                         exit 0 on 200, 1 otherwise (for container healthchecks)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(),
        Some("token") => token(&args[1..]),
        Some("migrate") => migrate(),
        Some("health") => health(args.get(1).map_or("/healthz", String::as_str)),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(config.log_json);
    let metrics = match telemetry::init_metrics() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "metrics recorder not installed");
            None
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let addr = std::net::SocketAddr::new(config.bind, config.port);
        let listener = listen(addr, config.listen_backlog, config.socket_send_buffer)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        roomcast_server::run(listener, config, metrics, shutdown::signal(), |bound| {
            // One line on stdout that scripts and tests wait for: the server is ready.
            println!("roomcast listening on http://{bound}");
            let _ = std::io::stdout().flush();
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "roomcast failed");
            eprintln!("roomcast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds with an explicit backlog: a reconnect storm after a restart arrives all at once,
/// and tokio's default (1024) makes the excess wait a SYN retransmit (a second or more).
/// The listening socket. Accepted sockets inherit its `SO_SNDBUF` (Linux), so the send
/// buffer is set once here rather than per connection.
fn listen(
    addr: std::net::SocketAddr,
    backlog: u32,
    send_buffer: Option<usize>,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if let Some(n) = send_buffer {
        socket.set_send_buffer_size(u32::try_from(n).unwrap_or(u32::MAX))?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}

fn migrate() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(cql) = config.cql else {
        eprintln!(
            "roomcast migrate: set ROOMCAST_SCYLLA_NODES (and ROOMCAST_SCYLLA_KEYSPACE); the embedded store needs no migration"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(roomcast_engine::store::cql::migrate(&cql)) {
        Ok(v) => {
            println!("keyspace {} is at schema version {v}", cql.keyspace);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomcast migrate ({}): {e}", cql.nodes.join(","));
            ExitCode::FAILURE
        }
    }
}

fn token(args: &[String]) -> ExitCode {
    let mut user = None;
    let mut name = None;
    let mut admin = false;
    let mut ttl: u64 = 24 * 3600;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--user" => user = it.next().cloned(),
            "--name" => name = it.next().cloned(),
            "--admin" => admin = true,
            "--ttl" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => ttl = v,
                None => {
                    eprintln!("--ttl needs a number of seconds\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("unknown option {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        eprintln!("--user is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let secret = match resolve_secret(&config) {
        Ok((s, _)) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let name = name.unwrap_or_else(|| user.clone());
    match auth::mint(
        secret.as_bytes(),
        &user,
        &name,
        admin,
        ttl,
        config.jwt_issuer.as_deref(),
        config.jwt_audience.as_deref(),
    ) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot mint a token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `roomcast health [PATH]`: one HTTP/1.0 GET to this host's server on `PORT`.
fn health(path: &str) -> ExitCode {
    use std::io::Read;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => match p.parse() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("health: PORT={p:?} is not a port");
                return ExitCode::from(2);
            }
        },
        Err(_) => 8000,
    };
    let timeout = std::time::Duration::from_secs(3);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let result = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut head = Vec::new();
        s.take(4096).read_to_end(&mut head)?;
        Ok(String::from_utf8_lossy(&head).into_owned())
    })();
    match result {
        Ok(text) if text.split(' ').nth(1) == Some("200") => ExitCode::SUCCESS,
        Ok(text) => {
            eprintln!(
                "health: {path}: {}",
                text.lines().next().unwrap_or("no answer")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("health: {addr}{path}: {e}");
            ExitCode::FAILURE
        }
    }
}
