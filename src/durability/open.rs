//! Opening a node's durability: the local store brought up to date from object storage (restore,
//! replay), then a new term, then the local records the store lacks uploaded. Invariant: the new
//! term is above every term in the local store and in object storage, so no object is overwritten.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpointer::{Checkpointer, Checkpointing, schedule_from_store};
use super::health::{self, Health};
use super::layout::{CHECKPOINT_PREFIX, WAL_PREFIX, parse_checkpoint_key, parse_wal_key};
use super::{Durability, Settings, checkpoint, replay};
use crate::alarms::Alarms;
use crate::error::{DurabilityError, Error, Result, RuntimeError};
use crate::ids::Term;
use crate::metrics::{CheckpointStats, Metrics};
use crate::mvcc::Store;
use crate::mvcc::store::LogPosition;
use crate::object::ObjectStore;

/// Threads of the durability runtime (uploads and downloads are I/O bound).
const RUNTIME_THREADS: usize = 2;

/// The local store's log position: its revision, and the sub of the last record at that revision.
pub(super) fn local_position(local: &Store) -> Result<LogPosition> {
    let current = local.current_revision()?;
    Ok(match local.last_log_position()? {
        Some(position) if position.revision == current => position,
        _ => LogPosition::new(current, 0),
    })
}

/// Empties the local store for a (new) restore.
fn reset_local(local: &mut Arc<Store>) -> Result<()> {
    local.clear_state()
}

impl Durability {
    /// Opens the node's local store, first bringing it up to date from object storage: an empty
    /// store is restored from the newest usable checkpoint, then the WAL objects after the local
    /// position are replayed; a store left behind the newest checkpoint (its WAL collected) is
    /// restored anew. Then the node takes a new term and uploads local records the store lacks.
    /// Failures of its background tasks are reported to `alarms`.
    pub fn open(
        store: Arc<dyn ObjectStore>,
        settings: Settings,
        data_dir: &Path,
        alarms: Alarms,
        metrics: &Metrics,
    ) -> Result<(Durability, Arc<Store>)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("t4-durability")
            .enable_all()
            .build()
            .map_err(RuntimeError::start("the durability runtime"))?;
        let mut local = Store::open(data_dir)?;
        let (term, wal_keys) =
            runtime.block_on(Self::bring_up_to_date(&store, &mut local, data_dir, metrics.checkpoints()))?;
        local.keep_unuploaded_log();
        let schedule = runtime.block_on(schedule_from_store(&store, &local, &settings, &wal_keys))?;
        let stats = metrics.uploads().clone();
        // A checkpoint may keep failing as long as a WAL upload may before it is reported.
        let checkpointing = Checkpointing {
            schedule,
            health: Health::new(alarms.clone(), health::CHECKPOINTS, settings.wait_max),
            gc: Health::new(alarms.clone(), health::GC, Duration::ZERO),
        };
        let checkpointer = Checkpointer {
            store: store.clone(),
            local: local.clone(),
            term,
            table_bytes: settings.table_bytes,
            stats: stats.clone(),
            checkpoints: metrics.checkpoints().clone(),
            shared: Arc::new(tokio::sync::Mutex::new(checkpointing)),
        };
        let durability = Durability {
            runtime,
            store,
            local: local.clone(),
            settings,
            term,
            stats,
            checkpointer,
            alarms,
            tasks: Vec::new(),
            started: Instant::now(),
        };
        durability.runtime.block_on(durability.upload_tail())?;
        Ok((durability, local))
    }

    /// Brings `local` up to date (see [`Durability::open`]); returns the node's new term and the WAL
    /// objects the store holds.
    async fn bring_up_to_date(
        store: &Arc<dyn ObjectStore>,
        local: &mut Arc<Store>,
        data_dir: &Path,
        stats: &CheckpointStats,
    ) -> Result<(Term, Vec<String>)> {
        let started = Instant::now();
        let mut reset = reset_local;
        let mut restored = None;
        if local.is_empty()? {
            restored = checkpoint::restore_newest(store, local, &mut reset, stats).await?;
        }
        let mut replayed = replay::replay(store, local, local_position(local)?, stats).await?;
        if restored.is_none() {
            // A store left behind the newest checkpoint, whose WAL was collected since: restore anew,
            // unless it holds records object storage lacks (then a human must decide).
            if let Some(latest) = checkpoint::read_latest(store).await?
                && local_position(local)?.revision < latest.revision
            {
                let position = local_position(local)?;
                if local.uploaded_through()? != Some(position) {
                    return Err(Error::DataDir {
                        path: data_dir.to_path_buf(),
                        reason: format!(
                            "it is behind the newest checkpoint (revision {} < {}) and holds writes object storage lacks; \
                             move it away to restore from object storage",
                            position.revision, latest.revision
                        ),
                    });
                }
                tracing::warn!(
                    local = %position.revision,
                    checkpoint = %latest.revision,
                    "data dir is behind the newest checkpoint; restoring"
                );
                reset_local(local)?;
                restored = checkpoint::restore_newest(store, local, &mut reset, stats).await?;
                replayed = replay::replay(store, local, local_position(local)?, stats).await?;
            }
        }
        if restored.is_some() || replayed.records > 0 {
            tracing::info!(
                checkpoint = restored.as_ref().map(|r| r.key.as_str()),
                wal_objects = replayed.objects,
                wal_records = replayed.records,
                revision = %local_position(local)?.revision,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "restored from object storage"
            );
        }
        // A new term: higher than any this node or the store has seen.
        let mut highest = local.identity().term;
        let wal_keys = store.list(WAL_PREFIX, None).await.map_err(DurabilityError::object("listing WAL"))?;
        for key in &wal_keys {
            highest = highest.max(parse_wal_key(key).map_or(Term(0), |k| k.term));
        }
        for key in store.list(CHECKPOINT_PREFIX, None).await.map_err(DurabilityError::object("listing checkpoints"))? {
            highest = highest.max(parse_checkpoint_key(&key).map_or(Term(0), |k| k.term));
        }
        let term = highest.next();
        local.set_term(term)?;
        Ok((term, wal_keys))
    }
}
