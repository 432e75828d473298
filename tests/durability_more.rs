//! More object-storage durability: GC keeps exactly what a restore needs (and what a branch pins),
//! async upload flushes on a graceful stop and restores a prefix after a crash, a restart on a kept
//! disk continues under a new term whose objects replay with the old ones, a node that ran without a
//! store uploads all its data (lease records included) when given one, S3 credentials fail closed,
//! and leases and compactions survive a disk loss.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use common::kv::range_all;
use common::objects::wal_object_last_revision;
use t4::object::{DirStore, ObjectStore};
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::lease_client::LeaseClient;
use t4::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest,
};
use t4::proto::mvccpb::KeyValue;
use tonic::transport::Channel;

/// What a client reads at each revision (an error below the compaction), by revision.
type History = BTreeMap<i64, Result<Vec<KeyValue>, String>>;

async fn current_revision(kv: &mut KvClient<Channel>) -> i64 {
    range_all(kv, 0).await.expect("range at the current revision").0
}

/// Every key at every revision from the first through `through`.
async fn history(kv: &mut KvClient<Channel>, through: i64) -> History {
    let mut history = History::new();
    for revision in 1..=through {
        history.insert(revision, range_all(kv, revision).await.map(|(_, kvs)| kvs));
    }
    history
}

/// The whole readable state: the current revision and every revision's keys.
async fn full_state(kv: &mut KvClient<Channel>) -> (i64, History) {
    let revision = current_revision(kv).await;
    (revision, history(kv, revision).await)
}

/// Writes `count` changes one after another over `keys` keys, every fifth a delete; returns the
/// revision after the last.
async fn write_sequence(kv: &mut KvClient<Channel>, tag: &str, count: usize, keys: usize) -> i64 {
    let mut revision = 0;
    for i in 0..count {
        let key = format!("key/{:03}", (i * 37) % keys).into_bytes();
        let header = if i % 5 == 4 {
            kv.delete_range(DeleteRangeRequest { key, ..Default::default() }).await.expect("delete").into_inner().header
        } else {
            let value = format!("{tag}-{i}").into_bytes();
            kv.put(PutRequest { key, value, ..Default::default() }).await.expect("put").into_inner().header
        };
        revision = header.expect("header").revision;
    }
    revision
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str, lease: i64) -> i64 {
    let request = PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
    kv.put(request).await.expect("put").into_inner().header.expect("header").revision
}

fn store_args(objects: &Path) -> Vec<String> {
    vec!["--object-store-dir".into(), objects.to_str().expect("utf-8 path").into()]
}

/// [`store_args`] without checkpoints by time: a node that starts with writes no checkpoint covers
/// would otherwise checkpoint at once, and a test of what the WAL alone does must not race with it.
fn wal_only_store_args(objects: &Path) -> Vec<String> {
    let mut args = store_args(objects);
    args.extend(["--checkpoint-interval", "0"].map(String::from));
    args
}

fn start(data: &Path, args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_t4(data, &args)
}

/// The keys of a store under `prefix`.
async fn keys(store: &DirStore, prefix: &str) -> Vec<String> {
    store.list(prefix, None).await.expect("list")
}

/// `(term, revision, sub)` of a WAL object's key `wal/<term>/<rev>[-<sub>]`.
fn wal_position(key: &str) -> (u64, i64, u32) {
    let rest = key.strip_prefix("wal/").expect("a WAL key");
    let (term, rest) = rest.split_once('/').expect("wal/<term>/...");
    let (revision, sub) = rest.split_once('-').unwrap_or((rest, "0"));
    (term.parse().unwrap(), revision.parse().unwrap(), sub.parse().unwrap())
}

/// The revision of a checkpoint manifest's key `checkpoint/<term>/<rev>/manifest.json`.
fn checkpoint_revision(key: &str) -> i64 {
    key.split('/').nth(2).expect("checkpoint/<term>/<rev>/manifest.json").parse().unwrap()
}

/// The newest revision any WAL object under `objects` holds, read from its frames.
fn wal_last_revision(objects: &Path) -> i64 {
    let mut last = 0;
    let Ok(terms) = std::fs::read_dir(objects.join("wal")) else { return last };
    for term in terms.flatten() {
        for object in std::fs::read_dir(term.path()).into_iter().flatten().flatten() {
            let Ok(bytes) = std::fs::read(object.path()) else { continue };
            last = last.max(wal_object_last_revision(&bytes));
        }
    }
    last
}

