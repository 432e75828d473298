//! Watchers and watch streams as a shard holds them, and the pure parts of delivery: turning log
//! events into etcd events (filters, `prev_kv`), and etcd's fragmentation of large responses.

use std::collections::BTreeMap;

use prost::Message;

use super::outbox::Outbox;
use crate::log::LogEvent;
use crate::mvcc::{KeySpan, RangeEnd};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};

/// Identifies a watch stream within its shard.
pub type StreamId = u64;

/// Identifies a watcher within its shard: its stream and its watch id on that stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatcherKey {
    pub stream: StreamId,
    pub watch_id: i64,
}

/// etcd's `AutoWatchID`: a create request with this id asks the server to pick one.
const AUTO_WATCH_ID: i64 = 0;

/// One watch.
#[derive(Debug)]
pub struct Watcher {
    pub span: KeySpan,
    /// Synced: events below this revision are not wanted (a start revision still in the future).
    /// Behind: the first revision not yet delivered.
    pub next_rev: i64,
    /// Receives live events as groups commit; otherwise it is behind and catches up from the log.
    pub synced: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
    /// An event response went out since the last progress tick.
    pub sent_since_tick: bool,
    /// Its next revision was compacted: it got etcd's compacted response and receives nothing more,
    /// but (as in etcd) keeps its id on the stream until cancelled.
    pub compacted: bool,
}

/// One watch stream: its queue to the client and its watchers.
#[derive(Debug)]
pub struct WatchStream {
    pub outbox: Outbox,
    pub watchers: BTreeMap<i64, Watcher>,
    /// Where the search for the next free watch id starts (etcd assigns 0, 1, 2, ... per stream).
    next_watch_id: i64,
    /// A catch-up task is running for this stream's watchers that are behind.
    pub catching_up: bool,
}

/// Why a create request was refused: etcd's cancel reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    EmptyRange,
    DuplicateId,
}

impl CreateError {
    /// etcd's `cancel_reason` text.
    pub fn reason(self) -> &'static str {
        match self {
            CreateError::EmptyRange => "mvcc: watcher range is empty",
            CreateError::DuplicateId => "mvcc: duplicate watch ID provided on the WatchStream",
        }
    }
}

impl WatchStream {
    pub fn new(outbox: Outbox) -> WatchStream {
        WatchStream { outbox, watchers: BTreeMap::new(), next_watch_id: 0, catching_up: false }
    }

    /// Adds the watcher `c` asks for, as of revision `current`; returns its id. It is synced unless
    /// it starts at or below `current` (it then replays history first).
    pub fn create(&mut self, c: &WatchCreateRequest, current: i64) -> Result<i64, CreateError> {
        let span = watch_span(c);
        if let RangeEnd::Before(end) = &span.end
            && span.start >= *end
        {
            return Err(CreateError::EmptyRange);
        }
        let id = if c.watch_id == AUTO_WATCH_ID {
            while self.watchers.contains_key(&self.next_watch_id) {
                self.next_watch_id += 1;
            }
            self.next_watch_id += 1;
            self.next_watch_id - 1
        } else if self.watchers.contains_key(&c.watch_id) {
            return Err(CreateError::DuplicateId);
        } else {
            c.watch_id
        };
        let start = c.start_revision;
        let (next_rev, synced) = match start {
            0 => (current + 1, true),
            s if s > current => (s, true),
            s => (s, false),
        };
        let filters = |f: FilterType| c.filters.contains(&(f as i32));
        self.watchers.insert(
            id,
            Watcher {
                span,
                next_rev,
                synced,
                no_put: filters(FilterType::Noput),
                no_delete: filters(FilterType::Nodelete),
                prev_kv: c.prev_kv,
                progress_notify: c.progress_notify,
                fragment: c.fragment,
                sent_since_tick: false,
                compacted: false,
            },
        );
        Ok(id)
    }
}

/// The keys a create request watches, read as etcd reads it: an empty key is `\0` (the smallest
/// key), an empty `range_end` is the key alone, and `\0` is every key from `key` on.
pub fn watch_span(c: &WatchCreateRequest) -> KeySpan {
    let key = if c.key.is_empty() { vec![0] } else { c.key.clone() };
    KeySpan::from_etcd(&key, &c.range_end)
}

