//! The uploader: turns groups of log records into WAL objects `wal/<term>/<first-rev>`, each the
//! concatenation of the records' frames (`[len u32][crc32c u32][payload]`, the log's own encoding).
//! Each mode is a plain state machine that decides (`sync_plan`, `async_plan`: inputs and the time
//! in, effects out, tested without a runtime) and a driver that only does I/O and feeds it
//! (`sync`, `async_mode`: tokio tasks on the durability runtime).
//!
//! **Sync mode** (the default with a store): the sequencer hands every evaluated group here before
//! the local commit; a group goes on to the committer, and so becomes visible and acknowledged, only
//! once the object holding it is stored. Invariants: groups are passed on in arrival order and only
//! once stored; at most `max_in_flight` uploads at once, each object holding whole groups that follow
//! the previous object's; a caller that waited `wait_max` gets one timeout (its write may still be
//! applied once the store returns, as with etcd's timeouts); an upload failing or hanging for
//! `wait_max` makes the sequencer refuse new writes until an upload succeeds; a conflict (another
//! writer's object under our name) refuses writes until the node restarts.
//!
//! **Async mode**: the uploader subscribes to committed groups like a shard does and cuts objects by
//! size or age, one upload at a time. Invariants: the upload watermark in `meta` only moves forward
//! and never past a record not stored (compaction keeps the log above it); the records held in memory
//! stay under a bound (beyond it they are read back from the local log); a shutdown with the store
//! down gives up after `wait_max` (the next start uploads the rest).
//!
//! Every object is created with `put_if_absent`: a node never overwrites an object, of its own term or
//! another's. A retry that finds its own object already there (a lost response) compares the bytes.

mod async_mode;
mod async_plan;
mod sync;
mod sync_plan;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use async_mode::run_async;
pub use sync::{SyncChannels, run_sync};

use super::layout::wal_key;
use crate::log::LogRecord;
use crate::metrics::UploadStats;
use crate::mvcc::store::LogPosition;
use crate::object::{ObjectError, ObjectStore};

/// First pause before retrying a failed upload; doubles up to [`RETRY_DELAY_MAX`].
const RETRY_DELAY_FIRST: Duration = Duration::from_millis(50);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// Settings of the uploader.
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// The term objects are written under.
    pub term: crate::ids::Term,
    /// Uploads in flight at once (sync mode).
    pub max_in_flight: usize,
    /// Least time between the starts of two uploads.
    pub min_interval: Duration,
    /// How long a write waits for object storage before its caller gets a timeout; also how long an
    /// upload may keep failing before new writes are refused.
    pub wait_max: Duration,
    /// Async mode: an object is cut when its records reach this many bytes...
    pub segment_bytes: usize,
    /// ...or when its oldest record is this old.
    pub segment_age: Duration,
}

/// Why an upload, or the uploader, failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The store could not be reached or refused the call (retried).
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The object's name holds different bytes: another node writes under this term.
    #[error("{key} already holds different records: another node writes under this term")]
    Conflict { key: String },
    /// The store said the name was taken, then had no object under it (retried).
    #[error("{key} was reported present but is gone")]
    Vanished { key: String },
    /// An upload task ended without reporting (it panicked or was cancelled).
    #[error("the upload task of {key} ended: {source}")]
    TaskEnded {
        key: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The committer stopped taking the groups the sync uploader stored: writes cannot be
    /// acknowledged any more.
    #[error("the committer no longer takes uploaded groups")]
    CommitterGone,
    /// The uploader's task ended while the node was still running.
    #[error("the uploader ended while the node runs")]
    EndedEarly,
    /// The uploader's task panicked or was cancelled.
    #[error("the uploader's task ended: {0}")]
    Panicked(#[source] tokio::task::JoinError),
    /// A fault point fired (tests only).
    #[error("fault injected at {0}")]
    Injected(&'static str),
}

/// The bytes of a WAL object being built, and the log positions it covers.
#[derive(Debug, Default)]
pub(super) struct WalObject {
    bytes: Vec<u8>,
    first: Option<LogPosition>,
    last: Option<LogPosition>,
}

impl WalObject {
    fn push(&mut self, record: &LogRecord) {
        self.push_frame(record.position(), &record.encode());
    }

    /// Adds one record's encoded frame, at `at`.
    fn push_frame(&mut self, at: LogPosition, frame: &[u8]) {
        self.first.get_or_insert(at);
        self.last = Some(at);
        self.bytes.extend_from_slice(frame);
    }

    /// The object's key under `term`, if it holds any record.
    fn key(&self, term: crate::ids::Term) -> Option<String> {
        self.first.map(|first| wal_key(term, first.revision, first.sub))
    }
}

/// What one attempt at storing an object came to.
enum Attempt {
    Stored,
    /// Worth retrying.
    Failed(UploadError),
    /// The name holds different bytes: retrying the same bytes cannot cure it.
    Conflict(UploadError),
}

/// One `put_if_absent` of `bytes` at `key`; a name already taken is compared with `bytes`.
async fn attempt(store: &dyn ObjectStore, key: &str, bytes: &[u8]) -> Attempt {
    fail::fail_point!("upload-before-put", |_| Attempt::Failed(UploadError::Injected("upload-before-put")));
    let attempt = match store.put_if_absent(key, bytes.to_vec()).await {
        Ok(_) => Attempt::Stored,
        Err(ObjectError::PreconditionFailed(_)) => match store.get(key).await {
            Ok(Some(existing)) if existing.bytes == bytes => Attempt::Stored,
            Ok(Some(_)) => Attempt::Conflict(UploadError::Conflict { key: key.to_string() }),
            Ok(None) => Attempt::Failed(UploadError::Vanished { key: key.to_string() }),
            Err(e) => Attempt::Failed(e.into()),
        },
        Err(e) => Attempt::Failed(e.into()),
    };
    if matches!(attempt, Attempt::Stored) {
        // The object is stored, but its uploader does not learn it: the retry finds its own bytes.
        fail::fail_point!("upload-after-put", |_| Attempt::Failed(UploadError::Injected("upload-after-put")));
    }
    attempt
}

/// Stores one object, retrying until it is stored. A retry that finds the key taken compares the
/// bytes (its own earlier attempt may have succeeded); different bytes there are a conflict with
/// another writer, returned as an error: the node must not go on writing under this term.
/// `on_failure` hears of every failed attempt.
pub async fn store_object(
    store: &dyn ObjectStore,
    key: &str,
    bytes: Vec<u8>,
    stats: &UploadStats,
    mut on_failure: impl FnMut(UploadError),
) -> Result<(), UploadError> {
    let mut delay = RETRY_DELAY_FIRST;
    let started = Instant::now();
    loop {
        match attempt(store, key, &bytes).await {
            Attempt::Stored => break,
            Attempt::Conflict(conflict) => return Err(conflict),
            Attempt::Failed(error) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                on_failure(error);
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_DELAY_MAX);
    }
    stats.stored(bytes.len(), started.elapsed());
    Ok(())
}
