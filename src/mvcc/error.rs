//! What the local database fails with: fjall's errors, kept as the source with what was being done,
//! and stored bytes that do not decode. A disk that is full is recognised from fjall's I/O error
//! ([`is_disk_full`]) where a write can refuse with etcd's NOSPACE instead.

use std::path::PathBuf;

/// A failure of the local database (the `mvcc` layer).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// fjall failed an operation: the database may be unusable.
    #[error("storage failure: {doing}: {source}")]
    Database {
        /// What the store was doing (`"reading meta"`, `"committing a group"`).
        doing: &'static str,
        #[source]
        source: fjall::Error,
    },
    /// A file or directory of the data dir could not be used.
    #[error("storage failure: {doing} {}: {source}", path.display())]
    Io {
        /// What the store was doing with it.
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path that cannot be handed to the operating system (it holds a zero byte).
    #[error("storage failure: {} holds a zero byte", path.display())]
    PathWithZero { path: PathBuf },
    /// Stored bytes that do not decode: corruption, or a format from the future. `what` says which
    /// bytes and where.
    #[error("corrupt data: {what}")]
    Corrupt { what: String },
    /// A fault injected by a fail point (tests).
    #[error("storage failure: {0}")]
    Injected(&'static str),
}

impl StoreError {
    /// Stored bytes that do not decode, described.
    pub fn corrupt(what: impl Into<String>) -> StoreError {
        StoreError::Corrupt { what: what.into() }
    }

    /// What a fjall failure becomes, with what the store was doing.
    pub fn database(doing: &'static str) -> impl FnOnce(fjall::Error) -> StoreError {
        move |source| StoreError::Database { doing, source }
    }
}

/// Says what the store was doing when fjall failed: `ks.get(key).doing("reading meta")?`.
pub trait Doing<T> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError>;
}

impl<T> Doing<T> for Result<T, fjall::Error> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError> {
        self.map_err(StoreError::database(doing))
    }
}

/// Whether a fjall failure means the disk is full (fjall wraps the I/O error).
pub fn is_disk_full(e: &fjall::Error) -> bool {
    matches!(e, fjall::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28))
}
