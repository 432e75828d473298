//! Seeded random interleavings of what a shard's streams meet (writes of puts, deletes and txns in
//! groups, clients that stall and drain, catch-up reads that finish late and in bounded batches,
//! compactions, watchers created at past, current and future revisions with filters, `prev_kv` and
//! fragments, cancels, progress requests and ticks), driven through the state machine alone and
//! checked against the watch model (`watch_model.rs`, the integration tests' model too) for etcd's
//! guarantees: each revision's events in one response, in order, never twice, no gap from the start
//! revision to the last revision sent, a compacted start canceled with the compact revision, and
//! progress never ahead of the events sent.

mod guarantees;

use std::collections::VecDeque;

use guarantees::{Client, Create, History};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::ids::Term;
use crate::log::{LogEvent, LogRecord};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};
use crate::shard::index::WatcherIndex;
use crate::shard::watch::WatcherKey;
use crate::shard::watch_model::{Model, Watch, key_space, random_watch, random_write};

const SEEDS: u64 = 300;
const STEPS: usize = 300;
const STREAMS_MAX: usize = 3;
/// Explicit watch ids start here, above any id the streams assign themselves in a run.
const EXPLICIT_IDS: i64 = 100_000;
/// Inputs the final drain may take before a catch-up that never ends is a failure.
const DRAIN_STEPS_MAX: usize = 100_000;

#[test]
fn random_interleavings_keep_etcds_watch_guarantees() {
    let mut reached = Reached::default();
    for seed in 0..SEEDS {
        let mut sim = Sim::new(seed);
        let outcome = sim.run().and_then(|()| sim.check());
        if let Err(failure) = outcome {
            let trace = sim.trace[sim.trace.len().saturating_sub(40)..].join("\n  ");
            panic!("seed {seed}: {failure}\nlast inputs:\n  {trace}");
        }
        reached.add(&sim.reached);
    }
    // The runs must reach every decision, or they check little.
    let Reached { fell_behind, waits, reads, compacted, fragments, progress } = reached;
    assert!([fell_behind, waits, reads, compacted, fragments, progress].iter().all(|&n| n >= 50), "{reached:?}");
}

/// How often the runs reached each decision.
#[derive(Debug, Default, Clone, Copy)]
struct Reached {
    fell_behind: usize,
    waits: usize,
    reads: usize,
    compacted: usize,
    fragments: usize,
    progress: usize,
}

impl Reached {
    fn add(&mut self, other: &Reached) {
        self.fell_behind += other.fell_behind;
        self.waits += other.waits;
        self.reads += other.reads;
        self.compacted += other.compacted;
        self.fragments += other.fragments;
        self.progress += other.progress;
    }
}

/// One stream, its outbox and its client.
struct SimStream {
    sync: StreamSync,
    /// Each output with its bytes.
    outbox: VecDeque<(WatchOutput, usize)>,
    queued_bytes: usize,
    /// What the client took, in order.
    taken: Vec<WatchOutput>,
    /// The read the catch-up asked for and has not got yet.
    read: Option<HistoryRequest>,
    waiting_for_client: bool,
    creates: Vec<Create>,
}

