//! CQL backend of [`ChatStore`], and the conversation-activity follow-up of appends.
//!
//! Where the embedded store had one transaction, this one has:
//! - the one-per-pair rule: the conversation is written first, then claimed with
//!   `INSERT INTO direct ... IF NOT EXISTS` (the chat store's only lightweight
//!   transaction); a loser removes what it wrote and returns the winner's;
//! - monotone cells: `last_message_id`/`last_activity_ms` and a member's `last_read_id`
//!   are written `USING TIMESTAMP <message id>`, so last-write-wins keeps the newest and
//!   a late or retried write cannot move them back;
//! - reaction counts recomputed from the per-user reaction rows of the message (at most
//!   one per participant) and written onto the message.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures_util::future::join_all;
use scylla::statement::prepared::PreparedStatement;

use super::{CqlStore, Preparer, applied, bucket_of, id_i64};
use crate::chat::{
    Conversation, ConversationKind, ConversationUpdate, MemberState, MemberUpdate, is_conversation,
};
use crate::ids::{MessageId, room_hash};
use crate::message::ChatMessage;
use crate::store::{ChatStore, HistoryStore, PageQuery, StoreError};
use crate::store::{decode, encode};

/// Partitions of the activity index (a quiet-chats query reads each once).
const ACTIVITY_PARTS: i32 = 16;

pub(crate) struct ChatStatements {
    insert_conv: PreparedStatement,
    update_conv_body: PreparedStatement,
    touch_conv: PreparedStatement,
    select_conv: PreparedStatement,
    delete_conv: PreparedStatement,
    insert_member: PreparedStatement,
    delete_member: PreparedStatement,
    select_member: PreparedStatement,
    select_members_of_user: PreparedStatement,
    set_archived: PreparedStatement,
    set_read: PreparedStatement,
    claim_direct: PreparedStatement,
    select_direct: PreparedStatement,
    insert_activity: PreparedStatement,
    delete_activity: PreparedStatement,
    select_activity: PreparedStatement,
    select_message_room: PreparedStatement,
    upsert_reaction: PreparedStatement,
    delete_reaction: PreparedStatement,
    select_reaction: PreparedStatement,
    select_reactions: PreparedStatement,
}

impl ChatStatements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            insert_conv: p
                .prep(
                    "INSERT INTO {ks}.conversations (id, body, last_activity_ms) VALUES (?, ?, ?)",
                )
                .await?,
            update_conv_body: p
                .prep("UPDATE {ks}.conversations SET body = ? WHERE id = ?")
                .await?,
            touch_conv: p
                .prep(
                    "UPDATE {ks}.conversations USING TIMESTAMP ? \
                     SET last_message_id = ?, last_activity_ms = ? WHERE id = ?",
                )
                .await?,
            select_conv: p
                .prep(
                    "SELECT body, last_message_id, last_activity_ms FROM {ks}.conversations \
                     WHERE id = ?",
                )
                .await?,
            delete_conv: p
                .prep("DELETE FROM {ks}.conversations WHERE id = ?")
                .await?,
            insert_member: p
                .prep("INSERT INTO {ks}.members (user_id, conv_id, archived) VALUES (?, ?, false)")
                .await?,
            delete_member: p
                .prep("DELETE FROM {ks}.members WHERE user_id = ? AND conv_id = ?")
                .await?,
            select_member: p
                .prep(
                    "SELECT archived, last_read_id FROM {ks}.members \
                     WHERE user_id = ? AND conv_id = ?",
                )
                .await?,
            select_members_of_user: p
                .prep(
                    "SELECT conv_id, archived, last_read_id FROM {ks}.members \
                     WHERE user_id = ? LIMIT 10000",
                )
                .await?,
            set_archived: p
                .prep("UPDATE {ks}.members SET archived = ? WHERE user_id = ? AND conv_id = ?")
                .await?,
            set_read: p
                .prep(
                    "UPDATE {ks}.members USING TIMESTAMP ? SET last_read_id = ? \
                     WHERE user_id = ? AND conv_id = ?",
                )
                .await?,
            claim_direct: p
                .lwt("INSERT INTO {ks}.direct (a, b, conv_id) VALUES (?, ?, ?) IF NOT EXISTS")
                .await?,
            select_direct: p
                .prep("SELECT conv_id FROM {ks}.direct WHERE a = ? AND b = ?")
                .await?,
            insert_activity: p
                .prep("INSERT INTO {ks}.activity (part, last_ms, conv_id) VALUES (?, ?, ?)")
                .await?,
            delete_activity: p
                .prep("DELETE FROM {ks}.activity WHERE part = ? AND last_ms = ? AND conv_id = ?")
                .await?,
            select_activity: p
                .prep(
                    "SELECT last_ms, conv_id FROM {ks}.activity WHERE part = ? AND last_ms < ? \
                     LIMIT ?",
                )
                .await?,
            select_message_room: p
                .prep("SELECT room_id FROM {ks}.message_rooms WHERE message_id = ?")
                .await?,
            upsert_reaction: p
                .prep(
                    "INSERT INTO {ks}.reactions (room_id, message_id, user_id, reaction) \
                     VALUES (?, ?, ?, ?)",
                )
                .await?,
            delete_reaction: p
                .prep(
                    "DELETE FROM {ks}.reactions WHERE room_id = ? AND message_id = ? \
                     AND user_id = ?",
                )
                .await?,
            select_reaction: p
                .prep(
                    "SELECT reaction FROM {ks}.reactions WHERE room_id = ? AND message_id = ? \
                     AND user_id = ?",
                )
                .await?,
            select_reactions: p
                .prep(
                    "SELECT reaction FROM {ks}.reactions WHERE room_id = ? AND message_id = ? \
                     LIMIT 1000",
                )
                .await?,
        })
    }
}

