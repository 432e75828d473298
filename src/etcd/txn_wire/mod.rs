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
//!
//! Files: this one builds the tree (a stack of open messages, no recursion); `wire` reads
//! protobuf's wire format (varints, keys, lengths, leaf messages, skipped fields).

mod wire;

use std::fmt;

use wire::{read_key, read_leaf, read_length, skip_field};

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

#[cfg(test)]
mod tests;
