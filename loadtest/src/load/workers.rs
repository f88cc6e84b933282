//! Worker processes: the line protocol between coordinator and workers, opening a
//! worker's share of the connections, and the coordinator's side (spawn, ready, tell).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use roomcast_loadtest::client::{self, Clock, Conn, Schedule};
use roomcast_loadtest::stats::{Hist, StepStats};

use crate::args::Args;

// ---------------------------------------------------------------- worker protocol

/// A worker's first line: connected.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Ready {
    pub(crate) connected: usize,
    pub(crate) failures: usize,
    pub(crate) connect: Hist,
}

/// A worker's last line (room mode).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) sent: Vec<u64>,
    pub(crate) steps: Vec<StepStats>,
}

pub(crate) fn emit<T: Serialize>(v: &T) {
    if let Ok(line) = serde_json::to_string(v) {
        println!("{line}");
    }
}

/// Opens connection number `i` as `user` into `room` (from the `i`-th source address,
/// within 30 s); `None` on failure. Returns the connection and its connect time in µs.
pub(crate) async fn timed_open(
    args: &Args,
    i: usize,
    user: &str,
    room: &str,
) -> Option<(Conn, u64)> {
    let src = if args.source_ips.is_empty() {
        None
    } else {
        Some(args.source_ips[i % args.source_ips.len()])
    };
    let token = client::token(&args.secret, user);
    let started = Instant::now();
    let conn = tokio::time::timeout(
        Duration::from_secs(30),
        Conn::open(args.addrs[i % args.addrs.len()], src, &token, room),
    )
    .await
    .ok()?
    .ok()?;
    Some((conn, started.elapsed().as_micros() as u64))
}

/// Connects global indexes `range` with bounded concurrency; `None` = failed.
pub(crate) async fn connect_range(
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

pub(crate) async fn worker_main(args: Arc<Args>) -> bool {
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

pub(crate) struct Worker {
    pub(crate) child: tokio::process::Child,
    pub(crate) stdin: tokio::process::ChildStdin,
    pub(crate) lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

/// Spawns `procs` workers splitting `total` connections into contiguous ranges.
pub(crate) fn spawn_workers(
    raw: &[String],
    procs: usize,
    total: usize,
) -> Result<Vec<Worker>, String> {
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

pub(crate) async fn read_json<T: for<'de> Deserialize<'de>>(
    w: &mut Worker,
    within: Duration,
) -> Option<T> {
    let line = tokio::time::timeout(within, w.lines.next_line())
        .await
        .ok()?
        .ok()??;
    serde_json::from_str(&line).ok()
}

/// Waits for every worker's `ready`, merged.
pub(crate) async fn all_ready(workers: &mut [Worker]) -> Ready {
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

pub(crate) async fn tell_all(workers: &mut [Worker], line: &str) {
    for w in workers.iter_mut() {
        let _ = w.stdin.write_all(format!("{line}\n").as_bytes()).await;
        let _ = w.stdin.flush().await;
    }
}

pub(crate) async fn finish(workers: Vec<Worker>) {
    for mut w in workers {
        drop(w.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(30), w.child.wait()).await;
    }
}
