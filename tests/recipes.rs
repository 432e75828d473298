//! A lock and a leader election built client-side on leases, txns and watches, exactly as etcd's Go
//! `concurrency` package builds them (Session, Mutex, Election; the server-side Lock and Election
//! services are not used). Pinned against the reference etcd 3.4 (`T4_TEST_REFERENCE=etcd`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::Server;
use common::wait::{WAIT, within};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

async fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // The harness blocks (it runs its own runtime to wait for etcd), so it runs off the async workers.
    let server = within("server start", tokio::task::spawn_blocking(move || Server::start_under_test(&path, &[])))
        .await
        .unwrap();
    (dir, server)
}

/// `WithFirstCreate`: the key under `prefix` with the smallest create revision.
fn first_create() -> GetOptions {
    GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1)
}

/// `WithLastCreate` + `WithMaxCreateRev`: the newest key under the prefix created at or before `max`.
fn last_created_by(max: i64) -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(1)
        .with_max_create_revision(max)
}

fn range_kvs(resp: &TxnOpResponse) -> Vec<KeyValue> {
    match resp {
        TxnOpResponse::Get(get) => get.kvs().to_vec(),
        other => panic!("expected a range response, got {other:?}"),
    }
}

/// A lease kept alive in the background until closed or abandoned (`concurrency.Session`).
struct Session {
    client: Client,
    lease: i64,
    keep_alive: JoinHandle<()>,
}

impl Session {
    async fn new(client: &Client, ttl: i64) -> Session {
        let mut client = client.clone();
        let granted = within("grant", client.lease_grant(ttl, None)).await.unwrap();
        let (lease, ttl) = (granted.id(), granted.ttl());
        let (mut keeper, mut answers) = within("keep alive", client.lease_keep_alive(lease)).await.unwrap();
        let period = Duration::from_millis(ttl as u64 * 1000 / 3);
        let keep_alive = tokio::spawn(async move {
            // Renew every TTL/3 like the Go client; bounded (a session outlives no test).
            for _ in 0..1000 {
                tokio::time::sleep(period).await;
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                match tokio::time::timeout(WAIT, answers.message()).await {
                    Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                    _ => return, // the lease is gone or the stream broke: the session is over
                }
            }
        });
        Session { client, lease, keep_alive }
    }

    /// `Session.Close`: stop renewing and revoke the lease, deleting its keys.
    async fn close(self) {
        self.keep_alive.abort();
        let mut client = self.client.clone();
        match within("revoke", client.lease_revoke(self.lease)).await {
            Ok(_) => {}
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {}
            Err(e) => panic!("revoke: {e}"),
        }
    }

    /// A crashed client: stop renewing and leave the lease to expire.
    fn abandon(&self) {
        self.keep_alive.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

/// `waitDelete`: waits until `key` is deleted at a revision after `rev`.
async fn wait_delete(client: &mut Client, key: &[u8], rev: i64) {
    let mut watch =
        within("watch", client.watch(key, Some(WatchOptions::new().with_start_revision(rev)))).await.unwrap();
    for _ in 0..10_000 {
        let resp = within("watch for a delete", watch.message()).await.unwrap().expect("watch ended");
        assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
        if resp.events().iter().any(|ev| ev.event_type() == EventType::Delete) {
            return;
        }
    }
    panic!("no delete in 10000 watch responses");
}

/// `waitDeletes`: waits until no key under `prefix` has a create revision at or below `max`,
/// watching the newest such key each time. Returns the revision at which that became true.
async fn wait_deletes(client: &mut Client, prefix: &str, max: i64) -> i64 {
    for _ in 0..10_000 {
        let resp = within("get", client.get(prefix, Some(last_created_by(max)))).await.unwrap();
        let Some(last) = resp.kvs().first() else {
            return resp.header().unwrap().revision();
        };
        wait_delete(client, last.key(), resp.header().unwrap().revision()).await;
    }
    panic!("predecessors never went away");
}

#[derive(Debug, PartialEq)]
struct SessionExpired;

/// `concurrency.Mutex`: the holder is the key under the prefix with the smallest create revision.
struct Mutex {
    client: Client,
    lease: i64,
    prefix: String,
    key: String,
    rev: i64,
}

impl Mutex {
    fn new(session: &Session, prefix: &str) -> Mutex {
        let (client, lease) = (session.client.clone(), session.lease);
        Mutex { client, lease, prefix: format!("{prefix}/"), key: String::new(), rev: -1 }
    }

    async fn lock(&mut self) -> Result<(), SessionExpired> {
        self.key = format!("{}{:x}", self.prefix, self.lease);
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(self.key.as_str(), "", Some(PutOptions::new().with_lease(self.lease))),
                TxnOp::get(self.prefix.as_str(), Some(first_create())),
            ])
            .or_else([TxnOp::get(self.key.as_str(), None), TxnOp::get(self.prefix.as_str(), Some(first_create()))]);
        let resp = within("lock txn", self.client.txn(txn)).await.unwrap();
        let ops = resp.op_responses();
        self.rev = resp.header().unwrap().revision();
        if !resp.succeeded() {
            self.rev = range_kvs(&ops[0])[0].create_revision(); // this session already queued
        }
        let owner = range_kvs(&ops[1]);
        if owner.is_empty() || owner[0].create_revision() == self.rev {
            return Ok(());
        }
        wait_deletes(&mut self.client, &self.prefix, self.rev - 1).await;
        // Make sure the session did not expire while waiting (etcd 3.5's check).
        if within("get", self.client.get(self.key.as_str(), None)).await.unwrap().kvs().is_empty() {
            return Err(SessionExpired);
        }
        Ok(())
    }

