//! The log record: everything one log entry changed, in the order it changed it. The same bytes are
//! the `log` keyspace's values, and (later) the payload of WAL objects in object storage and peer frames.
//!
//! A record is identified by `(revision, sub)`. A record that changes keys opens a new revision and
//! has `sub` 0; lease grants and revokes that delete no key consume no revision (as in etcd), so they
//! follow the revision they happened after with `sub` 1, 2, ... Sorting by `(revision, sub)` is
//! commit order.
//!
//! Frame: `[payload len u32 BE][crc32c(payload) u32 BE][payload]`; payload:
//! `[format u8][revision i64][sub u32][event count u32]` then each event `[kind u8]` and:
//! put `[key len u32][key][create i64][version i64][lease i64][value len u32][value]`;
//! delete `[key len u32][key]`; lease grant `[id i64][ttl i64]`; lease revoke `[id i64]`; compaction
//! `[revision i64]` (a compaction consumes no revision either, so it is a `sub` > 0 record).

/// Why stored bytes are not a log record: corruption, or a format from the future.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("log record truncated")]
    Truncated,
    #[error("trailing bytes after log record")]
    TrailingFrameBytes,
    #[error("log record checksum mismatch")]
    Checksum,
    #[error("log record format {0}")]
    Format(u8),
    #[error("log event kind {0}")]
    EventKind(u8),
    #[error("trailing bytes in log record payload")]
    TrailingPayloadBytes,
}

use crate::ids::Revision;

type Result<T> = std::result::Result<T, LogError>;

const FORMAT_V2: u8 = 2;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_LEASE_GRANT: u8 = 3;
const KIND_LEASE_REVOKE: u8 = 4;
const KIND_COMPACT: u8 = 5;
const FRAME_HEADER_BYTES: usize = 8;

/// One change inside a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// `key` now holds `value` (its mod revision is the record's revision).
    Put { key: Vec<u8>, value: Vec<u8>, create_revision: Revision, version: i64, lease: i64 },
    /// `key` was deleted.
    Delete { key: Vec<u8> },
    /// Lease `id` was granted with `ttl` seconds.
    LeaseGrant { id: i64, ttl: i64 },
    /// Lease `id` was revoked (its keys' deletes are in the same record).
    LeaseRevoke { id: i64 },
    /// History below `revision` was compacted away (etcd's Compact); replayed from a WAL, it
    /// compacts the restored store the same way.
    Compact { revision: Revision },
}

impl LogEvent {
    /// The key a put or delete changed.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            LogEvent::Put { key, .. } | LogEvent::Delete { key } => Some(key),
            LogEvent::LeaseGrant { .. } | LogEvent::LeaseRevoke { .. } | LogEvent::Compact { .. } => None,
        }
    }

    /// About how many bytes the event takes in memory and in a write batch: its key and value
    /// plus a fixed overhead.
    pub fn size(&self) -> usize {
        const OVERHEAD: usize = 64;
        match self {
            LogEvent::Put { key, value, .. } => OVERHEAD + key.len() + value.len(),
            LogEvent::Delete { key } => OVERHEAD + key.len(),
            LogEvent::LeaseGrant { .. } | LogEvent::LeaseRevoke { .. } | LogEvent::Compact { .. } => OVERHEAD,
        }
    }
}

/// A position in the log, ordered as commits are: by revision, then by sub.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    pub revision: Revision,
    pub sub: u32,
}

impl LogPosition {
    pub const fn new(revision: Revision, sub: u32) -> LogPosition {
        LogPosition { revision, sub }
    }

    /// The position right after this one in the same revision (the next record that takes none).
    pub const fn next_sub(self) -> LogPosition {
        LogPosition { revision: self.revision, sub: self.sub + 1 }
    }
}

/// Printed as `(revision, sub)`, as logs and errors have always shown positions.
impl std::fmt::Debug for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {})", self.revision, self.sub)
    }
}

/// All changes of one log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The revision these events were committed at (for a lease-only record: the revision it follows).
    pub revision: Revision,
    /// 0 for a record that opened `revision`; 1, 2, ... for lease-only records after it.
    pub sub: u32,
    /// The changes, in the order they were made.
    pub events: Vec<LogEvent>,
}

