//! The store on disk: group commits, reads at any revision, and physical compaction.

use fjall::KeyspaceCreateOptions;

use super::*;
use crate::error::Error;
use crate::log::{LogEvent, LogRecord};
use crate::mvcc::range::collect;
use crate::mvcc::{KeySpan, VersionReader};

fn put(key: &str, value: &str, create_revision: i64, version: i64) -> LogEvent {
    LogEvent::Put {
        key: key.into(),
        value: value.into(),
        create_revision: Revision(create_revision),
        version,
        lease: 0,
    }
}

fn del(key: &str) -> LogEvent {
    LogEvent::Delete { key: key.into() }
}

/// Commits one record per revision, starting at revision 2.
fn write(store: &Store, revisions: Vec<Vec<LogEvent>>) {
    let records: Vec<LogRecord> = revisions
        .into_iter()
        .enumerate()
        .map(|(i, events)| LogRecord { revision: Revision(i as i64 + 2), sub: 0, events })
        .collect();
    let current_revision = records.last().map_or(INITIAL_REVISION, |r| r.revision);
    store.commit(&GroupWrite { records, current_revision, uploaded: false }).unwrap();
}

/// Every live key-value at `rev`, as (key, value, mod revision).
fn snapshot_at(store: &Store, rev: i64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let all = KeySpan::from_etcd(b"\0", b"\0");
    let (kvs, count) = collect(&store.read_view().unwrap(), &all, Revision(rev), 0).unwrap();
    assert_eq!(count, kvs.len() as i64);
    kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect()
}

fn history_entries(store: &Store) -> usize {
    store.kv.iter().count()
}

#[test]
fn physical_compaction_removes_only_what_no_read_can_reach() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write(
        &store,
        vec![
            vec![put("a", "a1", 2, 1), put("b", "b1", 2, 1)], // 2
            vec![put("a", "a2", 2, 2), put("c", "c1", 3, 1)], // 3
            vec![del("a")],                                   // 4
            vec![put("a", "a3", 5, 1), del("c")],             // 5
            vec![put("b", "b2", 2, 2)],                       // 6
        ],
    );
    assert_eq!(history_entries(&store), 8);
    let before: Vec<_> = (5..=6).map(|rev| snapshot_at(&store, rev)).collect();

    store.compact_physically(Revision(5)).unwrap();
    let after: Vec<_> = (5..=6).map(|rev| snapshot_at(&store, rev)).collect();
    assert_eq!(after, before, "reads at and above the compact revision are unchanged");
    // a keeps its version at 5; b its version at 2 (still the newest at 5) and 6; c is gone.
    assert_eq!(history_entries(&store), 3);
    let log: Vec<i64> = store.log.iter().map(|g| decode_log_key(&g.key().unwrap()).unwrap().revision.get()).collect();
    assert_eq!(log, [5, 6], "log records below the compact revision are removed");
    assert_eq!(store.compacted_through().unwrap(), Revision(5));

    store.compact_physically(Revision(6)).unwrap();
    assert_eq!(snapshot_at(&store, 6), before[1]);
    assert_eq!(history_entries(&store), 2, "b's version at 2 is superseded at 6");
    store.compact_physically(Revision(6)).unwrap(); // nothing left to do
    assert_eq!(history_entries(&store), 2);
}

#[test]
fn a_reopened_store_keeps_its_state_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let identity = store.identity();
    write(&store, vec![vec![put("k", "v", 2, 1)], vec![put("k", "w", 2, 2)]]);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.identity().member_id, identity.member_id);
    assert_eq!(store.read_view().unwrap().current_revision(), Revision(3));
    assert_eq!(snapshot_at(&store, 2), [(b"k".to_vec(), b"v".to_vec(), 2)]);
    assert_eq!(snapshot_at(&store, 3), [(b"k".to_vec(), b"w".to_vec(), 3)]);
}

#[test]
fn a_read_only_open_refuses_what_is_not_a_t4_database_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &Path| match Store::open_read_only(path) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{} opened", path.display()),
    };
    let missing = dir.path().join("missing");
    assert!(refused(&missing).ends_with("does not exist"));
    assert!(!missing.exists());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(refused(&empty).ends_with("not a T4 data directory: no database (db/) in it"));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing created");

    // A fjall database that T4 did not write: no keyspaces, then a `meta` keyspace without a format.
    let foreign = dir.path().join("foreign");
    let db = Database::builder(foreign.join(DB_DIR)).open().unwrap();
    std::fs::write(foreign.join("LOCK"), b"").unwrap();
    drop(db);
    assert!(refused(&foreign).ends_with("not a T4 data directory: its database has no `log` keyspace"));
    let db = Database::builder(foreign.join(DB_DIR)).open().unwrap();
    for name in KEYSPACES {
        db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
    }
    drop(db);
    assert!(refused(&foreign).ends_with("not a T4 data directory: its database has no format mark"));
}

