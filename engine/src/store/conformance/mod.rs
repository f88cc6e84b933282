//! The store conformance suite: behaviour every [`HistoryStore`] backend must show.
//! Each backend's tests call [`run`] on a fresh, empty store (the ScyllaDB backend runs
//! it when `ROOMCAST_SCYLLA_NODES` is set).

use super::{
    AppendOutcome, AuditEntry, CallStore, ChatStore, HistoryStore, KeyStore, PageQuery, WriteBatch,
};
use crate::calls::{
    Call, CallState, CallType, MediaOptions, StartError, Transition, TransitionError,
};
use crate::chat::{
    Closure, Conversation, ConversationKind, ConversationUpdate, MemberUpdate, Snooze,
};
use crate::ids::MessageId;
use crate::keys::{IdentityKey, PreKey, PreKeysStored, SignedPreKey};
use crate::message::ChatMessage;

/// A message for tests.
pub fn message(room: &str, id: MessageId, user: &str, client_msg_id: Option<&str>) -> ChatMessage {
    ChatMessage {
        message_id: id,
        room_id: room.to_owned(),
        user_id: user.to_owned(),
        username: format!("{user}-name"),
        content: format!("content {id}"),
        client_msg_id: client_msg_id.map(str::to_owned),
        ..ChatMessage::reference(0, String::new(), String::new(), String::new(), None)
    }
}

fn ids(page: &[ChatMessage]) -> Vec<MessageId> {
    page.iter().map(|m| m.message_id).collect()
}

async fn page(
    store: &dyn HistoryStore,
    room: &str,
    before: Option<u64>,
    after: Option<u64>,
    limit: usize,
) -> Vec<u64> {
    match store
        .page(
            room,
            PageQuery {
                before,
                after,
                limit,
            },
        )
        .await
    {
        Ok(p) => ids(&p),
        Err(e) => panic!("page failed: {e}"),
    }
}