    async fn unlock(&mut self) {
        within("unlock", self.client.delete(self.key.as_str(), None)).await.unwrap();
        self.key = "\0".into();
        self.rev = -1;
    }

    /// `IsOwner`: a compare that holds only while this mutex holds the lock.
    fn is_owner(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.rev)
    }
}

#[derive(Debug, PartialEq)]
struct NotLeader;

/// `concurrency.Election`: the leader is the key under the prefix with the smallest create revision.
struct Election {
    client: Client,
    lease: i64,
    prefix: String,
    key: String,
    rev: i64,
    leading: bool,
}

impl Election {
    fn new(session: &Session, prefix: &str) -> Election {
        let (client, lease) = (session.client.clone(), session.lease);
        Election { client, lease, prefix: format!("{prefix}/"), key: String::new(), rev: -1, leading: false }
    }

    /// Returns once this candidate is the leader.
    async fn campaign(&mut self, value: &str) -> Result<(), NotLeader> {
        let key = format!("{}{:x}", self.prefix, self.lease);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), value, Some(PutOptions::new().with_lease(self.lease)))])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = within("campaign txn", self.client.txn(txn)).await.unwrap();
        (self.key, self.rev, self.leading) = (key, resp.header().unwrap().revision(), true);
        if !resp.succeeded() {
            let kv = range_kvs(&resp.op_responses()[0])[0].clone();
            self.rev = kv.create_revision();
            if kv.value() != value.as_bytes()
                && let Err(e) = self.proclaim(value).await
            {
                self.resign().await;
                return Err(e);
            }
        }
        wait_deletes(&mut self.client, &self.prefix, self.rev - 1).await;
        Ok(())
    }

    /// Announces a new value without a new election; fails once the leader key is gone.
    async fn proclaim(&mut self, value: &str) -> Result<(), NotLeader> {
        if !self.leading {
            return Err(NotLeader);
        }
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.rev)])
            .and_then([TxnOp::put(self.key.as_str(), value, Some(PutOptions::new().with_lease(self.lease)))]);
        if !within("proclaim txn", self.client.txn(txn)).await.unwrap().succeeded() {
            self.key.clear();
            return Err(NotLeader);
        }
        Ok(())
    }

    async fn resign(&mut self) {
        if !self.leading {
            return;
        }
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.rev)])
            .and_then([TxnOp::delete(self.key.as_str(), None)]);
        within("resign txn", self.client.txn(txn)).await.unwrap();
        self.key.clear();
        self.leading = false;
    }
}

/// `Election.Leader`: the current leader's key-value, if any.
async fn leader(client: &mut Client, prefix: &str) -> Option<KeyValue> {
    within("leader", client.get(format!("{prefix}/"), Some(first_create()))).await.unwrap().kvs().first().cloned()
}

/// A watch on everything under `prefix/`, from the revision after the current one.
async fn observe(client: &mut Client, prefix: &str) -> WatchStream {
    let rev = within("get", client.get("\0", None)).await.unwrap().header().unwrap().revision();
    let options = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
    within("watch", client.watch(format!("{prefix}/"), Some(options))).await.unwrap()
}

/// The next event on an observer: (type, key, value, create revision).
async fn next_event(
    watch: &mut WatchStream,
    pending: &mut Vec<(EventType, String, String, i64)>,
) -> (EventType, String, String, i64) {
    for _ in 0..100 {
        if !pending.is_empty() {
            return pending.remove(0);
        }
        let resp = within("observer", watch.message()).await.unwrap().expect("observer watch ended");
        assert!(!resp.canceled(), "observer canceled: {}", resp.cancel_reason());
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            let (key, value) = (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string());
            pending.push((ev.event_type(), key, value, kv.create_revision()));
        }
    }
    panic!("no event in 100 watch responses");
}

