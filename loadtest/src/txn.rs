//! The txn workload: shared counters incremented by compare-and-swap, as an etcd client would.
//!
//! One op is one successful increment: `Txn(if mod_revision(key) == seen then put(key, n + 1)
//! else get(key))`, retried with the answer of the else branch until the compare holds. A client
//! remembers what it last saw of each counter, so an uncontended increment is one request; its
//! first increment of a counter reads it first. Failed compares are conflicts, expected and
//! counted apart from errors. Afterwards the counters must add up to the successful increments:
//! a lost or doubled increment is a failed run.

use std::collections::HashMap;

use etcd_client::{Client, Compare, CompareOp, KeyValue, Txn, TxnOp, TxnOpResponse};

use crate::driver::{OpDone, OpFailure, OpResult};
use crate::workload::Plan;

/// What every counter holds before the first increment.
pub(crate) const COUNTER_START: &[u8] = b"0";

/// Compare-and-swap attempts one increment may take before it is an error. The run's cap bounds
/// it in time; this bounds it in requests, far above what fair contention needs.
const ATTEMPTS_MAX: u64 = 100_000;

/// What a client last saw of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CounterView {
    mod_revision: i64,
    value: u64,
}

/// A client's views, by counter number.
pub(crate) type CounterViews = HashMap<u64, CounterView>;

/// Increments counter `counter` once; returns the conflicts it went through.
pub(crate) async fn increment(client: &mut Client, plan: &Plan, counter: u64, views: &mut CounterViews) -> OpResult {
    let key = plan.key(counter);
    let mut view = match views.get(&counter) {
        Some(view) => *view,
        None => {
            let response = client.get(key.as_bytes(), None).await.map_err(|e| OpFailure::new(e.to_string()))?;
            counter_view(&key, response.kvs().first()).map_err(OpFailure::new)?
        }
    };
    for conflicts in 0..ATTEMPTS_MAX {
        let next = view.value + 1;
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_bytes(), CompareOp::Equal, view.mod_revision)])
            .and_then([TxnOp::put(key.as_bytes(), next.to_string(), None)])
            .or_else([TxnOp::get(key.as_bytes(), None)]);
        let response = match client.txn(txn).await {
            Ok(response) => response,
            Err(e) => {
                // The answer is lost, not the request: it may have been applied.
                views.remove(&counter);
                return Err(OpFailure { message: format!("txn on {key}: {e}"), maybe_applied: true });
            }
        };
        if response.succeeded() {
            let revision = response.header().map_or(0, |h| h.revision());
            views.insert(counter, CounterView { mod_revision: revision, value: next });
            return Ok(OpDone { conflicts, ..OpDone::default() });
        }
        let current = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(get)) => counter_view(&key, get.kvs().first()),
            _ => Err(format!("txn on {key}: the else branch did not answer with a get")),
        };
        view = match current {
            Ok(current) => current,
            Err(e) => {
                views.remove(&counter);
                return Err(OpFailure::new(e));
            }
        };
    }
    Err(OpFailure::new(format!("increment of {key} gave up after {ATTEMPTS_MAX} conflicts")))
}

/// A counter as stored: a missing key counts as 0 at revision 0 (what a compare sees).
fn counter_view(key: &str, kv: Option<&KeyValue>) -> Result<CounterView, String> {
    let Some(kv) = kv else {
        return Ok(CounterView { mod_revision: 0, value: 0 });
    };
    Ok(CounterView { mod_revision: kv.mod_revision(), value: counter_value(key, kv.value())? })
}

fn counter_value(key: &str, value: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("counter {key} holds {:?}, not a number", String::from_utf8_lossy(value)))
}

/// Reads every counter back and adds them up.
pub(crate) async fn read_sum(plan: &Plan, client: &mut Client) -> Result<u64, String> {
    let mut sum = 0u64;
    for counter in 0..plan.key_space {
        let key = plan.key(counter);
        let response = client.get(key.as_bytes(), None).await.map_err(|e| format!("read back {key}: {e}"))?;
        let value = match response.kvs().first() {
            Some(kv) => counter_value(&key, kv.value())?,
            None => return Err(format!("read back {key}: the counter is gone")),
        };
        sum = sum.checked_add(value).ok_or("the counters' sum overflows")?;
    }
    Ok(sum)
}

/// The counters must add up to the successful increments, plus any of the `maybe_applied`
/// transactions whose answer was lost.
pub(crate) fn check_sum(counter_sum: u64, increments: u64, maybe_applied: u64) -> Result<(), String> {
    if (increments..=increments.saturating_add(maybe_applied)).contains(&counter_sum) {
        return Ok(());
    }
    let want = if maybe_applied == 0 {
        format!("{increments}")
    } else {
        format!("{increments} to {}", increments.saturating_add(maybe_applied))
    };
    Err(format!("the counters add up to {counter_sum}, want {want} (the successful increments)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_adding_up_to_the_increments_pass() {
        assert_eq!(check_sum(0, 0, 0), Ok(()));
        assert_eq!(check_sum(10_100, 10_100, 0), Ok(()));
    }

    #[test]
    fn a_lost_increment_fails() {
        let e = check_sum(9_999, 10_000, 0).unwrap_err();
        assert!(e.contains("add up to 9999, want 10000"), "{e}");
    }

    #[test]
    fn a_doubled_increment_fails() {
        assert!(check_sum(10_001, 10_000, 0).is_err());
    }

    #[test]
    fn unanswered_transactions_may_or_may_not_count() {
        assert_eq!(check_sum(10, 10, 2), Ok(()));
        assert_eq!(check_sum(12, 10, 2), Ok(()));
        let e = check_sum(13, 10, 2).unwrap_err();
        assert!(e.contains("want 10 to 12"), "{e}");
        assert!(check_sum(9, 10, 2).is_err());
    }

    #[test]
    fn counter_values_are_decimal() {
        assert_eq!(counter_value("/c", b"0"), Ok(0));
        assert_eq!(counter_value("/c", b"12345"), Ok(12345));
        assert!(counter_value("/c", b"").unwrap_err().contains("not a number"));
        assert!(counter_value("/c", b"-1").is_err());
        assert!(counter_value("/c", b"\xff").is_err());
    }

    #[test]
    fn a_missing_counter_is_zero_at_revision_zero() {
        assert_eq!(counter_view("/c", None), Ok(CounterView { mod_revision: 0, value: 0 }));
    }
}
