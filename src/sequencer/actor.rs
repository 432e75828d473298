//! The sequencer's own loop as an [`Actor`]: groups proposals, refuses what cannot be written now
//! (corrupt store, no space, a failed store, an object-store outage), evaluates the rest in order
//! and hands each group on. Invariants: at most `groups_in_flight_max` groups are out at once
//! (during an outage new proposals are read anyway, to be refused); the committer's reports arrive
//! in the order groups left; it stops only once every group out is reported.

use std::sync::Arc;

use super::committer::{Committed, Committer, CompactJob, Compactor, PendingGroup};
use super::eval::{Evaluation, SequencerState};
use super::leases::LeaseTable;
use super::pipeline::{Pipeline, Report};
use super::space::{SpaceGuard, grows_store, proposal_bytes};
use super::{Answer, CommittedGroup, Grouping, Proposal, SequencerHandle, SequencerMessage, StoreHealth};
use super::{COMPACTOR_MAILBOX, MAILBOX, UploadStage};
use crate::actor::{self, Actor, Flow, Inbox, Reply, Supervisor};
use crate::alarms::Alarm;
use crate::error::{Error, Result, SequencerError};
use crate::metrics::CommitStats;
use crate::mvcc::store::GroupWrite;
use crate::mvcc::{Layer, Store, VersionReader};

/// The sequencer actor: state, and the committer and compactor threads it owns.
pub struct Sequencer {
    store: Arc<Store>,
    state: SequencerState,
    /// Proposals still queued, taken into the group being started.
    queued: flume::Receiver<SequencerMessage>,
    inbox: Option<Inbox<SequencerMessage>>,
    /// Where evaluated groups go: the committer, or the uploader first (sync upload).
    groups: flume::Sender<PendingGroup>,
    /// The object store's health, in sync-upload mode.
    health: Option<StoreHealth>,
    /// The groups handed on and not yet reported, and whether a new one may start.
    pipeline: Pipeline,
    group_proposals_max: usize,
    /// Set when a commit failed: the store is unusable and every later write fails.
    failed: Option<Arc<Error>>,
    /// Refuses writes that grow the store when the disk is (nearly) full.
    space: SpaceGuard,
    stop_reply: Option<Reply<()>>,
    supervisor: Supervisor,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Sequencer {
    /// Creates the sequencer for `store` and its committer and compactor threads; every committed
    /// group goes to each of `subscribers`. With an upload stage, groups are uploaded before they are
    /// committed (sync upload). Failures of any of them go to `supervisor`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        grouping: Grouping,
        subscribers: Vec<flume::Sender<Arc<CommittedGroup>>>,
        upload: Option<UploadStage>,
        space: SpaceGuard,
        stats: Arc<CommitStats>,
        supervisor: Supervisor,
    ) -> Result<(Sequencer, SequencerHandle)> {
        let view = store.read_view()?;
        let current = view.current_revision();
        let sub = match store.last_log_position()? {
            Some(position) if position.revision == current => position.sub,
            _ => 0,
        };
        let state = SequencerState {
            current,
            compact: view.compact_revision(),
            in_flight: Layer::default(),
            sub,
            leases: LeaseTable::load(store.leases()?, store.leased_keys()?),
        };
        stats.leases.store(state.leases.len() as i64, std::sync::atomic::Ordering::Relaxed);
        let (handle, mailbox) = actor::mailbox(MAILBOX.0, MAILBOX.1);
        let mut threads = Vec::new();

        let (compactor, compactions) = actor::mailbox(COMPACTOR_MAILBOX.0, COMPACTOR_MAILBOX.1);
        // Finish a compaction a crash interrupted.
        if store.compacted_through()? < state.compact {
            compactor.try_tell(CompactJob { revision: state.compact, reply: None })?;
        }
        let compacting = Compactor { store: store.clone() };
        threads.push(actor::spawn("t4-compactor", compacting, Inbox::new(compactions), &supervisor)?);

        // The committer's input: the sequencer's groups, or the uploader's once stored. Bounded by
        // `groups_in_flight_max` (the sequencer hands on no more), so it needs no bound of its own.
        let (groups, committer_input, health) = match upload {
            None => {
                let (tx, rx) = flume::unbounded::<PendingGroup>();
                (tx, rx, None)
            }
            Some(stage) => (stage.to_uploader, stage.from_uploader, Some(stage.health)),
        };
        // The committer's reports: one per group out, so bounded by `groups_in_flight_max` too.
        let (reports, report_source) = flume::unbounded();
        let committer = Committer {
            store: store.clone(),
            queued: committer_input.clone(),
            uploaded: health.is_some(),
            compactor,
            subscribers,
            alarms: space.alarms.clone(),
            stats,
            reports,
            supervisor: supervisor.clone(),
            failed: None,
        };
        threads.push(actor::spawn("t4-committer", committer, Inbox::new(committer_input), &supervisor)?);

        let mut inbox = Inbox::new(mailbox.clone()).with_source(
            report_source,
            |report| report,
            Some(|| SequencerMessage::CommitterStopped),
        );
        if let Some(health) = &health {
            inbox = inbox.with_events(health.changes());
        }
        let sequencer = Sequencer {
            store,
            state,
            queued: mailbox,
            inbox: Some(inbox),
            groups,
            health,
            pipeline: Pipeline::new(grouping.in_flight_max),
            group_proposals_max: grouping.proposals_max.max(1),
            failed: None,
            space,
            stop_reply: None,
            supervisor,
            threads,
        };
        Ok((sequencer, SequencerHandle { mailbox: handle }))
    }

