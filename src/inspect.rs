//! Offline reads of a data directory, for `t4 inspect`: its bookkeeping, its keys at any revision
//! still in history, every version of a key, and what changed between two revisions; and the newest
//! checkpoint an object store holds.
//!
//! Invariant: nothing here writes to the database. [`Inspector::open`] goes through
//! [`Store::open_read_only`], which holds the directory's lock for the inspector's lifetime (a node
//! cannot start on it meanwhile, and a running node's directory is refused) and creates nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::config::ObjectStoreArgs;
use crate::durability::checkpoint::read_latest;
use crate::durability::layout::parse_checkpoint;
use crate::durability::open_object_store;
use crate::error::{DurabilityError, Error, Result};
pub use crate::ids::{Revision, Term};
pub use crate::log::LogPosition;
use crate::mvcc::store::{NEVER_COMPACTED, ReadView};
use crate::mvcc::{KeySpan, Store, Version, VersionReader};
use crate::object::ObjectStore;
use crate::types::{KeyValue, prefix_end};

/// Log bytes a diff decodes per read (bounds its memory beside the set of changed keys).
const DIFF_LOG_BYTES_PER_READ: usize = 4 * 1024 * 1024;

/// A data directory opened for reading.
pub struct Inspector {
    /// Opened read-only; holds the directory's lock.
    store: Store,
}

/// A data directory's bookkeeping (`t4 inspect meta`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The leadership term of the last run.
    pub term: crate::ids::Term,
    /// Revision of the last committed write.
    pub current_revision: i64,
    /// Reads below this revision fail; `None` if the store was never compacted.
    pub compact_revision: Option<i64>,
    /// Revision through which superseded versions are physically removed; `None` if never.
    pub compacted_through: Option<i64>,
    /// Live keys at the current revision.
    pub key_count: i64,
    /// Leases not revoked.
    pub lease_count: usize,
    /// Bytes the database occupies on disk.
    pub db_size_bytes: u64,
    /// The log position through which object storage holds every record (`None`: nothing uploaded,
    /// or no object store was ever used).
    pub upload_watermark: Option<LogPosition>,
    /// The newest log record's position (`None`: the log is empty).
    pub last_log_position: Option<LogPosition>,
}

/// Keys at a revision (`t4 inspect list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The revision read.
    pub revision: i64,
    /// Keys matching, in all (may exceed `keys.len()`).
    pub count: i64,
    /// The first matching keys, in key order.
    pub keys: Vec<KeyValue>,
    /// Whether more keys match than `keys` holds.
    pub more: bool,
}

/// One version of a key in history: a put, or a delete (`kv` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Revision of the write.
    pub revision: i64,
    /// The key-value the put wrote; `None` for a delete.
    pub kv: Option<KeyValue>,
}

/// Every version of a key still in history (`t4 inspect history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The store's current revision.
    pub current_revision: i64,
    /// The compact revision (`None`: never compacted): versions below it may be gone, except the
    /// one reads at the compact revision still see.
    pub compact_revision: Option<i64>,
    /// Oldest first.
    pub versions: Vec<HistoryEntry>,
    /// Whether the key has more versions than `versions` holds (the newest were left out).
    pub more: bool,
}

/// How a key differs between two revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Absent at the first revision, present at the second.
    Created,
    /// Present at both, written in between (possibly deleted and created again: see the create
    /// revisions).
    Changed,
    /// Present at the first revision, absent at the second.
    Deleted,
}

/// One key that differs between two revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The key.
    pub key: Vec<u8>,
    /// How it differs.
    pub change: Change,
    /// The key at the first revision.
    pub before: Option<KeyValue>,
    /// The key at the second revision.
    pub after: Option<KeyValue>,
}

/// What changed between two revisions (`t4 inspect diff`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The earlier revision compared.
    pub from_revision: i64,
    /// The later revision compared.
    pub to_revision: i64,
    /// In key order.
    pub changes: Vec<KeyChange>,
    /// Whether more keys changed than `changes` holds.
    pub more: bool,
}

