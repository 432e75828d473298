//! Every setting of a node, its default and its `T4_*` environment variable, in one place.
//! The `t4 run` command line is this struct (flags win over the environment); embedded users build it
//! with [`Config::new`] and adjust fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// Where `t4 run` keeps its data when no `--data-dir` is given.
pub const DEFAULT_DATA_DIR: &str = "./t4-data";
/// Where `t4 run` serves the etcd API when no `--listen` is given (loopback: safe by default).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3379";
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Deepest nesting of transactions accepted (the top-level txn is level 1), whatever
/// `max_txn_ops` allows. etcd bounds nesting only by its op budget (each level spends at least one
/// op, so the default 128 allows 129 levels, the last one empty); T4 also refuses deeper nesting with
/// etcd's too-many-ops error, because validation, evaluation, encoding and dropping recurse per level
/// and must stay well inside the 2 MiB stack of an executor or a read thread: at this depth they
/// take about 0.75 MiB in a debug build, 0.2 MiB in release. Only a `max_txn_ops` of 256 or more
/// makes T4 and etcd differ. Not a setting: it is sized to the stacks, not to a workload.
pub const TXN_NESTED_LEVELS_MAX: usize = 256;
/// gRPC adds this much headroom over `max_request_bytes` before refusing a frame outright, as etcd does.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Proposals merged into one group commit at most (bounds a batch's memory and a reply burst).
pub const DEFAULT_GROUP_PROPOSALS_MAX: usize = 1024;
/// Groups handed to the committer and not yet durable; the next group is evaluated meanwhile.
pub const DEFAULT_GROUPS_IN_FLIGHT_MAX: usize = 2;
/// Journal bytes fjall keeps before it flushes the memtables pinning the oldest journal. The `meta`
/// keyspace is written by every group but stays tiny, so without a low bound it would pin journals
/// up to fjall's 512 MiB default. Bounds disk use and the replay work of a restart.
pub const JOURNAL_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// Bytes one keyspace's memtable holds before it is flushed to a table. fjall's default (64 MiB) lets
/// the three keyspaces every put writes (`log`, `kv`, `latest`) hold up to 192 MiB of memtables, plus
/// those sealed and being flushed: most of a node's memory after a bulk load. 16 MiB keeps writes
/// as fast and memory far lower.
pub const MEMTABLE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// How long an idle executor polls for work before it sleeps (0: sleep at once).
pub const DEFAULT_SPIN_BEFORE_PARK_US: u64 = 0;
/// Shortest lease TTL in seconds; shorter grants are raised to it. etcd derives its minimum from the
/// election timeout (ceil(1.5 × 1 s) with its defaults); T4 keeps the same value so clients see the same.
pub const LEASE_TTL_MIN_SECONDS: i64 = 2;
/// Longest lease TTL in seconds (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_MAX_SECONDS: i64 = 9_000_000_000;
/// How often each shard checks its leases for expiry (and streams for departed clients).
pub const LEASE_TICK_MS: u64 = 100;
/// Expired leases one shard proposes to revoke per tick at most (etcd revokes 1000 per second).
pub const LEASE_REVOKES_PER_TICK_MAX: usize = 100;
/// Encoded watch responses a stream may have queued for a client that has not taken them; beyond
/// it, the stream's watchers stop getting live events and catch up from the log once it drains.
pub const WATCH_STREAM_BUFFER_BYTES: usize = 2 * 1024 * 1024;
/// Log bytes one catch-up read takes at most (bounds the memory and the pause of one batch).
pub const WATCH_CATCH_UP_BYTES_MAX: usize = 1024 * 1024;
/// etcd's default interval between progress notifications for watchers that asked for them.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL_MS: u64 = 10 * 60 * 1000;
/// HTTP/2 connection-level flow-control window: bytes a client may send on all its streams before
/// the server has taken them. h2 also sizes by it (half of it) the budget that closes a connection
/// with GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames" when small DATA frames (each charged up to
/// 256 bytes) pile up unread: hyper's 1 MiB default cut off a client whose burst of 10,000 watch
/// creates (~15 bytes each) arrived on a new stream before the stream's reader had started. 8 MiB
/// leaves room for ~17,000 such frames, and stays below the 16 MiB grpc-go (etcd) grows its windows to.
pub const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// How long a graceful shutdown waits for in-flight requests before closing connections.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Bytes the data directory's file system keeps free for what the storage engine writes on its own:
/// a journal up to [`JOURNAL_BYTES_MAX`] (128 MiB) plus five memtables flushed to tables (80 MiB),
/// with room for a compaction's output.
pub const DEFAULT_DISK_FREE_MIN_BYTES: u64 = 256 * 1024 * 1024;

