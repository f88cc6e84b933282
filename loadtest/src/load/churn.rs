//! The `churn` mode: connect, join and close at a rate; leaks show as growth.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use roomcast_loadtest::stats::Hist;

use crate::args::Args;
use crate::workers::*;

/// Reads `roomcast_connections` from the server's `/metrics`.
pub(crate) async fn server_connections(addr: SocketAddr) -> Option<f64> {
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

pub(crate) async fn churn(args: Arc<Args>) -> bool {
    let rss_before = args.server_rss_bytes();
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
    let rss_after = args.server_rss_bytes();
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
