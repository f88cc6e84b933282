//! Push notifications (the seed's "push notifications" integration point): the
//! webhook worker. Shards queue a [`PushJob`] for each conversation participant with
//! no open session (never waiting: a full queue drops the job and counts it); this
//! worker waits until the message is durable, then POSTs the job as JSON to
//! `ROOMCAST_PUSH_WEBHOOK_URL`, retrying failures with exponential backoff and jitter.
//!
//! Delivery is best effort: jobs live in memory, so a restart loses the queued ones
//! (the messages themselves are durable and show up as unread). 2xx is success; 4xx
//! other than 408 and 429 is a permanent failure; anything else is retried up to
//! `ROOMCAST_PUSH_MAX_ATTEMPTS` times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use roomcast_engine::Engine;
use roomcast_engine::metrics as m;
use roomcast_engine::shard::PushJob;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::PushConfig;

/// Deliveries in flight at once.
const CONCURRENCY: usize = 16;
/// Jobs taken from the queue per writer barrier.
const BATCH: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("webhook answered {0}")]
    Status(StatusCode),
    #[error("webhook unreachable: {0}")]
    Io(String),
    #[error("webhook timed out")]
    Timeout,
}

impl AttemptError {
    fn retryable(&self) -> bool {
        match self {
            AttemptError::Status(s) => {
                s.is_server_error()
                    || *s == StatusCode::REQUEST_TIMEOUT
                    || *s == StatusCode::TOO_MANY_REQUESTS
            }
            AttemptError::Io(_) | AttemptError::Timeout => true,
        }
    }
}

/// `http://host[:port]/path` -> (`host:port`, `host`, `/path`).
fn split_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let addr = if authority
        .rsplit(':')
        .next()
        .is_some_and(|p| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Some((addr, authority.to_owned(), path.to_owned()))
}

async fn post_once(cfg: &PushConfig, body: &bytes::Bytes) -> Result<(), AttemptError> {
    let (addr, host, path) =
        split_url(&cfg.url).ok_or_else(|| AttemptError::Io("bad webhook URL".into()))?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| AttemptError::Io(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| AttemptError::Io(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::post(path)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "roomcast-push/1")
            .body(Body::from(body.clone()))
            .map_err(|e| AttemptError::Io(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AttemptError::Io(e.to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(AttemptError::Status(resp.status()))
        }
    };
    tokio::time::timeout(cfg.timeout, attempt)
        .await
        .map_err(|_| AttemptError::Timeout)?
}

/// `base * 2^retry`, at most 30 s, with ±25% jitter.
fn backoff(base: Duration, retry: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << retry.min(16)).min(MAX_BACKOFF);
    let mut b = [0u8; 2];
    let jitter = if getrandom::fill(&mut b).is_ok() {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) * 0.5 + 0.75
    } else {
        1.0
    };
    exp.mul_f64(jitter)
}

async fn deliver(cfg: &PushConfig, job: PushJob, queued_at: Instant, token: &CancellationToken) {
    let body = match serde_json::to_vec(&job) {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => {
            tracing::error!(error = %e, "push job does not serialise");
            return;
        }
    };
    for attempt in 1..=cfg.max_attempts {
        match post_once(cfg, &body).await {
            Ok(()) => {
                metrics::counter!(m::PUSH_JOBS, "outcome" => "delivered").increment(1);
                metrics::histogram!(m::PUSH_SECONDS).record(queued_at.elapsed().as_secs_f64());
                return;
            }
            Err(e) if e.retryable() && attempt < cfg.max_attempts => {
                metrics::counter!(m::PUSH_JOBS, "outcome" => "retried").increment(1);
                tracing::debug!(error = %e, attempt, "push delivery failed; retrying");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(backoff(cfg.backoff, attempt - 1)) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, user_id = %job.user_id, "push delivery failed");
                break;
            }
        }
    }
    metrics::counter!(m::PUSH_JOBS, "outcome" => "failed").increment(1);
}

/// Runs until `token` is cancelled: takes the queued jobs, waits for the history writer
/// to make their messages durable (one barrier per batch), and delivers up to 16 at
/// once.
pub(crate) fn spawn(
    rx: flume::Receiver<PushJob>,
    cfg: PushConfig,
    engine: Engine,
    token: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let cfg = Arc::new(cfg);
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                _ = token.cancelled() => break,
                job = rx.recv_async() => match job {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            // Take what else is queued, so one writer barrier covers the whole batch.
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let queued_at = Instant::now();
            // Notify only about durable messages.
            engine.flush().await;
            for job in batch {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (cfg, token) = (cfg.clone(), token.clone());
                tokio::spawn(async move {
                    deliver(&cfg, job, queued_at, &token).await;
                    drop(permit);
                });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_host_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9000/push"),
            Some((
                "127.0.0.1:9000".into(),
                "127.0.0.1:9000".into(),
                "/push".into()
            ))
        );
        assert_eq!(
            split_url("http://hooks.local"),
            Some(("hooks.local:80".into(), "hooks.local".into(), "/".into()))
        );
        assert_eq!(split_url("https://x/y"), None);
        assert_eq!(split_url("http:///y"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let b0 = backoff(base, 0);
        assert!(b0 >= Duration::from_millis(75) && b0 <= Duration::from_millis(125));
        let b3 = backoff(base, 3);
        assert!(b3 >= Duration::from_millis(600) && b3 <= Duration::from_millis(1000));
        assert!(backoff(base, 30) <= MAX_BACKOFF.mul_f64(1.25));
    }
}
