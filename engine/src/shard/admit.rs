//! Admission: the sequencer's half of a publish. In order (the one place that orders
//! dedupe, store hand-off and publication): membership -> the room's position known ->
//! dedupe by `clientMsgId` -> next `seq` and id -> hand to the history writer (a full
//! writer queue refuses the publish before anyone sees it) -> push jobs for offline
//! participants -> publish on the bus. The writer acks the sender once durable.
//!
//! A room's position (last `seq`) lives with the room while it is in memory and in the
//! shard's idle-position cache after. When neither knows it (first publish after a
//! start, or after the cache forgot the room), the first publish starts a read of the
//! newest stored message (after a writer barrier, so nothing handed to the writer is
//! missed) and publishes wait in the room until it returns: `seq` never repeats and
//! never skips, whatever the store's latency.

use std::sync::Arc;
use std::time::Instant;

use super::room::{Position, Sequence};
use super::{PositionLoaded, PushJob, Shard, ShardCmd};
use crate::bus::{Envelope, RoomMessage};
use crate::clock::now_unix_ms;
use crate::error::{ClientError, ErrorCode};
use crate::ids::ConnId;
use crate::message::{Attachment, ChatMessage, MessageType};
use crate::metrics as m;
use crate::store::writer::{AckTo, AfterCommit, WriteOp};
use crate::store::{AuditEntry, PageQuery};
use crate::user::UserInfo;

/// A message to publish.
#[derive(Debug)]
pub struct Publish {
    pub room_id: String,
    /// The publishing connection, which must be a member. `None` for publishes that do
    /// not come from a socket (REST, system).
    pub conn: Option<ConnId>,
    pub user: Arc<UserInfo>,
    pub content: String,
    pub client_msg_id: Option<String>,
    /// When the frame or request entered the server (for delivery latency).
    pub received_at: Instant,
    pub ack: AckTo,
    /// A moderation action to audit together with the message: `(action, detail)`.
    pub audit: Option<(&'static str, String)>,
    pub message_type: MessageType,
    pub attachments: Vec<Attachment>,
    /// For a conversation: its participants. Each of their open sessions that has not
    /// joined the room gets the message too.
    pub audience: Option<Arc<[String]>>,
    /// Post a push notification job for each participant who is offline (not while the
    /// conversation is snoozed).
    pub notify_offline: bool,
    /// End-to-end encrypted content (see [`ChatMessage::encrypted`]).
    pub encrypted: bool,
}

impl Publish {
    /// A text message with no audience, notification or audit: fill in the rest.
    pub fn text(room_id: String, user: Arc<UserInfo>, content: String, ack: AckTo) -> Self {
        Self {
            room_id,
            conn: None,
            user,
            content,
            client_msg_id: None,
            received_at: Instant::now(),
            ack,
            audit: None,
            message_type: MessageType::Text,
            attachments: Vec::new(),
            audience: None,
            notify_offline: false,
            encrypted: false,
        }
    }
}

fn not_member(room_id: &str, client_msg_id: Option<&str>) -> ClientError {
    ClientError::new(ErrorCode::NotMember, "join the room before sending to it")
        .in_room(room_id)
        .for_client_msg(client_msg_id)
}

fn moving(room_id: &str, client_msg_id: Option<&str>) -> ClientError {
    ClientError::new(
        ErrorCode::Unavailable,
        "the room is moving between nodes; retry with the same clientMsgId",
    )
    .in_room(room_id)
    .for_client_msg(client_msg_id)
    .retry_after(500)
}

fn overloaded(client_msg_id: Option<&str>) -> ClientError {
    ClientError::new(
        ErrorCode::Overloaded,
        "the server is overloaded; retry shortly",
    )
    .for_client_msg(client_msg_id)
    .retry_after(100)
}

impl Shard {
    pub(super) fn publish(&mut self, p: Publish) {
        let room_id = p.room_id.clone();
        // In a cluster only the lease holder sequences, and a position learnt under an
        // earlier lease is stale (another node may have sequenced the room since).
        let lease = match &self.cluster {
            None => 0,
            Some(cluster) => match cluster.lease_of(&room_id) {
                Some(lease) => lease,
                None => {
                    let e = moving(&room_id, p.client_msg_id.as_deref());
                    return p.ack.send(Err(e));
                }
            },
        };
        let room = match p.conn {
            // Not from a socket: nobody need have joined.
            None => self.room_entry(&room_id),
            Some(conn) => match self.rooms.get_mut(&room_id) {
                Some(room) if room.members.contains_key(&conn) => room,
                _ => {
                    let e = not_member(&room_id, p.client_msg_id.as_deref());
                    return p.ack.send(Err(e));
                }
            },
        };
        if room.lease != lease && matches!(room.sequence, Sequence::Known) {
            room.sequence = Sequence::Unknown;
        }
        match &mut room.sequence {
            Sequence::Known => self.admit(p),
            Sequence::Loading(waiting) => waiting.push(p),
            Sequence::Unknown => {
                room.sequence = Sequence::Loading(vec![p]);
                self.load_position(room_id.clone(), lease);
            }
        }
        // A room made just for a publish that did not come from a socket.
        self.drop_if_idle(&room_id);
    }

