//! The chat store's conformance checks.

use super::*;

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
    // Activity is monotone: an older message appended late does not move it back.
    store
        .append(WriteBatch {
            messages: vec![message(
                "conv_1",
                crate::ids::first_id_at(T0 + 5_500),
                "ann",
                None,
            )],
            audit: vec![],
        })
        .await
        .expect("append");
    let c1 = store
        .conversation("conv_1")
        .await
        .expect("get")
        .expect("c1");
    assert_eq!(
        (c1.last_message_id, c1.last_activity_ms),
        (Some(msgs[2].message_id), T0 + 7_000),
        "last activity never moves back"
    );
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
