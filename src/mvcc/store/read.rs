//! Reads at a revision. A [`ReadView`] is one fjall snapshot and the current and compact revisions it
//! holds, so a read never sees half a group. A read of one key at the current revision is one get in
//! `latest`; every other read asks the key index which version of each key to read, a batch of keys
//! at a time, and gets those versions from `kv`: it costs what it returns, however long the history
//! of the keys it crosses. Counts come from the index alone.

use fjall::{Keyspace, Readable, Snapshot};

use super::index::{self, SharedIndex};
use super::{INITIAL_REVISION, NEVER_COMPACTED, Store};
use crate::error::{Error, Result};
use crate::ids::Revision;
use crate::log::LogRecord;
use crate::mvcc::encoding::{Version, escaped_key, history_key, is_long_latest_key, latest_key, log_key, meta};
use crate::mvcc::error::{Doing, StoreError};
use crate::mvcc::{KeySpan, RangeEnd, VersionReader};

impl Store {
    /// A consistent view of the committed state.
    pub fn read_view(&self) -> Result<ReadView> {
        let snapshot = self.db.snapshot();
        let get = |name: &[u8]| -> Result<Option<i64>> {
            match snapshot.get(&self.meta, name).doing("reading meta")? {
                Some(v) => Ok(Some(i64::from_be_bytes(
                    v.as_ref().try_into().map_err(|_| StoreError::corrupt("meta revision"))?,
                ))),
                None => Ok(None),
            }
        };
        let current = get(meta::CURRENT_REVISION)?.map_or(INITIAL_REVISION, Revision);
        let compact = get(meta::COMPACT_REVISION)?.map_or(NEVER_COMPACTED, Revision);
        Ok(ReadView {
            snapshot,
            log: self.log.clone(),
            kv: self.kv.clone(),
            latest: self.latest.clone(),
            index: self.index.clone(),
            current,
            compact,
        })
    }
}

/// A consistent, immutable view of the committed state.
pub struct ReadView {
    snapshot: Snapshot,
    log: Keyspace,
    kv: Keyspace,
    latest: Keyspace,
    /// Which versions each read takes; it may already hold revisions above `current` (a group
    /// being committed), which reads through this view leave out.
    index: SharedIndex,
    current: Revision,
    compact: Revision,
}

/// Keys a read takes from the index per lock: short enough that a commit waiting to write the index
/// waits microseconds, long enough that locking costs little.
const KEYS_PER_INDEX_LOCK: usize = 256;

impl VersionReader for ReadView {
    fn current_revision(&self) -> Revision {
        self.current
    }

    fn compact_revision(&self) -> Revision {
        self.compact
    }

    fn visit(&self, span: &KeySpan, rev: Revision, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        if span.end == RangeEnd::Single && rev >= self.current {
            if let Some(v) = self.latest_get(&span.start)? {
                visit(&span.start, Version::decode(&v)?);
            }
            return Ok(());
        }
        self.visit_indexed(span, rev.min(self.current), visit)
    }

    fn count(&self, span: &KeySpan, rev: Revision) -> Result<i64> {
        if span.end == RangeEnd::Single && rev >= self.current {
            return Ok(i64::from(self.latest_get(&span.start)?.is_some()));
        }
        let at = rev.min(self.current);
        let index = index::read(&self.index);
        if at < index.compacted() {
            return Err(Error::Compacted);
        }
        Ok(index.count(span, at) as i64)
    }
}

impl ReadView {
    /// The log records from revision `from` through `to` (lease-only records included), in commit
    /// order, stopping after the record that brings the bytes read to `bytes_max` (so at least one
    /// record if there is one). Returns the records and the last revision fully read: `to`, or the
    /// last record's revision if the byte bound cut the read short (records after a revision's
    /// first are lease-only, so that revision's key changes are all read). Records below the compact
    /// revision may be gone: check `compact_revision` first.
    pub fn log_records(&self, from: Revision, to: Revision, bytes_max: usize) -> Result<(Vec<LogRecord>, Revision)> {
        let mut records: Vec<LogRecord> = Vec::new();
        let mut bytes = 0;
        if from > to {
            return Ok((records, to));
        }
        let range = log_key(from.max(Revision(0)), 0).to_vec()..=log_key(to, u32::MAX).to_vec();
        for item in self.snapshot.range(&self.log, range) {
            let (_, value) = item.into_inner().doing("reading the log")?;
            bytes += value.len();
            records.push(LogRecord::decode(&value)?);
            if bytes >= bytes_max {
                let last = records.last().expect("a record was just read").revision;
                return Ok((records, last));
            }
        }
        Ok((records, to))
    }

    /// Every version of `key` still in history (tombstones included), oldest first, at most
    /// `versions_max` of them (the newest are dropped beyond it).
    pub fn versions(&self, key: &[u8], versions_max: usize) -> Result<Vec<Version>> {
        let mut versions = Vec::new();
        for item in self.snapshot.prefix(&self.kv, escaped_key(key)).take(versions_max) {
            let (_, value) = item.into_inner().doing("reading a key's history")?;
            versions.push(Version::decode(&value)?);
        }
        Ok(versions)
    }

    /// The `latest` record of `key`, if it is live.
    fn latest_get(&self, key: &[u8]) -> Result<Option<fjall::Slice>> {
        let stored = latest_key(key);
        let Some(value) = self.snapshot.get(&self.latest, stored.as_ref()).doing("reading a key")? else {
            return Ok(None);
        };
        // A long key's bucket and hash name one key unless SHA-256 collides; the carried key settles it.
        if is_long_latest_key(&stored) && Version::carried_key(&value)? != Some(key) {
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// Visits the keys of `span` live at `at` (at most the current revision), a batch from the
    /// index at a time, each with its version from `kv`.
    fn visit_indexed(&self, span: &KeySpan, at: Revision, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        let mut rest = span.clone();
        loop {
            let mut batch: Vec<(Vec<u8>, Revision)> = Vec::with_capacity(KEYS_PER_INDEX_LOCK);
            {
                let index = index::read(&self.index);
                if at < index.compacted() {
                    return Err(Error::Compacted);
                }
                index.range(&rest, at, |key, revision| {
                    batch.push((key.to_vec(), revision));
                    batch.len() < KEYS_PER_INDEX_LOCK
                });
            }
            let complete = batch.len() < KEYS_PER_INDEX_LOCK;
            for (key, revision) in &batch {
                let Some(stored) =
                    self.snapshot.get(&self.kv, history_key(key, *revision)).doing("reading a version")?
                else {
                    return Err(StoreError::corrupt(format!(
                        "the key index names revision {revision} of a key of {} bytes, which `kv` lacks",
                        key.len()
                    ))
                    .into());
                };
                if !visit(key, Version::decode(&stored)?) {
                    return Ok(());
                }
            }
            match batch.pop() {
                Some((mut last, _)) if !complete => {
                    last.push(0); // the next batch starts just past the last key
                    rest.start = last;
                }
                _ => return Ok(()),
            }
        }
    }
}
