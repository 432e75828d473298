//! The sync uploader's decisions as a plain state machine: groups arrive, uploads start, are stored,
//! fail or conflict, time passes; out come uploads to start, groups to pass on, callers to time out,
//! the outage to raise or clear, and the end. No I/O and no clock: `now` is an input. The driver
//! (`sync.rs`) holds the groups themselves and does what the effects say.
//!
//! Invariants (checked after every step by the seeded tests below): groups are passed on in arrival
//! order, each once, and only once the object holding it is stored; never more than `max_in_flight`
//! uploads; each upload holds the groups right after the previous one's; a caller is timed out once,
//! `wait_max` after its group arrived; an upload failing or hanging for `wait_max` raises the outage,
//! a success clears it unless a conflict fenced the uploader (no upload starts after a conflict).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::UploadError;

/// A group's place in arrival order: the uploader's first group is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

/// An upload's place in the order uploads start: the first is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadId(pub u64);

/// Consecutive groups: `count` of them from `first` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSpan {
    pub first: GroupId,
    pub count: u64,
}

impl GroupSpan {
    pub fn ids(&self) -> impl Iterator<Item = GroupId> {
        (self.first.0..self.first.0 + self.count).map(GroupId)
    }
}

/// The sync uploader's limits.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    /// Uploads in flight at once.
    pub max_in_flight: usize,
    /// Least time between the starts of two uploads.
    pub min_interval: Duration,
    /// How long a caller waits before a timeout, and an upload before the outage is raised.
    pub wait_max: Duration,
    /// An object takes no more groups once it holds this many bytes (a bigger backlog leaves as
    /// several objects).
    pub object_bytes_max: usize,
}

/// What happened.
#[derive(Debug)]
pub enum SyncInput {
    /// Groups arrived from the sequencer, in order: each one's encoded records' bytes (0: it holds no
    /// record, as a group of failed or read-only proposals).
    Arrived(Vec<usize>),
    /// An attempt of an upload failed; its task retries it.
    AttemptFailed { upload: UploadId, error: UploadError },
    /// An upload's object is stored.
    Stored(UploadId),
    /// An upload's name holds another writer's bytes: its task has given up.
    Conflict { upload: UploadId, error: UploadError },
    /// Time passed.
    Tick,
    /// The sequencer is gone: no group will arrive any more.
    InputClosed,
    /// The node began to stop.
    Shutdown,
}

/// What the driver is to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncEffect {
    /// Store these groups' records as one object (the key is named by its first record).
    StartUpload { upload: UploadId, groups: GroupSpan },
    /// Hand these groups to the committer, in order.
    PassOn(GroupSpan),
    /// Answer these groups' waiting callers with a timeout (the groups stay queued).
    TimeOut(Vec<GroupId>),
    /// Writes cannot be made durable: refuse them, saying why (`None`: take writes again).
    Outage(Option<String>),
    /// Worth a line in the log.
    Report(SyncReport),
    /// The uploader's work is over; `abandoned` groups were never stored (nor acknowledged).
    Stop { abandoned: usize },
}

/// Log-worthy changes.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncReport {
    /// The first failed attempt since uploads last succeeded.
    Failing { error: String },
    /// An upload succeeded after attempts had failed for this long.
    Recovered { failing_for: Duration },
    /// Another writer holds an object name of this term: no upload until the node restarts.
    Fenced { error: String },
}

/// A group not yet passed on.
#[derive(Debug)]
struct Waiter {
    id: GroupId,
    bytes: usize,
    arrived: Instant,
    timed_out: bool,
}

/// Groups that leave together: as one object, or, holding no record, without one.
#[derive(Debug)]
struct Batch {
    /// `None`: nothing to store; the batch passes on in its turn.
    upload: Option<UploadId>,
    groups: Vec<Waiter>,
    stored: bool,
    started: Instant,
}

impl Batch {
    fn in_flight(&self) -> bool {
        self.upload.is_some() && !self.stored
    }
}

