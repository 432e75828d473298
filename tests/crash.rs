//! Crash safety of the real `t4` server: concurrent writers (single puts, multi-key transactions,
//! and transactions that also delete an earlier group), `kill -9` at a random moment, restart on the
//! same data directory, then an exact check of what survived:
//!
//! 1. every acknowledged write is present with its value and its revision (no key is written twice,
//!    and a group is deleted at most once, by a transaction the model knows, so this is exact);
//! 2. revisions are never reused and leave no gap: the revisions of the writes that landed are exactly
//!    `2..=current`, each used by one transaction, and the first write after a restart gets `current + 1`;
//! 3. no transaction is torn: for every group, acknowledged or not, all of its keys are present with
//!    one revision, or none is; a transaction that also deleted a group did both or neither;
//! 4. a range over the whole keyspace agrees with a point read of every key the test ever wrote.
//!
//! A write whose RPC failed or was in flight at the kill is "unknown": the first restart after it
//! decides whether it landed, and every later restart must agree.
//!
//! `T4_CRASH_SEED` (u64) picks the workload and the kill delays; `T4_CRASH_ROUNDS` the number of kills.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use t4::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::response_op::Response;
use t4::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use t4::proto::mvccpb::KeyValue;
use tonic::transport::Channel;

const DEFAULT_SEED: u64 = 0x7434_c4a5_0001;
const DEFAULT_ROUNDS: u32 = 5;
/// Concurrent writer tasks, each on its own connection.
const WRITERS: u32 = 8;
/// Milliseconds of load before the kill.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 100..=600;
/// Bounds of one writer's round, should the kill never stop it.
const MAX_OPS_PER_WRITER: u32 = 20_000;
const LOAD_DEADLINE: Duration = Duration::from_secs(10);
/// Bound of one RPC, and of waiting for a task.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
const TASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent point readers during verification, and the page size of the full range.
const READERS: usize = 8;
const PAGE: i64 = 1000;
const MAX_PAGES: usize = 10_000;
/// Every key of this test starts with this.
const PREFIX: &str = "crash/";
/// The writer id of the probe write made after each restart.
const PROBE: u32 = u32::MAX;
/// Violations printed at most (all of them fail the test).
const SHOWN_VIOLATIONS: usize = 40;

/// One write the test attempted: (round, writer, sequence number within the writer's round).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct TxnId {
    round: u32,
    writer: u32,
    seq: u32,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.writer == PROBE {
            write!(f, "probe after kill {}", self.round)
        } else {
            write!(f, "round {} writer {} op {}", self.round, self.writer, self.seq)
        }
    }
}

/// What the client learnt.
#[derive(Clone, Copy, Debug)]
enum Ack {
    /// The RPC returned Ok with this revision.
    Acked(i64),
    /// The RPC failed or was in flight at the kill.
    Unknown,
}

/// What the first restart after an unknown write showed.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Landed(i64),
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Single,
    Group,
    GroupDeleting,
}

/// One attempted write.
#[derive(Debug)]
struct Attempt {
    id: TxnId,
    kind: Kind,
    /// The keys and values it puts: one for a single put, 3-4 for a group.
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// The earlier (acknowledged) group whose keys it deletes.
    deletes: Option<TxnId>,
    ack: Ack,
    /// For an unknown write, decided at the first verification after its round.
    fate: Option<Fate>,
}

impl Attempt {
    /// The revision it landed at, if it did (or is not yet known not to have).
    fn landed(&self) -> Option<i64> {
        match (self.ack, self.fate) {
            (Ack::Acked(rev), _) | (Ack::Unknown, Some(Fate::Landed(rev))) => Some(rev),
            _ => None,
        }
    }
}

/// An acknowledged group a later transaction of the same writer may delete (each at most once).
#[derive(Debug, Clone)]
struct Deletable {
    id: TxnId,
    prefix: Vec<u8>,
    first_key: Vec<u8>,
    keys: usize,
    revision: i64,
}

