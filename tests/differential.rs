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

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Server;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use t4::proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::response_op::Response;
use t4::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
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

/// One request, sent unchanged to both servers.
#[derive(Debug, Clone)]
enum Op {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Put(_) => "put",
            Op::DeleteRange(_) => "delete_range",
            Op::Range(_) => "range",
            Op::Txn(_) => "txn",
            Op::Compact(_) => "compact",
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

/// Sends `op` to the server `name` and returns its answer, header ids zeroed.
async fn send(name: &str, kv: &mut KvClient<Channel>, op: &Op) -> Answer {
    let call = async {
        match op.clone() {
            Op::Put(r) => kv.put(r).await.map(|r| Reply::Put(r.into_inner())),
            Op::DeleteRange(r) => kv.delete_range(r).await.map(|r| Reply::DeleteRange(r.into_inner())),
            Op::Range(r) => kv.range(r).await.map(|r| Reply::Range(r.into_inner())),
            Op::Txn(r) => kv.txn(r).await.map(|r| Reply::Txn(r.into_inner())),
            Op::Compact(r) => kv.compact(r).await.map(|r| Reply::Compact(r.into_inner())),
        }
    };
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{name} did not answer within {REQUEST_TIMEOUT:?}: {}", readable(op)));
    let mut reply = reply.map_err(|status| (status.code(), status.message().to_string()))?;
    reply.scrub();
    Ok(reply)
}

/// etcd's prefix range end: the prefix with its last byte below 0xff incremented, or `\0` (to the
/// last key) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether a delete of `[start, end)` (etcd's conventions for `end`) removes `key`.
fn span_contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
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
        !self.put_keys.iter().any(|k| k == key) && !self.deleted.iter().any(|(s, e)| span_contains(s, e, key))
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
            if scope.put_keys.iter().any(|k| span_contains(&key, &range_end, k)) {
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
            Reply::Txn(_) | Reply::Compact(_) => (&[][..], false),
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
        Reply::Compact(_) => &[],
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

fn fail(test: &str, index: usize, seed: u64, op: &Op, etcd: &Answer, t4: &Answer) -> ! {
    panic!(
        "{test}: op {index} (seed {seed}, reproduce with T4_DIFF_SEED={seed}): T4's answer differs from etcd's\n\
         request: {}\netcd:    {}\nt4:      {}",
        readable(op),
        readable(etcd),
        readable(t4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_answers_a_random_kv_workload_exactly_as_etcd_does() {
    run("differential", Universe::narrow(), "T4_DIFF_OPS", DEFAULT_OPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_answers_a_wide_kv_workload_exactly_as_etcd_does() {
    run("differential (wide)", Universe::wide(), "T4_DIFF_WIDE_OPS", DEFAULT_WIDE_OPS).await;
}

/// Runs `ops_var` (else `default_ops`) ops drawn from `universe` against a fresh etcd and a fresh T4,
/// then reads back the retained history; panics at the first answer that differs.
async fn run(test: &str, universe: Universe, ops_var: &str, default_ops: usize) {
    let seed = env_number("T4_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let ops = env_number(ops_var).map_or(default_ops, |n| n as usize);
    println!("{test}: seed {seed}, {ops} ops (set T4_DIFF_SEED / {ops_var} to change)");
    let started = Instant::now();

    let dir = tempfile::tempdir().expect("temp dir");
    let (etcd_dir, t4_dir) = (dir.path().join("etcd"), dir.path().join("t4"));
    // Both start blocking waits of their own: keep them off the test's executor threads.
    let etcd = tokio::task::spawn_blocking(move || Server::start_etcd(&etcd_dir));
    let t4 = tokio::task::spawn_blocking(move || Server::start_t4(&t4_dir, &[]));
    let (etcd, t4) = (etcd.await.expect("start etcd"), t4.await.expect("start t4"));
    let (mut etcd_kv, mut t4_kv) = (etcd.kv().await, t4.kv().await);

    let mut generator = Generator::new(seed, universe);
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for index in 0..ops {
        let op = generator.op();
        let (etcd_answer, t4_answer) = tokio::join!(send("etcd", &mut etcd_kv, &op), send("t4", &mut t4_kv, &op));
        if etcd_answer != t4_answer {
            fail(test, index, seed, &op, &etcd_answer, &t4_answer);
        }
        note(tallies.entry(op.kind()).or_default(), &etcd_answer);
        generator.observe(&op, &etcd_answer);
    }

    // Finally, the whole history still readable: every key at every revision since the compaction.
    let history = generator.compact.max(1)..=generator.current;
    let revisions = history.clone().count();
    for revision in history {
        let op = Op::Range(RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() });
        let (etcd_answer, t4_answer) = tokio::join!(send("etcd", &mut etcd_kv, &op), send("t4", &mut t4_kv, &op));
        if etcd_answer != t4_answer {
            fail(test, ops, seed, &op, &etcd_answer, &t4_answer);
        }
    }

    println!(
        "{test}: {ops} ops agreed, then {revisions} revisions of history; revision {}, compacted at {}; {:.1?}",
        generator.current,
        generator.compact,
        started.elapsed()
    );
    for (kind, tally) in &tallies {
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
