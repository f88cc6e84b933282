//! Logs and metrics set-up: `tracing` (plain or JSON lines to stderr, level from
//! `RUST_LOG`, default `info`) and the Prometheus recorder with explicit histogram
//! buckets, whose upkeep runs on a timer.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use roomcast_engine::metrics as m;

/// Installs the global tracing subscriber. Safe to call once per process.
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Installs the global Prometheus recorder and registers metric descriptions.
pub fn init_metrics() -> Result<PrometheusHandle, String> {
    let mut builder = PrometheusBuilder::new();
    for (name, latency) in m::HISTOGRAMS {
        let buckets = if *latency {
            m::LATENCY_BUCKETS
        } else {
            m::SIZE_BUCKETS
        };
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
            .map_err(|e| e.to_string())?;
    }
    let handle = builder.install_recorder().map_err(|e| e.to_string())?;
    m::describe();
    Ok(handle)
}
