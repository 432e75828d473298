//! Object-storage durability of the real `t4` server: a node that loses its disk comes back from
//! object storage with every acknowledged write, the same revisions and its history above the last
//! compaction; checkpoints plus WAL replay give the exact state; corrupt objects are detected.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kv::range_all;
use common::{Server, wait_for_checkpoint};
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use t4::proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, StatusRequest};
use t4::proto::mvccpb::KeyValue;
use tonic::transport::Channel;

/// Everything a client can read of the state: every key at the current revision, the current and
/// compact revisions, and every key at each of a few past revisions (history).
#[derive(Debug, PartialEq)]
struct Snapshot {
    revision: i64,
    live: Vec<KeyValue>,
    past: BTreeMap<i64, Result<Vec<KeyValue>, String>>,
}

async fn snapshot(kv: &mut KvClient<Channel>, past: &[i64]) -> Snapshot {
    let (revision, live) = range_all(kv, 0).await.expect("range at the current revision");
    let mut history = BTreeMap::new();
    for &rev in past {
        history.insert(rev, range_all(kv, rev).await.map(|(_, kvs)| kvs));
    }
    Snapshot { revision, live, past: history }
}

/// Writes `count` puts over `keys` distinct keys from 8 concurrent clients, with deletes mixed in;
/// returns the revision of the last acknowledged write.
async fn write_load(endpoint: &str, tag: &str, count: usize, keys: usize) -> i64 {
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let endpoint = endpoint.to_string();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut kv = KvClient::new(common::channel(&endpoint).await.expect("connect"));
            let mut last = 0;
            for i in (writer..count).step_by(8) {
                let key = format!("key/{:04}", (i * 7919) % keys).into_bytes();
                let revision = if i % 10 == 9 {
                    let resp = kv.delete_range(DeleteRangeRequest { key, ..Default::default() }).await.expect("delete");
                    resp.into_inner().header.expect("header").revision
                } else {
                    let value = format!("{tag}-{i}").into_bytes();
                    let resp = kv.put(PutRequest { key, value, ..Default::default() }).await.expect("put");
                    resp.into_inner().header.expect("header").revision
                };
                last = last.max(revision);
            }
            last
        }));
    }
    let mut last = 0;
    for task in tasks {
        last = last.max(task.await.expect("writer"));
    }
    last
}

