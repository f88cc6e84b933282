//! The history contract: [`HistoryStore`] and the types it speaks (a [`WriteBatch`] of
//! messages and audit entries, a per-message [`AppendOutcome`], a [`PageQuery`]).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::MessageId;
use crate::message::ChatMessage;

/// A moderation (or, later, administrative) action, kept in the durable audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Time-ordered, unique id (same scheme as message ids); a decimal string on the wire.
    #[serde(
        serialize_with = "crate::message::id_str",
        deserialize_with = "crate::message::de_id"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: u64,
    pub at_ms: u64,
    /// `masked`, `rejected`, ...
    pub action: String,
    pub user_id: String,
    pub room_id: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        serialize_with = "crate::message::opt_id_str",
        deserialize_with = "crate::message::opt_message_id"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub message_id: Option<MessageId>,
    /// Human-readable detail (e.g. how many blocked words matched). Never the content.
    pub detail: String,
}

/// What one call to [`HistoryStore::append`] writes: the messages (and moderation audit
/// entries) the writer took in one go. How it is written (one transaction, concurrent
/// per-partition writes) is the backend's batching policy, not part of the contract.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub messages: Vec<ChatMessage>,
    pub audit: Vec<AuditEntry>,
}

/// The fate of one message of a [`WriteBatch`], in batch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Durable.
    Stored,
    /// A message from the same user in the same room with the same `clientMsgId` (or the
    /// same id) was already stored under this id; nothing was written for this one.
    Duplicate(MessageId),
    /// Not stored (a write of this message failed); the others' outcomes stand. The
    /// writer retries it alone.
    Failed,
}

/// Which page of a room's history to read. Bounds are exclusive message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// Only ids strictly below this.
    pub before: Option<MessageId>,
    /// Only ids strictly above this.
    pub after: Option<MessageId>,
    pub limit: usize,
}

impl PageQuery {
    /// The same query reading one message more than `limit`, so that [`PageQuery::cut`]
    /// can tell whether more lie beyond the page.
    pub fn one_more(self) -> PageQuery {
        PageQuery {
            limit: self.limit + 1,
            ..self
        }
    }

    /// Cuts what [`PageQuery::one_more`] read down to `limit`, dropping the extra from the
    /// far end of the walk (the oldest, unless paging forward with only `after`).
    /// Returns whether there was more.
    pub fn cut(&self, messages: &mut Vec<ChatMessage>) -> bool {
        let more = messages.len() > self.limit;
        if more {
            if self.after.is_some() && self.before.is_none() {
                messages.truncate(self.limit);
            } else {
                messages.drain(..messages.len() - self.limit);
            }
        }
        more
    }
}

/// Durable message history, one implementation per backend.
///
/// Contract (checked by [`crate::store::conformance::run`]); every clause holds for a
/// store without multi-partition transactions:
/// - `append` reports one outcome per message, in batch order. `Stored` and
///   `Duplicate` are durable answers: that message survives a crash (process kill, or
///   power loss per the backend's sync semantics; for a replicated store, the write
///   reached the configured consistency level). `Failed` means that message was not
///   stored. `Err` means no outcome is known for any message of the batch.
/// - Appends are idempotent, so a caller may retry a batch, or any part of it, after
///   `Err` or `Failed`: a message whose id is already stored, or whose
///   `(room, user, clientMsgId)` is, is not stored again; its outcome is
///   `Duplicate(original id)`. Within one batch the first of two such messages wins.
///   The index behind this is written with the message and needs no transaction across
///   partitions: `clientMsgId` uniqueness is owned by the room's sequencer (the shard
///   that admits the room's messages: its dedupe window, and the lookup before
///   admission), which handles a room's publishes one at a time; the store's index is
///   what answers a resend after a restart. A backend need not use a lightweight
///   transaction per message for it.
/// - Audit entries of a batch are durable once `append` returned `Ok`.
/// - `page` returns messages in ascending id order. With `before` set (alone or with
///   `after`) it returns the *newest* `limit` messages in the range; with only `after`
///   it returns the *oldest* `limit` messages after it; with neither, the newest `limit`.
///   Tombstoned messages are included (with `deleted = true` and empty content) so that
///   pages stay contiguous. Each message keeps the `seq` it was appended with.
/// - `tombstone` is idempotent and keeps the id, `seq`, room, sender and time.
/// - Reads see every message whose `append` outcome was `Stored`.
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// A short backend name for logs and metrics (`embedded`, `scylla`).
    fn backend(&self) -> &'static str;

    /// How long after a failed (timed-out) write the write may still be applied by the
    /// backend. The writer reads a message that failed for good again after this long
    /// before it calls it not stored: a write that lands late must not become a `seq`
    /// that receivers skipped and a resend then acknowledges. Zero for a backend whose
    /// failures are final.
    fn settles_within(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    async fn append(&self, batch: WriteBatch) -> Result<Vec<AppendOutcome>, StoreError>;

    async fn page(&self, room_id: &str, query: PageQuery) -> Result<Vec<ChatMessage>, StoreError>;

    async fn get(&self, room_id: &str, id: MessageId) -> Result<Option<ChatMessage>, StoreError>;

    /// Removes the content of a message, keeping its place. `Ok(false)` if there is no
    /// such message.
    async fn tombstone(&self, room_id: &str, id: MessageId) -> Result<bool, StoreError>;

    /// The id under which `(room, user, clientMsgId)` was stored, if it was.
    async fn find_client_msg(
        &self,
        room_id: &str,
        user_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageId>, StoreError>;

    /// Audit entries with id above `after`, oldest first, at most `limit`.
    async fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(ids: &[u64]) -> Vec<ChatMessage> {
        ids.iter()
            .map(|&id| ChatMessage::reference(id, "r".into(), "u".into(), "u".into(), None))
            .collect()
    }

    #[test]
    fn cut_drops_the_far_end_of_the_walk() {
        let back = PageQuery {
            before: Some(10),
            after: None,
            limit: 2,
        };
        let mut m = msgs(&[5, 6, 7]);
        assert!(back.cut(&mut m));
        assert_eq!(m.iter().map(|m| m.message_id).collect::<Vec<_>>(), [6, 7]);
        let forward = PageQuery {
            before: None,
            after: Some(1),
            limit: 2,
        };
        let mut m = msgs(&[2, 3, 4]);
        assert!(forward.cut(&mut m));
        assert_eq!(m.iter().map(|m| m.message_id).collect::<Vec<_>>(), [2, 3]);
        let mut m = msgs(&[2, 3]);
        assert!(!forward.cut(&mut m));
        assert_eq!(forward.one_more().limit, 3);
    }
}
