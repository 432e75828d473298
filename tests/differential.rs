//! Differential tests against the reference: one seeded random sequence of KV operations goes to a
//! real etcd 3.4 and to T4, and every answer must be identical: key-values, header revisions,
//! create/mod revisions, versions, `more`/`count`, `succeeded`, previous key-values, deleted counts,
//! nested txn responses, and for errors the gRPC code and message. Only the member-specific header
//! fields (`cluster_id`, `member_id`, `raft_term`) are zeroed before comparing. After the sequence,
//! every retained revision of the whole key space is read back from both.
//!
//! `T4_DIFF_SEED` picks the sequence of both tests (printed at start: rerun with it to reproduce a
//! failure); `T4_DIFF_OPS` and `T4_DIFF_WIDE_OPS` set their lengths.
//!
//! Two tests draw from two [`Universe`]s with one [`Generator`]:
//!
//! - `t4_answers_a_random_kv_workload_exactly_as_etcd_does` (narrow): 12 keys, a few shared values,
//!   every sort target. The key universe must keep at most 12 keys: etcd sorts Range results with
//!   Go's `sort.Sort`, which is an insertion sort (stable) up to 12 elements and an unstable pdqsort
//!   beyond, so with more keys etcd would order ties on VERSION/CREATE/MOD/VALUE arbitrarily, while
//!   T4's stable sort keeps them in key order.
//! - `t4_answers_a_wide_kv_workload_exactly_as_etcd_does` (wide): 60 keys, so ranges, counts,
//!   `limit`/`more`, deletes (with `prev_kv`) and range compares span far more than 12 keys, with bulk
//!   txns refilling many keys at once. It stays free of ties instead: every write's value is unique,
//!   and Ranges sort only by KEY or VALUE (any order), never by VERSION/CREATE/MOD.
//!
//! Both tests mix leases and watches into the sequence, drawn from a second random source (seeded
//! from the same seed) between the KV ops, so that the KV ops keep their draws (their revisions and
//! outcomes shift once leases and watches write):
//!
//! - Leases: grants with client-chosen ids (fresh, in use, revoked before), long TTLs that never
//!   expire during the run, short ones (1 s: the reply shows the minimum TTL; then revoked at once,
//!   accepting that it may have expired), too large ones, and server-assigned ids (both must be
//!   positive; from then on each server's own id stands for "that lease": requests are translated
//!   into the subject's ids and its answers back, see [`LeaseBook`]); puts with a lease, an unknown
//!   one, `ignore_lease`, or none (detaching); txns with LEASE compares and leased puts; revokes
//!   (deleting the keys in one revision); LeaseTimeToLive (the remaining TTL is time dependent: only
//!   `0 < ttl <= granted_ttl` is checked, on each server) and LeaseLeases (compared as sets). A
//!   quarter of the lease steps run a lease's whole life at once (see [`Diff::lease_scenario`]), as
//!   the KV ops soon overwrite keys put with a lease.
//! - Watches: a few streams per server, several watches on each, over keys, prefixes, ranges and the
//!   whole key space, from now, the current revision, a past revision or a compacted one, with
//!   filters and `prev_kv`; some are canceled. Created, canceled and compacted responses are compared
//!   when they arrive; at the end of the test, each watch's events, flattened, are compared (how a
//!   server groups revisions into responses is its own business; each server must still keep
//!   revisions in order, every revision within one response, header revisions at or past their
//!   events, and only events the watch covers). Waits for events use fences (see
//!   [`Diff::fence`]), never the clock.
//!
//! `T4_DIFF_SUBJECT=etcd` compares the reference with a second etcd instead of T4: that run must
//! pass, which shows the comparison itself is deterministic. `T4_DIFF_LEASES=0` and
//! `T4_DIFF_WATCHES=0` leave leases or watches out (with both out, the KV sequence is the original).

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::Server;
use common::watch_model::in_range;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use t4::prefix_end;
use t4::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::lease_client::LeaseClient;
use t4::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::response_op::Response;
use t4::proto::etcdserverpb::watch_client::WatchClient;
use t4::proto::etcdserverpb::watch_create_request::FilterType;
use t4::proto::etcdserverpb::watch_request::RequestUnion;
use t4::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use t4::proto::mvccpb::Event;
use t4::proto::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// The sequence run when `T4_DIFF_SEED` is not set.
const DEFAULT_SEED: u64 = 0x7434_d1ff;
/// Operations run when `T4_DIFF_OPS` is not set.
const DEFAULT_OPS: usize = 3000;
/// Operations the wide test runs when `T4_DIFF_WIDE_OPS` is not set.
const DEFAULT_WIDE_OPS: usize = 1500;
/// How long one request may take on either server before the test gives up (generous: the machine
/// running the test may be busy, and both servers sync every write).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// etcd's default `--max-txn-ops`, which T4 shares.
const MAX_TXN_OPS: usize = 128;
/// Deepest txn nesting generated (the top-level txn is depth 1).
const TXN_DEPTH_MAX: usize = 3;
/// Recent revisions and versions remembered, so compares and filters often hit real values.
const SEEN_MAX: usize = 48;
/// Mixed into the seed for the second random source, which draws the lease and watch steps.
const SIDE_SEED_MIX: u64 = 0x1ea5_e0f7_3a7c_4e55;
/// Chance, per mille, that a lease step precedes a KV op.
const LEASE_STEP_PER_MILLE: u32 = 80;
/// Chance, per mille, that a watch is created before a KV op (while fewer than [`MAX_LIVE_WATCHES`]
/// are live and fewer than [`MAX_WATCHES`] were created).
const WATCH_STEP_PER_MILLE: u32 = 12;
/// Chance, per mille, that a watch is canceled before a KV op.
const CANCEL_STEP_PER_MILLE: u32 = 4;
/// Watches created per test, at most.
const MAX_WATCHES: usize = 64;
/// Live watches per test, at most.
const MAX_LIVE_WATCHES: usize = 24;
/// Watch streams opened per server and test, at most.
const MAX_WATCH_STREAMS: usize = 4;
/// How long a server may take to deliver the watch responses a step waits for.
const WATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Watch responses one wait may process before giving up.
const MAX_WAIT_RESPONSES: usize = 1_000_000;
/// etcd's `MaxLeaseTTL` (seconds): a larger TTL is refused.
const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// Keys remembered as put with a lease, to detach them again.
const ATTACHED_MAX: usize = 16;

/// Every key the narrow test writes (at most 12: see the module comment). Zero and 0xff bytes, keys that are
/// prefixes of other keys, and `a0`, the first key past the prefix `a/`, are there on purpose.
const KEYS: [&[u8]; 12] = [
    b"\x00",
    b"\x00\xff",
    b"a",
    b"a/\x00",
    b"a/x",
    b"a/y",
    b"a/\xff",
    b"a0",
    b"b/x",
    b"b/x\x00",
    b"b/\xff\xff",
    b"\xff",
];
/// The narrow test's range starts and ends that are not keys.
const BOUNDS: [&[u8]; 6] = [b"a/", b"b", b"b/", b"a/x\x00", b"\x01", b"c"];
/// The narrow test's prefixes (`\xff`'s span runs to the last key).
const PREFIXES: [&[u8]; 7] = [b"a/", b"b/", b"a", b"b/x", b"\x00", b"\xff", b"a/x"];
/// The narrow test's values: short, so that keys often share one (ties for VALUE sorts and compares).
const VALUES: [&[u8]; 7] = [b"", b"v", b"w", b"v\x00", b"\xff", b"vv", b"a"];

/// The wide test's range starts and ends that are not keys.
const WIDE_BOUNDS: [&[u8]; 10] = [b"w/", b"x/", b"w/0", b"w/1", b"w/25", b"w/3\xff", b"x/05\x00", b"\x01", b"v", b"y"];
/// The wide test's prefixes: `w` and `w/` span over 40 keys.
const WIDE_PREFIXES: [&[u8]; 11] = [b"w/", b"x/", b"w", b"x", b"w/0", b"w/1", b"w/2", b"w/3", b"x/0", b"\x00", b"\xff"];
/// The wide test's unique values start with one of these (none holds a digit) and end with a count.
const WIDE_VALUE_MARKS: [&[u8]; 5] = [b"", b"v", b"a", b"v\x00", b"\xff"];

/// What a [`Generator`] draws from: the keys it writes, the bounds and prefixes of the spans it
/// reads and deletes, the values it writes, and the sorts and limits it asks for.
struct Universe {
    keys: Vec<Vec<u8>>,
    /// Range starts and ends that are not keys.
    bounds: Vec<Vec<u8>>,
    /// Prefixes whose spans are requested.
    prefixes: Vec<Vec<u8>>,
    values: Values,
    sort_targets: SortTargets,
    /// How often (percent, at most 60) a span is one key; prefix spans take the rest of the first 60.
    single_key_percent: u32,
    /// The largest `limit` generated besides the special ones (`-1`, `i64::MAX`).
    max_limit: i64,
    /// Chance, per mille, that a top-level op is a bulk txn writing many keys at once (0: never).
    bulk_per_mille: u32,
}

/// Which values a generator writes.
#[derive(Clone, Copy)]
enum Values {
    /// Picked from a short list, so keys often share one.
    Shared(&'static [&'static [u8]]),
    /// A fresh one for every write (a mark from [`WIDE_VALUE_MARKS`] and a count), so no two keys ever
    /// hold the same value and VALUE sorts never tie.
    Unique,
}

/// Which Range `sort_target`s a generator asks for.
#[derive(Clone, Copy)]
enum SortTargets {
    /// KEY, VERSION, CREATE, MOD and VALUE: ties are certain, so results must stay within 12 keys.
    Any,
    /// KEY or VALUE only: with unique keys and values nothing ties, however many keys a range returns.
    KeyOrValue,
}

impl Universe {
    /// The 12-key universe of the original test, with shared values and every sort target.
    fn narrow() -> Universe {
        let owned = |items: &[&[u8]]| items.iter().map(|k| k.to_vec()).collect();
        Universe {
            keys: owned(&KEYS),
            bounds: owned(&BOUNDS),
            prefixes: owned(&PREFIXES),
            values: Values::Shared(&VALUES),
            sort_targets: SortTargets::Any,
            single_key_percent: 40,
            max_limit: 4,
            bulk_per_mille: 0,
        }
    }

    /// 60 keys (`w/00`..`w/39`, `x/00`..`x/09` and ten with zero and 0xff bytes or that prefix others),
    /// unique values, KEY and VALUE sorts only, fewer single-key spans, limits up to 32, and bulk txns
    /// that refill many keys at once so that ranges keep returning far more than 12.
    fn wide() -> Universe {
        let mut keys: Vec<Vec<u8>> = (0..40).map(|i| format!("w/{i:02}").into_bytes()).collect();
        keys.extend((0..10).map(|i| format!("x/{i:02}").into_bytes()));
        let odd: [&[u8]; 10] =
            [b"\x00", b"\x00\xff", b"w", b"w/\x00", b"w/\xff", b"w0", b"x", b"x/\xff\xff", b"\xff", b"\xff\x00"];
        keys.extend(odd.iter().map(|k| k.to_vec()));
        Universe {
            keys,
            bounds: WIDE_BOUNDS.iter().map(|k| k.to_vec()).collect(),
            prefixes: WIDE_PREFIXES.iter().map(|k| k.to_vec()).collect(),
            values: Values::Unique,
            sort_targets: SortTargets::KeyOrValue,
            single_key_percent: 25,
            max_limit: 32,
            bulk_per_mille: 120,
        }
    }
}

/// One request, sent to both servers (lease ids translated for the subject, see [`LeaseBook`]).
#[derive(Debug, Clone)]
enum Op {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    LeaseLeases(LeaseLeasesRequest),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Put(_) => "put",
            Op::DeleteRange(_) => "delete_range",
            Op::Range(_) => "range",
            Op::Txn(_) => "txn",
            Op::Compact(_) => "compact",
            Op::LeaseGrant(_) => "lease_grant",
            Op::LeaseRevoke(_) => "lease_revoke",
            Op::LeaseTimeToLive(_) => "lease_time_to_live",
            Op::LeaseLeases(_) => "lease_leases",
        }
    }
}

