//! The [`Engine`]: the shard router and the node-wide services (history writer,
//! presence, rate limits, moderation, connection registry) behind one cheap handle.
//! The server creates one at start-up and a [`Session`] per connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::chat::{Attachment, ChatStore, Conversation, MessageType, validate_attachments};
use crate::clock::now_unix_ms;
use crate::disconnect::Disconnect;
use crate::error::{ClientError, ErrorCode};
use crate::history::AuditEntry;
use crate::history::writer::HistoryWriter;
use crate::history::writer::{AckTo, Acked};
use crate::history::{HistoryStore, PageQuery, StoreError};
use crate::ids::{IdGenerator, MAX_SHARDS, MessageId};
use crate::metrics as m;
use crate::moderation::Verdict;
use crate::moderation::{ModerationConfig, Moderator};
use crate::outbox::Outbox;
use crate::presence::Presence;
use crate::protocol::ChatMessage;
use crate::ratelimit::{RateLimitConfig, RateLimits};
use crate::session::Session;
use crate::shard::{ConnId, Publish, PushJob, Shard, ShardCmd, ShardConfig, ShardDeps, UserInfo};

/// A message from outside a socket: see [`Engine::send`].
#[derive(Debug)]
pub struct SendRequest {
    pub conversation: Conversation,
    pub sender: Arc<UserInfo>,
    pub content: String,
    pub message_type: MessageType,
    pub attachments: Vec<Attachment>,
    pub client_msg_id: Option<String>,
    /// An administrator's send: passes a snooze (never a closure) and the per-user
    /// message rate limit (moderation still applies).
    pub admin: bool,
    /// End-to-end encrypted content: not moderated, at most `MAX_ENCRYPTED_BYTES`.
    pub encrypted: bool,
}

/// Largest end-to-end encrypted content (ciphertext is longer than its plaintext, and
/// `MAX_MESSAGE_LENGTH` counts plaintext characters).
pub const MAX_ENCRYPTED_BYTES: usize = 16 * 1024;

/// Which of [`Engine::prepare`]'s checks apply to a message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checks {
    /// Empty content is fine (a message of attachments).
    pub allow_empty: bool,
    /// The sender's message rate limit (off for admin sends).
    pub rate_limited: bool,
    /// Moderation (off for end-to-end encrypted content).
    pub moderated: bool,
}

