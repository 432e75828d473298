//! Object-storage durability that stays healthy however the node runs: checkpoints are scheduled from
//! what the store holds, so a node that restarts often still checkpoints and a disk-loss restore
//! replays a bounded WAL; and an upload, checkpoint or GC that keeps failing is reported in
//! `Status.errors` (what `etcdctl endpoint status` shows) until it succeeds again, while writes go on.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::objects::{latest_checkpoint_revision, wal_object_last_revision};
use common::wait::wait_until;
use t4::object::{DirStore, MemStore, ObjectError, ObjectResult, ObjectStore};
use t4::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use t4::proto::etcdserverpb::{StatusRequest, StatusResponse};
use t4::{Config, Node};

/// The node's `Status`, asked over its etcd API.
async fn status(node: &Node) -> StatusResponse {
    let endpoint = node.local_addr().expect("the node serves its API").to_string();
    let mut client = MaintenanceClient::new(common::channel(&endpoint).await.expect("connect"));
    client.status(StatusRequest {}).await.expect("status").into_inner()
}

/// The node's `Status.errors`.
async fn status_errors(node: &Node) -> Vec<String> {
    status(node).await.errors
}

/// The key of the first WAL object a fresh node writes (its first record is revision 2), which
/// another writer takes first.
async fn take_first_wal_object(node: &Node, store: &dyn ObjectStore) -> String {
    let term = status(node).await.raft_term;
    let taken = format!("wal/{term:010}/{:020}", 2);
    store.put(&taken, b"another writer's records".to_vec()).await.unwrap();
    taken
}

/// Every key's value, create and mod revisions, and the current revision.
async fn state(node: &Node) -> (i64, Vec<(Vec<u8>, Vec<u8>, i64, i64)>) {
    let kvs = node.range(vec![0], vec![0]).await.expect("range");
    let kvs = kvs.into_iter().map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision)).collect();
    (node.revision().await.expect("revision"), kvs)
}

/// An embedded node on one core, with no checkpoints unless a test asks for them.
fn config(data: &Path) -> Config {
    let mut config = Config::new(data);
    config.cores = Some(1);
    config.object_store.checkpoint_interval = 0;
    config.object_store.checkpoint_table_bytes = 64 * 1024;
    config
}

/// `config` on the object store folder `objects`.
fn config_on_dir(data: &Path, objects: &Path) -> Config {
    let mut config = config(data);
    config.object_store.object_store_dir = Some(objects.to_path_buf());
    config
}

/// `config` on `store`, serving its API on a free loopback port.
fn config_on(data: &Path, store: Arc<dyn ObjectStore>) -> Config {
    let mut config = config(data);
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.object_store_override = Some(store);
    config
}

/// The first revision of each WAL object `wal/<term>/<rev>[-<sub>]` in the store.
async fn wal_starts(store: &dyn ObjectStore) -> Vec<i64> {
    let keys = store.list("wal/", None).await.expect("list");
    keys.iter().map(|k| k.split('/').nth(2).unwrap().split('-').next().unwrap().parse().unwrap()).collect()
}

/// The newest revision any WAL object holds, read from its frames.
async fn wal_last_revision(store: &dyn ObjectStore) -> i64 {
    let mut last = 0;
    for key in store.list("wal/", None).await.expect("list") {
        let Some(object) = store.get(&key).await.expect("get") else { continue };
        last = last.max(wal_object_last_revision(&object.bytes));
    }
    last
}

