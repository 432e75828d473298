//! The committer and the compactor: two thread actors behind the sequencer. The committer takes
//! evaluated groups in order (from the sequencer, or from the uploader once stored), writes all that
//! wait as one fjall batch with one sync, hands each group to every subscriber and then releases its
//! replies, so replies leave in revision order and only once durable. The compactor removes the
//! versions a compaction made unreachable, in bounded batches. Invariants: a group is never
//! acknowledged unless its batch is durable; after a failed commit nothing more is written (fjall
//! poisons its batch state) and the node is stopped by the supervisor.

use std::sync::Arc;

use super::{Answer, CommittedGroup, Outcome, SequencerMessage};
use crate::actor::{Actor, Flow, Mailbox, Supervisor};
use crate::alarms::{Alarm, Alarms};
use crate::error::{Error, Result, SequencerError};
use crate::ids::Revision;
use crate::log::LogRecord;
use crate::metrics::CommitStats;
use crate::mvcc::Store;
use crate::mvcc::store::GroupWrite;
use crate::proto::mvccpb::KeyValue;

/// A group evaluated but not yet committed: the batch, and the replies it releases once durable.
/// With sync upload the uploader holds it until its records are stored, then passes it on.
pub struct PendingGroup {
    pub(super) write: GroupWrite,
    /// Per record, per event: the key's version before it.
    pub(super) prevs: Vec<Vec<Option<KeyValue>>>,
    pub(super) replies: Vec<(Answer, Result<Outcome>)>,
    /// A compaction in this group, and whether its caller waits for the physical removal.
    pub(super) compaction: Option<(Revision, bool)>,
}

impl PendingGroup {
    /// The group's records, in commit order (empty for a group of failed or read-only proposals).
    pub fn records(&self) -> &[LogRecord] {
        &self.write.records
    }

    /// Answers every caller still waiting with `error()` now; the group itself goes on and is
    /// committed if it is uploaded later (so the callers' outcome is unknown, as with etcd's timeouts).
    pub fn fail_replies(&mut self, error: impl Fn() -> Error) {
        for (answer, _) in self.replies.drain(..) {
            answer.fail(error());
        }
    }
}

/// What the committer reports to the sequencer after each group.
pub enum Committed {
    /// The group whose last revision this is is durable.
    Durable(Revision),
    /// The group was not committed: the store failed (this time or before).
    Failed(Arc<Error>),
}

/// Groups the committer merges into one batch (and one sync) at most.
const COMMIT_MERGE_MAX: usize = 64;

/// The committer actor (its own thread: fjall's sync blocks).
pub(super) struct Committer {
    pub store: Arc<Store>,
    /// Groups still queued, merged into the batch of the one being handled.
    pub queued: flume::Receiver<PendingGroup>,
    /// Whether groups were stored in object storage before they got here (sync upload).
    pub uploaded: bool,
    pub compactor: Mailbox<CompactJob>,
    pub subscribers: Vec<flume::Sender<Arc<CommittedGroup>>>,
    pub alarms: Alarms,
    pub stats: Arc<CommitStats>,
    /// Where each group's outcome goes (the sequencer's event source).
    pub reports: flume::Sender<SequencerMessage>,
    pub supervisor: Supervisor,
    /// Set by the first failed commit: every later group is refused at once (the sequencer learns
    /// of the failure only after its caller may have sent more).
    pub failed: Option<Arc<Error>>,
}

impl Actor for Committer {
    type Message = PendingGroup;

    fn handle(&mut self, first: PendingGroup) -> Result<Flow> {
        // Groups already waiting are committed together: one batch, one sync.
        let mut jobs = vec![first];
        while jobs.len() < COMMIT_MERGE_MAX
            && let Ok(job) = self.queued.try_recv()
        {
            jobs.push(job);
        }
        let reports = match &self.failed {
            Some(reason) => refuse(jobs, reason, self.uploaded),
            None => self.commit(jobs),
        };
        for report in reports {
            if let Committed::Failed(reason) = &report
                && self.failed.is_none()
            {
                self.failed = Some(reason.clone());
                self.supervisor.fail("committer", SequencerError::Fenced(reason.clone()).into());
            }
            // A sequencer that is gone needs no report (it stopped; what it sent is committed).
            let _ = self.reports.send(SequencerMessage::Committed(report));
        }
        Ok(Flow::Continue)
    }

    fn cleanup(self) {}
}

