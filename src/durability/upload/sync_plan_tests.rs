use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::object::ObjectError;

const WAIT_MAX: Duration = Duration::from_millis(1000);
const LIMITS: SyncLimits =
    SyncLimits { max_in_flight: 2, min_interval: Duration::from_millis(10), wait_max: WAIT_MAX, object_bytes_max: 100 };

fn down() -> UploadError {
    UploadError::Object(ObjectError::Unavailable("connection refused".into()))
}

fn conflict() -> UploadError {
    UploadError::Conflict { key: "wal/0000000001/00000000000000000002".into() }
}

fn span(first: u64, count: u64) -> GroupSpan {
    GroupSpan { first: GroupId(first), count }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- single decisions ----

#[test]
fn a_group_is_passed_on_only_once_its_upload_is_stored() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    let effects = plan.step(t0, SyncInput::Arrived(vec![10]));
    assert_eq!(effects, [SyncEffect::StartUpload { upload: UploadId(0), groups: span(0, 1) }]);
    assert_eq!(plan.step(t0 + ms(5), SyncInput::Tick), []);
    assert_eq!(plan.step(t0 + ms(6), SyncInput::Stored(UploadId(0))), [SyncEffect::PassOn(span(0, 1))]);
}

#[test]
fn groups_arriving_during_an_upload_leave_together_in_the_next_object() {
    let t0 = Instant::now();
    let limits = SyncLimits { max_in_flight: 1, ..LIMITS };
    let mut plan = SyncPlan::new(limits);
    plan.step(t0, SyncInput::Arrived(vec![10]));
    assert_eq!(plan.step(t0 + ms(1), SyncInput::Arrived(vec![10, 10])), [], "one upload in flight at most");
    assert_eq!(plan.step(t0 + ms(2), SyncInput::Arrived(vec![10])), []);
    let effects = plan.step(t0 + ms(20), SyncInput::Stored(UploadId(0)));
    assert_eq!(
        effects,
        [SyncEffect::PassOn(span(0, 1)), SyncEffect::StartUpload { upload: UploadId(1), groups: span(1, 3) }]
    );
}

#[test]
fn an_object_takes_groups_up_to_its_byte_bound_and_the_rest_wait_for_the_interval() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    let effects = plan.step(t0, SyncInput::Arrived(vec![60, 60, 60]));
    assert_eq!(effects, [SyncEffect::StartUpload { upload: UploadId(0), groups: span(0, 2) }]);
    assert_eq!(plan.next_deadline(), Some(t0 + LIMITS.min_interval), "the next start is due then");
    let effects = plan.step(t0 + LIMITS.min_interval, SyncInput::Tick);
    assert_eq!(effects, [SyncEffect::StartUpload { upload: UploadId(1), groups: span(2, 1) }]);
}

#[test]
fn groups_without_records_pass_on_in_their_turn_without_an_object() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    plan.step(t0, SyncInput::Arrived(vec![10]));
    // Waits for the interval, then leaves behind upload 0 without an object of its own.
    assert_eq!(plan.step(t0 + ms(1), SyncInput::Arrived(vec![0])), []);
    assert_eq!(plan.step(t0 + ms(10), SyncInput::Tick), [], "it stays behind the upload in flight");
    assert_eq!(
        plan.step(t0 + ms(11), SyncInput::Stored(UploadId(0))),
        [SyncEffect::PassOn(span(0, 1)), SyncEffect::PassOn(span(1, 1))]
    );
}

#[test]
fn a_caller_that_waited_wait_max_gets_one_timeout() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    plan.step(t0, SyncInput::Arrived(vec![10]));
    assert!(!plan.step(t0 + WAIT_MAX - ms(1), SyncInput::Tick).contains(&SyncEffect::TimeOut(vec![GroupId(0)])));
    let effects = plan.step(t0 + WAIT_MAX, SyncInput::Tick);
    assert!(effects.contains(&SyncEffect::TimeOut(vec![GroupId(0)])), "{effects:?}");
    let later = plan.step(t0 + 3 * WAIT_MAX, SyncInput::Tick);
    assert!(!later.iter().any(|e| matches!(e, SyncEffect::TimeOut(_))), "once: {later:?}");
    // The group stays queued: stored later, it is passed on (and committed) all the same.
    assert_eq!(
        plan.step(t0 + 3 * WAIT_MAX, SyncInput::Stored(UploadId(0))),
        [SyncEffect::Outage(None), SyncEffect::PassOn(span(0, 1))]
    );
}