// ---- the checkpoint schedule ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_before_any_run_reaches_the_checkpoint_count_still_bounds_the_restore() {
    const RUNS: i64 = 20;
    const PER_RUN: i64 = 4;
    const ENTRIES: i64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let restarted = || {
        let mut config = config_on_dir(&data, &objects);
        config.object_store.checkpoint_entries = ENTRIES as u64;
        config
    };
    // No run writes ENTRIES revisions: only counting from the store's newest checkpoint reaches it.
    for run in 0..RUNS {
        let node = Node::open(restarted()).unwrap();
        for i in 0..PER_RUN {
            node.put(format!("run/{run}/{i}"), "v").await.unwrap();
        }
        node.close().await.unwrap();
    }
    let last = 1 + RUNS * PER_RUN;
    let store = DirStore::open(&objects).unwrap();
    let checkpoint = latest_checkpoint_revision(&store).await.expect("a checkpoint in the store");
    // A run that starts with ENTRIES or more revisions uncovered checkpoints before it stops, so at
    // most ENTRIES - 1 plus one run's writes are left to the WAL.
    assert!(last - checkpoint < ENTRIES + PER_RUN, "checkpoint at {checkpoint} of {last}");
    // Sequential puts: one WAL object per revision. A restore replays those after the checkpoint.
    let replayed = wal_starts(&store).await.into_iter().filter(|&start| start > checkpoint).count() as i64;
    println!("checkpoint at {checkpoint} of {last}: a restore replays {replayed} WAL objects");
    assert_eq!(replayed, last - checkpoint, "every revision after the checkpoint, in its own object");
    assert!(replayed < ENTRIES + PER_RUN);

    let node = Node::open(restarted()).unwrap();
    let before = state(&node).await;
    node.close().await.unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let node = Node::open(restarted()).unwrap();
    assert_eq!(state(&node).await, before, "the checkpoint and the WAL after it restore the exact state");
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_newest_checkpoint_is_older_than_the_interval_checkpoints_soon_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let hourly = || {
        let mut config = config_on_dir(&data, &objects);
        config.object_store.checkpoint_interval = 60;
        config
    };
    let node = Node::open(hourly()).unwrap();
    for i in 0..5 {
        node.put(format!("k{i}"), "v").await.unwrap();
    }
    let key = node.checkpoint().await.unwrap().expect("a checkpoint");
    for i in 5..8 {
        node.put(format!("k{i}"), "v").await.unwrap();
    }
    let last = node.revision().await.unwrap();
    node.close().await.unwrap();
    // The checkpoint says it was taken two hours ago: the writes after it are that old at most.
    let store = DirStore::open(&objects).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&store.get(&key).await.unwrap().expect("the manifest").bytes).unwrap();
    let two_hours_ago = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - Duration::from_secs(2 * 3600);
    manifest["created_unix_ms"] = serde_json::json!(two_hours_ago.as_millis() as u64);
    store.put(&key, serde_json::to_vec(&manifest).unwrap()).await.unwrap();

    let node = Node::open(hourly()).unwrap();
    wait_until(Duration::from_secs(30), "a checkpoint of the writes after the old one", || async {
        latest_checkpoint_revision(&store).await == Some(last)
    })
    .await;
    node.close().await.unwrap();
}

