//! The watch workloads: how long a put takes to reach a watcher, how fast one writer's puts
//! fan out to many watchers, and how fast puts reach many single-key watchers.
//!
//! Modelled on etcd's `benchmark watch-latency` / `benchmark watch`. For watch-latency and
//! watch-fanout all watchers are prefix watches on `--prefix`; the writers put distinct keys under
//! it, and every event is matched to its put by key. For watch-keys watcher `w` watches key `w`
//! alone, put `i` goes to key `i mod --watchers`, and its value starts with `i` (8 bytes, big
//! endian), by which its event is matched. Watches are created (and confirmed by the server)
//! before the first put, and each put's send time is recorded: an event's latency is the time from
//! just before its put was sent to the moment the watcher's stream delivered it. The run's wall time goes from
//! the first put to the last event received by the last watcher. The warm-up puts (keys past the
//! timed ones) are made before any watch exists, so no watcher ever sees them.
//!
//! Each watcher is checked, not just timed: it must get the event of every acknowledged put
//! exactly once, with strictly rising revisions, the last at the revision of the last put.
//! Every wait is bounded: a stream that receives nothing for `--request-timeout-secs` while
//! events are still due, or that is still short of them `--request-timeout-secs` past
//! `--duration-max-secs`, is an error, never a hang.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, WatchOptions, WatchStream};
use tokio::sync::watch as signal;
use tokio::time::{sleep_until, timeout, timeout_at};

use crate::kv;
use crate::progress::Progress;
use crate::workload::{Budget, Outcome, Plan, WatchTally, Workload, connect, current_revision, random_bytes};

/// State the writers and the watchers' streams share.
struct Shared {
    plan: Plan,
    value: Vec<u8>,
    /// Timed puts in all (`--total`).
    total: u64,
    /// The next put number; a writer stops once it reaches `total`.
    next_op: AtomicU64,
    /// When put `i` was sent, in nanoseconds since `base`, plus one; 0 until it is sent.
    sent_ns: Vec<AtomicU64>,
    /// Whether put `i` was acknowledged (watch-keys counts each watcher's due events by it).
    acked: Vec<AtomicBool>,
    /// Watch-keys: the watchers, one key each; each put reaches one of them.
    single_key: Option<u64>,
    /// Just before the first put.
    base: Instant,
    /// The writers' cap; the watchers have `request_timeout` more to receive what was put.
    deadline: Instant,
    /// Counts acknowledged puts on a terminal.
    progress: Progress,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// The key put `op` writes.
    fn key_of(&self, op: u64) -> String {
        self.plan.key(self.single_key.map_or(op, |watchers| op % watchers))
    }

    /// The value put `op` writes: watch-keys' begins with `op`, which its event is matched by.
    fn value_of(&self, op: u64) -> Vec<u8> {
        let mut value = self.value.clone();
        if self.single_key.is_some() {
            value[..8].copy_from_slice(&op.to_be_bytes());
        }
        value
    }

    /// The put an event of `watcher` is for: by its key, or (watch-keys) its value, which must
    /// then be a put to the watcher's own key. `None`: no put of this run.
    fn op_of(&self, watcher: usize, key: &[u8], value: &[u8]) -> Option<u64> {
        match self.single_key {
            None => self.plan.key_index(key),
            Some(watchers) => {
                let op = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
                (op % watchers == watcher as u64 && key == self.plan.key(watcher as u64).as_bytes()).then_some(op)
            }
        }
    }

    /// The events `watcher` is due: of every put acknowledged (`Some(puts)` once the writers are
    /// done) or of every put to be made (`None`), and of those sent.
    fn due(&self, watcher: usize, puts: Option<Puts>) -> (u64, u64) {
        let Some(watchers) = self.single_key else {
            return puts.map_or((self.total, self.total), |p| (p.acked, p.sent));
        };
        let ops = (watcher as u64..self.total).step_by(watchers as usize);
        match puts {
            None => {
                let due = ops.count() as u64;
                (due, due)
            }
            Some(_) => ops.fold((0, 0), |(acked, sent), op| {
                let a = self.acked[op as usize].load(Ordering::Acquire);
                let s = self.sent_ns[op as usize].load(Ordering::Acquire) != 0;
                (acked + u64::from(a), sent + u64::from(s))
            }),
        }
    }
}

