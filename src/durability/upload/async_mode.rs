//! The async uploader's driver: turns committed groups, upload tasks' reports, log reads and time
//! into [`AsyncInput`]s for the [`AsyncPlan`], and does its effects (upload tasks, reads of the local
//! log on the blocking pool, the watermark, health). It decides nothing itself.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::async_plan::{AsyncEffect, AsyncInput, AsyncLimits, AsyncPlan};
use super::sync_plan::UploadId;
use super::{RETRY_DELAY_MAX, UploadError, UploaderConfig, store_object};
use crate::alarms::Alarms;
use crate::durability::health::{self, HealthSink};
use crate::ids::Revision;
use crate::log::LogRecord;
use crate::metrics::UploadStats;
use crate::mvcc::Store;
use crate::mvcc::store::LogPosition;
use crate::object::ObjectStore;
use crate::sequencer::CommittedGroup;

/// Segments' worth of records the async uploader holds in memory at most; beyond (a long outage), it
/// keeps only their positions and reads them back from the local log, which compaction keeps above
/// the watermark.
const ASYNC_BUFFER_SEGMENTS_MAX: usize = 8;
/// Reports of the upload task queued at most. A report that finds the queue full is dropped: the
/// uploader logs at most one line per interval and shows the newest error, so the reports it has
/// not read yet say enough.
const TROUBLE_REPORTS_MAX: usize = 16;
/// Longest pause between two attempts at an object whose name holds different bytes.
const CONFLICT_RETRY_DELAY_MAX: Duration = Duration::from_secs(10);
/// Longest sleep when the plan needs no tick: a bound, not a timer.
const IDLE_WAIT_MAX: Duration = Duration::from_secs(3600);

