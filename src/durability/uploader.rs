//! The uploader actor: turns groups of log records into WAL objects `wal/<term>/<first-rev>`, each the
//! concatenation of the records' frames (`[len u32][crc32c u32][payload]`, the log's own encoding).
//!
//! **Sync mode** (the default with a store): the sequencer hands every evaluated group here before
//! the local commit; a group goes on to the committer, and so becomes visible and acknowledged, only
//! once the object holding it is stored. Groups that arrive while uploads are in flight (at most
//! `max_in_flight`) or during the minimum interval between uploads accumulate and leave as one
//! object, so the PUT rate stays bounded whatever the write rate. Groups leave in order, so the store
//! never holds a revision locally whose predecessors are not in object storage. If the store fails,
//! uploads are retried without end; a caller that waited `wait_max` gets a timeout (its write may
//! still be applied once the store returns, as with etcd's timeouts), and while the oldest upload has
//! been failing for `wait_max` new writes are refused at once (see [`UploadStage`]).
//!
//! **Async mode**: the uploader subscribes to committed groups like a shard does and cuts objects by
//! size or age; the upload watermark in `meta` records what is stored, and compaction keeps the log
//! records above it.
//!
//! Every object is created with `put_if_absent`: a node never overwrites an object, of its own term or
//! another's. A retry that finds its own object already there (a lost response) compares the bytes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::health::{self, Health};
use super::layout::wal_key;
use crate::alarms::Alarms;
use crate::log::LogRecord;
use crate::metrics::UploadStats;
use crate::mvcc::Store;
use crate::object::{ObjectError, ObjectStore};
use crate::sequencer::{CommittedGroup, PendingGroup, StoreHealthReporter};

/// First pause before retrying a failed upload; doubles up to [`RETRY_DELAY_MAX`].
const RETRY_DELAY_FIRST: Duration = Duration::from_millis(50);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);
/// Bytes of records one WAL object holds at most in sync mode (a bigger backlog leaves as several).
const SYNC_OBJECT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Settings of the uploader.
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// The term objects are written under.
    pub term: u64,
    /// Uploads in flight at once (sync mode).
    pub max_in_flight: usize,
    /// Least time between the starts of two uploads.
    pub min_interval: Duration,
    /// How long a write waits for object storage before its caller gets a timeout; also how long an
    /// upload may keep failing before new writes are refused.
    pub wait_max: Duration,
    /// Async mode: an object is cut when its records reach this many bytes...
    pub segment_bytes: usize,
    /// ...or when its oldest record is this old.
    pub segment_age: Duration,
}

/// The bytes of a WAL object being built, and the log positions it covers.
#[derive(Default)]
struct WalObject {
    bytes: Vec<u8>,
    first: Option<(i64, u32)>,
    last: Option<(i64, u32)>,
}

impl WalObject {
    fn push(&mut self, record: &LogRecord) {
        self.first.get_or_insert((record.revision, record.sub));
        self.last = Some((record.revision, record.sub));
        self.bytes.extend_from_slice(&record.encode());
    }

    /// The object's key under `term`, if it holds any record.
    fn key(&self, term: u64) -> Option<String> {
        self.first.map(|(revision, sub)| wal_key(term, revision, sub))
    }
}

