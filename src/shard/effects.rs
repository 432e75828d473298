//! Carrying out a stream's state machine effects: responses onto the outbox (without waiting), the
//! watcher index, metrics, and the catch-up's reads and waits as helper tasks. Invariants: effects
//! are carried out in the order given; a stream whose client is gone is closed once they are, and its
//! catch-up is not continued.

use super::Shard;
use super::sync::{Effect, Now};
use super::watch::{StreamId, WatcherKey};

impl Shard {
    /// What stream `stream_id`'s state machine is told with an input.
    pub(super) fn now(&self, stream_id: StreamId) -> Now {
        let queued_bytes = self.streams.get(&stream_id).map_or(0, |s| s.outbox.queued_bytes());
        Now { current: self.current, queued_bytes }
    }

    /// Carries out `effects` of stream `stream_id`'s state machine.
    pub(super) fn carry_out(&mut self, stream_id: StreamId, effects: Vec<Effect>) {
        let mut gone = false;
        for effect in effects {
            match effect {
                Effect::Send { output, bytes } => {
                    gone = gone || !self.streams.get(&stream_id).is_some_and(|s| s.outbox.push(output, bytes));
                }
                Effect::Index { watch_id, span } => {
                    self.watchers.insert(&span, WatcherKey { stream: stream_id, watch_id });
                }
                Effect::Unindex { watch_id, span } => {
                    self.watchers.remove(&span, WatcherKey { stream: stream_id, watch_id });
                }
                Effect::FellBehind { events, .. } => self.context.metrics.events_deferred(events),
                Effect::ReadHistory(request) if !gone => self.spawn_history_read(stream_id, request),
                Effect::WaitForClient if !gone => self.spawn_wait_for_client(stream_id),
                Effect::ReadHistory(_) | Effect::WaitForClient => {}
            }
        }
        if gone {
            self.close_stream(stream_id);
        }
    }
}
