//! The server-side lock (`v3lockpb.Lock`) and election (`v3electionpb.Election`) services,
//! differentially against etcd 3.4: the same calls go to both, over gRPC and over the JSON gateway,
//! and every answer must be equal field by field (header ids and raft terms aside), errors by code
//! and message; waits (a Lock or Campaign behind a holder) and Observe's stream included. Then what
//! only makes sense on one server at a time: mutual exclusion with `etcdctl lock` both ways, a
//! waiter that gets the lock when the holder's lease is revoked, a client that leaves while it
//! waits, and a node that shuts down while calls wait.

mod common;

use std::time::{Duration, Instant};

use common::answers::{assert_same_answers, b64, grpc_answer, normalise};
use common::http1::{JsonStream, request};
use common::{Server, channel};
use serde_json::{Value, json};
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::lease_client::LeaseClient;
use t4::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, RangeRequest,
};
use t4::proto::mvccpb::KeyValue;
use t4::proto::v3electionpb::election_client::ElectionClient;
use t4::proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ResignRequest,
};
use t4::proto::v3lockpb::lock_client::LockClient;
use t4::proto::v3lockpb::{LockRequest, UnlockRequest};
use tonic::transport::Channel;

/// How long a step may wait for the other side (a waiter's key to appear, a waiter to be served).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Leases the scripts grant themselves, with their TTL (long enough never to expire in a run).
const LEASE_A: i64 = 100;
const LEASE_B: i64 = 200;
const LEASE_C: i64 = 300;
const TTL: i64 = 600;

/// One server's clients.
#[derive(Clone)]
struct Clients {
    lock: LockClient<Channel>,
    election: ElectionClient<Channel>,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

async fn clients(server: &Server) -> Clients {
    let channel = channel(&server.endpoint).await.expect("connect");
    Clients {
        lock: LockClient::new(channel.clone()),
        election: ElectionClient::new(channel.clone()),
        kv: KvClient::new(channel.clone()),
        lease: LeaseClient::new(channel),
    }
}

impl Clients {
    async fn grant(&mut self, id: i64) {
        self.lease.lease_grant(LeaseGrantRequest { ttl: TTL, id }).await.expect("grant");
    }

    async fn revoke(&mut self, id: i64) {
        self.lease.lease_revoke(LeaseRevokeRequest { id }).await.expect("revoke");
    }

    /// The keys under `prefix`, in key order.
    async fn keys(&mut self, prefix: &[u8]) -> Vec<KeyValue> {
        let range = RangeRequest { key: prefix.to_vec(), range_end: t4::prefix_end(prefix), ..Default::default() };
        self.kv.range(range).await.expect("range").into_inner().kvs
    }

    /// Waits until `key` exists (a waiter joined) or, with `present` false, is gone.
    async fn wait_for_key(&mut self, key: &[u8], present: bool) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let range = RangeRequest { key: key.to_vec(), ..Default::default() };
            let found = !self.kv.range(range).await.expect("range").into_inner().kvs.is_empty();
            if found == present {
                return;
            }
            assert!(Instant::now() < deadline, "{} still {}", String::from_utf8_lossy(key), !present);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn lock(&mut self, name: &[u8], lease: i64) -> Value {
        grpc_answer(self.lock.lock(LockRequest { name: name.to_vec(), lease }).await)
    }

    async fn unlock(&mut self, key: &[u8]) -> Value {
        grpc_answer(self.lock.unlock(UnlockRequest { key: key.to_vec() }).await)
    }

    async fn campaign(&mut self, name: &[u8], lease: i64, value: &[u8]) -> Value {
        let request = CampaignRequest { name: name.to_vec(), lease, value: value.to_vec() };
        grpc_answer(self.election.campaign(request).await)
    }

    async fn proclaim(&mut self, leader: Option<LeaderKey>, value: &[u8]) -> Value {
        grpc_answer(self.election.proclaim(ProclaimRequest { leader, value: value.to_vec() }).await)
    }

