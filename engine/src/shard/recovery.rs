//! Recovery: a join with `since` replays what the member missed, then goes live.
//!
//! The shard marks the member as recovering (live frames for it are held, each message
//! tagged with its `seq`), and spawns a task that waits until the bus's subscriptions
//! are in place and the writer has made durable everything handed to it, reads what
//! came after `since` from the store, and reports back through the command queue. The
//! shard then writes the replay, `recovered`, and the held frames whose `seq` the
//! replay did not reach, in that order.
//!
//! Why there is no gap and no duplicate: a message the member did not get live was
//! delivered on this node before the member existed, so it was published before the
//! read started; a published message is durable by then (one node: the writer barrier
//! covers what this shard admitted; a cluster: the owner publishes only after the
//! commit), so the read has it. Everything the read has and the member also got live
//! carries a `seq` up to the replay's newest and is dropped from the held frames; the
//! room's delivery itself has no gaps and no repeats (see `deliver.rs`).

use std::time::Instant;

use super::{RecoveryDone, Shard, ShardCmd};
use crate::error::{ClientError, ErrorCode};
use crate::ids::{ConnId, MessageId};
use crate::metrics as m;
use crate::protocol;
use crate::store::PageQuery;

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
        let limit = self.cfg.recovery_max_messages;
        let bus = self.bus.clone();
        self.read_durable(move |store| async move {
            // The cut: subscribed first (a cluster bus), read second.
            bus.synced().await;
            // Newest first up to now (`before` = the largest id), so a gap larger than
            // `limit` keeps its newest part.
            let query = PageQuery {
                after: Some(since),
                before: Some(i64::MAX as u64),
                limit,
            };
            let started = Instant::now();
            let result = store
                .page(&room_id, query.one_more())
                .await
                .map(|mut page| {
                    let more = page.len() > limit;
                    query.cut(&mut page);
                    (page, !more)
                });
            metrics::histogram!(m::STORE_READ_SECONDS).record(started.elapsed().as_secs_f64());
            ShardCmd::RecoveryDone(RecoveryDone {
                room_id,
                conn,
                since,
                result,
            })
        });
    }

    pub(super) fn recovered(&mut self, done: RecoveryDone) {
        let RecoveryDone {
            room_id,
            conn,
            since,
            result,
        } = done;
        let Some(member) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.members.get_mut(&conn))
        else {
            return;
        };
        let now = Instant::now();
        let mut replayed_to = 0;
        let (count, complete) = match result {
            Ok((page, complete)) => {
                for msg in &page {
                    member.outbox.push(protocol::encode_message(msg, true), now);
                    replayed_to = replayed_to.max(msg.seq);
                }
                metrics::counter!(m::RECOVERIES, "outcome" => if complete { "complete" } else { "partial" }).increment(1);
                metrics::counter!(m::RECOVERED_MESSAGES).increment(page.len() as u64);
                (page.len(), complete)
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
