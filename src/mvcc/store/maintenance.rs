//! What etcd's Maintenance service and the space guard ask of the store: its sizes (data held, bytes on
//! disk, free space), HashKV and Hash over one snapshot, Defragment (one at a time), the alarms kept
//! across restarts, and scratch files for snapshots being sent (in a folder emptied at open).

use std::path::{Path, PathBuf};

use fjall::Readable;

use super::{LogPosition, SCRATCH_DIR, Store, create_private_dir};
use crate::error::{Error, Result};
use crate::ids::Revision;
use crate::mvcc::encoding::{Version, decode_history_key, meta};
use crate::mvcc::error::{Doing, StoreError};

impl Store {
    /// Bytes of data the store holds: its tables plus its memtables (data written but not in a table
    /// yet). What the space quota counts and `Status.db_size_in_use` reports; deletes, compaction and
    /// a defragment shrink it. In memory, cheap.
    pub fn data_bytes(&self) -> u64 {
        let tables: u64 =
            [&self.log, &self.kv, &self.latest, &self.leases, &self.meta].iter().map(|ks| ks.disk_space()).sum();
        tables + self.db.write_buffer_size()
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

    /// Bytes an unprivileged writer may still use on the data directory's file system.
    pub fn free_bytes(&self) -> Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.db_dir.as_os_str().as_bytes())
            .map_err(|_| StoreError::PathWithZero { path: self.db_dir.clone() })?;
        // SAFETY: statvfs(3) reads a NUL-terminated path and fills the struct it is given.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            let source = std::io::Error::last_os_error();
            return Err(StoreError::Io { doing: "statvfs", path: self.db_dir.clone(), source }.into());
        }
        Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }

    /// The alarms a node raised and did not disarm, as wire values (see [`Store::keep_alarms`]).
    pub fn kept_alarms(&self) -> Result<Vec<i32>> {
        Ok(self
            .meta
            .get(meta::ALARMS)
            .doing("reading the alarms")?
            .map(|v| v.iter().map(|b| i32::from(*b)).collect())
            .unwrap_or_default())
    }

    /// Keeps `alarms` (wire values) across restarts, synced: they change a few times in a node's life.
    pub fn keep_alarms(&self, alarms: &[i32]) -> Result<()> {
        let bytes: Vec<u8> = alarms.iter().filter_map(|a| u8::try_from(*a).ok()).collect();
        self.meta.insert(meta::ALARMS, bytes).doing("writing the alarms")?;
        self.sync()
    }

    /// A new file name in the data directory's scratch folder (created private if missing; emptied
    /// when the node opens the directory), for files made and removed while the node runs.
    pub fn scratch_file(&self, what: &str) -> Result<PathBuf> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = self.db_dir.with_file_name(SCRATCH_DIR);
        create_private_dir(&dir).map_err(|source| StoreError::Io {
            doing: "cannot create",
            path: dir.clone(),
            source,
        })?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(dir.join(format!("{what}-{n}")))
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
            keyspace.rotate_memtable_and_wait().doing("defragmenting")?;
            keyspace.major_compact().doing("defragmenting")?;
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
        self.meta.insert(meta::DEFRAGMENTED_AT, (now as i64).to_be_bytes()).doing("writing the defragment mark")?;
        self.meta.rotate_memtable_and_wait().doing("rotating meta's memtable")?;
        Ok(())
    }

    /// etcd's HashKV at `rev` (0: the current revision) over one consistent snapshot (see
    /// [`crate::mvcc::hash`]): the hash, the current revision and the compact revision. Fails as etcd does
    /// for a revision at or below the compact revision, or above the current one. Blocking: reads the
    /// whole history.
    pub fn hash_kv(&self, rev: Revision) -> Result<(u32, Revision, Revision)> {
        let snapshot = self.db.snapshot();
        let (current, compact) = self.snapshot_revisions(&snapshot)?;
        if rev.get() > 0 && rev <= compact {
            return Err(Error::Compacted);
        }
        if rev > current {
            return Err(Error::FutureRevision);
        }
        let mut hasher = crate::mvcc::hash::KvHasher::new(if rev.get() == 0 { current } else { rev }, compact);
        for item in snapshot.iter(&self.kv) {
            let (stored, record) = item.into_inner().doing("reading the history to hash")?;
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
    pub fn hash_all(&self) -> Result<(u32, Revision)> {
        let mut crc = 0u32;
        let (LogPosition { revision, .. }, _) = self.scan_checkpoint(&mut |space, key, value| {
            for part in
                [&[space][..], &(key.len() as u64).to_be_bytes(), key, &(value.len() as u64).to_be_bytes(), value]
            {
                crc = crc32c::crc32c_append(crc, part);
            }
            Ok(())
        })?;
        Ok((crc, revision))
    }
}
