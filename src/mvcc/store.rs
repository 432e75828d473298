//! The fjall database of one node: `log`, `kv`, `latest`, `leases` and `meta` keyspaces, written only by the
//! sequencer's committer (one atomic batch and one sync per group) and its compactor (removals of
//! versions no read can reach). Readers take a [`ReadView`]: one snapshot, so no reader sees half a group.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Slice, Snapshot};

use super::encoding::{
    LATEST_KEY_BYTES_MAX, Version, decode_history_key, decode_lease_key, decode_log_key, decode_revision, escaped_key,
    history_bucket, history_key, history_lower_bound, history_upper_bound, is_long_history_key, is_long_latest_key,
    latest_bucket, latest_key, lease_key, log_key, meta, needs_carried_key,
};
use super::key_order::{KeyOrder, OrderedEntry};
use super::lock::{DataDirLock, LockRole};
use super::{KeySpan, RangeEnd, VersionReader};
use crate::config::{JOURNAL_BYTES_MAX, MEMTABLE_BYTES_MAX};
use crate::error::{Error, Result};
use crate::log::{LogEvent, LogRecord};

/// Revision of an empty store: etcd starts at 1, so the first write is revision 2.
pub const INITIAL_REVISION: i64 = 1;
/// Compact revision of a store never compacted (etcd's `compactMainRev` starts at -1).
pub const NEVER_COMPACTED: i64 = -1;
/// The on-disk format this build writes. 2: log keys carry a sub-index and records carry lease
/// grants and revokes. 3: compactions are log records too (format 2 directories are upgraded in place:
/// they hold no record a format 3 build reads differently). 4: keys too long for fjall are stored as
/// bucket and hash, their records carrying them (older directories are upgraded in place once checked
/// to hold no key of more than 65,503 bytes, the only ones whose stored form changed).
const FORMAT: i64 = 4;
/// Older formats this build opens and upgrades to [`FORMAT`].
const FORMATS_UPGRADED: [i64; 2] = [2, 3];
/// The database's folder inside a data directory.
const DB_DIR: &str = "db";
/// Files made and removed while the node runs (snapshots being sent); emptied at open.
const SCRATCH_DIR: &str = "tmp";
/// The file fjall writes first into a database folder: a folder without it holds no database.
const FJALL_VERSION_FILE: &str = "version";
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
    pub term: u64,
}

impl Identity {
    /// The header etcd puts on every response from this member, at `revision`.
    pub fn response_header(&self, revision: i64) -> crate::proto::etcdserverpb::ResponseHeader {
        crate::proto::etcdserverpb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.term,
        }
    }
}

/// One group commit: the records of consecutive log positions (a compaction is a record too).
#[derive(Debug, Default)]
pub struct GroupWrite {
    /// Records in `(revision, sub)` order; may be empty (a group of read-only txns).
    pub records: Vec<LogRecord>,
    /// The revision the store has reached after this group (unchanged if `records` is empty).
    pub current_revision: i64,
    /// The records are already in object storage (sync upload): the upload watermark moves with them.
    pub uploaded: bool,
}

/// The spaces of checkpoint entries: one per keyspace, and the `meta` values that describe the state
/// (not the node: identity, term and format stay the restoring node's own).
pub mod checkpoint_space {
    use super::meta;

    pub const META: u8 = 0;
    pub const LOG: u8 = 1;
    pub const KV: u8 = 2;
    pub const LATEST: u8 = 3;
    pub const LEASES: u8 = 4;
    /// The `meta` entries a checkpoint carries.
    pub const META_NAMES: [&[u8]; 3] = [meta::CURRENT_REVISION, meta::COMPACT_REVISION, meta::COMPACTED_THROUGH];
}

/// Takes each checkpoint entry as (space, key, value).
pub type CheckpointVisitor<'a> = dyn FnMut(u8, &[u8], &[u8]) -> Result<()> + 'a;

/// A position in the log: `(revision, sub)`, ordered as commits are.
pub type LogPosition = (i64, u32);

fn encode_position((revision, sub): LogPosition) -> Vec<u8> {
    let mut bytes = revision.to_be_bytes().to_vec();
    bytes.extend_from_slice(&sub.to_be_bytes());
    bytes
}

fn decode_position(bytes: &[u8]) -> Result<LogPosition> {
    let corrupt = || Error::Corrupt("meta log position".into());
    let revision = i64::from_be_bytes(bytes.get(..8).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let sub = u32::from_be_bytes(bytes.get(8..12).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    if bytes.len() != 12 {
        return Err(corrupt());
    }
    Ok((revision, sub))
}

/// The node's database.
pub struct Store {
    /// Holds `<data-dir>/LOCK` for the lifetime of the store.
    lock: DataDirLock,
    db: Database,
    /// (revision, sub) → framed [`LogRecord`]: the WAL and the watch history.
    log: Keyspace,
    /// escape(key) ‖ revision → [`Version`]: every version still inside the history window.
    kv: Keyspace,
    /// key → [`Version`] of live keys at the current revision: reads at "now" are one ordered scan.
    latest: Keyspace,
    /// lease id → granted TTL (i64 BE) of every lease not revoked; deadlines live in memory only.
    leases: Keyspace,
    /// named bookkeeping values (see [`meta`]).
    meta: Keyspace,
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

fn read_i64(ks: &Keyspace, name: &[u8]) -> Result<Option<i64>> {
    match ks.get(name)? {
        Some(v) => {
            Ok(Some(i64::from_be_bytes(v.as_ref().try_into().map_err(|_| Error::Corrupt(format!("meta {name:?}")))?)))
        }
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
fn check_long_key_layout(keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
    let long = if keyspace == "kv" { is_long_history_key(key) } else { is_long_latest_key(key) };
    if long && Version::carried_key(value)?.is_none() {
        return Err(Error::Corrupt(format!(
            "`{keyspace}` holds a key of {} stored bytes in the layout of format 3 (keys over 65,503 bytes); \
             run the T4 build that wrote it, delete those keys and compact past them, then upgrade",
            key.len()
        )));
    }
    Ok(())
}

fn random_nonzero_u64() -> Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| Error::Runtime(format!("random source: {e}")))?;
        let n = u64::from_be_bytes(bytes) >> 1; // etcd ids are printed as positive hex; keep them < 2^63
        if n != 0 {
            return Ok(n);
        }
    }
}

/// How every keyspace is created: memtables bounded by [`MEMTABLE_BYTES_MAX`] (see there).
fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES_MAX)
}