/// Everything the test wrote, in id order.
#[derive(Default)]
struct Model {
    attempts: BTreeMap<TxnId, Attempt>,
    /// group → the transaction that deletes it.
    deleted_by: HashMap<TxnId, TxnId>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("{name}={s:?} is not a valid number")),
        Err(_) => default,
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn revision_of(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map_or(-1, |h| h.revision)
}

fn value_for(key: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    format!("{}={:016x}", show(key), rng.random::<u64>()).into_bytes()
}

fn put_op(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

fn compare(key: &[u8], target: CompareTarget, operand: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.to_vec(),
        range_end: vec![],
        target_union: Some(operand),
    }
}

/// What one writer did in one round.
struct WriterRun {
    attempts: Vec<Attempt>,
    pool: Vec<Deletable>,
    violations: Vec<String>,
    /// The error that ended the writer's round (expected: the kill).
    error: Option<String>,
}

/// Writes until stopped or the first failed RPC. `floor` is the revision of the round's probe write:
/// every acknowledged write of the round must come after it.
async fn writer(
    round: u32,
    writer: u32,
    mut kv: KvClient<Channel>,
    seed: u64,
    mut pool: Vec<Deletable>,
    stop: Arc<AtomicBool>,
    floor: i64,
) -> WriterRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut run = WriterRun { attempts: Vec::new(), pool: Vec::new(), violations: Vec::new(), error: None };
    for seq in 0..MAX_OPS_PER_WRITER {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            break;
        }
        let id = TxnId { round, writer, seq };
        let roll = rng.random_range(0..100u32);
        let (attempt, result) = if roll < 45 {
            let key = format!("{PREFIX}s/{round}/{writer}/{seq}").into_bytes();
            let value = value_for(&key, &mut rng);
            let req = PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
            let result = match tokio::time::timeout(RPC_TIMEOUT, kv.put(req)).await {
                Ok(Ok(resp)) => Ok(revision_of(&resp.into_inner().header)),
                Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Err("timed out".to_string()),
            };
            let attempt = Attempt {
                id,
                kind: Kind::Single,
                puts: vec![(key, value)],
                deletes: None,
                ack: Ack::Unknown,
                fate: None,
            };
            (attempt, result)
        } else {
            let prefix = format!("{PREFIX}g/{round}/{writer}/{seq}/").into_bytes();
            let n = rng.random_range(3..=4u32);
            let puts: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                .map(|j| {
                    let key = [prefix.as_slice(), j.to_string().as_bytes()].concat();
                    let value = value_for(&key, &mut rng);
                    (key, value)
                })
                .collect();
            let target = if roll >= 75 && !pool.is_empty() {
                let at = rng.random_range(0..pool.len());
                Some(pool.swap_remove(at))
            } else {
                None
            };
            // The group must be new; the deleted group must still be the acknowledged one.
            let mut compares = vec![compare(&puts[0].0, CompareTarget::Create, TargetUnion::CreateRevision(0))];
            let mut success: Vec<RequestOp> = puts.iter().map(|(k, v)| put_op(k, v)).collect();
            if let Some(t) = &target {
                compares.push(compare(&t.first_key, CompareTarget::Mod, TargetUnion::ModRevision(t.revision)));
                let delete = RequestOp {
                    request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: t.prefix.clone(),
                        range_end: t4::prefix_end(&t.prefix),
                        ..Default::default()
                    })),
                };
                if rng.random_bool(0.5) {
                    success.insert(0, delete);
                } else {
                    success.push(delete);
                }
            }
            let req = TxnRequest { compare: compares, success, failure: vec![] };
            let result = match tokio::time::timeout(RPC_TIMEOUT, kv.txn(req)).await {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    let rev = revision_of(&resp.header);
                    if !resp.succeeded {
                        run.violations.push(format!("{id}: acknowledged txn took the failure branch at {rev}"));
                    }
                    if let Some(t) = &target {
                        let deleted: i64 = resp
                            .responses
                            .iter()
                            .filter_map(|r| match &r.response {
                                Some(Response::ResponseDeleteRange(d)) => Some(d.deleted),
                                _ => None,
                            })
                            .sum();
                        if deleted != t.keys as i64 {
                            run.violations.push(format!(
                                "{id}: acknowledged txn deleted {deleted} keys of group {} (it has {})",
                                t.id, t.keys
                            ));
                        }
                    }
                    Ok(rev)
                }
                Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Err("timed out".to_string()),
            };
            let kind = if target.is_some() { Kind::GroupDeleting } else { Kind::Group };
            let attempt = Attempt { id, kind, puts, deletes: target.map(|t| t.id), ack: Ack::Unknown, fate: None };
            (attempt, result)
        };
        let mut attempt = attempt;
        match result {
            Ok(rev) => {
                if rev <= floor {
                    run.violations
                        .push(format!("{id}: acknowledged at revision {rev}, not above this round's probe {floor}"));
                }
                attempt.ack = Ack::Acked(rev);
                if attempt.kind != Kind::Single {
                    pool.push(Deletable {
                        id,
                        prefix: format!("{PREFIX}g/{round}/{writer}/{seq}/").into_bytes(),
                        first_key: attempt.puts[0].0.clone(),
                        keys: attempt.puts.len(),
                        revision: rev,
                    });
                }
                run.attempts.push(attempt);
            }
            Err(error) => {
                run.attempts.push(attempt);
                run.error = Some(error);
                break;
            }
        }
    }
    run.pool = pool;
    run
}

