//! The shard actor: one per core. It owns the watchers of the watch streams that core serves and the
//! leases whose `id % cores` is that core. Every committed group reaches every shard (one shared
//! `Arc`), before the group's writes are acknowledged; the shard matches its watchers, queues their
//! events, and starts, renews and expires its leases' timers.
//!
//! Invariants: a synced watcher has received every matching event up to the shard's `current`
//! revision; a watcher that is behind has received every matching event below its `next_rev` and
//! none above, and its stream's catch-up task reads the rest from the log until it is synced again.
//! Nothing here waits on a client: queues are filled without waiting, and a stream whose queue is
//! over its byte budget gets no live events (its watchers fall behind instead).

mod index;
mod leases;
mod outbox;
mod watch;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{Stream, StreamExt};
use index::WatcherIndex;
use leases::LeaseTimers;
pub use leases::LeaseTtl;
pub use outbox::Outbox;
use watch::{StreamId, WatchStream, Watcher, WatcherKey, fragments, to_event};

use crate::config::{LEASE_REVOKES_PER_TICK_MAX, LEASE_TICK_MS, WATCH_CATCH_UP_BYTES_MAX, WATCH_STREAM_BUFFER_BYTES};
use crate::error::{Error, Result};
use crate::log::{LogEvent, LogRecord};
use crate::mvcc::range::key_value;
use crate::mvcc::{KeySpan, RangeEnd, Store, VersionReader};
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{LeaseRevokeRequest, ResponseHeader, WatchRequest, WatchResponse};
use crate::proto::mvccpb::KeyValue;
use crate::runtime::blocking::BlockingPool;
use crate::sequencer::{CommittedGroup, Proposal, SequencerHandle};

/// The requests of one watch stream (a gRPC stream, or an embedded caller's channel).
pub type WatchRequests = Pin<Box<dyn Stream<Item = std::result::Result<WatchRequest, tonic::Status>> + Send>>;

/// Requests queued for a shard at most; a full mailbox makes handlers wait (backpressure).
const MAILBOX_CAPACITY: usize = 4096;

enum ShardMessage {
    /// Serve a new watch stream.
    OpenStream { requests: WatchRequests, outbox: Outbox },
    /// Renew a lease: its TTL, or `None` if it does not exist (or expired); and the revision.
    KeepAlive { id: i64, reply: flume::Sender<(Option<i64>, i64)> },
    /// A lease's TTLs, or `None` if it does not exist; and the revision.
    TimeToLive { id: i64, reply: flume::Sender<(Option<LeaseTtl>, i64)> },
}

/// A cloneable, `Send` handle to one shard.
#[derive(Clone)]
pub struct ShardHandle {
    mailbox: flume::Sender<ShardMessage>,
}

impl ShardHandle {
    /// Has the shard serve a watch stream: it reads `requests` and queues responses on `outbox`.
    pub async fn open_stream(&self, requests: WatchRequests, outbox: Outbox) -> Result<()> {
        self.mailbox.send_async(ShardMessage::OpenStream { requests, outbox }).await.map_err(|_| Error::Closed)
    }

    /// Renews lease `id`; returns its TTL (`None`: no such lease, or it expired) and the revision.
    pub async fn keep_alive(&self, id: i64) -> Result<(Option<i64>, i64)> {
        let (reply, answer) = flume::bounded(1);
        self.mailbox.send_async(ShardMessage::KeepAlive { id, reply }).await.map_err(|_| Error::Closed)?;
        answer.recv_async().await.map_err(|_| Error::Closed)
    }

    /// The TTLs of lease `id` (`None`: no such lease) and the revision.
    pub async fn time_to_live(&self, id: i64) -> Result<(Option<LeaseTtl>, i64)> {
        let (reply, answer) = flume::bounded(1);
        self.mailbox.send_async(ShardMessage::TimeToLive { id, reply }).await.map_err(|_| Error::Closed)?;
        answer.recv_async().await.map_err(|_| Error::Closed)
    }
}

/// The shard that owns lease `id`.
pub fn lease_owner(id: i64, shards: usize) -> usize {
    id.rem_euclid(shards.max(1) as i64) as usize
}

