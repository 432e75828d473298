//! Lease deadlines of the leases one shard owns (`id % cores`). Deadlines live only in memory: after
//! a restart every lease starts with its full TTL again, as in etcd.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One lease's timer.
#[derive(Debug, Clone, Copy)]
struct LeaseTimer {
    /// Granted TTL in seconds.
    ttl: i64,
    /// When the lease expires unless kept alive.
    deadline: Instant,
    /// A revoke for it is proposed and not yet committed.
    revoking: bool,
}

/// What a TTL query reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTtl {
    /// The granted TTL, seconds.
    pub granted: i64,
    /// Whole seconds left (0 once expired).
    pub remaining: i64,
}

/// The timers of one shard's leases.
#[derive(Debug, Default)]
pub struct LeaseTimers {
    timers: HashMap<i64, LeaseTimer>,
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl LeaseTimers {
    /// Starts (or restarts) lease `id` with its full TTL.
    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) {
        self.timers.insert(id, LeaseTimer { ttl, deadline: now + seconds(ttl), revoking: false });
    }

    /// Forgets a revoked lease.
    pub fn revoke(&mut self, id: i64) {
        self.timers.remove(&id);
    }

    /// Renews lease `id` for its full TTL; returns the TTL, or `None` if it does not exist or has
    /// already expired (an expired lease is being revoked and cannot be saved).
    pub fn keep_alive(&mut self, id: i64, now: Instant) -> Option<i64> {
        let timer = self.timers.get_mut(&id)?;
        if timer.revoking || timer.deadline <= now {
            return None;
        }
        timer.deadline = now + seconds(timer.ttl);
        Some(timer.ttl)
    }

    /// The granted and remaining TTL of lease `id`.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<LeaseTtl> {
        let timer = self.timers.get(&id)?;
        let remaining = timer.deadline.saturating_duration_since(now).as_secs() as i64;
        Some(LeaseTtl { granted: timer.ttl, remaining })
    }

    /// Up to `max` expired leases not yet being revoked, now marked as being revoked.
    pub fn take_expired(&mut self, now: Instant, max: usize) -> Vec<i64> {
        let mut expired: Vec<i64> = Vec::new();
        for (id, timer) in self.timers.iter_mut() {
            if expired.len() >= max {
                break;
            }
            if !timer.revoking && timer.deadline <= now {
                timer.revoking = true;
                expired.push(*id);
            }
        }
        expired
    }

    /// A revoke that could not be committed: try again once `retry_at` has passed.
    pub fn revoke_failed(&mut self, id: i64, retry_at: Instant) {
        if let Some(timer) = self.timers.get_mut(&id) {
            timer.revoking = false;
            timer.deadline = retry_at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_unless_kept_alive() {
        let start = Instant::now();
        let mut timers = LeaseTimers::default();
        timers.grant(7, 10, start);
        assert_eq!(timers.time_to_live(7, start), Some(LeaseTtl { granted: 10, remaining: 10 }));
        assert!(timers.take_expired(start + Duration::from_secs(9), 10).is_empty());
        assert_eq!(timers.keep_alive(7, start + Duration::from_secs(9)), Some(10));
        assert!(timers.take_expired(start + Duration::from_secs(18), 10).is_empty());
        let late = start + Duration::from_secs(19);
        assert_eq!(timers.take_expired(late, 10), vec![7]);
        assert!(timers.take_expired(late, 10).is_empty(), "a revoke is proposed once");
        assert_eq!(timers.keep_alive(7, late), None, "an expired lease cannot be kept alive");
        assert_eq!(timers.time_to_live(7, late).unwrap().remaining, 0);
        timers.revoke_failed(7, late + Duration::from_secs(1));
        assert_eq!(timers.take_expired(late + Duration::from_secs(1), 10), vec![7]);
        timers.revoke(7);
        assert_eq!(timers.time_to_live(7, late), None);
    }

    #[test]
    fn expiry_is_bounded_per_call() {
        let now = Instant::now();
        let mut timers = LeaseTimers::default();
        for id in 0..10 {
            timers.grant(id, 0, now);
        }
        assert_eq!(timers.take_expired(now, 4).len(), 4);
        assert_eq!(timers.take_expired(now, 100).len(), 6);
    }
}
