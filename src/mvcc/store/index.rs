//! The store's key index ([`KeyIndex`]): built from `kv` when the store opens or its state is
//! replaced, told each group's writes before the group's batch is written, and compacted with the
//! versions. So the index never lacks a version a snapshot holds: a reader takes the versions at or
//! below its snapshot's revision and finds each one in `kv`.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fjall::Keyspace;

use super::Store;
use crate::error::Result;
use crate::ids::Revision;
use crate::log::LogEvent;
use crate::mvcc::encoding::{Version, decode_history_key, decode_revision, is_long_history_key};
use crate::mvcc::error::Doing;
use crate::mvcc::index::{KeyIndex, Rev};

/// Keys compacted per write lock on the index: about a millisecond of work.
const KEYS_PER_COMPACTION_LOCK: usize = 1024;

/// The index, shared by the store and its read views.
pub type SharedIndex = Arc<RwLock<KeyIndex>>;

/// Reads the index; a panic while it was written leaves it as the panic found it, which the
/// node, stopped by that panic, does not read again.
pub(super) fn read(index: &SharedIndex) -> RwLockReadGuard<'_, KeyIndex> {
    index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(index: &SharedIndex) -> RwLockWriteGuard<'_, KeyIndex> {
    index.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Builds the index of every version `kv` holds. Blocking: a scan of the whole history window.
/// fjall hands the entries in stored-key order, so each key's versions come together and in
/// ascending revisions, as [`KeyIndex::load`] requires.
pub(super) fn build(kv: &Keyspace) -> Result<KeyIndex> {
    let mut index = KeyIndex::default();
    for item in kv.iter() {
        let (stored, value) = item.into_inner().doing("building the key index")?;
        let tombstone = Version::is_tombstone_record(&value)?;
        let (key, revision) = if is_long_history_key(&stored) {
            super::check_long_key_layout("kv", &stored, &value)?;
            let key = Version::carried_key(&value)?.expect("checked: a long key's record carries it").to_vec();
            (key, decode_revision(&stored[stored.len() - 8..])?)
        } else {
            decode_history_key(&stored)?
        };
        index.load(&key, if tombstone { Rev::tombstone(revision) } else { Rev::put(revision) });
    }
    Ok(index)
}

impl Store {
    /// Tells the index the key changes of records about to be committed.
    pub(super) fn index_events<'a>(&self, changes: impl IntoIterator<Item = (Revision, &'a LogEvent)>) {
        let mut index = write(&self.index);
        for (revision, event) in changes {
            match event {
                LogEvent::Put { key, .. } => index.put(key, revision),
                LogEvent::Delete { key } => index.delete(key, revision),
                LogEvent::LeaseGrant { .. } | LogEvent::LeaseRevoke { .. } | LogEvent::Compact { .. } => {}
            }
        }
    }

    /// Drops from the index the revisions of `keys` that compaction at `compact` removes, a slice of
    /// keys per write lock, so commits and reads wait for a slice, not for the whole compaction.
    pub(super) fn compact_index(&self, keys: &[&[u8]], compact: Revision) {
        let mut removed = false;
        for slice in keys.chunks(KEYS_PER_COMPACTION_LOCK) {
            removed |= write(&self.index).compact_keys(slice.iter().copied(), compact);
        }
        if removed {
            write(&self.index).tidy();
        }
    }

    /// Builds the index again from `kv` (after a checkpoint was loaded or the state cleared).
    /// Blocking.
    pub fn rebuild_index(&self) -> Result<()> {
        let rebuilt = build(&self.kv)?;
        *write(&self.index) = rebuilt;
        Ok(())
    }

    /// Keys in the index and the bytes it holds, for metrics.
    pub fn index_size(&self) -> (usize, usize) {
        let index = read(&self.index);
        (index.keys(), index.heap_bytes())
    }
}
