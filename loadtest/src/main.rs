//! `roomcast-load`: a WebSocket load driver for roomcast (loopback only).
//!
//! Run with (server started with a raised message rate limit, see docs/PERFORMANCE.md):
//!
//! ```text
//! roomcast-load room  --url ws://127.0.0.1:8000 --secret S --rooms 1 --members 2001 \
//!     --publishers 1 --rates 25,50,100 --step-secs 10 --server-pid PID [--procs 2] [--slo]
//! roomcast-load idle  --url ws://127.0.0.1:8000 --secret S --connections 18000 --rooms 1000 \
//!     --hold-secs 10 --server-pid PID [--procs 2]
//! roomcast-load churn --url ws://127.0.0.1:8000 --secret S --rate 200 --duration-secs 10 \
//!     --server-pid PID
//! ```
//!
//! The coordinator (this process) spawns `--procs` worker processes (copies of itself),
//! each holding its share of the connections (a process may hold at most 20,000 open
//! files here); `--source-ips 127.0.0.1,127.0.0.2` spreads them over source addresses.
//! Workers report `ready` when connected; the coordinator then starts them all with one
//! wall-clock `t0`, so publishers and readers in different processes share a schedule
//! and latencies compare across processes.
//!
//! - `room`: R rooms of M members; the first P members of each room publish, open-loop,
//!   at the step's total rate split evenly; messages (`--size`, default 256 bytes of
//!   content) carry their scheduled send time, so latency runs from when a message
//!   *should* have been sent to its receipt (no coordinated omission). Per step: sent,
//!   expected, delivered, lost, duplicates, deliveries/s, latency p50/p90/p99/p999/max,
//!   and the server's CPU per delivery. A step passes with zero loss, zero duplicates and
//!   p99 < 50 ms; `--slo` makes a failed step the exit code.
//! - `idle`: connect N, hold, report connect times, failures and the server's RSS per
//!   connection. `--slo` fails on any connection failure.
//! - `churn`: connect, join and close at `--rate` per second for `--duration-secs`;
//!   report achieved rate, failures, connect latency, and the server's RSS and open
//!   connections before and after (a leak shows as growth). `--slo` fails on failures
//!   or leftover connections.
//!
//! Output: one JSON line per step (or per run) on stdout, a human table on stderr.
//! Every loop is bounded in count and time; targets must be loopback addresses.

