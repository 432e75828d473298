//! WAL replay: brings a local store up to what object storage holds after its position, applying the
//! longest gap-free run of records. Anything past a gap was never acknowledged (sync upload releases
//! a group only after every earlier one is stored) and is ignored.
//!
//! Terms: a node writes under a new term at each start, and a newer term's first object supersedes,
//! from its first position on, whatever older terms wrote there (records an earlier run stored but
//! never acknowledged, beyond the gap it restarted from). A WAL object that does not decode (a CRC
//! mismatch, a truncated frame) stops the replay with an error naming it: never applied, never
//! skipped silently.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::layout::{WAL_PREFIX, WalKey, parse_wal_key};
use crate::error::{DurabilityError, Result, RuntimeError};
use crate::log::{LogEvent, LogRecord};
use crate::metrics::CheckpointStats;
use crate::mvcc::Store;
use crate::mvcc::store::{GroupWrite, LogPosition};
use crate::object::ObjectStore;

/// WAL objects downloaded at once.
const DOWNLOADS_IN_FLIGHT: usize = 16;
/// Record bytes applied per local batch.
const APPLY_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The position right after `position` for a record that opens a new revision, and for one that
/// follows the same revision (a lease-only or compaction record).
pub(super) fn successors(LogPosition { revision, sub }: LogPosition) -> [LogPosition; 2] {
    [LogPosition::new(revision.next(), 0), LogPosition::new(revision, sub + 1)]
}

/// One WAL object in the replay plan: records from `start` up to (not including) the next object's start.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub(super) key: String,
    pub(super) start: LogPosition,
}

/// Orders the listed WAL objects into one run of positions: within a term by position, and a newer
/// term's first object drops every older object starting at or after it (GC collects by this order too).
pub(super) fn plan(keys: &[String]) -> Vec<Planned> {
    let mut parsed: Vec<(WalKey, &String)> = keys
        .iter()
        .filter_map(|key| match parse_wal_key(key) {
            Some(parsed) => Some((parsed, key)),
            None => {
                tracing::warn!(key, "ignoring an object under wal/ that is not a WAL object");
                None
            }
        })
        .collect();
    parsed.sort_by_key(|(k, _)| (k.term, k.revision, k.sub));
    let mut planned: Vec<Planned> = Vec::new();
    let mut term = None;
    for (key, name) in parsed {
        let start = LogPosition::new(key.revision, key.sub);
        if term != Some(key.term) {
            term = Some(key.term);
            planned.retain(|p| p.start < start);
        }
        planned.push(Planned { key: name.clone(), start });
    }
    planned
}

/// The planned objects a replay from `from` reads: the one holding the record after `from` and every
/// later one (objects whose whole range lies at or before `from` are not needed; the first one read
/// may hold nothing after `from`).
pub(super) fn needed(planned: &[Planned], from: LogPosition) -> &[Planned] {
    let first = planned.iter().enumerate().position(|(i, _)| match planned.get(i + 1) {
        Some(next) => next.start > from,
        None => true,
    });
    first.map_or(&[], |i| &planned[i..])
}

/// What a replay applied.
#[derive(Debug, Default, Clone, Copy)]
pub struct Replayed {
    pub objects: usize,
    pub records: usize,
    /// The local position after the replay.
    pub position: Option<LogPosition>,
}

/// Applies the WAL records after `from` (the local store's position) that object storage holds, in
/// order, stopping at the first gap. Runs on the durability runtime; the store's writes block it
/// briefly (this runs before the node serves).
pub async fn replay(
    store: &Arc<dyn ObjectStore>,
    local: &Store,
    from: LogPosition,
    stats: &CheckpointStats,
) -> Result<Replayed> {
    let keys = store.list(WAL_PREFIX, None).await.map_err(DurabilityError::object("listing WAL objects"))?;
    let planned = plan(&keys);
    let needed = needed(&planned, from).to_vec();
    let mut replayed = Replayed { position: Some(from), ..Default::default() };
    let mut position = from;
    let mut write = GroupWrite { uploaded: true, ..Default::default() };
    let mut write_bytes = 0;
    // The WAL objects the batch in `write` came from, so a failure to apply it names them.
    let (mut batch_first, mut batch_last) = (None::<String>, String::new());
    let total = needed.len();
    // A sliding window of downloads: the next ones are on their way while one is applied.
    let mut downloads = std::collections::VecDeque::new();
    let mut next_download = 0;
    'objects: for index in 0..total {
        while next_download < total && downloads.len() < DOWNLOADS_IN_FLIGHT {
            let (store, key) = (store.clone(), needed[next_download].key.clone());
            downloads.push_back(tokio::spawn(async move { (store.get(&key).await, key) }));
            next_download += 1;
        }
        let download = downloads.pop_front().expect("a download per object");
        let (object, key) = download.await.map_err(RuntimeError::task("WAL download task"))?;
        let object = object.map_err(DurabilityError::object(format!("reading {key}")))?;
        let Some(object) = object else {
            tracing::warn!(key, "WAL object vanished while restoring (collected?); stopping the replay there");
            break 'objects;
        };
        let end = needed.get(index + 1).map(|next| next.start);
        let records = decode_wal_object(&key, &object.bytes)?;
        let mut applied_any = false;
        for record in records {
            let at = record.position();
            if end.is_some_and(|end| at >= end) {
                break; // superseded by the next object (a newer term's)
            }
            if at <= position {
                continue; // already applied or held locally
            }
            if !successors(position).contains(&at) {
                tracing::info!(
                    after = ?position, found = ?at, key,
                    "WAL replay stops at a gap (later records were never acknowledged)"
                );
                break 'objects;
            }
            position = at;
            applied_any = true;
            replayed.records += 1;
            write_bytes += record.events.iter().map(LogEvent::size).sum::<usize>();
            write.current_revision = write.current_revision.max(record.revision);
            write.records.push(record);
            batch_first.get_or_insert_with(|| key.clone());
            batch_last.clone_from(&key);
            if write_bytes >= APPLY_BATCH_BYTES {
                apply(local, &write, batch_first.take(), &batch_last)?;
                write.records.clear();
                write_bytes = 0;
            }
        }
        if applied_any {
            replayed.objects += 1;
            stats.replayed_objects.fetch_add(1, Ordering::Relaxed);
        }
        if (index + 1) % 100 == 0 || index + 1 == total {
            tracing::info!(
                objects = index + 1,
                of = total,
                revision = %position.revision,
                "replaying WAL objects"
            );
        }
    }
    for download in downloads {
        download.abort(); // past a gap: not needed
    }
    if !write.records.is_empty() {
        apply(local, &write, batch_first, &batch_last)?;
    }
    replayed.position = Some(position);
    Ok(replayed)
}