/// A server's successful answer, header ids zeroed.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Range(RangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    LeaseLeases(LeaseLeasesResponse),
}

/// A server's answer: a reply, or the gRPC code and message of its error.
type Answer = Result<Reply, (tonic::Code, String)>;

impl Reply {
    fn header(&self) -> Option<&ResponseHeader> {
        match self {
            Reply::Put(r) => r.header.as_ref(),
            Reply::DeleteRange(r) => r.header.as_ref(),
            Reply::Range(r) => r.header.as_ref(),
            Reply::Txn(r) => r.header.as_ref(),
            Reply::Compact(r) => r.header.as_ref(),
            Reply::LeaseGrant(r) => r.header.as_ref(),
            Reply::LeaseRevoke(r) => r.header.as_ref(),
            Reply::LeaseTimeToLive(r) => r.header.as_ref(),
            Reply::LeaseLeases(r) => r.header.as_ref(),
        }
    }

    /// Zeroes the fields that legitimately differ between two servers, in nested responses too.
    fn scrub(&mut self) {
        match self {
            Reply::Put(r) => scrub(&mut r.header),
            Reply::DeleteRange(r) => scrub(&mut r.header),
            Reply::Range(r) => scrub(&mut r.header),
            Reply::Txn(r) => scrub_txn(r),
            Reply::Compact(r) => scrub(&mut r.header),
            Reply::LeaseGrant(r) => scrub(&mut r.header),
            Reply::LeaseRevoke(r) => scrub(&mut r.header),
            Reply::LeaseTimeToLive(r) => scrub(&mut r.header),
            Reply::LeaseLeases(r) => scrub(&mut r.header),
        }
    }
}

