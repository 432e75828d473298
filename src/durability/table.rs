//! Table objects: a checkpoint's snapshot, streamed in `(space, key)` order, cut into objects at
//! content-defined boundaries and named by the hash of their bytes. Two checkpoints of a mostly
//! unchanged database cut mostly at the same entries, so they produce mostly the same objects, which
//! are stored once and shared by both (and by branches).
//!
//! Boundary rule: after each entry, the table is cut when it holds at least `target / 4` bytes and
//! `h(space ‖ key) < entry_bytes * 2^64 / target`, or whatever the hash when it holds `4 * target`
//! bytes or more. `h` is the first 8 bytes (big-endian) of the SHA-256 of the entry's space and key,
//! never its value, and `entry_bytes` is the entry's frame size. Each entry is thus a cut with
//! probability `entry_bytes / target`, i.e. about once per `target` bytes whatever the entry sizes:
//! with the minimum, tables average 1.1 to 1.3 times `target` (`target/4` plus an exponential tail
//! of mean `target`, truncated at `4 * target`). Whether an entry is a cut depends only on that entry
//! and on the table being past the minimum, so after an edit the boundaries fall back into step at
//! the first cut past the minimum: a value changed in place rewrites only its own table; an insert,
//! a delete or a value that changed size may also move the cut after it, usually only that one.
//!
//! Object bytes: `b"T4TABLE1"`, then per entry a frame `[len u32 BE][crc32c(payload) u32 BE][payload]`
//! (the log record's frame) with payload `[space u8][key len u32 BE][key][value]`. The object key is
//! `sst/<hash16>/table`, `hash16` being the first 16 hex digits of the SHA-256 of the bytes.

use sha2::{Digest, Sha256};

use super::layout::{TableRef, parse_table_key, table_key};

/// The first bytes of every table object (the format's version is its last digit).
pub const TABLE_MAGIC: &[u8; 8] = b"T4TABLE1";

const FRAME_HEADER_BYTES: usize = 8;
/// `[space u8][key len u32]` before the key.
const PAYLOAD_HEADER_BYTES: usize = 5;

/// One finished table object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Where it is stored: `sst/<hash16>/table`, `hash16` the hash of `bytes`.
    pub key: String,
    /// The object's content.
    pub bytes: Vec<u8>,
    /// How many entries it holds (at least one).
    pub entries: u64,
}

impl Table {
    /// How a checkpoint manifest lists this table.
    pub fn table_ref(&self) -> TableRef {
        TableRef { key: self.key.clone(), bytes: self.bytes.len() as u64, entries: self.entries }
    }
}

/// One entry of a table: a key of a keyspace and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// Which keyspace the key belongs to; entries sort by space first.
    pub space: u8,
    /// The key within its space.
    pub key: Vec<u8>,
    /// The value, opaque here.
    pub value: Vec<u8>,
}

/// What reading a table object refuses; every variant names the object.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The key is not `sst/<hash16>/table`.
    #[error("{key}: not a table object key")]
    NotATableKey {
        /// The object key.
        key: String,
    },
    /// The bytes are not the ones the key names: corrupted in transit or at rest.
    #[error("{key}: content hash is {actual}, not the one the key names")]
    HashMismatch {
        /// The object key.
        key: String,
        /// The hash of the bytes read.
        actual: String,
    },
    /// The object does not start with [`TABLE_MAGIC`].
    #[error("{key}: not a table object (bad magic)")]
    BadMagic {
        /// The object key.
        key: String,
    },
    /// A frame runs past the end of the object.
    #[error("{key}: entry {index} at byte {offset} is truncated")]
    Truncated {
        /// The object key.
        key: String,
        /// The entry's position in the table.
        index: u64,
        /// Where its frame starts.
        offset: usize,
    },
    /// A frame's payload does not match its checksum.
    #[error("{key}: entry {index} at byte {offset} fails its checksum")]
    ChecksumMismatch {
        /// The object key.
        key: String,
        /// The entry's position in the table.
        index: u64,
        /// Where its frame starts.
        offset: usize,
    },
    /// A payload too short for its header or for the key length it declares.
    #[error("{key}: entry {index} at byte {offset} is malformed")]
    Malformed {
        /// The object key.
        key: String,
        /// The entry's position in the table.
        index: u64,
        /// Where its frame starts.
        offset: usize,
    },
    /// An entry not strictly after the previous one in `(space, key)` order.
    #[error("{key}: entry {index} at byte {offset} is out of order")]
    OutOfOrder {
        /// The object key.
        key: String,
        /// The entry's position in the table.
        index: u64,
        /// Where its frame starts.
        offset: usize,
    },
    /// A table object without entries, which no builder writes.
    #[error("{key}: table holds no entries")]
    Empty {
        /// The object key.
        key: String,
    },
}

