//! Prometheus metrics, served at `GET /metrics` on the client port and on `--listen-metrics`.
//! Hot-path counts are kept per core (each core adds to its own cache lines, with no lock and no
//! shared atomic) and summed only when scraped; each actor outside the cores (committer, uploader,
//! checkpointer, object store) writes its own stats, which nothing else writes; state-derived values
//! (revision, database size, keys, alarms) are read at scrape time. Encoded by `prometheus-client`
//! (OpenMetrics text), with etcd's names where the meaning is etcd's and `t4_` for T4's own.

pub mod histogram;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tonic::Code;

use crate::alarms::Alarms;
use crate::log::LogEvent;
use crate::mvcc::{KeySpan, Store, VersionReader};
use crate::runtime::current_core;
use histogram::{DISK_SECONDS, GRPC_SECONDS, Histogram, HistogramTotal, NANOS_PER_SECOND, POWERS_OF_TWO, RateWindow};

/// The gRPC methods counted, as (service, method, type): etcd's services and the health checks.
const GRPC_METHODS: [(&str, &str, &str); 49] = [
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
];
/// gRPC status codes 0 (OK) through 16 (Unauthenticated).
const GRPC_CODES: usize = 17;

/// One core's counts, on its own cache lines.
#[repr(align(128))]
#[derive(Debug)]
struct CoreCounts {
    /// Calls answered, by method and code.
    handled: [[AtomicU64; GRPC_CODES]; GRPC_METHODS.len()],
    /// How long calls took, by method (a stream: from its start to its end).
    handling: [Histogram; GRPC_METHODS.len()],
    /// Watch streams open on this core's shard, and their watchers.
    watch_streams: AtomicI64,
    watchers: AtomicI64,
    /// Events not sent live because their stream's buffer was full: the stream's catch-up reads
    /// them from the log later (nothing is lost).
    events_deferred: AtomicU64,
}

impl Default for CoreCounts {
    fn default() -> Self {
        CoreCounts {
            handled: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            handling: std::array::from_fn(|_| Histogram::new(GRPC_SECONDS)),
            watch_streams: AtomicI64::new(0),
            watchers: AtomicI64::new(0),
            events_deferred: AtomicU64::new(0),
        }
    }
}

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

    /// The index of a gRPC request path (`/package.Service/Method`) among the counted methods.
    pub fn grpc_method(path: &str) -> Option<usize> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        GRPC_METHODS.iter().position(|(s, m, _)| *s == service && *m == method)
    }

    /// The calling core's counts.
    fn core(&self) -> &CoreCounts {
        let cores = &self.inner.cores;
        &cores[current_core().unwrap_or(0) % cores.len()]
    }

    /// Counts a call of method `method` answered with `code` after `took`, on the calling core.
    pub fn grpc_handled(&self, method: usize, code: Code, took: std::time::Duration) {
        let core = self.core();
        core.handled[method][(code as usize).min(GRPC_CODES - 1)].fetch_add(1, Ordering::Relaxed);
        core.handling[method].observe_duration(took);
    }

    /// Publishes the calling core's shard's watch streams and watchers.
    pub fn watching(&self, streams: usize, watchers: usize) {
        let core = self.core();
        core.watch_streams.store(streams as i64, Ordering::Relaxed);
        core.watchers.store(watchers as i64, Ordering::Relaxed);
    }

    /// Counts events the calling core's shard left to a catch-up instead of sending them live.
    pub fn events_deferred(&self, events: usize) {
        self.core().events_deferred.fetch_add(events as u64, Ordering::Relaxed);
    }

    /// The metrics in OpenMetrics text. Reads the store (its size walks the data directory, and the
    /// first scrape counts its keys): call it off the executors.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// One call being served, counted once: with the code it was given when it ends, or as `Canceled`
/// if it is dropped first (the client went away).
pub struct CallRecord {
    metrics: Metrics,
    method: usize,
    started: std::time::Instant,
    code: Option<Code>,
}

