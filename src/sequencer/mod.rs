//! The sequencer actor: the node's only writer. It takes every waiting proposal as one group,
//! evaluates them in order (see [`eval`]), assigns revisions, and hands the group to the committer
//! thread, which writes it as one fjall batch with one sync and then releases the group's replies
//! itself (one thread hop fewer per write than bouncing back through the sequencer). While a group
//! syncs the next one is evaluated against the in-flight layer (pipelining); the committer takes
//! groups in order, so replies leave in revision order. Physical compaction runs on its own thread.

pub mod eval;
#[cfg(test)]
mod eval_tests;
#[cfg(test)]
mod failure_tests;
pub mod leases;
pub mod validate;

use std::collections::VecDeque;
use std::sync::Arc;

use eval::{Evaluation, SequencerState};
use leases::LeaseTable;
pub use validate::Limits;

use crate::alarms::{Alarm, Alarms};
use crate::error::{Error, Result};
use crate::log::LogRecord;
use crate::metrics::CommitStats;
use crate::mvcc::store::GroupWrite;
use crate::mvcc::{Layer, Store, VersionReader};
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;

/// A write (or a compaction) for the sequencer to order.
#[derive(Debug, Clone)]
pub enum Proposal {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
}

/// The sequencer's answer to a [`Proposal`], with the header revision set.
#[derive(Debug, Clone)]
pub enum Outcome {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
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

type Reply = flume::Sender<Result<Outcome>>;

enum Message {
    Propose(Proposal, Reply),
    /// Every lease as (id, granted TTL).
    Leases(flume::Sender<Vec<(i64, i64)>>),
    /// The keys attached to a lease (`None`: no such lease).
    LeaseKeys(i64, flume::Sender<Option<Vec<Vec<u8>>>>),
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

    /// Every lease as (id, granted TTL), as of every write assigned so far.
    pub async fn leases(&self) -> Result<Vec<(i64, i64)>> {
        let (reply, answer) = flume::bounded(1);
        self.mailbox.send_async(Message::Leases(reply)).await.map_err(|_| Error::Closed)?;
        answer.recv_async().await.map_err(|_| Error::Closed)
    }

    /// The keys attached to lease `id`, in key order; `None` if there is no such lease.
    pub async fn lease_keys(&self, id: i64) -> Result<Option<Vec<Vec<u8>>>> {
        let (reply, answer) = flume::bounded(1);
        self.mailbox.send_async(Message::LeaseKeys(id, reply)).await.map_err(|_| Error::Closed)?;
        answer.recv_async().await.map_err(|_| Error::Closed)
    }

    /// How many proposals wait in the mailbox, read without holding it open (for `/metrics`).
    pub fn queue_depth(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let mailbox = self.mailbox.downgrade();
        move || mailbox.upgrade().map_or(0, |mailbox| mailbox.len())
    }

    /// The limits proposals are validated against.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Asks the sequencer to finish what is queued and stop; waits until it has.
    pub async fn stop(&self) {
        let (done, stopped) = flume::bounded(1);
        if self.mailbox.send_async(Message::Stop(done)).await.is_ok() {
            let _ = stopped.recv_async().await;
        }
    }
}

/// A group evaluated but not yet committed locally, as the uploader holds it in sync-upload mode:
/// it is committed (and its replies released) only once the uploader passes it on.
pub struct PendingGroup(CommitJob);

impl PendingGroup {
    /// The group's records, in commit order (empty for a group of failed or read-only proposals).
    pub fn records(&self) -> &[LogRecord] {
        &self.0.write.records
    }

