//! Auto-compaction as etcd 3.4 runs it (`--auto-compaction-mode`, `--auto-compaction-retention`).
//! `periodic`: the revision is sampled every tenth of the retention (at most every 6 minutes); once
//! a whole retention has passed since the node started, and then every retention (at most every
//! hour), history is compacted to the revision sampled a retention ago. `revision`: every 5 minutes,
//! history is compacted to the current revision minus the retention, if that moved. Compactions go
//! through the sequencer as a client's would. The decisions are [`Planner`]'s (pure, tested with a
//! made-up clock); a thread of its own drives it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, RuntimeError};
use crate::ids::Revision;
use crate::kv::Compaction;
use crate::mvcc::Store;
use crate::sequencer::SequencerHandle;

/// The longest gap between compactions in periodic mode (etcd's).
const PERIODIC_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// Samples of the revision per retention in periodic mode (etcd's `retryDivisor`).
const SAMPLES_PER_PERIOD: u32 = 10;

/// What auto-compaction keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The history of this long (periodic mode).
    Period(Duration),
    /// This many revisions, looked at every `check` (revision mode).
    Revisions { keep: i64, check: Duration },
}

/// Why an `--auto-compaction-retention` (with its mode) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// Revision mode with something other than a number.
    #[error("{0:?}: revision mode keeps a number of revisions (e.g. 1000)")]
    NotRevisions(String),
    /// Revision mode with a negative number.
    #[error("{0}: a number of revisions is not negative")]
    NegativeRevisions(i64),
    /// Periodic mode with something that is not a duration.
    #[error("{0:?}: expected a duration such as 1h, 30m, 90s or 1h30m (or a number of hours)")]
    NotDuration(String),
    /// A mode other than `periodic` and `revision`.
    #[error("{0:?}: the mode is periodic or revision")]
    UnknownMode(String),
}

impl Retention {
    /// Parses etcd's `--auto-compaction-retention` for `mode` (`periodic` or `revision`): `None`
    /// for 0 (off). Periodic takes a Go duration (`1h`, `30m`, `1h30m`, `1.5h`) or a bare number
    /// of hours; revision a number of revisions.
    pub fn parse(
        mode: &str,
        retention: &str,
        revision_check: Duration,
    ) -> std::result::Result<Option<Retention>, RetentionError> {
        let retention = retention.trim();
        match mode {
            "revision" => {
                let keep: i64 = retention.parse().map_err(|_| RetentionError::NotRevisions(retention.to_string()))?;
                match keep {
                    0 => Ok(None),
                    keep if keep < 0 => Err(RetentionError::NegativeRevisions(keep)),
                    keep => Ok(Some(Retention::Revisions { keep, check: revision_check })),
                }
            }
            "periodic" => {
                let period = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) => parse_go_duration(retention)?,
                };
                Ok((!period.is_zero()).then_some(Retention::Period(period)))
            }
            other => Err(RetentionError::UnknownMode(other.to_string())),
        }
    }

    /// How often the planner is asked.
    pub fn tick(&self) -> Duration {
        match self {
            Retention::Period(period) => {
                ((*period).min(PERIODIC_INTERVAL_MAX) / SAMPLES_PER_PERIOD).max(Duration::from_millis(1))
            }
            Retention::Revisions { check, .. } => *check,
        }
    }
}