async fn join<T>(task: JoinHandle<T>) -> T {
    within("task", task).await.expect("task panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_contenders_take_the_lock_twenty_times_each_without_overlap() {
    let (_dir, server) = start().await;
    let held = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for contender in 0..5 {
        let client = server.client().await;
        let held = held.clone();
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client, 10).await;
            let mut mutex = Mutex::new(&session, "counter-lock");
            let mut c = client.clone();
            for _ in 0..20 {
                mutex.lock().await.expect("the session is alive");
                assert!(
                    !held.swap(true, Ordering::SeqCst),
                    "contender {contender} entered an occupied critical section"
                );
                // A non-atomic read-modify-write: correct only under mutual exclusion.
                let current = within("get", c.get("counter", None)).await.unwrap();
                let n: u64 = current.kvs().first().map_or(0, |kv| kv.value_str().unwrap().parse().unwrap());
                within("put", c.put("counter", (n + 1).to_string(), None)).await.unwrap();
                held.store(false, Ordering::SeqCst);
                mutex.unlock().await;
            }
            session.close().await;
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("contenders finish").expect("contender");
    }
    let mut c = server.client().await;
    let counter = within("get", c.get("counter", None)).await.unwrap();
    assert_eq!(counter.kvs()[0].value_str().unwrap(), "100");
    let left = within("get", c.get("counter-lock/", Some(GetOptions::new().with_prefix()))).await.unwrap();
    assert_eq!(left.count(), 0, "every lock key is gone");
}

