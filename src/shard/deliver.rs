//! Live delivery: applying one committed group to the shard (lease timers, then events for synced
//! watchers) and queuing a watcher's response, whole or in fragments. Invariants: only synced
//! watchers get live events; a stream over its byte budget gets none, and its watchers fall behind
//! to the catch-up task at the revision they missed.

use std::collections::BTreeMap;
use std::time::Instant;

use super::outbox::Outbox;
use super::watch::{StreamId, Watcher, WatcherKey, fragments, to_event};
use super::{Shard, ShardState, lease_owner};
use crate::config::WATCH_STREAM_BUFFER_BYTES;
use crate::log::LogEvent;
use crate::proto::etcdserverpb::WatchResponse;
use crate::sequencer::CommittedGroup;

impl Shard {
    pub(super) fn apply_group(&self, group: &CommittedGroup) {
        let behind = self.0.borrow_mut().apply_group(group);
        for stream in behind {
            self.spawn_catch_up(stream);
        }
    }
}

impl ShardState {
    /// Applies one committed group: lease timers, then live events for synced watchers. Returns the
    /// streams whose watchers fell behind and need a catch-up task.
    fn apply_group(&mut self, group: &CommittedGroup) -> Vec<StreamId> {
        let mut behind = Vec::new();
        let mut gone = Vec::new();
        let now = Instant::now();
        for (record, prevs) in group.records.iter().zip(&group.prevs) {
            for event in &record.events {
                match event {
                    LogEvent::LeaseGrant { id, ttl } if lease_owner(*id, self.shards) == self.index => {
                        self.leases.grant(*id, *ttl, now);
                    }
                    LogEvent::LeaseRevoke { id } => self.leases.revoke(*id),
                    _ => {}
                }
            }
            if record.sub != 0 {
                continue; // lease-only: no revision, no key events
            }
            self.current = record.revision;
            if self.watchers.is_empty() {
                continue;
            }
            let mut matched: BTreeMap<WatcherKey, Vec<usize>> = BTreeMap::new();
            for (i, event) in record.events.iter().enumerate() {
                if let Some(key) = event.key() {
                    self.watchers.for_each_match(key, |w| matched.entry(w).or_default().push(i));
                }
            }
            for (key, indexes) in matched {
                let header = self.header(record.revision);
                let fragment_bytes = self.context.fragment_bytes;
                let Some(stream) = self.streams.get_mut(&key.stream) else { continue };
                let over_budget = stream.outbox.queued_bytes() >= WATCH_STREAM_BUFFER_BYTES;
                let Some(watcher) = stream.watchers.get_mut(&key.watch_id) else { continue };
                if !watcher.synced || record.revision < watcher.next_rev {
                    continue;
                }
                let events: Vec<_> = indexes
                    .iter()
                    .filter_map(|&i| to_event(watcher, &record.events[i], record.revision, prevs[i].as_ref()))
                    .collect();
                if events.is_empty() {
                    continue;
                }
                if over_budget {
                    self.context.metrics.events_deferred(events.len());
                    watcher.synced = false;
                    watcher.next_rev = record.revision;
                    if !stream.catching_up {
                        stream.catching_up = true;
                        behind.push(key.stream);
                    }
                    continue;
                }
                let response = WatchResponse { header, watch_id: key.watch_id, events, ..Default::default() };
                if !send(&stream.outbox, watcher, response, fragment_bytes) {
                    gone.push(key.stream);
                }
            }
        }
        for stream in gone {
            self.close_stream(stream);
        }
        behind
    }
}

/// Queues a watcher's event response (split into fragments if it asked for them); false if the
/// client is gone.
pub(super) fn send(outbox: &Outbox, watcher: &mut Watcher, response: WatchResponse, fragment_bytes: usize) -> bool {
    watcher.sent_since_tick = true;
    if watcher.fragment {
        return fragments(response, fragment_bytes).into_iter().all(|part| outbox.push(part));
    }
    outbox.push(response)
}
