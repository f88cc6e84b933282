//! The [`Engine`]: the wiring of one node. It starts the shard tasks, the history
//! writer, the bus and the presence task, and holds the node-wide services (sessions,
//! presence, rate limits, moderation, stores) behind one cheap handle. The server
//! creates one at start-up and a [`Session`] per connection (`Session::open`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::bus::redis::ClusterLink;
use crate::bus::{
    Bus, Envelope, Inbound, LocalBus, RedisBus, RedisBusConfig, RoomEvent, UserFrame,
};
use crate::calls::CallService;
use crate::chat::Conversation;
use crate::clock::now_unix_ms;
use crate::cluster::forward::Forwarder;
use crate::cluster::{Cluster, ClusterConfig, Route};
use crate::disconnect::Disconnect;
use crate::error::{ClientError, ErrorCode};
use crate::ids::{IdGenerator, MAX_SHARDS, MessageId, room_hash};
use crate::message::ChatMessage;
use crate::metrics as m;
use crate::moderation::{ModerationConfig, Moderator};
use crate::presence::{MemoryPresence, Presence, RedisPresence, UserStatus};
use crate::ratelimit::{RateLimitConfig, RateLimits};
use crate::sessions::SessionRegistry;
use crate::shard::{Publish, PushJob, Shard, ShardCmd, ShardConfig, ShardDeps};
use crate::store::writer::HistoryWriter;
use crate::store::{ChatStore, PageQuery, StoreError, Stores};

/// Engine settings (the server fills them from the environment).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Node id in message ids (0..=255); distinct per node of a cluster.
    pub node_id: u16,
    /// Shard tasks; default one per core, at most 31.
    pub shards: usize,
    /// Commands a shard queue holds before senders wait.
    pub shard_queue: usize,
    /// Per-connection outbox cap in bytes.
    pub outbox_max_bytes: usize,
    pub max_rooms_per_connection: usize,
    pub max_connections_per_user: usize,
    /// Most messages one recovery replays.
    pub recovery_max_messages: usize,
    /// `presence` frames (a user entering or leaving) go to the members of rooms of at
    /// most this many users (counting the user); bigger rooms stay quiet (each join would otherwise cost a
    /// frame per member: quadratic in a reconnect storm). 0: never.
    pub room_presence_max_members: usize,
    /// Recent `clientMsgId`s remembered per room for in-memory dedupe.
    pub dedupe_window: usize,
    pub writer_queue: usize,
    pub writer_max_batch: usize,
    pub rate: RateLimitConfig,
    pub moderation: ModerationConfig,
    /// Push notification jobs queued for the webhook before new ones are dropped; 0
    /// turns push notifications off.
    pub push_queue: usize,
    /// Positions (last `seq`) of rooms nobody is in, remembered per shard.
    pub idle_positions: usize,
    /// How long a call rings before it is missed.
    pub call_ring_timeout: std::time::Duration,
    /// Rooms whose messages are counted by room (`roomcast_room_messages_published_total`);
    /// a list, so the label's cardinality is the operator's choice.
    pub metrics_rooms: Arc<std::collections::HashSet<String>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shard_queue: 65_536,
            outbox_max_bytes: 1 << 20,
            max_rooms_per_connection: 100,
            max_connections_per_user: 32,
            recovery_max_messages: 1000,
            room_presence_max_members: 1000,
            dedupe_window: 1024,
            writer_queue: 131_072,
            writer_max_batch: 4096,
            rate: RateLimitConfig::default(),
            moderation: ModerationConfig::default(),
            push_queue: 0,
            idle_positions: 65_536,
            call_ring_timeout: std::time::Duration::from_secs(45),
            metrics_rooms: Default::default(),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: EngineConfig,
    /// Each shard's command queue (see `shard`); index = `room_hash(room) % len`.
    pub(crate) shards: Vec<flume::Sender<ShardCmd>>,
    pub(crate) writer: HistoryWriter,
    pub(crate) stores: Stores,
    pub(crate) limits: RateLimits,
    pub(crate) moderator: Moderator,
    pub(crate) sessions: Arc<SessionRegistry>,
    pub(crate) presence: Arc<dyn Presence>,
    pub(crate) bus: Arc<dyn Bus>,
    /// Cluster membership, ownership and forwarding (`None` on one node).
    pub(crate) cluster: Option<ClusterParts>,
    pub(crate) next_conn: AtomicU64,
    /// Ids of everything that is not a message (audit entries, conversations, calls):
    /// one generator on the shard id reserved for them, behind a mutex because it is
    /// used off the hot path (a creation or a moderation action, not every message).
    pub(crate) aux_ids: Arc<Mutex<IdGenerator>>,
    /// Set once at shutdown: every ring timer watches it and ends (see
    /// `calls::service`).
    pub(crate) timers_stop: tokio::sync::watch::Sender<bool>,
}

