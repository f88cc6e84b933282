//! A shard: one task that owns a set of rooms outright and does their fan-out.
//!
//! Rooms are pinned to shards by a stable hash of the room id, so every command for a
//! room is handled by one task, in the order its queue received them: per-room order is
//! the shard's order, and the room map needs no lock. The shard never awaits a socket,
//! the disk or the network: outbox pushes and history hand-offs are non-blocking, and
//! recovery reads run in a spawned task that reports back through the shard's queue.
//!
//! Publish, in order (the one place that orders store and fan-out): dedupe by
//! `clientMsgId` -> assign id and timestamp -> hand to the history writer (a full
//! writer queue refuses the publish before anyone sees it) -> encode once -> push the
//! same bytes into every member's outbox. The writer acks the sender once durable.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::chat::{Attachment, MessageType};
use crate::clock::now_unix_ms;
use crate::error::{ClientError, ErrorCode};
use crate::history::writer::{AckTo, HistoryWriter, WriteOp};
use crate::history::{AuditEntry, HistoryStore, PageQuery, StoreError};
use crate::ids::{IdGenerator, MessageId};
use crate::metrics as m;
use crate::outbox::{Outbox, Push};
use crate::presence::Presence;
use crate::protocol::{self, ChatMessage};
use smallvec::SmallVec;

/// A connection's id, unique per node.
pub type ConnId = u64;

/// Who a connection or publish belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub user_id: String,
    pub username: String,
    pub is_admin: bool,
}

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
    /// Post a push notification job for each participant with no open session (not
    /// while the conversation is snoozed).
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

/// A push notification job: a participant of a conversation had no open session when a
/// message arrived. The server posts it to the configured webhook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushJob {
    pub user_id: String,
    pub conversation_id: String,
    #[serde(serialize_with = "crate::protocol::id_str")]
    pub message_id: MessageId,
    pub sender_id: String,
    pub sender_name: String,
    pub message_type: MessageType,
    /// The first 100 characters of the content (empty for encrypted content).
    pub preview: String,
    pub encrypted: bool,
}

pub(crate) enum ShardCmd {
    Join {
        room_id: String,
        conn: ConnId,
        user: Arc<UserInfo>,
        outbox: Arc<Outbox>,
        since: Option<MessageId>,
        /// A conversation's participants (set when the room is a conversation).
        audience: Option<Arc<[String]>>,
    },
    Leave {
        room_id: String,
        conn: ConnId,
        /// Send `room_left` to the leaving connection (false when it is disconnecting).
        notify: bool,
    },
    Publish(Box<Publish>),
    Typing {
        room_id: String,
        conn: ConnId,
        is_typing: bool,
    },
    /// A chat event (receipt, deletion, reaction, closure, typing over REST) for a
    /// conversation: to the room's members and every other session of its audience,
    /// except `except_user`'s.
    Event {
        room_id: String,
        frame: Bytes,
        audience: Arc<[String]>,
        except_user: Option<String>,
    },
    RecoveryDone {
        room_id: String,
        conn: ConnId,
        since: MessageId,
        result: Result<(Vec<ChatMessage>, bool), StoreError>,
    },
}

struct Member {
    user: Arc<UserInfo>,
    outbox: Arc<Outbox>,
    /// While recovering: live frames held back until the replay is written.
    held: Option<Vec<Bytes>>,
}

/// Recently published `(user, clientMsgId)` -> id, bounded, so a quick resend (lost ack)
/// is answered without storing or delivering it twice.
#[derive(Default)]
struct Dedupe {
    ids: HashMap<(Arc<str>, String), MessageId>,
    order: VecDeque<(Arc<str>, String)>,
}

#[derive(Default)]
struct Room {
    members: HashMap<ConnId, Member>,
    /// Connections per user in this room (room presence; `len()` is the member count).
    users: HashMap<Arc<str>, u32>,
    dedupe: Option<Box<Dedupe>>,
    last_message_id: Option<MessageId>,
    /// For a conversation: its participants (see [`Publish::audience`]).
    audience: Option<Arc<[String]>>,
}

pub(crate) struct ShardConfig {
    pub index: usize,
    pub node_id: u16,
    pub recovery_max_messages: usize,
    pub dedupe_window: usize,
}

pub(crate) struct Shard {
    cfg: ShardConfig,
    rooms: HashMap<String, Room>,
    ids: IdGenerator,
    writer: HistoryWriter,
    store: Arc<dyn HistoryStore>,
    /// For recovery tasks to report back; weak so the shard stops when the engine drops.
    self_tx: flume::WeakSender<ShardCmd>,
    audit_ids: Arc<parking_lot::Mutex<IdGenerator>>,
    presence: Arc<Presence>,
    push: Option<flume::Sender<PushJob>>,
}

