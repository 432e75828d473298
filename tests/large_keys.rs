//! Keys longer than the storage engine's 65,535-byte limit work on every path as in etcd (up to the
//! request limit): put, get, ranges and prefixes across them, counts, txns, deletes, history reads,
//! watches, lease-attached keys, compaction, restart, disk-loss restore (WAL and checkpoint) and
//! `t4 inspect`. A panic on one of T4's threads stops the process instead of leaving it half-alive.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, wait_for_checkpoint};
use etcd_client::{Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};

/// A key of `len` bytes: `prefix`, then `fill` up to `len - 1`, then `last`.
fn key(prefix: &str, fill: u8, len: usize, last: u8) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.resize(len - 1, fill);
    k.push(last);
    k
}

/// Long keys sharing one long prefix (the engine stores them under one bucket), one just over the
/// limit, one of 1 MB, and short neighbours on either side.
fn long_keys() -> Vec<Vec<u8>> {
    let mut keys = vec![
        key("big/", b'k', 65_536, b'k'),
        key("big/", b'k', 70_000, b'a'),
        key("big/", b'k', 70_000, b'z'),
        key("big/", b'k', 70_001, 0),
        key("big/", b'k', 100_000, b'm'),
        key("big/", b'q', 1_000_000, b'q'),
    ];
    keys.sort();
    keys
}

async fn keys_under(client: &mut etcd_client::Client, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let resp = client.get(prefix, Some(GetOptions::new().with_prefix())).await.expect("prefix get");
    resp.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect()
}

async fn state(client: &mut etcd_client::Client) -> (i64, Vec<(Vec<u8>, Vec<u8>, i64, i64)>) {
    let resp = client.get(vec![0], Some(GetOptions::new().with_from_key())).await.expect("get all");
    let kvs = resp.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision(), kv.version()));
    (resp.header().expect("header").revision(), kvs.collect())
}