#[test]
fn an_upload_failing_for_wait_max_raises_the_outage_and_a_success_clears_it() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    plan.step(t0, SyncInput::Arrived(vec![10]));
    let effects = plan.step(t0 + ms(1), SyncInput::AttemptFailed { upload: UploadId(0), error: down() });
    assert!(matches!(&effects[..], [SyncEffect::Report(SyncReport::Failing { .. })]), "{effects:?}");
    assert_eq!(plan.next_deadline(), Some(t0 + WAIT_MAX), "the outage and the caller's timeout are due then");
    let effects = plan.step(t0 + WAIT_MAX, SyncInput::Tick);
    let raised = effects.iter().find_map(|e| match e {
        SyncEffect::Outage(Some(reason)) => Some(reason.clone()),
        _ => None,
    });
    let reason = raised.expect("the outage is raised");
    assert!(reason.contains("connection refused"), "it names the last error: {reason}");
    let effects = plan.step(t0 + WAIT_MAX + ms(1), SyncInput::Stored(UploadId(0)));
    assert!(effects.contains(&SyncEffect::Outage(None)), "{effects:?}");
}

#[test]
fn an_upload_hanging_for_wait_max_raises_the_outage() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    plan.step(t0, SyncInput::Arrived(vec![10]));
    let effects = plan.step(t0 + WAIT_MAX, SyncInput::Tick);
    assert!(effects.iter().any(|e| matches!(e, SyncEffect::Outage(Some(_)))), "{effects:?}");
}

#[test]
fn a_conflict_fences_uploads_until_restart() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    plan.step(t0, SyncInput::Arrived(vec![10]));
    let effects = plan.step(t0 + ms(1), SyncInput::Conflict { upload: UploadId(0), error: conflict() });
    assert!(
        matches!(&effects[..], [SyncEffect::Report(SyncReport::Fenced { .. }), SyncEffect::Outage(Some(reason))] if reason.contains("until the node restarts")),
        "{effects:?}"
    );
    // No upload starts again, whatever arrives, and the outage stands.
    let effects = plan.step(t0 + ms(100), SyncInput::Arrived(vec![10]));
    assert_eq!(effects, []);
    let effects = plan.step(t0 + 5 * WAIT_MAX, SyncInput::Tick);
    assert_eq!(effects, [SyncEffect::TimeOut(vec![GroupId(0), GroupId(1)])]);
}

#[test]
fn a_stopping_uploader_gives_up_wait_max_after_shutdown() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    plan.step(t0, SyncInput::Arrived(vec![10, 10]));
    plan.step(t0 + ms(1), SyncInput::Shutdown);
    assert_eq!(plan.next_deadline(), Some(t0 + WAIT_MAX), "callers' timeouts first");
    plan.step(t0 + WAIT_MAX, SyncInput::Tick);
    assert_eq!(plan.next_deadline(), Some(t0 + ms(1) + WAIT_MAX));
    let effects = plan.step(t0 + ms(1) + WAIT_MAX, SyncInput::Tick);
    assert_eq!(effects.last(), Some(&SyncEffect::Stop { abandoned: 2 }));
    assert_eq!(plan.step(t0 + 2 * WAIT_MAX, SyncInput::Stored(UploadId(0))), [], "nothing after the end");
}

#[test]
fn a_closed_input_ends_the_uploader_once_everything_is_passed_on() {
    let t0 = Instant::now();
    let mut plan = SyncPlan::new(LIMITS);
    plan.step(t0, SyncInput::Arrived(vec![10]));
    assert_eq!(plan.step(t0 + ms(1), SyncInput::InputClosed), []);
    let effects = plan.step(t0 + ms(2), SyncInput::Stored(UploadId(0)));
    assert_eq!(effects, [SyncEffect::PassOn(span(0, 1)), SyncEffect::Stop { abandoned: 0 }]);
}

// ---- random sequences of inputs, invariants after every step ----

/// What the test knows of an upload the plan started.
#[derive(Debug)]
struct Upload {
    groups: GroupSpan,
    started: Instant,
    stored: bool,
}

/// The world around the plan, and the invariants it must keep.
struct Model {
    limits: SyncLimits,
    now: Instant,
    /// Each group's bytes and arrival.
    groups: Vec<(usize, Instant)>,
    uploads: BTreeMap<UploadId, Upload>,
    passed: u64,
    timed_out: BTreeSet<GroupId>,
    outage: Option<String>,
    fenced: bool,
    closed_at: Option<Instant>,
    input_closed: bool,
    stopped: bool,
}

impl Model {
    fn new(limits: SyncLimits, now: Instant) -> Model {
        Model {
            limits,
            now,
            groups: Vec::new(),
            uploads: BTreeMap::new(),
            passed: 0,
            timed_out: BTreeSet::new(),
            outage: None,
            fenced: false,
            closed_at: None,
            input_closed: false,
            stopped: false,
        }
    }

