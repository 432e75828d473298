//! The Lease API (grant, revoke, keep-alive, time-to-live, leases) and how leases attach to keys,
//! pinned against the reference etcd 3.4 (`T4_TEST_REFERENCE=etcd`). Nothing here depends on the
//! ids a server picks; the only timing assertion is the expiry bound (TTL + 1 s).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Server;
use common::kv::code_and_message;
use common::wait::within;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, WatchOptions, WatchResponse, WatchStream,
};
use t4::proto::etcdserverpb::lease_client::LeaseClient;
use t4::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// etcd's minimum lease TTL with its default configuration: ceil(1.5 × 1 s election timeout).
const MIN_TTL: i64 = 2;

/// etcd's `MaxLeaseTTL`.
const MAX_TTL: i64 = 9_000_000_000;

/// Starts the server under test (T4, or etcd with `T4_TEST_REFERENCE=etcd`) on a fresh data dir.
/// The harness blocks (it runs its own runtime to wait for etcd), so it runs off the async workers.
async fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = restart(dir.path()).await;
    (dir, server)
}

/// Starts the server under test on an existing data dir.
async fn restart(dir: &std::path::Path) -> Server {
    let dir = dir.to_path_buf();
    within("server start", tokio::task::spawn_blocking(move || Server::start_under_test(&dir, &[]))).await.unwrap()
}

async fn lease_client(server: &Server) -> LeaseClient<Channel> {
    LeaseClient::new(within("connect", common::channel(&server.endpoint)).await.unwrap())
}

async fn grant(c: &mut Client, ttl: i64) -> i64 {
    within("grant", c.lease_grant(ttl, None)).await.unwrap().id()
}

async fn revision(c: &mut Client) -> i64 {
    within("get", c.get("\0", None)).await.unwrap().header().unwrap().revision()
}

async fn lease_of(c: &mut Client, key: &str) -> Option<i64> {
    within("get", c.get(key, None)).await.unwrap().kvs().first().map(|kv| kv.lease())
}

/// The keys TimeToLive(keys=true) reports for `id`, as a set of strings.
async fn attached_keys(c: &mut Client, id: i64) -> BTreeSet<String> {
    let resp = within("time to live", c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())))
        .await
        .unwrap();
    resp.keys().iter().map(|k| String::from_utf8(k.clone()).unwrap()).collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// Watches the keys under `prefix` from revision `from` on.
async fn watch_prefix(c: &mut Client, prefix: &str, from: i64) -> WatchStream {
    within("watch", c.watch(prefix, Some(WatchOptions::new().with_prefix().with_start_revision(from)))).await.unwrap()
}

/// The next watch response that carries events (skipping the created notice and progress reports).
async fn next_events(stream: &mut WatchStream) -> WatchResponse {
    for _ in 0..100 {
        let resp = within("watch response", stream.message()).await.unwrap().expect("watch stream ended");
        assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
        if !resp.events().is_empty() {
            return resp;
        }
    }
    panic!("no events in 100 watch responses");
}

/// A raw bidi keep-alive stream, opened with a keep-alive of `first` (etcd sends the response
/// headers only with the first answer, so the first request goes out before the call is awaited).
/// Returns the sender, the answer stream and the answer to `first`.
async fn keep_alive_stream(
    server: &Server,
    first: i64,
) -> (mpsc::Sender<LeaseKeepAliveRequest>, tonic::Streaming<LeaseKeepAliveResponse>, LeaseKeepAliveResponse) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(LeaseKeepAliveRequest { id: first }).await.unwrap();
    let mut leases = lease_client(server).await;
    let mut stream =
        within("keep-alive stream", leases.lease_keep_alive(ReceiverStream::new(rx))).await.unwrap().into_inner();
    let answer = within("keep-alive response", stream.message()).await.unwrap().expect("keep-alive stream ended");
    (tx, stream, answer)
}

