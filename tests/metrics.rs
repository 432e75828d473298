//! `/metrics`: after a known workload the counts are exact (gRPC and gateway calls, keys, leases,
//! watches, WAL uploads against what the object store holds, restores), the text parses with the
//! Prometheus project's own OpenMetrics parser, and `--listen-metrics` serves it with the health
//! endpoints on a port of its own.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use common::http1::request;

/// The samples of a scrape of `endpoint`, by `name{labels}` (labels sorted), as the Prometheus
/// Python client's strict OpenMetrics parser reads them (in the test venv).
fn scrape(endpoint: &str) -> BTreeMap<String, f64> {
    let answer = request(endpoint, "GET", "/metrics", b"");
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert!(answer.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")));
    parse(&answer.body)
}

fn parse(text: &[u8]) -> BTreeMap<String, f64> {
    use std::io::Write;
    let script =
        r#". scripts/lib/venv.sh && ensure_venv "$PWD/.venv" && exec .venv/bin/python tests/clients/parse_metrics.py"#;
    let mut child = std::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run bash");
    child.stdin.take().expect("stdin").write_all(text).expect("write the scrape");
    let output = child.wait_with_output().expect("parser output");
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the scrape: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(text)
    );
    let mut samples = BTreeMap::new();
    for line in String::from_utf8(output.stdout).expect("utf-8").lines() {
        let sample: serde_json::Value = serde_json::from_str(line).expect("a JSON sample");
        let series = sample["series"].as_str().expect("series").to_string();
        let value = sample["value"].as_f64().expect("value");
        assert!(samples.insert(series, value).is_none(), "a series appears once: {line}");
    }
    samples
}

/// A sample's value; panics naming the series if it is missing.
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no sample {series}; have {:#?}", samples.keys()))
}

fn handled(samples: &BTreeMap<String, f64>, service: &str, method: &str, kind: &str, code: &str) -> f64 {
    let series = format!(
        "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"etcdserverpb.{service}\",grpc_type=\"{kind}\"}}"
    );
    samples.get(&series).copied().unwrap_or(0.0)
}

