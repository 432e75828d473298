//! A running T4 node: the store, the sequencer, the executors and (when configured) the etcd API.
//! `t4 run` is a `Node` with a listen address; embedded programs open one in-process. Every method
//! is `async` over flume channels, so it works from any async runtime.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::Stream;
use tonic::codegen::BoxStream;

use crate::actor::Supervisor;
use crate::auto_compaction::AutoCompactor;
use crate::config::{Config, GRPC_OVERHEAD_BYTES};
use crate::durability::{Durability, Settings, open_object_store};
use crate::error::{DurabilityError, Error, Result, RuntimeError};
use crate::etcd::Services;
use crate::etcd::validate::Limits;
use crate::metrics::Metrics;
use crate::mvcc::{Store, VersionReader};
use crate::object::{CountedStore, ObjectStore};
use crate::proto::etcdserverpb as pb;
use crate::runtime::blocking::BlockingPool;
use crate::runtime::connection::ConnectionPolicy;
use crate::runtime::metrics_port::MetricsPort;
use crate::runtime::{Executors, Plan, bind_listeners};
use crate::sequencer::{Grouping, SUBSCRIBER_GROUPS_MAX, Sequencer, SpaceGuard};
use crate::shard::{ShardActor, ShardContext};
use crate::types::{Event, KeyValue, Lease, LeaseStatus, Txn, TxnResponse, WatchOptions, prefix_end};

/// Groups in flight at once with sync upload (waiting for a PUT, or in one).
const SYNC_UPLOAD_GROUPS_IN_FLIGHT_MAX: usize = 64;
/// Threads answering scans off the executors.
const READ_THREADS: usize = 2;

struct Running {
    services: Services,
    executors: Executors,
    durability: Option<Durability>,
    /// `--listen-metrics`, served until the node has stopped.
    metrics_port: Option<MetricsPort>,
    /// `--auto-compaction-*`, stopped first.
    auto_compactor: Option<AutoCompactor>,
    /// The sequencer's thread, joined once it has answered the stop.
    sequencer: std::thread::JoinHandle<()>,
}

/// The client port's sockets (one per core), closed if the node fails to start before the
/// executors take them.
struct Listeners {
    fds: Vec<RawFd>,
    /// The address bound (the port chosen, for port 0).
    addr: SocketAddr,
}

impl Listeners {
    fn bind(addr: SocketAddr, cores: usize) -> Result<Listeners> {
        let (fds, addr) = bind_listeners(addr, cores)?;
        Ok(Listeners { fds, addr })
    }

    fn into_fds(mut self) -> Vec<RawFd> {
        std::mem::take(&mut self.fds)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for fd in self.fds.drain(..) {
            // SAFETY: the fd came from `bind_listeners`, is owned here alone and closed once.
            unsafe { libc::close(fd) };
        }
    }
}

/// Runs `f` on a fresh thread and waits for it: tokio runtimes can be neither driven (`block_on`)
/// nor dropped from inside another runtime, and an embedding program may call from one.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|scope| scope.spawn(f).join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Raises the alarms `store` kept (a node stopped with them raised), then keeps every change there.
fn keep_alarms(alarms: &crate::alarms::Alarms, store: &Arc<Store>) -> Result<()> {
    for wire in store.kept_alarms()? {
        if let Some(alarm) = crate::alarms::Alarm::from_wire(wire)
            && alarms.raise(alarm)
        {
            tracing::warn!(alarm = alarm.name(), "alarm still raised from before the restart (etcdctl alarm disarm)");
        }
    }
    // Weak: the alarms' handles must not keep a closed node's store (and its data dir lock) open.
    let keeper = Arc::downgrade(store);
    // A change is rare (an operator's disarm, a full disk): its one sync may run where it happens.
    alarms.persist_with(move |raised| {
        let Some(keeper) = keeper.upgrade() else { return };
        let wires: Vec<i32> = raised.iter().map(|a| a.wire()).collect();
        if let Err(e) = keeper.keep_alarms(&wires) {
            tracing::warn!(error = %e, "cannot keep the alarms for the next start");
        }
    });
    Ok(())
}