/// Least time between two log lines of one failing background task (a WAL upload, a checkpoint, GC)
/// that keeps retrying: the failure stays visible in the log without flooding it; `Status.errors`
/// shows it meanwhile.
pub const FAILURE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a new connection may take to send HTTP/2's client preface and first SETTINGS frame.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// etcd's `--grpc-keepalive-min-time` (5 s).
pub const DEFAULT_GRPC_KEEPALIVE_MIN_TIME_MS: u64 = 5_000;
/// etcd's `--grpc-keepalive-interval` (2 h).
pub const DEFAULT_GRPC_KEEPALIVE_INTERVAL_MS: u64 = 2 * 60 * 60 * 1000;
/// etcd's `--grpc-keepalive-timeout` (20 s).
pub const DEFAULT_GRPC_KEEPALIVE_TIMEOUT_MS: u64 = 20_000;
/// grpc-go's keepalive minimum time when none is configured (5 min): what etcd enforces with a
/// `--grpc-keepalive-min-time` of 0.
pub const GRPC_DEFAULT_KEEPALIVE_MIN_TIME_MS: u64 = 5 * 60 * 1000;
/// grpc-go's server keepalive interval and timeout when none are configured (2 h, 20 s): what etcd
/// uses when `--grpc-keepalive-interval` or `--grpc-keepalive-timeout` is 0.
pub const GRPC_DEFAULT_KEEPALIVE_INTERVAL_MS: u64 = 2 * 60 * 60 * 1000;
pub const GRPC_DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 20_000;
/// Open client connections one core serves at most; beyond it, new ones are closed at once. Each
/// idle HTTP/2 connection holds a few KiB to tens of KiB (hyper's buffers, h2's tables), an active
/// one up to its windows (`CONNECTION_WINDOW_BYTES`); 4,096 per core stays far below both memory
/// and the usual 20,000+ open-file limits of a small machine.
pub const DEFAULT_CONNECTIONS_PER_CORE_MAX: usize = 4_096;

/// Keys, versions or changed keys a `t4 inspect` command shows unless `--limit` says otherwise.
pub const DEFAULT_INSPECT_LIMIT: usize = 1000;
/// How long `t4 status` waits for a node's answers, in milliseconds.
pub const DEFAULT_STATUS_TIMEOUT_MS: u64 = 5000;

/// Uploads to object storage in flight at once (sync upload).
pub const DEFAULT_WAL_UPLOAD_MAX_IN_FLIGHT: usize = 4;
/// Least milliseconds between the starts of two WAL uploads (0: none).
pub const DEFAULT_WAL_UPLOAD_INTERVAL_MS: u64 = 0;
/// Milliseconds a write waits for object storage before its caller gets "request timed out".
pub const DEFAULT_WAL_UPLOAD_TIMEOUT_MS: u64 = 10_000;
/// Async upload: a WAL object is cut at this many bytes...
pub const DEFAULT_WAL_SEGMENT_BYTES: usize = 8 * 1024 * 1024;
/// ...or when its oldest record is this many milliseconds old.
pub const DEFAULT_WAL_SEGMENT_AGE_MS: u64 = 1_000;
/// Expected size of a checkpoint's table objects.
pub const DEFAULT_CHECKPOINT_TABLE_BYTES: usize = 4 * 1024 * 1024;
/// Minutes between checkpoints (Go T4's default).
pub const DEFAULT_CHECKPOINT_INTERVAL_MIN: u64 = 15;

/// etcd's default space quota (`--quota-backend-bytes 0`): 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// How often revision-mode auto-compaction looks (etcd's `revInterval`).
pub const DEFAULT_AUTO_COMPACTION_REVISION_CHECK_MS: u64 = 300_000;

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