impl CallRecord {
    /// Starts timing a call of `method` (an index from [`Metrics::grpc_method`]).
    pub fn start(metrics: &Metrics, method: usize) -> CallRecord {
        CallRecord { metrics: metrics.clone(), method, started: std::time::Instant::now(), code: None }
    }

    /// Sets the code the call ends with (the last one set counts).
    pub fn set_code(&mut self, code: Code) {
        self.code = Some(code);
    }

    /// Whether a code is set.
    pub fn has_code(&self) -> bool {
        self.code.is_some()
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        self.metrics.grpc_handled(self.method, code, self.started.elapsed());
    }
}

fn code_name(code: usize) -> &'static str {
    const NAMES: [&str; GRPC_CODES] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES[code]
}

type Encoded = Result<(), std::fmt::Error>;

/// Encodes one family of a single value.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &(impl EncodeMetric + MetricKind),
) -> Encoded {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.kind())?)
}

/// The type each constant metric declares.
trait MetricKind {
    fn kind(&self) -> MetricType;
}

impl MetricKind for ConstCounter<u64> {
    fn kind(&self) -> MetricType {
        MetricType::Counter
    }
}

impl MetricKind for ConstGauge<i64> {
    fn kind(&self) -> MetricType {
        MetricType::Gauge
    }
}

impl MetricKind for ConstGauge<f64> {
    fn kind(&self) -> MetricType {
        MetricType::Gauge
    }
}

fn counter(value: &AtomicU64) -> ConstCounter<u64> {
    ConstCounter::new(value.load(Ordering::Relaxed))
}

fn gauge(value: i64) -> ConstGauge<i64> {
    ConstGauge::new(value)
}

/// Encodes one histogram of unlabelled observations; `scale` turns their unit into the reported one.
fn histogram(encoder: &mut DescriptorEncoder, name: &str, help: &str, total: &HistogramTotal, scale: f64) -> Encoded {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    encode_histogram(&mut family, total, scale)
}

fn encode_histogram(
    encoder: &mut prometheus_client::encoding::MetricEncoder,
    total: &HistogramTotal,
    scale: f64,
) -> Encoded {
    type NoExemplars =
        std::collections::HashMap<usize, prometheus_client::metrics::exemplar::Exemplar<Vec<(String, String)>, f64>>;
    encoder.encode_histogram(total.sum as f64 / scale, total.count(), &total.buckets(scale), None::<&NoExemplars>)
}

impl Metrics {
    /// grpc_server_handled_total and grpc_server_handling_seconds, as go-grpc-prometheus (which etcd
    /// uses) names and labels them.
    fn encode_grpc(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let cores = &self.inner.cores;
        let mut handled = encoder.encode_descriptor(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            None,
            MetricType::Counter,
        )?;
        for (m, (service, method, kind)) in GRPC_METHODS.iter().enumerate() {
            for code in 0..GRPC_CODES {
                let total: u64 = cores.iter().map(|c| c.handled[m][code].load(Ordering::Relaxed)).sum();
                if total == 0 {
                    continue;
                }
                let labels = [
                    ("grpc_code", code_name(code)),
                    ("grpc_method", method),
                    ("grpc_service", service),
                    ("grpc_type", kind),
                ];
                ConstCounter::new(total).encode(handled.encode_family(&labels)?)?;
            }
        }
        let mut handling = encoder.encode_descriptor(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            None,
            MetricType::Histogram,
        )?;
        for (m, (service, method, kind)) in GRPC_METHODS.iter().enumerate() {
            let mut total = HistogramTotal::new(GRPC_SECONDS);
            for core in cores.iter() {
                core.handling[m].add_to(&mut total);
            }
            if total.count() == 0 {
                continue;
            }
            let labels = [("grpc_method", *method), ("grpc_service", *service), ("grpc_type", *kind)];
            encode_histogram(&mut handling.encode_family(&labels)?, &total, NANOS_PER_SECOND)?;
        }
        Ok(())
    }

