//! The JSON wire protocol (docs/PROTOCOL.md): parsing client frames and encoding server
//! frames. Server frames are encoded once into shared [`Bytes`] that every recipient's
//! outbox holds; nothing here knows about WebSocket framing.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{ClientError, ErrorCode};
use crate::ids::MessageId;
use crate::message::{ChatMessage, id_str, opt_id_str, opt_message_id};

/// The longest accepted room id, in bytes.
pub const MAX_ROOM_ID_LEN: usize = 128;
/// The longest accepted `clientMsgId`, in bytes.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 64;

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Publish `content` to `room_id` (the connection's first room when omitted).
    Message {
        room_id: Option<String>,
        content: String,
        client_msg_id: Option<String>,
        /// The content is end-to-end encrypted (opaque to the server: not moderated).
        encrypted: bool,
    },
    /// Join a room; with `since`, replay every message after that id first.
    JoinRoom {
        room_id: String,
        since: Option<MessageId>,
    },
    LeaveRoom {
        room_id: String,
    },
    Typing {
        room_id: Option<String>,
        is_typing: bool,
    },
    /// Application-level keepalive; answered with `pong`.
    Ping,
    /// `getOnlineUsers(roomId?)`: who is online in a room (or conversation), or, without
    /// one, which of the caller's conversation partners are.
    GetOnlineUsers {
        room_id: Option<String>,
    },
    /// `getUserStatus(userId)`: online, and when last seen.
    GetUserStatus {
        user_id: String,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageIn {
    room_id: Option<String>,
    content: String,
    client_msg_id: Option<String>,
    #[serde(default)]
    encrypted: bool,
    // The client's own clock reading; accepted for compatibility, never trusted.
    #[allow(dead_code)]
    timestamp: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinIn {
    room_id: String,
    #[serde(default, deserialize_with = "opt_message_id")]
    since: Option<MessageId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaveIn {
    room_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnlineUsersIn {
    room_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserStatusIn {
    user_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypingIn {
    room_id: Option<String>,
    is_typing: bool,
}

fn field_error(e: serde_json::Error) -> ClientError {
    // serde_json's messages name the field and the expected type ("missing field
    // `roomId`", "invalid type: integer `5`, expected a string"); strip the position.
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
    ClientError::new(ErrorCode::InvalidField, text)
}

/// Parses one text frame. Unknown fields are ignored (the protocol grows by adding them).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, ClientError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ClientError::new(
                ErrorCode::InvalidJson,
                "a frame must be a JSON object with a string `type`",
            )
        } else {
            ClientError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}"))
        }
    })?;
    let frame = match env.kind.as_ref() {
        "message" => {
            let m: MessageIn = serde_json::from_str(text).map_err(field_error)?;
            ClientFrame::Message {
                room_id: m.room_id,
                content: m.content,
                client_msg_id: m.client_msg_id,
                encrypted: m.encrypted,
            }
        }
        "join_room" => {
            let j: JoinIn = serde_json::from_str(text).map_err(field_error)?;
            ClientFrame::JoinRoom {
                room_id: j.room_id,
                since: j.since,
            }
        }
        "leave_room" => {
            let l: LeaveIn = serde_json::from_str(text).map_err(field_error)?;
            ClientFrame::LeaveRoom { room_id: l.room_id }
        }
        "typing" => {
            let t: TypingIn = serde_json::from_str(text).map_err(field_error)?;
            ClientFrame::Typing {
                room_id: t.room_id,
                is_typing: t.is_typing,
            }
        }
        "ping" => ClientFrame::Ping,
        "get_online_users" => {
            let o: OnlineUsersIn = serde_json::from_str(text).map_err(field_error)?;
            if let Some(room) = &o.room_id {
                validate_room_id(room)?;
            }
            ClientFrame::GetOnlineUsers { room_id: o.room_id }
        }
        "get_user_status" => {
            let u: UserStatusIn = serde_json::from_str(text).map_err(field_error)?;
            validate_user_id(&u.user_id)?;
            ClientFrame::GetUserStatus { user_id: u.user_id }
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(ClientError::new(
                ErrorCode::UnknownType,
                format!("unknown frame type `{shown}`"),
            ));
        }
    };
    Ok(frame)
}

/// The longest accepted user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;

/// Checks a user id named by a client: 1..=128 printable ASCII bytes (the rule tokens'
/// subjects keep).
pub fn validate_user_id(user_id: &str) -> Result<(), ClientError> {
    if !user_id.is_empty()
        && user_id.len() <= MAX_USER_ID_LEN
        && user_id.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(ClientError::new(
            ErrorCode::InvalidField,
            format!("userId must be 1-{MAX_USER_ID_LEN} printable ASCII characters"),
        )
        .on_field("userId"))
    }
}