/// The etcd event for `event` at `revision`, unless the watcher filters it out. Deletes carry only
/// the key and the revision, as etcd's do.
pub fn to_event(watcher: &Watcher, event: &LogEvent, revision: i64, prev: Option<&KeyValue>) -> Option<Event> {
    let (kind, kv) = match event {
        LogEvent::Put { .. } if watcher.no_put => return None,
        LogEvent::Delete { .. } if watcher.no_delete => return None,
        LogEvent::Put { key, value, create_revision, version, lease } => (
            EventType::Put,
            KeyValue {
                key: key.clone(),
                create_revision: *create_revision,
                mod_revision: revision,
                version: *version,
                value: value.clone(),
                lease: *lease,
            },
        ),
        LogEvent::Delete { key } => {
            (EventType::Delete, KeyValue { key: key.clone(), mod_revision: revision, ..Default::default() })
        }
        LogEvent::LeaseGrant { .. } | LogEvent::LeaseRevoke { .. } | LogEvent::Compact { .. } => return None,
    };
    let prev_kv = if watcher.prev_kv { prev.cloned() } else { None };
    Some(Event { r#type: kind as i32, kv: Some(kv), prev_kv })
}

/// Field number of `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;

/// Splits `response` as etcd's `sendFragments` does when the watcher asked for fragments: a response
/// of at least `limit` bytes with two or more events becomes several, each below `limit` (or holding
/// one event), all but the last marked `fragment`.
pub fn fragments(response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < limit {
        return vec![response];
    }
    let mut template = response.clone();
    template.events = Vec::new();
    template.fragment = true;
    let base = template.encoded_len();
    let mut parts = Vec::new();
    let mut current = template.clone();
    let mut size = base;
    for event in response.events {
        let bytes = prost::encoding::message::encoded_len(EVENTS_FIELD, &event);
        if !current.events.is_empty() && size + bytes >= limit {
            parts.push(std::mem::replace(&mut current, template.clone()));
            size = base;
        }
        size += bytes;
        current.events.push(event);
    }
    current.fragment = false;
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::ResponseHeader;

    fn outbox() -> Outbox {
        let (outbox, stream) = Outbox::new();
        std::mem::forget(stream); // keep the client end alive for the test
        outbox
    }

    fn create(key: &[u8], end: &[u8], watch_id: i64, start: i64) -> WatchCreateRequest {
        WatchCreateRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            watch_id,
            start_revision: start,
            ..Default::default()
        }
    }

    #[test]
    fn watch_ids_are_assigned_per_stream_and_duplicates_refused() {
        let mut stream = WatchStream::new(outbox());
        assert_eq!(stream.create(&create(b"a", b"", 0, 0), 5), Ok(0));
        assert_eq!(stream.create(&create(b"a", b"", 2, 0), 5), Ok(2));
        assert_eq!(stream.create(&create(b"a", b"", 0, 0), 5), Ok(1));
        assert_eq!(stream.create(&create(b"a", b"", 0, 0), 5), Ok(3), "2 is taken");
        assert_eq!(stream.create(&create(b"a", b"", 2, 0), 5), Err(CreateError::DuplicateId));
        assert_eq!(stream.create(&create(b"b", b"a", 0, 0), 5), Err(CreateError::EmptyRange));
        assert_eq!(stream.create(&create(b"b", b"b", 0, 0), 5), Err(CreateError::EmptyRange));
    }

    #[test]
    fn start_revisions_decide_between_live_and_replay() {
        let mut stream = WatchStream::new(outbox());
        let now = stream.create(&create(b"a", b"", 0, 0), 5).unwrap();
        let future = stream.create(&create(b"a", b"", 0, 9), 5).unwrap();
        let past = stream.create(&create(b"a", b"", 0, 5), 5).unwrap();
        let w = &stream.watchers;
        assert!(w[&now].synced && w[&now].next_rev == 6);
        assert!(w[&future].synced && w[&future].next_rev == 9);
        assert!(!w[&past].synced && w[&past].next_rev == 5, "the current revision itself is replayed");
    }

    #[test]
    fn an_empty_key_watches_from_the_smallest_key() {
        assert_eq!(watch_span(&create(b"", b"\0", 0, 0)), KeySpan::from_etcd(b"\0", b"\0"));
        assert_eq!(watch_span(&create(b"", b"", 0, 0)), KeySpan::from_etcd(b"\0", b""));
    }

    #[test]
    fn fragments_follow_etcds_split() {
        let event = |n: u8| Event {
            kv: Some(KeyValue { key: vec![n], value: vec![n; 100], ..Default::default() }),
            ..Default::default()
        };
        let response = WatchResponse {
            header: Some(ResponseHeader { revision: 9, ..Default::default() }),
            watch_id: 4,
            events: (0..10).map(event).collect(),
            ..Default::default()
        };
        assert_eq!(fragments(response.clone(), 1 << 20), vec![response.clone()], "small: one response");
        let parts = fragments(response.clone(), 350);
        assert!(parts.len() > 1);
        let (last, rest) = parts.split_last().unwrap();
        assert!(rest.iter().all(|p| p.fragment && p.encoded_len() < 350));
        assert!(!last.fragment);
        let events: Vec<Event> = parts.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(events, response.events, "every event once, in order");
        assert!(parts.iter().all(|p| p.watch_id == 4 && p.header == response.header));
        let one = WatchResponse { events: vec![event(1)], ..response };
        assert_eq!(fragments(one.clone(), 10), vec![one], "a single event is never split");
    }
}
