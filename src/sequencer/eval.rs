//! Transaction evaluation: the sequencer's decisions as a plain state machine (state and a proposal
//! in; a response, a log record and new state out), following etcd 3.4's applier step by step:
//! compares against the state before the txn, `ignore_*`/lease/revision checks on the chosen path,
//! then ops in order, each seeing the txn's earlier writes, all at one revision.

use super::leases::LeaseTable;
use super::{Outcome, Proposal};
use crate::config::{LEASE_TTL_MAX_SECONDS, LEASE_TTL_MIN_SECONDS};
use crate::error::{Error, Result};
use crate::ids::{LeaseId, Revision};
use crate::kv::{
    Compare, CompareResult, CompareTarget, DeleteRange, DeleteResult, GrantedLease, LeaseGrant, Put, PutResult, Txn,
    TxnOp, TxnOpResult, TxnResult,
};
use crate::log::{LogEvent, LogRecord};
use crate::mvcc::range::{self, collect, key_value};
use crate::mvcc::{KeySpan, Layer, Layered, Version, VersionReader};
use crate::proto::mvccpb::KeyValue;

/// What evaluating one proposal decided.
#[derive(Debug)]
pub struct Evaluation {
    /// The reply (the API layer makes the response and its header).
    pub outcome: Outcome,
    /// The record of the proposal's changes, if it changed anything.
    pub record: Option<LogRecord>,
    /// For each event of `record`, the key's version before it (for watchers' `prev_kv`).
    pub prevs: Vec<Option<KeyValue>>,
    /// A compaction to persist, and whether the caller waits for the physical removal.
    pub compaction: Option<(Revision, bool)>,
}

/// The sequencer's view of the store: everything assigned so far, committed or not.
#[derive(Debug)]
pub struct SequencerState {
    /// The last revision assigned.
    pub current: Revision,
    /// The last compaction accepted.
    pub compact: Revision,
    /// Versions of groups handed to the committer and not yet visible in the store.
    pub in_flight: Layer,
    /// Sub-index of the last record at `current` (lease-only records follow a revision without
    /// opening a new one).
    pub sub: u32,
    /// Every lease and its attached keys, as of `current`.
    pub leases: LeaseTable,
}

impl SequencerState {
    /// Evaluates `proposal` against `committed` (the store) plus the in-flight layer, and on success
    /// advances the state by its effects. Takes the proposal by value: its keys and values move into
    /// the record.
    pub fn evaluate(&mut self, committed: &dyn VersionReader, proposal: Proposal) -> Result<Evaluation> {
        let view = Layered { lower: committed, layer: &self.in_flight, current: self.current, compact: self.compact };
        let leases = &self.leases;
        let lease_exists = |id: LeaseId| leases.contains(id);
        let mut txn = TxnWriter::new(&view, &lease_exists);
        let mut outcome = match proposal {
            Proposal::Compact(c) => {
                if c.revision <= self.compact {
                    return Err(Error::Compacted);
                }
                if c.revision > self.current {
                    return Err(Error::FutureRevision);
                }
                self.compact = c.revision;
                // Like a lease grant, a compaction consumes no revision: it follows the current one.
                self.sub += 1;
                let record = LogRecord {
                    revision: self.current,
                    sub: self.sub,
                    events: vec![LogEvent::Compact { revision: c.revision }],
                };
                let outcome = Outcome::Compact(self.current);
                let compaction = Some((c.revision, c.physical));
                return Ok(Evaluation { outcome, record: Some(record), prevs: vec![None], compaction });
            }
            Proposal::Put(p) => {
                if !p.lease.is_none() && !self.leases.contains(p.lease) {
                    return Err(Error::LeaseNotFound);
                }
                Outcome::Put(txn.put(p)?)
            }
            Proposal::DeleteRange(d) => Outcome::DeleteRange(txn.delete_range(d)?),
            Proposal::Txn(t) => Outcome::Txn(txn.txn(t)?),
            Proposal::LeaseGrant(g) => Outcome::LeaseGrant(self.grant(g, &mut txn)?),
            Proposal::LeaseRevoke(id) => {
                let keys = self.leases.keys(id).ok_or(Error::LeaseNotFound)?;
                for key in keys {
                    txn.delete_range(DeleteRange { key, ..Default::default() })?;
                }
                txn.events.push(LogEvent::LeaseRevoke { id: id.get() });
                txn.prevs.push(None);
                // The revision after the revoke, known below.
                Outcome::LeaseRevoke(Revision(0))
            }
        };
        let TxnWriter { changes, events, prevs, .. } = txn;
        if events.is_empty() {
            return Ok(Evaluation { outcome, record: None, prevs, compaction: None });
        }
        // Only changes to keys open a revision; lease grants and revokes alone follow the current one.
        if events.iter().any(|e| e.key().is_some()) {
            self.current = self.current.next();
            self.sub = 0;
            self.in_flight.absorb(changes);
        } else {
            self.sub += 1;
        }
        if let Outcome::LeaseRevoke(revision) = &mut outcome {
            *revision = self.current;
        }
        self.leases.apply(&events, &prevs);
        let record = LogRecord { revision: self.current, sub: self.sub, events };
        Ok(Evaluation { outcome, record: Some(record), prevs, compaction: None })
    }