    /// Reads the room's newest stored message once everything handed to the writer is
    /// durable, and reports back with [`ShardCmd::PositionLoaded`].
    fn load_position(&self, room_id: String, lease: u64) {
        self.read_durable(move |store| async move {
            let query = PageQuery {
                before: None,
                after: None,
                limit: 1,
            };
            let result = store.page(&room_id, query).await.map(|page| {
                page.last().map_or(Position::default(), |m| Position {
                    seq: m.seq,
                    last_id: Some(m.message_id),
                })
            });
            let outcome = if result.is_ok() { "ok" } else { "failed" };
            metrics::counter!(m::ROOM_POSITION_LOADS, "outcome" => outcome).increment(1);
            ShardCmd::PositionLoaded(PositionLoaded {
                room_id,
                lease,
                result,
            })
        });
    }

    pub(super) fn position_loaded(&mut self, loaded: PositionLoaded) {
        let PositionLoaded {
            room_id,
            lease,
            result,
        } = loaded;
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let waiting = match std::mem::replace(&mut room.sequence, Sequence::Unknown) {
            Sequence::Loading(waiting) => waiting,
            other => {
                room.sequence = other;
                return;
            }
        };
        match result {
            Ok(position) => {
                if room.lease == lease {
                    room.position.seq = room.position.seq.max(position.seq);
                    room.position.last_id = room.position.last_id.max(position.last_id);
                } else {
                    // Learnt under a new lease: the store is the truth, not memory.
                    room.position = position;
                    room.lease = lease;
                }
                room.sequence = Sequence::Known;
                if self.cluster.is_some() && position.seq > 0 {
                    // A new owner announces where the room stands: messages a previous
                    // owner stored but could not publish become a gap others fill.
                    self.bus.publish(Envelope::Position {
                        room_id: room_id.clone(),
                        seq: position.seq,
                    });
                }
                for p in waiting {
                    self.admit(p);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, room_id, "room position read failed");
                for p in waiting {
                    let err = ClientError::new(
                        ErrorCode::StoreUnavailable,
                        "history is unavailable; retry with the same clientMsgId",
                    )
                    .in_room(&room_id)
                    .for_client_msg(p.client_msg_id.as_deref());
                    p.ack.send(Err(err));
                }
            }
        }
        self.drop_if_idle(&room_id);
    }

    /// The sequencer's work for one message of a room whose position is known.
    fn admit(&mut self, p: Publish) {
        let Publish {
            room_id,
            conn,
            user,
            content,
            client_msg_id,
            received_at,
            ack,
            audit,
            message_type,
            attachments,
            audience,
            notify_offline,
            encrypted,
        } = p;
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return ack.send(Err(not_member(&room_id, client_msg_id.as_deref())));
        };
        if let Some(conn) = conn
            && !room.members.contains_key(&conn)
        {
            // Left while the room's position was being read.
            return ack.send(Err(not_member(&room_id, client_msg_id.as_deref())));
        }
        if audience.is_some() {
            room.audience = audience;
        }

