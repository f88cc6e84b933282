//! A [`Session`]: one connection's view of the engine. The server's reader task owns it
//! and feeds it decoded text frames; it validates, authorises (membership), rate-limits
//! and moderates on the reader's task, then hands commands to the owning shards. Errors
//! go back to the same connection as `error` frames; the connection stays open.
//!
//! Dropping a session leaves its rooms (members see `presence` offline) and releases
//! its connection slot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use crate::chat::{Conversation, is_conversation};
use crate::clock::now_unix_ms;
use crate::cluster::ConnCheck;
use crate::engine::{Engine, shutting_down};
use crate::error::{ClientError, ErrorCode};
use crate::ids::{ConnId, MessageId};
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::protocol::{self, ClientFrame};
use crate::publish::{Checks, Prepared};
use crate::shard::{Join, Leave, Publish, ShardCmd, Typing};
use crate::store::writer::{AckTo, Acked};
use crate::user::UserInfo;

/// One connection's state. Not `Clone`: exactly one per connection.
pub struct Session {
    engine: Engine,
    id: ConnId,
    user: Arc<UserInfo>,
    outbox: Arc<Outbox>,
    rooms: HashSet<String>,
    /// The room `message`/`typing` frames without `roomId` go to: the first joined.
    default_room: Option<String>,
    /// Counted in the cluster-wide connection count (uncounted when Redis did not
    /// answer at open), so the close takes it away again.
    counted: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user", &self.user.user_id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens a session for an authenticated user on this node: registers its outbox
    /// with the node's sessions, and tells presence when it is the user's first here.
    /// Fails when the user already holds the maximum number of connections: on this
    /// node, and in a cluster across all nodes (one Redis call; while Redis does not
    /// answer, only this node's count applies).
    pub async fn open(engine: &Engine, user: UserInfo) -> Result<Session, ClientError> {
        let inner = &engine.inner;
        let max = inner.cfg.max_connections_per_user;
        let too_many = || {
            ClientError::new(
                ErrorCode::TooManyConnections,
                format!("a user may hold at most {max} connections"),
            )
        };
        let id = engine.next_conn_id();
        let outbox = Arc::new(Outbox::new(inner.cfg.outbox_max_bytes));
        let first = inner
            .sessions
            .open(&user.user_id, max, id, outbox.clone())
            .map_err(|_| too_many())?;
        let mut counted = false;
        if let Some(c) = &inner.cluster {
            match c.cluster.open_connection(&user.user_id, max).await {
                ConnCheck::Admitted(_) => counted = true,
                ConnCheck::AtLimit => {
                    inner.sessions.close(&user.user_id, id);
                    return Err(too_many());
                }
                ConnCheck::Unknown => {
                    metrics::counter!(m::RATE_LIMIT_FALLBACKS).increment(1);
                }
            }
        }
        if first {
            inner.bus.subscribe_user(&user.user_id);
            inner.presence.node_user_connected(&user.user_id);
        }
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        Ok(Self {
            engine: engine.clone(),
            id,
            user: Arc::new(user),
            outbox,
            rooms: HashSet::new(),
            default_room: None,
            counted,
        })
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn user(&self) -> &UserInfo {
        &self.user
    }

    /// The outbox the connection's writer task drains.
    /// Resolves once the bus hears this user's channel (at once on one node; in a
    /// cluster, when Redis confirmed the subscription, bounded by 2 s so a Redis
    /// outage does not hold the upgrade: recovery covers what is missed then).
    pub async fn subscribed(&self) {
        let bus = self.engine.inner.bus.clone();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), bus.synced()).await;
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn rooms(&self) -> &HashSet<String> {
        &self.rooms
    }

    /// Sends an `error` frame to this connection and counts it.
    pub fn send_error(&self, e: &ClientError) {
        metrics::counter!(m::CLIENT_ERRORS, "code" => e.code.as_str()).increment(1);
        self.outbox.push(protocol::encode_error(e), Instant::now());
    }

