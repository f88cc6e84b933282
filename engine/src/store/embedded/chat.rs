//! redb backend of [`ChatStore`].

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::*;
use crate::chat::{Conversation, ConversationKind, ConversationUpdate, MemberState, MemberUpdate};
use crate::ids::MessageId;
use crate::message::ChatMessage;
use crate::store::ChatStore;

fn read_conv(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Conversation>, StoreError> {
    table.get(id)?.map(|v| decode(v.value())).transpose()
}

/// Moves a conversation's last activity to message `id` (if newer), keeping the
/// activity index in step. Inside the append transaction.
pub(super) fn touch_conversation(
    txn: &redb::WriteTransaction,
    conv_id: &str,
    id: MessageId,
) -> Result<(), StoreError> {
    let mut convs = txn.open_table(CONVERSATIONS)?;
    let Some(mut conv) = read_conv(&convs, conv_id)? else {
        return Ok(());
    };
    if conv.last_message_id.is_some_and(|last| last >= id) {
        return Ok(());
    }
    let mut activity = txn.open_table(ACTIVITY)?;
    let at = crate::ids::unix_ms_of(id).max(conv.last_activity_ms);
    if conv.closed.is_none() {
        activity.remove((conv.last_activity_ms, conv_id))?;
        activity.insert((at, conv_id), ())?;
    }
    conv.last_message_id = Some(id);
    conv.last_activity_ms = at;
    convs.insert(conv_id, encode(&conv)?.as_slice())?;
    Ok(())
}

fn pair_key(conv: &Conversation) -> Option<(&str, &str)> {
    match (conv.kind, conv.participant_ids.as_slice()) {
        (ConversationKind::Direct, [a, b]) => Some((a.as_str(), b.as_str())),
        _ => None,
    }
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
                let mut direct = txn.open_table(DIRECT)?;
                let mut convs = txn.open_table(CONVERSATIONS)?;
                let existing = match pair_key(&conv) {
                    Some(pair) => match direct.get(pair)? {
                        Some(id) => read_conv(&convs, id.value())?,
                        None => None,
                    },
                    None => None,
                };
                match existing {
                    Some(found) => (found, false),
                    None => {
                        if let Some(pair) = pair_key(&conv) {
                            direct.insert(pair, conv.id.as_str())?;
                        }
                        convs.insert(conv.id.as_str(), encode(&conv)?.as_slice())?;
                        let mut members = txn.open_table(MEMBERS)?;
                        let state = encode(&MemberState::default())?;
                        for p in &conv.participant_ids {
                            members.insert((p.as_str(), conv.id.as_str()), state.as_slice())?;
                        }
                        let mut activity = txn.open_table(ACTIVITY)?;
                        activity.insert((conv.last_activity_ms, conv.id.as_str()), ())?;
                        (conv, true)
                    }
                }
            };
            txn.commit()?;
            Ok(out)
        })
        .await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let txn = self.db.begin_read()?;
        let convs = txn.open_table(CONVERSATIONS)?;
        read_conv(&convs, id)
    }

    /// Inline like `find_client_msg`: two point reads, on every conversation send.
    async fn membership(
        &self,
        id: &str,
        user_id: &str,
    ) -> Result<Option<(Conversation, MemberState)>, StoreError> {
        let txn = self.db.begin_read()?;
        let members = txn.open_table(MEMBERS)?;
        let Some(state) = members.get((user_id, id))? else {
            return Ok(None);
        };
        let state: MemberState = decode(state.value())?;
        let convs = txn.open_table(CONVERSATIONS)?;
        Ok(read_conv(&convs, id)?.map(|c| (c, state)))
    }

    async fn user_conversations(
        &self,
        user_id: &str,
    ) -> Result<Vec<(Conversation, MemberState)>, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let members = txn.open_table(MEMBERS)?;
            let convs = txn.open_table(CONVERSATIONS)?;
            let mut out = Vec::new();
            let range = members.range((user.as_str(), "")..)?;
            for item in range {
                let (k, v) = item?;
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
                let mut members = txn.open_table(MEMBERS)?;
                let current: Option<MemberState> = members
                    .get((user.as_str(), id.as_str()))?
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
                                .insert((user.as_str(), id.as_str()), encode(&state)?.as_slice())?;
                        }
                        Some((state, changed))
                    }
                }
            };
            txn.commit()?;
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
                let mut convs = txn.open_table(CONVERSATIONS)?;
                match read_conv(&convs, &id)? {
                    None => None,
                    Some(mut conv) => {
                        match update {
                            ConversationUpdate::Close(c) => {
                                if conv.closed.is_none() {
                                    let mut activity = txn.open_table(ACTIVITY)?;
                                    activity.remove((conv.last_activity_ms, id.as_str()))?;
                                    conv.closed = Some(c);
                                }
                            }
                            ConversationUpdate::Snooze(s) => conv.snoozed = Some(s),
                        }
                        convs.insert(id.as_str(), encode(&conv)?.as_slice())?;
                        Some(conv)
                    }
                }
            };
            txn.commit()?;
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
            let txn = db.begin_read()?;
            let activity = txn.open_table(ACTIVITY)?;
            let convs = txn.open_table(CONVERSATIONS)?;
            let mut out = Vec::new();
            let range = activity.range(..(inactive_since_ms, ""))?;
            for item in range.take(limit) {
                let (k, _) = item?;
                if let Some(conv) = read_conv(&convs, k.value().1)? {
                    out.push(conv);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn locate_message(&self, id: MessageId) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let rooms = txn.open_table(MESSAGE_ROOMS)?;
        Ok(rooms.get(id)?.map(|v| v.value().to_owned()))
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
                let mut messages = txn.open_table(MESSAGES)?;
                let current: Option<ChatMessage> = messages
                    .get((room.as_str(), id))?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                match current {
                    None => None,
                    Some(mut msg) => {
                        let mut reactions = txn.open_table(REACTIONS)?;
                        let key = (room.as_str(), id, user.as_str());
                        let old = reactions.get(key)?.map(|v| v.value().to_owned());
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
                                    reactions.insert(key, r.as_str())?;
                                }
                                None => {
                                    reactions.remove(key)?;
                                }
                            }
                            messages.insert((room.as_str(), id), encode(&msg)?.as_slice())?;
                        }
                        Some(msg)
                    }
                }
            };
            txn.commit()?;
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
        let txn = self.db.begin_read()?;
        let reactions = txn.open_table(REACTIONS)?;
        Ok(reactions
            .get((room_id, id, user_id))?
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
            let txn = db.begin_read()?;
            let table = txn.open_table(MESSAGES)?;
            let lo = after.map_or(0, |a| a.saturating_add(1));
            let mut n = 0;
            // Bounded work even when the reader's own messages dominate the range.
            for item in table
                .range((room.as_str(), lo)..=(room.as_str(), u64::MAX))?
                .take(cap.saturating_mul(10))
            {
                let (_, v) = item?;
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
