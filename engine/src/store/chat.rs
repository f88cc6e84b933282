//! The chat contract: [`ChatStore`], persistence of conversations, members, reactions
//! and the quiet-chat index.

use async_trait::async_trait;

use super::StoreError;
use crate::chat::*;
use crate::ids::MessageId;
use crate::message::ChatMessage;

/// Persistence of the chat domain, beside the history (the embedded backend keeps both
/// in one database; nothing here relies on that).
///
/// Contract (checked by [`crate::store::conformance::run_chat`]):
/// - `create_conversation` of a direct conversation between two users who already have
///   one returns that one (`created == false`): concurrent creates of the same pair
///   yield one conversation (the one place a race must have exactly one winner; a
///   distributed backend uses a conditional insert on the pair).
/// - Once [`crate::store::HistoryStore::append`] reported a message of a conversation
///   `Stored`, the conversation's `last_message_id` and `last_activity_ms` reflect it.
///   A backend may write them as a follow-up of the append rather than in the same
///   transaction, because the update is idempotent and monotone: it never moves either
///   back (an older message appended late changes nothing), so retries and reordering
///   are harmless.
/// - `quiet_conversations` reads an index on last activity (oldest first) that holds
///   only open (not closed) conversations; it never scans all conversations.
/// - `update_member(ReadUpTo)` only moves the marker forward (monotone, like activity).
/// - `set_reaction` keeps one reaction per user per message and the counts on the
///   message (as `page` and `get` return it) equal to the per-user reactions.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Stores `conv` (and each participant's membership), or for a direct conversation
    /// returns the pair's existing one. `(conversation, created)`.
    async fn create_conversation(
        &self,
        conv: Conversation,
    ) -> Result<(Conversation, bool), StoreError>;

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError>;

    /// The conversation and `user_id`'s state in it, if `user_id` is a participant.
    async fn membership(
        &self,
        id: &str,
        user_id: &str,
    ) -> Result<Option<(Conversation, MemberState)>, StoreError>;

    /// Every conversation `user_id` participates in, with their state, in no order.
    async fn user_conversations(
        &self,
        user_id: &str,
    ) -> Result<Vec<(Conversation, MemberState)>, StoreError>;

    /// Applies `update`; `None` if `user_id` is not a participant. Returns the state after
    /// and whether it changed.
    async fn update_member(
        &self,
        id: &str,
        user_id: &str,
        update: MemberUpdate,
    ) -> Result<Option<(MemberState, bool)>, StoreError>;

    /// Applies an admin change; `None` for an unknown conversation.
    async fn update_conversation(
        &self,
        id: &str,
        update: ConversationUpdate,
    ) -> Result<Option<Conversation>, StoreError>;

    /// Open conversations whose last activity is before `inactive_since_ms`, least
    /// recently active first, at most `limit`.
    async fn quiet_conversations(
        &self,
        inactive_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError>;

    /// The room a message id belongs to.
    async fn locate_message(&self, id: MessageId) -> Result<Option<String>, StoreError>;

    /// Sets (`Some`) or removes (`None`) `user_id`'s reaction on a message. Returns the
    /// message with its new counts, `None` if there is no such message.
    async fn set_reaction(
        &self,
        room_id: &str,
        id: MessageId,
        user_id: &str,
        reaction: Option<&str>,
    ) -> Result<Option<ChatMessage>, StoreError>;

    /// `user_id`'s current reaction on a message.
    async fn reaction_of(
        &self,
        room_id: &str,
        id: MessageId,
        user_id: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Messages in `room_id` after `after` not sent by `user_id` and not deleted,
    /// counting at most `cap` (and looking at no more than `10 * cap` messages).
    async fn count_unread(
        &self,
        room_id: &str,
        after: Option<MessageId>,
        user_id: &str,
        cap: usize,
    ) -> Result<usize, StoreError>;
}