    /// etcd's lessor `Grant`: a given id must be free; TTLs above the maximum are refused and those
    /// below the minimum raised to it.
    fn grant(&self, g: LeaseGrant, txn: &mut TxnWriter) -> Result<GrantedLease> {
        let id = if g.id.is_none() { self.leases.unused_id()? } else { g.id };
        if g.ttl > LEASE_TTL_MAX_SECONDS {
            return Err(Error::LeaseTtlTooLarge);
        }
        if self.leases.contains(id) {
            return Err(Error::LeaseExists);
        }
        let ttl = g.ttl.max(LEASE_TTL_MIN_SECONDS);
        txn.events.push(LogEvent::LeaseGrant { id: id.get(), ttl });
        txn.prevs.push(None);
        Ok(GrantedLease { id, ttl, revision: self.current })
    }
}

/// Answers a transaction that writes nothing (no Put or DeleteRange in any branch) from a committed
/// snapshot, without the sequencer: it sees every acknowledged write, like a Range does.
pub fn read_only_txn(committed: &dyn VersionReader, t: Txn) -> Result<TxnResult> {
    assert!(t.is_read_only(), "only read-only txns may bypass the sequencer");
    let mut txn = TxnWriter::new(committed, &|_| false);
    let resp = txn.txn(t)?;
    debug_assert!(txn.events.is_empty(), "a read-only txn wrote");
    Ok(resp)
}

/// One write transaction in progress: its own changes layered over the state before it.
struct TxnWriter<'a> {
    before: &'a dyn VersionReader,
    /// Whether a lease exists (puts may only attach existing leases).
    lease_exists: &'a dyn Fn(LeaseId) -> bool,
    /// The revision before this txn; its writes land at `begin + 1`.
    begin: Revision,
    changes: Layer,
    events: Vec<LogEvent>,
    /// The version each event's key had before this txn.
    prevs: Vec<Option<KeyValue>>,
}

impl<'a> TxnWriter<'a> {
    fn new(before: &'a dyn VersionReader, lease_exists: &'a dyn Fn(LeaseId) -> bool) -> TxnWriter<'a> {
        TxnWriter {
            before,
            lease_exists,
            begin: before.current_revision(),
            changes: Layer::default(),
            events: Vec::new(),
            prevs: Vec::new(),
        }
    }

    /// The revision reads inside the txn see: one past `begin` once the txn has written.
    fn now(&self) -> Revision {
        if self.events.is_empty() { self.begin } else { self.begin.next() }
    }

    fn with_view<T>(&self, f: impl FnOnce(&dyn VersionReader) -> T) -> T {
        let view = Layered {
            lower: self.before,
            layer: &self.changes,
            current: self.now(),
            compact: self.before.compact_revision(),
        };
        f(&view)
    }

    fn put(&mut self, p: Put) -> Result<PutResult> {
        let prev = self.with_view(|v| v.get(&p.key))?;
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(Error::KeyNotFound);
        }
        let rev = self.begin.next();
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone().unwrap_or_default(),
            _ => p.value,
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease.get(),
        };
        let (create_revision, version) = match &prev {
            Some(prev) => (prev.create_revision, prev.version + 1),
            None => (rev, 1),
        };
        let new = Version { create_revision, mod_revision: rev, version, lease, value: Some(value.clone()) };
        self.changes.push(&p.key, new);
        let prev = prev.map(|v| key_value(&p.key, v));
        self.events.push(LogEvent::Put { key: p.key, value, create_revision, version, lease });
        self.prevs.push(prev.clone());
        let prev_kv = prev.filter(|_| p.prev_kv);
        Ok(PutResult { prev_kv, revision: rev })
    }

    fn delete_range(&mut self, d: DeleteRange) -> Result<DeleteResult> {
        let span = KeySpan::from_etcd(&d.key, &d.range_end);
        let (doomed, _) = self.with_view(|v| collect(v, &span, v.current_revision(), 0))?;
        let rev = self.begin.next();
        for kv in &doomed {
            self.changes.push(&kv.key, Version::tombstone(rev));
            self.events.push(LogEvent::Delete { key: kv.key.clone() });
            self.prevs.push(Some(kv.clone()));
        }
        let deleted = doomed.len() as i64;
        let prev_kvs = if d.prev_kv { doomed } else { Vec::new() };
        Ok(DeleteResult { deleted, prev_kvs, revision: self.now() })
    }

    fn txn(&mut self, t: Txn) -> Result<TxnResult> {
        let mut path = Vec::new();
        compare_to_path(self.before, &t, &mut path)?;
        if !t.is_read_only() {
            check_path(&t, &path, &mut 0, &mut |op| self.check_put(op))?;
        }
        let before = self.before;
        check_path(&t, &path, &mut 0, &mut |op| check_range_revision(before, op))?;
        let mut result = self.apply(t, &path, &mut 0)?;
        result.revision = self.now();
        Ok(result)
    }

    /// etcd's `checkPut`, against the state before the txn.
    fn check_put(&self, op: &TxnOp) -> Result<()> {
        let TxnOp::Put(p) = op else { return Ok(()) };
        if (p.ignore_value || p.ignore_lease) && self.before.get(&p.key)?.is_none() {
            return Err(Error::KeyNotFound);
        }
        if !p.lease.is_none() && !(self.lease_exists)(p.lease) {
            return Err(Error::LeaseNotFound);
        }
        Ok(())
    }

    /// Runs the ops of the branches `path` chose; a nested txn's result has revision 0 (its response
    /// an empty header, as etcd answers).
    fn apply(&mut self, t: Txn, path: &[bool], pos: &mut usize) -> Result<TxnResult> {
        let succeeded = path[*pos];
        *pos += 1;
        let ops = if succeeded { t.success } else { t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                TxnOp::Range(r) => TxnOpResult::Range(self.with_view(|v| range::execute(v, &r))?),
                TxnOp::Put(p) => TxnOpResult::Put(self.put(p)?),
                TxnOp::DeleteRange(d) => TxnOpResult::DeleteRange(self.delete_range(d)?),
                TxnOp::Txn(nested) => TxnOpResult::Txn(self.apply(nested, path, pos)?),
            };
            responses.push(response);
        }
        Ok(TxnResult { succeeded, responses, revision: Revision(0) })
    }
}

