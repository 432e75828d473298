//! The workloads: who sends which requests, and what the timed phase records.
//!
//! Modelled on etcd's `benchmark put` / `benchmark range`: fixed-size keys and values, distinct keys
//! for writes, uniformly random existing keys for reads. Each worker has its own `Client`, so
//! its own HTTP/2 connection, as separate etcd clients would. Workers take op numbers from one
//! shared counter, which bounds the run by `--total` and spreads it over whoever is fastest;
//! every request is also bounded by `--duration-max-secs`, so a stuck server ends the run
//! early instead of hanging it. The watch workloads have their own driver, in `watch`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use etcd_client::{Client, ConnectOptions};
use tokio::time::timeout_at;

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// One client, sequential puts of distinct keys.
    SeqPut,
    /// `--clients` clients, concurrent puts of distinct keys.
    ParPut,
    /// One client, sequential gets of random keys from a pre-written set.
    SeqGet,
    /// `--clients` clients, concurrent gets of random keys from a pre-written set.
    ParGet,
    /// Half the clients put distinct new keys, half get random keys from a pre-written set.
    Mixed,
    /// One prefix watcher on its own connection; `--clients` clients put distinct keys under the
    /// prefix, one at a time each; the samples are put→event latencies.
    WatchLatency,
    /// `--watchers` prefix watchers over `--conns` connections and `--streams` streams; one client
    /// puts distinct keys; every watcher must get every event once, in order.
    WatchFanout,
}

impl Workload {
    /// Runs with one client whatever `--clients` says.
    pub fn is_sequential(self) -> bool {
        matches!(self, Workload::SeqPut | Workload::SeqGet | Workload::WatchFanout)
    }

    /// Watches the prefix and times puts to their events (driven by `watch::run`).
    pub fn is_watch(self) -> bool {
        matches!(self, Workload::WatchLatency | Workload::WatchFanout)
    }

    /// Reads from a key set written before the timed phase.
    fn needs_keys(self) -> bool {
        matches!(self, Workload::SeqGet | Workload::ParGet | Workload::Mixed)
    }

    /// The name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::SeqPut => "seq-put",
            Workload::ParPut => "par-put",
            Workload::SeqGet => "seq-get",
            Workload::ParGet => "par-get",
            Workload::Mixed => "mixed",
            Workload::WatchLatency => "watch-latency",
            Workload::WatchFanout => "watch-fanout",
        }
    }
}

/// Everything a run needs, settled from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub endpoints: Vec<String>,
    pub workload: Workload,
    pub clients: u32,
    pub total: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub prefix: String,
    pub key_count: u64,
    pub duration_max: Duration,
    pub request_timeout: Duration,
    /// Watchers of the watch workloads (watch-latency: 1).
    pub watchers: u32,
    /// Connections the watchers share (watch-latency: 1).
    pub conns: u32,
    /// Watch streams in all, spread over `conns` (watch-latency: 1).
    pub streams: u32,
    /// Puts per second of the watch workloads, over all writers; 0 is as fast as they go.
    pub put_rate: u64,
}

impl Plan {
    /// Key number `i`: the prefix, then `i` zero-padded to make `key_size` bytes.
    pub(crate) fn key(&self, i: u64) -> String {
        let width = self.key_size.saturating_sub(self.prefix.len());
        format!("{}{i:0width$}", self.prefix)
    }

    /// The `i` of a key made by `key(i)`; `None` for any other key.
    pub(crate) fn key_index(&self, key: &[u8]) -> Option<u64> {
        let digits = key.strip_prefix(self.prefix.as_bytes())?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// What the timed phase did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of each successful request, in microseconds, unsorted.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Wall time of the timed phase.
    pub elapsed: Duration,
    /// The duration cap ended the run before `total` requests were sent.
    pub stopped_early: bool,
    /// The watch workloads' shape and what was expected of them.
    pub watch: Option<WatchTally>,
}

/// The shape of a watch run: its samples are one per event delivered to a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchTally {
    pub watchers: u32,
    pub conns: u32,
    pub streams: u32,
    /// Puts the server acknowledged; each watcher should get an event for each.
    pub puts: u64,
}

impl WatchTally {
    /// Events due to all watchers together.
    pub fn events_expected(&self) -> u64 {
        self.puts * u64::from(self.watchers)
    }
}

