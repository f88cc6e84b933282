//! The embedded on-disk history backend (redb), the default for a single node.
//!
//! Why redb over fjall (measured in `benches/benches/store.rs`, figures in
//! docs/PERFORMANCE.md): fjall group-commits 64 messages about 1.6x faster, redb reads
//! a page about 1.6x faster. Appends are amortised by group commit and sit off the
//! deliver path; reads sit on request paths (history pages, recovery, the clientMsgId
//! lookup of every publish). redb's write transaction also gives the dedupe
//! check-then-insert atomically, and it runs no background compaction competing for
//! the cores.
//!
//! Layout: `messages[(room, id)] = json(ChatMessage)`, `client_ids[(room, user,
//! clientMsgId)] = id`, `audit[id] = json(AuditEntry)`. Every call runs on tokio's
//! blocking pool; write transactions commit with `Durability::Immediate` (fsync).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{AppendOutcome, AuditEntry, HistoryStore, PageQuery, StoreError, WriteBatch};
use crate::ids::MessageId;
use crate::protocol::ChatMessage;

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const CLIENT_IDS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("client_ids");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// redb-backed [`HistoryStore`].
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl EmbeddedStore {
    /// Opens (or creates) the database file `history.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        let db = Database::create(dir.join("history.redb")).map_err(StoreError::backend)?;
        let txn = db.begin_write().map_err(StoreError::backend)?;
        txn.open_table(MESSAGES).map_err(StoreError::backend)?;
        txn.open_table(CLIENT_IDS).map_err(StoreError::backend)?;
        txn.open_table(AUDIT).map_err(StoreError::backend)?;
        txn.commit().map_err(StoreError::backend)?;
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
        let mut txn = db.begin_write().map_err(StoreError::backend)?;
        txn.set_durability(Durability::Immediate)
            .map_err(StoreError::backend)?;
        let mut outcomes = Vec::with_capacity(batch.messages.len());
        {
            let mut messages = txn.open_table(MESSAGES).map_err(StoreError::backend)?;
            let mut client_ids = txn.open_table(CLIENT_IDS).map_err(StoreError::backend)?;
            for m in &batch.messages {
                if let Some(cid) = &m.client_msg_id {
                    let key = (m.room_id.as_str(), m.user_id.as_str(), cid.as_str());
                    if let Some(existing) = client_ids.get(key).map_err(StoreError::backend)? {
                        outcomes.push(AppendOutcome::Duplicate(existing.value()));
                        continue;
                    }
                    client_ids
                        .insert(key, m.message_id)
                        .map_err(StoreError::backend)?;
                }
                let key = (m.room_id.as_str(), m.message_id);
                if messages.get(key).map_err(StoreError::backend)?.is_some() {
                    outcomes.push(AppendOutcome::Duplicate(m.message_id));
                    continue;
                }
                messages
                    .insert(key, encode(m)?.as_slice())
                    .map_err(StoreError::backend)?;
                outcomes.push(AppendOutcome::Stored);
            }
            let mut audit = txn.open_table(AUDIT).map_err(StoreError::backend)?;
            for a in &batch.audit {
                audit
                    .insert(a.id, encode(a)?.as_slice())
                    .map_err(StoreError::backend)?;
            }
        }
        txn.commit().map_err(StoreError::backend)?;
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
        let txn = db.begin_read().map_err(StoreError::backend)?;
        let table = txn.open_table(MESSAGES).map_err(StoreError::backend)?;
        let range = table
            .range((room, lo)..=(room, hi))
            .map_err(StoreError::backend)?;
        let mut out = Vec::with_capacity(q.limit.min(1024));
        if q.before.is_none() && q.after.is_some() {
            for item in range.take(q.limit) {
                let (_, v) = item.map_err(StoreError::backend)?;
                out.push(decode(v.value())?);
            }
        } else {
            for item in range.rev().take(q.limit) {
                let (_, v) = item.map_err(StoreError::backend)?;
                out.push(decode(v.value())?);
            }
            out.reverse();
        }
        Ok(out)
    }
}

#[async_trait]
impl HistoryStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn append(&self, batch: WriteBatch) -> Result<Vec<AppendOutcome>, StoreError> {
        self.blocking(move |db| Self::append_sync(db, &batch)).await
    }

    async fn page(&self, room_id: &str, query: PageQuery) -> Result<Vec<ChatMessage>, StoreError> {
        let room = room_id.to_owned();
        self.blocking(move |db| Self::page_sync(db, &room, query))
            .await
    }

    async fn get(&self, room_id: &str, id: MessageId) -> Result<Option<ChatMessage>, StoreError> {
        let room = room_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let table = txn.open_table(MESSAGES).map_err(StoreError::backend)?;
            let v = table
                .get((room.as_str(), id))
                .map_err(StoreError::backend)?;
            v.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn tombstone(&self, room_id: &str, id: MessageId) -> Result<bool, StoreError> {
        let room = room_id.to_owned();
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(StoreError::backend)?;
            txn.set_durability(Durability::Immediate)
                .map_err(StoreError::backend)?;
            let found = {
                let mut table = txn.open_table(MESSAGES).map_err(StoreError::backend)?;
                let current: Option<ChatMessage> = table
                    .get((room.as_str(), id))
                    .map_err(StoreError::backend)?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                match current {
                    None => false,
                    Some(mut m) => {
                        if !m.deleted {
                            m.deleted = true;
                            m.content.clear();
                            table
                                .insert((room.as_str(), id), encode(&m)?.as_slice())
                                .map_err(StoreError::backend)?;
                        }
                        true
                    }
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(found)
        })
        .await
    }

    /// Answered inline, not on the blocking pool: this point read of a small index is
    /// served from redb's page cache in a few microseconds, while a `spawn_blocking`
    /// hand-off costs more than that in thread wake-ups (profiled: futex wake/wait was
    /// ~9% of the server's CPU in the private-chats scenario, where every message with a
    /// `clientMsgId` does this lookup). History pages, larger and colder, stay on the pool.
    async fn find_client_msg(
        &self,
        room_id: &str,
        user_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let table = txn.open_table(CLIENT_IDS).map_err(StoreError::backend)?;
        let v = table
            .get((room_id, user_id, client_msg_id))
            .map_err(StoreError::backend)?;
        Ok(v.map(|v| v.value()))
    }

    async fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let table = txn.open_table(AUDIT).map_err(StoreError::backend)?;
            let lo = after.map_or(0, |a| a.saturating_add(1));
            let mut out = Vec::new();
            for item in table.range(lo..).map_err(StoreError::backend)?.take(limit) {
                let (_, v) = item.map_err(StoreError::backend)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        super::super::conformance::run(&store).await;
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