    async fn resign(&mut self, leader: Option<LeaderKey>) -> Value {
        grpc_answer(self.election.resign(ResignRequest { leader }).await)
    }

    async fn leader(&mut self, name: &[u8]) -> Value {
        grpc_answer(self.election.leader(LeaderRequest { name: name.to_vec() }).await)
    }

    async fn lease_count(&mut self) -> usize {
        self.lease.lease_leases(LeaseLeasesRequest {}).await.expect("leases").into_inner().leases.len()
    }
}

/// The owner key of `lease` in lock or election `name`.
fn owner(name: &str, lease: i64) -> Vec<u8> {
    format!("{name}/{lease:x}").into_bytes()
}

fn leader_key(name: &str, lease: i64, rev: i64) -> Option<LeaderKey> {
    Some(LeaderKey { name: name.as_bytes().to_vec(), key: owner(name, lease), rev, lease })
}

/// Starts a Lock that will wait, and returns it once its key is in the store.
async fn waiting_lock(c: &mut Clients, name: &str, lease: i64) -> tokio::task::JoinHandle<Value> {
    let mut waiter = c.clone();
    let name_bytes = name.as_bytes().to_vec();
    let task = tokio::spawn(async move { waiter.lock(&name_bytes, lease).await });
    c.wait_for_key(&owner(name, lease), true).await;
    assert!(!task.is_finished(), "the Lock for {name} with lease {lease} waits for the holder");
    task
}

/// Waits (bounded) for a waiting call's answer.
async fn served(task: tokio::task::JoinHandle<Value>) -> Value {
    tokio::time::timeout(STEP_TIMEOUT, task).await.expect("the waiter is served in time").expect("waiter task")
}

/// The script both servers run: each step's name and answer.
async fn script(c: &mut Clients) -> Vec<(String, Value)> {
    let mut answers: Vec<(String, Value)> = Vec::new();
    let mut note = |name: &str, answer: Value| answers.push((name.to_string(), answer));
    for lease in [LEASE_A, LEASE_B, LEASE_C] {
        c.grant(lease).await;
    }
    note("lock", c.lock(b"L", LEASE_A).await);
    note("lock again with the same lease", c.lock(b"L", LEASE_A).await);
    note("lock with a lease that does not exist", c.lock(b"L", 12345).await);
    c.grant(400).await;
    c.revoke(400).await;
    note("lock with a revoked lease", c.lock(b"L", 400).await);
    note("lock an empty name", c.lock(b"", LEASE_A).await);
    note("unlock no key", c.unlock(b"").await);
    note("unlock a key that does not exist", c.unlock(b"nothing").await);
    // A waiter is served when the holder unlocks, the next when the holder's lease is revoked.
    let waiter = waiting_lock(c, "L", LEASE_B).await;
    note("unlock the holder", c.unlock(&owner("L", LEASE_A)).await);
    note("the waiter holds", served(waiter).await);
    let waiter = waiting_lock(c, "L", LEASE_C).await;
    c.revoke(LEASE_B).await;
    note("the next waiter holds after a revoke", served(waiter).await);
    note("unlock it", c.unlock(&owner("L", LEASE_C)).await);
    c.grant(LEASE_B).await;

    note("campaign", c.campaign(b"E", LEASE_A, b"v1").await);
    let rev = c.keys(&owner("E", LEASE_A)).await[0].create_revision;
    note("campaign again, same value", c.campaign(b"E", LEASE_A, b"v1").await);
    note("campaign again, new value", c.campaign(b"E", LEASE_A, b"v2").await);
    note("leader", c.leader(b"E").await);
    note("proclaim", c.proclaim(leader_key("E", LEASE_A, rev), b"v3").await);
    note("proclaim with a stale revision", c.proclaim(leader_key("E", LEASE_A, rev + 1), b"x").await);
    note("proclaim without a leader", c.proclaim(None, b"x").await);
    note("resign with a stale revision", c.resign(leader_key("E", LEASE_A, rev + 1)).await);
    note("resign without a leader", c.resign(None).await);
    note("campaign with a lease that does not exist", c.campaign(b"E", 12345, b"x").await);
    note("leader of an election nobody ran", c.leader(b"nobody").await);
    // A second campaigner leads once the first resigns.
    let mut waiter = c.clone();
    let campaign = tokio::spawn(async move { waiter.campaign(b"E", LEASE_B, b"second").await });
    c.wait_for_key(&owner("E", LEASE_B), true).await;
    assert!(!campaign.is_finished(), "the second campaigner waits");
    note("leader while a campaigner waits", c.leader(b"E").await);
    note("resign", c.resign(leader_key("E", LEASE_A, rev)).await);
    note("the second campaigner leads", served(campaign).await);
    note("leader after the resignation", c.leader(b"E").await);
    let second = c.keys(&owner("E", LEASE_B)).await[0].create_revision;
    note("the second resigns", c.resign(leader_key("E", LEASE_B, second)).await);
    note("no leader", c.leader(b"E").await);

    // Without a lease, the services grant one of 60 s (each server its own id); so do Proclaim and
    // Resign, even when they then fail.
    let before = c.lease_count().await;
    note("resign an empty leader key", c.resign(Some(LeaderKey::default())).await);
    note("proclaim an empty leader key", c.proclaim(Some(LeaderKey::default()), b"x").await);
    note("leases granted by them", json!(c.lease_count().await - before));
    let held = c.lock.lock(LockRequest { name: b"Z".to_vec(), lease: 0 }).await.expect("lock").into_inner();
    let lease = i64::from_str_radix(String::from_utf8_lossy(&held.key).trim_start_matches("Z/"), 16).expect("hex");
    let ttl = c.lease.lease_time_to_live(LeaseTimeToLiveRequest { id: lease, keys: true }).await.expect("ttl");
    let ttl = ttl.into_inner();
    note("a lock without a lease: its lease", json!([ttl.granted_ttl, ttl.keys.len()]));
    note("a lock without a lease: its header", json!(held.header.map(|h| h.revision)));
    c.revoke(lease).await;

    let everything = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    note("the store at the end", grpc_answer(c.kv.range(everything).await));
    answers
}

/// Runs `script` on a reference etcd, then on T4, and compares their answers.
async fn on_etcd_and_t4(script: impl AsyncFn(&mut Clients) -> Vec<(String, Value)>) {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    let want = script(&mut clients(&etcd).await).await;
    let got = script(&mut clients(&t4).await).await;
    assert_same_answers(&want, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_answer_as_etcds_do() {
    on_etcd_and_t4(script).await;
}

/// Observe: the leader now, each value it proclaims, then (after it resigns) the next leader.
async fn observed(c: &mut Clients) -> Vec<(String, Value)> {
    c.grant(LEASE_A).await;
    c.grant(LEASE_B).await;
    let mut observed = observe(c, b"O");
    let mut next = async || -> Value {
        let answer = tokio::time::timeout(STEP_TIMEOUT, observed.recv()).await.expect("an answer in time");
        let mut value = serde_json::to_value(answer.expect("not ended").expect("observe stream")).expect("json");
        normalise(&mut value);
        value
    };
    let mut answers = Vec::new();
    answers.push(("campaign".to_string(), c.campaign(b"O", LEASE_A, b"first").await));
    answers.push(("observed".to_string(), next().await));
    let rev = c.keys(&owner("O", LEASE_A)).await[0].create_revision;
    for value in [b"second", b"third!"] {
        answers.push(("proclaim".to_string(), c.proclaim(leader_key("O", LEASE_A, rev), value).await));
        answers.push(("observed".to_string(), next().await));
    }
    answers.push(("resign".to_string(), c.resign(leader_key("O", LEASE_A, rev)).await));
    answers.push(("campaign".to_string(), c.campaign(b"O", LEASE_B, b"next").await));
    answers.push(("observed".to_string(), next().await));
    answers
}

/// The answers of an Observe of election `name`, as they come. (etcd sends the call's headers with
/// its first answer, so even the call's start is awaited in a task of its own.)
fn observe(c: &Clients, name: &[u8]) -> tokio::sync::mpsc::UnboundedReceiver<Result<LeaderResponse, tonic::Status>> {
    let (answers, observed) = tokio::sync::mpsc::unbounded_channel();
    let (mut election, name) = (c.election.clone(), name.to_vec());
    tokio::spawn(async move {
        let mut stream = match election.observe(LeaderRequest { name }).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => return drop(answers.send(Err(status))),
        };
        loop {
            let answer = stream.message().await.transpose();
            let Some(answer) = answer else { return };
            let failed = answer.is_err();
            if answers.send(answer).is_err() || failed {
                return;
            }
        }
    });
    observed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_streams_the_leaders_as_etcds_does() {
    on_etcd_and_t4(observed).await;
}

/// The JSON gateway's lock and election routes, answered as etcd's gateway answers them.
fn gateway_script(endpoint: &str) -> Vec<(String, Value)> {
    let call = |path: &str, body: Value| {
        let answer = request(endpoint, "POST", path, body.to_string().as_bytes());
        let mut json = answer.json();
        normalise(&mut json);
        (format!("{path} {body}"), json!([answer.status, json]))
    };
    let leader = |rev: &str| json!({"name": b64("G"), "key": b64("G/64"), "rev": rev, "lease": "100"});
    let mut answers = vec![
        call("/v3/lease/grant", json!({"ID": "100", "TTL": "600"})),
        call("/v3/lease/grant", json!({"ID": "200", "TTL": "600"})),
        call("/v3/lock/lock", json!({"name": b64("GL"), "lease": "100"})),
        call("/v3/lock/lock", json!({"name": b64("GL"), "lease": "12345"})),
        call("/v3/lock/unlock", json!({"key": b64("GL/64")})),
        call("/v3/lock/unlock", json!({})),
        call("/v3/election/campaign", json!({"name": b64("G"), "lease": "100", "value": b64("v1")})),
        call("/v3/election/leader", json!({"name": b64("G")})),
        call("/v3/election/proclaim", json!({"leader": leader("4"), "value": b64("v2")})),
        call("/v3/election/proclaim", json!({"leader": leader("3"), "value": b64("v2")})),
        call("/v3/election/proclaim", json!({"value": b64("v2")})),
        call("/v3/election/leader", json!({"name": b64("nobody")})),
        call("/v3/lock/lock", json!({"name": 5})),
    ];
    // Observe streams: the leader now, then a proclaimed value.
    let mut observe =
        JsonStream::open(endpoint, "/v3/election/observe", json!({"name": b64("G")}).to_string().as_bytes());
    let mut line = || {
        let mut value = observe.next_line();
        normalise(&mut value);
        ("observe".to_string(), value)
    };
    answers.push(line());
    answers.push(call("/v3/election/proclaim", json!({"leader": leader("4"), "value": b64("v3")})));
    answers.push(line());
    answers.push(call("/v3/election/resign", json!({"leader": leader("4")})));
    answers.push(call("/v3/election/leader", json!({"name": b64("G")})));
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_lock_and_election_routes_answer_as_etcds_do() {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    let (etcd, t4) = (etcd.endpoint.clone(), t4.endpoint.clone());
    let want = tokio::task::spawn_blocking(move || gateway_script(&etcd)).await.unwrap();
    let got = tokio::task::spawn_blocking(move || gateway_script(&t4)).await.unwrap();
    // A body that does not decode: the code is etcd's, the message quotes each side's JSON parser.
    let (w, g) = (&want[want.len() - 6].1, &got[got.len() - 6].1);
    assert_eq!((&w[0], &w[1]["code"]), (&g[0], &g[1]["code"]), "an undecodable body");
    let keep = |answers: Vec<(String, Value)>| -> Vec<(String, Value)> {
        answers.into_iter().filter(|(step, _)| !step.contains("{\"name\":5}")).collect()
    };
    assert_same_answers(&keep(want), &keep(got));
}

/// A name of 1 MiB: etcd refuses the Lock's txn as too large (its key is in it three times), and
/// so does T4; nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_name_of_one_mebibyte_is_refused_as_etcd_refuses_it() {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    let huge = vec![b'n'; 1024 * 1024];
    let mut answers = Vec::new();
    for server in [&etcd, &t4] {
        let mut c = clients(server).await;
        c.grant(LEASE_A).await;
        let lock = c.lock(&huge, LEASE_A).await;
        let campaign = c.campaign(&huge, LEASE_A, b"v").await;
        let everything = RangeRequest { key: vec![0], range_end: vec![0], count_only: true, ..Default::default() };
        answers.push(json!([lock, campaign, grpc_answer(c.kv.range(everything).await)]));
    }
    assert_eq!(answers[0], answers[1], "etcd, then T4");
    assert_eq!(answers[1][0]["message"], "etcdserver: request is too large", "{}", answers[1]);
}

/// A client that leaves while its Lock waits: etcd deletes the waiter's key then (the recipe
/// releases it when its wait is canceled), and so does T4; the holder keeps the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_leaves_takes_its_key_with_it() {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    let mut ends = Vec::new();
    for server in [&etcd, &t4] {
        let mut c = clients(server).await;
        c.grant(LEASE_A).await;
        c.grant(LEASE_B).await;
        c.lock(b"D", LEASE_A).await;
        let lock_waiter = waiting_lock(&mut c, "D", LEASE_B).await;
        let mut campaigner = c.clone();
        c.campaign(b"DE", LEASE_A, b"v").await;
        let campaign = tokio::spawn(async move { campaigner.campaign(b"DE", LEASE_B, b"w").await });
        c.wait_for_key(&owner("DE", LEASE_B), true).await;
        lock_waiter.abort();
        campaign.abort();
        c.wait_for_key(&owner("D", LEASE_B), false).await;
        c.wait_for_key(&owner("DE", LEASE_B), false).await;
        let keys: Vec<_> = c.keys(b"D").await.into_iter().map(|kv| (kv.key, kv.create_revision)).collect();
        let everything = RangeRequest { key: vec![0], range_end: vec![0], count_only: true, ..Default::default() };
        ends.push((keys, grpc_answer(c.kv.range(everything).await)));
    }
    assert_eq!(ends[0], ends[1], "etcd, then T4");
    assert_eq!(ends[1].0.len(), 2, "the holders' keys stay: {:?}", ends[1].0);
}

/// A lock held through the service blocks `etcdctl lock` (the client-side recipe), and the other
/// way round; a waiter gets the lock when the holder's lease is revoked. Runs against T4, or etcd
/// with `T4_TEST_REFERENCE=etcd`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_locks_and_etcdctl_locks_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_under_test(dir.path(), &[]);
    let mut c = clients(&server).await;
    c.grant(LEASE_A).await;
    c.grant(LEASE_B).await;

    // The service holds: etcdctl waits until it unlocks.
    c.lock(b"mx", LEASE_A).await;
    let mut etcdctl = etcdctl_lock(&server, &["mx", "echo", "etcdctl-holds"]);
    wait_for_second_key(&mut c, b"mx/").await;
    assert_still_waiting(&mut etcdctl);
    c.unlock(&owner("mx", LEASE_A)).await;
    let output = tokio::task::spawn_blocking(move || etcdctl.wait_with_output()).await.unwrap().expect("etcdctl");
    assert!(String::from_utf8_lossy(&output.stdout).contains("etcdctl-holds"), "{output:?}");

    // etcdctl holds: the service's Lock waits until etcdctl unlocks (on SIGINT).
    let mut etcdctl = etcdctl_lock(&server, &["mx2"]);
    let stdout = etcdctl.stdout.take().expect("stdout");
    // The pipe stays open until etcdctl is done: a write to a closed one would kill it (SIGPIPE)
    // before it unlocks.
    let first = tokio::task::spawn_blocking(move || {
        let (mut stdout, mut line) = (std::io::BufReader::new(stdout), String::new());
        std::io::BufRead::read_line(&mut stdout, &mut line).map(|_| (line, stdout))
    });
    let (held, _stdout) =
        tokio::time::timeout(STEP_TIMEOUT, first).await.expect("etcdctl locks in time").unwrap().unwrap();
    assert!(held.starts_with("mx2/"), "etcdctl prints its key once it holds: {held}");
    let waiter = waiting_lock(&mut c, "mx2", LEASE_A).await;
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe { libc::kill(etcdctl.id() as i32, libc::SIGINT) };
    let answer = served(waiter).await;
    assert_eq!(answer["ok"]["key"], b64(owner("mx2", LEASE_A)), "{answer}");
    let _ = etcdctl.wait();

    // A waiter gets the lock when the holder's lease is revoked.
    let waiter = waiting_lock(&mut c, "mx2", LEASE_B).await;
    c.revoke(LEASE_A).await;
    let answer = served(waiter).await;
    assert_eq!(answer["ok"]["key"], b64(owner("mx2", LEASE_B)), "{answer}");
}

fn etcdctl_lock(server: &Server, args: &[&str]) -> std::process::Child {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint))
        .arg("lock")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl")
}