struct Sim {
    rng: ChaCha8Rng,
    keys: Vec<Vec<u8>>,
    model: Model,
    /// Every record committed, with each event's previous version.
    log: Vec<(LogRecord, Vec<Option<KeyValue>>)>,
    /// Every event, in order.
    events: Vec<Event>,
    compact: i64,
    limits: Limits,
    index: WatcherIndex<WatcherKey>,
    streams: Vec<SimStream>,
    explicit_ids: i64,
    trace: Vec<String>,
    reached: Reached,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let limits = Limits { buffer_bytes: rng.random_range(150..3000), fragment_bytes: rng.random_range(40..400) };
        Sim {
            rng,
            keys: key_space(),
            model: Model::default(),
            log: Vec::new(),
            events: Vec::new(),
            compact: 0,
            limits,
            index: WatcherIndex::default(),
            streams: Vec::new(),
            explicit_ids: EXPLICIT_IDS,
            trace: Vec::new(),
            reached: Reached::default(),
        }
    }

    fn current(&self) -> i64 {
        self.model.revision
    }

    fn now(&self, stream: usize) -> Now {
        Now { current: Revision(self.current()), queued_bytes: self.streams[stream].queued_bytes }
    }

    fn run(&mut self) -> Result<(), String> {
        self.open_stream();
        for _ in 0..STEPS {
            match self.rng.random_range(0..100) {
                0..30 => self.write_group(),
                30..45 => self.client_takes(),
                45..60 => self.finish_read()?,
                60..64 => self.compact(),
                64..77 => self.create(),
                77..81 => self.cancel(),
                81..85 => self.progress_request(),
                85..89 => self.progress_tick(),
                89..92 => self.open_stream(),
                _ => self.wait_ran_out(),
            }
        }
        self.drain()
    }

    fn open_stream(&mut self) {
        if self.streams.len() < STREAMS_MAX {
            self.trace.push(format!("open stream {}", self.streams.len()));
            self.streams.push(SimStream {
                sync: StreamSync::new(self.limits, IDENTITY),
                outbox: VecDeque::new(),
                queued_bytes: 0,
                taken: Vec::new(),
                read: None,
                waiting_for_client: false,
                creates: Vec::new(),
            });
        }
    }

    fn random_stream(&mut self) -> usize {
        self.rng.random_range(0..self.streams.len())
    }

    /// One committed group of one to three writes (a lease-only record now and then).
    fn write_group(&mut self) {
        let applied = self.current();
        let mut records = Vec::new();
        let mut prevs = Vec::new();
        for _ in 0..self.rng.random_range(1..=3) {
            let ops = random_write(&mut self.rng, &self.keys, self.log.len());
            let events = self.model.apply(&ops);
            if events.is_empty() {
                continue;
            }
            let record = LogRecord {
                revision: Revision(self.current()),
                sub: 0,
                events: events.iter().map(log_event).collect(),
            };
            records.push(record);
            prevs.push(events.iter().map(|e| e.prev_kv.clone()).collect::<Vec<_>>());
            self.events.extend(events);
            if self.rng.random_range(0..5) == 0 {
                records.push(LogRecord {
                    revision: Revision(self.current()),
                    sub: 1,
                    events: vec![LogEvent::LeaseRevoke { id: 7 }],
                });
                prevs.push(vec![None]);
            }
        }
        self.trace.push(format!("group up to {} ({} records)", self.current(), records.len()));
        self.log.extend(records.iter().cloned().zip(prevs.iter().cloned()));
        let routed = route(&self.index, &records, &prevs, Revision(applied));
        for (stream, revisions) in routed {
            let stream = stream as usize;
            let now = self.now(stream);
            let effects = self.streams[stream].sync.group_applied(&revisions, now);
            self.carry_out(stream, effects);
        }
    }

    /// A client takes some of its responses.
    fn client_takes(&mut self) {
        let stream = self.random_stream();
        let s = &mut self.streams[stream];
        let count = self.rng.random_range(0..=s.outbox.len());
        for _ in 0..count {
            let (output, bytes) = s.outbox.pop_front().expect("counted");
            s.queued_bytes -= bytes;
            s.taken.push(output);
        }
        self.trace.push(format!("stream {stream}: client takes {count}"));
        if count > 0 && s.waiting_for_client {
            s.waiting_for_client = false;
            let now = self.now(stream);
            let effects = self.streams[stream].sync.client_drained(now);
            self.carry_out(stream, effects);
        }
    }

    /// A catch-up's wait for its client runs out.
    fn wait_ran_out(&mut self) {
        let stream = self.random_stream();
        if std::mem::take(&mut self.streams[stream].waiting_for_client) {
            self.trace.push(format!("stream {stream}: wait ran out"));
            let now = self.now(stream);
            let effects = self.streams[stream].sync.client_drained(now);
            self.carry_out(stream, effects);
        }
    }

    /// A catch-up read finishes: the log as the store holds it now, cut after a random number of
    /// records (the byte bound).
    fn finish_read(&mut self) -> Result<(), String> {
        let stream = self.random_stream();
        self.finish_read_of(stream)
    }

    fn finish_read_of(&mut self, stream: usize) -> Result<(), String> {
        let Some(request) = self.streams[stream].read.take() else { return Ok(()) };
        let first = request.from.max(Revision(self.compact));
        let in_range: Vec<&(LogRecord, Vec<Option<KeyValue>>)> =
            self.log.iter().filter(|(r, _)| r.revision >= first && r.revision <= request.to).collect();
        let records_max = self.rng.random_range(1..=4);
        let (read, covered) = match in_range.len() > records_max {
            true => (&in_range[..records_max], in_range[records_max - 1].0.revision),
            false => (&in_range[..], request.to),
        };
        let batch = HistoryBatch {
            from: first,
            compact: Revision(self.compact),
            covered,
            records: read.iter().map(|(r, _)| r.clone()).collect(),
            prevs: if request.want_prev { read.iter().map(|(_, p)| p.clone()).collect() } else { Vec::new() },
            with_prev: request.want_prev,
        };
        self.trace
            .push(format!("stream {stream}: read {request:?} gives {first}..={covered}, compact {}", self.compact));
        let now = self.now(stream);
        let effects = self.streams[stream].sync.history_read(&batch, now);
        self.carry_out(stream, effects);
        Ok(())
    }

    fn compact(&mut self) {
        if self.current() > self.compact {
            self.compact = self.rng.random_range(self.compact + 1..=self.current());
            self.trace.push(format!("compact at {}", self.compact));
        }
    }

    fn create(&mut self) {
        let stream = self.random_stream();
        let current = self.current();
        let mut watch = random_watch(&mut self.rng, &self.keys, 1..=1);
        watch.start_revision = match self.rng.random_range(0..6) {
            0 | 1 => 0,
            2 => self.rng.random_range(1..=current),
            3 => current,
            4 => (current - 2).max(1),
            _ => self.rng.random_range(current + 1..=current + 3),
        };
        let mut request = watch_create(&watch);
        request.fragment = self.rng.random_range(0..5) == 0;
        request.progress_notify = self.rng.random_range(0..3) == 0;
        // Id 0 asks the stream to pick one (as etcd's requests do): only others can be duplicates.
        let in_use: Vec<WatchId> =
            self.streams[stream].sync.watchers().map(|(id, _)| id).filter(|&id| id != WatchId(0)).collect();
        let mut refused = false;
        match self.rng.random_range(0..10) {
            0 => {
                self.explicit_ids += 1;
                request.watch_id = Some(WatchId(self.explicit_ids));
            }
            1 if !in_use.is_empty() => {
                request.watch_id = Some(in_use[self.rng.random_range(0..in_use.len())]);
                refused = true;
            }
            _ => {}
        }
        self.trace.push(format!("stream {stream}: create {request:?} at {current}"));
        self.streams[stream].creates.push(Create { request: watch, current, compact: self.compact, refused });
        let now = self.now(stream);
        let effects = self.streams[stream].sync.create(&request, now);
        self.carry_out(stream, effects);
    }

    fn cancel(&mut self) {
        let stream = self.random_stream();
        let ids: Vec<WatchId> = self.streams[stream].sync.watchers().map(|(id, _)| id).collect();
        let watch_id = match ids.is_empty() || self.rng.random_range(0..10) == 0 {
            true => WatchId(99), // not watching: no answer
            false => ids[self.rng.random_range(0..ids.len())],
        };
        self.trace.push(format!("stream {stream}: cancel {watch_id}"));
        let now = self.now(stream);
        let effects = self.streams[stream].sync.cancel(watch_id, now);
        self.carry_out(stream, effects);
    }

    fn progress_request(&mut self) {
        let stream = self.random_stream();
        self.trace.push(format!("stream {stream}: progress request at {}", self.current()));
        let now = self.now(stream);
        let effects = self.streams[stream].sync.progress_requested(now);
        self.carry_out(stream, effects);
    }

    fn progress_tick(&mut self) {
        self.trace.push(format!("progress tick at {}", self.current()));
        for stream in 0..self.streams.len() {
            let now = self.now(stream);
            let effects = self.streams[stream].sync.progress_tick(now);
            self.carry_out(stream, effects);
        }
    }

    /// Every client takes everything and every catch-up runs to its end.
    fn drain(&mut self) -> Result<(), String> {
        self.trace.push("drain".into());
        for _ in 0..DRAIN_STEPS_MAX {
            let mut busy = false;
            for stream in 0..self.streams.len() {
                let s = &mut self.streams[stream];
                s.taken.extend(s.outbox.drain(..).map(|(output, _)| output));
                s.queued_bytes = 0;
                if std::mem::take(&mut s.waiting_for_client) {
                    busy = true;
                    let effects =
                        s.sync.client_drained(Now { current: Revision(self.model.revision), queued_bytes: 0 });
                    self.carry_out(stream, effects);
                }
            }
            for stream in 0..self.streams.len() {
                if self.streams[stream].read.is_some() {
                    busy = true;
                    self.finish_read_of(stream)?;
                }
            }
            if !busy {
                return Ok(());
            }
        }
        Err(format!("catch-ups still going after {DRAIN_STEPS_MAX} drain steps"))
    }

    /// Carries out a stream's effects as the shard would, asserting at most one catch-up step at a
    /// time.
    fn carry_out(&mut self, stream: usize, effects: Vec<Effect>) {
        for effect in effects {
            let s = &mut self.streams[stream];
            match effect {
                Effect::Send { output, bytes } => {
                    self.reached.fragments += usize::from(matches!(output, WatchOutput::Events { fragment: true, .. }));
                    self.reached.compacted += usize::from(matches!(output, WatchOutput::Compacted { .. }));
                    self.reached.progress += usize::from(matches!(
                        output,
                        WatchOutput::Progress { .. } | WatchOutput::StreamProgress { .. }
                    ));
                    s.queued_bytes += bytes;
                    s.outbox.push_back((output, bytes));
                }
                Effect::Index { watch_id, span } => {
                    self.index.insert(&span, WatcherKey { stream: stream as u64, watch_id })
                }
                Effect::Unindex { watch_id, span } => {
                    self.index.remove(&span, WatcherKey { stream: stream as u64, watch_id })
                }
                Effect::FellBehind { .. } => self.reached.fell_behind += 1,
                Effect::ReadHistory(request) => {
                    self.reached.reads += 1;
                    assert!(s.read.is_none() && !s.waiting_for_client, "two catch-up steps at once");
                    s.read = Some(request);
                }
                Effect::WaitForClient => {
                    self.reached.waits += 1;
                    assert!(s.read.is_none() && !s.waiting_for_client, "two catch-up steps at once");
                    s.waiting_for_client = true;
                }
            }
        }
    }

    /// Checks what every client took against the model.
    fn check(&self) -> Result<(), String> {
        for (stream, s) in self.streams.iter().enumerate() {
            let history = History { events: &self.events, current: self.current(), compact: self.compact };
            Client::new(history).check(&s.creates, &s.taken).map_err(|e| format!("stream {stream}: {e}"))?;
        }
        Ok(())
    }
}

/// Who answers: sizes count the headers that name it.
const IDENTITY: Identity = Identity { member_id: 1, cluster_id: 2, term: Term(3) };

/// The create request the etcd layer makes of the model's watch (an empty key is `\0`, as etcd
/// reads it); fragments, progress notifications and the id are the simulation's to choose.
fn watch_create(w: &Watch) -> WatchCreate {
    let key = if w.key.is_empty() { vec![0] } else { w.key.clone() };
    WatchCreate {
        span: KeySpan::from_etcd(&key, &w.range_end),
        start_revision: Revision(w.start_revision),
        filter: EventFilter { no_put: w.no_put, no_delete: w.no_delete, prev_kv: w.prev_kv },
        progress_notify: false,
        fragment: false,
        watch_id: None,
    }
}

/// The log event a model event was committed as.
fn log_event(event: &Event) -> LogEvent {
    let kv = event.kv.as_ref().expect("an event carries a kv");
    match event.r#type == EventType::Put as i32 {
        true => LogEvent::Put {
            key: kv.key.clone(),
            value: kv.value.clone(),
            create_revision: Revision(kv.create_revision),
            version: kv.version,
            lease: kv.lease,
        },
        false => LogEvent::Delete { key: kv.key.clone() },
    }
}
