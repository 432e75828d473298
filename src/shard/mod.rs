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
//!
//! This file holds the state the shard's tasks share; `actor` runs it, `requests`, `deliver`,
//! `catch_up` and `tick` are what those tasks do with it.

mod actor;
mod catch_up;
mod deliver;
mod index;
mod leases;
mod outbox;
mod requests;
mod tick;
mod watch;
/// The watch model the integration tests share; it names the wire types through `proto` here.
#[cfg(test)]
#[allow(dead_code)] // the integration tests use parts the unit tests do not
mod watch_model;

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use actor::{ShardActor, ShardHandle};
use futures_lite::Stream;
use index::WatcherIndex;
use leases::LeaseTimers;
pub use leases::LeaseTtl;
pub use outbox::Outbox;
use watch::{StreamId, WatchStream, WatcherKey};

use crate::mvcc::Store;
#[cfg(test)]
use crate::proto;
use crate::proto::etcdserverpb::{ResponseHeader, WatchRequest};
use crate::runtime::blocking::BlockingPool;
use crate::sequencer::{CommittedGroup, SequencerHandle};

/// The requests of one watch stream (a gRPC stream, or an embedded caller's channel).
pub type WatchRequests = Pin<Box<dyn Stream<Item = std::result::Result<WatchRequest, tonic::Status>> + Send>>;

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

impl ShardState {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.context.store.identity().response_header(revision))
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
