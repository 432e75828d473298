//! What a node left in object storage, read as tests check it: the newest checkpoint's revision
//! (`manifest/latest`) and the newest revision WAL objects hold (from their frames). Reads only;
//! a document that does not parse fails the test.

use t4::object::ObjectStore;

/// The revision of `manifest/latest`'s checkpoint, if there is one.
pub async fn latest_checkpoint_revision(store: &dyn ObjectStore) -> Option<i64> {
    let latest = store.get("manifest/latest").await.expect("read manifest/latest")?;
    let doc: serde_json::Value = serde_json::from_slice(&latest.bytes).expect("manifest/latest is JSON");
    Some(doc["revision"].as_i64().expect("a revision"))
}

/// The newest revision the frames of one WAL object hold: `[len u32][crc32c u32][payload]`, the
/// payload opening with a format byte and the record's revision (i64), all big-endian (0 if none).
pub fn wal_object_last_revision(bytes: &[u8]) -> i64 {
    let mut last = 0;
    let mut rest = bytes;
    while rest.len() >= 17 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        last = last.max(i64::from_be_bytes(rest[9..17].try_into().unwrap()));
        rest = &rest[(8 + len).min(rest.len())..];
    }
    last
}
