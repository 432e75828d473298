//! How `t4 run` stops. Gracefully under load: SIGTERM stops accepting, lets in-flight writes finish,
//! syncs and exits 0; every acknowledged write is there after a restart. By itself when a part of the
//! node cannot go on: it exits non-zero with that part's error.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{STARTUP_TIMEOUT, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_zero_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_t4(dir.path(), &[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..6 {
        let mut client = server.client().await;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..100_000 {
                let key = format!("w{w}/{i:06}");
                match tokio::time::timeout(Duration::from_secs(30), client.put(key.clone(), "v", None)).await {
                    Ok(Ok(resp)) => {
                        mine.push((key, resp.header().unwrap().revision()));
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break, // the server went away: stop writing
                }
            }
            mine
        }));
    }
    // Let some writes land, then stop the server while the writers are still busy.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < 300 {
        assert!(std::time::Instant::now() < deadline, "writers made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stop = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        (server, status)
    });
    let (server, status) = stop.await.unwrap();
    assert!(status.success(), "graceful shutdown exit status {status}");
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    drop(server);
    let server = Server::start_t4(dir.path(), &[]);
    let mut client = server.client().await;
    for (key, revision) in &written {
        let resp = client.get(key.as_str(), None).await.unwrap();
        assert_eq!(resp.kvs().first().map(|kv| kv.mod_revision()), Some(*revision), "{key} lost");
    }
}

#[test]
fn a_shard_that_cannot_start_stops_t4_run_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::try_start_t4_env(dir.path(), &[], &[("FAILPOINTS", "shard-start=return")]);
    let mut server = server.expect("t4 opens the node (the shards start on their cores after)");
    let status = server.wait_exit(STARTUP_TIMEOUT).expect("t4 run stops by itself instead of serving without a shard");
    assert!(!status.success(), "it exits with a failure: {status:?}");
    let stderr = server.stderr();
    assert!(
        stderr.contains("t4: error: the node stopped: shard") && stderr.contains("injected shard start failure"),
        "the shard's error is on stderr: {stderr}"
    );
}