/// Every live key with a revision, paged at one revision: (header revision, count, key-values).
async fn range_everything(kv: &mut KvClient<Channel>) -> (i64, i64, BTreeMap<Vec<u8>, KeyValue>) {
    let mut kvs = BTreeMap::new();
    let (mut revision, mut count) = (0, 0);
    let mut from = vec![0u8];
    for page in 0..MAX_PAGES {
        let req = RangeRequest { key: from.clone(), range_end: vec![0], limit: PAGE, revision, ..Default::default() };
        let resp = tokio::time::timeout(RPC_TIMEOUT, kv.range(req))
            .await
            .expect("range timed out")
            .expect("range over everything")
            .into_inner();
        let header = revision_of(&resp.header);
        if page == 0 {
            (revision, count) = (header, resp.count);
        } else {
            assert_eq!(header, revision, "the revision moved during verification (nothing writes)");
        }
        let Some(last) = resp.kvs.last().map(|kv| kv.key.clone()) else { break };
        kvs.extend(resp.kvs.into_iter().map(|kv| (kv.key.clone(), kv)));
        if !resp.more {
            break;
        }
        from = [last.as_slice(), &[0]].concat();
        assert!(page + 1 < MAX_PAGES, "range over everything did not end");
    }
    (revision, count, kvs)
}

/// Point reads of `keys` on `READERS` connections: key → (header revision, value if present).
async fn read_each(endpoint: &str, keys: Vec<Vec<u8>>) -> HashMap<Vec<u8>, (i64, Option<KeyValue>)> {
    let chunk = keys.len().div_ceil(READERS).max(1);
    let mut tasks = Vec::new();
    for part in keys.chunks(chunk) {
        let part = part.to_vec();
        let endpoint = endpoint.to_string();
        tasks.push(tokio::spawn(async move {
            let mut kv = KvClient::new(common::channel(&endpoint).await.expect("connect reader"));
            let mut out = Vec::with_capacity(part.len());
            for key in part {
                let req = RangeRequest { key: key.clone(), ..Default::default() };
                let resp = tokio::time::timeout(RPC_TIMEOUT, kv.range(req))
                    .await
                    .expect("point read timed out")
                    .unwrap_or_else(|e| panic!("point read of {}: {e}", show(&key)))
                    .into_inner();
                assert!(resp.kvs.len() <= 1, "point read of {} returned {} keys", show(&key), resp.kvs.len());
                out.push((key, (revision_of(&resp.header), resp.kvs.into_iter().next())));
            }
            out
        }));
    }
    let mut all = HashMap::with_capacity(keys.len());
    for task in tasks {
        all.extend(tokio::time::timeout(TASK_TIMEOUT, task).await.expect("readers stuck").expect("reader panicked"));
    }
    all
}