/// Runs every check against `store`, which must start empty. Panics on the first
/// violation with a message naming the contract clause.
pub async fn run(store: &dyn HistoryStore) {
    // Appending: batches, outcomes, duplicates by clientMsgId within and across batches.
    let batch = WriteBatch {
        messages: (1..=10)
            .map(|i| message("room-a", i * 10, "alice", Some(&format!("c{i}"))))
            .collect(),
        audit: vec![],
    };
    let out = store.append(batch).await.expect("append");
    assert_eq!(
        out,
        vec![AppendOutcome::Stored; 10],
        "every new message is stored"
    );

    let dup = WriteBatch {
        messages: vec![
            message("room-a", 200, "alice", Some("c3")),
            message("room-a", 210, "bob", Some("c3")),
            message("room-b", 220, "alice", Some("c3")),
            message("room-a", 230, "carol", Some("x")),
            message("room-a", 240, "carol", Some("x")),
            message("room-a", 10, "dave", None),
        ],
        audit: vec![],
    };
    let out = store.append(dup).await.expect("append");
    assert_eq!(
        out,
        vec![
            AppendOutcome::Duplicate(30),
            AppendOutcome::Stored,
            AppendOutcome::Stored,
            AppendOutcome::Stored,
            AppendOutcome::Duplicate(230),
            AppendOutcome::Duplicate(10),
        ],
        "(room, user, clientMsgId) and (room, id) are unique"
    );
    assert_eq!(
        store
            .find_client_msg("room-a", "alice", "c3")
            .await
            .expect("find"),
        Some(30)
    );
    assert_eq!(
        store
            .find_client_msg("room-a", "alice", "nope")
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        store
            .find_client_msg("room-b", "alice", "c3")
            .await
            .expect("find"),
        Some(220)
    );
    let original = store
        .get("room-a", 10)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        original.user_id, "alice",
        "a duplicate id overwrites nothing"
    );

    // room-a now holds 10..=100 step 10, 210, 230.
    let all = vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 210, 230];
    assert_eq!(
        page(store, "room-a", None, None, 100).await,
        all,
        "ascending order"
    );
    assert_eq!(
        page(store, "room-a", None, None, 3).await,
        vec![100, 210, 230],
        "no bounds: newest"
    );
    assert_eq!(
        page(store, "room-a", Some(100), None, 3).await,
        vec![70, 80, 90],
        "before: newest below"
    );
    assert_eq!(
        page(store, "room-a", None, Some(20), 3).await,
        vec![30, 40, 50],
        "after: oldest above"
    );
    assert_eq!(
        page(store, "room-a", Some(90), Some(20), 3).await,
        vec![60, 70, 80],
        "both: newest in range"
    );
    assert_eq!(
        page(store, "room-a", Some(11), Some(9), 3).await,
        vec![10],
        "bounds are exclusive"
    );
    assert!(page(store, "room-a", Some(10), None, 3).await.is_empty());
    assert!(page(store, "room-a", Some(0), None, 3).await.is_empty());
    assert!(
        page(store, "room-a", None, Some(u64::MAX), 3)
            .await
            .is_empty()
    );
    assert!(page(store, "room-a", None, None, 0).await.is_empty());
    assert!(
        page(store, "room-zzz", None, None, 10).await.is_empty(),
        "unknown room is empty"
    );
    assert_eq!(
        page(store, "room-b", None, None, 10).await,
        vec![220],
        "rooms are separate"
    );

    // Walking backwards page by page visits every message once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let p = page(store, "room-a", before, None, 5).await;
        if p.is_empty() {
            break;
        }
        before = p.first().copied();
        seen.splice(0..0, p);
    }
    assert_eq!(seen, all, "backward paging is contiguous");

    // Tombstones keep the place, drop the content, and are idempotent.
    assert!(store.tombstone("room-a", 40).await.expect("tombstone"));
    assert!(
        store
            .tombstone("room-a", 40)
            .await
            .expect("tombstone again")
    );
    assert!(
        !store
            .tombstone("room-a", 41)
            .await
            .expect("tombstone missing")
    );
    let t = store
        .get("room-a", 40)
        .await
        .expect("get")
        .expect("still there");
    assert!(t.deleted && t.content.is_empty());
    assert_eq!(t.user_id, "alice");
    assert_eq!(
        page(store, "room-a", Some(50), Some(30), 10).await,
        vec![40],
        "tombstones stay in pages"
    );
    assert_eq!(store.get("room-a", 41).await.expect("get"), None);

    // Audit entries: stored with the batch, read in id order.
    let entry = |id: u64| AuditEntry {
        id,
        at_ms: id,
        action: "masked".into(),
        user_id: "alice".into(),
        room_id: "room-a".into(),
        message_id: Some(id),
        detail: "1 word".into(),
    };
    store
        .append(WriteBatch {
            messages: vec![message("room-c", 5, "z", None)],
            audit: vec![entry(2), entry(1)],
        })
        .await
        .expect("append audit");
    store
        .append(WriteBatch {
            messages: vec![],
            audit: vec![entry(3)],
        })
        .await
        .expect("audit only");
    let audit = store.audit_page(None, 10).await.expect("audit page");
    assert_eq!(
        audit.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(audit[0], entry(1));
    let audit = store.audit_page(Some(1), 1).await.expect("audit page");
    assert_eq!(audit.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2]);
}

/// A conversation for tests: direct for two participants, a group otherwise.
pub fn conversation(id: &str, participants: &[&str], created_at_ms: u64) -> Conversation {
    let mut participant_ids: Vec<String> = participants.iter().map(|p| (*p).to_owned()).collect();
    participant_ids.sort();
    Conversation {
        id: id.to_owned(),
        kind: if participants.len() == 2 {
            ConversationKind::Direct
        } else {
            ConversationKind::Group
        },
        participant_ids,
        title: None,
        created_by: participants
            .first()
            .map_or(String::new(), |p| (*p).to_owned()),
        created_at_ms,
        last_activity_ms: created_at_ms,
        last_message_id: None,
        closed: None,
        snoozed: None,
    }
}

/// The [`ChatStore`] half of the suite. Runs after [`run`] on the same store.
/// A base time for the chat checks (2027), after the id epoch.
const T0: u64 = 1_800_000_000_000;

