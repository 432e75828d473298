//! Byte layouts of the `kv`, `latest` and `meta` keyspaces.
//!
//! `kv` keys are `escape(user key) ‖ revision (u64 BE)`: escaping keeps all versions of one key
//! contiguous and ordered by revision, and keeps keys in user-key order even when one key is a prefix
//! of another. Values are [`Version`] records: a live version or a tombstone.

use crate::error::{Error, Result};

/// Escape byte for 0x00 inside a user key.
const ESCAPED_ZERO: [u8; 2] = [0x00, 0xFF];
/// Terminates an escaped user key; sorts below every escaped continuation.
const TERMINATOR: [u8; 2] = [0x00, 0x01];
const REVISION_BYTES: usize = 8;

/// `escape(key)`: the prefix every `kv` entry of `key` starts with.
pub fn escaped_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + TERMINATOR.len() + REVISION_BYTES);
    for &b in key {
        if b == 0 {
            out.extend_from_slice(&ESCAPED_ZERO);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&TERMINATOR);
    out
}

/// The `kv` key of `key` at `revision`.
pub fn history_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = escaped_key(key);
    out.extend_from_slice(&revision_bytes(revision));
    out
}

/// Splits a `kv` key into the user key and the revision.
pub fn decode_history_key(encoded: &[u8]) -> Result<(Vec<u8>, i64)> {
    let corrupt = || Error::Corrupt(format!("history key {encoded:02x?}"));
    if encoded.len() < TERMINATOR.len() + REVISION_BYTES {
        return Err(corrupt());
    }
    let (escaped, rev) = encoded.split_at(encoded.len() - REVISION_BYTES);
    let body = escaped.strip_suffix(&TERMINATOR).ok_or_else(corrupt)?;
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == 0 {
            if body.get(i + 1) != Some(&0xFF) {
                return Err(corrupt());
            }
            key.push(0);
            i += 2;
        } else {
            key.push(body[i]);
            i += 1;
        }
    }
    Ok((key, decode_revision(rev)?))
}

/// A revision as stored: big-endian so byte order is numeric order (revisions are never negative).
pub fn revision_bytes(revision: i64) -> [u8; REVISION_BYTES] {
    debug_assert!(revision >= 0, "revisions are never negative");
    (revision as u64).to_be_bytes()
}

/// Inverse of [`revision_bytes`].
pub fn decode_revision(bytes: &[u8]) -> Result<i64> {
    let array: [u8; REVISION_BYTES] =
        bytes.try_into().map_err(|_| Error::Corrupt(format!("revision of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(array) as i64)
}

/// The `log` key of record `(revision, sub)`: byte order is commit order.
pub fn log_key(revision: i64, sub: u32) -> [u8; LOG_KEY_BYTES] {
    let mut out = [0u8; LOG_KEY_BYTES];
    out[..REVISION_BYTES].copy_from_slice(&revision_bytes(revision));
    out[REVISION_BYTES..].copy_from_slice(&sub.to_be_bytes());
    out
}

/// Bytes of a `log` key: revision, then sub-index.
pub const LOG_KEY_BYTES: usize = REVISION_BYTES + 4;

/// Inverse of [`log_key`].
pub fn decode_log_key(bytes: &[u8]) -> Result<(i64, u32)> {
    if bytes.len() != LOG_KEY_BYTES {
        return Err(Error::Corrupt(format!("log key of {} bytes", bytes.len())));
    }
    let (rev, sub) = bytes.split_at(REVISION_BYTES);
    Ok((decode_revision(rev)?, u32::from_be_bytes(sub.try_into().expect("4 bytes"))))
}

/// The `leases` key of lease `id`: the sign bit flipped, so byte order is numeric order.
pub fn lease_key(id: i64) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`lease_key`].
pub fn decode_lease_key(bytes: &[u8]) -> Result<i64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt(format!("lease key of {} bytes", bytes.len())))?;
    Ok((u64::from_be_bytes(array) ^ (1 << 63)) as i64)
}

/// One version of a key: what `kv` stores per revision and `latest` per live key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Revision that created the key's current generation (0 for a tombstone).
    pub create_revision: i64,
    /// Revision of this version.
    pub mod_revision: i64,
    /// Writes since creation: 1 for the first put; 0 for a tombstone.
    pub version: i64,
    /// Lease the key is attached to (0: none).
    pub lease: i64,
    /// The value; `None` marks a tombstone (the key was deleted at `mod_revision`).
    pub value: Option<Vec<u8>>,
}

const TAG_LIVE: u8 = 1;
const TAG_TOMBSTONE: u8 = 2;
const VERSION_HEADER_BYTES: usize = 1 + 4 * 8;

impl Version {
    /// A tombstone: `key` deleted at `revision`.
    pub fn tombstone(revision: i64) -> Version {
        Version { create_revision: 0, mod_revision: revision, version: 0, lease: 0, value: None }
    }

