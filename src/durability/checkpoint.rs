//! Checkpoints: a snapshot of the whole database streamed in key order, cut into content-addressed
//! table objects (only those not already stored are uploaded), then its manifest, then
//! `manifest/latest`. Restoring loads the tables (downloaded in parallel, each checked against its
//! content hash) into an empty store. GC keeps the two newest checkpoints and what they (and branch
//! pins) need.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::error::DurabilityError;
use super::layout::{
    self, BRANCHES_PREFIX, CHECKPOINT_PREFIX, CheckpointManifest, FORMAT_VERSION, LATEST_KEY, LatestManifest,
    TABLE_PREFIX, WAL_PREFIX, checkpoint_key, parse_checkpoint, parse_checkpoint_key, parse_latest, parse_wal_key,
};
use super::table::{TableBuilder, decode_table};
use crate::error::{Error, Internal, Result, RuntimeError};
use crate::ids::Revision;
use crate::log::LogPosition;
use crate::metrics::CheckpointStats;
use crate::mvcc::Store;
use crate::object::{ObjectError, ObjectStore};

/// Tables uploaded or downloaded at once.
const TRANSFERS_IN_FLIGHT: usize = 8;
/// Checkpoints GC keeps (the newest ones).
pub const CHECKPOINTS_KEPT: usize = 2;

/// A checkpoint written: its manifest's key, the revision it covers and when it was taken.
#[derive(Debug, Clone)]
pub struct Written {
    pub key: String,
    pub revision: Revision,
    pub created: SystemTime,
}

/// Writes a checkpoint of `local` under `term`, cut into tables of about `table_bytes`. The snapshot is read on a blocking thread while
/// tables are uploaded as they are cut. Returns `None` when the store's position is the one of the
/// newest checkpoint already (nothing to do).
pub async fn create(
    store: &Arc<dyn ObjectStore>,
    local: &Arc<Store>,
    term: crate::ids::Term,
    table_bytes: usize,
) -> Result<Option<Written>> {
    let started = Instant::now();
    let latest = read_latest(store).await?;
    if let Some(latest) = &latest
        && latest.revision >= local.current_revision()?
    {
        return Ok(None); // nothing new since the newest checkpoint
    }
    let (tables_tx, tables_rx) = flume::bounded(TRANSFERS_IN_FLIGHT);
    let scan_store = local.clone();
    let scan = tokio::task::spawn_blocking(move || {
        let mut builder = TableBuilder::new(table_bytes);
        let mut entries = 0u64;
        let result = scan_store.scan_checkpoint(&mut |space, key, value| {
            entries += 1;
            if let Some(table) = builder.push(space, key, value) {
                tables_tx.send(table).map_err(|_| Error::Closed)?;
            }
            Ok(())
        });
        if result.is_ok()
            && let Some(table) = builder.finish()
        {
            let _ = tables_tx.send(table);
        }
        result.map(|(position, compact)| (position, compact, entries))
    });
    let mut refs = Vec::new();
    let mut uploads = Vec::new();
    let (mut uploaded, mut bytes_uploaded) = (0usize, 0u64);
    while let Ok(table) = tables_rx.recv_async().await {
        refs.push(table.table_ref());
        let store = store.clone();
        uploads.push(tokio::spawn(async move {
            let size = table.bytes.len() as u64;
            match store.put_if_absent(&table.key, table.bytes).await {
                Ok(_) => Ok(Some(size)),
                Err(ObjectError::PreconditionFailed(_)) => Ok(None), // shared with an earlier checkpoint
                Err(e) => Err(DurabilityError::object(format!("uploading {}", table.key))(e)),
            }
        }));
        if uploads.len() >= TRANSFERS_IN_FLIGHT {
            let done = uploads.remove(0).await.map_err(RuntimeError::task("upload task"))??;
            if let Some(size) = done {
                uploaded += 1;
                bytes_uploaded += size;
            }
        }
    }
    for upload in uploads {
        if let Some(size) = upload.await.map_err(RuntimeError::task("upload task"))?? {
            uploaded += 1;
            bytes_uploaded += size;
        }
    }
    let (position, compact, entries) = scan.await.map_err(RuntimeError::task("checkpoint scan"))??;
    fail::fail_point!("checkpoint-after-tables", |_| Err(DurabilityError::Injected(
        "fault injected at checkpoint-after-tables"
    )
    .into()));
    if let Some(latest) = &latest
        && latest.revision >= position.revision
    {
        return Ok(None); // nothing new since (a restart does not make a checkpoint of its own)
    }
    let key = checkpoint_key(term, position.revision);
    let created = SystemTime::now();
    let manifest = CheckpointManifest {
        format_version: FORMAT_VERSION,
        term,
        revision: position.revision,
        sub: position.sub,
        compact_revision: compact,
        tables: refs,
        entries,
        created_unix_ms: created.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    };
    match store.put_if_absent(&key, manifest.to_json()).await {
        Ok(_) => {}
        Err(ObjectError::PreconditionFailed(_)) => {
            // Only this node writes under its term, so the manifest there is an earlier attempt of
            // this very checkpoint that failed before `manifest/latest` moved (`latest` is behind
            // it, or this would have returned above): it is complete, so finish its last step.
            let existing = store.get(&key).await.map_err(DurabilityError::object(format!("reading {key}")))?;
            let complete = existing.is_some_and(|object| {
                parse_checkpoint(&object.bytes).is_ok_and(|m| m.term == term && m.revision == position.revision)
            });
            if !complete {
                let what = format!("{key} exists but is not this node's checkpoint at its revision");
                return Err(DurabilityError::Checkpoint { what }.into());
            }
            tracing::info!(key, "finishing an earlier attempt of this checkpoint: moving manifest/latest to it");
        }
        Err(e) => return Err(DurabilityError::object(format!("writing {key}"))(e).into()),
    }
    fail::fail_point!("checkpoint-before-latest", |_| Err(DurabilityError::Injected(
        "fault injected at checkpoint-before-latest"
    )
    .into()));
    let pointer = LatestManifest::new(term, position.revision);
    store.put(LATEST_KEY, pointer.to_json()).await.map_err(DurabilityError::object("writing manifest/latest"))?;
    tracing::info!(
        checkpoint = key,
        revision = %position.revision,
        entries,
        tables = manifest.tables.len(),
        tables_uploaded = uploaded,
        bytes_uploaded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "checkpoint written"
    );
    Ok(Some(Written { key, revision: position.revision, created }))
}

