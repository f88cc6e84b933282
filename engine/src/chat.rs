//! The dating platform's chat domain (seed 000): private conversations with a fixed set
//! of participants, per-member state (archive, read marker), admin states (closed,
//! snoozed), message types and attachments, reactions, and the [`ChatStore`] trait that
//! persists them next to the history.
//!
//! A conversation is the engine's private room kind: its room id is its conversation id
//! (`conv_<snowflake>`), its messages go through the same shard, writer and history as a
//! room's, and its events reach every open session of every participant (joined or
//! not; see `shard.rs`). Only participants may read, send or join it.

use serde::{Deserialize, Serialize};

use crate::error::{ClientError, ErrorCode};
use crate::ids::MessageId;
use crate::message::{Attachment, MessageType};

/// Every conversation id starts with this; public room ids may not.
pub const CONVERSATION_PREFIX: &str = "conv_";
/// The sender id of platform notices (admin sends without a sender, call summaries).
pub const SYSTEM_SENDER: &str = "system";
/// Most participants in one conversation (the creator included).
pub const MAX_PARTICIPANTS: usize = 50;
/// The reactions a message accepts.
pub const REACTIONS: &[&str] = &["like", "love", "laugh", "wow", "sad", "angry"];
/// Most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 10;
/// Largest attachment size accepted in metadata (the file itself lives elsewhere).
pub const MAX_ATTACHMENT_BYTES: u64 = 100 * 1024 * 1024;

/// True for a conversation's room id.
pub fn is_conversation(room_id: &str) -> bool {
    room_id.starts_with(CONVERSATION_PREFIX)
}

/// The conversation id for a fresh snowflake.
pub fn conversation_id(id: u64) -> String {
    format!("{CONVERSATION_PREFIX}{id}")
}

fn invalid(field: &str, message: impl Into<String>) -> ClientError {
    ClientError::new(ErrorCode::InvalidField, message).on_field(field)
}

fn valid_mime(m: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match m.split_once('/') {
        Some((t, s)) => token(t) && token(s),
        None => false,
    }
}

/// Checks a message's type against its content and attachments: text needs content,
/// image and file need at least one attachment (images of `image/*` type), and at most
/// [`MAX_ATTACHMENTS`] attachments of valid metadata.
pub fn validate_attachments(
    kind: MessageType,
    content: &str,
    attachments: &[Attachment],
) -> Result<(), ClientError> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(invalid(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} attachments per message"),
        ));
    }
    for (i, a) in attachments.iter().enumerate() {
        let f = |name: &str| format!("attachments[{i}].{name}");
        let url_ok = (a.url.starts_with("https://") || a.url.starts_with("http://"))
            && a.url.len() > 8
            && a.url.len() <= 2048
            && !a.url.bytes().any(|b| b.is_ascii_control() || b == b' ');
        if !url_ok {
            return Err(invalid(
                &f("url"),
                "url must be an http(s) URL of at most 2048 characters",
            ));
        }
        if !valid_mime(&a.mime_type) {
            return Err(invalid(
                &f("mimeType"),
                "mimeType must look like type/subtype",
            ));
        }
        if a.size == 0 || a.size > MAX_ATTACHMENT_BYTES {
            return Err(invalid(
                &f("size"),
                format!("size must be 1-{MAX_ATTACHMENT_BYTES} bytes"),
            ));
        }
        let n = a.name.chars().count();
        if n == 0 || n > 255 || a.name.chars().any(char::is_control) {
            return Err(invalid(
                &f("name"),
                "name must be 1-255 characters, no control characters",
            ));
        }
        if kind == MessageType::Image && !a.mime_type.starts_with("image/") {
            return Err(invalid(
                &f("mimeType"),
                "an image message takes image/* attachments",
            ));
        }
    }
    match kind {
        MessageType::Image | MessageType::File if attachments.is_empty() => Err(invalid(
            "attachments",
            format!("a {} message needs at least one attachment", kind.as_str()),
        )),
        MessageType::Text | MessageType::System if content.trim().is_empty() => Err(
            ClientError::new(ErrorCode::EmptyMessage, "message must not be empty")
                .on_field("message"),
        ),
        _ => Ok(()),
    }
}

/// Checks a reaction: one of [`REACTIONS`] or a single emoji ([`crate::emoji`]).
pub fn validate_reaction(reaction: &str) -> Result<(), ClientError> {
    if REACTIONS.contains(&reaction) || crate::emoji::is_single_emoji(reaction) {
        Ok(())
    } else {
        Err(invalid(
            "reaction",
            format!(
                "reaction must be one of {} or a single emoji",
                REACTIONS.join(", ")
            ),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConversationKind {
    /// Exactly two participants; one per pair of users.
    Direct,
    Group,
}

/// An administrator closed the conversation: no further sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Closure {
    pub at_ms: u64,
    pub by: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An administrator paused the conversation until `until_ms`: members cannot send and
/// no push notifications go out; reads, receipts and admin sends still work. It is
/// active again at `until_ms` by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snooze {
    pub at_ms: u64,
    pub until_ms: u64,
    pub by: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub kind: ConversationKind,
    /// Sorted and unique; fixed at creation.
    pub participant_ids: Vec<String>,
    #[serde(default)]
    pub title: Option<String>,
    pub created_by: String,
    pub created_at_ms: u64,
    /// Creation time until the first message, then the newest message's time.
    pub last_activity_ms: u64,
    #[serde(
        default,
        serialize_with = "crate::message::opt_id_str",
        deserialize_with = "crate::message::opt_message_id"
    )]
    pub last_message_id: Option<MessageId>,
    #[serde(default)]
    pub closed: Option<Closure>,
    #[serde(default)]
    pub snoozed: Option<Snooze>,
}

/// How a conversation looks to one member (the `status` filter of the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConversationStatus {
    Active,
    Archived,
    Closed,
    Snoozed,
}

