//! Decodes a `TxnRequest` from its wire bytes without recursion. prost decodes nested messages
//! recursively and stops at 100 message levels (50 nested txns: each is TxnRequest -> RequestOp ->
//! TxnRequest), where etcd accepts nesting until its op budget runs out; lifting prost's limit would
//! let hostile nesting overflow the stack instead.
//!
//! Every byte is parsed (so a message that does not decode is refused wherever the fault is, as
//! etcd refuses it), but txns nested deeper than [`TXN_NESTED_LEVELS_MAX`] are not built: each
//! becomes an empty txn at the level below the cap, which validation refuses with etcd's
//! too-many-ops error (see `validate::check_txn`). Whatever follows from the tree is bounded by the
//! cap: validation, evaluation, encoding the response, dropping it.

use std::fmt;

use prost::Message;

use crate::config::TXN_NESTED_LEVELS_MAX;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// Why bytes are not a `TxnRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A varint runs past its message or past 10 bytes.
    InvalidVarint,
    /// A field key with field number 0, or one above protobuf's range.
    InvalidKey(u64),
    /// A wire type protobuf does not define.
    InvalidWireType(u64),
    /// A known field sent with the wrong wire type.
    UnexpectedWireType { field: &'static str, wire_type: u8 },
    /// A length or fixed-size field runs past the message holding it.
    Truncated,
    /// An end-group marker with no group open, or closing another field's group.
    UnexpectedEndGroup,
    /// A leaf message (Compare, RangeRequest, PutRequest, DeleteRangeRequest) that prost refuses.
    Leaf { field: &'static str, reason: String },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::InvalidVarint => write!(f, "invalid varint"),
            WireError::InvalidKey(key) => write!(f, "invalid key value: {key}"),
            WireError::InvalidWireType(value) => write!(f, "invalid wire type value: {value}"),
            WireError::UnexpectedWireType { field, wire_type } => {
                write!(f, "{field}: invalid wire type: {wire_type} (expected LengthDelimited)")
            }
            WireError::Truncated => write!(f, "buffer underflow"),
            WireError::UnexpectedEndGroup => write!(f, "unexpected end group tag"),
            WireError::Leaf { field, reason } => write!(f, "{field}: {reason}"),
        }
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// The highest field number protobuf allows.
const FIELD_NUMBER_MAX: u64 = (1 << 29) - 1;

/// A message open on the decoder's stack.
enum Open {
    /// A txn being built.
    Txn(TxnRequest),
    /// An op being built for the txn below it; `success` names its branch.
    Op { request: Option<Request>, success: bool },
}

struct Frame {
    open: Open,
    /// Where the message's bytes end.
    end: usize,
}

/// Reads `bytes` as a `TxnRequest`.
pub fn decode_txn(bytes: &[u8]) -> Result<TxnRequest, WireError> {
    decode_txn_with_cap(bytes, TXN_NESTED_LEVELS_MAX)
}

/// [`decode_txn`] with the levels built given (the top-level txn is level 1).
fn decode_txn_with_cap(bytes: &[u8], levels_max: usize) -> Result<TxnRequest, WireError> {
    let mut at = 0;
    let mut built = vec![Frame { open: Open::Txn(TxnRequest::default()), end: bytes.len() }];
    // Txns built so far on `built` (the top-level one included).
    let mut levels = 1;
    // Messages below the cap, parsed but not built: where each ends. They alternate from a txn
    // (even indexes) to its ops (odd ones).
    let mut skipped: Vec<usize> = Vec::new();
    loop {
        let (end, in_txn) = match skipped.last() {
            Some(&end) => (end, skipped.len() % 2 == 1),
            None => {
                let top = built.last().expect("the top-level txn stays until it is returned");
                (top.end, matches!(top.open, Open::Txn(_)))
            }
        };
        if at == end {
            if skipped.pop().is_some() {
                if skipped.is_empty() {
                    attach_txn(&mut built, TxnRequest::default());
                }
                continue;
            }
            let frame = built.pop().expect("checked above");
            match frame.open {
                Open::Txn(txn) if built.is_empty() => return Ok(txn),
                Open::Txn(txn) => {
                    levels -= 1;
                    attach_txn(&mut built, txn);
                }
                Open::Op { request, success } => {
                    let Some(Frame { open: Open::Txn(txn), .. }) = built.last_mut() else {
                        unreachable!("an op is opened only inside a txn")
                    };
                    let branch = if success { &mut txn.success } else { &mut txn.failure };
                    branch.push(RequestOp { request });
                }
            }
            continue;
        }
        let (field, wire_type) = read_key(bytes, &mut at, end)?;
        let building = skipped.is_empty();
        if in_txn {
            match field {
                1 => {
                    let compare: Compare = read_leaf(bytes, &mut at, end, wire_type, "TxnRequest.compare")?;
                    if building && let Some(Frame { open: Open::Txn(txn), .. }) = built.last_mut() {
                        txn.compare.push(compare);
                    }
                }
                2 | 3 => {
                    let name = if field == 2 { "TxnRequest.success" } else { "TxnRequest.failure" };
                    let op_end = read_length(bytes, &mut at, end, wire_type, name)?;
                    if building {
                        built.push(Frame { open: Open::Op { request: None, success: field == 2 }, end: op_end });
                    } else {
                        skipped.push(op_end);
                    }
                }
                _ => skip_field(bytes, &mut at, end, field, wire_type)?,
            }
            continue;
        }
        let request = match field {
            1 => Request::RequestRange(read_leaf::<RangeRequest>(
                bytes,
                &mut at,
                end,
                wire_type,
                "RequestOp.request_range",
            )?),
            2 => Request::RequestPut(read_leaf::<PutRequest>(bytes, &mut at, end, wire_type, "RequestOp.request_put")?),
            3 => Request::RequestDeleteRange(read_leaf::<DeleteRangeRequest>(
                bytes,
                &mut at,
                end,
                wire_type,
                "RequestOp.request_delete_range",
            )?),
            4 => {
                let txn_end = read_length(bytes, &mut at, end, wire_type, "RequestOp.request_txn")?;
                if building && levels < levels_max {
                    levels += 1;
                    built.push(Frame { open: Open::Txn(TxnRequest::default()), end: txn_end });
                } else {
                    skipped.push(txn_end);
                }
                continue;
            }
            _ => {
                skip_field(bytes, &mut at, end, field, wire_type)?;
                continue;
            }
        };
        if building && let Some(Frame { open: Open::Op { request: slot, .. }, .. }) = built.last_mut() {
            // As in etcd (Go), a later member of the oneof replaces an earlier one.
            *slot = Some(request);
        }
    }
}

/// Sets a finished txn as the request of the op open on top of `built`.
fn attach_txn(built: &mut [Frame], txn: TxnRequest) {
    let Some(Frame { open: Open::Op { request, .. }, .. }) = built.last_mut() else {
        unreachable!("a nested txn is opened only inside an op")
    };
    *request = Some(Request::RequestTxn(txn));
}

fn read_varint(bytes: &[u8], at: &mut usize, end: usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        if *at >= end {
            return Err(WireError::InvalidVarint);
        }
        let byte = bytes[*at];
        *at += 1;
        if shift == 63 && byte > 1 {
            return Err(WireError::InvalidVarint);
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::InvalidVarint)
}

fn read_key(bytes: &[u8], at: &mut usize, end: usize) -> Result<(u64, u8), WireError> {
    let key = read_varint(bytes, at, end)?;
    let wire_type = key & 0x7;
    if wire_type > u64::from(FIXED32) {
        return Err(WireError::InvalidWireType(wire_type));
    }
    let field = key >> 3;
    if field == 0 || field > FIELD_NUMBER_MAX {
        return Err(WireError::InvalidKey(key));
    }
    Ok((field, wire_type as u8))
}

/// Reads a length-delimited field's length; returns where its bytes end (`at` is then at their start).
fn read_length(
    bytes: &[u8],
    at: &mut usize,
    end: usize,
    wire_type: u8,
    field: &'static str,
) -> Result<usize, WireError> {
    if wire_type != LENGTH_DELIMITED {
        return Err(WireError::UnexpectedWireType { field, wire_type });
    }
    let len = read_varint(bytes, at, end)?;
    match usize::try_from(len).ok().and_then(|len| at.checked_add(len)) {
        Some(field_end) if field_end <= end => Ok(field_end),
        _ => Err(WireError::Truncated),
    }
}

/// Decodes a length-delimited leaf message (one that holds no txn) with prost.
fn read_leaf<M: Message + Default>(
    bytes: &[u8],
    at: &mut usize,
    end: usize,
    wire_type: u8,
    field: &'static str,
) -> Result<M, WireError> {
    let field_end = read_length(bytes, at, end, wire_type, field)?;
    let message = M::decode(&bytes[*at..field_end])
        .map_err(|e| WireError::Leaf { field, reason: super::codec::prost_reason(&e) })?;
    *at = field_end;
    Ok(message)
}

/// Skips an unknown field `field`. A group is skipped to the end-group marker with its own field
/// number, groups inside it too (the open ones are counted on a stack bounded by the bytes).
fn skip_field(bytes: &[u8], at: &mut usize, end: usize, field: u64, wire_type: u8) -> Result<(), WireError> {
    let mut groups: Vec<u64> = Vec::new();
    let (mut field, mut wire_type) = (field, wire_type);
    loop {
        match wire_type {
            VARINT => {
                read_varint(bytes, at, end)?;
            }
            FIXED64 | FIXED32 => {
                let size = if wire_type == FIXED64 { 8 } else { 4 };
                if end - *at < size {
                    return Err(WireError::Truncated);
                }
                *at += size;
            }
            LENGTH_DELIMITED => {
                *at = read_length(bytes, at, end, LENGTH_DELIMITED, "")?;
            }
            START_GROUP => groups.push(field),
            END_GROUP => {
                if groups.pop() != Some(field) {
                    return Err(WireError::UnexpectedEndGroup);
                }
            }
            _ => unreachable!("read_key refuses other wire types"),
        }
        if groups.is_empty() {
            return Ok(());
        }
        (field, wire_type) = read_key(bytes, at, end)?;
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::etcd::validate::{Limits, validate_txn};
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
        fn current_revision(&self) -> i64 {
            1
        }
        fn compact_revision(&self) -> i64 {
            -1
        }
        fn visit(
            &self,
            _: &crate::mvcc::KeySpan,
            _: i64,
            _: &mut dyn FnMut(&[u8], crate::mvcc::Version) -> bool,
        ) -> crate::Result<()> {
            Ok(())
        }
    }

    /// Everything that recurses per level, on the deepest txn accepted and on a hostile one, fits in
    /// half the 2 MiB stack of an executor or read-pool thread (debug builds use the most).
    #[test]
    fn the_deepest_txns_are_handled_in_half_an_executor_stack() {
        use crate::sequencer::eval::{SequencerState, is_read_only, read_only_txn};
        use crate::sequencer::{Outcome, Proposal};
        let run = || {
            let limits = Limits { max_request_bytes: 1 << 30, max_txn_ops: 1 << 20 };
            let write = decode_txn(&nested(TXN_NESTED_LEVELS_MAX, &one_op(put_op("k")))).unwrap();
            assert!(!is_read_only(&write));
            validate_txn(&write, limits).unwrap();
            let mut state = SequencerState {
                current: 1,
                compact: -1,
                in_flight: Default::default(),
                sub: 0,
                leases: Default::default(),
            };
            let evaluation = state.evaluate(&EmptyStore, &Proposal::Txn(write)).unwrap();
            let Outcome::Txn(response) = evaluation.outcome else { panic!("a txn answers a txn") };
            assert!(response.succeeded && !response.encode_to_vec().is_empty());

            let read = decode_txn(&nested(TXN_NESTED_LEVELS_MAX, &one_op(range_op("k")))).unwrap();
            assert!(is_read_only(&read));
            validate_txn(&read, limits).unwrap();
            let response = read_only_txn(&EmptyStore, &read).unwrap();
            assert!(!response.encode_to_vec().is_empty());

            let hostile = decode_txn(&nested(10_000, &one_op(put_op("k")))).unwrap();
            assert!(matches!(validate_txn(&hostile, limits), Err(crate::Error::TooManyOps)));
        };
        std::thread::Builder::new().stack_size(1024 * 1024).spawn(run).unwrap().join().unwrap();
    }
}
