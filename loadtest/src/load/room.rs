//! The `room` mode: rooms of members, open-loop publishers, rate steps.

use std::sync::Arc;
use std::time::Duration;

use roomcast_loadtest::client::{Clock, Schedule};
use roomcast_loadtest::stats::{StepStats, unix_us};

use crate::args::Args;
use crate::workers::*;

pub(crate) async fn room(args: Arc<Args>, raw: Vec<String>) -> bool {
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
        cpu_marks.push(args.server_cpu_seconds());
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
