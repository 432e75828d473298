//! The async uploader's decisions as a plain state machine: committed records arrive, an upload is
//! stored, fails, conflicts or its task ends, the local log is read back, time passes; out come the
//! upload to start, the log read to make, the watermark to move, health to report, and the end. No
//! I/O and no clock: `now` is an input. The driver (`async_mode.rs`) does what the effects say.
//!
//! Invariants (checked after every step by the seeded tests below): one upload at a time, of records
//! following the previous one's; the watermark only moves forward, to the last record of a stored
//! upload, and never after records were lost from the log; the records held in memory stay under
//! `buffer_bytes_max` (beyond it only positions are kept and the records are read back from the log);
//! after the input closes, the plan stops once everything is stored, or gives up `wait_max` later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sync_plan::UploadId;
use super::{UploadError, WalObject};
use crate::durability::health::{FailureReport, FailureState};
use crate::durability::replay::successors;
use crate::ids::Revision;
use crate::log::LogRecord;
use crate::mvcc::store::LogPosition;
use crate::sequencer::CommittedGroup;

/// The async uploader's limits.
#[derive(Debug, Clone, Copy)]
pub struct AsyncLimits {
    /// An object is cut when its records reach this many bytes...
    pub segment_bytes: usize,
    /// ...or when its oldest record is this old.
    pub segment_age: Duration,
    /// How long an upload may fail or hang before it is a standing error; how long a stopping
    /// uploader keeps trying.
    pub wait_max: Duration,
    /// Bytes of records held in memory at most (then one record more).
    pub buffer_bytes_max: usize,
    /// Pause before trying again after a failure that retrying at once would repeat (a log read, an
    /// upload task that ended).
    pub retry_pause: Duration,
}

/// What happened.
#[derive(Debug)]
pub enum AsyncInput {
    /// A committed group (its records in commit order).
    Committed(Arc<CommittedGroup>),
    /// An attempt of an upload failed; its task retries it.
    AttemptFailed { upload: UploadId, error: UploadError },
    /// An upload's name holds another writer's bytes; its task retries, less often.
    Conflict { upload: UploadId, error: UploadError },
    /// An upload's object is stored.
    Stored(UploadId),
    /// An upload's task ended without storing its object (it panicked or was cancelled).
    TaskEnded { upload: UploadId, error: UploadError },
    /// The records [`AsyncEffect::ReadLog`] asked for (none: they are gone from the log).
    LogRead(Vec<LogRecord>),
    /// The log read failed.
    LogReadFailed(crate::Error),
    /// The watermark was recorded.
    WatermarkMoved(LogPosition),
    /// Recording the watermark failed.
    WatermarkFailed(crate::Error),
    /// Time passed.
    Tick,
    /// The committer is gone: no record will arrive any more.
    InputClosed,
}

/// What the driver is to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum AsyncEffect {
    /// Store `bytes`, the records from `first` through `last`, as one object.
    StartUpload { upload: UploadId, first: LogPosition, last: LogPosition, bytes: Vec<u8> },
    /// Read the local log from `from` through revision `through`, about `bytes` of it; answer with
    /// [`AsyncInput::LogRead`] or [`AsyncInput::LogReadFailed`].
    ReadLog { from: LogPosition, through: Revision, bytes: usize },
    /// Record that object storage holds every record through this position; answer with
    /// [`AsyncInput::WatermarkMoved`] or [`AsyncInput::WatermarkFailed`].
    MoveWatermark(LogPosition),
    /// A failure, judged: log it and set the standing error as `report` says.
    Failed { error: String, report: FailureReport },
    /// Uploads succeed again after a standing failure of this long: clear the standing error.
    Recovered { failing_for: Duration },
    /// Records from a position are gone from the local log before they were uploaded.
    LogGap { error: String },
    /// More records arrived than memory holds: from `from` on they are read back from the log.
    Overflow { from: LogPosition },
    /// The uploader's work is over; `gave_up`: with records not stored (the next start uploads them).
    Stop { gave_up: bool },
}

/// Where records held back (received, not kept in memory) begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldBack {
    /// At this record.
    At(LogPosition),
    /// Right after this record (read back already).
    After(LogPosition),
}

impl HeldBack {
    /// The position a log read starts from.
    fn read_from(self) -> LogPosition {
        match self {
            HeldBack::At(at) => at,
            HeldBack::After(position) => position.next_sub(),
        }
    }

    /// Whether the record at `at` is the first one held back.
    fn starts_at(self, at: LogPosition) -> bool {
        match self {
            HeldBack::At(first) => at == first,
            HeldBack::After(before) => successors(before).contains(&at),
        }
    }
}

/// The upload in flight.
#[derive(Debug)]
struct InFlight {
    id: UploadId,
    first: LogPosition,
    last: LogPosition,
    started: Instant,
}

