//! Writing checkpoints while the node runs: those asked for (`Durability::checkpoint`) and those
//! the schedule finds due, each followed by GC. Invariant: one lock serialises every checkpoint
//! and its GC, and the schedule moves on only with a checkpoint written (or found current).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::health::Health;
use super::schedule::{CheckpointSchedule, NewestCheckpoint};
use super::{Durability, Settings, checkpoint, replay};
use crate::error::{Error, Result};
use crate::log::LogPosition;
use crate::metrics::{CheckpointStats, UploadStats};
use crate::mvcc::Store;
use crate::mvcc::store::INITIAL_REVISION;
use crate::object::ObjectStore;

/// How often the checkpoint loop looks at the store's revision.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);

/// What checkpoints share, under one lock: it serialises checkpoints (the loop's, those asked for
/// and the start's) with their GC.
pub(super) struct Checkpointing {
    pub(super) schedule: CheckpointSchedule,
    /// Checkpoints that keep failing (the loop's: one asked for fails to its caller).
    pub(super) health: Health,
    /// GC that fails (it runs again after the next checkpoint).
    pub(super) gc: Health,
}

/// What writing a checkpoint needs; cheap to clone into a task.
#[derive(Clone)]
pub(super) struct Checkpointer {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) local: Arc<Store>,
    pub(super) term: crate::ids::Term,
    pub(super) table_bytes: usize,
    /// The uploader's counts: WAL objects stored since a checkpoint began count towards the next.
    pub(super) stats: Arc<UploadStats>,
    /// Checkpoints written and failed, for `/metrics`.
    pub(super) checkpoints: Arc<CheckpointStats>,
    pub(super) shared: Arc<tokio::sync::Mutex<Checkpointing>>,
}

impl Durability {
    /// Writes a checkpoint now (then collects garbage); `None` if the newest one is current.
    pub fn checkpoint(&self) -> impl Future<Output = Result<Option<checkpoint::Written>>> + Send + 'static {
        let checkpointer = self.checkpointer.clone();
        let (tx, rx) = flume::bounded(1);
        self.runtime.spawn(async move {
            let _ = tx.send(checkpointer.checkpoint_and_collect().await);
        });
        async move { rx.recv_async().await.map_err(|_| Error::Closed)? }
    }
}

/// The checkpoint schedule as object storage has it: counted from its newest checkpoint (an
/// unreadable one counts as none: the next checkpoint supersedes it) and the WAL objects after it.
pub(super) async fn schedule_from_store(
    store: &Arc<dyn ObjectStore>,
    local: &Store,
    settings: &Settings,
    wal_keys: &[String],
) -> Result<CheckpointSchedule> {
    let newest = checkpoint::read_newest(store).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the newest checkpoint is unreadable; scheduling checkpoints as if there were none");
        None
    });
    let after = newest.as_ref().map_or(LogPosition::new(INITIAL_REVISION, 0), |m| LogPosition::new(m.revision, m.sub));
    let wal_objects_after = replay::needed(&replay::plan(wal_keys), after).len() as u64;
    let revision = local.current_revision()?;
    tracing::info!(
        checkpoint = %after.revision,
        revision = %revision,
        wal_objects_after,
        "checkpoints counted from the store"
    );
    let newest = newest.map(|m| NewestCheckpoint {
        revision: m.revision,
        created: SystemTime::UNIX_EPOCH + Duration::from_millis(m.created_unix_ms),
    });
    Ok(CheckpointSchedule::new(
        settings.checkpoint_interval,
        settings.checkpoint_entries,
        newest,
        revision,
        wal_objects_after,
        0,
    ))
}

impl Checkpointer {
    fn uploads(&self) -> u64 {
        self.stats.objects.load(Ordering::Relaxed)
    }

    /// Writes a checkpoint and moves the schedule on; `None` if the newest one is current. The
    /// caller holds the lock.
    pub(super) async fn checkpoint(&self, checkpointing: &mut Checkpointing) -> Result<Option<checkpoint::Written>> {
        let uploads = self.uploads();
        let revision = self.local.current_revision()?;
        let written = checkpoint::create(&self.store, &self.local, self.term, self.table_bytes).await;
        let written = match written {
            Ok(written) => written,
            Err(e) => {
                self.checkpoints.failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if let Some(written) = &written {
            self.checkpoints.written.fetch_add(1, Ordering::Relaxed);
            self.checkpoints.revision.store(written.revision.get(), Ordering::Relaxed);
        }
        let current = self.local.current_revision()?;
        match &written {
            Some(written) => checkpointing.schedule.checkpointed(written.revision, written.created, current, uploads),
            // The newest checkpoint covers `revision` already.
            None => checkpointing.schedule.checkpointed(revision, SystemTime::now(), current, uploads),
        }
        checkpointing.health.succeeded();
        Ok(written)
    }

    /// Writes a checkpoint, then collects garbage; `None` if the newest one is current.
    async fn checkpoint_and_collect(&self) -> Result<Option<checkpoint::Written>> {
        let mut checkpointing = self.shared.lock().await;
        let written = self.checkpoint(&mut checkpointing).await?;
        if written.is_some() {
            match checkpoint::collect(&self.store).await {
                Ok(_) => checkpointing.gc.succeeded(),
                Err(e) => checkpointing
                    .gc
                    .failed_for_good(&format!("GC failed: {e}; it runs again after the next checkpoint")),
            }
        }
        Ok(written)
    }
}

/// Checkpoints whenever the schedule says one is due (looked at first right away: a node that starts
/// with one due writes it soon after start), until shutdown.
pub(super) async fn checkpoint_loop(
    checkpointer: Checkpointer,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    loop {
        let due = {
            let mut checkpointing = checkpointer.shared.lock().await;
            match checkpointer.local.current_revision() {
                Ok(revision) => checkpointing.schedule.due(revision, checkpointer.uploads(), SystemTime::now()),
                Err(e) => {
                    checkpointing.health.failed(&format!("cannot read the store's revision: {e}"));
                    None
                }
            }
        };
        if let Some(due) = due {
            tracing::info!(reason = %due, "checkpoint due");
            if let Err(e) = checkpointer.checkpoint_and_collect().await {
                let mut checkpointing = checkpointer.shared.lock().await;
                checkpointing.schedule.failed(SystemTime::now());
                checkpointing.health.failed(&format!("checkpoint failed: {e}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECKPOINT_POLL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
    }
}