fn part_of(conv_id: &str) -> i32 {
    (room_hash(conv_id) % ACTIVITY_PARTS as u64) as i32
}

fn pair_key(conv: &Conversation) -> Option<(&str, &str)> {
    match (conv.kind, conv.participant_ids.as_slice()) {
        (ConversationKind::Direct, [a, b]) => Some((a.as_str(), b.as_str())),
        _ => None,
    }
}

type ConvRow = (Option<Vec<u8>>, Option<i64>, Option<i64>);

impl CqlStore {
    fn chat(&self) -> &ChatStatements {
        &self.st.chat
    }

    /// Moves a conversation's last activity to `msg` (a monotone, idempotent follow-up
    /// of appending it), and its place in the activity index.
    pub(crate) async fn touch_conversation(&self, msg: &ChatMessage) -> Result<(), StoreError> {
        if !is_conversation(&msg.room_id) {
            return Ok(());
        }
        let Some(conv) = self.conversation(&msg.room_id).await? else {
            return Ok(());
        };
        if conv
            .last_message_id
            .is_some_and(|last| last >= msg.message_id)
        {
            return Ok(());
        }
        let at = crate::ids::unix_ms_of(msg.message_id).max(conv.last_activity_ms);
        let id = id_i64(msg.message_id);
        let s = &self.session;
        s.execute_unpaged(&self.chat().touch_conv, (id, id, at as i64, &msg.room_id))
            .await?;
        if conv.closed.is_none() {
            let part = part_of(&conv.id);
            s.execute_unpaged(&self.chat().insert_activity, (part, at as i64, &conv.id))
                .await?;
            if conv.last_activity_ms != at {
                s.execute_unpaged(
                    &self.chat().delete_activity,
                    (part, conv.last_activity_ms as i64, &conv.id),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn member_state(
        &self,
        conv_id: &str,
        user_id: &str,
    ) -> Result<Option<MemberState>, StoreError> {
        let row = self
            .session
            .execute_unpaged(&self.chat().select_member, (user_id, conv_id))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<bool>, Option<i64>)>()?;
        Ok(row.map(|(archived, read)| MemberState {
            archived: archived.unwrap_or(false),
            last_read_id: read.map(|r| r as u64),
        }))
    }

    async fn write_conversation(&self, conv: &Conversation) -> Result<(), StoreError> {
        let s = &self.session;
        let body = encode(conv)?;
        s.execute_unpaged(
            &self.chat().insert_conv,
            (&conv.id, &body, conv.last_activity_ms as i64),
        )
        .await?;
        for r in join_all(
            conv.participant_ids
                .iter()
                .map(|p| s.execute_unpaged(&self.chat().insert_member, (p, &conv.id))),
        )
        .await
        {
            r?;
        }
        s.execute_unpaged(
            &self.chat().insert_activity,
            (part_of(&conv.id), conv.last_activity_ms as i64, &conv.id),
        )
        .await?;
        Ok(())
    }

    async fn remove_conversation(&self, conv: &Conversation) -> Result<(), StoreError> {
        let s = &self.session;
        s.execute_unpaged(
            &self.chat().delete_activity,
            (part_of(&conv.id), conv.last_activity_ms as i64, &conv.id),
        )
        .await?;
        for p in &conv.participant_ids {
            s.execute_unpaged(&self.chat().delete_member, (p, &conv.id))
                .await?;
        }
        s.execute_unpaged(&self.chat().delete_conv, (&conv.id,))
            .await?;
        Ok(())
    }

    async fn direct_of(&self, a: &str, b: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .session
            .execute_unpaged(&self.chat().select_direct, (a, b))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<String>,)>()?;
        Ok(row.and_then(|(c,)| c))
    }
}

#[async_trait]
impl ChatStore for CqlStore {
    async fn create_conversation(
        &self,
        conv: Conversation,
    ) -> Result<(Conversation, bool), StoreError> {
        let Some((a, b)) = pair_key(&conv) else {
            self.write_conversation(&conv).await?;
            return Ok((conv, true));
        };
        if let Some(existing) = self.direct_of(a, b).await?
            && let Some(found) = self.conversation(&existing).await?
        {
            return Ok((found, false));
        }
        // Written first, claimed second: whoever reads the claim finds a whole record.
        self.write_conversation(&conv).await?;
        let applied = applied(
            self.session
                .execute_unpaged(&self.chat().claim_direct, (a, b, &conv.id))
                .await?,
        )?;
        let winner = if applied {
            conv.id.clone()
        } else {
            self.direct_of(a, b)
                .await?
                .unwrap_or_else(|| conv.id.clone())
        };
        if winner == conv.id {
            return Ok((conv, true));
        }
        self.remove_conversation(&conv).await?;
        match self.conversation(&winner).await? {
            Some(found) => Ok((found, false)),
            None => Err(StoreError::Corrupt(format!(
                "direct conversation {winner} is claimed but has no record"
            ))),
        }
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = self
            .session
            .execute_unpaged(&self.chat().select_conv, (id,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<ConvRow>()?;
        let Some((Some(body), last_id, last_ms)) = row else {
            // No row, or only an activity follow-up for a conversation never created.
            return Ok(None);
        };
        let mut conv: Conversation = decode(&body)?;
        if let Some(last) = last_id {
            conv.last_message_id = Some(last as u64);
        }
        if let Some(ms) = last_ms {
            conv.last_activity_ms = conv.last_activity_ms.max(ms as u64);
        }
        Ok(Some(conv))
    }

    async fn membership(
        &self,
        id: &str,
        user_id: &str,
    ) -> Result<Option<(Conversation, MemberState)>, StoreError> {
        let (state, conv) =
            futures_util::join!(self.member_state(id, user_id), self.conversation(id));
        Ok(match (state?, conv?) {
            (Some(state), Some(conv)) => Some((conv, state)),
            _ => None,
        })
    }

    async fn user_conversations(
        &self,
        user_id: &str,
    ) -> Result<Vec<(Conversation, MemberState)>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.chat().select_members_of_user, (user_id,))
            .await?
            .into_rows_result()?;
        let members: Vec<(String, MemberState)> = rows
            .rows::<(String, Option<bool>, Option<i64>)>()?
            .map(|r| {
                r.map(|(conv, archived, read)| {
                    (
                        conv,
                        MemberState {
                            archived: archived.unwrap_or(false),
                            last_read_id: read.map(|r| r as u64),
                        },
                    )
                })
                .map_err(StoreError::from)
            })
            .collect::<Result<_, _>>()?;
        let convs = join_all(members.iter().map(|(id, _)| self.conversation(id))).await;
        let mut out = Vec::with_capacity(members.len());
        for ((_, state), conv) in members.into_iter().zip(convs) {
            if let Some(conv) = conv? {
                out.push((conv, state));
            }
        }
        Ok(out)
    }

    async fn update_member(
        &self,
        id: &str,
        user_id: &str,
        update: MemberUpdate,
    ) -> Result<Option<(MemberState, bool)>, StoreError> {
        let Some(mut state) = self.member_state(id, user_id).await? else {
            return Ok(None);
        };
        let changed = match update {
            MemberUpdate::Archive(a) => {
                let changed = state.archived != a;
                if changed {
                    self.session
                        .execute_unpaged(&self.chat().set_archived, (a, user_id, id))
                        .await?;
                    state.archived = a;
                }
                changed
            }
            MemberUpdate::ReadUpTo(mid) => {
                let changed = state.last_read_id.is_none_or(|r| r < mid);
                if changed {
                    let m = id_i64(mid);
                    self.session
                        .execute_unpaged(&self.chat().set_read, (m, m, user_id, id))
                        .await?;
                    state.last_read_id = Some(mid);
                }
                changed
            }
        };
        Ok(Some((state, changed)))
    }

    async fn update_conversation(
        &self,
        id: &str,
        update: ConversationUpdate,
    ) -> Result<Option<Conversation>, StoreError> {
        let Some(mut conv) = self.conversation(id).await? else {
            return Ok(None);
        };
        match update {
            ConversationUpdate::Close(c) => {
                if conv.closed.is_none() {
                    self.session
                        .execute_unpaged(
                            &self.chat().delete_activity,
                            (part_of(id), conv.last_activity_ms as i64, id),
                        )
                        .await?;
                    conv.closed = Some(c);
                }
            }
            ConversationUpdate::Snooze(s) => conv.snoozed = Some(s),
        }
        self.session
            .execute_unpaged(&self.chat().update_conv_body, (encode(&conv)?, id))
            .await?;
        Ok(Some(conv))
    }

    async fn quiet_conversations(
        &self,
        inactive_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lim = i32::try_from(limit).unwrap_or(i32::MAX);
        let parts = join_all((0..ACTIVITY_PARTS).map(|part| {
            self.session.execute_unpaged(
                &self.chat().select_activity,
                (part, inactive_since_ms as i64, lim),
            )
        }))
        .await;
        let mut entries: Vec<(i64, String)> = Vec::new();
        for part in parts {
            let rows = part?.into_rows_result()?;
            for r in rows.rows::<(i64, String)>()? {
                entries.push(r?);
            }
        }
        // Oldest first across the partitions, at most `limit`, each conversation once.
        entries.sort();
        let mut seen = std::collections::HashSet::new();
        entries.retain(|(_, id)| seen.insert(id.clone()));
        entries.truncate(limit);
        let convs = join_all(entries.iter().map(|(_, id)| self.conversation(id))).await;
        let mut out = Vec::with_capacity(entries.len());
        for conv in convs {
            // An entry may outlive a race (a close, an older touch): the record decides.
            if let Some(c) = conv?
                && c.closed.is_none()
                && c.last_activity_ms < inactive_since_ms
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn locate_message(&self, id: MessageId) -> Result<Option<String>, StoreError> {
        let row = self
            .session
            .execute_unpaged(&self.chat().select_message_room, (id_i64(id),))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<String>,)>()?;
        Ok(row.and_then(|(r,)| r))
    }

    async fn set_reaction(
        &self,
        room_id: &str,
        id: MessageId,
        user_id: &str,
        reaction: Option<&str>,
    ) -> Result<Option<ChatMessage>, StoreError> {
        let Some(mut msg) = self.get(room_id, id).await? else {
            return Ok(None);
        };
        let mid = id_i64(id);
        let s = &self.session;
        match reaction {
            Some(r) => {
                s.execute_unpaged(&self.chat().upsert_reaction, (room_id, mid, user_id, r))
                    .await?
            }
            None => {
                s.execute_unpaged(&self.chat().delete_reaction, (room_id, mid, user_id))
                    .await?
            }
        };
        // Counts from the per-user rows (one per participant at most).
        let rows = s
            .execute_unpaged(&self.chat().select_reactions, (room_id, mid))
            .await?
            .into_rows_result()?;
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for r in rows.rows::<(Option<String>,)>()? {
            if let (Some(name),) = r? {
                *counts.entry(name).or_insert(0) += 1;
            }
        }
        if msg.reactions != counts {
            msg.reactions = counts;
            s.execute_unpaged(
                &self.st.insert_message,
                (room_id, bucket_of(room_id, id), mid, encode(&msg)?),
            )
            .await?;
        }
        Ok(Some(msg))
    }

    async fn reaction_of(
        &self,
        room_id: &str,
        id: MessageId,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .session
            .execute_unpaged(&self.chat().select_reaction, (room_id, id_i64(id), user_id))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<String>,)>()?;
        Ok(row.and_then(|(r,)| r))
    }

    async fn count_unread(
        &self,
        room_id: &str,
        after: Option<MessageId>,
        user_id: &str,
        cap: usize,
    ) -> Result<usize, StoreError> {
        // Bounded work even when the reader's own messages dominate the range.
        let budget = cap.saturating_mul(10);
        let (mut seen, mut n) = (0, 0);
        let mut cursor = after.unwrap_or(0);
        while seen < budget && n < cap {
            let page = self
                .page(
                    room_id,
                    PageQuery {
                        before: None,
                        after: Some(cursor),
                        limit: (budget - seen).min(500),
                    },
                )
                .await?;
            if page.is_empty() {
                break;
            }
            for m in &page {
                seen += 1;
                cursor = m.message_id;
                if m.user_id != user_id && !m.deleted {
                    n += 1;
                    if n >= cap {
                        break;
                    }
                }
            }
        }
        Ok(n)
    }
}
