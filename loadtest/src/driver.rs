//! The request/response workloads' driver: connections, set-up, warm-up, the timed phase, checks.
//!
//! `--clients` workers share `--conns` connections (client `i` on connection `i % conns`), as
//! etcd's `benchmark` does. Each phase hands out op numbers from one shared counter, which bounds
//! it by its budget (ops or time) and spreads it over whoever is fastest; the warm-up's op
//! numbers come first, so keys stay distinct across phases. Every op is also bounded by the
//! phase's cap (`--duration-max-secs`), so a stuck server ends the run early instead of hanging
//! it. One op of a workload lives in its module (`kv`, `txn`, `lease`, `list`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::time::timeout_at;

use crate::progress::Progress;
use crate::txn::CounterViews;
use crate::workload::{
    Budget, ListTally, Outcome, Plan, SplitMix64, TxnTally, Workload, connect, current_revision, random_bytes,
};
use crate::{kv, lease, list, txn};

/// Why one op did not succeed.
#[derive(Debug)]
pub(crate) struct OpFailure {
    pub message: String,
    /// Txn: the failed request may have been applied (a sent transaction without an answer).
    pub maybe_applied: bool,
}

impl OpFailure {
    pub fn new(message: impl Into<String>) -> OpFailure {
        OpFailure { message: message.into(), maybe_applied: false }
    }
}

/// A successful op.
#[derive(Debug, Default)]
pub(crate) struct OpDone {
    /// Txn: compare-and-swap conflicts it retried through.
    pub conflicts: u64,
    /// Its latency when only part of it is timed (lease-churn leaves out its check); `None`: all.
    pub latency: Option<Duration>,
    /// List workloads: the range requests it made and the keys they returned.
    pub pages: u64,
    pub keys_read: u64,
}

pub(crate) type OpResult = Result<OpDone, OpFailure>;

/// One client: its connection (shared with others) and its own state.
struct Worker {
    client: Client,
    rng: SplitMix64,
    /// Txn: what this client last saw of each counter.
    views: CounterViews,
    /// List: where its paged walk of the prefix stands.
    walk: Option<list::Walk>,
}

/// What every worker of a run reads.
pub(crate) struct Shared {
    pub plan: Plan,
    pub value: Vec<u8>,
}

/// One phase (warm-up or timed), shared by its workers.
struct Phase {
    budget: Budget,
    /// The op number of this phase's first op.
    first_op: u64,
    /// The next op number, counted from `first_op`.
    next_op: AtomicU64,
    /// When a `Budget::Time` phase stops handing out ops.
    end: Instant,
    /// The hard cap: no request runs past it.
    cap: Instant,
    progress: Progress,
}

impl Phase {
    fn start(plan: &Plan, budget: Budget, first_op: u64, name: &str) -> Arc<Phase> {
        let now = Instant::now();
        let end = match budget {
            Budget::Ops(_) => now + plan.duration_max,
            Budget::Time(d) => now + d.min(plan.duration_max),
        };
        Arc::new(Phase {
            budget,
            first_op,
            next_op: AtomicU64::new(0),
            end,
            cap: now + plan.duration_max,
            progress: Progress::start(format!("{} {name}", plan.workload.name()).trim_end(), budget),
        })
    }

    /// The next op number, or `None` once the budget is spent.
    fn take(&self) -> Option<u64> {
        let i = self.next_op.fetch_add(1, Ordering::Relaxed);
        let open = match self.budget {
            Budget::Ops(n) => i < n,
            Budget::Time(_) => Instant::now() < self.end,
        };
        open.then_some(self.first_op + i)
    }
}