pub async fn run_chat<S: ChatStore + HistoryStore>(store: &S) {
    // Direct conversations are one per pair, also when created concurrently.
    let (a, created) = store
        .create_conversation(conversation("conv_1", &["ann", "bob"], T0 + 1_000))
        .await
        .expect("create");
    assert!(created);
    let (again, created) = store
        .create_conversation(conversation("conv_2", &["ann", "bob"], T0 + 2_000))
        .await
        .expect("create again");
    assert!(
        !created,
        "a second direct conversation for a pair was created"
    );
    assert_eq!(again.id, a.id);
    let results = futures_join(
        (0..8)
            .map(|i| {
                store.create_conversation(conversation(
                    &format!("conv_race{i}"),
                    &["cat", "dan"],
                    T0 + 3_000,
                ))
            })
            .collect(),
    )
    .await;
    let ids: std::collections::HashSet<String> = results
        .into_iter()
        .map(|r| r.expect("create").0.id)
        .collect();
    assert_eq!(ids.len(), 1, "concurrent direct creates made {ids:?}");
    let (group, created) = store
        .create_conversation(conversation("conv_g", &["ann", "bob", "cat"], T0 + 4_000))
        .await
        .expect("group");
    assert!(created && group.kind == ConversationKind::Group);

    // Membership and a user's conversations.
    assert!(
        store
            .membership("conv_1", "ann")
            .await
            .expect("m")
            .is_some()
    );
    assert!(
        store
            .membership("conv_1", "cat")
            .await
            .expect("m")
            .is_none()
    );
    assert!(
        store
            .membership("conv_nope", "ann")
            .await
            .expect("m")
            .is_none()
    );
    let mut mine: Vec<String> = store
        .user_conversations("ann")
        .await
        .expect("list")
        .into_iter()
        .map(|(c, _)| c.id)
        .collect();
    mine.sort();
    assert_eq!(mine, vec!["conv_1".to_owned(), "conv_g".to_owned()]);
    assert!(
        store
            .user_conversations("an")
            .await
            .expect("list")
            .is_empty()
    );

    // Appending to a conversation moves its last activity; locate finds the room.
    let msgs = vec![
        message("conv_1", crate::ids::first_id_at(T0 + 5_000), "ann", None),
        message("conv_1", crate::ids::first_id_at(T0 + 6_000), "bob", None),
        message("conv_1", crate::ids::first_id_at(T0 + 7_000), "bob", None),
    ];
    store
        .append(WriteBatch {
            messages: msgs.clone(),
            audit: vec![],
        })
        .await
        .expect("append");
    let c1 = store
        .conversation("conv_1")
        .await
        .expect("get")
        .expect("c1");
    assert_eq!(c1.last_message_id, Some(msgs[2].message_id));
    assert_eq!(c1.last_activity_ms, T0 + 7_000);
    assert_eq!(
        store
            .locate_message(msgs[1].message_id)
            .await
            .expect("locate"),
        Some("conv_1".to_owned())
    );
    assert_eq!(store.locate_message(1).await.expect("locate"), None);

    // Unread counts skip the reader's own messages; read markers only move forward.
    assert_eq!(
        store
            .count_unread("conv_1", None, "ann", 100)
            .await
            .expect("count"),
        2
    );
    assert_eq!(
        store
            .count_unread("conv_1", None, "ann", 1)
            .await
            .expect("count"),
        1
    );
    let up = |id| store.update_member("conv_1", "ann", MemberUpdate::ReadUpTo(id));
    let (state, changed) = up(msgs[1].message_id).await.expect("read").expect("member");
    assert!(changed && state.last_read_id == Some(msgs[1].message_id));
    let (state, changed) = up(msgs[0].message_id).await.expect("read").expect("member");
    assert!(!changed && state.last_read_id == Some(msgs[1].message_id));
    assert_eq!(
        store
            .count_unread("conv_1", state.last_read_id, "ann", 100)
            .await
            .expect("count"),
        1
    );
    assert!(
        store
            .update_member("conv_1", "cat", MemberUpdate::Archive(true))
            .await
            .expect("archive")
            .is_none()
    );
    let (state, _) = store
        .update_member("conv_1", "bob", MemberUpdate::Archive(true))
        .await
        .expect("archive")
        .expect("member");
    assert!(state.archived);

    // Reactions: one per user, replaceable, removable; counts on the message.
    let mid = msgs[0].message_id;
    let react =
        |user: &'static str, r: Option<&'static str>| store.set_reaction("conv_1", mid, user, r);
    react("ann", Some("like")).await.expect("react");
    react("bob", Some("like")).await.expect("react");
    let m = react("bob", Some("love"))
        .await
        .expect("react")
        .expect("msg");
    assert_eq!(m.reactions.get("like"), Some(&1));
    assert_eq!(m.reactions.get("love"), Some(&1));
    let m = react("ann", None).await.expect("react").expect("msg");
    assert_eq!(m.reactions.get("like"), None);
    let got = store.get("conv_1", mid).await.expect("get").expect("msg");
    assert_eq!(got.reactions, m.reactions);
    assert_eq!(
        store.reaction_of("conv_1", mid, "bob").await.expect("of"),
        Some("love".to_owned())
    );
    assert!(
        store
            .set_reaction("conv_1", 12345, "ann", Some("like"))
            .await
            .expect("react")
            .is_none()
    );

    // Quiet conversations: from the activity index, oldest first, closed ones left out.
    let quiet: Vec<String> = store
        .quiet_conversations(T0 + 5_000, 10)
        .await
        .expect("quiet")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(quiet.len(), 2, "{quiet:?}");
    assert!(quiet.ends_with(&["conv_g".to_owned()]));
    store
        .update_conversation(
            "conv_g",
            ConversationUpdate::Close(Closure {
                at_ms: 8_000,
                by: "admin".into(),
                reason: Some("test".into()),
            }),
        )
        .await
        .expect("close")
        .expect("found");
    let quiet = store
        .quiet_conversations(T0 + 5_000, 10)
        .await
        .expect("quiet");
    assert_eq!(quiet.len(), 1);
    assert_eq!(
        store
            .quiet_conversations(T0 + 5_000, 0)
            .await
            .expect("quiet")
            .len(),
        0
    );
    assert!(
        store
            .conversation("conv_g")
            .await
            .expect("get")
            .and_then(|c| c.closed)
            .is_some()
    );
    assert!(
        store
            .update_conversation(
                "conv_none",
                ConversationUpdate::Snooze(Snooze {
                    at_ms: 0,
                    until_ms: 1,
                    by: "x".into(),
                    reason: None
                })
            )
            .await
            .expect("snooze")
            .is_none()
    );
}

