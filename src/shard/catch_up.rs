//! Catch-up from the log for watchers that are behind: plan a batch, read it on the blocking pool,
//! deliver it. Invariants: at most one catch-up task per stream (`catching_up`); a batch is bounded in
//! bytes and waits while the client has not taken what was queued; a watcher is marked synced only in
//! the step that compares it with `current`, so no live event slips between.

use std::time::Duration;

use super::deliver::send;
use super::watch::{StreamId, WatcherKey, to_event};
use super::{Shard, ShardState};
use crate::config::{WATCH_CATCH_UP_BYTES_MAX, WATCH_STREAM_BUFFER_BYTES};
use crate::error::Result;
use crate::log::LogRecord;
use crate::mvcc::range::key_value;
use crate::mvcc::{KeySpan, RangeEnd, Store, VersionReader};
use crate::proto::etcdserverpb::WatchResponse;
use crate::proto::mvccpb::KeyValue;

/// How often a catch-up waiting for the client rechecks the stream.
const CATCH_UP_RECHECK_MS: u64 = 1000;

/// One batch of history read for a stream's catch-up.
struct CatchUp {
    /// The first revision read: watchers behind it wait for the next batch.
    from: i64,
    compact: i64,
    /// Every revision up to this one was read.
    covered: i64,
    records: Vec<LogRecord>,
    /// Per record, per event: the key's version before it, if any watcher wants `prev_kv`.
    prevs: Vec<Vec<Option<KeyValue>>>,
    /// Whether `prevs` was read (watchers wanting `prev_kv` skip a batch without it).
    with_prev: bool,
}

impl Shard {
    pub(super) fn spawn_catch_up(&self, stream: StreamId) {
        glommio::spawn_local(self.clone().catch_up(stream)).detach();
    }

    /// Brings the stream's watchers that are behind up to date from the log, one bounded batch at a
    /// time, waiting whenever the client has not taken what was already queued.
    async fn catch_up(self, stream: StreamId) {
        loop {
            let plan = self.0.borrow_mut().plan_catch_up(stream);
            let Some((from, to, want_prev)) = plan else { return };
            let waiting_for_client = {
                let state = self.0.borrow();
                let outbox = state.streams.get(&stream).map(|s| &s.outbox);
                outbox.filter(|o| o.queued_bytes() > WATCH_STREAM_BUFFER_BYTES / 2).map(|o| o.drained())
            };
            if let Some(drained) = waiting_for_client {
                let recheck = glommio::timer::sleep(Duration::from_millis(CATCH_UP_RECHECK_MS));
                futures_lite::future::or(drained.notified(), recheck).await;
                continue;
            }
            let (store, reads) = {
                let state = self.0.borrow();
                (state.context.store.clone(), state.context.reads.clone())
            };
            let batch = reads.run(move || read_history(&store, from, to, want_prev)).await;
            let batch = match batch {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) | Err(e) => {
                    tracing::error!(error = %e, "watch catch-up cannot read the log");
                    let mut state = self.0.borrow_mut();
                    if let Some(s) = state.streams.get(&stream) {
                        s.outbox.fail(crate::etcd::status::watch_history_unreadable(&e));
                    }
                    state.close_stream(stream);
                    return;
                }
            };
            self.0.borrow_mut().deliver_catch_up(stream, &batch);
        }
    }
}

/// Reads the log for a catch-up: records from `from` (or the compact revision, if later) through
/// `to`, bounded in bytes, with each event's previous version if `want_prev`. Blocking.
fn read_history(store: &Store, from: i64, to: i64, want_prev: bool) -> Result<CatchUp> {
    let view = store.read_view()?;
    let compact = view.compact_revision();
    let first = from.max(compact);
    let (records, covered) = view.log_records(first, to, WATCH_CATCH_UP_BYTES_MAX)?;
    let mut prevs = Vec::new();
    if want_prev {
        for record in &records {
            let mut record_prevs = Vec::with_capacity(record.events.len());
            for event in &record.events {
                let prev = match event.key() {
                    Some(key) if record.revision > compact => {
                        let mut found = None;
                        let span = KeySpan { start: key.to_vec(), end: RangeEnd::Single };
                        view.visit(&span, record.revision - 1, &mut |k, v| {
                            found = Some(key_value(k, v));
                            false
                        })?;
                        found
                    }
                    _ => None,
                };
                record_prevs.push(prev);
            }
            prevs.push(record_prevs);
        }
    }
    Ok(CatchUp { from: first, compact, covered, records, prevs, with_prev: want_prev })
}

impl ShardState {
    /// What the stream's next catch-up batch reads: (from, to, want_prev), or `None` when no watcher
    /// is behind any more (the task then ends). Watchers that caught up are marked synced here, in
    /// the same step that compares them with `current`, so no live event can slip between.
    fn plan_catch_up(&mut self, stream_id: StreamId) -> Option<(i64, i64, bool)> {
        let current = self.current;
        let stopped = self.stopped;
        let stream = self.streams.get_mut(&stream_id)?;
        let mut from = i64::MAX;
        let mut want_prev = false;
        for watcher in stream.watchers.values_mut().filter(|w| !w.synced) {
            if watcher.next_rev > current {
                watcher.synced = true;
                continue;
            }
            from = from.min(watcher.next_rev);
            want_prev |= watcher.prev_kv;
        }
        if from == i64::MAX || stopped {
            stream.catching_up = false;
            return None;
        }
        Some((from, current, want_prev))
    }

    /// Queues a catch-up batch for every watcher of the stream that is behind.
    fn deliver_catch_up(&mut self, stream_id: StreamId, batch: &CatchUp) {
        let batch_header = self.header(batch.covered);
        let compacted_header = self.header(0);
        let fragment_bytes = self.context.fragment_bytes;
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        let mut compacted = Vec::new();
        let mut gone = false;
        for (&watch_id, watcher) in stream.watchers.iter_mut().filter(|(_, w)| !w.synced) {
            if watcher.next_rev < batch.compact {
                // etcd's compacted answer: the compact revision, canceled, and a zero header revision.
                gone |= !stream.outbox.push(WatchResponse {
                    header: compacted_header,
                    watch_id,
                    compact_revision: batch.compact,
                    canceled: true,
                    ..Default::default()
                });
                watcher.compacted = true;
                watcher.synced = true; // never planned again
                compacted.push((watch_id, watcher.span.clone()));
                continue;
            }
            if watcher.next_rev < batch.from
                || watcher.next_rev > batch.covered
                || (watcher.prev_kv && !batch.with_prev)
            {
                continue; // it fell behind (or was created) after this batch was planned: the next one serves it
            }
            let mut events = Vec::new();
            for (r, record) in batch.records.iter().enumerate() {
                if record.revision < watcher.next_rev || record.revision > batch.covered {
                    continue;
                }
                for (i, event) in record.events.iter().enumerate() {
                    let Some(key) = event.key() else { continue };
                    if !watcher.span.contains(key) {
                        continue;
                    }
                    let prev = batch.prevs.get(r).and_then(|p| p[i].as_ref());
                    events.extend(to_event(watcher, event, record.revision, prev));
                }
            }
            watcher.next_rev = batch.covered + 1;
            if !events.is_empty() {
                let response = WatchResponse { header: batch_header, watch_id, events, ..Default::default() };
                gone |= !send(&stream.outbox, watcher, response, fragment_bytes);
            }
        }
        for (watch_id, span) in compacted {
            self.watchers.remove(&span, WatcherKey { stream: stream_id, watch_id });
        }
        self.publish_watching();
        if gone {
            self.close_stream(stream_id);
        }
    }
}