    fn in_flight(&self) -> impl Iterator<Item = (&UploadId, &Upload)> {
        self.uploads.iter().filter(|(_, u)| !u.stored)
    }

    /// Feeds `input` to `plan`, applies its effects here and checks every invariant.
    fn step(&mut self, plan: &mut SyncPlan, input: SyncInput) {
        let context = format!("{input:?} at +{:?}", self.now);
        match &input {
            SyncInput::Arrived(sizes) => self.groups.extend(sizes.iter().map(|&bytes| (bytes, self.now))),
            SyncInput::Conflict { upload, .. } if !self.uploads[upload].stored => self.fenced = true,
            SyncInput::InputClosed => {
                self.input_closed = true;
                self.closed_at.get_or_insert(self.now);
            }
            SyncInput::Shutdown => {
                self.closed_at.get_or_insert(self.now);
            }
            _ => {}
        }
        let stored = match &input {
            SyncInput::Stored(upload) => Some(*upload),
            _ => None,
        };
        let effects = plan.step(self.now, input);
        assert!(!self.stopped || effects.is_empty(), "{context}: effects after the end: {effects:?}");
        if let Some(upload) = stored {
            self.uploads.get_mut(&upload).expect("a started upload").stored = true;
        }
        for effect in effects {
            self.apply(effect, &context);
        }
        self.check(plan, stored.is_some(), &context);
    }

    fn apply(&mut self, effect: SyncEffect, context: &str) {
        match effect {
            SyncEffect::StartUpload { upload, groups } => {
                assert!(!self.fenced, "{context}: an upload started after a conflict");
                let previous_end = self.uploads.values().last().map_or(0, |u| u.groups.first.0 + u.groups.count);
                assert!(groups.first.0 >= previous_end, "{context}: uploads overlap");
                for id in previous_end..groups.first.0 {
                    assert_eq!(self.groups[id as usize].0, 0, "{context}: group {id} with records skipped");
                }
                let sizes: Vec<usize> = groups.ids().map(|id| self.groups[id.0 as usize].0).collect();
                assert!(sizes.iter().sum::<usize>() > 0, "{context}: an upload of nothing");
                let before_last: usize = sizes[..sizes.len() - 1].iter().sum();
                assert!(before_last < self.limits.object_bytes_max, "{context}: an object past its bound");
                let started = Upload { groups, started: self.now, stored: false };
                assert!(self.uploads.insert(upload, started).is_none(), "{context}: upload id reused");
                let in_flight = self.in_flight().count();
                assert!(in_flight <= self.limits.max_in_flight, "{context}: {in_flight} uploads in flight");
            }
            SyncEffect::PassOn(groups) => {
                assert_eq!(groups.first.0, self.passed, "{context}: passed on out of order");
                for id in groups.ids() {
                    let holder = self.uploads.values().find(|u| u.groups.ids().any(|g| g == id));
                    match holder {
                        Some(upload) => assert!(upload.stored, "{context}: group {id:?} passed on before stored"),
                        None => assert_eq!(self.groups[id.0 as usize].0, 0, "{context}: {id:?} never uploaded"),
                    }
                }
                self.passed += groups.count;
            }
            SyncEffect::TimeOut(groups) => {
                for id in groups {
                    let (_, arrived) = self.groups[id.0 as usize];
                    assert!(self.now - arrived >= self.limits.wait_max, "{context}: {id:?} timed out early");
                    assert!(id.0 >= self.passed, "{context}: {id:?} timed out after it was passed on");
                    assert!(self.timed_out.insert(id), "{context}: {id:?} timed out twice");
                }
            }
            SyncEffect::Outage(reason) => {
                if reason.is_none() {
                    assert!(!self.fenced, "{context}: the outage cleared after a conflict");
                }
                self.outage = reason;
            }
            SyncEffect::Report(_) => {}
            SyncEffect::Stop { abandoned } => {
                let left = self.groups.len() - self.passed as usize;
                assert_eq!(abandoned, left, "{context}: abandoned count");
                let closed = self.closed_at.expect("stops only once closed or stopping");
                let gave_up = self.now - closed >= self.limits.wait_max;
                assert!((self.input_closed && left == 0) || gave_up, "{context}: stopped early");
                self.stopped = true;
            }
        }
    }

