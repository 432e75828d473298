//! Physical compaction: removes the versions and log records no read at or above the compact revision can
//! reach. The work follows the log (only keys written since the previous compaction can hold newly
//! removable versions), in bounded unsynced batches a crash leaves for the next run to redo; with object
//! storage, log records not uploaded yet stay.

use std::collections::BTreeSet;

use fjall::Readable;

use super::{LogPosition, Store};
use crate::error::Result;
use crate::ids::Revision;
use crate::log::{LogEvent, LogRecord};
use crate::mvcc::encoding::{Version, escaped_key, history_key, log_key, meta};
use crate::mvcc::error::Doing;

impl Store {
    /// Removes versions and log records no read at or above `compact` can reach: for each key, every
    /// version below its newest one at or below `compact`, and that one too if it is a tombstone.
    ///
    /// Only keys written after the previous compaction can have newly removable versions (an older
    /// version becomes removable only once a newer one at or below `compact` exists, and a tombstone
    /// at or below the previous compaction was removed then), and the log still holds exactly those
    /// revisions: the work is proportional to what changed, not to the history. Removals run in
    /// bounded, unsynced batches, versions before log records, so a crash leaves work that the next
    /// run redoes from the log that is still there. Blocking: call from the compactor thread.
    pub fn compact_physically(&self, compact: Revision) -> Result<()> {
        const REMOVALS_PER_BATCH: usize = 4096;
        fail::fail_point!("store-compact", |_| Err(
            crate::error::StoreError::Injected("injected compaction failure").into()
        ));
        let done_through = self.compacted_through()?;
        if compact <= done_through {
            return Ok(());
        }
        let snapshot = self.db.snapshot();
        let first = log_key(done_through.next().max(Revision(0)), 0).to_vec();
        let mut changed: BTreeSet<Vec<u8>> = BTreeSet::new();
        for item in snapshot.range(&self.log, first..=log_key(compact, u32::MAX).to_vec()) {
            let (_, bytes) = item.into_inner().doing("reading the log to compact")?;
            changed.extend(LogRecord::decode(&bytes)?.events.into_iter().filter_map(|e| match e {
                LogEvent::Put { key, .. } | LogEvent::Delete { key } => Some(key),
                LogEvent::LeaseGrant { .. } | LogEvent::LeaseRevoke { .. } | LogEvent::Compact { .. } => None,
            }));
        }
        // Reads below `compact` are refused from here on: the index and `kv` lose their versions.
        self.compact_index(&changed.iter().map(Vec::as_slice).collect::<Vec<_>>(), compact);
        let mut batch = self.db.batch();
        for key in changed {
            // Versions of `key` at or below `compact`, oldest first.
            let mut doomed: Vec<fjall::Slice> = Vec::new();
            let mut newest_is_tombstone = false;
            for item in snapshot.range(&self.kv, escaped_key(&key)..=history_key(&key, compact)) {
                let (k, v) = item.into_inner().doing("reading versions to compact")?;
                newest_is_tombstone = Version::is_tombstone_record(&v)?;
                doomed.push(k);
            }
            if !newest_is_tombstone {
                doomed.pop(); // the version reads at `compact` and above still see
            }
            for k in doomed {
                batch.remove(&self.kv, k);
                if batch.len() >= REMOVALS_PER_BATCH {
                    std::mem::replace(&mut batch, self.db.batch()).commit().doing("compacting")?;
                }
            }
        }
        std::mem::replace(&mut batch, self.db.batch()).commit().doing("compacting")?;
        // With object storage, records not uploaded yet stay: the uploader still needs them.
        let mut log_end = log_key(compact.max(Revision(0)), 0).to_vec();
        if self.keep_unuploaded_log.load(std::sync::atomic::Ordering::Acquire) {
            let uploaded_end = match self.uploaded_through()? {
                Some(LogPosition { revision, sub }) => log_key(revision, sub.saturating_add(1)).to_vec(),
                None => Vec::new(),
            };
            log_end = log_end.min(uploaded_end);
        }
        for item in snapshot.range(&self.log, ..log_end) {
            batch.remove(&self.log, item.key().doing("reading the log to compact")?);
            if batch.len() >= REMOVALS_PER_BATCH {
                std::mem::replace(&mut batch, self.db.batch()).commit().doing("compacting")?;
            }
        }
        batch.insert(&self.meta, meta::COMPACTED_THROUGH, compact.get().to_be_bytes().to_vec());
        batch.commit().doing("compacting")?;
        Ok(())
    }
}
