//! Maintenance as etcd operators run it: HashKV (the convergence check: equal on nodes with equal
//! histories, across restarts, restores from object storage and from snapshots; etcd's errors),
//! Snapshot (`etcdctl snapshot save`, then `t4 restore --from-snapshot`: the restored node answers
//! every key at every retained revision as the original) and Defragment.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use t4::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use t4::proto::etcdserverpb::{HashKvRequest, HashKvResponse, RangeRequest, SnapshotRequest, StatusRequest};

async fn maintenance(server: &Server) -> MaintenanceClient<tonic::transport::Channel> {
    MaintenanceClient::new(common::channel(&server.endpoint).await.expect("connect"))
}

async fn hash_kv(server: &Server, revision: i64) -> Result<HashKvResponse, tonic::Status> {
    maintenance(server).await.hash_kv(HashKvRequest { revision }).await.map(|r| r.into_inner())
}

/// A history with overwrites, deletes, a lease, a compaction and values with every byte: the same
/// on every node it is written to (revisions 2..=31, compacted at 12).
async fn write_history(server: &Server) {
    let mut client = server.client().await;
    for i in 0..20u8 {
        let value: Vec<u8> = (0..=255u8).map(|b| b.wrapping_add(i)).collect();
        client.put(format!("h/{}", i % 7), value, None).await.expect("put");
    }
    for i in 0..3 {
        client.delete(format!("h/{i}"), None).await.expect("delete");
    }
    // The same lease id on every node (ids are part of what is hashed).
    let granted = etcd_client::LeaseGrantOptions::new().with_id(0x7e57);
    let lease = client.lease_grant(3600, Some(granted)).await.expect("grant").id();
    let attached = etcd_client::PutOptions::new().with_lease(lease);
    for i in 0..7 {
        client.put(format!("l/{i}"), "leased", Some(attached.clone())).await.expect("put with lease");
    }
    client.compact(12, None).await.expect("compact");
}

