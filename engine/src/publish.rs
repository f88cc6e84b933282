//! Admission checks shared by every entry point of a message (socket, REST, admin,
//! system): the sender's rate limit, moderation (or, for encrypted content, only its
//! size), and the store lookup of a `clientMsgId` (a resend after a restart). Then the
//! message goes to its room's shard, whose `admit` sequences it. Also the REST send,
//! which waits for the ack.

use std::sync::Arc;

use crate::chat::{Conversation, validate_attachments};
use crate::clock::now_unix_ms;
use crate::engine::{Engine, shutting_down};
use crate::error::{ClientError, ErrorCode};
use crate::message::{Attachment, ChatMessage, MessageType};
use crate::metrics as m;
use crate::moderation::Verdict;
use crate::ratelimit::Quota;
use crate::shard::Publish;
use crate::store::AuditEntry;
use crate::store::writer::{AckTo, Acked};
use crate::user::UserInfo;

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

impl Engine {
    /// The sender's message allowance: cluster-wide in a cluster (one budget whichever
    /// nodes the user's sockets are on), this node's limiter on one node or while Redis
    /// does not answer (counted).
    async fn check_message_rate(&self, user_id: &str) -> Result<(), u64> {
        if let Some(c) = &self.inner.cluster {
            let rate = &self.inner.cfg.rate;
            match c
                .cluster
                .check_message_rate(user_id, rate.max_messages, rate.window)
                .await
            {
                Some(r) => return r,
                None => {
                    metrics::counter!(m::RATE_LIMIT_FALLBACKS).increment(1);
                }
            }
        }
        self.inner.limits.check_message(user_id)
    }

    /// `user_id`'s message allowance now, without taking from it (seed 004's
    /// `getRemainingQuota`): the cluster's in a cluster, this node's otherwise or
    /// while Redis does not answer.
    pub async fn message_quota(&self, user_id: &str) -> Quota {
        let rate = &self.inner.cfg.rate;
        if let Some(c) = &self.inner.cluster
            && let Some(q) = c
                .cluster
                .message_quota(user_id, rate.max_messages, rate.window)
                .await
        {
            return q;
        }
        self.inner.limits.message_quota(user_id)
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
        if rate_limited && let Err(wait_ms) = self.check_message_rate(&user.user_id).await {
            metrics::counter!(m::RATE_LIMITED, "limit" => "messages").increment(1);
            if let Some(suppressed) = crate::log_throttle::RATE_LIMITS.admit() {
                let rate = &self.inner.cfg.rate;
                tracing::warn!(
                    user_id = %user.user_id,
                    count = rate.max_messages,
                    window_ms = rate.window.as_millis() as u64,
                    retry_after_ms = wait_ms,
                    suppressed,
                    "rate limit exceeded"
                );
            }
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
                    // The original's seq for the ack (a read on the rare resend path;
                    // without it the ack carries no seq).
                    let seq = match self.inner.stores.history.get(room_id, original).await {
                        Ok(Some(m)) => m.seq,
                        _ => 0,
                    };
                    return Ok(Prepared::Duplicate(ChatMessage {
                        seq,
                        ..ChatMessage::reference(
                            original,
                            room_id.to_owned(),
                            user.user_id.clone(),
                            user.username.clone(),
                            Some(cid.to_owned()),
                        )
                    }));
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
        let id = self.inner.aux_ids.lock().next(now_unix_ms());
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
        let (content, audit) = content;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let publish = Publish {
            client_msg_id: req.client_msg_id,
            audit,
            message_type: req.message_type,
            attachments: req.attachments,
            audience: Some(conv.participant_ids.clone().into()),
            notify_offline: conv.snoozed_at(now).is_none(),
            encrypted: req.encrypted,
            ..Publish::text(conv.id.clone(), req.sender, content, AckTo::Reply(tx))
        };
        self.publish(publish).await?;
        rx.await.map_err(|_| shutting_down())?
    }
}