// ---- GC (embedded nodes) ----

fn embedded_config(data: &Path, objects: &Path) -> t4::Config {
    let mut config = t4::Config::new(data);
    config.cores = Some(1);
    config.object_store.object_store_dir = Some(objects.to_path_buf());
    config.object_store.checkpoint_interval = 0;
    config.object_store.checkpoint_table_bytes = 16 * 1024;
    config
}

type EmbeddedState = (i64, Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)>);

async fn embedded_state(node: &t4::Node) -> EmbeddedState {
    let kvs = node.range(vec![0], vec![0]).await.expect("range");
    let kvs = kvs.into_iter().map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)).collect();
    (node.revision().await.expect("revision"), kvs)
}

/// 1500 keys of 150 bytes, in 15 transactions; returns the node.
async fn open_filled(data: &Path, objects: &Path) -> t4::Node {
    let node = t4::Node::open(embedded_config(data, objects)).unwrap();
    for chunk in 0..15 {
        let mut txn = t4::Txn::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            txn = txn.and_then([t4::TxnOp::put(format!("key/{i:05}"), vec![b'a'; 150])]);
        }
        node.txn(txn).await.unwrap();
    }
    node
}

/// Rewrites the first 20 keys one by one (20 revisions, one WAL object each), so each checkpoint
/// differs from the last in its first tables only, then checkpoints; returns the manifest's key.
async fn change_and_checkpoint(node: &t4::Node, round: u8) -> String {
    for i in 0..20 {
        node.put(format!("key/{i:05}"), vec![b'a' + round; 150]).await.unwrap();
    }
    node.checkpoint().await.unwrap().expect("a new checkpoint")
}