/// The upload task in flight.
struct Task {
    upload: UploadId,
    key: String,
    handle: tokio::task::JoinHandle<()>,
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
) -> Result<(), UploadError> {
    let mut plan = AsyncPlan::new(AsyncLimits {
        segment_bytes: config.segment_bytes,
        segment_age: config.segment_age,
        wait_max: config.wait_max,
        buffer_bytes_max: config.segment_bytes.saturating_mul(ASYNC_BUFFER_SEGMENTS_MAX),
        retry_pause: RETRY_DELAY_MAX,
    });
    let health = HealthSink::new(alarms.clone(), health::WAL_UPLOADS);
    let (trouble_tx, trouble) = flume::bounded::<AsyncInput>(TROUBLE_REPORTS_MAX);
    // One read at a time: the plan waits for its answer before asking again.
    let (reads_tx, reads) = flume::bounded::<crate::Result<Vec<LogRecord>>>(1);
    let mut task: Option<Task> = None;
    let mut input_open = true;
    loop {
        let wait = plan.next_deadline().map_or(IDLE_WAIT_MAX, |at| at.saturating_duration_since(Instant::now()));
        let finished = async {
            match task.as_mut() {
                Some(task) => (&mut task.handle).await,
                None => std::future::pending().await,
            }
        };
        let input = tokio::select! {
            biased;
            result = finished => {
                let Task { upload, key, .. } = task.take().expect("a task was in flight");
                match result {
                    Ok(()) => AsyncInput::Stored(upload),
                    Err(source) => AsyncInput::TaskEnded { upload, error: UploadError::TaskEnded { key, source } },
                }
            }
            report = trouble.recv_async() => report.expect("the driver holds a sender"),
            read = reads.recv_async() => match read.expect("the driver holds a sender") {
                Ok(records) => AsyncInput::LogRead(records),
                Err(e) => AsyncInput::LogReadFailed(e),
            },
            group = groups.recv_async(), if input_open => match group {
                Ok(group) => AsyncInput::Committed(group),
                Err(_) => {
                    input_open = false;
                    AsyncInput::InputClosed
                }
            },
            _ = tokio::time::sleep(wait) => AsyncInput::Tick,
        };
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for effect in plan.step(Instant::now(), input) {
                match effect {
                    AsyncEffect::StartUpload { upload, first, bytes, .. } => {
                        let key = super::wal_key(config.term, first.revision, first.sub);
                        let handle =
                            spawn_upload(store.clone(), key.clone(), bytes, stats.clone(), upload, trouble_tx.clone());
                        task = Some(Task { upload, key, handle });
                    }
                    AsyncEffect::ReadLog { from, through, bytes } => {
                        let (reader, answer) = (local.clone(), reads_tx.clone());
                        tokio::task::spawn_blocking(move || {
                            let _ = answer.send(read_log(&reader, from, through, bytes));
                        });
                    }
                    AsyncEffect::MoveWatermark(at) => inputs.push_back(move_watermark(&local, at)),
                    AsyncEffect::Failed { error, report } => health.failed(report, &error),
                    AsyncEffect::Recovered { failing_for } => health.recovered(failing_for),
                    AsyncEffect::LogGap { error } => {
                        tracing::error!("{error}");
                        alarms.set_error(health::WAL_GAP, Some(error));
                    }
                    AsyncEffect::Overflow { from } => tracing::warn!(
                        revision = %from.revision,
                        "async upload backlog over its memory bound; reading it back from the log later"
                    ),
                    AsyncEffect::Stop { gave_up } => {
                        if gave_up {
                            tracing::error!(
                                "stopping before the last WAL records reached object storage; they are uploaded at \
                                 the next start"
                            );
                        }
                        if let Some(task) = task.take() {
                            task.handle.abort();
                        }
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Records that object storage holds every record through `at`; says how that went.
fn move_watermark(local: &Store, at: LogPosition) -> AsyncInput {
    match record_watermark(local, at) {
        Ok(()) => AsyncInput::WatermarkMoved(at),
        Err(e) => AsyncInput::WatermarkFailed(e),
    }
}

fn record_watermark(local: &Store, at: LogPosition) -> crate::Result<()> {
    fail::fail_point!("upload-before-watermark", |_| Err(UploadError::Injected("upload-before-watermark").into()));
    local.set_uploaded_through(at)
}

/// Stores one async WAL object, retrying until it is stored: failures with backoff, a conflict (its
/// name holds different bytes) as long as it lasts, since an operator may remove them.
fn spawn_upload(
    store: Arc<dyn ObjectStore>,
    key: String,
    bytes: Vec<u8>,
    stats: Arc<UploadStats>,
    upload: UploadId,
    trouble: flume::Sender<AsyncInput>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conflict_delay = RETRY_DELAY_MAX;
        loop {
            let report = |error| {
                let _ = trouble.try_send(AsyncInput::AttemptFailed { upload, error });
            };
            match store_object(store.as_ref(), &key, bytes.clone(), &stats, report).await {
                Ok(()) => return,
                Err(error) => {
                    let _ = trouble.try_send(AsyncInput::Conflict { upload, error });
                    tokio::time::sleep(conflict_delay).await;
                    conflict_delay = (conflict_delay * 2).min(CONFLICT_RETRY_DELAY_MAX);
                }
            }
        }
    })
}

/// The records of the local log from `from` on (whole revisions, at least one revision's worth),
/// through revision `to` at most, about `bytes` of them. Blocking.
fn read_log(local: &Store, from: LogPosition, to: Revision, bytes: usize) -> crate::Result<Vec<LogRecord>> {
    let view = local.read_view()?;
    let (mut records, covered) = view.log_records(from.revision, to, bytes)?;
    if covered < to {
        // The byte bound cut the read after a record of `covered`: its later records come too.
        let read = records.last().map(|r| r.position());
        let (rest, _) = view.log_records(covered, covered, usize::MAX)?;
        records.extend(rest.into_iter().filter(|r| read.is_none_or(|read| r.position() > read)));
    }
    records.retain(|r| r.position() >= from);
    Ok(records)
}
