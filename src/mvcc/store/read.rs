//! Reads at a revision. A [`ReadView`] is one fjall snapshot and the current and compact revisions it
//! holds, so a read never sees half a group. Reads at the current revision scan `latest`; older ones
//! take each key's newest version at or below the revision from `kv`. Long keys leave fjall in hash
//! order inside their bucket: every multi-key scan goes through [`KeyOrder`] to restore key order.

use fjall::{Keyspace, Readable, Slice, Snapshot};

use super::{INITIAL_REVISION, NEVER_COMPACTED, Store};
use crate::error::Result;
use crate::log::LogRecord;
use crate::mvcc::encoding::{
    LATEST_KEY_BYTES_MAX, Version, decode_history_key, decode_revision, escaped_key, history_bucket,
    history_lower_bound, history_upper_bound, is_long_history_key, is_long_latest_key, latest_bucket, latest_key,
    log_key, meta, needs_carried_key,
};
use crate::mvcc::error::{Doing, StoreError};
use crate::mvcc::key_order::{KeyOrder, OrderedEntry};
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
        let current = get(meta::CURRENT_REVISION)?.unwrap_or(INITIAL_REVISION);
        let compact = get(meta::COMPACT_REVISION)?.unwrap_or(NEVER_COMPACTED);
        Ok(ReadView {
            snapshot,
            log: self.log.clone(),
            kv: self.kv.clone(),
            latest: self.latest.clone(),
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
    current: i64,
    compact: i64,
}

impl VersionReader for ReadView {
    fn current_revision(&self) -> i64 {
        self.current
    }

    fn compact_revision(&self) -> i64 {
        self.compact
    }

    fn visit(&self, span: &KeySpan, rev: i64, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        if rev >= self.current {
            return self.visit_latest(span, visit);
        }
        self.visit_history(span, rev, visit)
    }

    fn count(&self, span: &KeySpan, rev: i64) -> Result<i64> {
        if rev < self.current {
            return self.count_history(span, rev);
        }
        if span.end == RangeEnd::Single {
            return Ok(i64::from(self.latest_get(&span.start)?.is_some()));
        }
        let mut count = 0;
        for entry in self.latest_entries(span) {
            entry?;
            count += 1;
        }
        Ok(count)
    }
}

impl ReadView {
    /// The log records from revision `from` through `to` (lease-only records included), in commit
    /// order, stopping after the record that brings the bytes read to `bytes_max` (so at least one
    /// record if there is one). Returns the records and the last revision fully read: `to`, or the
    /// last record's revision if the byte bound cut the read short (records after a revision's
    /// first are lease-only, so that revision's key changes are all read). Records below the compact
    /// revision may be gone: check `compact_revision` first.
    pub fn log_records(&self, from: i64, to: i64, bytes_max: usize) -> Result<(Vec<LogRecord>, i64)> {
        let mut records: Vec<LogRecord> = Vec::new();
        let mut bytes = 0;
        if from > to {
            return Ok((records, to));
        }
        let range = log_key(from.max(0), 0).to_vec()..=log_key(to, u32::MAX).to_vec();
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

    /// The live keys of a multi-key `span` with their `latest` records, in key order.
    fn latest_entries<'a>(&'a self, span: &'a KeySpan) -> impl Iterator<Item = Result<OrderedEntry>> + 'a {
        let start = latest_bucket(&span.start).to_vec();
        let scan: Box<dyn Iterator<Item = fjall::Guard>> = match &span.end {
            RangeEnd::Unbounded | RangeEnd::Single => Box::new(self.snapshot.range(&self.latest, start..)),
            RangeEnd::Before(end) if end.as_slice() <= span.start.as_slice() => Box::new(std::iter::empty()),
            RangeEnd::Before(end) if end.len() <= LATEST_KEY_BYTES_MAX => {
                Box::new(self.snapshot.range(&self.latest, start..end.clone()))
            }
            RangeEnd::Before(end) => {
                // A long end's whole bucket: its keys are ordered by hash, and filtered below.
                let mut last = latest_bucket(end).to_vec();
                last.extend_from_slice(&[0xFF; 32]);
                Box::new(self.snapshot.range(&self.latest, start..=last))
            }
        };
        let stored = scan.map(|guard| guard.into_inner());
        KeyOrder::new(stored, is_long_latest_key, latest_bucket)
            // Keys stored as themselves are exact against short bounds; long bounds take whole buckets.
            .filter(move |entry| entry.as_ref().map_or(true, |e| span.contains(e.latest_user_key())))
    }

    /// Counts keys whose newest version at or below `rev` is live, reading only the version tag.
    fn count_history(&self, span: &KeySpan, rev: i64) -> Result<i64> {
        let mut count = 0;
        self.newest_in_history(span, rev, |entry| {
            count += i64::from(!Version::is_tombstone_record(&entry.value)?);
            Ok(true)
        })?;
        Ok(count)
    }

    /// Hands `newest` the newest record at or below `rev` of each key in `span` (tombstones included),
    /// with its entry, in key order, until it returns false. Versions of one key are adjacent and
    /// ascending, so one pass remembers the last fitting one; nothing else is decoded.
    fn newest_in_history(
        &self,
        span: &KeySpan,
        rev: i64,
        mut newest: impl FnMut(&OrderedEntry) -> Result<bool>,
    ) -> Result<()> {
        // A long start bound starts the scan at its whole bucket, which may hold a shorter key below it.
        let filter_short = needs_carried_key(&span.start);
        let mut group: Option<Vec<u8>> = None;
        let mut group_is_long = false;
        let mut candidate: Option<OrderedEntry> = None;
        for entry in self.history_entries(span) {
            let entry = entry?;
            let split = entry.key.len().checked_sub(8).ok_or_else(|| StoreError::corrupt("history key too short"))?;
            let (prefix, version_rev) = entry.key.split_at(split);
            let (same, in_span) = match &entry.carried {
                Some(user_key) => (group_is_long && group.as_deref() == Some(user_key), span.contains(user_key)),
                None => {
                    let in_span = !filter_short || span.contains(&decode_history_key(&entry.key)?.0);
                    (!group_is_long && group.as_deref() == Some(prefix), in_span)
                }
            };
            if !in_span {
                continue;
            }
            if !same {
                if let Some(found) = candidate.take()
                    && !newest(&found)?
                {
                    return Ok(());
                }
                group_is_long = entry.carried.is_some();
                group = Some(entry.carried.clone().unwrap_or_else(|| prefix.to_vec()));
            }
            if decode_revision(version_rev)? <= rev {
                candidate = Some(entry);
            }
        }
        if let Some(found) = candidate {
            newest(&found)?;
        }
        Ok(())
    }

    /// Every version of the keys in `span` in `kv`, in key order (a long bound takes its whole
    /// bucket: filter).
    fn history_entries(&self, span: &KeySpan) -> KeyOrder<impl Iterator<Item = fjall::Result<(Slice, Slice)>>> {
        let scan: Box<dyn Iterator<Item = fjall::Guard>> = match &span.end {
            RangeEnd::Single => Box::new(self.snapshot.prefix(&self.kv, escaped_key(&span.start))),
            RangeEnd::Unbounded => Box::new(self.snapshot.range(&self.kv, history_lower_bound(&span.start)..)),
            RangeEnd::Before(end) if end.as_slice() <= span.start.as_slice() => Box::new(std::iter::empty()),
            RangeEnd::Before(end) => {
                Box::new(self.snapshot.range(&self.kv, history_lower_bound(&span.start)..history_upper_bound(end)))
            }
        };
        KeyOrder::new(scan.map(|guard| guard.into_inner()), is_long_history_key, history_bucket)
    }

    fn visit_latest(&self, span: &KeySpan, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        if span.end == RangeEnd::Single {
            if let Some(v) = self.latest_get(&span.start)? {
                visit(&span.start, Version::decode(&v)?);
            }
            return Ok(());
        }
        for entry in self.latest_entries(span) {
            let entry = entry?;
            if !visit(entry.latest_user_key(), Version::decode(&entry.value)?) {
                break;
            }
        }
        Ok(())
    }

    fn visit_history(&self, span: &KeySpan, rev: i64, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        self.newest_in_history(span, rev, |entry| {
            let version = Version::decode(&entry.value)?;
            if version.is_tombstone() {
                return Ok(true);
            }
            match &entry.carried {
                Some(key) => Ok(visit(key, version)),
                None => Ok(visit(&decode_history_key(&entry.key)?.0, version)),
            }
        })
    }
}