/// `manifest/latest`, if there is one (a bad one is an error: never guessed at).
pub async fn read_latest(store: &Arc<dyn ObjectStore>) -> Result<Option<LatestManifest>> {
    match store.get(LATEST_KEY).await.map_err(DurabilityError::object("reading manifest/latest"))? {
        Some(object) => Ok(Some(parse_latest(&object.bytes).map_err(DurabilityError::Layout)?)),
        None => Ok(None),
    }
}

/// The manifest of `manifest/latest`'s checkpoint, if there is one.
pub async fn read_newest(store: &Arc<dyn ObjectStore>) -> Result<Option<CheckpointManifest>> {
    let Some(latest) = read_latest(store).await? else { return Ok(None) };
    read_manifest(store, &latest.checkpoint_key).await.map(Some)
}

/// The checkpoint manifest stored under `key` (missing or unreadable: an error naming it).
async fn read_manifest(store: &Arc<dyn ObjectStore>, key: &str) -> Result<CheckpointManifest> {
    let object = store
        .get(key)
        .await
        .map_err(DurabilityError::object(format!("reading {key}")))?
        .ok_or_else(|| DurabilityError::Missing { key: key.to_string() })?;
    Ok(parse_checkpoint(&object.bytes).map_err(|source| DurabilityError::Document { key: key.to_string(), source })?)
}

/// Every checkpoint manifest key, newest first.
async fn checkpoint_keys(store: &Arc<dyn ObjectStore>) -> Result<Vec<String>> {
    let mut keys: Vec<String> = store
        .list(CHECKPOINT_PREFIX, None)
        .await
        .map_err(DurabilityError::object("listing checkpoints"))?
        .into_iter()
        .filter(|k| parse_checkpoint_key(k).is_some())
        .collect();
    keys.sort_by_key(|k| parse_checkpoint_key(k).map(|c| (c.revision, c.term)));
    keys.reverse();
    Ok(keys)
}

/// A checkpoint loaded into a store: its manifest's key.
#[derive(Debug, Clone)]
pub struct Restored {
    pub key: String,
}

