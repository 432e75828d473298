//! The shard's periodic tick: expiring its leases (revoked through the sequencer), closing streams
//! whose client left, and progress notifications for idle watchers. Invariants: revokes per tick are
//! bounded; a progress notification goes only to a synced watcher that got nothing since the last
//! one, and never to a stream over its byte budget.

use std::time::{Duration, Instant};

use super::watch::StreamId;
use super::{Shard, ShardState};
use crate::config::{LEASE_REVOKES_PER_TICK_MAX, LEASE_TICK_MS, WATCH_STREAM_BUFFER_BYTES};
use crate::error::Error;
use crate::proto::etcdserverpb::{LeaseRevokeRequest, WatchResponse};

/// How long after a failed revoke an expired lease is tried again.
const REVOKE_RETRY_MS: u64 = 1000;

impl Shard {
    /// Expires leases, closes streams whose client left, and sends progress notifications.
    pub(super) async fn tick(self) {
        let tick = Duration::from_millis(LEASE_TICK_MS);
        let mut last_progress = Instant::now();
        loop {
            glommio::timer::sleep(tick).await;
            let now = Instant::now();
            let (expired, sequencer) = {
                let mut state = self.0.borrow_mut();
                if state.stopped {
                    return;
                }
                state.close_abandoned_streams();
                if now.duration_since(last_progress) >= state.context.progress_interval {
                    last_progress = now;
                    state.notify_progress();
                }
                (state.leases.take_expired(now, LEASE_REVOKES_PER_TICK_MAX), state.context.sequencer.clone())
            };
            for id in expired {
                let shard = self.clone();
                let sequencer = sequencer.clone();
                glommio::spawn_local(async move {
                    match sequencer.lease_revoke(LeaseRevokeRequest { id }).await {
                        // The committed group forgets the timer.
                        Ok(_) => {}
                        Err(Error::LeaseNotFound) => shard.0.borrow_mut().leases.revoke(id),
                        Err(e) => {
                            tracing::warn!(lease = id, error = %e, "cannot revoke an expired lease; retrying");
                            let retry_at = Instant::now() + Duration::from_millis(REVOKE_RETRY_MS);
                            shard.0.borrow_mut().leases.revoke_failed(id, retry_at);
                        }
                    }
                })
                .detach();
            }
        }
    }
}

impl ShardState {
    /// Sends an empty response to every idle, synced watcher that asked for progress notifications.
    fn notify_progress(&mut self) {
        let header = self.header(self.current);
        for stream in self.streams.values_mut() {
            if stream.outbox.queued_bytes() >= WATCH_STREAM_BUFFER_BYTES {
                continue;
            }
            for (&watch_id, watcher) in stream.watchers.iter_mut() {
                if watcher.progress_notify && watcher.synced && !watcher.compacted && !watcher.sent_since_tick {
                    stream.outbox.push(WatchResponse { header, watch_id, ..Default::default() });
                }
                watcher.sent_since_tick = false;
            }
        }
    }

    fn close_abandoned_streams(&mut self) {
        let abandoned: Vec<StreamId> =
            self.streams.iter().filter(|(_, s)| s.outbox.is_closed()).map(|(id, _)| *id).collect();
        for stream in abandoned {
            self.close_stream(stream);
        }
    }
}