/// What the writers did, once all of them are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Puts {
    /// Puts sent, acknowledged or not.
    sent: u64,
    /// Puts the server acknowledged.
    acked: u64,
    /// The highest revision of an acknowledged put.
    last_rev: i64,
}

impl Puts {
    /// Every put sent was acknowledged, so each watcher must have exactly `acked` events.
    fn exact(&self) -> bool {
        self.sent == self.acked
    }
}

/// Connects the writers and the watchers, creates every watch, then times the puts' events.
pub async fn run(plan: &Plan) -> Result<Outcome, String> {
    let Budget::Ops(total) = plan.stop else {
        return Err(format!("{} needs a number of puts (--total)", plan.workload.name()));
    };
    let watchers = plan.watchers.max(1) as usize;
    let layout = layout(watchers, plan.conns as usize, plan.streams as usize);
    let mut writers = Vec::with_capacity(plan.clients as usize);
    for _ in 0..plan.clients {
        writers.push(connect(plan).await?);
    }
    warm_up(plan, total, &writers).await?;

    // The watch connections stay open (`watch_clients`) for as long as their streams are read.
    let mut watch_clients = Vec::with_capacity(layout.len());
    let mut opening = Vec::new();
    let mut first = 0;
    for per_conn in &layout {
        let client = connect(plan).await?;
        for &n in per_conn {
            let (client, plan) = (client.clone(), plan.clone());
            opening.push(tokio::spawn(async move { (first, open_stream(&client, &plan, first, n).await) }));
            first += n;
        }
        watch_clients.push(client);
    }
    let mut opened = Vec::with_capacity(opening.len());
    for task in opening {
        let (first, result) = task.await.map_err(|e| format!("watch setup failed: {e}"))?;
        let (stream, ids) = result?;
        opened.push((first, stream, ids));
    }

    let revision_start = current_revision(&mut writers[0].clone(), plan).await?;
    let base = Instant::now();
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        value: random_bytes(plan.val_size, 0x5eed),
        next_op: AtomicU64::new(0),
        total,
        sent_ns: (0..total).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..total).map(|_| AtomicBool::new(false)).collect(),
        single_key: (plan.workload == Workload::WatchKeys).then_some(watchers as u64),
        base,
        deadline: base + plan.duration_max,
        progress: Progress::start(plan.workload.name(), plan.stop),
    });
    let (puts_tx, puts_rx) = signal::channel(None);
    let mut receivers = Vec::with_capacity(opened.len());
    for (first, stream, ids) in opened {
        receivers.push(tokio::spawn(receive(stream, ids, first, shared.clone(), puts_rx.clone())));
    }
    let mut writing = Vec::with_capacity(writers.len());
    for client in writers {
        writing.push(tokio::spawn(writer(client, shared.clone())));
    }

    let mut outcome = Outcome::default();
    let mut puts = Puts::default();
    for task in writing {
        let (out, done) = task.await.map_err(|e| format!("writer failed: {e}"))?;
        outcome.merge(out);
        puts.sent += done.sent;
        puts.acked += done.acked;
        puts.last_rev = puts.last_rev.max(done.last_rev);
    }
    match current_revision(&mut watch_clients[0].clone(), plan).await {
        Ok(revision_end) => outcome.revisions = Some((revision_start, revision_end)),
        Err(e) => outcome.error(e),
    }
    // The receivers only stop waiting once they know how many puts there were.
    let _ = puts_tx.send(Some(puts));
    shared.progress.finish();

    let mut last_event_ns = 0;
    let mut verdicts = Vec::with_capacity(watchers);
    for task in receivers {
        let received = task.await.map_err(|e| format!("watch stream reader failed: {e}"))?;
        if let Some(e) = received.error {
            outcome.error(e);
        }
        outcome.latencies_us.extend(received.latencies_us);
        last_event_ns = last_event_ns.max(received.last_event_ns);
        verdicts.extend(received.tallies.iter().enumerate().map(|(i, t)| {
            let watcher = received.first + i;
            let verdict = match shared.single_key {
                None => t.verdict(&puts),
                Some(_) => t.verdict_due(shared.due(watcher, Some(puts))),
            };
            (watcher, verdict)
        }));
    }
    for (watcher, verdict) in verdicts {
        if let Err(e) = verdict {
            outcome.error(format!("watcher {watcher}: {e}"));
        }
    }
    outcome.elapsed = if last_event_ns > 0 { Duration::from_nanos(last_event_ns) } else { shared.base.elapsed() };
    outcome.watch = Some(WatchTally {
        watchers: watchers as u32,
        conns: layout.len() as u32,
        streams: layout.iter().map(Vec::len).sum::<usize>() as u32,
        puts: puts.acked,
        per_put: if shared.single_key.is_some() { 1 } else { watchers as u32 },
    });
    drop(watch_clients);
    Ok(outcome)
}