impl Outcome {
    pub(crate) fn error(&mut self, e: impl ToString) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    pub(crate) fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.stopped_early |= other.stopped_early;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

/// State the workers share.
struct Shared {
    plan: Plan,
    value: Vec<u8>,
    /// The next op number; a worker stops once it reaches `plan.total`.
    next_op: AtomicU64,
    deadline: Instant,
}

/// Connects, writes the key set if the workload reads, then runs the timed phase.
pub async fn run(plan: &Plan) -> Result<Outcome, String> {
    if plan.workload.is_watch() {
        return crate::watch::run(plan).await;
    }
    let mut clients = Vec::with_capacity(plan.clients as usize);
    for _ in 0..plan.clients {
        clients.push(connect(plan).await?);
    }
    let value = random_bytes(plan.val_size, 0x5eed);
    if plan.workload.needs_keys() {
        populate(plan, &clients, &value).await?;
    }

    let start = Instant::now();
    let shared =
        Arc::new(Shared { plan: plan.clone(), value, next_op: AtomicU64::new(0), deadline: start + plan.duration_max });
    let mut tasks = Vec::with_capacity(clients.len());
    for (w, client) in clients.into_iter().enumerate() {
        let role = match plan.workload {
            Workload::SeqPut | Workload::ParPut => Role::Writer,
            Workload::SeqGet | Workload::ParGet => Role::Reader,
            Workload::Mixed if w % 2 == 0 => Role::Writer,
            Workload::Mixed => Role::Reader,
            Workload::WatchLatency | Workload::WatchFanout => unreachable!("watch workloads run in watch::run"),
        };
        tasks.push(tokio::spawn(worker(role, client, shared.clone(), w as u64 + 1)));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.merge(task.await.map_err(|e| format!("worker failed: {e}"))?);
    }
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// A client of its own connection; one cheap get makes sure the server answers before timing.
pub(crate) async fn connect(plan: &Plan) -> Result<Client, String> {
    let options = ConnectOptions::new().with_connect_timeout(plan.request_timeout).with_timeout(plan.request_timeout);
    let mut client = Client::connect(&plan.endpoints, Some(options))
        .await
        .map_err(|e| format!("connect to {}: {e}", plan.endpoints.join(",")))?;
    client
        .get(plan.prefix.as_bytes(), None)
        .await
        .map_err(|e| format!("first request to {}: {e}", plan.endpoints.join(",")))?;
    Ok(client)
}

/// Writes keys `0..key_count` (untimed), spread over all clients.
async fn populate(plan: &Plan, clients: &[Client], value: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + plan.duration_max;
    let n = clients.len() as u64;
    let mut tasks = Vec::with_capacity(clients.len());
    for (w, client) in clients.iter().enumerate() {
        let (mut client, plan, value) = (client.clone(), plan.clone(), value.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in (w as u64..plan.key_count).step_by(n as usize) {
                match timeout_at(deadline.into(), client.put(plan.key(i), value.clone(), None)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("pre-populate {}: {e}", plan.key(i))),
                    Err(_) => return Err("pre-populate ran past --duration-max-secs".to_string()),
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("pre-populate worker failed: {e}"))??;
    }
    Ok(())
}

/// Sends requests until the shared op counter reaches `total` or the deadline passes.
async fn worker(role: Role, mut client: Client, shared: Arc<Shared>, seed: u64) -> Outcome {
    let plan = &shared.plan;
    let mut rng = SplitMix64(seed);
    let mut out = Outcome::default();
    // Writers of the mixed workload write new keys, past the pre-written set.
    let first_new_key = if plan.workload == Workload::Mixed { plan.key_count } else { 0 };
    loop {
        let op = shared.next_op.fetch_add(1, Ordering::Relaxed);
        if op >= plan.total {
            break;
        }
        if Instant::now() >= shared.deadline {
            out.stopped_early = true;
            break;
        }
        let began = Instant::now();
        let result = match role {
            Role::Writer => {
                let request = client.put(plan.key(first_new_key + op), shared.value.clone(), None);
                timeout_at(shared.deadline.into(), request).await.map(|r| r.map_err(|e| e.to_string()).map(drop))
            }
            Role::Reader => {
                let key = plan.key(rng.below(plan.key_count));
                let request = client.get(key.as_bytes(), None);
                timeout_at(shared.deadline.into(), request).await.map(|r| match r {
                    Ok(resp) if resp.kvs().is_empty() => Err(format!("key {key} not found")),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                })
            }
        };
        match result {
            Ok(Ok(())) => out.latencies_us.push(began.elapsed().as_micros() as u64),
            Ok(Err(e)) => out.error(e),
            Err(_elapsed) => {
                out.stopped_early = true;
                break;
            }
        }
    }
    out
}

/// `len` bytes that do not compress, so neither server gains from compressing values.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A tiny, fast, seedable generator; good enough to pick keys and fill values.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for `n` far below 2^64.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            endpoints: vec!["127.0.0.1:1".into()],
            workload: Workload::SeqPut,
            clients: 1,
            total: 10,
            key_size: 16,
            val_size: 8,
            prefix: "/bench/".into(),
            key_count: 10,
            duration_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            watchers: 1,
            conns: 1,
            streams: 1,
            put_rate: 0,
        }
    }

    #[test]
    fn key_index_inverts_key() {
        let p = plan();
        for i in [0, 7, 42, 123_456_789, 10_000_000_000] {
            assert_eq!(p.key_index(p.key(i).as_bytes()), Some(i));
        }
        let short = Plan { key_size: 4, ..plan() };
        assert_eq!(short.key_index(short.key(12345).as_bytes()), Some(12345));
    }

    #[test]
    fn key_index_rejects_other_keys() {
        let p = plan();
        assert_eq!(p.key_index(b"/bench/"), None);
        assert_eq!(p.key_index(b"/other/000000042"), None);
        assert_eq!(p.key_index(b"/bench/00000004x"), None);
        assert_eq!(p.key_index(b"/bench/-00000042"), None);
        assert_eq!(p.key_index(b"/bench/99999999999999999999999"), None);
    }

    #[test]
    fn keys_are_padded_to_key_size() {
        let p = plan();
        assert_eq!(p.key(42), "/bench/000000042");
        assert_eq!(p.key(42).len(), 16);
        assert_ne!(p.key(1), p.key(10));
    }

    #[test]
    fn keys_grow_past_key_size_rather_than_collide() {
        let p = Plan { key_size: 4, ..plan() };
        assert_eq!(p.key(12345), "/bench/12345");
    }

    #[test]
    fn values_have_the_asked_size_and_vary() {
        let v = random_bytes(256, 1);
        assert_eq!(v.len(), 256);
        assert!(v.iter().any(|&b| b != v[0]));
    }

    #[test]
    fn random_keys_stay_in_range() {
        let mut rng = SplitMix64(7);
        assert!((0..1000).all(|_| rng.below(10) < 10));
    }
}
