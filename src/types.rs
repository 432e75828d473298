//! The embedded API's value types: key-values and transactions, in etcd's terms, converted to and from
//! the wire types at the edge of [`crate::Node`].

use crate::proto::etcdserverpb::{self as pb, compare, request_op, response_op};
use crate::proto::mvccpb;

/// A key with its value and etcd metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision that created the key (its current generation).
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Writes since creation (1 after the first put).
    pub version: i64,
    /// Lease the key is attached to (0: none).
    pub lease: i64,
}

impl From<mvccpb::KeyValue> for KeyValue {
    fn from(kv: mvccpb::KeyValue) -> KeyValue {
        KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// The end of the span of all keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every byte is 0xFF (or the prefix is empty): the span runs to the last key
}

/// How a compare relates the key's field to the given operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare(pub(crate) pb::Compare);

impl Compare {
    fn new(
        key: impl Into<Vec<u8>>,
        op: CompareOp,
        target: compare::CompareTarget,
        operand: compare::TargetUnion,
    ) -> Compare {
        let result = match op {
            CompareOp::Equal => compare::CompareResult::Equal,
            CompareOp::NotEqual => compare::CompareResult::NotEqual,
            CompareOp::Greater => compare::CompareResult::Greater,
            CompareOp::Less => compare::CompareResult::Less,
        };
        Compare(pb::Compare {
            result: result as i32,
            target: target as i32,
            key: key.into(),
            range_end: Vec::new(),
            target_union: Some(operand),
        })
    }
    /// Compares the key's value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Compare {
        Compare::new(key, op, compare::CompareTarget::Value, compare::TargetUnion::Value(value.into()))
    }
    /// Compares the key's version (0 when the key does not exist).
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Compare {
        Compare::new(key, op, compare::CompareTarget::Version, compare::TargetUnion::Version(version))
    }
    /// Compares the key's create revision (0 when the key does not exist).
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Compare {
        Compare::new(key, op, compare::CompareTarget::Create, compare::TargetUnion::CreateRevision(revision))
    }
    /// Compares the key's mod revision (0 when the key does not exist).
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Compare {
        Compare::new(key, op, compare::CompareTarget::Mod, compare::TargetUnion::ModRevision(revision))
    }
    /// Compares the key's lease.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Compare {
        Compare::new(key, op, compare::CompareTarget::Lease, compare::TargetUnion::Lease(lease))
    }
    /// Applies the compare to every key in `[key, end)` instead of the key alone.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Compare {
        self.0.range_end = end.into();
        self
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOp {
    /// Put a value, attached to `lease` (0: none), and return the previous key-value.
    Put { key: Vec<u8>, value: Vec<u8>, lease: i64 },
    /// Read the keys of `[key, end)` (an empty `end`: the key alone).
    Get { key: Vec<u8>, end: Vec<u8> },
    /// Delete the keys of `[key, end)` (an empty `end`: the key alone).
    Delete { key: Vec<u8>, end: Vec<u8> },
    /// A nested transaction.
    Txn(Txn),
}

impl TxnOp {
    /// Put `value` at `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> TxnOp {
        TxnOp::Put { key: key.into(), value: value.into(), lease: 0 }
    }
    /// Put `value` at `key`, attached to lease `lease`.
    pub fn put_with_lease(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> TxnOp {
        TxnOp::Put { key: key.into(), value: value.into(), lease }
    }
    /// Read `key`.
    pub fn get(key: impl Into<Vec<u8>>) -> TxnOp {
        TxnOp::Get { key: key.into(), end: Vec::new() }
    }
    /// Delete `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> TxnOp {
        TxnOp::Delete { key: key.into(), end: Vec::new() }
    }

    fn into_proto(self) -> pb::RequestOp {
        let request = match self {
            TxnOp::Put { key, value, lease } => request_op::Request::RequestPut(pb::PutRequest {
                key,
                value,
                lease,
                prev_kv: true,
                ..Default::default()
            }),
            TxnOp::Get { key, end } => {
                request_op::Request::RequestRange(pb::RangeRequest { key, range_end: end, ..Default::default() })
            }
            TxnOp::Delete { key, end } => {
                request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest { key, range_end: end, prev_kv: true })
            }
            TxnOp::Txn(txn) => request_op::Request::RequestTxn(txn.into_proto()),
        };
        pb::RequestOp { request: Some(request) }
    }
}

