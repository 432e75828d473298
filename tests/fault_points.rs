//! Fault points between the steps of a WAL upload (before the PUT, after it, before the stored
//! groups are passed on, before the watermark moves) and of a checkpoint (after its tables, before
//! `manifest/latest`, before GC), each made to fail with `return`: the failing step is reported (a
//! standing error in `Status.errors`, or the node stops with its error), and nothing acknowledged is
//! lost after a restart from object storage alone.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use common::objects::latest_checkpoint_revision;
use common::wait::wait_until;
use t4::object::{MemStore, ObjectStore};
use t4::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use t4::proto::etcdserverpb::{PutRequest, StatusRequest};
use t4::{Config, Error, Node};

/// How long an upload may fail before it is reported (and a caller times out).
const WAIT_MAX_MS: u64 = 300;

/// The node's `Status.errors`, asked over its etcd API.
async fn status_errors(node: &Node) -> Vec<String> {
    let endpoint = node.local_addr().expect("the node serves its API").to_string();
    let mut client = MaintenanceClient::new(common::channel(&endpoint).await.expect("connect"));
    client.status(StatusRequest {}).await.expect("status").into_inner().errors
}

/// Whether `Status.errors` holds an error of `source` that mentions `text`.
async fn reports(node: &Node, source: &str, text: &str) -> bool {
    status_errors(node).await.iter().any(|e| e.starts_with(&format!("{source}: ")) && e.contains(text))
}

/// Every key's value, create and mod revisions, and the current revision.
type State = (i64, Vec<(Vec<u8>, Vec<u8>, i64, i64)>);

/// The node's [`State`].
async fn state(node: &Node) -> State {
    let kvs = node.range(vec![0], vec![0]).await.expect("range");
    let kvs = kvs.into_iter().map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision)).collect();
    (node.revision().await.expect("revision"), kvs)
}

/// An embedded node on one core on `store`, serving its API on a free loopback port, with no
/// checkpoints unless a test asks for them.
fn config(data: &Path, store: &Arc<MemStore>, sync_upload: bool) -> Config {
    let mut config = Config::new(data);
    config.cores = Some(1);
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.object_store_override = Some(store.clone() as Arc<dyn ObjectStore>);
    config.object_store.wal_sync_upload = sync_upload;
    config.object_store.wal_upload_timeout_ms = WAIT_MAX_MS;
    config.object_store.wal_segment_age_ms = 20;
    config.object_store.checkpoint_interval = 0;
    config.object_store.checkpoint_table_bytes = 64 * 1024;
    config
}

/// Puts `count` keys `<tag>/<i>`, every one acknowledged.
async fn put_keys(node: &Node, tag: &str, count: usize) {
    for i in 0..count {
        node.put(format!("{tag}/{i}"), "v").await.expect("acknowledged");
    }
}

/// What each embedded test here runs on: the fault points' lock (they are process-wide), a data dir
/// of its own and an in-memory object store.
struct Fixture {
    scenario: fail::FailScenario<'static>,
    dir: tempfile::TempDir,
    store: Arc<MemStore>,
}

