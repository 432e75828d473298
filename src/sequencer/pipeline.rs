//! The sequencer's group pipeline as a plain state machine: which groups are out (handed to the
//! uploader or the committer and not yet reported), whether a new group may start, and when the
//! sequencer may stop. Invariants: at most `max` groups are out, except while every proposal is
//! refused at once (those groups write nothing); reports come in the order groups left; a stop
//! completes only once no group is out.

use std::collections::VecDeque;

use crate::ids::Revision;

/// Groups out, by the last revision each holds.
#[derive(Debug)]
pub struct Pipeline {
    out: VecDeque<Revision>,
    /// Groups out at most (`--groups-in-flight-max`).
    max: usize,
    /// A stop was asked for (or every handle is gone): no new group starts.
    stopping: bool,
}

/// What the committer said of the oldest group out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Durable through this revision.
    Durable(Revision),
    /// Not committed (the store failed, or the committer stopped).
    Failed,
}

impl Pipeline {
    pub fn new(max: usize) -> Pipeline {
        Pipeline { out: VecDeque::new(), max: max.max(1), stopping: false }
    }

    /// Whether the sequencer takes proposals now. `refusing` says every proposal would be refused at
    /// once (an object-store outage): those are read even with the pipeline full, so their callers
    /// get an answer instead of waiting.
    pub fn accepts(&self, refusing: bool) -> bool {
        !self.stopping && (self.out.len() < self.max || refusing)
    }

    /// A group holding revisions through `last_revision` left.
    pub fn started(&mut self, last_revision: Revision) {
        assert!(
            self.out.back().is_none_or(|&before| last_revision >= before),
            "groups leave in revision order: {last_revision} after {:?}",
            self.out.back()
        );
        self.out.push_back(last_revision);
    }

    /// The oldest group's report. Returns the revision its versions are durable through (the
    /// in-flight layer may forget them), `None` for a failed group or when no group is out.
    pub fn reported(&mut self, report: Report) -> Option<Revision> {
        let oldest = self.out.pop_front()?;
        match report {
            Report::Durable(revision) => {
                assert_eq!(revision, oldest, "the committer reports groups in the order they left");
                Some(revision)
            }
            Report::Failed => None,
        }
    }

    /// Every group out is lost (the committer stopped): they will never be reported.
    pub fn abandon_all(&mut self) -> usize {
        let lost = self.out.len();
        self.out.clear();
        lost
    }

    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Whether the sequencer may end now: asked to stop, and no group out.
    pub fn finished(&self) -> bool {
        self.stopping && self.out.is_empty()
    }

    pub fn out(&self) -> usize {
        self.out.len()
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn a_full_pipeline_takes_proposals_only_to_refuse_them() {
        let mut pipeline = Pipeline::new(2);
        pipeline.started(Revision(2));
        assert!(pipeline.accepts(false));
        pipeline.started(Revision(3));
        assert!(!pipeline.accepts(false), "two groups out of two");
        assert!(pipeline.accepts(true), "an outage refuses at once, so the mailbox is read");
        assert_eq!(pipeline.reported(Report::Durable(Revision(2))), Some(Revision(2)));
        assert!(pipeline.accepts(false));
    }

    #[test]
    fn a_stop_waits_for_every_group_out_and_takes_nothing_more() {
        let mut pipeline = Pipeline::new(4);
        pipeline.started(Revision(5));
        pipeline.started(Revision(5));
        pipeline.stop();
        assert!(!pipeline.accepts(true) && !pipeline.finished());
        assert_eq!(pipeline.reported(Report::Durable(Revision(5))), Some(Revision(5)));
        assert!(!pipeline.finished(), "one group is still out");
        assert_eq!(pipeline.reported(Report::Failed), None);
        assert!(pipeline.finished());
    }

    #[test]
    fn groups_lost_with_the_committer_are_abandoned_and_let_a_stop_finish() {
        let mut pipeline = Pipeline::new(4);
        pipeline.started(Revision(7));
        pipeline.started(Revision(8));
        pipeline.stop();
        assert_eq!(pipeline.abandon_all(), 2);
        assert!(pipeline.finished());
    }

    #[test]
    #[should_panic(expected = "in the order they left")]
    fn a_report_out_of_order_is_refused_loudly() {
        let mut pipeline = Pipeline::new(4);
        pipeline.started(Revision(7));
        pipeline.started(Revision(8));
        pipeline.reported(Report::Durable(Revision(8)));
    }

    /// Random runs against a model: a queue of groups out, a bound, a stop flag.
    #[test]
    fn random_runs_keep_the_bound_the_order_and_the_stop() {
        for seed in 0..300u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let max = rng.random_range(1..5usize);
            let mut pipeline = Pipeline::new(max);
            let mut model: VecDeque<Revision> = VecDeque::new();
            let (mut revision, mut stopping, mut outage) = (Revision(1), false, false);
            for step in 0..200 {
                match rng.random_range(0..10) {
                    0..=3 => {
                        let accepts = pipeline.accepts(outage);
                        assert_eq!(accepts, !stopping && (model.len() < max || outage), "seed {seed} step {step}");
                        // During an outage proposals are refused: no group leaves.
                        if accepts && !outage {
                            revision = Revision(revision.get() + rng.random_range(0..3i64));
                            pipeline.started(revision);
                            model.push_back(revision);
                        }
                    }
                    4..=6 => {
                        let durable = rng.random_bool(0.8);
                        let expected = model.pop_front();
                        let report = match expected {
                            Some(revision) if durable => Report::Durable(revision),
                            _ => Report::Failed,
                        };
                        let got = pipeline.reported(report);
                        assert_eq!(got, expected.filter(|_| durable), "seed {seed} step {step}");
                    }
                    7 => outage = !outage,
                    8 => {
                        if rng.random_bool(0.2) {
                            stopping = true;
                            pipeline.stop();
                        }
                    }
                    _ => {
                        if rng.random_bool(0.05) {
                            assert_eq!(pipeline.abandon_all(), model.len());
                            model.clear();
                        }
                    }
                }
                assert!(pipeline.out() <= max, "seed {seed} step {step}: {} out of {max}", pipeline.out());
                assert_eq!(pipeline.out(), model.len());
                assert_eq!(pipeline.finished(), stopping && model.is_empty(), "seed {seed} step {step}");
            }
        }
    }
}