/// The warm-up: untimed puts made before any watch exists, so they warm the write path and no
/// watcher sees them; their keys come after the timed ones (`total..`).
async fn warm_up(plan: &Plan, total: u64, writers: &[Client]) -> Result<(), String> {
    let Budget::Ops(n) = plan.warmup else {
        return Err(format!("{} warms up by a number of puts (--warmup-ops)", plan.workload.name()));
    };
    let value = random_bytes(plan.val_size, 0x5eed);
    kv::write_keys(plan, writers, total..total.saturating_add(n), &value).await.map_err(|e| format!("warm-up: {e}"))
}

/// How the watchers sit: per connection, the number of watchers of each of its streams.
/// Streams are at least one and at most one per watcher; connections at most one per stream.
fn layout(watchers: usize, conns: usize, streams: usize) -> Vec<Vec<usize>> {
    let watchers = watchers.max(1);
    let streams = streams.clamp(1, watchers);
    let conns = conns.clamp(1, streams);
    let mut per_stream = spread(watchers, streams).into_iter();
    spread(streams, conns).into_iter().map(|n| per_stream.by_ref().take(n).collect()).collect()
}

/// `n` split into `parts` counts as even as can be, the larger first.
fn spread(n: usize, parts: usize) -> Vec<usize> {
    (0..parts).map(|i| n / parts + usize::from(i < n % parts)).collect()
}

/// Opens one watch stream on `client` with `n` watches (watchers `first..first + n`): prefix
/// watches, or (watch-keys) watcher `w` on key `w`. It creates them one at a time so each
/// server-chosen id is known to belong to the next watcher.
async fn open_stream(
    client: &Client,
    plan: &Plan,
    first: usize,
    n: usize,
) -> Result<(WatchStream, HashMap<i64, usize>), String> {
    let single_key = plan.workload == Workload::WatchKeys;
    let watch = |watcher: usize| {
        if single_key {
            (plan.key(watcher as u64), None)
        } else {
            (plan.prefix.clone(), Some(WatchOptions::new().with_prefix()))
        }
    };
    let step = plan.request_timeout;
    let (key, options) = watch(first);
    let mut stream = match timeout(step, client.watch_client().watch(key.as_str(), options)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("watch {key}: {e}")),
        Err(_) => return Err(format!("watch {key}: no stream after {} s", step.as_secs())),
    };
    let mut ids = HashMap::with_capacity(n);
    for i in 0..n {
        let watcher = first + i;
        if i > 0 {
            let (key, options) = watch(watcher);
            stream.watch(key.as_str(), options).await.map_err(|e| format!("watcher {watcher}: {e}"))?;
        }
        let response = match timeout(step, stream.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => return Err(format!("watcher {watcher}: the server closed the stream")),
            Ok(Err(e)) => return Err(format!("watcher {watcher}: {e}")),
            Err(_) => return Err(format!("watcher {watcher}: not created after {} s", step.as_secs())),
        };
        if !response.created() || response.canceled() || !response.events().is_empty() {
            return Err(format!(
                "watcher {watcher}: want a created response, got created={} canceled={} ({}) with {} events",
                response.created(),
                response.canceled(),
                response.cancel_reason(),
                response.events().len()
            ));
        }
        if ids.insert(response.watch_id(), i).is_some() {
            return Err(format!("watcher {watcher}: watch id {} given twice on one stream", response.watch_id()));
        }
    }
    Ok((stream, ids))
}