/// Stores one object, retrying until it is stored. A retry that finds the key taken compares the
/// bytes (its own earlier attempt may have succeeded); different bytes there are a conflict with
/// another writer, returned as an error: the node must not go on writing under this term.
pub async fn store_object(
    store: &dyn ObjectStore,
    key: &str,
    bytes: Vec<u8>,
    stats: &UploadStats,
    mut on_failure: impl FnMut(&str),
) -> Result<(), String> {
    let mut delay = RETRY_DELAY_FIRST;
    let started = Instant::now();
    loop {
        let error = match store.put_if_absent(key, bytes.clone()).await {
            Ok(_) => break,
            Err(ObjectError::PreconditionFailed(_)) => match store.get(key).await {
                Ok(Some(existing)) if existing.bytes == bytes => break,
                Ok(Some(_)) => {
                    return Err(format!("{key} already holds different records: another node writes under this term"));
                }
                Ok(None) => format!("{key} was reported present but is gone"),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        stats.failures.fetch_add(1, Ordering::Relaxed);
        on_failure(&error);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_DELAY_MAX);
    }
    stats.stored(bytes.len(), started.elapsed());
    Ok(())
}

/// Sets or clears the outage (the sequencer refuses writes while it is set), and the standing error
/// `Status.errors` shows for it. Returns whether the store was healthy until now.
fn set_outage(outage: &StoreHealthReporter, alarms: &Alarms, reason: Option<String>) -> bool {
    let standing = reason.as_ref().map(|reason| format!("{reason}; writes are refused"));
    alarms.set_error(health::WAL_UPLOADS, standing);
    outage.set(reason)
}

/// The sync uploader's connections: groups in from the sequencer, out to the committer, the outage
/// flag the sequencer reads, and the node's shutdown signal (after which a store that stays down makes
/// the uploader give up within `wait_max`).
pub struct SyncChannels {
    pub input: flume::Receiver<PendingGroup>,
    pub output: flume::Sender<PendingGroup>,
    pub outage: StoreHealthReporter,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

enum Progress {
    /// An attempt of batch `id` failed (it is being retried).
    Failed(String),
    /// Batch `id` is stored.
    Stored(u64),
    /// Batch `id` conflicts with another writer's object.
    Conflict(String),
}

struct Batch {
    id: u64,
    groups: Vec<(PendingGroup, Instant)>,
    stored: bool,
    /// When its upload started.
    started: Instant,
}

/// The sync-mode uploader: takes evaluated groups from `input`, passes them to `output` in order once
/// each is in an object in `store`. Ends when `input` closes and everything is passed on, or, if the
/// store stays down, `wait_max` after `input` closed (the groups left were never acknowledged). An
/// outage, and a conflict (which refuses writes until the node restarts: another writer uses this
/// term), are standing errors in `alarms` too.
pub async fn run_sync(
    store: Arc<dyn ObjectStore>,
    config: UploaderConfig,
    channels: SyncChannels,
    stats: Arc<UploadStats>,
    alarms: Alarms,
) {
    let SyncChannels { input, output, outage, mut shutdown } = channels;
    let (progress_tx, progress) = flume::unbounded::<Progress>();
    let mut waiting: Vec<(PendingGroup, Instant)> = Vec::new();
    let mut batches: VecDeque<Batch> = VecDeque::new();
    let mut next_id = 0u64;
    let mut next_start = Instant::now();
    let mut failing_since: Option<Instant> = None;
    // The newest failed attempt's error, to say why an upload is stuck.
    let mut last_failure: Option<String> = None;
    // When the input closed or the node began to stop: from then on, a store that stays down for
    // `wait_max` makes the uploader give up.
    let mut closed_at: Option<Instant> = None;
    let mut input_closed = false;
    let mut fenced: Option<String> = None;
    loop {
        // Pass on stored batches, in order.
        while batches.front().is_some_and(|b| b.stored) {
            let batch = batches.pop_front().expect("front exists");
            for (group, _) in batch.groups {
                if output.send(group).is_err() {
                    return;
                }
            }
        }
        let now = Instant::now();
        // Start uploads.
        let in_flight = batches.iter().filter(|b| !b.stored).count();
        if fenced.is_none() && !waiting.is_empty() && in_flight < config.max_in_flight && now >= next_start {
            let mut object = WalObject::default();
            let mut take = 0;
            for (group, _) in &waiting {
                group.records().iter().for_each(|r| object.push(r));
                take += 1;
                if object.bytes.len() >= SYNC_OBJECT_BYTES_MAX {
                    break;
                }
            }
            let groups: Vec<_> = waiting.drain(..take).collect();
            let id = next_id;
            next_id += 1;
            let Some(key) = object.key(config.term) else {
                // Nothing to store (failed or read-only proposals): passes on in its turn.
                batches.push_back(Batch { id, groups, stored: true, started: now });
                continue;
            };
            let object = object.bytes;
            batches.push_back(Batch { id, groups, stored: false, started: now });
            next_start = now + config.min_interval;
            let (store, stats, progress_tx) = (store.clone(), stats.clone(), progress_tx.clone());
            tokio::spawn(async move {
                let report = progress_tx.clone();
                let result = store_object(store.as_ref(), &key, object, &stats, |e| {
                    let _ = report.send(Progress::Failed(e.to_string()));
                })
                .await;
                let _ = progress_tx.send(match result {
                    Ok(()) => Progress::Stored(id),
                    Err(conflict) => Progress::Conflict(conflict),
                });
            });
            continue;
        }
        // Callers that waited too long get a timeout (their groups stay queued).
        let overdue = |since: &Instant| now.duration_since(*since) >= config.wait_max;
        for (group, since) in waiting.iter_mut().chain(batches.iter_mut().flat_map(|b| b.groups.iter_mut())) {
            if overdue(since) {
                group.fail_replies(|| crate::Error::Timeout);
            }
        }
        // An upload failing, or hanging, for `wait_max` is an outage: refuse new writes until one succeeds.
        let stuck_since = batches.iter().filter(|b| !b.stored).map(|b| b.started).min();
        if let Some(since) = stuck_since
            && now.duration_since(since) >= config.wait_max
            && fenced.is_none()
        {
            let mut reason = format!("a WAL upload has not completed for {} s", now.duration_since(since).as_secs());
            if let Some(error) = &last_failure {
                reason.push_str(&format!(" (last error: {error})"));
            }
            if set_outage(&outage, &alarms, Some(reason.clone())) {
                tracing::error!(reason, "object store unavailable: refusing writes until uploads succeed again");
            }
        }
        if input_closed && waiting.is_empty() && batches.is_empty() {
            return;
        }
        if let Some(closed) = closed_at
            && now.duration_since(closed) >= config.wait_max
            && !(waiting.is_empty() && batches.is_empty())
        {
            let left: usize = batches.iter().map(|b| b.groups.len()).sum::<usize>() + waiting.len();
            tracing::error!(groups = left, "stopping with writes not stored in object storage (never acknowledged)");
            return;
        }
        // Wait for something to happen.
        let mut deadline = now + config.wait_max;
        if !waiting.is_empty() && fenced.is_none() {
            deadline = deadline.min(next_start.max(now));
        }
        let earliest_waiter =
            waiting.iter().chain(batches.iter().flat_map(|b| b.groups.iter())).map(|(_, since)| *since).min();
        if let Some(since) = earliest_waiter.into_iter().chain(stuck_since).min() {
            deadline = deadline.min((since + config.wait_max).max(now + Duration::from_millis(10)));
        }
        let receive = async {
            if input_closed {
                std::future::pending::<Option<PendingGroup>>().await
            } else {
                input.recv_async().await.ok()
            }
        };
        let stopping = async {
            if closed_at.is_some() {
                std::future::pending::<()>().await
            } else {
                let _ = shutdown.wait_for(|stop| *stop).await;
            }
        };
        tokio::select! {
            group = receive => match group {
                Some(group) => {
                    let arrived = Instant::now();
                    waiting.push((group, arrived));
                    while let Ok(more) = input.try_recv() {
                        waiting.push((more, arrived));
                    }
                }
                None => {
                    input_closed = true;
                    closed_at.get_or_insert_with(Instant::now);
                }
            },
            _ = stopping => {
                closed_at.get_or_insert_with(Instant::now);
            }
            event = progress.recv_async() => match event {
                Ok(Progress::Failed(reason)) => {
                    if failing_since.is_none() {
                        tracing::warn!(error = %reason, "WAL upload failed; retrying");
                        failing_since = Some(Instant::now());
                    }
                    last_failure = Some(reason);
                }
                Ok(Progress::Stored(id)) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(failing_ms = since.elapsed().as_millis() as u64, "WAL uploads succeed again");
                    }
                    last_failure = None;
                    if fenced.is_none() && outage.failing() {
                        tracing::info!("object store reachable again: taking writes");
                        set_outage(&outage, &alarms, None);
                    }
                    if let Some(batch) = batches.iter_mut().find(|b| b.id == id) {
                        batch.stored = true;
                    }
                }
                Ok(Progress::Conflict(reason)) => {
                    tracing::error!(error = %reason, "WAL upload conflict: refusing all writes until the node restarts");
                    set_outage(&outage, &alarms, Some(format!("{reason} (until the node restarts)")));
                    fenced = Some(reason);
                }
                Err(_) => unreachable!("the uploader holds a progress sender"),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// Segments' worth of records the async uploader holds in memory at most; beyond (a long outage), it
/// keeps only their positions and reads them back from the local log, which compaction keeps above
/// the watermark.
const ASYNC_BUFFER_SEGMENTS_MAX: usize = 8;

/// The records of the local log from `from` on (whole revisions, at least one revision's worth),
/// through revision `to` at most, about `bytes` of them. Blocking.
fn read_log(local: &Store, from: (i64, u32), to: i64, bytes: usize) -> crate::Result<Vec<LogRecord>> {
    let view = local.read_view()?;
    let (mut records, covered) = view.log_records(from.0, to, bytes)?;
    if covered < to {
        // The byte bound cut the read after a record of `covered`: its later records come too.
        let read = records.last().map(|r| (r.revision, r.sub));
        let (rest, _) = view.log_records(covered, covered, usize::MAX)?;
        records.extend(rest.into_iter().filter(|r| read.is_none_or(|read| (r.revision, r.sub) > read)));
    }
    records.retain(|r| (r.revision, r.sub) >= from);
    Ok(records)
}

/// An async upload in flight.
struct InFlight {
    /// Tells reports of this upload from those of an earlier one still queued.
    id: u64,
    task: tokio::task::JoinHandle<()>,
    /// The positions of the object's first and last records.
    first: (i64, u32),
    last: (i64, u32),
    started: Instant,
}

/// What an async upload task reports while it retries. Its mailbox is bounded and a report that finds
/// it full is dropped: the uploader logs at most one line per interval and shows the newest error,
/// so the reports it has not read yet say enough.
enum Trouble {
    /// An attempt of upload `id` failed; it is retried.
    Failed(u64, String),
    /// Upload `id`'s object name holds different bytes; it is retried, less often, in case they go.
    Conflict(u64, String),
}

const TROUBLE_REPORTS_MAX: usize = 16;
/// Longest pause between two attempts at an object whose name holds different bytes.
const CONFLICT_RETRY_DELAY_MAX: Duration = Duration::from_secs(10);

/// Stores one async WAL object, retrying until it is stored: failures with backoff, a conflict (its
/// name holds different bytes) as long as it lasts, since an operator may remove them.
fn spawn_async_upload(
    store: Arc<dyn ObjectStore>,
    key: String,
    bytes: Vec<u8>,
    stats: Arc<UploadStats>,
    id: u64,
    trouble: flume::Sender<Trouble>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conflict_delay = RETRY_DELAY_MAX;
        loop {
            let report = |e: &str| {
                let _ = trouble.try_send(Trouble::Failed(id, format!("async WAL upload of {key} failed: {e}")));
            };
            match store_object(store.as_ref(), &key, bytes.clone(), &stats, report).await {
                Ok(()) => return,
                Err(conflict) => {
                    let _ = trouble.try_send(Trouble::Conflict(id, conflict));
                    tokio::time::sleep(conflict_delay).await;
                    conflict_delay = (conflict_delay * 2).min(CONFLICT_RETRY_DELAY_MAX);
                }
            }
        }
    })
}

/// The async-mode uploader: stores committed groups from `groups` as WAL objects cut by size or age,
/// moving the upload watermark in `local` after each. It never holds the committer back: it takes
/// groups while an upload is in flight, and through a long outage keeps only positions, reading the
/// records back from the local log once the store is back. Ends when `groups` closes, after storing
/// what it holds (giving up `wait_max` later if the store is down: those records stay in the local
/// log and are uploaded at the next start), and never before: whatever fails is retried.
///
/// Writes are acknowledged whether or not their upload succeeds, so trouble is reported in `alarms`
/// (`Status.errors`): an upload failing or unfinished for `wait_max`, or at once a conflict (the
/// object's name holds different bytes, which only another writer under this term can have put
/// there; retried, so removing them lets uploads go on).
pub async fn run_async(
    store: Arc<dyn ObjectStore>,
    local: Arc<Store>,
    config: UploaderConfig,
    groups: flume::Receiver<Arc<CommittedGroup>>,
    stats: Arc<UploadStats>,
    alarms: Alarms,
) {
    let mut health = Health::new(alarms.clone(), health::WAL_UPLOADS, config.wait_max);
    let (trouble_tx, trouble) = flume::bounded(TROUBLE_REPORTS_MAX);
    let mut object = WalObject::default();
    let mut oldest: Option<Instant> = None;
    // The first position received but not buffered (records from there come from the local log).
    let mut overflow_from: Option<(i64, u32)> = None;
    let mut latest: Option<(i64, u32)> = None;
    let mut upload: Option<InFlight> = None;
    let mut next_id = 0u64;
    let mut closed_at: Option<Instant> = None;
    // Records read back from the log leave at once.
    let mut from_log = false;
    // After a failure that retrying at once would repeat (reading the log, a failed upload task): no
    // new upload before this time.
    let mut retry_at: Option<Instant> = None;
    // Whether records were lost from the local log before they were uploaded. The watermark then
    // stays below them, so the next start finds the log short of what the store lacks and writes a
    // checkpoint.
    let mut log_gap = false;
    let buffer_max = config.segment_bytes.saturating_mul(ASYNC_BUFFER_SEGMENTS_MAX);
    loop {
        // Start the next upload: the buffer when due, else records read back from the log.
        if upload.is_none() && retry_at.is_none_or(|at| Instant::now() >= at) {
            retry_at = None;
            if object.first.is_none()
                && let (Some(from), Some(to)) = (overflow_from, latest)
            {
                let reader = local.clone();
                let bytes = config.segment_bytes;
                let read = tokio::task::spawn_blocking(move || read_log(&reader, from, to.0, bytes)).await;
                match read.map_err(|e| crate::Error::Runtime(e.to_string())).and_then(|r| r) {
                    Ok(records) => {
                        overflow_from = match records.last() {
                            Some(last) if (last.revision, last.sub) < to => Some((last.revision, last.sub + 1)),
                            Some(_) => None,
                            None => {
                                let error = format!(
                                    "records from {from:?} are gone from the local log before they were uploaded: \
                                     a restore from object storage stops before them until a checkpoint covers \
                                     them; restart the node to write one"
                                );
                                tracing::error!("{error}");
                                alarms.set_error(health::WAL_GAP, Some(error));
                                log_gap = true;
                                None
                            }
                        };
                        records.iter().for_each(|r| object.push(r));
                        from_log = true;
                    }
                    Err(e) => {
                        health.failed(&format!("cannot read the local log for upload: {e}"));
                        retry_at = Some(Instant::now() + RETRY_DELAY_MAX);
                    }
                }
            }
            let due = oldest.is_some_and(|t| t.elapsed() >= config.segment_age)
                || object.bytes.len() >= config.segment_bytes
                || overflow_from.is_some()
                || from_log
                || closed_at.is_some();
            if let Some(key) = object.key(config.term)
                && due
            {
                let WalObject { bytes, first, last } = std::mem::take(&mut object);
                let (first, last) =
                    (first.expect("an object with a key has a first record"), last.expect("and a last"));
                oldest = None;
                from_log = false;
                let id = next_id;
                next_id += 1;
                let task = spawn_async_upload(store.clone(), key, bytes, stats.clone(), id, trouble_tx.clone());
                upload = Some(InFlight { id, task, first, last, started: Instant::now() });
            }
        }
        if let Some(closed) = closed_at {
            if upload.is_none() && object.first.is_none() && overflow_from.is_none() {
                return;
            }
            if closed.elapsed() >= config.wait_max {
                tracing::error!(
                    "stopping before the last WAL records reached object storage; they are uploaded at the next start"
                );
                if let Some(upload) = upload {
                    upload.task.abort();
                }
                return;
            }
        }
        let mut deadline = match (oldest, closed_at) {
            (_, Some(closed)) => closed + config.wait_max,
            (Some(t), None) => t + config.segment_age,
            (None, None) => Instant::now() + Duration::from_secs(3600),
        };
        deadline = deadline.min(retry_at.unwrap_or(deadline));
        if let Some(upload) = upload.as_ref().filter(|_| !health.standing()) {
            deadline = deadline.min(upload.started + config.wait_max);
        }
        let finished = async {
            match upload.as_mut() {
                Some(upload) => (&mut upload.task).await,
                None => std::future::pending().await,
            }
        };
        let receive =
            async { if closed_at.is_some() { std::future::pending().await } else { groups.recv_async().await.ok() } };
        tokio::select! {
            result = finished => {
                let InFlight { first, last, .. } = upload.take().expect("an upload was in flight");
                match result {
                    Ok(()) => {
                        health.succeeded();
                        if !log_gap
                            && let Err(e) = local.set_uploaded_through(last)
                        {
                            health.failed(&format!("cannot record the upload watermark: {e}"));
                        }
                    }
                    Err(e) => {
                        // Its records are read back from the local log (compaction keeps them: the
                        // watermark is below them), after a pause in case it fails the same way.
                        health.failed_for_good(&format!("the WAL upload task failed ({e}); retrying from the local log"));
                        object = WalObject::default();
                        oldest = None;
                        overflow_from = Some(first);
                        retry_at = Some(Instant::now() + RETRY_DELAY_MAX);
                    }
                }
            }
            report = trouble.recv_async() => {
                let current = upload.as_ref().map(|u| (u.id, u.first));
                match report.expect("the uploader holds a sender") {
                    Trouble::Failed(id, error) if current.is_some_and(|(current, _)| current == id) => {
                        health.failed(&error);
                    }
                    Trouble::Conflict(id, error) if current.is_some_and(|(current, _)| current == id) => {
                        let first = current.map_or(0, |(_, first)| first.0);
                        health.failed_for_good(&format!(
                            "WAL upload conflict: {error}; writes from revision {first} on are acknowledged but not \
                             in object storage; retrying"
                        ));
                    }
                    _ => {} // about an upload that has finished since
                }
            }
            group = receive => match group {
                Some(group) => {
                    for record in &group.records {
                        let at = (record.revision, record.sub);
                        latest = Some(at);
                        if overflow_from.is_some() {
                            continue;
                        }
                        if object.bytes.len() >= buffer_max {
                            tracing::warn!("async upload backlog over its memory bound; reading it back from the log later");
                            overflow_from = Some(at);
                            continue;
                        }
                        oldest.get_or_insert_with(Instant::now);
                        object.push(record);
                    }
                }
                None => closed_at = Some(Instant::now()),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                if let Some(upload) = upload.as_ref().filter(|u| u.started.elapsed() >= config.wait_max)
                    && !health.standing()
                {
                    health.failed_for_good(&format!(
                        "a WAL upload has not completed for {} s; writes are acknowledged but not in object storage",
                        upload.started.elapsed().as_secs()
                    ));
                }
            }
        }
    }
}