/// The async uploader's state.
#[derive(Debug)]
pub struct AsyncPlan {
    limits: AsyncLimits,
    /// Records held in memory, the next object's.
    buffer: WalObject,
    /// When the buffer's oldest record arrived.
    oldest: Option<Instant>,
    /// Where the records received but not held in memory begin: they come from the local log.
    held_back: Option<HeldBack>,
    /// The newest position received.
    latest: Option<LogPosition>,
    upload: Option<InFlight>,
    next_upload: u64,
    /// A log read is under way.
    reading: bool,
    /// The buffer holds records read back from the log: they leave at once.
    from_log: bool,
    /// No new upload or log read before this (after a failure retrying at once would repeat).
    retry_at: Option<Instant>,
    /// Records were lost from the local log before they were uploaded. The watermark then stays
    /// below them, so the next start finds the log short of what the store lacks and writes a
    /// checkpoint.
    log_gap: bool,
    /// The watermark as last recorded.
    watermark: Option<LogPosition>,
    /// A watermark being recorded (the plan waits for the answer before it stops).
    moving: Option<LogPosition>,
    closed_at: Option<Instant>,
    health: FailureState,
    stopped: bool,
}

impl AsyncPlan {
    pub fn new(limits: AsyncLimits) -> AsyncPlan {
        AsyncPlan {
            limits,
            buffer: WalObject::default(),
            oldest: None,
            held_back: None,
            latest: None,
            upload: None,
            next_upload: 0,
            reading: false,
            from_log: false,
            retry_at: None,
            log_gap: false,
            watermark: None,
            moving: None,
            closed_at: None,
            health: FailureState::default(),
            stopped: false,
        }
    }

    /// Takes in what happened at `now`; returns what to do, in order.
    pub fn step(&mut self, now: Instant, input: AsyncInput) -> Vec<AsyncEffect> {
        let mut effects = Vec::new();
        if self.stopped {
            return effects;
        }
        match input {
            AsyncInput::Committed(group) => self.take_records(now, &group.records, &mut effects),
            AsyncInput::AttemptFailed { upload, error } => {
                if self.current(upload).is_some() {
                    self.failed(now, format!("async WAL upload failed: {error}"), false, &mut effects);
                }
            }
            AsyncInput::Conflict { upload, error } => {
                if let Some(first) = self.current(upload).map(|u| u.first) {
                    let error = format!(
                        "WAL upload conflict: {error}; writes from revision {} on are acknowledged but not in \
                         object storage; retrying",
                        first.revision
                    );
                    self.failed(now, error, true, &mut effects);
                }
            }
            AsyncInput::Stored(upload) => {
                if let Some(InFlight { last, .. }) = self.finish(upload) {
                    if self.log_gap {
                        self.succeeded(now, &mut effects);
                    } else {
                        self.moving = Some(last);
                        effects.push(AsyncEffect::MoveWatermark(last));
                    }
                }
            }
            AsyncInput::TaskEnded { upload, error } => {
                if let Some(InFlight { first, .. }) = self.finish(upload) {
                    // Its records are read back from the local log (compaction keeps them: the
                    // watermark is below them), after a pause in case it fails the same way.
                    let error = format!("{error}; retrying from the local log");
                    self.failed(now, error, true, &mut effects);
                    self.buffer = WalObject::default();
                    self.oldest = None;
                    self.from_log = false;
                    self.held_back = Some(HeldBack::At(first));
                    self.retry_at = Some(now + self.limits.retry_pause);
                }
            }
            AsyncInput::LogRead(records) => self.read_back(records, &mut effects),
            AsyncInput::LogReadFailed(error) => {
                self.reading = false;
                self.failed(now, format!("cannot read the local log for upload: {error}"), false, &mut effects);
                self.retry_at = Some(now + self.limits.retry_pause);
            }
            AsyncInput::WatermarkMoved(at) => {
                assert!(self.watermark.is_none_or(|w| w < at), "the watermark only moves forward");
                self.moving = None;
                self.watermark = Some(at);
                self.succeeded(now, &mut effects);
            }
            AsyncInput::WatermarkFailed(error) => {
                self.moving = None;
                self.failed(now, format!("cannot record the upload watermark: {error}"), false, &mut effects);
            }
            AsyncInput::Tick => {}
            AsyncInput::InputClosed => {
                self.closed_at.get_or_insert(now);
            }
        }
        self.decide(now, &mut effects);
        effects
    }

