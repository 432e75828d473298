//! Checks a request must pass before it reaches the sequencer (or a read view), as etcd's gRPC layer
//! makes them, in etcd's order and with etcd's errors: empty keys, the `ignore_*` flags, op counts,
//! request size, and puts/deletes of one key in one transaction. Invariant: every write, from a
//! client or the embedded API, passes here once, in `Services`.

use std::collections::HashSet;

use prost::Message;

use crate::config::TXN_NESTED_LEVELS_MAX;
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// The limits a proposal is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encoded write request, in bytes.
    pub max_request_bytes: usize,
    /// Most compares or ops in one transaction branch.
    pub max_txn_ops: usize,
}

/// Validates a put as etcd's gRPC layer does.
pub fn validate_put(r: &PutRequest, limits: Limits) -> Result<()> {
    check_put(r)?;
    check_size(r.encoded_len(), limits)
}

/// Validates a delete as etcd's gRPC layer does.
pub fn validate_delete(r: &DeleteRangeRequest, limits: Limits) -> Result<()> {
    check_delete(r)?;
    check_size(r.encoded_len(), limits)
}

/// Validates a write with no checks of its own (compaction, lease grant and revoke): its size.
pub fn validate_size(r: &impl Message, limits: Limits) -> Result<()> {
    check_size(r.encoded_len(), limits)
}

/// Validates a transaction as etcd's gRPC layer does (also for ones answered without the sequencer).
pub fn validate_txn(r: &TxnRequest, limits: Limits) -> Result<()> {
    check_txn(r, limits.max_txn_ops, 1)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    check_size(r.encoded_len(), limits)
}

fn check_size(encoded_len: usize, limits: Limits) -> Result<()> {
    if encoded_len > limits.max_request_bytes {
        return Err(Error::RequestTooLarge);
    }
    Ok(())
}

/// etcd's `checkRangeRequest`.
pub fn check_range(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

fn check_put(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

fn check_delete(r: &DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` for the txn at nesting `level` (the top-level txn is 1): each level
/// may hold what is left of the op budget after the levels above it. Nesting beyond
/// [`TXN_NESTED_LEVELS_MAX`] is refused as an exhausted budget is (etcd has no such cap; with its
/// default budget, nesting ends long before it).
fn check_txn(r: &TxnRequest, max_txn_ops: usize, level: usize) -> Result<()> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops || level > TXN_NESTED_LEVELS_MAX {
        return Err(Error::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        // etcd passes the remaining budget down to nested txns.
        check_op(op, max_txn_ops - ops, level)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize, level: usize) -> Result<()> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(r)) => check_txn(r, max_txn_ops, level + 1),
        None => Err(Error::KeyNotFound),
    }
}

/// A deleted span as etcd's interval tree sees it: a point, or `[start, end)` compared literally
/// (so a `\0` range end makes an interval that contains no key, as in etcd).
struct Deleted {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_slice(),
            Some(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

fn intersects(dels: &[Deleted], key: &[u8]) -> bool {
    dels.iter().any(|d| d.contains(key))
}

/// etcd's `checkIntervals`: no key may be put twice, nor put and deleted, along any path through
/// the transaction (the two branches of a nested txn are exclusive, so each may put the same key).
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>)> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => {
                Some(Deleted { start: d.key.clone(), end: (!d.range_end.is_empty()).then(|| d.range_end.clone()) })
            }
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(txn)) = &op.request else { continue };
        let (puts_then, dels_then) = check_intervals(&txn.success)?;
        let (puts_else, dels_else) = check_intervals(&txn.failure)?;
        for key in &puts_then {
            if puts.contains(key) || intersects(&dels, key) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in puts_else {
            if (puts.contains(&key) && !puts_then.contains(&key)) || intersects(&dels, &key) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(key);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else { continue };
        if puts.contains(&put.key) || intersects(&dels, &put.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp { request: Some(Request::RequestPut(PutRequest { key: key.into(), ..Default::default() })) }
    }
    fn del(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp { request: Some(Request::RequestTxn(TxnRequest { compare: vec![], success, failure })) }
    }
    const LIMITS: Limits = Limits { max_request_bytes: 1 << 20, max_txn_ops: 4 };
    fn check(success: Vec<RequestOp>) -> Result<()> {
        validate_txn(&TxnRequest { compare: vec![], success, failure: vec![] }, LIMITS)
    }

    #[test]
    fn a_key_put_twice_or_put_and_deleted_is_a_duplicate() {
        assert!(matches!(check(vec![put("a"), put("a")]), Err(Error::DuplicateKey)));
        assert!(matches!(check(vec![del("a", ""), put("a")]), Err(Error::DuplicateKey)));
        assert!(matches!(check(vec![del("a", "c"), put("b")]), Err(Error::DuplicateKey)));
        assert!(matches!(check(vec![put("a"), txn(vec![put("a")], vec![])]), Err(Error::DuplicateKey)));
        assert!(matches!(check(vec![del("a", ""), txn(vec![put("a")], vec![])]), Err(Error::DuplicateKey)));
    }

    #[test]
    fn exclusive_branches_and_overlapping_deletes_are_allowed() {
        check(vec![txn(vec![put("a")], vec![put("a")])]).unwrap();
        check(vec![del("a", "z"), del("b", "c")]).unwrap();
        check(vec![put("a"), put("b")]).unwrap();
        check(vec![del("a", "c"), put("c")]).unwrap();
        // etcd compares a "\0" range end literally: the interval holds no key.
        check(vec![del("a", "\0"), put("b")]).unwrap();
    }

    #[test]
    fn op_counts_empty_keys_and_flags_are_checked() {
        let five = (0..5).map(|i| put(&format!("k{i}"))).collect();
        assert!(matches!(check(five), Err(Error::TooManyOps)));
        assert!(matches!(check(vec![put("")]), Err(Error::EmptyKey)));
        assert!(matches!(check(vec![RequestOp { request: None }]), Err(Error::KeyNotFound)));
        let p = PutRequest { key: "k".into(), value: "v".into(), ignore_value: true, ..Default::default() };
        assert!(matches!(validate_put(&p, LIMITS), Err(Error::ValueProvided)));
        let p = PutRequest { key: "k".into(), lease: 5, ignore_lease: true, ..Default::default() };
        assert!(matches!(validate_put(&p, LIMITS), Err(Error::LeaseProvided)));
        let big = PutRequest { key: "k".into(), value: vec![0; 1 << 20], ..Default::default() };
        assert!(matches!(validate_put(&big, LIMITS), Err(Error::RequestTooLarge)));
    }
}
