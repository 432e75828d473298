//! Prometheus metrics, served at `GET /metrics` on the client port and on `--listen-metrics`.
//! Hot-path counts are kept per core (each core adds to its own cache lines, with no lock and no
//! shared atomic) and summed only when scraped; each actor outside the cores (committer, uploader,
//! checkpointer, object store) writes its own stats, which nothing else writes; state-derived values
//! (revision, database size, keys, alarms) are read at scrape time. Encoded by `prometheus-client`
//! (OpenMetrics text), with etcd's names where the meaning is etcd's and `t4_` for T4's own.
//!
//! Files: `cores` (one core's counts), `grpc` (calls by method and code), `commit` (the committer's
//! stats and the key count), `object_storage` (uploads, checkpoints, restores, object-store calls),
//! `encode` (a scrape: the collector and its encoding helpers), `histogram`.

mod commit;
mod cores;
mod encode;
mod grpc;
pub mod histogram;
mod object_storage;

use std::sync::{Arc, OnceLock};

pub use commit::CommitStats;
use cores::CoreCounts;
pub use grpc::CallRecord;
pub use object_storage::{CheckpointStats, ObjectStats, UploadStats};
// Named by the object-store wrapper's docs and tests (`crate::metrics::OBJECT_OPERATIONS`).
#[allow(unused_imports)]
pub use object_storage::{OBJECT_OPERATIONS, OBJECT_RESULTS};

use crate::alarms::Alarms;
use crate::mvcc::Store;

/// The node's metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    cores: Box<[CoreCounts]>,
    commit: Arc<CommitStats>,
    uploads: Arc<UploadStats>,
    checkpoints: Arc<CheckpointStats>,
    objects: Arc<ObjectStats>,
    alarms: Alarms,
    /// Known once the store is open.
    store: OnceLock<Arc<Store>>,
    /// Proposals waiting for the sequencer, once it runs.
    queue_depth: OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("cores", &self.cores.len()).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics for a node of `cores` cores. The store and the sequencer are attached once they exist
    /// (restores and uploads before then are counted already).
    pub fn new(cores: usize, alarms: Alarms) -> Metrics {
        let cores = (0..cores.max(1)).map(|_| CoreCounts::default()).collect();
        Metrics {
            inner: Arc::new(Inner {
                cores,
                commit: Arc::default(),
                uploads: Arc::default(),
                checkpoints: Arc::default(),
                objects: Arc::default(),
                alarms,
                store: OnceLock::new(),
                queue_depth: OnceLock::new(),
            }),
        }
    }

    /// Reports the database's size and keys from `store`.
    pub fn attach_store(&self, store: Arc<Store>) {
        let _ = self.inner.store.set(store);
    }

    /// Reports the sequencer's queue depth from `depth`.
    pub fn attach_queue(&self, depth: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.inner.queue_depth.set(Box::new(depth));
    }

    pub fn commit(&self) -> &Arc<CommitStats> {
        &self.inner.commit
    }

    pub fn uploads(&self) -> &Arc<UploadStats> {
        &self.inner.uploads
    }

    pub fn checkpoints(&self) -> &Arc<CheckpointStats> {
        &self.inner.checkpoints
    }

    pub fn objects(&self) -> &Arc<ObjectStats> {
        &self.inner.objects
    }
}
