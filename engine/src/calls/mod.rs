//! Audio and video call signalling (seed 000, "Video Call Functions"): the call state
//! machine, the [`CallService`] around it, and the wire view of a call; the
//! `CallStore` (in `store`) keeps calls. The media itself flows through
//! an external provider (LiveKit-style); roomcast decides who may call whom, tracks the
//! call's state, tells both parties on every session, and issues provider tokens.
//!
//! ```text
//!   ringing --accept (callee)----------> active --end (either)--> ended (hangup/reason)
//!   ringing --end (callee)-------------> ended (declined)
//!   ringing --end (caller)-------------> ended (cancelled)
//!   ringing --no answer in time--------> missed
//! ```
//!
//! A user is in at most one call (ringing or active) at a time: starting a call when
//! either party is busy fails with `busy`. Every transition is a compare-and-set on the
//! stored state, so racing requests (double accept, accept after end) see exactly one
//! winner.

mod service;
mod view;

use serde::{Deserialize, Serialize};

pub use service::{CallError, CallService, StartCall};
pub use view::CallView;

/// Every call id starts with this.
pub const CALL_PREFIX: &str = "call_";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CallType {
    #[default]
    Audio,
    Video,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Audio => "audio",
            CallType::Video => "video",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Ringing,
    Active,
    Ended,
    Missed,
}

impl CallState {
    /// Ringing or active: the parties are busy.
    pub fn is_live(self) -> bool {
        matches!(self, CallState::Ringing | CallState::Active)
    }
}

/// The media options of a call. Screen sharing is offered on video calls; recording
/// needs both parties' consent (the caller's when calling, the callee's when accepting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MediaOptions {
    pub screen_share: bool,
    pub caller_consents_to_recording: bool,
    pub callee_consents_to_recording: bool,
}

impl MediaOptions {
    /// Recording is allowed only when both parties consented.
    pub fn recording(&self) -> bool {
        self.caller_consents_to_recording && self.callee_consents_to_recording
    }
}

/// A call as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub id: String,
    pub conversation_id: String,
    pub caller_id: String,
    pub callee_id: String,
    pub call_type: CallType,
    pub state: CallState,
    pub media: MediaOptions,
    pub created_at_ms: u64,
    #[serde(default)]
    pub answered_at_ms: Option<u64>,
    #[serde(default)]
    pub ended_at_ms: Option<u64>,
    /// `declined`, `cancelled`, `missed`, `hangup` or the reason given to `end`.
    #[serde(default)]
    pub end_reason: Option<String>,
    #[serde(default)]
    pub ended_by: Option<String>,
}

impl Call {
    pub fn is_party(&self, user_id: &str) -> bool {
        self.caller_id == user_id || self.callee_id == user_id
    }

    /// The other party.
    pub fn partner_of(&self, user_id: &str) -> &str {
        if self.caller_id == user_id {
            &self.callee_id
        } else {
            &self.caller_id
        }
    }

    /// Seconds from answer to end (0 for a call never answered).
    pub fn duration_secs(&self) -> u64 {
        match (self.answered_at_ms, self.ended_at_ms) {
            (Some(a), Some(e)) => e.saturating_sub(a) / 1000,
            _ => 0,
        }
    }

    /// The system message a finished call leaves in its conversation.
    pub fn summary(&self) -> String {
        let kind = match self.call_type {
            CallType::Audio => "audio call",
            CallType::Video => "video call",
        };
        let cap = |s: &str| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        };
        match (self.state, self.end_reason.as_deref()) {
            (CallState::Missed, _) => format!("Missed {kind}"),
            (CallState::Ended, Some("declined")) => format!("Declined {kind}"),
            (CallState::Ended, Some("cancelled")) => format!("Cancelled {kind}"),
            _ => {
                let secs = self.duration_secs();
                let length = if secs < 60 {
                    format!("{secs} s")
                } else {
                    format!("{} min", secs.div_ceil(60))
                };
                format!("{}, {length}", cap(kind))
            }
        }
    }
}