/// A cluster member's parts.
pub(crate) struct ClusterParts {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) forwarder: Arc<Forwarder>,
    /// Set in `assemble` (it needs the bus and the presence timing).
    pub(crate) roster: Option<Arc<crate::cluster::RedisRoster>>,
}

/// The queues made before the bus (the bus delivers into the shards' inbound queues,
/// and the shards publish on the bus) and the sessions the bus delivers user frames to.
struct Queues {
    commands: Vec<(flume::Sender<ShardCmd>, flume::Receiver<ShardCmd>)>,
    inbound: Vec<(flume::Sender<Envelope>, flume::Receiver<Envelope>)>,
    sessions: Arc<SessionRegistry>,
}

impl Queues {
    fn new(cfg: &EngineConfig) -> Self {
        let shards = cfg.shards.clamp(1, MAX_SHARDS - 1);
        Self {
            commands: (0..shards)
                .map(|_| flume::bounded::<ShardCmd>(cfg.shard_queue))
                .collect(),
            inbound: (0..shards)
                .map(|_| flume::bounded::<Envelope>(cfg.shard_queue))
                .collect(),
            sessions: Arc::new(SessionRegistry::default()),
        }
    }

    fn inbound(&self) -> Inbound {
        let tx: Arc<[flume::Sender<Envelope>]> =
            self.inbound.iter().map(|(tx, _)| tx.clone()).collect();
        Inbound::new(tx, self.sessions.clone())
    }
}

/// A handle to the engine; clones share it.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

/// The engine's background tasks, to await at shutdown.
pub struct EngineTasks {
    pub writer: tokio::task::JoinHandle<()>,
    pub shards: Vec<tokio::task::JoinHandle<()>>,
    /// Push notification jobs, when `push_queue > 0`: the server's webhook worker
    /// drains it.
    pub push: Option<flume::Receiver<PushJob>>,
}

/// The error every entry point answers once the engine's tasks have stopped.
pub(crate) fn shutting_down() -> ClientError {
    ClientError::new(ErrorCode::ShuttingDown, "the server is shutting down")
}

/// Pages [`Engine::unread_messages`] looks at, at most.
pub const UNREAD_SCAN_PAGES: usize = 50;

/// Conversations whose participants hear a user's status changes, at most.
const STATUS_PARTNER_CONVERSATIONS: usize = 1000;