/// Waits until a second key is under `prefix` (etcdctl's, behind the holder's).
async fn wait_for_second_key(c: &mut Clients, prefix: &[u8]) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while c.keys(prefix).await.len() < 2 {
        assert!(Instant::now() < deadline, "etcdctl did not join the waiters in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that `etcdctl lock` has not acquired: it is still running a while after its key was put.
/// (Proving that something does not happen takes a window: 200 ms; a failure shows as etcdctl
/// having run its command and exited.)
fn assert_still_waiting(etcdctl: &mut std::process::Child) {
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        assert!(etcdctl.try_wait().expect("wait").is_none(), "etcdctl took the lock the service holds");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A node that shuts down ends the calls that wait (a Lock, a Campaign, an Observe) with etcd's
/// "server stopped", instead of holding its shutdown until they time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_waiting_locks_campaigns_and_observes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_t4(dir.path(), &[]);
    let mut c = clients(&server).await;
    c.grant(LEASE_A).await;
    c.grant(LEASE_B).await;
    c.lock(b"S", LEASE_A).await;
    let lock = waiting_lock(&mut c, "S", LEASE_B).await;
    c.campaign(b"SE", LEASE_A, b"v").await;
    let mut campaigner = c.clone();
    let campaign = tokio::spawn(async move { campaigner.campaign(b"SE", LEASE_B, b"w").await });
    c.wait_for_key(&owner("SE", LEASE_B), true).await;
    // Observed where there is a leader, so its first answer shows the stream open before the stop
    // (a call that reaches a stopping node may meet its closed connection instead).
    let mut observed = observe(&c, b"SE");
    let first = tokio::time::timeout(STEP_TIMEOUT, observed.recv()).await.expect("in time");
    assert!(first.expect("an answer").is_ok(), "the leader of SE");
    let status = tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
    assert!(status.success(), "the node stops cleanly: {status}");
    let stopped = json!({"code": tonic::Code::Unavailable as i32, "message": "etcdserver: server stopped"});
    assert_eq!(served(lock).await, stopped, "the waiting Lock");
    assert_eq!(served(campaign).await, stopped, "the waiting Campaign");
    let observed = tokio::time::timeout(STEP_TIMEOUT, observed.recv()).await.expect("in time");
    let status = observed.expect("an answer").expect_err("the Observe stream ends with an error");
    assert_eq!((status.code(), status.message()), (tonic::Code::Unavailable, "etcdserver: server stopped"));
}
