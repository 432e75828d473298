//! The fjall database of one node: `log`, `kv`, `latest`, `leases` and `meta` keyspaces, written only by the
//! sequencer's committer (one atomic batch and one sync per group) and its compactor (removals of
//! versions no read can reach). Readers take a [`ReadView`]: one snapshot, so no reader sees half a group.
//!
//! This file holds the [`Store`], the data directory's layout, who the node is, and the small reads of
//! committed state. One file per concept beside it: `open` (data directory, format, identity), `commit`
//! (group commits, upload watermark), `read` (reads at a revision), `compact` (physical compaction),
//! `checkpoint` (the state as a checkpoint holds it) and `maintenance` (sizes, hashes, defragment).

mod checkpoint;
mod commit;
mod compact;
mod index;
mod maintenance;
mod open;
mod read;

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, PersistMode, Readable, Snapshot};

pub use self::commit::GroupWrite;
pub use self::read::ReadView;
use super::encoding::{Version, decode_lease_key, decode_log_key, is_long_history_key, is_long_latest_key, meta};
use super::error::{Doing, StoreError};
use super::lock::DataDirLock;
use crate::error::Result;
use crate::ids::{Revision, Term};

/// Revision of an empty store: etcd starts at 1, so the first write is revision 2.
pub const INITIAL_REVISION: Revision = Revision(1);
/// Compact revision of a store never compacted (etcd's `compactMainRev` starts at -1).
pub const NEVER_COMPACTED: Revision = Revision(-1);
/// The database's folder inside a data directory.
const DB_DIR: &str = "db";
/// Files made and removed while the node runs (snapshots being sent); emptied at open.
const SCRATCH_DIR: &str = "tmp";
/// The keyspaces of a T4 database.
const KEYSPACES: [&str; 5] = ["log", "kv", "latest", "leases", "meta"];

/// Who this node is; chosen at first start and kept in `meta`.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// This member's id (nonzero).
    pub member_id: u64,
    /// The cluster's id (nonzero).
    pub cluster_id: u64,
    /// The leadership term; 1 for a single node.
    pub term: crate::ids::Term,
}

pub use crate::log::LogPosition;

/// The node's database.
pub struct Store {
    /// Holds `<data-dir>/LOCK` for the lifetime of the store.
    lock: DataDirLock,
    db: Database,
    /// (revision, sub) → framed [`LogRecord`](crate::log::LogRecord): the WAL and the watch history.
    log: Keyspace,
    /// escape(key) ‖ revision → [`Version`]: every version still inside the history window.
    kv: Keyspace,
    /// key → [`Version`] of live keys at the current revision: reads at "now" are one ordered scan.
    latest: Keyspace,
    /// lease id → granted TTL (i64 BE) of every lease not revoked; deadlines live in memory only.
    leases: Keyspace,
    /// named bookkeeping values (see [`meta`]).
    meta: Keyspace,
    /// Every key of `kv` with the revisions of its versions, in key order: what reads walk.
    index: index::SharedIndex,
    identity: Identity,
    /// Set when the node uploads to object storage: compaction keeps log records not uploaded yet.
    keep_unuploaded_log: std::sync::atomic::AtomicBool,
    /// The current term (`identity.term` is the term at open).
    term: std::sync::atomic::AtomicU64,
    /// `<data-dir>/db`, for disk-usage reports.
    db_dir: PathBuf,
    /// Held while the store is defragmented (one at a time).
    defragmenting: std::sync::Mutex<()>,
}

fn read_i64(ks: &Keyspace, name: &[u8]) -> Result<Option<i64>, StoreError> {
    match ks.get(name).doing("reading meta")? {
        Some(v) => Ok(Some(i64::from_be_bytes(
            v.as_ref().try_into().map_err(|_| StoreError::corrupt(format!("meta {name:?}")))?,
        ))),
        None => Ok(None),
    }
}

/// Mode of a data directory T4 creates (etcd's `PrivateDirMode`): only its owner may enter it.
const DATA_DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with [`DATA_DIR_MODE`]; an existing one that others may enter
/// is kept as it is, with a warning, as etcd does.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the data directory may be read by other users; the recommended mode is 700"
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(_) => std::fs::DirBuilder::new().recursive(true).mode(DATA_DIR_MODE).create(dir),
    }
}

