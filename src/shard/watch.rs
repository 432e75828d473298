//! Watch streams as a shard holds them, and turning log events into etcd's (storage model) events:
//! filters and `prev_kv`. Watchers and their sync state are the state machine's (`sync`).

use super::outbox::Outbox;
use super::sync::StreamSync;
use crate::ids::{Revision, WatchId};
use crate::log::LogEvent;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};

/// Identifies a watch stream within its shard.
pub type StreamId = u64;

/// Identifies a watcher within its shard: its stream and its watch id on that stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatcherKey {
    pub stream: StreamId,
    pub watch_id: WatchId,
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

/// The etcd event for `event` at `revision`, unless `filter` drops it. Deletes carry only the key
/// and the revision, as etcd's do.
pub fn to_event(filter: EventFilter, event: &LogEvent, revision: Revision, prev: Option<&KeyValue>) -> Option<Event> {
    let (kind, kv) = match event {
        LogEvent::Put { .. } if filter.no_put => return None,
        LogEvent::Delete { .. } if filter.no_delete => return None,
        LogEvent::Put { key, value, create_revision, version, lease } => (
            EventType::Put,
            KeyValue {
                key: key.clone(),
                create_revision: create_revision.get(),
                mod_revision: revision.get(),
                version: *version,
                value: value.clone(),
                lease: *lease,
            },
        ),
        LogEvent::Delete { key } => {
            (EventType::Delete, KeyValue { key: key.clone(), mod_revision: revision.get(), ..Default::default() })
        }
        LogEvent::LeaseGrant { .. } | LogEvent::LeaseRevoke { .. } | LogEvent::Compact { .. } => return None,
    };
    let prev_kv = if filter.prev_kv { prev.cloned() } else { None };
    Some(Event { r#type: kind as i32, kv: Some(kv), prev_kv })
}