/// What a writer sent and the server acknowledged.
#[derive(Debug, Default)]
struct Written {
    sent: u64,
    acked: u64,
    last_rev: i64,
}

/// Puts (distinct keys, or watch-keys' watched keys in turn) one at a time until `total` puts are
/// taken or the cap is reached, at
/// `--put-rate` over all writers if one is set. A failed put ends this writer: its event may or
/// may not come, and the run has failed anyway.
async fn writer(mut client: Client, shared: Arc<Shared>) -> (Outcome, Written) {
    let plan = &shared.plan;
    let mut out = Outcome::default();
    let mut done = Written::default();
    loop {
        let op = shared.next_op.fetch_add(1, Ordering::Relaxed);
        if op >= shared.total {
            break;
        }
        if let Some(at) = scheduled_ns(op, plan.put_rate) {
            let at = shared.base + Duration::from_nanos(at);
            if at >= shared.deadline {
                out.stopped_early = true;
                break;
            }
            sleep_until(at.into()).await;
        }
        if Instant::now() >= shared.deadline {
            out.stopped_early = true;
            break;
        }
        shared.sent_ns[op as usize].store(shared.now_ns() + 1, Ordering::Release);
        done.sent += 1;
        match timeout_at(shared.deadline.into(), client.put(shared.key_of(op), shared.value_of(op), None)).await {
            Ok(Ok(response)) => {
                shared.acked[op as usize].store(true, Ordering::Release);
                done.acked += 1;
                shared.progress.op_done();
                done.last_rev = done.last_rev.max(response.header().map_or(0, |h| h.revision()));
            }
            Ok(Err(e)) => {
                out.error(format!("put {}: {e}", shared.key_of(op)));
                break;
            }
            Err(_elapsed) => {
                out.stopped_early = true;
                break;
            }
        }
    }
    (out, done)
}

/// When put `op` is due, in nanoseconds after the first, at `rate` puts a second; `None` for
/// no rate (as fast as the writers go).
fn scheduled_ns(op: u64, rate: u64) -> Option<u64> {
    (rate > 0).then(|| (u128::from(op) * 1_000_000_000 / u128::from(rate)).min(u128::from(u64::MAX)) as u64)
}

/// What one watcher has received, and the first thing wrong with it.
#[derive(Debug)]
struct Tally {
    events: u64,
    last_rev: i64,
    /// Put numbers seen, one bit each.
    seen: Vec<u64>,
    total: u64,
    error: Option<String>,
}

impl Tally {
    fn new(total: u64) -> Tally {
        Tally { events: 0, last_rev: 0, seen: vec![0; total.div_ceil(64) as usize], total, error: None }
    }

    /// One event: the put of number `op` (`None`: a key this run never wrote) at revision `rev`.
    /// True if it is a new put of this run, after the ones before it; the first problem is kept.
    fn observe(&mut self, op: Option<u64>, rev: i64) -> bool {
        self.events += 1;
        let problem = match op {
            Some(op) if op < self.total => {
                let (word, bit) = ((op / 64) as usize, 1u64 << (op % 64));
                if self.seen[word] & bit != 0 {
                    Some(format!("put {op} delivered twice (revision {rev})"))
                } else if rev <= self.last_rev {
                    Some(format!("put {op} at revision {rev} delivered after revision {}", self.last_rev))
                } else {
                    self.seen[word] |= bit;
                    self.last_rev = rev;
                    None
                }
            }
            _ => Some(format!("an event for a key this run did not put (revision {rev})")),
        };
        match problem {
            None => true,
            Some(p) => {
                self.error.get_or_insert(p);
                false
            }
        }
    }