fn object_files(root: &Path, under: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.to_string_lossy().ends_with('%') {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root.join(under), &mut files);
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_its_disk_comes_back_with_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let store_args = ["--object-store-dir", objects.to_str().unwrap()];
    let mut server = Server::start_t4(&data, &store_args);
    let mut kv = server.kv().await;
    let first = write_load(&server.endpoint, "a", 400, 150).await;
    kv.compact(CompactionRequest { revision: first - 100, physical: true }).await.expect("compact");
    let last = write_load(&server.endpoint, "b", 400, 150).await;
    let past = [first - 101, first - 100, first - 50, first, last - 10];
    let before = snapshot(&mut kv, &past).await;
    assert_eq!(before.revision, last);
    assert!(before.past[&(first - 101)].is_err(), "below the compaction: compacted");

    server.kill();
    std::fs::remove_dir_all(&data).unwrap();
    let server = Server::start_t4(&data, &store_args);
    let mut kv = server.kv().await;
    let after = snapshot(&mut kv, &past).await;
    assert_eq!(after, before, "the restored node answers exactly as the lost one did");
    // Writing goes on from the next revision.
    let resp = kv.put(PutRequest { key: b"next".to_vec(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(resp.header.unwrap().revision, last + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_plus_the_wal_after_it_gives_the_exact_state() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let store_args = ["--object-store-dir", objects.to_str().unwrap(), "--checkpoint-entries", "300"];
    let mut server = Server::start_t4(&data, &store_args);
    let mut kv = server.kv().await;
    let first = write_load(&server.endpoint, "a", 400, 120).await;
    wait_for_checkpoint(&objects, 300);
    let last = write_load(&server.endpoint, "b", 200, 120).await;
    let past = [first - 5, first, last - 3];
    let before = snapshot(&mut kv, &past).await;
    server.kill();
    assert!(!object_files(&objects, "sst").is_empty(), "the checkpoint's tables are stored");

    std::fs::remove_dir_all(&data).unwrap();
    let server = Server::start_t4(&data, &store_args);
    let mut kv = server.kv().await;
    assert_eq!(snapshot(&mut kv, &past).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_wal_object_is_detected_and_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let store_args = ["--object-store-dir", objects.to_str().unwrap()];
    let mut server = Server::start_t4(&data, &store_args);
    write_load(&server.endpoint, "a", 80, 40).await;
    server.kill();
    let wal = object_files(&objects, "wal");
    assert!(wal.len() >= 3, "{} WAL objects", wal.len());
    let victim = &wal[wal.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(victim, bytes).unwrap();

    std::fs::remove_dir_all(&data).unwrap();
    let error = Server::try_start_t4(&data, &store_args).err().expect("a corrupt WAL object stops the restore");
    let name = victim.strip_prefix(&objects).unwrap().to_string_lossy().trim_end_matches('%').to_string();
    assert!(error.contains(&name), "the error names the object {name}: {error}");
}

/// The keys of the tables a checkpoint manifest lists.
fn checkpoint_tables(objects: &Path, key: &str) -> Vec<String> {
    let bytes = std::fs::read(objects.join(format!("{key}%"))).expect("checkpoint manifest");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    doc["tables"].as_array().unwrap().iter().map(|t| t["key"].as_str().unwrap().to_string()).collect()
}

fn embedded_config(data: &Path, objects: &Path) -> t4::Config {
    let mut config = t4::Config::new(data);
    config.cores = Some(1);
    config.object_store.object_store_dir = Some(objects.to_path_buf());
    config.object_store.checkpoint_interval = 0;
    config.object_store.checkpoint_table_bytes = 64 * 1024;
    config
}

async fn embedded_state(node: &t4::Node) -> Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)> {
    let kvs = node.range(vec![0], vec![0]).await.expect("range");
    kvs.into_iter().map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_of_a_mostly_unchanged_database_share_their_tables_and_a_damaged_one_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let node = t4::Node::open(embedded_config(&data, &objects)).unwrap();
    let value = |i: usize, round: u8| vec![b'a' + round; 200 + i % 64];
    for chunk in 0..160 {
        let mut txn = t4::Txn::new();
        for i in chunk * 125..(chunk + 1) * 125 {
            txn = txn.and_then([t4::TxnOp::put(format!("key/{i:06}"), value(i, 0))]);
        }
        node.txn(txn).await.unwrap();
    }
    let first = node.checkpoint().await.unwrap().expect("a first checkpoint");
    for i in (0..20_000).step_by(2_000) {
        node.put(format!("key/{i:06}"), value(i, 1)).await.unwrap();
    }
    let second = node.checkpoint().await.unwrap().expect("a second checkpoint");
    let (old, new) = (checkpoint_tables(&objects, &first), checkpoint_tables(&objects, &second));
    let shared = new.iter().filter(|t| old.contains(t)).count();
    println!("checkpoint tables: {} then {}, {shared} shared", old.len(), new.len());
    assert!(old.len() >= 50, "enough tables to measure sharing: {}", old.len());
    assert!(shared * 10 >= new.len() * 8, "{shared} of {} tables shared", new.len());
    // More writes after the second checkpoint: WAL only.
    for i in 0..50 {
        node.put(format!("late/{i}"), "x").await.unwrap();
    }
    let before = embedded_state(&node).await;
    node.close().await.unwrap();

    // Damage a table only the newest checkpoint has; restore from scratch.
    let victim = new.iter().find(|t| !old.contains(t)).expect("a table of the second checkpoint only");
    let path = objects.join(format!("{victim}%"));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let node = t4::Node::open(embedded_config(&data, &objects)).unwrap();
    assert_eq!(embedded_state(&node).await, before, "the previous checkpoint plus the WAL after it");
    node.close().await.unwrap();
}

/// Credentials for moto (it accepts any), passed the way operators pass them.
const MOTO_ENV: [(&str, &str); 2] = [("T4_S3_ACCESS_KEY_ID", "t4-test"), ("T4_S3_SECRET_ACCESS_KEY", "t4-test-secret")];

fn s3_args(moto: &common::moto::Moto, prefix: &str) -> Vec<String> {
    ["--s3-bucket", &moto.bucket, "--s3-endpoint", &moto.endpoint, "--s3-prefix", prefix]
        .into_iter()
        .map(String::from)
        .collect()
}

fn start_on_s3(data: &Path, args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::try_start_t4_env(data, &args, &MOTO_ENV).unwrap_or_else(|e| panic!("t4 did not start: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_loss_on_s3_restores_every_acknowledged_write() {
    let moto = common::moto::Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = s3_args(&moto, "disk-loss");
    let mut server = start_on_s3(&data, &args);
    let mut kv = server.kv().await;
    let first = write_load(&server.endpoint, "a", 300, 100).await;
    kv.compact(CompactionRequest { revision: first - 50, physical: false }).await.expect("compact");
    let last = write_load(&server.endpoint, "b", 300, 100).await;
    let past = [first - 51, first - 50, first, last - 1];
    let before = snapshot(&mut kv, &past).await;
    server.kill();
    std::fs::remove_dir_all(&data).unwrap();

    let server = start_on_s3(&data, &args);
    let mut kv = server.kv().await;
    assert_eq!(snapshot(&mut kv, &past).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_stops_acknowledgements_and_loses_nothing() {
    let moto = common::moto::Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = s3_args(&moto, "outage");
    args.extend(["--wal-upload-timeout-ms", "1000"].map(String::from));
    let mut server = start_on_s3(&data, &args);
    let mut kv = server.kv().await;
    let mut acknowledged: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for i in 0..20 {
        let key = format!("before/{i}").into_bytes();
        let resp = kv.put(PutRequest { key: key.clone(), value: b"v".to_vec(), ..Default::default() }).await.unwrap();
        acknowledged.insert(key, resp.into_inner().header.unwrap().revision);
    }

    moto.pause();
    // Writes are not acknowledged: the first waits for the store then times out, later ones are
    // refused at once while the outage lasts. Reads go on.
    let mut unknown = Vec::new();
    for i in 0..5 {
        let key = format!("during/{i}").into_bytes();
        let started = Instant::now();
        let result = kv.put(PutRequest { key: key.clone(), value: b"v".to_vec(), ..Default::default() }).await;
        let status = result.expect_err("no write is acknowledged while the store is down");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        let expected = ["etcdserver: request timed out", "etcdserver: object store unavailable"];
        assert!(expected.iter().any(|e| status.message().starts_with(e)), "{}", status.message());
        println!("write during the outage: {:?} after {:?}", status.message(), started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5), "answered within the bound: {:?}", started.elapsed());
        unknown.push(key);
    }
    let read = kv.range(RangeRequest { key: b"before/0".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(read.into_inner().kvs.len(), 1, "reads are served during the outage");
    // Many writers at once: every one gets an answer (a refusal) within the bound, none hangs.
    let mut writers = Vec::new();
    for connection in 0..4 {
        let kv = KvClient::new(common::channel(&server.endpoint).await.unwrap());
        for i in 0..100 {
            let mut kv = kv.clone();
            let key = format!("burst/{connection}/{i}").into_bytes();
            unknown.push(key.clone());
            writers.push(tokio::spawn(async move {
                let started = Instant::now();
                let put = kv.put(PutRequest { key, value: b"v".to_vec(), ..Default::default() });
                let result = tokio::time::timeout(Duration::from_secs(10), put).await;
                (result.map(|r| r.map(|_| ()).map_err(|s| s.code())), started.elapsed())
            }));
        }
    }
    for writer in writers {
        let (result, took) = writer.await.unwrap();
        assert_eq!(result, Ok(Err(tonic::Code::Unavailable)), "answered with a refusal, after {took:?}");
    }

    moto.resume();
    // Writes resume once the pending uploads land.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resumed = false;
    while Instant::now() < deadline {
        let key = b"after/0".to_vec();
        if let Ok(resp) = kv.put(PutRequest { key: key.clone(), value: b"v".to_vec(), ..Default::default() }).await {
            acknowledged.insert(key, resp.into_inner().header.unwrap().revision);
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(resumed, "writes resume after the store returns");
    for i in 1..20 {
        let key = format!("after/{i}").into_bytes();
        let resp = kv.put(PutRequest { key: key.clone(), value: b"v".to_vec(), ..Default::default() }).await.unwrap();
        acknowledged.insert(key, resp.into_inner().header.unwrap().revision);
    }
    let current = range_all(&mut kv, 0).await.unwrap().0;

    // Nothing acknowledged is lost, even with the disk gone.
    server.kill();
    std::fs::remove_dir_all(&data).unwrap();
    let server = start_on_s3(&data, &args);
    let mut kv = server.kv().await;
    let (revision, kvs) = range_all(&mut kv, 0).await.unwrap();
    assert_eq!(revision, current);
    let restored: BTreeMap<Vec<u8>, i64> = kvs.into_iter().map(|kv| (kv.key, kv.mod_revision)).collect();
    for (key, rev) in &acknowledged {
        assert_eq!(restored.get(key), Some(rev), "{}", String::from_utf8_lossy(key));
    }
    for key in restored.keys() {
        assert!(acknowledged.contains_key(key) || unknown.contains(key), "{}", String::from_utf8_lossy(key));
    }
}

/// Polls the server's `Status.errors` until `check` holds (bounded); returns them.
async fn wait_for_status_errors(endpoint: &str, what: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut client = MaintenanceClient::new(common::channel(endpoint).await.expect("connect"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let errors = client.status(StatusRequest {}).await.expect("status").into_inner().errors;
        if check(&errors) {
            return errors;
        }
        assert!(Instant::now() < deadline, "{what}: not within 60 s; Status.errors {errors:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_upload_keeps_writing_through_an_outage_and_catches_up() {
    let moto = common::moto::Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = s3_args(&moto, "async-outage");
    // Small segments, so the backlog outgrows the uploader's memory bound (8 segments) and is read
    // back from the local log.
    args.extend(
        ["--wal-sync-upload", "false", "--wal-segment-bytes", "2048", "--wal-segment-age-ms", "100"].map(String::from),
    );
    let mut server = start_on_s3(&data, &args);
    write_load(&server.endpoint, "a", 40, 40).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    moto.pause();
    let started = Instant::now();
    let last = write_load(&server.endpoint, "b", 1500, 300).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "writes go on while the store is down: {:?}",
        started.elapsed()
    );
    // Acknowledged writes that are not in object storage: the node says so (after
    // --wal-upload-timeout-ms, 10 s), and stops saying so once uploads succeed again.
    let errors = wait_for_status_errors(&server.endpoint, "the outage in Status.errors", |errors| {
        errors.iter().any(|e| e.starts_with("object storage: "))
    })
    .await;
    println!("Status.errors during the outage: {errors:?}");
    moto.resume();
    wait_for_status_errors(&server.endpoint, "Status.errors cleared", |errors| errors.is_empty()).await;
    let mut kv = server.kv().await;
    let past = [last - 700, last - 1];
    let before = snapshot(&mut kv, &past).await;
    assert_eq!(before.revision, last);

    // A graceful stop waits for the uploader to catch up; then the disk goes.
    assert!(server.stop().success());
    std::fs::remove_dir_all(&data).unwrap();
    let server = start_on_s3(&data, &args);
    let mut kv = server.kv().await;
    assert_eq!(snapshot(&mut kv, &past).await, before, "everything written during the outage was uploaded after it");
}
