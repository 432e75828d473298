//! The contract every `ObjectStore` keeps, as one suite each implementation runs (`tests/object_store.rs`
//! runs it on the memory, directory and S3 stores). Only the public API is used. Each check wants a
//! store of its own that holds nothing yet.

use std::sync::Arc;

use futures_lite::future::block_on;

use t4::object::{ObjectError, ObjectStore};

/// Writes, reads, lists, deletes and conditional writes behave as S3's do.
pub fn check_contract(store: Arc<dyn ObjectStore>) {
    block_on(async {
        assert_eq!(store.get("wal/a").await.unwrap(), None);
        let etag = store.put("wal/a", b"one".to_vec()).await.unwrap();
        let object = store.get("wal/a").await.unwrap().unwrap();
        assert_eq!((object.bytes.as_slice(), object.etag.as_str()), (&b"one"[..], etag.as_str()));
        let replaced = store.put("wal/a", b"two".to_vec()).await.unwrap();
        assert_ne!(replaced, etag, "a new content gets a new etag");

        // If-None-Match: *
        assert!(matches!(store.put_if_absent("wal/a", b"x".to_vec()).await, Err(ObjectError::PreconditionFailed(_))));
        assert_eq!(store.get("wal/a").await.unwrap().unwrap().bytes, b"two", "a refused write changes nothing");
        store.put_if_absent("wal/b", b"b".to_vec()).await.unwrap();

        // If-Match
        assert!(matches!(
            store.put_if_match("wal/a", b"three".to_vec(), &etag).await,
            Err(ObjectError::PreconditionFailed(_))
        ));
        let current = store.put_if_match("wal/a", b"three".to_vec(), &replaced).await.unwrap();
        assert_eq!(store.get("wal/a").await.unwrap().unwrap().etag, current);
        assert!(matches!(
            store.put_if_match("missing/x", b"x".to_vec(), &current).await,
            Err(ObjectError::PreconditionFailed(_))
        ));

        // Listing: prefix, byte order, start_after.
        for key in ["manifest/latest", "wal/c", "wal/b/nested", "walrus"] {
            store.put(key, key.as_bytes().to_vec()).await.unwrap();
        }
        assert_eq!(store.list("wal/", None).await.unwrap(), ["wal/a", "wal/b", "wal/b/nested", "wal/c"]);
        assert_eq!(store.list("wal/", Some("wal/b")).await.unwrap(), ["wal/b/nested", "wal/c"]);
        assert_eq!(store.list("", None).await.unwrap().len(), 6);
        assert!(store.list("nothing/", None).await.unwrap().is_empty());

        store.delete("wal/a").await.unwrap();
        store.delete("wal/a").await.unwrap(); // deleting what is gone is fine
        store.delete_many(&["wal/b".to_string(), "wal/c".to_string()]).await.unwrap();
        assert_eq!(store.list("wal/", None).await.unwrap(), ["wal/b/nested"]);
        for bad in ["", "/a", "a//b", "a/../b", "./a", "a/"] {
            assert!(matches!(store.put(bad, vec![]).await, Err(ObjectError::Fatal(_))), "key {bad:?}");
        }
    });
}

/// Of 16 writers racing `put_if_absent` on one key, exactly one wins and its bytes are stored.
pub fn check_racing_creates(store: Arc<dyn ObjectStore>) {
    let winners: Vec<Option<u8>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..16u8)
            .map(|i| {
                let store = store.clone();
                scope.spawn(move || match block_on(store.put_if_absent("manifest/lock", vec![i])) {
                    Ok(_) => Some(i),
                    Err(ObjectError::PreconditionFailed(_)) => None,
                    Err(e) => panic!("racer {i}: {e}"),
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().expect("racer")).collect()
    });
    let won: Vec<u8> = winners.into_iter().flatten().collect();
    assert_eq!(won.len(), 1, "exactly one writer creates the object: {won:?}");
    assert_eq!(block_on(store.get("manifest/lock")).unwrap().unwrap().bytes, won);
}