/// What a verification found.
struct Verified {
    current: i64,
    live_keys: usize,
    newly_landed: usize,
    newly_lost: usize,
    violations: Vec<String>,
}

/// Reads everything back and checks it against the model; decides the fate of unknown writes.
async fn verify(server: &Server, model: &mut Model) -> Verified {
    let mut v = Vec::new();
    let mut kv = server.kv().await.max_decoding_message_size(64 << 20);
    let (current, count, ranged) = range_everything(&mut kv).await;
    let keys: Vec<Vec<u8>> = model.attempts.values().flat_map(|a| a.puts.iter().map(|(k, _)| k.clone())).collect();
    let points = read_each(&server.endpoint, keys).await;

    // 4. The full range and the point reads agree, and there is nothing the test did not write.
    let mut live: HashMap<&[u8], &KeyValue> = HashMap::new();
    for (key, (rev, kv)) in &points {
        if *rev != current {
            v.push(format!("point read of {} answered at revision {rev}, the range at {current}", show(key)));
        }
        if let Some(kv) = kv {
            live.insert(key, kv);
            match ranged.get(key) {
                Some(r) if r == kv => {}
                Some(r) => v.push(format!("{}: point read {kv:?} but range {r:?}", show(key))),
                None => v.push(format!("{}: present in a point read, missing from the range", show(key))),
            }
        }
    }
    for key in ranged.keys() {
        if !points.contains_key(key) {
            v.push(format!("the range holds {}, which the test never wrote", show(key)));
        } else if !live.contains_key(key.as_slice()) {
            v.push(format!("the range holds {}, which a point read found absent", show(key)));
        }
    }
    if count != ranged.len() as i64 || count != live.len() as i64 {
        v.push(format!(
            "range count {count}, range returned {} keys, point reads found {} live keys",
            ranged.len(),
            live.len()
        ));
    }

    // Decide unknown writes: all keys present with one revision (landed) or none (lost).
    let (mut newly_landed, mut newly_lost) = (0, 0);
    for a in model.attempts.values_mut() {
        if !matches!(a.ack, Ack::Unknown) || a.fate.is_some() {
            continue;
        }
        let found: Vec<&KeyValue> = a.puts.iter().filter_map(|(k, _)| live.get(k.as_slice()).copied()).collect();
        if found.is_empty() {
            a.fate = Some(Fate::Lost);
            newly_lost += 1;
        } else {
            a.fate = Some(Fate::Landed(found[0].mod_revision));
            newly_landed += 1;
            if found.len() != a.puts.len() {
                v.push(format!(
                    "TORN: unknown {} ({:?}) has {} of its {} keys after restart",
                    a.id,
                    a.kind,
                    found.len(),
                    a.puts.len()
                ));
            }
        }
    }

    // 1 and 3. Every write is wholly present (landed, not deleted by a write that landed) or wholly absent.
    let mut revisions: BTreeMap<i64, Vec<TxnId>> = BTreeMap::new();
    let mut max_acked = 0;
    for a in model.attempts.values() {
        let landed = a.landed();
        if let Some(rev) = landed {
            revisions.entry(rev).or_default().push(a.id);
        }
        if let Ack::Acked(rev) = a.ack {
            max_acked = max_acked.max(rev);
        }
        let deleted = model.deleted_by.get(&a.id).and_then(|d| model.attempts[d].landed()).is_some();
        let expect = if deleted { None } else { landed };
        for (key, value) in &a.puts {
            let got = live.get(key.as_slice());
            match (expect, got) {
                (None, None) => {}
                (Some(rev), Some(kv)) => {
                    if kv.value != *value
                        || kv.mod_revision != rev
                        || kv.create_revision != rev
                        || kv.version != 1
                        || kv.lease != 0
                    {
                        v.push(format!(
                            "{} ({:?}, {:?}): {} should be {} at revision {rev} (version 1), is {} at mod {} create {} version {}",
                            a.id,
                            a.kind,
                            a.ack,
                            show(key),
                            show(value),
                            show(&kv.value),
                            kv.mod_revision,
                            kv.create_revision,
                            kv.version
                        ));
                    }
                }
                (Some(rev), None) => v.push(format!(
                    "{} ({:?}, {:?}): {} is missing (expected at revision {rev})",
                    a.id,
                    a.kind,
                    a.ack,
                    show(key)
                )),
                (None, Some(kv)) => v.push(format!(
                    "{} ({:?}, {:?}, fate {:?}, deleted by {:?}): {} is present at revision {} but should not be",
                    a.id,
                    a.kind,
                    a.ack,
                    a.fate,
                    model.deleted_by.get(&a.id).map(|d| d.to_string()),
                    show(key),
                    kv.mod_revision
                )),
            }
        }
    }

    // 2. Landed revisions are exactly 2..=current, one write each; the server never went back.
    if current < max_acked {
        v.push(format!("server revision {current} is below the highest acknowledged revision {max_acked}"));
    }
    for (rev, ids) in &revisions {
        if ids.len() > 1 {
            let who: Vec<String> = ids.iter().map(|id| format!("{id} ({:?})", model.attempts[id].ack)).collect();
            v.push(format!("revision {rev} is used by {} writes: {}", ids.len(), who.join(", ")));
        }
        if *rev < 2 || *rev > current {
            v.push(format!("revision {rev} of {} is outside 2..={current}", ids[0]));
        }
    }
    let gaps: Vec<i64> = (2..=current).filter(|r| !revisions.contains_key(r)).collect();
    if !gaps.is_empty() {
        v.push(format!(
            "{} revisions in 2..={current} belong to no write that landed (first: {:?})",
            gaps.len(),
            &gaps[..gaps.len().min(10)]
        ));
    }
    Verified { current, live_keys: live.len(), newly_landed, newly_lost, violations: v }
}

