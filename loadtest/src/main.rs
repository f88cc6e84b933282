//! `roomcast-load`: a WebSocket load driver for roomcast (loopback only).
//!
//! Run with (server started with a raised message rate limit, see docs/PERFORMANCE.md):
//!
//! ```text
//! roomcast-load room --url ws://127.0.0.1:8000 --secret S --rooms 1 --members 2001 \
//!     --publishers 1 --rates 25,50,100 --step-secs 10 --server-pid PID [--slo]
//! roomcast-load idle --url ws://127.0.0.1:8000 --secret S --connections 18000 --rooms 1000 \
//!     --hold-secs 10 --server-pid PID
//! ```
//!
//! `room`: R rooms of M members; the first P members of each room publish, open-loop,
//! at the step's total rate split evenly; 256-byte messages carry their scheduled send
//! time, so latency runs from when a message *should* have been sent to its receipt
//! (no coordinated omission). Per step it reports sent, expected, delivered, lost,
//! duplicates, deliveries/s, latency p50/p90/p99/p999/max and the server's CPU per
//! delivery. A step passes with zero loss and p99 < 50 ms; `--slo` makes a failed step
//! the exit code. `idle`: connect N, hold, report connect times, failures and the
//! server's RSS per connection. Every loop is bounded in count and time.

mod client;
mod stats;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::Conn;
use stats::{StepStats, percentile, proc_cpu_seconds, proc_rss_bytes};

const USAGE: &str =
    "usage: roomcast-load room|idle --url ws://127.0.0.1:PORT --secret SECRET [options]
  common:  --server-pid PID  --source-ips 127.0.0.1,127.0.0.2  --connect-concurrency 256
  room:    --rooms R --members M --publishers P --rates 25,50 --step-secs 10 --size 256 --slo
  idle:    --connections N --rooms R --hold-secs 10";

