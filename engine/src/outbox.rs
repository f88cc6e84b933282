//! A connection's outbox: the frames waiting for its writer task, bounded in bytes.
//!
//! Producers (shard tasks, the history writer, the connection's own reader) call
//! [`Outbox::push`], which never waits. The single consumer (the writer task) takes
//! everything queued in one [`Outbox::next_batch`] call and writes it with one flush.
//! When the queued bytes (including the batch the writer is still writing) would exceed
//! the cap, the connection is a slow consumer: its queue is dropped, it is closed with
//! [`Disconnect::SLOW_CONSUMER`], and later pushes are refused. Nobody ever blocks on a
//! slow reader.
//!
//! The lock is a `parking_lot::Mutex`, not a tokio one: it is held for a few pointer
//! moves and never across an `.await`. Each outbox has at most two contending parties
//! (a producer and its writer), so the lock is almost always uncontended.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::disconnect::Disconnect;

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// This push overflowed the outbox: the connection is now being closed as a slow
    /// consumer. Returned once per connection, so callers can count it.
    Overflow,
    /// The connection is closing; the frame was dropped.
    Closed,
}

/// A control frame the writer must send (replies the reader is obliged to make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Pong(Bytes),
    Ping(Bytes),
    /// A close frame with this raw payload (echo of the peer's close), after which the
    /// writer ends.
    CloseRaw(Bytes),
}

/// A queued data frame: its payload, whether it is binary (only the echo endpoint sends
/// binary), and when its message entered the server (for delivery latency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub payload: Bytes,
    pub entered: Instant,
    pub binary: bool,
}

/// One batch handed to the writer.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: VecDeque<Queued>,
    pub control: Vec<Control>,
    /// Set when the connection must close after this batch.
    pub close: Option<Closing>,
    /// Bytes queued when the batch was taken (for the queued-bytes metric).
    pub bytes: usize,
}

/// How the writer ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    Server(Disconnect),
    Echo(Bytes),
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Queued>,
    control: Vec<Control>,
    /// Bytes queued plus bytes handed to the writer and not yet released.
    bytes: usize,
    close: Option<Closing>,
    /// The close was handed to the writer: nothing more is accepted.
    finished: bool,
}

/// Unsent pongs kept per connection; a ping flood beyond this loses the oldest pongs.
pub const MAX_PENDING_PONGS: usize = 32;

