//! Prometheus metrics, served at `GET /metrics` on the client port. Hot-path counts are kept per core
//! (each core adds to its own cache line, with no lock and no shared atomic) and summed only when
//! scraped; state-derived values (revision, database size, alarms) are read at scrape time. Encoded
//! by `prometheus-client` (OpenMetrics text), with etcd's names where the meaning is etcd's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tonic::Code;

use crate::alarms::Alarms;
use crate::mvcc::{Store, VersionReader};
use crate::runtime::current_core;

/// The gRPC methods counted, as (service, method, type): etcd's services and the health checks.
const GRPC_METHODS: [(&str, &str, &str); 47] = [
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
}

impl Default for CoreCounts {
    fn default() -> Self {
        CoreCounts { handled: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))) }
    }
}

/// The node's metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    cores: Box<[CoreCounts]>,
    store: Arc<Store>,
    alarms: Alarms,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("cores", &self.cores.len()).finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(cores: usize, store: Arc<Store>, alarms: Alarms) -> Metrics {
        let cores = (0..cores.max(1)).map(|_| CoreCounts::default()).collect();
        Metrics { inner: Arc::new(Inner { cores, store, alarms }) }
    }

    /// The index of a gRPC request path (`/package.Service/Method`) among the counted methods.
    pub fn grpc_method(path: &str) -> Option<usize> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        GRPC_METHODS.iter().position(|(s, m, _)| *s == service && *m == method)
    }

    /// Counts a call of method `method` answered with `code`, on the calling core's counters.
    pub fn grpc_handled(&self, method: usize, code: Code) {
        let cores = &self.inner.cores;
        let core = &cores[current_core().unwrap_or(0) % cores.len()];
        core.handled[method][(code as usize).min(GRPC_CODES - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The metrics in OpenMetrics text. Reads the store (its size walks the data directory): call it
    /// off the executors.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
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

impl Metrics {
    /// grpc_server_handled_total, as go-grpc-prometheus (which etcd uses) names and labels it.
    fn encode_grpc_handled(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut handled = encoder.encode_descriptor(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            None,
            MetricType::Counter,
        )?;
        for (m, (service, method, kind)) in GRPC_METHODS.iter().enumerate() {
            for code in 0..GRPC_CODES {
                let total: u64 = self.inner.cores.iter().map(|c| c.handled[m][code].load(Ordering::Relaxed)).sum();
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
        Ok(())
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        self.encode_grpc_handled(&mut encoder)?;
        let revision = inner.store.read_view().map(|v| v.current_revision()).unwrap_or(0);
        let leader = encoder.encode_descriptor(
            "etcd_server_has_leader",
            "Whether a leader exists (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(leader)?;
        // A single node commits one proposal per revision (compactions and lease records aside).
        let committed = encoder.encode_descriptor(
            "etcd_server_proposals_committed",
            "The total number of consensus proposals committed (the store's revision).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(u64::try_from(revision).unwrap_or(0)).encode(committed)?;
        let size = encoder.encode_descriptor(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(inner.store.disk_bytes()).unwrap_or(i64::MAX)).encode(size)?;
        let alarms = encoder.encode_descriptor(
            "t4_alarms_raised",
            "Alarms raised on this node (NOSPACE, CORRUPT).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(inner.alarms.raised().len() as i64).encode(alarms)?;
        Ok(())
    }
}