/// What a shard needs from the rest of the node.
#[derive(Clone)]
pub struct ShardContext {
    pub store: Arc<Store>,
    pub reads: BlockingPool,
    pub sequencer: SequencerHandle,
    /// Watch responses of watchers asking for fragments are split below this size (etcd splits at
    /// its gRPC receive limit: `--max-request-bytes` plus the gRPC overhead allowance).
    pub fragment_bytes: usize,
    /// How often watchers that asked for progress notifications get one when idle.
    pub progress_interval: Duration,
    /// Where the shard publishes its watch streams and watchers, and counts deferred events.
    pub metrics: crate::metrics::Metrics,
}

/// A shard before it starts on its core: everything in it is `Send`.
pub struct ShardActor {
    index: usize,
    shards: usize,
    mailbox: flume::Receiver<ShardMessage>,
    groups: flume::Receiver<Arc<CommittedGroup>>,
    context: ShardContext,
}

impl ShardActor {
    /// Shard `index` of `shards`; it receives committed groups on `groups`.
    pub fn new(
        index: usize,
        shards: usize,
        groups: flume::Receiver<Arc<CommittedGroup>>,
        context: ShardContext,
    ) -> (ShardActor, ShardHandle) {
        let (tx, mailbox) = flume::bounded(MAILBOX_CAPACITY);
        (ShardActor { index, shards, mailbox, groups, context }, ShardHandle { mailbox: tx })
    }

    /// Runs the shard on the current executor until the node stops: `shutdown` closes every watch
    /// stream; the end of the committed-group channel (the sequencer stopped) ends the actor.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let ShardActor { index, shards, mailbox, groups, context } = self;
        let shard = match Shard::start(index, shards, groups.clone(), context) {
            Ok(shard) => shard,
            Err(e) => {
                tracing::error!(shard = index, error = %e, "shard cannot start");
                return;
            }
        };
        let ticker = glommio::spawn_local(shard.clone().tick());
        let mut mailbox_open = true;
        loop {
            enum Next {
                Group(Option<Arc<CommittedGroup>>),
                Message(Option<ShardMessage>),
                Shutdown,
            }
            let stopped = shard.0.borrow().stopped;
            let group = async { Next::Group(groups.recv_async().await.ok()) };
            let message = async {
                if !mailbox_open {
                    return futures_lite::future::pending().await;
                }
                Next::Message(mailbox.recv_async().await.ok())
            };
            let stop_requested = async {
                if stopped || shutdown.wait_for(|stop| *stop).await.is_err() {
                    return futures_lite::future::pending().await;
                }
                Next::Shutdown
            };
            match futures_lite::future::or(group, futures_lite::future::or(message, stop_requested)).await {
                Next::Group(Some(group)) => shard.apply_group(&group),
                Next::Group(None) => break,
                Next::Message(Some(message)) => {
                    shard.drain_groups();
                    shard.handle(message);
                }
                Next::Message(None) => mailbox_open = false,
                Next::Shutdown => shard.stop(),
            }
        }
        shard.stop();
        // Every task holding the shard ends once it is stopped; wait for the ticker, the last
        // long-lived one, so the store is released when the executor ends.
        ticker.await;
    }
}

/// The shard's state, shared by its tasks on one core.
struct ShardState {
    index: usize,
    shards: usize,
    context: ShardContext,
    groups: flume::Receiver<Arc<CommittedGroup>>,
    /// The revision of the last group applied.
    current: i64,
    streams: HashMap<StreamId, WatchStream>,
    next_stream_id: StreamId,
    watchers: WatcherIndex<WatcherKey>,
    leases: LeaseTimers,
    /// Shutting down: streams are closed and no new ones are served.
    stopped: bool,
    /// Wakes the stream tasks when the shard stops.
    stop_signal: Rc<tokio::sync::Notify>,
}

/// A handle to the shard's state for its local tasks. Borrows never span an `.await`.
#[derive(Clone)]
struct Shard(Rc<RefCell<ShardState>>);

/// One batch of history read for a stream's catch-up.
struct CatchUp {
    /// The first revision read: watchers behind it wait for the next batch.
    from: i64,
    compact: i64,
    /// Every revision up to this one was read.
    covered: i64,
    records: Vec<LogRecord>,
    /// Per record, per event: the key's version before it, if any watcher wants `prev_kv`.
    prevs: Vec<Vec<Option<KeyValue>>>,
    /// Whether `prevs` was read (watchers wanting `prev_kv` skip a batch without it).
    with_prev: bool,
}