/// The outcome of [`Engine::prepare`].
pub(crate) enum Prepared {
    /// Go ahead with this (possibly masked) content and moderation audit.
    Fresh {
        content: String,
        audit: Option<(&'static str, String)>,
    },
    /// Already stored under this message.
    Duplicate(ChatMessage),
}

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
    /// Push notification jobs queued for the webhook before new ones are dropped; 0
    /// turns push notifications off.
    pub push_queue: usize,
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
            push_queue: 0,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: EngineConfig,
    pub(crate) shards: Vec<flume::Sender<ShardCmd>>,
    pub(crate) writer: HistoryWriter,
    pub(crate) store: Arc<dyn ChatStore>,
    pub(crate) limits: RateLimits,
    pub(crate) moderator: Moderator,
    pub(crate) presence: Arc<Presence>,
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
    /// Push notification jobs, when `push_queue > 0`: the server's webhook worker
    /// drains it.
    pub push: Option<flume::Receiver<PushJob>>,
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
        store: Arc<dyn ChatStore>,
    ) -> Result<(Engine, EngineTasks), String> {
        // The last shard id is reserved for audit-log ids.
        cfg.shards = cfg.shards.clamp(1, MAX_SHARDS - 1);
        let moderator = Moderator::new(cfg.moderation.clone())?;
        let history: Arc<dyn HistoryStore> = store.clone();
        let (writer, writer_task) =
            HistoryWriter::spawn(history.clone(), cfg.writer_queue, cfg.writer_max_batch);
        let presence = Arc::new(Presence::default());
        let (push_tx, push_rx) = if cfg.push_queue > 0 {
            let (tx, rx) = flume::bounded(cfg.push_queue);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
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
            let deps = ShardDeps {
                writer: writer.clone(),
                store: history.clone(),
                audit_ids: audit_ids.clone(),
                presence: presence.clone(),
                push: push_tx.clone(),
            };
            let (tx, task) = Shard::spawn(shard_cfg, cfg.shard_queue, deps);
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
            presence,
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
                push: push_rx,
            },
        ))
    }

    /// A fresh node-unique, time-ordered id (conversations, calls): same scheme as
    /// message ids, from the generator reserved for non-message ids.
    pub fn next_id(&self) -> u64 {
        self.inner.audit_ids.lock().next(now_unix_ms())
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
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.inner.cfg.outbox_max_bytes));
        if self
            .inner
            .presence
            .connect(&user.user_id, max, id, outbox.clone())
            .is_err()
        {
            return Err(ClientError::new(
                ErrorCode::TooManyConnections,
                format!("a user may hold at most {max} connections"),
            ));
        }
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

    /// The store: history and the chat domain.
    pub fn store(&self) -> &Arc<dyn ChatStore> {
        &self.inner.store
    }

    /// Checks a message before it goes to a shard, the same for every entry point:
    /// the sender's rate limit, moderation (or, for encrypted content, only its size),
    /// and whether the store already holds this `clientMsgId` (a resend after a
    /// restart). `checks` says which apply.
    pub(crate) async fn prepare(
        &self,
        user: &UserInfo,
        room_id: &str,
        content: String,
        client_msg_id: Option<&str>,
        checks: Checks,
    ) -> Result<Prepared, ClientError> {
        let Checks {
            allow_empty,
            rate_limited,
            moderated,
        } = checks;
        let with_ctx = |e: ClientError| e.in_room(room_id).for_client_msg(client_msg_id);
        if rate_limited && let Err(wait_ms) = self.inner.limits.check_message(&user.user_id) {
            metrics::counter!(m::RATE_LIMITED, "limit" => "messages").increment(1);
            tracing::debug!(user_id = %user.user_id, wait_ms, "message rate limit exceeded");
            return Err(with_ctx(
                ClientError::new(ErrorCode::RateLimited, "too many messages; slow down")
                    .retry_after(wait_ms),
            ));
        }
        let (content, audit) = if !moderated {
            // End-to-end encrypted: opaque, so only its size and presence are checked.
            if content.is_empty() && !allow_empty {
                return Err(with_ctx(
                    ClientError::new(ErrorCode::EmptyMessage, "message must not be empty")
                        .on_field("message"),
                ));
            }
            if content.len() > MAX_ENCRYPTED_BYTES {
                return Err(with_ctx(ClientError::new(
                    ErrorCode::MessageTooLong,
                    format!("encrypted content is at most {MAX_ENCRYPTED_BYTES} bytes"),
                )));
            }
            (content, None)
        } else if allow_empty && content.trim().is_empty() {
            (content, None)
        } else {
            match self.inner.moderator.check(&content) {
                Ok(Verdict::Pass(_)) => (content, None),
                Ok(Verdict::Masked { content, words }) => {
                    metrics::counter!(m::MODERATION_ACTIONS, "action" => "masked").increment(1);
                    (
                        content,
                        Some(("masked", format!("{words} blocked word(s) masked"))),
                    )
                }
                Err(e) => {
                    if e.code == ErrorCode::MessageBlocked {
                        metrics::counter!(m::MODERATION_ACTIONS, "action" => "rejected")
                            .increment(1);
                        self.audit_rejection(&user.user_id, room_id).await;
                    }
                    return Err(with_ctx(e));
                }
            }
        };
        if let Some(cid) = client_msg_id {
            match self.find_client_msg(room_id, &user.user_id, cid).await {
                Ok(Some(original)) => {
                    metrics::counter!(m::MESSAGES_DEDUPLICATED).increment(1);
                    return Ok(Prepared::Duplicate(ChatMessage::reference(
                        original,
                        room_id.to_owned(),
                        user.user_id.clone(),
                        user.username.clone(),
                        Some(cid.to_owned()),
                    )));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "clientMsgId lookup failed");
                    return Err(with_ctx(ClientError::new(
                        ErrorCode::StoreUnavailable,
                        "history is unavailable; retry",
                    )));
                }
            }
        }
        Ok(Prepared::Fresh { content, audit })
    }

    async fn audit_rejection(&self, user_id: &str, room_id: &str) {
        let id = self.inner.audit_ids.lock().next(now_unix_ms());
        let entry = AuditEntry {
            id,
            at_ms: crate::ids::unix_ms_of(id),
            action: "rejected".into(),
            user_id: user_id.to_owned(),
            room_id: room_id.to_owned(),
            message_id: None,
            detail: "blocked words".into(),
        };
        self.inner.writer.audit(entry).await;
    }

    /// Sends a message to a conversation on behalf of `req.sender` (REST, admin and
    /// system sends) through the same checks and shard as a socket's message, and
    /// returns once it is durable. The caller has established that the sender may
    /// post to `req.conversation` (a participant, or an administrator).
    pub async fn send(&self, req: SendRequest) -> Result<Acked, ClientError> {
        let conv = &req.conversation;
        validate_attachments(req.message_type, &req.content, &req.attachments)?;
        if let Some(cid) = req.client_msg_id.as_deref() {
            crate::protocol::validate_client_msg_id(cid)?;
        }
        let now = now_unix_ms();
        conv.check_send(now, req.admin)?;
        let allow_empty = !req.attachments.is_empty();
        let content = match self
            .prepare(
                &req.sender,
                &conv.id,
                req.content,
                req.client_msg_id.as_deref(),
                Checks {
                    allow_empty,
                    rate_limited: !req.admin,
                    moderated: !req.encrypted,
                },
            )
            .await?
        {
            Prepared::Duplicate(message) => {
                return Ok(Acked {
                    message,
                    duplicate: true,
                });
            }
            Prepared::Fresh { content, audit } => (content, audit),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let publish = Publish {
            client_msg_id: req.client_msg_id,
            audit: content.1,
            message_type: req.message_type,
            attachments: req.attachments,
            audience: Some(conv.participant_ids.clone().into()),
            notify_offline: conv.snoozed_at(now).is_none(),
            encrypted: req.encrypted,
            ..Publish::text(conv.id.clone(), req.sender, content.0, AckTo::Reply(tx))
        };
        self.publish(publish).await?;
        rx.await
            .map_err(|_| ClientError::new(ErrorCode::ShuttingDown, "the server is shutting down"))?
    }

    /// Sends a frame to every open session of `user_id` on this node (call signalling,
    /// key directory notices); returns how many sessions got it.
    pub fn notify_user(&self, user_id: &str, kind: &'static str, frame: &bytes::Bytes) -> usize {
        metrics::counter!(m::CHAT_EVENTS, "type" => kind).increment(1);
        let now = std::time::Instant::now();
        let sessions = self.inner.presence.sessions_of(user_id);
        for (_, outbox) in &sessions {
            if outbox.push(frame.clone(), now) == crate::outbox::Push::Overflow {
                metrics::counter!(m::SLOW_CONSUMERS).increment(1);
            }
        }
        sessions.len()
    }

    /// Sends a chat event frame to a conversation's participants (every open session)
    /// and to the room's joined members, in order with its messages, except to
    /// `except_user`'s sessions.
    pub async fn emit(
        &self,
        conv: &Conversation,
        kind: &'static str,
        frame: bytes::Bytes,
        except_user: Option<&str>,
    ) -> Result<(), ClientError> {
        metrics::counter!(m::CHAT_EVENTS, "type" => kind).increment(1);
        self.shard(&conv.id)
            .send_async(ShardCmd::Event {
                room_id: conv.id.clone(),
                frame,
                audience: conv.participant_ids.clone().into(),
                except_user: except_user.map(str::to_owned),
            })
            .await
            .map_err(|_| ClientError::new(ErrorCode::ShuttingDown, "the server is shutting down"))
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
