//! Durability in object storage. Pure parts: the names of objects and the JSON documents that index
//! them (`layout`), the content-defined table objects a checkpoint is cut into (`table`), when a
//! checkpoint is due (`schedule`) and how loudly a failure is reported (`health`). Actors and
//! procedures: the uploader (`upload`), WAL replay (`replay`), checkpoints, restore and GC
//! (`checkpoint`), all driven by [`Durability`] on one small tokio runtime of their own (the object
//! store's calls are async; the S3 client needs tokio).
//!
//! Invariants: every object name that can go stale (WAL objects, checkpoints) carries its term, and a
//! node starts a new term at each start, so it never overwrites an object; table objects are named by
//! the hash of their bytes, so equal content is stored once and a reader can check what it fetched
//! against the name it asked for.

pub mod checkpoint;
mod health;
pub mod layout;
mod progress;
pub mod replay;
mod schedule;
pub mod snapshot;
pub mod table;
pub mod upload;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use health::Health;
use layout::{CHECKPOINT_PREFIX, WAL_PREFIX, parse_checkpoint_key, parse_wal_key};
use schedule::{CheckpointSchedule, NewestCheckpoint};
use upload::{UploadError, UploaderConfig};

use crate::actor::Supervisor;
use crate::alarms::Alarms;
use crate::config::ObjectStoreArgs;
use crate::error::{Error, Result};
use crate::log::LogRecord;
use crate::metrics::{CheckpointStats, Metrics, UploadStats};
use crate::mvcc::Store;
use crate::mvcc::store::{INITIAL_REVISION, LogPosition, ReadView};
use crate::object::{DirStore, ObjectStore, S3Config, S3Credentials, S3Store};
use crate::sequencer::{CommittedGroup, SUBSCRIBER_GROUPS_MAX, UploadStage};

/// The durability tasks, as the supervisor names them.
const SYNC_UPLOADER: &str = "the WAL uploader (sync)";
const ASYNC_UPLOADER: &str = "the WAL uploader (async)";
const CHECKPOINT_LOOP: &str = "the checkpoint loop";

/// Whether the node began to stop (its shutdown signal was sent, or its sender is gone).
fn node_stopping(shutdown: &tokio::sync::watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Threads of the durability runtime (uploads and downloads are I/O bound).
const RUNTIME_THREADS: usize = 2;
/// Bytes of local log records per WAL object when a start uploads what the store lacks.
const TAIL_OBJECT_BYTES: usize = 8 * 1024 * 1024;
/// How often the checkpoint loop looks at the store's revision.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);

/// How the node uses its object store.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sync_upload: bool,
    pub max_in_flight: usize,
    pub min_interval: Duration,
    pub wait_max: Duration,
    pub segment_bytes: usize,
    pub segment_age: Duration,
    /// Checkpoint when the oldest write the newest checkpoint lacks is this old.
    pub checkpoint_interval: Option<Duration>,
    /// Checkpoint when this many revisions, or WAL objects, are newer than the newest checkpoint.
    pub checkpoint_entries: Option<u64>,
    /// Expected size of a checkpoint table object.
    pub table_bytes: usize,
}

impl Settings {
    pub fn from_args(args: &ObjectStoreArgs) -> Settings {
        Settings {
            sync_upload: args.wal_sync_upload,
            max_in_flight: args.wal_upload_max_in_flight.max(1),
            min_interval: Duration::from_millis(args.wal_upload_interval_ms),
            wait_max: Duration::from_millis(args.wal_upload_timeout_ms.max(1)),
            segment_bytes: args.wal_segment_bytes.max(1),
            segment_age: Duration::from_millis(args.wal_segment_age_ms.max(1)),
            checkpoint_interval: (args.checkpoint_interval > 0)
                .then(|| Duration::from_secs(args.checkpoint_interval.saturating_mul(60))),
            checkpoint_entries: (args.checkpoint_entries > 0).then_some(args.checkpoint_entries),
            table_bytes: args.checkpoint_table_bytes.max(1024),
        }
    }
}

