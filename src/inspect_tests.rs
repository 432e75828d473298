//! The inspector on a store written directly: reads at revisions, history and diffs.

use super::*;
use crate::log::{LogEvent, LogPosition, LogRecord};
use crate::mvcc::store::GroupWrite;

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

/// A data dir at revision 7, compacted at 3:
/// 2: a=1 b=1 | 3: a=2 | 4: del b | 5: c=1 | 6: del c, b=2 (b created again) | 7: x/y=1
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let revisions = [
        vec![put("a", "1", 2, 1), put("b", "1", 2, 1)],
        vec![put("a", "2", 2, 2)],
        vec![del("b")],
        vec![put("c", "1", 5, 1)],
        vec![del("c"), put("b", "2", 6, 1)],
        vec![put("x/y", "1", 7, 1)],
    ];
    for (i, events) in revisions.into_iter().enumerate() {
        let revision = i as i64 + 2;
        let record = LogRecord { revision: Revision(revision), sub: 0, events };
        store
            .commit(&GroupWrite { records: vec![record], current_revision: Revision(revision), uploaded: false })
            .unwrap();
    }
    let compaction =
        LogRecord { revision: Revision(7), sub: 1, events: vec![LogEvent::Compact { revision: Revision(3) }] };
    store.commit(&GroupWrite { records: vec![compaction], current_revision: Revision(7), uploaded: false }).unwrap();
    store.compact_physically(Revision(3)).unwrap();
    dir
}

fn keys(listing: &Listing) -> Vec<&[u8]> {
    listing.keys.iter().map(|kv| kv.key.as_slice()).collect()
}

#[test]
fn lists_and_gets_at_any_revision_in_history() {
    let dir = data_dir();
    let inspector = Inspector::open(dir.path()).unwrap();
    let now = inspector.list(b"", None, usize::MAX).unwrap();
    assert_eq!((now.revision, now.count, keys(&now)), (7, 3, vec![&b"a"[..], b"b", b"x/y"]));
    let at_5 = inspector.list(b"", Some(5), 1).unwrap();
    assert_eq!((at_5.count, keys(&at_5), at_5.more), (2, vec![&b"a"[..]], true));
    assert_eq!(keys(&inspector.list(b"x/", None, 10).unwrap()), [b"x/y"]);
    assert!(matches!(inspector.list(b"", Some(2), 10), Err(Error::Compacted)));
    assert!(matches!(inspector.get(b"a", Some(8)), Err(Error::FutureRevision)));
    let (rev, b) = inspector.get(b"b", Some(4)).unwrap();
    assert_eq!((rev, b), (4, None));
    let (_, a) = inspector.get(b"a", Some(3)).unwrap();
    assert_eq!(a.map(|kv| (kv.value, kv.version)), Some((b"2".to_vec(), 2)));

    let summary = inspector.summary().unwrap();
    assert_eq!((summary.current_revision, summary.compact_revision, summary.key_count), (7, Some(3), 3));
    assert_eq!(
        (summary.compacted_through, summary.last_log_position),
        (Some(3), Some(LogPosition::new(Revision(7), 1)))
    );
}

#[test]
fn history_keeps_what_compaction_left() {
    let dir = data_dir();
    let inspector = Inspector::open(dir.path()).unwrap();
    let b = inspector.history(b"b", 10).unwrap();
    let ops: Vec<(i64, Option<Vec<u8>>)> =
        b.versions.iter().map(|v| (v.revision, v.kv.clone().map(|kv| kv.value))).collect();
    // b=1 at 2 is what reads at 3 see, so compaction kept it.
    assert_eq!(ops, [(2, Some(b"1".to_vec())), (4, None), (6, Some(b"2".to_vec()))]);
    assert_eq!((b.compact_revision, b.more), (Some(3), false));
    let a = inspector.history(b"a", 10).unwrap();
    assert_eq!(a.versions.iter().map(|v| v.revision).collect::<Vec<_>>(), [3], "a=1 at 2 was compacted");
    assert!(inspector.history(b"b", 1).unwrap().more);
    assert!(inspector.history(b"missing", 10).unwrap().versions.is_empty());
}

#[test]
fn diff_names_created_changed_and_deleted_keys() {
    let dir = data_dir();
    let inspector = Inspector::open(dir.path()).unwrap();
    let diff = inspector.diff(3, 7, b"", usize::MAX).unwrap();
    let changes: Vec<(&[u8], Change)> = diff.changes.iter().map(|c| (c.key.as_slice(), c.change)).collect();
    // c was created and deleted in between: no difference.
    assert_eq!(changes, [(&b"b"[..], Change::Changed), (b"x/y", Change::Created)]);
    let b = &diff.changes[0];
    assert_eq!((b.before.as_ref().unwrap().create_revision, b.after.as_ref().unwrap().create_revision), (2, 6));
    let deleted = inspector.diff(3, 4, b"", usize::MAX).unwrap();
    assert_eq!(deleted.changes.iter().map(|c| c.change).collect::<Vec<_>>(), [Change::Deleted]);
    assert_eq!(inspector.diff(3, 7, b"x/", usize::MAX).unwrap().changes.len(), 1);
    assert!(inspector.diff(3, 7, b"", 1).unwrap().more);
    assert!(inspector.diff(5, 5, b"", 10).unwrap().changes.is_empty());
    assert!(matches!(inspector.diff(2, 7, b"", 10), Err(Error::Compacted)));
    assert!(matches!(inspector.diff(3, 8, b"", 10), Err(Error::FutureRevision)));
}
