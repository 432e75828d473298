//! The decoder pinned against prost (random txns, every truncation, flipped bits), the nesting cap
//! against validation (etcd's order of faults), and the stack that the deepest txns need.

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::etcd::validate::{Limits, validate_txn};
use crate::ids::Revision;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The wire bytes of `levels` txns nested through their first success op, the innermost one's
/// body being `innermost`; built without recursion, outside in.
pub(crate) fn nested(levels: usize, innermost: &[u8]) -> Vec<u8> {
    let mut bodies = vec![innermost.len()]; // bodies[i]: the body of level `levels - i`
    for i in 1..levels {
        let op = 1 + varint_len(bodies[i - 1]) + bodies[i - 1];
        bodies.push(1 + varint_len(op) + op);
    }
    let mut out = Vec::with_capacity(bodies[levels - 1]);
    for i in (1..levels).rev() {
        let inner = bodies[i - 1];
        out.push(0x12); // TxnRequest.success
        put_varint(&mut out, 1 + varint_len(inner) + inner);
        out.push(0x22); // RequestOp.request_txn
        put_varint(&mut out, inner);
    }
    out.extend_from_slice(innermost);
    out
}

fn op(request: Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn put_op(key: &str) -> RequestOp {
    op(Request::RequestPut(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() }))
}

fn range_op(key: &str) -> RequestOp {
    op(Request::RequestRange(RangeRequest { key: key.into(), ..Default::default() }))
}

fn one_op(op: RequestOp) -> Vec<u8> {
    TxnRequest { success: vec![op], ..Default::default() }.encode_to_vec()
}

/// The levels of txns along the first success op of each.
fn levels_of(t: &TxnRequest) -> usize {
    let mut levels = 1;
    let mut t = t;
    while let Some(RequestOp { request: Some(Request::RequestTxn(nested)) }) = t.success.first() {
        levels += 1;
        t = nested;
    }
    levels
}

fn random_txn(rng: &mut ChaCha8Rng, depth: usize) -> TxnRequest {
    let key = |rng: &mut ChaCha8Rng| format!("k{}", rng.random_range(0..4)).into_bytes();
    let ops = |rng: &mut ChaCha8Rng| {
        (0..rng.random_range(0..3))
            .map(|_| match rng.random_range(0..5) {
                0 => op(Request::RequestRange(RangeRequest { key: key(rng), limit: 3, ..Default::default() })),
                1 => op(Request::RequestPut(PutRequest { key: key(rng), value: key(rng), ..Default::default() })),
                2 => op(Request::RequestDeleteRange(DeleteRangeRequest { key: key(rng), ..Default::default() })),
                3 if depth < 4 => op(Request::RequestTxn(random_txn(rng, depth + 1))),
                _ => RequestOp { request: None },
            })
            .collect::<Vec<_>>()
    };
    let compare = (0..rng.random_range(0..3))
        .map(|_| Compare {
            key: key(rng),
            target: CompareTarget::Version as i32,
            result: CompareResult::Greater as i32,
            target_union: Some(TargetUnion::Version(rng.random_range(0..3))),
            ..Default::default()
        })
        .collect();
    TxnRequest { compare, success: ops(rng), failure: ops(rng) }
}

#[test]
fn shallow_txns_decode_as_prost_decodes_them() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..300 {
        let txn = random_txn(&mut rng, 1);
        let mut bytes = txn.encode_to_vec();
        assert_eq!(decode_txn(&bytes), Ok(txn.clone()));
        // Unknown fields (a varint, a fixed32, bytes, an empty group) are skipped, as prost skips them.
        bytes.extend_from_slice(&[0x78, 0x05, 0x7d, 1, 2, 3, 4, 0x82, 0x01, 0x01, 0xff, 0x8b, 0x01, 0x8c, 0x01]);
        assert_eq!(TxnRequest::decode(&bytes[..]).as_ref(), Ok(&txn));
        assert_eq!(decode_txn(&bytes), Ok(txn));
    }
}