/// What a shard shares with the rest of the node.
pub(crate) struct ShardDeps {
    pub writer: HistoryWriter,
    pub store: Arc<dyn HistoryStore>,
    pub audit_ids: Arc<parking_lot::Mutex<IdGenerator>>,
    pub presence: Arc<Presence>,
    pub push: Option<flume::Sender<PushJob>>,
}

impl Shard {
    pub(crate) fn spawn(
        cfg: ShardConfig,
        queue: usize,
        deps: ShardDeps,
    ) -> (flume::Sender<ShardCmd>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = flume::bounded(queue);
        let shard = Shard {
            ids: IdGenerator::new(cfg.node_id, cfg.index as u16, now_unix_ms()),
            cfg,
            rooms: HashMap::new(),
            writer: deps.writer,
            store: deps.store,
            self_tx: tx.downgrade(),
            audit_ids: deps.audit_ids,
            presence: deps.presence,
            push: deps.push,
        };
        (tx, tokio::spawn(shard.run(rx)))
    }

    async fn run(mut self, rx: flume::Receiver<ShardCmd>) {
        let label = self.cfg.index.to_string();
        let depth = metrics::gauge!(m::SHARD_QUEUE_DEPTH, "shard" => label.clone());
        let rooms = metrics::gauge!(m::ROOMS, "shard" => label);
        while let Ok(cmd) = rx.recv_async().await {
            self.handle(cmd);
            // Drain what else is queued before yielding back to the runtime.
            let mut n = 0;
            while n < 1024 {
                match rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                }
                n += 1;
            }
            depth.set(rx.len() as f64);
            rooms.set(self.rooms.len() as f64);
        }
    }

    fn handle(&mut self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Join {
                room_id,
                conn,
                user,
                outbox,
                since,
                audience,
            } => self.join(room_id, conn, user, outbox, since, audience),
            ShardCmd::Leave {
                room_id,
                conn,
                notify,
            } => self.leave(&room_id, conn, notify),
            ShardCmd::Publish(p) => self.publish(*p),
            ShardCmd::Typing {
                room_id,
                conn,
                is_typing,
            } => self.typing(&room_id, conn, is_typing),
            ShardCmd::Event {
                room_id,
                frame,
                audience,
                except_user,
            } => self.event(&room_id, &frame, &audience, except_user.as_deref()),
            ShardCmd::RecoveryDone {
                room_id,
                conn,
                since,
                result,
            } => self.recovered(&room_id, conn, since, result),
        }
    }

    fn join(
        &mut self,
        room_id: String,
        conn: ConnId,
        user: Arc<UserInfo>,
        outbox: Arc<Outbox>,
        since: Option<MessageId>,
        audience: Option<Arc<[String]>>,
    ) {
        let room = self.rooms.entry(room_id.clone()).or_default();
        if audience.is_some() {
            room.audience = audience;
        }
        let now = Instant::now();
        if !room.members.contains_key(&conn) {
            let first_of_user = {
                let n = room
                    .users
                    .entry(Arc::from(user.user_id.as_str()))
                    .or_insert(0);
                *n += 1;
                *n == 1
            };
            if first_of_user {
                let frame = protocol::encode_presence(
                    &user.user_id,
                    &user.username,
                    &room_id,
                    true,
                    room.users.len(),
                );
                for m in room.members.values_mut() {
                    deliver_at(m, &frame, now);
                }
            }
            room.members.insert(
                conn,
                Member {
                    user: user.clone(),
                    outbox: outbox.clone(),
                    held: None,
                },
            );
        }
        outbox.push(
            protocol::encode_room_joined(&room_id, room.users.len(), room.last_message_id),
            now,
        );
        let Some(since) = since else { return };
        if let Some(member) = room.members.get_mut(&conn)
            && member.held.is_none()
        {
            member.held = Some(Vec::new());
        }
        // Every message of this room with id <= high_water came from this shard before
        // now: the replay covers (since, high_water], live delivery everything after.
        let high = self.ids.high_water();
        let limit = self.cfg.recovery_max_messages;
        let (store, writer, tx) = (
            self.store.clone(),
            self.writer.clone(),
            self.self_tx.clone(),
        );
        tokio::spawn(async move {
            // Messages already handed to the writer but not yet committed must be in
            // the store before we read it.
            writer.barrier().await;
            let query = PageQuery {
                after: Some(since),
                before: Some(high.saturating_add(1)),
                limit: limit + 1,
            };
            let started = Instant::now();
            let result = store.page(&room_id, query).await.map(|mut page| {
                let complete = page.len() <= limit;
                if !complete {
                    page.drain(..page.len() - limit);
                }
                (page, complete)
            });
            metrics::histogram!(m::STORE_READ_SECONDS).record(started.elapsed().as_secs_f64());
            if let Some(tx) = tx.upgrade() {
                let _ = tx
                    .send_async(ShardCmd::RecoveryDone {
                        room_id,
                        conn,
                        since,
                        result,
                    })
                    .await;
            }
        });
    }

    fn recovered(
        &mut self,
        room_id: &str,
        conn: ConnId,
        since: MessageId,
        result: Result<(Vec<ChatMessage>, bool), StoreError>,
    ) {
        let Some(member) = self
            .rooms
            .get_mut(room_id)
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
                .in_room(room_id);
                member.outbox.push(protocol::encode_error(&err), now);
                (0, false)
            }
        };
        member.outbox.push(
            protocol::encode_recovered(room_id, since, count, complete),
            now,
        );
        for frame in member.held.take().unwrap_or_default() {
            member.outbox.push(frame, now);
        }
    }

    fn leave(&mut self, room_id: &str, conn: ConnId, notify: bool) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(member) = room.members.remove(&conn) else {
            return;
        };
        if notify {
            member
                .outbox
                .push(protocol::encode_room_left(room_id), Instant::now());
        }
        let user_id = member.user.user_id.as_str();
        let last_of_user = match room.users.get_mut(user_id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                room.users.remove(user_id);
                true
            }
            None => false,
        };
        if room.members.is_empty() {
            self.rooms.remove(room_id);
            return;
        }
        if last_of_user {
            let frame = protocol::encode_presence(
                user_id,
                &member.user.username,
                room_id,
                false,
                room.users.len(),
            );
            let now = Instant::now();
            for m in room.members.values_mut() {
                deliver_at(m, &frame, now);
            }
        }
    }

    fn publish(&mut self, p: Publish) {
        let room_id = p.room_id.clone();
        self.publish_in(p);
        // A room made just for a publish that did not come from a socket.
        if self
            .rooms
            .get(&room_id)
            .is_some_and(|r| r.members.is_empty())
        {
            self.rooms.remove(&room_id);
        }
    }

    fn publish_in(&mut self, p: Publish) {
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
        let room = match conn {
            // Not from a socket: nobody need have joined.
            None => self.rooms.entry(room_id.clone()).or_default(),
            Some(conn) => match self.rooms.get_mut(&room_id) {
                Some(room) if room.members.contains_key(&conn) => room,
                _ => return ack.send(Err(not_member(&room_id, client_msg_id.as_deref()))),
            },
        };
        if audience.is_some() {
            room.audience = audience;
        }

        let dedupe_key = client_msg_id
            .as_ref()
            .map(|cid| (Arc::<str>::from(user.user_id.as_str()), cid.clone()));
        if let Some(key) = &dedupe_key
            && let Some(&original) = room.dedupe.as_ref().and_then(|d| d.ids.get(key))
            && !self.writer.failed.contains(original)
        {
            metrics::counter!(m::MESSAGES_DEDUPLICATED).increment(1);
            let msg = ChatMessage::reference(
                original,
                room_id,
                user.user_id.clone(),
                user.username.clone(),
                client_msg_id,
            );
            // Through the writer's queue: answered after the original is durable.
            if let Err(op) = self.writer.try_send(WriteOp::AckExisting { msg, ack })
                && let WriteOp::AckExisting { ack, .. } = *op
            {
                ack.send(Err(overloaded(None)));
            }
            return;
        }

        let id = self.ids.next(now_unix_ms());
        let msg = ChatMessage {
            message_id: id,
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
        let frame = protocol::encode_message(&msg, false);
        // Who is offline is learned during the fan-out below; the job is filled in now,
        // before the message moves to the writer.
        let push_job = match (&room.audience, &self.push) {
            (Some(_), Some(_)) if notify_offline => Some(push_job_for(&msg)),
            _ => None,
        };
        let audit_entry = audit.map(|(action, detail)| AuditEntry {
            id: self.audit_ids.lock().next(now_unix_ms()),
            at_ms: msg.timestamp_ms(),
            action: action.to_owned(),
            user_id: msg.user_id.clone(),
            room_id: msg.room_id.clone(),
            message_id: Some(id),
            detail,
        });
        if let Err(op) = self.writer.try_send(WriteOp::Message {
            msg,
            ack,
            audit: audit_entry,
        }) {
            if let WriteOp::Message { msg, ack, .. } = *op {
                ack.send(Err(
                    overloaded(msg.client_msg_id.as_deref()).in_room(&msg.room_id)
                ));
            }
            return;
        }
        room.last_message_id = Some(id);
        if let Some(key) = dedupe_key {
            let window = self.cfg.dedupe_window;
            let d = room.dedupe.get_or_insert_with(Default::default);
            if d.ids.insert(key.clone(), id).is_none() {
                d.order.push_back(key);
                if d.order.len() > window
                    && let Some(old) = d.order.pop_front()
                {
                    d.ids.remove(&old);
                }
            }
        }

        metrics::counter!(m::MESSAGES_PUBLISHED).increment(1);
        for member in room.members.values_mut() {
            deliver_at(member, &frame, received_at);
        }
        if let Some(audience) = &room.audience {
            let offline =
                deliver_to_audience(&self.presence, room, audience, &frame, received_at, None);
            if let (Some(job), Some(push)) = (push_job, &self.push) {
                for user in offline.into_iter().filter(|u| *u != job.sender_id) {
                    let job = PushJob {
                        user_id: user.to_owned(),
                        ..job.clone()
                    };
                    let outcome = if push.try_send(job).is_ok() {
                        "queued"
                    } else {
                        "dropped"
                    };
                    metrics::counter!(m::PUSH_JOBS, "outcome" => outcome).increment(1);
                }
            }
        }
    }

    fn event(
        &mut self,
        room_id: &str,
        frame: &Bytes,
        audience: &Arc<[String]>,
        except_user: Option<&str>,
    ) {
        let now = Instant::now();
        match self.rooms.get_mut(room_id) {
            Some(room) => {
                for m in room.members.values_mut() {
                    if except_user != Some(m.user.user_id.as_str()) {
                        deliver_at(m, frame, now);
                    }
                }
                deliver_to_audience(&self.presence, room, audience, frame, now, except_user);
            }
            None => {
                let room = Room::default();
                deliver_to_audience(&self.presence, &room, audience, frame, now, except_user);
            }
        }
    }

    fn typing(&mut self, room_id: &str, conn: ConnId, is_typing: bool) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(sender) = room.members.get(&conn) else {
            return;
        };
        let user = sender.user.clone();
        let frame = protocol::encode_typing(&user.user_id, &user.username, room_id, is_typing);
        let now = Instant::now();
        for m in room.members.values_mut() {
            if m.user.user_id != user.user_id {
                deliver_at(m, &frame, now);
            }
        }
        if let Some(audience) = &room.audience {
            let user_id = user.user_id.as_str();
            deliver_to_audience(&self.presence, room, audience, &frame, now, Some(user_id));
        }
    }
}