/// The newest complete checkpoint in object storage (`manifest/latest` and its manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The manifest's object key.
    pub key: String,
    /// The revision of the checkpoint's last record.
    pub revision: i64,
    /// Its sub-position: WAL replay resumes after `(revision, sub)`.
    pub sub: u32,
    /// The term that wrote it.
    pub term: crate::ids::Term,
    /// The compact revision at the checkpoint.
    pub compact_revision: i64,
    /// Entries over all its tables.
    pub entries: u64,
    /// Table objects it lists.
    pub tables: usize,
    /// When it was taken (milliseconds since the Unix epoch).
    pub created_unix_ms: u64,
}

fn key_value(key: &[u8], version: Version) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: version.value.unwrap_or_default(),
        create_revision: version.create_revision.get(),
        mod_revision: version.mod_revision.get(),
        version: version.version,
        lease: version.lease,
    }
}

/// The span of every key starting with `prefix` (all keys for an empty one).
fn prefix_span(prefix: &[u8]) -> KeySpan {
    KeySpan::from_etcd(prefix, &prefix_end(prefix))
}

/// The revision a read at `revision` sees (`None` or 0: the current one), refused as etcd refuses it.
fn resolve(view: &ReadView, revision: Option<i64>) -> Result<Revision> {
    match revision.map(Revision) {
        None | Some(Revision(0)) => Ok(view.current_revision()),
        Some(rev) if rev > view.current_revision() => Err(Error::FutureRevision),
        Some(rev) if rev < view.compact_revision() => Err(Error::Compacted),
        Some(rev) => Ok(rev),
    }
}

/// A compact revision as reports show it: `None` if the store was never compacted.
fn compacted(compact: Revision) -> Option<i64> {
    (compact != NEVER_COMPACTED).then_some(compact.get())
}

/// The one version of `key` a read at `rev` sees.
fn get_at(view: &ReadView, key: &[u8], rev: Revision) -> Result<Option<KeyValue>> {
    let mut found = None;
    view.visit(&KeySpan::from_etcd(key, b""), rev, &mut |k, v| {
        found = Some(key_value(k, v));
        false
    })?;
    Ok(found)
}

impl Inspector {
    /// Opens `data_dir` for reading: see [`Store::open_read_only`] for what is refused.
    pub fn open(data_dir: &Path) -> Result<Inspector> {
        Ok(Inspector { store: Store::open_read_only(data_dir)? })
    }

    /// The current and compact revisions (`None`: never compacted).
    pub fn revisions(&self) -> Result<(i64, Option<i64>)> {
        let view = self.store.read_view()?;
        Ok((view.current_revision().get(), compacted(view.compact_revision())))
    }

    /// The directory's bookkeeping. Counts every live key and walks the database folder.
    pub fn summary(&self) -> Result<Summary> {
        let view = self.store.read_view()?;
        let identity = self.store.identity();
        let compacted_through = self.store.compacted_through()?;
        Ok(Summary {
            member_id: identity.member_id,
            cluster_id: identity.cluster_id,
            term: identity.term,
            current_revision: view.current_revision().get(),
            compact_revision: compacted(view.compact_revision()),
            compacted_through: compacted(compacted_through),
            key_count: view.count(&prefix_span(b""), view.current_revision())?,
            lease_count: self.store.leases()?.len(),
            db_size_bytes: self.store.disk_bytes(),
            upload_watermark: self.store.uploaded_through()?,
            last_log_position: self.store.last_log_position()?,
        })
    }

    /// The first `limit` keys starting with `prefix` at `revision` (`None`: the current one).
    pub fn list(&self, prefix: &[u8], revision: Option<i64>, limit: usize) -> Result<Listing> {
        let view = self.store.read_view()?;
        let rev = resolve(&view, revision)?;
        let span = prefix_span(prefix);
        let mut keys = Vec::new();
        let mut more = false;
        view.visit(&span, rev, &mut |k, v| {
            if keys.len() == limit {
                more = true;
                return false;
            }
            keys.push(key_value(k, v));
            true
        })?;
        Ok(Listing { revision: rev.get(), count: view.count(&span, rev)?, keys, more })
    }