#[test]
fn every_truncation_and_byte_flip_is_refused_or_decoded_as_prost_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..100 {
        let bytes = random_txn(&mut rng, 1).encode_to_vec();
        for cut in 0..bytes.len() {
            let ours = decode_txn(&bytes[..cut]);
            let prost = TxnRequest::decode(&bytes[..cut]);
            assert_eq!(ours.is_ok(), prost.is_ok(), "cut at {cut} of {bytes:?}: {ours:?} vs {prost:?}");
            if let (Ok(ours), Ok(prost)) = (ours, prost) {
                assert_eq!(ours, prost);
            }
        }
        for _ in 0..bytes.len() {
            let mut flipped = bytes.clone();
            let at = rng.random_range(0..flipped.len());
            flipped[at] ^= 1 << rng.random_range(0..8);
            // Refused exactly when prost refuses (values may differ: prost merges a repeated
            // oneof member where etcd replaces it).
            let (ours, prost) = (decode_txn(&flipped), TxnRequest::decode(&flipped[..]));
            assert_eq!(ours.is_ok(), prost.is_ok(), "{flipped:?}: {ours:?} vs {prost:?}");
        }
    }
}

#[test]
fn malformed_fields_are_refused_with_a_reason() {
    let wrong_wire_type = [0x10, 0x01]; // success as a varint
    assert_eq!(
        decode_txn(&wrong_wire_type).unwrap_err().to_string(),
        "TxnRequest.success: invalid wire type: 0 (expected LengthDelimited)"
    );
    assert_eq!(decode_txn(&[0x12, 0x05, 0x22]), Err(WireError::Truncated), "longer than the message");
    assert_eq!(decode_txn(&[0x00]), Err(WireError::InvalidKey(0)));
    assert_eq!(decode_txn(&[0x0e]), Err(WireError::InvalidWireType(6)));
    assert_eq!(decode_txn(&[0x12, 0x01, 0x80]), Err(WireError::InvalidVarint), "a varint cut by its op's end");
    assert_eq!(decode_txn(&[0x7c]), Err(WireError::UnexpectedEndGroup), "an unknown field's stray end group");
    assert_eq!(decode_txn(&[0x7b, 0x74]), Err(WireError::UnexpectedEndGroup), "a group ended by another field");
    let bad_leaf = [0x12, 0x03, 0x0a, 0x01, 0x0b]; // a RangeRequest holding an end-group tag
    assert!(matches!(decode_txn(&bad_leaf), Err(WireError::Leaf { field: "RequestOp.request_range", .. })));
}

#[test]
fn a_later_oneof_member_replaces_an_earlier_one_as_in_etcd() {
    let mut op_bytes = RequestOp { request: Some(Request::RequestTxn(TxnRequest::default())) }.encode_to_vec();
    op_bytes.extend(put_op("k").encode_to_vec());
    let mut bytes = vec![0x12, op_bytes.len() as u8];
    bytes.extend(op_bytes);
    assert_eq!(decode_txn(&bytes).unwrap().success, vec![put_op("k")]);
}

#[test]
fn nesting_is_built_down_to_the_cap_and_refused_below_it() {
    let limits = |max_txn_ops| Limits { max_request_bytes: 1 << 30, max_txn_ops };
    let inner_put = one_op(put_op("k"));
    for (levels, innermost, ok) in [(128, &inner_put[..], true), (129, &inner_put, false), (129, &[][..], true)] {
        let txn = decode_txn(&nested(levels, innermost)).unwrap();
        assert_eq!(levels_of(&txn), levels);
        assert_eq!(validate_txn(&txn, limits(128)).is_ok(), ok, "{levels} levels");
    }
    let txn = decode_txn(&nested(130, &[])).unwrap();
    assert!(matches!(validate_txn(&txn, limits(128)), Err(crate::Error::TooManyOps)));
    // Beyond the cap, the txn below it is an empty placeholder, refused whatever the budget.
    for levels in [TXN_NESTED_LEVELS_MAX + 1, 10_000] {
        let txn = decode_txn(&nested(levels, &inner_put)).unwrap();
        assert_eq!(levels_of(&txn), TXN_NESTED_LEVELS_MAX + 1);
        assert!(matches!(validate_txn(&txn, limits(1 << 20)), Err(crate::Error::TooManyOps)));
    }
    let txn = decode_txn(&nested(TXN_NESTED_LEVELS_MAX, &inner_put)).unwrap();
    validate_txn(&txn, limits(1 << 20)).expect("the cap itself is accepted when the budget allows");
    // Bytes that do not decode are found below the cap too.
    assert_eq!(
        decode_txn(&nested(10_000, &[0x10, 0x01])).unwrap_err().to_string(),
        "TxnRequest.success: invalid wire type: 0 (expected LengthDelimited)"
    );
}

