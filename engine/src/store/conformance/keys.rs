//! The key store's conformance checks.

use super::*;

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
