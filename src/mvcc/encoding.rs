//! Byte layouts of the `kv`, `latest` and `meta` keyspaces.
//!
//! `kv` keys are `escape(user key) ‖ revision (u64 BE)`: escaping keeps all versions of one key
//! contiguous and ordered by revision, and keeps keys in user-key order even when one key is a prefix
//! of another. Values are [`Version`] records: a live version or a tombstone.
//!
//! **Long keys.** fjall refuses (panics on) keys over [`STORAGE_KEY_BYTES_MAX`] bytes, and etcd takes
//! keys up to the request limit. A user key too long to be stored as itself is stored as its first
//! bytes (the *bucket*) and the SHA-256 of the whole key, and its records carry the whole key
//! ([`Version::encode_for`]). Every key sharing a bucket is longer than the bucket, so a bucket sorts
//! exactly where its keys belong among the keys stored as themselves; only the keys inside one bucket
//! are out of order (by hash), and readers sort them by their carried keys (see `store/read.rs`). Which
//! form a stored key has follows from its length alone.
use super::error::StoreError;
use crate::ids::Revision;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Escape byte for 0x00 inside a user key.
const ESCAPED_ZERO: [u8; 2] = [0x00, 0xFF];
/// Terminates an escaped user key; sorts below every escaped continuation.
const TERMINATOR: [u8; 2] = [0x00, 0x01];
/// Ends the bucket of a long key in `kv`: sorts above [`TERMINATOR`] (a key equal to the bucket is
/// smaller than every long key in it) and below every escaped continuation.
const LONG_MARKER: [u8; 2] = [0x00, 0x02];
const REVISION_BYTES: usize = 8;
/// The longest key fjall stores (lsm-tree panics beyond it).
pub const STORAGE_KEY_BYTES_MAX: usize = u16::MAX as usize;
/// SHA-256 of a long user key, after its bucket.
const KEY_HASH_BYTES: usize = 32;
/// The longest user key `latest` stores as itself; a longer one is stored as its first this many
/// bytes and its hash.
pub const LATEST_KEY_BYTES_MAX: usize = STORAGE_KEY_BYTES_MAX - KEY_HASH_BYTES;
/// The longest escaped user key `kv` stores as itself (before the terminator and revision).
const HISTORY_ESCAPED_BYTES_MAX: usize = STORAGE_KEY_BYTES_MAX - LONG_MARKER.len() - KEY_HASH_BYTES - REVISION_BYTES;
/// `kv` keys longer than this are long keys' (a short one is at most the escaped maximum, the
/// terminator and the revision; a long one is at least one byte less than the maximum, the marker,
/// the hash and the revision).
const HISTORY_SHORT_KEY_BYTES_MAX: usize = HISTORY_ESCAPED_BYTES_MAX + TERMINATOR.len() + REVISION_BYTES;
/// Bytes after a long key's bucket in `kv`.
#[cfg(test)]
const HISTORY_LONG_SUFFIX_BYTES: usize = LONG_MARKER.len() + KEY_HASH_BYTES + REVISION_BYTES;

fn key_hash(key: &[u8]) -> [u8; KEY_HASH_BYTES] {
    use sha2::Digest;
    sha2::Sha256::digest(key).into()
}

/// The `latest` key of `key`: the key itself, or its bucket and hash if it is longer than
/// [`LATEST_KEY_BYTES_MAX`].
pub fn latest_key(key: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if key.len() <= LATEST_KEY_BYTES_MAX {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut out = Vec::with_capacity(STORAGE_KEY_BYTES_MAX);
    out.extend_from_slice(&key[..LATEST_KEY_BYTES_MAX]);
    out.extend_from_slice(&key_hash(key));
    std::borrow::Cow::Owned(out)
}

/// Whether a `latest` key stands for a longer user key (whose record carries it).
pub fn is_long_latest_key(stored: &[u8]) -> bool {
    stored.len() > LATEST_KEY_BYTES_MAX
}

/// The bucket of a long `latest` key (what every key it may stand for starts with).
#[cfg(test)]
fn latest_bucket(stored: &[u8]) -> &[u8] {
    &stored[..stored.len().min(LATEST_KEY_BYTES_MAX)]
}

/// The escaped body of `key` (zero bytes escaped), without terminator.
fn escape_body(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + TERMINATOR.len() + REVISION_BYTES);
    for &b in key {
        if b == 0 {
            out.extend_from_slice(&ESCAPED_ZERO);
        } else {
            out.push(b);
        }
    }
    out
}

