//! Catch-up: what a stream's watchers that are behind read from the log next, and what a batch read
//! sends them. At most one read per stream is under way; a watcher is marked synced only in the step
//! that compares it with the current revision, so no live event can slip between.

use super::{CatchUp, Effect, Effects, Now, StreamSync, WatcherState};
use crate::ids::Revision;
use crate::log::LogRecord;
use crate::proto::mvccpb::KeyValue;
use crate::shard::stream_io::WatchOutput;
use crate::shard::watch::to_event;

/// A read of the log a catch-up asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    /// The first revision wanted (the read starts at the compact revision if that is later).
    pub from: Revision,
    /// The last revision wanted: the shard's current revision when the read was asked for.
    pub to: Revision,
    /// Whether some watcher wants each event's previous version.
    pub want_prev: bool,
}

/// One batch of history read for a stream's catch-up.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryBatch {
    /// The first revision read: watchers behind it wait for the next batch.
    pub from: Revision,
    /// The compact revision when the batch was read.
    pub compact: Revision,
    /// Every revision from `from` up to this one was read.
    pub covered: Revision,
    pub records: Vec<LogRecord>,
    /// Per record, per event: the key's version before it, if it was read.
    pub prevs: Vec<Vec<Option<KeyValue>>>,
    /// Whether `prevs` was read (watchers wanting `prev_kv` skip a batch without it).
    pub with_prev: bool,
}

impl StreamSync {
    /// A batch the catch-up read: each watcher behind that the batch covers is sent its events in
    /// one response and moves past the batch; one whose next revision was compacted is canceled with
    /// the compact revision. Then the next read is planned.
    pub fn history_read(&mut self, batch: &HistoryBatch, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now, self.identity);
        debug_assert_eq!(self.catch_up, CatchUp::Reading, "a history batch arrived with no read under way");
        if self.catch_up != CatchUp::Reading {
            return out.effects;
        }
        for (&watch_id, watcher) in self.watchers.iter_mut() {
            let WatcherState::Behind { next } = watcher.state else { continue };
            if next < batch.compact {
                out.send(WatchOutput::Compacted { watch_id, compact_revision: batch.compact });
                watcher.state = WatcherState::Compacted;
                out.effects.push(Effect::Unindex { watch_id, span: watcher.span.clone() });
                continue;
            }
            if next < batch.from || next > batch.covered || (watcher.filter.prev_kv && !batch.with_prev) {
                continue; // it fell behind (or was created) after this read was planned: the next one serves it
            }
            let mut events = Vec::new();
            for (r, record) in batch.records.iter().enumerate() {
                if record.revision < next || record.revision > batch.covered {
                    continue;
                }
                for (i, event) in record.events.iter().enumerate() {
                    let Some(key) = event.key() else { continue };
                    if !watcher.span.contains(key) {
                        continue;
                    }
                    let prev = batch.prevs.get(r).and_then(|p| p[i].as_ref());
                    events.extend(to_event(watcher.filter, event, record.revision, prev));
                }
            }
            watcher.state = WatcherState::Behind { next: batch.covered.next() };
            if !events.is_empty() {
                out.send_events(watcher, watch_id, batch.covered, events, self.limits.fragment_bytes);
            }
        }
        self.plan_catch_up(&mut out);
        out.effects
    }

    /// The client took some of what was queued (or the wait ran out): the catch-up goes on.
    pub fn client_drained(&mut self, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now, self.identity);
        if self.catch_up == CatchUp::WaitingForClient {
            self.plan_catch_up(&mut out);
        }
        out.effects
    }

    /// Plans the catch-up's next step: watchers behind that reached the current revision are synced
    /// here; if others are still behind, the log is read from the oldest of them, unless the client
    /// has half the budget queued (then it waits for the client first).
    pub(super) fn plan_catch_up(&mut self, out: &mut Effects) {
        let current = out.now.current;
        let mut from: Option<Revision> = None;
        let mut want_prev = false;
        for watcher in self.watchers.values_mut() {
            let WatcherState::Behind { next } = watcher.state else { continue };
            if next > current {
                watcher.state = WatcherState::Synced { from: next };
                continue;
            }
            from = Some(from.map_or(next, |from| from.min(next)));
            want_prev |= watcher.filter.prev_kv;
        }
        self.catch_up = match from {
            None => CatchUp::Idle,
            Some(_) if out.queued_bytes() > self.limits.buffer_bytes / 2 => {
                out.effects.push(Effect::WaitForClient);
                CatchUp::WaitingForClient
            }
            Some(from) => {
                out.effects.push(Effect::ReadHistory(HistoryRequest { from, to: current, want_prev }));
                CatchUp::Reading
            }
        };
    }
}