/// Refuses a `kv` or `latest` entry whose stored key is too long to be a key stored as itself but
/// whose record carries no key: what a format 3 build wrote for keys of 65,504 to 65,535 bytes.
fn check_long_key_layout(keyspace: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
    let long = if keyspace == "kv" { is_long_history_key(key) } else { is_long_latest_key(key) };
    if long && Version::carried_key(value)?.is_none() {
        return Err(StoreError::corrupt(format!(
            "`{keyspace}` holds a key of {} stored bytes in the layout of format 3 (keys over 65,503 bytes); \
             run the T4 build that wrote it, delete those keys and compact past them, then upgrade",
            key.len()
        )));
    }
    Ok(())
}

impl Store {
    /// This node's ids and term.
    pub fn identity(&self) -> Identity {
        Identity { term: Term(self.term.load(std::sync::atomic::Ordering::Acquire)), ..self.identity }
    }

    /// Sets the leadership term (a node with an object store starts a new one at each start, so its
    /// objects never collide with those of an earlier run).
    pub fn set_term(&self, term: crate::ids::Term) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.meta, meta::TERM, (term.get() as i64).to_be_bytes().to_vec());
        batch.commit().doing("writing the term")?;
        self.term.store(term.get(), std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The revision of the last committed write.
    pub fn current_revision(&self) -> Result<Revision> {
        Ok(read_i64(&self.meta, meta::CURRENT_REVISION)?.map_or(INITIAL_REVISION, Revision))
    }

    /// Revision up to which superseded versions have been removed.
    pub fn compacted_through(&self) -> Result<Revision> {
        Ok(read_i64(&self.meta, meta::COMPACTED_THROUGH)?.map_or(NEVER_COMPACTED, Revision))
    }

    /// The position of the newest log record, if the log holds any.
    pub fn last_log_position(&self) -> Result<Option<LogPosition>> {
        match self.log.last_key_value() {
            Some(guard) => Ok(Some(decode_log_key(&guard.key().doing("reading the newest log key")?)?)),
            None => Ok(None),
        }
    }

    /// Every lease not revoked, as (id, granted TTL), in id order.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        let mut leases = Vec::new();
        for item in self.leases.iter() {
            let (k, v) = item.into_inner().doing("reading leases")?;
            let ttl = i64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::corrupt("lease TTL"))?);
            leases.push((decode_lease_key(&k)?, ttl));
        }
        Ok(leases)
    }

    /// Every live key attached to a lease, as (key, lease). Scans every live key: call it at startup.
    pub fn leased_keys(&self) -> Result<Vec<(Vec<u8>, i64)>> {
        let mut keys = Vec::new();
        for item in self.latest.iter() {
            let (k, v) = item.into_inner().doing("reading live keys")?;
            let lease = Version::decode(&v)?.lease;
            if lease != 0 {
                let key = Version::carried_key(&v)?.filter(|_| is_long_latest_key(&k)).unwrap_or(&k);
                keys.push((key.to_vec(), lease));
            }
        }
        Ok(keys)
    }

    /// Whether the store holds nothing written by clients (a fresh directory).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.log.first_key_value().is_none()
            && self.latest.first_key_value().is_none()
            && read_i64(&self.meta, meta::CURRENT_REVISION)?.is_none())
    }

    /// The current and compact revisions `snapshot` holds.
    fn snapshot_revisions(&self, snapshot: &Snapshot) -> Result<(Revision, Revision)> {
        let meta_i64 = |name: &[u8]| -> Result<Option<i64>> {
            match snapshot.get(&self.meta, name).doing("reading meta")? {
                Some(v) => {
                    Ok(Some(i64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::corrupt("meta"))?)))
                }
                None => Ok(None),
            }
        };
        let current = meta_i64(meta::CURRENT_REVISION)?.map_or(INITIAL_REVISION, Revision);
        let compact = meta_i64(meta::COMPACT_REVISION)?.map_or(NEVER_COMPACTED, Revision);
        Ok((current, compact))
    }

    /// Syncs everything written so far (used at shutdown).
    pub fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll).doing("syncing the database")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
