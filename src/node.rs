//! A running T4 node: the store, the sequencer, the executors and (when configured) the etcd API.
//! `t4 run` is a `Node` with a listen address; embedded programs open one in-process. Every method
//! is `async` over flume channels, so it works from any async runtime.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::etcd::Services;
use crate::mvcc::{Store, VersionReader};
use crate::proto::etcdserverpb as pb;
use crate::runtime::blocking::BlockingPool;
use crate::runtime::{Executors, Plan, bind_listeners};
use crate::sequencer::{Limits, Outcome, Proposal, Sequencer};
use crate::types::{KeyValue, Txn, TxnResponse, prefix_end};

/// Threads answering scans off the executors.
const READ_THREADS: usize = 2;

struct Running {
    services: Services,
    executors: Executors,
}

/// A T4 node running in this process.
pub struct Node {
    running: Mutex<Option<Running>>,
    local_addr: Option<SocketAddr>,
}

impl Node {
    /// Opens the data directory, starts the executors and, if `config.listen` is set, serves the
    /// etcd v3 API there.
    pub fn open(config: Config) -> Result<Node> {
        let cores = config.cores();
        let store = Store::open(&config.data_dir)?;
        let limits = Limits { max_request_bytes: config.max_request_bytes, max_txn_ops: config.max_txn_ops };
        let (sequencer, handle) =
            Sequencer::new(store.clone(), limits, config.group_proposals_max, config.groups_in_flight_max)?;
        let (reads, _threads) = BlockingPool::start("read", READ_THREADS)?;
        let (listeners, local_addr) = match config.listen {
            Some(addr) => {
                let (fds, bound) = bind_listeners(addr, cores)?;
                (fds, Some(bound))
            }
            None => (Vec::new(), None),
        };
        let services = Services {
            store,
            sequencer: handle,
            reads,
            name: config.name.clone(),
            client_addr: local_addr,
            max_request_bytes: config.max_request_bytes,
        };
        let executors = Executors::start(Plan {
            cores,
            listeners,
            routes: services.clone().routes(),
            sequencer,
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
            spin_before_park: Duration::from_micros(config.spin_before_park_us),
        })?;
        Ok(Node { running: Mutex::new(Some(Running { services, executors })), local_addr })
    }

    /// Where the etcd API is served, if it is.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    fn services(&self) -> Result<Services> {
        let running = self.running.lock().map_err(|_| Error::Closed)?;
        running.as_ref().map(|r| r.services.clone()).ok_or(Error::Closed)
    }

    async fn propose(&self, proposal: Proposal) -> Result<Outcome> {
        self.services()?.sequencer.propose(proposal).await
    }

    /// Puts `value` at `key`; returns the revision of the write.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<i64> {
        let put = pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        match self.propose(Proposal::Put(put)).await? {
            Outcome::Put(resp) => Ok(resp.header.map_or(0, |h| h.revision)),
            other => Err(Error::Runtime(format!("unexpected outcome {other:?}"))),
        }
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
        match self.propose(Proposal::DeleteRange(req)).await? {
            Outcome::DeleteRange(resp) => Ok(resp.deleted),
            other => Err(Error::Runtime(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Ok(self.services()?.txn(txn.into_proto()).await?.into())
    }

    /// Discards history below `revision`; reads below it then fail with [`Error::Compacted`].
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let req = pb::CompactionRequest { revision, physical: false };
        self.propose(Proposal::Compact(req)).await.map(|_| ())
    }

    /// The revision of the last committed write.
    pub async fn revision(&self) -> Result<i64> {
        let services = self.services()?;
        let store = services.store.clone();
        services.reads.run(move || Ok(store.read_view()?.current_revision())).await?
    }

    /// Stops serving: refuses new connections, lets in-flight requests finish, commits and syncs
    /// everything accepted, and releases the data directory. Calling it again does nothing.
    pub async fn close(&self) -> Result<()> {
        let running = self.running.lock().map_err(|_| Error::Closed)?.take();
        let Some(Running { services, executors }) = running else { return Ok(()) };
        executors.drain().await;
        services.sequencer.stop().await;
        executors.join().await;
        drop(services);
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Without `close`, stop in the background: every acknowledged write is already durable.
        if let Ok(mut running) = self.running.lock()
            && let Some(Running { executors, services }) = running.take()
        {
            executors.signal_shutdown();
            let sequencer = services.sequencer.clone();
            std::thread::spawn(move || futures_lite::future::block_on(sequencer.stop()));
        }
    }
}
