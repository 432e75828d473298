//! The shard's periodic tick (every `LEASE_TICK_MS`, from the actor runner): expiring its leases
//! (revoked through the sequencer by helper tasks), closing streams whose client left, and progress
//! notifications, which each stream's state machine decides. Invariants: revokes per tick are
//! bounded; a revoke that fails is retried later, one whose lease is gone forgets the timer.

use std::time::{Duration, Instant};

use super::Shard;
use super::actor::ShardMessage;
use super::watch::StreamId;
use crate::config::LEASE_REVOKES_PER_TICK_MAX;
use crate::error::Error;
use crate::ids::LeaseId;

/// How long after a failed revoke an expired lease is tried again.
const REVOKE_RETRY_MS: u64 = 1000;

impl Shard {
    /// Closes streams whose client left, sends progress notifications when due, and proposes
    /// revokes of expired leases.
    pub(super) fn tick_now(&mut self, now: Instant) {
        self.close_abandoned_streams();
        if now.duration_since(self.last_progress) >= self.context.progress_interval {
            self.last_progress = now;
            self.notify_progress();
        }
        for id in self.leases.take_expired(now, LEASE_REVOKES_PER_TICK_MAX) {
            let sequencer = self.context.sequencer.clone();
            let shard = self.helpers.clone();
            glommio::spawn_local(async move {
                // A committed revoke reaches the shard in its group, which forgets the timer.
                if let Err(error) = sequencer.lease_revoke(LeaseId(id)).await {
                    let _ = shard.send(ShardMessage::RevokeFailed { id, error });
                }
            })
            .detach();
        }
    }

    /// A revoke of expired lease `id` failed: a lease already gone is forgotten, another is retried.
    pub(super) fn revoke_failed(&mut self, id: i64, error: Error) {
        match error {
            Error::LeaseNotFound => self.leases.revoke(id),
            e => {
                tracing::warn!(lease = id, error = %e, "cannot revoke an expired lease; retrying");
                let retry_at = Instant::now() + Duration::from_millis(REVOKE_RETRY_MS);
                self.leases.revoke_failed(id, retry_at);
            }
        }
    }

    /// Feeds the progress tick to every stream's state machine.
    fn notify_progress(&mut self) {
        let streams: Vec<StreamId> = self.streams.keys().copied().collect();
        for stream_id in streams {
            let now = self.now(stream_id);
            let Some(stream) = self.streams.get_mut(&stream_id) else { continue };
            let effects = stream.sync.progress_tick(now);
            self.carry_out(stream_id, effects);
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
