use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::log::LogEvent;
use crate::object::ObjectError;

const WAIT_MAX: Duration = Duration::from_millis(1000);
const LIMITS: AsyncLimits = AsyncLimits {
    segment_bytes: 200,
    segment_age: Duration::from_millis(100),
    wait_max: WAIT_MAX,
    buffer_bytes_max: 400,
    retry_pause: Duration::from_millis(300),
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A record at `(revision, sub)` whose value is `value_bytes` long.
fn record(revision: i64, sub: u32, value_bytes: usize) -> LogRecord {
    let events = vec![LogEvent::Put {
        key: format!("k{revision}").into_bytes(),
        value: vec![b'v'; value_bytes],
        create_revision: Revision(revision),
        version: 1,
        lease: 0,
    }];
    LogRecord { revision: Revision(revision), sub, events }
}

fn committed(records: Vec<LogRecord>) -> AsyncInput {
    AsyncInput::Committed(Arc::new(CommittedGroup { records, prevs: Vec::new() }))
}

/// The positions of the records an object's bytes hold.
fn positions(bytes: &[u8]) -> Vec<LogPosition> {
    let mut rest = bytes;
    let mut positions = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let record = LogRecord::decode(&rest[..8 + len]).expect("a frame the log encoded");
        positions.push(record.position());
        rest = &rest[8 + len..];
    }
    positions
}

fn started(effects: &[AsyncEffect]) -> Option<(UploadId, LogPosition, LogPosition)> {
    effects.iter().find_map(|e| match e {
        AsyncEffect::StartUpload { upload, first, last, .. } => Some((*upload, *first, *last)),
        _ => None,
    })
}

fn standing(effects: &[AsyncEffect]) -> Option<&str> {
    effects.iter().find_map(|e| match e {
        AsyncEffect::Failed { error, report } if report.standing => Some(error.as_str()),
        _ => None,
    })
}

// ---- single decisions ----

#[test]
fn records_leave_once_the_segment_is_old_enough() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    assert_eq!(plan.step(t0, committed(vec![record(2, 0, 10)])), []);
    assert_eq!(plan.next_deadline(), Some(t0 + LIMITS.segment_age));
    let effects = plan.step(t0 + LIMITS.segment_age, AsyncInput::Tick);
    assert_eq!(
        started(&effects),
        Some((UploadId(0), LogPosition::new(Revision(2), 0), LogPosition::new(Revision(2), 0)))
    );
}

#[test]
fn records_leave_at_once_when_the_segment_is_full() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    let effects = plan.step(t0, committed((2..6).map(|r| record(r, 0, 60)).collect()));
    assert_eq!(
        started(&effects),
        Some((UploadId(0), LogPosition::new(Revision(2), 0), LogPosition::new(Revision(5), 0)))
    );
}

#[test]
fn the_watermark_moves_to_the_last_record_of_a_stored_upload() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    plan.step(t0, committed((2..6).map(|r| record(r, 0, 60)).collect()));
    // Records arriving meanwhile wait for the next upload.
    assert_eq!(plan.step(t0 + ms(1), committed(vec![record(6, 0, 10)])), []);
    assert_eq!(
        plan.step(t0 + ms(2), AsyncInput::Stored(UploadId(0))),
        [AsyncEffect::MoveWatermark(LogPosition::new(Revision(5), 0))]
    );
    assert_eq!(plan.step(t0 + ms(2), AsyncInput::WatermarkMoved(LogPosition::new(Revision(5), 0))), []);
}

#[test]
fn an_upload_hanging_for_wait_max_is_a_standing_error_and_its_success_clears_it() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    plan.step(t0, committed((2..6).map(|r| record(r, 0, 60)).collect()));
    assert_eq!(plan.next_deadline(), Some(t0 + WAIT_MAX));
    let effects = plan.step(t0 + WAIT_MAX, AsyncInput::Tick);
    assert!(standing(&effects).is_some_and(|e| e.contains("has not completed")), "{effects:?}");
    plan.step(t0 + WAIT_MAX, AsyncInput::Stored(UploadId(0)));
    let effects = plan.step(t0 + WAIT_MAX, AsyncInput::WatermarkMoved(LogPosition::new(Revision(5), 0)));
    assert!(matches!(&effects[..], [AsyncEffect::Recovered { .. }]), "{effects:?}");
}