    /// Answers every caller still waiting with `error()` now; the group itself goes on and is
    /// committed if it is uploaded later (so the callers' outcome is unknown, as with etcd's timeouts).
    pub fn fail_replies(&mut self, error: impl Fn() -> Error) {
        for (reply, _) in self.0.replies.drain(..) {
            let _ = reply.send(Err(error()));
        }
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
    changed: flume::Receiver<()>,
}

/// The uploader's side of [`StoreHealth`].
pub struct StoreHealthReporter {
    state: tokio::sync::watch::Sender<Option<String>>,
    /// Capacity 1, and a full one is left as it is: one pending wake-up says enough.
    changed: flume::Sender<()>,
}

/// A reporter and the health it sets, starting healthy.
pub fn store_health() -> (StoreHealthReporter, StoreHealth) {
    let (state_tx, state) = tokio::sync::watch::channel(None);
    let (changed_tx, changed) = flume::bounded(1);
    (StoreHealthReporter { state: state_tx, changed: changed_tx }, StoreHealth { state, changed })
}

impl StoreHealthReporter {
    /// Sets the store's state; returns whether it changed from healthy to failing.
    pub fn set(&self, outage: Option<String>) -> bool {
        let was_healthy = self.state.borrow().is_none();
        let newly_failing = was_healthy && outage.is_some();
        self.state.send_replace(outage);
        let _ = self.changed.try_send(());
        newly_failing
    }
}

impl StoreHealth {
    /// Why the store cannot take writes now, if it cannot.
    fn outage(&self) -> Option<String> {
        self.state.borrow().clone()
    }
}

/// One group for the committer thread: the batch, and the replies it releases once the batch is durable.
struct CommitJob {
    write: GroupWrite,
    /// Per record, per event: the key's version before it.
    prevs: Vec<Vec<Option<KeyValue>>>,
    replies: Vec<(Reply, Result<Outcome>)>,
    /// A compaction in this group, and whether its caller waits for the physical removal.
    compaction: Option<(i64, bool)>,
}

/// What the committer reports after each group: its last revision, or why the commit failed.
type Committed = std::result::Result<i64, String>;

/// The sequencer actor: state, mailbox and the threads it owns.
pub struct Sequencer {
    store: Arc<Store>,
    state: SequencerState,
    mailbox: flume::Receiver<Message>,
    /// Where groups go: the committer, or the uploader first (sync upload).
    committer: GroupSink,
    committed: flume::Receiver<Committed>,
    /// The object store's health, in sync-upload mode.
    health: Option<StoreHealth>,
    /// Last revision of each group handed to the committer and not yet reported durable.
    in_flight: VecDeque<i64>,
    group_proposals_max: usize,
    groups_in_flight_max: usize,
    /// Set when a commit failed: the store is unusable and every later write fails.
    failed: Option<String>,
    /// Refuses writes that grow the store when the disk is (nearly) full.
    space: SpaceGuard,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What keeps writes from filling the disk: a floor of free bytes and etcd's space quota, checked
/// before a group that grows the store is evaluated (so nothing of a refused write reaches object
/// storage or the store), and the NOSPACE alarm they raise, which refuses such writes until an
/// operator disarms it (as etcd's does).
#[derive(Clone, Debug)]
pub struct SpaceGuard {
    pub alarms: Alarms,
    /// Bytes the data directory's file system keeps free (`--disk-free-min-bytes`).
    pub free_min_bytes: u64,
    /// The most data the store may hold (`--quota-backend-bytes`; `None`: no quota).
    pub quota_bytes: Option<u64>,
    /// The store's data as last measured, and what groups added since (an upper bound of it now).
    measured: DataEstimate,
}

/// The store's data between measurements: measuring walks every keyspace's tables, so it is done at
/// most every [`DATA_MEASURE_INTERVAL`], and at once whenever the estimate comes near the quota (a
/// write is never refused on an estimate).
#[derive(Clone, Debug, Default)]
struct DataEstimate {
    at: Option<std::time::Instant>,
    bytes: u64,
}

/// How long an estimate of the store's data is trusted far from the quota.
const DATA_MEASURE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl SpaceGuard {
    pub fn new(alarms: Alarms, free_min_bytes: u64, quota_bytes: Option<u64>) -> SpaceGuard {
        SpaceGuard { alarms, free_min_bytes, quota_bytes, measured: DataEstimate::default() }
    }

    /// The store's data plus `bytes`, measured again if the estimate is old or would pass `quota`.
    fn data_with(&mut self, store: &Store, bytes: u64, quota: u64) -> u64 {
        let estimate = &mut self.measured;
        let fresh = estimate.at.is_some_and(|at| at.elapsed() < DATA_MEASURE_INTERVAL);
        if !fresh || estimate.bytes.saturating_add(bytes) > quota {
            *estimate = DataEstimate { at: Some(std::time::Instant::now()), bytes: store.data_bytes() };
        }
        estimate.bytes = estimate.bytes.saturating_add(bytes);
        estimate.bytes
    }

    /// Whether writes of `bytes` that grow the store must be refused now; raises NOSPACE when the
    /// disk is found short.
    fn refuses(&mut self, store: &Store, bytes: u64) -> bool {
        if self.alarms.is_raised(Alarm::NoSpace) {
            return true;
        }
        if let Some(quota) = self.quota_bytes {
            let data = self.data_with(store, bytes, quota);
            if data > quota {
                if self.alarms.raise(Alarm::NoSpace) {
                    tracing::error!(
                        data_bytes = data,
                        quota_bytes = quota,
                        "NOSPACE alarm raised: the store reached its space quota (--quota-backend-bytes); writes that \
                         grow it are refused until it is compacted and defragmented and the alarm disarmed"
                    );
                }
                return true;
            }
        }
        let free = match store.free_bytes() {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the free space of the data directory");
                return false;
            }
        };
        if free >= self.free_min_bytes.saturating_add(bytes) {
            return false;
        }
        if self.alarms.raise(Alarm::NoSpace) {
            tracing::error!(
                free_bytes = free,
                floor_bytes = self.free_min_bytes,
                "NOSPACE alarm raised: the data directory's disk is nearly full; writes that grow the store are \
                 refused until space is freed and the alarm disarmed (etcdctl alarm disarm)"
            );
        }
        true
    }
}

/// Whether a proposal adds data to the store (etcd refuses these while NOSPACE is raised): a put,
/// a txn with a put in any branch at any depth, a lease grant.
fn grows_store(proposal: &Proposal) -> bool {
    use crate::proto::etcdserverpb::request_op::Request;
    match proposal {
        Proposal::Put(_) | Proposal::LeaseGrant(_) => true,
        Proposal::DeleteRange(_) | Proposal::Compact(_) | Proposal::LeaseRevoke(_) => false,
        Proposal::Txn(txn) => {
            let mut pending = vec![txn];
            while let Some(txn) = pending.pop() {
                for op in txn.success.iter().chain(&txn.failure) {
                    match &op.request {
                        Some(Request::RequestPut(_)) => return true,
                        Some(Request::RequestTxn(nested)) => pending.push(nested),
                        _ => {}
                    }
                }
            }
            false
        }
    }
}

/// Bytes a proposal adds at most (its encoded size: keys and values dominate).
fn proposal_bytes(proposal: &Proposal) -> u64 {
    use prost::Message as _;
    let len = match proposal {
        Proposal::Put(r) => r.encoded_len(),
        Proposal::DeleteRange(r) => r.encoded_len(),
        Proposal::Txn(r) => r.encoded_len(),
        Proposal::Compact(r) => r.encoded_len(),
        Proposal::LeaseGrant(r) => r.encoded_len(),
        Proposal::LeaseRevoke(r) => r.encoded_len(),
    };
    len as u64
}

/// A physical compaction for the compactor thread, with a reply to release when it is done.
struct CompactJob {
    revision: i64,
    reply: Option<(Reply, Result<Outcome>)>,
}

enum GroupSink {
    Committer(flume::Sender<CommitJob>),
    Uploader(flume::Sender<PendingGroup>),
}

impl GroupSink {
    /// Hands `job` on; gives it back if the receiver is gone.
    fn send(&self, job: CommitJob) -> std::result::Result<(), CommitJob> {
        match self {
            GroupSink::Committer(tx) => tx.send(job).map_err(|flume::SendError(job)| job),
            GroupSink::Uploader(tx) => tx.send(PendingGroup(job)).map_err(|flume::SendError(group)| group.0),
        }
    }
}

enum Event {
    Message(Option<Message>),
    Committed(Committed),
    /// The uploader declared an outage (sync upload).
    OutageRaised,
}

/// How proposals are grouped: at most `proposals_max` in one group commit, and at most
/// `in_flight_max` groups evaluated but not yet durable (1 disables pipelining).
#[derive(Debug, Clone, Copy)]
pub struct Grouping {
    pub proposals_max: usize,
    pub in_flight_max: usize,
}

impl Sequencer {
    /// Creates the sequencer for `store` and its committer and compactor threads; every committed
    /// group goes to each of `subscribers`. With an upload stage, groups are uploaded before they are
    /// committed (sync upload).
    pub fn new(
        store: Arc<Store>,
        limits: Limits,
        grouping: Grouping,
        subscribers: Vec<flume::Sender<Arc<CommittedGroup>>>,
        upload: Option<UploadStage>,
        space: SpaceGuard,
        stats: Arc<CommitStats>,
    ) -> Result<(Sequencer, SequencerHandle)> {
        let view = store.read_view()?;
        let current = view.current_revision();
        let sub = match store.last_log_position()? {
            Some((revision, sub)) if revision == current => sub,
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
        let (mailbox_tx, mailbox) = flume::bounded(MAILBOX_CAPACITY);
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
        // Unbounded, but bounded by groups_in_flight_max.
        let (committer, groups, health) = match upload {
            None => {
                let (tx, rx) = flume::unbounded::<CommitJob>();
                (GroupSink::Committer(tx), rx, None)
            }
            Some(stage) => {
                let (tx, rx) = flume::unbounded::<CommitJob>();
                let from_uploader = stage.from_uploader;
                // The uploader's groups, unwrapped, in the order it passes them on.
                std::thread::Builder::new()
                    .name("t4-uploaded".into())
                    .spawn(move || {
                        for group in from_uploader.iter() {
                            if tx.send(group.0).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(|e| Error::Runtime(format!("upload relay thread: {e}")))?;
                (GroupSink::Uploader(stage.to_uploader), rx, Some(stage.health))
            }
        };
        let uploaded = health.is_some();
        let (committed_tx, committed) = flume::unbounded();
        let commit_store = store.clone();
        let commit_alarms = space.alarms.clone();
        let committer_thread = std::thread::Builder::new()
            .name("t4-committer".into())
            .spawn(move || {
                // Set by the first failed commit: every later group is refused here at once (the
                // sequencer learns of the failure only after its caller may have sent more).
                let mut failed: Option<String> = None;
                for first in groups.iter() {
                    // Groups already waiting are committed together: one batch, one sync.
                    let mut jobs = vec![first];
                    while jobs.len() < COMMIT_MERGE_MAX
                        && let Ok(job) = groups.try_recv()
                    {
                        jobs.push(job);
                    }
                    let committed = match &failed {
                        Some(reason) => refuse(jobs, reason, uploaded),
                        None => commit(&commit_store, jobs, uploaded, &compactor, &subscribers, &commit_alarms, &stats),
                    };
                    if failed.is_none()
                        && let Some(Err(reason)) = committed.iter().find(|report| report.is_err())
                    {
                        failed = Some(reason.clone());
                    }
                    for report in committed {
                        if committed_tx.send(report).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::Runtime(format!("committer thread: {e}")))?;
        let sequencer = Sequencer {
            store,
            state,
            mailbox,
            committer,
            committed,
            health,
            in_flight: VecDeque::new(),
            group_proposals_max: grouping.proposals_max.max(1),
            groups_in_flight_max: grouping.in_flight_max.max(1),
            failed: None,
            space,
            threads: vec![committer_thread, compactor_thread],
        };
        Ok((sequencer, SequencerHandle { mailbox: mailbox_tx, limits }))
    }

    /// Runs the actor until it is stopped or every handle is gone.
    pub async fn run(mut self) {
        let mut stop_reply = None;
        loop {
            // During an object-store outage new proposals are refused at once (see `start_group`), so
            // the mailbox is read even with the pipeline full.
            let can_start_group = self.in_flight.len() < self.groups_in_flight_max || self.outage_active();
            let event = if stop_reply.is_some() || !can_start_group {
                if self.in_flight.is_empty() {
                    break;
                }
                let committed =
                    async { Event::Committed(self.committed.recv_async().await.unwrap_or(Err(COMMITTER_GONE.into()))) };
                match (&self.health, stop_reply.is_some()) {
                    (Some(health), false) => {
                        let outage = async {
                            match health.changed.recv_async().await {
                                Ok(()) => Event::OutageRaised,
                                Err(_) => std::future::pending().await,
                            }
                        };
                        futures_lite::future::or(committed, outage).await
                    }
                    _ => committed.await,
                }
            } else if self.in_flight.is_empty() {
                Event::Message(self.mailbox.recv_async().await.ok())
            } else {
                let message = async { Event::Message(self.mailbox.recv_async().await.ok()) };
                let committed =
                    async { Event::Committed(self.committed.recv_async().await.unwrap_or(Err(COMMITTER_GONE.into()))) };
                futures_lite::future::or(committed, message).await
            };
            match event {
                Event::Message(None) => stop_reply = Some(None),
                Event::Message(Some(Message::Stop(done))) => stop_reply = Some(Some(done)),
                Event::Message(Some(query @ (Message::Leases(_) | Message::LeaseKeys(..)))) => self.answer(query),
                Event::Message(Some(Message::Propose(proposal, reply))) => {
                    if let Some(done) = self.start_group(proposal, reply) {
                        stop_reply = Some(Some(done));
                    }
                }
                Event::Committed(result) => self.finish_group(result),
                Event::OutageRaised => {}
            }
        }
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "final sync failed");
        }
        let Sequencer { committer, threads, .. } = self;
        drop(committer); // the committer ends, dropping the compactor's last sender
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
                // Queries see no proposal of this group: none of them is acknowledged yet.
                Ok(query @ (Message::Leases(_) | Message::LeaseKeys(..))) => self.answer(query),
                Ok(Message::Stop(done)) => {
                    stop = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        if self.space.alarms.is_raised(Alarm::Corrupt) {
            // As etcd: no write at all while a hash check's CORRUPT alarm stands (reads go on).
            for (_, reply) in proposals {
                let _ = reply.send(Err(Error::CorruptCluster));
            }
            return stop;
        }
        let growing: u64 = proposals.iter().filter(|(p, _)| grows_store(p)).map(|(p, _)| proposal_bytes(p)).sum();
        if growing > 0 && self.space.refuses(&self.store, growing) {
            // Refused before evaluation: nothing of them is written anywhere; the rest go on.
            let (refused, rest): (Vec<_>, Vec<_>) = proposals.into_iter().partition(|(p, _)| grows_store(p));
            for (_, reply) in refused {
                let _ = reply.send(Err(Error::NoSpace));
            }
            proposals = rest;
            if proposals.is_empty() {
                return stop;
            }
        }
        if let Some(reason) = &self.failed {
            for (_, reply) in proposals {
                let _ = reply.send(Err(Error::Storage(reason.clone())));
            }
            return stop;
        }
        let outage = self.outage_reason();
        if let Some(reason) = outage {
            // Nothing could be made durable: refuse now rather than queue behind the outage.
            for (_, reply) in proposals {
                let _ = reply.send(Err(Error::StoreUnavailable(reason.clone())));
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
        let mut write = GroupWrite::default();
        let mut prevs = Vec::new();
        let mut replies = Vec::with_capacity(proposals.len());
        let mut compaction = None;
        for (proposal, reply) in proposals {
            let outcome = match self.state.evaluate(&view, &proposal) {
                Ok(Evaluation { outcome, record, prevs: p, compaction: c }) => {
                    if let Some(record) = record {
                        write.records.push(record);
                        prevs.push(p);
                    }
                    if let Some((revision, physical)) = c {
                        compaction = Some((revision, physical || compaction.is_some_and(|(_, p)| p)));
                    }
                    Ok(outcome)
                }
                Err(e) => Err(e),
            };
            replies.push((reply, outcome));
        }
        write.current_revision = self.state.current;
        self.in_flight.push_back(self.state.current);
        if let Err(job) = self.committer.send(CommitJob { write, prevs, replies, compaction }) {
            for (reply, _) in job.replies {
                let _ = reply.send(Err(Error::Storage(COMMITTER_GONE.into())));
            }
            self.finish_group(Err(COMMITTER_GONE.into()));
        }
        stop
    }

    /// Why the object store cannot take writes now, if it cannot (sync upload).
    fn outage_reason(&self) -> Option<String> {
        self.health.as_ref().and_then(StoreHealth::outage)
    }

    fn outage_active(&self) -> bool {
        self.outage_reason().is_some()
    }

    /// Answers a query about the state as of every proposal evaluated so far.
    fn answer(&self, query: Message) {
        match query {
            Message::Leases(reply) => {
                let _ = reply.send(self.state.leases.all());
            }
            Message::LeaseKeys(id, reply) => {
                let _ = reply.send(self.state.leases.keys(id));
            }
            Message::Propose(..) | Message::Stop(_) => unreachable!("only queries are answered"),
        }
    }

    /// Notes that the oldest in-flight group is durable (its versions are now in the store), or
    /// that it failed, after which the store is unusable and every later write fails.
    fn finish_group(&mut self, committed: Committed) {
        let Some(last_revision) = self.in_flight.pop_front() else { return };
        match committed {
            Ok(revision) => {
                debug_assert_eq!(revision, last_revision, "the committer reports groups in order");
                self.state.in_flight.forget_through(revision);
            }
            Err(reason) => {
                if self.failed.is_none() {
                    tracing::error!(error = %reason, "group commit failed; refusing further writes");
                }
                self.failed = Some(reason);
            }
        }
    }
}

const COMMITTER_GONE: &str = "committer thread stopped";
/// Groups the committer merges into one batch (and one sync) at most.
const COMMIT_MERGE_MAX: usize = 64;

/// Refuses `jobs` after a failed commit: nothing of them is written here. With sync upload they
/// may be in object storage already (a restart replays them), so their outcome is unknown, as
/// etcd's "request timed out" says; otherwise they failed, and their callers learn why.
fn refuse(jobs: Vec<CommitJob>, reason: &str, uploaded: bool) -> Vec<Committed> {
    jobs.into_iter()
        .map(|job| {
            for (reply, _) in job.replies {
                let error = if uploaded { Error::Timeout } else { Error::Storage(reason.to_string()) };
                let _ = reply.send(Err(error));
            }
            Err(reason.to_string())
        })
        .collect()
}

/// Commits groups on the committer thread as one batch, hands each to every subscriber, then releases
/// its replies in order (holding a physical compaction's reply until the compactor has removed the old versions,
/// as etcd does).
fn commit(
    store: &Store,
    jobs: Vec<CommitJob>,
    uploaded: bool,
    compactor: &flume::Sender<CompactJob>,
    subscribers: &[flume::Sender<Arc<CommittedGroup>>],
    alarms: &Alarms,
    stats: &CommitStats,
) -> Vec<Committed> {
    let mut write = GroupWrite { uploaded, ..Default::default() };
    let mut counts = Vec::with_capacity(jobs.len());
    let mut parts = Vec::with_capacity(jobs.len());
    let proposals: usize = jobs.iter().map(|job| job.replies.len()).sum();
    for CommitJob { write: job_write, prevs, replies, compaction } in jobs {
        counts.push(job_write.records.len());
        write.records.extend(job_write.records);
        write.current_revision = job_write.current_revision;
        parts.push((job_write.current_revision, prevs, replies, compaction));
    }
    let started = std::time::Instant::now();
    let done = {
        let _counting = stats.commit_lock();
        let done = store.commit(&write);
        if done.is_ok() {
            stats.committed(write.records.iter().flat_map(|record| &record.events));
        }
        done
    };
    stats.sync.observe_duration(started.elapsed());
    stats.proposals.observe(proposals as u64);
    if let Err(e) = done {
        if matches!(e, Error::NoSpace) && alarms.raise(Alarm::NoSpace) {
            tracing::error!("NOSPACE alarm raised: the disk filled up during a commit");
        }
        let reason = format!("the database failed a write and takes no more until the node restarts ({e})");
        // The batch may be in the journal all the same (a failed sync, or a sync upload that stored
        // it): its outcome is unknown, as etcd's "request timed out" says, never a definite failure.
        return parts
            .into_iter()
            .map(|(_, _, replies, _)| {
                for (reply, _) in replies {
                    let _ = reply.send(Err(Error::Timeout));
                }
                Err(reason.clone())
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
            let _ = compactor.send(CompactJob { revision, reply: held });
        }
        if !group_records.is_empty() && !subscribers.is_empty() {
            let group = Arc::new(CommittedGroup { records: group_records, prevs });
            for subscriber in subscribers {
                // A subscriber that is gone (its executor stopped) needs nothing more.
                let _ = subscriber.send(group.clone());
            }
        }
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
        reports.push(Ok(current_revision));
    }
    reports
}