fn revision_of(response: &HashKvResponse) -> i64 {
    response.header.as_ref().expect("a header").revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_is_equal_on_equal_histories_across_nodes_restarts_and_restores() {
    let (a_dir, b_dir, objects) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = objects.path().to_str().unwrap();
    let a = Server::start_t4(a_dir.path(), &["--object-store-dir", store]);
    let mut b = Server::start_t4(b_dir.path(), &[]);
    write_history(&a).await;
    write_history(&b).await;
    let current = revision_of(&hash_kv(&a, 0).await.unwrap());
    assert_eq!(current, 31);
    let mut hashes = Vec::new();
    for revision in [0, 13, 20, current] {
        let (on_a, on_b) = (hash_kv(&a, revision).await.unwrap(), hash_kv(&b, revision).await.unwrap());
        assert_eq!(on_a.hash, on_b.hash, "two nodes, one history, revision {revision}");
        assert_eq!((on_a.compact_revision, on_b.compact_revision), (12, 12));
        assert_eq!(on_a.hash_revision, if revision == 0 { current } else { revision });
        hashes.push(on_a.hash);
    }
    assert_ne!(hashes[1], hashes[2], "later revisions add versions");
    assert_eq!(hashes[0], hashes[3]);
    // A node that writes one more version differs.
    b.client().await.put("h/3", "different", None).await.unwrap();
    assert_ne!(hash_kv(&b, 0).await.unwrap().hash, hashes[0]);
    assert_eq!(hash_kv(&b, current).await.unwrap().hash, hashes[3], "a revision's hash stays");
    // Across a restart.
    b.stop();
    let b = Server::start_t4(b_dir.path(), &[]);
    assert_eq!(hash_kv(&b, current).await.unwrap().hash, hashes[3]);
    // Across a restore from object storage (a fresh disk replays A's WAL).
    let fresh = tempfile::tempdir().unwrap();
    let restored = Server::start_t4(fresh.path(), &["--object-store-dir", store]);
    drop(a);
    assert_eq!(hash_kv(&restored, 0).await.unwrap().hash, hashes[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_errors_and_fields_match_etcd() {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    for server in [&etcd, &t4] {
        let mut client = server.client().await;
        for i in 0..5 {
            client.put(format!("k{i}"), "v", None).await.unwrap();
        }
    }
    let never = (hash_kv(&etcd, 0).await.unwrap(), hash_kv(&t4, 0).await.unwrap());
    assert_eq!(never.0.compact_revision, never.1.compact_revision, "never compacted");
    assert_eq!(revision_of(&never.0), revision_of(&never.1));
    for server in [&etcd, &t4] {
        server.client().await.compact(4, None).await.unwrap();
    }
    for revision in [3, 4, 5, 6, 7, -1] {
        let (from_etcd, from_t4) = (hash_kv(&etcd, revision).await, hash_kv(&t4, revision).await);
        match (from_etcd, from_t4) {
            (Ok(e), Ok(t)) => {
                assert_eq!(e.compact_revision, t.compact_revision, "revision {revision}");
                assert_eq!(revision_of(&e), revision_of(&t), "revision {revision}");
            }
            (Err(e), Err(t)) => {
                assert_eq!((e.code(), e.message()), (t.code(), t.message()), "revision {revision}");
            }
            (e, t) => panic!("revision {revision}: etcd {e:?}, T4 {t:?}"),
        }
    }
}

/// Every key (with its history) at every revision from `from` to `to`, as `server` answers.
async fn every_revision(server: &Server, from: i64, to: i64) -> Vec<String> {
    let mut kv = server.kv().await;
    let mut answers = Vec::new();
    for revision in from..=to {
        let request = RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() };
        let answer = kv.range(request).await.map(|r| r.into_inner());
        answers.push(match answer {
            Ok(mut answer) => {
                answer.header = None;
                format!("{revision}: {:?}", answer)
            }
            Err(status) => format!("{revision}: {:?} {}", status.code(), status.message()),
        });
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_then_t4_restore_answers_every_retained_revision_as_the_original() {
    let (dir, saved) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let original = Server::start_t4(dir.path(), &[]);
    write_history(&original).await;
    let file = saved.path().join("t4.snapshot");
    let (ok, out, err) = original.etcdctl(&["snapshot", "save", file.to_str().unwrap()]);
    assert!(ok, "etcdctl snapshot save: {out} {err}");
    assert_eq!(std::fs::metadata(&file).unwrap().len() % 512, 32, "etcd's layout: pages and a SHA-256");
    let leases = original.etcdctl(&["lease", "list"]).1;
    let history = every_revision(&original, 11, 31).await;
    let hash = hash_kv(&original, 0).await.unwrap().hash;

    let restored_dir = saved.path().join("restored");
    let output = std::process::Command::new(common::t4_binary())
        .args(["restore", "--from-snapshot", file.to_str().unwrap(), "--data-dir", restored_dir.to_str().unwrap()])
        .output()
        .expect("run t4 restore");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("restored revision 31"));
    let restored = Server::start_t4(&restored_dir, &[]);
    assert_eq!(every_revision(&restored, 11, 31).await, history);
    assert_eq!(restored.etcdctl(&["lease", "list"]).1, leases);
    assert_eq!(hash_kv(&restored, 0).await.unwrap().hash, hash);
    assert_ne!(ids(&restored).await, ids(&original).await, "a restored node is a new member of a new cluster");
}

/// A node's (member id, cluster id).
async fn ids(server: &Server) -> (u64, u64) {
    let status = maintenance(server).await.status(StatusRequest {}).await.unwrap().into_inner();
    let header = status.header.unwrap();
    (header.member_id, header.cluster_id)
}

async fn in_use(server: &Server) -> i64 {
    maintenance(server).await.status(StatusRequest {}).await.unwrap().into_inner().db_size_in_use
}

/// Runs `t4 restore` and returns its stderr if it failed.
fn restore(file: &Path, data_dir: &Path) -> Result<(), String> {
    let output = std::process::Command::new(common::t4_binary())
        .args(["restore", "--from-snapshot"])
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run t4 restore");
    if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_damaged_and_foreign_snapshots_and_leaves_nothing() {
    let (dir, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let original = Server::start_t4(dir.path(), &[]);
    write_history(&original).await;
    let file = work.path().join("t4.snapshot");
    assert!(original.etcdctl(&["snapshot", "save", file.to_str().unwrap()]).0);
    let bytes = std::fs::read(&file).unwrap();
    let target = work.path().join("target");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("cut short", bytes[..bytes.len() / 2].to_vec(), "SHA-256 does not match"),
        (
            "a flipped byte",
            {
                let mut b = bytes.clone();
                b[100] ^= 1;
                b
            },
            "SHA-256 does not match",
        ),
        ("empty", Vec::new(), "too short"),
    ];
    for (what, content, expected) in cases {
        let damaged = work.path().join("damaged");
        std::fs::write(&damaged, content).unwrap();
        let error = restore(&damaged, &target).expect_err(what);
        assert!(error.contains(expected), "{what}: {error}");
        assert!(!target.exists(), "{what}: nothing left behind");
    }
    // A snapshot of etcd (a bbolt file) is named as such.
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = Server::start_etcd(etcd_dir.path());
    let etcd_file = work.path().join("etcd.snapshot");
    assert!(etcd.etcdctl(&["snapshot", "save", etcd_file.to_str().unwrap()]).0);
    let error = restore(&etcd_file, &target).expect_err("a bbolt snapshot");
    assert!(error.contains("etcd snapshot is a bbolt file"), "{error}");
    assert!(!target.exists());
    // A data directory in use or holding anything is never overwritten.
    let error = restore(&file, dir.path()).expect_err("a data dir with a database");
    assert!(error.contains("is not empty"), "{error}");
    restore(&file, &target).expect("a good snapshot restores");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_client_that_stops_reading_or_goes_away_costs_nothing_lasting() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut client = server.client().await;
    let value = vec![7u8; 64 * 1024];
    for i in 0..64 {
        client.put(format!("big/{i}"), value.clone(), None).await.unwrap();
    }
    let mut stream = maintenance(&server).await.snapshot(SnapshotRequest {}).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("a first chunk");
    assert_eq!(first.blob.len(), 32 * 1024, "etcd's chunk size");
    assert!(first.remaining_bytes > 0);
    // The client stops reading: writes and reads go on.
    client.put("during", "snapshot", None).await.unwrap();
    assert_eq!(client.get("during", None).await.unwrap().kvs().len(), 1);
    drop(stream);
    let scratch = dir.path().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0) > 0 {
        assert!(Instant::now() < deadline, "the snapshot's scratch file outlived its client");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` bytes that do not compress (the store compresses its tables), different for each `seed`.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_reclaims_what_deletes_overwrites_and_compaction_freed() {
    const VALUE_BYTES: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut client = server.client().await;
    for i in 0..2000u64 {
        client.put(format!("d/{i:05}"), noise(i, VALUE_BYTES), None).await.unwrap();
    }
    let mut revision = 0;
    for i in (0..2000).step_by(2) {
        revision = client.delete(format!("d/{i:05}"), None).await.unwrap().header().unwrap().revision();
    }
    let physical = || Some(etcd_client::CompactionOptions::new().with_physical());
    client.compact(revision, physical()).await.unwrap();
    let (ok, _, err) = server.etcdctl(&["defrag"]);
    assert!(ok, "{err}");
    // The 1000 live values stay, twice (the current state and the history); the deleted half and
    // the log before the compaction are gone.
    let live = 1000 * VALUE_BYTES as i64;
    let first = in_use(&server).await;
    assert!((2 * live..=5 * live / 2).contains(&first), "in use after the first defrag: {first}");
    // Every live key overwritten and compacted: what the first defrag wrote out is reclaimed too.
    for i in (1..2000u64).step_by(2) {
        revision = client
            .put(format!("d/{i:05}"), noise(i + 7, VALUE_BYTES), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    client.compact(revision, physical()).await.unwrap();
    assert!(server.etcdctl(&["defrag"]).0);
    let second = in_use(&server).await;
    assert!((2 * live..=5 * live / 2).contains(&second), "in use after the second defrag: {second}");
    let count = client.get("d/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(count.count(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_answers_as_a_single_member_etcd() {
    use t4::proto::etcdserverpb::MoveLeaderRequest;
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    let mut answers = Vec::new();
    for server in [&etcd, &t4] {
        let own = ids(server).await.0;
        let mut maintenance = maintenance(server).await;
        let to_itself = maintenance.move_leader(MoveLeaderRequest { target_id: own }).await.map(|_| ());
        let elsewhere = maintenance.move_leader(MoveLeaderRequest { target_id: own ^ 1 }).await;
        let elsewhere = elsewhere.map(|_| ()).map_err(|s| (s.code(), s.message().to_string()));
        answers.push((to_itself.is_ok(), elsewhere));
    }
    assert_eq!(answers[1], answers[0]);
    assert_eq!(answers[1].1, Err((tonic::Code::FailedPrecondition, "etcdserver: bad leader transferee".to_string())));
}