    /// Runs the actor on a thread of its own (`t4-sequencer`) until it is stopped or every handle
    /// is gone: evaluation reads fjall, sometimes at length (a DeleteRange over many keys, range
    /// compares, a revoke of a lease with many keys), which must hold back no executor.
    pub fn start(mut self) -> Result<std::thread::JoinHandle<()>> {
        let inbox = self.inbox.take().expect("a sequencer starts once");
        let supervisor = self.supervisor.clone();
        actor::spawn("t4-sequencer", self, inbox, &supervisor)
    }

    /// Evaluates `first` and everything else waiting as one group and hands it on. Fails only if
    /// the store cannot be read, which is fatal.
    fn start_group(&mut self, first: Proposal, answer: Answer) -> Result<()> {
        let mut proposals = vec![(first, answer)];
        while proposals.len() < self.group_proposals_max {
            match self.queued.try_recv() {
                Ok(SequencerMessage::Propose(p, a)) => proposals.push((p, a)),
                // Queries see no proposal of this group: none of them is acknowledged yet.
                Ok(SequencerMessage::Leases(reply)) => reply.send(self.state.leases.all()),
                Ok(SequencerMessage::LeaseKeys(id, reply)) => reply.send(self.state.leases.keys(id)),
                Ok(SequencerMessage::Stop(reply)) => {
                    self.stop_requested(Some(reply));
                    break;
                }
                Ok(
                    SequencerMessage::Committed(_)
                    | SequencerMessage::StoreHealthChanged
                    | SequencerMessage::CommitterStopped,
                ) => {
                    unreachable!("events come from event sources, never the mailbox")
                }
                Err(_) => break,
            }
        }
        if self.space.alarms.is_raised(Alarm::Corrupt) {
            // As etcd: no write at all while a hash check's CORRUPT alarm stands (reads go on).
            refuse_all(proposals, || Error::CorruptCluster);
            return Ok(());
        }
        let growing: u64 = proposals.iter().filter(|(p, _)| grows_store(p)).map(|(p, _)| proposal_bytes(p)).sum();
        if growing > 0 && self.space.refuses(&self.store, growing) {
            // Refused before evaluation: nothing of them is written anywhere; the rest go on.
            let (refused, rest): (Vec<_>, Vec<_>) = proposals.into_iter().partition(|(p, _)| grows_store(p));
            refuse_all(refused, || Error::NoSpace);
            proposals = rest;
            if proposals.is_empty() {
                return Ok(());
            }
        }
        if let Some(reason) = &self.failed {
            refuse_all(proposals, || SequencerError::Fenced(reason.clone()).into());
            return Ok(());
        }
        if let Some(reason) = self.outage() {
            // Nothing could be made durable: refuse now rather than queue behind the outage.
            refuse_all(proposals, || Error::StoreUnavailable(reason.clone()));
            return Ok(());
        }
        let view = match read_view(&self.store) {
            Ok(view) => view,
            Err(e) => {
                let e = Arc::new(e);
                refuse_all(proposals, || SequencerError::Fenced(e.clone()).into());
                return Err(SequencerError::Shared(e).into());
            }
        };
        let mut write = GroupWrite::default();
        let mut prevs = Vec::new();
        let mut replies = Vec::with_capacity(proposals.len());
        let mut compaction = None;
        for (proposal, answer) in proposals {
            let outcome =
                self.state.evaluate(&view, proposal).map(|Evaluation { outcome, record, prevs: p, compaction: c }| {
                    if let Some(record) = record {
                        write.records.push(record);
                        prevs.push(p);
                    }
                    if let Some((revision, physical)) = c {
                        compaction = Some((revision, physical || compaction.is_some_and(|(_, p)| p)));
                    }
                    outcome
                });
            replies.push((answer, outcome));
        }
        write.current_revision = self.state.current;
        self.pipeline.started(self.state.current);
        if let Err(flume::SendError(group)) = self.groups.send(PendingGroup { write, prevs, replies, compaction }) {
            let mut group = group;
            group.fail_replies(|| Error::Closed);
            self.finish_group(Committed::Failed(Arc::new(SequencerError::CommitterStopped.into())));
        }
        Ok(())
    }