impl Store {
    /// Opens (or creates) the database under `data_dir`, taking the directory's lock.
    pub fn open(data_dir: &Path) -> Result<Arc<Store>> {
        let dir_error = |reason: String| Error::DataDir { path: data_dir.to_path_buf(), reason };
        create_private_dir(data_dir).map_err(|e| dir_error(format!("cannot create: {e}")))?;
        let lock = DataDirLock::acquire(data_dir, true, LockRole::Node)?;
        // What a node killed while writing a snapshot left behind.
        let _ = std::fs::remove_dir_all(data_dir.join(SCRATCH_DIR));
        let db = Database::builder(data_dir.join(DB_DIR))
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .open()
            .map_err(|e| dir_error(format!("cannot open database: {e}")))?;
        let meta_ks = db.keyspace("meta", keyspace_options)?;
        Self::check_format(&db, &meta_ks).map_err(|e| match e {
            Error::Corrupt(reason) => dir_error(reason),
            other => other,
        })?;
        let identity = Self::load_or_create_identity(&db, &meta_ks)?;
        let store = Self::assemble(data_dir, lock, db, identity)?;
        store.check_log_matches_state()?;
        Ok(Arc::new(store))
    }

    /// Opens an existing database to read it (`t4 inspect`). Takes the directory's lock, so it
    /// refuses a directory a node has open and no node opens it meanwhile; creates nothing and
    /// writes nothing but the lock file's holder record (and fjall's own journal recovery); refuses
    /// a directory that holds no T4 database, checking before fjall, which would create one.
    pub fn open_read_only(data_dir: &Path) -> Result<Store> {
        let dir_error = |reason: String| Error::DataDir { path: data_dir.to_path_buf(), reason };
        let not_t4 = |what: &str| dir_error(format!("not a T4 data directory: {what}"));
        match std::fs::metadata(data_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(dir_error("not a directory".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(dir_error("does not exist".into())),
            Err(e) => return Err(dir_error(format!("cannot read: {e}"))),
        }
        if !data_dir.join(DB_DIR).join(FJALL_VERSION_FILE).is_file() {
            return Err(not_t4(&format!("no database ({DB_DIR}/) in it")));
        }
        let lock = DataDirLock::acquire(data_dir, false, LockRole::Inspect)?;
        let db = Database::builder(data_dir.join(DB_DIR))
            .max_journaling_size(JOURNAL_BYTES_MAX)
            .open()
            .map_err(|e| dir_error(format!("cannot open database: {e}")))?;
        if let Some(missing) = KEYSPACES.iter().find(|name| !db.keyspace_exists(name)) {
            return Err(not_t4(&format!("its database has no `{missing}` keyspace")));
        }
        let meta_ks = db.keyspace("meta", keyspace_options)?;
        match read_i64(&meta_ks, meta::FORMAT)? {
            // Upgrades change no record a reader decodes.
            Some(format) if format == FORMAT || FORMATS_UPGRADED.contains(&format) => {}
            Some(other) => {
                return Err(dir_error(format!("written in format {other}; this build reads format {FORMAT}")));
            }
            None => return Err(not_t4("its database has no format mark")),
        }
        let id = |name: &[u8]| -> Result<u64> { Ok(read_i64(&meta_ks, name)?.unwrap_or(0) as u64) };
        let identity =
            Identity { member_id: id(meta::MEMBER_ID)?, cluster_id: id(meta::CLUSTER_ID)?, term: id(meta::TERM)? };
        let store = Self::assemble(data_dir, lock, db, identity)?;
        store.check_log_matches_state()?;
        Ok(store)
    }

    /// The store over an opened database whose format and identity are settled.
    fn assemble(data_dir: &Path, lock: DataDirLock, db: Database, identity: Identity) -> Result<Store> {
        let open = |name: &str| db.keyspace(name, keyspace_options);
        let [log, kv, latest, leases, meta_ks] = KEYSPACES.map(open);
        Ok(Store {
            lock,
            log: log?,
            kv: kv?,
            latest: latest?,
            leases: leases?,
            meta: meta_ks?,
            db,
            identity,
            keep_unuploaded_log: std::sync::atomic::AtomicBool::new(false),
            term: std::sync::atomic::AtomicU64::new(identity.term),
            db_dir: data_dir.join(DB_DIR),
            defragmenting: std::sync::Mutex::new(()),
        })
    }

    /// Adds the address this node serves to its lock file, so a process refused the directory can
    /// say where to reach it. Best effort: the lock, not the record, keeps others out.
    pub fn record_listen_addr(&self, addr: SocketAddr) {
        if let Err(e) = self.lock.record_holder(LockRole::Node, Some(addr)) {
            tracing::warn!(error = %e, "cannot record the listen address in the lock file");
        }
    }

    /// Refuses a data directory written in another format; marks a new one with this build's.
    fn check_format(db: &Database, meta_ks: &Keyspace) -> Result<()> {
        match read_i64(meta_ks, meta::FORMAT)? {
            Some(FORMAT) => Ok(()),
            Some(old) if FORMATS_UPGRADED.contains(&old) => {
                for name in ["kv", "latest"] {
                    let keyspace = db.keyspace(name, keyspace_options)?;
                    for item in keyspace.iter() {
                        let (key, value) = item.into_inner()?;
                        check_long_key_layout(name, &key, &value)
                            .map_err(|e| Error::Corrupt(format!("cannot upgrade format {old} to {FORMAT}: {e}")))?;
                    }
                }
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(meta_ks, meta::FORMAT, FORMAT.to_be_bytes().to_vec());
                batch.commit()?;
                Ok(())
            }
            Some(other) => Err(Error::Corrupt(format!("written in format {other}; this build reads format {FORMAT}"))),
            None if read_i64(meta_ks, meta::CURRENT_REVISION)?.is_some() => Err(Error::Corrupt(format!(
                "written by an older T4 (format 1); this build reads format {FORMAT}: start from an empty directory"
            ))),
            None => {
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(meta_ks, meta::FORMAT, FORMAT.to_be_bytes().to_vec());
                batch.commit()?;
                Ok(())
            }
        }
    }

    /// A group writes its log records and the current revision in one batch, so after any crash the
    /// newest log record must be exactly the current revision. Anything else is corruption.
    fn check_log_matches_state(&self) -> Result<()> {
        let current = read_i64(&self.meta, meta::CURRENT_REVISION)?.unwrap_or(INITIAL_REVISION);
        let newest = match self.log.last_key_value() {
            Some(guard) => {
                let (_, bytes) = guard.into_inner()?;
                Some(LogRecord::decode(&bytes)?.revision)
            }
            None => None,
        };
        match newest {
            Some(rev) if rev != current => {
                Err(Error::Corrupt(format!("newest log record is revision {rev} but the store is at {current}")))
            }
            // An empty log is fine once compaction removed it (or before the first write).
            _ => Ok(()),
        }
    }

    fn load_or_create_identity(db: &Database, meta_ks: &Keyspace) -> Result<Identity> {
        if let (Some(member), Some(cluster), Some(term)) =
            (read_i64(meta_ks, meta::MEMBER_ID)?, read_i64(meta_ks, meta::CLUSTER_ID)?, read_i64(meta_ks, meta::TERM)?)
        {
            return Ok(Identity { member_id: member as u64, cluster_id: cluster as u64, term: term as u64 });
        }
        let identity = Identity { member_id: random_nonzero_u64()?, cluster_id: random_nonzero_u64()?, term: 1 };
        let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(meta_ks, meta::MEMBER_ID, (identity.member_id as i64).to_be_bytes().to_vec());
        batch.insert(meta_ks, meta::CLUSTER_ID, (identity.cluster_id as i64).to_be_bytes().to_vec());
        batch.insert(meta_ks, meta::TERM, (identity.term as i64).to_be_bytes().to_vec());
        batch.commit()?;
        Ok(identity)
    }

    /// This node's ids and term.
    pub fn identity(&self) -> Identity {
        Identity { term: self.term.load(std::sync::atomic::Ordering::Acquire), ..self.identity }
    }

    /// Bytes the database occupies on disk: allocated blocks, not apparent lengths (fjall preallocates
    /// its journal as a sparse file, which would otherwise show as tens of MiB for an empty store).
    /// Walks the directory: call it off the executors.
    pub fn disk_bytes(&self) -> u64 {
        fn allocated(path: &Path, depth_left: usize) -> u64 {
            use std::os::unix::fs::MetadataExt;
            let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
            if !meta.is_dir() {
                return meta.blocks() * 512;
            }
            if depth_left == 0 {
                return 0;
            }
            std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| allocated(&e.path(), depth_left - 1)).sum())
                .unwrap_or(0)
        }
        const DEPTH_MAX: usize = 8; // fjall nests keyspaces/<id>/tables/<file>
        allocated(&self.db_dir, DEPTH_MAX)
    }