    /// Whether this version is a deletion marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether an encoded record is a tombstone, reading only its tag.
    pub fn is_tombstone_record(bytes: &[u8]) -> Result<bool> {
        match bytes.first() {
            Some(&TAG_LIVE) => Ok(false),
            Some(&TAG_TOMBSTONE) => Ok(true),
            other => Err(Error::Corrupt(format!("version record tag {other:?}"))),
        }
    }

    /// `[tag][create][mod][version][lease][value…]`, integers big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(VERSION_HEADER_BYTES + value.len());
        out.push(if self.value.is_some() { TAG_LIVE } else { TAG_TOMBSTONE });
        for n in [self.create_revision, self.mod_revision, self.version, self.lease] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    /// Inverse of [`Version::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Version> {
        if bytes.len() < VERSION_HEADER_BYTES {
            return Err(Error::Corrupt(format!("version record of {} bytes", bytes.len())));
        }
        let int = |i: usize| {
            let start = 1 + 8 * i;
            i64::from_be_bytes(bytes[start..start + 8].try_into().expect("8-byte slice"))
        };
        let value = match bytes[0] {
            TAG_LIVE => Some(bytes[VERSION_HEADER_BYTES..].to_vec()),
            TAG_TOMBSTONE => None,
            tag => return Err(Error::Corrupt(format!("version record tag {tag}"))),
        };
        Ok(Version { create_revision: int(0), mod_revision: int(1), version: int(2), lease: int(3), value })
    }
}

/// Names of the `meta` keyspace entries.
pub mod meta {
    /// Revision of the last committed write (i64 BE); etcd starts an empty store at 1.
    pub const CURRENT_REVISION: &[u8] = b"current_revision";
    /// Revision requested by the last compaction (i64 BE); reads below it fail.
    pub const COMPACT_REVISION: &[u8] = b"compact_revision";
    /// Revision up to which old versions have been physically removed (i64 BE).
    pub const COMPACTED_THROUGH: &[u8] = b"compacted_through";
    /// This member's id (u64 BE), chosen at first start.
    pub const MEMBER_ID: &[u8] = b"member_id";
    /// The cluster's id (u64 BE), chosen at first start.
    pub const CLUSTER_ID: &[u8] = b"cluster_id";
    /// The leadership term (u64 BE); 1 for a single node.
    pub const TERM: &[u8] = b"term";
    /// The on-disk format of this data directory (i64 BE); see `store::FORMAT`.
    pub const FORMAT: &[u8] = b"format";
    /// The log position `(revision i64 BE, sub u32 BE)` through which every record is stored in
    /// object storage; absent when the node never ran with a store (or nothing is uploaded yet).
    pub const UPLOADED_THROUGH: &[u8] = b"uploaded_through";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_round_trip_including_zero_bytes() {
        for key in [&b"a"[..], b"", b"\x00", b"a\x00b", b"\x00\xff\x00", b"\xff\xff"] {
            for rev in [0, 1, 42, i64::MAX] {
                let encoded = history_key(key, rev);
                assert_eq!(decode_history_key(&encoded).unwrap(), (key.to_vec(), rev));
            }
        }
    }

    #[test]
    fn history_keys_sort_by_user_key_then_revision() {
        let keys: [&[u8]; 7] = [b"", b"\x00", b"\x00\x00", b"\x01", b"a", b"a\x00", b"ab"];
        let mut encoded = Vec::new();
        for key in keys {
            for rev in [1, 2, 300] {
                encoded.push((history_key(key, rev), key, rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(sorted, encoded, "user-key order, then revision order");
        // every version of a key sorts below the escaped form of any larger key
        assert!(history_key(b"a", i64::MAX) < escaped_key(b"a\x00"));
    }

    #[test]
    fn corrupt_history_keys_are_refused() {
        assert!(decode_history_key(b"short").is_err());
        let mut bad = history_key(b"a\x00b", 7);
        bad[2] = 0x07; // break the escape after the zero byte
        assert!(decode_history_key(&bad).is_err());
    }

    #[test]
    fn log_and_lease_keys_sort_numerically() {
        assert!(log_key(2, u32::MAX) < log_key(3, 0));
        assert!(log_key(3, 0) < log_key(3, 1));
        assert_eq!(decode_log_key(&log_key(42, 7)).unwrap(), (42, 7));
        let ids = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for pair in ids.windows(2) {
            assert!(lease_key(pair[0]) < lease_key(pair[1]));
        }
        for id in ids {
            assert_eq!(decode_lease_key(&lease_key(id)).unwrap(), id);
        }
    }

    #[test]
    fn versions_round_trip() {
        let live =
            Version { create_revision: 2, mod_revision: 9, version: 3, lease: 77, value: Some(b"v\x00".to_vec()) };
        assert_eq!(Version::decode(&live.encode()).unwrap(), live);
        let empty = Version { value: Some(Vec::new()), ..live.clone() };
        assert_eq!(Version::decode(&empty.encode()).unwrap(), empty);
        let dead = Version::tombstone(10);
        assert_eq!(Version::decode(&dead.encode()).unwrap(), dead);
        assert!(Version::decode(&[9; 40]).is_err());
        assert!(Version::decode(&[1; 3]).is_err());
    }
}
