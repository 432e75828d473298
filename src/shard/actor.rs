//! The shard's lifecycle and messages: `ShardHandle` (what other cores hold), `ShardActor::run` (the
//! shard on its core, on the actor runner) and what the shard reads. Invariants: committed groups are
//! the shard's first event source, so every group queued is applied before any other message; once
//! stopped, every stream is closed and no new one is served; a shard that cannot start, or whose
//! groups end before the node shuts down, reports to the supervisor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::catch_up::HistoryRead;
use super::index::WatcherIndex;
use super::leases::LeaseTimers;
use super::stream_io::StreamRequest;
use super::watch::StreamId;
use super::{LeaseTtl, Outbox, Shard, ShardContext, WatchRequests, lease_owner};
use crate::actor::{self, Actor, Flow, Inbox, Mailbox, Reply, WhenFull};
use crate::config::LEASE_TICK_MS;
use crate::error::{Error, Result};
use crate::ids::Revision;
use crate::mvcc::VersionReader;
use crate::sequencer::CommittedGroup;

/// Requests queued for a shard at most; a full mailbox makes handlers (and the tasks reading watch
/// streams) wait: backpressure, and a shard answers without waiting on anything, so the wait is short.
const MAILBOX_CAPACITY: usize = 4096;
const WHEN_FULL: WhenFull = WhenFull::Wait;

/// What a shard reads: its mailbox (the first three, and the requests of its streams) and its event
/// sources (committed groups first, then its helpers' reports).
pub(super) enum ShardMessage {
    /// Serve a new watch stream.
    OpenStream { requests: WatchRequests, outbox: Outbox },
    /// Renew a lease: its TTL, or `None` if it does not exist (or expired); and the revision.
    KeepAlive { id: i64, reply: Reply<(Option<i64>, Revision)> },
    /// A lease's TTLs, or `None` if it does not exist; and the revision.
    TimeToLive { id: i64, reply: Reply<(Option<LeaseTtl>, Revision)> },
    /// A request a stream's client sent.
    StreamRequest { stream: StreamId, request: StreamRequest },
    /// A stream's requests broke (or did not decode): the stream ends with this error.
    StreamBroken { stream: StreamId, error: Error },
    /// A committed group.
    Group(Arc<CommittedGroup>),
    /// The committed groups ended (the sequencer stopped).
    GroupsEnded,
    /// The node is shutting down.
    Shutdown,
    /// A catch-up read of the log finished.
    HistoryRead { stream: StreamId, read: HistoryRead },
    /// A stream's client took responses (or the catch-up waited long enough).
    ClientDrained { stream: StreamId },
    /// A proposed revoke of an expired lease failed.
    RevokeFailed { id: i64, error: Error },
}

/// A cloneable, `Send` handle to one shard.
#[derive(Clone)]
pub struct ShardHandle {
    mailbox: Mailbox<ShardMessage>,
}

impl ShardHandle {
    /// Has the shard serve a watch stream: it reads `requests` and queues responses on `outbox`.
    pub async fn open_stream(&self, requests: WatchRequests, outbox: Outbox) -> Result<()> {
        self.mailbox.tell(ShardMessage::OpenStream { requests, outbox }).await
    }

    /// Renews lease `id`; returns its TTL (`None`: no such lease, or it expired) and the revision.
    pub async fn keep_alive(&self, id: i64) -> Result<(Option<i64>, Revision)> {
        self.mailbox.ask(|reply| ShardMessage::KeepAlive { id, reply }).await
    }

    /// The TTLs of lease `id` (`None`: no such lease) and the revision.
    pub async fn time_to_live(&self, id: i64) -> Result<(Option<LeaseTtl>, Revision)> {
        self.mailbox.ask(|reply| ShardMessage::TimeToLive { id, reply }).await
    }
}

