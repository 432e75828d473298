//! The catch-up's I/O for watchers that are behind: reading a batch of the log on the blocking pool,
//! and waiting for a client to take what was queued; each reports back to the shard, which feeds the
//! stream's state machine. Invariants: a batch is bounded in bytes; a log that cannot be read ends
//! the stream with `Unavailable`, never the shard.

use std::time::Duration;

use super::Shard;
use super::actor::ShardMessage;
use super::sync::{HistoryBatch, HistoryRequest};
use super::watch::StreamId;
use crate::config::WATCH_CATCH_UP_BYTES_MAX;
use crate::error::{Error, Result};
use crate::ids::Revision;
use crate::mvcc::range::key_value;
use crate::mvcc::{KeySpan, RangeEnd, Store, VersionReader};

/// How long a catch-up waiting for its client waits at most before it looks again.
const CATCH_UP_RECHECK_MS: u64 = 1000;

/// What a catch-up read brings back.
pub(super) type HistoryRead = Result<HistoryBatch>;

impl Shard {
    /// Reads what `request` asks for on the blocking pool; the batch comes back as a message.
    pub(super) fn spawn_history_read(&self, stream: StreamId, request: HistoryRequest) {
        let store = self.context.store.clone();
        let reads = self.context.reads.clone();
        let shard = self.helpers.clone();
        glommio::spawn_local(async move {
            let HistoryRequest { from, to, want_prev } = request;
            let read = reads.run(move || read_history(&store, from, to, want_prev)).await.and_then(|read| read);
            let _ = shard.send(ShardMessage::HistoryRead { stream, read });
        })
        .detach();
    }

    /// Waits until the stream's client takes a response, or a while; then tells the shard.
    pub(super) fn spawn_wait_for_client(&self, stream: StreamId) {
        let Some(drained) = self.streams.get(&stream).map(|s| s.outbox.drained()) else { return };
        let shard = self.helpers.clone();
        glommio::spawn_local(async move {
            let recheck = glommio::timer::sleep(Duration::from_millis(CATCH_UP_RECHECK_MS));
            futures_lite::future::or(drained.notified(), recheck).await;
            let _ = shard.send(ShardMessage::ClientDrained { stream });
        })
        .detach();
    }

    /// A catch-up read finished: its batch goes to the stream's state machine.
    pub(super) fn history_read(&mut self, stream_id: StreamId, read: HistoryRead) {
        let now = self.now(stream_id);
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        let batch = match read {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "watch catch-up cannot read the log");
                stream.outbox.fail(Error::WatchHistoryUnreadable(Box::new(e)));
                self.close_stream(stream_id);
                return;
            }
        };
        let effects = stream.sync.history_read(&batch, now);
        self.carry_out(stream_id, effects);
        self.publish_watching();
    }

    pub(super) fn client_drained(&mut self, stream_id: StreamId) {
        let now = self.now(stream_id);
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        let effects = stream.sync.client_drained(now);
        self.carry_out(stream_id, effects);
    }
}

/// Reads the log for a catch-up: records from `from` (or the compact revision, if later) through
/// `to`, bounded in bytes, with each event's previous version if `want_prev`. Blocking.
fn read_history(store: &Store, from: Revision, to: Revision, want_prev: bool) -> Result<HistoryBatch> {
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
                        view.visit(&span, record.revision.prev(), &mut |k, v| {
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
    Ok(HistoryBatch { from: first, compact, covered, records, prevs, with_prev: want_prev })
}
