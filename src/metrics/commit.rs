//! What the committer measures (it alone writes these): syncs, group sizes, leases, and the key
//! count. Invariant: the key count's base is read at one revision together with the events counted
//! through it (the commit lock), so commits move it exactly.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;

use super::Metrics;
use super::encode::{Encoded, gauge, histogram, single};
use super::histogram::{DISK_SECONDS, Histogram, NANOS_PER_SECOND, POWERS_OF_TWO};
use crate::log::LogEvent;
use crate::mvcc::{KeySpan, Store, VersionReader};

/// What the committer measures (it alone writes these).
#[derive(Debug)]
pub struct CommitStats {
    /// How long each batch took to write and sync.
    pub sync: Histogram,
    /// Proposals made durable by each sync (group commit size).
    pub proposals: Histogram,
    /// Leases that exist, as committed.
    pub leases: AtomicI64,
    keys: KeyCount,
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            sync: Histogram::new(DISK_SECONDS),
            proposals: Histogram::new(POWERS_OF_TWO),
            leases: AtomicI64::new(0),
            keys: KeyCount::default(),
        }
    }
}

impl CommitStats {
    /// Held while a batch is written and its events counted, so the key count's base is read at one
    /// revision with the events counted through it.
    pub fn commit_lock(&self) -> MutexGuard<'_, ()> {
        self.keys.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts the keys and leases a committed batch created and removed. Call with the commit lock.
    pub fn committed<'a>(&self, events: impl Iterator<Item = &'a LogEvent>) {
        let (mut keys, mut leases) = (0, 0);
        for event in events {
            match event {
                LogEvent::Put { version: 1, .. } => keys += 1,
                LogEvent::Delete { .. } => keys -= 1,
                LogEvent::LeaseGrant { .. } => leases += 1,
                LogEvent::LeaseRevoke { .. } => leases -= 1,
                LogEvent::Put { .. } | LogEvent::Compact { .. } => {}
            }
        }
        self.keys.delta.fetch_add(keys, Ordering::Relaxed);
        self.leases.fetch_add(leases, Ordering::Relaxed);
    }
}

/// The number of keys: counted once in the store (at the first scrape, not at start), then moved by
/// every committed batch.
#[derive(Debug, Default)]
struct KeyCount {
    lock: Mutex<()>,
    /// Keys created minus keys deleted since the node started.
    delta: AtomicI64,
    /// The count at start (the store's count at some revision, minus the delta through it).
    base: OnceLock<i64>,
}

impl KeyCount {
    /// The keys there are now. The first call counts the store (it blocks: call it off the executors).
    fn total(&self, store: &Store) -> crate::Result<i64> {
        if let Some(base) = self.base.get() {
            return Ok(base + self.delta.load(Ordering::Relaxed));
        }
        let (view, delta) = {
            let _committing = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (store.read_view()?, self.delta.load(Ordering::Relaxed))
        };
        let counted = view.count(&KeySpan::from_etcd(&[0], &[0]), view.current_revision())?;
        let base = *self.base.get_or_init(|| counted - delta);
        Ok(base + self.delta.load(Ordering::Relaxed))
    }
}

impl Metrics {
    /// What the sequencer and committer did, and the state they left.
    pub(super) fn encode_commits(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let inner = &self.inner;
        let commit = &inner.commit;
        let store = inner.store.get();
        let revision = store.and_then(|s| s.read_view().ok()).map_or(0, |v| v.current_revision().get());
        // A single node commits one proposal per revision (compactions and lease records aside).
        let committed = ConstCounter::new(u64::try_from(revision).unwrap_or(0));
        single(
            encoder,
            "etcd_server_proposals_committed",
            "The total number of consensus proposals committed (the store's revision).",
            &committed,
        )?;
        let size = store.map_or(0, |s| s.disk_bytes());
        single(
            encoder,
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            &gauge(i64::try_from(size).unwrap_or(i64::MAX)),
        )?;
        if let Some(store) = store {
            match commit.keys.total(store) {
                Ok(keys) => single(encoder, "etcd_debugging_mvcc_keys_total", "Total number of keys.", &gauge(keys))?,
                Err(e) => tracing::warn!(error = %e, "/metrics cannot count the keys"),
            }
            let (indexed, index_bytes) = store.index_size();
            single(
                encoder,
                "t4_key_index_keys",
                "Keys in the in-memory key index (deleted ones still in the history window included).",
                &gauge(i64::try_from(indexed).unwrap_or(i64::MAX)),
            )?;
            single(
                encoder,
                "t4_key_index_bytes",
                "Bytes the in-memory key index holds.",
                &gauge(i64::try_from(index_bytes).unwrap_or(i64::MAX)),
            )?;
        }
        histogram(
            encoder,
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL (one write and sync of a group commit).",
            &commit.sync.total(),
            NANOS_PER_SECOND,
        )?;
        histogram(
            encoder,
            "t4_commit_group_proposals",
            "Proposals made durable by one sync (group commit size).",
            &commit.proposals.total(),
            1.0,
        )?;
        let depth = inner.queue_depth.get().map_or(0, |depth| depth());
        single(encoder, "t4_sequencer_queue_depth", "Proposals waiting for the sequencer.", &gauge(depth as i64))?;
        single(encoder, "t4_leases", "Leases that exist.", &gauge(commit.leases.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Revision;

    #[test]
    fn committed_events_move_the_key_and_lease_counts() {
        let stats = CommitStats::default();
        let put = |version| LogEvent::Put {
            key: b"k".to_vec(),
            value: Vec::new(),
            create_revision: Revision(2),
            version,
            lease: 0,
        };
        let events = [
            put(1),
            put(2), // an update creates no key
            LogEvent::LeaseGrant { id: 7, ttl: 10 },
            LogEvent::LeaseGrant { id: 8, ttl: 10 },
            LogEvent::LeaseRevoke { id: 7 },
            LogEvent::Delete { key: b"j".to_vec() },
            put(1),
            LogEvent::Compact { revision: Revision(2) },
        ];
        stats.committed(events.iter());
        assert_eq!(stats.keys.delta.load(Ordering::Relaxed), 1);
        assert_eq!(stats.leases.load(Ordering::Relaxed), 1);
    }
}