/// The first 16 hex digits (8 bytes) of the SHA-256 of `bytes`: the name of a table object.
pub fn hash16(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The boundary hash of an entry: its space and key only, so a value change cannot move a cut
/// unless it changes the entry's size.
fn boundary_hash(space: u8, key: &[u8]) -> u64 {
    let digest = Sha256::new().chain_update([space]).chain_update(key).finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// Cuts a sorted stream of entries into table objects (see the module doc for the rule).
pub struct TableBuilder {
    /// The expected table size the boundary rule aims at.
    target_bytes: usize,
    /// The table being filled: magic and the frames so far.
    bytes: Vec<u8>,
    /// How many entries `bytes` holds.
    entries: u64,
    /// The last entry pushed, to refuse a stream out of order (it would write a table no reader
    /// accepts, and a checkpoint that cannot be restored).
    last: Option<(u8, Vec<u8>)>,
}

impl TableBuilder {
    /// A builder aiming at tables of about `target_bytes`. Panics if `target_bytes` is 0.
    pub fn new(target_bytes: usize) -> Self {
        assert!(target_bytes > 0, "a table target of 0 bytes");
        TableBuilder { target_bytes, bytes: TABLE_MAGIC.to_vec(), entries: 0, last: None }
    }

    /// Adds the next entry; returns the table it completes, if the boundary rule cuts after it.
    ///
    /// Panics if `(space, key)` is not strictly after the previous entry, or if the key or the
    /// frame does not fit a u32 length.
    pub fn push(&mut self, space: u8, key: &[u8], value: &[u8]) -> Option<Table> {
        match &mut self.last {
            Some((last_space, last_key)) => {
                assert!(
                    (space, key) > (*last_space, last_key.as_slice()),
                    "table entries out of order: ({space}, {key:?}) after ({last_space}, {last_key:?})"
                );
                *last_space = space;
                last_key.clear();
                last_key.extend_from_slice(key);
            }
            None => self.last = Some((space, key.to_vec())),
        }

        let key_len = u32::try_from(key.len()).expect("keys are bounded by max_request_bytes");
        let payload_len = PAYLOAD_HEADER_BYTES + key.len() + value.len();
        let frame_len = u32::try_from(payload_len).expect("entries are bounded by max_request_bytes");
        let mut crc = crc32c::crc32c(&[space]);
        crc = crc32c::crc32c_append(crc, &key_len.to_be_bytes());
        crc = crc32c::crc32c_append(crc, key);
        crc = crc32c::crc32c_append(crc, value);
        self.bytes.reserve(FRAME_HEADER_BYTES + payload_len);
        self.bytes.extend_from_slice(&frame_len.to_be_bytes());
        self.bytes.extend_from_slice(&crc.to_be_bytes());
        self.bytes.push(space);
        self.bytes.extend_from_slice(&key_len.to_be_bytes());
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.entries += 1;

        self.is_boundary(space, key, FRAME_HEADER_BYTES + payload_len).then(|| self.cut())
    }

    /// The last table, holding what is left after the last cut; `None` if nothing is.
    pub fn finish(mut self) -> Option<Table> {
        (self.entries > 0).then(|| self.cut())
    }

    /// Whether to cut after the entry just added, whose frame is `entry_bytes` long.
    fn is_boundary(&self, space: u8, key: &[u8], entry_bytes: usize) -> bool {
        let table_bytes = self.bytes.len();
        if table_bytes >= self.target_bytes.saturating_mul(4) {
            return true;
        }
        if table_bytes < self.target_bytes / 4 {
            return false;
        }
        // P(cut) = entry_bytes / target: one cut per `target` bytes on average. In u128, where
        // entry_bytes * 2^64 cannot overflow; a threshold past u64::MAX always cuts.
        let threshold = (u128::from(entry_bytes as u64) << 64) / self.target_bytes as u128;
        u128::from(boundary_hash(space, key)) < threshold
    }

    /// Closes the current table and starts the next one.
    fn cut(&mut self) -> Table {
        let bytes = std::mem::replace(&mut self.bytes, TABLE_MAGIC.to_vec());
        let entries = std::mem::take(&mut self.entries);
        Table { key: table_key(&hash16(&bytes)), bytes, entries }
    }
}

/// Reads the table object stored at `key`, checking that its bytes are the ones the key names,
/// every frame's length and checksum, and that the entries are strictly increasing.
pub fn decode_table(key: &str, bytes: &[u8]) -> Result<Vec<TableEntry>, TableError> {
    let named = parse_table_key(key).ok_or_else(|| TableError::NotATableKey { key: key.into() })?;
    let actual = hash16(bytes);
    if actual != named {
        return Err(TableError::HashMismatch { key: key.into(), actual });
    }
    let Some(mut rest) = bytes.strip_prefix(TABLE_MAGIC.as_slice()) else {
        return Err(TableError::BadMagic { key: key.into() });
    };
    let mut entries: Vec<TableEntry> = Vec::new();
    let mut offset = TABLE_MAGIC.len();
    while !rest.is_empty() {
        let index = entries.len() as u64;
        let truncated = || TableError::Truncated { key: key.into(), index, offset };
        let header = rest.get(..FRAME_HEADER_BYTES).ok_or_else(truncated)?;
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        let payload = rest.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len).ok_or_else(truncated)?;
        if crc32c::crc32c(payload) != crc {
            return Err(TableError::ChecksumMismatch { key: key.into(), index, offset });
        }
        let entry = decode_payload(payload).ok_or_else(|| TableError::Malformed { key: key.into(), index, offset })?;
        if let Some(previous) = entries.last()
            && (previous.space, &previous.key) >= (entry.space, &entry.key)
        {
            return Err(TableError::OutOfOrder { key: key.into(), index, offset });
        }
        entries.push(entry);
        rest = &rest[FRAME_HEADER_BYTES + len..];
        offset += FRAME_HEADER_BYTES + len;
    }
    if entries.is_empty() {
        return Err(TableError::Empty { key: key.into() });
    }
    Ok(entries)
}

/// `[space u8][key len u32 BE][key][value]`, or `None` if the payload is shorter than it says.
fn decode_payload(payload: &[u8]) -> Option<TableEntry> {
    let (&space, rest) = payload.split_first()?;
    let key_len = u32::from_be_bytes(rest.get(..4)?.try_into().expect("4 bytes")) as usize;
    let key = rest.get(4..4 + key_len)?;
    let value = &rest[4 + key_len..];
    Some(TableEntry { space, key: key.to_vec(), value: value.to_vec() })
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