/// Where and how the node makes its writes durable beyond its disk.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ObjectStoreArgs {
    /// S3 bucket holding this node's WAL objects and checkpoints. Credentials come from
    /// T4_S3_ACCESS_KEY_ID and T4_S3_SECRET_ACCESS_KEY, or from --s3-profile; there is no fallback.
    #[arg(long, env = "T4_S3_BUCKET", conflicts_with = "object_store_dir")]
    pub s3_bucket: Option<String>,

    /// Key prefix inside the bucket (several nodes or databases can share a bucket).
    #[arg(long, env = "T4_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,

    /// S3 endpoint URL for S3-compatible stores (MinIO, Ceph, moto); addressed path-style.
    #[arg(long, env = "T4_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "T4_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Profile of the AWS shared config and credentials files to take credentials from.
    #[arg(long, env = "T4_S3_PROFILE")]
    pub s3_profile: Option<String>,

    /// A local folder used as the object store (development and tests).
    #[arg(long, env = "T4_OBJECT_STORE_DIR")]
    pub object_store_dir: Option<PathBuf>,

    /// Acknowledge a write only once the WAL object holding it is stored (true by default when a
    /// store is set); false uploads in the background, cut by --wal-segment-bytes/--wal-segment-age-ms.
    /// Takes true/false, 1/0, yes/no or on/off.
    #[arg(long, env = "T4_WAL_SYNC_UPLOAD", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub wal_sync_upload: bool,

    /// WAL uploads in flight at once (sync upload).
    #[arg(long, env = "T4_WAL_UPLOAD_MAX_IN_FLIGHT", default_value_t = DEFAULT_WAL_UPLOAD_MAX_IN_FLIGHT)]
    pub wal_upload_max_in_flight: usize,

    /// Least milliseconds between two WAL uploads: bounds the PUT rate (and the bill); writes arriving
    /// meanwhile share the next object.
    #[arg(long, env = "T4_WAL_UPLOAD_INTERVAL_MS", default_value_t = DEFAULT_WAL_UPLOAD_INTERVAL_MS)]
    pub wal_upload_interval_ms: u64,

    /// Milliseconds a write waits for object storage before failing with "request timed out"; an
    /// outage longer than this makes the node refuse writes until the store is back (with async
    /// upload, which goes on acknowledging writes, and for checkpoints, it is reported in
    /// `Status.errors` instead).
    #[arg(long, env = "T4_WAL_UPLOAD_TIMEOUT_MS", default_value_t = DEFAULT_WAL_UPLOAD_TIMEOUT_MS)]
    pub wal_upload_timeout_ms: u64,

    /// Async upload: bytes at which a WAL object is cut.
    #[arg(long, env = "T4_WAL_SEGMENT_BYTES", default_value_t = DEFAULT_WAL_SEGMENT_BYTES)]
    pub wal_segment_bytes: usize,

    /// Async upload: age in milliseconds at which a WAL object is cut.
    #[arg(long, env = "T4_WAL_SEGMENT_AGE_MS", default_value_t = DEFAULT_WAL_SEGMENT_AGE_MS)]
    pub wal_segment_age_ms: u64,

    /// Minutes a write may go without a checkpoint covering it (0: none by time). Counted from the
    /// newest checkpoint in object storage, so restarts do not reset it.
    #[arg(long, env = "T4_CHECKPOINT_INTERVAL", default_value_t = DEFAULT_CHECKPOINT_INTERVAL_MIN)]
    pub checkpoint_interval: u64,

    /// Also checkpoint once this many revisions, or WAL objects, are newer than the newest checkpoint
    /// in object storage (0: not by count): bounds what a disk-loss restore replays. Counted from
    /// the store, so restarts do not reset it.
    #[arg(long, env = "T4_CHECKPOINT_ENTRIES", default_value_t = 0)]
    pub checkpoint_entries: u64,

    /// Expected size of a checkpoint's table objects (smaller: more sharing between checkpoints,
    /// more objects).
    #[arg(long, env = "T4_CHECKPOINT_TABLE_BYTES", default_value_t = DEFAULT_CHECKPOINT_TABLE_BYTES, hide = true)]
    pub checkpoint_table_bytes: usize,
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

    /// The executor count: the configured one, or every CPU this process may run on.
    pub fn cores(&self) -> usize {
        self.cores.unwrap_or_else(cpus_available).max(1)
    }

    /// Refuses settings a node cannot run with, naming the flag: checked by [`crate::Node::open`]
    /// before anything is created, so a mistake costs nothing.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |setting: &'static str, reason: String| Err(Error::Setting { setting, reason });
        if self.max_request_bytes == 0 {
            return invalid("--max-request-bytes", "must be at least 1 (etcd's default is 1572864)".into());
        }
        if self.max_txn_ops == 0 {
            return invalid("--max-txn-ops", format!("must be at least 1 (etcd's default is {DEFAULT_MAX_TXN_OPS})"));
        }
        if let Err(reason) = self.auto_compaction() {
            return invalid("--auto-compaction-retention", reason);
        }
        match self.cores {
            Some(0) => return invalid("--cores", "must be at least 1".into()),
            Some(cores) if cores > cpus_available() => {
                let cpus = cpus_available();
                return invalid("--cores", format!("{cores} is more than the {cpus} CPUs this process may run on"));
            }
            _ => {}
        }
        Ok(())
    }

    /// The space quota (`--quota-backend-bytes`): `None` for none.
    pub fn quota_bytes(&self) -> Option<u64> {
        match self.quota_backend_bytes {
            0 => Some(DEFAULT_QUOTA_BACKEND_BYTES),
            quota if quota < 0 => None,
            quota => Some(quota as u64),
        }
    }

    /// What auto-compaction keeps (`None`: it is off), or why the flags do not say.
    pub fn auto_compaction(&self) -> Result<Option<crate::auto_compaction::Retention>, String> {
        let check = Duration::from_millis(self.auto_compaction_revision_check_ms.max(1));
        crate::auto_compaction::Retention::parse(&self.auto_compaction_mode, &self.auto_compaction_retention, check)
    }

    /// The client URLs MemberList reports for a node serving at `bound`: the configured ones, or
    /// the bound address with 127.0.0.1 (or ::1) standing in for an unspecified IP. Loopback is
    /// what etcd advertises by default (`http://localhost:2379`); a host name or interface address
    /// picked for the user could name the wrong network, so reaching the node from elsewhere
    /// through MemberList takes `--advertise-client-urls`, as with etcd.
    pub fn client_urls(&self, bound: Option<SocketAddr>) -> Vec<String> {
        if !self.advertise_client_urls.is_empty() {
            return self.advertise_client_urls.clone();
        }
        bound.map(|addr| vec![format!("http://{}", advertisable(addr))]).unwrap_or_default()
    }
}