/// The branch each (nested) txn on the chosen path takes, in pre-order; all compares see the state
/// before the txn.
fn compare_to_path(view: &dyn VersionReader, t: &Txn, path: &mut Vec<bool>) -> Result<()> {
    let mut succeeded = true;
    for c in &t.compare {
        if !apply_compare(view, c)? {
            succeeded = false;
            break;
        }
    }
    path.push(succeeded);
    for op in if succeeded { &t.success } else { &t.failure } {
        if let TxnOp::Txn(nested) = op {
            compare_to_path(view, nested, path)?;
        }
    }
    Ok(())
}

/// Runs `check` on every non-txn op along the chosen path.
fn check_path(t: &Txn, path: &[bool], pos: &mut usize, check: &mut dyn FnMut(&TxnOp) -> Result<()>) -> Result<()> {
    let succeeded = path[*pos];
    *pos += 1;
    for op in if succeeded { &t.success } else { &t.failure } {
        match op {
            TxnOp::Txn(nested) => check_path(nested, path, pos, check)?,
            _ => check(op)?,
        }
    }
    Ok(())
}

/// etcd's `checkRange`: a Range op's revision must be inside the window before the txn. It is taken
/// literally, not resolved first as a plain Range's is, so a negative revision below the compact
/// revision (-1 before any compaction) is compacted.
fn check_range_revision(view: &dyn VersionReader, op: &TxnOp) -> Result<()> {
    let TxnOp::Range(r) = op else { return Ok(()) };
    if r.revision.get() == 0 {
        return Ok(());
    }
    if r.revision > view.current_revision() {
        return Err(Error::FutureRevision);
    }
    if r.revision < view.compact_revision() {
        return Err(Error::Compacted);
    }
    Ok(())
}

/// etcd's `applyCompare`: every key in the compare's span must satisfy it; a span with no keys
/// compares a zero key-value, except that a VALUE compare on missing keys always fails.
fn apply_compare(view: &dyn VersionReader, c: &Compare) -> Result<bool> {
    let span = KeySpan::from_etcd(&c.key, &c.range_end);
    let (kvs, _) = collect(view, &span, view.current_revision(), 0)?;
    if kvs.is_empty() {
        if matches!(c.target, CompareTarget::Value(_)) {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &c.target {
        CompareTarget::Value(want) => kv.value.as_slice().cmp(want.as_slice()),
        CompareTarget::Create(n) => kv.create_revision.cmp(n),
        CompareTarget::Mod(n) => kv.mod_revision.cmp(n),
        CompareTarget::Version(n) => kv.version.cmp(n),
        CompareTarget::Lease(n) => kv.lease.cmp(n),
        CompareTarget::Unknown => std::cmp::Ordering::Equal,
    };
    match c.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
        CompareResult::Unknown => true,
    }
}
