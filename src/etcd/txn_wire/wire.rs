//! Protobuf's wire format, read from a byte slice and bounded by the end of the message holding each
//! field: varints, field keys, lengths, leaf messages (decoded by prost: they hold no txn) and skipped
//! fields. Invariant: nothing here recurses (groups skipped are counted on a stack bounded by the bytes).

use prost::Message;

use super::WireError;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// The highest field number protobuf allows.
const FIELD_NUMBER_MAX: u64 = (1 << 29) - 1;
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

pub(super) fn read_key(bytes: &[u8], at: &mut usize, end: usize) -> Result<(u64, u8), WireError> {
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
pub(super) fn read_length(
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
pub(super) fn read_leaf<M: Message + Default>(
    bytes: &[u8],
    at: &mut usize,
    end: usize,
    wire_type: u8,
    field: &'static str,
) -> Result<M, WireError> {
    let field_end = read_length(bytes, at, end, wire_type, field)?;
    let message = M::decode(&bytes[*at..field_end])
        .map_err(|e| WireError::Leaf { field, reason: crate::etcd::codec::prost_reason(&e) })?;
    *at = field_end;
    Ok(message)
}

/// Skips an unknown field `field`. A group is skipped to the end-group marker with its own field
/// number, groups inside it too (the open ones are counted on a stack bounded by the bytes).
pub(super) fn skip_field(bytes: &[u8], at: &mut usize, end: usize, field: u64, wire_type: u8) -> Result<(), WireError> {
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