/// Fails the test with the reproduction if `violations` is not empty.
fn check(violations: &[String], seed: u64, rounds: u32, when: &str) {
    if violations.is_empty() {
        return;
    }
    for line in violations.iter().take(SHOWN_VIOLATIONS) {
        eprintln!("VIOLATION ({when}): {line}");
    }
    panic!(
        "{} crash-safety violation(s) {when}; reproduce with T4_CRASH_SEED={seed} T4_CRASH_ROUNDS={rounds} \
         cargo test --test crash -- --nocapture",
        violations.len()
    );
}

/// One put after a restart: it must get exactly the revision after the recovered one.
async fn probe(server: &Server, model: &mut Model, label: u32) -> i64 {
    let mut kv = server.kv().await;
    let key = format!("{PREFIX}p/{label}").into_bytes();
    let value = format!("probe {label}").into_bytes();
    let req = PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
    let resp = tokio::time::timeout(RPC_TIMEOUT, kv.put(req)).await.expect("probe timed out").expect("probe put");
    let rev = revision_of(&resp.into_inner().header);
    let id = TxnId { round: label, writer: PROBE, seq: 0 };
    model.attempts.insert(
        id,
        Attempt { id, kind: Kind::Single, puts: vec![(key, value)], deletes: None, ack: Ack::Acked(rev), fate: None },
    );
    rev
}