/// A T4 node running in this process.
pub struct Node {
    /// Taken by whoever stops the node first: `close`, `drop`, or the supervising thread after a
    /// fatal error.
    running: Arc<Mutex<Option<Running>>>,
    /// Holds the first fatal error of any of the node's actors, threads or tasks.
    supervisor: Supervisor,
    /// Ends once the supervising thread is done (it stopped the node after a fatal error, or the
    /// node closed).
    supervised: flume::Receiver<()>,
    /// Dropped as the node closes: the supervising thread then ends.
    closing: Mutex<Option<flume::Sender<()>>>,
    local_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl Node {
    /// Opens the data directory, starts the executors and, if `config.listen` is set, serves the
    /// etcd v3 API there.
    pub fn open(config: Config) -> Result<Node> {
        crate::runtime::panic_policy::install();
        config.validate()?;
        let cores = config.cores();
        // Bound before the data directory is opened (and perhaps created), so a port in use or a
        // wrong address leaves nothing behind.
        let listeners = match config.listen.map(|addr| Listeners::bind(addr, cores)).transpose() {
            Ok(listeners) => listeners,
            // A busy port is most often a node already running on this data dir: name it, as the
            // lock would have.
            Err(e @ Error::Listen { .. }) => {
                return Err(crate::mvcc::lock::held_by_another(&config.data_dir).unwrap_or(e));
            }
            Err(e) => return Err(e),
        };
        let local_addr = listeners.as_ref().map(|l| l.addr);
        let alarms = crate::alarms::Alarms::default();
        let supervisor = Supervisor::new();
        let metrics = Metrics::new(cores, alarms.clone());
        let metrics_port = config.listen_metrics.map(|addr| MetricsPort::start(addr, metrics.clone())).transpose()?;
        let metrics_addr = metrics_port.as_ref().map(MetricsPort::local_addr);
        let object_store = match &config.object_store_override {
            Some(store) => Some(store.clone()),
            None => open_object_store(&config.object_store)?,
        };
        let object_store = object_store
            .map(|store| Arc::new(CountedStore::new(store, metrics.objects().clone())) as Arc<dyn ObjectStore>);
        let (store, mut durability) = match object_store {
            Some(object_store) => {
                let settings = Settings::from_args(&config.object_store);
                let opened = off_runtime(|| {
                    Durability::open(object_store, settings, &config.data_dir, alarms.clone(), &metrics)
                });
                let (durability, store) = opened?;
                (store, Some(durability))
            }
            None => (Store::open(&config.data_dir)?, None),
        };
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let (upload_stage, upload_subscription) = match durability.as_mut() {
            Some(durability) => durability.start(shutdown_rx.clone(), &supervisor),
            None => (None, None),
        };
        // Sync upload: groups wait in the uploader while a PUT is in flight, and all that wait leave in
        // the next object, so the sequencer must not hold them back (groups are cheap; an outage stops
        // new ones).
        let groups_in_flight_max = match &upload_stage {
            Some(_) => config.groups_in_flight_max.max(SYNC_UPLOAD_GROUPS_IN_FLIGHT_MAX),
            None => config.groups_in_flight_max,
        };
        let limits = Limits { max_request_bytes: config.max_request_bytes, max_txn_ops: config.max_txn_ops };
        let mut subscribers = Vec::with_capacity(cores);
        let mut group_receivers = Vec::with_capacity(cores);
        for _ in 0..cores {
            let (tx, rx) = flume::bounded(SUBSCRIBER_GROUPS_MAX);
            subscribers.push(tx);
            group_receivers.push(rx);
        }
        subscribers.extend(upload_subscription);
        let (sequencer, handle) = Sequencer::new(
            store.clone(),
            Grouping { proposals_max: config.group_proposals_max, in_flight_max: groups_in_flight_max },
            subscribers,
            upload_stage,
            SpaceGuard::new(alarms.clone(), config.disk_free_min_bytes, config.quota_bytes()),
            metrics.commit().clone(),
            supervisor.clone(),
        )?;
        metrics.attach_store(store.clone());
        keep_alarms(&alarms, &store)?;
        metrics.attach_queue(handle.queue_depth());
        let retention = config
            .auto_compaction()
            .map_err(|e| Error::Setting { setting: "--auto-compaction-retention", reason: e.to_string() })?;
        let auto_compactor =
            retention.map(|retention| AutoCompactor::start(retention, store.clone(), handle.clone())).transpose()?;
        let (reads, _threads) = BlockingPool::start("read", READ_THREADS)?;
        if let Some(addr) = local_addr {
            store.record_listen_addr(addr);
        }
        let context = ShardContext {
            store: store.clone(),
            reads: reads.clone(),
            sequencer: handle.clone(),
            fragment_bytes: config.max_request_bytes + GRPC_OVERHEAD_BYTES,
            progress_interval: Duration::from_millis(config.watch_progress_notify_interval_ms.max(1)),
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
        };
        let (shards, shard_handles): (Vec<_>, Vec<_>) = group_receivers
            .into_iter()
            .enumerate()
            .map(|(index, groups)| ShardActor::new(index, cores, groups, context.clone()))
            .unzip();
        let services = Services {
            store,
            sequencer: handle,
            reads,
            name: config.name.clone(),
            client_urls: config.client_urls(local_addr),
            max_request_bytes: config.max_request_bytes,
            limits,
            shards: Arc::from(shard_handles),
            metrics,
            alarms,
            shutdown: shutdown_rx,
        };
        let sequencer = sequencer.start()?;
        let executors = Executors::start(Plan {
            cores,
            listeners: listeners.map(Listeners::into_fds).unwrap_or_default(),
            routes: services.clone().routes(),
            http: crate::etcd::http::HttpFace::new(services.clone()),
            shards,
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
            connections: ConnectionPolicy::new(&config),
            shutdown,
            spin_before_park: Duration::from_micros(config.spin_before_park_us),
        })?;
        if let Some(port) = &metrics_port {
            port.serve_node(crate::etcd::http::HttpFace::new(services.clone()));
        }
        let running = Arc::new(Mutex::new(Some(Running {
            services,
            executors,
            durability,
            metrics_port,
            auto_compactor,
            sequencer,
        })));
        let (closing, closed) = flume::bounded(1);
        let (supervising, supervised) = flume::bounded(1);
        let watched = Arc::downgrade(&running);
        let watcher = supervisor.clone();
        // Not through `spawn_thread`: this thread is what acts on failures.
        std::thread::Builder::new()
            .name("t4-supervisor".into())
            .spawn(move || supervise(watcher, watched, closed, supervising))
            .map_err(RuntimeError::start("the supervising thread"))?;
        Ok(Node { running, supervisor, supervised, closing: Mutex::new(Some(closing)), local_addr, metrics_addr })
    }

    /// Where `--listen-metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the etcd API is served, if it is.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    fn services(&self) -> Result<Services> {
        let running = self.running.lock().map_err(|_| Error::Closed)?;
        running.as_ref().map(|r| r.services.clone()).ok_or(Error::Closed)
    }

