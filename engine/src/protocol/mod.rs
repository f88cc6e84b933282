//! The JSON wire protocol (docs/PROTOCOL.md): parsing client frames and encoding server
//! frames. Server frames are encoded once into shared [`bytes::Bytes`] that every recipient's
//! outbox holds; nothing here knows about WebSocket framing.

use std::borrow::Cow;

use serde::Deserialize;

use crate::error::{ClientError, ErrorCode};
use crate::ids::MessageId;
use crate::message::opt_message_id;

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
    /// `getRemainingQuota()`: the caller's message allowance, answered with `quota`.
    GetQuota,
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
        "get_quota" => ClientFrame::GetQuota,
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

mod encode;

pub use encode::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ChatMessage;

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