/// A transaction: if every compare holds, run `success`, else `failure`; all writes at one revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Txn {
    compares: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction (no compares: the success branch runs).
    pub fn new() -> Txn {
        Txn::default()
    }
    /// Adds conditions (all must hold).
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        self.compares.extend(compares);
        self
    }
    /// Adds operations to the success branch.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.success.extend(ops);
        self
    }
    /// Adds operations to the failure branch.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.failure.extend(ops);
        self
    }

    pub(crate) fn into_proto(self) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: self.compares.into_iter().map(|c| c.0).collect(),
            success: self.success.into_iter().map(TxnOp::into_proto).collect(),
            failure: self.failure.into_iter().map(TxnOp::into_proto).collect(),
        }
    }
}

/// The result of one transaction operation.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOpResponse {
    /// A put, with the key-value it replaced.
    Put { prev: Option<KeyValue> },
    /// A read.
    Get { kvs: Vec<KeyValue> },
    /// A delete, with the key-values it removed.
    Delete { deleted: Vec<KeyValue> },
    /// A nested transaction.
    Txn(TxnResponse),
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnResponse {
    /// Whether the compares held (so the success branch ran).
    pub succeeded: bool,
    /// The store's revision after the transaction (0 for nested transactions).
    pub revision: i64,
    /// One response per operation of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
}

impl From<pb::TxnResponse> for TxnResponse {
    fn from(resp: pb::TxnResponse) -> TxnResponse {
        let responses = resp
            .responses
            .into_iter()
            .filter_map(|r| {
                Some(match r.response? {
                    response_op::Response::ResponsePut(p) => TxnOpResponse::Put { prev: p.prev_kv.map(Into::into) },
                    response_op::Response::ResponseRange(r) => {
                        TxnOpResponse::Get { kvs: r.kvs.into_iter().map(Into::into).collect() }
                    }
                    response_op::Response::ResponseDeleteRange(d) => {
                        TxnOpResponse::Delete { deleted: d.prev_kvs.into_iter().map(Into::into).collect() }
                    }
                    response_op::Response::ResponseTxn(t) => TxnOpResponse::Txn(t.into()),
                })
            })
            .collect();
        TxnResponse { succeeded: resp.succeeded, revision: resp.header.map_or(0, |h| h.revision), responses }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends_match_etcd() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\x00");
        assert_eq!(prefix_end(b""), b"\x00");
    }
}

/// What happened to a key, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The key after the change; for a delete, only `key` and `mod_revision` (the delete's revision)
    /// are set, as in etcd.
    pub kv: KeyValue,
    /// The key before the change, if [`WatchOptions::prev_kv`] was asked and it existed.
    pub prev_kv: Option<KeyValue>,
}

impl From<mvccpb::Event> for Event {
    fn from(event: mvccpb::Event) -> Event {
        let kind =
            if event.r#type == mvccpb::event::EventType::Delete as i32 { EventKind::Delete } else { EventKind::Put };
        Event { kind, kv: event.kv.map(Into::into).unwrap_or_default(), prev_kv: event.prev_kv.map(Into::into) }
    }
}

/// How a watch filters and reports events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Report each key's previous value with its events.
    pub prev_kv: bool,
    /// Leave out puts.
    pub no_put: bool,
    /// Leave out deletes.
    pub no_delete: bool,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// The granted TTL in seconds (raised to the minimum if asked lower).
    pub ttl: i64,
}

/// A lease's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: i64,
    /// The granted TTL in seconds.
    pub granted_ttl: i64,
    /// Whole seconds left before it expires.
    pub ttl: i64,
    /// The keys attached to it, in key order.
    pub keys: Vec<Vec<u8>>,
}
