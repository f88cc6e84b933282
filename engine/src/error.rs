//! The engine's client-facing error codes: one stable `code` string per failure a client
//! can cause or observe, with the human message written next to where it is raised.
//! The server maps these to HTTP statuses in one place (`roomcast_server::error`);
//! WebSocket close codes come from [`crate::disconnect`].

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The string form (`as_str`) is the contract;
/// never rename a variant's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not a JSON object with a string `type`.
    InvalidJson,
    /// The frame's `type` is not one the server handles.
    UnknownType,
    /// A field is missing, has the wrong type, or an invalid value.
    InvalidField,
    /// A room id is empty, too long or uses characters outside `[A-Za-z0-9_.:@-]`.
    InvalidRoom,
    /// The connection has not joined the room it sends to.
    NotMember,
    /// The connection is already in the maximum number of rooms.
    TooManyRooms,
    /// The user already has the maximum number of open connections.
    TooManyConnections,
    /// Message content is longer than `MAX_MESSAGE_LENGTH` characters.
    MessageTooLong,
    /// Message content is empty.
    EmptyMessage,
    /// Moderation rejected the content.
    MessageBlocked,
    /// The sender exceeded its message rate; `retryAfterMs` says when to try again.
    RateLimited,
    /// The server is momentarily overloaded (a queue is full); retry later.
    Overloaded,
    /// History storage failed; the message was not acknowledged and may be retried with
    /// the same `clientMsgId`.
    StoreUnavailable,
    /// The server is shutting down.
    ShuttingDown,
    /// In a cluster: this node is cut off from Redis (it hears no other node) and
    /// takes no new connections until it is back; connect to another node.
    CutOff,
    /// In a cluster: the room's owner could not be reached, or the room is moving
    /// between nodes. Nothing was stored; retry with the same `clientMsgId`.
    Unavailable,
    /// No such conversation, or the caller is not one of its participants (the two
    /// are indistinguishable on purpose).
    ConversationNotFound,
    /// No such message, or it is in a conversation the caller is not part of.
    MessageNotFound,
    /// An admin lookup named a user the service knows nothing about.
    UserNotFound,
    /// An administrator closed the conversation; nothing more can be sent to it.
    ConversationClosed,
    /// An administrator paused the conversation; `retryAfterMs` says until when.
    ConversationSnoozed,
    /// The caller may see the resource but not do this to it (e.g. delete another
    /// member's message).
    Forbidden,
    /// The caller or the callee is already in a call.
    Busy,
    /// No such call, or the caller is not one of its parties.
    CallNotFound,
    /// The call is not in a state that allows this (accept after end, double accept).
    CallStateConflict,
    /// The video provider is not configured on this server.
    VideoUnavailable,
    /// No such key for that user (or no conversation shared with them).
    KeyNotFound,
    /// The user has no one-time pre-key left: fall back to the signed pre-key.
    NoPreKeysLeft,
    /// The upload would take the user over the stored one-time pre-key cap.
    TooManyPreKeys,
    /// Any unexpected internal failure. Details are logged, never sent.
    Internal,
}

impl ErrorCode {
    /// The stable wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidField => "invalid_field",
            Self::InvalidRoom => "invalid_room",
            Self::NotMember => "not_member",
            Self::TooManyRooms => "too_many_rooms",
            Self::TooManyConnections => "too_many_connections",
            Self::MessageTooLong => "message_too_long",
            Self::EmptyMessage => "empty_message",
            Self::MessageBlocked => "message_blocked",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::StoreUnavailable => "store_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::CutOff => "cut_off",
            Self::Unavailable => "unavailable",
            Self::ConversationNotFound => "conversation_not_found",
            Self::MessageNotFound => "message_not_found",
            Self::UserNotFound => "user_not_found",
            Self::ConversationClosed => "conversation_closed",
            Self::ConversationSnoozed => "conversation_snoozed",
            Self::Forbidden => "forbidden",
            Self::Busy => "busy",
            Self::CallNotFound => "call_not_found",
            Self::CallStateConflict => "call_state_conflict",
            Self::VideoUnavailable => "video_unavailable",
            Self::KeyNotFound => "key_not_found",
            Self::NoPreKeysLeft => "no_prekeys_left",
            Self::TooManyPreKeys => "too_many_prekeys",
            Self::Internal => "internal",
        }
    }
}

/// A client-facing error: a stable code, a human message, and optional context that the
/// error frame carries (the offending room, the client's message id, a retry delay).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{code:?}: {message}")]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: String,
    pub room_id: Option<String>,
    pub client_msg_id: Option<String>,
    pub retry_after_ms: Option<u64>,
    /// The request field at fault, for validation errors.
    pub field: Option<String>,
}

impl ClientError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            room_id: None,
            client_msg_id: None,
            retry_after_ms: None,
            field: None,
        }
    }

    pub fn on_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    pub fn in_room(mut self, room_id: &str) -> Self {
        self.room_id = Some(room_id.to_owned());
        self
    }

    pub fn for_client_msg(mut self, client_msg_id: Option<&str>) -> Self {
        self.client_msg_id = client_msg_id.map(str::to_owned);
        self
    }

    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
}