#[test]
fn a_read_only_store_reads_history_and_holds_the_lock_against_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write(&store, vec![vec![put("k", "v", 2, 1)], vec![del("k")], vec![put("k", "w", 4, 1)]]);
    let held = Store::open_read_only(dir.path()).err().expect("refused while a node has it").to_string();
    assert!(held.contains(&format!("is in use by t4 (pid {})", std::process::id())), "{held}");
    drop(store);

    let reader = Store::open_read_only(dir.path()).unwrap();
    let versions = reader.read_view().unwrap().versions(b"k", 10).unwrap();
    let revisions: Vec<(i64, bool)> = versions.iter().map(|v| (v.mod_revision.get(), v.is_tombstone())).collect();
    assert_eq!(revisions, [(2, false), (3, true), (4, false)]);
    assert_eq!(reader.read_view().unwrap().versions(b"k", 2).unwrap().len(), 2, "bounded");
    let node = Store::open(dir.path()).err().expect("no node opens a directory being read").to_string();
    assert!(node.contains("is in use by t4 inspect"), "{node}");
    drop(reader);
    assert_eq!(Store::open(dir.path()).unwrap().current_revision().unwrap(), Revision(4));
}

/// Keys of every stored form: short, long in `kv` only, long in both, several sharing one bucket,
/// with zero bytes where the escaped body is cut.
fn keys_of_every_length(rng: &mut impl rand::Rng) -> Vec<Vec<u8>> {
    use crate::mvcc::encoding::{LATEST_KEY_BYTES_MAX, STORAGE_KEY_BYTES_MAX};
    let mut keys = vec![b"a".to_vec(), b"m".to_vec(), b"z".to_vec()];
    for len in [LATEST_KEY_BYTES_MAX - 20, LATEST_KEY_BYTES_MAX, STORAGE_KEY_BYTES_MAX + 1, 200_000] {
        for _ in 0..4 {
            let mut key = vec![b'm'; len];
            // most share the bucket `m…m`; some differ before it, some after
            let at = if rng.random_bool(0.7) { rng.random_range(LATEST_KEY_BYTES_MAX - 40..len) } else { 1 };
            key[at.min(len - 1)] = rng.random_range(0..=255);
            keys.push(key);
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn long_keys_read_back_in_key_order_at_every_revision() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keys = keys_of_every_length(&mut rng);
    // model: the live keys and their values after each revision
    let mut model: Vec<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> = vec![Default::default()];
    let mut revisions = Vec::new();
    let mut versions: std::collections::HashMap<Vec<u8>, (i64, i64)> = Default::default();
    for rev in 2..40i64 {
        let key = keys[rng.random_range(0..keys.len())].clone();
        let mut state = model.last().unwrap().clone();
        let event = if rng.random_bool(0.25) && state.contains_key(&key) {
            state.remove(&key);
            versions.remove(&key);
            LogEvent::Delete { key }
        } else {
            let value = format!("v{rev}").into_bytes();
            state.insert(key.clone(), value.clone());
            let (create, version) = versions.get(&key).map_or((rev, 1), |(c, v)| (*c, v + 1));
            versions.insert(key.clone(), (create, version));
            LogEvent::Put { key, value, create_revision: Revision(create), version, lease: 0 }
        };
        revisions.push(vec![event]);
        model.push(state);
    }
    write(&store, revisions);
    let view = store.read_view().unwrap();
    let mut bounds = keys.clone();
    bounds.extend(keys.iter().map(|k| [k.as_slice(), b"\x00"].concat()));
    bounds.extend(keys.iter().map(|k| k[..k.len() - 1].to_vec()));
    for rev in [1, 10, 25, 39] {
        let expected = &model[(rev - 1) as usize];
        for _ in 0..60 {
            let mut pair = [&bounds[rng.random_range(0..bounds.len())], &bounds[rng.random_range(0..bounds.len())]];
            pair.sort();
            let span = match rng.random_range(0..4) {
                0 => KeySpan::from_etcd(pair[0], b""),
                1 => KeySpan::from_etcd(pair[0], b"\0"),
                _ => KeySpan::from_etcd(pair[0], pair[1]),
            };
            let want: Vec<(&Vec<u8>, &Vec<u8>)> = expected.iter().filter(|(k, _)| span.contains(k)).collect();
            let (kvs, count) = collect(&view, &span, Revision(rev), 0).unwrap();
            let got: Vec<(&Vec<u8>, &Vec<u8>)> = kvs.iter().map(|kv| (&kv.key, &kv.value)).collect();
            assert_eq!(got, want, "range at {rev} from {} bytes", span.start.len());
            assert_eq!(count, want.len() as i64);
            assert_eq!(view.count(&span, Revision(rev)).unwrap(), want.len() as i64);
            let (first, _) = collect(&view, &span, Revision(rev), 1).unwrap();
            assert_eq!(first.first().map(|kv| &kv.key), want.first().map(|(k, _)| *k), "limit 1");
        }
    }
    // every key's history is its own, however long
    for key in &keys {
        let stored = view.versions(key, 100).unwrap();
        let written = model.windows(2).filter(|w| w[0].get(key) != w[1].get(key) || w[1].contains_key(key)).count();
        assert!(stored.len() <= written, "{} bytes: no other key's versions", key.len());
    }
    // compaction removes what no read reaches, long keys included, and reads above are unchanged
    let all = KeySpan::from_etcd(b"\0", b"\0");
    let before = collect(&view, &all, Revision(39), 0).unwrap().0;
    store.compact_physically(Revision(30)).unwrap();
    let after = collect(&store.read_view().unwrap(), &all, Revision(39), 0).unwrap().0;
    assert_eq!(after, before);
    let leased = store.leased_keys().unwrap();
    assert!(leased.is_empty());
}

#[test]
fn hash_kv_ignores_how_far_physical_compaction_got_and_refuses_as_etcd_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // a: 2, 3; b: 4, deleted 5; a: 6; c: 7 (long: stored under a bucket and hash).
    let long = "c".repeat(70_000);
    write(
        &store,
        vec![
            vec![put("a", "1", 2, 1)],
            vec![put("a", "2", 2, 2)],
            vec![put("b", "1", 4, 1)],
            vec![del("b")],
            vec![put("a", "3", 2, 3)],
            vec![put(&long, "1", 7, 1)],
        ],
    );
    let (before, current, compact) = store.hash_kv(Revision(0)).unwrap();
    assert_eq!((current, compact), (Revision(7), NEVER_COMPACTED));
    assert_eq!(store.hash_kv(Revision(7)).unwrap().0, before);
    assert_ne!(store.hash_kv(Revision(6)).unwrap().0, before);
    assert!(matches!(store.hash_kv(Revision(8)), Err(Error::FutureRevision)));
    // A logical compaction at 5 (recorded, nothing removed yet), then the physical one.
    store
        .commit(&GroupWrite {
            records: vec![LogRecord {
                revision: Revision(7),
                sub: 1,
                events: vec![LogEvent::Compact { revision: Revision(5) }],
            }],
            current_revision: Revision(7),
            uploaded: false,
        })
        .unwrap();
    let logical = store.hash_kv(Revision(6)).unwrap();
    assert_eq!(logical.2, Revision(5));
    let entries = history_entries(&store);
    store.compact_physically(Revision(5)).unwrap();
    assert!(history_entries(&store) < entries, "physical compaction removed versions");
    assert_eq!(store.hash_kv(Revision(6)).unwrap(), logical, "the hash does not see physical compaction");
    assert!(matches!(store.hash_kv(Revision(5)), Err(Error::Compacted)));
    assert!(matches!(store.hash_kv(Revision(4)), Err(Error::Compacted)));
}

#[test]
fn a_snapshot_restores_the_same_store() {
    use sha2::Digest;
    let (dir, restored_dir, file) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::open(dir.path()).unwrap();
    write(
        &store,
        vec![vec![put("a", "1", 2, 1)], vec![put("b", "2", 3, 1)], vec![del("a")], vec![put("a", "4", 5, 1)]],
    );
    let mut bytes = Vec::new();
    let info = crate::durability::snapshot::write(&store, &mut bytes).unwrap();
    assert_eq!((info.revision, info.compact), (Revision(5), NEVER_COMPACTED));
    assert_eq!(bytes.len() % 512, 0, "padded to etcd's 512-byte multiple");
    let digest = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    let path = file.path().join("snapshot");
    std::fs::write(&path, &bytes).unwrap();
    let restored = Store::open(restored_dir.path()).unwrap();
    assert_eq!(crate::durability::snapshot::restore(&path, &restored).unwrap(), info);
    assert_eq!(restored.hash_kv(Revision(0)).unwrap(), store.hash_kv(Revision(0)).unwrap());
    assert_eq!(restored.hash_all().unwrap(), store.hash_all().unwrap());
    for rev in 2..=5 {
        assert_eq!(snapshot_at(&restored, rev), snapshot_at(&store, rev), "revision {rev}");
    }
    // Non-zero bytes where the padding goes are refused.
    let padding_at = bytes.len() - digest.len() - 1;
    let mut tampered = bytes[..bytes.len() - digest.len()].to_vec();
    tampered[padding_at] = 1;
    let digest = sha2::Sha256::digest(&tampered);
    tampered.extend_from_slice(&digest);
    std::fs::write(&path, &tampered).unwrap();
    let again = tempfile::tempdir().unwrap();
    let error = crate::durability::snapshot::restore(&path, &Store::open(again.path()).unwrap()).unwrap_err();
    assert!(error.to_string().contains("not padding"), "{error}");
}