impl ConversationStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "archived" => Some(Self::Archived),
            "closed" => Some(Self::Closed),
            "snoozed" => Some(Self::Snoozed),
            _ => None,
        }
    }
}

impl Conversation {
    pub fn is_participant(&self, user_id: &str) -> bool {
        self.participant_ids
            .binary_search_by(|p| p.as_str().cmp(user_id))
            .is_ok()
    }

    /// The snooze in force at `now_ms`, if any.
    pub fn snoozed_at(&self, now_ms: u64) -> Option<&Snooze> {
        self.snoozed.as_ref().filter(|s| s.until_ms > now_ms)
    }

    /// The conversation-wide state: closed beats snoozed beats active.
    pub fn state_at(&self, now_ms: u64) -> ConversationStatus {
        if self.closed.is_some() {
            ConversationStatus::Closed
        } else if self.snoozed_at(now_ms).is_some() {
            ConversationStatus::Snoozed
        } else {
            ConversationStatus::Active
        }
    }

    /// What one member sees: the conversation-wide state, or `archived` if it is active
    /// and they archived it.
    pub fn status_for(&self, member: &MemberState, now_ms: u64) -> ConversationStatus {
        match self.state_at(now_ms) {
            ConversationStatus::Active if member.archived => ConversationStatus::Archived,
            s => s,
        }
    }

    /// May `user_id` send now? Admin sends pass a snooze, nothing passes a closure.
    pub fn check_send(&self, now_ms: u64, admin_send: bool) -> Result<(), ClientError> {
        if let Some(c) = &self.closed {
            let reason = c.reason.as_deref().unwrap_or("no reason given");
            return Err(ClientError::new(
                ErrorCode::ConversationClosed,
                format!("this conversation was closed by an administrator: {reason}"),
            )
            .in_room(&self.id));
        }
        if !admin_send && let Some(s) = self.snoozed_at(now_ms) {
            return Err(ClientError::new(
                ErrorCode::ConversationSnoozed,
                format!(
                    "this conversation is paused until {}",
                    crate::clock::rfc3339_ms(s.until_ms)
                ),
            )
            .in_room(&self.id)
            .retry_after(s.until_ms.saturating_sub(now_ms)));
        }
        Ok(())
    }
}

/// One member's own state in a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    #[serde(default)]
    pub archived: bool,
    /// The newest message this member has read; only moves forward.
    #[serde(
        default,
        serialize_with = "crate::message::opt_id_str",
        deserialize_with = "crate::message::opt_message_id"
    )]
    pub last_read_id: Option<MessageId>,
}

/// A change to one member's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberUpdate {
    Archive(bool),
    /// Move the read marker to this id if it is newer than the current one.
    ReadUpTo(MessageId),
}

/// An administrative change to a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationUpdate {
    Close(Closure),
    Snooze(Snooze),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(mime: &str) -> Attachment {
        Attachment {
            url: "https://cdn.example/a.jpg".into(),
            mime_type: mime.into(),
            size: 10,
            name: "a.jpg".into(),
        }
    }

    #[test]
    fn message_types_need_the_right_content() {
        assert!(validate_attachments(MessageType::Text, "hi", &[]).is_ok());
        assert!(validate_attachments(MessageType::Text, " ", &[]).is_err());
        assert!(validate_attachments(MessageType::Image, "", &[att("image/png")]).is_ok());
        let e = validate_attachments(MessageType::Image, "", &[att("application/pdf")]);
        assert_eq!(
            e.err().and_then(|e| e.field),
            Some("attachments[0].mimeType".into())
        );
        assert!(validate_attachments(MessageType::File, "x", &[]).is_err());
        let mut bad = att("image/png");
        bad.url = "ftp://x".into();
        assert_eq!(
            validate_attachments(MessageType::Image, "", &[bad])
                .err()
                .and_then(|e| e.field),
            Some("attachments[0].url".into())
        );
        let many = vec![att("image/png"); MAX_ATTACHMENTS + 1];
        assert!(validate_attachments(MessageType::Image, "", &many).is_err());
    }

    #[test]
    fn status_precedence() {
        let mut c = Conversation {
            id: "conv_1".into(),
            kind: ConversationKind::Direct,
            participant_ids: vec!["a".into(), "b".into()],
            title: None,
            created_by: "a".into(),
            created_at_ms: 0,
            last_activity_ms: 0,
            last_message_id: None,
            closed: None,
            snoozed: None,
        };
        let archived = MemberState {
            archived: true,
            last_read_id: None,
        };
        assert!(c.is_participant("a") && !c.is_participant("c"));
        assert_eq!(c.status_for(&archived, 5), ConversationStatus::Archived);
        c.snoozed = Some(Snooze {
            at_ms: 0,
            until_ms: 10,
            by: "admin".into(),
            reason: None,
        });
        assert_eq!(c.status_for(&archived, 5), ConversationStatus::Snoozed);
        assert!(c.check_send(5, false).is_err() && c.check_send(5, true).is_ok());
        assert_eq!(c.status_for(&archived, 10), ConversationStatus::Archived);
        assert!(c.check_send(10, false).is_ok());
        c.closed = Some(Closure {
            at_ms: 1,
            by: "admin".into(),
            reason: None,
        });
        assert_eq!(
            c.check_send(20, true).err().map(|e| e.code),
            Some(ErrorCode::ConversationClosed)
        );
    }
}
