//! The watch model of the integration tests: the shared pure model (`src/shard/watch_model.rs`,
//! also used by the shard's unit tests) and the writer that feeds it and the server under test at
//! once. Used by `tests/watch.rs`, `tests/watch_fanout.rs` and `tests/differential.rs`.

use t4::proto;
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::watch_create_request::FilterType;
use t4::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCreateRequest, request_op};
use t4::proto::mvccpb::Event;
use tonic::transport::Channel;

#[path = "../../src/shard/watch_model.rs"]
mod shared;
pub use shared::*;

/// The model's reading of a create request.
pub fn model_watch(r: &WatchCreateRequest) -> Watch {
    let has = |f: FilterType| r.filters.contains(&(f as i32));
    Watch {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        start_revision: r.start_revision,
        no_put: has(FilterType::Noput),
        no_delete: has(FilterType::Nodelete),
        prev_kv: r.prev_kv,
    }
}

/// The create request for the model's watch `w`.
pub fn create_request(w: &Watch) -> WatchCreateRequest {
    let filters = [(w.no_put, FilterType::Noput), (w.no_delete, FilterType::Nodelete)];
    WatchCreateRequest {
        key: w.key.clone(),
        range_end: w.range_end.clone(),
        start_revision: w.start_revision,
        filters: filters.iter().filter(|(on, _)| *on).map(|(_, f)| *f as i32).collect(),
        prev_kv: w.prev_kv,
        ..Default::default()
    }
}

/// Writes through the KV service and the model at once.
pub struct Writer {
    pub kv: KvClient<Channel>,
    pub model: Model,
    /// Every event so far, in order.
    pub log: Vec<Event>,
}

impl Writer {
    /// A writer through `kv`, starting from an empty store.
    pub fn new(kv: KvClient<Channel>) -> Writer {
        Writer { kv, model: Model::default(), log: Vec::new() }
    }

    /// Sends `ops` (one Put or DeleteRange, or a Txn of several) and returns the model's events,
    /// after checking that the server's revision is the model's.
    pub async fn write(&mut self, ops: Vec<Op>) -> Vec<Event> {
        let request_op = |op: &Op| match op {
            Op::Put(key, value) => request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            }),
            Op::Delete(key, range_end) => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                ..Default::default()
            }),
        };
        let header = match (ops.len(), request_op(&ops[0])) {
            (1, request_op::Request::RequestPut(put)) => self.kv.put(put).await.expect("put").into_inner().header,
            (1, request_op::Request::RequestDeleteRange(delete)) => {
                self.kv.delete_range(delete).await.expect("delete").into_inner().header
            }
            _ => {
                let success = ops.iter().map(|op| RequestOp { request: Some(request_op(op)) }).collect();
                let txn = self.kv.txn(TxnRequest { success, ..Default::default() }).await.expect("txn").into_inner();
                assert!(txn.succeeded, "a txn without compares succeeds");
                txn.header
            }
        };
        let events = self.model.apply(&ops);
        assert_eq!(header.expect("a header").revision, self.model.revision, "the server's revision after {ops:?}");
        self.log.extend(events.iter().cloned());
        events
    }
}