impl Engine {
    /// Starts the shards, the history writer, the local bus and the presence task.
    /// Must run inside a tokio runtime.
    pub fn start(cfg: EngineConfig, stores: Stores) -> Result<(Engine, EngineTasks), String> {
        let queues = Queues::new(&cfg);
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new(queues.inbound()));
        Self::assemble(cfg, stores, queues, bus, None)
    }

    /// Starts a cluster member: joins the cluster over Redis (which claims the node id
    /// unless `cluster.node_id` names one), starts the Redis bus, then everything
    /// [`Engine::start`] starts, with ownership and forwarding on.
    pub async fn start_cluster(
        mut cfg: EngineConfig,
        stores: Stores,
        bus_cfg: RedisBusConfig,
        cluster_cfg: ClusterConfig,
    ) -> Result<(Engine, EngineTasks), String> {
        let client = bus_cfg
            .client()
            .map_err(|e| format!("cluster: redis: {e}"))?;
        let cluster = Cluster::join(client, cluster_cfg)
            .await
            .map_err(|e| format!("cluster: {e}"))?;
        cfg.node_id = cluster.node;
        let queues = Queues::new(&cfg);
        // Node messages wait here for the node task; a full queue drops (counted), and
        // the forwarding sender times out and retries.
        let (node_tx, node_rx) = flume::bounded(65_536);
        let link = ClusterLink {
            cluster: cluster.clone(),
            node_msgs: node_tx,
        };
        let bus = RedisBus::start(bus_cfg, queues.inbound(), Some(link))
            .await
            .map_err(|e| e.to_string())?;
        let forwarder = Arc::new(Forwarder::new(bus.clone(), cluster.node));
        let parts = ClusterParts {
            cluster: cluster.clone(),
            forwarder: forwarder.clone(),
            roster: None,
        };
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        let (engine, tasks) = Self::assemble(cfg, stores, queues, dyn_bus, Some(parts))?;
        tokio::spawn(crate::cluster::forward::node_task(
            Arc::downgrade(&engine.inner),
            forwarder,
            node_rx,
        ));
        tokio::spawn(crate::cluster::upkeep::upkeep(Arc::downgrade(
            &engine.inner,
        )));
        let writer = engine.inner.writer.clone();
        cluster.set_drain(Arc::new(move || {
            let (writer, bus) = (writer.clone(), bus.clone());
            Box::pin(async move {
                writer.barrier().await;
                bus.flushed().await;
            })
        }));
        Ok((engine, tasks))
    }

    fn assemble(
        mut cfg: EngineConfig,
        stores: Stores,
        queues: Queues,
        bus: Arc<dyn Bus>,
        mut cluster: Option<ClusterParts>,
    ) -> Result<(Engine, EngineTasks), String> {
        // The last shard id is reserved for non-message ids.
        cfg.shards = cfg.shards.clamp(1, MAX_SHARDS - 1);
        let moderator = Moderator::new(cfg.moderation.clone())?;
        let (writer, writer_task) = HistoryWriter::spawn(
            stores.history.clone(),
            cfg.writer_queue,
            cfg.writer_max_batch,
        );
        let Queues {
            commands,
            inbound,
            sessions,
        } = queues;
        if let Some(c) = &mut cluster {
            let every = c.cluster.presence_timing().every;
            c.roster = Some(crate::cluster::RedisRoster::start(
                c.cluster.clone(),
                bus.clone(),
                every,
                cfg.room_presence_max_members,
            ));
        }
        let presence: Arc<dyn Presence> = match &cluster {
            None => Arc::new(MemoryPresence::default()),
            Some(c) => RedisPresence::start(
                c.cluster.clone(),
                c.cluster.connection(),
                c.cluster.presence_timing(),
            ),
        };
        let (push_tx, push_rx) = if cfg.push_queue > 0 {
            let (tx, rx) = flume::bounded(cfg.push_queue);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let aux_ids = Arc::new(Mutex::new(IdGenerator::new(
            cfg.node_id,
            (MAX_SHARDS - 1) as u16,
            now_unix_ms(),
        )));
        let mut shards = Vec::with_capacity(cfg.shards);
        let mut shard_tasks = Vec::with_capacity(cfg.shards);
        for (index, (cmd, (_, inbound_rx))) in commands.into_iter().zip(inbound).enumerate() {
            let shard_cfg = ShardConfig {
                index,
                node_id: cfg.node_id,
                recovery_max_messages: cfg.recovery_max_messages,
                room_presence_max_members: cfg.room_presence_max_members,
                dedupe_window: cfg.dedupe_window,
                idle_positions: cfg.idle_positions,
                metrics_rooms: cfg.metrics_rooms.clone(),
            };
            let deps = ShardDeps {
                writer: writer.clone(),
                store: stores.history.clone(),
                aux_ids: aux_ids.clone(),
                sessions: sessions.clone(),
                presence: presence.clone(),
                bus: bus.clone(),
                push: push_tx.clone(),
                cluster: cluster.as_ref().map(|c| c.cluster.clone()),
                roster: cluster.as_ref().and_then(|c| c.roster.clone()),
            };
            shards.push(cmd.0.clone());
            shard_tasks.push(Shard::spawn(shard_cfg, cmd, inbound_rx, deps));
        }
        let inner = Inner {
            limits: RateLimits::new(&cfg.rate),
            cfg,
            shards,
            writer,
            stores,
            moderator,
            sessions,
            presence,
            bus,
            cluster,
            next_conn: AtomicU64::new(1),
            aux_ids,
            timers_stop: tokio::sync::watch::Sender::new(false),
        };
        let engine = Engine {
            inner: Arc::new(inner),
        };
        tokio::spawn(presence_task(
            Arc::downgrade(&engine.inner),
            engine.inner.presence.changes(),
        ));
        Ok((
            engine,
            EngineTasks {
                writer: writer_task,
                shards: shard_tasks,
                push: push_rx,
            },
        ))
    }

    /// The cluster this node is a member of (`None` on one node).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.as_ref().map(|c| &c.cluster)
    }

    /// Hands a publish to its room's sequencer: this node's shard, or (in a cluster,
    /// when another node owns the room) the owner, through the forwarder.
    pub(crate) async fn submit(&self, mut p: Publish) -> Result<(), ClientError> {
        if let Some(c) = &self.inner.cluster
            && let Route::Node(owner) = c.cluster.route(&p.room_id)
        {
            // Membership was checked by the session; the owner has no such connection.
            p.conn = None;
            c.forwarder.forward(owner, p);
            return Ok(());
        }
        self.shard(&p.room_id)
            .send_async(ShardCmd::Publish(Box::new(p)))
            .await
            .map_err(|_| shutting_down())
    }

    /// A fresh node-unique, time-ordered id (conversations, calls): same scheme as
    /// message ids, from the generator reserved for non-message ids.
    pub fn next_id(&self) -> u64 {
        self.inner.aux_ids.lock().next(now_unix_ms())
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// The shard that owns `room_id`.
    pub fn shard_of(&self, room_id: &str) -> usize {
        (room_hash(room_id) % self.inner.shards.len() as u64) as usize
    }

    pub(crate) fn shard(&self, room_id: &str) -> &flume::Sender<ShardCmd> {
        &self.inner.shards[self.shard_of(room_id)]
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Call signalling: start, accept, end, ring timeouts (see [`CallService`]).
    pub fn calls(&self) -> CallService<'_> {
        CallService { engine: self }
    }

    /// Publishes a message that did not come from a socket (REST, system). The ack
    /// target in `p` is answered once it is durable.
    pub async fn publish(&self, p: Publish) -> Result<(), ClientError> {
        self.submit(p).await
    }

    pub fn limits(&self) -> &RateLimits {
        &self.inner.limits
    }

    /// Takes one typing signal from `user_id`'s allowance: one budget for all of the
    /// user's connections and REST calls, cluster-wide in a cluster (this node's
    /// limiter on one node or while Redis does not answer, counted).
    pub async fn allow_typing(&self, user_id: &str) -> bool {
        if let Some(c) = &self.inner.cluster {
            match c
                .cluster
                .check_typing(user_id, self.inner.cfg.rate.typing_per_sec)
                .await
            {
                Some(allowed) => return allowed,
                None => metrics::counter!(m::RATE_LIMIT_FALLBACKS).increment(1),
            }
        }
        self.inner.limits.allow_typing(user_id)
    }

    /// The chat store (conversations, members, reactions).
    pub fn store(&self) -> &Arc<dyn ChatStore> {
        &self.inner.stores.chat
    }

    /// Every store this node uses.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// Sends a frame to every open session of `user_id`, wherever it is connected
    /// (through the bus, as a user envelope).
    pub fn notify_user(&self, user_id: &str, kind: &'static str, frame: &Bytes) {
        metrics::counter!(m::CHAT_EVENTS, "type" => kind).increment(1);
        self.inner.bus.publish(Envelope::User(UserFrame {
            user_id: user_id.to_owned(),
            frame: frame.clone(),
        }));
    }

    /// Sends a chat event frame to a conversation's participants (every open session)
    /// and to the room's joined members, in order with its messages, except to
    /// `except_user`'s sessions.
    pub async fn emit(
        &self,
        conv: &Conversation,
        kind: &'static str,
        frame: Bytes,
        except_user: Option<&str>,
    ) -> Result<(), ClientError> {
        metrics::counter!(m::CHAT_EVENTS, "type" => kind).increment(1);
        self.inner
            .bus
            .publish(Envelope::RoomEvent(Box::new(RoomEvent {
                room_id: conv.id.clone(),
                frame,
                audience: Some(conv.participant_ids.clone().into()),
                except_user: except_user.map(str::to_owned),
                entered: Instant::now(),
            })));
        Ok(())
    }

    /// Reads a page of a room's history (see [`crate::store::HistoryStore::page`]), timed.
    pub async fn history(
        &self,
        room_id: &str,
        query: PageQuery,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let started = Instant::now();
        let page = self.inner.stores.history.page(room_id, query).await;
        metrics::histogram!(m::STORE_READ_SECONDS).record(started.elapsed().as_secs_f64());
        page
    }

    /// One page of a room's history with whether more lies beyond it: reads `limit + 1`
    /// and drops the extra from the far end (the oldest, unless paging forward with only
    /// `after`).
    pub async fn history_page(&self, room_id: &str, query: PageQuery) -> Result<Page, StoreError> {
        let mut messages = self.history(room_id, query.one_more()).await?;
        let has_more = query.cut(&mut messages);
        Ok(Page { messages, has_more })
    }

    /// The oldest messages in `room_id` after `after` that are unread for `user_id`
    /// (from others, not deleted: the rule `ChatStore::count_unread` counts by), at most
    /// `max`, oldest first, and whether more remain. Bounded work: it walks at most
    /// [`UNREAD_SCAN_PAGES`] pages of `max` messages.
    pub async fn unread_messages(
        &self,
        room_id: &str,
        after: Option<MessageId>,
        user_id: &str,
        max: usize,
    ) -> Result<(Vec<ChatMessage>, bool), StoreError> {
        let mut messages = Vec::new();
        let mut cursor = after.unwrap_or(0);
        for _ in 0..UNREAD_SCAN_PAGES {
            let page = self
                .history_page(
                    room_id,
                    PageQuery {
                        before: None,
                        after: Some(cursor),
                        limit: max,
                    },
                )
                .await?;
            for m in page.messages {
                cursor = m.message_id;
                if m.user_id == user_id || m.deleted {
                    continue;
                }
                if messages.len() == max {
                    return Ok((messages, true));
                }
                messages.push(m);
            }
            if !page.has_more {
                return Ok((messages, false));
            }
        }
        Ok((messages, true))
    }

    /// The newest message id the store has for `(room, user, clientMsgId)`.
    pub async fn find_client_msg(
        &self,
        room_id: &str,
        user_id: &str,
        cid: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        self.inner
            .stores
            .history
            .find_client_msg(room_id, user_id, cid)
            .await
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Asks every open connection to close; returns how many were asked.
    pub fn close_all(&self, reason: Disconnect) -> usize {
        self.inner.sessions.close_all(reason)
    }

    /// Resolves once every message handed to the history writer so far is durable.
    pub async fn flush(&self) {
        self.inner.writer.barrier().await;
    }

    /// Ops waiting for the history writer.
    pub fn writer_queue_len(&self) -> usize {
        self.inner.writer.queued()
    }

    /// Users `user_id` shares a conversation with (bounded).
    pub async fn partners_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let convs = self.inner.stores.chat.user_conversations(user_id).await?;
        let mut partners: Vec<String> = convs
            .into_iter()
            .take(STATUS_PARTNER_CONVERSATIONS)
            .flat_map(|(c, _)| c.participant_ids)
            .filter(|p| p != user_id)
            .collect();
        partners.sort_unstable();
        partners.dedup();
        Ok(partners)
    }

    /// Whether `user_id`'s status is visible to `caller`: themselves, a conversation
    /// partner, or (over a socket) someone present in a room the caller's connection
    /// has joined. Everyone else gets the answer of an unknown user.
    pub async fn status_visible(
        &self,
        caller: &str,
        user_id: &str,
        rooms: &[String],
    ) -> Result<bool, StoreError> {
        if caller == user_id {
            return Ok(true);
        }
        if self.partners_of(caller).await?.iter().any(|p| p == user_id) {
            return Ok(true);
        }
        for room in rooms {
            if self.room_users(room).await.iter().any(|u| u == user_id) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A user's status as `caller` may see it (see [`Engine::status_visible`]).
    pub async fn user_status(
        &self,
        caller: &str,
        user_id: &str,
        rooms: &[String],
    ) -> Result<UserStatus, StoreError> {
        if self.status_visible(caller, user_id, rooms).await? {
            Ok(self.inner.presence.status(user_id))
        } else {
            Ok(UserStatus::default())
        }
    }

    /// The users present in a room: in a cluster, anywhere (the roster, falling back
    /// to this node's members if Redis does not answer in time); on one node, the
    /// members of its shard's room.
    pub async fn room_users(&self, room_id: &str) -> Vec<String> {
        if let Some(roster) = self.inner.cluster.as_ref().and_then(|c| c.roster.as_ref())
            && let Some(users) = roster.users(room_id, Duration::from_secs(1)).await
        {
            return users;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        let cmd = ShardCmd::RoomUsers {
            room_id: room_id.to_owned(),
            reply,
        };
        if self.shard(room_id).send_async(cmd).await.is_err() {
            return Vec::new();
        }
        let mut users = rx.await.unwrap_or_default();
        users.sort_unstable();
        users
    }

    /// Which of `users` are online.
    pub fn online_among(&self, users: &[String]) -> Vec<String> {
        users
            .iter()
            .filter(|u| self.inner.presence.is_online(u))
            .cloned()
            .collect()
    }

    /// The presence service (cluster-wide online and last seen).
    pub fn presence(&self) -> &Arc<dyn Presence> {
        &self.inner.presence
    }
}

/// A page of history (see [`Engine::history_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
}

/// Turns each presence change into a `user_status` frame for the user's conversation
/// partners (every session of theirs, through the bus). Ends with the engine.
async fn presence_task(
    inner: std::sync::Weak<Inner>,
    changes: flume::Receiver<crate::presence::PresenceChange>,
) {
    while let Ok(change) = changes.recv_async().await {
        let Some(inner) = inner.upgrade() else { return };
        let engine = Engine { inner };
        let partners = match engine.partners_of(&change.user_id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "presence: partner lookup failed");
                continue;
            }
        };
        let status = UserStatus {
            online: change.online,
            last_seen_ms: (!change.online).then_some(change.at_ms),
        };
        let frame = crate::protocol::encode_user_status(&change.user_id, status);
        for partner in partners {
            engine.inner.bus.publish(Envelope::User(UserFrame {
                user_id: partner,
                frame: frame.clone(),
            }));
        }
    }
}
