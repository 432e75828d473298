//! What a run is: the workloads, the plan settled from the command line, and what a run records.
//!
//! Modelled on etcd's `benchmark` tool: fixed-size keys and values, distinct keys for writes
//! unless a key space is given, uniformly random existing keys for reads. `driver` runs the
//! request/response workloads, `watch` the watch workloads, and `stats` turns an `Outcome` into
//! a report.

use std::time::Duration;

use clap::ValueEnum;
use etcd_client::{Client, ConnectOptions};

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// One client, sequential puts (distinct keys, or random ones of `--key-space`).
    SeqPut,
    /// `--clients` clients, concurrent puts (distinct keys, or random ones of `--key-space`).
    ParPut,
    /// One client, sequential gets of random keys from a pre-written set.
    SeqGet,
    /// `--clients` clients, concurrent gets of random keys from a pre-written set.
    ParGet,
    /// Each op is a get of a random pre-written key with probability `--read-ratio`, else a put of
    /// a new key.
    Mixed,
    /// `--clients` clients increment `--key-space` shared counters by compare-and-swap, retrying
    /// on conflict; the counters' sum is checked at the end.
    Txn,
    /// Each op grants a lease, puts a key attached to it and revokes it, then checks that the key
    /// went with the lease.
    LeaseChurn,
    /// One prefix watcher on its own connection; `--clients` clients put distinct keys under the
    /// prefix, one at a time each; the samples are put→event latencies.
    WatchLatency,
    /// `--watchers` prefix watchers over `--conns` connections and `--streams` streams; one client
    /// puts distinct keys; every watcher must get every event once, in order.
    WatchFanout,
    /// `--watchers` single-key watches (watcher `w` on key `w`) over `--conns` connections and
    /// `--streams` streams; `--clients` writers put the watched keys in turn, so each put reaches
    /// exactly one watcher, which must get each of its key's puts once, in order.
    WatchKeys,
    /// `--clients` clients each walk a prefix of `--key-space` keys in pages of `--page-size`
    /// (continuing from the last key, at the revision of the walk's first page), as
    /// kube-apiserver lists; one op is one page. Each whole walk must see every key once.
    List,
    /// `--clients` clients count the `--key-space` keys of the prefix (`count_only`); the count
    /// must be right.
    Count,
    /// `--hot-writers` clients keep updating the first `--hot-keys` of `--key-space` keys (after
    /// `--hot-updates` untimed updates of each) while `--clients` clients list the whole prefix
    /// in pages of `--page-size`; one op is one whole list, which must see every key once.
    ListHot,
}

impl Workload {
    /// Runs with one client on one connection whatever `--clients` and `--conns` say.
    pub fn is_sequential(self) -> bool {
        matches!(self, Workload::SeqPut | Workload::SeqGet | Workload::WatchFanout)
    }

    /// Watches and times puts to their events (driven by `watch::run`).
    pub fn is_watch(self) -> bool {
        matches!(self, Workload::WatchLatency | Workload::WatchFanout | Workload::WatchKeys)
    }

    /// Reads the prefix in ranges (driven by `driver` with one op of each in `list`).
    pub fn is_list(self) -> bool {
        matches!(self, Workload::List | Workload::Count | Workload::ListHot)
    }

    /// Only puts; `--key-space` picks their keys.
    pub fn is_put(self) -> bool {
        matches!(self, Workload::SeqPut | Workload::ParPut)
    }

    /// Reads from a key set written before the timed phase; `--key-space` is its size.
    pub fn needs_keys(self) -> bool {
        matches!(self, Workload::SeqGet | Workload::ParGet | Workload::Mixed) || self.is_list()
    }

    /// The name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::SeqPut => "seq-put",
            Workload::ParPut => "par-put",
            Workload::SeqGet => "seq-get",
            Workload::ParGet => "par-get",
            Workload::Mixed => "mixed",
            Workload::Txn => "txn",
            Workload::LeaseChurn => "lease-churn",
            Workload::WatchLatency => "watch-latency",
            Workload::WatchFanout => "watch-fanout",
            Workload::WatchKeys => "watch-keys",
            Workload::List => "list",
            Workload::Count => "count",
            Workload::ListHot => "list-hot",
        }
    }
}

/// How much a phase does: a number of ops over all clients, or as many as fit in a time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    Ops(u64),
    Time(Duration),
}

impl Budget {
    /// No ops at all (a skipped warm-up).
    pub fn is_empty(self) -> bool {
        matches!(self, Budget::Ops(0)) || self == Budget::Time(Duration::ZERO)
    }
}