#[test]
fn a_conflict_is_a_standing_error_at_once_while_the_upload_is_retried() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    plan.step(t0, committed((2..6).map(|r| record(r, 0, 60)).collect()));
    let error = UploadError::Conflict { key: "wal/x".into() };
    let effects = plan.step(t0 + ms(1), AsyncInput::Conflict { upload: UploadId(0), error });
    assert!(standing(&effects).is_some_and(|e| e.contains("wal/x") && e.contains("revision 2")), "{effects:?}");
}

#[test]
fn a_failed_upload_task_is_retried_from_the_local_log_after_a_pause() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    plan.step(t0, committed((2..6).map(|r| record(r, 0, 60)).collect()));
    plan.step(t0 + ms(1), committed(vec![record(6, 0, 10)]));
    let error = UploadError::Injected("test");
    let effects = plan.step(t0 + ms(2), AsyncInput::TaskEnded { upload: UploadId(0), error });
    assert!(standing(&effects).is_some(), "{effects:?}");
    assert_eq!(plan.next_deadline(), Some(t0 + ms(2) + LIMITS.retry_pause));
    let effects = plan.step(t0 + ms(2) + LIMITS.retry_pause, AsyncInput::Tick);
    assert_eq!(
        effects,
        [AsyncEffect::ReadLog {
            from: LogPosition::new(Revision(2), 0),
            through: Revision(6),
            bytes: LIMITS.segment_bytes
        }]
    );
}

#[test]
fn records_beyond_the_memory_bound_are_read_back_from_the_log() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    // The first upload takes 4 records; the store hangs while 14 more arrive: 4 fill the buffer (of
    // about 120 bytes each), the 5th and later are only positions.
    plan.step(t0, committed((2..6).map(|r| record(r, 0, 60)).collect()));
    let effects = plan.step(t0 + ms(1), committed((6..20).map(|r| record(r, 0, 60)).collect()));
    assert_eq!(effects, [AsyncEffect::Overflow { from: LogPosition::new(Revision(10), 0) }]);
    assert!(plan.buffer.bytes.len() <= LIMITS.buffer_bytes_max + record(2, 0, 60).encode().len());
    let effects = plan.step(t0 + ms(2), AsyncInput::Stored(UploadId(0)));
    assert_eq!(effects[0], AsyncEffect::MoveWatermark(LogPosition::new(Revision(5), 0)));
    assert_eq!(
        started(&effects),
        Some((UploadId(1), LogPosition::new(Revision(6), 0), LogPosition::new(Revision(9), 0))),
        "the buffer first"
    );
    plan.step(t0 + ms(2), AsyncInput::WatermarkMoved(LogPosition::new(Revision(5), 0)));
    let effects = plan.step(t0 + ms(3), AsyncInput::Stored(UploadId(1)));
    let read = AsyncEffect::ReadLog {
        from: LogPosition::new(Revision(10), 0),
        through: Revision(19),
        bytes: LIMITS.segment_bytes,
    };
    assert_eq!(effects, [AsyncEffect::MoveWatermark(LogPosition::new(Revision(9), 0)), read]);
    plan.step(t0 + ms(3), AsyncInput::WatermarkMoved(LogPosition::new(Revision(9), 0)));
    let effects = plan.step(t0 + ms(4), AsyncInput::LogRead((10..13).map(|r| record(r, 0, 60)).collect()));
    assert_eq!(
        started(&effects),
        Some((UploadId(2), LogPosition::new(Revision(10), 0), LogPosition::new(Revision(12), 0))),
        "read back records leave at once"
    );
    let effects = plan.step(t0 + ms(5), AsyncInput::Stored(UploadId(2)));
    let read = AsyncEffect::ReadLog {
        from: LogPosition::new(Revision(12), 1),
        through: Revision(19),
        bytes: LIMITS.segment_bytes,
    };
    assert_eq!(effects, [AsyncEffect::MoveWatermark(LogPosition::new(Revision(12), 0)), read]);
    // A read that does not start where the records held back do: they are gone.
    let effects = plan.step(t0 + ms(6), AsyncInput::LogRead((14..16).map(|r| record(r, 0, 60)).collect()));
    assert!(matches!(&effects[..], [AsyncEffect::LogGap { .. }]), "{effects:?}");
}