impl Shard {
    fn start(
        index: usize,
        shards: usize,
        groups: flume::Receiver<Arc<CommittedGroup>>,
        context: ShardContext,
    ) -> Result<Shard> {
        let current = context.store.read_view()?.current_revision();
        let mut leases = LeaseTimers::default();
        let now = Instant::now();
        for (id, ttl) in context.store.leases()? {
            if lease_owner(id, shards) == index {
                leases.grant(id, ttl, now);
            }
        }
        Ok(Shard(Rc::new(RefCell::new(ShardState {
            index,
            shards,
            context,
            groups,
            current,
            streams: HashMap::new(),
            next_stream_id: 0,
            watchers: WatcherIndex::default(),
            leases,
            stopped: false,
            stop_signal: Rc::new(tokio::sync::Notify::new()),
        }))))
    }

    /// Applies every group already queued (so a request sees every write acknowledged before it).
    fn drain_groups(&self) {
        let groups = self.0.borrow().groups.clone();
        while let Ok(group) = groups.try_recv() {
            self.apply_group(&group);
        }
    }

    fn apply_group(&self, group: &CommittedGroup) {
        let behind = self.0.borrow_mut().apply_group(group);
        for stream in behind {
            self.spawn_catch_up(stream);
        }
    }

    fn handle(&self, message: ShardMessage) {
        match message {
            ShardMessage::OpenStream { requests, outbox } => {
                let mut state = self.0.borrow_mut();
                if state.stopped {
                    outbox.fail(crate::etcd::status::to_status(crate::Error::Closed));
                    return;
                }
                let id = state.next_stream_id;
                state.next_stream_id += 1;
                state.streams.insert(id, WatchStream::new(outbox));
                state.publish_watching();
                drop(state);
                glommio::spawn_local(self.clone().serve_requests(id, requests)).detach();
            }
            ShardMessage::KeepAlive { id, reply } => {
                let mut state = self.0.borrow_mut();
                let ttl = state.leases.keep_alive(id, Instant::now());
                let _ = reply.send((ttl, state.current));
            }
            ShardMessage::TimeToLive { id, reply } => {
                let state = self.0.borrow();
                let _ = reply.send((state.leases.time_to_live(id, Instant::now()), state.current));
            }
        }
    }

    /// Reads one stream's requests until the client goes away or the shard stops.
    async fn serve_requests(self, stream: StreamId, mut requests: WatchRequests) {
        let stopped = self.0.borrow().stop_signal.clone();
        loop {
            if self.0.borrow().stopped {
                return;
            }
            let next = async { Some(requests.next().await) };
            let stop = async {
                stopped.notified().await;
                None
            };
            let Some(next) = futures_lite::future::or(stop, next).await else { return };
            match next {
                Some(Ok(request)) => {
                    self.drain_groups();
                    let behind = self.0.borrow_mut().handle_request(stream, request);
                    self.0.borrow().publish_watching();
                    if behind {
                        self.spawn_catch_up(stream);
                    }
                    if !self.0.borrow().streams.contains_key(&stream) {
                        return;
                    }
                }
                // A client that closes its sending side keeps its watches, as with etcd; the
                // periodic tick notices when it also stops listening.
                None => return,
                // A request that does not decode (or a broken stream) ends the stream with that
                // status, as etcd ends it with grpc-go's; closing it without one would report OK.
                Some(Err(status)) => {
                    let mut state = self.0.borrow_mut();
                    if let Some(s) = state.streams.get(&stream) {
                        s.outbox.fail(status);
                    }
                    state.close_stream(stream);
                    return;
                }
            }
        }
    }

    fn spawn_catch_up(&self, stream: StreamId) {
        glommio::spawn_local(self.clone().catch_up(stream)).detach();
    }