/// Loads the newest usable checkpoint into `local` (which must be empty): `manifest/latest`'s, or, if
/// it is damaged (bad JSON, unknown format, a table that fails its hash or CRC), the next older one,
/// and so on. Returns `None` when the store holds no checkpoint. A damaged checkpoint is reported
/// and never applied; `reset` empties the local store again before the next attempt.
pub async fn restore_newest(
    store: &Arc<dyn ObjectStore>,
    local: &mut Arc<Store>,
    reset: &mut dyn FnMut(&mut Arc<Store>) -> Result<()>,
    stats: &CheckpointStats,
) -> Result<Option<Restored>> {
    let mut candidates = checkpoint_keys(store).await?;
    match read_latest(store).await {
        Ok(Some(latest)) => {
            // The pointer's checkpoint first (it is normally the newest listed too).
            candidates.retain(|k| *k != latest.checkpoint_key);
            candidates.insert(0, latest.checkpoint_key);
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "manifest/latest is unusable; trying the checkpoints listed"),
    }
    let mut failures = Vec::new();
    for key in candidates {
        match restore_one(store, local, &key, stats).await {
            Ok(restored) => {
                if !failures.is_empty() {
                    let skipped = failures.iter().map(|(key, e)| format!("{key}: {e}")).collect::<Vec<_>>().join("; ");
                    tracing::warn!(checkpoint = key, %skipped, "restored from an older checkpoint");
                }
                return Ok(Some(restored));
            }
            Err(e) if is_unusable_checkpoint(&e) => {
                tracing::error!(checkpoint = key, error = %e, "checkpoint unusable; falling back to the previous one");
                failures.push((key, e));
                reset(local)?;
            }
            Err(e) => return Err(e),
        }
    }
    if failures.is_empty() { Ok(None) } else { Err(DurabilityError::NoUsableCheckpoint { failures }.into()) }
}

/// Whether restoring a checkpoint failed in storage (the object store or the local one) or on
/// damaged data, so an older checkpoint is tried; a task or the runtime failing ends the restore.
fn is_unusable_checkpoint(e: &Error) -> bool {
    matches!(e, Error::Internal(Internal::Durability(_) | Internal::Store(_)))
}

async fn restore_one(
    store: &Arc<dyn ObjectStore>,
    local: &Arc<Store>,
    key: &str,
    stats: &CheckpointStats,
) -> Result<Restored> {
    let started = Instant::now();
    let manifest = read_manifest(store, key).await?;
    let total = manifest.tables.len();
    let total_bytes: u64 = manifest.tables.iter().map(|t| t.bytes).sum();
    let progress = super::progress::Progress::new("restoring checkpoint", total_bytes);
    stats.restore_bytes.store(total_bytes, Ordering::Relaxed);
    stats.restored_bytes.store(0, Ordering::Relaxed);
    let mut downloads = Vec::new();
    let mut loaded_bytes = 0u64;
    let mut next = 0;
    while next < total || !downloads.is_empty() {
        while next < total && downloads.len() < TRANSFERS_IN_FLIGHT {
            let (store, table) = (store.clone(), manifest.tables[next].clone());
            downloads.push(tokio::spawn(async move {
                let object = store
                    .get(&table.key)
                    .await
                    .map_err(DurabilityError::object(format!("reading {}", table.key)))?
                    .ok_or_else(|| DurabilityError::Checkpoint { what: format!("table {} is missing", table.key) })?;
                let entries = decode_table(&table.key, &object.bytes).map_err(DurabilityError::Table)?;
                if entries.len() as u64 != table.entries {
                    let what = format!(
                        "table {} holds {} entries, its manifest says {}",
                        table.key,
                        entries.len(),
                        table.entries
                    );
                    return Err(DurabilityError::Checkpoint { what });
                }
                Ok::<_, DurabilityError>((entries, object.bytes.len() as u64))
            }));
            next += 1;
        }
        // Tables load in manifest order (the store does not need it, but a failure then names the
        // first bad table).
        let (entries, size) = downloads.remove(0).await.map_err(RuntimeError::task("download task"))??;
        let rows: Vec<(u8, Vec<u8>, Vec<u8>)> = entries.into_iter().map(|e| (e.space, e.key, e.value)).collect();
        let target = local.clone();
        tokio::task::spawn_blocking(move || target.load_checkpoint_entries(&rows))
            .await
            .map_err(RuntimeError::task("load task"))??;
        loaded_bytes += size;
        progress.set(loaded_bytes);
        stats.restored_bytes.store(loaded_bytes, Ordering::Relaxed);
    }
    let target = local.clone();
    let position = LogPosition::new(manifest.revision, manifest.sub);
    tokio::task::spawn_blocking(move || {
        target.rebuild_index()?;
        target.set_uploaded_through(position)?;
        target.sync()
    })
    .await
    .map_err(RuntimeError::task("sync task"))??;
    progress.finish();
    tracing::info!(
        checkpoint = key,
        revision = %manifest.revision,
        entries = manifest.entries,
        tables = total,
        bytes = total_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "checkpoint restored"
    );
    Ok(Restored { key: key.to_string() })
}

