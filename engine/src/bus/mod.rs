//! The bus: how an admitted message (or a room event, or a frame for one user) reaches
//! every node that has someone to deliver it to. The [`Bus`] trait is the seam; the
//! [`LocalBus`] serves one node and feeds envelopes straight back into delivery through
//! [`Inbound`], the same entry a cluster bus's subscriber uses, so single-node mode runs
//! the path Redis inbound will.
//!
//! Origin and delivery are split here: the room's sequencer *admits* a message (dedupe,
//! `seq` and id, hand-off to the history writer) and then publishes it; any node with
//! local members *delivers* it (encode once, members, the conversation's audience).

mod local;
pub mod redis;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::ids::room_hash;
use crate::message::ChatMessage;
use crate::metrics as m;
use crate::sessions::SessionRegistry;

pub use local::LocalBus;
pub use redis::{ClusterLink, RedisBus, RedisBusConfig};

/// One thing to deliver.
#[derive(Debug)]
pub enum Envelope {
    /// A message its room's sequencer admitted: it has its id and `seq`, and was handed
    /// to the history writer before it was published.
    Message(Box<RoomMessage>),
    /// A pre-encoded frame for a room's members (and a conversation's audience), in
    /// order with the room's messages: typing, read receipts, reactions, deletions.
    RoomEvent(Box<RoomEvent>),
    /// A frame for every session of one user (call signalling, key directory notices,
    /// a conversation partner's status).
    User(UserFrame),
    /// Not published: a cluster bus's position check tells the room's shard how far the
    /// room's sequencer has published (`seq`), so a loss no later message reveals is
    /// found and filled from the store.
    Position { room_id: String, seq: u64 },
}

impl Envelope {
    /// The room whose delivery order this envelope belongs to, if any.
    pub fn room_id(&self) -> Option<&str> {
        match self {
            Envelope::Message(m) => Some(&m.msg.room_id),
            Envelope::RoomEvent(e) => Some(&e.room_id),
            Envelope::Position { room_id, .. } => Some(room_id),
            Envelope::User(_) => None,
        }
    }
}

/// An admitted message.
#[derive(Debug)]
pub struct RoomMessage {
    pub msg: ChatMessage,
    /// For a conversation: its participants. Each of their sessions that has not joined
    /// the room gets the message too (members get it through the room).
    pub audience: Option<Arc<[String]>>,
    /// When the message entered the origin node (delivery latency is measured from it).
    pub received_at: Instant,
}

/// A frame for a room's members and audience.
#[derive(Debug)]
pub struct RoomEvent {
    pub room_id: String,
    pub frame: Bytes,
    /// A conversation's participants (see [`RoomMessage::audience`]).
    pub audience: Option<Arc<[String]>>,
    /// Nobody of this user hears it (the typer, the reader of a receipt).
    pub except_user: Option<String>,
    pub entered: Instant,
}

/// A frame for every session of `user_id`.
#[derive(Debug)]
pub struct UserFrame {
    pub user_id: String,
    pub frame: Bytes,
}

/// Moves envelopes between nodes.
///
/// Contract (every implementation keeps it; the cluster one documents how):
/// - `publish` never blocks and never awaits: it hands the envelope to the bus (a queue
///   in front of a bus task, or, for [`LocalBus`], straight to [`Inbound`]). The
///   sequencer calls it from its shard task.
/// - Delivery is at most once per node: an envelope reaches each node that has members of
///   its room, or sessions of its audience or its user, once or not at all. Nothing is
///   retried by the bus.
/// - A node receives a room's envelopes only while it is subscribed to the room
///   (`subscribe_room` when the room gets its first local member, `unsubscribe_room`
///   after the last leaves) and a user's while it holds a session of the user
///   (`subscribe_user` / `unsubscribe_user`, called by [`SessionRegistry`]). An
///   envelope with an audience is also published to each audience user's channel.
/// - Messages of one room are published in `seq` order by its one sequencer. A receiver
///   that sees `seq` jump (a gap: an envelope lost, or dropped because a shard's inbound
///   queue was full) must fill the gap from the store before delivering later messages
///   of that room, and must treat a `seq` it has already delivered as a duplicate.
///   Messages are published only after the sequencer handed them to the writer; in a
///   cluster, only after they are durable, so any gap can be filled by any node.
/// - Room events and user frames are best-effort: no `seq`, no gap fill.
/// - `flushed` resolves once everything published before the call has been handed to
///   the transport (a slot handed over waits for it before its lease is released).
pub trait Bus: Send + Sync + 'static {
    /// A short name for logs and metrics (`local`, `redis`).
    fn backend(&self) -> &'static str;
    fn publish(&self, envelope: Envelope);
    fn subscribe_room(&self, room_id: &str);
    fn unsubscribe_room(&self, room_id: &str);
    fn subscribe_user(&self, user_id: &str);
    fn unsubscribe_user(&self, user_id: &str);
    /// Resolves once the subscriptions asked for before the call are in place (a join
    /// with `since` reads the store only after it: the subscribe-then-read cut).
    fn synced(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn flushed(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Where envelopes arriving at this node go in: room envelopes into the owning shard's
/// inbound queue (ordered with the room's other work), user frames straight into the
/// user's sessions. Cloned into each bus implementation.
#[derive(Clone)]
pub struct Inbound {
    /// One bounded queue per shard, drained by the shard before its command queue: a
    /// shard never waits on it, and a full queue drops the envelope (counted; the
    /// receiver's gap rule above recovers a dropped message from the store).
    shards: Arc<[flume::Sender<Envelope>]>,
    sessions: Arc<SessionRegistry>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Inbound {
    pub(crate) fn new(
        shards: Arc<[flume::Sender<Envelope>]>,
        sessions: Arc<SessionRegistry>,
    ) -> Self {
        Self { shards, sessions }
    }

    /// Delivers one envelope on this node without waiting.
    pub fn deliver(&self, envelope: Envelope) {
        let room = match envelope.room_id() {
            None => {
                if let Envelope::User(u) = envelope {
                    self.sessions
                        .push_to_user(&u.user_id, &u.frame, Instant::now());
                }
                return;
            }
            Some(room) => room,
        };
        let shard = &self.shards[(room_hash(room) % self.shards.len() as u64) as usize];
        if let Err(e) = shard.try_send(envelope) {
            let envelope = e.into_inner();
            metrics::counter!(m::BUS_INBOUND_DROPPED).increment(1);
            tracing::warn!(
                room_id = envelope.room_id().unwrap_or(""),
                "shard inbound queue full: envelope dropped"
            );
        }
    }
}
