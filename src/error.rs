//! The crate's error type. Variants name what went wrong in etcd's terms; `src/etcd/status.rs` is the
//! one place that turns them into gRPC statuses with etcd's exact codes and messages. What fails
//! inside the node is [`Error::Internal`]: each layer's own error ([`Internal`]), its source kept.

use std::path::PathBuf;

pub use crate::durability::error::DurabilityError;
pub use crate::durability::upload::UploadError;
pub use crate::log::LogError;
pub use crate::mvcc::error::StoreError;
pub use crate::runtime::error::RuntimeError;
pub use crate::sequencer::error::SequencerError;

/// Everything a T4 operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request named no key.
    #[error("key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty txn op.
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("lease is provided")]
    LeaseProvided,
    /// A transaction branch or compare list longer than `max_txn_ops`.
    #[error("too many operations in txn request")]
    TooManyOps,
    /// Two writes to one key in one transaction.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// The request reads or compacts at a revision that compaction removed.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The request reads or compacts at a revision not yet written.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A lease id that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A lease grant naming an id that is already granted.
    #[error("lease already exists")]
    LeaseExists,
    /// A lease grant with a TTL above etcd's maximum.
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    /// A watch ended by the node, with the reason.
    #[error("watch canceled: {0}")]
    WatchCanceled(String),
    /// A watch stream's catch-up cannot read the log: the stream ends (the node goes on).
    #[error("watch history cannot be read: {0}")]
    WatchHistoryUnreadable(Box<Error>),
    /// A watch stream's requests broke (one did not decode, or the transport failed): the stream
    /// ends with the transport's own status, which the etcd layer kept.
    #[error("the watch stream's requests broke")]
    WatchRequestsBroken,
    /// A write request larger than `max_request_bytes`.
    #[error("request is too large")]
    RequestTooLarge,
    /// The node was closed (or is shutting down) and takes no more requests.
    #[error("node is closed")]
    Closed,
    /// The data directory cannot be used.
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    /// Another process holds the data directory's lock: `holder` names it (from its lock file),
    /// `advice` says what to do instead.
    #[error("data directory {path} is in use by {holder}; {advice}")]
    DataDirLocked { path: PathBuf, holder: String, advice: String },
    /// A setting the node cannot run with: `setting` is its flag.
    #[error("invalid {setting}: {reason}")]
    Setting { setting: &'static str, reason: String },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    /// Object storage cannot be reached, so a write cannot be made durable (sync upload); the node
    /// takes writes again once the store is back.
    #[error("object store unavailable, writes cannot be made durable: {0}")]
    StoreUnavailable(String),
    /// A write that would grow the store while the disk is (nearly) full or the NOSPACE alarm is
    /// raised; nothing of it was written.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A write while the CORRUPT alarm stands (a hash check found the store damaged): refused, as
    /// etcd refuses every write then, until the alarm is disarmed.
    #[error("etcdserver: corrupt cluster")]
    CorruptCluster,
    /// MoveLeader to a member that cannot lead (on a single node: any other than itself).
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A write was not acknowledged in time (its outcome is unknown: it may still be applied).
    #[error("request timed out")]
    Timeout,
    /// A failure inside the node (the database, object storage, a thread): which layer, with its
    /// source.
    #[error(transparent)]
    Internal(#[from] Internal),
    /// An actor's input ended while the node was running: a consequence of a failure upstream, which
    /// the supervisor prefers as the cause when it is recorded too.
    #[error("{0}")]
    InputEnded(&'static str),
    /// The node stopped because one of its actors, threads or tasks failed: which, and with what.
    #[error("the node stopped: {actor} failed: {source}")]
    Stopped { actor: String, source: std::sync::Arc<Error> },
    /// A call T4 does not serve yet: says what is missing.
    #[error("{0}")]
    Unimplemented(String),
    /// Authenticate while authentication is disabled (T4 has no users, so it always is).
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    /// Enabling authentication needs a `root` user, and there is none.
    #[error("root user does not exist")]
    RootUserNotExist,
    /// A user operation naming no user.
    #[error("user name is empty")]
    UserEmpty,
    /// A user operation naming a user that does not exist.
    #[error("user name not found")]
    UserNotFound,
    /// A role operation naming no role.
    #[error("role name is empty")]
    RoleEmpty,
    /// A role operation naming a role that does not exist.
    #[error("role name not found")]
    RoleNotFound,
    /// A membership change naming a member that is not in the cluster.
    #[error("member not found")]
    MemberNotFound,
    /// Promoting a member that is already a voting member.
    #[error("can only promote a learner member")]
    MemberNotLearner,
    /// A membership change that would leave too few started members (removing the only one).
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// Peer URLs that do not parse as `scheme://host:port`.
    #[error("given member URLs are invalid")]
    MemberBadUrls,
    /// Proclaim with a leader key that no longer holds the election.
    #[error("election: not leader")]
    ElectionNotLeader,
    /// Leader of an election nobody holds.
    #[error("election: no leader")]
    ElectionNoLeader,
    /// Proclaim or Resign without the leader key.
    #[error("\"leader\" field must be provided")]
    LeaderKeyMissing,
    /// A wait for a key's deletion whose watch ended without it.
    #[error("lost watcher waiting for delete")]
    LostWatcher,
}

/// What failed inside the node, by layer. Each layer's error says its category first ("storage
/// failure", "corrupt data", "runtime", "WAL upload"), as the node's messages always have; the log
/// and upload errors are shared by several layers, so the category is written here.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    /// The local database (`mvcc`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Object storage: checkpoints, restore, replay, snapshots (`durability`).
    #[error(transparent)]
    Durability(#[from] DurabilityError),
    /// The write path (`sequencer`).
    #[error(transparent)]
    Sequencer(#[from] SequencerError),
    /// A stored log record that does not decode (the `log` keyspace, a WAL object, a checkpoint).
    #[error("corrupt data: {0}")]
    Log(#[from] LogError),
    /// Object storage cannot hold the WAL, or the uploader failed (see [`UploadError`]).
    #[error("WAL upload: {0}")]
    Upload(#[from] UploadError),
    /// An executor, thread or task could not be started or ended without its result.
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
}

macro_rules! internal_from {
    ($($layer:ty),*) => {$(
        impl From<$layer> for Error {
            fn from(e: $layer) -> Error {
                Error::Internal(e.into())
            }
        }
    )*};
}
internal_from!(StoreError, DurabilityError, SequencerError, LogError, UploadError, RuntimeError);

/// Results of T4 operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