/// Refuses `jobs` after a failed commit: nothing of them is written here. With sync upload they
/// may be in object storage already (a restart replays them), so their outcome is unknown, as
/// etcd's "request timed out" says; otherwise they failed, and their callers learn why.
fn refuse(jobs: Vec<PendingGroup>, reason: &Arc<Error>, uploaded: bool) -> Vec<Committed> {
    jobs.into_iter()
        .map(|job| {
            for (answer, _) in job.replies {
                answer.fail(if uploaded { Error::Timeout } else { SequencerError::Fenced(reason.clone()).into() });
            }
            Committed::Failed(reason.clone())
        })
        .collect()
}

impl Committer {
    /// Commits groups as one batch, hands each to every subscriber, then releases its replies in
    /// order (holding a physical compaction's reply until the compactor has removed the old
    /// versions, as etcd does).
    fn commit(&self, jobs: Vec<PendingGroup>) -> Vec<Committed> {
        let mut write = GroupWrite { uploaded: self.uploaded, ..Default::default() };
        let mut counts = Vec::with_capacity(jobs.len());
        let mut parts = Vec::with_capacity(jobs.len());
        let proposals: usize = jobs.iter().map(|job| job.replies.len()).sum();
        for PendingGroup { write: job_write, prevs, replies, compaction } in jobs {
            counts.push(job_write.records.len());
            write.records.extend(job_write.records);
            write.current_revision = job_write.current_revision;
            parts.push((job_write.current_revision, prevs, replies, compaction));
        }
        let started = std::time::Instant::now();
        let done = {
            let _counting = self.stats.commit_lock();
            let done = self.store.commit(&write);
            if done.is_ok() {
                self.stats.committed(write.records.iter().flat_map(|record| &record.events));
            }
            done
        };
        self.stats.sync.observe_duration(started.elapsed());
        self.stats.proposals.observe(proposals as u64);
        if let Err(e) = done {
            if matches!(e, Error::NoSpace) && self.alarms.raise(Alarm::NoSpace) {
                tracing::error!("NOSPACE alarm raised: the disk filled up during a commit");
            }
            let reason: Arc<Error> = Arc::new(SequencerError::CommitFailed(Box::new(e)).into());
            // The batch may be in the journal all the same (a failed sync, or a sync upload that
            // stored it): its outcome is unknown, as etcd's "request timed out" says.
            return parts
                .into_iter()
                .map(|(_, _, replies, _)| {
                    for (answer, _) in replies {
                        answer.fail(Error::Timeout);
                    }
                    Committed::Failed(reason.clone())
                })
                .collect();
        }
        let mut records = write.records.into_iter();
        let mut reports = Vec::with_capacity(parts.len());
        for ((current_revision, prevs, mut replies, compaction), count) in parts.into_iter().zip(counts) {
            let group_records: Vec<LogRecord> = records.by_ref().take(count).collect();
            if let Some((revision, physical)) = compaction {
                let held = if physical {
                    let at = replies.iter().rposition(|(_, o)| matches!(o, Ok(Outcome::Compact(_))));
                    at.map(|i| replies.remove(i))
                } else {
                    None
                };
                // A compactor that is gone stopped with the node; the compaction finishes at the next start.
                let _ = self.compactor.tell_blocking(CompactJob { revision, reply: held });
            }
            if !group_records.is_empty() && !self.subscribers.is_empty() {
                let group = Arc::new(CommittedGroup { records: group_records, prevs });
                for subscriber in &self.subscribers {
                    // A subscriber that is gone (its executor stopped) needs nothing more.
                    let _ = subscriber.send(group.clone());
                }
            }
            for (answer, outcome) in replies {
                answer.send(outcome);
            }
            reports.push(Committed::Durable(current_revision));
        }
        reports
    }
}

/// A physical compaction for the compactor, with a reply to release when it is done.
pub(super) struct CompactJob {
    pub revision: Revision,
    pub reply: Option<(Answer, Result<Outcome>)>,
}

/// The compactor actor (its own thread: it removes versions in bounded batches, each a fjall write).
pub(super) struct Compactor {
    pub store: Arc<Store>,
}

impl Actor for Compactor {
    type Message = CompactJob;

    fn handle(&mut self, job: CompactJob) -> Result<Flow> {
        let done = self.store.compact_physically(job.revision);
        let (done, failure) = match done {
            Ok(()) => (Ok(()), None),
            // The reply and the fatal error both carry the failure.
            Err(e) => {
                let e = Arc::new(e);
                let compaction = SequencerError::Compaction { revision: job.revision, source: e.clone() };
                (Err(SequencerError::Shared(e).into()), Some(compaction.into()))
            }
        };
        if let Some((answer, outcome)) = job.reply {
            answer.send(done.and(outcome));
        }
        // The store failed a write: fatal (the compaction finishes at the next start).
        failure.map_or(Ok(Flow::Continue), Err)
    }

    fn cleanup(self) {}
}
