//! A conversation's audience: its participants' sessions that have not joined the room
//! (they hear its messages and events without joining), and the push notification jobs
//! for participants who are offline.

use std::time::Instant;

use bytes::Bytes;

use super::room::Room;
use crate::ids::MessageId;
use crate::message::{ChatMessage, MessageType};
use crate::metrics as m;
use crate::outbox::Push;
use crate::sessions::SessionRegistry;

/// A push notification job: a participant of a conversation was offline when a message
/// arrived. The server posts it to the configured webhook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushJob {
    pub user_id: String,
    pub conversation_id: String,
    #[serde(serialize_with = "crate::message::id_str")]
    pub message_id: MessageId,
    pub sender_id: String,
    pub sender_name: String,
    pub message_type: MessageType,
    /// The first 100 characters of the content (empty for encrypted content).
    pub preview: String,
    pub encrypted: bool,
}

impl PushJob {
    /// The job for `msg`, addressed to `user_id`.
    pub(super) fn for_message(msg: &ChatMessage, user_id: &str) -> Self {
        PushJob {
            user_id: user_id.to_owned(),
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
}

/// Delivers `frame` to every session on this node of each `audience` user that is not a
/// member of `room` (members got it through the room, in order with their recovery),
/// except `except_user`'s. One session lookup per audience user.
pub(super) fn deliver_to_audience(
    sessions: &SessionRegistry,
    room: Option<&Room>,
    audience: &[String],
    frame: &Bytes,
    entered: Instant,
    except_user: Option<&str>,
) {
    for user in audience {
        if except_user == Some(user.as_str()) {
            continue;
        }
        for (conn, outbox) in sessions.sessions_of(user) {
            if !room.is_some_and(|r| r.members.contains_key(&conn))
                && outbox.push(frame.clone(), entered) == Push::Overflow
            {
                metrics::counter!(m::SLOW_CONSUMERS).increment(1);
            }
        }
    }
}