/// A bounded, single-consumer frame queue. See the module docs.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    max_bytes: usize,
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            max_bytes,
        }
    }

    /// Queues a text frame's payload. Never blocks. A frame larger than the whole cap is
    /// still accepted into an empty outbox, so one big message cannot wedge a client.
    pub fn push(&self, frame: Bytes, entered: Instant) -> Push {
        self.push_frame(Queued {
            payload: frame,
            entered,
            binary: false,
        })
    }

    /// Queues a binary frame (echo endpoint), under the same cap as text.
    pub fn push_binary(&self, frame: Bytes, entered: Instant) -> Push {
        self.push_frame(Queued {
            payload: frame,
            entered,
            binary: true,
        })
    }

    fn push_frame(&self, frame: Queued) -> Push {
        let mut g = self.inner.lock();
        if g.close.is_some() || g.finished {
            return Push::Closed;
        }
        let len = frame.payload.len();
        if g.bytes > 0 && g.bytes + len > self.max_bytes {
            g.frames = VecDeque::new();
            g.close = Some(Closing::Server(Disconnect::SLOW_CONSUMER));
            drop(g);
            self.notify.notify_one();
            return Push::Overflow;
        }
        g.bytes += len;
        let was_empty = g.frames.is_empty() && g.control.is_empty();
        g.frames.push_back(frame);
        drop(g);
        if was_empty {
            // Only the first frame of a batch needs to wake the writer: until it takes
            // the batch, the stored permit stays.
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Queues a control frame (pong, ping, close echo). Not counted against the cap:
    /// control payloads are at most 125 bytes and at most [`MAX_PENDING_PONGS`] pongs
    /// wait at once (beyond that the oldest is dropped, as RFC 6455 §5.5.3 allows).
    pub fn push_control(&self, control: Control) {
        let mut g = self.inner.lock();
        if g.finished {
            return;
        }
        match control {
            Control::CloseRaw(payload) => {
                if g.close.is_none() {
                    g.close = Some(Closing::Echo(payload));
                }
            }
            Control::Pong(p) => {
                let pending = g
                    .control
                    .iter()
                    .filter(|c| matches!(c, Control::Pong(_)))
                    .count();
                if pending >= MAX_PENDING_PONGS
                    && let Some(i) = g.control.iter().position(|c| matches!(c, Control::Pong(_)))
                {
                    g.control.remove(i);
                }
                g.control.push(Control::Pong(p));
            }
            other => g.control.push(other),
        }
        drop(g);
        self.notify.notify_one();
    }

    /// Asks the writer to close the connection. With `drain`, frames already queued are
    /// written first. The first close wins. Returns whether this call set it.
    pub fn close(&self, reason: Disconnect) -> bool {
        let mut g = self.inner.lock();
        if g.close.is_some() || g.finished {
            return false;
        }
        if !reason.drain {
            g.frames = VecDeque::new();
        }
        g.close = Some(Closing::Server(reason));
        drop(g);
        self.notify.notify_one();
        true
    }

    /// Whether a close has been requested or performed.
    pub fn is_closing(&self) -> bool {
        let g = self.inner.lock();
        g.close.is_some() || g.finished
    }

    /// Waits for work and moves it into `batch` (which must be empty; its allocations
    /// are reused). Cancel-safe: nothing is taken until the wait is over.
    pub async fn next_batch(&self, batch: &mut Batch) {
        loop {
            {
                let mut g = self.inner.lock();
                if !g.frames.is_empty() || !g.control.is_empty() || g.close.is_some() {
                    std::mem::swap(&mut batch.frames, &mut g.frames);
                    std::mem::swap(&mut batch.control, &mut g.control);
                    batch.bytes = g.bytes;
                    batch.close = g.close.take();
                    if batch.close.is_some() {
                        g.finished = true;
                    }
                    return;
                }
            }
            self.notify.notified().await;
        }
    }

    /// The writer wrote `n` bytes of payload taken earlier: they no longer count.
    pub fn release(&self, n: usize) {
        let mut g = self.inner.lock();
        g.bytes = g.bytes.saturating_sub(n);
    }

    /// Bytes currently counted against the cap.
    pub fn queued_bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[tokio::test]
    async fn batches_take_everything_queued() {
        let o = Outbox::new(1000);
        let now = Instant::now();
        assert_eq!(o.push(b(10), now), Push::Queued);
        assert_eq!(o.push(b(20), now), Push::Queued);
        o.push_control(Control::Pong(Bytes::from_static(b"a")));
        o.push_control(Control::Pong(Bytes::from_static(b"b")));
        for _ in 0..MAX_PENDING_PONGS {
            o.push_control(Control::Pong(Bytes::from_static(b"c")));
        }
        let mut batch = Batch::default();
        o.next_batch(&mut batch).await;
        assert_eq!(batch.frames.len(), 2);
        assert_eq!(
            batch.control.len(),
            MAX_PENDING_PONGS,
            "capped, oldest dropped"
        );
        assert!(
            batch
                .control
                .iter()
                .all(|c| *c == Control::Pong(Bytes::from_static(b"c")))
        );
        assert_eq!(batch.bytes, 30);
        assert!(batch.close.is_none());
        o.release(30);
        assert_eq!(o.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn overflow_closes_once_and_drops_the_queue() {
        let o = Outbox::new(100);
        let now = Instant::now();
        assert_eq!(o.push(b(60), now), Push::Queued);
        assert_eq!(o.push(b(60), now), Push::Overflow);
        assert_eq!(o.push(b(1), now), Push::Closed);
        let mut batch = Batch::default();
        o.next_batch(&mut batch).await;
        assert!(batch.frames.is_empty());
        assert_eq!(
            batch.close,
            Some(Closing::Server(Disconnect::SLOW_CONSUMER))
        );
        assert_eq!(o.push(b(1), now), Push::Closed);
    }

    #[tokio::test]
    async fn unreleased_bytes_still_count() {
        let o = Outbox::new(100);
        let now = Instant::now();
        assert_eq!(o.push(b(80), now), Push::Queued);
        let mut batch = Batch::default();
        o.next_batch(&mut batch).await;
        // the writer holds 80 bytes it has not written yet
        assert_eq!(o.push(b(30), now), Push::Overflow);
    }

    #[tokio::test]
    async fn a_single_oversized_frame_fits_an_empty_outbox() {
        let o = Outbox::new(100);
        assert_eq!(o.push(b(500), Instant::now()), Push::Queued);
    }

    #[tokio::test]
    async fn draining_close_keeps_frames_and_immediate_close_drops_them() {
        let now = Instant::now();
        let o = Outbox::new(1000);
        o.push(b(5), now);
        assert!(o.close(Disconnect::SHUTDOWN));
        assert!(!o.close(Disconnect::SLOW_CONSUMER));
        let mut batch = Batch::default();
        o.next_batch(&mut batch).await;
        assert_eq!(batch.frames.len(), 1);
        assert_eq!(batch.close, Some(Closing::Server(Disconnect::SHUTDOWN)));

        let o = Outbox::new(1000);
        o.push(b(5), now);
        o.close(Disconnect::PROTOCOL_ERROR);
        let mut batch = Batch::default();
        o.next_batch(&mut batch).await;
        assert!(batch.frames.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_wakes_on_push() {
        let o = std::sync::Arc::new(Outbox::new(1000));
        let o2 = o.clone();
        let waiter = tokio::spawn(async move {
            let mut batch = Batch::default();
            o2.next_batch(&mut batch).await;
            batch.frames.len()
        });
        tokio::task::yield_now().await;
        o.push(b(1), Instant::now());
        assert_eq!(waiter.await.ok(), Some(1));
    }
}
