//! Opening a data directory: its lock, the database's format (refused, or upgraded in place), the node's
//! identity (made at first start), and the check that the newest log record is the current revision. A node
//! creates what is missing; a read-only open (`t4 inspect`) creates nothing and refuses a directory that
//! holds no T4 database before fjall would make one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{
    DB_DIR, INITIAL_REVISION, Identity, KEYSPACES, SCRATCH_DIR, Store, check_long_key_layout, create_private_dir,
    read_i64,
};
use crate::config::{JOURNAL_BYTES_MAX, MEMTABLE_BYTES_MAX};
use crate::error::{Error, Result};
use crate::ids::{Revision, Term};
use crate::log::LogRecord;
use crate::mvcc::encoding::meta;
use crate::mvcc::error::{Doing, StoreError};
use crate::mvcc::lock::{DataDirLock, LockRole};
use crate::runtime::error::RuntimeError;

/// The on-disk format this build writes. 2: log keys carry a sub-index and records carry lease
/// grants and revokes. 3: compactions are log records too (format 2 directories are upgraded in place:
/// they hold no record a format 3 build reads differently). 4: keys too long for fjall are stored as
/// bucket and hash, their records carrying them (older directories are upgraded in place once checked
/// to hold no key of more than 65,503 bytes, the only ones whose stored form changed).
const FORMAT: i64 = 4;
/// Older formats this build opens and upgrades to [`FORMAT`].
const FORMATS_UPGRADED: [i64; 2] = [2, 3];
/// The file fjall writes first into a database folder: a folder without it holds no database.
const FJALL_VERSION_FILE: &str = "version";

fn random_nonzero_u64() -> Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(RuntimeError::Random)?;
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
        let meta_ks = db.keyspace("meta", keyspace_options).doing("opening meta")?;
        Self::check_format(&db, &meta_ks).map_err(|e| match e {
            StoreError::Corrupt { what } => dir_error(what),
            other => other.into(),
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
        let meta_ks = db.keyspace("meta", keyspace_options).doing("opening meta")?;
        match read_i64(&meta_ks, meta::FORMAT)? {
            // Upgrades change no record a reader decodes.
            Some(format) if format == FORMAT || FORMATS_UPGRADED.contains(&format) => {}
            Some(other) => {
                return Err(dir_error(format!("written in format {other}; this build reads format {FORMAT}")));
            }
            None => return Err(not_t4("its database has no format mark")),
        }
        let id = |name: &[u8]| -> Result<u64> { Ok(read_i64(&meta_ks, name)?.unwrap_or(0) as u64) };
        let identity = Identity {
            member_id: id(meta::MEMBER_ID)?,
            cluster_id: id(meta::CLUSTER_ID)?,
            term: Term(id(meta::TERM)?),
        };
        let store = Self::assemble(data_dir, lock, db, identity)?;
        store.check_log_matches_state()?;
        Ok(store)
    }

    /// The store over an opened database whose format and identity are settled.
    fn assemble(data_dir: &Path, lock: DataDirLock, db: Database, identity: Identity) -> Result<Store> {
        let open = |name: &str| db.keyspace(name, keyspace_options).doing("opening a keyspace");
        let [log, kv, latest, leases, meta_ks] = KEYSPACES.map(open);
        let kv = kv?;
        let index = super::index::build(&kv)?;
        Ok(Store {
            lock,
            log: log?,
            index: std::sync::Arc::new(std::sync::RwLock::new(index)),
            kv,
            latest: latest?,
            leases: leases?,
            meta: meta_ks?,
            db,
            identity,
            keep_unuploaded_log: std::sync::atomic::AtomicBool::new(false),
            term: std::sync::atomic::AtomicU64::new(identity.term.get()),
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
    fn check_format(db: &Database, meta_ks: &Keyspace) -> Result<(), StoreError> {
        match read_i64(meta_ks, meta::FORMAT)? {
            Some(FORMAT) => Ok(()),
            Some(old) if FORMATS_UPGRADED.contains(&old) => {
                for name in ["kv", "latest"] {
                    let keyspace = db.keyspace(name, keyspace_options).doing("opening a keyspace")?;
                    for item in keyspace.iter() {
                        let (key, value) = item.into_inner().doing("checking keys before an upgrade")?;
                        check_long_key_layout(name, &key, &value).map_err(|e| {
                            StoreError::corrupt(format!("cannot upgrade format {old} to {FORMAT}: {e}"))
                        })?;
                    }
                }
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(meta_ks, meta::FORMAT, FORMAT.to_be_bytes().to_vec());
                batch.commit().doing("marking the format")?;
                Ok(())
            }
            Some(other) => {
                Err(StoreError::corrupt(format!("written in format {other}; this build reads format {FORMAT}")))
            }
            None if read_i64(meta_ks, meta::CURRENT_REVISION)?.is_some() => Err(StoreError::corrupt(format!(
                "written by an older T4 (format 1); this build reads format {FORMAT}: start from an empty directory"
            ))),
            None => {
                let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(meta_ks, meta::FORMAT, FORMAT.to_be_bytes().to_vec());
                batch.commit().doing("marking the format")?;
                Ok(())
            }
        }
    }

    /// A group writes its log records and the current revision in one batch, so after any crash the
    /// newest log record must be exactly the current revision. Anything else is corruption.
    fn check_log_matches_state(&self) -> Result<()> {
        let current = read_i64(&self.meta, meta::CURRENT_REVISION)?.map_or(INITIAL_REVISION, Revision);
        let newest = match self.log.last_key_value() {
            Some(guard) => {
                let (_, bytes) = guard.into_inner().doing("reading the newest log record")?;
                Some(LogRecord::decode(&bytes)?.revision)
            }
            None => None,
        };
        match newest {
            Some(rev) if rev != current => {
                Err(StoreError::corrupt(format!("newest log record is revision {rev} but the store is at {current}"))
                    .into())
            }
            // An empty log is fine once compaction removed it (or before the first write).
            _ => Ok(()),
        }
    }

    fn load_or_create_identity(db: &Database, meta_ks: &Keyspace) -> Result<Identity> {
        if let (Some(member), Some(cluster), Some(term)) =
            (read_i64(meta_ks, meta::MEMBER_ID)?, read_i64(meta_ks, meta::CLUSTER_ID)?, read_i64(meta_ks, meta::TERM)?)
        {
            return Ok(Identity { member_id: member as u64, cluster_id: cluster as u64, term: Term(term as u64) });
        }
        let identity = Identity { member_id: random_nonzero_u64()?, cluster_id: random_nonzero_u64()?, term: Term(1) };
        let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(meta_ks, meta::MEMBER_ID, (identity.member_id as i64).to_be_bytes().to_vec());
        batch.insert(meta_ks, meta::CLUSTER_ID, (identity.cluster_id as i64).to_be_bytes().to_vec());
        batch.insert(meta_ks, meta::TERM, (identity.term.get() as i64).to_be_bytes().to_vec());
        batch.commit().doing("writing the node's identity")?;
        Ok(identity)
    }
}
