//! Transaction evaluation driven directly: a state, a proposal, and the decided outcome, with no runtime.

use super::eval::SequencerState;
use super::{Outcome, Proposal};
use crate::error::{Error, Result};
use crate::ids::{LeaseId, Revision};
use crate::kv::{
    Compaction, Compare, CompareResult, CompareTarget, DeleteRange, Put, RangeQuery, Txn, TxnOp, TxnOpResult, TxnResult,
};
use crate::log::LogPosition;
use crate::mvcc::{KeySpan, Layer, Version, VersionReader};

/// A committed store with nothing in it, at etcd's initial revision.
struct EmptyStore;

impl VersionReader for EmptyStore {
    fn current_revision(&self) -> Revision {
        Revision(1)
    }
    fn compact_revision(&self) -> Revision {
        Revision(-1)
    }
    fn visit(&self, _: &KeySpan, _: Revision, _: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        Ok(())
    }
}

fn state() -> SequencerState {
    SequencerState {
        current: Revision(1),
        compact: Revision(-1),
        in_flight: Layer::default(),
        sub: 0,
        leases: Default::default(),
    }
}

fn put(key: &str, value: &str) -> Put {
    Put { key: key.into(), value: value.into(), ..Default::default() }
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult) -> Compare {
    Compare { key: key.into(), range_end: Vec::new(), target, result }
}

fn txn(s: &mut SequencerState, t: Txn) -> Result<TxnResult> {
    match s.evaluate(&EmptyStore, Proposal::Txn(t))?.outcome {
        Outcome::Txn(resp) => Ok(resp),
        other => panic!("unexpected {other:?}"),
    }
}

