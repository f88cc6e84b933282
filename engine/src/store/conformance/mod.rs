//! The store conformance suite: behaviour every backend of the four contracts must
//! show. Each backend's tests call [`run`], then [`run_chat`], [`run_calls`] and
//! [`run_keys`], on a fresh, empty store. Built for tests and for backends only
//! (`feature = "conformance"`).

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
        // Distinct from the id, so a backend that confuses the two is caught.
        seq: id + 1,
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
    // A history spread thin over time (one message an hour for 100 hours) pages like a
    // dense one: a backend that partitions by time walks every partition it needs.
    let hour = 3_600_000;
    let spread: Vec<ChatMessage> = (0..100u64)
        .map(|i| {
            message(
                "spread",
                crate::ids::first_id_at(T0 + i * hour + 1),
                "sam",
                None,
            )
        })
        .collect();
    store
        .append(WriteBatch {
            messages: spread.clone(),
            audit: vec![],
        })
        .await
        .expect("append spread");
    let all = store
        .page(
            "spread",
            PageQuery {
                before: None,
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("page");
    assert_eq!(
        ids(&all),
        ids(&spread),
        "a page across 100 hours of history"
    );
    let newest = store
        .page(
            "spread",
            PageQuery {
                before: None,
                after: None,
                limit: 80,
            },
        )
        .await
        .expect("page");
    assert_eq!(
        ids(&newest),
        ids(&spread[20..]),
        "the newest 80 across partitions"
    );
    let forward = store
        .page(
            "spread",
            PageQuery {
                before: None,
                after: Some(spread[9].message_id),
                limit: 70,
            },
        )
        .await
        .expect("page");
    assert_eq!(
        ids(&forward),
        ids(&spread[10..80]),
        "the oldest 70 after the 10th"
    );

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
    // Appends are idempotent: retrying a batch that was stored stores nothing twice.
    let retry = WriteBatch {
        messages: (1..=10)
            .map(|i| message("room-a", i * 10, "alice", Some(&format!("c{i}"))))
            .collect(),
        audit: vec![],
    };
    assert_eq!(
        store.append(retry).await.expect("append"),
        (1..=10)
            .map(|i| AppendOutcome::Duplicate(i * 10))
            .collect::<Vec<_>>(),
        "a retried batch is all duplicates of itself"
    );
    let got = store.get("room-a", 30).await.expect("get").expect("stored");
    assert_eq!(got.seq, 31, "a message keeps its seq");
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

mod calls;
mod chat;
mod keys;

/// A base time for the chat and call checks (2027), after the id epoch.
const T0: u64 = 1_800_000_000_000;

/// Polls every future to completion concurrently (no futures crate needed).
pub(super) async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
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

pub use calls::{call, run_calls};
pub use chat::{conversation, run_chat};
pub use keys::run_keys;