#[test]
fn records_gone_from_the_log_stop_the_watermark() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    plan.step(t0, committed((2..6).map(|r| record(r, 0, 60)).collect()));
    plan.step(t0 + ms(1), committed((6..20).map(|r| record(r, 0, 60)).collect()));
    plan.step(t0 + ms(2), AsyncInput::Stored(UploadId(0)));
    plan.step(t0 + ms(2), AsyncInput::WatermarkMoved(LogPosition::new(Revision(5), 0)));
    plan.step(t0 + ms(3), AsyncInput::Stored(UploadId(1)));
    plan.step(t0 + ms(3), AsyncInput::WatermarkMoved(LogPosition::new(Revision(9), 0)));
    let effects = plan.step(t0 + ms(4), AsyncInput::LogRead(Vec::new()));
    assert!(matches!(&effects[..], [AsyncEffect::LogGap { .. }]), "{effects:?}");
    plan.step(t0 + ms(5), committed(vec![record(20, 0, 300)]));
    let effects = plan.step(t0 + ms(6), AsyncInput::Stored(UploadId(2)));
    assert!(!effects.iter().any(|e| matches!(e, AsyncEffect::MoveWatermark(_))), "{effects:?}");
}

#[test]
fn a_closed_input_ends_the_uploader_once_everything_is_stored_or_gives_up_after_wait_max() {
    let t0 = Instant::now();
    let mut plan = AsyncPlan::new(LIMITS);
    plan.step(t0, committed(vec![record(2, 0, 10)]));
    let effects = plan.step(t0 + ms(1), AsyncInput::InputClosed);
    assert_eq!(
        started(&effects),
        Some((UploadId(0), LogPosition::new(Revision(2), 0), LogPosition::new(Revision(2), 0))),
        "what is held leaves at once"
    );
    plan.step(t0 + ms(2), AsyncInput::Stored(UploadId(0)));
    let effects = plan.step(t0 + ms(2), AsyncInput::WatermarkMoved(LogPosition::new(Revision(2), 0)));
    assert_eq!(effects, [AsyncEffect::Stop { gave_up: false }]);

    let mut plan = AsyncPlan::new(LIMITS);
    plan.step(t0, committed(vec![record(2, 0, 10)]));
    plan.step(t0 + ms(1), AsyncInput::InputClosed);
    assert_eq!(plan.next_deadline(), Some(t0 + ms(1) + WAIT_MAX));
    let effects = plan.step(t0 + ms(1) + WAIT_MAX, AsyncInput::Tick);
    assert_eq!(effects.last(), Some(&AsyncEffect::Stop { gave_up: true }));
}

// ---- random sequences of inputs, invariants after every step ----

/// The world around the plan: the local log, the store, and what the plan was told.
struct Model {
    limits: AsyncLimits,
    now: Instant,
    /// Every committed record, in order.
    committed: Vec<LogRecord>,
    /// Index in `committed` of the first record still in the local log (compaction, or loss).
    log_start: usize,
    /// The upload in flight: its id, first and last record indexes, and when it started.
    upload: Option<(UploadId, usize, usize, Instant)>,
    /// The index the next upload must start at (unless records were lost).
    next_first: usize,
    /// A stored upload whose watermark the plan is to move: its last record's index.
    stored_last: Option<usize>,
    /// Index after the last record known stored, contiguously from the first.
    stored_through: usize,
    watermark: Option<LogPosition>,
    /// A log read asked for and not answered yet.
    read: Option<(LogPosition, Revision, usize)>,
    lost: bool,
    /// Recording the watermark fails now.
    fail_watermark: bool,
    /// The last attempt at recording the watermark failed.
    watermark_failed: bool,
    standing: bool,
    closed_at: Option<Instant>,
    stopped: Option<bool>,
    largest_record: usize,
}

impl Model {
    fn index_of(&self, at: LogPosition) -> usize {
        self.committed.iter().position(|r| r.position() == at).expect("a committed position")
    }