/// Checks a room id: 1..=128 bytes of `[A-Za-z0-9_.:@-]`.
pub fn validate_room_id(room_id: &str) -> Result<(), ClientError> {
    let ok = !room_id.is_empty()
        && room_id.len() <= MAX_ROOM_ID_LEN
        && room_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(ClientError::new(
            ErrorCode::InvalidRoom,
            format!("room ids are 1-{MAX_ROOM_ID_LEN} characters of A-Z a-z 0-9 _ - . : @"),
        ))
    }
}

/// Checks a `clientMsgId`: 1..=64 printable ASCII bytes.
pub fn validate_client_msg_id(id: &str) -> Result<(), ClientError> {
    if !id.is_empty()
        && id.len() <= MAX_CLIENT_MSG_ID_LEN
        && id.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(ClientError::new(
            ErrorCode::InvalidField,
            format!("clientMsgId must be 1-{MAX_CLIENT_MSG_ID_LEN} printable ASCII characters"),
        ))
    }
}

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
    /// The message's `seq` (absent for a duplicate's reference, which has none).
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

/// `{"type":"pong"}`.
pub fn encode_pong() -> Bytes {
    Bytes::from_static(br#"{"type":"pong"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        match parse_client_frame(text) {
            Err(e) => e.code,
            Ok(f) => panic!("parsed {f:?}"),
        }
    }

    #[test]
    fn parses_the_seed_protocol() {
        assert_eq!(
            parse_client_frame(r#"{"type":"message","roomId":"general","content":"Hello everyone!","timestamp":"2024-01-01T12:00:00Z"}"#).ok(),
            Some(ClientFrame::Message { room_id: Some("general".into()), content: "Hello everyone!".into(), client_msg_id: None, encrypted: false })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"join_room","roomId":"development"}"#).ok(),
            Some(ClientFrame::JoinRoom {
                room_id: "development".into(),
                since: None
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"join_room","roomId":"d","since":"123"}"#).ok(),
            Some(ClientFrame::JoinRoom {
                room_id: "d".into(),
                since: Some(123)
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"join_room","roomId":"d","since":124}"#).ok(),
            Some(ClientFrame::JoinRoom {
                room_id: "d".into(),
                since: Some(124)
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"leave_room","roomId":"general"}"#).ok(),
            Some(ClientFrame::LeaveRoom {
                room_id: "general".into()
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"typing","roomId":"general","isTyping":true,"extra":1}"#)
                .ok(),
            Some(ClientFrame::Typing {
                room_id: Some("general".into()),
                is_typing: true
            })
        );
    }

    #[test]
    fn bad_frames_get_typed_errors() {
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"content":"x"}"#), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"type":"explode"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"message","content":5}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(code(r#"{"type":"message"}"#), ErrorCode::InvalidField);
        assert_eq!(
            code(r#"{"type":"join_room","roomId":"a","since":"abc"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"typing","roomId":"a","isTyping":"yes"}"#),
            ErrorCode::InvalidField
        );
        let e = parse_client_frame(r#"{"type":"message"}"#)
            .err()
            .map(|e| e.message);
        assert_eq!(e.as_deref(), Some("missing field `content`"));
    }

    #[test]
    fn room_ids_are_validated() {
        assert!(validate_room_id("general").is_ok());
        assert!(validate_room_id("team:dev-1_a.b@x").is_ok());
        assert!(validate_room_id("").is_err());
        assert!(validate_room_id("has space").is_err());
        assert!(validate_room_id(&"a".repeat(129)).is_err());
    }

    #[test]
    fn messages_encode_with_string_ids_and_rfc3339_time() {
        let m = ChatMessage {
            message_id: crate::ids::first_id_at(1_704_110_400_000) + 5,
            room_id: "general".into(),
            user_id: "u1".into(),
            username: "john \"doe\"".into(),
            content: "hi".into(),
            client_msg_id: Some("c1".into()),
            ..ChatMessage::reference(0, String::new(), String::new(), String::new(), None)
        };
        let v: serde_json::Value =
            serde_json::from_slice(&encode_message(&m, false)).unwrap_or_default();
        assert_eq!(v["type"], "message");
        assert_eq!(v["messageId"], m.message_id.to_string());
        assert_eq!(v["username"], "john \"doe\"");
        assert_eq!(v["timestamp"], "2024-01-01T12:00:00.000Z");
        assert_eq!(v["clientMsgId"], "c1");
        assert!(v.get("replay").is_none());
        let ack: serde_json::Value =
            serde_json::from_slice(&encode_ack(&m, true)).unwrap_or_default();
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["duplicate"], true);
    }
}
