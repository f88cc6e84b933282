//! The message model: a chat message as delivered, stored and paged ([`ChatMessage`]),
//! its parts ([`MessageType`], [`Attachment`], [`ReactionCounts`]), and the serde helpers
//! that put 64-bit ids on the wire as decimal strings. The wire codec (`protocol`), the
//! stores and the shards all speak this model; none of them owns it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::MessageId;

/// What a message carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MessageType {
    #[default]
    Text,
    Image,
    File,
    /// Platform notices (admin sends without a sender, call summaries).
    System,
}

impl MessageType {
    pub fn is_text(&self) -> bool {
        *self == MessageType::Text
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::File => "file",
            Self::System => "system",
        }
    }
}

/// Metadata of a file the client uploaded elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attachment {
    /// `https://` (or `http://`) URL, at most 2048 bytes.
    pub url: String,
    /// `type/subtype`, e.g. `image/jpeg`.
    pub mime_type: String,
    /// Size in bytes, 1 to 100 MiB.
    pub size: u64,
    /// File name shown to users, 1-255 characters.
    pub name: String,
}

/// Reaction counts per reaction name, kept on the message.
pub type ReactionCounts = BTreeMap<String, u32>;

/// A chat message as delivered and as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    #[serde(serialize_with = "id_str", deserialize_with = "de_id")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub message_id: MessageId,
    /// The message's place in its room: 1, 2, 3, ... with no gaps, assigned by the
    /// room's one sequencer together with the id. A jump tells a receiver it missed
    /// something; 0 only on references (a deduplicated resend's ack) and on messages
    /// stored before `seq` existed.
    #[serde(default)]
    pub seq: u64,
    pub room_id: String,
    pub user_id: String,
    pub username: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_msg_id: Option<String>,
    /// True once the message is tombstoned: content is then empty.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub deleted: bool,
    /// `text` (the default, not written), `image`, `file` or `system`.
    #[serde(skip_serializing_if = "MessageType::is_text", default)]
    pub message_type: MessageType,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub attachments: Vec<Attachment>,
    /// Reaction counts by name; empty when none.
    #[serde(skip_serializing_if = "ReactionCounts::is_empty", default)]
    pub reactions: ReactionCounts,
    /// End-to-end encrypted content (Signal protocol): opaque to the server.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub encrypted: bool,
}

impl ChatMessage {
    /// A reference to an already published message, for answering a deduplicated
    /// resend: the ids and sender, no content.
    pub fn reference(
        message_id: MessageId,
        room_id: String,
        user_id: String,
        username: String,
        client_msg_id: Option<String>,
    ) -> Self {
        Self {
            message_id,
            seq: 0,
            room_id,
            user_id,
            username,
            content: String::new(),
            client_msg_id,
            deleted: false,
            message_type: MessageType::Text,
            attachments: Vec::new(),
            reactions: ReactionCounts::new(),
            encrypted: false,
        }
    }

    /// Server time in Unix milliseconds: the time encoded in the id, so it is never stored
    /// twice and always agrees with the order of ids.
    pub fn timestamp_ms(&self) -> u64 {
        crate::ids::unix_ms_of(self.message_id)
    }
}

/// Serialises a u64 id as a decimal string (ids exceed JavaScript's safe integers).
pub fn id_str<S: serde::Serializer>(id: &MessageId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// [`id_str`] for an optional id (`null` when absent).
pub fn opt_id_str<S: serde::Serializer>(id: &Option<MessageId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => id_str(id, s),
        None => s.serialize_none(),
    }
}

/// Accepts a message id as a decimal string or a non-negative JSON integer.
pub fn opt_message_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MessageId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw<'a> {
        Num(u64),
        #[serde(borrow)]
        Str(Cow<'a, str>),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Num(n)) => Ok(Some(n)),
        Some(Raw::Str(s)) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("a message id must be a decimal string")),
    }
}

/// [`opt_message_id`] for a required id.
pub fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<MessageId, D::Error> {
    opt_message_id(d)?.ok_or_else(|| serde::de::Error::custom("missing message id"))
}
