//! Recovery: a join with `since` replays what the member missed, then goes live.
//!
//! The shard marks the member as recovering (live frames for it are held, each message
//! tagged with its `seq`), and adds it to the room's open recovery batch, or opens one
//! with a task of its own. One read per room is in flight at a time: the task waits
//! for the room's previous read to finish (the batching window: members that reconnect
//! meanwhile join the batch, so the window grows with the store's latency), closes the
//! batch, waits until the writer has made durable everything handed to it before the
//! close and the bus's subscriptions are in place, reads once from the smallest `since`
//! of the batch, and reports back through the command queue. The shard then writes each member its part
//! of the replay, `recovered`, and the held frames whose `seq` the replay did not reach,
//! in that order. So a crowd reconnecting to one room after a node loss costs a few
//! reads, not one per client, and each message of the replay is encoded once.
//!
//! Why there is no gap and no duplicate: a message the member did not get live was
//! delivered on this node before the member existed, so it was published before the
//! batch closed, hence before the barrier and the read that follow the close; a published message is durable by then (one node: the writer barrier
//! covers what this shard admitted; a cluster: the owner publishes only after the
//! commit), so the read has it. Everything the read has and the member also got live
//! carries a `seq` up to the replay's newest and is dropped from the held frames; the
//! room's delivery itself has no gaps and no repeats (see `deliver.rs`).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::{RecoveryDone, Shard, ShardCmd};
use crate::error::{ClientError, ErrorCode};
use crate::ids::{ConnId, MessageId};
use crate::metrics as m;
use crate::protocol;
use crate::store::PageQuery;

/// A room's recoveries: the open batch (members waiting for the next read, with their
/// `since`; `None` once its task closed it, and later members open a new batch), and
/// the turn that lets one read of the room run at a time.
///
/// Why a lock on the batch: the shard adds members and the task closes it, on
/// different threads; each holds it for one push or one `take`. The turn is an async
/// mutex because a task holds it across its read.
#[derive(Default)]
pub(super) struct RoomRecovery {
    open: Batch,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// Members waiting for one read, with their `since`; `None` once closed.
type Batch = Arc<Mutex<Option<Vec<(ConnId, MessageId)>>>>;

impl Shard {
    pub(super) fn start_recovery(&mut self, room_id: String, conn: ConnId, since: MessageId) {
        if let Some(member) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.members.get_mut(&conn))
            && member.held.is_none()
        {
            member.held = Some(Vec::new());
        }
        let entry = self.recovering.entry(room_id.clone()).or_default();
        if let Some(waiting) = entry.open.lock().as_mut() {
            waiting.push((conn, since));
            return;
        }
        let batch: Batch = Arc::new(Mutex::new(Some(vec![(conn, since)])));
        entry.open = batch.clone();
        let turn = entry.turn.clone();
        let limit = self.cfg.recovery_max_messages;
        let (bus, store, writer, tx) = (
            self.bus.clone(),
            self.store.clone(),
            self.writer.clone(),
            self.self_tx.clone(),
        );
        tokio::spawn(async move {
            // The window: the room's previous read, if any, runs to its end first.
            let _turn = turn.lock().await;
            let waiting = batch.lock().take().unwrap_or_default();
            // The cut: what was delivered before the last of these joins is durable
            // and subscribed first, read second.
            writer.barrier().await;
            bus.synced().await;
            let since = waiting.iter().map(|w| w.1).min().unwrap_or(0);
            // Newest first up to now (`before` = the largest id), so a gap larger than
            // `limit` keeps its newest part.
            let query = PageQuery {
                after: Some(since),
                before: Some(i64::MAX as u64),
                limit,
            };
            let started = Instant::now();
            metrics::counter!(m::RECOVERY_READS).increment(1);
            let result = store
                .page(&room_id, query.one_more())
                .await
                .map(|mut page| {
                    let more = page.len() > limit;
                    query.cut(&mut page);
                    (page, !more)
                });
            metrics::histogram!(m::STORE_READ_SECONDS).record(started.elapsed().as_secs_f64());
            let done = ShardCmd::RecoveryDone(RecoveryDone {
                room_id,
                waiting,
                result,
            });
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send_async(done).await;
            }
            // The turn passes on only now: the next batch fills while this one reads.
            drop(_turn);
        });
    }

    pub(super) fn recovered(&mut self, done: RecoveryDone) {
        let RecoveryDone {
            room_id,
            waiting,
            result,
        } = done;
        if self
            .recovering
            .get(&room_id)
            .is_some_and(|r| r.open.lock().is_none())
        {
            self.recovering.remove(&room_id);
        }
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let now = Instant::now();
        // Each message encoded once for the whole batch.
        let page = result.map(|(page, complete)| {
            let first = page.first().map(|m| m.message_id);
            let frames: Vec<(MessageId, u64, bytes::Bytes)> = page
                .iter()
                .map(|m| (m.message_id, m.seq, protocol::encode_message(m, true)))
                .collect();
            (frames, complete, first)
        });
        for (conn, since) in waiting {
            let Some(member) = room.members.get_mut(&conn) else {
                continue;
            };
            let mut replayed_to = 0;
            let (count, complete) = match &page {
                Ok((frames, complete, first)) => {
                    let mut count = 0;
                    for (id, seq, frame) in frames {
                        if *id > since {
                            member.outbox.push(frame.clone(), now);
                            replayed_to = replayed_to.max(*seq);
                            count += 1;
                        }
                    }
                    // The read was cut at its oldest end: complete for this member when
                    // the cut lies at or below its `since`.
                    let complete = *complete || first.is_some_and(|f| f <= since);
                    metrics::counter!(m::RECOVERIES, "outcome" => if complete { "complete" } else { "partial" }).increment(1);
                    metrics::counter!(m::RECOVERED_MESSAGES).increment(count as u64);
                    (count, complete)
                }
                Err(e) => {
                    tracing::warn!(error = %e, room_id, "recovery read failed");
                    metrics::counter!(m::RECOVERIES, "outcome" => "failed").increment(1);
                    let err = ClientError::new(
                        ErrorCode::StoreUnavailable,
                        "history could not be read; page it over the API",
                    )
                    .in_room(&room_id);
                    member.outbox.push(protocol::encode_error(&err), now);
                    (0, false)
                }
            };
            member.outbox.push(
                protocol::encode_recovered(&room_id, since, count, complete),
                now,
            );
            // Live messages the replay already wrote (or the client had) are dropped.
            for (tag, frame) in member.held.take().unwrap_or_default() {
                if let Some((seq, id)) = tag
                    && (seq <= replayed_to || id <= since)
                {
                    continue;
                }
                member.outbox.push(frame, now);
            }
        }
    }
}