/// Where a long key's escaped body is cut: at the maximum, or one byte before it so no escape pair
/// is split (a zero byte in an escaped body always starts a pair).
fn bucket_cut(escaped: &[u8]) -> usize {
    if escaped[HISTORY_ESCAPED_BYTES_MAX - 1] == 0 { HISTORY_ESCAPED_BYTES_MAX - 1 } else { HISTORY_ESCAPED_BYTES_MAX }
}

/// `escape(key)`: the prefix every `kv` entry of `key`, and nothing else, starts with.
pub fn escaped_key(key: &[u8]) -> Vec<u8> {
    let mut out = escape_body(key);
    if out.len() <= HISTORY_ESCAPED_BYTES_MAX {
        out.extend_from_slice(&TERMINATOR);
        return out;
    }
    out.truncate(bucket_cut(&out));
    out.extend_from_slice(&LONG_MARKER);
    out.extend_from_slice(&key_hash(key));
    out
}

/// Whether a `kv` key belongs to a long user key (whose records carry it).
pub fn is_long_history_key(stored: &[u8]) -> bool {
    stored.len() > HISTORY_SHORT_KEY_BYTES_MAX
}

/// The bucket of a long `kv` key: its escaped prefix, shared with the other long keys of the bucket.
#[cfg(test)]
fn history_bucket(stored: &[u8]) -> &[u8] {
    &stored[..stored.len().saturating_sub(HISTORY_LONG_SUFFIX_BYTES)]
}

/// The `kv` key of `key` at `revision`.
pub fn history_key(key: &[u8], revision: Revision) -> Vec<u8> {
    let mut out = escaped_key(key);
    out.extend_from_slice(&revision_bytes(revision));
    out
}

/// Splits a short `kv` key into the user key and the revision (a long one's user key is in its
/// record: [`Version::carried_key`]).
pub fn decode_history_key(encoded: &[u8]) -> Result<(Vec<u8>, Revision)> {
    let corrupt = || StoreError::corrupt(format!("history key {:02x?}", &encoded[..encoded.len().min(64)]));
    if encoded.len() < TERMINATOR.len() + REVISION_BYTES || is_long_history_key(encoded) {
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
pub fn revision_bytes(revision: Revision) -> [u8; REVISION_BYTES] {
    debug_assert!(revision.get() >= 0, "revisions are never negative");
    (revision.get() as u64).to_be_bytes()
}

/// Inverse of [`revision_bytes`].
pub fn decode_revision(bytes: &[u8]) -> Result<Revision> {
    let array: [u8; REVISION_BYTES] =
        bytes.try_into().map_err(|_| StoreError::corrupt(format!("revision of {} bytes", bytes.len())))?;
    Ok(Revision(u64::from_be_bytes(array) as i64))
}

/// The `log` key of record `(revision, sub)`: byte order is commit order.
pub fn log_key(revision: Revision, sub: u32) -> [u8; LOG_KEY_BYTES] {
    let mut out = [0u8; LOG_KEY_BYTES];
    out[..REVISION_BYTES].copy_from_slice(&revision_bytes(revision));
    out[REVISION_BYTES..].copy_from_slice(&sub.to_be_bytes());
    out
}

/// Bytes of a `log` key: revision, then sub-index.
pub const LOG_KEY_BYTES: usize = REVISION_BYTES + 4;

/// Inverse of [`log_key`].
pub fn decode_log_key(bytes: &[u8]) -> Result<crate::log::LogPosition> {
    if bytes.len() != LOG_KEY_BYTES {
        return Err(StoreError::corrupt(format!("log key of {} bytes", bytes.len())));
    }
    let (rev, sub) = bytes.split_at(REVISION_BYTES);
    Ok(crate::log::LogPosition::new(decode_revision(rev)?, u32::from_be_bytes(sub.try_into().expect("4 bytes"))))
}

/// The `leases` key of lease `id`: the sign bit flipped, so byte order is numeric order.
pub fn lease_key(id: i64) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`lease_key`].
pub fn decode_lease_key(bytes: &[u8]) -> Result<i64> {
    let array: [u8; 8] =
        bytes.try_into().map_err(|_| StoreError::corrupt(format!("lease key of {} bytes", bytes.len())))?;
    Ok((u64::from_be_bytes(array) ^ (1 << 63)) as i64)
}

/// One version of a key: what `kv` stores per revision and `latest` per live key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Revision that created the key's current generation (0 for a tombstone).
    pub create_revision: Revision,
    /// Revision of this version.
    pub mod_revision: Revision,
    /// Writes since creation: 1 for the first put; 0 for a tombstone.
    pub version: i64,
    /// Lease the key is attached to (0: none).
    pub lease: i64,
    /// The value; `None` marks a tombstone (the key was deleted at `mod_revision`).
    pub value: Option<Vec<u8>>,
}