/// The object store the arguments name, if any: a local folder, or S3 (credentials from the
/// environment or a profile, never a default chain).
pub fn open_object_store(args: &ObjectStoreArgs) -> Result<Option<Arc<dyn ObjectStore>>> {
    if let Some(dir) = &args.object_store_dir {
        let store = DirStore::open(dir).map_err(|e| Error::Storage(format!("object store dir: {e}")))?;
        return Ok(Some(Arc::new(store)));
    }
    // An empty value (`T4_S3_BUCKET=` in an environment file) is unset.
    let Some(bucket) = args.s3_bucket.as_ref().filter(|b| !b.is_empty()) else { return Ok(None) };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let keys = (env("T4_S3_ACCESS_KEY_ID"), env("T4_S3_SECRET_ACCESS_KEY"));
    // An empty profile (`T4_S3_PROFILE=` in an environment file) is unset, as empty keys are.
    let profile = args.s3_profile.as_ref().filter(|p| !p.is_empty());
    let credentials = match (profile, keys) {
        (Some(_), (Some(_), _) | (_, Some(_))) => {
            return Err(Error::Runtime(
                "S3 credentials: both --s3-profile and T4_S3_ACCESS_KEY_ID/T4_S3_SECRET_ACCESS_KEY are set; choose one"
                    .into(),
            ));
        }
        (Some(profile), _) => S3Credentials::Profile(profile.clone()),
        (None, (Some(access_key_id), Some(secret_access_key))) => {
            S3Credentials::Static { access_key_id, secret_access_key }
        }
        (None, (Some(_), None) | (None, Some(_))) => {
            return Err(Error::Runtime(
                "S3 credentials: set both T4_S3_ACCESS_KEY_ID and T4_S3_SECRET_ACCESS_KEY".into(),
            ));
        }
        (None, (None, None)) => {
            return Err(Error::Runtime(
                "S3 credentials missing: set T4_S3_ACCESS_KEY_ID and T4_S3_SECRET_ACCESS_KEY, or --s3-profile \
                 (T4 never falls back to anonymous or default-chain credentials)"
                    .into(),
            ));
        }
    };
    let mut config = S3Config::new(bucket.clone(), credentials);
    config.prefix = args.s3_prefix.clone();
    config.endpoint = args.s3_endpoint.clone().filter(|e| !e.is_empty());
    config.region = args.s3_region.clone();
    let store = S3Store::open(config).map_err(|e| Error::Storage(format!("S3 store: {e}")))?;
    Ok(Some(Arc::new(store)))
}