/// Polls every future to completion concurrently (no futures crate needed).
async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

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

fn pre_key(id: u32) -> PreKey {
    PreKey {
        key_id: id,
        public_key: format!("key-{id}"),
    }
}

/// The [`KeyStore`] checks, including the exactly-once hand-out of one-time pre-keys.
pub async fn run_keys<S: KeyStore>(store: &S) {
    assert!(store.identity_key("ann").await.expect("get").is_none());
    for id in [1, 2] {
        store
            .put_identity_key(
                "ann",
                IdentityKey {
                    key_id: id,
                    identity_key: format!("ik-{id}"),
                },
            )
            .await
            .expect("put");
    }
    assert_eq!(
        store
            .identity_key("ann")
            .await
            .expect("get")
            .map(|k| k.key_id),
        Some(2),
        "a new identity key replaces the old"
    );
    store
        .put_signed_pre_key(
            "ann",
            SignedPreKey {
                key_id: 7,
                public_key: "spk".into(),
                signature: "sig".into(),
            },
        )
        .await
        .expect("put");
    assert_eq!(
        store
            .signed_pre_key("ann")
            .await
            .expect("get")
            .map(|k| k.key_id),
        Some(7)
    );

    // 20 keys, 50 concurrent takers: exactly 20 distinct keys handed out.
    let out = store
        .put_pre_keys("ann", (1..=20).map(pre_key).collect())
        .await
        .expect("put");
    assert_eq!(out, PreKeysStored::Stored { total: 20 });
    let taken = futures_join((0..50).map(|_| store.take_pre_key("ann")).collect()).await;
    let keys: Vec<u32> = taken
        .iter()
        .filter_map(|t| t.as_ref().expect("take").key.as_ref().map(|k| k.key_id))
        .collect();
    let distinct: std::collections::HashSet<u32> = keys.iter().copied().collect();
    assert_eq!((keys.len(), distinct.len()), (20, 20));
    assert_eq!(store.pre_key_count("ann").await.expect("count"), 0);
    let last = store.take_pre_key("ann").await.expect("take");
    assert_eq!((last.key, last.remaining), (None, 0));

    // Caps: a batch that would pass the total is refused whole.
    let big: Vec<PreKey> = (0..crate::keys::MAX_PRE_KEYS_TOTAL as u32)
        .map(pre_key)
        .collect();
    assert_eq!(
        store.put_pre_keys("bob", big).await.expect("put"),
        PreKeysStored::Stored {
            total: crate::keys::MAX_PRE_KEYS_TOTAL
        }
    );
    assert_eq!(
        store
            .put_pre_keys("bob", vec![pre_key(5_000)])
            .await
            .expect("put"),
        PreKeysStored::OverCap {
            current: crate::keys::MAX_PRE_KEYS_TOTAL
        }
    );
    // Re-uploading an existing key id replaces it without counting twice.
    assert_eq!(
        store
            .put_pre_keys("bob", vec![pre_key(3)])
            .await
            .expect("put"),
        PreKeysStored::Stored {
            total: crate::keys::MAX_PRE_KEYS_TOTAL
        }
    );
    let t = store.take_pre_key("bob").await.expect("take");
    assert_eq!(t.remaining, crate::keys::MAX_PRE_KEYS_TOTAL - 1);
    assert_eq!(
        store.pre_key_count("ann").await.expect("count"),
        0,
        "per user"
    );
}
