//! The store as a checkpoint holds it: one snapshot streamed in (space, key) order, entries loaded back
//! into an empty store, and the state cleared (identity kept) before a restore. Of `meta`, only the values
//! describing the state travel ([`checkpoint_space::META_NAMES`]): identity, term and format stay the
//! node's own.

use fjall::Readable;

use super::{LogPosition, Store, check_long_key_layout};
use crate::error::Result;
use crate::ids::Revision;
use crate::mvcc::encoding::{decode_log_key, meta};
use crate::mvcc::error::{Doing, StoreError};

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

impl Store {
    /// Streams one consistent snapshot of the whole state to `visit` in (space, key) order, as a
    /// checkpoint holds it (see [`checkpoint_space`]); returns the snapshot's log position and compact
    /// revision. Blocking: call off the executors.
    pub fn scan_checkpoint(&self, visit: &mut CheckpointVisitor) -> Result<(LogPosition, Revision)> {
        let snapshot = self.db.snapshot();
        let (current, compact) = self.snapshot_revisions(&snapshot)?;
        let sub = match snapshot.iter(&self.log).next_back() {
            Some(guard) => {
                let LogPosition { revision, sub } = decode_log_key(&guard.key().doing("reading the newest log key")?)?;
                if revision == current { sub } else { 0 }
            }
            None => 0,
        };
        let mut metas: Vec<&[u8]> = checkpoint_space::META_NAMES.to_vec();
        metas.sort_unstable();
        for name in metas {
            if let Some(value) = snapshot.get(&self.meta, name).doing("reading meta")? {
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
                let (key, value) = item.into_inner().doing("scanning a snapshot")?;
                visit(space, &key, &value)?;
            }
        }
        Ok((LogPosition::new(current, sub), compact))
    }

    /// Loads checkpoint entries (from [`Store::scan_checkpoint`]) into this store, which must be empty;
    /// call [`Store::sync`] and [`Store::rebuild_index`] after the last. Refuses spaces and meta
    /// names it does not know.
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
                    return Err(StoreError::corrupt(format!(
                        "checkpoint entry in unknown space {other} (key {key:?})"
                    ))
                    .into());
                }
            };
            match *space {
                checkpoint_space::KV => check_long_key_layout("kv", key, value)?,
                checkpoint_space::LATEST => check_long_key_layout("latest", key, value)?,
                _ => {}
            }
            batch.insert(keyspace, key.clone(), value.clone());
        }
        batch.commit().doing("loading checkpoint entries")?;
        Ok(())
    }

    /// Removes the whole state (keys, history, log, leases and the revisions), keeping the node's
    /// identity: the store is then as a fresh one, ready for a restore. Blocking.
    pub fn clear_state(&self) -> Result<()> {
        const REMOVALS_PER_BATCH: usize = 4096;
        let mut batch = self.db.batch();
        for keyspace in [&self.log, &self.kv, &self.latest, &self.leases] {
            for item in keyspace.iter() {
                batch.remove(keyspace, item.key().doing("reading keys to clear")?);
                if batch.len() >= REMOVALS_PER_BATCH {
                    std::mem::replace(&mut batch, self.db.batch()).commit().doing("clearing the state")?;
                }
            }
        }
        for name in checkpoint_space::META_NAMES.into_iter().chain([meta::UPLOADED_THROUGH]) {
            batch.remove(&self.meta, name);
        }
        batch.commit().doing("clearing the state")?;
        self.rebuild_index()?;
        self.sync()
    }
}
