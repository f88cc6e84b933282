//! Recovery: a join with `since` replays what the member missed, then goes live.
//!
//! The shard marks the member as recovering (live frames for it are held), notes the
//! room's high-water mark `H`, and spawns a task that waits for a writer barrier
//! (everything handed to the writer is then durable), reads `(since, H]` from the store,
//! and reports back through the command queue. The shard then writes the replay,
//! `recovered`, and the held frames, in that order.
//!
//! Why there is no gap and no duplicate on one node: this shard is the room's only
//! sequencer, so every message of the room with id `<= H` (the shard's id high-water)
//! was admitted here before the join; and the shard delivers every envelope its
//! admissions produced before it takes the next command (see the module doc of
//! `shard`), so each of those was delivered before the member existed, and each later
//! one reaches the member live. With several nodes the same argument needs one
//! sequencer per room and `H` taken as the last `seq` this node delivered
//! (ARCHITECTURE.md, "Who orders a room").

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
        let high = self.ids.high_water();
        let limit = self.cfg.recovery_max_messages;
        let (node, shard) = crate::ids::origin_of(high);
        self.read_durable(move |store| async move {
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
                    // Judged before filtering: never claims complete when it may not be.
                    let more = page.len() > limit;
                    // This shard's own messages above `high` come live, not in the replay.
                    page.retain(|m| {
                        m.message_id <= high || crate::ids::origin_of(m.message_id) != (node, shard)
                    });
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
        let (count, complete) = match result {
            Ok((page, complete)) => {
                for msg in &page {
                    member.outbox.push(protocol::encode_message(msg, true), now);
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
        for frame in member.held.take().unwrap_or_default() {
            member.outbox.push(frame, now);
        }
    }
}
