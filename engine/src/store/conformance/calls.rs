//! The call store's conformance checks.

use super::*;

/// A ringing call for tests.
pub fn call(id: &str, caller: &str, callee: &str) -> Call {
    Call {
        id: id.to_owned(),
        conversation_id: "conv_1".to_owned(),
        caller_id: caller.to_owned(),
        callee_id: callee.to_owned(),
        call_type: CallType::Audio,
        state: CallState::Ringing,
        media: MediaOptions::default(),
        created_at_ms: T0,
        answered_at_ms: None,
        ended_at_ms: None,
        end_reason: None,
        ended_by: None,
    }
}

/// The [`CallStore`] checks.
pub async fn run_calls<S: CallStore>(store: &S) {
    let started = store
        .start(call("call_1", "ann", "bob"))
        .await
        .expect("start");
    assert!(started.is_ok());
    // Busy: either party in a live call; concurrent starts for one user, one winner.
    let busy = store
        .start(call("call_2", "cat", "bob"))
        .await
        .expect("start");
    assert_eq!(
        busy,
        Err(StartError::Busy {
            user_id: "bob".into()
        })
    );
    let racing = futures_join(
        (0..6)
            .map(|i| store.start(call(&format!("call_r{i}"), &format!("x{i}"), "dan")))
            .collect(),
    )
    .await;
    let winners = racing
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(_))))
        .count();
    assert_eq!(winners, 1, "one of the concurrent calls to dan rings");
    assert_eq!(
        store.live_call_of("ann").await.expect("live").map(|c| c.id),
        Some("call_1".into())
    );
    // Compare-and-set transitions: double accept, accept after end.
    let accept = || Transition::Accept {
        at_ms: T0 + 1_000,
        recording_consent: false,
    };
    let ok = store.transition("call_1", accept()).await.expect("accept");
    assert_eq!(ok.map(|c| c.state), Ok(CallState::Active));
    let again = store.transition("call_1", accept()).await.expect("accept");
    assert!(matches!(again, Err(TransitionError::Conflict(_))));
    let end = Transition::End {
        at_ms: T0 + 61_000,
        by: "ann".into(),
        reason: "hangup".into(),
    };
    let ended = store.transition("call_1", end.clone()).await.expect("end");
    assert_eq!(ended.map(|c| c.duration_secs()), Ok(60));
    assert!(matches!(
        store
            .transition("call_1", accept())
            .await
            .expect("late accept"),
        Err(TransitionError::Conflict(_))
    ));
    assert_eq!(
        store.transition("call_404", end).await.expect("missing"),
        Err(TransitionError::NotFound)
    );
    // Ending frees both parties.
    assert!(store.live_call_of("bob").await.expect("live").is_none());
    assert!(
        store
            .start(call("call_3", "bob", "ann"))
            .await
            .expect("start")
            .is_ok()
    );
    let ringing: Vec<String> = store
        .ringing_calls()
        .await
        .expect("ringing")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(ringing.contains(&"call_3".to_owned()) && !ringing.contains(&"call_1".to_owned()));
    let missed = store
        .transition("call_3", Transition::Miss { at_ms: T0 + 45_000 })
        .await
        .expect("miss");
    assert_eq!(missed.map(|c| c.state), Ok(CallState::Missed));
    assert!(store.live_call_of("ann").await.expect("live").is_none());
    assert_eq!(
        store.call("call_3").await.expect("get").map(|c| c.state),
        Some(CallState::Missed)
    );
}
