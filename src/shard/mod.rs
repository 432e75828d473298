//! The shard actor: one per core. It owns the watchers of the watch streams that core serves and the
//! leases whose `id % cores` is that core. Every committed group reaches every shard (one shared
//! `Arc`), before the group's writes are acknowledged; the shard matches its watchers, queues their
//! events, and starts, renews and expires its leases' timers.
//!
//! Invariants: every committed group queued is applied before the shard handles anything else, so a
//! request sees every write acknowledged before it. Every decision about a watcher's sync state
//! (synced, behind, compacted) is the state machine's (`sync`); the rest of this module feeds it and
//! carries out its effects. Nothing here waits on a client: outboxes are filled without waiting, and
//! a stream over its byte budget gets no live events (its watchers fall behind instead). The shard's
//! state is its own: its helper tasks (reading a stream's requests, reading the log, proposing lease
//! revokes) report back as messages.
//!
//! This file holds the shard's state; `actor` runs it, `requests`, `deliver`, `catch_up` and `tick`
//! are what it does with each kind of input, `effects` carries out the state machine's effects.

mod actor;
mod catch_up;
mod deliver;
mod effects;
mod index;
mod leases;
mod outbox;
mod requests;
mod stream_io;
mod sync;
mod tick;
mod watch;
/// The watch model the integration tests share.
#[cfg(test)]
#[allow(dead_code)] // the integration tests use parts the unit tests do not
mod watch_model;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use actor::{ShardActor, ShardHandle};
use futures_lite::Stream;
use index::WatcherIndex;
use leases::LeaseTimers;
pub use leases::LeaseTtl;
pub use outbox::Outbox;
#[cfg(test)]
pub(crate) use stream_io::{CreateError, fragments};
pub use stream_io::{StreamRequest, WatchCreate, WatchOutput};
pub use watch::EventFilter;
use watch::{StreamId, WatchStream};

use crate::actor::Mailbox;
use crate::mvcc::Store;
/// For the watch model, which names the storage model's types through its parent's `proto`.
#[cfg(test)]
use crate::proto;
use crate::runtime::blocking::BlockingPool;
use crate::sequencer::SequencerHandle;

/// The requests of one watch stream (a gRPC stream, or an embedded caller's channel), as the etcd
/// layer hands them over (validated, in the shard's terms).
pub type WatchRequests = Pin<Box<dyn Stream<Item = crate::Result<StreamRequest>> + Send>>;

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
    /// Where a shard that cannot go on reports why (the node then stops).
    pub supervisor: crate::actor::Supervisor,
}

/// A running shard: the actor's state, owned by it alone on its core.
struct Shard {
    index: usize,
    shards: usize,
    context: ShardContext,
    /// The revision of the last group applied.
    current: crate::ids::Revision,
    streams: HashMap<StreamId, WatchStream>,
    next_stream_id: StreamId,
    watchers: WatcherIndex<watch::WatcherKey>,
    leases: LeaseTimers,
    /// Shutting down: streams are closed and no new ones are served.
    stopped: bool,
    /// The node's shutdown flag: groups that end before it is set mean the shard cannot go on.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// The shard's own mailbox, for the tasks that read streams' requests.
    mailbox: Mailbox<actor::ShardMessage>,
    /// Where the shard's helper tasks report (an event source of the shard).
    helpers: flume::Sender<actor::ShardMessage>,
    /// When the next lease, stream and progress tick is due.
    next_tick: Instant,
    /// When progress notifications last went out.
    last_progress: Instant,
}

impl Shard {
    /// Forgets a stream and its watchers; dropping its outbox ends the client's response stream,
    /// dropping the stream ends the task reading its requests.
    fn close_stream(&mut self, stream_id: StreamId) {
        if let Some(stream) = self.streams.remove(&stream_id) {
            for (watch_id, watcher) in stream.sync.watchers() {
                self.watchers.remove(&watcher.span, watch::WatcherKey { stream: stream_id, watch_id });
            }
        }
        self.publish_watching();
    }

    /// Publishes this shard's streams and watchers for `/metrics`.
    fn publish_watching(&self) {
        self.context.metrics.watching(self.streams.len(), self.watchers.len());
    }
}