/// Scrapes until `done` holds for the samples (bounded), returning the last scrape.
fn scrape_until(endpoint: &str, what: &str, done: impl Fn(&BTreeMap<String, f64>) -> bool) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let samples = scrape(endpoint);
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within 15 s: {samples:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn scrape_async(endpoint: &str) -> BTreeMap<String, f64> {
    let endpoint = endpoint.to_string();
    tokio::task::spawn_blocking(move || scrape(&endpoint)).await.expect("scrape task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let endpoint = server.endpoint.clone();
    let mut client = server.client().await;
    for i in 0..25 {
        client.put(format!("k{i}"), "v", None).await.expect("put");
    }
    client.put("k0", "again", None).await.expect("put over an existing key");
    for _ in 0..7 {
        client.txn(etcd_client::Txn::new()).await.expect("txn");
    }
    client.put("", "no key", None).await.expect_err("an empty key is refused");
    // Through the JSON gateway: counted as the gRPC calls they make, as etcd's gateway's are.
    let gateway = endpoint.clone();
    tokio::task::spawn_blocking(move || {
        for key in ["ZzE=", "ZzI="] {
            let body = format!(r#"{{"key":"{key}","value":"dg=="}}"#);
            assert_eq!(request(&gateway, "POST", "/v3/kv/put", body.as_bytes()).status, 200);
        }
        assert_eq!(request(&gateway, "POST", "/v3/kv/put", br#"{"value":"dg=="}"#).status, 400);
    })
    .await
    .unwrap();
    let leases: Vec<i64> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(client.lease_grant(60, None).await.expect("grant").id());
        }
        ids
    };
    client.lease_revoke(leases[0]).await.expect("revoke");

    let samples = scrape_async(&endpoint).await;
    assert_eq!(handled(&samples, "KV", "Put", "unary", "OK"), 28.0);
    assert_eq!(handled(&samples, "KV", "Put", "unary", "InvalidArgument"), 2.0);
    assert_eq!(handled(&samples, "KV", "Txn", "unary", "OK"), 7.0);
    assert_eq!(handled(&samples, "Lease", "LeaseGrant", "unary", "OK"), 3.0);
    let put_timed =
        "grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    assert_eq!(value(&samples, put_timed), 30.0, "every call is timed, whatever its code");
    assert_eq!(value(&samples, "etcd_server_has_leader"), 1.0);
    // Revision 1 is the empty store; every put took one, nothing else did.
    assert_eq!(value(&samples, "etcd_server_proposals_committed_total"), 29.0);
    assert!(value(&samples, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert_eq!(value(&samples, "etcd_debugging_mvcc_keys_total"), 27.0);
    assert_eq!(value(&samples, "t4_leases"), 2.0);
    assert_eq!(value(&samples, "t4_sequencer_queue_depth"), 0.0);
    assert_eq!(value(&samples, "t4_alarms_raised"), 0.0);
    // Each proposal is made durable by exactly one sync; empty transactions may be answered
    // without one.
    let proposals = value(&samples, "t4_commit_group_proposals_sum");
    assert!((32.0..=39.0).contains(&proposals), "proposals synced: {proposals}");
    let syncs = value(&samples, "etcd_disk_wal_fsync_duration_seconds_count");
    assert!(syncs >= 1.0 && syncs <= proposals, "syncs: {syncs}");
    assert_eq!(value(&samples, "t4_commit_group_proposals_count"), syncs, "one group size per sync");

    // Deletes after the first scrape (which counted the keys in the store) move the count.
    let deleted = client.delete("k", Some(etcd_client::DeleteOptions::new().with_prefix())).await.expect("delete");
    assert_eq!(deleted.deleted(), 25);
    client.lease_revoke(leases[1]).await.expect("revoke");

    // Two watch streams with a watcher each; one goes away.
    let _watch_a = client.watch("k", None).await.expect("watch a");
    let watch_b = client.watch("g", None).await.expect("watch b");
    let samples = scrape_async(&endpoint).await;
    assert_eq!(value(&samples, "etcd_debugging_mvcc_keys_total"), 2.0);
    assert_eq!(value(&samples, "t4_leases"), 1.0);
    assert_eq!(value(&samples, "t4_watch_streams"), 2.0);
    assert_eq!(value(&samples, "t4_watchers"), 2.0);
    drop(watch_b);
    let watching = endpoint.clone();
    let samples = tokio::task::spawn_blocking(move || {
        scrape_until(&watching, "a watch stream's end", |s| {
            s.get("t4_watch_streams") == Some(&1.0) && handled(s, "Watch", "Watch", "bidi_stream", "Canceled") == 1.0
        })
    })
    .await
    .unwrap();
    assert_eq!(value(&samples, "t4_watchers"), 1.0);
}

/// The WAL objects the object store holds (files under `wal/`) and their bytes.
fn wal_objects(objects: &Path) -> (u64, u64) {
    let mut found = (0, 0);
    let mut dirs = vec![objects.join("wal")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                found = (found.0 + 1, found.1 + meta.len());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_uploads_checkpoints_and_restores_against_the_object_store() {
    let (data, objects) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = objects.path().to_str().unwrap();
    // No checkpoint yet (none is due), so no WAL object is collected: the store holds every upload.
    let mut server = Server::start_t4(data.path(), &["--object-store-dir", store]);
    let mut client = server.client().await;
    let mut revision = 0;
    for i in 0..15 {
        revision = client.put(format!("k{i}"), "v", None).await.expect("put").header().unwrap().revision();
    }
    let endpoint = server.endpoint.clone();
    let samples = tokio::task::spawn_blocking(move || {
        scrape_until(&endpoint, "an upload rate", |s| {
            s.get("t4_wal_upload_objects_per_second").is_some_and(|r| *r > 0.0)
        })
    })
    .await
    .unwrap();
    let (count, bytes) = wal_objects(objects.path());
    assert!(count >= 15, "sync upload stores at least an object per sequential put: {count}");
    assert_eq!(value(&samples, "t4_wal_uploads_total"), count as f64);
    assert_eq!(value(&samples, "t4_wal_upload_bytes_total"), bytes as f64);
    assert_eq!(value(&samples, "t4_wal_upload_duration_seconds_count"), count as f64);
    assert_eq!(value(&samples, "t4_wal_upload_failures_total"), 0.0);
    assert_eq!(value(&samples, "t4_checkpoints_total"), 0.0);
    let created = "t4_object_store_requests_total{operation=\"put_if_absent\",result=\"ok\"}";
    assert_eq!(value(&samples, created), count as f64, "only WAL objects were created");
    let timed = "t4_object_store_request_duration_seconds_count{operation=\"put_if_absent\"}";
    assert_eq!(value(&samples, timed), count as f64);
    server.stop();

    // Restarted with a checkpoint due, the node writes one soon after it starts.
    let args = ["--object-store-dir", store, "--checkpoint-entries", "10"];
    let mut server = Server::start_t4(data.path(), &args);
    let checkpointed = objects.path().to_path_buf();
    tokio::task::spawn_blocking(move || common::wait_for_checkpoint(&checkpointed, revision)).await.unwrap();
    let mut client = server.client().await;
    for i in 15..18 {
        client.put(format!("k{i}"), "v", None).await.expect("put");
    }
    let samples = scrape_async(&server.endpoint).await;
    assert_eq!(value(&samples, "t4_checkpoints_total"), 1.0);
    assert_eq!(value(&samples, "t4_checkpoint_revision"), revision as f64);
    assert_eq!(value(&samples, "t4_checkpoint_failures_total"), 0.0);
    server.stop();

    // A node with an empty disk restores the checkpoint and replays the WAL after it.
    let fresh = tempfile::tempdir().unwrap();
    let restored = Server::start_t4(fresh.path(), &args);
    let samples = scrape_async(&restored.endpoint).await;
    let size = value(&samples, "t4_restore_checkpoint_bytes");
    assert!(size > 0.0);
    assert_eq!(value(&samples, "t4_restore_checkpoint_loaded_bytes"), size);
    assert!(value(&samples, "t4_restore_wal_objects_replayed_total") >= 3.0);
    assert_eq!(value(&samples, "etcd_debugging_mvcc_keys_total"), 18.0);
    assert!(value(&samples, "t4_object_store_requests_total{operation=\"get\",result=\"ok\"}") >= 4.0);
}

#[test]
fn listen_metrics_serves_metrics_and_health_on_a_port_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &["--listen-metrics", "http://127.0.0.1:0"]);
    let port = server.metrics_endpoint.clone().expect("t4 printed its metrics address");
    assert_ne!(port, server.endpoint);
    let samples = scrape(&port);
    assert_eq!(value(&samples, "etcd_server_has_leader"), 1.0);
    let health = request(&port, "GET", "/health", b"");
    assert_eq!((health.status, health.body.as_slice()), (200, br#"{"health":"true"}"#.as_slice()));
    for path in ["/livez", "/readyz", "/version"] {
        assert_eq!(request(&port, "GET", path, b"").status, 200, "{path}");
    }
    // Not the client port: no gateway, no gRPC.
    assert_eq!(request(&port, "POST", "/v3/kv/range", b"{}").status, 404);
    assert_eq!(request(&port, "POST", "/metrics", b"").status, 405);
}

#[test]
fn listen_metrics_refuses_what_it_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    for (value, expected) in
        [("https://127.0.0.1:0", "plain http"), ("127.0.0.1", "HOST:PORT"), ("http://127.0.0.1:notaport", "HOST:PORT")]
    {
        let data = dir.path().join("never");
        let error = Server::try_start_t4(&data, &["--listen-metrics", value]).err().expect("refused");
        assert!(error.contains("--listen-metrics") && error.contains(expected), "{value}: {error}");
        assert!(!data.exists(), "{value}: a refused start leaves no data dir");
    }
    // A port in use is named, and nothing is created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("busy");
    let error = Server::try_start_t4(&data, &["--listen-metrics", &addr]).err().expect("refused");
    assert!(error.contains(&addr), "{error}");
    assert!(!data.exists());
}