/// The table keys a checkpoint manifest lists.
async fn listed_tables(store: &DirStore, key: &str) -> BTreeSet<String> {
    let object = store.get(key).await.unwrap().unwrap_or_else(|| panic!("{key} is missing"));
    let doc: serde_json::Value = serde_json::from_slice(&object.bytes).unwrap();
    doc["tables"].as_array().unwrap().iter().map(|t| t["key"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_the_two_newest_checkpoints_their_tables_and_the_wal_from_the_older_on() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let node = open_filled(&data, &objects).await;
    let store = DirStore::open(&objects).unwrap();
    let mut checkpoints = Vec::new();
    let mut tables = BTreeMap::new();
    for round in 1..=4 {
        let key = change_and_checkpoint(&node, round).await;
        tables.insert(key.clone(), listed_tables(&store, &key).await);
        checkpoints.push(key);
    }
    for i in 0..10 {
        node.put(format!("late/{i}"), "x").await.unwrap();
    }
    let before = embedded_state(&node).await;
    node.close().await.unwrap();

    let (older, newest) = (&checkpoints[2], &checkpoints[3]);
    assert_eq!(keys(&store, "checkpoint/").await, [older.clone(), newest.clone()], "the two newest checkpoints");
    let kept: BTreeSet<String> = tables[older].union(&tables[newest]).cloned().collect();
    let stored: BTreeSet<String> = keys(&store, "sst/").await.into_iter().collect();
    assert_eq!(stored, kept, "exactly the tables the kept checkpoints list");
    let first_only: Vec<_> = tables[&checkpoints[0]].difference(&kept).collect();
    assert!(!first_only.is_empty(), "the first checkpoint had tables of its own (and they are gone)");
    assert!(tables[&checkpoints[0]].intersection(&kept).count() > 0, "and tables it shares, kept");
    // Sequential writes: one WAL object per revision. Those wholly before the older kept checkpoint
    // are gone; from its revision on every one remains.
    let wal: Vec<(u64, i64, u32)> = keys(&store, "wal/").await.iter().map(|k| wal_position(k)).collect();
    let starts: Vec<(i64, u32)> = wal.iter().map(|&(_, rev, sub)| (rev, sub)).collect();
    let expected: Vec<(i64, u32)> = (checkpoint_revision(older)..=before.0).map(|rev| (rev, 0)).collect();
    assert_eq!(starts, expected, "WAL objects from the older kept checkpoint's revision on");
    assert!(wal.iter().all(|w| w.0 == wal[0].0), "one run, one term: {wal:?}");

    // A restore from scratch gives the exact state...
    std::fs::remove_dir_all(&data).unwrap();
    let node = t4::Node::open(embedded_config(&data, &objects)).unwrap();
    assert_eq!(embedded_state(&node).await, before, "restored from the newest checkpoint and the WAL");
    node.close().await.unwrap();
    // ...and so does one that must fall back to the older kept checkpoint (the WAL after it is whole).
    store.put(newest, b"{ damaged".to_vec()).await.unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let node = t4::Node::open(embedded_config(&data, &objects)).unwrap();
    assert_eq!(embedded_state(&node).await, before, "restored from the older checkpoint and the WAL");
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_a_checkpoint_a_branch_pins_and_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let node = open_filled(&data, &objects).await;
    let store = DirStore::open(&objects).unwrap();
    let pinned = change_and_checkpoint(&node, 1).await;
    let second = change_and_checkpoint(&node, 2).await;
    let pin = serde_json::json!({ "format_version": 1, "checkpoint_key": pinned });
    store.put("branches/x", serde_json::to_vec(&pin).unwrap()).await.unwrap();
    let third = change_and_checkpoint(&node, 3).await;
    let fourth = change_and_checkpoint(&node, 4).await;
    node.close().await.unwrap();

    let mut expected = vec![pinned.clone(), third.clone(), fourth.clone()];
    expected.sort();
    assert_eq!(keys(&store, "checkpoint/").await, expected, "the pinned one and the two newest, not {second}");
    let mut kept = BTreeSet::new();
    for key in &expected {
        kept.extend(listed_tables(&store, key).await);
    }
    let stored: BTreeSet<String> = keys(&store, "sst/").await.into_iter().collect();
    assert_eq!(stored, kept, "every table of the kept checkpoints, the pinned one's included, and no other");
    let pinned_only = listed_tables(&store, &pinned).await.difference(&listed_tables(&store, &fourth).await).count();
    assert!(pinned_only > 0, "the pin kept tables only the pinned checkpoint lists");
}

// ---- async upload ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_upload_flushes_everything_on_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    // Objects are cut by age only after a minute: everything the stop finds must be flushed by it.
    let mut args = store_args(&objects);
    args.extend(["--wal-sync-upload", "false", "--wal-segment-age-ms", "60000"].map(String::from));
    let mut server = start(&data, &args);
    let mut kv = server.kv().await;
    write_sequence(&mut kv, "a", 60, 25).await;
    let before = full_state(&mut kv).await;
    assert!(server.stop().success(), "a graceful stop exits cleanly");

    std::fs::remove_dir_all(&data).unwrap();
    let server = start(&data, &args);
    let mut kv = server.kv().await;
    assert_eq!(full_state(&mut kv).await, before, "the stop uploaded every write");
    assert_eq!(put(&mut kv, "next", "v", 0).await, before.0 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_upload_after_a_crash_restores_a_prefix_of_the_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let mut args = store_args(&objects);
    args.extend(["--wal-sync-upload", "false", "--wal-segment-age-ms", "200"].map(String::from));
    let mut server = start(&data, &args);
    let mut kv = server.kv().await;
    let uploaded = write_sequence(&mut kv, "a", 30, 12).await;
    // Wait (bounded) until object storage holds these: the restore must not lose them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while wal_last_revision(&objects) < uploaded {
        assert!(Instant::now() < deadline, "revision {uploaded} not uploaded within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = write_sequence(&mut kv, "b", 30, 12).await;
    let written = history(&mut kv, last).await;
    server.kill(); // the last writes may not be uploaded yet

    std::fs::remove_dir_all(&data).unwrap();
    let server = start(&data, &args);
    let mut kv = server.kv().await;
    let (restored, restored_history) = full_state(&mut kv).await;
    println!("restored revision {restored} of {last} ({uploaded} known uploaded)");
    assert!((uploaded..=last).contains(&restored), "restored revision {restored} in {uploaded}..={last}");
    let prefix: History = written.into_iter().filter(|(rev, _)| *rev <= restored).collect();
    assert_eq!(restored_history, prefix, "every revision reads as the lost node had it");
    assert_eq!(put(&mut kv, "next", "v", 0).await, restored + 1);
}

// ---- restarts and terms ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_kept_disk_continues_and_both_terms_replay_after_a_disk_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let args = wal_only_store_args(&objects);
    let mut server = start(&data, &args);
    let mut kv = server.kv().await;
    write_sequence(&mut kv, "a", 50, 20).await;
    let first = full_state(&mut kv).await;
    server.kill();

    let mut server = start(&data, &args);
    let mut kv = server.kv().await;
    assert_eq!(full_state(&mut kv).await, first, "the kept disk serves the same state");
    assert_eq!(put(&mut kv, "next", "v", 0).await, first.0 + 1, "writes continue at the next revision");
    write_sequence(&mut kv, "b", 50, 20).await;
    let second = full_state(&mut kv).await;
    server.kill();
    let store = DirStore::open(&objects).unwrap();
    let terms: BTreeSet<u64> = keys(&store, "wal/").await.iter().map(|k| wal_position(k).0).collect();
    assert_eq!(terms.len(), 2, "each run wrote under its own term: {terms:?}");

    std::fs::remove_dir_all(&data).unwrap();
    let server = start(&data, &args);
    let mut kv = server.kv().await;
    assert_eq!(full_state(&mut kv).await, second, "both terms' WAL objects replay, in order");
}

/// A node runs without an object store (compacting first if `compact`), then is started with one:
/// its data is uploaded at that start, so a later disk loss restores everything.
async fn data_written_without_a_store_is_uploaded_when_one_is_given(compact: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let mut server = start(&data, &[]);
    let mut kv = server.kv().await;
    let written = write_sequence(&mut kv, "a", 60, 20).await;
    if compact {
        kv.compact(CompactionRequest { revision: written - 20, physical: true }).await.expect("compact");
    }
    write_sequence(&mut kv, "b", 20, 20).await;
    assert!(server.stop().success());

    let args = wal_only_store_args(&objects);
    let mut server = start(&data, &args);
    let store = DirStore::open(&objects).unwrap();
    let checkpoints = keys(&store, "checkpoint/").await;
    if compact {
        // The log no longer holds the compacted records: only a checkpoint can carry them.
        assert_eq!(checkpoints.len(), 1, "a checkpoint of the whole state: {checkpoints:?}");
    } else {
        assert!(checkpoints.is_empty(), "the log holds every record: WAL objects suffice");
        assert!(!keys(&store, "wal/").await.is_empty());
    }
    let mut kv = server.kv().await;
    write_sequence(&mut kv, "c", 10, 20).await;
    let before = full_state(&mut kv).await;
    server.kill();

    std::fs::remove_dir_all(&data).unwrap();
    let server = start(&data, &args);
    let mut kv = server.kv().await;
    assert_eq!(full_state(&mut kv).await, before, "everything, from before the store too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_written_without_a_store_is_uploaded_as_wal_when_one_is_given() {
    data_written_without_a_store_is_uploaded_when_one_is_given(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_data_written_without_a_store_is_checkpointed_when_one_is_given() {
    data_written_without_a_store_is_uploaded_when_one_is_given(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_of_many_objects_written_without_a_store_keeps_every_lease_record() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let mut server = start(&data, &[]);
    let mut kv = server.kv().await;
    let mut leases = LeaseClient::new(common::channel(&server.endpoint).await.unwrap());
    // 1 MiB values: the tail upload cuts its objects (8 MiB) right after a put, before the lease
    // record that follows it at the same revision.
    let value = "v".repeat(1024 * 1024);
    let mut granted = Vec::new();
    for i in 0..10 {
        put(&mut kv, &format!("big/{i}"), &value, 0).await;
        granted.push(leases.lease_grant(LeaseGrantRequest { ttl: 600, id: 0 }).await.unwrap().into_inner().id);
    }
    granted.sort();
    assert!(server.stop().success());
    let args = wal_only_store_args(&objects);
    let mut server = start(&data, &args);
    let store = DirStore::open(&objects).unwrap();
    assert!(keys(&store, "wal/").await.len() >= 2, "the tail left in several WAL objects");
    assert!(keys(&store, "checkpoint/").await.is_empty(), "the log holds every record: no checkpoint");
    server.kill();

    std::fs::remove_dir_all(&data).unwrap();
    let server = start(&data, &args);
    let mut leases = LeaseClient::new(common::channel(&server.endpoint).await.unwrap());
    let response = leases.lease_leases(LeaseLeasesRequest {}).await.unwrap().into_inner();
    let mut listed: Vec<i64> = response.leases.iter().map(|l| l.id).collect();
    listed.sort();
    assert_eq!(listed, granted, "every lease granted before the store was given");
}

// ---- credentials ----

#[test]
fn s3_without_credentials_fails_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Empty values count as unset (the test process may have real ones); default-chain credentials
    // are set to show they are never used.
    let env = [
        ("T4_S3_ACCESS_KEY_ID", ""),
        ("T4_S3_SECRET_ACCESS_KEY", ""),
        ("T4_S3_PROFILE", ""),
        ("AWS_ACCESS_KEY_ID", "default-chain-key"),
        ("AWS_SECRET_ACCESS_KEY", "default-chain-secret"),
    ];
    let args = ["--s3-bucket", "b", "--s3-endpoint", "http://127.0.0.1:1"];
    let started = Instant::now();
    let error = Server::try_start_t4_env(&dir.path().join("data"), &args, &env)
        .err()
        .expect("t4 refuses to start without S3 credentials");
    println!("refused after {:?}: {error}", started.elapsed());
    assert!(error.starts_with("status exit status: "), "it exited by itself: {error}");
    assert!(!error.starts_with("status exit status: 0"), "with a failure status: {error}");
    assert!(error.contains("T4_S3_ACCESS_KEY_ID") && error.contains("--s3-profile"), "{error}");
}

// ---- leases and compaction ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_compactions_survive_a_disk_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let args = store_args(&objects);
    let mut server = start(&data, &args);
    let mut kv = server.kv().await;
    let mut leases = LeaseClient::new(common::channel(&server.endpoint).await.unwrap());
    let grant = |ttl| LeaseGrantRequest { ttl, id: 0 };
    let kept = leases.lease_grant(grant(60)).await.unwrap().into_inner().id;
    let revoked = leases.lease_grant(grant(30)).await.unwrap().into_inner().id;
    put(&mut kv, "leased/1", "a", kept).await;
    put(&mut kv, "leased/2", "b", kept).await;
    put(&mut kv, "doomed", "c", revoked).await;
    leases.lease_revoke(LeaseRevokeRequest { id: revoked }).await.unwrap();
    write_sequence(&mut kv, "a", 20, 8).await;
    let compact = current_revision(&mut kv).await - 5;
    kv.compact(CompactionRequest { revision: compact, physical: true }).await.unwrap();
    write_sequence(&mut kv, "b", 10, 8).await;
    let before = full_state(&mut kv).await;
    server.kill();

    std::fs::remove_dir_all(&data).unwrap();
    let server = start(&data, &args);
    let mut kv = server.kv().await;
    let mut leases = LeaseClient::new(common::channel(&server.endpoint).await.unwrap());
    assert_eq!(full_state(&mut kv).await, before, "keys, history and the compaction");
    let below = range_all(&mut kv, compact - 1).await.expect_err("below the compaction");
    assert!(below.contains("required revision has been compacted"), "{below}");
    assert!(range_all(&mut kv, compact).await.is_ok(), "the compaction revision itself reads");
    let listed: Vec<i64> =
        leases.lease_leases(LeaseLeasesRequest {}).await.unwrap().into_inner().leases.iter().map(|l| l.id).collect();
    assert_eq!(listed, [kept], "the granted lease, not the revoked one");
    let ttl = |id| LeaseTimeToLiveRequest { id, keys: true };
    let status = leases.lease_time_to_live(ttl(kept)).await.unwrap().into_inner();
    assert_eq!(status.granted_ttl, 60);
    assert!(status.ttl > 0 && status.ttl <= 60, "a fresh TTL: {}", status.ttl);
    let mut attached = status.keys;
    attached.sort();
    assert_eq!(attached, [b"leased/1".to_vec(), b"leased/2".to_vec()]);
    assert_eq!(leases.lease_time_to_live(ttl(revoked)).await.unwrap().into_inner().ttl, -1, "revoked");
    // The keys are really attached: revoking the lease deletes them.
    leases.lease_revoke(LeaseRevokeRequest { id: kept }).await.unwrap();
    let left = range_all(&mut kv, 0).await.unwrap().1;
    assert!(left.iter().all(|kv| !kv.key.starts_with(b"leased/") && kv.key != b"doomed"), "{left:?}");
}