/// A shard before it starts on its core: everything in it is `Send`.
pub struct ShardActor {
    index: usize,
    shards: usize,
    mailbox: Mailbox<ShardMessage>,
    inbox: flume::Receiver<ShardMessage>,
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
        let (mailbox, inbox) = actor::mailbox(MAILBOX_CAPACITY, WHEN_FULL);
        let handle = ShardHandle { mailbox: mailbox.clone() };
        (ShardActor { index, shards, mailbox, inbox, groups, context }, handle)
    }

    /// Runs the shard on the current executor until the node stops: `shutdown` closes every watch
    /// stream; the end of the committed groups (the sequencer stopped) ends the actor.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let ShardActor { index, shards, mailbox, inbox, groups, context } = self;
        let name = format!("shard {index}");
        let supervisor = context.supervisor.clone();
        // Helpers report at most one catch-up step per stream, the revokes of one tick and the
        // shutdown at a time: unbounded, but bounded by what the shard asked for.
        let (helpers, reports) = flume::unbounded();
        let shard = match Shard::start(index, shards, context, shutdown.clone(), mailbox, helpers.clone()) {
            Ok(shard) => shard,
            Err(e) => {
                supervisor.fail(&name, e);
                return;
            }
        };
        glommio::spawn_local(forward_shutdown(shutdown, helpers)).detach();
        let inbox = Inbox::new(inbox)
            .with_source(groups, ShardMessage::Group, Some(|| ShardMessage::GroupsEnded))
            .with_events(reports);
        actor::run(&name, shard, inbox, &supervisor, glommio::timer::sleep).await;
    }
}

/// Turns the node's shutdown flag into the shard's `Shutdown` event.
async fn forward_shutdown(mut shutdown: tokio::sync::watch::Receiver<bool>, helpers: flume::Sender<ShardMessage>) {
    if shutdown.wait_for(|stop| *stop).await.is_ok() {
        let _ = helpers.send(ShardMessage::Shutdown);
    }
}

impl Shard {
    fn start(
        index: usize,
        shards: usize,
        context: ShardContext,
        shutdown: tokio::sync::watch::Receiver<bool>,
        mailbox: Mailbox<ShardMessage>,
        helpers: flume::Sender<ShardMessage>,
    ) -> Result<Shard> {
        fail::fail_point!("shard-start", |_| Err(
            crate::error::RuntimeError::Injected("injected shard start failure").into()
        ));
        let current = context.store.read_view()?.current_revision();
        let mut leases = LeaseTimers::default();
        let now = Instant::now();
        for (id, ttl) in context.store.leases()? {
            if lease_owner(id, shards) == index {
                leases.grant(id, ttl, now);
            }
        }
        Ok(Shard {
            index,
            shards,
            context,
            current,
            streams: HashMap::new(),
            next_stream_id: 0,
            watchers: WatcherIndex::default(),
            leases,
            stopped: false,
            shutdown,
            mailbox,
            helpers,
            next_tick: now + Duration::from_millis(LEASE_TICK_MS),
            last_progress: now,
        })
    }

    /// Closes every stream and serves no more (the node is shutting down).
    fn stop(&mut self) {
        self.stopped = true;
        let streams: Vec<StreamId> = self.streams.keys().copied().collect();
        for stream in streams {
            self.close_stream(stream);
        }
    }
}

impl Actor for Shard {
    type Message = ShardMessage;

    fn handle(&mut self, message: ShardMessage) -> Result<Flow> {
        match message {
            ShardMessage::OpenStream { requests, outbox } => self.open_stream(requests, outbox),
            ShardMessage::KeepAlive { id, reply } => {
                reply.send((self.leases.keep_alive(id, Instant::now()), self.current));
            }
            ShardMessage::TimeToLive { id, reply } => {
                reply.send((self.leases.time_to_live(id, Instant::now()), self.current));
            }
            ShardMessage::StreamRequest { stream, request } => self.handle_request(stream, request),
            ShardMessage::StreamBroken { stream, error } => self.stream_broken(stream, error),
            ShardMessage::Group(group) => self.apply_group(&group),
            ShardMessage::GroupsEnded => {
                if !*self.shutdown.borrow() {
                    return Err(Error::InputEnded("committed groups stopped arriving before the node shut down"));
                }
                return Ok(Flow::Stop);
            }
            ShardMessage::Shutdown => self.stop(),
            ShardMessage::HistoryRead { stream, read } => self.history_read(stream, read),
            ShardMessage::ClientDrained { stream } => self.client_drained(stream),
            ShardMessage::RevokeFailed { id, error } => self.revoke_failed(id, error),
        }
        Ok(Flow::Continue)
    }

    fn next_tick(&self) -> Option<Instant> {
        (!self.stopped).then_some(self.next_tick)
    }

    fn tick(&mut self, now: Instant) -> Result<Flow> {
        self.tick_now(now);
        self.next_tick = now + Duration::from_millis(LEASE_TICK_MS);
        Ok(Flow::Continue)
    }

    fn cleanup(mut self) {
        self.stop();
    }
}