/// What a GC pass removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Collected {
    pub checkpoints: usize,
    pub tables: usize,
    pub wal_objects: usize,
}

/// Deletes what no kept checkpoint needs: checkpoints beyond the [`CHECKPOINTS_KEPT`] newest (never
/// `manifest/latest`'s or a branch-pinned one), tables no kept checkpoint lists, and WAL objects
/// whose records all precede the oldest of the newest checkpoints.
pub async fn collect(store: &Arc<dyn ObjectStore>) -> Result<Collected> {
    fail::fail_point!("checkpoint-before-gc", |_| Err(DurabilityError::Injected(
        "fault injected at checkpoint-before-gc"
    )
    .into()));
    let Some(latest) = read_latest(store).await? else { return Ok(Collected::default()) };
    let mut pinned: BTreeSet<String> = BTreeSet::new();
    pinned.insert(latest.checkpoint_key.clone());
    for key in store.list(BRANCHES_PREFIX, None).await.map_err(DurabilityError::object("listing branches"))? {
        let Some(object) = store.get(&key).await.map_err(DurabilityError::object(format!("reading {key}")))? else {
            continue;
        };
        match layout::parse_branch_pin(&object.bytes) {
            Ok(pin) => {
                pinned.insert(pin.checkpoint_key);
            }
            // An unreadable pin might protect anything: collect nothing rather than guess.
            Err(source) => return Err(DurabilityError::GcSkipped { key, source }.into()),
        }
    }
    let checkpoints = checkpoint_keys(store).await?;
    // WAL objects stay from the oldest of the newest checkpoints on, so a restore that must fall back
    // from a damaged newest checkpoint to the previous one still finds every record after it.
    let wal_boundary = checkpoints
        .iter()
        .take(CHECKPOINTS_KEPT)
        .filter_map(|k| parse_checkpoint_key(k).map(|c| c.revision))
        .min()
        .unwrap_or(latest.revision)
        .min(latest.revision);
    let (mut kept, mut doomed) = (Vec::new(), Vec::new());
    for (i, key) in checkpoints.into_iter().enumerate() {
        if i < CHECKPOINTS_KEPT || pinned.contains(&key) {
            kept.push(key);
        } else {
            doomed.push(key);
        }
    }
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for key in &kept {
        let object = store.get(key).await.map_err(DurabilityError::object(format!("reading {key}")))?;
        let Some(object) = object else { continue };
        // A kept checkpoint that does not parse protects nothing we can name: collect no table.
        let manifest = parse_checkpoint(&object.bytes)
            .map_err(|source| DurabilityError::GcSkipped { key: key.clone(), source })?;
        referenced.extend(manifest.tables.into_iter().map(|t| t.key));
    }
    let mut collected = Collected::default();
    // Checkpoint manifests first: a table is only deleted once nothing lists it.
    store.delete_many(&doomed).await.map_err(DurabilityError::object("deleting old checkpoints"))?;
    collected.checkpoints = doomed.len();
    let tables: Vec<String> = store
        .list(TABLE_PREFIX, None)
        .await
        .map_err(DurabilityError::object("listing tables"))?
        .into_iter()
        .filter(|k| !referenced.contains(k))
        .collect();
    // Tables of a checkpoint being written right now are not listed by any manifest yet: only tables
    // older than the newest manifest could be unreferenced for good, but object stores give no
    // reliable creation time here, so checkpoints are written by this node only (one writer), and GC
    // runs right after a checkpoint, never during one.
    store.delete_many(&tables).await.map_err(DurabilityError::object("deleting unreferenced tables"))?;
    collected.tables = tables.len();
    // WAL objects whose every record precedes that boundary: the next object in replay order starts
    // at or before the boundary revision's first record. The last stays. Replay order, not position
    // order: an older term's object that a newer term superseded holds records never acknowledged,
    // and must neither end a live object's range (that object would go, and the stale one would be
    // replayed in its place) nor outlive the objects superseding it; it is never replayed, so it goes.
    let wal: Vec<String> =
        store.list(WAL_PREFIX, None).await.map_err(DurabilityError::object("listing WAL objects"))?;
    let planned = super::replay::plan(&wal);
    let replayed: BTreeSet<&str> = planned.iter().map(|p| p.key.as_str()).collect();
    let mut doomed_wal: Vec<String> = planned
        .windows(2)
        .filter(|pair| pair[1].start <= LogPosition::new(wal_boundary, 0))
        .map(|pair| pair[0].key.clone())
        .collect();
    doomed_wal.extend(wal.iter().filter(|k| parse_wal_key(k).is_some() && !replayed.contains(k.as_str())).cloned());
    store.delete_many(&doomed_wal).await.map_err(DurabilityError::object("deleting covered WAL objects"))?;
    collected.wal_objects = doomed_wal.len();
    if collected.checkpoints + collected.tables + collected.wal_objects > 0 {
        tracing::info!(
            checkpoints = collected.checkpoints,
            tables = collected.tables,
            wal_objects = collected.wal_objects,
            "object storage GC"
        );
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::layout::wal_key;
    use crate::durability::replay;
    use crate::log::{LogEvent, LogRecord};
    use crate::mvcc::store::GroupWrite;
    use crate::object::MemStore;

    /// One record per revision, each putting its own key `k<rev>` = `<tag><rev>`.
    fn records(revisions: std::ops::RangeInclusive<i64>, tag: &str) -> Vec<LogRecord> {
        revisions
            .map(|revision| LogRecord {
                revision: Revision(revision),
                sub: 0,
                events: vec![LogEvent::Put {
                    key: format!("k{revision}").into_bytes(),
                    value: format!("{tag}{revision}").into_bytes(),
                    create_revision: Revision(revision),
                    version: 1,
                    lease: 0,
                }],
            })
            .collect()
    }

    async fn put_wal(store: &Arc<dyn ObjectStore>, term: crate::ids::Term, records: &[LogRecord]) {
        let bytes: Vec<u8> = records.iter().flat_map(LogRecord::encode).collect();
        store.put(&wal_key(term, records[0].revision, 0), bytes).await.unwrap();
    }

    /// A checkpoint manifest (its tables do not matter to GC's WAL decisions).
    async fn put_checkpoint(store: &Arc<dyn ObjectStore>, term: crate::ids::Term, revision: i64) {
        let revision = Revision(revision);
        let manifest = CheckpointManifest {
            format_version: FORMAT_VERSION,
            term,
            revision,
            sub: 0,
            compact_revision: Revision(0),
            tables: Vec::new(),
            entries: 0,
            created_unix_ms: 0,
        };
        store.put(&checkpoint_key(term, revision), manifest.to_json()).await.unwrap();
        store.put(LATEST_KEY, LatestManifest::new(term, revision).to_json()).await.unwrap();
    }

    #[tokio::test]
    async fn gc_keeps_the_wal_a_newer_term_wrote_over_an_older_terms_superseded_object() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemStore::new());
        // Term 1 stored 2..=14, then 20..=25 past a gap at 15 (never acknowledged); term 2 restarted
        // from 15 and wrote 15..=22 in one object, 23..=25 in another.
        put_wal(&store, crate::ids::Term(1), &records(2..=14, "t1-")).await;
        put_wal(&store, crate::ids::Term(1), &records(20..=25, "stale-")).await;
        put_wal(&store, crate::ids::Term(2), &records(15..=22, "t2-")).await;
        put_wal(&store, crate::ids::Term(2), &records(23..=25, "t2-")).await;
        put_checkpoint(&store, crate::ids::Term(2), 21).await;
        put_checkpoint(&store, crate::ids::Term(2), 24).await;

        collect(&store).await.unwrap();
        let left = store.list(WAL_PREFIX, None).await.unwrap();
        assert!(
            left.contains(&wal_key(crate::ids::Term(2), Revision(15), 0)),
            "it holds 22, which the checkpoint at 21 lacks: {left:?}"
        );
        assert!(
            !left.contains(&wal_key(crate::ids::Term(1), Revision(2), 0)),
            "wholly before the older checkpoint: {left:?}"
        );
        assert!(
            !left.contains(&wal_key(crate::ids::Term(1), Revision(20), 0)),
            "superseded, so never replayed: {left:?}"
        );
        // A restore falling back to the older checkpoint replays term 2's records after it.
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path()).unwrap();
        let mut restored = records(2..=14, "t1-");
        restored.extend(records(15..=21, "t2-"));
        local.commit(&GroupWrite { records: restored, current_revision: Revision(21), uploaded: true }).unwrap();
        replay::replay(&store, &local, LogPosition::new(Revision(21), 0), &CheckpointStats::default()).await.unwrap();
        let (replayed, _) = local.read_view().unwrap().log_records(Revision(22), Revision(25), usize::MAX).unwrap();
        assert_eq!(replayed, records(22..=25, "t2-"), "the acknowledged records, never the stale ones");
    }
}