    /// Marks the watcher failed for a reason of its own (cancelled, a delete, ...).
    fn fail(&mut self, reason: String) {
        self.error.get_or_insert(reason);
    }

    /// Has every event it can expect: `target` of them.
    fn complete(&self, target: u64) -> bool {
        self.events >= target
    }

    /// After a watch-keys run: the events of every acknowledged put to its key, and perhaps of
    /// some sent but not acknowledged (`due`: those acknowledged, those sent).
    fn verdict_due(&self, (acked, sent): (u64, u64)) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if (acked..=sent).contains(&self.events) {
            Ok(())
        } else if acked == sent {
            Err(format!("got {} events of its key, want {acked}", self.events))
        } else {
            Err(format!("got {} events of its key, want {acked} to {sent}", self.events))
        }
    }

    /// After the run: every acknowledged put once, in order, the last at the last put's revision.
    /// If some put was sent but not acknowledged, its event may or may not have come.
    fn verdict(&self, puts: &Puts) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let ok = if puts.exact() {
            self.events == puts.acked && self.last_rev == puts.last_rev
        } else {
            (puts.acked..=puts.sent).contains(&self.events)
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "got {} events, the last at revision {}; want {} events, the last at revision {}",
                self.events, self.last_rev, puts.acked, puts.last_rev
            ))
        }
    }
}

/// One stream's watchers once reading stops.
struct Received {
    /// Index of the stream's first watcher.
    first: usize,
    tallies: Vec<Tally>,
    latencies_us: Vec<u64>,
    /// When the stream's last event arrived, in nanoseconds since `base`; 0 for none.
    last_event_ns: u64,
    /// Why reading stopped early, if it did.
    error: Option<String>,
}