    /// Handles one text frame. Every failure becomes an error frame.
    pub async fn handle_text(&mut self, text: &str, received_at: Instant) {
        let result = match protocol::parse_client_frame(text) {
            Err(e) => Err(e),
            Ok(ClientFrame::Message {
                room_id,
                content,
                client_msg_id,
                encrypted,
            }) => {
                self.publish(room_id, content, client_msg_id, encrypted, received_at)
                    .await
            }
            Ok(ClientFrame::JoinRoom { room_id, since }) => self.join(&room_id, since).await,
            Ok(ClientFrame::LeaveRoom { room_id }) => self.leave(&room_id).await,
            Ok(ClientFrame::Typing { room_id, is_typing }) => self.typing(room_id, is_typing).await,
            Ok(ClientFrame::Ping) => {
                self.outbox.push(protocol::encode_pong(), Instant::now());
                Ok(())
            }
            Ok(ClientFrame::GetOnlineUsers { room_id }) => self.online_users(room_id).await,
            Ok(ClientFrame::GetUserStatus { user_id }) => self.user_status(&user_id).await,
            Ok(ClientFrame::GetQuota) => {
                let quota = self.engine.message_quota(&self.user.user_id).await;
                self.outbox
                    .push(protocol::encode_quota(quota), Instant::now());
                Ok(())
            }
        };
        if let Err(e) = result {
            self.send_error(&e);
        }
    }

    /// Joins `room_id`; with `since`, replays what was missed after that id first.
    pub async fn join(
        &mut self,
        room_id: &str,
        since: Option<MessageId>,
    ) -> Result<(), ClientError> {
        protocol::validate_room_id(room_id)?;
        let max = self.engine.config().max_rooms_per_connection;
        if !self.rooms.contains(room_id) && self.rooms.len() >= max {
            return Err(ClientError::new(
                ErrorCode::TooManyRooms,
                format!("a connection may join at most {max} rooms"),
            )
            .in_room(room_id));
        }
        let audience = if is_conversation(room_id) && !self.rooms.contains(room_id) {
            Some(Arc::from(self.conversation(room_id).await?.participant_ids))
        } else {
            None
        };
        let cmd = ShardCmd::Join(Join {
            room_id: room_id.to_owned(),
            conn: self.id,
            user: self.user.clone(),
            outbox: self.outbox.clone(),
            since,
            audience,
        });
        self.engine
            .shard(room_id)
            .send_async(cmd)
            .await
            .map_err(|_| shutting_down())?;
        if self.rooms.insert(room_id.to_owned()) && self.default_room.is_none() {
            self.default_room = Some(room_id.to_owned());
        }
        Ok(())
    }

    pub async fn leave(&mut self, room_id: &str) -> Result<(), ClientError> {
        if !self.rooms.remove(room_id) {
            return Err(ClientError::new(ErrorCode::NotMember, "not in that room").in_room(room_id));
        }
        if self.default_room.as_deref() == Some(room_id) {
            self.default_room = self.rooms.iter().next().cloned();
        }
        let cmd = ShardCmd::Leave(Leave {
            room_id: room_id.to_owned(),
            conn: self.id,
            notify: true,
        });
        self.engine
            .shard(room_id)
            .send_async(cmd)
            .await
            .map_err(|_| shutting_down())
    }

    fn target_room(&self, room_id: Option<String>) -> Result<String, ClientError> {
        let room = match room_id {
            Some(r) => r,
            None => self.default_room.clone().ok_or_else(|| {
                ClientError::new(ErrorCode::InvalidField, "missing field `roomId`")
            })?,
        };
        if !self.rooms.contains(&room) {
            protocol::validate_room_id(&room)?;
            return Err(ClientError::new(
                ErrorCode::NotMember,
                "join the room before sending to it",
            )
            .in_room(&room));
        }
        Ok(room)
    }

    async fn publish(
        &mut self,
        room_id: Option<String>,
        content: String,
        client_msg_id: Option<String>,
        encrypted: bool,
        received_at: Instant,
    ) -> Result<(), ClientError> {
        let cid = client_msg_id.as_deref();
        let room_id = self
            .target_room(room_id)
            .map_err(|e| e.for_client_msg(cid))?;
        if let Some(cid) = cid {
            protocol::validate_client_msg_id(cid).map_err(|e| e.in_room(&room_id))?;
        }
        // A conversation: its participants get the message on every session, and a
        // closed or snoozed one refuses it.
        let (audience, notify_offline) = if is_conversation(&room_id) {
            let conv = self.conversation(&room_id).await?;
            conv.check_send(now_unix_ms(), false)
                .map_err(|e| e.for_client_msg(cid))?;
            (Some(Arc::from(conv.participant_ids)), true)
        } else {
            (None, false)
        };
        let (content, audit) = match self
            .engine
            .prepare(
                &self.user,
                &room_id,
                content,
                cid,
                Checks {
                    allow_empty: false,
                    rate_limited: true,
                    moderated: !encrypted,
                },
            )
            .await?
        {
            Prepared::Fresh { content, audit } => (content, audit),
            Prepared::Duplicate(message) => {
                AckTo::Outbox(self.outbox.clone()).send(Ok(Acked {
                    message,
                    duplicate: true,
                }));
                return Ok(());
            }
        };
        let publish = Publish {
            conn: Some(self.id),
            client_msg_id,
            received_at,
            audit,
            audience,
            notify_offline,
            encrypted,
            ..Publish::text(
                room_id.clone(),
                self.user.clone(),
                content,
                AckTo::Outbox(self.outbox.clone()),
            )
        };
        self.engine.submit(publish).await
    }

