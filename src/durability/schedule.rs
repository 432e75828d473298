//! When the next checkpoint is due, counted from what object storage holds rather than from the node's
//! start: the newest checkpoint's revision and the time it records, and the WAL objects stored after
//! it. A node that never lives `--checkpoint-interval` nor writes `--checkpoint-entries` revisions in
//! one run still checkpoints, so a disk-loss restore stays bounded however often the node restarts.
//!
//! What bounds a restore: it downloads every WAL object after the checkpoint (a request each, the
//! larger cost on S3) and applies every record in them. With sync upload each object holds at least
//! one revision, unless it holds only lease or compaction records (which take no revision); with
//! async upload it holds many. So both count: a checkpoint is due when the revisions written since
//! the newest checkpoint, or the WAL objects stored since it, reach `--checkpoint-entries`. Revisions
//! bound the records to apply and, in practice, the objects; objects bound the requests where
//! records without revisions (a lease-heavy load) pile up.
//!
//! By time, a checkpoint is due once the oldest write no checkpoint covers is `--checkpoint-interval`
//! old. For writes made before this start that is unknown, so the newest checkpoint's own time stands
//! in for it (they came after it); with no checkpoint at all they are taken to be as old as can be.
//! Writes of this run are timed when first seen. Times are wall-clock (they come from the checkpoint
//! manifest, which another run wrote); a time in the future counts as now.

use std::time::{Duration, SystemTime};

use crate::ids::Revision;
use crate::mvcc::store::INITIAL_REVISION;

/// Why a checkpoint is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// This many revisions were written since the newest checkpoint.
    Revisions(u64),
    /// This many WAL objects were stored since it.
    WalObjects(u64),
    /// The oldest write it lacks is this old.
    Age(Duration),
}

impl std::fmt::Display for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Due::Revisions(n) => write!(f, "{n} revisions since the newest checkpoint"),
            Due::WalObjects(n) => write!(f, "{n} WAL objects since the newest checkpoint"),
            Due::Age(age) => write!(f, "the oldest write it lacks is {} s old", age.as_secs()),
        }
    }
}

/// The newest checkpoint object storage holds, as the schedule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewestCheckpoint {
    /// The revision it covers.
    pub revision: Revision,
    /// When it was taken (its manifest's `created_unix_ms`).
    pub created: SystemTime,
}

/// The checkpoint schedule of a node: a plain state machine the checkpoint loop asks with the store's
/// revision, the uploader's count of stored WAL objects and the time.
#[derive(Debug, Clone)]
pub struct CheckpointSchedule {
    /// Checkpoint once the oldest uncovered write is this old.
    interval: Option<Duration>,
    /// Checkpoint once this many revisions, or WAL objects, are not covered.
    entries: Option<u64>,
    /// The revision the newest checkpoint covers ([`INITIAL_REVISION`] when there is none).
    covered_revision: Revision,
    /// The time of the oldest write the newest checkpoint lacks; `None` while there is none.
    uncovered_since: Option<SystemTime>,
    /// WAL objects after the newest checkpoint, counted when `uploads_counted` objects were uploaded.
    wal_objects: u64,
    /// The uploader's stored-object count when `wal_objects` was counted.
    uploads_counted: u64,
    /// After a failed checkpoint: no new attempt before this time.
    retry_at: Option<SystemTime>,
    /// The pause after the next failure.
    retry_delay: Duration,
}

/// The first pause after a failed checkpoint; doubles with each failure up to [`RETRY_DELAY_MAX`]. A
/// checkpoint reads the whole database, so it is not retried at the poll rate.
const RETRY_DELAY_FIRST: Duration = Duration::from_secs(2);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5 * 60);

impl CheckpointSchedule {
    /// The schedule of a node starting at `revision`, given the newest checkpoint in the store, the
    /// WAL objects stored after it, and the uploader's stored-object count so far.
    pub fn new(
        interval: Option<Duration>,
        entries: Option<u64>,
        newest: Option<NewestCheckpoint>,
        revision: Revision,
        wal_objects_after: u64,
        uploads: u64,
    ) -> CheckpointSchedule {
        let covered_revision = newest.map_or(INITIAL_REVISION, |n| n.revision);
        let uncovered_since =
            (revision > covered_revision).then(|| newest.map_or(SystemTime::UNIX_EPOCH, |n| n.created));
        CheckpointSchedule {
            interval,
            entries,
            covered_revision,
            uncovered_since,
            wal_objects: wal_objects_after,
            uploads_counted: uploads,
            retry_at: None,
            retry_delay: RETRY_DELAY_FIRST,
        }
    }

