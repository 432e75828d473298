//! The sequencer actor: the node's only writer. It takes every waiting proposal as one group,
//! evaluates them in order (see [`eval`]), assigns revisions, and hands the group to the committer
//! thread, which writes it as one fjall batch with one sync. While a group syncs the next one is
//! evaluated against the in-flight layer (pipelining); completions come back in order, so replies
//! are released in revision order. Physical compaction runs on its own thread.

pub mod eval;
#[cfg(test)]
mod eval_tests;
pub mod validate;

use std::collections::VecDeque;
use std::sync::Arc;

use eval::{Evaluation, SequencerState};
pub use validate::Limits;

use crate::error::{Error, Result};
use crate::mvcc::store::GroupWrite;
use crate::mvcc::{Layer, Store, VersionReader};
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    TxnRequest, TxnResponse,
};

/// A write (or a compaction) for the sequencer to order.
#[derive(Debug, Clone)]
pub enum Proposal {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

/// The sequencer's answer to a [`Proposal`], with the header revision set.
#[derive(Debug, Clone)]
pub enum Outcome {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
}

type Reply = flume::Sender<Result<Outcome>>;

enum Message {
    Propose(Proposal, Reply),
    /// Finish everything queued before this, sync, and stop.
    Stop(flume::Sender<()>),
}

/// Proposals queued for the sequencer at most; a full mailbox makes callers wait (backpressure).
const MAILBOX_CAPACITY: usize = 4096;

/// A cloneable, `Send` handle to the sequencer.
#[derive(Clone)]
pub struct SequencerHandle {
    mailbox: flume::Sender<Message>,
    limits: Limits,
}

impl SequencerHandle {
    /// Validates `proposal`, has the sequencer commit it, and returns its outcome once durable.
    pub async fn propose(&self, proposal: Proposal) -> Result<Outcome> {
        validate::validate(&proposal, self.limits)?;
        let (reply, outcome) = flume::bounded(1);
        self.mailbox.send_async(Message::Propose(proposal, reply)).await.map_err(|_| Error::Closed)?;
        outcome.recv_async().await.map_err(|_| Error::Closed)?
    }