    fn check(&self, plan: &SyncPlan, after_stored: bool, context: &str) {
        if self.stopped {
            return;
        }
        let wait_max = self.limits.wait_max;
        for (id, (_, arrived)) in self.groups.iter().enumerate().skip(self.passed as usize) {
            if self.now - *arrived >= wait_max {
                assert!(self.timed_out.contains(&GroupId(id as u64)), "{context}: group {id} waited without a timeout");
            }
        }
        if self.fenced {
            assert!(self.outage.is_some(), "{context}: writes taken after a conflict");
        } else {
            let stuck = self.in_flight().any(|(_, u)| self.now - u.started >= wait_max);
            assert_eq!(
                self.outage.is_some(),
                stuck,
                "{context}: outage {:?} with an upload stuck: {stuck}",
                self.outage
            );
            if after_stored && !stuck {
                assert!(self.outage.is_none(), "{context}: a success left the outage");
            }
        }
        if let Some(closed) = self.closed_at {
            let left = self.groups.len() as u64 > self.passed;
            assert!(self.now - closed < wait_max || !left, "{context}: still running with writes left after wait_max");
            assert!(left || !self.input_closed, "{context}: still running with nothing left");
        }
        if let Some(deadline) = plan.next_deadline() {
            assert!(deadline > self.now, "{context}: a deadline already passed ({deadline:?}): the driver would spin");
        }
    }
}

/// One random run: groups arrive, uploads fail, hang, succeed or (rarely) conflict, time passes,
/// and the node may stop; then the store recovers and the run is driven to its end.
fn random_run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let limits = SyncLimits {
        max_in_flight: rng.random_range(1..=3),
        min_interval: ms(rng.random_range(0..=50)),
        wait_max: ms(rng.random_range(50..=500)),
        object_bytes_max: rng.random_range(20..=200),
    };
    let t0 = Instant::now();
    let mut model = Model::new(limits, t0);
    let mut plan = SyncPlan::new(limits);
    for _ in 0..rng.random_range(10..200) {
        if model.stopped {
            break;
        }
        model.now += ms(rng.random_range(0..=limits.wait_max.as_millis() as u64 / 4));
        let in_flight: Vec<UploadId> = model.in_flight().map(|(id, _)| *id).collect();
        let input = match rng.random_range(0..100) {
            0..40 if !model.input_closed => {
                let sizes = (0..rng.random_range(1..=4))
                    .map(|_| if rng.random_bool(0.2) { 0 } else { rng.random_range(1..=limits.object_bytes_max) })
                    .collect();
                SyncInput::Arrived(sizes)
            }
            40..55 if !in_flight.is_empty() => {
                SyncInput::AttemptFailed { upload: in_flight[rng.random_range(0..in_flight.len())], error: down() }
            }
            55..80 if !in_flight.is_empty() => SyncInput::Stored(in_flight[rng.random_range(0..in_flight.len())]),
            80..82 if !in_flight.is_empty() => {
                SyncInput::Conflict { upload: in_flight[rng.random_range(0..in_flight.len())], error: conflict() }
            }
            82..84 => SyncInput::InputClosed,
            84..86 => SyncInput::Shutdown,
            _ => SyncInput::Tick,
        };
        if matches!(input, SyncInput::InputClosed) && model.input_closed {
            continue;
        }
        model.step(&mut plan, input);
    }
    // The store recovers: unless fenced or stopping, every group is passed on, then the input
    // closing ends the uploader at once. Bounded: each round stores what is in flight.
    if !model.stopped && !model.fenced && model.closed_at.is_none() {
        for _ in 0..10_000 {
            if model.passed as usize == model.groups.len() {
                break;
            }
            model.now += limits.min_interval.max(ms(1));
            let in_flight: Vec<UploadId> = model.in_flight().map(|(id, _)| *id).collect();
            let input = in_flight.first().map_or(SyncInput::Tick, |upload| SyncInput::Stored(*upload));
            model.step(&mut plan, input);
        }
        assert_eq!(model.passed as usize, model.groups.len(), "seed {seed}: every group passed on");
        model.step(&mut plan, SyncInput::InputClosed);
        assert!(model.stopped, "seed {seed}: the uploader ends once its input closes with nothing left");
        return;
    }
    // Otherwise it gives up `wait_max` after it began to stop.
    if !model.stopped && !model.input_closed {
        model.step(&mut plan, SyncInput::InputClosed);
    }
    for _ in 0..3 {
        if model.stopped {
            break;
        }
        model.now += limits.wait_max;
        model.step(&mut plan, SyncInput::Tick);
    }
    assert!(model.stopped, "seed {seed}: the uploader ends");
}

#[test]
fn random_inputs_keep_the_sync_invariants() {
    for seed in 0..500 {
        random_run(seed);
    }
}