    /// A consistent view of the committed state.
    pub fn read_view(&self) -> Result<ReadView> {
        let snapshot = self.db.snapshot();
        let get = |name: &[u8]| -> Result<Option<i64>> {
            match snapshot.get(&self.meta, name)? {
                Some(v) => Ok(Some(i64::from_be_bytes(
                    v.as_ref().try_into().map_err(|_| Error::Corrupt("meta revision".into()))?,
                ))),
                None => Ok(None),
            }
        };
        let current = get(meta::CURRENT_REVISION)?.unwrap_or(INITIAL_REVISION);
        let compact = get(meta::COMPACT_REVISION)?.unwrap_or(NEVER_COMPACTED);
        Ok(ReadView {
            snapshot,
            log: self.log.clone(),
            kv: self.kv.clone(),
            latest: self.latest.clone(),
            current,
            compact,
        })
    }

    /// The revision of the last committed write.
    pub fn current_revision(&self) -> Result<i64> {
        Ok(read_i64(&self.meta, meta::CURRENT_REVISION)?.unwrap_or(INITIAL_REVISION))
    }

    /// Revision up to which superseded versions have been removed.
    pub fn compacted_through(&self) -> Result<i64> {
        Ok(read_i64(&self.meta, meta::COMPACTED_THROUGH)?.unwrap_or(NEVER_COMPACTED))
    }