#[test]
fn the_first_fault_in_etcds_order_wins_over_deeper_nesting() {
    let limits = Limits { max_request_bytes: 1 << 30, max_txn_ops: 128 };
    let deep = nested(10_000, &one_op(put_op("k")));
    let deep_op = |bytes: &[u8]| {
        let mut op = vec![0x22];
        put_varint(&mut op, bytes.len());
        op.extend_from_slice(bytes);
        op
    };
    let with_ops = |ops: Vec<Vec<u8>>| {
        let mut txn = Vec::new();
        for op in ops {
            txn.push(0x12);
            put_varint(&mut txn, op.len());
            txn.extend(op);
        }
        txn
    };
    let empty_key = range_op("").encode_to_vec();
    let first_empty = decode_txn(&with_ops(vec![empty_key.clone(), deep_op(&deep)])).unwrap();
    assert!(matches!(validate_txn(&first_empty, limits), Err(crate::Error::EmptyKey)));
    let first_deep = decode_txn(&with_ops(vec![deep_op(&deep), empty_key])).unwrap();
    assert!(matches!(validate_txn(&first_deep, limits), Err(crate::Error::TooManyOps)));
}

#[test]
fn a_megabyte_of_nesting_decodes_without_recursion() {
    let bytes = nested(300_000, &[]);
    assert!(bytes.len() > 1 << 20);
    let run = move || {
        let txn = decode_txn(&bytes).unwrap();
        assert_eq!(levels_of(&txn), TXN_NESTED_LEVELS_MAX + 1);
    };
    // A small stack: decoding must not recurse per level.
    std::thread::Builder::new().stack_size(256 * 1024).spawn(run).unwrap().join().unwrap();
}

/// A store with nothing in it, at etcd's initial revision.
struct EmptyStore;

impl crate::mvcc::VersionReader for EmptyStore {
    fn current_revision(&self) -> Revision {
        Revision(1)
    }
    fn compact_revision(&self) -> Revision {
        Revision(-1)
    }
    fn visit(
        &self,
        _: &crate::mvcc::KeySpan,
        _: Revision,
        _: &mut dyn FnMut(&[u8], crate::mvcc::Version) -> bool,
    ) -> crate::Result<()> {
        Ok(())
    }
}

/// Everything that recurses per level, on the deepest txn accepted and on a hostile one, fits in
/// half the 2 MiB stack of an executor or read-pool thread (debug builds use the most).
#[test]
fn the_deepest_txns_are_handled_in_half_an_executor_stack() {
    use crate::etcd::convert::{txn, txn_response};
    use crate::sequencer::eval::{SequencerState, read_only_txn};
    use crate::sequencer::{Outcome, Proposal};
    let run = || {
        let limits = Limits { max_request_bytes: 1 << 30, max_txn_ops: 1 << 20 };
        let write = decode_txn(&nested(TXN_NESTED_LEVELS_MAX, &one_op(put_op("k")))).unwrap();
        validate_txn(&write, limits).unwrap();
        let write = txn(write).unwrap();
        assert!(!write.is_read_only());
        let mut state = SequencerState {
            current: Revision(1),
            compact: Revision(-1),
            in_flight: Default::default(),
            sub: 0,
            leases: Default::default(),
        };
        let evaluation = state.evaluate(&EmptyStore, Proposal::Txn(write)).unwrap();
        let Outcome::Txn(result) = evaluation.outcome else { panic!("a txn answers a txn") };
        let response = txn_response(result, None);
        assert!(response.succeeded && !response.encode_to_vec().is_empty());

        let read = decode_txn(&nested(TXN_NESTED_LEVELS_MAX, &one_op(range_op("k")))).unwrap();
        validate_txn(&read, limits).unwrap();
        let read = txn(read).unwrap();
        assert!(read.is_read_only());
        let response = txn_response(read_only_txn(&EmptyStore, read).unwrap(), None);
        assert!(!response.encode_to_vec().is_empty());

        let hostile = decode_txn(&nested(10_000, &one_op(put_op("k")))).unwrap();
        assert!(matches!(validate_txn(&hostile, limits), Err(crate::Error::TooManyOps)));
    };
    std::thread::Builder::new().stack_size(1024 * 1024).spawn(run).unwrap().join().unwrap();
}