    /// Puts `value` at `key`; returns the revision of the write.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<i64> {
        let put = pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        let resp = self.services()?.put(put).await?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// Puts `value` at `key` attached to lease `lease` (the key is deleted when the lease ends);
    /// returns the revision of the write.
    pub async fn put_with_lease(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> Result<i64> {
        let put = pb::PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
        let resp = self.services()?.put(put).await?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// The current value of `key`.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let req = pb::RangeRequest { key: key.into(), ..Default::default() };
        Ok(self.services()?.range(req).await?.kvs.into_iter().next().map(Into::into))
    }

    /// The keys of `[start, end)` in key order (`end` of `[0]`: every key from `start`).
    pub async fn range(&self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Result<Vec<KeyValue>> {
        let mut end = end.into();
        if end.is_empty() {
            end = vec![0]; // an empty end would mean "the start key alone" on the wire
        }
        let req = pb::RangeRequest { key: start.into(), range_end: end, ..Default::default() };
        Ok(self.services()?.range(req).await?.kvs.into_iter().map(Into::into).collect())
    }

    /// The keys starting with `prefix`, in key order.
    pub async fn list(&self, prefix: impl Into<Vec<u8>>) -> Result<Vec<KeyValue>> {
        let prefix = prefix.into();
        let end = prefix_end(&prefix);
        let start = if prefix.is_empty() { vec![0] } else { prefix };
        self.range(start, end).await
    }

    /// How many keys start with `prefix`.
    pub async fn count(&self, prefix: impl Into<Vec<u8>>) -> Result<i64> {
        let prefix = prefix.into();
        let range_end = prefix_end(&prefix);
        let key = if prefix.is_empty() { vec![0] } else { prefix };
        let req = pb::RangeRequest { key, range_end, count_only: true, ..Default::default() };
        Ok(self.services()?.range(req).await?.count)
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<i64> {
        let req = pb::DeleteRangeRequest { key: key.into(), ..Default::default() };
        Ok(self.services()?.delete_range(req).await?.deleted)
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Ok(self.services()?.txn(txn.into_proto()).await?.into())
    }

    /// Discards history below `revision`; reads below it then fail with [`Error::Compacted`].
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let req = pb::CompactionRequest { revision, physical: false };
        self.services()?.compact(req).await.map(|_| ())
    }

    /// The revision of the last committed write.
    pub async fn revision(&self) -> Result<i64> {
        let services = self.services()?;
        let store = services.store.clone();
        services.reads.run(move || Ok(store.read_view()?.current_revision().get())).await?
    }

    /// Watches the keys of `key`/`range_end` in etcd's terms (an empty `range_end`: the key alone;
    /// `[0]`: every key from `key`) from `start_revision` (0: from now; a past revision replays
    /// history first). Returns once the node has created the watch, so every write after it is
    /// seen. Events arrive in revision order; dropping the [`Watch`] cancels it.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
        start_revision: i64,
        options: WatchOptions,
    ) -> Result<Watch> {
        use pb::watch_create_request::FilterType;
        let mut filters = Vec::new();
        if options.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if options.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        let create = pb::WatchCreateRequest {
            key: key.into(),
            range_end: range_end.into(),
            start_revision,
            prev_kv: options.prev_kv,
            filters,
            ..Default::default()
        };
        let (requests, requests_rx) = flume::bounded(1);
        let request = pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) };
        requests.send(Ok(request)).map_err(|_| Error::Closed)?;
        let mut responses = self.services()?.open_watch(Box::pin(requests_rx.into_stream())).await?;
        // "From now" is from when this returns: wait for the node's answer that the watch exists
        // (writes made after it are all seen; without the wait, one made meanwhile could be missed).
        let mut pending = VecDeque::new();
        match futures_lite::StreamExt::next(&mut responses).await {
            Some(Ok(created)) if created.canceled => return Err(Error::WatchCanceled(created.cancel_reason)),
            Some(Ok(created)) => pending.extend(created.events.into_iter().map(Event::from)),
            Some(Err(status)) => return Err(Error::WatchCanceled(status.message().to_string())),
            None => return Err(Error::Closed),
        }
        Ok(Watch { _requests: requests, responses, pending, finished: false })
    }

    /// Watches every key starting with `prefix` (see [`Node::watch`]).
    pub async fn watch_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
        start_revision: i64,
        options: WatchOptions,
    ) -> Result<Watch> {
        let prefix = prefix.into();
        let end = prefix_end(&prefix);
        let key = if prefix.is_empty() { vec![0] } else { prefix };
        self.watch(key, end, start_revision, options).await
    }

    /// Grants a lease of `ttl` seconds (raised to the minimum, 2 s, if lower) with an id the node picks.
    pub async fn grant(&self, ttl: i64) -> Result<Lease> {
        let resp = self.services()?.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }).await?;
        Ok(Lease { id: resp.id, ttl: resp.ttl })
    }

    /// Renews lease `id` for its full TTL; returns the TTL. A lease that expired cannot be renewed.
    pub async fn keep_alive(&self, id: i64) -> Result<i64> {
        match self.services()?.lease_keep_alive_once(id).await?.ttl {
            0 => Err(Error::LeaseNotFound),
            ttl => Ok(ttl),
        }
    }

    /// Revokes lease `id`: its keys are deleted at one revision.
    pub async fn revoke(&self, id: i64) -> Result<()> {
        self.services()?.lease_revoke(pb::LeaseRevokeRequest { id }).await.map(|_| ())
    }

    /// The TTLs and keys of lease `id`.
    pub async fn time_to_live(&self, id: i64) -> Result<LeaseStatus> {
        let resp = self.services()?.lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true }).await?;
        if resp.ttl == -1 {
            return Err(Error::LeaseNotFound);
        }
        Ok(LeaseStatus { id, granted_ttl: resp.granted_ttl, ttl: resp.ttl, keys: resp.keys })
    }

    /// The ids of every lease, in id order.
    pub async fn leases(&self) -> Result<Vec<i64>> {
        Ok(self.services()?.lease_leases().await?.leases.into_iter().map(|l| l.id).collect())
    }

    /// Stops serving: refuses new connections, lets in-flight requests finish, commits and syncs
    /// everything accepted, and releases the data directory. Calling it again does nothing.
    pub async fn close(&self) -> Result<()> {
        let running = self.running.lock().map_err(|_| Error::Closed)?.take();
        let stopped = match running {
            Some(running) => stop(running).await,
            // Stopped already, perhaps by the supervising thread after a fatal error: wait until it is done.
            None => {
                let _ = self.supervised.recv_async().await;
                Ok(())
            }
        };
        if let Ok(mut closing) = self.closing.lock() {
            closing.take();
        }
        match self.supervisor.fatal() {
            Some(fatal) => Err(fatal.into()),
            None => stopped,
        }
    }

    /// Waits until one of the node's actors, threads or tasks has failed fatally and the node has
    /// stopped because of it, and returns the error ([`Error::Stopped`]). Returned once the node
    /// has stopped, so it names the cause, not a consequence that was noticed first.
    pub async fn failed(&self) -> Error {
        let first = self.supervisor.failed().await;
        let _ = self.supervised.recv_async().await;
        self.supervisor.fatal().unwrap_or(first).into()
    }

    /// Writes a checkpoint to object storage now (and collects what older ones no longer need).
    /// Returns the checkpoint manifest's key, or `None` if the newest checkpoint is current already.
    /// Fails if the node has no object store.
    pub async fn checkpoint(&self) -> Result<Option<String>> {
        let pending = {
            let running = self.running.lock().map_err(|_| Error::Closed)?;
            let running = running.as_ref().ok_or(Error::Closed)?;
            let durability = running.durability.as_ref().ok_or(DurabilityError::NoObjectStore)?;
            durability.checkpoint()
        };
        Ok(pending.await?.map(|written| written.key))
    }
}