    /// Writes one group as a single atomic batch and syncs it. Blocking: never call on an executor.
    pub fn commit(&self, group: &GroupWrite) -> Result<()> {
        fail::fail_point!("store-commit", |_| Err(Error::Storage("injected commit failure".into())));
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for record in &group.records {
            let rev = record.revision;
            batch.insert(&self.log, log_key(rev, record.sub).to_vec(), record.encode());
            // Later events on one key in one revision supersede earlier ones; the batch keeps the last.
            for event in &record.events {
                match event {
                    LogEvent::Put { key, value, create_revision, version, lease } => {
                        let v = Version {
                            create_revision: *create_revision,
                            mod_revision: rev,
                            version: *version,
                            lease: *lease,
                            value: Some(value.clone()),
                        };
                        let encoded = v.encode_for(key);
                        batch.insert(&self.kv, history_key(key, rev), encoded.clone());
                        batch.insert(&self.latest, latest_key(key).into_owned(), encoded);
                    }
                    LogEvent::Delete { key } => {
                        batch.insert(&self.kv, history_key(key, rev), Version::tombstone(rev).encode_for(key));
                        batch.remove(&self.latest, latest_key(key).into_owned());
                    }
                    LogEvent::LeaseGrant { id, ttl } => {
                        batch.insert(&self.leases, lease_key(*id).to_vec(), ttl.to_be_bytes().to_vec());
                    }
                    LogEvent::LeaseRevoke { id } => batch.remove(&self.leases, lease_key(*id).to_vec()),
                    LogEvent::Compact { revision } => {
                        batch.insert(&self.meta, meta::COMPACT_REVISION, revision.to_be_bytes().to_vec());
                    }
                }
            }
        }
        if let Some(last) = group.records.last() {
            batch.insert(&self.meta, meta::CURRENT_REVISION, group.current_revision.to_be_bytes().to_vec());
            if group.uploaded {
                batch.insert(&self.meta, meta::UPLOADED_THROUGH, encode_position((last.revision, last.sub)));
            }
        }
        batch.commit().map_err(|e| if crate::error::is_disk_full(&e) { Error::NoSpace } else { e.into() })
    }