/// A requested state change, applied by [`CallStore::transition`] only if the call is
/// in the state it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// ringing -> active, by the callee, with their recording consent.
    Accept { at_ms: u64, recording_consent: bool },
    /// ringing|active -> ended.
    End {
        at_ms: u64,
        by: String,
        reason: String,
    },
    /// ringing -> missed.
    Miss { at_ms: u64 },
}

/// Why a transition did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    NotFound,
    /// The call is not in a state that allows it; here is the call as it is.
    Conflict(Box<Call>),
}

/// Why a call could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// This user (caller or callee) is already in a live call.
    Busy { user_id: String },
}

/// Applies `t` to `call` if its state allows; the pure core of every backend's
/// `transition`.
pub fn apply(call: &Call, t: &Transition) -> Result<Call, TransitionError> {
    let mut next = call.clone();
    match (call.state, t) {
        (
            CallState::Ringing,
            Transition::Accept {
                at_ms,
                recording_consent,
            },
        ) => {
            next.state = CallState::Active;
            next.answered_at_ms = Some(*at_ms);
            next.media.callee_consents_to_recording = *recording_consent;
        }
        (CallState::Ringing | CallState::Active, Transition::End { at_ms, by, reason }) => {
            next.state = CallState::Ended;
            next.ended_at_ms = Some(*at_ms);
            next.ended_by = Some(by.clone());
            next.end_reason = Some(if call.state == CallState::Ringing {
                if *by == call.callee_id {
                    "declined".to_owned()
                } else {
                    "cancelled".to_owned()
                }
            } else {
                reason.clone()
            });
        }
        (CallState::Ringing, Transition::Miss { at_ms }) => {
            next.state = CallState::Missed;
            next.ended_at_ms = Some(*at_ms);
            next.end_reason = Some("missed".to_owned());
        }
        _ => return Err(TransitionError::Conflict(Box::new(call.clone()))),
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ringing() -> Call {
        Call {
            id: "call_1".into(),
            conversation_id: "conv_1".into(),
            caller_id: "ann".into(),
            callee_id: "bob".into(),
            call_type: CallType::Video,
            state: CallState::Ringing,
            media: MediaOptions {
                screen_share: true,
                caller_consents_to_recording: true,
                callee_consents_to_recording: false,
            },
            created_at_ms: 1_000,
            answered_at_ms: None,
            ended_at_ms: None,
            end_reason: None,
            ended_by: None,
        }
    }

    fn end(by: &str) -> Transition {
        Transition::End {
            at_ms: 5_000,
            by: by.into(),
            reason: "hangup".into(),
        }
    }

    #[test]
    fn the_state_machine_allows_only_its_edges() {
        let c = ringing();
        let accepted = apply(
            &c,
            &Transition::Accept {
                at_ms: 2_000,
                recording_consent: true,
            },
        )
        .expect("accept");
        assert_eq!(accepted.state, CallState::Active);
        assert!(accepted.media.recording());
        assert!(matches!(
            apply(
                &accepted,
                &Transition::Accept {
                    at_ms: 3_000,
                    recording_consent: false
                }
            ),
            Err(TransitionError::Conflict(_))
        ));
        assert!(matches!(
            apply(&accepted, &Transition::Miss { at_ms: 9 }),
            Err(TransitionError::Conflict(_))
        ));
        let ended = apply(&accepted, &end("bob")).expect("end");
        assert_eq!(ended.end_reason.as_deref(), Some("hangup"));
        assert_eq!(ended.duration_secs(), 3);
        assert_eq!(ended.summary(), "Video call, 3 s");
        assert!(apply(&ended, &end("ann")).is_err());
        assert_eq!(
            apply(&c, &end("bob")).map(|c| c.summary()),
            Ok("Declined video call".into())
        );
        assert_eq!(
            apply(&c, &end("ann")).map(|c| c.end_reason),
            Ok(Some("cancelled".into()))
        );
        let missed = apply(&c, &Transition::Miss { at_ms: 9 }).expect("miss");
        assert_eq!(missed.summary(), "Missed video call");
        let mut long = ended.clone();
        long.call_type = CallType::Audio;
        long.ended_at_ms = Some(2_000 + 4 * 60_000);
        assert_eq!(long.summary(), "Audio call, 4 min");
    }
}