#[derive(Debug, Clone)]
struct Args {
    mode: String,
    addr: SocketAddr,
    secret: String,
    server_pid: Option<u32>,
    source_ips: Vec<IpAddr>,
    concurrency: usize,
    rooms: usize,
    members: usize,
    publishers: usize,
    rates: Vec<f64>,
    step_secs: u64,
    size: usize,
    slo: bool,
    connections: usize,
    hold_secs: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("missing mode")?;
    if !matches!(mode.as_str(), "room" | "idle") {
        return Err(format!("unknown mode {mode}"));
    }
    let mut a = Args {
        mode,
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        secret: String::new(),
        server_pid: None,
        source_ips: vec![],
        concurrency: 256,
        rooms: 1,
        members: 101,
        publishers: 1,
        rates: vec![10.0],
        step_secs: 10,
        size: 256,
        slo: false,
        connections: 1000,
        hold_secs: 5,
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
    let args = match parse_args() {
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
        match args.mode.as_str() {
            "idle" => idle(Arc::new(args)).await,
            _ => room(Arc::new(args)).await,
        }
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Connects `n` clients with bounded concurrency; returns them in order (None = failed)
/// with their connect times in microseconds.
async fn connect_all(
    args: &Arc<Args>,
    n: usize,
    room_of: impl Fn(usize) -> String,
) -> (Vec<Option<Conn>>, Vec<u32>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let sem = sem.clone();
        let args = args.clone();
        let room = room_of(i);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.ok()?;
            let src = if args.source_ips.is_empty() {
                None
            } else {
                Some(args.source_ips[i % args.source_ips.len()])
            };
            let token = client::token(&args.secret, &format!("load-{i}"));
            let started = Instant::now();
            let conn = tokio::time::timeout(
                Duration::from_secs(30),
                Conn::open(args.addr, src, &token, &room),
            )
            .await
            .ok()?
            .ok()?;
            Some((conn, started.elapsed().as_micros() as u32))
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    for t in tasks {
        match t.await.ok().flatten() {
            Some((c, us)) => {
                conns.push(Some(c));
                times.push(us);
            }
            None => conns.push(None),
        }
    }
    (conns, times)
}

async fn idle(args: Arc<Args>) -> bool {
    let rss_before = args.server_pid.and_then(proc_rss_bytes);
    let rooms = args.rooms.max(1);
    let started = Instant::now();
    let (conns, mut times) =
        connect_all(&args, args.connections, |i| format!("idle-{}", i % rooms)).await;
    let failures = conns.iter().filter(|c| c.is_none()).count();
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let rss_after = args.server_pid.and_then(proc_rss_bytes);
    times.sort_unstable();
    let held = conns.len() - failures;
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if held > 0 => Some((a.saturating_sub(b)) as f64 / held as f64),
        _ => None,
    };
    let line = serde_json::json!({
        "mode": "idle", "connections": args.connections, "held": held, "failures": failures,
        "connect_secs": connect_secs,
        "connect_ms_p50": percentile(&times, 0.5) as f64 / 1000.0,
        "connect_ms_p99": percentile(&times, 0.99) as f64 / 1000.0,
        "server_rss_before_bytes": rss_before, "server_rss_after_bytes": rss_after,
        "server_rss_per_connection_bytes": per_conn,
    });
    println!("{line}");
    eprintln!(
        "idle: held {held}/{} (failures {failures}) in {connect_secs:.1}s, connect p50 {:.1} ms p99 {:.1} ms, server RSS per connection {}",
        args.connections,
        percentile(&times, 0.5) as f64 / 1000.0,
        percentile(&times, 0.99) as f64 / 1000.0,
        per_conn.map_or("n/a".into(), |b| format!("{:.2} KB", b / 1000.0)),
    );
    drop(conns);
    failures == 0
}

async fn room(args: Arc<Args>) -> bool {
    let total = args.rooms * args.members;
    let members = args.members;
    let (conns, times) = connect_all(&args, total, |i| format!("load-room-{}", i / members)).await;
    let failures = conns.iter().filter(|c| c.is_none()).count();
    eprintln!(
        "connected {}/{} (failures {failures}), connect p99 {:.1} ms",
        total - failures,
        total,
        percentile(
            &{
                let mut t = times.clone();
                t.sort_unstable();
                t
            },
            0.99
        ) as f64
            / 1000.0
    );
    if failures > 0 {
        return false;
    }
    let steps = args.rates.len();
    let step = Duration::from_secs(args.step_secs);
    let gap = Duration::from_secs(2);
    let t0 = Instant::now() + Duration::from_millis(500);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let epoch = t0;
    let mut readers = Vec::with_capacity(total);
    let mut publishers = Vec::new();
    let total_publishers = args.rooms * args.publishers;
    let mut pub_index = 0;
    for (i, conn) in conns.into_iter().enumerate() {
        let Some(conn) = conn else { continue };
        let is_pub = i % members < args.publishers;
        let (read, write) = if is_pub {
            let (r, w) = conn.into_publisher();
            (r, Some(w))
        } else {
            (conn.into_reader(), None)
        };
        readers.push(tokio::spawn(client::read_loop(
            read,
            steps,
            epoch,
            if is_pub { Some(pub_index) } else { None },
            stop_rx.clone(),
        )));
        if let Some(write) = write {
            let args = args.clone();
            let room = format!("load-room-{}", i / members);
            let idx = pub_index;
            publishers.push(tokio::spawn(client::publish_loop(
                write,
                room,
                idx,
                total_publishers,
                args.rates.clone(),
                step,
                gap,
                args.size,
                t0,
            )));
            pub_index += 1;
        }
    }
    let cpu_marks: Vec<Option<f64>> = {
        let mut marks = Vec::with_capacity(steps + 1);
        for k in 0..steps {
            let at = t0 + (step + gap) * k as u32;
            tokio::time::sleep_until(at.into()).await;
            marks.push(args.server_pid.and_then(proc_cpu_seconds));
            if k == steps - 1 {
                tokio::time::sleep_until((at + step + gap).into()).await;
                marks.push(args.server_pid.and_then(proc_cpu_seconds));
            }
        }
        marks
    };
    let mut sent = vec![0u64; steps];
    for p in publishers {
        if let Ok(per_step) = p.await {
            for (k, n) in per_step.into_iter().enumerate() {
                sent[k] += n;
            }
        }
    }
    // Let in-flight deliveries land, then stop readers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut merged: Vec<StepStats> = (0..steps).map(|_| StepStats::default()).collect();
    let _ = stop_tx.send(true);
    for r in readers {
        if let Ok(per_step) = r.await {
            for (k, st) in per_step.into_iter().enumerate() {
                merged[k].merge(st);
            }
        }
    }
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
    for (k, st) in merged.iter_mut().enumerate() {
        st.lat.sort_unstable();
        // Every message reaches every member of its room but the publisher itself.
        let expected = sent[k] * (args.members as u64 - 1);
        let delivered = st.received - st.duplicates;
        let lost = expected.saturating_sub(delivered);
        let cpu = match (
            cpu_marks.get(k).copied().flatten(),
            cpu_marks.get(k + 1).copied().flatten(),
        ) {
            (Some(a), Some(b)) if delivered > 0 => Some((b - a) / delivered as f64 * 1e6),
            _ => None,
        };
        let p = |q: f64| percentile(&st.lat, q) as f64 / 1000.0;
        let pass = lost == 0 && st.duplicates == 0 && p(0.99) < 50.0;
        all_ok &= pass;
        let line = serde_json::json!({
            "mode": "room", "rooms": args.rooms, "members": args.members, "publishers_per_room": args.publishers,
            "rate": args.rates[k], "step_secs": args.step_secs, "size": args.size,
            "sent": sent[k], "expected": expected, "delivered": delivered, "lost": lost, "duplicates": st.duplicates,
            "deliveries_per_sec": delivered as f64 / args.step_secs as f64,
            "p50_ms": p(0.5), "p90_ms": p(0.9), "p99_ms": p(0.99), "p999_ms": p(0.999), "max_ms": p(1.0),
            "server_cpu_us_per_delivery": cpu, "pass": pass,
        });
        println!("{line}");
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