    /// Bytes an unprivileged writer may still use on the data directory's file system.
    pub fn free_bytes(&self) -> Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.db_dir.as_os_str().as_bytes())
            .map_err(|_| Error::Storage("data directory path holds a zero byte".into()))?;
        // SAFETY: statvfs(3) reads a NUL-terminated path and fills the struct it is given.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return Err(Error::Storage(format!(
                "statvfs {}: {}",
                self.db_dir.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }

    /// Removes versions and log records no read at or above `compact` can reach: for each key, every
    /// version below its newest one at or below `compact`, and that one too if it is a tombstone.
    ///
    /// Only keys written after the previous compaction can have newly removable versions (an older
    /// version becomes removable only once a newer one at or below `compact` exists, and a tombstone
    /// at or below the previous compaction was removed then), and the log still holds exactly those
    /// revisions: the work is proportional to what changed, not to the history. Removals run in
    /// bounded, unsynced batches, versions before log records, so a crash leaves work that the next
    /// run redoes from the log that is still there. Blocking: call from the compactor thread.
    pub fn compact_physically(&self, compact: i64) -> Result<()> {
        const REMOVALS_PER_BATCH: usize = 4096;
        let done_through = self.compacted_through()?;
        if compact <= done_through {
            return Ok(());
        }
        let snapshot = self.db.snapshot();
        let first = log_key((done_through + 1).max(0), 0).to_vec();
        let mut changed: BTreeSet<Vec<u8>> = BTreeSet::new();
        for item in snapshot.range(&self.log, first..=log_key(compact, u32::MAX).to_vec()) {
            let (_, bytes) = item.into_inner()?;
            changed.extend(LogRecord::decode(&bytes)?.events.into_iter().filter_map(|e| match e {
                LogEvent::Put { key, .. } | LogEvent::Delete { key } => Some(key),
                LogEvent::LeaseGrant { .. } | LogEvent::LeaseRevoke { .. } | LogEvent::Compact { .. } => None,
            }));
        }
        let mut batch = self.db.batch();
        for key in changed {
            // Versions of `key` at or below `compact`, oldest first.
            let mut doomed: Vec<fjall::Slice> = Vec::new();
            let mut newest_is_tombstone = false;
            for item in snapshot.range(&self.kv, escaped_key(&key)..=history_key(&key, compact)) {
                let (k, v) = item.into_inner()?;
                newest_is_tombstone = Version::is_tombstone_record(&v)?;
                doomed.push(k);
            }
            if !newest_is_tombstone {
                doomed.pop(); // the version reads at `compact` and above still see
            }
            for k in doomed {
                batch.remove(&self.kv, k);
                if batch.len() >= REMOVALS_PER_BATCH {
                    std::mem::replace(&mut batch, self.db.batch()).commit()?;
                }
            }
        }
        std::mem::replace(&mut batch, self.db.batch()).commit()?;
        // With object storage, records not uploaded yet stay: the uploader still needs them.
        let mut log_end = log_key(compact.max(0), 0).to_vec();
        if self.keep_unuploaded_log.load(std::sync::atomic::Ordering::Acquire) {
            let uploaded_end = match self.uploaded_through()? {
                Some((revision, sub)) => log_key(revision, sub.saturating_add(1)).to_vec(),
                None => Vec::new(),
            };
            log_end = log_end.min(uploaded_end);
        }
        for item in snapshot.range(&self.log, ..log_end) {
            batch.remove(&self.log, item.key()?);
            if batch.len() >= REMOVALS_PER_BATCH {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
            }
        }
        batch.insert(&self.meta, meta::COMPACTED_THROUGH, compact.to_be_bytes().to_vec());
        batch.commit()?;
        Ok(())
    }

    /// The `(revision, sub)` of the newest log record, if the log holds any.
    pub fn last_log_position(&self) -> Result<Option<(i64, u32)>> {
        match self.log.last_key_value() {
            Some(guard) => Ok(Some(decode_log_key(&guard.key()?)?)),
            None => Ok(None),
        }
    }

    /// Every lease not revoked, as (id, granted TTL), in id order.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        let mut leases = Vec::new();
        for item in self.leases.iter() {
            let (k, v) = item.into_inner()?;
            let ttl = i64::from_be_bytes(v.as_ref().try_into().map_err(|_| Error::Corrupt("lease TTL".into()))?);
            leases.push((decode_lease_key(&k)?, ttl));
        }
        Ok(leases)
    }

    /// Every live key attached to a lease, as (key, lease). Scans every live key: call it at startup.
    pub fn leased_keys(&self) -> Result<Vec<(Vec<u8>, i64)>> {
        let mut keys = Vec::new();
        for item in self.latest.iter() {
            let (k, v) = item.into_inner()?;
            let lease = Version::decode(&v)?.lease;
            if lease != 0 {
                let key = Version::carried_key(&v)?.filter(|_| is_long_latest_key(&k)).unwrap_or(&k);
                keys.push((key.to_vec(), lease));
            }
        }
        Ok(keys)
    }

    /// The log position through which records are stored in object storage, if any are.
    pub fn uploaded_through(&self) -> Result<Option<LogPosition>> {
        self.meta.get(meta::UPLOADED_THROUGH)?.map(|v| decode_position(&v)).transpose()
    }

    /// Records that object storage holds every record through `position` (async upload). Not synced:
    /// a crash that loses it makes the node upload those records again, which is harmless.
    pub fn set_uploaded_through(&self, position: LogPosition) -> Result<()> {
        self.meta.insert(meta::UPLOADED_THROUGH, encode_position(position))?;
        Ok(())
    }

    /// From now on, compaction keeps the log records object storage does not hold yet.
    pub fn keep_unuploaded_log(&self) {
        self.keep_unuploaded_log.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Sets the leadership term (a node with an object store starts a new one at each start, so its
    /// objects never collide with those of an earlier run).
    pub fn set_term(&self, term: u64) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.meta, meta::TERM, (term as i64).to_be_bytes().to_vec());
        batch.commit()?;
        self.term.store(term, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Streams one consistent snapshot of the whole state to `visit` in (space, key) order, as a
    /// checkpoint holds it (see [`checkpoint_space`]); returns the snapshot's log position and compact
    /// revision. Blocking: call off the executors.
    pub fn scan_checkpoint(&self, visit: &mut CheckpointVisitor) -> Result<(LogPosition, i64)> {
        let snapshot = self.db.snapshot();
        let (current, compact) = self.snapshot_revisions(&snapshot)?;
        let sub = match snapshot.iter(&self.log).next_back() {
            Some(guard) => {
                let (revision, sub) = decode_log_key(&guard.key()?)?;
                if revision == current { sub } else { 0 }
            }
            None => 0,
        };
        let mut metas: Vec<&[u8]> = checkpoint_space::META_NAMES.to_vec();
        metas.sort_unstable();
        for name in metas {
            if let Some(value) = snapshot.get(&self.meta, name)? {
                visit(checkpoint_space::META, name, &value)?;
            }
        }
        for (space, keyspace) in [
            (checkpoint_space::LOG, &self.log),
            (checkpoint_space::KV, &self.kv),
            (checkpoint_space::LATEST, &self.latest),
            (checkpoint_space::LEASES, &self.leases),
        ] {
            for item in snapshot.iter(keyspace) {
                let (key, value) = item.into_inner()?;
                visit(space, &key, &value)?;
            }
        }
        Ok(((current, sub), compact))
    }

    /// The alarms a node raised and did not disarm, as wire values (see [`Store::keep_alarms`]).
    pub fn kept_alarms(&self) -> Result<Vec<i32>> {
        Ok(self.meta.get(meta::ALARMS)?.map(|v| v.iter().map(|b| i32::from(*b)).collect()).unwrap_or_default())
    }

    /// Keeps `alarms` (wire values) across restarts, synced: they change a few times in a node's life.
    pub fn keep_alarms(&self, alarms: &[i32]) -> Result<()> {
        let bytes: Vec<u8> = alarms.iter().filter_map(|a| u8::try_from(*a).ok()).collect();
        self.meta.insert(meta::ALARMS, bytes)?;
        self.sync()
    }

    /// A new file name in the data directory's scratch folder (created private if missing; emptied
    /// when the node opens the directory), for files made and removed while the node runs.
    pub fn scratch_file(&self, what: &str) -> Result<PathBuf> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = self.db_dir.with_file_name(SCRATCH_DIR);
        create_private_dir(&dir).map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(dir.join(format!("{what}-{n}")))
    }

    /// Bytes of data the store holds: its tables plus its memtables (data written but not in a table
    /// yet). What the space quota counts and `Status.db_size_in_use` reports; deletes, compaction and
    /// a defragment shrink it. In memory, cheap.
    pub fn data_bytes(&self) -> u64 {
        let tables: u64 =
            [&self.log, &self.kv, &self.latest, &self.leases, &self.meta].iter().map(|ks| ks.disk_space()).sum();
        tables + self.db.write_buffer_size()
    }

    /// Reclaims space, as etcd's Defragment: writes each keyspace's memtable out and merges its
    /// tables into one run (fjall's major compaction), which drops overwritten and deleted entries no
    /// reader still needs. One at a time; blocking, and minutes on a large store: call it on a thread
    /// of its own.
    pub fn defragment(&self) -> Result<()> {
        let _one_at_a_time = self.defragmenting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // fjall moves its watermark of what no snapshot needs any more (below which a compaction may
        // drop overwritten and deleted entries) lazily: when a memtable is rotated, or every 10,000
        // snapshots. A write to `meta` makes its memtable non-empty, so rotating it moves the mark.
        self.move_gc_watermark()?;
        for (name, keyspace) in [
            ("meta", &self.meta),
            ("log", &self.log),
            ("kv", &self.kv),
            ("latest", &self.latest),
            ("leases", &self.leases),
        ] {
            let before = keyspace.disk_space();
            keyspace.rotate_memtable_and_wait()?;
            keyspace.major_compact()?;
            tracing::debug!(
                keyspace = name,
                before_bytes = before,
                after_bytes = keyspace.disk_space(),
                "keyspace defragmented"
            );
        }
        // The tables the compactions replaced, and journals whose memtables are all written out,
        // are deleted when a rotation next runs fjall's maintenance: run it now.
        self.move_gc_watermark()
    }

    /// Writes `meta`'s defragment mark and rotates its memtable, which moves fjall's watermark and
    /// runs its maintenance (deleting tables and journals no reader needs any more).
    fn move_gc_watermark(&self) -> Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.meta.insert(meta::DEFRAGMENTED_AT, (now as i64).to_be_bytes())?;
        self.meta.rotate_memtable_and_wait()?;
        Ok(())
    }

    /// The current and compact revisions `snapshot` holds.
    fn snapshot_revisions(&self, snapshot: &Snapshot) -> Result<(i64, i64)> {
        let meta_i64 = |name: &[u8]| -> Result<Option<i64>> {
            match snapshot.get(&self.meta, name)? {
                Some(v) => {
                    Ok(Some(i64::from_be_bytes(v.as_ref().try_into().map_err(|_| Error::Corrupt("meta".into()))?)))
                }
                None => Ok(None),
            }
        };
        let current = meta_i64(meta::CURRENT_REVISION)?.unwrap_or(INITIAL_REVISION);
        let compact = meta_i64(meta::COMPACT_REVISION)?.unwrap_or(NEVER_COMPACTED);
        Ok((current, compact))
    }

    /// etcd's HashKV at `rev` (0: the current revision) over one consistent snapshot (see
    /// [`super::hash`]): the hash, the current revision and the compact revision. Fails as etcd does
    /// for a revision at or below the compact revision, or above the current one. Blocking: reads the
    /// whole history.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64)> {
        let snapshot = self.db.snapshot();
        let (current, compact) = self.snapshot_revisions(&snapshot)?;
        if rev > 0 && rev <= compact {
            return Err(Error::Compacted);
        }
        if rev > current {
            return Err(Error::FutureRevision);
        }
        let mut hasher = super::hash::KvHasher::new(if rev == 0 { current } else { rev }, compact);
        for item in snapshot.iter(&self.kv) {
            let (stored, record) = item.into_inner()?;
            let key = match Version::carried_key(&record)? {
                Some(key) => key.to_vec(),
                None => decode_history_key(&stored)?.0,
            };
            hasher.push(&key, Version::decode(&record)?);
        }
        Ok((hasher.finish(), current, compact))
    }

    /// etcd's Hash: a CRC-32C of the whole store (history, state, log, leases and revisions) as a
    /// checkpoint holds it, in one consistent snapshot; and its revision. For tests, as etcd's is:
    /// unlike HashKV it also sees how far physical compaction has got. Blocking.
    pub fn hash_all(&self) -> Result<(u32, i64)> {
        let mut crc = 0u32;
        let ((revision, _), _) = self.scan_checkpoint(&mut |space, key, value| {
            for part in
                [&[space][..], &(key.len() as u64).to_be_bytes(), key, &(value.len() as u64).to_be_bytes(), value]
            {
                crc = crc32c::crc32c_append(crc, part);
            }
            Ok(())
        })?;
        Ok((crc, revision))
    }

    /// Loads checkpoint entries (from [`Store::scan_checkpoint`]) into this store, which must be empty;
    /// call [`Store::sync`] after the last. Refuses spaces and meta names it does not know.
    pub fn load_checkpoint_entries(&self, entries: &[(u8, Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut batch = self.db.batch();
        for (space, key, value) in entries {
            let keyspace = match *space {
                checkpoint_space::META if checkpoint_space::META_NAMES.contains(&key.as_slice()) => &self.meta,
                checkpoint_space::LOG => &self.log,
                checkpoint_space::KV => &self.kv,
                checkpoint_space::LATEST => &self.latest,
                checkpoint_space::LEASES => &self.leases,
                other => {
                    return Err(Error::Corrupt(format!("checkpoint entry in unknown space {other} (key {key:?})")));
                }
            };
            match *space {
                checkpoint_space::KV => check_long_key_layout("kv", key, value)?,
                checkpoint_space::LATEST => check_long_key_layout("latest", key, value)?,
                _ => {}
            }
            batch.insert(keyspace, key.clone(), value.clone());
        }
        batch.commit()?;
        Ok(())
    }

    /// Removes the whole state (keys, history, log, leases and the revisions), keeping the node's
    /// identity: the store is then as a fresh one, ready for a restore. Blocking.
    pub fn clear_state(&self) -> Result<()> {
        const REMOVALS_PER_BATCH: usize = 4096;
        let mut batch = self.db.batch();
        for keyspace in [&self.log, &self.kv, &self.latest, &self.leases] {
            for item in keyspace.iter() {
                batch.remove(keyspace, item.key()?);
                if batch.len() >= REMOVALS_PER_BATCH {
                    std::mem::replace(&mut batch, self.db.batch()).commit()?;
                }
            }
        }
        for name in checkpoint_space::META_NAMES.into_iter().chain([meta::UPLOADED_THROUGH]) {
            batch.remove(&self.meta, name);
        }
        batch.commit()?;
        self.sync()
    }

    /// Whether the store holds nothing written by clients (a fresh directory).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.log.first_key_value().is_none()
            && self.latest.first_key_value().is_none()
            && read_i64(&self.meta, meta::CURRENT_REVISION)?.is_none())
    }

    /// Syncs everything written so far (used at shutdown).
    pub fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