/// Everything a run needs, settled (and validated) from the command line by `cli`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub endpoints: Vec<String>,
    pub workload: Workload,
    /// Concurrent workers (seq-* and watch-fanout: 1; watch-latency: the writers).
    pub clients: u32,
    /// Request workloads: connections the clients share, client `i` on connection `i % conns`.
    /// watch-fanout: the watchers' connections. watch-latency: 1, the watcher's own.
    pub conns: u32,
    /// What ends the timed phase.
    pub stop: Budget,
    /// Untimed ops of the same workload before the timed phase.
    pub warmup: Budget,
    pub key_size: usize,
    pub val_size: usize,
    pub prefix: String,
    /// Puts: 0 for a new key per put, else keys drawn uniformly from this many. Gets and mixed:
    /// the pre-written set reads draw from. Txn: the counters.
    pub key_space: u64,
    /// Mixed: the probability that an op is a get.
    pub read_ratio: f64,
    /// Lease-churn: the TTL asked for each lease (it is revoked long before).
    pub lease_ttl_secs: i64,
    /// Hard cap on each phase; a phase that reaches it stops and reports what was done.
    pub duration_max: Duration,
    pub request_timeout: Duration,
    /// Watchers of the watch workloads (watch-latency: 1).
    pub watchers: u32,
    /// Watch streams in all, spread over `conns` (watch-latency: 1).
    pub streams: u32,
    /// Puts per second of the watch workloads, over all writers; 0 is as fast as they go.
    pub put_rate: u64,
    /// List workloads: the `limit` of each page.
    pub page_size: i64,
    /// List-hot: the keys (the first of the prefix) the hot writers update.
    pub hot_keys: u64,
    /// List-hot: the clients updating the hot keys during the timed phase.
    pub hot_writers: u32,
    /// List-hot: untimed updates of each hot key before the timed phase (the history a list
    /// crosses).
    pub hot_updates: u64,
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
    /// Latency of each successful op, in microseconds, unsorted.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Txn: failed compares that were retried (expected under contention, not errors).
    pub conflicts: u64,
    /// Txn: failed or cut-off transactions that may have been applied all the same.
    pub maybe_applied: u64,
    /// Wall time of the timed phase.
    pub elapsed: Duration,
    /// The cap (`--duration-max-secs`) ended the run before its budget was spent.
    pub stopped_early: bool,
    /// Op numbers handed out, some perhaps not run; the next phase starts its keys past them.
    pub ops_issued: u64,
    /// The store's revision just before and just after the timed phase: what it wrote lies between
    /// (bench.sh finds T4's WAL objects of the timed phase by it).
    pub revisions: Option<(i64, i64)>,
    /// The watch workloads' shape and what was expected of them.
    pub watch: Option<WatchTally>,
    /// List workloads: range requests answered (a list-hot op is several) and keys they returned.
    pub pages: u64,
    pub keys_read: u64,
    /// The txn workload's counters and their check.
    pub txn: Option<TxnTally>,
    /// The list workloads' pages and keys read.
    pub list: Option<ListTally>,
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
        self.conflicts += other.conflicts;
        self.maybe_applied += other.maybe_applied;
        self.stopped_early |= other.stopped_early;
        self.pages += other.pages;
        self.keys_read += other.keys_read;
    }

    /// Successful ops.
    pub fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }
}

/// The shape of a watch run: its samples are one per event delivered to a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchTally {
    pub watchers: u32,
    pub conns: u32,
    pub streams: u32,
    /// Puts the server acknowledged.
    pub puts: u64,
    /// The watchers each put reaches: all of them, or one (watch-keys).
    pub per_put: u32,
}

impl WatchTally {
    /// Events due to all watchers together.
    pub fn events_expected(&self) -> u64 {
        self.puts * u64::from(self.per_put)
    }
}

/// The list workloads' shape and what they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListTally {
    /// Keys of the prefix (`--key-space`).
    pub keys: u64,
    /// Range requests answered in the timed phase and the keys they returned.
    pub pages: u64,
    pub keys_read: u64,
    /// List-hot: updates of the hot keys during the timed phase.
    pub hot_puts: u64,
}

/// The txn workload's counters after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnTally {
    pub counters: u64,
    /// Successful increments, warm-up included: what the counters must add up to.
    pub increments: u64,
    /// What the counters added up to, read back after the run.
    pub counter_sum: u64,
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

/// The store's current revision, from the header of a cheap get.
pub(crate) async fn current_revision(client: &mut Client, plan: &Plan) -> Result<i64, String> {
    let response = client.get(plan.prefix.as_bytes(), None).await.map_err(|e| format!("read the revision: {e}"))?;
    response.header().map(|h| h.revision()).ok_or_else(|| "read the revision: no header in the answer".to_string())
}

/// `len` bytes that do not compress, so neither server gains from compressing values.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A tiny, fast, seedable generator; good enough to pick keys, ops and fill values.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for `n` far below 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `p` (0 never, 1 always).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform float in [0, 1).
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn plan() -> Plan {
        Plan {
            endpoints: vec!["127.0.0.1:1".into()],
            workload: Workload::SeqPut,
            clients: 1,
            conns: 1,
            stop: Budget::Ops(10),
            warmup: Budget::Ops(0),
            key_size: 16,
            val_size: 8,
            prefix: "/bench/".into(),
            key_space: 10,
            read_ratio: 0.5,
            lease_ttl_secs: 60,
            duration_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            watchers: 1,
            streams: 1,
            put_rate: 0,
            page_size: 500,
            hot_keys: 0,
            hot_writers: 0,
            hot_updates: 0,
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

    #[test]
    fn chance_follows_the_ratio() {
        let mut rng = SplitMix64(7);
        assert!((0..1000).all(|_| !rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
        let reads = (0..100_000).filter(|_| rng.chance(0.9)).count();
        assert!((89_000..91_000).contains(&reads), "{reads}");
    }

    #[test]
    fn an_empty_budget_is_no_ops_or_no_time() {
        assert!(Budget::Ops(0).is_empty());
        assert!(Budget::Time(Duration::ZERO).is_empty());
        assert!(!Budget::Ops(1).is_empty());
        assert!(!Budget::Time(Duration::from_millis(1)).is_empty());
    }
}
