//! The node's alarms and standing errors: what `etcdctl alarm list` and `endpoint status` report.
//!
//! Alarms are etcd's (`NOSPACE`, `CORRUPT`): raised by the component that found the condition,
//! disarmed by an operator (`etcdctl alarm disarm`) or by the component once the condition is gone.
//! Standing errors are conditions with no etcd alarm type (object-storage uploads stopped, say):
//! each has a source that sets and clears it, and `Status.errors` lists them beside the alarms, as
//! etcd lists its alarms there. Shared by handle: a raise is visible to the next request on any core.
//! Alarms survive a restart, as etcd's do: every change is handed to the persister the node sets
//! (the store's `meta`), and the node raises what it finds there when it starts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// etcd's alarm types (`etcdserverpb.AlarmType`), without `NONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alarm {
    /// The store cannot grow: the disk is full (or, later, the space quota is exceeded).
    NoSpace,
    /// Data corruption was detected.
    Corrupt,
}

impl Alarm {
    /// The wire value (`etcdserverpb.AlarmType`).
    pub fn wire(self) -> i32 {
        match self {
            Alarm::NoSpace => 1,
            Alarm::Corrupt => 2,
        }
    }

    /// The alarm of a wire value; `None` for `NONE` (0) and unknown values.
    pub fn from_wire(value: i32) -> Option<Alarm> {
        match value {
            1 => Some(Alarm::NoSpace),
            2 => Some(Alarm::Corrupt),
            _ => None,
        }
    }

    /// etcd's name of the alarm, as `Status.errors` and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Alarm::NoSpace => "NOSPACE",
            Alarm::Corrupt => "CORRUPT",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Raised alarms (one node: every alarm is this member's).
    alarms: Vec<Alarm>,
    /// Standing errors by source.
    errors: BTreeMap<&'static str, String>,
}

/// The node's alarms and standing errors. Cheap to clone.
#[derive(Clone)]
pub struct Alarms {
    // A lock held for a few instructions, never across an await or I/O: simpler than an actor for a
    // set that changes a few times in a node's life and is read per Status call and per write.
    state: Arc<Mutex<State>>,
    /// Counts raises and disarms, so a health watch learns of a change without polling.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Where each change of the raised alarms is kept, once the store is open.
    persister: Arc<std::sync::OnceLock<Persister>>,
}

/// Keeps the raised alarms (all of them, after each change).
type Persister = Box<dyn Fn(&[Alarm]) + Send + Sync>;

impl std::fmt::Debug for Alarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarms").field("raised", &self.raised()).finish_non_exhaustive()
    }
}

impl Default for Alarms {
    fn default() -> Alarms {
        Alarms { state: Arc::default(), changes: Arc::new(tokio::sync::watch::channel(0).0), persister: Arc::default() }
    }
}

impl Alarms {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A receiver that sees a new value after each alarm raised or disarmed.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// From now on, hands the raised alarms to `persist` after every change (once per node).
    pub fn persist_with(&self, persist: impl Fn(&[Alarm]) + Send + Sync + 'static) {
        let _ = self.persister.set(Box::new(persist));
    }

    fn changed(&self) {
        if let Some(persist) = self.persister.get() {
            persist(&self.raised());
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Raises `alarm`; returns whether it was newly raised.
    pub fn raise(&self, alarm: Alarm) -> bool {
        let raised = self.with(|s| {
            if s.alarms.contains(&alarm) {
                return false;
            }
            s.alarms.push(alarm);
            s.alarms.sort_unstable();
            true
        });
        if raised {
            self.changed();
        }
        raised
    }

    /// Disarms `alarm`; returns whether it was raised.
    pub fn disarm(&self, alarm: Alarm) -> bool {
        let disarmed = self.with(|s| {
            let before = s.alarms.len();
            s.alarms.retain(|a| *a != alarm);
            s.alarms.len() != before
        });
        if disarmed {
            self.changed();
        }
        disarmed
    }

    /// Whether `alarm` is raised.
    pub fn is_raised(&self, alarm: Alarm) -> bool {
        self.with(|s| s.alarms.contains(&alarm))
    }

    /// The raised alarms, in wire order.
    pub fn raised(&self) -> Vec<Alarm> {
        self.with(|s| s.alarms.clone())
    }

    /// Sets (`Some`) or clears (`None`) the standing error of `source`.
    pub fn set_error(&self, source: &'static str, error: Option<String>) {
        self.with(|s| match error {
            Some(e) => {
                s.errors.insert(source, e);
            }
            None => {
                s.errors.remove(source);
            }
        });
    }

    /// What `Status.errors` lists: each raised alarm as etcd words it, then each standing error.
    pub fn status_errors(&self, member_id: u64) -> Vec<String> {
        self.with(|s| {
            let alarms = s.alarms.iter().map(|a| format!("memberID:{member_id} alarm:{}", a.name()));
            alarms.chain(s.errors.iter().map(|(source, e)| format!("{source}: {e}"))).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_are_raised_once_and_disarmed() {
        let alarms = Alarms::default();
        assert!(alarms.raise(Alarm::NoSpace));
        assert!(!alarms.raise(Alarm::NoSpace), "already raised");
        assert!(alarms.is_raised(Alarm::NoSpace));
        assert_eq!(alarms.status_errors(7), ["memberID:7 alarm:NOSPACE"]);
        assert!(alarms.disarm(Alarm::NoSpace));
        assert!(!alarms.disarm(Alarm::NoSpace));
        assert!(alarms.raised().is_empty());
    }

    #[test]
    fn standing_errors_follow_alarms_in_status() {
        let alarms = Alarms::default();
        alarms.set_error("object storage", Some("uploads stopped".into()));
        alarms.raise(Alarm::Corrupt);
        assert_eq!(alarms.status_errors(1), ["memberID:1 alarm:CORRUPT", "object storage: uploads stopped"]);
        alarms.set_error("object storage", None);
        assert_eq!(alarms.status_errors(1), ["memberID:1 alarm:CORRUPT"]);
        assert_eq!(Alarm::from_wire(Alarm::NoSpace.wire()), Some(Alarm::NoSpace));
        assert_eq!(Alarm::from_wire(0), None);
    }
}
