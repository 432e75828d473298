//! The shard's lifecycle and mailbox: `ShardHandle` (what other cores hold), `ShardActor::run`
//! (the loop on its core) and the messages between them. Invariants: every committed group queued
//! is applied before a message is handled, so a request sees every write acknowledged before it;
//! once stopped, every stream is closed and no new one is served.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::index::WatcherIndex;
use super::leases::LeaseTimers;
use super::watch::{StreamId, WatchStream};
use super::{LeaseTtl, Outbox, Shard, ShardContext, ShardState, WatchRequests, lease_owner};
use crate::actor::{self, Mailbox, Reply, WhenFull};
use crate::error::Result;
use crate::mvcc::VersionReader;
use crate::sequencer::CommittedGroup;

/// Requests queued for a shard at most; a full mailbox makes handlers wait (backpressure: a shard
/// answers without waiting on anything, so the wait is short).
const MAILBOX_CAPACITY: usize = 4096;
const WHEN_FULL: WhenFull = WhenFull::Wait;

enum ShardMessage {
    /// Serve a new watch stream.
    OpenStream { requests: WatchRequests, outbox: Outbox },
    /// Renew a lease: its TTL, or `None` if it does not exist (or expired); and the revision.
    KeepAlive { id: i64, reply: Reply<(Option<i64>, i64)> },
    /// A lease's TTLs, or `None` if it does not exist; and the revision.
    TimeToLive { id: i64, reply: Reply<(Option<LeaseTtl>, i64)> },
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
    pub async fn keep_alive(&self, id: i64) -> Result<(Option<i64>, i64)> {
        self.mailbox.ask(|reply| ShardMessage::KeepAlive { id, reply }).await
    }

    /// The TTLs of lease `id` (`None`: no such lease) and the revision.
    pub async fn time_to_live(&self, id: i64) -> Result<(Option<LeaseTtl>, i64)> {
        self.mailbox.ask(|reply| ShardMessage::TimeToLive { id, reply }).await
    }
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
        let (handle, mailbox) = actor::mailbox(MAILBOX_CAPACITY, WHEN_FULL);
        (ShardActor { index, shards, mailbox, groups, context }, ShardHandle { mailbox: handle })
    }

    /// Runs the shard on the current executor until the node stops: `shutdown` closes every watch
    /// stream; the end of the committed-group channel (the sequencer stopped) ends the actor.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let ShardActor { index, shards, mailbox, groups, context } = self;
        let supervisor = context.supervisor.clone();
        let shard = match Shard::start(index, shards, groups.clone(), context) {
            Ok(shard) => shard,
            Err(e) => {
                supervisor.fail(&format!("shard {index}"), e);
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
    pub(super) fn drain_groups(&self) {
        let groups = self.0.borrow().groups.clone();
        while let Ok(group) = groups.try_recv() {
            self.apply_group(&group);
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
                reply.send((ttl, state.current));
            }
            ShardMessage::TimeToLive { id, reply } => {
                let state = self.0.borrow();
                reply.send((state.leases.time_to_live(id, Instant::now()), state.current));
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
