//! A connection's writer task: drains the outbox in batches and writes each batch with
//! one `write_all` (one syscall for the common case) — frames, control replies and the
//! final close frame alike. A write that takes longer than the write timeout marks the
//! client dead. Records delivery metrics once per batch, not per frame.
//!
//! It also keeps the heartbeat: every ping interval it closes the connection if the
//! peer has been silent for two intervals (or its token has expired), and otherwise
//! sends a ping, which every WebSocket client answers. Both branches of its `select!`
//! are cancel-safe (`Outbox::next_batch` takes nothing until it returns; `Interval::tick`).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use roomcast_engine::metrics as m;
use roomcast_engine::outbox::{Batch, Closing, Control};
use roomcast_engine::{Disconnect, Outbox};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::frame;

/// How the writer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriterEnd {
    /// A close frame went out (server-initiated, with this reason).
    Closed(Disconnect),
    /// The peer's close was echoed.
    Echoed,
    /// The socket failed or timed out.
    Failed(&'static str),
}

/// When the reader last heard from the peer, as milliseconds since a process-wide
/// start instant (one relaxed store per frame).
#[derive(Debug, Default)]
pub(crate) struct Heard(AtomicU64);

fn process_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Heard {
    pub(crate) fn touch(&self) {
        self.0.store(process_ms(), Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        Duration::from_millis(process_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

pub(crate) struct WriterOptions {
    pub(crate) write_timeout: Duration,
    pub(crate) ping_interval: Option<Duration>,
    /// Unix seconds.
    pub(crate) token_expires_at: u64,
    pub(crate) heard: Arc<Heard>,
}

/// What the heartbeat decides at a tick: close (and why) or keep going.
fn heartbeat(opts: &WriterOptions, interval: Duration) -> Option<Disconnect> {
    if roomcast_engine::clock::now_unix_ms() / 1000 >= opts.token_expires_at {
        Some(Disconnect::TOKEN_EXPIRED)
    } else if opts.heard.silent_for() >= interval * 2 {
        Some(Disconnect::IDLE_TIMEOUT)
    } else {
        None
    }
}

pub(crate) async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    outbox: Arc<Outbox>,
    opts: WriterOptions,
) -> WriterEnd {
    let write_timeout = opts.write_timeout;
    opts.heard.touch();
    let mut ticker = opts.ping_interval.map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (t, every)
    });
    let mut batch = Batch::default();
    let delivered = metrics::counter!(m::MESSAGES_DELIVERED);
    let latency = metrics::histogram!(m::DELIVERY_SECONDS);
    let queued = metrics::histogram!(m::OUTBOX_QUEUED_BYTES);
    let per_write = metrics::histogram!(m::WRITE_BATCH_FRAMES);
    loop {
        if let Some((ticker, every)) = ticker.as_mut() {
            let tick = tokio::select! {
                _ = outbox.next_batch(&mut batch) => false,
                _ = ticker.tick() => true,
            };
            if tick {
                match heartbeat(&opts, *every) {
                    Some(reason) => {
                        outbox.close(reason);
                    }
                    None => outbox.push_control(Control::Ping(bytes::Bytes::new())),
                }
                continue;
            }
        } else {
            outbox.next_batch(&mut batch).await;
        }
        let mut size = 0;
        for f in &batch.frames {
            size += frame::header_len(f.payload.len()) + f.payload.len();
        }
        for c in &batch.control {
            size += match c {
                Control::Pong(p) | Control::Ping(p) | Control::CloseRaw(p) => 2 + p.len(),
            };
        }
        let mut buf = Vec::with_capacity(size + 128);
        for c in batch.control.drain(..) {
            match c {
                Control::Pong(p) => frame::encode(&mut buf, frame::OP_PONG, &p),
                Control::Ping(p) => frame::encode(&mut buf, frame::OP_PING, &p),
                Control::CloseRaw(p) => frame::encode(&mut buf, frame::OP_CLOSE, &p),
            }
        }
        let frames = batch.frames.len();
        let oldest = batch.frames.front().map(|f| f.entered);
        let mut payload_bytes = 0;
        for f in batch.frames.drain(..) {
            payload_bytes += f.payload.len();
            frame::encode(
                &mut buf,
                if f.binary {
                    frame::OP_BINARY
                } else {
                    frame::OP_TEXT
                },
                &f.payload,
            );
        }
        if batch.frames.capacity() > 64 {
            // Do not keep a burst's allocation on a connection that goes idle.
            batch.frames = Default::default();
        }
        let end = match batch.close.take() {
            Some(Closing::Server(d)) => {
                frame::encode_close(&mut buf, d.code, d.reason);
                Some(WriterEnd::Closed(d))
            }
            Some(Closing::Echo(p)) => {
                frame::encode(&mut buf, frame::OP_CLOSE, &p);
                Some(WriterEnd::Echoed)
            }
            None => None,
        };
        if frames > 0 {
            queued.record(batch.bytes as f64);
        }
        match tokio::time::timeout(write_timeout, w.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return WriterEnd::Failed("write_error"),
            Err(_) => {
                if outbox.close(Disconnect::SLOW_CONSUMER) {
                    metrics::counter!(m::SLOW_CONSUMERS).increment(1);
                }
                return WriterEnd::Failed("write_timeout");
            }
        }
        outbox.release(payload_bytes);
        if frames > 0 {
            delivered.increment(frames as u64);
            per_write.record(frames as f64);
            if let Some(t) = oldest {
                latency.record(Instant::now().saturating_duration_since(t).as_secs_f64());
            }
        }
        if let Some(end) = end {
            let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
            return end;
        }
    }
}