/// The CPUs this process may run on (its affinity and cgroup limits included).
pub fn cpus_available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `addr` with the loopback address of its family in place of an unspecified IP.
fn advertisable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// Parses `--listen`: an IP address and port, or a host name and port resolved now.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut resolved = text
        .to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT (e.g. 127.0.0.1:3379 or localhost:3379): {e}"))?;
    resolved.next().ok_or_else(|| format!("{text} resolves to no address"))
}

/// Parses `--listen-metrics`: `HOST:PORT`, or etcd's form `http://HOST:PORT`.
fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    if text.starts_with("https://") {
        return Err(format!("{text}: the metrics port serves plain http (TLS is not built yet)"));
    }
    let addr = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
    parse_listen_addr(addr)
}

/// Parses one `--advertise-client-urls` entry: `http://` or `https://`, a host and a port.
fn parse_client_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| format!("{text}: expected a URL starting with http:// or https://"))?;
    let authority = rest.trim_end_matches('/');
    let port = authority.rsplit_once(':').map(|(_, port)| port);
    if authority.contains('/') || port.is_none_or(|port| port.parse::<u16>().is_err()) {
        return Err(format!("{text}: expected http://HOST:PORT"));
    }
    Ok(text.trim_end_matches('/').to_string())
}

impl ObjectStoreArgs {
    /// The object storage flags set (on the command line or by their `T4_*` variable) although no
    /// store is (neither `--s3-bucket` nor `--object-store-dir`): they would do nothing, so a node
    /// refuses to start rather than run without the store its operator meant to give it. Each entry
    /// names the flag and where it came from.
    pub fn given_without_store(matches: &clap::ArgMatches) -> Vec<String> {
        use clap::parser::ValueSource;
        let source = |id: &str| matches.value_source(id);
        let explicit = |id: &str| matches!(source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        if explicit("s3_bucket") || explicit("object_store_dir") {
            return Vec::new();
        }
        let args = <ObjectStoreArgs as clap::Args>::augment_args(clap::Command::new("object-store"));
        let named = |arg: &clap::Arg| match source(arg.get_id().as_str()) {
            Some(ValueSource::CommandLine) => arg.get_long().map(|long| format!("--{long}")),
            Some(ValueSource::EnvVariable) => arg.get_env().map(|env| env.to_string_lossy().into_owned()),
            _ => None,
        };
        args.get_arguments()
            .filter(|arg| !matches!(arg.get_id().as_str(), "s3_bucket" | "object_store_dir"))
            .filter_map(named)
            .collect()
    }
}

impl ObjectStoreArgs {
    /// Where the node's writes go beyond its disk, and how, for the start-up log line: `none`,
    /// `s3://bucket/prefix (endpoint …), sync upload` or `dir /path, async upload`.
    pub fn summary(&self) -> String {
        let mode = if self.wal_sync_upload { "sync upload" } else { "async upload" };
        match (&self.s3_bucket, &self.object_store_dir) {
            (Some(bucket), _) => {
                let prefix = self.s3_prefix.trim_start_matches('/');
                let endpoint = self.s3_endpoint.as_deref().unwrap_or("AWS");
                format!("s3://{bucket}/{prefix} (endpoint {endpoint}, region {}), {mode}", self.s3_region)
            }
            (None, Some(dir)) => format!("dir {}, {mode}", dir.display()),
            (None, None) => "none (local disk only)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        config: Config,
    }

    fn given_without_store(args: &[&str]) -> Vec<String> {
        let matches = Run::command().get_matches_from(std::iter::once("t4").chain(args.iter().copied()));
        Run::from_arg_matches(&matches).expect("parses");
        ObjectStoreArgs::given_without_store(&matches)
    }

    #[test]
    fn object_store_defaults_are_not_flags_given_without_a_store() {
        assert_eq!(given_without_store(&[]), Vec::<String>::new());
        assert_eq!(given_without_store(&["--s3-region", "us-east-1"]), ["--s3-region"]);
        assert_eq!(given_without_store(&["--s3-prefix", "p", "--object-store-dir", "o"]), Vec::<String>::new());
        assert_eq!(given_without_store(&["--s3-prefix", "p", "--s3-bucket", "b"]), Vec::<String>::new());
    }

    #[test]
    fn unspecified_addresses_are_advertised_as_loopback() {
        let config = Config::new("d");
        assert_eq!(config.client_urls(Some("0.0.0.0:2379".parse().unwrap())), ["http://127.0.0.1:2379"]);
        assert_eq!(config.client_urls(Some("[::]:2379".parse().unwrap())), ["http://[::1]:2379"]);
        assert_eq!(config.client_urls(Some("10.0.0.5:2379".parse().unwrap())), ["http://10.0.0.5:2379"]);
        assert_eq!(config.client_urls(None), Vec::<String>::new());
    }

    #[test]
    fn client_urls_need_a_scheme_a_host_and_a_port() {
        assert_eq!(parse_client_url("http://db1:2379/").as_deref(), Ok("http://db1:2379"));
        assert_eq!(parse_client_url("https://[::1]:2379").as_deref(), Ok("https://[::1]:2379"));
        for bad in ["db1:2379", "http://db1", "http://db1:port", "http://db1:2379/path", "unix://x:1"] {
            assert!(parse_client_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn listen_resolves_names_and_takes_addresses() {
        assert_eq!(parse_listen_addr("127.0.0.1:0"), Ok("127.0.0.1:0".parse().unwrap()));
        assert!(parse_listen_addr("localhost:3379").is_ok_and(|addr| addr.ip().is_loopback() && addr.port() == 3379));
        assert!(parse_listen_addr("3379").is_err());
    }

    #[test]
    fn zero_limits_and_too_many_cores_are_refused() {
        let valid = Config::new("d");
        assert!(valid.validate().is_ok());
        let refused = |change: fn(&mut Config)| {
            let mut config = valid.clone();
            change(&mut config);
            match config.validate() {
                Err(Error::Setting { setting, .. }) => setting,
                other => panic!("accepted: {other:?}"),
            }
        };
        assert_eq!(refused(|c| c.max_request_bytes = 0), "--max-request-bytes");
        assert_eq!(refused(|c| c.max_txn_ops = 0), "--max-txn-ops");
        assert_eq!(refused(|c| c.cores = Some(0)), "--cores");
        assert_eq!(refused(|c| c.cores = Some(cpus_available() + 1)), "--cores");
    }
}
