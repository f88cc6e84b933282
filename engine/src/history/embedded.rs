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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{AppendOutcome, AuditEntry, HistoryStore, PageQuery, StoreError, WriteBatch};
use crate::chat::{
    ChatStore, Conversation, ConversationKind, ConversationUpdate, MemberState, MemberUpdate,
    is_conversation,
};
use crate::ids::MessageId;
use crate::protocol::ChatMessage;

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

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
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
        txn.open_table(MESSAGE_ROOMS).map_err(StoreError::backend)?;
        txn.open_table(CONVERSATIONS).map_err(StoreError::backend)?;
        txn.open_table(MEMBERS).map_err(StoreError::backend)?;
        txn.open_table(DIRECT).map_err(StoreError::backend)?;
        txn.open_table(ACTIVITY).map_err(StoreError::backend)?;
        txn.open_table(REACTIONS).map_err(StoreError::backend)?;
        {
            use super::embedded_calls_keys as ck;
            txn.open_table(ck::CALLS).map_err(StoreError::backend)?;
            txn.open_table(ck::LIVE_CALLS)
                .map_err(StoreError::backend)?;
            txn.open_table(ck::IDENTITY_KEYS)
                .map_err(StoreError::backend)?;
            txn.open_table(ck::SIGNED_PRE_KEYS)
                .map_err(StoreError::backend)?;
            txn.open_table(ck::PRE_KEYS).map_err(StoreError::backend)?;
        }
        txn.commit().map_err(StoreError::backend)?;
        Ok(Self { db: Arc::new(db) })
    }

    pub(super) async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
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
        // Newest stored message per conversation, for its last activity.
        let mut newest: HashMap<&str, MessageId> = HashMap::new();
        {
            let mut messages = txn.open_table(MESSAGES).map_err(StoreError::backend)?;
            let mut client_ids = txn.open_table(CLIENT_IDS).map_err(StoreError::backend)?;
            let mut rooms = txn.open_table(MESSAGE_ROOMS).map_err(StoreError::backend)?;
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
                rooms
                    .insert(m.message_id, m.room_id.as_str())
                    .map_err(StoreError::backend)?;
                if is_conversation(&m.room_id) {
                    let n = newest.entry(m.room_id.as_str()).or_insert(0);
                    *n = (*n).max(m.message_id);
                }
                outcomes.push(AppendOutcome::Stored);
            }
            for (conv, id) in newest {
                touch_conversation(&txn, conv, id)?;
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

fn read_conv(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Conversation>, StoreError> {
    table
        .get(id)
        .map_err(StoreError::backend)?
        .map(|v| decode(v.value()))
        .transpose()
}

/// Moves a conversation's last activity to message `id` (if newer), keeping the
/// activity index in step. Inside the append transaction.
fn touch_conversation(
    txn: &redb::WriteTransaction,
    conv_id: &str,
    id: MessageId,
) -> Result<(), StoreError> {
    let mut convs = txn.open_table(CONVERSATIONS).map_err(StoreError::backend)?;
    let Some(mut conv) = read_conv(&convs, conv_id)? else {
        return Ok(());
    };
    if conv.last_message_id.is_some_and(|last| last >= id) {
        return Ok(());
    }
    let mut activity = txn.open_table(ACTIVITY).map_err(StoreError::backend)?;
    let at = crate::ids::unix_ms_of(id).max(conv.last_activity_ms);
    if conv.closed.is_none() {
        activity
            .remove((conv.last_activity_ms, conv_id))
            .map_err(StoreError::backend)?;
        activity
            .insert((at, conv_id), ())
            .map_err(StoreError::backend)?;
    }
    conv.last_message_id = Some(id);
    conv.last_activity_ms = at;
    convs
        .insert(conv_id, encode(&conv)?.as_slice())
        .map_err(StoreError::backend)?;
    Ok(())
}

fn pair_key(conv: &Conversation) -> Option<(&str, &str)> {
    match (conv.kind, conv.participant_ids.as_slice()) {
        (ConversationKind::Direct, [a, b]) => Some((a.as_str(), b.as_str())),
        _ => None,
    }
}

pub(super) fn write_txn(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db.begin_write().map_err(StoreError::backend)?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::backend)?;
    Ok(txn)
}

#[async_trait]
impl ChatStore for EmbeddedStore {
    async fn create_conversation(
        &self,
        conv: Conversation,
    ) -> Result<(Conversation, bool), StoreError> {
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut direct = txn.open_table(DIRECT).map_err(StoreError::backend)?;
                let mut convs = txn.open_table(CONVERSATIONS).map_err(StoreError::backend)?;
                let existing = match pair_key(&conv) {
                    Some(pair) => match direct.get(pair).map_err(StoreError::backend)? {
                        Some(id) => read_conv(&convs, id.value())?,
                        None => None,
                    },
                    None => None,
                };
                match existing {
                    Some(found) => (found, false),
                    None => {
                        if let Some(pair) = pair_key(&conv) {
                            direct
                                .insert(pair, conv.id.as_str())
                                .map_err(StoreError::backend)?;
                        }
                        convs
                            .insert(conv.id.as_str(), encode(&conv)?.as_slice())
                            .map_err(StoreError::backend)?;
                        let mut members = txn.open_table(MEMBERS).map_err(StoreError::backend)?;
                        let state = encode(&MemberState::default())?;
                        for p in &conv.participant_ids {
                            members
                                .insert((p.as_str(), conv.id.as_str()), state.as_slice())
                                .map_err(StoreError::backend)?;
                        }
                        let mut activity = txn.open_table(ACTIVITY).map_err(StoreError::backend)?;
                        activity
                            .insert((conv.last_activity_ms, conv.id.as_str()), ())
                            .map_err(StoreError::backend)?;
                        (conv, true)
                    }
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let convs = txn.open_table(CONVERSATIONS).map_err(StoreError::backend)?;
        read_conv(&convs, id)
    }

    /// Inline like `find_client_msg`: two point reads, on every conversation send.
    async fn membership(
        &self,
        id: &str,
        user_id: &str,
    ) -> Result<Option<(Conversation, MemberState)>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let members = txn.open_table(MEMBERS).map_err(StoreError::backend)?;
        let Some(state) = members.get((user_id, id)).map_err(StoreError::backend)? else {
            return Ok(None);
        };
        let state: MemberState = decode(state.value())?;
        let convs = txn.open_table(CONVERSATIONS).map_err(StoreError::backend)?;
        Ok(read_conv(&convs, id)?.map(|c| (c, state)))
    }

    async fn user_conversations(
        &self,
        user_id: &str,
    ) -> Result<Vec<(Conversation, MemberState)>, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let members = txn.open_table(MEMBERS).map_err(StoreError::backend)?;
            let convs = txn.open_table(CONVERSATIONS).map_err(StoreError::backend)?;
            let mut out = Vec::new();
            let range = members
                .range((user.as_str(), "")..)
                .map_err(StoreError::backend)?;
            for item in range {
                let (k, v) = item.map_err(StoreError::backend)?;
                let (u, conv_id) = k.value();
                if u != user {
                    break;
                }
                if let Some(conv) = read_conv(&convs, conv_id)? {
                    out.push((conv, decode(v.value())?));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn update_member(
        &self,
        id: &str,
        user_id: &str,
        update: MemberUpdate,
    ) -> Result<Option<(MemberState, bool)>, StoreError> {
        let (id, user) = (id.to_owned(), user_id.to_owned());
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut members = txn.open_table(MEMBERS).map_err(StoreError::backend)?;
                let current: Option<MemberState> = members
                    .get((user.as_str(), id.as_str()))
                    .map_err(StoreError::backend)?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                match current {
                    None => None,
                    Some(mut state) => {
                        let changed = match update {
                            MemberUpdate::Archive(a) => {
                                let changed = state.archived != a;
                                state.archived = a;
                                changed
                            }
                            MemberUpdate::ReadUpTo(mid) => {
                                let changed = state.last_read_id.is_none_or(|r| r < mid);
                                if changed {
                                    state.last_read_id = Some(mid);
                                }
                                changed
                            }
                        };
                        if changed {
                            members
                                .insert((user.as_str(), id.as_str()), encode(&state)?.as_slice())
                                .map_err(StoreError::backend)?;
                        }
                        Some((state, changed))
                    }
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
    }

    async fn update_conversation(
        &self,
        id: &str,
        update: ConversationUpdate,
    ) -> Result<Option<Conversation>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut convs = txn.open_table(CONVERSATIONS).map_err(StoreError::backend)?;
                match read_conv(&convs, &id)? {
                    None => None,
                    Some(mut conv) => {
                        match update {
                            ConversationUpdate::Close(c) => {
                                if conv.closed.is_none() {
                                    let mut activity =
                                        txn.open_table(ACTIVITY).map_err(StoreError::backend)?;
                                    activity
                                        .remove((conv.last_activity_ms, id.as_str()))
                                        .map_err(StoreError::backend)?;
                                    conv.closed = Some(c);
                                }
                            }
                            ConversationUpdate::Snooze(s) => conv.snoozed = Some(s),
                        }
                        convs
                            .insert(id.as_str(), encode(&conv)?.as_slice())
                            .map_err(StoreError::backend)?;
                        Some(conv)
                    }
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
    }

    async fn quiet_conversations(
        &self,
        inactive_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let activity = txn.open_table(ACTIVITY).map_err(StoreError::backend)?;
            let convs = txn.open_table(CONVERSATIONS).map_err(StoreError::backend)?;
            let mut out = Vec::new();
            let range = activity
                .range(..(inactive_since_ms, ""))
                .map_err(StoreError::backend)?;
            for item in range.take(limit) {
                let (k, _) = item.map_err(StoreError::backend)?;
                if let Some(conv) = read_conv(&convs, k.value().1)? {
                    out.push(conv);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn locate_message(&self, id: MessageId) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let rooms = txn.open_table(MESSAGE_ROOMS).map_err(StoreError::backend)?;
        Ok(rooms
            .get(id)
            .map_err(StoreError::backend)?
            .map(|v| v.value().to_owned()))
    }

    async fn set_reaction(
        &self,
        room_id: &str,
        id: MessageId,
        user_id: &str,
        reaction: Option<&str>,
    ) -> Result<Option<ChatMessage>, StoreError> {
        let (room, user, reaction) = (
            room_id.to_owned(),
            user_id.to_owned(),
            reaction.map(str::to_owned),
        );
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut messages = txn.open_table(MESSAGES).map_err(StoreError::backend)?;
                let current: Option<ChatMessage> = messages
                    .get((room.as_str(), id))
                    .map_err(StoreError::backend)?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                match current {
                    None => None,
                    Some(mut msg) => {
                        let mut reactions =
                            txn.open_table(REACTIONS).map_err(StoreError::backend)?;
                        let key = (room.as_str(), id, user.as_str());
                        let old = reactions
                            .get(key)
                            .map_err(StoreError::backend)?
                            .map(|v| v.value().to_owned());
                        if old != reaction {
                            if let Some(old) = &old
                                && let Some(n) = msg.reactions.get_mut(old)
                            {
                                *n = n.saturating_sub(1);
                                if *n == 0 {
                                    msg.reactions.remove(old);
                                }
                            }
                            match &reaction {
                                Some(r) => {
                                    *msg.reactions.entry(r.clone()).or_insert(0) += 1;
                                    reactions
                                        .insert(key, r.as_str())
                                        .map_err(StoreError::backend)?;
                                }
                                None => {
                                    reactions.remove(key).map_err(StoreError::backend)?;
                                }
                            }
                            messages
                                .insert((room.as_str(), id), encode(&msg)?.as_slice())
                                .map_err(StoreError::backend)?;
                        }
                        Some(msg)
                    }
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
    }

    async fn reaction_of(
        &self,
        room_id: &str,
        id: MessageId,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let reactions = txn.open_table(REACTIONS).map_err(StoreError::backend)?;
        Ok(reactions
            .get((room_id, id, user_id))
            .map_err(StoreError::backend)?
            .map(|v| v.value().to_owned()))
    }

    async fn count_unread(
        &self,
        room_id: &str,
        after: Option<MessageId>,
        user_id: &str,
        cap: usize,
    ) -> Result<usize, StoreError> {
        let (room, user) = (room_id.to_owned(), user_id.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let table = txn.open_table(MESSAGES).map_err(StoreError::backend)?;
            let lo = after.map_or(0, |a| a.saturating_add(1));
            let mut n = 0;
            // Bounded work even when the reader's own messages dominate the range.
            for item in table
                .range((room.as_str(), lo)..=(room.as_str(), u64::MAX))
                .map_err(StoreError::backend)?
                .take(cap.saturating_mul(10))
            {
                let (_, v) = item.map_err(StoreError::backend)?;
                let m: ChatMessage = decode(v.value())?;
                if m.user_id != user && !m.deleted {
                    n += 1;
                    if n >= cap {
                        break;
                    }
                }
            }
            Ok(n)
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