    /// Brings the stream's watchers that are behind up to date from the log, one bounded batch at a
    /// time, waiting whenever the client has not taken what was already queued.
    async fn catch_up(self, stream: StreamId) {
        loop {
            let plan = self.0.borrow_mut().plan_catch_up(stream);
            let Some((from, to, want_prev)) = plan else { return };
            let waiting_for_client = {
                let state = self.0.borrow();
                let outbox = state.streams.get(&stream).map(|s| &s.outbox);
                outbox.filter(|o| o.queued_bytes() > WATCH_STREAM_BUFFER_BYTES / 2).map(|o| o.drained())
            };
            if let Some(drained) = waiting_for_client {
                let recheck = glommio::timer::sleep(Duration::from_millis(CATCH_UP_RECHECK_MS));
                futures_lite::future::or(drained.notified(), recheck).await;
                continue;
            }
            let (store, reads) = {
                let state = self.0.borrow();
                (state.context.store.clone(), state.context.reads.clone())
            };
            let batch = reads.run(move || read_history(&store, from, to, want_prev)).await;
            let batch = match batch {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) | Err(e) => {
                    tracing::error!(error = %e, "watch catch-up cannot read the log");
                    let mut state = self.0.borrow_mut();
                    if let Some(s) = state.streams.get(&stream) {
                        s.outbox.fail(crate::etcd::status::watch_history_unreadable(&e));
                    }
                    state.close_stream(stream);
                    return;
                }
            };
            self.0.borrow_mut().deliver_catch_up(stream, &batch);
        }
    }

    /// Expires leases, closes streams whose client left, and sends progress notifications.
    async fn tick(self) {
        let tick = Duration::from_millis(LEASE_TICK_MS);
        let mut last_progress = Instant::now();
        loop {
            glommio::timer::sleep(tick).await;
            let now = Instant::now();
            let (expired, sequencer) = {
                let mut state = self.0.borrow_mut();
                if state.stopped {
                    return;
                }
                state.close_abandoned_streams();
                if now.duration_since(last_progress) >= state.context.progress_interval {
                    last_progress = now;
                    state.notify_progress();
                }
                (state.leases.take_expired(now, LEASE_REVOKES_PER_TICK_MAX), state.context.sequencer.clone())
            };
            for id in expired {
                let shard = self.clone();
                let sequencer = sequencer.clone();
                glommio::spawn_local(async move {
                    let revoke = Proposal::LeaseRevoke(LeaseRevokeRequest { id });
                    match sequencer.propose(revoke).await {
                        // The committed group forgets the timer.
                        Ok(_) => {}
                        Err(Error::LeaseNotFound) => shard.0.borrow_mut().leases.revoke(id),
                        Err(e) => {
                            tracing::warn!(lease = id, error = %e, "cannot revoke an expired lease; retrying");
                            let retry_at = Instant::now() + Duration::from_millis(REVOKE_RETRY_MS);
                            shard.0.borrow_mut().leases.revoke_failed(id, retry_at);
                        }
                    }
                })
                .detach();
            }
        }
    }

    /// Closes every stream and serves no more (the node is shutting down).
    fn stop(&self) {
        let mut state = self.0.borrow_mut();
        state.stopped = true;
        state.stop_signal.notify_waiters();
        let streams: Vec<StreamId> = state.streams.keys().copied().collect();
        for stream in streams {
            state.close_stream(stream);
        }
    }
}

/// How often a catch-up waiting for the client rechecks the stream.
const CATCH_UP_RECHECK_MS: u64 = 1000;
/// How long after a failed revoke an expired lease is tried again.
const REVOKE_RETRY_MS: u64 = 1000;

/// Reads the log for a catch-up: records from `from` (or the compact revision, if later) through
/// `to`, bounded in bytes, with each event's previous version if `want_prev`. Blocking.
fn read_history(store: &Store, from: i64, to: i64, want_prev: bool) -> Result<CatchUp> {
    let view = store.read_view()?;
    let compact = view.compact_revision();
    let first = from.max(compact);
    let (records, covered) = view.log_records(first, to, WATCH_CATCH_UP_BYTES_MAX)?;
    let mut prevs = Vec::new();
    if want_prev {
        for record in &records {
            let mut record_prevs = Vec::with_capacity(record.events.len());
            for event in &record.events {
                let prev = match event.key() {
                    Some(key) if record.revision > compact => {
                        let mut found = None;
                        let span = KeySpan { start: key.to_vec(), end: RangeEnd::Single };
                        view.visit(&span, record.revision - 1, &mut |k, v| {
                            found = Some(key_value(k, v));
                            false
                        })?;
                        found
                    }
                    _ => None,
                };
                record_prevs.push(prev);
            }
            prevs.push(record_prevs);
        }
    }
    Ok(CatchUp { from: first, compact, covered, records, prevs, with_prev: want_prev })
}

