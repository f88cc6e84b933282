//! A shard: one task that owns a set of rooms outright and does their fan-out.
//!
//! Rooms are pinned to shards by a stable hash of the room id ([`crate::ids::room_hash`]),
//! so every command for a room is handled by one task, in the order its queue received
//! them: per-room order is the shard's order, and the room map needs no lock. The shard
//! never awaits a socket, the disk or the network: outbox pushes, history hand-offs and
//! bus publishes are non-blocking, and store reads (recovery, a room's position) run in
//! spawned tasks that report back through the shard's command queue.
//!
//! A shard has two queues. Commands (join, leave, publish, typing, store reports) come
//! from sessions and the engine through a bounded flume queue whose senders wait when it
//! is full (a saturated shard slows only the readers feeding it). Envelopes to deliver
//! come from the bus through a second bounded queue that the shard drains before each
//! command: the bus never waits on a shard, and a join is handled only after every
//! message admitted before it was delivered (the recovery argument in `recovery.rs`
//! leans on this).
//!
//! The two halves of a message's life: [`admit`] (the sequencer's work: dedupe, `seq`
//! and id, writer hand-off, publish on the bus) and [`deliver`] (any node's work:
//! encode once, members, the conversation's audience).

pub(crate) mod admit;
mod audience;
mod deliver;
mod recovery;
mod room;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::bus::{Bus, Envelope};
use crate::clock::now_unix_ms;
use crate::cluster::{Cluster, RedisRoster};
use crate::ids::{ConnId, IdGenerator, MessageId};
use crate::message::ChatMessage;
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::presence::Presence;
use crate::sessions::SessionRegistry;
use crate::store::writer::HistoryWriter;
use crate::store::{HistoryStore, StoreError};
use crate::user::UserInfo;

pub use admit::Publish;
pub use audience::PushJob;
pub(crate) use room::Position;
use room::Room;

/// Join `room_id` (see [`crate::Session::join`]).
pub(crate) struct Join {
    pub room_id: String,
    pub conn: ConnId,
    pub user: Arc<UserInfo>,
    pub outbox: Arc<Outbox>,
    /// Replay what was missed after this id first.
    pub since: Option<MessageId>,
    /// A conversation's participants (set when the room is a conversation).
    pub audience: Option<Arc<[String]>>,
}

pub(crate) struct Leave {
    pub room_id: String,
    pub conn: ConnId,
    /// Send `room_left` to the leaving connection (false when it is disconnecting).
    pub notify: bool,
}

pub(crate) struct Typing {
    pub room_id: String,
    pub conn: ConnId,
    pub is_typing: bool,
}

/// A recovery read finished (see `recovery.rs`).
pub(crate) struct RecoveryDone {
    room_id: String,
    /// The batch's members and their `since`.
    waiting: Vec<(ConnId, MessageId)>,
    /// Read from the smallest `since`; `true` when not cut at `recovery_max_messages`.
    result: Result<(Vec<ChatMessage>, bool), StoreError>,
}

/// A room's position was read from the store (see `admit.rs`).
pub(crate) struct PositionLoaded {
    room_id: String,
    /// The lease generation the read was started under.
    lease: u64,
    result: Result<Position, StoreError>,
}

/// A read for delivery finished (see `deliver.rs`): the messages after a gap, or (with
/// `Fill::Position`) the newest message, which is where delivery starts on this node.
pub(crate) struct Filled {
    room_id: String,
    kind: Fill,
    /// Where the read started (a gap fill that failed is read again from here).
    after: MessageId,
    /// Failed reads of this gap before this one.
    failures: u32,
    result: Result<Vec<ChatMessage>, StoreError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// The messages after the last one delivered.
    Gap,
    /// Only where the room stands (a room this node starts delivering in a cluster).
    Position,
}

