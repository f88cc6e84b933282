//! A call as clients see it, in call events and REST answers: the stored [`Call`] with
//! times as RFC 3339 and the derived fields (recording, duration).

use serde::Serialize;

use super::{Call, CallState, CallType, MediaOptions};
use crate::clock::rfc3339_ms;

/// A call as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    pub id: String,
    pub conversation_id: String,
    pub caller_id: String,
    pub callee_id: String,
    pub call_type: CallType,
    pub state: CallState,
    pub media: MediaOptions,
    /// Recording is on only when both parties consented.
    pub recording: bool,
    pub created_at: String,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    /// `declined`, `cancelled`, `missed`, `hangup` or the reason given.
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
    /// Seconds from answer to end.
    pub duration_secs: u64,
}

impl From<&Call> for CallView {
    fn from(c: &Call) -> Self {
        Self {
            id: c.id.clone(),
            conversation_id: c.conversation_id.clone(),
            caller_id: c.caller_id.clone(),
            callee_id: c.callee_id.clone(),
            call_type: c.call_type,
            state: c.state,
            media: c.media,
            recording: c.media.recording(),
            created_at: rfc3339_ms(c.created_at_ms),
            answered_at: c.answered_at_ms.map(rfc3339_ms),
            ended_at: c.ended_at_ms.map(rfc3339_ms),
            end_reason: c.end_reason.clone(),
            ended_by: c.ended_by.clone(),
            duration_secs: c.duration_secs(),
        }
    }
}