    /// Whether a checkpoint is due now, the store being at `revision` and `uploads` WAL objects
    /// stored by this run.
    pub fn due(&mut self, revision: Revision, uploads: u64, now: SystemTime) -> Option<Due> {
        if revision > self.covered_revision && self.uncovered_since.is_none() {
            self.uncovered_since = Some(now);
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let revisions = (revision.get() - self.covered_revision.get()).max(0) as u64;
        let objects = self.wal_objects + uploads.saturating_sub(self.uploads_counted);
        if let Some(entries) = self.entries {
            if revisions >= entries {
                return Some(Due::Revisions(revisions));
            }
            if objects >= entries {
                return Some(Due::WalObjects(objects));
            }
        }
        let age = self.uncovered_since.map(|since| now.duration_since(since).unwrap_or(Duration::ZERO));
        match (self.interval, age) {
            (Some(interval), Some(age)) if age >= interval => Some(Due::Age(age)),
            _ => None,
        }
    }

    /// A checkpoint at `revision` was taken at `created` (or the newest one covers `revision`
    /// already); the store is at `current` now, and `uploads_before` WAL objects had been stored when
    /// it began (those stored since are counted as after it, which may count a few early).
    pub fn checkpointed(&mut self, revision: Revision, created: SystemTime, current: Revision, uploads_before: u64) {
        self.covered_revision = self.covered_revision.max(revision);
        self.uncovered_since = (current > self.covered_revision).then_some(created);
        self.wal_objects = 0;
        self.uploads_counted = uploads_before;
        self.retry_at = None;
        self.retry_delay = RETRY_DELAY_FIRST;
    }

    /// A checkpoint failed at `now`: the next attempt waits, longer after each failure.
    pub fn failed(&mut self, now: SystemTime) {
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(RETRY_DELAY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const INTERVAL: Option<Duration> = Some(Duration::from_secs(15 * 60));

    #[test]
    fn a_due_reason_reads_as_words_in_the_log() {
        assert_eq!(Due::Revisions(5).to_string(), "5 revisions since the newest checkpoint");
        assert_eq!(Due::WalObjects(2).to_string(), "2 WAL objects since the newest checkpoint");
        assert_eq!(Due::Age(MINUTE).to_string(), "the oldest write it lacks is 60 s old");
    }

    fn at(minutes: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + MINUTE * minutes as u32
    }

    fn newest(revision: Revision, minutes: u64) -> Option<NewestCheckpoint> {
        Some(NewestCheckpoint { revision, created: at(minutes) })
    }

    #[test]
    fn a_node_starting_with_more_uncovered_revisions_than_the_limit_checkpoints_at_once() {
        let mut schedule = CheckpointSchedule::new(None, Some(100), newest(Revision(500), 0), Revision(650), 0, 0);
        assert_eq!(schedule.due(Revision(650), 0, at(1)), Some(Due::Revisions(150)));
        schedule.checkpointed(Revision(650), at(1), Revision(655), 0);
        assert_eq!(schedule.due(Revision(749), 0, at(2)), None, "99 since the checkpoint");
        assert_eq!(schedule.due(Revision(750), 0, at(2)), Some(Due::Revisions(100)));
    }

    #[test]
    fn the_count_goes_on_from_the_newest_checkpoint_across_restarts() {
        // Each run writes 30 revisions and stops: the count carries over through the store.
        let mut revision = Revision(2);
        let mut checkpoint = None;
        for run in 0..10u64 {
            let mut schedule = CheckpointSchedule::new(None, Some(100), checkpoint, revision, 0, 0);
            if schedule.due(revision, 0, at(run)).is_some() {
                schedule.checkpointed(revision, at(run), revision, 0);
                checkpoint = newest(revision, run);
            }
            revision = Revision(revision.get() + 30);
        }
        let covered = checkpoint.expect("a checkpoint was due in some run").revision;
        assert!(
            revision.get() - covered.get() < 100 + 30,
            "at most the limit plus one run uncovered: {covered} of {revision}"
        );
    }

    #[test]
    fn wal_objects_after_the_checkpoint_count_too() {
        // A lease-heavy store: few revisions, many objects (found at start, then uploaded by this run).
        let mut schedule = CheckpointSchedule::new(None, Some(100), newest(Revision(10), 0), Revision(12), 60, 0);
        assert_eq!(schedule.due(Revision(12), 39, at(1)), None);
        assert_eq!(schedule.due(Revision(12), 40, at(1)), Some(Due::WalObjects(100)));
        schedule.checkpointed(Revision(12), at(1), Revision(12), 40);
        assert_eq!(schedule.due(Revision(12), 139, at(2)), None, "objects stored since the checkpoint began: 99");
    }

    #[test]
    fn a_checkpoint_older_than_the_interval_with_writes_after_it_is_due_at_start() {
        let mut schedule = CheckpointSchedule::new(INTERVAL, None, newest(Revision(500), 0), Revision(501), 0, 0);
        assert_eq!(schedule.due(Revision(501), 0, at(20)), Some(Due::Age(MINUTE * 20)));
        // Without writes after it, an old checkpoint is current.
        let mut idle = CheckpointSchedule::new(INTERVAL, None, newest(Revision(500), 0), Revision(500), 0, 0);
        assert_eq!(idle.due(Revision(500), 0, at(20)), None);
    }

    #[test]
    fn the_interval_runs_from_the_oldest_uncovered_write() {
        let mut schedule = CheckpointSchedule::new(INTERVAL, None, newest(Revision(500), 0), Revision(500), 0, 0);
        assert_eq!(schedule.due(Revision(500), 0, at(60)), None, "idle for an hour");
        assert_eq!(schedule.due(Revision(501), 0, at(61)), None, "the first write after the idle hour is new");
        assert_eq!(schedule.due(Revision(530), 0, at(75)), None);
        assert_eq!(schedule.due(Revision(530), 0, at(76)), Some(Due::Age(MINUTE * 15)));
        // Writes during the checkpoint are uncovered from its time on.
        schedule.checkpointed(Revision(530), at(76), Revision(532), 0);
        assert_eq!(schedule.due(Revision(540), 0, at(90)), None);
        assert_eq!(schedule.due(Revision(540), 0, at(91)), Some(Due::Age(MINUTE * 15)));
    }

    #[test]
    fn writes_no_checkpoint_covers_from_an_earlier_run_are_due_at_once() {
        let mut schedule = CheckpointSchedule::new(INTERVAL, None, None, Revision(40), 0, 0);
        assert!(matches!(schedule.due(Revision(40), 0, at(0)), Some(Due::Age(_))));
        // A fresh store: the interval runs from the first write.
        let mut fresh = CheckpointSchedule::new(INTERVAL, None, None, INITIAL_REVISION, 0, 0);
        assert_eq!(fresh.due(INITIAL_REVISION, 0, at(0)), None);
        assert_eq!(fresh.due(Revision(5), 0, at(1)), None);
        assert_eq!(fresh.due(Revision(9), 0, at(16)), Some(Due::Age(MINUTE * 15)));
    }

    #[test]
    fn a_checkpoint_time_in_the_future_counts_as_now() {
        let mut schedule = CheckpointSchedule::new(INTERVAL, None, newest(Revision(500), 30), Revision(510), 0, 0);
        assert_eq!(schedule.due(Revision(510), 0, at(0)), None);
        assert_eq!(schedule.due(Revision(510), 0, at(45)), Some(Due::Age(MINUTE * 15)));
    }

    #[test]
    fn a_failed_checkpoint_is_retried_later_and_later() {
        let mut schedule = CheckpointSchedule::new(None, Some(10), None, Revision(50), 0, 0);
        let start = at(0);
        assert!(schedule.due(Revision(50), 0, start).is_some());
        schedule.failed(start);
        assert_eq!(schedule.due(Revision(50), 0, start + Duration::from_secs(1)), None);
        assert!(schedule.due(Revision(50), 0, start + RETRY_DELAY_FIRST).is_some());
        schedule.failed(start + RETRY_DELAY_FIRST);
        assert_eq!(schedule.due(Revision(50), 0, start + RETRY_DELAY_FIRST * 2), None, "the pause doubled");
        assert!(schedule.due(Revision(50), 0, start + RETRY_DELAY_FIRST * 3).is_some());
        schedule.checkpointed(Revision(50), start, Revision(50), 0);
        assert_eq!(schedule.due(Revision(60), 0, start), Some(Due::Revisions(10)), "a success ends the pauses");
    }
}