/// Applies one batch of replayed records; a failure names the WAL objects they came from.
fn apply(local: &Store, write: &GroupWrite, first: Option<String>, last: &str) -> Result<()> {
    local.commit(write).map_err(|e| {
        let objects = match first {
            Some(first) if first != last => format!("{first} through {last}"),
            _ => last.to_string(),
        };
        DurabilityError::Apply { objects, source: Box::new(e) }.into()
    })
}

/// The records of a WAL object, every frame checked.
pub fn decode_wal_object(key: &str, mut bytes: &[u8]) -> Result<Vec<LogRecord>> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let record = records.len();
        let truncated = || DurabilityError::WalFrame { key: key.to_string(), what: "truncated frame", record };
        let len = bytes.get(..4).ok_or_else(truncated)?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let frame = bytes.get(..8 + len).ok_or_else(truncated)?;
        let record = LogRecord::decode(frame).map_err(|source| DurabilityError::WalRecord {
            key: key.to_string(),
            record,
            source,
        })?;
        records.push(record);
        bytes = &bytes[8 + len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::layout::wal_key;
    use crate::ids::Revision;

    #[test]
    fn a_newer_term_supersedes_older_objects_from_its_first_position() {
        let keys = vec![
            wal_key(crate::ids::Term(1), Revision(2), 0),
            wal_key(crate::ids::Term(1), Revision(10), 0),
            wal_key(crate::ids::Term(1), Revision(20), 0), // past a gap in term 1, superseded by term 2 from 15
            wal_key(crate::ids::Term(2), Revision(15), 0),
            wal_key(crate::ids::Term(2), Revision(15), 3),
            wal_key(crate::ids::Term(3), Revision(30), 0),
        ];
        let planned: Vec<_> = plan(&keys).into_iter().map(|p| p.start).collect();
        assert_eq!(
            planned,
            [(2, 0), (10, 0), (15, 0), (15, 3), (30, 0)]
                .map(|(revision, sub)| LogPosition::new(Revision(revision), sub))
        );
    }

    #[test]
    fn a_record_that_cannot_be_applied_stops_the_replay_with_an_error_naming_its_object() {
        use crate::object::MemStore;
        // Fault points are process-wide: take turns with the other tests that set them.
        let scenario = fail::FailScenario::setup();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path()).unwrap();
        let objects: Arc<dyn ObjectStore> = Arc::new(MemStore::new());
        let put = LogEvent::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: Revision(2),
            version: 1,
            lease: 0,
        };
        let record = LogRecord { revision: Revision(2), sub: 0, events: vec![put] };
        runtime.block_on(objects.put(&wal_key(crate::ids::Term(1), Revision(2), 0), record.encode())).unwrap();
        fail::cfg("store-commit", "return").unwrap();
        let outcome = runtime.block_on(replay(&objects, &local, LogPosition::new(Revision(1), 0), &Default::default()));
        fail::remove("store-commit");
        let error = outcome.expect_err("the apply fails").to_string();
        assert!(error.contains(&wal_key(crate::ids::Term(1), Revision(2), 0)), "the error names the object: {error}");
        assert_eq!(local.current_revision().unwrap(), Revision(1), "nothing applied");
        scenario.teardown();
    }

    #[test]
    fn objects_that_do_not_decode_are_named() {
        let record = LogRecord { revision: Revision(2), sub: 0, events: vec![] };
        let mut bytes = record.encode();
        bytes.extend_from_slice(&record.encode());
        assert_eq!(decode_wal_object("wal/x", &bytes).unwrap().len(), 2);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let error = decode_wal_object("wal/x", &bytes).unwrap_err().to_string();
        assert!(error.contains("WAL object wal/x") && error.contains("record 1"), "{error}");
        assert!(decode_wal_object("wal/x", &bytes[..5]).is_err());
    }
}