/// A consistent, immutable view of the committed state.
pub struct ReadView {
    snapshot: Snapshot,
    log: Keyspace,
    kv: Keyspace,
    latest: Keyspace,
    current: i64,
    compact: i64,
}

impl VersionReader for ReadView {
    fn current_revision(&self) -> i64 {
        self.current
    }

    fn compact_revision(&self) -> i64 {
        self.compact
    }

    fn visit(&self, span: &KeySpan, rev: i64, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        if rev >= self.current {
            return self.visit_latest(span, visit);
        }
        self.visit_history(span, rev, visit)
    }

    fn count(&self, span: &KeySpan, rev: i64) -> Result<i64> {
        if rev < self.current {
            return self.count_history(span, rev);
        }
        if span.end == RangeEnd::Single {
            return Ok(i64::from(self.latest_get(&span.start)?.is_some()));
        }
        let mut count = 0;
        for entry in self.latest_entries(span) {
            entry?;
            count += 1;
        }
        Ok(count)
    }
}

impl ReadView {
    /// The log records from revision `from` through `to` (lease-only records included), in commit
    /// order, stopping after the record that brings the bytes read to `bytes_max` (so at least one
    /// record if there is one). Returns the records and the last revision fully read: `to`, or the
    /// last record's revision if the byte bound cut the read short (records after a revision's
    /// first are lease-only, so that revision's key changes are all read). Records below the compact
    /// revision may be gone: check `compact_revision` first.
    pub fn log_records(&self, from: i64, to: i64, bytes_max: usize) -> Result<(Vec<LogRecord>, i64)> {
        let mut records: Vec<LogRecord> = Vec::new();
        let mut bytes = 0;
        if from > to {
            return Ok((records, to));
        }
        let range = log_key(from.max(0), 0).to_vec()..=log_key(to, u32::MAX).to_vec();
        for item in self.snapshot.range(&self.log, range) {
            let (_, value) = item.into_inner()?;
            bytes += value.len();
            records.push(LogRecord::decode(&value)?);
            if bytes >= bytes_max {
                let last = records.last().expect("a record was just read").revision;
                return Ok((records, last));
            }
        }
        Ok((records, to))
    }