    /// Asks the sequencer to finish what is queued and stop; waits until it has.
    pub async fn stop(&self) {
        let (done, stopped) = flume::bounded(1);
        if self.mailbox.send_async(Message::Stop(done)).await.is_ok() {
            let _ = stopped.recv_async().await;
        }
    }
}

/// One group handed to the committer, waiting for its sync.
struct InFlight {
    last_revision: i64,
    replies: Vec<(Reply, Result<Outcome>)>,
    compaction: Option<(i64, bool)>,
}

/// The sequencer actor: state, mailbox and the threads it owns.
pub struct Sequencer {
    store: Arc<Store>,
    state: SequencerState,
    mailbox: flume::Receiver<Message>,
    committer: flume::Sender<GroupWrite>,
    committed: flume::Receiver<Result<()>>,
    compactor: flume::Sender<CompactJob>,
    in_flight: VecDeque<InFlight>,
    group_proposals_max: usize,
    groups_in_flight_max: usize,
    /// Set when a commit failed: the store is unusable and every later write fails.
    failed: Option<String>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A physical compaction for the compactor thread, with a reply to release when it is done.
struct CompactJob {
    revision: i64,
    reply: Option<(Reply, Result<Outcome>)>,
}

enum Event {
    Message(Option<Message>),
    Committed(Result<()>),
}

impl Sequencer {
    /// Creates the sequencer for `store` and its committer and compactor threads.
    pub fn new(
        store: Arc<Store>,
        limits: Limits,
        group_proposals_max: usize,
        groups_in_flight_max: usize,
    ) -> Result<(Sequencer, SequencerHandle)> {
        let view = store.read_view()?;
        let state = SequencerState {
            current: view.current_revision(),
            compact: view.compact_revision(),
            in_flight: Layer::default(),
        };
        let (mailbox_tx, mailbox) = flume::bounded(MAILBOX_CAPACITY);
        let (committer, groups) = flume::unbounded::<GroupWrite>(); // bounded by groups_in_flight_max
        let (committed_tx, committed) = flume::unbounded();
        let commit_store = store.clone();
        let committer_thread = std::thread::Builder::new()
            .name("t4-committer".into())
            .spawn(move || {
                for group in groups.iter() {
                    if committed_tx.send(commit_store.commit(&group)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Runtime(format!("committer thread: {e}")))?;
        let (compactor, jobs) = flume::unbounded::<CompactJob>();
        let compact_store = store.clone();
        let compactor_thread = std::thread::Builder::new()
            .name("t4-compactor".into())
            .spawn(move || {
                for job in jobs.iter() {
                    let done = compact_store.compact_physically(job.revision);
                    if let Err(e) = &done {
                        tracing::error!(revision = job.revision, error = %e, "physical compaction failed");
                    }
                    if let Some((reply, outcome)) = job.reply {
                        let _ = reply.send(done.and(outcome));
                    }
                }
            })
            .map_err(|e| Error::Runtime(format!("compactor thread: {e}")))?;
        // Finish a compaction a crash interrupted.
        if store.compacted_through()? < state.compact {
            let _ = compactor.send(CompactJob { revision: state.compact, reply: None });
        }
        let sequencer = Sequencer {
            store,
            state,
            mailbox,
            committer,
            committed,
            compactor,
            in_flight: VecDeque::new(),
            group_proposals_max: group_proposals_max.max(1),
            groups_in_flight_max: groups_in_flight_max.max(1),
            failed: None,
            threads: vec![committer_thread, compactor_thread],
        };
        Ok((sequencer, SequencerHandle { mailbox: mailbox_tx, limits }))
    }

    /// Runs the actor until it is stopped or every handle is gone.
    pub async fn run(mut self) {
        let mut stop_reply = None;
        loop {
            let can_start_group = self.in_flight.len() < self.groups_in_flight_max;
            let event = if stop_reply.is_some() || !can_start_group {
                if self.in_flight.is_empty() {
                    break;
                }
                Event::Committed(self.committed.recv_async().await.unwrap_or(Err(Error::Closed)))
            } else if self.in_flight.is_empty() {
                Event::Message(self.mailbox.recv_async().await.ok())
            } else {
                let message = async { Event::Message(self.mailbox.recv_async().await.ok()) };
                let committed =
                    async { Event::Committed(self.committed.recv_async().await.unwrap_or(Err(Error::Closed))) };
                futures_lite::future::or(committed, message).await
            };
            match event {
                Event::Message(None) => stop_reply = Some(None),
                Event::Message(Some(Message::Stop(done))) => stop_reply = Some(Some(done)),
                Event::Message(Some(Message::Propose(proposal, reply))) => {
                    if let Some(done) = self.start_group(proposal, reply) {
                        stop_reply = Some(Some(done));
                    }
                }
                Event::Committed(result) => self.finish_group(result),
            }
        }
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "final sync failed");
        }
        let Sequencer { committer, compactor, threads, .. } = self;
        drop((committer, compactor));
        for thread in threads {
            let _ = thread.join();
        }
        if let Some(Some(done)) = stop_reply {
            let _ = done.send(());
        }
    }

    /// Evaluates `first` and everything else waiting as one group and hands it to the committer.
    /// Returns a stop request found in the mailbox (it is handled after this group).
    fn start_group(&mut self, first: Proposal, reply: Reply) -> Option<flume::Sender<()>> {
        let mut proposals = vec![(first, reply)];
        let mut stop = None;
        while proposals.len() < self.group_proposals_max {
            match self.mailbox.try_recv() {
                Ok(Message::Propose(p, r)) => proposals.push((p, r)),
                Ok(Message::Stop(done)) => {
                    stop = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        if let Some(reason) = &self.failed {
            for (_, reply) in proposals {
                let _ = reply.send(Err(Error::Storage(reason.clone())));
            }
            return stop;
        }
        let view = match self.store.read_view() {
            Ok(view) => view,
            Err(e) => {
                for (_, reply) in proposals {
                    let _ = reply.send(Err(Error::Storage(e.to_string())));
                }
                return stop;
            }
        };
        let mut group = GroupWrite::default();
        let mut replies = Vec::with_capacity(proposals.len());
        let mut compaction = None;
        for (proposal, reply) in proposals {
            let outcome = match self.state.evaluate(&view, &proposal) {
                Ok(Evaluation { outcome, record, compaction: c }) => {
                    group.records.extend(record);
                    if let Some((revision, physical)) = c {
                        group.compact_revision = Some(revision);
                        compaction = Some((revision, physical || compaction.is_some_and(|(_, p)| p)));
                    }
                    Ok(outcome)
                }
                Err(e) => Err(e),
            };
            replies.push((reply, outcome));
        }
        group.current_revision = self.state.current;
        self.in_flight.push_back(InFlight { last_revision: self.state.current, replies, compaction });
        if self.committer.send(group).is_err() {
            self.finish_group(Err(Error::Storage("committer thread stopped".into())));
        }
        stop
    }

    /// Releases the replies of the oldest in-flight group once its commit finished.
    fn finish_group(&mut self, result: Result<()>) {
        let Some(group) = self.in_flight.pop_front() else { return };
        match result {
            Ok(()) => {
                self.state.in_flight.forget_through(group.last_revision);
                let mut replies = group.replies;
                if let Some((revision, physical)) = group.compaction {
                    // A physical compaction's reply waits for the removal (as etcd's does).
                    let held = if physical {
                        let at = replies.iter().rposition(|(_, o)| matches!(o, Ok(Outcome::Compact(_))));
                        at.map(|i| replies.remove(i))
                    } else {
                        None
                    };
                    let _ = self.compactor.send(CompactJob { revision, reply: held });
                }
                for (reply, outcome) in replies {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; refusing further writes");
                let reason = e.to_string();
                self.failed = Some(reason.clone());
                for (reply, _) in group.replies {
                    let _ = reply.send(Err(Error::Storage(reason.clone())));
                }
            }
        }
    }
}