enum Command {
    Proclaim(String),
    Resign,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_has_one_leader_at_a_time_and_resigning_passes_it_on_in_creation_order() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let mut observer = observe(&mut c, "election").await;
    let mut pending = Vec::new();
    let leading = Arc::new(AtomicUsize::new(0));
    let (elected_tx, mut elected) = mpsc::channel(8);
    let mut tasks = Vec::new();
    for candidate in 0..4 {
        let client = server.client().await;
        let (leading, elected_tx) = (leading.clone(), elected_tx.clone());
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client, 10).await;
            let mut election = Election::new(&session, "election");
            election.campaign(&format!("candidate-{candidate}")).await.unwrap();
            assert_eq!(leading.fetch_add(1, Ordering::SeqCst), 0, "candidate {candidate} leads alongside another");
            let (commands_tx, mut commands) = mpsc::channel(2);
            elected_tx.send((candidate, election.key.clone(), commands_tx)).await.unwrap();
            for _ in 0..2 {
                match within("command", commands.recv()).await.unwrap() {
                    Command::Proclaim(value) => election.proclaim(&value).await.unwrap(),
                    Command::Resign => {
                        leading.fetch_sub(1, Ordering::SeqCst);
                        election.resign().await;
                    }
                }
            }
            session.close().await;
        }));
    }
    drop(elected_tx);

    // The observer sees the four candidacies; their creation order is the order of leadership.
    let mut created = BTreeMap::new();
    while created.len() < 4 {
        let (kind, key, value, create) = next_event(&mut observer, &mut pending).await;
        assert_eq!(kind, EventType::Put, "{key}");
        assert!(value.starts_with("candidate-"), "{value}");
        assert!(created.insert(create, key).is_none(), "one key per create revision");
    }
    let order: Vec<String> = created.into_values().collect();

    for (turn, expected) in order.iter().enumerate() {
        let (candidate, key, commands) = within("an election", elected.recv()).await.unwrap();
        assert_eq!(&key, expected, "turn {turn}: the oldest remaining candidacy leads");
        let current = leader(&mut c, "election").await.unwrap();
        assert_eq!(
            (current.key_str().unwrap(), current.value_str().unwrap()),
            (key.as_str(), &*format!("candidate-{candidate}"))
        );

        let proclaimed = format!("candidate-{candidate}-proclaimed");
        commands.send(Command::Proclaim(proclaimed.clone())).await.unwrap();
        let (kind, changed, value, _) = next_event(&mut observer, &mut pending).await;
        assert_eq!((kind, changed.as_str(), value.as_str()), (EventType::Put, key.as_str(), proclaimed.as_str()));
        let current = leader(&mut c, "election").await.unwrap();
        assert_eq!((current.key_str().unwrap(), current.value_str().unwrap()), (key.as_str(), proclaimed.as_str()));
        assert!(elected.try_recv().is_err(), "nobody else was elected while {key} led");

        commands.send(Command::Resign).await.unwrap();
        let (kind, gone, _, _) = next_event(&mut observer, &mut pending).await;
        assert_eq!((kind, gone.as_str()), (EventType::Delete, key.as_str()), "observers see the resignation");
        let next = leader(&mut c, "election").await.map(|kv| kv.key_str().unwrap().to_string());
        assert_eq!(next.as_ref(), order.get(turn + 1), "after a resignation the next candidacy leads");
    }
    for task in tasks {
        join(task).await;
    }
    assert!(within("no more elections", elected.recv()).await.is_none());
    assert!(leader(&mut c, "election").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_whose_session_is_revoked_loses_the_lock_to_the_next_waiter() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let mut observer = observe(&mut c, "lock").await;
    let mut pending = Vec::new();
    let (a, b, w) = (Session::new(&c, 10).await, Session::new(&c, 10).await, Session::new(&c, 10).await);
    let mut holder = Mutex::new(&a, "lock");
    holder.lock().await.unwrap();
    let (kind, _, _, _) = next_event(&mut observer, &mut pending).await;
    assert_eq!(kind, EventType::Put);

    // b queues behind the holder, then w queues behind b.
    let mut next = Mutex::new(&b, "lock");
    let next_task = tokio::spawn(async move {
        next.lock().await?;
        let owner = within("owner", next.client.get("lock/", Some(first_create()))).await.unwrap();
        assert_eq!(owner.kvs()[0].key_str().unwrap(), next.key, "holds the lock only as the oldest key");
        Ok::<_, SessionExpired>(next)
    });
    let (kind, b_key, _, _) = next_event(&mut observer, &mut pending).await;
    assert_eq!((kind, b_key), (EventType::Put, format!("lock/{:x}", b.lease)));
    let mut waiter = Mutex::new(&w, "lock");
    let waiter_task = tokio::spawn(async move { waiter.lock().await });
    let (kind, w_key, _, _) = next_event(&mut observer, &mut pending).await;
    assert_eq!((kind, w_key.clone()), (EventType::Put, format!("lock/{:x}", w.lease)));

    // w's session dies while it waits: its key goes, and it will learn so when its turn comes.
    w.close().await;
    let (kind, gone, _, _) = next_event(&mut observer, &mut pending).await;
    assert_eq!((kind, gone), (EventType::Delete, w_key));
    assert!(!next_task.is_finished(), "b cannot hold the lock while a's key exists");

    // The holder's session dies: its key is deleted and b holds the lock.
    a.close().await;
    let mut next = join(next_task).await.expect("b's session is alive");
    let guarded =
        |m: &Mutex, value: &str| Txn::new().when([m.is_owner()]).and_then([TxnOp::put("protected", value, None)]);
    assert!(!within("txn", c.txn(guarded(&holder, "from a"))).await.unwrap().succeeded(), "a lost the lock");
    assert!(within("txn", c.txn(guarded(&next, "from b"))).await.unwrap().succeeded(), "b holds the lock");

    next.unlock().await;
    assert_eq!(join(waiter_task).await, Err(SessionExpired), "w's turn came after its session died");
    let fresh = Session::new(&c, 10).await;
    let mut late = Mutex::new(&fresh, "lock");
    within("an uncontended lock", late.lock()).await.unwrap();
    late.unlock().await;
    b.close().await;
    fresh.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_session_expires_loses_leadership_to_the_next_candidate() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let mut observer = observe(&mut c, "expiring").await;
    let mut pending = Vec::new();
    // The leader's lease has the shortest TTL there is; the follower's outlives the test.
    let (short, long) = (Session::new(&c, 1).await, Session::new(&c, 30).await);
    let mut first = Election::new(&short, "expiring");
    within("uncontested campaign", first.campaign("first")).await.unwrap();
    let (_, first_key, _, _) = next_event(&mut observer, &mut pending).await;

    let mut second = Election::new(&long, "expiring");
    let second_task = tokio::spawn(async move {
        second.campaign("second").await?;
        let current = leader(&mut second.client.clone(), "expiring").await.unwrap();
        assert_eq!(current.key_str().unwrap(), second.key, "elected only once the oldest candidacy");
        Ok::<_, NotLeader>(second)
    });
    let (kind, second_key, _, _) = next_event(&mut observer, &mut pending).await;
    assert_eq!((kind, second_key.as_str()), (EventType::Put, &*format!("expiring/{:x}", long.lease)));
    assert!(!second_task.is_finished(), "the follower waits while the leader's key exists");

    // The leader stops renewing (a crashed process); its lease expires and takes the key with it.
    short.abandon();
    let (kind, gone, _, _) = next_event(&mut observer, &mut pending).await;
    assert_eq!((kind, gone), (EventType::Delete, first_key));
    let mut second = join(second_task).await.expect("the follower is elected");
    assert_eq!(leader(&mut c, "expiring").await.unwrap().key_str().unwrap(), second_key);
    assert_eq!(first.proclaim("still me?").await, Err(NotLeader), "the expired leader cannot proclaim");
    second.proclaim("second, now leading").await.unwrap();
    assert_eq!(leader(&mut c, "expiring").await.unwrap().value_str().unwrap(), "second, now leading");
    second.resign().await;
    long.close().await;
}