/// The sync uploader's state.
#[derive(Debug)]
pub struct SyncPlan {
    limits: SyncLimits,
    /// Groups not yet in an upload, in arrival order.
    waiting: VecDeque<Waiter>,
    /// Uploads (and record-less batches) not yet passed on, in order.
    batches: VecDeque<Batch>,
    next_group: u64,
    next_upload: u64,
    /// No upload starts before this (the minimum interval since the last start).
    next_start: Option<Instant>,
    /// When attempts began failing (cleared by a stored upload).
    failing_since: Option<Instant>,
    /// The newest failed attempt's error, to say why an upload is stuck.
    last_failure: Option<String>,
    /// When the input closed or the node began to stop: from then on, a store that stays down for
    /// `wait_max` makes the uploader give up.
    closed_at: Option<Instant>,
    input_closed: bool,
    /// Set by a conflict: the reason; no upload starts again.
    fenced: Option<String>,
    /// The outage reason last raised; `None` while writes are taken.
    outage: Option<String>,
    stopped: bool,
}

impl SyncPlan {
    pub fn new(limits: SyncLimits) -> SyncPlan {
        SyncPlan {
            limits,
            waiting: VecDeque::new(),
            batches: VecDeque::new(),
            next_group: 0,
            next_upload: 0,
            next_start: None,
            failing_since: None,
            last_failure: None,
            closed_at: None,
            input_closed: false,
            fenced: None,
            outage: None,
            stopped: false,
        }
    }

    /// Takes in what happened at `now`; returns what to do, in order.
    pub fn step(&mut self, now: Instant, input: SyncInput) -> Vec<SyncEffect> {
        let mut effects = Vec::new();
        if self.stopped {
            return effects;
        }
        match input {
            SyncInput::Arrived(sizes) => {
                for bytes in sizes {
                    let id = GroupId(self.next_group);
                    self.next_group += 1;
                    self.waiting.push_back(Waiter { id, bytes, arrived: now, timed_out: false });
                }
            }
            SyncInput::AttemptFailed { upload, error } => {
                if self.in_flight(upload) {
                    let error = error.to_string();
                    if self.failing_since.is_none() {
                        self.failing_since = Some(now);
                        effects.push(SyncEffect::Report(SyncReport::Failing { error: error.clone() }));
                    }
                    self.last_failure = Some(error);
                }
            }
            SyncInput::Stored(upload) => {
                if let Some(since) = self.failing_since.take() {
                    let failing_for = now.saturating_duration_since(since);
                    effects.push(SyncEffect::Report(SyncReport::Recovered { failing_for }));
                }
                self.last_failure = None;
                if self.fenced.is_none() && self.outage.take().is_some() {
                    effects.push(SyncEffect::Outage(None));
                }
                if let Some(batch) = self.batches.iter_mut().find(|b| b.upload == Some(upload)) {
                    batch.stored = true;
                }
            }
            SyncInput::Conflict { upload, error } if self.in_flight(upload) => {
                let error = error.to_string();
                let reason = format!("{error} (until the node restarts)");
                effects.push(SyncEffect::Report(SyncReport::Fenced { error: error.clone() }));
                effects.push(SyncEffect::Outage(Some(reason.clone())));
                self.outage = Some(reason);
                self.fenced = Some(error);
            }
            SyncInput::Conflict { .. } | SyncInput::Tick => {}
            SyncInput::InputClosed => {
                self.input_closed = true;
                self.closed_at.get_or_insert(now);
            }
            SyncInput::Shutdown => {
                self.closed_at.get_or_insert(now);
            }
        }
        self.decide(now, &mut effects);
        effects
    }

