//! Watch streams as a shard holds them, and the pure parts of delivery: turning log events into etcd
//! events (filters, `prev_kv`), and etcd's fragmentation of large responses. Watchers and their sync
//! state are the state machine's (`sync`).

use prost::Message;

use super::outbox::Outbox;
use super::sync::StreamSync;
use crate::log::LogEvent;
use crate::mvcc::KeySpan;
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

/// Which events a watcher is sent, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub no_put: bool,
    pub no_delete: bool,
    /// Events carry the key's previous version.
    pub prev_kv: bool,
}

/// One watch stream: its queue to the client and its watchers' sync state.
#[derive(Debug)]
pub struct WatchStream {
    pub outbox: Outbox,
    pub sync: StreamSync,
    /// Never sent on: dropped with the stream, which ends the task reading the stream's requests.
    _stop_reading: flume::Sender<()>,
}

impl WatchStream {
    /// A stream queuing on `outbox`; the receiver ends once the stream is dropped.
    pub fn new(outbox: Outbox, sync: StreamSync) -> (WatchStream, flume::Receiver<()>) {
        let (stop_reading, stopped) = flume::bounded(1);
        (WatchStream { outbox, sync, _stop_reading: stop_reading }, stopped)
    }
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

/// The keys a create request watches, read as etcd reads it: an empty key is `\0` (the smallest
/// key), an empty `range_end` is the key alone, and `\0` is every key from `key` on.
pub fn watch_span(c: &WatchCreateRequest) -> KeySpan {
    let key = if c.key.is_empty() { vec![0] } else { c.key.clone() };
    KeySpan::from_etcd(&key, &c.range_end)
}

/// The etcd event for `event` at `revision`, unless `filter` drops it. Deletes carry only the key
/// and the revision, as etcd's do.
pub fn to_event(filter: EventFilter, event: &LogEvent, revision: i64, prev: Option<&KeyValue>) -> Option<Event> {
    let (kind, kv) = match event {
        LogEvent::Put { .. } if filter.no_put => return None,
        LogEvent::Delete { .. } if filter.no_delete => return None,
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
    let prev_kv = if filter.prev_kv { prev.cloned() } else { None };
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
