//! `Config`: every setting of a node, its flag and its `T4_*` environment variable (flags win over
//! the environment), and the defaults an embedded node starts from. Invariant: every field is a flag
//! with its `T4_*` variable, but `object_store_override`, which only an embedding program can give.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::ObjectStoreArgs;
use super::flags::{parse_client_url, parse_listen_addr, parse_metrics_addr};
use super::limits::*;

/// The configuration of one T4 node.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Directory holding the node's database (created if missing; locked while the node runs).
    #[arg(long, env = "T4_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Address serving the etcd v3 gRPC API, `HOST:PORT` with HOST an IP address or a name
    /// (resolved at start; a name with several addresses is served on the first). Port 0 picks a
    /// free port, printed at start. Embedded nodes serve nothing unless this is set.
    #[arg(long, env = "T4_LISTEN", default_value = DEFAULT_LISTEN, value_parser = parse_listen_addr)]
    pub listen: Option<SocketAddr>,

    /// Client URLs this member advertises to the cluster (etcd's --advertise-client-urls,
    /// comma-separated, e.g. `http://db1.example:3379`): what MemberList reports and clients that
    /// sync their endpoints connect to. Default: the listen address, with 127.0.0.1 in place of an
    /// unspecified one (0.0.0.0 or ::), which no client can connect to.
    #[arg(long, env = "T4_ADVERTISE_CLIENT_URLS", value_delimiter = ',', value_parser = parse_client_url)]
    pub advertise_client_urls: Vec<String>,

    /// Also serve `/metrics` and the health endpoints (`/health`, `/livez`, `/readyz`, `/version`)
    /// on this address, `HOST:PORT` or `http://HOST:PORT` (etcd's --listen-metrics-urls, one URL).
    /// Served from the node's first step: a restore's progress can be scraped there before the
    /// client port answers.
    #[arg(long, alias = "listen-metrics-urls", env = "T4_LISTEN_METRICS", value_parser = parse_metrics_addr)]
    pub listen_metrics: Option<SocketAddr>,

    /// Executors (one per core, each pinned to its CPU when there are enough). Default: all CPUs.
    #[arg(long, env = "T4_CORES")]
    pub cores: Option<usize>,

    /// Largest write request accepted, in bytes (etcd's --max-request-bytes).
    #[arg(long, env = "T4_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Most operations in one transaction branch (etcd's --max-txn-ops).
    #[arg(long, env = "T4_MAX_TXN_OPS", default_value_t = DEFAULT_MAX_TXN_OPS)]
    pub max_txn_ops: usize,

    /// Name of this member, reported by MemberList.
    #[arg(long, env = "T4_NAME", default_value = "default")]
    pub name: String,

    /// Proposals merged into one group commit at most.
    #[arg(long, env = "T4_GROUP_PROPOSALS_MAX", default_value_t = DEFAULT_GROUP_PROPOSALS_MAX)]
    pub group_proposals_max: usize,

    /// Group commits in flight at once (1 disables pipelining).
    #[arg(long, env = "T4_GROUPS_IN_FLIGHT_MAX", default_value_t = DEFAULT_GROUPS_IN_FLIGHT_MAX)]
    pub groups_in_flight_max: usize,

    /// Microseconds an idle executor keeps polling before it sleeps: trades idle CPU for lower latency
    /// when a reply arrives from another thread shortly after.
    #[arg(long, env = "T4_SPIN_BEFORE_PARK_US", default_value_t = DEFAULT_SPIN_BEFORE_PARK_US)]
    pub spin_before_park_us: u64,

    /// Milliseconds between progress notifications to idle watchers that asked for them (etcd's
    /// --experimental-watch-progress-notify-interval).
    #[arg(long, env = "T4_WATCH_PROGRESS_NOTIFY_INTERVAL_MS", default_value_t = DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL_MS)]
    pub watch_progress_notify_interval_ms: u64,

    /// Milliseconds a graceful shutdown waits for in-flight requests.
    #[arg(long, env = "T4_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,

    /// Bytes the data directory's file system must keep free. A write that grows the store (put, txn
    /// with a put, lease grant) while less is free is refused with etcd's `database space exceeded`
    /// and raises the NOSPACE alarm; reads, deletes and compactions go on. Once space is back,
    /// `etcdctl alarm disarm` lets writes resume. Keep it above what the storage engine writes on its
    /// own (memtable flushes of up to 16 MiB per keyspace, compactions): if one of those finds the
    /// disk full, the engine refuses every later write and only a restart takes writes again.
    #[arg(long, env = "T4_DISK_FREE_MIN_BYTES", default_value_t = DEFAULT_DISK_FREE_MIN_BYTES)]
    pub disk_free_min_bytes: u64,

    /// etcd's space quota: when the store's data (its tables and memtables: `db_size_in_use`) would
    /// pass this many bytes, the NOSPACE alarm is raised and writes that grow the store fail with
    /// `etcdserver: mvcc: database space exceeded`; reads, deletes and compactions go on, and after
    /// a compaction and a defragment `etcdctl alarm disarm` lets writes resume. 0: etcd's default,
    /// 2 GiB; negative: no quota (as etcd).
    #[arg(long, env = "T4_QUOTA_BACKEND_BYTES", default_value_t = 0, allow_negative_numbers = true)]
    pub quota_backend_bytes: i64,

    /// etcd's --auto-compaction-mode: `periodic` keeps the history of the last
    /// --auto-compaction-retention, `revision` keeps that many revisions.
    #[arg(long, env = "T4_AUTO_COMPACTION_MODE", default_value = "periodic", value_parser = ["periodic", "revision"])]
    pub auto_compaction_mode: String,

    /// etcd's --auto-compaction-retention: with `periodic`, a duration (`1h`, `30m`, `90s`, `1h30m`;
    /// a bare number is hours, as etcd reads it); with `revision`, a number of revisions. 0 (the
    /// default, as etcd's): no auto-compaction.
    #[arg(long, env = "T4_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// How often revision-mode auto-compaction looks, in milliseconds (etcd's: 5 minutes).
    #[arg(long, env = "T4_AUTO_COMPACTION_REVISION_CHECK_MS", default_value_t = DEFAULT_AUTO_COMPACTION_REVISION_CHECK_MS, hide = true)]
    pub auto_compaction_revision_check_ms: u64,

    /// Milliseconds a new client connection may take to send HTTP/2's preface and first SETTINGS
    /// frame; a connection that has not is closed (half-open and slow-loris connections hold nothing).
    #[arg(long, env = "T4_HANDSHAKE_TIMEOUT_MS", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT_MS)]
    pub handshake_timeout_ms: u64,

    /// Least milliseconds between a client's keepalive pings (etcd's --grpc-keepalive-min-time):
    /// a client pinging more often while it has streams open, or pinging at all (more than once in
    /// 2 h) while it has none, gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings" after its third
    /// offence, as from etcd. Data or headers sent to the client forgive earlier pings. 0: grpc-go's
    /// default, 5 minutes, as etcd does.
    #[arg(long, env = "T4_GRPC_KEEPALIVE_MIN_TIME_MS", default_value_t = DEFAULT_GRPC_KEEPALIVE_MIN_TIME_MS)]
    pub grpc_keepalive_min_time_ms: u64,

    /// Milliseconds without anything received from a client before T4 pings it (etcd's
    /// --grpc-keepalive-interval). With this or the timeout 0, grpc-go's defaults apply (2 h and
    /// 20 s), as in etcd.
    #[arg(long, env = "T4_GRPC_KEEPALIVE_INTERVAL_MS", default_value_t = DEFAULT_GRPC_KEEPALIVE_INTERVAL_MS)]
    pub grpc_keepalive_interval_ms: u64,

    /// Milliseconds T4 waits for a client to answer its ping before closing the connection (etcd's
    /// --grpc-keepalive-timeout).
    #[arg(long, env = "T4_GRPC_KEEPALIVE_TIMEOUT_MS", default_value_t = DEFAULT_GRPC_KEEPALIVE_TIMEOUT_MS)]
    pub grpc_keepalive_timeout_ms: u64,

    /// Open client connections each core serves at most; more are closed as they arrive (and
    /// logged, at most once a second per core).
    #[arg(long, env = "T4_CONNECTIONS_PER_CORE_MAX", default_value_t = DEFAULT_CONNECTIONS_PER_CORE_MAX)]
    pub connections_per_core_max: usize,

    /// Object storage settings (none: the node keeps its data on local disk only).
    #[command(flatten)]
    pub object_store: ObjectStoreArgs,

    /// An object store given by an embedding program (any [`crate::object::ObjectStore`]); wins over
    /// `object_store`.
    #[arg(skip)]
    pub object_store_override: Option<std::sync::Arc<dyn crate::object::ObjectStore>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("listen_metrics", &self.listen_metrics)
            .field("advertise_client_urls", &self.advertise_client_urls)
            .field("cores", &self.cores)
            .field("object_store", &self.object_store)
            .field("object_store_override", &self.object_store_override.is_some())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for an embedded node keeping its data in `data_dir` and serving no network API.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen: None,
            advertise_client_urls: Vec::new(),
            listen_metrics: None,
            cores: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            name: "default".to_string(),
            group_proposals_max: DEFAULT_GROUP_PROPOSALS_MAX,
            groups_in_flight_max: DEFAULT_GROUPS_IN_FLIGHT_MAX,
            spin_before_park_us: DEFAULT_SPIN_BEFORE_PARK_US,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            disk_free_min_bytes: DEFAULT_DISK_FREE_MIN_BYTES,
            quota_backend_bytes: 0,
            auto_compaction_mode: "periodic".to_string(),
            auto_compaction_retention: "0".to_string(),
            auto_compaction_revision_check_ms: DEFAULT_AUTO_COMPACTION_REVISION_CHECK_MS,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            grpc_keepalive_min_time_ms: DEFAULT_GRPC_KEEPALIVE_MIN_TIME_MS,
            grpc_keepalive_interval_ms: DEFAULT_GRPC_KEEPALIVE_INTERVAL_MS,
            grpc_keepalive_timeout_ms: DEFAULT_GRPC_KEEPALIVE_TIMEOUT_MS,
            connections_per_core_max: DEFAULT_CONNECTIONS_PER_CORE_MAX,
            watch_progress_notify_interval_ms: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL_MS,
            object_store: ObjectStoreArgs {
                s3_region: "us-east-1".to_string(),
                wal_sync_upload: true,
                wal_upload_max_in_flight: DEFAULT_WAL_UPLOAD_MAX_IN_FLIGHT,
                wal_upload_interval_ms: DEFAULT_WAL_UPLOAD_INTERVAL_MS,
                wal_upload_timeout_ms: DEFAULT_WAL_UPLOAD_TIMEOUT_MS,
                wal_segment_bytes: DEFAULT_WAL_SEGMENT_BYTES,
                wal_segment_age_ms: DEFAULT_WAL_SEGMENT_AGE_MS,
                checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL_MIN,
                checkpoint_table_bytes: DEFAULT_CHECKPOINT_TABLE_BYTES,
                ..ObjectStoreArgs::default()
            },
            object_store_override: None,
        }
    }
}
