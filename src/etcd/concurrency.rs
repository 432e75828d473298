//! etcd's `clientv3/concurrency` recipes as etcd 3.4's lock and election services run them on the
//! server (a session's lease, owner keys `name/<lease in hex>`, the oldest key holds, waiting for
//! the deletion of every older key by watching it), built only on the node's own KV, lease and
//! watch calls: no rule of theirs is written twice. Errors of those calls reach the client as
//! etcd's Go client passes them on ([`through_etcd_client`]).

use futures_lite::StreamExt;
use tonic::Status;
use tonic::codegen::BoxStream;

use super::Services;
use super::status::{through_etcd_client, to_status};
use crate::error::{Error, RuntimeError};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::response_op::Response as OpResponse;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::KeyValue;
use crate::proto::mvccpb::event::EventType;

/// TTL of the lease etcd's session grants when a request names none (`defaultSessionTTL`).
const SESSION_TTL_SECONDS: i64 = 60;

/// The key a session's lease owns under `prefix`: the lease id in lowercase hex, as Go's `%x`
/// prints an `int64` (a sign, then the magnitude).
fn owner_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 { format!("-{:x}", lease.unsigned_abs()) } else { format!("{lease:x}") };
    [prefix, hex.as_bytes()].concat()
}

/// `name` and the separator: the prefix every owner key of a lock or election starts with.
pub(super) fn owners_prefix(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

/// The key under `prefix` created first (clientv3's `WithFirstCreate`): the owner.
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: crate::prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The key under `prefix` created last at or before `max_create_revision` (`WithLastCreate` and
/// `WithMaxCreateRev`): the nearest owner ahead of a waiter.
fn last_created_up_to(prefix: &[u8], max_create_revision: i64) -> RangeRequest {
    RangeRequest { sort_order: SortOrder::Descend as i32, max_create_revision, ..first_created(prefix) }
}

/// A compare that `key` was created at `revision` (0: it does not exist).
pub(super) fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Default::default()
    }
}

pub(super) fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

fn range_op(range: RangeRequest) -> RequestOp {
    RequestOp { request: Some(Op::RequestRange(range)) }
}

pub fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp { request: Some(Op::RequestDeleteRange(DeleteRangeRequest { key: key.to_vec(), ..Default::default() })) }
}

/// A txn that deletes `key`, no questions asked: what a lock's `Unlock` does, as a txn so one kind
/// of cleanup serves locks and elections (one delete, the same revision either way).
pub fn delete_txn(key: &[u8]) -> TxnRequest {
    TxnRequest { compare: vec![], success: vec![delete_op(key)], failure: vec![] }
}

/// The txn etcd's election `Resign` sends: delete `key` if it was created at `revision`.
pub fn resign_txn(key: &[u8], revision: i64) -> TxnRequest {
    TxnRequest { compare: vec![created_at(key, revision)], success: vec![delete_op(key)], failure: vec![] }
}

/// A session's entry in a lock or election: its owner key, and what the txn that entered it saw.
pub struct Entry {
    pub lease: i64,
    /// `name/`: where every owner key of the lock or election is.
    pub prefix: Vec<u8>,
    /// This lease's owner key.
    pub key: Vec<u8>,
    /// The header of the txn that entered.
    pub header: Option<ResponseHeader>,
    /// The key as it was, if the lease had entered before (the txn put nothing then).
    pub earlier: Option<KeyValue>,
    /// The key created first under the prefix, if asked for.
    pub owner: Option<KeyValue>,
}

impl Entry {
    /// The owner key's creation revision: its place in line.
    pub fn created(&self) -> i64 {
        self.earlier.as_ref().map_or_else(|| self.header.map_or(0, |h| h.revision), |kv| kv.create_revision)
    }
}

