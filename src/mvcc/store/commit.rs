//! Group commits: a group's log records, the versions they write to `kv` and `latest`, its lease and
//! compaction records and the current revision go in one batch with one sync, so no reader or restart sees
//! part of a group. Also the upload watermark in `meta`: it moves with a group already uploaded (sync
//! upload) or on its own (async), and compaction keeps the log records above it once told to.

use fjall::PersistMode;

use super::{LogPosition, Store};
use crate::error::{Error, Result};
use crate::ids::Revision;
use crate::log::{LogEvent, LogRecord};
use crate::mvcc::encoding::{Version, history_key, latest_key, lease_key, log_key, meta};
use crate::mvcc::error::{Doing, StoreError, is_disk_full};

/// One group commit: the records of consecutive log positions (a compaction is a record too).
#[derive(Debug, Default)]
pub struct GroupWrite {
    /// Records in `(revision, sub)` order; may be empty (a group of read-only txns).
    pub records: Vec<LogRecord>,
    /// The revision the store has reached after this group (unchanged if `records` is empty).
    pub current_revision: Revision,
    /// The records are already in object storage (sync upload): the upload watermark moves with them.
    pub uploaded: bool,
}

fn encode_position(LogPosition { revision, sub }: LogPosition) -> Vec<u8> {
    let mut bytes = revision.get().to_be_bytes().to_vec();
    bytes.extend_from_slice(&sub.to_be_bytes());
    bytes
}

fn decode_position(bytes: &[u8]) -> Result<LogPosition, StoreError> {
    let corrupt = || StoreError::corrupt("meta log position");
    let revision = Revision(i64::from_be_bytes(bytes.get(..8).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?));
    let sub = u32::from_be_bytes(bytes.get(8..12).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    if bytes.len() != 12 {
        return Err(corrupt());
    }
    Ok(LogPosition::new(revision, sub))
}

/// Each record follows the one before it: the next sub of the same revision (a record that takes
/// no revision), or the next revision's first record.
fn assert_consecutive(records: &[LogRecord]) {
    for pair in records.windows(2) {
        let (before, after) = ((pair[0].revision, pair[0].sub), (pair[1].revision, pair[1].sub));
        let follows = after == (before.0, before.1 + 1) || after == (before.0.next(), 0);
        assert!(follows, "log records of one group must be consecutive: {before:?} then {after:?}");
    }
}

impl Store {
    /// Writes one group as a single atomic batch and syncs it. Blocking: never call on an executor.
    /// Panics if the group's records are not at consecutive log positions, or if its current
    /// revision is not its last record's: writing such a group would corrupt the store.
    pub fn commit(&self, group: &GroupWrite) -> Result<()> {
        fail::fail_point!("store-commit", |_| Err(StoreError::Injected("injected commit failure").into()));
        assert_consecutive(&group.records);
        if let Some(last) = group.records.last() {
            assert_eq!(group.current_revision, last.revision, "a group's current revision is its last record's");
        }
        // The index first: a reader whose snapshot predates the batch leaves out revisions above
        // its own, while one whose snapshot has the batch must find its versions in the index.
        self.index_events(group.records.iter().flat_map(|r| r.events.iter().map(move |e| (r.revision, e))));
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for record in &group.records {
            let rev = record.revision;
            batch.insert(&self.log, log_key(rev, record.sub).to_vec(), record.encode());
            // Later events on one key in one revision supersede earlier ones; the batch keeps the last.
            for event in &record.events {
                match event {
                    LogEvent::Put { key, value, create_revision, version, lease } => {
                        let v = Version {
                            create_revision: *create_revision,
                            mod_revision: rev,
                            version: *version,
                            lease: *lease,
                            value: Some(value.clone()),
                        };
                        let encoded = v.encode_for(key);
                        batch.insert(&self.kv, history_key(key, rev), encoded.clone());
                        batch.insert(&self.latest, latest_key(key).into_owned(), encoded);
                    }
                    LogEvent::Delete { key } => {
                        batch.insert(&self.kv, history_key(key, rev), Version::tombstone(rev).encode_for(key));
                        batch.remove(&self.latest, latest_key(key).into_owned());
                    }
                    LogEvent::LeaseGrant { id, ttl } => {
                        batch.insert(&self.leases, lease_key(*id).to_vec(), ttl.to_be_bytes().to_vec());
                    }
                    LogEvent::LeaseRevoke { id } => batch.remove(&self.leases, lease_key(*id).to_vec()),
                    LogEvent::Compact { revision } => {
                        batch.insert(&self.meta, meta::COMPACT_REVISION, revision.get().to_be_bytes().to_vec());
                    }
                }
            }
        }
        if let Some(last) = group.records.last() {
            batch.insert(&self.meta, meta::CURRENT_REVISION, group.current_revision.get().to_be_bytes().to_vec());
            if group.uploaded {
                batch.insert(&self.meta, meta::UPLOADED_THROUGH, encode_position(last.position()));
            }
        }
        batch.commit().map_err(|e| {
            if is_disk_full(&e) { Error::NoSpace } else { StoreError::database("committing a group")(e).into() }
        })
    }

    /// The log position through which records are stored in object storage, if any are.
    pub fn uploaded_through(&self) -> Result<Option<LogPosition>> {
        Ok(self
            .meta
            .get(meta::UPLOADED_THROUGH)
            .doing("reading the upload watermark")?
            .map(|v| decode_position(&v))
            .transpose()?)
    }

    /// Records that object storage holds every record through `position` (async upload). Not synced:
    /// a crash that loses it makes the node upload those records again, which is harmless.
    pub fn set_uploaded_through(&self, position: LogPosition) -> Result<()> {
        self.meta.insert(meta::UPLOADED_THROUGH, encode_position(position)).doing("writing the upload watermark")?;
        Ok(())
    }

    /// From now on, compaction keeps the log records object storage does not hold yet.
    pub fn keep_unuploaded_log(&self) {
        self.keep_unuploaded_log.store(true, std::sync::atomic::Ordering::Release);
    }
}
