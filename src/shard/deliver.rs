//! Applying one committed group: lease timers, then the group's key events routed to the streams
//! whose watchers they concern, each stream's state machine deciding what it is sent. Invariants:
//! a group is applied whole before anything else is handled; the current revision never goes back
//! (a group the shard's start already saw is applied to lease timers only).

use std::time::Instant;

use super::sync::route;
use super::{Shard, lease_owner};
use crate::log::LogEvent;
use crate::sequencer::CommittedGroup;

impl Shard {
    pub(super) fn apply_group(&mut self, group: &CommittedGroup) {
        let now = Instant::now();
        for record in &group.records {
            for event in &record.events {
                match event {
                    LogEvent::LeaseGrant { id, ttl } if lease_owner(*id, self.shards) == self.index => {
                        self.leases.grant(*id, *ttl, now);
                    }
                    LogEvent::LeaseRevoke { id } => self.leases.revoke(*id),
                    _ => {}
                }
            }
        }
        let applied = self.current;
        let routed = route(&self.watchers, &group.records, &group.prevs, applied);
        // Lease-only records (sub > 0) take no revision.
        let last = group.records.iter().filter(|r| r.sub == 0).map(|r| r.revision).max();
        self.current = last.map_or(applied, |last| last.max(applied));
        for (stream_id, revisions) in routed {
            let now = self.now(stream_id);
            let Some(stream) = self.streams.get_mut(&stream_id) else { continue };
            let effects = stream.sync.group_applied(&revisions, now);
            self.carry_out(stream_id, effects);
        }
    }
}