pub(crate) enum ShardCmd {
    Join(Join),
    Leave(Leave),
    Publish(Box<Publish>),
    Typing(Typing),
    /// The users present in a room on this node (`getOnlineUsers` of a public room).
    RoomUsers {
        room_id: String,
        reply: tokio::sync::oneshot::Sender<Vec<String>>,
    },
    RecoveryDone(RecoveryDone),
    PositionLoaded(PositionLoaded),
    Filled(Filled),
}

pub(crate) struct ShardConfig {
    pub index: usize,
    pub node_id: u16,
    pub recovery_max_messages: usize,
    /// See [`crate::EngineConfig::room_presence_max_members`].
    pub room_presence_max_members: usize,
    pub dedupe_window: usize,
    /// Positions of rooms with nobody in them kept per shard, so a room that only REST
    /// sends reach (no member) does not read its position from the store every time.
    pub idle_positions: usize,
    /// See [`crate::EngineConfig::metrics_rooms`].
    pub metrics_rooms: Arc<std::collections::HashSet<String>>,
}

/// What a shard shares with the rest of the node.
pub(crate) struct ShardDeps {
    pub writer: HistoryWriter,
    pub store: Arc<dyn HistoryStore>,
    /// The generator of non-message ids (audit entries), shared by every shard and the
    /// engine: behind a mutex because it is used off the hot path only (one lock per
    /// moderated message).
    pub aux_ids: Arc<Mutex<IdGenerator>>,
    pub sessions: Arc<SessionRegistry>,
    pub presence: Arc<dyn Presence>,
    pub bus: Arc<dyn Bus>,
    pub push: Option<flume::Sender<PushJob>>,
    /// In a cluster: who sequences which room (`None` on one node).
    pub cluster: Option<Arc<Cluster>>,
    /// In a cluster: who is in which room anywhere (`None` on one node, where a room's
    /// shard knows all its members).
    pub roster: Option<Arc<RedisRoster>>,
}

/// Positions of idle rooms (with the lease they were learnt under), oldest forgotten
/// first.
#[derive(Default)]
struct IdlePositions {
    map: HashMap<String, (Position, u64)>,
    order: VecDeque<String>,
}

impl IdlePositions {
    fn take(&mut self, room_id: &str) -> Option<(Position, u64)> {
        // The key stays in `order` until it ages out; a stale key there is skipped.
        self.map.remove(room_id)
    }

    fn keep(&mut self, room_id: String, position: (Position, u64), cap: usize) {
        if self.map.insert(room_id.clone(), position).is_none() {
            self.order.push_back(room_id);
        }
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front()
                && self.map.len() > cap
            {
                self.map.remove(&old);
            }
        }
    }
}

pub(crate) struct Shard {
    cfg: ShardConfig,
    rooms: HashMap<String, Room>,
    idle: IdlePositions,
    /// Each room's open recovery batch (see `recovery.rs`).
    recovering: HashMap<String, recovery::RoomRecovery>,
    /// This shard's message ids: owned by the task, so no lock.
    ids: IdGenerator,
    writer: HistoryWriter,
    store: Arc<dyn HistoryStore>,
    /// For store reads to report back; weak so the shard stops when the engine drops.
    self_tx: flume::WeakSender<ShardCmd>,
    aux_ids: Arc<Mutex<IdGenerator>>,
    sessions: Arc<SessionRegistry>,
    presence: Arc<dyn Presence>,
    bus: Arc<dyn Bus>,
    /// Push notification jobs for the server's webhook worker; `None` when off.
    push: Option<flume::Sender<PushJob>>,
    cluster: Option<Arc<Cluster>>,
    roster: Option<Arc<RedisRoster>>,
}