fn scrub(header: &mut Option<ResponseHeader>) {
    if let Some(h) = header {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

fn scrub_txn(txn: &mut TxnResponse) {
    scrub(&mut txn.header);
    for op in &mut txn.responses {
        match &mut op.response {
            Some(Response::ResponseRange(r)) => scrub(&mut r.header),
            Some(Response::ResponsePut(r)) => scrub(&mut r.header),
            Some(Response::ResponseDeleteRange(r)) => scrub(&mut r.header),
            Some(Response::ResponseTxn(t)) => scrub_txn(t),
            None => {}
        }
    }
}

/// A watch response with the member-specific header fields zeroed.
fn scrubbed(response: &WatchResponse) -> WatchResponse {
    let mut response = response.clone();
    scrub(&mut response.header);
    response
}

/// The unary clients of one server.
struct Clients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

/// Sends `op` to the server `name` and returns its answer, header ids zeroed.
async fn send(name: &str, clients: &mut Clients, op: &Op) -> Answer {
    let Clients { kv, lease } = clients;
    let call = async {
        match op.clone() {
            Op::Put(r) => kv.put(r).await.map(|r| Reply::Put(r.into_inner())),
            Op::DeleteRange(r) => kv.delete_range(r).await.map(|r| Reply::DeleteRange(r.into_inner())),
            Op::Range(r) => kv.range(r).await.map(|r| Reply::Range(r.into_inner())),
            Op::Txn(r) => kv.txn(r).await.map(|r| Reply::Txn(r.into_inner())),
            Op::Compact(r) => kv.compact(r).await.map(|r| Reply::Compact(r.into_inner())),
            Op::LeaseGrant(r) => lease.lease_grant(r).await.map(|r| Reply::LeaseGrant(r.into_inner())),
            Op::LeaseRevoke(r) => lease.lease_revoke(r).await.map(|r| Reply::LeaseRevoke(r.into_inner())),
            Op::LeaseTimeToLive(r) => lease.lease_time_to_live(r).await.map(|r| Reply::LeaseTimeToLive(r.into_inner())),
            Op::LeaseLeases(r) => lease.lease_leases(r).await.map(|r| Reply::LeaseLeases(r.into_inner())),
        }
    };
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{name} did not answer within {REQUEST_TIMEOUT:?}: {}", readable(op)));
    let mut reply = reply.map_err(|status| (status.code(), status.message().to_string()))?;
    reply.scrub();
    Ok(reply)
}

/// What one top-level txn writes so far, so that generated ops avoid etcd's duplicate-key error
/// unless a fault deliberately asks for it.
#[derive(Default)]
struct TxnScope {
    /// Keys put anywhere in the txn (either branch, any depth).
    put_keys: Vec<Vec<u8>>,
    /// Spans deleted anywhere in the txn, as `(key, range_end)`.
    deleted: Vec<(Vec<u8>, Vec<u8>)>,
    /// A from-key delete (`range_end` `\0`) was generated. etcd's duplicate-key check reads its
    /// interval literally, as one containing no key, so a later put to a key it removed passes the
    /// check; with `ignore_value`/`ignore_lease` that put would then fail inside etcd 3.4's applyTxn,
    /// which panics. No such put is generated after one.
    from_key_delete: bool,
}

impl TxnScope {
    fn is_free(&self, key: &[u8]) -> bool {
        !self.put_keys.iter().any(|k| k == key) && !self.deleted.iter().any(|(s, e)| in_range(key, s, e))
    }
}

/// One of `items`, chosen by `rng`.
fn pick_bytes(rng: &mut ChaCha8Rng, items: &[Vec<u8>]) -> Vec<u8> {
    items[rng.random_range(0..items.len())].clone()
}

/// The seeded source of operations, tracking what both servers (agreeing so far) have told it.
struct Generator {
    rng: ChaCha8Rng,
    universe: Universe,
    /// Values generated so far (numbers the unique ones).
    written: u64,
    /// The store's revision, from the last successful reply.
    current: i64,
    /// The last accepted compaction (etcd's `compactMainRev`: -1 before the first).
    compact: i64,
    /// Revisions and versions from recent replies.
    seen: Vec<i64>,
    /// Values from recent replies, for VALUE compares when values are unique.
    seen_values: Vec<Vec<u8>>,
}

impl Generator {
    fn new(seed: u64, universe: Universe) -> Generator {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            universe,
            written: 0,
            current: 1,
            compact: -1,
            seen: Vec::new(),
            seen_values: Vec::new(),
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn key(&mut self) -> Vec<u8> {
        pick_bytes(&mut self.rng, &self.universe.keys)
    }

    fn bound(&mut self) -> Vec<u8> {
        if self.chance(70) { self.key() } else { pick_bytes(&mut self.rng, &self.universe.bounds) }
    }

    /// A value to write.
    fn value(&mut self) -> Vec<u8> {
        self.written += 1;
        match self.universe.values {
            Values::Shared(values) => self.pick(values).to_vec(),
            Values::Unique => {
                let mut value = self.pick(&WIDE_VALUE_MARKS).to_vec();
                value.extend_from_slice(self.written.to_string().as_bytes());
                value
            }
        }
    }

    /// A value to compare with: with unique values, often one a reply showed (else none would match).
    fn compare_value(&mut self) -> Vec<u8> {
        let values = self.universe.values;
        match values {
            Values::Unique if !self.seen_values.is_empty() && self.chance(60) => {
                pick_bytes(&mut self.rng, &self.seen_values)
            }
            _ => self.value(),
        }
    }

    /// A prefix and its etcd range end.
    fn prefix_span(&mut self) -> (Vec<u8>, Vec<u8>) {
        let prefix = pick_bytes(&mut self.rng, &self.universe.prefixes);
        let end = prefix_end(&prefix);
        (prefix, end)
    }

    /// A `(key, range_end)` pair in every shape etcd accepts.
    fn span(&mut self) -> (Vec<u8>, Vec<u8>) {
        let single = self.universe.single_key_percent;
        match self.rng.random_range(0..100) {
            r if r < single => (self.key(), Vec::new()),
            0..60 => self.prefix_span(),
            // half-open; may be empty or have its end below its start
            60..75 => (self.bound(), self.bound()),
            75..90 => (self.bound(), vec![0]),
            _ => (vec![0], vec![0]),
        }
    }

    /// A remembered revision or version, or a random one up to one past the current revision.
    fn seen_or_random(&mut self) -> i64 {
        if !self.seen.is_empty() && self.chance(60) {
            let i = self.rng.random_range(0..self.seen.len());
            return self.seen[i];
        }
        self.rng.random_range(0..=self.current + 1)
    }

    /// A revision to read at: current, inside the history window, or (at `error_percent`) compacted,
    /// in the future or negative.
    fn read_revision(&mut self, error_percent: u32) -> i64 {
        if self.chance(error_percent) {
            return match self.rng.random_range(0..3) {
                0 if self.compact > 1 => self.rng.random_range(1..self.compact),
                0 | 1 => self.current + self.rng.random_range(1..=3),
                // current at top level; compacted inside a txn once anything was compacted
                _ => -self.rng.random_range(1..=3),
            };
        }
        if self.chance(35) { self.rng.random_range(self.compact.max(1)..=self.current) } else { 0 }
    }

    fn filter_revision(&mut self) -> i64 {
        if self.chance(8) { self.seen_or_random() } else { 0 }
    }

    fn range(&mut self, in_txn: bool) -> RangeRequest {
        let (key, range_end) = self.span();
        let empty_key = !in_txn && self.chance(1);
        let sort_order = match self.rng.random_range(0..100) {
            0..50 => SortOrder::None as i32,
            50..74 => SortOrder::Ascend as i32,
            74..98 => SortOrder::Descend as i32,
            _ => self.pick(&[3, -1]), // not an enum value: etcd then sorts nothing
        };
        // Never an unknown target: etcd 3.4 would sort with a nil sorter and crash.
        let targets = self.universe.sort_targets;
        let sort_target = match targets {
            SortTargets::Any if self.chance(40) => SortTarget::Key as i32,
            SortTargets::Any => self.rng.random_range(1..=4),
            SortTargets::KeyOrValue => self.pick(&[SortTarget::Key as i32, SortTarget::Value as i32]),
        };
        let limit = match self.rng.random_range(0..100) {
            0..65 => 0,
            65..97 => self.rng.random_range(1..=self.universe.max_limit),
            97..99 => -1,
            _ => i64::MAX, // etcd's limit + 1 overflows to a negative limit: everything
        };
        RangeRequest {
            key: if empty_key { Vec::new() } else { key },
            range_end,
            limit,
            revision: self.read_revision(if in_txn { 3 } else { 15 }),
            sort_order,
            sort_target,
            serializable: self.chance(30),
            keys_only: self.chance(15),
            count_only: self.chance(10),
            min_mod_revision: self.filter_revision(),
            max_mod_revision: self.filter_revision(),
            min_create_revision: self.filter_revision(),
            max_create_revision: self.filter_revision(),
        }
    }

    /// A put of `key`; `ignore_allowed` is false where an `ignore_*` flag could crash etcd.
    fn put(&mut self, key: Vec<u8>, ignore_allowed: bool, in_txn: bool) -> PutRequest {
        let ignore_value = ignore_allowed && self.chance(if in_txn { 6 } else { 10 });
        let ignore_lease = ignore_allowed && self.chance(if in_txn { 4 } else { 8 });
        // with ignore_value, a value is mostly left out ("value is provided" otherwise)
        let value = if ignore_value && self.chance(80) { Vec::new() } else { self.value() };
        let lease_percent = if in_txn { 1 } else { 4 };
        let lease = if self.chance(lease_percent) { self.rng.random_range(1..1_000_000) } else { 0 };
        PutRequest { key, value, lease, prev_kv: self.chance(50), ignore_value, ignore_lease }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = self.span();
        let key = if self.chance(1) { Vec::new() } else { key };
        DeleteRangeRequest { key, range_end, prev_kv: self.chance(50) }
    }

    fn compare(&mut self) -> Compare {
        let (key, range_end) = if self.chance(25) { self.span() } else { (self.key(), Vec::new()) };
        let target = if self.chance(2) { 7 } else { self.rng.random_range(0..=4) };
        let result = if self.chance(2) { 9 } else { self.rng.random_range(0..=3) };
        // mostly the operand that matches the target; sometimes another one, or none
        let operand = if self.chance(94) { target } else { self.rng.random_range(0..=5) };
        let target_union = match CompareTarget::try_from(operand) {
            Ok(CompareTarget::Version) => Some(TargetUnion::Version(self.rng.random_range(0..=4))),
            Ok(CompareTarget::Create) => Some(TargetUnion::CreateRevision(self.seen_or_random())),
            Ok(CompareTarget::Mod) => Some(TargetUnion::ModRevision(self.seen_or_random())),
            Ok(CompareTarget::Value) => Some(TargetUnion::Value(self.compare_value())),
            Ok(CompareTarget::Lease) => Some(TargetUnion::Lease(if self.chance(80) { 0 } else { 7 })),
            Err(_) => None,
        };
        Compare { result, target, key, range_end, target_union }
    }

    /// A txn at `depth` whose ops avoid the keys `scope` already writes.
    fn txn(&mut self, depth: usize, scope: &mut TxnScope) -> TxnRequest {
        let compare = (0..self.rng.random_range(0..=3)).map(|_| self.compare()).collect();
        let success = (0..self.rng.random_range(0..=4)).map(|_| self.txn_op(depth, scope)).collect();
        let failure = (0..self.rng.random_range(0..=3)).map(|_| self.txn_op(depth, scope)).collect();
        TxnRequest { compare, success, failure }
    }

    fn txn_op(&mut self, depth: usize, scope: &mut TxnScope) -> RequestOp {
        let request = match self.rng.random_range(0..100) {
            0..35 => None,
            35..70 => self.txn_put(scope).map(Request::RequestPut),
            70..85 => self.txn_delete(scope).map(Request::RequestDeleteRange),
            _ if depth < TXN_DEPTH_MAX => Some(Request::RequestTxn(self.txn(depth + 1, scope))),
            _ => None,
        };
        RequestOp { request: Some(request.unwrap_or_else(|| Request::RequestRange(self.range(true)))) }
    }

    fn txn_put(&mut self, scope: &mut TxnScope) -> Option<PutRequest> {
        let free: Vec<&Vec<u8>> = self.universe.keys.iter().filter(|k| scope.is_free(k)).collect();
        if free.is_empty() {
            return None;
        }
        let key = free[self.rng.random_range(0..free.len())].clone();
        scope.put_keys.push(key.clone());
        Some(self.put(key, !scope.from_key_delete, true))
    }

    fn txn_delete(&mut self, scope: &mut TxnScope) -> Option<DeleteRangeRequest> {
        for _attempt in 0..4 {
            let (key, range_end) = self.span();
            if scope.put_keys.iter().any(|k| in_range(k, &key, &range_end)) {
                continue;
            }
            scope.from_key_delete |= range_end == [0];
            scope.deleted.push((key.clone(), range_end.clone()));
            return Some(DeleteRangeRequest { key, range_end, prev_kv: self.chance(50) });
        }
        None
    }

    /// A plain one-key read, for filling txns up to the op limit.
    fn filler(&mut self) -> RequestOp {
        let key = self.key();
        RequestOp { request: Some(Request::RequestRange(RangeRequest { key, ..Default::default() })) }
    }

    /// A top-level txn, sometimes with one deliberate fault.
    fn top_txn(&mut self) -> TxnRequest {
        let mut txn = self.txn(1, &mut TxnScope::default());
        match self.rng.random_range(0..1000) {
            // the same put twice in one branch: "duplicate key given in txn request"
            0..30 => {
                let branch = if self.chance(50) { &mut txn.success } else { &mut txn.failure };
                let put = branch.iter().find(|op| matches!(op.request, Some(Request::RequestPut(_)))).cloned();
                let key = self.key();
                let put = put.unwrap_or_else(|| RequestOp {
                    request: Some(Request::RequestPut(PutRequest { key, ..Default::default() })),
                });
                branch.push(put.clone());
                branch.push(put);
            }
            // an op with no request: "key not found"
            30..42 => {
                let branch = if self.chance(50) { &mut txn.success } else { &mut txn.failure };
                let at = self.rng.random_range(0..=branch.len());
                branch.insert(at, RequestOp { request: None });
            }
            // an empty key in a compare or an op: "key is not provided"
            42..52 => {
                if self.chance(50) {
                    let mut compare = self.compare();
                    compare.key.clear();
                    txn.compare.push(compare);
                } else {
                    let range = RangeRequest::default();
                    txn.failure.push(RequestOp { request: Some(Request::RequestRange(range)) });
                }
            }
            // too many ops in a branch, or too many compares
            52..56 => txn.success = (0..MAX_TXN_OPS + 1).map(|_| self.filler()).collect(),
            56..58 => {
                let compare = self.compare();
                txn.compare = vec![compare; MAX_TXN_OPS + 1];
            }
            // exactly the limit: accepted
            58..61 => txn.failure = (0..MAX_TXN_OPS).map(|_| self.filler()).collect(),
            // a nested txn gets the budget its parent leaves: 128 - 101 = 27 ops
            61..66 => {
                let nested_ops = self.rng.random_range(26..=29);
                let nested = TxnRequest {
                    compare: vec![],
                    success: (0..nested_ops).map(|_| self.filler()).collect(),
                    failure: vec![],
                };
                let mut ops: Vec<RequestOp> = (0..100).map(|_| self.filler()).collect();
                ops.push(RequestOp { request: Some(Request::RequestTxn(nested)) });
                txn = TxnRequest { compare: vec![], success: ops, failure: vec![] };
            }
            _ => {}
        }
        txn
    }

    /// A txn putting 16 or more distinct keys at once (so wide ranges have many keys to return) with a
    /// read among the puts, sometimes guarded by a compare over a prefix span; its failure branch reads
    /// a span, after deleting one half the time.
    fn bulk_txn(&mut self) -> TxnRequest {
        let compare = (0..usize::from(self.chance(40)))
            .map(|_| {
                let mut compare = self.compare();
                (compare.key, compare.range_end) = self.prefix_span();
                compare
            })
            .collect();
        let mut keys = self.universe.keys.clone();
        let count = self.rng.random_range(16..=keys.len());
        for i in 0..count {
            let j = self.rng.random_range(i..keys.len());
            keys.swap(i, j);
        }
        keys.truncate(count);
        let mut success: Vec<RequestOp> = keys
            .into_iter()
            .map(|key| {
                let put = PutRequest { key, value: self.value(), prev_kv: self.chance(30), ..Default::default() };
                RequestOp { request: Some(Request::RequestPut(put)) }
            })
            .collect();
        // a read in the middle sees the writes before it
        let at = self.rng.random_range(0..=success.len());
        success.insert(at, RequestOp { request: Some(Request::RequestRange(self.range(true))) });
        let mut failure = vec![RequestOp { request: Some(Request::RequestRange(self.range(true))) }];
        if self.chance(50) {
            failure.insert(0, RequestOp { request: Some(Request::RequestDeleteRange(self.delete())) });
        }
        TxnRequest { compare, success, failure }
    }

    fn compact(&mut self) -> CompactionRequest {
        let physical = self.chance(30);
        let lowest_valid = (self.compact + 1).max(self.current - 50);
        let revision = match self.rng.random_range(0..100) {
            0..50 if lowest_valid <= self.current => self.rng.random_range(lowest_valid..=self.current),
            0..75 => self.rng.random_range(self.compact - 3..=self.compact),
            _ => self.current + self.rng.random_range(1..=3),
        };
        CompactionRequest { revision, physical }
    }

    fn op(&mut self) -> Op {
        let bulk = self.universe.bulk_per_mille;
        if bulk > 0 && self.rng.random_range(0..1000) < bulk {
            return Op::Txn(self.bulk_txn());
        }
        match self.rng.random_range(0..1000) {
            0..300 => {
                let key = if self.chance(2) { Vec::new() } else { self.key() };
                Op::Put(self.put(key, true, false))
            }
            300..410 => Op::DeleteRange(self.delete()),
            410..710 => Op::Range(self.range(false)),
            710..970 => Op::Txn(self.top_txn()),
            _ => Op::Compact(self.compact()),
        }
    }

    /// Learns the new revision (and compaction) from the reference's answer to `op`.
    fn observe(&mut self, op: &Op, answer: &Answer) {
        let Ok(reply) = answer else { return };
        if let Some(header) = reply.header() {
            self.current = header.revision;
        }
        if let Op::Compact(c) = op {
            self.compact = c.revision;
        }
        // the key-values the reply shows, and whether their mod revisions are worth remembering
        let (kvs, with_mod) = match reply {
            Reply::Range(r) => (&r.kvs[..], true),
            Reply::Put(p) => (p.prev_kv.as_slice(), true),
            Reply::DeleteRange(d) => (&d.prev_kvs[..], false),
            _ => (&[][..], false),
        };
        self.seen.push(self.current);
        for kv in kvs {
            if with_mod {
                self.seen.push(kv.mod_revision);
            }
            self.seen.push(kv.create_revision);
        }
        let excess = self.seen.len().saturating_sub(SEEN_MAX);
        self.seen.drain(..excess);
        // keys_only replies carry no values
        self.seen_values.extend(kvs.iter().filter(|kv| !kv.value.is_empty()).map(|kv| kv.value.clone()));
        let excess = self.seen_values.len().saturating_sub(SEEN_MAX);
        self.seen_values.drain(..excess);
    }

    /// Learns only the new revision from the reference's answer to a lease, watch or fence step (so
    /// that these leave the remembered revisions and values of the KV ops alone).
    fn observe_revision(&mut self, answer: &Answer) {
        if let Ok(reply) = answer
            && let Some(header) = reply.header()
        {
            self.current = header.revision;
        }
    }
}

/// How often each kind of op succeeded or failed (by message), to show the test exercises both.
#[derive(Default)]
struct Tally {
    ok: usize,
    errors: BTreeMap<String, usize>,
    /// Notable successes: ranges that returned keys, txns that took the success branch, ...
    notes: BTreeMap<&'static str, usize>,
}

fn note(tally: &mut Tally, answer: &Answer) {
    let reply = match answer {
        Ok(reply) => reply,
        Err((code, message)) => {
            *tally.errors.entry(format!("{code:?}: {message}")).or_default() += 1;
            return;
        }
    };
    tally.ok += 1;
    let notes: &[(&'static str, bool)] = match reply {
        Reply::Range(r) => &[
            ("returned keys", !r.kvs.is_empty()),
            ("returned over 12 keys", r.kvs.len() > 12),
            ("counted over 12 keys", r.count > 12),
            ("more", r.more),
        ],
        Reply::Put(p) => &[("returned prev_kv", p.prev_kv.is_some())],
        Reply::DeleteRange(d) => &[
            ("deleted keys", d.deleted > 0),
            ("deleted over 12 keys", d.deleted > 12),
            ("returned prev_kvs", !d.prev_kvs.is_empty()),
        ],
        Reply::Txn(t) => &[
            ("succeeded", t.succeeded),
            ("nested txn ran", t.responses.iter().any(|r| matches!(r.response, Some(Response::ResponseTxn(_))))),
        ],
        Reply::LeaseTimeToLive(t) => &[("found", t.ttl != -1), ("listed keys", !t.keys.is_empty())],
        Reply::LeaseLeases(l) => &[("listed leases", !l.leases.is_empty())],
        Reply::Compact(_) | Reply::LeaseGrant(_) | Reply::LeaseRevoke(_) => &[],
    };
    for &(name, hit) in notes {
        *tally.notes.entry(name).or_default() += usize::from(hit);
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text}: {e}")))
}

/// `value` as `Debug` prints it, with non-empty byte lists (`[97, 47, 120]`) shown as `b"a/x"`.
fn readable(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        let close = rest.find(']').unwrap_or(0);
        let bytes: Option<Vec<u8>> = rest[1..close.max(1)].split(", ").map(|b| b.parse().ok()).collect();
        match bytes {
            Some(bytes) if close > 1 => {
                out.push_str(&format!("b\"{}\"", bytes.escape_ascii()));
                rest = &rest[close + 1..];
            }
            _ => {
                out.push('[');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `false` when the environment variable `name` is `0`, `off` or `false`; `true` when it is unset.
fn env_flag(name: &str) -> bool {
    match std::env::var(name).as_deref().map(str::trim) {
        Err(_) | Ok("" | "1" | "on" | "true") => true,
        Ok("0" | "off" | "false") => false,
        Ok(other) => panic!("{name}={other}: expected 0 or 1"),
    }
}

/// The subject's name when `T4_DIFF_SUBJECT=etcd` puts a second etcd in T4's place.
const SUBJECT_ETCD: &str = "etcd-subject";

/// The server compared with the reference: `t4`, or a second etcd with `T4_DIFF_SUBJECT=etcd`.
fn subject_from_env() -> &'static str {
    match std::env::var("T4_DIFF_SUBJECT").as_deref().map(str::trim) {
        Err(_) | Ok("" | "t4") => "t4",
        Ok("etcd") => SUBJECT_ETCD,
        Ok(other) => panic!("T4_DIFF_SUBJECT={other}: expected `t4` or `etcd`"),
    }
}

// ---------------------------------------------------------------------------------------------
// Leases

/// A lease the sequence granted, named by the reference's id for it.
#[derive(Debug)]
struct Lease {
    id: i64,
    /// The servers chose its id, each its own.
    assigned: bool,
    alive: bool,
}

/// The leases granted so far, and each server's id for those whose ids the servers assigned.
///
/// Requests name leases by the reference's ids. Before a request goes to the subject, its lease ids
/// are translated into the subject's, and the subject's answers (and watch events) are translated
/// back, so that both answers compare as they are. Ids nobody assigned pass unchanged, which is only
/// right while such an id means the same lease (or none) on both servers: the ids the sequence picks
/// avoid every id either server assigned, and [`LeaseBook::prepare`] rewrites what could still
/// differ for reasons of id assignment alone.
#[derive(Default)]
struct LeaseBook {
    /// In grant order (a revoked client-chosen id granted again replaces its entry).
    leases: Vec<Lease>,
    /// Reference id → subject id, for assigned ids.
    to_subject: HashMap<i64, i64>,
    /// Subject id → reference id, for assigned ids.
    to_reference: HashMap<i64, i64>,
    /// Keys recently put with a lease, and the lease (some detached, deleted or revoked since): to
    /// compare their leases, ask for their leases' keys, revoke them, or put them without a lease.
    attached: Vec<(Vec<u8>, i64)>,
}

impl LeaseBook {
    /// Whether `id` is, or was, a lease's id on either server.
    fn known(&self, id: i64) -> bool {
        self.leases.iter().any(|l| l.id == id) || self.to_reference.contains_key(&id)
    }

    fn alive(&self) -> Vec<i64> {
        self.leases.iter().filter(|l| l.alive).map(|l| l.id).collect()
    }

    /// Revoked leases, but not client-chosen ids the subject has since assigned to a lease of its own.
    fn dead(&self) -> Vec<i64> {
        let usable = |l: &&Lease| !l.alive && (l.assigned || !self.to_reference.contains_key(&l.id));
        self.leases.iter().filter(usable).map(|l| l.id).collect()
    }

    fn bury(&mut self, id: i64) {
        self.leases.iter_mut().filter(|l| l.id == id).for_each(|l| l.alive = false);
    }

    /// An id no lease has had on either server, chosen without randomness.
    fn unused_id(&self) -> i64 {
        (1i64 << 52..).find(|&id| !self.known(id)).expect("an unused lease id")
    }

    fn subject_id(&self, id: i64) -> i64 {
        self.to_subject.get(&id).copied().unwrap_or(id)
    }

    fn reference_id(&self, id: i64) -> i64 {
        self.to_reference.get(&id).copied().unwrap_or(id)
    }

    /// `op` without what would make the servers disagree only because they assigned different ids:
    ///
    /// - an id that passes unchanged but is the subject's id of another lease (a random id of a KV
    ///   op, or a revoked client-chosen id the subject assigned again) becomes an unused id;
    /// - a LESS/GREATER compare on LEASE compares with 0 instead while an assigned lease is alive
    ///   (it may be on the compared key) or when it names an assigned lease: how assigned ids order
    ///   among the others differs between the servers. Against 0 every lease compares the same.
    fn prepare(&self, mut op: Op) -> Op {
        visit_op_leases(&mut op, &mut |id| {
            if !self.to_subject.contains_key(id) && self.to_reference.contains_key(id) {
                *id = self.unused_id();
            }
        });
        let assigned_alive = self.leases.iter().any(|l| l.alive && l.assigned);
        visit_op_compares(&mut op, &mut |compare| {
            let ordering =
                compare.result == CompareResult::Greater as i32 || compare.result == CompareResult::Less as i32;
            if compare.target == CompareTarget::Lease as i32
                && ordering
                && let Some(TargetUnion::Lease(id)) = &mut compare.target_union
                && *id != 0
                && (assigned_alive || self.to_subject.contains_key(id))
            {
                *id = 0;
            }
        });
        op
    }

    /// `op` with the subject's lease ids.
    fn for_subject(&self, op: &Op) -> Op {
        let mut op = op.clone();
        visit_op_leases(&mut op, &mut |id| *id = self.subject_id(*id));
        op
    }

    /// The subject's `answer` with the reference's lease ids.
    fn to_reference_answer(&self, answer: &mut Answer) {
        if let Ok(reply) = answer {
            visit_reply_leases(reply, &mut |id| *id = self.reference_id(*id));
        }
    }

    /// A subject's watch event with the reference's lease ids.
    fn to_reference_event(&self, event: &mut Event) {
        for kv in event.kv.iter_mut().chain(event.prev_kv.iter_mut()) {
            kv.lease = self.reference_id(kv.lease);
        }
    }

    /// After a grant with id 0: checks that both servers assigned a positive id and pairs the two.
    fn learn_assigned(&mut self, op: &Op, etcd: &Answer, subject: &Answer, subject_name: &str) -> Result<(), String> {
        let Op::LeaseGrant(LeaseGrantRequest { id: 0, .. }) = op else { return Ok(()) };
        let (Ok(Reply::LeaseGrant(e)), Ok(Reply::LeaseGrant(s))) = (etcd, subject) else { return Ok(()) };
        for (name, id) in [("etcd", e.id), (subject_name, s.id)] {
            if id <= 0 {
                return Err(format!("{name} assigned the lease id {id}, not a positive one"));
            }
        }
        // The subject gave a revoked lease's id to this one: that lease's id on the subject is gone.
        if let Some(before) = self.to_reference.insert(s.id, e.id) {
            let unused = self.unused_id();
            self.to_subject.insert(before, unused);
        }
        self.to_subject.insert(e.id, s.id);
        Ok(())
    }

    /// Learns the leases granted and revoked, and the keys attached, from the reference's `answer`.
    fn learn(&mut self, op: &Op, answer: &Answer) {
        let Ok(reply) = answer else { return };
        match (op, reply) {
            (Op::LeaseGrant(grant), Reply::LeaseGrant(granted)) => {
                self.leases.retain(|l| l.id != granted.id);
                self.leases.push(Lease { id: granted.id, assigned: grant.id == 0, alive: true });
            }
            (Op::LeaseRevoke(revoke), Reply::LeaseRevoke(_)) => self.bury(revoke.id),
            (Op::Put(put), Reply::Put(_)) => self.attach(put),
            (Op::Txn(txn), Reply::Txn(done)) => {
                let branch = if done.succeeded { &txn.success } else { &txn.failure };
                for op in branch {
                    if let Some(Request::RequestPut(put)) = &op.request {
                        self.attach(put);
                    }
                }
            }
            _ => {}
        }
    }

    fn attach(&mut self, put: &PutRequest) {
        if put.lease != 0 && !put.ignore_lease {
            self.attached.push((put.key.clone(), put.lease));
            let excess = self.attached.len().saturating_sub(ATTACHED_MAX);
            self.attached.drain(..excess);
        }
    }
}

/// The key the first op of `ops` puts.
fn success_key(ops: &[RequestOp]) -> Vec<u8> {
    match ops.first().and_then(|op| op.request.as_ref()) {
        Some(Request::RequestPut(put)) => put.key.clone(),
        _ => Vec::new(),
    }
}

/// Calls `f` on every lease id `op` names.
fn visit_op_leases(op: &mut Op, f: &mut dyn FnMut(&mut i64)) {
    match op {
        Op::Put(p) => f(&mut p.lease),
        Op::Txn(t) => visit_txn_leases(t, f),
        Op::LeaseGrant(g) if g.id != 0 => f(&mut g.id),
        Op::LeaseRevoke(r) => f(&mut r.id),
        Op::LeaseTimeToLive(r) => f(&mut r.id),
        _ => {}
    }
}

fn visit_txn_leases(txn: &mut TxnRequest, f: &mut dyn FnMut(&mut i64)) {
    for compare in &mut txn.compare {
        if let Some(TargetUnion::Lease(id)) = &mut compare.target_union {
            f(id);
        }
    }
    for op in txn.success.iter_mut().chain(&mut txn.failure) {
        match &mut op.request {
            Some(Request::RequestPut(p)) => f(&mut p.lease),
            Some(Request::RequestTxn(t)) => visit_txn_leases(t, f),
            _ => {}
        }
    }
}

/// Calls `f` on every compare of `op`, in nested txns too.
fn visit_op_compares(op: &mut Op, f: &mut dyn FnMut(&mut Compare)) {
    fn visit_txn(txn: &mut TxnRequest, f: &mut dyn FnMut(&mut Compare)) {
        txn.compare.iter_mut().for_each(&mut *f);
        for op in txn.success.iter_mut().chain(&mut txn.failure) {
            if let Some(Request::RequestTxn(t)) = &mut op.request {
                visit_txn(t, f);
            }
        }
    }
    if let Op::Txn(t) = op {
        visit_txn(t, f);
    }
}

/// Calls `f` on every lease id in `reply`: the key-values' leases and the lease replies' ids.
fn visit_reply_leases(reply: &mut Reply, f: &mut dyn FnMut(&mut i64)) {
    match reply {
        Reply::Put(p) => p.prev_kv.iter_mut().for_each(|kv| f(&mut kv.lease)),
        Reply::DeleteRange(d) => d.prev_kvs.iter_mut().for_each(|kv| f(&mut kv.lease)),
        Reply::Range(r) => r.kvs.iter_mut().for_each(|kv| f(&mut kv.lease)),
        Reply::Txn(t) => visit_txn_reply_leases(t, f),
        Reply::LeaseGrant(g) => f(&mut g.id),
        Reply::LeaseTimeToLive(t) => f(&mut t.id),
        Reply::LeaseLeases(l) => l.leases.iter_mut().for_each(|status| f(&mut status.id)),
        Reply::Compact(_) | Reply::LeaseRevoke(_) => {}
    }
}

fn visit_txn_reply_leases(txn: &mut TxnResponse, f: &mut dyn FnMut(&mut i64)) {
    for op in &mut txn.responses {
        match &mut op.response {
            Some(Response::ResponseRange(r)) => r.kvs.iter_mut().for_each(|kv| f(&mut kv.lease)),
            Some(Response::ResponsePut(p)) => p.prev_kv.iter_mut().for_each(|kv| f(&mut kv.lease)),
            Some(Response::ResponseDeleteRange(d)) => d.prev_kvs.iter_mut().for_each(|kv| f(&mut kv.lease)),
            Some(Response::ResponseTxn(t)) => visit_txn_reply_leases(t, f),
            None => {}
        }
    }
}

/// Makes an answer comparable: LeaseTimeToLive's remaining TTL, which depends on the time, must lie
/// in `1..=granted_ttl` and is then zeroed; lists whose order is the server's choice (etcd walks a Go
/// map for a lease's keys and orders leases by expiry) are sorted.
fn normalise(answer: &mut Answer) -> Result<(), String> {
    match answer {
        Ok(Reply::LeaseTimeToLive(r)) => {
            if r.ttl != -1 {
                if r.ttl <= 0 || r.ttl > r.granted_ttl {
                    return Err(format!("lease {} has {} s left of the {} s granted", r.id, r.ttl, r.granted_ttl));
                }
                r.ttl = 0;
            }
            r.keys.sort();
        }
        Ok(Reply::LeaseLeases(r)) => r.leases.sort_by_key(|l| l.id),
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The lease and watch steps

/// The second random source, which draws the lease and watch steps (and fence values) so that the
/// KV ops keep their own draws.
struct Side {
    rng: ChaCha8Rng,
    /// Values generated so far (numbers the unique ones).
    written: u64,
}

/// One lease step.
enum LeaseStep {
    /// An op, tallied under the name.
    Op(&'static str, Op),
    /// A grant whose TTL is short enough to expire during the run: revoked right after.
    ShortGrant(LeaseGrantRequest),
    /// A lease's life in consecutive steps (see [`Diff::lease_scenario`]).
    Scenario,
}

impl Side {
    fn new(seed: u64) -> Side {
        Side { rng: ChaCha8Rng::seed_from_u64(seed ^ SIDE_SEED_MIX), written: 0 }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    fn key(&mut self, universe: &Universe) -> Vec<u8> {
        pick_bytes(&mut self.rng, &universe.keys)
    }

    fn bound(&mut self, universe: &Universe) -> Vec<u8> {
        if self.chance(70) { self.key(universe) } else { pick_bytes(&mut self.rng, &universe.bounds) }
    }

    /// A value to write: a shared one, or `l` and a count (no KV op's unique value starts with `l`).
    fn value(&mut self, universe: &Universe) -> Vec<u8> {
        self.written += 1;
        match universe.values {
            Values::Shared(values) => values[self.rng.random_range(0..values.len())].to_vec(),
            Values::Unique => format!("l{}", self.written).into_bytes(),
        }
    }

    /// An id no lease has had on either server: mostly small, sometimes large or negative.
    fn fresh_id(&mut self, leases: &LeaseBook) -> i64 {
        for _attempt in 0..64 {
            let id = match self.rng.random_range(0..100) {
                0..80 => self.rng.random_range(1..=1000),
                80..95 => self.rng.random_range(1..=i64::MAX),
                _ => -self.rng.random_range(1..=1000),
            };
            if !leases.known(id) {
                return id;
            }
        }
        leases.unused_id()
    }

    /// A TTL that outlives the run.
    fn long_ttl(&mut self) -> i64 {
        self.rng.random_range(600..=3600)
    }

    fn pick_id(&mut self, ids: &[i64]) -> Option<i64> {
        (!ids.is_empty()).then(|| ids[self.rng.random_range(0..ids.len())])
    }

    fn alive_or_fresh(&mut self, leases: &LeaseBook) -> i64 {
        match self.pick_id(&leases.alive()) {
            Some(id) => id,
            None => self.fresh_id(leases),
        }
    }

    /// A key recently put with a lease, and that lease.
    fn attached(&mut self, leases: &LeaseBook) -> Option<(Vec<u8>, i64)> {
        (!leases.attached.is_empty()).then(|| leases.attached[self.rng.random_range(0..leases.attached.len())].clone())
    }

    /// Half the time a lease recently put on a key (maybe revoked since), else an alive one.
    fn lease_in_use(&mut self, leases: &LeaseBook) -> i64 {
        match self.attached(leases) {
            Some((_, id)) if self.chance(50) => id,
            _ => self.alive_or_fresh(leases),
        }
    }

    fn dead_or_fresh(&mut self, leases: &LeaseBook) -> i64 {
        match self.pick_id(&leases.dead()) {
            Some(id) if self.chance(70) => id,
            _ => self.fresh_id(leases),
        }
    }

    fn leased_put(&mut self, universe: &Universe, key: Vec<u8>, lease: i64) -> PutRequest {
        let value = self.value(universe);
        PutRequest { key, value, lease, prev_kv: self.chance(50), ignore_value: false, ignore_lease: false }
    }

    fn lease_step(&mut self, universe: &Universe, leases: &LeaseBook) -> LeaseStep {
        if self.chance(25) {
            return LeaseStep::Scenario;
        }
        let grant = |id, ttl| Op::LeaseGrant(LeaseGrantRequest { ttl, id });
        let (kind, op) = match self.rng.random_range(0..100) {
            0..14 => ("lease_grant", grant(self.fresh_id(leases), self.long_ttl())),
            14..18 => ("lease_grant (id in use)", grant(self.alive_or_fresh(leases), self.long_ttl())),
            18..27 => ("lease_grant (id assigned)", grant(0, self.long_ttl())),
            27..31 => {
                // etcd raises TTLs below its minimum (2 s with its default timing) to it
                let ttl = [1, 2, 0, -5][self.rng.random_range(0..4)];
                return LeaseStep::ShortGrant(LeaseGrantRequest { ttl, id: self.fresh_id(leases) });
            }
            31..33 => {
                let ttl = if self.chance(50) { MAX_LEASE_TTL } else { MAX_LEASE_TTL + 1 };
                ("lease_grant (largest ttl)", grant(self.fresh_id(leases), ttl))
            }
            33..35 => {
                // a revoked client-chosen id is free again
                let dead: Vec<i64> =
                    leases.dead().into_iter().filter(|id| !leases.to_subject.contains_key(id)).collect();
                let id = match self.pick_id(&dead) {
                    Some(id) => id,
                    None => self.fresh_id(leases),
                };
                ("lease_grant (revoked id)", grant(id, self.long_ttl()))
            }
            35..51 => {
                let (key, lease) = (self.key(universe), self.alive_or_fresh(leases));
                ("lease: put", Op::Put(self.leased_put(universe, key, lease)))
            }
            51..55 => {
                let (key, lease) = (self.key(universe), self.dead_or_fresh(leases));
                ("lease: put (revoked or unknown lease)", Op::Put(self.leased_put(universe, key, lease)))
            }
            55..59 => {
                // keeps the key's lease: an error if the key does not exist, or with a lease given
                let key = self.key(universe);
                let lease = if self.chance(15) { self.alive_or_fresh(leases) } else { 0 };
                let mut put = self.leased_put(universe, key, lease);
                put.ignore_lease = true;
                ("lease: put ignore_lease", Op::Put(put))
            }
            59..63 => {
                let key = match self.attached(leases) {
                    Some((key, _)) => key,
                    None => self.key(universe),
                };
                ("lease: put detaching", Op::Put(self.leased_put(universe, key, 0)))
            }
            63..73 => ("lease: txn", Op::Txn(self.lease_txn(universe, leases))),
            73..81 => ("lease_revoke", Op::LeaseRevoke(LeaseRevokeRequest { id: self.lease_in_use(leases) })),
            81..84 => {
                let id = self.dead_or_fresh(leases);
                ("lease_revoke (revoked or unknown)", Op::LeaseRevoke(LeaseRevokeRequest { id }))
            }
            84..94 => {
                let id = if self.chance(80) { self.lease_in_use(leases) } else { self.dead_or_fresh(leases) };
                ("lease_time_to_live", Op::LeaseTimeToLive(LeaseTimeToLiveRequest { id, keys: self.chance(70) }))
            }
            _ => ("lease_leases", Op::LeaseLeases(LeaseLeasesRequest {})),
        };
        LeaseStep::Op(kind, op)
    }

    /// A txn comparing keys' leases, putting keys with leases (alive, none, or unknown: the txn then
    /// fails) and reading keys.
    fn lease_txn(&mut self, universe: &Universe, leases: &LeaseBook) -> TxnRequest {
        let compare = (0..self.rng.random_range(1..=2))
            .map(|_| {
                let target = CompareTarget::Lease as i32;
                // often a key's own lease, so that compares hold as often as not
                if let Some((key, lease)) = self.attached(leases)
                    && self.chance(50)
                {
                    let result =
                        if self.chance(75) { CompareResult::Equal as i32 } else { self.rng.random_range(0..=3) };
                    return Compare {
                        result,
                        target,
                        key,
                        range_end: Vec::new(),
                        target_union: Some(TargetUnion::Lease(lease)),
                    };
                }
                let (key, range_end) = if self.chance(80) {
                    (self.key(universe), Vec::new())
                } else {
                    let prefix = pick_bytes(&mut self.rng, &universe.prefixes);
                    let end = prefix_end(&prefix);
                    (prefix, end)
                };
                let lease = match self.rng.random_range(0..10) {
                    0..5 => self.alive_or_fresh(leases),
                    5..8 => 0,
                    _ => self.dead_or_fresh(leases),
                };
                let result = self.rng.random_range(0..=3);
                Compare { result, target, key, range_end, target_union: Some(TargetUnion::Lease(lease)) }
            })
            .collect();
        let mut used = Vec::new();
        let success =
            (0..self.rng.random_range(1..=3)).map(|_| self.lease_txn_op(universe, leases, &mut used)).collect();
        let failure =
            (0..self.rng.random_range(0..=2)).map(|_| self.lease_txn_op(universe, leases, &mut used)).collect();
        TxnRequest { compare, success, failure }
    }

    /// A txn of a lease scenario: compares the lease of one of `keys` (put with lease `id`) and
    /// another key's, then puts a key with the lease, or detaches one.
    fn scenario_txn(&mut self, universe: &Universe, keys: &[Vec<u8>], id: i64) -> TxnRequest {
        let target = CompareTarget::Lease as i32;
        let key = pick_bytes(&mut self.rng, keys);
        let (result, lease) = match self.rng.random_range(0..10) {
            0..6 => (CompareResult::Equal, id),
            6..8 => (CompareResult::NotEqual, id),
            _ => (CompareResult::Greater, 0),
        };
        let mut compare = vec![Compare {
            result: result as i32,
            target,
            key,
            range_end: Vec::new(),
            target_union: Some(TargetUnion::Lease(lease)),
        }];
        if self.chance(40) {
            let key = self.key(universe);
            let result = CompareResult::Equal as i32;
            compare.push(Compare {
                result,
                target,
                key,
                range_end: Vec::new(),
                target_union: Some(TargetUnion::Lease(0)),
            });
        }
        let put_key = self.key(universe);
        let mut detach_key = pick_bytes(&mut self.rng, keys);
        if detach_key == put_key {
            detach_key = self.key(universe);
        }
        let read = RequestOp {
            request: Some(Request::RequestRange(RangeRequest { key: put_key.clone(), ..Default::default() })),
        };
        let put = RequestOp { request: Some(Request::RequestPut(self.leased_put(universe, put_key, id))) };
        let success = vec![put, read];
        let failure = if detach_key == success_key(&success) {
            vec![]
        } else {
            vec![RequestOp { request: Some(Request::RequestPut(self.leased_put(universe, detach_key, 0))) }]
        };
        TxnRequest { compare, success, failure }
    }

    /// A put of a key no other put of the txn writes (else a read).
    fn lease_txn_op(&mut self, universe: &Universe, leases: &LeaseBook, used: &mut Vec<Vec<u8>>) -> RequestOp {
        let free: Vec<&Vec<u8>> = universe.keys.iter().filter(|k| !used.contains(k)).collect();
        let request = if !free.is_empty() && self.chance(75) {
            let key = free[self.rng.random_range(0..free.len())].clone();
            used.push(key.clone());
            let lease = match self.rng.random_range(0..10) {
                0..6 => self.alive_or_fresh(leases),
                6..9 => 0,
                _ => self.fresh_id(leases),
            };
            Request::RequestPut(self.leased_put(universe, key, lease))
        } else {
            Request::RequestRange(RangeRequest { key: self.key(universe), ..Default::default() })
        };
        RequestOp { request: Some(request) }
    }

    /// A watch on a new or an open stream (`streams` are open), with a random span, filters, start
    /// revision and options.
    fn watch(&mut self, universe: &Universe, streams: usize, current: i64, compact: i64) -> WatchPlan {
        let stream = if streams == 0 || (streams < MAX_WATCH_STREAMS && self.chance(30)) {
            streams
        } else {
            self.rng.random_range(0..streams)
        };
        let (key, range_end) = match self.rng.random_range(0..100) {
            0..30 => (self.key(universe), Vec::new()),
            30..55 => {
                let prefix = pick_bytes(&mut self.rng, &universe.prefixes);
                let end = prefix_end(&prefix);
                (prefix, end)
            }
            // half-open; may be empty, and etcd then refuses the watch
            55..70 => (self.bound(universe), self.bound(universe)),
            70..80 => (self.bound(universe), vec![0]),
            80..90 => (vec![0], vec![0]),
            // no key: etcd watches `\0`, the smallest key (alone, or and all after it)
            90..95 => (Vec::new(), Vec::new()),
            _ => (Vec::new(), vec![0]),
        };
        let (noput, nodelete) = (FilterType::Noput as i32, FilterType::Nodelete as i32);
        let filters = match self.rng.random_range(0..100) {
            0..60 => vec![],
            60..75 => vec![noput],
            75..90 => vec![nodelete],
            90..96 => vec![noput, nodelete],
            _ => vec![7], // no such filter: etcd ignores it
        };
        let past = (compact + 1).max(1);
        let start_revision = match self.rng.random_range(0..100) {
            0..40 => 0,
            40..50 => current + self.rng.random_range(1..=3),
            50..65 => current,
            65..90 if past <= current => self.rng.random_range(past..=current),
            90.. if compact > 1 => self.rng.random_range(1..compact),
            _ => 0,
        };
        let mut request = WatchCreateRequest {
            key,
            range_end,
            start_revision,
            progress_notify: self.chance(10),
            filters,
            prev_kv: self.chance(40),
            watch_id: if self.chance(15) { self.rng.random_range(1..=6) } else { 0 },
            fragment: false,
        };
        let both = request.filters.contains(&noput) && request.filters.contains(&nodelete);
        let covered: Vec<&Vec<u8>> = universe.keys.iter().filter(|k| watch_covers(&request, k)).collect();
        let fence_key = match covered.len() {
            _ if both => None,
            0 => None,
            n => Some(covered[self.rng.random_range(0..n)].clone()),
        };
        // Only a watch fences reach may catch up from history, and none from the compaction itself
        // (see `WatchPlan`).
        let start = request.start_revision;
        if start != 0 && start <= current && start >= compact && (fence_key.is_none() || start == compact) {
            request.start_revision = 0;
        }
        WatchPlan { stream, request, fence_key, min_revision: 0, state: WatchState::Live }
    }
}

// ---------------------------------------------------------------------------------------------
// Watches

/// Whether a watch created by `request` covers `key` (by etcd's rules: no key means `\0`, no range
/// end one key, `\0` every key from the key on).
fn watch_covers(request: &WatchCreateRequest, key: &[u8]) -> bool {
    let start: &[u8] = if request.key.is_empty() { &[0] } else { &request.key };
    in_range(key, start, &request.range_end)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchState {
    Live,
    /// Canceled by the server: its start revision was compacted.
    Compacted,
    /// Canceled by the sequence.
    Canceled,
    /// The server refused to create it (empty range, watch id in use).
    Failed,
}

/// A watch the sequence created, the same on both servers.
///
/// etcd 3.4 sends some watch responses depending on timing; the sequence avoids those races with
/// fences ([`Diff::fence`]) instead of waiting for time to pass:
///
/// - A watch starting at or before the current revision replays history asynchronously (etcd's
///   sync loop runs every 100 ms); a compaction that overtakes the replay cancels the watch as
///   compacted. So a replaying watch is fenced right after its creation, before anything else runs,
///   and only watches that fences can reach (covering a key of the universe, not filtering out both
///   puts and deletes) start in the past.
/// - A replay from exactly the compaction revision may or may not include that revision's deletes
///   (the compaction removes their tombstones in the background): no watch starts there.
/// - A cancel drops the events etcd has queued but not yet sent (its send loop parks them for an id
///   it no longer announces): a live watch is fenced before it is canceled.
/// - etcd reads `prev_kv` when it sends an event, from the revision before: a compaction right
///   after a write could remove it. Before a compaction of one of the last three revisions, the
///   `prev_kv` watches are fenced.
struct WatchPlan {
    /// The stream it is created on (the same index on both servers).
    stream: usize,
    request: WatchCreateRequest,
    /// A key of the universe the watch covers: a put and a delete of it show that the watch has
    /// delivered everything before them. None when it covers no key (and never receives events) or
    /// filters out both puts and deletes.
    fence_key: Option<Vec<u8>>,
    /// The first revision it may report: its start revision, or the one after its creation.
    min_revision: i64,
    state: WatchState,
}

impl WatchPlan {
    /// Whether the watch reports a put (else a delete) of `key` at `revision`.
    fn sees(&self, key: &[u8], put: bool, revision: i64) -> bool {
        let filter = if put { FilterType::Noput } else { FilterType::Nodelete } as i32;
        revision >= self.min_revision && !self.request.filters.contains(&filter) && watch_covers(&self.request, key)
    }
}

/// What one server sent one watch, by kind of response.
#[derive(Default)]
struct WatchLog {
    stream: usize,
    created: Option<WatchResponse>,
    /// The responses carrying events, in order.
    events: Vec<WatchResponse>,
    compacted: Option<WatchResponse>,
    canceled: Option<WatchResponse>,
    /// Responses with nothing in them (progress notifications).
    empty: usize,
}

impl WatchLog {
    /// The id the server gave the watch, if it created it.
    fn id(&self) -> Option<i64> {
        self.created.as_ref().filter(|c| !c.canceled).map(|c| c.watch_id)
    }

    fn last_revision(&self) -> i64 {
        let last = self.events.last().and_then(|r| r.events.last());
        last.and_then(|e| e.kv.as_ref()).map_or(0, |kv| kv.mod_revision)
    }

    fn flattened(&self) -> Vec<Event> {
        self.events.iter().flat_map(|r| r.events.iter().cloned()).collect()
    }
}

/// A watch stream's responses (or its failure), tagged with the stream's index.
type Delivery = (usize, Result<WatchResponse, tonic::Status>);

/// One server's watch streams, and what each watch received.
struct Watches {
    name: &'static str,
    channel: Channel,
    streams: Vec<WatchStream>,
    /// Every stream's responses, as their readers receive them.
    inbox: mpsc::UnboundedReceiver<Delivery>,
    outbox: mpsc::UnboundedSender<Delivery>,
    /// By watch (the index of its [`WatchPlan`]).
    logs: Vec<WatchLog>,
}

struct WatchStream {
    requests: mpsc::UnboundedSender<WatchRequest>,
    /// Reads the responses into the inbox, so that the server never waits on the test.
    reader: tokio::task::JoinHandle<()>,
    /// The watch each id the server gave belongs to, until the watch is canceled.
    owners: HashMap<i64, usize>,
    /// Watches whose created responses are due, in request order.
    creating: VecDeque<usize>,
}

impl Watches {
    fn new(name: &'static str, channel: Channel) -> Watches {
        let (outbox, inbox) = mpsc::unbounded_channel();
        Watches { name, channel, streams: Vec::new(), inbox, outbox, logs: Vec::new() }
    }

    fn open_stream(&mut self) {
        let index = self.streams.len();
        let (requests, outgoing) = mpsc::unbounded_channel::<WatchRequest>();
        let outgoing =
            futures_lite::stream::unfold(
                outgoing,
                |mut rx| async move { rx.recv().await.map(|request| (request, rx)) },
            );
        let mut client = WatchClient::new(self.channel.clone());
        let outbox = self.outbox.clone();
        let reader = tokio::spawn(async move {
            let mut responses = match client.watch(outgoing).await {
                Ok(responses) => responses.into_inner(),
                Err(status) => {
                    let _ = outbox.send((index, Err(status)));
                    return;
                }
            };
            loop {
                let (delivery, last) = match responses.message().await {
                    Ok(Some(response)) => (Ok(response), false),
                    Ok(None) => (Err(tonic::Status::unknown("the server ended the watch stream")), true),
                    Err(status) => (Err(status), true),
                };
                if outbox.send((index, delivery)).is_err() || last {
                    return;
                }
            }
        });
        self.streams.push(WatchStream { requests, reader, owners: HashMap::new(), creating: VecDeque::new() });
    }

    fn send(&mut self, stream: usize, request: RequestUnion) -> Result<(), String> {
        let request = WatchRequest { request_union: Some(request) };
        let closed = format!("{}: watch stream {stream} is closed", self.name);
        self.streams[stream].requests.send(request).map_err(|_| closed)
    }

    /// Asks for `watch` (the next index) on `stream`, opening streams up to it.
    fn create(&mut self, watch: usize, stream: usize, request: WatchCreateRequest) -> Result<(), String> {
        assert_eq!(self.logs.len(), watch, "watches are created in order");
        while self.streams.len() <= stream {
            self.open_stream();
        }
        self.logs.push(WatchLog { stream, ..WatchLog::default() });
        self.streams[stream].creating.push_back(watch);
        self.send(stream, RequestUnion::CreateRequest(request))
    }

    fn cancel(&mut self, watch: usize) -> Result<(), String> {
        let log = &self.logs[watch];
        let Some(watch_id) = log.id() else { return Err(format!("{}: watch {watch} has no id", self.name)) };
        self.send(log.stream, RequestUnion::CancelRequest(WatchCancelRequest { watch_id }))
    }

    /// Files `response` under its watch: created responses by the order of the create requests,
    /// the others by watch id.
    fn dispatch(&mut self, stream: usize, response: WatchResponse) -> Result<(), String> {
        let name = self.name;
        let owner = &mut self.streams[stream];
        if response.created {
            let Some(watch) = owner.creating.pop_front() else {
                return Err(format!("{name}: a created response nobody asked for: {}", readable(&response)));
            };
            if !response.canceled
                && let Some(other) = owner.owners.insert(response.watch_id, watch)
            {
                return Err(format!("{name}: watch {watch} got the id of watch {other}: {}", readable(&response)));
            }
            self.logs[watch].created = Some(response);
            return Ok(());
        }
        let Some(&watch) = owner.owners.get(&response.watch_id) else {
            return Err(format!(
                "{name}: a response on watch stream {stream} for an id no watch there has: {}",
                readable(&response)
            ));
        };
        let log = &mut self.logs[watch];
        if response.compact_revision != 0 {
            if log.compacted.is_some() {
                return Err(format!("{name}: watch {watch} compacted twice: {}", readable(&response)));
            }
            log.compacted = Some(response);
        } else if response.canceled {
            owner.owners.remove(&response.watch_id);
            log.canceled = Some(response);
        } else if !response.events.is_empty() {
            if log.compacted.is_some() {
                return Err(format!(
                    "{name}: watch {watch} got events after it was compacted: {}",
                    readable(&response)
                ));
            }
            log.events.push(response);
        } else {
            log.empty += 1;
        }
        Ok(())
    }

    fn deliver(&mut self, (stream, delivery): Delivery, what: &str) -> Result<(), String> {
        match delivery {
            Ok(response) => self.dispatch(stream, response),
            Err(status) => Err(format!("{}: watch stream {stream} failed ({what}): {status}", self.name)),
        }
    }

    /// Files responses until `done` holds, for at most [`WATCH_TIMEOUT`] and [`MAX_WAIT_RESPONSES`].
    async fn wait_until(&mut self, what: &str, done: &impl Fn(&Watches) -> bool) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WATCH_TIMEOUT;
        for _response in 0..MAX_WAIT_RESPONSES {
            if done(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(delivery)) => self.deliver(delivery, what)?,
                Ok(None) => unreachable!("the watches hold a sender of their own inbox"),
                Err(_) => return Err(format!("{}: no {what} within {WATCH_TIMEOUT:?}", self.name)),
            }
        }
        Err(format!("{}: no {what} after {MAX_WAIT_RESPONSES} watch responses", self.name))
    }

    /// Files the responses already received.
    fn drain(&mut self) -> Result<(), String> {
        while let Ok(delivery) = self.inbox.try_recv() {
            self.deliver(delivery, "draining")?;
        }
        Ok(())
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for stream in &self.streams {
            stream.reader.abort();
        }
    }
}

/// What each server must get right on its own: events in revision order, all events of a revision
/// in one response, header revisions at or past their events, and only events the watch covers.
fn check_watch(plan: &WatchPlan, log: &WatchLog) -> Result<(), String> {
    if log.created.is_none() {
        return Err("no created response".into());
    }
    let mut last = 0;
    for response in &log.events {
        let header = response.header.as_ref().map_or(0, |h| h.revision);
        for (i, event) in response.events.iter().enumerate() {
            let Some(kv) = &event.kv else {
                return Err(format!("an event without a key-value: {}", readable(response)));
            };
            let revision = kv.mod_revision;
            if revision < last || (i == 0 && revision == last) {
                let earlier = if i == 0 { " in an earlier response" } else { "" };
                return Err(format!("revision {revision} after revision {last}{earlier}: {}", readable(response)));
            }
            if revision > header {
                return Err(format!("an event past its header's revision {header}: {}", readable(response)));
            }
            if !plan.sees(&kv.key, event.r#type == EventType::Put as i32, revision) {
                return Err(format!("an event the watch does not cover: {}", readable(event)));
            }
            last = revision;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run

/// One test's run: both servers' clients and watches, the generators, and what the sequence learnt.
struct Diff {
    test: &'static str,
    seed: u64,
    /// Where the sequence is, for failure messages.
    position: String,
    subject_name: &'static str,
    etcd: Clients,
    subject: Clients,
    etcd_watches: Watches,
    subject_watches: Watches,
    generator: Generator,
    side: Side,
    leases: LeaseBook,
    plans: Vec<WatchPlan>,
    tallies: BTreeMap<&'static str, Tally>,
    with_leases: bool,
    with_watches: bool,
    fences: usize,
    /// Watches created that replayed history.
    replays: usize,
}

async fn clients(server: &Server) -> Clients {
    let lease = LeaseClient::new(common::channel(&server.endpoint).await.expect("connect lease client"));
    Clients { kv: server.kv().await, lease }
}

/// A connection of its own for a server's watch streams.
async fn watch_channel(server: &Server) -> Channel {
    common::channel(&server.endpoint).await.expect("connect watch streams")
}

impl Diff {
    fn fail(&self, what: &str, details: &[(&str, String)]) -> ! {
        let (test, seed, position) = (self.test, self.seed, &self.position);
        let mut message = format!("{test}: {position} (seed {seed}, reproduce with T4_DIFF_SEED={seed}): {what}");
        for (label, text) in details {
            message.push_str(&format!("\n{:<8} {text}", format!("{label}:")));
        }
        panic!("{message}");
    }

    fn fail_op(&self, what: &str, op: &Op, subject_op: &Op, etcd: &Answer, subject: &Answer) -> ! {
        let mut details = vec![("request", readable(op))];
        if readable(op) != readable(subject_op) {
            details.push(("with the subject's lease ids", readable(subject_op)));
        }
        details.push(("etcd", readable(etcd)));
        details.push((self.subject_name, readable(subject)));
        self.fail(what, &details);
    }

    fn fail_watch(&self, watch: usize, what: &str, etcd: String, subject: String) -> ! {
        let plan = &self.plans[watch];
        let about = format!("{} on stream {}, {:?}", readable(&plan.request), plan.stream, plan.state);
        let details = [("watch", about), ("etcd", etcd), (self.subject_name, subject)];
        self.fail(&format!("watch {watch}: {what}"), &details);
    }

    /// Sends `op` to both servers (translating lease ids for the subject) and fails unless the
    /// answers agree; returns the reference's answer, tallied under `kind`.
    async fn exchange(&mut self, kind: &'static str, op: Op) -> Answer {
        let op = self.leases.prepare(op);
        let subject_op = self.leases.for_subject(&op);
        let (etcd, mut subject) =
            tokio::join!(send("etcd", &mut self.etcd, &op), send(self.subject_name, &mut self.subject, &subject_op));
        if let Err(problem) = self.leases.learn_assigned(&op, &etcd, &subject, self.subject_name) {
            self.fail_op(&problem, &op, &subject_op, &etcd, &subject);
        }
        self.leases.to_reference_answer(&mut subject);
        let mut etcd_view = etcd.clone();
        for (name, view) in [("etcd", &mut etcd_view), (self.subject_name, &mut subject)] {
            if let Err(problem) = normalise(view) {
                let problem = format!("{name}: {problem}");
                self.fail_op(&problem, &op, &subject_op, &etcd, view);
            }
        }
        if etcd_view != subject {
            let what = format!("{}'s answer differs from etcd's", self.subject_name);
            self.fail_op(&what, &op, &subject_op, &etcd_view, &subject);
        }
        let before = self.generator.current;
        let tally = self.tallies.entry(kind).or_default();
        note(tally, &etcd);
        if matches!(op, Op::LeaseRevoke(_))
            && etcd.as_ref().ok().and_then(Reply::header).is_some_and(|h| h.revision > before)
        {
            *tally.notes.entry("deleted keys").or_default() += 1;
        }
        self.leases.learn(&op, &etcd);
        self.generator.observe_revision(&etcd);
        etcd
    }

    /// One op of the KV sequence.
    async fn kv_op(&mut self, op: Op) {
        if let Op::Compact(c) = &op
            && self.with_watches
            && c.revision > (self.generator.current - 3).max(self.generator.compact)
            && c.revision <= self.generator.current
        {
            let prev_kv: Vec<usize> = (0..self.plans.len())
                .filter(|&w| self.plans[w].state == WatchState::Live && self.plans[w].request.prev_kv)
                .collect();
            self.fence(&prev_kv, "prev_kv watches before a compaction").await;
        }
        let answer = self.exchange(op.kind(), op.clone()).await;
        self.generator.observe(&op, &answer);
    }

    /// Maybe a lease or watch step, before a KV op.
    async fn side_step(&mut self) {
        if !self.with_leases && !self.with_watches {
            return;
        }
        let roll = self.side.rng.random_range(0..1000);
        if roll < LEASE_STEP_PER_MILLE {
            if self.with_leases {
                self.lease_step().await;
            }
        } else if roll < LEASE_STEP_PER_MILLE + WATCH_STEP_PER_MILLE {
            let live = self.plans.iter().filter(|p| p.state == WatchState::Live).count();
            if self.with_watches && self.plans.len() < MAX_WATCHES && live < MAX_LIVE_WATCHES {
                self.create_watch().await;
            }
        } else if roll < LEASE_STEP_PER_MILLE + WATCH_STEP_PER_MILLE + CANCEL_STEP_PER_MILLE && self.with_watches {
            self.cancel_watch().await;
        }
    }

    async fn lease_step(&mut self) {
        match self.side.lease_step(&self.generator.universe, &self.leases) {
            LeaseStep::Op(kind, op) => {
                let _answer = self.exchange(kind, op).await;
            }
            LeaseStep::ShortGrant(grant) => {
                let id = grant.id;
                if self.exchange("lease_grant (short ttl)", Op::LeaseGrant(grant)).await.is_ok() {
                    self.revoke_expiring(id).await;
                }
            }
            LeaseStep::Scenario => self.lease_scenario().await,
        }
    }

    /// A lease's life in consecutive steps, so that no KV op overwrites its keys in between: granted
    /// (with an id of the sequence's or the servers' choice) or an alive one, put on a few keys,
    /// compared in a txn, asked for its keys, and maybe revoked (deleting them) and asked again.
    async fn lease_scenario(&mut self) {
        let id = if self.leases.alive().is_empty() || self.side.chance(50) {
            let id = if self.side.chance(40) { 0 } else { self.side.fresh_id(&self.leases) };
            let grant = Op::LeaseGrant(LeaseGrantRequest { ttl: self.side.long_ttl(), id });
            match self.exchange("lease scenario: grant", grant).await {
                Ok(Reply::LeaseGrant(granted)) => granted.id,
                _ => return,
            }
        } else {
            let alive = self.leases.alive();
            alive[self.side.rng.random_range(0..alive.len())]
        };
        let mut keys = Vec::new();
        for _put in 0..self.side.rng.random_range(1..=3) {
            let key = self.side.key(&self.generator.universe);
            let put = self.side.leased_put(&self.generator.universe, key.clone(), id);
            if self.exchange("lease scenario: put", Op::Put(put)).await.is_ok() {
                keys.push(key);
            }
        }
        if !keys.is_empty() && self.side.chance(60) {
            let txn = self.side.scenario_txn(&self.generator.universe, &keys, id);
            let _answer = self.exchange("lease scenario: txn", Op::Txn(txn)).await;
        }
        let ask = Op::LeaseTimeToLive(LeaseTimeToLiveRequest { id, keys: true });
        let _answer = self.exchange("lease scenario: time_to_live", ask.clone()).await;
        if self.side.chance(40) {
            let _answer = self.exchange("lease scenario: revoke", Op::LeaseRevoke(LeaseRevokeRequest { id })).await;
            if self.side.chance(50) {
                let _answer = self.exchange("lease scenario: time_to_live", ask).await;
            }
        }
    }

    /// Revokes a lease that may have expired already: either server may answer that it is gone.
    async fn revoke_expiring(&mut self, id: i64) {
        let op = self.leases.prepare(Op::LeaseRevoke(LeaseRevokeRequest { id }));
        let subject_op = self.leases.for_subject(&op);
        let (etcd, mut subject) =
            tokio::join!(send("etcd", &mut self.etcd, &op), send(self.subject_name, &mut self.subject, &subject_op));
        self.leases.to_reference_answer(&mut subject);
        let expired = |answer: &Answer| matches!(answer, Err((tonic::Code::NotFound, _)));
        if !expired(&etcd) && !expired(&subject) && etcd != subject {
            let what = format!("{}'s answer differs from etcd's", self.subject_name);
            self.fail_op(&what, &op, &subject_op, &etcd, &subject);
        }
        note(self.tallies.entry("lease_revoke (short ttl)").or_default(), &etcd);
        self.leases.bury(id);
        self.generator.observe_revision(&etcd);
    }

    /// Files watch responses on both servers until `done` holds for each.
    async fn wait_watches(&mut self, what: &str, done: impl Fn(&Watches) -> bool) {
        let mut result = self.etcd_watches.wait_until(what, &done).await;
        if result.is_ok() {
            result = self.subject_watches.wait_until(what, &done).await;
        }
        if let Err(problem) = result {
            self.fail(&problem, &[]);
        }
    }

    fn check(&self, result: Result<(), String>) {
        if let Err(problem) = result {
            self.fail(&problem, &[]);
        }
    }

    async fn create_watch(&mut self) {
        let streams = self.etcd_watches.streams.len();
        let (current, compact) = (self.generator.current, self.generator.compact);
        let plan = self.side.watch(&self.generator.universe, streams, current, compact);
        let watch = self.plans.len();
        let (stream, request) = (plan.stream, plan.request.clone());
        self.plans.push(plan);
        let created = self.etcd_watches.create(watch, stream, request.clone());
        self.check(created);
        let created = self.subject_watches.create(watch, stream, request.clone());
        self.check(created);
        self.wait_watches("created response", |w| w.logs[watch].created.is_some()).await;
        let created = |w: &Watches| w.logs[watch].created.as_ref().map(scrubbed);
        let (etcd, subject) = (created(&self.etcd_watches), created(&self.subject_watches));
        if etcd != subject {
            self.fail_watch(watch, "the created responses differ", readable(&etcd), readable(&subject));
        }
        let created = etcd.expect("waited for");
        let start = request.start_revision;
        let plan = &mut self.plans[watch];
        plan.min_revision = if start == 0 { created.header.map_or(0, |h| h.revision) + 1 } else { start };
        if created.canceled {
            plan.state = WatchState::Failed;
        } else if start != 0 && start < compact {
            plan.state = WatchState::Compacted;
            self.wait_watches("compacted response", |w| w.logs[watch].compacted.is_some()).await;
            let compacted = |w: &Watches| w.logs[watch].compacted.as_ref().map(scrubbed);
            let (etcd, subject) = (compacted(&self.etcd_watches), compacted(&self.subject_watches));
            if etcd != subject {
                self.fail_watch(watch, "the compacted responses differ", readable(&etcd), readable(&subject));
            }
        } else if start != 0 && start <= current {
            self.replays += 1;
            self.fence(&[watch], "a watch replaying history").await;
        }
    }

    async fn cancel_watch(&mut self) {
        let candidates: Vec<usize> = (0..self.plans.len())
            .filter(|&w| matches!(self.plans[w].state, WatchState::Live | WatchState::Compacted))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let watch = candidates[self.side.rng.random_range(0..candidates.len())];
        if self.plans[watch].state == WatchState::Live {
            self.fence(&[watch], "a watch about to be canceled").await;
        }
        let sent = self.etcd_watches.cancel(watch);
        self.check(sent);
        let sent = self.subject_watches.cancel(watch);
        self.check(sent);
        self.wait_watches("cancel response", |w| w.logs[watch].canceled.is_some()).await;
        let canceled = |w: &Watches| w.logs[watch].canceled.as_ref().map(scrubbed);
        let (etcd, subject) = (canceled(&self.etcd_watches), canceled(&self.subject_watches));
        if etcd != subject {
            self.fail_watch(watch, "the cancel responses differ", readable(&etcd), readable(&subject));
        }
        self.plans[watch].state = WatchState::Canceled;
    }

    /// Puts and then deletes the fence key of each of `watches` (compared like any op), then waits
    /// until both servers have delivered to each watch the last of these writes it reports. Every
    /// event before that has then arrived, as servers deliver a watch's events in revision order.
    async fn fence(&mut self, watches: &[usize], why: &str) {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for &watch in watches {
            if let Some(key) = &self.plans[watch].fence_key
                && !keys.contains(key)
            {
                keys.push(key.clone());
            }
        }
        if keys.is_empty() {
            return;
        }
        self.fences += 1;
        let mut writes = Vec::new();
        for key in keys {
            let value = self.side.value(&self.generator.universe);
            let put = Op::Put(PutRequest { key: key.clone(), value, ..Default::default() });
            writes.push((key.clone(), true, self.fence_write("fence: put", put).await));
            let delete = Op::DeleteRange(DeleteRangeRequest { key: key.clone(), ..Default::default() });
            writes.push((key, false, self.fence_write("fence: delete", delete).await));
        }
        let targets: Vec<(usize, i64)> = watches
            .iter()
            .filter_map(|&watch| {
                let plan = &self.plans[watch];
                let seen = writes.iter().filter(|(key, put, revision)| plan.sees(key, *put, *revision));
                seen.map(|write| write.2).max().map(|revision| (watch, revision))
            })
            .collect();
        let what = format!("events up to the fence ({why}) for watches {targets:?}");
        self.wait_watches(&what, |w| {
            targets.iter().all(|&(watch, revision)| w.logs[watch].last_revision() >= revision)
        })
        .await;
    }

    async fn fence_write(&mut self, kind: &'static str, op: Op) -> i64 {
        let answer = self.exchange(kind, op.clone()).await;
        match answer.as_ref().ok().and_then(Reply::header) {
            Some(header) => header.revision,
            None => self.fail(&format!("a fence write failed: {} → {}", readable(&op), readable(&answer)), &[]),
        }
    }

    /// Every key at every revision since the compaction, from both.
    async fn compare_history(&mut self) -> usize {
        let history = self.generator.compact.max(1)..=self.generator.current;
        let revisions = history.clone().count();
        for revision in history {
            self.position = format!("history at revision {revision}");
            let op = Op::Range(RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() });
            let _answer = self.exchange("history", op).await;
        }
        revisions
    }

    /// Fences every live watch, then compares what each watch received.
    async fn finish_watches(&mut self) {
        self.position = "after the sequence".into();
        let live: Vec<usize> = (0..self.plans.len()).filter(|&w| self.plans[w].state == WatchState::Live).collect();
        self.fence(&live, "the end").await;
        let drained = self.etcd_watches.drain().and(self.subject_watches.drain());
        self.check(drained);
        for watch in 0..self.plans.len() {
            self.compare_watch(watch);
        }
    }

    fn compare_watch(&self, watch: usize) {
        let plan = &self.plans[watch];
        let (etcd, subject) = (&self.etcd_watches.logs[watch], &self.subject_watches.logs[watch]);
        for (name, log) in [("etcd", etcd), (self.subject_name, subject)] {
            if let Err(problem) = check_watch(plan, log) {
                let what = format!("{name}: {problem}");
                self.fail_watch(watch, &what, format!("{} event responses", etcd.events.len()), String::new());
            }
        }
        let pairs = [
            ("created", &etcd.created, &subject.created),
            ("compacted", &etcd.compacted, &subject.compacted),
            ("cancel", &etcd.canceled, &subject.canceled),
        ];
        for (what, e, s) in pairs {
            let (e, s) = (e.as_ref().map(scrubbed), s.as_ref().map(scrubbed));
            if e != s {
                self.fail_watch(watch, &format!("the {what} responses differ"), readable(&e), readable(&s));
            }
        }
        let etcd_events = etcd.flattened();
        let mut subject_events = subject.flattened();
        subject_events.iter_mut().for_each(|event| self.leases.to_reference_event(event));
        if etcd_events != subject_events {
            let at = etcd_events.iter().zip(&subject_events).take_while(|(e, s)| e == s).count();
            let what = format!(
                "the events differ from event {at} on (etcd sent {}, {} {})",
                etcd_events.len(),
                self.subject_name,
                subject_events.len()
            );
            let around =
                |events: &[Event]| readable(&events[at.min(events.len())..(at + 3).min(events.len())].to_vec());
            self.fail_watch(watch, &what, around(&etcd_events), around(&subject_events));
        }
    }

    fn print_summary(&self) {
        if self.with_leases {
            let granted = self.leases.leases.len();
            let assigned = self.leases.leases.iter().filter(|l| l.assigned).count();
            let alive = self.leases.alive().len();
            println!("  leases: {granted} granted ({assigned} with assigned ids), {alive} alive at the end");
        }
        if !self.with_watches {
            return;
        }
        let count = |state| self.plans.iter().filter(|p| p.state == state).count();
        let compacted = self.etcd_watches.logs.iter().filter(|log| log.compacted.is_some()).count();
        let events: Vec<usize> = self.etcd_watches.logs.iter().map(|log| log.flattened().len()).collect();
        let responses = |w: &Watches| w.logs.iter().map(|log| log.events.len()).sum::<usize>();
        println!(
            "  watches: {} on {} streams ({} refused, {} replaying history, {} compacted, {} canceled, {} live at \
             the end); {} events agreed, at most {} on one watch; etcd sent them in {} responses, {} in {}; {} fences",
            self.plans.len(),
            self.etcd_watches.streams.len(),
            count(WatchState::Failed),
            self.replays,
            compacted,
            count(WatchState::Canceled),
            count(WatchState::Live),
            events.iter().sum::<usize>(),
            events.iter().max().unwrap_or(&0),
            responses(&self.etcd_watches),
            self.subject_name,
            responses(&self.subject_watches),
            self.fences,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_answers_a_random_kv_workload_exactly_as_etcd_does() {
    run("differential", Universe::narrow(), "T4_DIFF_OPS", DEFAULT_OPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_answers_a_wide_kv_workload_exactly_as_etcd_does() {
    run("differential (wide)", Universe::wide(), "T4_DIFF_WIDE_OPS", DEFAULT_WIDE_OPS).await;
}

/// Runs `ops_var` (else `default_ops`) ops drawn from `universe`, with lease and watch steps, against
/// a fresh etcd and a fresh subject, then reads back the retained history and compares the watches;
/// panics at the first answer that differs.
async fn run(test: &'static str, universe: Universe, ops_var: &str, default_ops: usize) {
    let seed = env_number("T4_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let ops = env_number(ops_var).map_or(default_ops, |n| n as usize);
    let subject_name = subject_from_env();
    let (with_leases, with_watches) = (env_flag("T4_DIFF_LEASES"), env_flag("T4_DIFF_WATCHES"));
    println!(
        "{test}: seed {seed}, {ops} ops, etcd against {subject_name}, leases {with_leases}, watches {with_watches} \
         (set T4_DIFF_SEED / {ops_var} / T4_DIFF_SUBJECT / T4_DIFF_LEASES / T4_DIFF_WATCHES to change)"
    );
    let started = Instant::now();

    let dir = tempfile::tempdir().expect("temp dir");
    let (etcd_dir, subject_dir) = (dir.path().join("etcd"), dir.path().join("subject"));
    // Both start blocking waits of their own: keep them off the test's executor threads.
    let etcd = tokio::task::spawn_blocking(move || Server::start_etcd(&etcd_dir));
    let subject = tokio::task::spawn_blocking(move || match subject_name {
        SUBJECT_ETCD => Server::start_etcd(&subject_dir),
        _ => Server::start_t4(&subject_dir, &[]),
    });
    let (etcd, subject) = (etcd.await.expect("start etcd"), subject.await.expect("start the subject"));
    let mut diff = Diff {
        test,
        seed,
        position: String::new(),
        subject_name,
        etcd: clients(&etcd).await,
        subject: clients(&subject).await,
        etcd_watches: Watches::new("etcd", watch_channel(&etcd).await),
        subject_watches: Watches::new(subject_name, watch_channel(&subject).await),
        generator: Generator::new(seed, universe),
        side: Side::new(seed),
        leases: LeaseBook::default(),
        plans: Vec::new(),
        tallies: BTreeMap::new(),
        with_leases,
        with_watches,
        fences: 0,
        replays: 0,
    };

    for index in 0..ops {
        diff.position = format!("before op {index}");
        diff.side_step().await;
        diff.position = format!("op {index}");
        let op = diff.generator.op();
        diff.kv_op(op).await;
    }
    let revisions = diff.compare_history().await;
    if with_watches {
        diff.finish_watches().await;
    }

    println!(
        "{test}: {ops} ops agreed, then {revisions} revisions of history; revision {}, compacted at {}; {:.1?}",
        diff.generator.current,
        diff.generator.compact,
        started.elapsed()
    );
    diff.print_summary();
    for (kind, tally) in &diff.tallies {
        let errors: usize = tally.errors.values().sum();
        println!("  {kind}: {} ok, {errors} errors", tally.ok);
        for (name, count) in &tally.notes {
            println!("      ok and {name}: {count}");
        }
        for (message, count) in &tally.errors {
            println!("      {count} × {message}");
        }
    }
}