    /// What the sequencer and committer did, and the state they left.
    fn encode_commits(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let inner = &self.inner;
        let commit = &inner.commit;
        let store = inner.store.get();
        let revision = store.and_then(|s| s.read_view().ok()).map_or(0, |v| v.current_revision());
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

    /// The watch streams and watchers the shards hold, and events they left to catch-ups.
    fn encode_watches(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let cores = &self.inner.cores;
        let sum = |field: fn(&CoreCounts) -> i64| cores.iter().map(field).sum::<i64>();
        single(
            encoder,
            "t4_watch_streams",
            "Watch streams open.",
            &gauge(sum(|c| c.watch_streams.load(Ordering::Relaxed))),
        )?;
        single(encoder, "t4_watchers", "Watchers open.", &gauge(sum(|c| c.watchers.load(Ordering::Relaxed))))?;
        let deferred: u64 = cores.iter().map(|c| c.events_deferred.load(Ordering::Relaxed)).sum();
        single(
            encoder,
            "t4_watch_events_deferred",
            "Events not sent live because their stream's buffer was full; its catch-up sends them from the log.",
            &ConstCounter::new(deferred),
        )
    }

    /// WAL uploads, checkpoints, restores and object-store calls.
    fn encode_durability(&self, encoder: &mut DescriptorEncoder) -> Encoded {
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

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Encoded {
        self.encode_grpc(&mut encoder)?;
        single(&mut encoder, "etcd_server_has_leader", "Whether a leader exists (1) or not (0).", &gauge(1))?;
        self.encode_commits(&mut encoder)?;
        self.encode_watches(&mut encoder)?;
        self.encode_durability(&mut encoder)?;
        single(
            &mut encoder,
            "t4_alarms_raised",
            "Alarms raised on this node (NOSPACE, CORRUPT).",
            &gauge(self.inner.alarms.raised().len() as i64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handled(metrics: &Metrics, method: usize, code: Code) -> u64 {
        metrics.inner.cores.iter().map(|core| core.handled[method][code as usize].load(Ordering::Relaxed)).sum()
    }

    #[test]
    fn a_call_counts_once_with_its_last_code_or_as_canceled_if_it_never_got_one() {
        let metrics = Metrics::new(2, Alarms::default());
        let put = Metrics::grpc_method("/etcdserverpb.KV/Put").expect("Put is counted");
        assert_eq!(Metrics::grpc_method("/etcdserverpb.KV/Nothing"), None);
        let mut answered = CallRecord::start(&metrics, put);
        answered.set_code(Code::Unknown);
        answered.set_code(Code::Ok);
        drop(answered);
        drop(CallRecord::start(&metrics, put));
        assert_eq!(handled(&metrics, put, Code::Ok), 1);
        assert_eq!(handled(&metrics, put, Code::Cancelled), 1);
        assert_eq!(handled(&metrics, put, Code::Unknown), 0);
        let timed: u64 = metrics.inner.cores.iter().map(|core| core.handling[put].total().count()).sum();
        assert_eq!(timed, 2);
    }

    #[test]
    fn committed_events_move_the_key_and_lease_counts() {
        let stats = CommitStats::default();
        let put =
            |version| LogEvent::Put { key: b"k".to_vec(), value: Vec::new(), create_revision: 2, version, lease: 0 };
        let events = [
            put(1),
            put(2), // an update creates no key
            LogEvent::LeaseGrant { id: 7, ttl: 10 },
            LogEvent::LeaseGrant { id: 8, ttl: 10 },
            LogEvent::LeaseRevoke { id: 7 },
            LogEvent::Delete { key: b"j".to_vec() },
            put(1),
            LogEvent::Compact { revision: 2 },
        ];
        stats.committed(events.iter());
        assert_eq!(stats.keys.delta.load(Ordering::Relaxed), 1);
        assert_eq!(stats.leases.load(Ordering::Relaxed), 1);
    }
}