async fn keep_alive_once(
    tx: &mpsc::Sender<LeaseKeepAliveRequest>,
    stream: &mut tonic::Streaming<LeaseKeepAliveResponse>,
    id: i64,
) -> LeaseKeepAliveResponse {
    within("send keep-alive", tx.send(LeaseKeepAliveRequest { id })).await.unwrap();
    within("keep-alive response", stream.message()).await.unwrap().expect("keep-alive stream ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_with_a_client_chosen_id_uses_that_id() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let resp = within("grant", c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))).await.unwrap();
    assert_eq!((resp.id(), resp.ttl(), resp.error()), (0x1234, 30, ""));
    let ttl = within("time to live", c.lease_time_to_live(0x1234, None)).await.unwrap();
    assert_eq!((ttl.id(), ttl.granted_ttl()), (0x1234, 30));
    assert_eq!(revision(&mut c).await, 1, "granting a lease does not consume a revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_with_id_zero_gets_distinct_positive_server_assigned_ids() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        let resp = within("grant", c.lease_grant(30, None)).await.unwrap();
        assert!(resp.id() > 0, "server-assigned ids are positive: {}", resp.id());
        assert_eq!(resp.ttl(), 30);
        ids.insert(resp.id());
    }
    assert_eq!(ids.len(), 5, "every grant gets a new id: {ids:?}");
}

/// etcd accepts any non-zero id, negative ones included (only 0 means "choose one").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_accepts_a_negative_client_chosen_id() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    for id in [-3, i64::MIN] {
        let resp = within("grant", c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(id)))).await.unwrap();
        assert_eq!(resp.id(), id);
        c.put(format!("neg{id}"), "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
        assert_eq!(lease_of(&mut c, &format!("neg{id}")).await, Some(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_an_existing_id_fails_with_lease_already_exists() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let id = grant(&mut c, 30).await;
    let again = within("grant", c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(id)))).await.unwrap_err();
    assert_eq!(code_and_message(again), (tonic::Code::FailedPrecondition, "etcdserver: lease already exists".into()));
    let ttl = within("time to live", c.lease_time_to_live(id, None)).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 30, "the failed grant left the lease as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_below_the_minimum_including_zero_and_negative_are_raised_to_it() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    for asked in [1, 0, -5, i64::MIN, MIN_TTL] {
        let resp = within("grant", c.lease_grant(asked, None)).await.unwrap();
        assert_eq!(resp.ttl(), MIN_TTL, "TTL {asked} is raised to the minimum");
        let ttl = within("time to live", c.lease_time_to_live(resp.id(), None)).await.unwrap();
        assert_eq!(ttl.granted_ttl(), MIN_TTL);
    }
    let resp = within("grant", c.lease_grant(MIN_TTL + 1, None)).await.unwrap();
    assert_eq!(resp.ttl(), MIN_TTL + 1, "a TTL above the minimum is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_above_the_maximum_fail_with_too_large_lease_ttl() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let max = within("grant", c.lease_grant(MAX_TTL, None)).await.unwrap();
    assert_eq!(max.ttl(), MAX_TTL, "the maximum itself is accepted");
    for asked in [MAX_TTL + 1, i64::MAX] {
        let e = within("grant", c.lease_grant(asked, None)).await.unwrap_err();
        assert_eq!(code_and_message(e), (tonic::Code::OutOfRange, "etcdserver: too large lease TTL".into()));
    }
    let ids: Vec<i64> = within("leases", c.leases()).await.unwrap().leases().iter().map(|l| l.id()).collect();
    assert_eq!(ids, [max.id()], "refused grants create no lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_an_unknown_lease_fails_with_lease_not_found() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let e = within("put", c.put("k", "v", Some(PutOptions::new().with_lease(0x5eed)))).await.unwrap_err();
    assert_eq!(code_and_message(e), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
    let in_txn = Txn::new().and_then([TxnOp::put("k", "v", Some(PutOptions::new().with_lease(0x5eed)))]);
    let e = within("txn", c.txn(in_txn)).await.unwrap_err();
    assert_eq!(code_and_message(e), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
    // Only the branch the compares choose is checked.
    let other_branch = Txn::new()
        .when([Compare::version("k", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("ok", "v", None)])
        .or_else([TxnOp::put("k", "v", Some(PutOptions::new().with_lease(0x5eed)))]);
    let resp = within("txn", c.txn(other_branch)).await.unwrap();
    assert!(resp.succeeded());
    assert_eq!(resp.header().unwrap().revision(), 2, "the failed requests wrote nothing; this txn wrote once");
    assert_eq!(within("get", c.get("k", None)).await.unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_a_lease_attaches_a_plain_put_detaches_and_ignore_lease_keeps_it() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let (l1, l2) = (grant(&mut c, 30).await, grant(&mut c, 30).await);
    c.put("a", "1", Some(PutOptions::new().with_lease(l1))).await.unwrap();
    c.put("b", "1", Some(PutOptions::new().with_lease(l1))).await.unwrap();
    assert_eq!(lease_of(&mut c, "a").await, Some(l1), "range shows the lease");
    assert_eq!(attached_keys(&mut c, l1).await, set(&["a", "b"]));

    c.put("a", "2", None).await.unwrap();
    assert_eq!(lease_of(&mut c, "a").await, Some(0), "a put without a lease detaches the key");
    assert_eq!(attached_keys(&mut c, l1).await, set(&["b"]));

    c.put("b", "2", Some(PutOptions::new().with_ignore_lease())).await.unwrap();
    let b = within("get", c.get("b", None)).await.unwrap().kvs()[0].clone();
    assert_eq!((b.value(), b.lease()), (&b"2"[..], l1), "ignore_lease updates the value and keeps the lease");
    assert_eq!(attached_keys(&mut c, l1).await, set(&["b"]));

    c.put("b", "3", Some(PutOptions::new().with_lease(l2))).await.unwrap();
    assert_eq!(lease_of(&mut c, "b").await, Some(l2), "a put with another lease moves the key");
    assert_eq!((attached_keys(&mut c, l1).await, attached_keys(&mut c, l2).await), (set(&[]), set(&["b"])));

    within("revoke", c.lease_revoke(l1)).await.unwrap();
    assert_eq!(within("get", c.get("", Some(GetOptions::new().with_all_keys()))).await.unwrap().count(), 2);

    let e = within("put", c.put("missing", "v", Some(PutOptions::new().with_ignore_lease()))).await.unwrap_err();
    assert_eq!(code_and_message(e), (tonic::Code::InvalidArgument, "etcdserver: key not found".into()));
    let both = PutOptions::new().with_ignore_lease().with_lease(l2);
    let e = within("put", c.put("b", "v", Some(both))).await.unwrap_err();
    assert_eq!(code_and_message(e), (tonic::Code::InvalidArgument, "etcdserver: lease is provided".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_on_lease() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let id = grant(&mut c, 30).await;
    c.put("leased", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    c.put("plain", "v", None).await.unwrap();
    let cases = [
        (Compare::lease("leased", CompareOp::Equal, id), true),
        (Compare::lease("leased", CompareOp::NotEqual, id), false),
        (Compare::lease("leased", CompareOp::Equal, 0), false),
        (Compare::lease("leased", CompareOp::NotEqual, 0), true),
        (Compare::lease("plain", CompareOp::Equal, 0), true),
        (Compare::lease("plain", CompareOp::NotEqual, id), true),
        // A missing key compares as a key with lease 0.
        (Compare::lease("missing", CompareOp::Equal, 0), true),
        (Compare::lease("missing", CompareOp::Equal, id), false),
    ];
    for (cmp, expected) in cases {
        let txn = Txn::new().when([cmp.clone()]).and_then([TxnOp::get("leased", None)]);
        assert_eq!(within("txn", c.txn(txn)).await.unwrap().succeeded(), expected, "{cmp:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_every_attached_key_in_one_revision() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let id = grant(&mut c, 30).await;
    for key in ["rv/a", "rv/b", "rv/c"] {
        c.put(key, "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    }
    let before = c.put("rv/plain", "v", None).await.unwrap().header().unwrap().revision();
    let mut watch = watch_prefix(&mut c, "rv/", before + 1).await;

    let revoked = within("revoke", c.lease_revoke(id)).await.unwrap();
    let rev = revoked.header().unwrap().revision();
    assert_eq!(rev, before + 1, "the revoke's header carries the one revision of its deletes");

    let resp = next_events(&mut watch).await;
    assert_eq!(resp.header().unwrap().revision(), rev);
    let events: BTreeSet<(String, i64)> = resp
        .events()
        .iter()
        .map(|ev| {
            assert_eq!(ev.event_type(), EventType::Delete);
            let kv = ev.kv().unwrap();
            (kv.key_str().unwrap().to_string(), kv.mod_revision())
        })
        .collect();
    let expected: BTreeSet<(String, i64)> = ["rv/a", "rv/b", "rv/c"].iter().map(|k| (k.to_string(), rev)).collect();
    assert_eq!(events, expected, "one watch response holds every delete, all at the revoke's revision");

    let left = within("get", c.get("rv/", Some(GetOptions::new().with_prefix()))).await.unwrap();
    assert_eq!(left.kvs().iter().map(|kv| kv.key_str().unwrap()).collect::<Vec<_>>(), ["rv/plain"]);
    assert_eq!(left.header().unwrap().revision(), rev);
    let ttl = within("time to live", c.lease_time_to_live(id, None)).await.unwrap();
    assert_eq!(ttl.ttl(), -1, "the revoked lease is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_unknown_lease_fails_with_lease_not_found() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    for id in [0x5eed, 0] {
        let e = within("revoke", c.lease_revoke(id)).await.unwrap_err();
        assert_eq!(code_and_message(e), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
    }
    let id = grant(&mut c, 30).await;
    within("revoke", c.lease_revoke(id)).await.unwrap();
    let twice = within("revoke", c.lease_revoke(id)).await.unwrap_err();
    assert_eq!(code_and_message(twice), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_lease_without_keys_does_not_consume_a_revision() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let rev = c.put("k", "v", None).await.unwrap().header().unwrap().revision();
    let id = grant(&mut c, 30).await;
    let revoked = within("revoke", c.lease_revoke(id)).await.unwrap();
    assert_eq!(revoked.header().unwrap().revision(), rev);
    assert_eq!(c.put("k", "v2", None).await.unwrap().header().unwrap().revision(), rev + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_reports_granted_and_remaining_ttl_and_the_attached_keys() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let (id, other) = (grant(&mut c, 60).await, grant(&mut c, 60).await);
    for key in ["t/1", "t/2", "t/3", "t/4"] {
        c.put(key, "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    }
    c.put("t/other", "v", Some(PutOptions::new().with_lease(other))).await.unwrap();
    c.put("t/none", "v", None).await.unwrap();
    let resp = within("time to live", c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())))
        .await
        .unwrap();
    assert_eq!((resp.id(), resp.granted_ttl()), (id, 60));
    assert!(0 < resp.ttl() && resp.ttl() <= 60, "remaining TTL {} within (0, granted]", resp.ttl());
    let keys: BTreeSet<String> = resp.keys().iter().map(|k| String::from_utf8(k.clone()).unwrap()).collect();
    assert_eq!(keys, set(&["t/1", "t/2", "t/3", "t/4"]));
    assert_eq!(resp.keys().len(), 4, "each key listed once");

    let without = within("time to live", c.lease_time_to_live(id, None)).await.unwrap();
    assert!(without.keys().is_empty(), "keys=false lists no keys");
    assert_eq!(without.granted_ttl(), 60);

    c.delete("t/2", None).await.unwrap();
    assert_eq!(attached_keys(&mut c, id).await, set(&["t/1", "t/3", "t/4"]), "a deleted key is no longer attached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_of_an_unknown_lease_is_ttl_minus_one_not_an_error() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let resp = within("time to live", c.lease_time_to_live(0x5eed, Some(LeaseTimeToLiveOptions::new().with_keys())))
        .await
        .unwrap();
    assert_eq!((resp.id(), resp.ttl(), resp.granted_ttl(), resp.keys().len()), (0x5eed, -1, 0, 0));
    assert!(resp.header().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_lists_the_granted_ids() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let list = |resp: etcd_client::LeaseLeasesResponse| resp.leases().iter().map(|l| l.id()).collect::<Vec<_>>();
    assert!(list(within("leases", c.leases()).await.unwrap()).is_empty());
    let mut granted = BTreeSet::new();
    for _ in 0..3 {
        granted.insert(grant(&mut c, 30).await);
    }
    within("grant", c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(77)))).await.unwrap();
    granted.insert(77);
    let ids = list(within("leases", c.leases()).await.unwrap());
    assert_eq!(ids.len(), granted.len(), "each lease listed once: {ids:?}");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), granted);
    within("revoke", c.lease_revoke(77)).await.unwrap();
    granted.remove(&77);
    let ids = list(within("leases", c.leases()).await.unwrap());
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), granted, "a revoked lease is not listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_responses_carry_the_id_and_the_full_ttl() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let (a, b) = (grant(&mut c, 30).await, grant(&mut c, 45).await);
    let (tx, mut stream, first) = keep_alive_stream(&server, b).await;
    assert_eq!((first.id, first.ttl), (b, 45));
    for id in [a, b, a, a, b] {
        let resp = keep_alive_once(&tx, &mut stream, id).await;
        assert_eq!((resp.id, resp.ttl), (id, if id == a { 30 } else { 45 }));
        assert!(resp.header.is_some());
    }
    // The etcd-client keeper speaks the same stream.
    let (mut keeper, mut answers) = within("keep alive", c.lease_keep_alive(a)).await.unwrap();
    within("send", keeper.keep_alive()).await.unwrap();
    let resp = within("answer", answers.message()).await.unwrap().unwrap();
    assert_eq!((resp.id(), resp.ttl()), (a, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_of_an_unknown_lease_answers_ttl_zero_and_the_stream_goes_on() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let known = grant(&mut c, 30).await;
    let (tx, mut stream, first) = keep_alive_stream(&server, 0x5eed).await;
    assert_eq!((first.id, first.ttl), (0x5eed, 0));
    for (id, ttl) in [(known, 30), (0, 0), (0x5eed, 0), (known, 30)] {
        let resp = keep_alive_once(&tx, &mut stream, id).await;
        assert_eq!((resp.id, resp.ttl), (id, ttl), "keep-alive of {id:#x}");
    }
    within("revoke", c.lease_revoke(known)).await.unwrap();
    let resp = keep_alive_once(&tx, &mut stream, known).await;
    assert_eq!((resp.id, resp.ttl), (known, 0), "a revoked lease is unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_deletes_its_keys_within_ttl_plus_one_second() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let rev = revision(&mut c).await;
    let mut watch = watch_prefix(&mut c, "exp/", rev + 1).await;
    let resp = within("grant", c.lease_grant(MIN_TTL, None)).await.unwrap();
    let granted_at = Instant::now();
    let id = resp.id();
    for key in ["exp/a", "exp/b", "exp/c"] {
        c.put(key, "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    }
    c.put("exp/plain", "v", None).await.unwrap();

    let deadline = granted_at + Duration::from_secs(resp.ttl() as u64 + 1);
    let mut gone = false;
    for _ in 0..1000 {
        let left = within("get", c.get("exp/", Some(GetOptions::new().with_prefix().with_keys_only()))).await.unwrap();
        if left.count() == 1 {
            assert_eq!(left.kvs()[0].key(), b"exp/plain");
            gone = true;
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the keys of a lease with TTL {} were still there {:?} after the grant",
        resp.ttl(),
        granted_at.elapsed()
    );

    // The watch sees the four puts, then the three deletes, all at one revision (expiry revokes).
    let (mut puts, mut deletes) = (0, Vec::new());
    for _ in 0..100 {
        if deletes.len() >= 3 {
            break;
        }
        for ev in next_events(&mut watch).await.events() {
            let kv = ev.kv().unwrap();
            match ev.event_type() {
                EventType::Put => puts += 1,
                EventType::Delete => deletes.push((kv.key_str().unwrap().to_string(), kv.mod_revision())),
            }
        }
    }
    assert_eq!(puts, 4);
    let keys: BTreeSet<String> = deletes.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!((deletes.len(), keys), (3, set(&["exp/a", "exp/b", "exp/c"])));
    assert!(deletes.iter().all(|(_, r)| *r == deletes[0].1), "all deletes in one revision: {deletes:?}");

    assert_eq!(within("time to live", c.lease_time_to_live(id, None)).await.unwrap().ttl(), -1);
    assert!(within("leases", c.leases()).await.unwrap().leases().iter().all(|l| l.id() != id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_kept_alive_for_three_ttls_keeps_its_keys() {
    let (_dir, server) = start().await;
    let mut c = server.client().await;
    let resp = within("grant", c.lease_grant(MIN_TTL, None)).await.unwrap();
    let (id, ttl) = (resp.id(), resp.ttl());
    c.put("alive", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    let (mut keeper, mut answers) = within("keep alive", c.lease_keep_alive(id)).await.unwrap();
    let period = Duration::from_millis(ttl as u64 * 1000 / 3);
    let until = Instant::now() + Duration::from_secs(3 * ttl as u64);
    let mut beats = 0;
    // A keep-alive cadence (as etcd's clients use: every TTL/3), not a synchronisation.
    while Instant::now() < until && beats < 100 {
        tokio::time::sleep(period).await;
        within("send keep-alive", keeper.keep_alive()).await.unwrap();
        let answer = within("keep-alive answer", answers.message()).await.unwrap().unwrap();
        assert_eq!((answer.id(), answer.ttl()), (id, ttl));
        beats += 1;
    }
    assert_eq!(lease_of(&mut c, "alive").await, Some(id), "the key outlived three TTLs");
    let left = within("time to live", c.lease_time_to_live(id, None)).await.unwrap();
    assert!(left.ttl() > 0, "the lease is alive: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_a_restart_with_their_ttl_and_keys_and_a_fresh_deadline() {
    let (dir, mut server) = start().await;
    let mut c = server.client().await;
    let long = grant(&mut c, 30).await;
    let chosen = within("grant", c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x7777)))).await.unwrap().id();
    for key in ["rs/a", "rs/b"] {
        c.put(key, "v", Some(PutOptions::new().with_lease(long))).await.unwrap();
    }
    c.put("rs/c", "v", Some(PutOptions::new().with_lease(chosen))).await.unwrap();
    // Let `long` visibly age (remaining TTL at most granted - 3) so a fresh deadline is observable.
    let mut aged = false;
    for _ in 0..200 {
        if within("time to live", c.lease_time_to_live(long, None)).await.unwrap().ttl() <= 27 {
            aged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(aged, "the lease did not age");
    // A short lease that is not kept alive must still expire after the restart.
    let short = within("grant", c.lease_grant(5, None)).await.unwrap().id();
    c.put("rs/short", "v", Some(PutOptions::new().with_lease(short))).await.unwrap();
    drop(c);
    tokio::task::block_in_place(|| server.stop()); // etcd exits by re-raising SIGTERM: no status check
    drop(server);

    let server = restart(dir.path()).await;
    let mut c = server.client().await;
    let ids: BTreeSet<i64> = within("leases", c.leases()).await.unwrap().leases().iter().map(|l| l.id()).collect();
    assert!(ids.contains(&long) && ids.contains(&chosen), "{ids:?}");
    for (id, granted, keys) in [(long, 30, set(&["rs/a", "rs/b"])), (chosen, 60, set(&["rs/c"]))] {
        let resp = within("time to live", c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())))
            .await
            .unwrap();
        assert_eq!(resp.granted_ttl(), granted);
        assert!(
            granted - 2 <= resp.ttl() && resp.ttl() <= granted,
            "after a restart the remaining TTL starts afresh: {} of {granted}",
            resp.ttl()
        );
        let got: BTreeSet<String> = resp.keys().iter().map(|k| String::from_utf8(k.clone()).unwrap()).collect();
        assert_eq!(got, keys);
        assert_eq!(lease_of(&mut c, keys.first().unwrap()).await, Some(id));
    }
    // The keep-alive and revoke of a restored lease work as before.
    let (_tx, _stream, resp) = keep_alive_stream(&server, chosen).await;
    assert_eq!((resp.id, resp.ttl), (chosen, 60));
    within("revoke", c.lease_revoke(long)).await.unwrap();
    let left = within("get", c.get("rs/", Some(GetOptions::new().with_prefix().with_keys_only()))).await.unwrap();
    let left: BTreeSet<String> = left.kvs().iter().map(|kv| kv.key_str().unwrap().to_string()).collect();
    assert!(left.is_subset(&set(&["rs/c", "rs/short"])) && left.contains("rs/c"), "{left:?}");
    // The short lease expires (the wait is a bound on hanging, not a timing assertion).
    let mut expired = false;
    for _ in 0..400 {
        if within("get", c.get("rs/short", None)).await.unwrap().count() == 0 {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expired, "a lease restored after a restart still expires");
}