/// Stops a running node: refuses new connections, lets in-flight requests finish, commits and syncs
/// everything accepted, and releases the data directory.
async fn stop(running: Running) -> Result<()> {
    let Running { services, executors, durability, metrics_port, auto_compactor, sequencer } = running;
    drop(auto_compactor);
    executors.drain().await;
    services.sequencer.stop().await;
    // It answered the stop as its last act: the join is immediate.
    let _ = sequencer.join();
    executors.join().await;
    drop(services);
    if let Some(durability) = durability {
        let (done, closed) = flume::bounded(1);
        let closer = std::thread::Builder::new().name("t4-close".into()).spawn(move || {
            durability.close();
            let _ = done.send(());
        });
        closer.map_err(RuntimeError::start("the closing thread"))?;
        let _ = closed.recv_async().await;
    }
    drop(metrics_port);
    Ok(())
}

/// The supervising thread: waits for the node's first fatal error, then stops the node (unless it
/// closes first). `_done` is dropped once it is finished.
fn supervise(
    supervisor: Supervisor,
    running: std::sync::Weak<Mutex<Option<Running>>>,
    closing: flume::Receiver<()>,
    _done: flume::Sender<()>,
) {
    let fatal =
        futures_lite::future::block_on(futures_lite::future::or(async { Some(supervisor.failed().await) }, async {
            let _ = closing.recv_async().await;
            None
        }));
    let Some(fatal) = fatal else { return };
    let Some(running) = running.upgrade().and_then(|running| running.lock().ok()?.take()) else { return };
    tracing::error!(error = %fatal, "stopping the node");
    if let Err(e) = futures_lite::future::block_on(stop(running)) {
        tracing::error!(error = %e, "stopping after the fatal error failed");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Without `close`, stop in the background: every acknowledged write is already durable.
        if let Ok(mut running) = self.running.lock()
            && let Some(Running { executors, services, durability, metrics_port, auto_compactor, sequencer: thread }) =
                running.take()
        {
            drop(auto_compactor);
            drop(metrics_port);
            executors.signal_shutdown();
            let sequencer = services.sequencer.clone();
            let stopper = std::thread::Builder::new().name("t4-close".into()).spawn(move || {
                futures_lite::future::block_on(sequencer.stop());
                let _ = thread.join();
                if let Some(durability) = durability {
                    durability.close();
                }
            });
            if let Err(e) = stopper {
                tracing::error!(error = %e, "cannot start the thread that stops the node");
            }
        }
    }
}

