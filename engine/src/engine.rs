//! The [`Engine`]: the shard router and the node-wide services (history writer,
//! presence, rate limits, moderation, connection registry) behind one cheap handle.
//! The server creates one at start-up and a [`Session`] per connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::clock::now_unix_ms;
use crate::disconnect::Disconnect;
use crate::error::{ClientError, ErrorCode};
use crate::history::writer::HistoryWriter;
use crate::history::{HistoryStore, PageQuery, StoreError};
use crate::ids::{IdGenerator, MAX_SHARDS, MessageId};
use crate::metrics as m;
use crate::moderation::{ModerationConfig, Moderator};
use crate::outbox::Outbox;
use crate::presence::Presence;
use crate::protocol::ChatMessage;
use crate::ratelimit::{RateLimitConfig, RateLimits};
use crate::session::Session;
use crate::shard::{ConnId, Publish, Shard, ShardCmd, ShardConfig, UserInfo};

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
    /// Recent `clientMsgId`s remembered per room for in-memory dedupe.
    pub dedupe_window: usize,
    pub writer_queue: usize,
    pub writer_max_batch: usize,
    pub rate: RateLimitConfig,
    pub moderation: ModerationConfig,
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
            dedupe_window: 1024,
            writer_queue: 131_072,
            writer_max_batch: 4096,
            rate: RateLimitConfig::default(),
            moderation: ModerationConfig::default(),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: EngineConfig,
    pub(crate) shards: Vec<flume::Sender<ShardCmd>>,
    pub(crate) writer: HistoryWriter,
    pub(crate) store: Arc<dyn HistoryStore>,
    pub(crate) limits: RateLimits,
    pub(crate) moderator: Moderator,
    pub(crate) presence: Presence,
    /// Open connections' outboxes, for closing them all at shutdown.
    pub(crate) conns: Mutex<HashMap<ConnId, Arc<Outbox>>>,
    next_conn: AtomicU64,
    pub(crate) audit_ids: Arc<Mutex<IdGenerator>>,
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
}

/// FNV-1a: stable across builds and platforms (unlike `DefaultHasher`), so a room maps
/// to the same shard on every node and every version.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Engine {
    /// Starts the shards and the history writer. Must run inside a tokio runtime.
    pub fn start(
        mut cfg: EngineConfig,
        store: Arc<dyn HistoryStore>,
    ) -> Result<(Engine, EngineTasks), String> {
        // The last shard id is reserved for audit-log ids.
        cfg.shards = cfg.shards.clamp(1, MAX_SHARDS - 1);
        let moderator = Moderator::new(cfg.moderation.clone())?;
        let (writer, writer_task) =
            HistoryWriter::spawn(store.clone(), cfg.writer_queue, cfg.writer_max_batch);
        let audit_ids = Arc::new(Mutex::new(IdGenerator::new(
            cfg.node_id,
            (MAX_SHARDS - 1) as u16,
            now_unix_ms(),
        )));
        let mut shards = Vec::with_capacity(cfg.shards);
        let mut shard_tasks = Vec::with_capacity(cfg.shards);
        for index in 0..cfg.shards {
            let shard_cfg = ShardConfig {
                index,
                node_id: cfg.node_id,
                recovery_max_messages: cfg.recovery_max_messages,
                dedupe_window: cfg.dedupe_window,
            };
            let (tx, task) = Shard::spawn(
                shard_cfg,
                cfg.shard_queue,
                writer.clone(),
                store.clone(),
                audit_ids.clone(),
            );
            shards.push(tx);
            shard_tasks.push(task);
        }
        let inner = Inner {
            limits: RateLimits::new(&cfg.rate),
            cfg,
            shards,
            writer,
            store,
            moderator,
            presence: Presence::default(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            audit_ids,
        };
        Ok((
            Engine {
                inner: Arc::new(inner),
            },
            EngineTasks {
                writer: writer_task,
                shards: shard_tasks,
            },
        ))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// The shard that owns `room_id`.
    pub fn shard_of(&self, room_id: &str) -> usize {
        (stable_hash(room_id) % self.inner.shards.len() as u64) as usize
    }

    pub(crate) fn shard(&self, room_id: &str) -> &flume::Sender<ShardCmd> {
        &self.inner.shards[self.shard_of(room_id)]
    }

    /// Opens a session for an authenticated user. Fails when the user already has the
    /// maximum number of connections.
    pub fn connect(&self, user: UserInfo) -> Result<Session, ClientError> {
        let max = self.inner.cfg.max_connections_per_user;
        if self.inner.presence.connect(&user.user_id, max).is_err() {
            return Err(ClientError::new(
                ErrorCode::TooManyConnections,
                format!("a user may hold at most {max} connections"),
            ));
        }
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.inner.cfg.outbox_max_bytes));
        self.inner.conns.lock().insert(id, outbox.clone());
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        Ok(Session::new(self.clone(), id, Arc::new(user), outbox))
    }

    /// Publishes a message that did not come from a socket (REST, system). The ack
    /// target in `p` is answered once it is durable.
    pub async fn publish(&self, p: Publish) -> Result<(), ClientError> {
        let shard = self.shard(&p.room_id);
        shard
            .send_async(ShardCmd::Publish(Box::new(p)))
            .await
            .map_err(|_| ClientError::new(ErrorCode::ShuttingDown, "the server is shutting down"))
    }

    pub fn limits(&self) -> &RateLimits {
        &self.inner.limits
    }

    pub fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    pub fn store(&self) -> &Arc<dyn HistoryStore> {
        &self.inner.store
    }

    /// Reads a page of a room's history (see [`HistoryStore::page`]), timed.
    pub async fn history(
        &self,
        room_id: &str,
        query: PageQuery,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let started = std::time::Instant::now();
        let page = self.inner.store.page(room_id, query).await;
        metrics::histogram!(m::STORE_READ_SECONDS).record(started.elapsed().as_secs_f64());
        page
    }

    /// The newest message id the store has for `(room, user, clientMsgId)`.
    pub async fn find_client_msg(
        &self,
        room_id: &str,
        user_id: &str,
        cid: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        self.inner
            .store
            .find_client_msg(room_id, user_id, cid)
            .await
    }

    /// Open connections on this node.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().len()
    }

    /// Asks every open connection to close; returns how many were asked.
    pub fn close_all(&self, reason: Disconnect) -> usize {
        let conns: Vec<Arc<Outbox>> = self.inner.conns.lock().values().cloned().collect();
        conns.iter().filter(|o| o.close(reason)).count()
    }

    /// Resolves once every message handed to the history writer so far is durable.
    pub async fn flush(&self) {
        self.inner.writer.barrier().await;
    }

    /// Ops waiting for the history writer.
    pub fn writer_queue_len(&self) -> usize {
        self.inner.writer.queued()
    }
}