const TAG_LIVE: u8 = 1;
const TAG_TOMBSTONE: u8 = 2;
/// Tags of records stored under a long key's bucket: the user key follows the header.
const TAG_LIVE_KEYED: u8 = 3;
const TAG_TOMBSTONE_KEYED: u8 = 4;
const VERSION_HEADER_BYTES: usize = 1 + 4 * 8;
const CARRIED_KEY_LEN_BYTES: usize = 4;

/// Whether `key` is stored under a bucket and hash in some keyspace, so its records carry it.
pub fn needs_carried_key(key: &[u8]) -> bool {
    key.len() > HISTORY_ESCAPED_BYTES_MAX
        || key.len() + key.iter().filter(|&&b| b == 0).count() > HISTORY_ESCAPED_BYTES_MAX
}

impl Version {
    /// A tombstone: `key` deleted at `revision`.
    pub fn tombstone(revision: Revision) -> Version {
        Version { create_revision: Revision(0), mod_revision: revision, version: 0, lease: 0, value: None }
    }

    /// Whether this version is a deletion marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether an encoded record is a tombstone, reading only its tag.
    pub fn is_tombstone_record(bytes: &[u8]) -> Result<bool> {
        match bytes.first() {
            Some(&(TAG_LIVE | TAG_LIVE_KEYED)) => Ok(false),
            Some(&(TAG_TOMBSTONE | TAG_TOMBSTONE_KEYED)) => Ok(true),
            other => Err(StoreError::corrupt(format!("version record tag {other:?}"))),
        }
    }

    /// The record of this version of `key`: `[tag][create][mod][version][lease][value…]`, integers
    /// big-endian, or, for a key stored under a bucket and hash,
    /// `[tag][create][mod][version][lease][key len u32][key][value…]`.
    pub fn encode_for(&self, key: &[u8]) -> Vec<u8> {
        self.encode_with(needs_carried_key(key).then_some(key))
    }