fn not_member(room_id: &str, client_msg_id: Option<&str>) -> ClientError {
    ClientError::new(ErrorCode::NotMember, "join the room before sending to it")
        .in_room(room_id)
        .for_client_msg(client_msg_id)
}

fn overloaded(client_msg_id: Option<&str>) -> ClientError {
    ClientError::new(
        ErrorCode::Overloaded,
        "the server is overloaded; retry shortly",
    )
    .for_client_msg(client_msg_id)
    .retry_after(100)
}

/// Delivers `frame` to every session of `audience` that is not a member of `room` (the
/// members got it through the room, in order with their recovery). Returns the
/// audience members with no open session on this node (one presence lookup each).
fn deliver_to_audience<'a>(
    presence: &Presence,
    room: &Room,
    audience: &'a [String],
    frame: &Bytes,
    entered: Instant,
    except_user: Option<&str>,
) -> SmallVec<[&'a str; 2]> {
    let mut offline = SmallVec::new();
    for user in audience {
        if except_user == Some(user.as_str()) {
            continue;
        }
        let sessions = presence.sessions_of(user);
        if sessions.is_empty() {
            offline.push(user.as_str());
        }
        for (conn, outbox) in sessions {
            if !room.members.contains_key(&conn)
                && outbox.push(frame.clone(), entered) == Push::Overflow
            {
                metrics::counter!(m::SLOW_CONSUMERS).increment(1);
            }
        }
    }
    offline
}

