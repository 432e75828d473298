//! What the node's object-storage work did: WAL uploads (written by the uploader's tasks alone),
//! checkpoints and restores, and every object-store call by operation and result (written by the
//! counting wrapper around the node's store).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Metrics;
use super::encode::{Encoded, counter, encode_histogram, gauge, histogram, single};
use super::histogram::{DISK_SECONDS, Histogram, NANOS_PER_SECOND, RateWindow};

/// What WAL uploads did (the uploader's tasks write these; checkpoints read `objects`).
#[derive(Debug, Default)]
pub struct UploadStats {
    /// WAL objects stored.
    pub objects: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Attempts that failed (each is retried).
    pub failures: AtomicU64,
    /// From an object's first attempt to its being stored (retries included).
    pub latency: UploadLatency,
    /// Objects stored per second, lately.
    pub rate: RateWindow,
}

/// [`Histogram`] of upload latencies with etcd's disk buckets (a `Default` for [`UploadStats`]).
#[derive(Debug)]
pub struct UploadLatency(pub Histogram);

impl Default for UploadLatency {
    fn default() -> Self {
        UploadLatency(Histogram::new(DISK_SECONDS))
    }
}

impl UploadStats {
    /// Notes an object stored after `attempting` (since its first attempt).
    pub fn stored(&self, bytes: usize, attempting: std::time::Duration) {
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.latency.0.observe_duration(attempting);
        self.rate.record(1);
    }
}

/// Checkpoints this node wrote, and restores it ran.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    pub written: AtomicU64,
    pub failed: AtomicU64,
    /// The revision of the newest checkpoint this node wrote.
    pub revision: AtomicI64,
    /// A checkpoint restore's size and how much of it is loaded (both 0 before any restore).
    pub restore_bytes: AtomicU64,
    pub restored_bytes: AtomicU64,
    /// WAL objects replayed at start.
    pub replayed_objects: AtomicU64,
}

/// The object-store operations counted, in [`ObjectStats`] order.
pub const OBJECT_OPERATIONS: [&str; 7] =
    ["put", "put_if_absent", "put_if_match", "get", "delete", "delete_many", "list"];
/// How an object-store call ended: done, a conditional write's precondition failed, the store was
/// unavailable (retried), or it refused for good.
pub const OBJECT_RESULTS: [&str; 4] = ["ok", "precondition_failed", "unavailable", "fatal"];

/// Object-store calls by operation and result, and how long they took.
#[derive(Debug)]
pub struct ObjectStats {
    requests: [[AtomicU64; OBJECT_RESULTS.len()]; OBJECT_OPERATIONS.len()],
    latency: [Histogram; OBJECT_OPERATIONS.len()],
}

impl Default for ObjectStats {
    fn default() -> Self {
        ObjectStats {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| Histogram::new(DISK_SECONDS)),
        }
    }
}

impl ObjectStats {
    /// Counts one call of operation `operation` (an index of [`OBJECT_OPERATIONS`]) ending with
    /// `result` (of [`OBJECT_RESULTS`]) after `took`.
    pub fn record(&self, operation: usize, result: usize, took: std::time::Duration) {
        self.requests[operation][result].fetch_add(1, Ordering::Relaxed);
        self.latency[operation].observe_duration(took);
    }

    /// Calls of `operation` that ended with `result` so far.
    pub fn requests(&self, operation: usize, result: usize) -> u64 {
        self.requests[operation][result].load(Ordering::Relaxed)
    }
}

impl Metrics {
    /// WAL uploads, checkpoints, restores and object-store calls.
    pub(super) fn encode_durability(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let inner = &self.inner;
        let uploads = &inner.uploads;
        single(encoder, "t4_wal_uploads", "WAL objects stored in the object store.", &counter(&uploads.objects))?;
        single(encoder, "t4_wal_upload_bytes", "Bytes of the WAL objects stored.", &counter(&uploads.bytes))?;
        single(
            encoder,
            "t4_wal_upload_failures",
            "WAL upload attempts that failed (each is retried).",
            &counter(&uploads.failures),
        )?;
        histogram(
            encoder,
            "t4_wal_upload_duration_seconds",
            "From a WAL object's first upload attempt to its being stored.",
            &uploads.latency.0.total(),
            NANOS_PER_SECOND,
        )?;
        single(
            encoder,
            "t4_wal_upload_objects_per_second",
            "WAL objects stored per second over the last ten whole seconds.",
            &ConstGauge::new(uploads.rate.per_second()),
        )?;
        let checkpoints = &inner.checkpoints;
        single(encoder, "t4_checkpoints", "Checkpoints this node wrote.", &counter(&checkpoints.written))?;
        single(
            encoder,
            "t4_checkpoint_failures",
            "Checkpoints this node failed to write.",
            &counter(&checkpoints.failed),
        )?;
        single(
            encoder,
            "t4_checkpoint_revision",
            "The revision of the newest checkpoint this node wrote (0: none yet).",
            &gauge(checkpoints.revision.load(Ordering::Relaxed)),
        )?;
        let bytes = |value: &AtomicU64| gauge(i64::try_from(value.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        single(
            encoder,
            "t4_restore_checkpoint_bytes",
            "Size of the checkpoint restored at start (0: none).",
            &bytes(&checkpoints.restore_bytes),
        )?;
        single(
            encoder,
            "t4_restore_checkpoint_loaded_bytes",
            "How much of that checkpoint is loaded.",
            &bytes(&checkpoints.restored_bytes),
        )?;
        single(
            encoder,
            "t4_restore_wal_objects_replayed",
            "WAL objects replayed at start.",
            &counter(&checkpoints.replayed_objects),
        )?;
        let objects = &inner.objects;
        let mut requests = encoder.encode_descriptor(
            "t4_object_store_requests",
            "Object-store calls by operation and result.",
            None,
            MetricType::Counter,
        )?;
        for (o, operation) in OBJECT_OPERATIONS.iter().enumerate() {
            for (r, result) in OBJECT_RESULTS.iter().enumerate() {
                let count = objects.requests[o][r].load(Ordering::Relaxed);
                if count > 0 {
                    let labels = [("operation", *operation), ("result", *result)];
                    ConstCounter::new(count).encode(requests.encode_family(&labels)?)?;
                }
            }
        }
        let mut latency = encoder.encode_descriptor(
            "t4_object_store_request_duration_seconds",
            "How long object-store calls took, by operation.",
            None,
            MetricType::Histogram,
        )?;
        for (o, operation) in OBJECT_OPERATIONS.iter().enumerate() {
            let total = objects.latency[o].total();
            if total.count() > 0 {
                encode_histogram(&mut latency.encode_family(&[("operation", *operation)])?, &total, NANOS_PER_SECOND)?;
            }
        }
        Ok(())
    }
}