/// Reads one stream until each of its watchers has an event for every put, timing each event.
async fn receive(
    mut stream: WatchStream,
    ids: HashMap<i64, usize>,
    first: usize,
    shared: Arc<Shared>,
    mut puts: signal::Receiver<Option<Puts>>,
) -> Received {
    let plan = &shared.plan;
    let mut tallies: Vec<Tally> = (0..ids.len()).map(|_| Tally::new(shared.total)).collect();
    let mut out = Received { first, tallies: Vec::new(), latencies_us: Vec::new(), last_event_ns: 0, error: None };
    let hard_deadline = shared.deadline + plan.request_timeout;
    // At a slow --put-rate, quiet between puts is not a stall.
    let idle_max = plan.request_timeout + scheduled_ns(1, plan.put_rate).map_or(Duration::ZERO, Duration::from_nanos);
    let mut active = Instant::now();
    let mut writers_done = false;
    let watchers = format!("watchers {first}..{}", first + ids.len());
    // What each watcher is due, settled again once the writers are done.
    let mut targets: Vec<u64> = (0..ids.len()).map(|w| shared.due(first + w, None).0).collect();
    loop {
        if tallies.iter().zip(&targets).all(|(t, &target)| t.complete(target)) {
            break;
        }
        let wake = (active + idle_max).min(hard_deadline);
        tokio::select! {
            message = stream.message() => {
                active = Instant::now();
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        out.error = Some(format!("{watchers}: the server closed the watch stream"));
                        break;
                    }
                    Err(e) => {
                        out.error = Some(format!("{watchers}: {e}"));
                        break;
                    }
                };
                let Some(&w) = ids.get(&response.watch_id()) else {
                    if response.events().is_empty() {
                        continue; // a progress notification, say
                    }
                    out.error = Some(format!("{watchers}: events for unknown watch id {}", response.watch_id()));
                    break;
                };
                let tally = &mut tallies[w];
                if response.canceled() {
                    tally.fail(format!(
                        "cancelled by the server ({}; compact revision {})",
                        response.cancel_reason(),
                        response.compact_revision()
                    ));
                }
                if response.events().is_empty() {
                    continue;
                }
                let now_ns = shared.now_ns();
                out.last_event_ns = out.last_event_ns.max(now_ns);
                for event in response.events() {
                    let Some(kv) = event.kv() else {
                        tally.fail("an event without a key-value".to_string());
                        continue;
                    };
                    if event.event_type() != EventType::Put {
                        tally.fail(format!("a delete event for {}", String::from_utf8_lossy(kv.key())));
                    }
                    let op = shared.op_of(first + w, kv.key(), kv.value());
                    if !tally.observe(op, kv.mod_revision()) {
                        continue;
                    }
                    let sent_ns = op.map_or(0, |op| shared.sent_ns[op as usize].load(Ordering::Acquire));
                    if sent_ns == 0 {
                        tally.fail(format!("an event for put {op:?} before it was sent"));
                        continue;
                    }
                    out.latencies_us.push((now_ns + 1).saturating_sub(sent_ns) / 1000);
                }
            }
            changed = puts.changed(), if !writers_done => {
                // Once the writers are done, due events have `request_timeout` more to arrive.
                writers_done = true;
                active = Instant::now();
                if changed.is_err() {
                    out.error = Some(format!("{watchers}: the writers vanished"));
                    break;
                }
                let known = *puts.borrow();
                targets = (0..ids.len()).map(|w| shared.due(first + w, known).0).collect();
            }
            () = sleep_until(wake.into()) => {
                let have: u64 = tallies.iter().zip(&targets).map(|(t, &target)| t.events.min(target)).sum();
                let want: u64 = targets.iter().sum();
                let why = if wake >= hard_deadline {
                    format!("still short {} s past --duration-max-secs", plan.request_timeout.as_secs())
                } else {
                    format!("nothing received for {:.1} s", idle_max.as_secs_f64())
                };
                out.error = Some(format!("{watchers}: {why}, with {have} of {want} events in"));
                break;
            }
        }
    }
    out.tallies = tallies;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_even_and_adds_up() {
        assert_eq!(spread(10, 3), vec![4, 3, 3]);
        assert_eq!(spread(9, 3), vec![3, 3, 3]);
        assert_eq!(spread(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(spread(1000, 100).iter().sum::<usize>(), 1000);
    }

    #[test]
    fn layout_spreads_watchers_over_streams_over_conns() {
        let l = layout(1000, 10, 100);
        assert_eq!(l.len(), 10);
        assert!(l.iter().all(|c| c.len() == 10 && c.iter().all(|&n| n == 10)));
        assert_eq!(layout(7, 2, 3), vec![vec![3, 2], vec![2]]);
        assert_eq!(layout(1, 1, 1), vec![vec![1]]);
    }

    #[test]
    fn layout_never_has_empty_streams_or_conns() {
        // More streams than watchers, more connections than streams.
        assert_eq!(layout(3, 10, 100), vec![vec![1], vec![1], vec![1]]);
        assert_eq!(layout(5, 4, 2), vec![vec![3], vec![2]]);
        assert_eq!(layout(4, 0, 0), vec![vec![4]]);
        for (w, c, s) in [(1000, 7, 33), (10, 10, 10), (1, 5, 5), (999, 1, 1)] {
            let l = layout(w, c, s);
            assert_eq!(l.iter().flatten().sum::<usize>(), w);
            assert!(l.iter().all(|conn| !conn.is_empty() && conn.iter().all(|&n| n > 0)));
        }
    }

    #[test]
    fn put_schedule_follows_the_rate() {
        assert_eq!(scheduled_ns(5, 0), None);
        assert_eq!(scheduled_ns(0, 100), Some(0));
        assert_eq!(scheduled_ns(1, 100), Some(10_000_000));
        assert_eq!(scheduled_ns(250, 1000), Some(250_000_000));
        assert_eq!(scheduled_ns(u64::MAX, 1), Some(u64::MAX));
    }

    fn exact(acked: u64, last_rev: i64) -> Puts {
        Puts { sent: acked, acked, last_rev }
    }

    #[test]
    fn a_watcher_with_every_put_in_order_passes() {
        let mut t = Tally::new(3);
        assert!(t.observe(Some(0), 10));
        assert!(t.observe(Some(1), 11));
        assert!(t.observe(Some(2), 12));
        assert!(t.complete(3));
        assert_eq!(t.verdict(&exact(3, 12)), Ok(()));
    }

    #[test]
    fn puts_of_several_writers_may_come_in_any_key_order() {
        let mut t = Tally::new(3);
        assert!(t.observe(Some(2), 10));
        assert!(t.observe(Some(0), 11));
        assert!(t.observe(Some(1), 12));
        assert_eq!(t.verdict(&exact(3, 12)), Ok(()));
    }

    #[test]
    fn a_missing_event_fails() {
        let mut t = Tally::new(3);
        t.observe(Some(0), 10);
        t.observe(Some(2), 12);
        assert!(!t.complete(3));
        let e = t.verdict(&exact(3, 12)).unwrap_err();
        assert!(e.contains("got 2 events"), "{e}");
    }

    #[test]
    fn the_last_revision_must_be_the_last_put() {
        let mut t = Tally::new(2);
        t.observe(Some(0), 10);
        t.observe(Some(1), 11);
        assert!(t.verdict(&exact(2, 12)).is_err());
    }

    #[test]
    fn a_duplicate_fails_even_if_the_count_is_right() {
        let mut t = Tally::new(3);
        assert!(t.observe(Some(0), 10));
        assert!(t.observe(Some(1), 11));
        assert!(!t.observe(Some(1), 11));
        assert!(t.complete(3));
        assert!(t.verdict(&exact(3, 12)).unwrap_err().contains("twice"));
    }

    #[test]
    fn a_revision_going_back_fails() {
        let mut t = Tally::new(3);
        assert!(t.observe(Some(1), 11));
        assert!(!t.observe(Some(0), 10));
        assert!(t.verdict(&exact(2, 11)).unwrap_err().contains("after revision 11"));
    }

    #[test]
    fn foreign_keys_fail() {
        let mut t = Tally::new(3);
        assert!(!t.observe(None, 5));
        assert!(!t.observe(Some(3), 6));
        assert_eq!(t.events, 2);
        assert!(t.verdict(&exact(0, 0)).unwrap_err().contains("did not put"));
    }

    #[test]
    fn the_first_problem_is_the_one_kept() {
        let mut t = Tally::new(3);
        t.observe(Some(0), 10);
        t.observe(Some(0), 10);
        t.fail("later".to_string());
        assert!(t.verdict(&exact(1, 10)).unwrap_err().contains("twice"));
    }

    #[test]
    fn an_unacknowledged_put_may_or_may_not_show() {
        let puts = Puts { sent: 3, acked: 2, last_rev: 11 };
        let mut t = Tally::new(3);
        t.observe(Some(0), 10);
        t.observe(Some(1), 11);
        assert_eq!(t.verdict(&puts), Ok(()));
        t.observe(Some(2), 12);
        assert_eq!(t.verdict(&puts), Ok(()));
        let mut short = Tally::new(3);
        short.observe(Some(0), 10);
        assert!(short.verdict(&puts).is_err());
    }

    #[test]
    fn watch_keys_counts_each_watchers_own_puts() {
        let mut t = Tally::new(10);
        assert!(t.observe(Some(1), 10));
        assert!(t.observe(Some(4), 13));
        assert_eq!(t.verdict_due((2, 2)), Ok(()));
        assert!(t.verdict_due((3, 3)).unwrap_err().contains("want 3"));
        assert_eq!(t.verdict_due((1, 2)), Ok(()));
    }

    #[test]
    fn a_tally_counts_bits_past_one_word() {
        let mut t = Tally::new(200);
        for op in 0..200 {
            assert!(t.observe(Some(op), op as i64 + 1));
        }
        assert!(!t.observe(Some(130), 500));
        assert_eq!(t.events, 201);
    }
}