/// A watch on an embedded node: a [`Stream`] of events in revision order (also readable with
/// [`Watch::next`]). It ends with an error if the watch is cancelled (a start revision that was
/// compacted: [`Error::Compacted`]) and ends when the node closes. Dropping it cancels the watch.
pub struct Watch {
    /// Keeps the request side open: the node serves the watch while it is.
    _requests: flume::Sender<std::result::Result<pb::WatchRequest, tonic::Status>>,
    responses: BoxStream<pb::WatchResponse>,
    /// Events of a response not handed out yet.
    pending: VecDeque<Event>,
    finished: bool,
}

impl Watch {
    /// The next event; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        futures_lite::StreamExt::next(self).await
    }
}

impl Stream for Watch {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            let response = match self.responses.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finished = true;
                    continue;
                }
                Poll::Ready(Some(Err(status))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(Error::WatchCanceled(status.message().to_string()))));
                }
                Poll::Ready(Some(Ok(response))) => response,
            };
            if response.compact_revision != 0 {
                self.finished = true;
                return Poll::Ready(Some(Err(Error::Compacted)));
            }
            if response.canceled {
                self.finished = true;
                return Poll::Ready(Some(Err(Error::WatchCanceled(response.cancel_reason))));
            }
            self.pending.extend(response.events.into_iter().map(Event::from));
        }
    }
}