impl Fixture {
    fn new() -> Fixture {
        let scenario = fail::FailScenario::setup();
        Fixture { scenario, dir: tempfile::tempdir().unwrap(), store: Arc::new(MemStore::new()) }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config(&self, sync_upload: bool) -> Config {
        config(&self.data(), &self.store, sync_upload)
    }

    fn open(&self, sync_upload: bool) -> Node {
        Node::open(self.config(sync_upload)).unwrap()
    }

    /// Checks that a node restored from the store alone holds all that `node` holds, then lets
    /// other tests set fault points.
    async fn restored_holds(self, node: Node) {
        let before = state(&node).await;
        restored_from_store_holds(node, &self.data(), &self.store, &before).await;
        self.teardown();
    }

    fn teardown(self) {
        self.scenario.teardown();
    }
}

/// Closes `node`, drops its data dir and opens a node restored from `store` alone: it must hold
/// exactly `before`.
async fn restored_from_store_holds(node: Node, data: &Path, store: &Arc<MemStore>, before: &State) {
    node.close().await.expect("a clean close");
    std::fs::remove_dir_all(data).unwrap();
    let node = Node::open(config(data, store, true)).unwrap();
    assert_eq!(&state(&node).await, before, "everything acknowledged came back from object storage");
    node.close().await.unwrap();
}

// ---- WAL uploads ----

/// Sync upload with `point` failing: writes time out, then are refused while the failure stands
/// (named in `Status.errors`); once the point is off they are taken again, and nothing is lost.
async fn sync_upload_failing_at(point: &str) {
    let fixture = Fixture::new();
    let node = fixture.open(true);
    put_keys(&node, "before", 5).await;

    fail::cfg(point, "return").unwrap();
    assert!(matches!(node.put("k", "v").await, Err(Error::Timeout)), "not acknowledged: its upload fails");
    wait_until(Duration::from_secs(30), "the failing upload in Status.errors", || async {
        reports(&node, "object storage", &format!("fault injected at {point}")).await
    })
    .await;
    assert!(node.put("k2", "v").await.is_err(), "writes are refused while the upload fails");

    fail::remove(point);
    wait_until(Duration::from_secs(30), "Status.errors cleared", || async { status_errors(&node).await.is_empty() })
        .await;
    put_keys(&node, "after", 5).await;
    fixture.restored_holds(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_upload_failing_before_its_put_refuses_writes_until_it_passes() {
    sync_upload_failing_at("upload-before-put").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_upload_failing_after_its_put_is_retried_and_finds_its_own_object() {
    sync_upload_failing_at("upload-after-put").await;
}

/// Async upload with `point` failing: writes are acknowledged all along, the failure stands in
/// `Status.errors` (saying `text`) until the point is off, and nothing is lost.
async fn async_upload_failing_at(point: &str, text: &str) {
    let fixture = Fixture::new();
    let node = fixture.open(false);
    put_keys(&node, "before", 5).await;

    fail::cfg(point, "return").unwrap();
    // Each write is an upload of its own (the segment age is short), each failing at the point.
    let mut written = 0;
    wait_until(Duration::from_secs(30), "the failing step in Status.errors", || {
        written += 1;
        let key = format!("during/{written}");
        let node = &node;
        async move {
            node.put(key, "v").await.expect("acknowledged while uploads fail");
            reports(node, "object storage", text).await
        }
    })
    .await;

    fail::remove(point);
    put_keys(&node, "after", 5).await;
    wait_until(Duration::from_secs(30), "Status.errors cleared", || async { status_errors(&node).await.is_empty() })
        .await;
    fixture.restored_holds(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_upload_failing_before_its_put_is_a_standing_error_while_writes_go_on() {
    async_upload_failing_at("upload-before-put", "fault injected at upload-before-put").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_upload_failing_after_its_put_is_a_standing_error_while_writes_go_on() {
    async_upload_failing_at("upload-after-put", "fault injected at upload-after-put").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_watermark_that_cannot_move_is_a_standing_error_while_writes_go_on() {
    async_upload_failing_at("upload-before-watermark", "cannot record the upload watermark").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_uploader_that_cannot_pass_stored_groups_on_stops_the_node_with_its_error() {
    let fixture = Fixture::new();
    let node = fixture.open(true);
    put_keys(&node, "before", 5).await;
    let before = state(&node).await;

    fail::cfg("upload-pass-on", "return").unwrap();
    assert!(node.put("k", "v").await.is_err(), "never acknowledged");
    let fatal = tokio::time::timeout(Duration::from_secs(30), node.failed()).await;
    let fatal = fatal.expect("the node fails within 30 s").to_string();
    assert!(fatal.contains("the WAL uploader (sync)"), "names the uploader: {fatal}");
    assert!(fatal.contains("fault injected at upload-pass-on"), "and its error: {fatal}");
    let closed = node.close().await.expect_err("the node stopped with the error");
    assert_eq!(closed.to_string(), fatal);
    fail::remove("upload-pass-on");

    // The write that was stored but never passed on may come back (its outcome was unknown, as
    // with a timeout); everything acknowledged does.
    std::fs::remove_dir_all(fixture.data()).unwrap();
    let node = fixture.open(true);
    let (_, kvs) = state(&node).await;
    let restored: Vec<_> = kvs.into_iter().filter(|(key, ..)| key.starts_with(b"before/")).collect();
    assert_eq!(restored, before.1, "every acknowledged write");
    node.close().await.unwrap();
    fixture.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_run_exits_non_zero_with_the_uploaders_error_when_it_cannot_pass_groups_on() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let args = ["--object-store-dir", objects.to_str().unwrap()];
    let server = Server::try_start_t4_env(&data, &args, &[("FAILPOINTS", "upload-pass-on=return")]);
    let mut server = server.expect("t4 starts (the fault point fires on the first write)");
    let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
    assert!(server.kv().await.put(put).await.is_err(), "the write is not acknowledged");
    let status = server.wait_exit(Duration::from_secs(30)).expect("the process stops instead of serving");
    assert!(!status.success(), "t4 run exits with a failure: {status:?}");
    let stderr = server.stderr();
    let expected =
        "t4: error: the node stopped: the WAL uploader (sync) failed: WAL upload: fault injected at upload-pass-on";
    assert!(stderr.contains(expected), "stderr says why: {stderr}");
}

// ---- checkpoints ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_failing_after_their_tables_are_a_standing_error_until_one_succeeds() {
    let fixture = Fixture::new();
    let mut config = fixture.config(true);
    config.object_store.checkpoint_entries = 5;
    fail::cfg("checkpoint-after-tables", "return").unwrap();
    let node = Node::open(config).unwrap();
    put_keys(&node, "k", 5).await;
    wait_until(Duration::from_secs(30), "the failing checkpoints in Status.errors", || async {
        reports(&node, "checkpoints", "fault injected at checkpoint-after-tables").await
    })
    .await;
    assert_eq!(latest_checkpoint_revision(fixture.store.as_ref()).await, None, "no manifest without its step");

    fail::remove("checkpoint-after-tables");
    wait_until(Duration::from_secs(60), "a checkpoint, and Status.errors cleared", || async {
        status_errors(&node).await.is_empty() && latest_checkpoint_revision(fixture.store.as_ref()).await.is_some()
    })
    .await;
    fixture.restored_holds(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_failing_before_manifest_latest_is_not_the_newest_and_the_next_one_is() {
    let fixture = Fixture::new();
    let node = fixture.open(true);
    put_keys(&node, "k", 5).await;
    fail::cfg("checkpoint-before-latest", "return").unwrap();
    let failed = node.checkpoint().await.expect_err("the checkpoint fails at its last step");
    assert!(failed.to_string().contains("fault injected at checkpoint-before-latest"), "{failed}");
    assert_eq!(latest_checkpoint_revision(fixture.store.as_ref()).await, None);

    fail::remove("checkpoint-before-latest");
    put_keys(&node, "more", 3).await;
    node.checkpoint().await.expect("a checkpoint").expect("a new one");
    assert_eq!(latest_checkpoint_revision(fixture.store.as_ref()).await, Some(node.revision().await.unwrap()));
    fixture.restored_holds(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_retried_at_the_same_revision_finishes_the_manifest_an_earlier_attempt_wrote() {
    let fixture = Fixture::new();
    let node = fixture.open(true);
    put_keys(&node, "k", 5).await;
    fail::cfg("checkpoint-before-latest", "return").unwrap();
    node.checkpoint().await.expect_err("the checkpoint fails at its last step");
    fail::remove("checkpoint-before-latest");
    // No write since: the retry is at the same revision, where the manifest is already stored.
    let written = node.checkpoint().await.expect("the retry succeeds");
    assert!(written.is_some(), "the retry finishes the checkpoint rather than calling it current");
    assert_eq!(latest_checkpoint_revision(fixture.store.as_ref()).await, Some(node.revision().await.unwrap()));
    fixture.restored_holds(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_failing_after_a_checkpoint_is_a_standing_error_until_it_runs() {
    let fixture = Fixture::new();
    let node = fixture.open(true);
    put_keys(&node, "k", 5).await;
    fail::cfg("checkpoint-before-gc", "return").unwrap();
    node.checkpoint().await.expect("the checkpoint itself is written").expect("a new one");
    assert!(reports(&node, "object storage GC", "fault injected at checkpoint-before-gc").await);

    fail::remove("checkpoint-before-gc");
    put_keys(&node, "more", 3).await;
    node.checkpoint().await.expect("a checkpoint").expect("a new one");
    assert_eq!(status_errors(&node).await, Vec::<String>::new(), "GC ran: its error cleared");
    fixture.restored_holds(node).await;
}