    /// `key` at `revision` (`None`: the current one), with the revision read.
    pub fn get(&self, key: &[u8], revision: Option<i64>) -> Result<(i64, Option<KeyValue>)> {
        let view = self.store.read_view()?;
        let rev = resolve(&view, revision)?;
        Ok((rev.get(), get_at(&view, key, rev)?))
    }

    /// The oldest `versions_max` versions of `key` still in history.
    pub fn history(&self, key: &[u8], versions_max: usize) -> Result<History> {
        let view = self.store.read_view()?;
        let mut stored = view.versions(key, versions_max.saturating_add(1))?;
        let more = stored.len() > versions_max;
        stored.truncate(versions_max);
        let versions = stored
            .into_iter()
            .map(|v| HistoryEntry {
                revision: v.mod_revision.get(),
                kv: (!v.is_tombstone()).then(|| key_value(key, v)),
            })
            .collect();
        Ok(History {
            current_revision: view.current_revision().get(),
            compact_revision: compacted(view.compact_revision()),
            versions,
            more,
        })
    }

    /// The keys starting with `prefix` that differ between `from` and `to` (the first
    /// `changes_max` in key order). The keys written in between are exactly those the log records
    /// after `from` through `to` name, so only they are compared. `from` must be at or above the
    /// compact revision and `to` at or below the current one; `from >= to` differs in nothing.
    pub fn diff(&self, from: i64, to: i64, prefix: &[u8], changes_max: usize) -> Result<Diff> {
        let view = self.store.read_view()?;
        let (from, to) = (resolve(&view, Some(from.max(1)))?, resolve(&view, Some(to.max(1)))?);
        let span = prefix_span(prefix);
        let mut written: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut next = from.next();
        while next <= to {
            let (records, read_through) = view.log_records(next, to, DIFF_LOG_BYTES_PER_READ)?;
            let events = records.iter().flat_map(|r| &r.events);
            written.extend(events.filter_map(|e| e.key()).filter(|k| span.contains(k)).map(<[u8]>::to_vec));
            next = read_through.next();
        }
        let mut changes = Vec::new();
        let mut more = false;
        for key in written {
            let (before, after) = (get_at(&view, &key, from)?, get_at(&view, &key, to)?);
            let change = match (&before, &after) {
                (None, Some(_)) => Change::Created,
                (Some(_), None) => Change::Deleted,
                (Some(b), Some(a)) if b.mod_revision != a.mod_revision => Change::Changed,
                _ => continue, // created and deleted in between, or never there
            };
            if changes.len() == changes_max {
                more = true;
                break;
            }
            changes.push(KeyChange { key, change, before, after });
        }
        Ok(Diff { from_revision: from.get(), to_revision: to.get(), changes, more })
    }
}

/// The newest complete checkpoint in the object store `args` name (`Ok(None)` if it holds none).
/// Refuses a store directory that does not exist rather than creating one.
pub fn latest_checkpoint(args: &ObjectStoreArgs) -> Result<Option<CheckpointInfo>> {
    if let Some(dir) = &args.object_store_dir
        && !dir.is_dir()
    {
        return Err(DurabilityError::NoStoreDir { path: dir.clone() }.into());
    }
    let Some(store) = open_object_store(args)? else { return Ok(None) };
    // Every object store may be awaited from any executor (S3's runs on its own thread).
    futures_lite::future::block_on(read_checkpoint_info(&store))
}

async fn read_checkpoint_info(store: &Arc<dyn ObjectStore>) -> Result<Option<CheckpointInfo>> {
    let Some(latest) = read_latest(store).await? else { return Ok(None) };
    let key = &latest.checkpoint_key;
    let object = store.get(key).await.map_err(DurabilityError::object(format!("reading {key}")))?;
    let object = object.ok_or_else(|| DurabilityError::LatestDangling { key: key.clone() })?;
    let manifest = parse_checkpoint(&object.bytes).map_err(DurabilityError::Layout)?;
    Ok(Some(CheckpointInfo {
        key: latest.checkpoint_key,
        revision: manifest.revision.get(),
        sub: manifest.sub,
        term: manifest.term,
        compact_revision: manifest.compact_revision.get(),
        entries: manifest.entries,
        tables: manifest.tables.len(),
        created_unix_ms: manifest.created_unix_ms,
    }))
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