    /// When the plan needs a [`SyncInput::Tick`] at the latest, if it does: always after the `now`
    /// of the last step (a deadline already passed would be decided on in that step).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let mut deadlines = Vec::new();
        if self.can_start() && !self.waiting.is_empty() {
            deadlines.extend(self.next_start);
        }
        let overdue_at = |w: &Waiter| (!w.timed_out).then_some(w.arrived + self.limits.wait_max);
        deadlines.extend(self.waiters().filter_map(overdue_at).min());
        if self.outage.is_none() {
            deadlines.extend(self.stuck_since().map(|since| since + self.limits.wait_max));
        }
        if self.waiters().next().is_some() {
            deadlines.extend(self.closed_at.map(|closed| closed + self.limits.wait_max));
        }
        deadlines.into_iter().min()
    }

    /// Whether `upload` is in flight (started, not stored, not given up on).
    fn in_flight(&self, upload: UploadId) -> bool {
        self.batches.iter().any(|b| b.upload == Some(upload) && !b.stored)
    }

    fn uploads_in_flight(&self) -> usize {
        self.batches.iter().filter(|b| b.in_flight()).count()
    }

    /// Whether an upload may start now as far as the fence and the in-flight bound go.
    fn can_start(&self) -> bool {
        self.fenced.is_none() && self.uploads_in_flight() < self.limits.max_in_flight
    }

    /// Every group not yet passed on.
    fn waiters(&self) -> impl Iterator<Item = &Waiter> {
        self.batches.iter().flat_map(|b| b.groups.iter()).chain(self.waiting.iter())
    }

    /// When the oldest upload in flight started.
    fn stuck_since(&self) -> Option<Instant> {
        self.batches.iter().filter(|b| b.in_flight()).map(|b| b.started).min()
    }

    fn decide(&mut self, now: Instant, effects: &mut Vec<SyncEffect>) {
        loop {
            self.pass_on_stored(effects);
            if !(self.can_start() && !self.waiting.is_empty() && self.next_start.is_none_or(|at| now >= at)) {
                break;
            }
            self.start_upload(now, effects);
        }
        self.time_out_callers(now, effects);
        self.raise_outage(now, effects);
        let left: usize = self.batches.iter().map(|b| b.groups.len()).sum::<usize>() + self.waiting.len();
        let gave_up =
            self.closed_at.is_some_and(|closed| now.saturating_duration_since(closed) >= self.limits.wait_max);
        if (self.input_closed && left == 0) || (gave_up && left > 0) {
            self.stopped = true;
            effects.push(SyncEffect::Stop { abandoned: left });
        }
    }

    /// Passes on the batches at the front that are stored.
    fn pass_on_stored(&mut self, effects: &mut Vec<SyncEffect>) {
        while self.batches.front().is_some_and(|b| b.stored) {
            let batch = self.batches.pop_front().expect("the front exists");
            if let Some(first) = batch.groups.first() {
                effects.push(SyncEffect::PassOn(GroupSpan { first: first.id, count: batch.groups.len() as u64 }));
            }
        }
    }

    /// Takes the waiting groups, up to an object's worth, into the next upload.
    fn start_upload(&mut self, now: Instant, effects: &mut Vec<SyncEffect>) {
        let (mut take, mut bytes) = (0, 0);
        for waiter in &self.waiting {
            take += 1;
            bytes += waiter.bytes;
            if bytes >= self.limits.object_bytes_max {
                break;
            }
        }
        let groups: Vec<Waiter> = self.waiting.drain(..take).collect();
        let span = GroupSpan { first: groups[0].id, count: groups.len() as u64 };
        if bytes == 0 {
            // Nothing to store (failed or read-only proposals): passes on in its turn.
            self.batches.push_back(Batch { upload: None, groups, stored: true, started: now });
            return;
        }
        let upload = UploadId(self.next_upload);
        self.next_upload += 1;
        self.next_start = Some(now + self.limits.min_interval);
        self.batches.push_back(Batch { upload: Some(upload), groups, stored: false, started: now });
        effects.push(SyncEffect::StartUpload { upload, groups: span });
    }

    /// Callers that waited `wait_max` get a timeout, once (their groups stay queued).
    fn time_out_callers(&mut self, now: Instant, effects: &mut Vec<SyncEffect>) {
        let wait_max = self.limits.wait_max;
        let waiters = self.batches.iter_mut().flat_map(|b| b.groups.iter_mut()).chain(self.waiting.iter_mut());
        let mut overdue = Vec::new();
        for waiter in waiters.filter(|w| !w.timed_out && now.saturating_duration_since(w.arrived) >= wait_max) {
            waiter.timed_out = true;
            overdue.push(waiter.id);
        }
        if !overdue.is_empty() {
            effects.push(SyncEffect::TimeOut(overdue));
        }
    }

    /// An upload failing, or hanging, for `wait_max` is an outage: writes are refused until one
    /// succeeds. The reason is raised again when the newest error changes.
    fn raise_outage(&mut self, now: Instant, effects: &mut Vec<SyncEffect>) {
        if self.fenced.is_some() {
            return;
        }
        let Some(since) = self.stuck_since() else { return };
        if now.saturating_duration_since(since) < self.limits.wait_max {
            return;
        }
        let mut reason = format!("a WAL upload has not completed for over {} ms", self.limits.wait_max.as_millis());
        if let Some(error) = &self.last_failure {
            reason.push_str(&format!(" (last error: {error})"));
        }
        if self.outage.as_ref() != Some(&reason) {
            self.outage = Some(reason.clone());
            effects.push(SyncEffect::Outage(Some(reason)));
        }
    }
}

#[cfg(test)]
#[path = "sync_plan_tests.rs"]
mod tests;