fn get(s: &mut SequencerState, key: &str) -> Option<crate::proto::mvccpb::KeyValue> {
    let range = TxnOp::Range(RangeQuery { key: key.into(), ..Default::default() });
    let resp = txn(s, Txn { success: vec![range], ..Default::default() }).unwrap();
    match &resp.responses[0] {
        TxnOpResult::Range(r) => r.kvs.first().cloned(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn puts_count_versions_and_deletes_reset_them() {
    let mut s = state();
    for value in ["a", "b"] {
        s.evaluate(&EmptyStore, Proposal::Put(put("k", value))).unwrap();
    }
    let kv = get(&mut s, "k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.value.as_slice()), (2, 3, 2, &b"b"[..]));
    let del = DeleteRange { key: "k".into(), ..Default::default() };
    let eval = s.evaluate(&EmptyStore, Proposal::DeleteRange(del.clone())).unwrap();
    assert_eq!(eval.record.unwrap().revision, Revision(4));
    assert!(get(&mut s, "k").is_none());
    let nothing = s.evaluate(&EmptyStore, Proposal::DeleteRange(del)).unwrap();
    assert!(nothing.record.is_none(), "deleting nothing takes no revision");
    s.evaluate(&EmptyStore, Proposal::Put(put("k", "c"))).unwrap();
    let kv = get(&mut s, "k").unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));
}

#[test]
fn compares_on_missing_keys_follow_etcd() {
    let mut s = state();
    let version_zero = cmp("nope", CompareTarget::Version(0), CompareResult::Equal);
    let value_empty = cmp("nope", CompareTarget::Value(vec![]), CompareResult::Equal);
    let ok = txn(&mut s, Txn { compare: vec![version_zero], ..Default::default() }).unwrap();
    assert!(ok.succeeded, "a missing key has version 0");
    let fail = txn(&mut s, Txn { compare: vec![value_empty], ..Default::default() }).unwrap();
    assert!(!fail.succeeded, "a value compare on a missing key always fails");
}

#[test]
fn ops_in_a_txn_see_earlier_ops_and_share_one_revision() {
    let mut s = state();
    let t = Txn {
        compare: vec![],
        success: vec![
            TxnOp::Range(RangeQuery { key: "a".into(), ..Default::default() }),
            TxnOp::Put(put("a", "1")),
            TxnOp::Put(put("b", "2")),
            TxnOp::Range(RangeQuery { key: "a".into(), range_end: "c".into(), ..Default::default() }),
        ],
        failure: vec![],
    };
    let resp = txn(&mut s, t).unwrap();
    assert_eq!(resp.revision, Revision(2));
    let TxnOpResult::Range(before) = &resp.responses[0] else { panic!() };
    assert_eq!((before.kvs.len(), before.revision), (0, Revision(1)));
    let TxnOpResult::Range(after) = &resp.responses[3] else { panic!() };
    assert_eq!((after.kvs.len(), after.revision), (2, Revision(2)), "reads after a write see revision + 1");
    assert!(after.kvs.iter().all(|kv| kv.mod_revision == 2));
}

#[test]
fn nested_txns_take_the_branch_their_compares_pick_against_the_state_before() {
    let mut s = state();
    s.evaluate(&EmptyStore, Proposal::Put(put("flag", "on"))).unwrap();
    let inner = Txn {
        // Compared against the state before the outer txn, even though the outer txn changes "flag" first.
        compare: vec![cmp("flag", CompareTarget::Value(b"on".to_vec()), CompareResult::Equal)],
        success: vec![TxnOp::Put(put("inner", "then"))],
        failure: vec![TxnOp::Put(put("inner", "else"))],
    };
    let outer =
        Txn { compare: vec![], success: vec![TxnOp::Put(put("flag", "off")), TxnOp::Txn(inner)], failure: vec![] };
    let resp = txn(&mut s, outer).unwrap();
    let TxnOpResult::Txn(nested) = &resp.responses[1] else { panic!() };
    assert!(nested.succeeded);
    assert_eq!(nested.revision, Revision(0), "nested headers are empty, as etcd's");
    assert_eq!(get(&mut s, "inner").unwrap().value, b"then");
}

#[test]
fn ignore_flags_and_leases_are_checked_before_anything_is_written() {
    let mut s = state();
    let ignore = Put { key: "k".into(), ignore_value: true, ..Default::default() };
    assert!(matches!(s.evaluate(&EmptyStore, Proposal::Put(ignore.clone())), Err(Error::KeyNotFound)));
    let leased = Put { lease: LeaseId(7), ..put("k", "v") };
    assert!(matches!(s.evaluate(&EmptyStore, Proposal::Put(leased.clone())), Err(Error::LeaseNotFound)));
    let t = Txn { success: vec![TxnOp::Put(put("other", "x")), TxnOp::Put(leased)], ..Default::default() };
    assert!(matches!(txn(&mut s, t), Err(Error::LeaseNotFound)));
    assert_eq!(s.current, Revision(1), "failed proposals take no revision");
    s.evaluate(&EmptyStore, Proposal::Put(put("k", "v"))).unwrap();
    s.evaluate(&EmptyStore, Proposal::Put(ignore)).unwrap();
    assert_eq!(get(&mut s, "k").unwrap().value, b"v", "ignore_value keeps the old value");
}

#[test]
fn compaction_is_bounded_by_the_current_and_previous_compact_revisions() {
    let mut s = state();
    for i in 0..3 {
        s.evaluate(&EmptyStore, Proposal::Put(put("k", &i.to_string()))).unwrap();
    }
    let compact = |rev| Proposal::Compact(Compaction { revision: rev, physical: false });
    assert!(matches!(s.evaluate(&EmptyStore, compact(Revision(5))), Err(Error::FutureRevision)));
    let eval = s.evaluate(&EmptyStore, compact(Revision(3))).unwrap();
    assert_eq!(eval.compaction, Some((Revision(3), false)));
    let record = eval.record.expect("a compaction is logged");
    assert_eq!(
        record.position(),
        LogPosition::new(Revision(4), 1),
        "compaction takes no revision: it follows the current one"
    );
    assert_eq!(record.events, [crate::log::LogEvent::Compact { revision: Revision(3) }]);
    assert_eq!(s.current, Revision(4));
    assert!(matches!(s.evaluate(&EmptyStore, compact(Revision(3))), Err(Error::Compacted)));
    let old = RangeQuery { key: "k".into(), revision: Revision(2), ..Default::default() };
    let t = Txn { success: vec![TxnOp::Range(old)], ..Default::default() };
    assert!(matches!(txn(&mut s, t), Err(Error::Compacted)));
}

fn txn_reading_at(revision: i64) -> Proposal {
    let range = RangeQuery { key: b"k".to_vec(), revision: Revision(revision), ..Default::default() };
    Proposal::Txn(Txn { compare: vec![], success: vec![TxnOp::Range(range)], failure: vec![] })
}

#[test]
fn a_txn_range_revision_is_checked_literally_against_the_compact_revision() {
    let mut state = SequencerState {
        current: Revision(1),
        compact: Revision(-1),
        in_flight: Layer::default(),
        sub: 0,
        leases: Default::default(),
    };
    // -1 is not below etcd's initial compact revision (-1): the range reads the current revision.
    assert!(state.evaluate(&EmptyStore, txn_reading_at(-1)).is_ok());
    assert!(matches!(state.evaluate(&EmptyStore, txn_reading_at(-2)), Err(Error::Compacted)));
    assert!(matches!(state.evaluate(&EmptyStore, txn_reading_at(2)), Err(Error::FutureRevision)));
    let compact = Proposal::Compact(Compaction { revision: Revision(0), physical: false });
    state.evaluate(&EmptyStore, compact).unwrap();
    assert!(matches!(state.evaluate(&EmptyStore, txn_reading_at(-1)), Err(Error::Compacted)));
    assert!(state.evaluate(&EmptyStore, txn_reading_at(1)).is_ok());
}