/// The push job for `msg`, addressed to nobody yet (`user_id` is set per recipient).
fn push_job_for(msg: &ChatMessage) -> PushJob {
    PushJob {
        user_id: String::new(),
        conversation_id: msg.room_id.clone(),
        message_id: msg.message_id,
        sender_id: msg.user_id.clone(),
        sender_name: msg.username.clone(),
        message_type: msg.message_type,
        encrypted: msg.encrypted,
        // Ciphertext means nothing to a notification.
        preview: if msg.encrypted {
            String::new()
        } else {
            msg.content.chars().take(100).collect()
        },
    }
}

/// Live frames held for one recovering member before it counts as a slow consumer.
const HELD_MAX: usize = 10_000;

/// Hands one shared frame to one member: held back while it recovers, else queued.
fn deliver_at(member: &mut Member, frame: &Bytes, entered: Instant) {
    if let Some(held) = &mut member.held {
        if held.len() < HELD_MAX {
            held.push(frame.clone());
        } else if member
            .outbox
            .close(crate::disconnect::Disconnect::SLOW_CONSUMER)
        {
            metrics::counter!(m::SLOW_CONSUMERS).increment(1);
        }
        return;
    }
    if member.outbox.push(frame.clone(), entered) == Push::Overflow {
        metrics::counter!(m::SLOW_CONSUMERS).increment(1);
    }
}
