//! The defaults of settings (`DEFAULT_*`: what `t4 run` without a flag and `Config::new` both start
//! from) and the limits that are not settings (sized to stacks, memory or the storage engine), each
//! with its reason; a name ends with its unit where it has one.

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