use std::net::{IpAddr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use roomcast_loadtest::client::{self, Clock, Conn, Schedule};
use roomcast_loadtest::stats::{Hist, StepStats, proc_cpu_seconds, proc_rss_bytes, unix_us};

const USAGE: &str = "usage: roomcast-load room|idle|churn --url ws://127.0.0.1:PORT --secret SECRET [options]
  common:  --server-pid PID  --procs N  --source-ips 127.0.0.1,127.0.0.2  --connect-concurrency 256  --slo
  room:    --rooms R --members M --publishers P --rates 25,50 --step-secs 10 --size 256
  idle:    --connections N --rooms R --hold-secs 10
  churn:   --rate OPS_PER_SEC --duration-secs 10 --rooms R";

#[derive(Debug, Clone)]
struct Args {
    mode: String,
    addr: SocketAddr,
    secret: String,
    server_pid: Option<u32>,
    source_ips: Vec<IpAddr>,
    concurrency: usize,
    procs: usize,
    rooms: usize,
    members: usize,
    publishers: usize,
    rates: Vec<f64>,
    step_secs: u64,
    size: usize,
    slo: bool,
    connections: usize,
    hold_secs: u64,
    churn_rate: f64,
    duration_secs: u64,
    /// Worker only: the global connection indexes this worker holds.
    range: Option<(usize, usize)>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mode = it.next().ok_or("missing mode")?;
    if !matches!(mode.as_str(), "room" | "idle" | "churn") {
        return Err(format!("unknown mode {mode}"));
    }
    let mut a = Args {
        mode,
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        secret: String::new(),
        server_pid: None,
        source_ips: vec![],
        concurrency: 256,
        procs: 1,
        rooms: 1,
        members: 101,
        publishers: 1,
        rates: vec![10.0],
        step_secs: 10,
        size: 256,
        slo: false,
        connections: 1000,
        hold_secs: 5,
        churn_rate: 100.0,
        duration_secs: 10,
        range: None,
    };
    while let Some(flag) = it.next() {
        if flag == "--slo" {
            a.slo = true;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--url" => {
                let hostport = v.trim_start_matches("ws://").trim_end_matches('/');
                a.addr = hostport
                    .parse()
                    .map_err(|_| format!("--url must be ws://IP:PORT, got {v}"))?;
            }
            "--secret" => a.secret = v,
            "--server-pid" => a.server_pid = Some(num(&v)? as u32),
            "--source-ips" => {
                a.source_ips = v
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("bad ip {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--connect-concurrency" => a.concurrency = num(&v)?.max(1) as usize,
            "--procs" => a.procs = num(&v)?.clamp(1, 16) as usize,
            "--rooms" => a.rooms = num(&v)?.max(1) as usize,
            "--members" => a.members = num(&v)?.max(1) as usize,
            "--publishers" => a.publishers = num(&v)?.max(1) as usize,
            "--rates" => {
                a.rates = v
                    .split(',')
                    .map(|s| s.parse::<f64>().map_err(|_| format!("bad rate {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--step-secs" => a.step_secs = num(&v)?.clamp(1, 600),
            "--size" => a.size = num(&v)?.clamp(64, 60_000) as usize,
            "--connections" => a.connections = num(&v)? as usize,
            "--hold-secs" => a.hold_secs = num(&v)?.min(3600),
            "--rate" => {
                a.churn_rate = v
                    .parse::<f64>()
                    .map_err(|_| format!("bad rate {v}"))?
                    .clamp(0.1, 100_000.0)
            }
            "--duration-secs" => a.duration_secs = num(&v)?.clamp(1, 3600),
            "--range" => {
                let (s, e) = v.split_once('-').ok_or("--range is START-END")?;
                a.range = Some((num(s)? as usize, num(e)? as usize));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !a.addr.ip().is_loopback() {
        return Err("targets are restricted to loopback addresses".into());
    }
    if a.source_ips.iter().any(|ip| !ip.is_loopback()) {
        return Err("source addresses must be loopback".into());
    }
    if a.secret.is_empty() {
        return Err("--secret is required (the server's JWT_SECRET)".into());
    }
    if a.publishers > a.members {
        return Err("--publishers cannot exceed --members".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    let worker = argv.peek().is_some_and(|a| a == "worker");
    if worker {
        argv.next();
    }
    let raw: Vec<String> = argv.collect();
    let args = match parse_args(raw.clone().into_iter()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = rt.block_on(async move {
        let args = Arc::new(args);
        if worker {
            worker_main(args).await
        } else {
            match args.mode.as_str() {
                "idle" => idle(args, raw).await,
                "churn" => churn(args).await,
                _ => room(args, raw).await,
            }
        }
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------- worker protocol

/// A worker's first line: connected.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ready {
    connected: usize,
    failures: usize,
    connect: Hist,
}

/// A worker's last line (room mode).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    sent: Vec<u64>,
    steps: Vec<StepStats>,
}

fn emit<T: Serialize>(v: &T) {
    if let Ok(line) = serde_json::to_string(v) {
        println!("{line}");
    }
}

/// Opens connection number `i` as `user` into `room` (from the `i`-th source address,
/// within 30 s); `None` on failure. Returns the connection and its connect time in µs.
async fn timed_open(args: &Args, i: usize, user: &str, room: &str) -> Option<(Conn, u64)> {
    let src = if args.source_ips.is_empty() {
        None
    } else {
        Some(args.source_ips[i % args.source_ips.len()])
    };
    let token = client::token(&args.secret, user);
    let started = Instant::now();
    let conn = tokio::time::timeout(
        Duration::from_secs(30),
        Conn::open(args.addr, src, &token, room),
    )
    .await
    .ok()?
    .ok()?;
    Some((conn, started.elapsed().as_micros() as u64))
}

/// Connects global indexes `range` with bounded concurrency; `None` = failed.
async fn connect_range(
    args: &Arc<Args>,
    range: (usize, usize),
    room_of: impl Fn(usize) -> String,
) -> (Vec<Option<Conn>>, Hist) {
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(range.1 - range.0);
    for i in range.0..range.1 {
        let sem = sem.clone();
        let args = args.clone();
        let room = room_of(i);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.ok()?;
            timed_open(&args, i, &format!("load-{i}"), &room).await
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    let mut hist = Hist::default();
    for t in tasks {
        match t.await.ok().flatten() {
            Some((c, us)) => {
                hist.record(us);
                conns.push(Some(c));
            }
            None => conns.push(None),
        }
    }
    (conns, hist)
}

async fn worker_main(args: Arc<Args>) -> bool {
    let Some(range) = args.range else {
        eprintln!("worker needs --range");
        return false;
    };
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let members = args.members;
    let rooms = args.rooms;
    let room_of = |i: usize| {
        if args.mode == "idle" {
            format!("idle-{}", i % rooms)
        } else {
            format!("load-room-{}", i / members)
        }
    };
    let (conns, connect) = connect_range(&args, range, room_of).await;
    let failures = conns.iter().filter(|c| c.is_none()).count();
    emit(&Ready {
        connected: conns.len() - failures,
        failures,
        connect,
    });
    // Wait for the coordinator: `go T0` starts the run, anything else (or EOF) ends it.
    let t0 = match stdin.next_line().await {
        Ok(Some(line)) => line
            .strip_prefix("go ")
            .and_then(|t| t.trim().parse::<u64>().ok()),
        _ => None,
    };
    let (Some(t0), "room") = (t0, args.mode.as_str()) else {
        return true;
    };
    let plan = Schedule {
        t0_unix_us: t0,
        rates: args.rates.clone(),
        step: Duration::from_secs(args.step_secs),
        gap: Duration::from_secs(2),
        publishers: args.rooms * args.publishers,
        size: args.size,
    };
    let clock = Clock::now();
    let steps = plan.rates.len();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    let mut publishers = Vec::new();
    for (offset, conn) in conns.into_iter().enumerate() {
        let Some(conn) = conn else { continue };
        let i = range.0 + offset;
        let is_pub = i % members < args.publishers;
        let pub_index = (i / members) * args.publishers + i % members;
        if is_pub {
            let (read, write) = conn.into_publisher();
            readers.push(tokio::spawn(client::read_loop(
                read,
                steps,
                Some(pub_index),
                stop_rx.clone(),
            )));
            publishers.push(tokio::spawn(client::publish_loop(
                write,
                format!("load-room-{}", i / members),
                pub_index,
                plan.clone(),
                clock,
            )));
        } else {
            readers.push(tokio::spawn(client::read_loop(
                conn.into_reader(),
                steps,
                None,
                stop_rx.clone(),
            )));
        }
    }
    let mut report = Report {
        sent: vec![0; steps],
        steps: (0..steps).map(|_| StepStats::default()).collect(),
    };
    for p in publishers {
        if let Ok(per_step) = p.await {
            for (k, n) in per_step.into_iter().enumerate() {
                report.sent[k] += n;
            }
        }
    }
    // Let in-flight deliveries land: the schedule's end (its last gap) plus 2 s.
    tokio::time::sleep_until((clock.instant_at(plan.end_us()) + Duration::from_secs(2)).into())
        .await;
    let _ = stop_tx.send(true);
    for r in readers {
        if let Ok(per_step) = r.await {
            for (k, st) in per_step.iter().enumerate() {
                report.steps[k].merge(st);
            }
        }
    }
    emit(&report);
    true
}

// ---------------------------------------------------------------- coordinator

struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

/// Spawns `procs` workers splitting `total` connections into contiguous ranges.
fn spawn_workers(raw: &[String], procs: usize, total: usize) -> Result<Vec<Worker>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut workers = Vec::with_capacity(procs);
    for k in 0..procs {
        let (s, e) = (k * total / procs, (k + 1) * total / procs);
        let mut child = tokio::process::Command::new(&exe)
            .arg("worker")
            .args(raw)
            .args(["--range", &format!("{s}-{e}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        let stdin = child.stdin.take().ok_or("worker stdin")?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        workers.push(Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
    }
    Ok(workers)
}

async fn read_json<T: for<'de> Deserialize<'de>>(w: &mut Worker, within: Duration) -> Option<T> {
    let line = tokio::time::timeout(within, w.lines.next_line())
        .await
        .ok()?
        .ok()??;
    serde_json::from_str(&line).ok()
}

/// Waits for every worker's `ready`, merged.
async fn all_ready(workers: &mut [Worker]) -> Ready {
    let mut ready = Ready::default();
    for w in workers.iter_mut() {
        match read_json::<Ready>(w, Duration::from_secs(600)).await {
            Some(r) => {
                ready.connected += r.connected;
                ready.failures += r.failures;
                ready.connect.merge(&r.connect);
            }
            None => ready.failures += 1,
        }
    }
    ready
}

async fn tell_all(workers: &mut [Worker], line: &str) {
    for w in workers.iter_mut() {
        let _ = w.stdin.write_all(format!("{line}\n").as_bytes()).await;
        let _ = w.stdin.flush().await;
    }
}

async fn finish(workers: Vec<Worker>) {
    for mut w in workers {
        drop(w.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(30), w.child.wait()).await;
    }
}

async fn idle(args: Arc<Args>, raw: Vec<String>) -> bool {
    let rss_before = args.server_pid.and_then(proc_rss_bytes);
    let started = Instant::now();
    let mut workers = match spawn_workers(&raw, args.procs, args.connections) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return false;
        }
    };
    let ready = all_ready(&mut workers).await;
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let rss_after = args.server_pid.and_then(proc_rss_bytes);
    let held = ready.connected;
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if held > 0 => Some(a.saturating_sub(b) as f64 / held as f64),
        _ => None,
    };
    tell_all(&mut workers, "stop").await;
    finish(workers).await;
    emit(&serde_json::json!({
        "mode": "idle", "connections": args.connections, "procs": args.procs, "held": held, "failures": ready.failures,
        "connect_secs": connect_secs, "connect_ms_p50": ready.connect.quantile_ms(0.5), "connect_ms_p99": ready.connect.quantile_ms(0.99),
        "server_rss_before_bytes": rss_before, "server_rss_after_bytes": rss_after, "server_rss_per_connection_bytes": per_conn,
    }));
    eprintln!(
        "idle: held {held}/{} over {} process(es) (failures {}) in {connect_secs:.1}s, connect p50 {:.1} ms p99 {:.1} ms, server RSS per connection {}",
        args.connections,
        args.procs,
        ready.failures,
        ready.connect.quantile_ms(0.5),
        ready.connect.quantile_ms(0.99),
        per_conn.map_or("n/a".into(), |b| format!("{:.2} KB", b / 1000.0)),
    );
    !args.slo || ready.failures == 0
}

async fn room(args: Arc<Args>, raw: Vec<String>) -> bool {
    let total = args.rooms * args.members;
    let mut workers = match spawn_workers(&raw, args.procs, total) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return false;
        }
    };
    let ready = all_ready(&mut workers).await;
    eprintln!(
        "connected {}/{total} over {} process(es) (failures {}), connect p99 {:.1} ms",
        ready.connected,
        args.procs,
        ready.failures,
        ready.connect.quantile_ms(0.99)
    );
    if ready.failures > 0 {
        tell_all(&mut workers, "stop").await;
        finish(workers).await;
        return false;
    }
    let plan = Schedule {
        t0_unix_us: unix_us() + 500_000,
        rates: args.rates.clone(),
        step: Duration::from_secs(args.step_secs),
        gap: Duration::from_secs(2),
        publishers: args.rooms * args.publishers,
        size: args.size,
    };
    tell_all(&mut workers, &format!("go {}", plan.t0_unix_us)).await;
    let clock = Clock::now();
    let steps = plan.rates.len();
    // Server CPU at each step boundary (a step's window includes its 2 s tail).
    let mut cpu_marks = Vec::with_capacity(steps + 1);
    for k in 0..=steps {
        tokio::time::sleep_until(clock.instant_at(plan.step_start_us(k)).into()).await;
        cpu_marks.push(args.server_pid.and_then(proc_cpu_seconds));
    }
    let mut sent = vec![0u64; steps];
    let mut merged: Vec<StepStats> = (0..steps).map(|_| StepStats::default()).collect();
    for w in workers.iter_mut() {
        if let Some(report) = read_json::<Report>(w, Duration::from_secs(120)).await {
            for k in 0..steps {
                sent[k] += report.sent.get(k).copied().unwrap_or(0);
                if let Some(st) = report.steps.get(k) {
                    merged[k].merge(st);
                }
            }
        } else {
            eprintln!("a worker did not report");
        }
    }
    finish(workers).await;
    let mut all_ok = true;
    eprintln!(
        "{:>8} {:>8} {:>10} {:>10} {:>7} {:>5} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "rate/s",
        "sent",
        "expected",
        "delivered",
        "lost",
        "dup",
        "deliv/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "cpu µs/d"
    );
    for (k, st) in merged.iter().enumerate() {
        // Every message reaches every member of its room but the publisher itself.
        let expected = sent[k] * (args.members as u64 - 1);
        let delivered = st.received - st.duplicates;
        let lost = expected.saturating_sub(delivered);
        let cpu = match (cpu_marks[k], cpu_marks[k + 1]) {
            (Some(a), Some(b)) if delivered > 0 => Some((b - a) / delivered as f64 * 1e6),
            _ => None,
        };
        let p = |q: f64| st.latency.quantile_ms(q);
        let pass = lost == 0 && st.duplicates == 0 && p(0.99) < 50.0;
        all_ok &= pass;
        emit(&serde_json::json!({
            "mode": "room", "rooms": args.rooms, "members": args.members, "publishers_per_room": args.publishers, "procs": args.procs,
            "rate": args.rates[k], "step_secs": args.step_secs, "size": args.size,
            "sent": sent[k], "expected": expected, "delivered": delivered, "lost": lost, "duplicates": st.duplicates,
            "deliveries_per_sec": delivered as f64 / args.step_secs as f64,
            "p50_ms": p(0.5), "p90_ms": p(0.9), "p99_ms": p(0.99), "p999_ms": p(0.999), "max_ms": p(1.0),
            "server_cpu_us_per_delivery": cpu, "pass": pass,
        }));
        eprintln!(
            "{:>8} {:>8} {:>10} {:>10} {:>7} {:>5} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {}",
            args.rates[k],
            sent[k],
            expected,
            delivered,
            lost,
            st.duplicates,
            delivered as f64 / args.step_secs as f64,
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            p(1.0),
            cpu.map_or("n/a".into(), |c| format!("{c:.2}")),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    !args.slo || all_ok
}

/// Reads `roomcast_connections` from the server's `/metrics`.
async fn server_connections(addr: SocketAddr) -> Option<f64> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut body = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_string(&mut s, &mut body),
    )
    .await
    .ok()?
    .ok()?;
    if !body.starts_with("HTTP/1.1 200") {
        return None;
    }
    // The gauge appears with the first connection; before that there are none.
    match body
        .lines()
        .find(|l| l.starts_with("roomcast_connections "))
    {
        Some(line) => line.rsplit(' ').next()?.parse().ok(),
        None => Some(0.0),
    }
}

async fn churn(args: Arc<Args>) -> bool {
    let rss_before = args.server_pid.and_then(proc_rss_bytes);
    let conns_before = server_connections(args.addr).await;
    let total = (args.churn_rate * args.duration_secs as f64).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / args.churn_rate);
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let room = format!("churn-{}", i % args.rooms);
            let (conn, us) = timed_open(&args, i, &format!("churn-{}", i % 1000), &room).await?;
            conn.close().await;
            Some(us)
        }));
    }
    let mut hist = Hist::default();
    let mut failures = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(us) => hist.record(us),
            None => failures += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Give the server a moment to finish closing, then look for leftovers: the count
    // must not have grown (it may shrink if earlier connections were still closing).
    let settled =
        |after: Option<f64>| matches!((after, conns_before), (Some(a), Some(b)) if a <= b);
    let mut conns_after = server_connections(args.addr).await;
    for _ in 0..50 {
        if settled(conns_after) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        conns_after = server_connections(args.addr).await;
    }
    let rss_after = args.server_pid.and_then(proc_rss_bytes);
    let done = hist.count();
    emit(&serde_json::json!({
        "mode": "churn", "target_rate": args.churn_rate, "ops": done, "failures": failures, "secs": secs,
        "achieved_rate": done as f64 / secs, "connect_ms_p50": hist.quantile_ms(0.5), "connect_ms_p99": hist.quantile_ms(0.99),
        "server_rss_before_bytes": rss_before, "server_rss_after_bytes": rss_after,
        "server_connections_before": conns_before, "server_connections_after": conns_after,
    }));
    eprintln!(
        "churn: {done} connect+join+close in {secs:.1}s ({:.0}/s, target {}), failures {failures}, connect p50 {:.2} ms p99 {:.2} ms, server connections {:?} -> {:?}, RSS {} -> {}",
        done as f64 / secs,
        args.churn_rate,
        hist.quantile_ms(0.5),
        hist.quantile_ms(0.99),
        conns_before,
        conns_after,
        rss_before.map_or("n/a".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
        rss_after.map_or("n/a".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
    );
    !args.slo || (failures == 0 && settled(conns_after))
}