impl ShardState {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.context.store.identity().response_header(revision))
    }

    /// Applies one committed group: lease timers, then live events for synced watchers. Returns the
    /// streams whose watchers fell behind and need a catch-up task.
    fn apply_group(&mut self, group: &CommittedGroup) -> Vec<StreamId> {
        let mut behind = Vec::new();
        let mut gone = Vec::new();
        let now = Instant::now();
        for (record, prevs) in group.records.iter().zip(&group.prevs) {
            for event in &record.events {
                match event {
                    LogEvent::LeaseGrant { id, ttl } if lease_owner(*id, self.shards) == self.index => {
                        self.leases.grant(*id, *ttl, now);
                    }
                    LogEvent::LeaseRevoke { id } => self.leases.revoke(*id),
                    _ => {}
                }
            }
            if record.sub != 0 {
                continue; // lease-only: no revision, no key events
            }
            self.current = record.revision;
            if self.watchers.is_empty() {
                continue;
            }
            let mut matched: BTreeMap<WatcherKey, Vec<usize>> = BTreeMap::new();
            for (i, event) in record.events.iter().enumerate() {
                if let Some(key) = event.key() {
                    self.watchers.for_each_match(key, |w| matched.entry(w).or_default().push(i));
                }
            }
            for (key, indexes) in matched {
                let header = self.header(record.revision);
                let fragment_bytes = self.context.fragment_bytes;
                let Some(stream) = self.streams.get_mut(&key.stream) else { continue };
                let over_budget = stream.outbox.queued_bytes() >= WATCH_STREAM_BUFFER_BYTES;
                let Some(watcher) = stream.watchers.get_mut(&key.watch_id) else { continue };
                if !watcher.synced || record.revision < watcher.next_rev {
                    continue;
                }
                let events: Vec<_> = indexes
                    .iter()
                    .filter_map(|&i| to_event(watcher, &record.events[i], record.revision, prevs[i].as_ref()))
                    .collect();
                if events.is_empty() {
                    continue;
                }
                if over_budget {
                    self.context.metrics.events_deferred(events.len());
                    watcher.synced = false;
                    watcher.next_rev = record.revision;
                    if !stream.catching_up {
                        stream.catching_up = true;
                        behind.push(key.stream);
                    }
                    continue;
                }
                let response = WatchResponse { header, watch_id: key.watch_id, events, ..Default::default() };
                if !send(&stream.outbox, watcher, response, fragment_bytes) {
                    gone.push(key.stream);
                }
            }
        }
        for stream in gone {
            self.close_stream(stream);
        }
        behind
    }

    /// Handles one request of `stream`; returns whether the stream now has watchers behind that
    /// need a catch-up task started.
    fn handle_request(&mut self, stream_id: StreamId, request: WatchRequest) -> bool {
        let current = self.current;
        let header = self.header(current);
        let Some(stream) = self.streams.get_mut(&stream_id) else { return false };
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => match stream.create(&create, current) {
                Ok(watch_id) => {
                    let watcher = &stream.watchers[&watch_id];
                    self.watchers.insert(&watcher.span, WatcherKey { stream: stream_id, watch_id });
                    let synced = watcher.synced;
                    stream.outbox.push(WatchResponse { header, watch_id, created: true, ..Default::default() });
                    if !synced && !stream.catching_up {
                        stream.catching_up = true;
                        return true;
                    }
                    false
                }
                Err(e) => {
                    stream.outbox.push(WatchResponse {
                        header,
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: e.reason().to_string(),
                        ..Default::default()
                    });
                    false
                }
            },
            Some(RequestUnion::CancelRequest(cancel)) => {
                // etcd answers nothing for an id that is not watching.
                if let Some(watcher) = stream.watchers.remove(&cancel.watch_id) {
                    self.watchers.remove(&watcher.span, WatcherKey { stream: stream_id, watch_id: cancel.watch_id });
                    stream.outbox.push(WatchResponse {
                        header,
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    });
                }
                false
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Never ahead of what was delivered: a watcher behind bounds the revision reported.
                let revision =
                    stream.watchers.values().filter(|w| !w.synced).map(|w| w.next_rev - 1).min().unwrap_or(current);
                let header = self.header(revision.min(current));
                let stream = self.streams.get_mut(&stream_id).expect("looked up above");
                stream.outbox.push(WatchResponse { header, watch_id: -1, ..Default::default() });
                false
            }
            None => false,
        }
    }

    /// What the stream's next catch-up batch reads: (from, to, want_prev), or `None` when no watcher
    /// is behind any more (the task then ends). Watchers that caught up are marked synced here, in
    /// the same step that compares them with `current`, so no live event can slip between.
    fn plan_catch_up(&mut self, stream_id: StreamId) -> Option<(i64, i64, bool)> {
        let current = self.current;
        let stopped = self.stopped;
        let stream = self.streams.get_mut(&stream_id)?;
        let mut from = i64::MAX;
        let mut want_prev = false;
        for watcher in stream.watchers.values_mut().filter(|w| !w.synced) {
            if watcher.next_rev > current {
                watcher.synced = true;
                continue;
            }
            from = from.min(watcher.next_rev);
            want_prev |= watcher.prev_kv;
        }
        if from == i64::MAX || stopped {
            stream.catching_up = false;
            return None;
        }
        Some((from, current, want_prev))
    }

    /// Queues a catch-up batch for every watcher of the stream that is behind.
    fn deliver_catch_up(&mut self, stream_id: StreamId, batch: &CatchUp) {
        let batch_header = self.header(batch.covered);
        let compacted_header = self.header(0);
        let fragment_bytes = self.context.fragment_bytes;
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        let mut compacted = Vec::new();
        let mut gone = false;
        for (&watch_id, watcher) in stream.watchers.iter_mut().filter(|(_, w)| !w.synced) {
            if watcher.next_rev < batch.compact {
                // etcd's compacted answer: the compact revision, canceled, and a zero header revision.
                gone |= !stream.outbox.push(WatchResponse {
                    header: compacted_header,
                    watch_id,
                    compact_revision: batch.compact,
                    canceled: true,
                    ..Default::default()
                });
                watcher.compacted = true;
                watcher.synced = true; // never planned again
                compacted.push((watch_id, watcher.span.clone()));
                continue;
            }
            if watcher.next_rev < batch.from
                || watcher.next_rev > batch.covered
                || (watcher.prev_kv && !batch.with_prev)
            {
                continue; // it fell behind (or was created) after this batch was planned: the next one serves it
            }
            let mut events = Vec::new();
            for (r, record) in batch.records.iter().enumerate() {
                if record.revision < watcher.next_rev || record.revision > batch.covered {
                    continue;
                }
                for (i, event) in record.events.iter().enumerate() {
                    let Some(key) = event.key() else { continue };
                    if !watcher.span.contains(key) {
                        continue;
                    }
                    let prev = batch.prevs.get(r).and_then(|p| p[i].as_ref());
                    events.extend(to_event(watcher, event, record.revision, prev));
                }
            }
            watcher.next_rev = batch.covered + 1;
            if !events.is_empty() {
                let response = WatchResponse { header: batch_header, watch_id, events, ..Default::default() };
                gone |= !send(&stream.outbox, watcher, response, fragment_bytes);
            }
        }
        for (watch_id, span) in compacted {
            self.watchers.remove(&span, WatcherKey { stream: stream_id, watch_id });
        }
        self.publish_watching();
        if gone {
            self.close_stream(stream_id);
        }
    }

    /// Sends an empty response to every idle, synced watcher that asked for progress notifications.
    fn notify_progress(&mut self) {
        let header = self.header(self.current);
        for stream in self.streams.values_mut() {
            if stream.outbox.queued_bytes() >= WATCH_STREAM_BUFFER_BYTES {
                continue;
            }
            for (&watch_id, watcher) in stream.watchers.iter_mut() {
                if watcher.progress_notify && watcher.synced && !watcher.compacted && !watcher.sent_since_tick {
                    stream.outbox.push(WatchResponse { header, watch_id, ..Default::default() });
                }
                watcher.sent_since_tick = false;
            }
        }
    }

    fn close_abandoned_streams(&mut self) {
        let abandoned: Vec<StreamId> =
            self.streams.iter().filter(|(_, s)| s.outbox.is_closed()).map(|(id, _)| *id).collect();
        for stream in abandoned {
            self.close_stream(stream);
        }
    }

    /// Forgets a stream and its watchers; dropping its outbox ends the client's response stream.
    fn close_stream(&mut self, stream_id: StreamId) {
        if let Some(stream) = self.streams.remove(&stream_id) {
            for (watch_id, watcher) in stream.watchers {
                self.watchers.remove(&watcher.span, WatcherKey { stream: stream_id, watch_id });
            }
        }
        self.publish_watching();
    }

    /// Publishes this shard's streams and watchers for `/metrics`.
    fn publish_watching(&self) {
        self.context.metrics.watching(self.streams.len(), self.watchers.len());
    }
}

/// Queues a watcher's event response (split into fragments if it asked for them); false if the
/// client is gone.
fn send(outbox: &Outbox, watcher: &mut Watcher, response: WatchResponse, fragment_bytes: usize) -> bool {
    watcher.sent_since_tick = true;
    if watcher.fragment {
        return fragments(response, fragment_bytes).into_iter().all(|part| outbox.push(part));
    }
    outbox.push(response)
}
