//! The sequencer actor: the node's only writer. It takes every waiting proposal as one group,
//! evaluates them in order (see [`eval`]), assigns revisions, and hands the group to the committer
//! (`committer.rs`), which writes it as one fjall batch with one sync and then releases the group's
//! replies itself (one thread hop fewer per write than bouncing back through the sequencer). While a
//! group syncs the next one is evaluated against the in-flight layer (pipelining); the committer
//! takes groups in order, so replies leave in revision order. Physical compaction runs on its own
//! thread. Invariants: revisions are assigned here alone, contiguously; a group reaches the
//! committer (or the uploader) whole and in order; nothing is acknowledged before it is durable.

mod actor;
mod committer;
pub mod error;
pub mod eval;
#[cfg(test)]
mod eval_tests;
#[cfg(test)]
mod failure_tests;
pub mod leases;
mod pipeline;
mod space;

pub use actor::Sequencer;
pub use committer::PendingGroup;
pub use space::SpaceGuard;

use crate::actor::{Mailbox, Reply, WhenFull};
use crate::error::{Error, Result};
use crate::ids::{LeaseId, Revision};
use crate::kv::{Compaction, DeleteRange, DeleteResult, GrantedLease, LeaseGrant, Put, PutResult, Txn, TxnResult};
use crate::log::LogRecord;
use crate::proto::mvccpb::KeyValue;

/// A write (or a compaction) for the sequencer to order.
#[derive(Debug)]
pub enum Proposal {
    Put(Put),
    DeleteRange(DeleteRange),
    Txn(Txn),
    Compact(Compaction),
    LeaseGrant(LeaseGrant),
    LeaseRevoke(LeaseId),
}

/// The sequencer's answer to a [`Proposal`]. Compactions and revokes answer the revision after them.
#[derive(Debug)]
pub enum Outcome {
    Put(PutResult),
    DeleteRange(DeleteResult),
    Txn(TxnResult),
    Compact(Revision),
    LeaseGrant(GrantedLease),
    LeaseRevoke(Revision),
}

/// A group made durable, as every subscriber (the shard actors; later the uploader and replicator)
/// receives it: one shared allocation, sent before the group's replies are released, so anything a
/// client does after seeing its write acknowledged reaches a subscriber after the group itself.
#[derive(Debug)]
pub struct CommittedGroup {
    /// The group's records in commit order.
    pub records: Vec<LogRecord>,
    /// For each record, for each of its events: the key's version before it (watchers' `prev_kv`).
    pub prevs: Vec<Vec<Option<KeyValue>>>,
}

/// Where committed groups go. Bounded per subscriber: a subscriber that falls this far behind makes
/// the committer wait, which holds back acknowledgements (backpressure) rather than dropping a group.
pub const SUBSCRIBER_GROUPS_MAX: usize = 1024;

/// Proposals queued for the sequencer at most; a full mailbox makes callers wait (backpressure: the
/// sequencer drains it a group at a time).
const MAILBOX: (usize, WhenFull) = (4096, WhenFull::Wait);
/// Compactions queued for the compactor at most; one comes per compaction request, so the committer
/// waiting on a full one (holding back acknowledgements) would take thousands of compactions queued.
const COMPACTOR_MAILBOX: (usize, WhenFull) = (64, WhenFull::Wait);

/// Where one proposal's answer goes, typed by the kind of proposal, so callers get their own
/// response type and nobody matches on an [`Outcome`] again.
pub enum Answer {
    Put(Reply<Result<PutResult>>),
    DeleteRange(Reply<Result<DeleteResult>>),
    Txn(Reply<Result<TxnResult>>),
    Compact(Reply<Result<Revision>>),
    LeaseGrant(Reply<Result<GrantedLease>>),
    LeaseRevoke(Reply<Result<Revision>>),
}

impl Answer {
    /// Answers with `outcome`, which evaluation made for this very proposal (same kind).
    pub fn send(self, outcome: Result<Outcome>) {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => return self.fail(e),
        };
        match (self, outcome) {
            (Answer::Put(reply), Outcome::Put(r)) => reply.send(Ok(r)),
            (Answer::DeleteRange(reply), Outcome::DeleteRange(r)) => reply.send(Ok(r)),
            (Answer::Txn(reply), Outcome::Txn(r)) => reply.send(Ok(r)),
            (Answer::Compact(reply), Outcome::Compact(r)) => reply.send(Ok(r)),
            (Answer::LeaseGrant(reply), Outcome::LeaseGrant(r)) => reply.send(Ok(r)),
            (Answer::LeaseRevoke(reply), Outcome::LeaseRevoke(r)) => reply.send(Ok(r)),
            (_, outcome) => unreachable!("evaluation answers each proposal with its own kind, not {outcome:?}"),
        }
    }

    /// Answers with an error.
    pub fn fail(self, error: Error) {
        match self {
            Answer::Put(reply) => reply.send(Err(error)),
            Answer::DeleteRange(reply) => reply.send(Err(error)),
            Answer::Txn(reply) => reply.send(Err(error)),
            Answer::Compact(reply) => reply.send(Err(error)),
            Answer::LeaseGrant(reply) => reply.send(Err(error)),
            Answer::LeaseRevoke(reply) => reply.send(Err(error)),
        }
    }
}