    fn encode_with(&self, key: Option<&[u8]>) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or_default();
        let carried = key.map_or(0, |k| CARRIED_KEY_LEN_BYTES + k.len());
        let mut out = Vec::with_capacity(VERSION_HEADER_BYTES + carried + value.len());
        out.push(match (self.value.is_some(), key.is_some()) {
            (true, false) => TAG_LIVE,
            (false, false) => TAG_TOMBSTONE,
            (true, true) => TAG_LIVE_KEYED,
            (false, true) => TAG_TOMBSTONE_KEYED,
        });
        for n in [self.create_revision.get(), self.mod_revision.get(), self.version, self.lease] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        if let Some(key) = key {
            let len = u32::try_from(key.len()).expect("keys are bounded by max_request_bytes");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(key);
        }
        out.extend_from_slice(value);
        out
    }

    /// The user key a record carries (records of long keys), and where its value starts.
    fn carried(bytes: &[u8]) -> Result<(Option<&[u8]>, usize)> {
        let corrupt = || StoreError::corrupt(format!("version record of {} bytes", bytes.len()));
        if bytes.len() < VERSION_HEADER_BYTES {
            return Err(corrupt());
        }
        if !matches!(bytes[0], TAG_LIVE_KEYED | TAG_TOMBSTONE_KEYED) {
            return Ok((None, VERSION_HEADER_BYTES));
        }
        let len_end = VERSION_HEADER_BYTES + CARRIED_KEY_LEN_BYTES;
        let len_bytes = bytes.get(VERSION_HEADER_BYTES..len_end).ok_or_else(corrupt)?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let key = bytes.get(len_end..len_end + len).ok_or_else(corrupt)?;
        Ok((Some(key), len_end + len))
    }

    /// The user key a record carries: `Some` for the records of keys stored under a bucket and hash.
    pub fn carried_key(bytes: &[u8]) -> Result<Option<&[u8]>> {
        Ok(Self::carried(bytes)?.0)
    }

    /// Inverse of [`Version::encode_for`] (a carried key is skipped).
    pub fn decode(bytes: &[u8]) -> Result<Version> {
        let (_, value_start) = Self::carried(bytes)?;
        let int = |i: usize| {
            let start = 1 + 8 * i;
            i64::from_be_bytes(bytes[start..start + 8].try_into().expect("8-byte slice"))
        };
        let value = match bytes[0] {
            TAG_LIVE | TAG_LIVE_KEYED => Some(bytes[value_start..].to_vec()),
            TAG_TOMBSTONE | TAG_TOMBSTONE_KEYED => None,
            tag => return Err(StoreError::corrupt(format!("version record tag {tag}"))),
        };
        Ok(Version {
            create_revision: Revision(int(0)),
            mod_revision: Revision(int(1)),
            version: int(2),
            lease: int(3),
            value,
        })
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
    /// The on-disk format of this data directory (i64 BE); see `store::open::FORMAT`.
    pub const FORMAT: &[u8] = b"format";
    /// The log position `(revision i64 BE, sub u32 BE)` through which every record is stored in
    /// object storage; absent when the node never ran with a store (or nothing is uploaded yet).
    pub const UPLOADED_THROUGH: &[u8] = b"uploaded_through";
    /// The raised alarms (their wire values, one byte each), kept across restarts as etcd keeps them.
    pub const ALARMS: &[u8] = b"alarms";
    /// When the store was last defragmented (Unix seconds, i64 BE); written first by a defragment.
    pub const DEFRAGMENTED_AT: &[u8] = b"defragmented_at";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_round_trip_including_zero_bytes() {
        for key in [&b"a"[..], b"", b"\x00", b"a\x00b", b"\x00\xff\x00", b"\xff\xff"] {
            for rev in [0, 1, 42, i64::MAX] {
                let encoded = history_key(key, Revision(rev));
                assert_eq!(decode_history_key(&encoded).unwrap(), (key.to_vec(), Revision(rev)));
            }
        }
    }

    #[test]
    fn history_keys_sort_by_user_key_then_revision() {
        let keys: [&[u8]; 7] = [b"", b"\x00", b"\x00\x00", b"\x01", b"a", b"a\x00", b"ab"];
        let mut encoded = Vec::new();
        for key in keys {
            for rev in [1, 2, 300] {
                encoded.push((history_key(key, Revision(rev)), key, rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(sorted, encoded, "user-key order, then revision order");
        // every version of a key sorts below the escaped form of any larger key
        assert!(history_key(b"a", Revision(i64::MAX)) < escaped_key(b"a\x00"));
    }

    /// Keys around every length where the stored form changes, sharing long prefixes, with zero bytes
    /// at the cut: what the ordering argument in the module doc must hold for.
    fn keys_around_the_limits() -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for len in [
            HISTORY_ESCAPED_BYTES_MAX - 1,
            HISTORY_ESCAPED_BYTES_MAX,
            HISTORY_ESCAPED_BYTES_MAX + 1,
            LATEST_KEY_BYTES_MAX,
            LATEST_KEY_BYTES_MAX + 1,
            STORAGE_KEY_BYTES_MAX + 1,
            100_000,
        ] {
            for tail in [&b""[..], b"\x00", b"\x00\x00", b"\x01", b"z", b"\xff"] {
                for fill in [b'a', b'b'] {
                    let mut key = vec![fill; len];
                    key.extend_from_slice(tail);
                    keys.push(key.clone());
                    // a zero byte exactly where the escaped body is cut
                    let mut zeroed = key.clone();
                    zeroed[HISTORY_ESCAPED_BYTES_MAX.min(len) - 1] = 0;
                    keys.push(zeroed);
                }
            }
        }
        keys.extend([b"a".to_vec(), b"b".to_vec(), Vec::new()]);
        keys.sort();
        keys.dedup();
        keys
    }

    #[test]
    fn stored_keys_fit_fjall_and_sort_as_user_keys_outside_buckets() {
        let keys = keys_around_the_limits();
        for key in &keys {
            assert!(latest_key(key).len() <= STORAGE_KEY_BYTES_MAX);
            assert!(history_key(key, Revision(i64::MAX)).len() <= STORAGE_KEY_BYTES_MAX);
            assert_eq!(
                is_long_history_key(&history_key(key, Revision(1))),
                needs_carried_key(key),
                "len {}",
                key.len()
            );
            if is_long_latest_key(&latest_key(key)) {
                assert!(needs_carried_key(key), "a long latest key's record carries it");
            }
        }
        struct Stored {
            latest: Vec<u8>,
            oldest: Vec<u8>,
            newest: Vec<u8>,
            escaped: Vec<u8>,
        }
        let stored: Vec<Stored> = keys
            .iter()
            .map(|k| Stored {
                latest: latest_key(k).into_owned(),
                oldest: history_key(k, Revision(0)),
                newest: history_key(k, Revision(i64::MAX)),
                escaped: escaped_key(k),
            })
            .collect();
        for (i, a) in stored.iter().enumerate() {
            for b in &stored[i + 1..] {
                // a < b as user keys: stored forms agree unless both share one bucket
                let same_latest_bucket =
                    is_long_latest_key(&a.latest) && latest_bucket(&a.latest) == latest_bucket(&b.latest);
                assert!(same_latest_bucket || a.latest < b.latest, "latest order");
                let same_bucket = is_long_history_key(&a.newest)
                    && is_long_history_key(&b.oldest)
                    && history_bucket(&a.newest) == history_bucket(&b.oldest);
                assert!(same_bucket || a.newest < b.oldest, "kv order");
                assert!(!b.escaped.starts_with(&a.escaped), "one key's versions only");
            }
        }
    }

    #[test]
    fn corrupt_history_keys_are_refused() {
        assert!(decode_history_key(b"short").is_err());
        let mut bad = history_key(b"a\x00b", Revision(7));
        bad[2] = 0x07; // break the escape after the zero byte
        assert!(decode_history_key(&bad).is_err());
    }

    #[test]
    fn log_and_lease_keys_sort_numerically() {
        assert!(log_key(Revision(2), u32::MAX) < log_key(Revision(3), 0));
        assert!(log_key(Revision(3), 0) < log_key(Revision(3), 1));
        assert_eq!(decode_log_key(&log_key(Revision(42), 7)).unwrap(), crate::log::LogPosition::new(Revision(42), 7));
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
        let live = Version {
            create_revision: Revision(2),
            mod_revision: Revision(9),
            version: 3,
            lease: 77,
            value: Some(b"v\x00".to_vec()),
        };
        assert_eq!(Version::decode(&live.encode_for(b"k")).unwrap(), live);
        let empty = Version { value: Some(Vec::new()), ..live.clone() };
        assert_eq!(Version::decode(&empty.encode_for(b"k")).unwrap(), empty);
        let dead = Version::tombstone(Revision(10));
        assert_eq!(Version::decode(&dead.encode_for(b"k")).unwrap(), dead);
        let long_key = vec![b'k'; 70_000];
        let record = live.encode_for(&long_key);
        assert_eq!(Version::decode(&record).unwrap(), live);
        assert_eq!(Version::carried_key(&record).unwrap(), Some(long_key.as_slice()));
        assert_eq!(Version::carried_key(&live.encode_for(b"k")).unwrap(), None);
        let long_dead = dead.encode_for(&long_key);
        assert!(Version::is_tombstone_record(&long_dead).unwrap());
        assert_eq!(Version::decode(&long_dead).unwrap(), dead);
        assert!(Version::decode(&record[..40]).is_err(), "a carried key longer than the record");
        assert!(Version::decode(&[9; 40]).is_err());
        assert!(Version::decode(&[1; 3]).is_err());
    }
}