        let dedupe_key = client_msg_id
            .as_ref()
            .map(|cid| (Arc::<str>::from(user.user_id.as_str()), cid.clone()));
        if let Some(key) = &dedupe_key
            && let Some(&(original, original_seq)) =
                room.dedupe.as_ref().and_then(|d| d.ids.get(key))
            && !self.writer.failed.contains(original)
        {
            metrics::counter!(m::MESSAGES_DEDUPLICATED).increment(1);
            let msg = ChatMessage {
                seq: original_seq,
                ..ChatMessage::reference(
                    original,
                    room_id,
                    user.user_id.clone(),
                    user.username.clone(),
                    client_msg_id,
                )
            };
            // Through the writer's queue: answered after the original is durable.
            if let Err(op) = self.writer.try_send(WriteOp::AckExisting { msg, ack })
                && let WriteOp::AckExisting { ack, .. } = *op
            {
                ack.send(Err(overloaded(None)));
            }
            return;
        }

        // Ids grow with `seq` within a room even when the previous message was minted
        // on another node (ownership moved): gap fills read by id, after the last one
        // delivered. One millisecond past the previous id's is enough.
        let after_previous = room
            .position
            .last_id
            .map_or(0, |id| crate::ids::unix_ms_of(id) + 1);
        let id = self.ids.next(now_unix_ms().max(after_previous));
        let seq = room.position.seq + 1;
        let msg = ChatMessage {
            message_id: id,
            seq,
            room_id,
            user_id: user.user_id.clone(),
            username: user.username.clone(),
            content,
            client_msg_id,
            deleted: false,
            message_type,
            attachments,
            reactions: Default::default(),
            encrypted,
        };
        let audit_entry = audit.map(|(action, detail)| AuditEntry {
            id: self.aux_ids.lock().next(now_unix_ms()),
            at_ms: msg.timestamp_ms(),
            action: action.to_owned(),
            user_id: msg.user_id.clone(),
            room_id: msg.room_id.clone(),
            message_id: Some(id),
            detail,
        });
        // One node: the writer gets its own copy and delivery goes on while the commit
        // runs. A cluster: the writer publishes once the message is durable.
        let audience = room.audience.clone();
        let after_commit = self.cluster.as_ref().map(|_| AfterCommit {
            bus: self.bus.clone(),
            audience: audience.clone(),
            received_at,
        });
        let publish_now = after_commit.is_none();
        if let Err(op) = self.writer.try_send(WriteOp::Message {
            msg: msg.clone(),
            ack,
            audit: audit_entry,
            publish: after_commit,
        }) {
            if let WriteOp::Message { msg, ack, .. } = *op {
                ack.send(Err(
                    overloaded(msg.client_msg_id.as_deref()).in_room(&msg.room_id)
                ));
            }
            return;
        }
        room.position = Position {
            seq,
            last_id: Some(id),
        };
        if let Some(key) = dedupe_key {
            let window = self.cfg.dedupe_window;
            room.dedupe
                .get_or_insert_with(Default::default)
                .remember(key, (id, seq), window);
        }
        metrics::counter!(m::MESSAGES_PUBLISHED).increment(1);
        if self.cfg.metrics_rooms.contains(&msg.room_id) {
            metrics::counter!(m::ROOM_MESSAGES, "room" => msg.room_id.clone()).increment(1);
        }

        // Push jobs are the origin's work, once per message cluster-wide: "offline" is
        // presence's answer (every node), not whether this node has a session.
        if notify_offline && let (Some(audience), Some(push)) = (&room.audience, &self.push) {
            for user in audience.iter().filter(|u| **u != msg.user_id) {
                if self.presence.is_online(user) {
                    continue;
                }
                let outcome = if push.try_send(PushJob::for_message(&msg, user)).is_ok() {
                    "queued"
                } else {
                    "dropped"
                };
                metrics::counter!(m::PUSH_JOBS, "outcome" => outcome).increment(1);
            }
        }
        if publish_now {
            self.bus.publish(Envelope::Message(Box::new(RoomMessage {
                msg,
                audience,
                received_at,
            })));
        }
    }
}