/// Go's `time.ParseDuration` for non-negative durations: numbers (with an optional fraction) each
/// followed by a unit of ns, us (µs), ms, s, m, h.
fn parse_go_duration(text: &str) -> std::result::Result<Duration, RetentionError> {
    let bad = || RetentionError::NotDuration(text.to_string());
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// When to compact, and to which revision.
#[derive(Debug)]
pub struct Planner {
    retention: Retention,
    /// Periodic: revisions sampled, the oldest a retention ago (or the first since start).
    samples: VecDeque<Revision>,
    /// Periodic: the last compaction (the start, at first), and how long to wait after it.
    last_success: Instant,
    wait: Duration,
    /// Revision: the last revision compacted to.
    last_target: Revision,
}

impl Planner {
    pub fn new(retention: Retention, now: Instant) -> Planner {
        let wait = match retention {
            Retention::Period(period) => period,
            Retention::Revisions { .. } => Duration::ZERO,
        };
        Planner { retention, samples: VecDeque::new(), last_success: now, wait, last_target: Revision(0) }
    }

    /// Called every [`Retention::tick`] with the current revision: the revision to compact to now,
    /// if any.
    pub fn tick(&mut self, now: Instant, revision: Revision) -> Option<Revision> {
        match self.retention {
            Retention::Period(period) => {
                self.samples.push_back(revision);
                let kept = (period.as_nanos() / self.retention.tick().as_nanos().max(1)) as usize + 1;
                while self.samples.len() > kept {
                    self.samples.pop_front();
                }
                if now.saturating_duration_since(self.last_success) < self.wait {
                    return None;
                }
                self.wait = period.min(PERIODIC_INTERVAL_MAX);
                self.samples.front().copied().filter(|target| target.get() > 1)
            }
            Retention::Revisions { keep, .. } => {
                let target = Revision(revision.get() - keep);
                (target.get() > 0 && target != self.last_target).then_some(target)
            }
        }
    }

    /// Notes how compacting to `target` went: done (or compacted already, as etcd counts it), or
    /// failed (tried again at the next tick).
    pub fn compacted(&mut self, now: Instant, target: Revision, outcome: &Result<()>) {
        if matches!(outcome, Ok(()) | Err(Error::Compacted)) {
            self.last_success = now;
            self.last_target = target;
        }
    }
}

/// The auto-compaction thread; it stops when this is dropped.
pub struct AutoCompactor {
    stop: Option<flume::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AutoCompactor {
    /// Starts compacting `store`'s history through `sequencer` as `retention` says.
    pub fn start(
        retention: Retention,
        store: std::sync::Arc<Store>,
        sequencer: SequencerHandle,
    ) -> Result<AutoCompactor> {
        let (stop, stopped) = flume::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("t4-autocompact".into())
            .spawn(move || {
                let mut planner = Planner::new(retention, Instant::now());
                tracing::info!(?retention, "auto-compaction on");
                // Until the node stops (its sender dropped, or a stop sent).
                while let Err(flume::RecvTimeoutError::Timeout) = stopped.recv_timeout(retention.tick()) {
                    let revision = match store.current_revision() {
                        Ok(revision) => revision,
                        Err(e) => {
                            tracing::warn!(error = %e, "auto-compaction cannot read the revision");
                            continue;
                        }
                    };
                    let Some(target) = planner.tick(Instant::now(), revision) else { continue };
                    tracing::info!(revision = %target, "starting auto-compaction");
                    let compaction = Compaction { revision: target, physical: false };
                    let outcome = futures_lite::future::block_on(sequencer.compact(compaction)).map(|_| ());
                    match &outcome {
                        Ok(()) => tracing::info!(revision = %target, "finished auto-compaction"),
                        Err(Error::Compacted) => {}
                        Err(e) => {
                            tracing::warn!(revision = %target, error = %e, "auto-compaction failed; it is tried again")
                        }
                    }
                    planner.compacted(Instant::now(), target, &outcome);
                }
            })
            .map_err(RuntimeError::start("the auto-compaction thread"))?;
        Ok(AutoCompactor { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for AutoCompactor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: Duration = Duration::from_millis(crate::config::DEFAULT_AUTO_COMPACTION_REVISION_CHECK_MS);

    #[test]
    fn retention_is_read_as_etcd_reads_it() {
        let parse = |mode, text| Retention::parse(mode, text, CHECK);
        assert_eq!(parse("periodic", "0"), Ok(None));
        assert_eq!(parse("periodic", "1"), Ok(Some(Retention::Period(Duration::from_secs(3600)))));
        assert_eq!(parse("periodic", "30m"), Ok(Some(Retention::Period(Duration::from_secs(1800)))));
        assert_eq!(parse("periodic", "1h30m"), Ok(Some(Retention::Period(Duration::from_secs(5400)))));
        assert_eq!(parse("periodic", "1.5h"), Ok(Some(Retention::Period(Duration::from_secs(5400)))));
        assert_eq!(parse("periodic", "500ms"), Ok(Some(Retention::Period(Duration::from_millis(500)))));
        assert_eq!(parse("revision", "1000"), Ok(Some(Retention::Revisions { keep: 1000, check: CHECK })));
        assert_eq!(parse("revision", "0"), Ok(None));
        for (mode, text) in [
            ("periodic", "1x"),
            ("periodic", "h"),
            ("periodic", "-1h"),
            ("revision", "1h"),
            ("revision", "-5"),
            ("hourly", "1"),
        ] {
            assert!(parse(mode, text).is_err(), "{mode} {text}");
        }
    }

    #[test]
    fn periodic_compacts_to_the_revision_of_a_retention_ago_once_one_has_passed() {
        let start = Instant::now();
        let period = Duration::from_secs(100);
        let mut planner = Planner::new(Retention::Period(period), start);
        let tick = Retention::Period(period).tick();
        assert_eq!(tick, Duration::from_secs(10));
        // The revision grows by 10 per tick; nothing happens before a whole period has passed.
        let mut decisions = Vec::new();
        for n in 1..=25i64 {
            let now = start + tick * n as u32;
            let decision = planner.tick(now, Revision(100 + 10 * n));
            if let Some(target) = decision {
                planner.compacted(now, target, &Ok(()));
            }
            decisions.push(decision);
        }
        assert!(decisions[..9].iter().all(Option::is_none), "{decisions:?}");
        // At 100 s: the oldest sample (110, at 10 s) is the one of a period ago, give or take a tick.
        assert_eq!(decisions[9], Some(Revision(110)));
        // Then every period, to the revision of a period before.
        assert!(decisions[10..19].iter().all(Option::is_none), "{decisions:?}");
        assert_eq!(decisions[19], Some(Revision(200)));
    }

    #[test]
    fn a_failed_compaction_is_tried_again_at_the_next_tick_and_compacted_counts_as_done() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut planner = Planner::new(Retention::Period(period), start);
        let at = |n: u32| start + Duration::from_secs(n as u64);
        for n in 1..10 {
            assert_eq!(planner.tick(at(n), Revision(50)), None);
        }
        let target = planner.tick(at(10), Revision(50)).expect("due");
        planner.compacted(at(10), target, &Err(Error::Timeout));
        let again = planner.tick(at(11), Revision(60)).expect("tried again");
        planner.compacted(at(11), again, &Err(Error::Compacted));
        assert_eq!(planner.tick(at(12), Revision(70)), None, "compacted already counts as done");
    }

    #[test]
    fn revision_mode_keeps_the_retention_and_compacts_only_when_it_moved() {
        let now = Instant::now();
        let mut planner = Planner::new(Retention::Revisions { keep: 100, check: CHECK }, now);
        assert_eq!(planner.tick(now, Revision(50)), None, "fewer revisions than kept");
        assert_eq!(planner.tick(now, Revision(150)), Some(Revision(50)));
        planner.compacted(now, Revision(50), &Ok(()));
        assert_eq!(planner.tick(now, Revision(150)), None, "nothing new");
        assert_eq!(planner.tick(now, Revision(170)), Some(Revision(70)));
    }
}