    /// Every version of `key` still in history (tombstones included), oldest first, at most
    /// `versions_max` of them (the newest are dropped beyond it).
    pub fn versions(&self, key: &[u8], versions_max: usize) -> Result<Vec<Version>> {
        let mut versions = Vec::new();
        for item in self.snapshot.prefix(&self.kv, escaped_key(key)).take(versions_max) {
            let (_, value) = item.into_inner()?;
            versions.push(Version::decode(&value)?);
        }
        Ok(versions)
    }

    /// The `latest` record of `key`, if it is live.
    fn latest_get(&self, key: &[u8]) -> Result<Option<fjall::Slice>> {
        let stored = latest_key(key);
        let Some(value) = self.snapshot.get(&self.latest, stored.as_ref())? else { return Ok(None) };
        // A long key's bucket and hash name one key unless SHA-256 collides; the carried key settles it.
        if is_long_latest_key(&stored) && Version::carried_key(&value)? != Some(key) {
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// The live keys of a multi-key `span` with their `latest` records, in key order.
    fn latest_entries<'a>(&'a self, span: &'a KeySpan) -> impl Iterator<Item = Result<OrderedEntry>> + 'a {
        let start = latest_bucket(&span.start).to_vec();
        let scan: Box<dyn Iterator<Item = fjall::Guard>> = match &span.end {
            RangeEnd::Unbounded | RangeEnd::Single => Box::new(self.snapshot.range(&self.latest, start..)),
            RangeEnd::Before(end) if end.as_slice() <= span.start.as_slice() => Box::new(std::iter::empty()),
            RangeEnd::Before(end) if end.len() <= LATEST_KEY_BYTES_MAX => {
                Box::new(self.snapshot.range(&self.latest, start..end.clone()))
            }
            RangeEnd::Before(end) => {
                // A long end's whole bucket: its keys are ordered by hash, and filtered below.
                let mut last = latest_bucket(end).to_vec();
                last.extend_from_slice(&[0xFF; 32]);
                Box::new(self.snapshot.range(&self.latest, start..=last))
            }
        };
        let stored = scan.map(|guard| guard.into_inner());
        KeyOrder::new(stored, is_long_latest_key, latest_bucket)
            // Keys stored as themselves are exact against short bounds; long bounds take whole buckets.
            .filter(move |entry| entry.as_ref().map_or(true, |e| span.contains(e.latest_user_key())))
    }

    /// Counts keys whose newest version at or below `rev` is live, reading only the version tag.
    fn count_history(&self, span: &KeySpan, rev: i64) -> Result<i64> {
        let mut count = 0;
        self.newest_in_history(span, rev, |entry| {
            count += i64::from(!Version::is_tombstone_record(&entry.value)?);
            Ok(true)
        })?;
        Ok(count)
    }

    /// Hands `newest` the newest record at or below `rev` of each key in `span` (tombstones included),
    /// with its entry, in key order, until it returns false. Versions of one key are adjacent and
    /// ascending, so one pass remembers the last fitting one; nothing else is decoded.
    fn newest_in_history(
        &self,
        span: &KeySpan,
        rev: i64,
        mut newest: impl FnMut(&OrderedEntry) -> Result<bool>,
    ) -> Result<()> {
        // A long start bound starts the scan at its whole bucket, which may hold a shorter key below it.
        let filter_short = needs_carried_key(&span.start);
        let mut group: Option<Vec<u8>> = None;
        let mut group_is_long = false;
        let mut candidate: Option<OrderedEntry> = None;
        for entry in self.history_entries(span) {
            let entry = entry?;
            let split =
                entry.key.len().checked_sub(8).ok_or_else(|| Error::Corrupt("history key too short".to_string()))?;
            let (prefix, version_rev) = entry.key.split_at(split);
            let (same, in_span) = match &entry.carried {
                Some(user_key) => (group_is_long && group.as_deref() == Some(user_key), span.contains(user_key)),
                None => {
                    let in_span = !filter_short || span.contains(&decode_history_key(&entry.key)?.0);
                    (!group_is_long && group.as_deref() == Some(prefix), in_span)
                }
            };
            if !in_span {
                continue;
            }
            if !same {
                if let Some(found) = candidate.take()
                    && !newest(&found)?
                {
                    return Ok(());
                }
                group_is_long = entry.carried.is_some();
                group = Some(entry.carried.clone().unwrap_or_else(|| prefix.to_vec()));
            }
            if decode_revision(version_rev)? <= rev {
                candidate = Some(entry);
            }
        }
        if let Some(found) = candidate {
            newest(&found)?;
        }
        Ok(())
    }

    /// Every version of the keys in `span` in `kv`, in key order (a long bound takes its whole
    /// bucket: filter).
    fn history_entries(&self, span: &KeySpan) -> KeyOrder<impl Iterator<Item = fjall::Result<(Slice, Slice)>>> {
        let scan: Box<dyn Iterator<Item = fjall::Guard>> = match &span.end {
            RangeEnd::Single => Box::new(self.snapshot.prefix(&self.kv, escaped_key(&span.start))),
            RangeEnd::Unbounded => Box::new(self.snapshot.range(&self.kv, history_lower_bound(&span.start)..)),
            RangeEnd::Before(end) if end.as_slice() <= span.start.as_slice() => Box::new(std::iter::empty()),
            RangeEnd::Before(end) => {
                Box::new(self.snapshot.range(&self.kv, history_lower_bound(&span.start)..history_upper_bound(end)))
            }
        };
        KeyOrder::new(scan.map(|guard| guard.into_inner()), is_long_history_key, history_bucket)
    }

    fn visit_latest(&self, span: &KeySpan, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        if span.end == RangeEnd::Single {
            if let Some(v) = self.latest_get(&span.start)? {
                visit(&span.start, Version::decode(&v)?);
            }
            return Ok(());
        }
        for entry in self.latest_entries(span) {
            let entry = entry?;
            if !visit(entry.latest_user_key(), Version::decode(&entry.value)?) {
                break;
            }
        }
        Ok(())
    }

    fn visit_history(&self, span: &KeySpan, rev: i64, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        self.newest_in_history(span, rev, |entry| {
            let version = Version::decode(&entry.value)?;
            if version.is_tombstone() {
                return Ok(true);
            }
            match &entry.carried {
                Some(key) => Ok(visit(key, version)),
                None => Ok(visit(&decode_history_key(&entry.key)?.0, version)),
            }
        })
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