impl LogRecord {
    /// Where this record is in the log.
    pub fn position(&self) -> LogPosition {
        LogPosition::new(self.revision, self.sub)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(LogError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("keys and values are bounded by max_request_bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

impl LogRecord {
    /// The framed, checksummed bytes of this record.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(64);
        payload.push(FORMAT_V2);
        payload.extend_from_slice(&self.revision.get().to_be_bytes());
        payload.extend_from_slice(&self.sub.to_be_bytes());
        let count = u32::try_from(self.events.len()).expect("events are bounded by max_txn_ops");
        payload.extend_from_slice(&count.to_be_bytes());
        for event in &self.events {
            match event {
                LogEvent::Put { key, value, create_revision, version, lease } => {
                    payload.push(KIND_PUT);
                    put_bytes(&mut payload, key);
                    for n in [create_revision.get(), *version, *lease] {
                        payload.extend_from_slice(&n.to_be_bytes());
                    }
                    put_bytes(&mut payload, value);
                }
                LogEvent::Delete { key } => {
                    payload.push(KIND_DELETE);
                    put_bytes(&mut payload, key);
                }
                LogEvent::LeaseGrant { id, ttl } => {
                    payload.push(KIND_LEASE_GRANT);
                    payload.extend_from_slice(&id.to_be_bytes());
                    payload.extend_from_slice(&ttl.to_be_bytes());
                }
                LogEvent::LeaseRevoke { id } => {
                    payload.push(KIND_LEASE_REVOKE);
                    payload.extend_from_slice(&id.to_be_bytes());
                }
                LogEvent::Compact { revision } => {
                    payload.push(KIND_COMPACT);
                    payload.extend_from_slice(&revision.get().to_be_bytes());
                }
            }
        }
        let mut framed = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        let len = u32::try_from(payload.len()).expect("records are bounded by max_request_bytes");
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        framed.extend_from_slice(&payload);
        framed
    }

    /// Decodes one framed record, checking its length and checksum.
    pub fn decode(framed: &[u8]) -> Result<LogRecord> {
        let mut frame = Reader { bytes: framed };
        let len = frame.u32()? as usize;
        let crc = frame.u32()?;
        let payload = frame.take(len)?;
        if !frame.bytes.is_empty() {
            return Err(LogError::TrailingFrameBytes);
        }
        if crc32c::crc32c(payload) != crc {
            return Err(LogError::Checksum);
        }
        let mut r = Reader { bytes: payload };
        let format = r.u8()?;
        if format != FORMAT_V2 {
            return Err(LogError::Format(format));
        }
        let revision = Revision(r.i64()?);
        let sub = r.u32()?;
        let count = r.u32()? as usize;
        let mut events = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let event = match r.u8()? {
                KIND_PUT => {
                    let key = r.bytes()?;
                    let (create_revision, version, lease) = (Revision(r.i64()?), r.i64()?, r.i64()?);
                    LogEvent::Put { key, value: r.bytes()?, create_revision, version, lease }
                }
                KIND_DELETE => LogEvent::Delete { key: r.bytes()? },
                KIND_LEASE_GRANT => LogEvent::LeaseGrant { id: r.i64()?, ttl: r.i64()? },
                KIND_LEASE_REVOKE => LogEvent::LeaseRevoke { id: r.i64()? },
                KIND_COMPACT => LogEvent::Compact { revision: Revision(r.i64()?) },
                kind => return Err(LogError::EventKind(kind)),
            };
            events.push(event);
        }
        if !r.bytes.is_empty() {
            return Err(LogError::TrailingPayloadBytes);
        }
        Ok(LogRecord { revision, sub, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LogRecord {
        LogRecord {
            revision: Revision(42),
            sub: 0,
            events: vec![
                LogEvent::Put {
                    key: b"a\x00".to_vec(),
                    value: vec![],
                    create_revision: Revision(40),
                    version: 3,
                    lease: 0,
                },
                LogEvent::Delete { key: b"b".to_vec() },
                LogEvent::Put {
                    key: b"c".to_vec(),
                    value: vec![7; 300],
                    create_revision: Revision(42),
                    version: 1,
                    lease: 9,
                },
                LogEvent::LeaseRevoke { id: 9 },
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let record = sample();
        assert_eq!(LogRecord::decode(&record.encode()).unwrap(), record);
        let empty = LogRecord { revision: Revision(1), sub: 0, events: vec![] };
        assert_eq!(LogRecord::decode(&empty.encode()).unwrap(), empty);
        let grant = LogRecord { revision: Revision(7), sub: 3, events: vec![LogEvent::LeaseGrant { id: -5, ttl: 60 }] };
        assert_eq!(LogRecord::decode(&grant.encode()).unwrap(), grant);
        let compact =
            LogRecord { revision: Revision(9), sub: 1, events: vec![LogEvent::Compact { revision: Revision(4) }] };
        assert_eq!(LogRecord::decode(&compact.encode()).unwrap(), compact);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(LogRecord::decode(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn truncated_records_are_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(LogRecord::decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
    }
}
