//! The embedded on-disk backend (redb) of all four stores, the default for a single node.
//!
//! Why redb over fjall (measured in `benches/benches/store.rs`, figures in
//! docs/PERFORMANCE.md): fjall group-commits 64 messages about 1.6x faster, redb reads
//! a page about 1.6x faster. Appends are amortised by group commit and sit off the
//! deliver path; reads sit on request paths (history pages, recovery, the clientMsgId
//! lookup of every publish). redb's write transaction also gives the dedupe
//! check-then-insert atomically, and it runs no background compaction competing for
//! the cores.
//!
//! Layout (every table is defined here; one file per contract uses them):
//! - history: `messages[(room, id)] = json(ChatMessage)`, `client_ids[(room, user,
//!   clientMsgId)] = id`, `audit[id] = json(AuditEntry)`;
//! - chat: `message_rooms[id] = room`, `conversations[id] = json(Conversation)`,
//!   `members[(user, conv)] = json(MemberState)`, `direct[(a, b)] = conv` (one per pair),
//!   `activity[(last ms, conv)]` (open conversations by last activity),
//!   `reactions[(room, message, user)] = reaction`;
//! - calls: `calls[id] = json(Call)`, `live_calls[user] = call id` (the busy index);
//! - keys: `identity_keys[user]`, `signed_pre_keys[user]` (json), `pre_keys[(user, key
//!   id)] = public key`.
//!
//! Batching policy: the writer's whole batch is one write transaction (all its messages
//! and audit entries in one fsync), so every outcome of a batch is decided together.
//! Point lookups run inline; page reads and commits on tokio's blocking pool; write
//! transactions commit with `Durability::Immediate` (fsync).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{AppendOutcome, PageQuery, StoreError, WriteBatch, decode, encode};
use crate::chat::is_conversation;
use crate::ids::MessageId;
use crate::message::ChatMessage;
use chat::touch_conversation;

mod calls;
mod chat;
mod history;
mod keys;

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const CLIENT_IDS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("client_ids");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Message id -> room id (for the routes that name only a message).
const MESSAGE_ROOMS: TableDefinition<u64, &str> = TableDefinition::new("message_rooms");
const CONVERSATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conversations");
/// `(user, conversation)` -> json(MemberState): a user's conversations by prefix.
const MEMBERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("members");
/// `(smaller user id, larger user id)` -> the pair's direct conversation.
const DIRECT: TableDefinition<(&str, &str), &str> = TableDefinition::new("direct");
/// `(last activity ms, conversation)`: open conversations by last activity.
const ACTIVITY: TableDefinition<(u64, &str), ()> = TableDefinition::new("activity");
/// `(room, message id, user)` -> reaction.
const REACTIONS: TableDefinition<(&str, u64, &str), &str> = TableDefinition::new("reactions");