/// The sequencer's messages: requests in its mailbox, and events from its own committer and uploader.
pub enum SequencerMessage {
    Propose(Proposal, Answer),
    /// Every lease as (id, granted TTL).
    Leases(Reply<Vec<(LeaseId, i64)>>),
    /// The keys attached to a lease (`None`: no such lease).
    LeaseKeys(LeaseId, Reply<Option<Vec<Vec<u8>>>>),
    /// Finish everything queued before this, sync, and stop.
    Stop(Reply<()>),
    /// Event: the committer's report on the oldest group in flight.
    Committed(committer::Committed),
    /// Event: the object store's health changed (sync upload).
    StoreHealthChanged,
    /// Event: the committer's reports ended (it stopped).
    CommitterStopped,
}

/// A cloneable, `Send` handle to the sequencer: one typed method per kind of write.
#[derive(Clone)]
pub struct SequencerHandle {
    mailbox: Mailbox<SequencerMessage>,
}

impl SequencerHandle {
    /// Has the sequencer order `proposal` (validated by the caller, `src/etcd/validate.rs`);
    /// `answer` builds the typed reply.
    async fn propose<R>(&self, proposal: Proposal, answer: impl FnOnce(Reply<Result<R>>) -> Answer) -> Result<R> {
        self.mailbox.ask(|reply| SequencerMessage::Propose(proposal, answer(reply))).await?
    }

    pub async fn put(&self, put: Put) -> Result<PutResult> {
        self.propose(Proposal::Put(put), Answer::Put).await
    }

    pub async fn delete_range(&self, delete: DeleteRange) -> Result<DeleteResult> {
        self.propose(Proposal::DeleteRange(delete), Answer::DeleteRange).await
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.propose(Proposal::Txn(txn), Answer::Txn).await
    }

    /// Compacts the history; answers the current revision.
    pub async fn compact(&self, compaction: Compaction) -> Result<Revision> {
        self.propose(Proposal::Compact(compaction), Answer::Compact).await
    }

    pub async fn lease_grant(&self, grant: LeaseGrant) -> Result<GrantedLease> {
        self.propose(Proposal::LeaseGrant(grant), Answer::LeaseGrant).await
    }

    /// Revokes lease `id`, deleting its keys at one revision; answers the revision after it.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.propose(Proposal::LeaseRevoke(id), Answer::LeaseRevoke).await
    }

    /// Every lease as (id, granted TTL), as of every write assigned so far.
    pub async fn leases(&self) -> Result<Vec<(LeaseId, i64)>> {
        self.mailbox.ask(SequencerMessage::Leases).await
    }

    /// The keys attached to lease `id`, in key order; `None` if there is no such lease.
    pub async fn lease_keys(&self, id: LeaseId) -> Result<Option<Vec<Vec<u8>>>> {
        self.mailbox.ask(|reply| SequencerMessage::LeaseKeys(id, reply)).await
    }

    /// How many proposals wait in the mailbox, read without holding it open (for `/metrics`).
    pub fn queue_depth(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        self.mailbox.depth_probe()
    }

    /// Asks the sequencer to finish what is queued and stop; waits until it has.
    pub async fn stop(&self) {
        let _ = self.mailbox.ask(SequencerMessage::Stop).await;
    }
}

/// Sync upload: the sequencer hands each group to the uploader instead of the committer, and the
/// committer takes groups back from the uploader, in order, once they are stored.
pub struct UploadStage {
    pub to_uploader: flume::Sender<PendingGroup>,
    pub from_uploader: flume::Receiver<PendingGroup>,
    /// The object store's health as the uploader sees it: new proposals are refused at once while
    /// it cannot take writes.
    pub health: StoreHealth,
}

/// The sync uploader's word on object storage, as the sequencer reads it: `Some(reason)` while
/// writes cannot be made durable. Only the newest state matters, so it is a watch (one value, never
/// a queue), plus a wake-up for a sequencer waiting on a full pipeline.
pub struct StoreHealth {
    state: tokio::sync::watch::Receiver<Option<String>>,
    changed: flume::Receiver<SequencerMessage>,
}

/// The uploader's side of [`StoreHealth`].
pub struct StoreHealthReporter {
    state: tokio::sync::watch::Sender<Option<String>>,
    /// Capacity 1, dropping the newest: one pending wake-up says enough.
    changed: Mailbox<SequencerMessage>,
}

/// A reporter and the health it sets, starting healthy.
pub fn store_health() -> (StoreHealthReporter, StoreHealth) {
    let (state_tx, state) = tokio::sync::watch::channel(None);
    let (changed_tx, changed) = crate::actor::mailbox(1, WhenFull::DropNewest);
    (StoreHealthReporter { state: state_tx, changed: changed_tx }, StoreHealth { state, changed })
}

impl StoreHealthReporter {
    /// Sets the store's state; returns whether it changed from healthy to failing.
    pub fn set(&self, outage: Option<String>) -> bool {
        let was_healthy = self.state.borrow().is_none();
        let newly_failing = was_healthy && outage.is_some();
        self.state.send_replace(outage);
        // A sequencer that is gone needs no wake-up.
        let _ = self.changed.tell_blocking(SequencerMessage::StoreHealthChanged);
        newly_failing
    }
}

impl StoreHealth {
    /// Why the store cannot take writes now, if it cannot.
    fn outage(&self) -> Option<String> {
        self.state.borrow().clone()
    }

    /// The wake-ups, as an event source of the sequencer.
    fn changes(&self) -> flume::Receiver<SequencerMessage> {
        self.changed.clone()
    }
}

/// How proposals are grouped: at most `proposals_max` in one group commit, and at most
/// `in_flight_max` groups evaluated but not yet durable (1 disables pipelining).
#[derive(Debug, Clone, Copy)]
pub struct Grouping {
    pub proposals_max: usize,
    pub in_flight_max: usize,
}