impl Shard {
    /// Starts the shard on its two queues (see the module doc).
    pub(crate) fn spawn(
        cfg: ShardConfig,
        commands: (flume::Sender<ShardCmd>, flume::Receiver<ShardCmd>),
        inbound: flume::Receiver<Envelope>,
        deps: ShardDeps,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = commands;
        let shard = Shard {
            ids: IdGenerator::new(cfg.node_id, cfg.index as u16, now_unix_ms()),
            cfg,
            rooms: HashMap::new(),
            idle: IdlePositions::default(),
            recovering: HashMap::new(),
            writer: deps.writer,
            store: deps.store,
            self_tx: tx.downgrade(),
            aux_ids: deps.aux_ids,
            sessions: deps.sessions,
            presence: deps.presence,
            bus: deps.bus,
            push: deps.push,
            cluster: deps.cluster,
            roster: deps.roster,
        };
        drop(tx);
        tokio::spawn(shard.run(rx, inbound))
    }

    async fn run(mut self, rx: flume::Receiver<ShardCmd>, inbound: flume::Receiver<Envelope>) {
        let label = self.cfg.index.to_string();
        let depth = metrics::gauge!(m::SHARD_QUEUE_DEPTH, "shard" => label.clone());
        let rooms = metrics::gauge!(m::ROOMS, "shard" => label);
        loop {
            tokio::select! {
                biased;
                env = inbound.recv_async() => match env {
                    Ok(env) => self.deliver(env),
                    Err(_) => break,
                },
                cmd = rx.recv_async() => match cmd {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                },
            }
            // Drain what else is queued before yielding back to the runtime: deliveries
            // first, then at most 1024 commands, each followed by the deliveries it made.
            self.drain_inbound(&inbound);
            let mut n = 0;
            while n < 1024 {
                match rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                }
                self.drain_inbound(&inbound);
                n += 1;
            }
            depth.set((rx.len() + inbound.len()) as f64);
            rooms.set(self.rooms.len() as f64);
        }
    }

    fn drain_inbound(&mut self, inbound: &flume::Receiver<Envelope>) {
        while let Ok(env) = inbound.try_recv() {
            self.deliver(env);
        }
    }

    fn handle(&mut self, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Join(j) => self.join(j),
            ShardCmd::Leave(l) => self.leave(l),
            ShardCmd::Publish(p) => self.publish(*p),
            ShardCmd::Typing(t) => self.typing(t),
            ShardCmd::RoomUsers { room_id, reply } => {
                let users = self
                    .rooms
                    .get(&room_id)
                    .map(|r| r.users.keys().map(|u| u.to_string()).collect())
                    .unwrap_or_default();
                let _ = reply.send(users);
            }
            ShardCmd::RecoveryDone(r) => self.recovered(r),
            ShardCmd::PositionLoaded(p) => self.position_loaded(p),
            ShardCmd::Filled(f) => self.filled(f),
        }
    }

    /// The room, made (with its remembered position, if any) when it is not in memory.
    fn room_entry(&mut self, room_id: &str) -> &mut Room {
        if !self.rooms.contains_key(room_id) {
            let position = self.idle.take(room_id);
            self.rooms.insert(room_id.to_owned(), Room::new(position));
        }
        self.rooms.get_mut(room_id).expect("inserted above")
    }

    /// Runs a store read off the shard task once everything handed to the writer so far
    /// is durable (so the read sees every message this shard admitted), and reports the
    /// command it makes back through the command queue.
    fn read_durable<F, Fut>(&self, read: F)
    where
        F: FnOnce(Arc<dyn HistoryStore>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ShardCmd> + Send,
    {
        let (store, writer, tx) = (
            self.store.clone(),
            self.writer.clone(),
            self.self_tx.clone(),
        );
        tokio::spawn(async move {
            writer.barrier().await;
            let cmd = read(store).await;
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send_async(cmd).await;
            }
        });
    }

    /// Forgets a room nobody is in, remembering its position.
    fn drop_if_idle(&mut self, room_id: &str) {
        if self.rooms.get(room_id).is_some_and(Room::is_idle)
            && let Some(room) = self.rooms.remove(room_id)
        {
            self.bus.unsubscribe_room(room_id);
            if matches!(room.sequence, room::Sequence::Known) {
                let cap = self.cfg.idle_positions;
                self.idle
                    .keep(room_id.to_owned(), (room.position, room.lease), cap);
            }
        }
    }
}