/// Drives every client path with long keys; returns the revision after the writes.
async fn exercise(server: &Server) -> i64 {
    let mut client = server.client().await;
    let keys = long_keys();
    client.put("a", "before", None).await.expect("short key before");
    client.put("c", "after", None).await.expect("short key after");
    let mut watch_client = server.client().await;
    let mut events =
        watch_client.watch("big/", Some(WatchOptions::new().with_prefix())).await.expect("watch the prefix");
    let mut first_revision = 0;
    for (i, k) in keys.iter().enumerate() {
        let resp = client.put(k.clone(), format!("v{i}"), None).await.expect("put a long key");
        if i == 0 {
            first_revision = resp.header().unwrap().revision();
        }
    }
    // point reads, and a read of a key that only shares a long prefix with stored ones
    for (i, k) in keys.iter().enumerate() {
        let resp = client.get(k.clone(), None).await.expect("get a long key");
        assert_eq!(resp.kvs().len(), 1, "key of {} bytes", k.len());
        assert_eq!(resp.kvs()[0].key(), k.as_slice());
        assert_eq!(resp.kvs()[0].value(), format!("v{i}").as_bytes());
    }
    let absent = key("big/", b'k', 70_000, b'b');
    assert!(client.get(absent.clone(), None).await.expect("get absent").kvs().is_empty());
    // ranges across and inside the shared prefix, in key order, with counts and limits
    let expected: Vec<_> = keys.iter().enumerate().map(|(i, k)| (k.clone(), format!("v{i}").into_bytes())).collect();
    assert_eq!(keys_under(&mut client, b"big/").await, expected);
    let from = client.get(absent.clone(), Some(GetOptions::new().with_range("c"))).await.expect("range [absent, c)");
    let from_keys: Vec<_> = from.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    assert_eq!(from_keys, keys.iter().filter(|k| k.as_slice() > absent.as_slice()).cloned().collect::<Vec<_>>());
    let count = client.get("big/", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("count");
    assert_eq!(count.count(), keys.len() as i64);
    let limited = client.get("big/", Some(GetOptions::new().with_prefix().with_limit(2))).await.expect("limit");
    assert_eq!(limited.kvs().iter().map(|kv| kv.key().to_vec()).collect::<Vec<_>>(), keys[..2].to_vec());
    assert!(limited.more());
    // txn: compare on a long key, then write and delete long keys
    let txn = Txn::new()
        .when([Compare::value(keys[1].clone(), CompareOp::Equal, "v1")])
        .and_then([TxnOp::put(keys[2].clone(), "txn", None), TxnOp::delete(keys[3].clone(), None)]);
    assert!(client.txn(txn).await.expect("txn").succeeded());
    client.delete(keys[4].clone(), None).await.expect("delete a long key");
    // a lease-attached long key goes with its lease
    let lease = client.lease_grant(60, None).await.expect("grant").id();
    let leased = key("lease/", b'l', 80_000, b'l');
    client.put(leased.clone(), "leased", Some(PutOptions::new().with_lease(lease))).await.expect("put with lease");
    let ttl = client.lease_time_to_live(lease, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys())).await;
    assert_eq!(ttl.expect("time to live").keys(), std::slice::from_ref(&leased));
    client.lease_revoke(lease).await.expect("revoke");
    assert!(client.get(leased, None).await.expect("get leased").kvs().is_empty());
    // history: the prefix as it was after the first put
    let past = client
        .get("big/", Some(GetOptions::new().with_prefix().with_revision(first_revision)))
        .await
        .expect("read at a past revision");
    assert_eq!(past.kvs().iter().map(|kv| kv.key().to_vec()).collect::<Vec<_>>(), keys[..1].to_vec());
    // the watch saw every put with its whole key, in order
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < keys.len() + 2 && Instant::now() < deadline {
        let resp = tokio::time::timeout(Duration::from_secs(10), events.message()).await;
        let resp = resp.expect("watch events in time").expect("watch stream").expect("open stream");
        for event in resp.events() {
            let kind = if event.event_type() == EventType::Put { "put" } else { "delete" };
            seen.push((kind, event.kv().expect("kv").key().to_vec()));
        }
    }
    let mut want: Vec<_> = keys.iter().map(|k| ("put", k.clone())).collect();
    want.extend([("put", keys[2].clone()), ("delete", keys[3].clone())]);
    assert_eq!(seen, want);
    let revision = client.delete(keys[5].clone(), None).await.expect("delete").header().unwrap().revision();
    // compaction past all of it keeps the current state readable
    client.compact(revision - 1, None).await.expect("compact");
    revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_keys_work_on_every_path_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_under_test(dir.path(), &[]);
    exercise(&server).await;
    let before = state(&mut server.client().await).await;
    assert_eq!(before.1.len(), 2 + 3, "a, c, and the three long keys left");
    if Server::testing_reference() {
        return;
    }
    server.stop();
    let server = Server::start_t4(dir.path(), &[]);
    assert_eq!(state(&mut server.client().await).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_keys_are_restored_from_object_storage_by_wal_and_by_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let store_args = ["--object-store-dir", objects.to_str().unwrap()];
    let mut server = Server::start_t4(&data, &store_args);
    exercise(&server).await;
    let before = state(&mut server.client().await).await;
    server.kill();

    // disk loss: the WAL alone brings every long key back
    std::fs::remove_dir_all(&data).unwrap();
    let mut server = Server::start_t4(&data, &store_args);
    assert_eq!(state(&mut server.client().await).await, before);
    server.stop();

    // disk loss after a checkpoint: its tables carry the long keys' stored form
    let mut server = Server::start_t4(&data, &[&store_args[..], &["--checkpoint-entries", "1"]].concat());
    let mut client = server.client().await;
    client.put(key("big/", b'k', 90_000, b'c'), "checkpointed", None).await.expect("put after restart");
    let before = state(&mut client).await;
    wait_for_checkpoint(&objects, before.0);
    server.kill();
    std::fs::remove_dir_all(&data).unwrap();
    let mut server = Server::start_t4(&data, &store_args);
    assert_eq!(state(&mut server.client().await).await, before);
    server.stop();
    inspect_shows_long_keys(&data, &before.1);
}

fn inspect_shows_long_keys(data: &Path, live: &[(Vec<u8>, Vec<u8>, i64, i64)]) {
    let output = Command::new(common::t4_binary())
        .args(["inspect", "list", "--data-dir"])
        .arg(data)
        .args(["--output", "json", "--hex", "--limit", "0"])
        .stdin(Stdio::null())
        .output()
        .expect("run t4 inspect");
    assert!(output.status.success(), "inspect list: {}", String::from_utf8_lossy(&output.stderr));
    let listed = String::from_utf8_lossy(&output.stdout);
    for (key, ..) in live {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(listed.contains(&hex), "inspect lists the key of {} bytes", key.len());
    }
}

#[test]
fn a_panic_on_a_t4_thread_stops_the_process_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::try_start_t4_env(dir.path(), &[], &[("FAILPOINTS", "store-commit=panic")]);
    let mut server = server.expect("t4 starts (the fault point fires on the first commit)");
    let pid = server.pid();
    let put = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint))
        .args(["--command-timeout", "5s", "put", "k", "v"])
        .output()
        .expect("run etcdctl");
    assert!(!put.status.success(), "the write whose commit panicked is not acknowledged");
    let status = server.wait_exit(Duration::from_secs(30)).expect("the process stops instead of serving half-alive");
    assert!(!status.success(), "pid {pid} exits with a failure: {status:?}");
    let stderr = server.stderr();
    assert!(stderr.contains("t4: stopping: thread t4-committer panicked"), "stderr names the thread: {stderr}");
}