// ---- failures reported in Status.errors ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_errors_are_empty_while_uploads_succeed() {
    for sync_upload in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemStore::new());
        let mut config = config_on(dir.path(), store.clone());
        config.object_store.wal_sync_upload = sync_upload;
        config.object_store.wal_segment_age_ms = 20;
        config.object_store.checkpoint_entries = 10;
        let node = Node::open(config).unwrap();
        for i in 0..30 {
            node.put(format!("k{i}"), "v").await.unwrap();
        }
        let last = node.revision().await.unwrap();
        wait_until(Duration::from_secs(30), "the last write uploaded, and checkpointed", || async {
            latest_checkpoint_revision(store.as_ref()).await >= Some(last - 10)
                && wal_last_revision(store.as_ref()).await == last
        })
        .await;
        assert_eq!(status_errors(&node).await, Vec::<String>::new(), "sync upload {sync_upload}");
        node.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_upload_conflict_is_a_standing_error_while_writes_go_on_and_clears_once_removed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Arc::new(MemStore::new());
    let async_node = || {
        let mut config = config_on(&data, store.clone());
        config.object_store.wal_sync_upload = false;
        config.object_store.wal_segment_age_ms = 20;
        config
    };
    let node = Node::open(async_node()).unwrap();
    let taken = &take_first_wal_object(&node, store.as_ref()).await;
    for i in 0..20 {
        node.put(format!("k{i}"), "v").await.expect("writes are acknowledged");
    }
    wait_until(Duration::from_secs(30), "the conflict in Status.errors", || async {
        let errors = status_errors(&node).await;
        errors.iter().any(|e| e.starts_with("object storage: ") && e.contains(taken) && e.contains("different records"))
    })
    .await;
    println!("Status.errors: {:?}", status_errors(&node).await);
    for i in 20..40 {
        node.put(format!("k{i}"), "v").await.expect("writes are still acknowledged");
    }
    assert!(!status_errors(&node).await.is_empty(), "the conflict stands");

    // The other writer's object goes: the retried upload lands and the error clears.
    store.delete(taken).await.unwrap();
    wait_until(Duration::from_secs(60), "Status.errors cleared", || async { status_errors(&node).await.is_empty() })
        .await;
    let before = state(&node).await;
    node.close().await.unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let node = Node::open(async_node()).unwrap();
    assert_eq!(state(&node).await, before, "every write reached object storage after all");
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_upload_conflict_refuses_writes_and_is_a_standing_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::new());
    let mut config = config_on(dir.path(), store.clone());
    config.object_store.wal_upload_timeout_ms = 500;
    let node = Node::open(config).unwrap();
    let taken = &take_first_wal_object(&node, store.as_ref()).await;
    assert!(node.put("k", "v").await.is_err(), "never acknowledged: its object could not be stored");
    wait_until(Duration::from_secs(30), "the conflict in Status.errors", || async {
        let errors = status_errors(&node).await;
        errors
            .iter()
            .any(|e| e.starts_with("object storage: ") && e.contains(taken) && e.contains("writes are refused"))
    })
    .await;
    assert!(node.put("k", "v").await.is_err(), "refused while the conflict stands");
    node.close().await.unwrap();
}

/// A store whose table uploads fail while `failing` is set (checkpoints fail; WAL uploads do not).
struct FailingTables {
    inner: MemStore,
    failing: AtomicBool,
}

impl FailingTables {
    fn check(&self, key: &str) -> ObjectResult<()> {
        if key.starts_with("sst/") && self.failing.load(Ordering::SeqCst) {
            return Err(ObjectError::Unavailable(format!("injected failure storing {key}")));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for FailingTables {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        self.check(key)?;
        self.inner.put(key, bytes).await
    }
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        self.check(key)?;
        self.inner.put_if_absent(key, bytes).await
    }
    async fn put_if_match(&self, key: &str, bytes: Vec<u8>, etag: &str) -> ObjectResult<String> {
        self.check(key)?;
        self.inner.put_if_match(key, bytes, etag).await
    }
    async fn get(&self, key: &str) -> ObjectResult<Option<t4::object::Object>> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &str) -> ObjectResult<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, start_after: Option<&str>) -> ObjectResult<Vec<String>> {
        self.inner.list(prefix, start_after).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_that_keep_failing_are_a_standing_error_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FailingTables { inner: MemStore::new(), failing: AtomicBool::new(true) });
    let mut config = config_on(dir.path(), store.clone());
    config.object_store.checkpoint_entries = 5;
    // Failures stand after this long (one retry of the checkpoint).
    config.object_store.wal_upload_timeout_ms = 200;
    let node = Node::open(config).unwrap();
    for i in 0..5 {
        node.put(format!("k{i}"), "v").await.unwrap();
    }
    wait_until(Duration::from_secs(30), "the failing checkpoints in Status.errors", || async {
        status_errors(&node).await.iter().any(|e| e.starts_with("checkpoints: ") && e.contains("injected failure"))
    })
    .await;
    assert_eq!(latest_checkpoint_revision(&store.inner).await, None);
    store.failing.store(false, Ordering::SeqCst);
    wait_until(Duration::from_secs(60), "a checkpoint, and Status.errors cleared", || async {
        status_errors(&node).await.is_empty()
    })
    .await;
    assert_eq!(latest_checkpoint_revision(&store.inner).await, Some(6));
    node.close().await.unwrap();
}
