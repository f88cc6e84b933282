//! The `idle` mode: connect N, hold, RSS per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::workers::*;

pub(crate) async fn idle(args: Arc<Args>, raw: Vec<String>) -> bool {
    let rss_before = args.server_rss_bytes();
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
    let rss_after = args.server_rss_bytes();
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
