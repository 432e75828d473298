//! What durability in object storage fails with: the object store's errors with what was being done,
//! documents and tables that do not parse, WAL objects, checkpoints and snapshots that are damaged,
//! and local files. Each message keeps the category the node has always printed ("storage failure",
//! "corrupt data").

use std::path::PathBuf;

use super::layout::LayoutError;
use super::table::TableError;
use crate::error::Error;
use crate::log::LogError;
use crate::object::ObjectError;

/// A failure of the durability layer.
#[derive(Debug, thiserror::Error)]
pub enum DurabilityError {
    /// An object-store call failed: what was being done, and the store's error.
    #[error("storage failure: {doing}: {source}")]
    Object {
        doing: String,
        #[source]
        source: ObjectError,
    },
    /// An object a manifest names is not in the store.
    #[error("storage failure: {key} is missing")]
    Missing { key: String },
    /// `manifest/latest` names a checkpoint that is not in the store.
    #[error("storage failure: reading {key}: manifest/latest names it, but it is missing")]
    LatestDangling { key: String },
    /// A document (`manifest/latest`, a manifest, a branch pin) that does not parse.
    #[error("corrupt data: {0}")]
    Layout(#[from] LayoutError),
    /// The document stored under `key` does not parse.
    #[error("corrupt data: {key}: {source}")]
    Document {
        key: String,
        #[source]
        source: LayoutError,
    },
    /// GC found a document it cannot read, so it collects nothing rather than guess.
    #[error("corrupt data: {key}: {source}; GC skipped")]
    GcSkipped {
        key: String,
        #[source]
        source: LayoutError,
    },
    /// A table object that fails its checks.
    #[error("corrupt data: {0}")]
    Table(#[from] TableError),
    /// A checkpoint's content is not what its manifest says: `what` says how.
    #[error("corrupt data: {what}")]
    Checkpoint { what: String },
    /// No checkpoint in the store could be restored: each one tried, with why.
    #[error("corrupt data: no usable checkpoint: {}", joined(failures))]
    NoUsableCheckpoint { failures: Vec<(String, Error)> },
    /// A WAL object whose frames do not decode.
    #[error("corrupt data: WAL object {key}: {what} at record {record}")]
    WalFrame { key: String, what: &'static str, record: usize },
    /// A WAL object holding a record that does not decode.
    #[error("corrupt data: WAL object {key}: {source} at record {record}")]
    WalRecord {
        key: String,
        record: usize,
        #[source]
        source: LogError,
    },
    /// Replayed WAL records the local store could not take: which objects they came from.
    #[error("storage failure: applying WAL objects {objects}: {source}")]
    Apply {
        objects: String,
        #[source]
        source: Box<Error>,
    },
    /// A snapshot could not be written.
    #[error("storage failure: {doing}: {source}")]
    SnapshotWrite {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// A snapshot's end record could not be encoded.
    #[error("runtime: snapshot end record: {0}")]
    SnapshotEnd(#[source] serde_json::Error),
    /// A file that cannot be read as a snapshot.
    #[error("corrupt data: {}: not a usable T4 snapshot: {source}", path.display())]
    SnapshotUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A snapshot that ends before its end record.
    #[error("corrupt data: {}: not a usable T4 snapshot: no end record: {source}", path.display())]
    SnapshotEndMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A snapshot whose end record does not parse.
    #[error("corrupt data: {}: not a usable T4 snapshot: end record: {source}", path.display())]
    SnapshotEndRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A snapshot holding a table that fails its checks.
    #[error("corrupt data: {}: not a usable T4 snapshot: {source}", path.display())]
    SnapshotTable {
        path: PathBuf,
        #[source]
        source: TableError,
    },
    /// A file that is not a snapshot this build can load: `why` says what is wrong with it.
    #[error("corrupt data: {}: not a usable T4 snapshot: {why}", path.display())]
    NotASnapshot { path: PathBuf, why: String },
    /// A folder the object store's arguments name that does not exist.
    #[error("storage failure: object store directory {} does not exist", path.display())]
    NoStoreDir { path: PathBuf },
    /// S3 credentials that cannot be used: says what to set.
    #[error("runtime: {0}")]
    Credentials(&'static str),
    /// A checkpoint asked of a node without an object store.
    #[error("runtime: the node has no object store to checkpoint to")]
    NoObjectStore,
    /// A fault injected by a fail point (tests).
    #[error("storage failure: {0}")]
    Injected(&'static str),
}

impl DurabilityError {
    /// What an object-store failure becomes, with what was being done.
    pub fn object(doing: impl Into<String>) -> impl FnOnce(ObjectError) -> DurabilityError {
        let doing = doing.into();
        move |source| DurabilityError::Object { doing, source }
    }
}

fn joined(failures: &[(String, Error)]) -> String {
    failures.iter().map(|(key, e)| format!("{key}: {e}")).collect::<Vec<_>>().join("; ")
}
