//! The call contract: [`CallStore`], durable calls and the busy index.

use async_trait::async_trait;

use super::StoreError;
use crate::calls::*;

/// Keeps calls. Contract (checked by `conformance::run_calls`):
/// - `start` stores a ringing call only if neither party has a live call, atomically
///   (two concurrent calls involving the same user: one wins, the other is `Busy`).
/// - `transition` is a compare-and-set: it applies only from the states the transition
///   allows, and frees both parties when the call ends or is missed.
/// - `live_call_of` returns the user's ringing or active call.
/// - Calls survive a restart of the process (`ringing` ones included, so their ring
///   timeout can be resumed).
#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    async fn start(&self, call: Call) -> Result<Result<Call, StartError>, StoreError>;
    async fn call(&self, id: &str) -> Result<Option<Call>, StoreError>;
    async fn live_call_of(&self, user_id: &str) -> Result<Option<Call>, StoreError>;
    async fn transition(
        &self,
        id: &str,
        t: Transition,
    ) -> Result<Result<Call, TransitionError>, StoreError>;
    /// Every ringing call (to resume ring timeouts after a restart).
    async fn ringing_calls(&self) -> Result<Vec<Call>, StoreError>;
}