/// Connects, sets up the keys the workload needs, warms up, runs the timed phase and checks.
pub async fn run(plan: &Plan) -> Result<Outcome, String> {
    if plan.workload.is_watch() {
        return crate::watch::run(plan).await;
    }
    let mut pool = Vec::with_capacity(plan.conns as usize);
    for _ in 0..plan.conns {
        pool.push(connect(plan).await?);
    }
    let mut workers: Vec<Worker> = (0..plan.clients as usize)
        .map(|i| Worker {
            client: pool[i % pool.len()].clone(),
            rng: SplitMix64(i as u64 + 1),
            views: CounterViews::default(),
            walk: None,
        })
        .collect();
    let shared = Arc::new(Shared { plan: plan.clone(), value: random_bytes(plan.val_size, 0x5eed) });
    match plan.workload {
        w if w.needs_keys() => kv::write_keys(plan, &pool, 0..plan.key_space, &shared.value)
            .await
            .map_err(|e| format!("pre-populate: {e}"))?,
        Workload::Txn => kv::write_keys(plan, &pool, 0..plan.key_space, txn::COUNTER_START)
            .await
            .map_err(|e| format!("reset: {e}"))?,
        _ => {}
    }
    if plan.workload == Workload::ListHot {
        // The history a list crosses: every hot key updated `--hot-updates` times.
        for _ in 0..plan.hot_updates {
            kv::write_keys(plan, &pool, 0..plan.hot_keys, &shared.value)
                .await
                .map_err(|e| format!("hot key history: {e}"))?;
        }
    }
    let hot_writers = (plan.workload == Workload::ListHot).then(|| list::HotWriters::start(plan, &pool, &shared.value));

    // Txn: the warm-up's increments count towards the counters' sum too.
    let (mut warm_ok, mut warm_maybe_applied) = (0, 0);
    let mut first_op = 0;
    if !plan.warmup.is_empty() {
        let warm;
        (workers, warm) = run_phase(workers, &shared, Phase::start(plan, plan.warmup, 0, "warm-up")).await?;
        if let Some(e) = &warm.first_error {
            return Err(format!("warm-up: {} errors; first: {e}", warm.errors));
        }
        warm_ok = warm.ok();
        warm_maybe_applied = warm.maybe_applied;
        first_op = warm.ops_issued;
    }
    let revision_start = current_revision(&mut pool[0].clone(), plan).await?;
    let (_, mut outcome) = run_phase(workers, &shared, Phase::start(plan, plan.stop, first_op, "")).await?;
    let mut hot_puts = 0;
    if let Some(writers) = hot_writers {
        let error;
        (hot_puts, error) = writers.stop().await;
        if let Some(e) = error {
            outcome.error(e);
        }
    }
    if plan.workload.is_list() {
        outcome.list =
            Some(ListTally { keys: plan.key_space, pages: outcome.pages, keys_read: outcome.keys_read, hot_puts });
    }
    match current_revision(&mut pool[0].clone(), plan).await {
        Ok(revision_end) => outcome.revisions = Some((revision_start, revision_end)),
        Err(e) => outcome.error(e),
    }
    if plan.workload == Workload::Txn {
        let increments = warm_ok + outcome.ok();
        match txn::read_sum(plan, &mut pool[0].clone()).await {
            Ok(counter_sum) => {
                let maybe_applied = warm_maybe_applied + outcome.maybe_applied;
                if let Err(e) = txn::check_sum(counter_sum, increments, maybe_applied) {
                    outcome.error(e);
                }
                outcome.txn = Some(TxnTally { counters: plan.key_space, increments, counter_sum });
            }
            Err(e) => outcome.error(e),
        }
    }
    Ok(outcome)
}

/// Runs every worker through one phase; hands the workers back for the next.
async fn run_phase(
    workers: Vec<Worker>,
    shared: &Arc<Shared>,
    phase: Arc<Phase>,
) -> Result<(Vec<Worker>, Outcome), String> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        let (shared, phase) = (shared.clone(), phase.clone());
        tasks.push(tokio::spawn(async move {
            let out = worker.run(&shared, &phase).await;
            (worker, out)
        }));
    }
    let mut workers = Vec::with_capacity(tasks.len());
    let mut outcome = Outcome::default();
    for task in tasks {
        let (worker, out) = task.await.map_err(|e| format!("worker failed: {e}"))?;
        workers.push(worker);
        outcome.merge(out);
    }
    outcome.elapsed = start.elapsed();
    outcome.ops_issued = phase.first_op + phase.next_op.load(Ordering::Relaxed);
    phase.progress.finish();
    Ok((workers, outcome))
}

impl Worker {
    /// Runs ops until the phase's budget is spent or its cap passes.
    async fn run(&mut self, shared: &Shared, phase: &Phase) -> Outcome {
        let mut out = Outcome::default();
        while let Some(op) = phase.take() {
            if Instant::now() >= phase.cap {
                out.stopped_early = true;
                break;
            }
            let began = Instant::now();
            match timeout_at(phase.cap.into(), self.op(shared, op)).await {
                Ok(Ok(done)) => {
                    out.latencies_us.push(done.latency.unwrap_or_else(|| began.elapsed()).as_micros() as u64);
                    out.conflicts += done.conflicts;
                    out.pages += done.pages;
                    out.keys_read += done.keys_read;
                }
                Ok(Err(failure)) => {
                    out.maybe_applied += u64::from(failure.maybe_applied);
                    out.error(failure.message);
                }
                Err(_elapsed) => {
                    // A transaction cut off here may have been applied.
                    out.maybe_applied += 1;
                    out.stopped_early = true;
                    break;
                }
            }
            phase.progress.op_done();
        }
        out
    }

    /// One op of the workload, number `op` (which names its key where keys are distinct).
    async fn op(&mut self, shared: &Shared, op: u64) -> OpResult {
        let plan = &shared.plan;
        match plan.workload {
            Workload::SeqPut | Workload::ParPut => {
                let key = if plan.key_space == 0 { op } else { self.rng.below(plan.key_space) };
                kv::put(&mut self.client, plan.key(key), &shared.value).await
            }
            Workload::SeqGet | Workload::ParGet => {
                kv::get(&mut self.client, plan.key(self.rng.below(plan.key_space))).await
            }
            Workload::Mixed if self.rng.chance(plan.read_ratio) => {
                kv::get(&mut self.client, plan.key(self.rng.below(plan.key_space))).await
            }
            // New keys, past the pre-written set.
            Workload::Mixed => kv::put(&mut self.client, plan.key(plan.key_space + op), &shared.value).await,
            Workload::Txn => {
                let counter = self.rng.below(plan.key_space);
                txn::increment(&mut self.client, plan, counter, &mut self.views).await
            }
            Workload::LeaseChurn => lease::churn(&mut self.client, plan, plan.key(op), &shared.value).await,
            Workload::List => list::page(&mut self.client, plan, &mut self.walk).await,
            Workload::Count => list::count(&mut self.client, plan).await,
            Workload::ListHot => list::whole(&mut self.client, plan).await,
            Workload::WatchLatency | Workload::WatchFanout | Workload::WatchKeys => {
                unreachable!("watch workloads run in watch::run")
            }
        }
    }
}