    fn step(&mut self, plan: &mut AsyncPlan, input: AsyncInput) {
        let context = format!("{input:?} at +{:?}", self.now);
        if let AsyncInput::InputClosed = input {
            self.closed_at.get_or_insert(self.now);
        }
        let effects = plan.step(self.now, input);
        assert!(self.stopped.is_none() || effects.is_empty(), "{context}: effects after the end");
        let mut answers = Vec::new();
        for effect in effects {
            match effect {
                AsyncEffect::StartUpload { upload, first, last, bytes } => {
                    assert!(self.upload.is_none(), "{context}: two uploads in flight");
                    let held = positions(&bytes);
                    assert_eq!((held.first(), held.last()), (Some(&first), Some(&last)), "{context}");
                    let (first, last) = (self.index_of(first), self.index_of(last));
                    let expected: Vec<LogPosition> =
                        self.committed[first..=last].iter().map(|r| r.position()).collect();
                    assert_eq!(held, expected, "{context}: an object of contiguous records");
                    if !self.lost {
                        assert_eq!(first, self.next_first, "{context}: records skipped or repeated");
                    }
                    self.next_first = last + 1;
                    self.upload = Some((upload, first, last, self.now));
                }
                AsyncEffect::ReadLog { from, through, bytes } => {
                    assert!(self.read.is_none() && self.upload.is_none(), "{context}: a read besides other work");
                    self.read = Some((from, through, bytes));
                }
                AsyncEffect::MoveWatermark(at) => {
                    let last = self.stored_last.take().expect("a watermark only after a stored upload");
                    assert!(!self.lost, "{context}: the watermark moved after records were lost");
                    assert_eq!(self.index_of(at), last, "{context}: watermark at the stored upload's end");
                    assert!(self.index_of(at) < self.stored_through, "{context}: watermark past unstored records");
                    assert!(self.watermark.is_none_or(|w| w < at), "{context}: the watermark went back");
                    self.watermark_failed = self.fail_watermark;
                    if self.fail_watermark {
                        answers.push(AsyncInput::WatermarkFailed(
                            crate::error::StoreError::Injected("meta write failed").into(),
                        ));
                    } else {
                        self.watermark = Some(at);
                        answers.push(AsyncInput::WatermarkMoved(at));
                    }
                }
                AsyncEffect::Failed { report, .. } => self.standing = report.standing,
                AsyncEffect::Recovered { .. } => self.standing = false,
                AsyncEffect::LogGap { .. } => {
                    assert!(self.stored_through < self.log_start, "{context}: a gap with every record in the log");
                    self.lost = true;
                }
                AsyncEffect::Overflow { .. } => {}
                AsyncEffect::Stop { gave_up } => {
                    let closed = self.closed_at.expect("stops only once the input closed");
                    if gave_up {
                        assert!(self.now - closed >= self.limits.wait_max, "{context}: gave up early");
                    } else {
                        let all = self.committed.len();
                        assert!(self.lost || self.stored_through == all, "{context}: stopped with records left");
                    }
                    self.stopped = Some(gave_up);
                }
            }
        }
        self.stored_last = None;
        for answer in answers {
            self.step(plan, answer);
        }
        self.check(plan, &context);
    }

    fn stored(&mut self, plan: &mut AsyncPlan) {
        let (upload, first, last, _) = self.upload.take().expect("an upload in flight");
        if first <= self.stored_through {
            self.stored_through = self.stored_through.max(last + 1);
        }
        self.stored_last = Some(last);
        self.step(plan, AsyncInput::Stored(upload));
    }

    /// Answers the read in flight as the store does: whole revisions, about `bytes` of them.
    fn answer_read(&mut self, plan: &mut AsyncPlan) {
        let (from, through, bytes) = self.read.take().expect("a read in flight");
        let mut records: Vec<LogRecord> = Vec::new();
        let mut taken = 0;
        for record in &self.committed[self.log_start..] {
            let at = record.position();
            if at < from || record.revision > through {
                continue;
            }
            let same_revision = records.last().is_some_and(|r| r.revision == record.revision);
            if taken >= bytes && !same_revision {
                break;
            }
            taken += record.encode().len();
            records.push(record.clone());
        }
        self.step(plan, AsyncInput::LogRead(records));
    }

    fn check(&self, plan: &AsyncPlan, context: &str) {
        let held = plan.buffer.bytes.len();
        assert!(held <= self.limits.buffer_bytes_max + self.largest_record, "{context}: {held} bytes held");
        if self.stopped.is_some() {
            return;
        }
        if let Some((_, _, _, started)) = self.upload
            && self.now - started >= self.limits.wait_max
        {
            assert!(self.standing, "{context}: an upload unfinished for wait_max is not a standing error");
        }
        if let Some(closed) = self.closed_at {
            assert!(
                self.now - closed < self.limits.wait_max,
                "{context}: still running wait_max after the input closed"
            );
        }
        if let Some(deadline) = plan.next_deadline() {
            assert!(deadline > self.now, "{context}: a deadline already passed: the driver would spin");
        }
    }
}

