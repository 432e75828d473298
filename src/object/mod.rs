//! Object storage behind one small async trait, so the uploader, restore and GC never name a backend:
//! `mem` (tests), `dir` (a local folder) and `s3` (a bucket, through rusoto). Conditional writes are
//! the primitives the durability layer builds on: `put_if_absent` (`If-None-Match: *`) and
//! `put_if_match` (`If-Match`). Every implementation keeps the contract that
//! `tests/common/object_contract.rs` checks.

mod counted;
mod dir;
mod mem;
mod s3;

pub use counted::CountedStore;
pub use dir::DirStore;
pub use mem::MemStore;
pub use s3::{S3Config, S3Credentials, S3Retry, S3Store};

/// What object-store calls fail with.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// A conditional write found the object present (`put_if_absent`) or changed (`put_if_match`).
    #[error("precondition failed for {0}")]
    PreconditionFailed(String),
    /// The store could not be reached or refused the call; worth retrying.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// A request the store will never accept (bad key, bad credentials, ...).
    #[error("object store error: {0}")]
    Fatal(String),
}

/// Results of object-store calls.
pub type ObjectResult<T> = std::result::Result<T, ObjectError>;

/// An object's bytes and its entity tag (opaque; changes whenever the content does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The object's content.
    pub bytes: Vec<u8>,
    /// Its entity tag, without quotes; what [`ObjectStore::put_if_match`] takes.
    pub etag: String,
}

/// An S3-like object store. Keys are `/`-separated names without empty segments, `.` or `..`.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Stores `bytes` at `key`, replacing any object; returns the new etag.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String>;
    /// Stores `bytes` at `key` only if nothing is there (`If-None-Match: *`).
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String>;
    /// Replaces the object at `key` only if its etag is still `etag` (`If-Match`).
    async fn put_if_match(&self, key: &str, bytes: Vec<u8>, etag: &str) -> ObjectResult<String>;
    /// The object at `key`, if there is one.
    async fn get(&self, key: &str) -> ObjectResult<Option<Object>>;
    /// Removes `key` (nothing happens if it is absent).
    async fn delete(&self, key: &str) -> ObjectResult<()>;
    /// Removes every key of `keys`.
    async fn delete_many(&self, keys: &[String]) -> ObjectResult<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }
    /// Every key starting with `prefix` and sorting after `start_after`, in byte order.
    async fn list(&self, prefix: &str, start_after: Option<&str>) -> ObjectResult<Vec<String>>;
}

/// The etag the local stores give `bytes`: a content hash, so equal contents share a tag (a
/// conditional write against equal content cannot lose an update).
fn content_etag(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses keys a local store could not map to a file safely.
fn check_key(key: &str) -> ObjectResult<()> {
    let bad = key.is_empty() || key.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if bad {
        return Err(ObjectError::Fatal(format!("invalid object key {key:?}")));
    }
    Ok(())
}
