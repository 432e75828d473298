//! A model of the key space for watch tests: the writes that feed both it and the server under test,
//! and the events a watch should see. Shared by `tests/watch.rs` and `tests/watch_fanout.rs`.

use std::collections::BTreeMap;

use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::watch_create_request::FilterType;
use t4::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCreateRequest, request_op};
use t4::proto::mvccpb::{Event, KeyValue, event::EventType};
use tonic::transport::Channel;

/// The revision an event happened at.
pub fn mod_revision(e: &Event) -> i64 {
    e.kv.as_ref().expect("an event carries a kv").mod_revision
}

#[derive(Clone, Debug)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    /// DeleteRange of `[key, range_end)`.
    Delete(Vec<u8>, Vec<u8>),
}

pub fn put_op(key: &str, value: &str) -> Op {
    Op::Put(key.into(), value.into())
}

pub fn delete_op(key: &str) -> Op {
    Op::Delete(key.into(), Vec::new())
}

pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

#[derive(Clone)]
pub struct Model {
    pub revision: i64,
    pub live: BTreeMap<Vec<u8>, KeyValue>,
}

impl Default for Model {
    fn default() -> Self {
        Model { revision: 1, live: BTreeMap::new() }
    }
}

impl Model {
    /// Applies one request (a txn when several ops) and returns its events, each with its prev_kv.
    pub fn apply(&mut self, ops: &[Op]) -> Vec<Event> {
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    let prev = self.live.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        value: value.clone(),
                        lease: 0,
                    };
                    self.live.insert(key.clone(), kv.clone());
                    events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: prev });
                }
                Op::Delete(start, end) => {
                    let keys: Vec<Vec<u8>> = self.live.keys().filter(|k| in_range(k, start, end)).cloned().collect();
                    for key in keys {
                        let prev = self.live.remove(&key);
                        let kv = KeyValue { key, mod_revision: rev, ..Default::default() };
                        events.push(Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv: prev });
                    }
                }
            }
        }
        if !events.is_empty() {
            self.revision = rev;
        }
        events
    }
}

/// The events a watch created with `w` sees among `events` (start_revision aside).
pub fn seen_by(w: &WatchCreateRequest, events: &[Event]) -> Vec<Event> {
    let drops = |e: &Event| {
        w.filters.iter().any(|&f| {
            (f == FilterType::Noput as i32 && e.r#type == EventType::Put as i32)
                || (f == FilterType::Nodelete as i32 && e.r#type == EventType::Delete as i32)
        })
    };
    events
        .iter()
        .filter(|e| in_range(&e.kv.as_ref().unwrap().key, &w.key, &w.range_end) && !drops(e))
        .map(|e| Event { prev_kv: if w.prev_kv { e.prev_kv.clone() } else { None }, ..e.clone() })
        .collect()
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