fn random_run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let segment_bytes = rng.random_range(100..=600);
    let limits = AsyncLimits {
        segment_bytes,
        segment_age: ms(rng.random_range(1..=200)),
        wait_max: ms(rng.random_range(100..=1000)),
        buffer_bytes_max: segment_bytes * rng.random_range(1..=3),
        retry_pause: ms(rng.random_range(1..=300)),
    };
    let mut model = Model {
        limits,
        now: Instant::now(),
        committed: Vec::new(),
        log_start: 0,
        upload: None,
        next_first: 0,
        stored_last: None,
        stored_through: 0,
        watermark: None,
        read: None,
        lost: false,
        fail_watermark: false,
        watermark_failed: false,
        standing: false,
        closed_at: None,
        stopped: None,
        largest_record: 0,
    };
    let mut plan = AsyncPlan::new(limits);
    let mut revision = 1;
    for _ in 0..rng.random_range(10..300) {
        if model.stopped.is_some() {
            break;
        }
        model.now += ms(rng.random_range(0..=limits.wait_max.as_millis() as u64 / 5));
        model.fail_watermark = rng.random_bool(0.1);
        match rng.random_range(0..100) {
            0..40 if model.closed_at.is_none() => {
                let mut records = Vec::new();
                for _ in 0..rng.random_range(1..=3) {
                    // Now and then a lease-only record after a revision's own (sub > 0).
                    let sub = match records.last() {
                        Some(LogRecord { revision: r, sub, .. })
                            if *r == Revision(revision) && rng.random_bool(0.3) =>
                        {
                            sub + 1
                        }
                        _ => {
                            revision += 1;
                            0
                        }
                    };
                    let record = record(revision, sub, rng.random_range(0..=150));
                    model.largest_record = model.largest_record.max(record.encode().len());
                    records.push(record);
                }
                model.committed.extend(records.iter().cloned());
                model.step(&mut plan, committed(records));
            }
            40..55 if model.upload.is_some() => {
                let upload = model.upload.expect("in flight").0;
                let error = UploadError::Object(ObjectError::Unavailable("down".into()));
                model.step(&mut plan, AsyncInput::AttemptFailed { upload, error });
            }
            55..75 if model.upload.is_some() => model.stored(&mut plan),
            75..77 if model.upload.is_some() => {
                let upload = model.upload.expect("in flight").0;
                let error = UploadError::Conflict { key: "wal/x".into() };
                model.step(&mut plan, AsyncInput::Conflict { upload, error });
            }
            77..79 if model.upload.is_some() => {
                let (upload, first, ..) = model.upload.take().expect("in flight");
                model.next_first = first;
                model.step(&mut plan, AsyncInput::TaskEnded { upload, error: UploadError::Injected("test") });
            }
            79..90 if model.read.is_some() => {
                if rng.random_bool(0.1) {
                    model.read = None;
                    let error = crate::error::StoreError::Injected("read failed").into();
                    model.step(&mut plan, AsyncInput::LogReadFailed(error));
                } else {
                    model.answer_read(&mut plan);
                }
            }
            90 => {
                // Records lost from the local log before they were uploaded (it must not happen;
                // the plan must not pretend they were stored).
                model.log_start = model.committed.len().min(model.stored_through + 1);
            }
            91 | 92 => model.step(&mut plan, AsyncInput::InputClosed),
            _ => model.step(&mut plan, AsyncInput::Tick),
        }
    }
    // The store works again: once the input closes, everything is stored within wait_max (the
    // rounds are bounded), or it gives up if the input had closed long before.
    model.fail_watermark = false;
    if model.stopped.is_none() {
        model.step(&mut plan, AsyncInput::InputClosed);
    }
    for _ in 0..100_000 {
        if model.stopped.is_some() {
            break;
        }
        model.now += ms(1);
        if model.upload.is_some() {
            model.stored(&mut plan);
        } else if model.read.is_some() {
            model.answer_read(&mut plan);
        } else {
            model.step(&mut plan, AsyncInput::Tick);
        }
    }
    assert!(model.stopped.is_some(), "seed {seed}: the uploader ends");
    if model.stopped == Some(false) && !model.lost {
        assert_eq!(model.stored_through, model.committed.len(), "seed {seed}: every record stored");
        let last = model.committed.last().map(|r| r.position());
        if !model.watermark_failed {
            assert_eq!(model.watermark, last, "seed {seed}: the watermark at the last record");
        }
    }
}

#[test]
fn random_inputs_keep_the_async_invariants() {
    for seed in 0..500 {
        random_run(seed);
    }
}