/// Object-storage durability of one node: its runtime, store, term and background tasks.
pub struct Durability {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    local: Arc<Store>,
    settings: Settings,
    term: u64,
    stats: Arc<UploadStats>,
    checkpointer: Checkpointer,
    /// Where failing uploads, checkpoints and GC are reported (`Status.errors`).
    alarms: Alarms,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

/// What checkpoints share, under one lock: it serialises checkpoints (the loop's, those asked for
/// and the start's) with their GC.
struct Checkpointing {
    schedule: CheckpointSchedule,
    /// Checkpoints that keep failing (the loop's: one asked for fails to its caller).
    health: Health,
    /// GC that fails (it runs again after the next checkpoint).
    gc: Health,
}

/// What writing a checkpoint needs; cheap to clone into a task.
#[derive(Clone)]
struct Checkpointer {
    store: Arc<dyn ObjectStore>,
    local: Arc<Store>,
    term: u64,
    table_bytes: usize,
    /// The uploader's counts: WAL objects stored since a checkpoint began count towards the next.
    stats: Arc<UploadStats>,
    /// Checkpoints written and failed, for `/metrics`.
    checkpoints: Arc<CheckpointStats>,
    shared: Arc<tokio::sync::Mutex<Checkpointing>>,
}

/// The local store's log position: its revision, and the sub of the last record at that revision.
fn local_position(local: &Store) -> Result<LogPosition> {
    let current = local.current_revision()?;
    Ok(match local.last_log_position()? {
        Some((revision, sub)) if revision == current => (current, sub),
        _ => (current, 0),
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
            .map_err(|e| Error::Runtime(format!("durability runtime: {e}")))?;
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
    ) -> Result<(u64, Vec<String>)> {
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
                && local_position(local)?.0 < latest.revision
            {
                let position = local_position(local)?;
                if local.uploaded_through()? != Some(position) {
                    return Err(Error::DataDir {
                        path: data_dir.to_path_buf(),
                        reason: format!(
                            "it is behind the newest checkpoint (revision {} < {}) and holds writes object storage lacks; \
                             move it away to restore from object storage",
                            position.0, latest.revision
                        ),
                    });
                }
                tracing::warn!(
                    local = position.0,
                    checkpoint = latest.revision,
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
                revision = local_position(local)?.0,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "restored from object storage"
            );
        }
        // A new term: higher than any this node or the store has seen.
        let mut highest = local.identity().term;
        let wal_keys = store.list(WAL_PREFIX, None).await.map_err(|e| Error::Storage(format!("listing WAL: {e}")))?;
        for key in &wal_keys {
            highest = highest.max(parse_wal_key(key).map_or(0, |k| k.term));
        }
        for key in store
            .list(CHECKPOINT_PREFIX, None)
            .await
            .map_err(|e| Error::Storage(format!("listing checkpoints: {e}")))?
        {
            highest = highest.max(parse_checkpoint_key(&key).map_or(0, |k| k.term));
        }
        let term = highest + 1;
        local.set_term(term)?;
        Ok((term, wal_keys))
    }

    /// Uploads the local records object storage lacks (a crash in async mode, or a data dir that
    /// ran without a store), or, if the log no longer holds them all, writes a checkpoint.
    async fn upload_tail(&self) -> Result<()> {
        let local = &self.local;
        let position = local_position(local)?;
        let uploaded = local.uploaded_through()?.unwrap_or((INITIAL_REVISION, 0));
        if uploaded >= position {
            return Ok(());
        }
        let view = local.read_view()?;
        // Uploads as it reads, one WAL object per TAIL_OBJECT_BYTES of records. Compaction removes
        // log records only from the log's start, so a missing record shows before anything is
        // uploaded; wherever one shows, what was uploaded is contiguous and a checkpoint covers the rest.
        let mut reader = TailReader::new(&view, uploaded, position.0);
        let (mut last, mut first, mut bytes, mut records) = (uploaded, None, Vec::new(), 0usize);
        'read: while let Some(batch) = reader.next_batch()? {
            for record in batch {
                let at = (record.revision, record.sub);
                if !replay::successors(last).contains(&at) {
                    break 'read;
                }
                let start = *first.get_or_insert(at);
                bytes.extend_from_slice(&record.encode());
                if bytes.len() >= TAIL_OBJECT_BYTES {
                    first = None;
                    self.upload_tail_object(start, at, std::mem::take(&mut bytes)).await?;
                }
                last = at;
                records += 1;
            }
        }
        if last != position {
            tracing::info!(
                uploaded_revision = uploaded.0,
                local_revision = position.0,
                "the local log does not hold every record object storage lacks; writing a checkpoint"
            );
            let mut checkpointing = self.checkpointer.shared.lock().await;
            self.checkpointer.checkpoint(&mut checkpointing).await?;
            local.set_uploaded_through(position)?;
            return Ok(());
        }
        if let Some(first) = first {
            self.upload_tail_object(first, position, bytes).await?;
        }
        tracing::info!(records, "uploaded the local records object storage lacked");
        Ok(())
    }

    /// Stores the encoded records from `first` through `last` as one WAL object of this term.
    async fn upload_tail_object(&self, first: LogPosition, last: LogPosition, bytes: Vec<u8>) -> Result<()> {
        let key = layout::wal_key(self.term, first.0, first.1);
        upload::store_object(self.store.as_ref(), &key, bytes, &self.stats, |e| {
            tracing::warn!(error = %e, key, "WAL upload failed; retrying");
        })
        .await?;
        self.local.set_uploaded_through(last)
    }

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

    /// Writes a checkpoint now (then collects garbage); `None` if the newest one is current.
    pub fn checkpoint(&self) -> impl Future<Output = Result<Option<checkpoint::Written>>> + Send + 'static {
        let checkpointer = self.checkpointer.clone();
        let (tx, rx) = flume::bounded(1);
        self.runtime.spawn(async move {
            let _ = tx.send(checkpointer.checkpoint_and_collect().await);
        });
        async move { rx.recv_async().await.map_err(|_| Error::Closed)? }
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

/// The checkpoint schedule as object storage has it: counted from its newest checkpoint (an
/// unreadable one counts as none: the next checkpoint supersedes it) and the WAL objects after it.
async fn schedule_from_store(
    store: &Arc<dyn ObjectStore>,
    local: &Store,
    settings: &Settings,
    wal_keys: &[String],
) -> Result<CheckpointSchedule> {
    let newest = checkpoint::read_newest(store).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the newest checkpoint is unreadable; scheduling checkpoints as if there were none");
        None
    });
    let after = newest.as_ref().map_or((INITIAL_REVISION, 0), |m| (m.revision, m.sub));
    let wal_objects_after = replay::needed(&replay::plan(wal_keys), after).len() as u64;
    let revision = local.current_revision()?;
    tracing::info!(checkpoint = after.0, revision, wal_objects_after, "checkpoints counted from the store");
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
    async fn checkpoint(&self, checkpointing: &mut Checkpointing) -> Result<Option<checkpoint::Written>> {
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
            self.checkpoints.revision.store(written.revision, Ordering::Relaxed);
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
async fn checkpoint_loop(checkpointer: Checkpointer, mut shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
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

/// Reads the local log records after a position through a revision, in order, about
/// `TAIL_OBJECT_BYTES` at a time.
struct TailReader<'a> {
    view: &'a ReadView,
    /// The last record returned (or the position reading starts after).
    read: LogPosition,
    /// The next revision to read from.
    from: i64,
    through: i64,
    done: bool,
}

impl<'a> TailReader<'a> {
    fn new(view: &'a ReadView, after: LogPosition, through: i64) -> TailReader<'a> {
        TailReader { view, read: after, from: after.0, through, done: false }
    }

    /// The next records, or `None` once every record through `through` was returned.
    fn next_batch(&mut self) -> Result<Option<Vec<LogRecord>>> {
        if self.done {
            return Ok(None);
        }
        let (batch, covered) = self.view.log_records(self.from, self.through, TAIL_OBJECT_BYTES)?;
        let read = self.read;
        let mut records: Vec<LogRecord> = batch.into_iter().filter(|r| (r.revision, r.sub) > read).collect();
        if covered >= self.through {
            self.done = true;
        } else {
            // The byte bound cut the read after a record of revision `covered`: the lease-only and
            // compaction records after it at that revision come before the next revision's.
            let read = records.last().map_or(read, |r| (r.revision, r.sub));
            let (rest, _) = self.view.log_records(covered, covered, usize::MAX)?;
            records.extend(rest.into_iter().filter(|r| (r.revision, r.sub) > read));
            self.from = covered + 1;
        }
        if let Some(last) = records.last() {
            self.read = (last.revision, last.sub);
        }
        Ok(Some(records))
    }
}