    /// Why the object store cannot take writes now, if it cannot (sync upload).
    fn outage(&self) -> Option<String> {
        self.health.as_ref().and_then(StoreHealth::outage)
    }

    /// Notes that the oldest group out is durable (its versions are now in the store), or that it
    /// failed, after which the store is unusable and every later write fails.
    fn finish_group(&mut self, committed: Committed) {
        if self.pipeline.out() == 0 {
            return;
        }
        match committed {
            Committed::Durable(revision) => {
                if let Some(durable) = self.pipeline.reported(Report::Durable(revision)) {
                    self.state.in_flight.forget_through(durable);
                }
            }
            Committed::Failed(reason) => {
                self.pipeline.reported(Report::Failed);
                if self.failed.is_none() {
                    tracing::error!(error = %reason, "group commit failed; refusing further writes");
                }
                self.failed = Some(reason);
            }
        }
    }

    fn stop_requested(&mut self, reply: Option<Reply<()>>) {
        self.pipeline.stop();
        if let Some(reply) = reply {
            self.stop_reply = Some(reply);
        }
    }

    /// Stop once stopping and every group out is reported.
    fn flow(&self) -> Flow {
        if self.pipeline.finished() { Flow::Stop } else { Flow::Continue }
    }
}

/// The committed state the group is evaluated against.
fn read_view(store: &Store) -> Result<crate::mvcc::store::ReadView> {
    fail::fail_point!("sequencer-read-view", |_| Err(
        crate::error::StoreError::Injected("injected read view failure").into()
    ));
    store.read_view()
}

fn refuse_all(proposals: Vec<(Proposal, Answer)>, error: impl Fn() -> Error) {
    for (_, answer) in proposals {
        answer.fail(error());
    }
}

impl Actor for Sequencer {
    type Message = SequencerMessage;

    fn handle(&mut self, message: SequencerMessage) -> Result<Flow> {
        match message {
            SequencerMessage::Propose(proposal, answer) => self.start_group(proposal, answer)?,
            SequencerMessage::Leases(reply) => reply.send(self.state.leases.all()),
            SequencerMessage::LeaseKeys(id, reply) => reply.send(self.state.leases.keys(id)),
            SequencerMessage::Stop(reply) => self.stop_requested(Some(reply)),
            SequencerMessage::Committed(report) => self.finish_group(report),
            // Read by `accepts` and `start_group`; the event only wakes the actor.
            SequencerMessage::StoreHealthChanged => {}
            // The committer stopped (its input closed: the uploader gave up): the groups still out
            // will never be reported, and were never acknowledged.
            SequencerMessage::CommitterStopped => {
                if self.pipeline.abandon_all() > 0 && self.failed.is_none() {
                    self.failed = Some(Arc::new(SequencerError::CommitterStopped.into()));
                }
            }
        }
        Ok(self.flow())
    }

    /// A full pipeline takes no proposal, except during an object-store outage: then proposals are
    /// refused at once (see `start_group`) rather than left waiting.
    fn accepts(&self) -> bool {
        self.pipeline.accepts(self.outage().is_some())
    }

    fn mailbox_closed(&mut self) -> Result<Flow> {
        self.stop_requested(None);
        Ok(self.flow())
    }

    fn cleanup(self) {
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "final sync failed");
        }
        let Sequencer { groups, threads, stop_reply, .. } = self;
        drop(groups); // the committer ends, dropping the compactor's last sender
        for thread in threads {
            let _ = thread.join();
        }
        if let Some(reply) = stop_reply {
            reply.send(());
        }
    }
}
