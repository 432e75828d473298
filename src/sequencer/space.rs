//! What keeps writes from filling the disk: a floor of free bytes and etcd's space quota, checked
//! before a group that grows the store is evaluated (so nothing of a refused write reaches object
//! storage or the store), and the NOSPACE alarm they raise, which refuses such writes until an
//! operator disarms it (as etcd's does).

use super::Proposal;
use crate::alarms::{Alarm, Alarms};
use crate::mvcc::Store;

/// The sequencer's guard on the data directory's space.
#[derive(Clone, Debug)]
pub struct SpaceGuard {
    pub alarms: Alarms,
    /// Bytes the data directory's file system keeps free (`--disk-free-min-bytes`).
    pub free_min_bytes: u64,
    /// The most data the store may hold (`--quota-backend-bytes`; `None`: no quota).
    pub quota_bytes: Option<u64>,
    /// The store's data as last measured, and what groups added since (an upper bound of it now).
    measured: DataEstimate,
}

/// The store's data between measurements: measuring walks every keyspace's tables, so it is done at
/// most every [`DATA_MEASURE_INTERVAL`], and at once whenever the estimate comes near the quota (a
/// write is never refused on an estimate).
#[derive(Clone, Debug, Default)]
struct DataEstimate {
    at: Option<std::time::Instant>,
    bytes: u64,
}

/// How long an estimate of the store's data is trusted far from the quota.
const DATA_MEASURE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl SpaceGuard {
    pub fn new(alarms: Alarms, free_min_bytes: u64, quota_bytes: Option<u64>) -> SpaceGuard {
        SpaceGuard { alarms, free_min_bytes, quota_bytes, measured: DataEstimate::default() }
    }

    /// The store's data plus `bytes`, measured again if the estimate is old or would pass `quota`.
    fn data_with(&mut self, store: &Store, bytes: u64, quota: u64) -> u64 {
        let estimate = &mut self.measured;
        let fresh = estimate.at.is_some_and(|at| at.elapsed() < DATA_MEASURE_INTERVAL);
        if !fresh || estimate.bytes.saturating_add(bytes) > quota {
            *estimate = DataEstimate { at: Some(std::time::Instant::now()), bytes: store.data_bytes() };
        }
        estimate.bytes = estimate.bytes.saturating_add(bytes);
        estimate.bytes
    }

    /// Whether writes of `bytes` that grow the store must be refused now; raises NOSPACE when the
    /// disk is found short.
    pub(super) fn refuses(&mut self, store: &Store, bytes: u64) -> bool {
        if self.alarms.is_raised(Alarm::NoSpace) {
            return true;
        }
        if let Some(quota) = self.quota_bytes {
            let data = self.data_with(store, bytes, quota);
            if data > quota {
                if self.alarms.raise(Alarm::NoSpace) {
                    tracing::error!(
                        data_bytes = data,
                        quota_bytes = quota,
                        "NOSPACE alarm raised: the store reached its space quota (--quota-backend-bytes); writes that \
                         grow it are refused until it is compacted and defragmented and the alarm disarmed"
                    );
                }
                return true;
            }
        }
        let free = match store.free_bytes() {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the free space of the data directory");
                return false;
            }
        };
        if free >= self.free_min_bytes.saturating_add(bytes) {
            return false;
        }
        if self.alarms.raise(Alarm::NoSpace) {
            tracing::error!(
                free_bytes = free,
                floor_bytes = self.free_min_bytes,
                "NOSPACE alarm raised: the data directory's disk is nearly full; writes that grow the store are \
                 refused until space is freed and the alarm disarmed (etcdctl alarm disarm)"
            );
        }
        true
    }
}

/// Whether a proposal adds data to the store (etcd refuses these while NOSPACE is raised): a put,
/// a txn with a put in any branch at any depth, a lease grant.
pub(super) fn grows_store(proposal: &Proposal) -> bool {
    match proposal {
        Proposal::Put(_) | Proposal::LeaseGrant(_) => true,
        Proposal::DeleteRange(_) | Proposal::Compact(_) | Proposal::LeaseRevoke(_) => false,
        Proposal::Txn(txn) => txn.has_put(),
    }
}

/// Bytes a proposal adds at most: the keys and values it carries (a lease: its id and TTL).
pub(super) fn proposal_bytes(proposal: &Proposal) -> u64 {
    let len = match proposal {
        Proposal::Put(p) => p.key.len() + p.value.len(),
        Proposal::DeleteRange(d) => d.key.len() + d.range_end.len(),
        Proposal::Txn(t) => t.payload_bytes(),
        Proposal::Compact(_) => 0,
        Proposal::LeaseGrant(_) | Proposal::LeaseRevoke(_) => 2 * size_of::<i64>(),
    };
    len as u64
}