impl Services {
    /// Enters lock or election `name` for `lease` (a new one for 0) as etcd's `Mutex.Lock` and
    /// `Election.Campaign` do in one txn: puts the owner key with `value` unless this lease's key is
    /// there already (then reads it), and with `read_owner` also reads the owner.
    pub(super) async fn enter(&self, name: &[u8], lease: i64, value: &[u8], read_owner: bool) -> Result<Entry, Status> {
        let lease = self.session_lease(lease).await?;
        let prefix = owners_prefix(name);
        let key = owner_key(&prefix, lease);
        let owner = || range_op(first_created(&prefix));
        let mine = range_op(RangeRequest { key: key.clone(), ..Default::default() });
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: [vec![put_op(&key, value, lease)], read_owner.then(owner).into_iter().collect()].concat(),
            failure: [vec![mine], read_owner.then(owner).into_iter().collect()].concat(),
        };
        let resp = self.client_txn(txn).await?;
        let (succeeded, header) = (resp.succeeded, resp.header);
        let mut ranges = resp.responses.into_iter().filter_map(|r| match r.response {
            Some(OpResponse::ResponseRange(range)) => Some(range.kvs.into_iter().next()),
            _ => None,
        });
        let earlier = if succeeded { None } else { ranges.next().flatten() };
        if !succeeded && earlier.is_none() {
            return Err(to_status(RuntimeError::Broken("an owner key vanished inside its own txn".into()).into()));
        }
        let owner = ranges.next().flatten();
        Ok(Entry { lease, prefix, key, header, earlier, owner })
    }

    /// The lease a recipe's keys are bound to: `lease`, or for 0 a new one of 60 s, as etcd's
    /// session grants it. The session is orphaned at once, as the services do, so nothing keeps
    /// the lease alive.
    pub(super) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = LeaseGrantRequest { ttl: SESSION_TTL_SECONDS, id: 0 };
        Ok(self.lease_grant(grant).await.map_err(through_etcd_client)?.id)
    }

    /// A transaction as the recipes send it.
    pub(super) async fn client_txn(&self, txn: TxnRequest) -> Result<TxnResponse, Status> {
        self.txn(txn).await.map_err(through_etcd_client)
    }

    /// A read as the recipes send it.
    pub(super) async fn client_range(&self, range: RangeRequest) -> Result<RangeResponse, Status> {
        self.range(range).await.map_err(through_etcd_client)
    }

    /// A delete of one key as the recipes send it.
    pub(super) async fn client_delete(&self, key: &[u8]) -> Result<DeleteRangeResponse, Status> {
        let delete = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
        self.delete_range(delete).await.map_err(through_etcd_client)
    }

    /// The responses of a watch on `key` (to `range_end`, if not empty) from `start_revision`, served
    /// by this core's shard like any client's; dropping the stream ends the watch.
    pub(super) async fn watch_from(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
    ) -> Result<BoxStream<WatchResponse>, Status> {
        let create = WatchCreateRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision,
            ..Default::default()
        };
        let request = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
        // The requests end after the create; the watch lives on until its responses are dropped.
        self.open_watch(Box::pin(futures_lite::stream::once(Ok(request)))).await.map_err(through_etcd_client)
    }

    /// Waits until `key` is deleted, watching from `revision` (`waitDelete`).
    async fn wait_delete(&self, key: &[u8], revision: i64) -> Result<(), Status> {
        let mut responses = self.watch_from(key, &[], revision).await?;
        while let Some(response) = responses.next().await {
            let response = response?;
            if response.compact_revision > 0 {
                return Err(through_etcd_client(Error::Compacted));
            }
            if response.canceled {
                break;
            }
            if response.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                return Ok(());
            }
        }
        Err(to_status(Error::LostWatcher))
    }

    /// Waits until no key under `prefix` created at or before `max_create_revision` is left
    /// (`waitDeletes`), and returns the header of the read that found none. Each round waits for
    /// the newest such key, so the rounds are bounded by the keys there were when it started.
    pub(super) async fn wait_deletes(&self, prefix: &[u8], max_create_revision: i64) -> Result<ResponseHeader, Status> {
        loop {
            let resp = self.client_range(last_created_up_to(prefix, max_create_revision)).await?;
            let header = resp.header.unwrap_or_default();
            match resp.kvs.first() {
                None => return Ok(header),
                Some(newest) => self.wait_delete(&newest.key, header.revision).await?,
            }
        }
    }

    /// `work`'s result, or `None` if the node shuts down first.
    pub(super) async fn until_shutdown<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let mut shutdown = self.shutdown.clone();
        let stopped = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            None
        };
        futures_lite::future::or(stopped, async { Some(work.await) }).await
    }
}

/// A cleanup a waiting call owes if it is dropped before it answers (its client went away): what
/// etcd's recipes do when their context is canceled while they wait (a Lock deletes its key, a
/// Campaign resigns). The txn runs detached, after the call is gone.
pub struct CleanupIfAbandoned {
    services: Services,
    /// The txn to run if dropped armed.
    txn: Option<TxnRequest>,
}

impl CleanupIfAbandoned {
    pub fn new(services: &Services, txn: TxnRequest) -> CleanupIfAbandoned {
        CleanupIfAbandoned { services: services.clone(), txn: Some(txn) }
    }

    /// The call answered: nothing to clean up on its behalf.
    pub fn disarm(mut self) {
        self.txn = None;
    }
}

impl Drop for CleanupIfAbandoned {
    fn drop(&mut self) {
        let Some(txn) = self.txn.take() else { return };
        let services = self.services.clone();
        crate::runtime::spawn_detached(async move {
            if let Err(e) = services.txn(txn).await {
                tracing::warn!(error = %e, "cannot clean up after a lock or campaign whose client left");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_keys_print_the_lease_as_gos_hex() {
        assert_eq!(owner_key(b"lock/", 0x694d_7a3b_1c2d_0a01), b"lock/694d7a3b1c2d0a01");
        assert_eq!(owner_key(b"lock/", 100), b"lock/64");
        assert_eq!(owner_key(b"lock/", -1), b"lock/-1");
        assert_eq!(owner_key(b"lock/", i64::MIN), b"lock/-8000000000000000");
    }

    #[test]
    fn owner_reads_sort_by_creation_within_the_prefix() {
        let first = first_created(b"a/");
        assert_eq!((first.range_end.as_slice(), first.limit, first.max_create_revision), (&b"a0"[..], 1, 0));
        let ahead = last_created_up_to(b"a/", 41);
        assert_eq!((ahead.sort_order, ahead.max_create_revision), (SortOrder::Descend as i32, 41));
    }
}