/// redb-backed [`HistoryStore`].
#[derive(Clone)]
pub struct EmbeddedStore {
    pub(super) db: Arc<Database>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file `history.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("history.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(MESSAGES)?;
        txn.open_table(CLIENT_IDS)?;
        txn.open_table(AUDIT)?;
        txn.open_table(MESSAGE_ROOMS)?;
        txn.open_table(CONVERSATIONS)?;
        txn.open_table(MEMBERS)?;
        txn.open_table(DIRECT)?;
        txn.open_table(ACTIVITY)?;
        txn.open_table(REACTIONS)?;
        txn.open_table(CALLS)?;
        txn.open_table(LIVE_CALLS)?;
        txn.open_table(IDENTITY_KEYS)?;
        txn.open_table(SIGNED_PRE_KEYS)?;
        txn.open_table(PRE_KEYS)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("blocking task failed: {e}")))?
    }

    fn append_sync(db: &Database, batch: &WriteBatch) -> Result<Vec<AppendOutcome>, StoreError> {
        let txn = write_txn(db)?;
        let mut outcomes = Vec::with_capacity(batch.messages.len());
        // Newest stored message per conversation, for its last activity.
        let mut newest: HashMap<&str, MessageId> = HashMap::new();
        {
            let mut messages = txn.open_table(MESSAGES)?;
            let mut client_ids = txn.open_table(CLIENT_IDS)?;
            let mut rooms = txn.open_table(MESSAGE_ROOMS)?;
            for m in &batch.messages {
                if let Some(cid) = &m.client_msg_id {
                    let key = (m.room_id.as_str(), m.user_id.as_str(), cid.as_str());
                    if let Some(existing) = client_ids.get(key)? {
                        outcomes.push(AppendOutcome::Duplicate(existing.value()));
                        continue;
                    }
                    client_ids.insert(key, m.message_id)?;
                }
                let key = (m.room_id.as_str(), m.message_id);
                if messages.get(key)?.is_some() {
                    outcomes.push(AppendOutcome::Duplicate(m.message_id));
                    continue;
                }
                messages.insert(key, encode(m)?.as_slice())?;
                rooms.insert(m.message_id, m.room_id.as_str())?;
                if is_conversation(&m.room_id) {
                    let n = newest.entry(m.room_id.as_str()).or_insert(0);
                    *n = (*n).max(m.message_id);
                }
                outcomes.push(AppendOutcome::Stored);
            }
            for (conv, id) in newest {
                touch_conversation(&txn, conv, id)?;
            }
            let mut audit = txn.open_table(AUDIT)?;
            for a in &batch.audit {
                audit.insert(a.id, encode(a)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(outcomes)
    }

    fn page_sync(db: &Database, room: &str, q: PageQuery) -> Result<Vec<ChatMessage>, StoreError> {
        let lo = q.after.map_or(0, |a| a.saturating_add(1));
        let hi = match q.before {
            Some(0) => return Ok(Vec::new()),
            Some(b) => b - 1,
            None => u64::MAX,
        };
        if lo > hi || q.limit == 0 {
            return Ok(Vec::new());
        }
        let txn = db.begin_read()?;
        let table = txn.open_table(MESSAGES)?;
        let range = table.range((room, lo)..=(room, hi))?;
        let mut out = Vec::with_capacity(q.limit.min(1024));
        if q.before.is_none() && q.after.is_some() {
            for item in range.take(q.limit) {
                let (_, v) = item?;
                out.push(decode(v.value())?);
            }
        } else {
            for item in range.rev().take(q.limit) {
                let (_, v) = item?;
                out.push(decode(v.value())?);
            }
            out.reverse();
        }
        Ok(out)
    }
}

const CALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("calls");
const LIVE_CALLS: TableDefinition<&str, &str> = TableDefinition::new("live_calls");
const IDENTITY_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("identity_keys");
const SIGNED_PRE_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signed_pre_keys");
const PRE_KEYS: TableDefinition<(&str, u32), &str> = TableDefinition::new("pre_keys");

/// redb's errors are backend errors: `?` converts them (the message is kept for the
/// log; clients only ever see `store_unavailable`).
macro_rules! backend_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::backend(e)
            }
        }
    )*};
}
backend_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    std::io::Error
);

fn write_txn(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HistoryStore;

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        super::super::conformance::run(&store).await;
        super::super::conformance::run_chat(&store).await;
        super::super::conformance::run_calls(&store).await;
        super::super::conformance::run_keys(&store).await;
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let msg = super::super::conformance::message("r", 42, "u", Some("c"));
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            let out = store
                .append(WriteBatch {
                    messages: vec![msg.clone()],
                    audit: vec![],
                })
                .await;
            assert_eq!(out.ok(), Some(vec![AppendOutcome::Stored]));
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get("r", 42).await.ok().flatten(), Some(msg));
        assert_eq!(
            store.find_client_msg("r", "u", "c").await.ok().flatten(),
            Some(42)
        );
    }
}
