//! Loud failures of the durability tasks. A node whose uploads, checkpoints or GC keep failing goes on
//! serving, so the failure must be seen where operators look: an error log at most once per
//! [`FAILURE_LOG_INTERVAL`] (a task retrying every second must not flood the log, nor go quiet after
//! its first line), and a standing error in the node's [`Alarms`] (`Status.errors`, which
//! `etcdctl endpoint status` shows) from when the failure stands until the task succeeds again.
//!
//! A failure stands once it has lasted its source's grace (a store that answers the next retry is not
//! worth an operator's attention), or at once when retrying the same thing cannot cure it (a WAL
//! object name another writer holds).

use std::time::{Duration, Instant};

use crate::alarms::Alarms;
use crate::config::FAILURE_LOG_INTERVAL;

/// The standing error of WAL uploads (both modes).
pub const WAL_UPLOADS: &str = "object storage";
/// The standing error of records that can no longer reach object storage as WAL objects.
pub const WAL_GAP: &str = "object storage WAL";
/// The standing error of checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// The standing error of object-storage GC.
pub const GC: &str = "object storage GC";

/// What a failure calls for, decided by [`FailureState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureReport {
    /// Log it, mentioning this many failures left unlogged since the last line; `None`: stay quiet.
    pub log: Option<u64>,
    /// The failure stands: it goes (or stays) in `Status.errors`.
    pub standing: bool,
}

/// The decisions of a [`Health`], apart from the log and the alarms, so tests drive them with their
/// own clock.
#[derive(Debug, Default, Clone)]
pub struct FailureState {
    /// When the current run of failures began; `None` while the task succeeds.
    failing_since: Option<Instant>,
    /// When a failure of this run was last logged.
    logged_at: Option<Instant>,
    /// Failures of this run not logged since `logged_at`.
    unlogged: u64,
    /// Whether the run stands (its standing error is set).
    standing: bool,
}

impl FailureState {
    /// A failure at `now`: it stands once the run has lasted `grace`, or at once if `incurable`.
    pub fn failed(&mut self, now: Instant, grace: Duration, incurable: bool) -> FailureReport {
        let since = *self.failing_since.get_or_insert(now);
        let newly_standing = !self.standing && (incurable || now.saturating_duration_since(since) >= grace);
        self.standing |= newly_standing;
        let quiet = self.logged_at.is_some_and(|at| now.saturating_duration_since(at) < FAILURE_LOG_INTERVAL);
        if quiet && !newly_standing {
            self.unlogged += 1;
            return FailureReport { log: None, standing: self.standing };
        }
        self.logged_at = Some(now);
        FailureReport { log: Some(std::mem::take(&mut self.unlogged)), standing: self.standing }
    }

    /// A success at `now`: ends the run; returns how long it lasted if it stood.
    pub fn succeeded(&mut self, now: Instant) -> Option<Duration> {
        let since = self.failing_since.take();
        let stood = std::mem::take(&mut self.standing);
        self.logged_at = None;
        self.unlogged = 0;
        since.filter(|_| stood).map(|since| now.saturating_duration_since(since))
    }

    /// Whether the current run of failures stands.
    pub fn standing(&self) -> bool {
        self.standing
    }
}

/// The health of one durability task, reported to the log and the node's alarms under `source`.
#[derive(Debug, Clone)]
pub struct Health {
    sink: HealthSink,
    /// How long failures may last before they stand.
    grace: Duration,
    state: FailureState,
}

impl Health {
    pub fn new(alarms: Alarms, source: &'static str, grace: Duration) -> Health {
        Health { sink: HealthSink::new(alarms, source), grace, state: FailureState::default() }
    }

    /// A failure that retrying may cure (the store is unreachable, a request failed).
    pub fn failed(&mut self, error: &str) {
        let report = self.state.failed(Instant::now(), self.grace, false);
        self.sink.failed(report, error);
    }

    /// A failure that retrying the same thing cannot cure: it stands at once.
    pub fn failed_for_good(&mut self, error: &str) {
        let report = self.state.failed(Instant::now(), self.grace, true);
        self.sink.failed(report, error);
    }

    /// The task did what it failed to do before: clears the standing error.
    pub fn succeeded(&mut self) {
        if let Some(stood) = self.state.succeeded(Instant::now()) {
            self.sink.recovered(stood);
        }
    }
}

/// Where the failures of one durability task go once judged (by a [`Health`], or by a task's own
/// state machine that keeps its [`FailureState`] on its own clock): the log, and the standing error
/// under `source`.
#[derive(Debug, Clone)]
pub struct HealthSink {
    alarms: Alarms,
    source: &'static str,
}

impl HealthSink {
    pub fn new(alarms: Alarms, source: &'static str) -> HealthSink {
        HealthSink { alarms, source }
    }

    /// Reports a failure as `report` says.
    pub fn failed(&self, report: FailureReport, error: &str) {
        if report.standing {
            // The newest error, so `Status.errors` says what is failing now.
            self.alarms.set_error(self.source, Some(error.to_string()));
        }
        match (report.log, report.standing) {
            (Some(unlogged), true) => tracing::error!(source = self.source, unlogged, "{error}"),
            (Some(unlogged), false) => tracing::warn!(source = self.source, unlogged, "{error}; retrying"),
            (None, _) => {}
        }
    }

    /// A failure that stood for `stood` is over: clears the standing error.
    pub fn recovered(&self, stood: Duration) {
        self.alarms.set_error(self.source, None);
        tracing::info!(source = self.source, failing_ms = stood.as_millis() as u64, "recovered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn failures_are_logged_once_per_interval_and_stand_after_the_grace() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut state = FailureState::default();
        assert_eq!(state.failed(at(0), GRACE, false), FailureReport { log: Some(0), standing: false });
        assert_eq!(state.failed(at(1), GRACE, false), FailureReport { log: None, standing: false });
        assert_eq!(state.failed(at(2), GRACE, false), FailureReport { log: None, standing: false });
        // Standing is news: logged at once, with the count of quiet failures before it.
        assert_eq!(state.failed(at(10), GRACE, false), FailureReport { log: Some(2), standing: true });
        assert_eq!(state.failed(at(11), GRACE, false), FailureReport { log: None, standing: true });
        let next_line = at(10) + FAILURE_LOG_INTERVAL;
        assert_eq!(state.failed(next_line, GRACE, false), FailureReport { log: Some(1), standing: true });
        assert_eq!(state.succeeded(next_line), Some(FAILURE_LOG_INTERVAL + Duration::from_secs(10)));
        // A new run starts afresh: logged, not standing.
        assert_eq!(state.failed(next_line, GRACE, false), FailureReport { log: Some(0), standing: false });
        assert_eq!(state.succeeded(next_line), None, "it never stood");
    }

    #[test]
    fn an_incurable_failure_stands_at_once() {
        let now = Instant::now();
        let mut state = FailureState::default();
        assert_eq!(state.failed(now, GRACE, false), FailureReport { log: Some(0), standing: false });
        assert_eq!(state.failed(now, GRACE, true), FailureReport { log: Some(0), standing: true });
        assert!(state.standing());
    }

    #[test]
    fn a_standing_failure_is_in_status_errors_until_a_success() {
        let alarms = Alarms::default();
        let mut health = Health::new(alarms.clone(), WAL_UPLOADS, GRACE);
        health.failed("unreachable");
        assert!(alarms.status_errors(1).is_empty(), "within the grace");
        health.failed_for_good("wal/x holds different records");
        assert_eq!(alarms.status_errors(1), ["object storage: wal/x holds different records"]);
        health.succeeded();
        assert!(alarms.status_errors(1).is_empty());
    }
}
