//! Transaction evaluation driven directly: a state, a proposal, and the decided outcome, with no runtime.

use super::eval::SequencerState;
use super::{Outcome, Proposal};
use crate::error::{Error, Result};
use crate::log::LogPosition;
use crate::mvcc::{KeySpan, Layer, Version, VersionReader};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};

/// A committed store with nothing in it, at etcd's initial revision.
struct EmptyStore;

impl VersionReader for EmptyStore {
    fn current_revision(&self) -> i64 {
        1
    }
    fn compact_revision(&self) -> i64 {
        -1
    }
    fn visit(&self, _: &KeySpan, _: i64, _: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        Ok(())
    }
}

fn state() -> SequencerState {
    SequencerState { current: 1, compact: -1, in_flight: Layer::default(), sub: 0, leases: Default::default() }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

fn op(request: Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, operand: TargetUnion) -> Compare {
    Compare {
        key: key.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(operand),
        ..Default::default()
    }
}

fn txn(s: &mut SequencerState, t: TxnRequest) -> Result<TxnResponse> {
    match s.evaluate(&EmptyStore, &Proposal::Txn(t))?.outcome {
        Outcome::Txn(resp) => Ok(resp),
        other => panic!("unexpected {other:?}"),
    }
}

fn get(s: &mut SequencerState, key: &str) -> Option<crate::proto::mvccpb::KeyValue> {
    let range = op(Request::RequestRange(RangeRequest { key: key.into(), ..Default::default() }));
    let resp = txn(s, TxnRequest { success: vec![range], ..Default::default() }).unwrap();
    match &resp.responses[0].response {
        Some(Response::ResponseRange(r)) => r.kvs.first().cloned(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn puts_count_versions_and_deletes_reset_them() {
    let mut s = state();
    for value in ["a", "b"] {
        s.evaluate(&EmptyStore, &Proposal::Put(put("k", value))).unwrap();
    }
    let kv = get(&mut s, "k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.value.as_slice()), (2, 3, 2, &b"b"[..]));
    let del = DeleteRangeRequest { key: "k".into(), ..Default::default() };
    let eval = s.evaluate(&EmptyStore, &Proposal::DeleteRange(del.clone())).unwrap();
    assert_eq!(eval.record.unwrap().revision, 4);
    assert!(get(&mut s, "k").is_none());
    let nothing = s.evaluate(&EmptyStore, &Proposal::DeleteRange(del)).unwrap();
    assert!(nothing.record.is_none(), "deleting nothing takes no revision");
    s.evaluate(&EmptyStore, &Proposal::Put(put("k", "c"))).unwrap();
    let kv = get(&mut s, "k").unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));
}

#[test]
fn compares_on_missing_keys_follow_etcd() {
    let mut s = state();
    let version_zero = cmp("nope", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(0));
    let value_empty = cmp("nope", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(vec![]));
    let ok = txn(&mut s, TxnRequest { compare: vec![version_zero], ..Default::default() }).unwrap();
    assert!(ok.succeeded, "a missing key has version 0");
    let fail = txn(&mut s, TxnRequest { compare: vec![value_empty], ..Default::default() }).unwrap();
    assert!(!fail.succeeded, "a value compare on a missing key always fails");
}

#[test]
fn ops_in_a_txn_see_earlier_ops_and_share_one_revision() {
    let mut s = state();
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op(Request::RequestRange(RangeRequest { key: "a".into(), ..Default::default() })),
            op(Request::RequestPut(put("a", "1"))),
            op(Request::RequestPut(put("b", "2"))),
            op(Request::RequestRange(RangeRequest { key: "a".into(), range_end: "c".into(), ..Default::default() })),
        ],
        failure: vec![],
    };
    let resp = txn(&mut s, t).unwrap();
    assert_eq!(resp.header.unwrap().revision, 2);
    let Some(Response::ResponseRange(before)) = &resp.responses[0].response else { panic!() };
    assert_eq!((before.kvs.len(), before.header.unwrap().revision), (0, 1));
    let Some(Response::ResponseRange(after)) = &resp.responses[3].response else { panic!() };
    assert_eq!((after.kvs.len(), after.header.unwrap().revision), (2, 2), "reads after a write see revision + 1");
    assert!(after.kvs.iter().all(|kv| kv.mod_revision == 2));
}

#[test]
fn nested_txns_take_the_branch_their_compares_pick_against_the_state_before() {
    let mut s = state();
    s.evaluate(&EmptyStore, &Proposal::Put(put("flag", "on"))).unwrap();
    let inner = TxnRequest {
        // Compared against the state before the outer txn, even though the outer txn changes "flag" first.
        compare: vec![cmp("flag", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(b"on".to_vec()))],
        success: vec![op(Request::RequestPut(put("inner", "then")))],
        failure: vec![op(Request::RequestPut(put("inner", "else")))],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![op(Request::RequestPut(put("flag", "off"))), op(Request::RequestTxn(inner))],
        failure: vec![],
    };
    let resp = txn(&mut s, outer).unwrap();
    let Some(Response::ResponseTxn(nested)) = &resp.responses[1].response else { panic!() };
    assert!(nested.succeeded);
    assert_eq!(nested.header.unwrap().revision, 0, "nested headers are empty, as etcd's");
    assert_eq!(get(&mut s, "inner").unwrap().value, b"then");
}

#[test]
fn ignore_flags_and_leases_are_checked_before_anything_is_written() {
    let mut s = state();
    let ignore = PutRequest { key: "k".into(), ignore_value: true, ..Default::default() };
    assert!(matches!(s.evaluate(&EmptyStore, &Proposal::Put(ignore.clone())), Err(Error::KeyNotFound)));
    let leased = PutRequest { lease: 7, ..put("k", "v") };
    assert!(matches!(s.evaluate(&EmptyStore, &Proposal::Put(leased.clone())), Err(Error::LeaseNotFound)));
    let t = TxnRequest {
        success: vec![op(Request::RequestPut(put("other", "x"))), op(Request::RequestPut(leased))],
        ..Default::default()
    };
    assert!(matches!(txn(&mut s, t), Err(Error::LeaseNotFound)));
    assert_eq!(s.current, 1, "failed proposals take no revision");
    s.evaluate(&EmptyStore, &Proposal::Put(put("k", "v"))).unwrap();
    s.evaluate(&EmptyStore, &Proposal::Put(ignore)).unwrap();
    assert_eq!(get(&mut s, "k").unwrap().value, b"v", "ignore_value keeps the old value");
}

#[test]
fn compaction_is_bounded_by_the_current_and_previous_compact_revisions() {
    let mut s = state();
    for i in 0..3 {
        s.evaluate(&EmptyStore, &Proposal::Put(put("k", &i.to_string()))).unwrap();
    }
    let compact = |rev| Proposal::Compact(CompactionRequest { revision: rev, physical: false });
    assert!(matches!(s.evaluate(&EmptyStore, &compact(5)), Err(Error::FutureRevision)));
    let eval = s.evaluate(&EmptyStore, &compact(3)).unwrap();
    assert_eq!(eval.compaction, Some((3, false)));
    let record = eval.record.expect("a compaction is logged");
    assert_eq!(record.position(), LogPosition::new(4, 1), "compaction takes no revision: it follows the current one");
    assert_eq!(record.events, [crate::log::LogEvent::Compact { revision: 3 }]);
    assert_eq!(s.current, 4);
    assert!(matches!(s.evaluate(&EmptyStore, &compact(3)), Err(Error::Compacted)));
    let old = RangeRequest { key: "k".into(), revision: 2, ..Default::default() };
    let t = TxnRequest { success: vec![op(Request::RequestRange(old))], ..Default::default() };
    assert!(matches!(txn(&mut s, t), Err(Error::Compacted)));
}

fn txn_reading_at(revision: i64) -> Proposal {
    let range = RangeRequest { key: b"k".to_vec(), revision, ..Default::default() };
    let op = RequestOp { request: Some(Request::RequestRange(range)) };
    Proposal::Txn(TxnRequest { compare: vec![], success: vec![op], failure: vec![] })
}

#[test]
fn a_txn_range_revision_is_checked_literally_against_the_compact_revision() {
    let mut state =
        SequencerState { current: 1, compact: -1, in_flight: Layer::default(), sub: 0, leases: Default::default() };
    // -1 is not below etcd's initial compact revision (-1): the range reads the current revision.
    assert!(state.evaluate(&EmptyStore, &txn_reading_at(-1)).is_ok());
    assert!(matches!(state.evaluate(&EmptyStore, &txn_reading_at(-2)), Err(Error::Compacted)));
    assert!(matches!(state.evaluate(&EmptyStore, &txn_reading_at(2)), Err(Error::FutureRevision)));
    let compact = Proposal::Compact(CompactionRequest { revision: 0, physical: false });
    state.evaluate(&EmptyStore, &compact).unwrap();
    assert!(matches!(state.evaluate(&EmptyStore, &txn_reading_at(-1)), Err(Error::Compacted)));
    assert!(state.evaluate(&EmptyStore, &txn_reading_at(1)).is_ok());
}