    /// `getOnlineUsers`: with a room this connection has joined (or a conversation of
    /// the user's), who of it is online; without, which conversation partners are.
    async fn online_users(&mut self, room_id: Option<String>) -> Result<(), ClientError> {
        let users = match &room_id {
            Some(room) if is_conversation(room) => {
                let conv = self.conversation(room).await?;
                self.engine.online_among(&conv.participant_ids)
            }
            Some(room) => {
                if !self.rooms.contains(room) {
                    protocol::validate_room_id(room)?;
                    return Err(
                        ClientError::new(ErrorCode::NotMember, "not in that room").in_room(room)
                    );
                }
                self.engine.room_users(room).await
            }
            None => {
                let partners = self
                    .engine
                    .partners_of(&self.user.user_id)
                    .await
                    .map_err(|e| unavailable(&e))?;
                self.engine.online_among(&partners)
            }
        };
        self.outbox.push(
            protocol::encode_online_users(room_id.as_deref(), &users),
            Instant::now(),
        );
        Ok(())
    }

    /// `getUserStatus`: the status of a user who shares a room or conversation with
    /// this one; anyone else reads as an unknown user (offline, never seen).
    async fn user_status(&mut self, user_id: &str) -> Result<(), ClientError> {
        let rooms: Vec<String> = self.rooms.iter().cloned().collect();
        let status = self
            .engine
            .user_status(&self.user.user_id, user_id, &rooms)
            .await
            .map_err(|e| unavailable(&e))?;
        self.outbox.push(
            protocol::encode_user_status(user_id, status),
            Instant::now(),
        );
        Ok(())
    }

    /// The conversation `room_id`, if this session's user is a participant.
    async fn conversation(&self, room_id: &str) -> Result<Conversation, ClientError> {
        match self
            .engine
            .store()
            .membership(room_id, &self.user.user_id)
            .await
        {
            Ok(Some((conv, _))) => Ok(conv),
            Ok(None) => Err(ClientError::new(
                ErrorCode::ConversationNotFound,
                "no such conversation",
            )
            .in_room(room_id)),
            Err(e) => {
                tracing::warn!(error = %e, "conversation lookup failed");
                Err(ClientError::new(
                    ErrorCode::StoreUnavailable,
                    "conversations are unavailable; retry",
                )
                .in_room(room_id))
            }
        }
    }

    async fn typing(
        &mut self,
        room_id: Option<String>,
        is_typing: bool,
    ) -> Result<(), ClientError> {
        let room_id = self.target_room(room_id)?;
        if !self.engine.allow_typing(&self.user.user_id).await {
            metrics::counter!(m::TYPING_DROPPED).increment(1);
            return Ok(());
        }
        let cmd = ShardCmd::Typing(Typing {
            room_id: room_id.clone(),
            conn: self.id,
            is_typing,
        });
        self.engine
            .shard(&room_id)
            .send_async(cmd)
            .await
            .map_err(|_| shutting_down())
    }
}

fn unavailable(e: &crate::store::StoreError) -> ClientError {
    tracing::warn!(error = %e, "presence lookup failed");
    ClientError::new(
        ErrorCode::StoreUnavailable,
        "presence is unavailable; retry",
    )
}

impl Drop for Session {
    fn drop(&mut self) {
        for room_id in self.rooms.drain() {
            let shard = self.engine.shard(&room_id).clone();
            let cmd = ShardCmd::Leave(Leave {
                room_id,
                conn: self.id,
                notify: false,
            });
            if let Err(flume::TrySendError::Full(cmd)) = shard.try_send(cmd) {
                // The shard is busy: leave from a task rather than block a destructor.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = shard.send_async(cmd).await;
                    });
                }
            }
        }
        let inner = &self.engine.inner;
        if inner.sessions.close(&self.user.user_id, self.id) {
            inner.bus.unsubscribe_user(&self.user.user_id);
            inner.presence.node_user_disconnected(&self.user.user_id);
        }
        if self.counted
            && let Some(c) = &inner.cluster
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (cluster, user) = (c.cluster.clone(), self.user.user_id.clone());
            rt.spawn(async move { cluster.close_connection(&user).await });
        }
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    }
}
