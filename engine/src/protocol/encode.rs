//! Server frames: every frame the server sends, encoded once into shared `Bytes`.

use bytes::Bytes;
use serde::Serialize;

use crate::error::ClientError;
use crate::ids::MessageId;
use crate::message::{ChatMessage, id_str, opt_id_str};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    msg: &'a ChatMessage,
    timestamp: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replay: bool,
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serialising these plain structs cannot fail (no maps with non-string keys, no
    // custom fallible serialisers), so an error would be a bug; fall back to a frame
    // that still tells the client something went wrong rather than panicking.
    match serde_json::to_vec(value) {
        Ok(v) => Bytes::from(v),
        Err(_) => {
            Bytes::from_static(br#"{"type":"error","code":"internal","message":"encode failed"}"#)
        }
    }
}

/// `{"type":"message", ...}`; `replay` marks frames sent during recovery.
pub fn encode_message(msg: &ChatMessage, replay: bool) -> Bytes {
    to_bytes(&MessageOut {
        kind: "message",
        msg,
        timestamp: crate::clock::rfc3339_ms(msg.timestamp_ms()),
        replay,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AckOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_msg_id: Option<&'a str>,
    #[serde(serialize_with = "id_str")]
    message_id: MessageId,
    room_id: &'a str,
    /// The message's `seq` (absent on a duplicate's ack when the original's is not known).
    #[serde(skip_serializing_if = "is_zero")]
    seq: u64,
    timestamp: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// `{"type":"ack", ...}`: sent to the sender once the message is durable.
pub fn encode_ack(msg: &ChatMessage, duplicate: bool) -> Bytes {
    to_bytes(&AckOut {
        kind: "ack",
        client_msg_id: msg.client_msg_id.as_deref(),
        message_id: msg.message_id,
        room_id: &msg.room_id,
        seq: msg.seq,
        timestamp: crate::clock::rfc3339_ms(msg.timestamp_ms()),
        duplicate,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_msg_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// `{"type":"error","code","message", ...}`.
pub fn encode_error(e: &ClientError) -> Bytes {
    to_bytes(&ErrorOut {
        kind: "error",
        code: e.code.as_str(),
        message: &e.message,
        room_id: e.room_id.as_deref(),
        client_msg_id: e.client_msg_id.as_deref(),
        retry_after_ms: e.retry_after_ms,
        field: e.field.as_deref(),
    })
}

#[derive(Serialize)]
struct EventOut<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// `{"type": kind, ...body}` for the chat domain's events (`read`, `message_deleted`,
/// `reaction`, `conversation_closed`, ...); `body` must serialise as an object.
pub fn encode_event<T: Serialize>(kind: &str, body: &T) -> Bytes {
    to_bytes(&EventOut { kind, body })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomJoinedOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room_id: &'a str,
    member_count: usize,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_id_str")]
    last_message_id: Option<MessageId>,
    /// The room's last `seq` as this node knows it (absent when it has not read it).
    #[serde(skip_serializing_if = "is_zero")]
    last_seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `{"type":"room_joined","roomId","memberCount"}`.
pub fn encode_room_joined(
    room_id: &str,
    member_count: usize,
    last_message_id: Option<MessageId>,
    last_seq: u64,
) -> Bytes {
    to_bytes(&RoomJoinedOut {
        kind: "room_joined",
        room_id,
        member_count,
        last_message_id,
        last_seq,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OnlineUsersOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    users: &'a [String],
}

/// `{"type":"online_users","roomId"?,"users":[...]}`: the answer to `get_online_users`.
pub fn encode_online_users(room_id: Option<&str>, users: &[String]) -> Bytes {
    to_bytes(&OnlineUsersOut {
        kind: "online_users",
        room_id,
        users,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserStatusOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
    online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
}

/// `{"type":"user_status","userId","online","lastSeen"?}`: the answer to
/// `get_user_status`, and the event a conversation partner's sessions get when the user
/// comes online or goes offline.
pub fn encode_user_status(user_id: &str, status: crate::presence::UserStatus) -> Bytes {
    to_bytes(&UserStatusOut {
        kind: "user_status",
        user_id,
        online: status.online,
        last_seen: status.last_seen_ms.map(crate::clock::rfc3339_ms),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomLeftOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room_id: &'a str,
}

/// `{"type":"room_left","roomId"}`.
pub fn encode_room_left(room_id: &str) -> Bytes {
    to_bytes(&RoomLeftOut {
        kind: "room_left",
        room_id,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PresenceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
    username: &'a str,
    room_id: &'a str,
    status: &'static str,
    member_count: usize,
}

/// `{"type":"presence","userId","status":"online"|"offline", ...}`.
pub fn encode_presence(
    user_id: &str,
    username: &str,
    room_id: &str,
    online: bool,
    member_count: usize,
) -> Bytes {
    to_bytes(&PresenceOut {
        kind: "presence",
        user_id,
        username,
        room_id,
        status: if online { "online" } else { "offline" },
        member_count,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TypingOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
    username: &'a str,
    room_id: &'a str,
    is_typing: bool,
}

/// `{"type":"typing_indicator","userId","roomId","isTyping"}`.
pub fn encode_typing(user_id: &str, username: &str, room_id: &str, is_typing: bool) -> Bytes {
    to_bytes(&TypingOut {
        kind: "typing_indicator",
        user_id,
        username,
        room_id,
        is_typing,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecoveredOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room_id: &'a str,
    #[serde(serialize_with = "id_str")]
    since: MessageId,
    count: usize,
    complete: bool,
}

/// `{"type":"recovered","roomId","since","count","complete"}`: ends a replay. `complete`
/// is false when the gap was larger than the replay limit and only its newest part was
/// sent (page history backwards from the first replayed id to fill the rest).
pub fn encode_recovered(room_id: &str, since: MessageId, count: usize, complete: bool) -> Bytes {
    to_bytes(&RecoveredOut {
        kind: "recovered",
        room_id,
        since,
        count,
        complete,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QuotaOut {
    #[serde(rename = "type")]
    kind: &'static str,
    limit: u32,
    remaining: u32,
    window_ms: u64,
    reset_ms: u64,
}

/// `{"type":"quota","limit","remaining","windowMs","resetMs"}`: the answer to
/// `get_quota`.
pub fn encode_quota(q: crate::ratelimit::Quota) -> Bytes {
    to_bytes(&QuotaOut {
        kind: "quota",
        limit: q.limit,
        remaining: q.remaining,
        window_ms: q.window_ms,
        reset_ms: q.reset_ms,
    })
}

/// `{"type":"pong"}`.
pub fn encode_pong() -> Bytes {
    Bytes::from_static(br#"{"type":"pong"}"#)
}
