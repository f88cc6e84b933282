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

mod args;
mod churn;
mod idle;
mod room;
mod workers;

use std::process::ExitCode;
use std::sync::Arc;

use args::*;

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
            workers::worker_main(args).await
        } else {
            match args.mode.as_str() {
                "idle" => idle::idle(args, raw).await,
                "churn" => churn::churn(args).await,
                _ => room::room(args, raw).await,
            }
        }
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
