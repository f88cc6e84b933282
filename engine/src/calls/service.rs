//! The call service: who may call whom, the ring timeout (resumed after a restart),
//! call events to both parties on every session, and the system message a finished
//! call leaves in its conversation. The HTTP routes only parse, authorise the token and
//! map errors; the state machine is `calls::apply`, kept by the `CallStore`.
//!
//! Ring timers are tasks, one per ringing call, that end at the ring deadline or when
//! the service is stopped at shutdown. In a cluster, the node that started a call
//! holds its timer, and the owner of the call's conversation sweeps for calls overdue
//! by a second (a dead node's timers); `resume` at start-up re-arms every ringing call.
//! The compare-and-set transition makes a second timer for the same call harmless (one
//! `Miss` wins, the other sees a conflict), so the timeout fires once.

use std::sync::Arc;
use std::time::Duration;

use super::view::CallView;
use super::{
    CALL_PREFIX, Call, CallState, CallType, MediaOptions, StartError, Transition, TransitionError,
};
use crate::chat::{ConversationStatus, SYSTEM_SENDER};
use crate::clock::now_unix_ms;
use crate::engine::Engine;
use crate::error::{ClientError, ErrorCode};
use crate::message::MessageType;
use crate::metrics as m;
use crate::protocol::encode_event;
use crate::publish::SendRequest;
use crate::store::StoreError;
use crate::user::UserInfo;

/// Why a call operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The client's mistake or a rule (not found, busy, conflict, forbidden).
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A call to start.
#[derive(Debug, Clone)]
pub struct StartCall {
    pub partner_id: String,
    pub call_type: CallType,
    /// Offer screen sharing (video calls only).
    pub screen_share: bool,
    /// The caller consents to recording.
    pub recording: bool,
}

/// See the module doc; `Engine::calls` hands one out.
#[derive(Debug)]
pub struct CallService<'a> {
    pub(crate) engine: &'a Engine,
}

fn call_not_found() -> ClientError {
    ClientError::new(ErrorCode::CallNotFound, "no such call")
}

