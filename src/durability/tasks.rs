//! The node's durability tasks on their runtime: started once the store is up to date (the
//! uploader of the mode, the checkpoint loop), supervised, and awaited at close. Invariant: a task
//! that ends while the node runs is fatal: the supervisor stops the node with its error.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Durability;
use super::checkpointer::checkpoint_loop;
use super::upload::{self, UploadError, UploaderConfig};
use crate::actor::Supervisor;
use crate::error::Error;
use crate::sequencer::{CommittedGroup, SUBSCRIBER_GROUPS_MAX, UploadStage};

/// The durability tasks, as the supervisor names them.
const SYNC_UPLOADER: &str = "the WAL uploader (sync)";
const ASYNC_UPLOADER: &str = "the WAL uploader (async)";
const CHECKPOINT_LOOP: &str = "the checkpoint loop";

/// Whether the node began to stop (its shutdown signal was sent, or its sender is gone).
fn node_stopping(shutdown: &tokio::sync::watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

impl Durability {
    /// Starts the uploader (and the checkpoint loop). In sync mode returns the stage the sequencer
    /// hands groups to; in async mode, the subscription the committer sends committed groups to. A
    /// task that ends while the node runs is a fatal error, reported to `supervisor`.
    pub fn start(
        &mut self,
        shutdown: tokio::sync::watch::Receiver<bool>,
        supervisor: &Supervisor,
    ) -> (Option<UploadStage>, Option<flume::Sender<Arc<CommittedGroup>>>) {
        let config = UploaderConfig {
            term: self.term,
            max_in_flight: self.settings.max_in_flight,
            min_interval: self.settings.min_interval,
            wait_max: self.settings.wait_max,
            segment_bytes: self.settings.segment_bytes,
            segment_age: self.settings.segment_age,
        };
        let (stage, subscription) = if self.settings.sync_upload {
            // Groups in and out of the uploader: the sequencer has at most `--groups-in-flight-max`
            // groups out at once, so neither channel holds more.
            let (to_uploader, input) = flume::unbounded();
            let (output, from_uploader) = flume::unbounded();
            let (outage, health) = crate::sequencer::store_health();
            let task = upload::run_sync(
                self.store.clone(),
                config,
                upload::SyncChannels { input, output, outage, shutdown: shutdown.clone() },
                self.stats.clone(),
                self.alarms.clone(),
            );
            self.spawn_watched(SYNC_UPLOADER, task, &shutdown, supervisor);
            (Some(UploadStage { to_uploader, from_uploader, health }), None)
        } else {
            let (tx, groups) = flume::bounded(SUBSCRIBER_GROUPS_MAX);
            let task = upload::run_async(
                self.store.clone(),
                self.local.clone(),
                config,
                groups,
                self.stats.clone(),
                self.alarms.clone(),
            );
            self.spawn_watched(ASYNC_UPLOADER, task, &shutdown, supervisor);
            (None, Some(tx))
        };
        if self.settings.checkpoint_interval.is_some() || self.settings.checkpoint_entries.is_some() {
            let task = checkpoint_loop(self.checkpointer.clone(), shutdown.clone());
            self.spawn_watched(CHECKPOINT_LOOP, task, &shutdown, supervisor);
        }
        (stage, subscription)
    }

    /// Spawns a background task of the node. One that ends while the node runs (it failed, panicked,
    /// or returned before the node began to stop) no longer does its work while the node goes on
    /// serving: the supervisor stops the node with its error.
    fn spawn_watched<E: Into<Error> + Send + 'static>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = std::result::Result<(), E>> + Send + 'static,
        shutdown: &tokio::sync::watch::Receiver<bool>,
        supervisor: &Supervisor,
    ) {
        let (supervisor, shutdown) = (supervisor.clone(), shutdown.clone());
        let task = self.runtime.spawn(task);
        self.tasks.push(self.runtime.spawn(async move {
            let error = match task.await {
                Ok(Ok(())) if node_stopping(&shutdown) => return,
                Ok(Ok(())) => UploadError::EndedEarly.into(),
                Ok(Err(e)) => e.into(),
                Err(e) => UploadError::Panicked(e).into(),
            };
            supervisor.fail(name, error);
        }));
    }

    /// Waits for the background tasks (they end once the sequencer and subscriptions are gone, or
    /// the shutdown signal is seen), then stops the runtime.
    pub fn close(self) {
        let Durability { runtime, tasks, stats, started, .. } = self;
        runtime.block_on(async {
            for task in tasks {
                let _ = task.await;
            }
        });
        let objects = stats.objects.load(Ordering::Relaxed);
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            wal_objects = objects,
            wal_bytes = stats.bytes.load(Ordering::Relaxed),
            failed_attempts = stats.failures.load(Ordering::Relaxed),
            puts_per_second = format!("{:.1}", objects as f64 / seconds),
            "WAL uploads"
        );
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