/// Starts t4 on `data_dir`; a restart that fails is a crash-safety violation too.
fn start(data_dir: &Path, seed: u64, rounds: u32, when: &str) -> Server {
    match tokio::task::block_in_place(|| Server::try_start_t4(data_dir, &[])) {
        Ok(server) => server,
        Err(e) => {
            check(&[format!("t4 did not start on the data directory: {e}")], seed, rounds, when);
            unreachable!("check panics on a violation")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_and_no_transaction_is_torn() {
    let seed: u64 = env_or("T4_CRASH_SEED", DEFAULT_SEED);
    let rounds: u32 = env_or("T4_CRASH_ROUNDS", DEFAULT_ROUNDS);
    println!("crash test: T4_CRASH_SEED={seed} T4_CRASH_ROUNDS={rounds} ({WRITERS} writers)");
    let started = Instant::now();
    let mut master = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let mut model = Model::default();
    let mut pools: Vec<Vec<Deletable>> = vec![Vec::new(); WRITERS as usize];
    let mut totals = (0usize, 0usize, 0usize); // acknowledged, unknown, unknown that landed

    for round in 0..=rounds {
        let restart = Instant::now();
        let when = if round == 0 { "at the first start".to_string() } else { format!("after restart {round}") };
        let mut server = start(&data_dir, seed, rounds, &when);
        let startup = restart.elapsed();
        let checked = verify(&server, &mut model).await;
        check(&checked.violations, seed, rounds, &when);
        if round > 0 {
            totals.2 += checked.newly_landed;
            println!(
                "  restart {round}: up in {startup:?}, revision {}, {} live keys; of the unknown writes {} landed, {} \
                 were lost; verified in {:?}",
                checked.current,
                checked.live_keys,
                checked.newly_landed,
                checked.newly_lost,
                restart.elapsed() - startup
            );
        }
        let floor = probe(&server, &mut model, round).await;
        if floor != checked.current + 1 {
            check(
                &[format!("the first write after restart got revision {floor}, expected {}", checked.current + 1)],
                seed,
                rounds,
                &when,
            );
        }
        if round == rounds {
            // Finally a graceful stop must keep everything too.
            let status = tokio::task::block_in_place(|| server.stop());
            assert!(status.success(), "t4 exited with {status} on SIGTERM");
            let server = start(&data_dir, seed, rounds, "after a graceful stop");
            let checked = verify(&server, &mut model).await;
            check(&checked.violations, seed, rounds, "after a graceful stop and restart");
            assert_eq!(checked.current, floor, "revision after a graceful stop");
            break;
        }

        // Load, then kill -9 at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let kv = server.kv().await;
            let pool = std::mem::take(&mut pools[w as usize]);
            tasks.push(tokio::spawn(writer(round, w, kv, master.random(), pool, stop.clone(), floor)));
        }
        let delay = master.random_range(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        stop.store(true, Ordering::SeqCst);
        let mut violations = Vec::new();
        let (mut acked, mut unknown, mut by_kind) = (0, 0, [0usize; 3]);
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for (w, task) in tasks.into_iter().enumerate() {
            let run = tokio::time::timeout(TASK_TIMEOUT, task).await.expect("writer stuck").expect("writer panicked");
            violations.extend(run.violations);
            if let Some(e) = run.error {
                *errors.entry(e.chars().take(80).collect()).or_default() += 1;
            }
            pools[w] = run.pool;
            for a in run.attempts {
                match a.ack {
                    Ack::Acked(_) => {
                        acked += 1;
                        by_kind[a.kind as usize] += 1;
                    }
                    Ack::Unknown => unknown += 1,
                }
                if let Some(target) = a.deletes {
                    assert!(model.deleted_by.insert(target, a.id).is_none(), "group {target} targeted twice");
                }
                model.attempts.insert(a.id, a);
            }
        }
        totals.0 += acked;
        totals.1 += unknown;
        println!(
            "round {round}: killed after {delay} ms of load: {acked} acknowledged ({} puts, {} groups, {} groups \
             deleting a group), {unknown} unknown; writers ended with {errors:?}",
            by_kind[0], by_kind[1], by_kind[2]
        );
        check(&violations, seed, rounds, &format!("during round {round}"));
    }
    println!(
        "crash test passed: seed {seed}, {rounds} kills, {} acknowledged, {} unknown of which {} landed, in {:?}",
        totals.0,
        totals.1,
        totals.2,
        started.elapsed()
    );
}