fn conflict(call: &Call, what: &str) -> ClientError {
    let state = serde_json::to_value(call.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    ClientError::new(
        ErrorCode::CallStateConflict,
        format!("cannot {what} a call that is {state}"),
    )
}

impl CallService<'_> {
    /// Rings `req.partner_id`: only between users who share an active conversation
    /// (`forbidden` otherwise; `user_not_found` for a partner with no conversation at
    /// all); `busy` when either is already in a call.
    pub async fn start(&self, caller: &str, req: StartCall) -> Result<Call, CallError> {
        if req.partner_id == caller {
            return Err(
                ClientError::new(ErrorCode::InvalidField, "you cannot call yourself")
                    .on_field("partnerId")
                    .into(),
            );
        }
        if req.screen_share && req.call_type != CallType::Video {
            return Err(ClientError::new(
                ErrorCode::InvalidField,
                "screen sharing is offered on video calls",
            )
            .on_field("screenShare")
            .into());
        }
        let chat = self.engine.store();
        let now = now_unix_ms();
        // A shared active conversation; a direct one if there is one.
        let mut shared: Vec<_> = chat
            .user_conversations(caller)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .filter(|c| {
                c.is_participant(&req.partner_id) && c.state_at(now) == ConversationStatus::Active
            })
            .collect();
        shared.sort_by_key(|c| {
            (
                c.participant_ids.len(),
                std::cmp::Reverse(c.last_activity_ms),
            )
        });
        let Some(conv) = shared.into_iter().next() else {
            // Told apart only now, so the common case reads one user's conversations.
            let known = !chat.user_conversations(&req.partner_id).await?.is_empty();
            return Err(if known {
                ClientError::new(
                    ErrorCode::Forbidden,
                    "calls are only possible within an active conversation",
                )
            } else {
                ClientError::new(ErrorCode::UserNotFound, "no such user")
            }
            .into());
        };
        let call = Call {
            id: format!("{CALL_PREFIX}{}", self.engine.next_id()),
            conversation_id: conv.id,
            caller_id: caller.to_owned(),
            callee_id: req.partner_id,
            call_type: req.call_type,
            state: CallState::Ringing,
            media: MediaOptions {
                screen_share: req.screen_share,
                caller_consents_to_recording: req.recording,
                callee_consents_to_recording: false,
            },
            created_at_ms: now,
            answered_at_ms: None,
            ended_at_ms: None,
            end_reason: None,
            ended_by: None,
        };
        match self.engine.stores().calls.start(call).await? {
            Ok(call) => {
                metrics::counter!(m::CALLS_STARTED, "type" => call.call_type.as_str()).increment(1);
                self.tell_both(&call, "call_incoming");
                self.schedule_ring_timeout(&call);
                Ok(call)
            }
            Err(StartError::Busy { user_id }) => {
                let who = if user_id == caller {
                    "you are"
                } else {
                    "your partner is"
                };
                Err(ClientError::new(ErrorCode::Busy, format!("{who} already in a call")).into())
            }
        }
    }

    /// The call `id` if `user_id` is one of its parties (`call_not_found` otherwise,
    /// whether or not it exists).
    pub async fn party_call(&self, id: &str, user_id: &str) -> Result<Call, CallError> {
        if !id.starts_with(CALL_PREFIX) {
            return Err(call_not_found().into());
        }
        self.engine
            .stores()
            .calls
            .call(id)
            .await?
            .filter(|c| c.is_party(user_id))
            .ok_or_else(|| call_not_found().into())
    }

    /// The callee answers a ringing call.
    pub async fn accept(
        &self,
        id: &str,
        user_id: &str,
        recording: bool,
    ) -> Result<Call, CallError> {
        let call = self.party_call(id, user_id).await?;
        if call.callee_id != user_id {
            return Err(ClientError::new(
                ErrorCode::Forbidden,
                "only the callee may accept a call",
            )
            .into());
        }
        let t = Transition::Accept {
            at_ms: now_unix_ms(),
            recording_consent: recording,
        };
        match self.engine.stores().calls.transition(&call.id, t).await? {
            Ok(call) => {
                self.tell_both(&call, "call_accepted");
                Ok(call)
            }
            Err(TransitionError::NotFound) => Err(call_not_found().into()),
            Err(TransitionError::Conflict(c)) => Err(conflict(&c, "accept").into()),
        }
    }

    /// Either party ends the call (a ringing one is declined or cancelled).
    pub async fn end(&self, id: &str, user_id: &str, reason: String) -> Result<Call, CallError> {
        let call = self.party_call(id, user_id).await?;
        let t = Transition::End {
            at_ms: now_unix_ms(),
            by: user_id.to_owned(),
            reason,
        };
        match self.engine.stores().calls.transition(&call.id, t).await? {
            Ok(call) => {
                self.finished(&call).await;
                Ok(call)
            }
            Err(TransitionError::NotFound) => Err(call_not_found().into()),
            Err(TransitionError::Conflict(c)) => Err(conflict(&c, "end").into()),
        }
    }

    /// `user_id`'s ringing or active call.
    pub async fn active(&self, user_id: &str) -> Result<Call, CallError> {
        self.engine
            .stores()
            .calls
            .live_call_of(user_id)
            .await?
            .ok_or_else(|| ClientError::new(ErrorCode::CallNotFound, "no call in progress").into())
    }

    /// Whether `call` may still be joined (ringing or active), else the conflict.
    pub fn check_live(&self, call: &Call) -> Result<(), CallError> {
        if call.state.is_live() {
            Ok(())
        } else {
            Err(conflict(call, "join").into())
        }
    }

    /// At start-up: resume the ring timeouts of calls that were ringing when the node
    /// stopped (those already past their deadline become missed at once).
    pub async fn resume(&self) {
        match self.engine.stores().calls.ringing_calls().await {
            Ok(calls) => {
                if !calls.is_empty() {
                    tracing::info!(count = calls.len(), "resuming ring timeouts");
                }
                for call in &calls {
                    self.schedule_ring_timeout(call);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read ringing calls"),
        }
    }

    /// Ends every ring timer (at shutdown; `resume` re-arms them at the next start).
    pub fn stop(&self) {
        let _ = self.engine.inner.timers_stop.send(true);
    }

    /// Tells both parties, on every session they have open.
    fn tell_both(&self, call: &Call, kind: &'static str) {
        let frame = encode_event(kind, &serde_json::json!({"call": CallView::from(call)}));
        for user in [&call.caller_id, &call.callee_id] {
            self.engine.notify_user(user, kind, &frame);
        }
    }

    /// After a call finishes: both parties get `call_ended`, the conversation a system
    /// message ("Missed video call", "Audio call, 4 min").
    async fn finished(&self, call: &Call) {
        self.tell_both(call, "call_ended");
        let outcome = match (call.state, call.end_reason.as_deref()) {
            (CallState::Missed, _) => "missed",
            (_, Some("declined")) => "declined",
            (_, Some("cancelled")) => "cancelled",
            _ => "completed",
        };
        metrics::counter!(m::CALLS_FINISHED, "outcome" => outcome).increment(1);
        let conv = match self
            .engine
            .store()
            .conversation(&call.conversation_id)
            .await
        {
            Ok(Some(c)) => c,
            _ => return,
        };
        let req = SendRequest {
            conversation: conv,
            sender: Arc::new(UserInfo {
                user_id: SYSTEM_SENDER.to_owned(),
                username: SYSTEM_SENDER.to_owned(),
                is_admin: true,
            }),
            content: call.summary(),
            message_type: MessageType::System,
            attachments: Vec::new(),
            client_msg_id: Some(format!("{}-summary", call.id)),
            admin: true,
            encrypted: false,
        };
        if let Err(e) = self.engine.send(req).await {
            tracing::info!(call_id = %call.id, error = %e, "call summary not posted");
        }
    }

    /// Rings for the configured timeout from the call's start, then marks it missed
    /// unless it was answered or ended meanwhile.
    fn schedule_ring_timeout(&self, call: &Call) {
        let wait = Duration::from_millis(self.deadline_of(call).saturating_sub(now_unix_ms()));
        let (engine, id) = (self.engine.clone(), call.id.clone());
        let mut stop = self.engine.inner.timers_stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return,
                _ = tokio::time::sleep(wait) => {}
            }
            engine.calls().miss(&id).await;
        });
    }

    fn deadline_of(&self, call: &Call) -> u64 {
        let timeout = self.engine.config().call_ring_timeout;
        call.created_at_ms + timeout.as_millis() as u64
    }

    /// Marks a ringing call missed (a compare-and-set in the store: when several timers
    /// race, one wins and the others see it answered or ended) and, for the winner,
    /// tells both parties and posts the summary.
    async fn miss(&self, id: &str) {
        let t = Transition::Miss {
            at_ms: now_unix_ms(),
        };
        match self.engine.stores().calls.transition(id, t).await {
            Ok(Ok(call)) => self.finished(&call).await,
            Ok(Err(_)) => {} // answered or ended in time
            Err(e) => tracing::warn!(call_id = %id, error = %e, "ring timeout not applied"),
        }
    }

    /// In a cluster: misses the ringing calls overdue by more than `grace` whose
    /// conversation this node sequences. The node that started a call holds its timer;
    /// this sweep fires the timers of nodes that died (the conversation's new owner
    /// runs it), so a ring timeout fires once in the cluster whichever node is lost.
    pub(crate) async fn sweep_overdue(&self, grace: Duration, owns: impl Fn(&str) -> bool) {
        let calls = match self.engine.stores().calls.ringing_calls().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "ring sweep: cannot read ringing calls");
                return;
            }
        };
        let now = now_unix_ms();
        let grace = grace.as_millis() as u64;
        for call in calls {
            if self.deadline_of(&call) + grace < now && owns(&call.conversation_id) {
                tracing::info!(call_id = %call.id, "ring timeout fired by the sweep");
                self.miss(&call.id).await;
            }
        }
    }
}