    /// When the plan needs an [`AsyncInput::Tick`] at the latest, if it does: always after the
    /// `now` of the last step.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let mut deadlines = Vec::new();
        deadlines.extend(self.closed_at.map(|closed| closed + self.limits.wait_max));
        deadlines.extend(self.retry_at);
        if self.upload.is_none() && !self.reading && self.retry_at.is_none() {
            deadlines.extend(self.oldest.map(|oldest| oldest + self.limits.segment_age));
        }
        if !self.health.standing() {
            deadlines.extend(self.upload.as_ref().map(|u| u.started + self.limits.wait_max));
        }
        deadlines.into_iter().min()
    }

    /// The upload in flight, if it is `upload`.
    fn current(&self, upload: UploadId) -> Option<&InFlight> {
        self.upload.as_ref().filter(|u| u.id == upload)
    }

    /// Ends the upload in flight if it is `upload`.
    fn finish(&mut self, upload: UploadId) -> Option<InFlight> {
        self.upload.take_if(|u| u.id == upload)
    }

    fn take_records(&mut self, now: Instant, records: &[LogRecord], effects: &mut Vec<AsyncEffect>) {
        for record in records {
            let at = record.position();
            self.latest = Some(at);
            if self.held_back.is_some() {
                continue;
            }
            if self.buffer.bytes.len() >= self.limits.buffer_bytes_max {
                self.held_back = Some(HeldBack::At(at));
                effects.push(AsyncEffect::Overflow { from: at });
                continue;
            }
            self.oldest.get_or_insert(now);
            self.buffer.push(record);
        }
    }

    /// Takes in records read back from the log: those that follow the records held back without a
    /// gap (compaction removes records from the log's start, so a missing one is a loss).
    fn read_back(&mut self, mut records: Vec<LogRecord>, effects: &mut Vec<AsyncEffect>) {
        self.reading = false;
        let Some(held_back) = self.held_back else { return };
        let mut next = held_back;
        let contiguous = records
            .iter()
            .take_while(|r| {
                let follows = next.starts_at(r.position());
                next = HeldBack::After(r.position());
                follows
            })
            .count();
        records.truncate(contiguous);
        // Records that arrived during the read were not held either: they come from the log too.
        self.held_back = match records.last() {
            Some(last) if self.latest.is_some_and(|latest| last.position() < latest) => {
                Some(HeldBack::After(last.position()))
            }
            Some(_) => None,
            None => {
                let error = format!(
                    "records from {:?} are gone from the local log before they were uploaded: a restore from \
                     object storage stops before them until a checkpoint covers them; restart the node to write one",
                    held_back.read_from()
                );
                effects.push(AsyncEffect::LogGap { error });
                self.log_gap = true;
                None
            }
        };
        records.iter().for_each(|r| self.buffer.push(r));
        self.from_log = !records.is_empty();
    }

    fn failed(&mut self, now: Instant, error: String, incurable: bool, effects: &mut Vec<AsyncEffect>) {
        let report = self.health.failed(now, self.limits.wait_max, incurable);
        effects.push(AsyncEffect::Failed { error, report });
    }

    fn succeeded(&mut self, now: Instant, effects: &mut Vec<AsyncEffect>) {
        if let Some(failing_for) = self.health.succeeded(now) {
            effects.push(AsyncEffect::Recovered { failing_for });
        }
    }

    fn decide(&mut self, now: Instant, effects: &mut Vec<AsyncEffect>) {
        if self.upload.is_none() && !self.reading && self.retry_at.is_none_or(|at| now >= at) {
            self.retry_at = None;
            self.start_next(now, effects);
        }
        if let Some(upload) = &self.upload
            && now.saturating_duration_since(upload.started) >= self.limits.wait_max
            && !self.health.standing()
        {
            let error = format!(
                "a WAL upload has not completed for {} s; writes are acknowledged but not in object storage",
                now.saturating_duration_since(upload.started).as_secs()
            );
            self.failed(now, error, true, effects);
        }
        if let Some(closed) = self.closed_at {
            let done = self.upload.is_none()
                && self.buffer.first.is_none()
                && self.held_back.is_none()
                && self.moving.is_none();
            let gave_up = now.saturating_duration_since(closed) >= self.limits.wait_max;
            if done || gave_up {
                self.stopped = true;
                effects.push(AsyncEffect::Stop { gave_up: !done });
            }
        }
    }

    /// Starts the next upload: of the buffer when due, else a read of the records held back.
    fn start_next(&mut self, now: Instant, effects: &mut Vec<AsyncEffect>) {
        if self.buffer.first.is_none()
            && let (Some(held_back), Some(latest)) = (self.held_back, self.latest)
        {
            self.reading = true;
            let from = held_back.read_from();
            effects.push(AsyncEffect::ReadLog { from, through: latest.revision, bytes: self.limits.segment_bytes });
            return;
        }
        let due = self.oldest.is_some_and(|t| now.saturating_duration_since(t) >= self.limits.segment_age)
            || self.buffer.bytes.len() >= self.limits.segment_bytes
            || self.held_back.is_some()
            || self.from_log
            || self.closed_at.is_some();
        if !due || self.buffer.first.is_none() {
            return;
        }
        let WalObject { bytes, first, last } = std::mem::take(&mut self.buffer);
        let (first, last) = (first.expect("the buffer holds a record"), last.expect("and so a last one"));
        self.oldest = None;
        self.from_log = false;
        let upload = UploadId(self.next_upload);
        self.next_upload += 1;
        self.upload = Some(InFlight { id: upload, first, last, started: now });
        effects.push(AsyncEffect::StartUpload { upload, first, last, bytes });
    }
}

#[cfg(test)]
#[path = "async_plan_tests.rs"]
mod tests;
