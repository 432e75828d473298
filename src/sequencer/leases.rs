//! The sequencer's lease table: which leases exist and which live keys each one holds, as of every
//! revision assigned so far (committed or in flight). Puts are checked against it, and a revoke
//! deletes exactly the keys it lists. Expiry deadlines are not here: they live in the shard actors.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Result, RuntimeError};
use crate::ids::LeaseId;
use crate::log::LogEvent;
use crate::proto::mvccpb::KeyValue;

/// One lease: its granted TTL and its attached keys (sorted, so a revoke deletes them in key order
/// as etcd does).
#[derive(Debug, Default)]
struct Lease {
    ttl: i64,
    keys: BTreeSet<Vec<u8>>,
}

/// Every lease not revoked.
#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: HashMap<LeaseId, Lease>,
}

impl LeaseTable {
    /// Rebuilds the table from the persisted leases and the live keys attached to them. A key naming
    /// a lease that does not exist cannot be produced by a revoke (which deletes the keys in the same
    /// revision); it is reported and left unattached. (The store gives ids as the log holds them.)
    pub fn load(leases: Vec<(i64, i64)>, leased_keys: Vec<(Vec<u8>, i64)>) -> LeaseTable {
        let mut table = LeaseTable::default();
        for (id, ttl) in leases {
            table.leases.insert(LeaseId(id), Lease { ttl, keys: BTreeSet::new() });
        }
        for (key, id) in leased_keys {
            match table.leases.get_mut(&LeaseId(id)) {
                Some(lease) => {
                    lease.keys.insert(key);
                }
                None => {
                    tracing::warn!(lease = id, key = ?String::from_utf8_lossy(&key), "key attached to an unknown lease")
                }
            }
        }
        table
    }

    /// How many leases exist.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether lease `id` exists.
    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// The keys attached to lease `id`, in key order, or `None` if it does not exist.
    pub fn keys(&self, id: LeaseId) -> Option<Vec<Vec<u8>>> {
        self.leases.get(&id).map(|lease| lease.keys.iter().cloned().collect())
    }

    /// Every lease as (id, granted TTL), in id order.
    pub fn all(&self) -> Vec<(LeaseId, i64)> {
        let mut all: Vec<(LeaseId, i64)> = self.leases.iter().map(|(id, lease)| (*id, lease.ttl)).collect();
        all.sort_unstable();
        all
    }

    /// A random positive id no lease has (etcd assigns positive ids when the client gives 0).
    pub fn unused_id(&self) -> Result<LeaseId> {
        loop {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(RuntimeError::Random)?;
            let id = LeaseId((u64::from_be_bytes(bytes) >> 1) as i64);
            if !id.is_none() && !self.contains(id) {
                return Ok(id);
            }
        }
    }

    /// Applies one record's events: grants and revokes, and the attachments its puts and deletes
    /// change. `prevs[i]` is the key's version before `events[i]`.
    pub fn apply(&mut self, events: &[LogEvent], prevs: &[Option<KeyValue>]) {
        debug_assert_eq!(events.len(), prevs.len(), "one previous version per event");
        for (event, prev) in events.iter().zip(prevs) {
            let previous_lease = LeaseId(prev.as_ref().map_or(0, |kv| kv.lease));
            match event {
                LogEvent::Put { key, lease, .. } => {
                    let lease = LeaseId(*lease);
                    if !previous_lease.is_none() && previous_lease != lease {
                        self.detach(previous_lease, key);
                    }
                    if !lease.is_none()
                        && let Some(attached) = self.leases.get_mut(&lease)
                    {
                        attached.keys.insert(key.clone());
                    }
                }
                LogEvent::Delete { key } => {
                    if !previous_lease.is_none() {
                        self.detach(previous_lease, key);
                    }
                }
                LogEvent::LeaseGrant { id, ttl } => {
                    self.leases.insert(LeaseId(*id), Lease { ttl: *ttl, keys: BTreeSet::new() });
                }
                LogEvent::LeaseRevoke { id } => {
                    self.leases.remove(&LeaseId(*id));
                }
                LogEvent::Compact { .. } => {}
            }
        }
    }

    fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Revision;

    fn put(key: &str, lease: i64) -> LogEvent {
        LogEvent::Put { key: key.into(), value: vec![], create_revision: Revision(2), version: 1, lease }
    }

    fn prev(key: &str, lease: i64) -> Option<KeyValue> {
        Some(KeyValue { key: key.into(), lease, ..Default::default() })
    }

    #[test]
    fn puts_attach_and_detach_and_deletes_detach() {
        let mut table = LeaseTable::default();
        table.apply(&[LogEvent::LeaseGrant { id: 7, ttl: 10 }, LogEvent::LeaseGrant { id: 8, ttl: 10 }], &[None, None]);
        table.apply(&[put("a", 7), put("b", 7), put("c", 8)], &[None, None, None]);
        assert_eq!(table.keys(LeaseId(7)).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        // a put without a lease detaches; a put with another lease moves the key
        table.apply(&[put("a", 0), put("b", 8)], &[prev("a", 7), prev("b", 7)]);
        assert_eq!(table.keys(LeaseId(7)).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(table.keys(LeaseId(8)).unwrap(), vec![b"b".to_vec(), b"c".to_vec()]);
        table.apply(&[LogEvent::Delete { key: b"c".to_vec() }], &[prev("c", 8)]);
        assert_eq!(table.keys(LeaseId(8)).unwrap(), vec![b"b".to_vec()]);
        table.apply(&[LogEvent::Delete { key: b"b".to_vec() }, LogEvent::LeaseRevoke { id: 8 }], &[prev("b", 8), None]);
        assert!(!table.contains(LeaseId(8)));
        assert_eq!(table.all(), vec![(LeaseId(7), 10)]);
    }

    #[test]
    fn loading_attaches_keys_to_their_leases() {
        let table = LeaseTable::load(vec![(5, 60)], vec![(b"x".to_vec(), 5), (b"orphan".to_vec(), 6)]);
        assert_eq!(table.keys(LeaseId(5)).unwrap(), vec![b"x".to_vec()]);
        assert!(table.keys(LeaseId(6)).is_none());
        let id = table.unused_id().unwrap();
        assert!(id.get() > 0 && id != LeaseId(5));
    }
}
