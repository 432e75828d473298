//! Object-storage durability that stays healthy however the node runs: checkpoints are scheduled from
//! what the store holds, so a node that restarts often still checkpoints and a disk-loss restore
//! replays a bounded WAL.

mod common;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use t4::object::{DirStore, ObjectStore};
use t4::{Config, Node};

/// Polls `check` until it holds, for at most `limit`; `what` names it in the failure.
async fn wait_until<F: Future<Output = bool>>(limit: Duration, what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// The revision of `manifest/latest`'s checkpoint, if there is one.
async fn latest_checkpoint_revision(store: &dyn ObjectStore) -> Option<i64> {
    let latest = store.get("manifest/latest").await.expect("read manifest/latest")?;
    let doc: serde_json::Value = serde_json::from_slice(&latest.bytes).expect("manifest/latest is JSON");
    Some(doc["revision"].as_i64().expect("a revision"))
}

/// The first revision of each WAL object `wal/<term>/<rev>[-<sub>]` in the store.
async fn wal_starts(store: &dyn ObjectStore) -> Vec<i64> {
    let keys = store.list("wal/", None).await.expect("list");
    keys.iter().map(|k| k.split('/').nth(2).unwrap().split('-').next().unwrap().parse().unwrap()).collect()
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
