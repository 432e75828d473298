//! The KV API through the Rust `etcd-client` crate: what an etcd user sees.

mod common;

use common::Server;
use common::kv::code_and_message;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_deletes_track_versions_like_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut c = server.client().await;
    c.put("k", "v1", None).await.unwrap();
    let second = c.put("k", "v2", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(second.prev_key().unwrap().value(), b"v1");
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.create_revision(), kv.mod_revision(), kv.version()), (2, 3, 2));
    let deleted = c.delete("k", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(deleted.deleted(), 1);
    assert_eq!(deleted.prev_kvs()[0].value(), b"v2");
    c.put("k", "v3", None).await.unwrap();
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.create_revision(), kv.mod_revision(), kv.version()), (5, 5, 1), "a delete resets the version");
    // Deleting nothing does not create a revision.
    let none = c.delete("missing", None).await.unwrap();
    assert_eq!((none.deleted(), none.header().unwrap().revision()), (0, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_honour_prefix_limit_sort_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut c = server.client().await;
    for (k, v) in [("a/1", "z"), ("a/2", "y"), ("a/3", "x"), ("b/1", "w")] {
        c.put(k, v, None).await.unwrap();
    }
    let page = c.get("a/", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!(page.kvs().iter().map(|kv| kv.key_str().unwrap()).collect::<Vec<_>>(), ["a/1", "a/2"]);
    assert!(page.more());
    assert_eq!(page.count(), 3);
    let by_value = c
        .get("a/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Ascend)))
        .await
        .unwrap();
    assert_eq!(by_value.kvs().iter().map(|kv| kv.value_str().unwrap()).collect::<Vec<_>>(), ["x", "y", "z"]);
    let all = c.get("\0", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(all.count(), 4);
    let count = c.get("a/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((count.count(), count.kvs().len()), (3, 0));
    c.put("a/1", "changed", None).await.unwrap();
    let old = c.get("a/1", Some(GetOptions::new().with_revision(2))).await.unwrap();
    assert_eq!(old.kvs()[0].value(), b"z", "reads at a past revision see the old value");
    let future = c.get("a/1", Some(GetOptions::new().with_revision(1000))).await.unwrap_err();
    assert_eq!(
        code_and_message(future),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_compare_and_write_at_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut c = server.client().await;
    let rev = c.put("lock", "free", None).await.unwrap().header().unwrap().revision();
    let txn = Txn::new()
        .when([Compare::mod_revision("lock", CompareOp::Equal, rev)])
        .and_then([TxnOp::put("lock", "taken", None), TxnOp::put("owner", "me", None)])
        .or_else([TxnOp::get("lock", None)]);
    let won = c.txn(txn.clone()).await.unwrap();
    assert!(won.succeeded());
    let after = won.header().unwrap().revision();
    assert_eq!(after, rev + 1, "both puts share one revision");
    for key in ["lock", "owner"] {
        assert_eq!(c.get(key, None).await.unwrap().kvs()[0].mod_revision(), after);
    }
    let lost = c.txn(txn).await.unwrap();
    assert!(!lost.succeeded());
    assert_eq!(lost.header().unwrap().revision(), after, "a read-only branch writes nothing");
    let duplicate = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    assert_eq!(
        code_and_message(c.txn(duplicate).await.unwrap_err()),
        (tonic::Code::InvalidArgument, "etcdserver: duplicate key given in txn request".into())
    );
    let too_many = Txn::new().and_then((0..129).map(|i| TxnOp::put(format!("k{i}"), "v", None)).collect::<Vec<_>>());
    assert_eq!(
        code_and_message(c.txn(too_many).await.unwrap_err()),
        (tonic::Code::InvalidArgument, "etcdserver: too many operations in txn request".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_refuses_old_reads_and_keeps_newer_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut c = server.client().await;
    for i in 0..5 {
        c.put("k", format!("v{i}"), None).await.unwrap(); // revisions 2..=6
    }
    c.compact(4, None).await.unwrap();
    let compacted = c.get("k", Some(GetOptions::new().with_revision(3))).await.unwrap_err();
    assert_eq!(
        code_and_message(compacted),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into())
    );
    assert_eq!(c.get("k", Some(GetOptions::new().with_revision(4))).await.unwrap().kvs()[0].value(), b"v2");
    assert_eq!(c.get("k", Some(GetOptions::new().with_revision(5))).await.unwrap().kvs()[0].value(), b"v3");
    let again = c.compact(4, None).await.unwrap_err();
    assert_eq!(code_and_message(again).0, tonic::Code::OutOfRange);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_etcds_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &["--max-request-bytes", "1024"]);
    let mut c = server.client().await;
    let empty = c.put("", "v", None).await.unwrap_err();
    assert_eq!(code_and_message(empty), (tonic::Code::InvalidArgument, "etcdserver: key is not provided".into()));
    let big = c.put("k", vec![b'x'; 2048], None).await.unwrap_err();
    assert_eq!(code_and_message(big), (tonic::Code::InvalidArgument, "etcdserver: request is too large".into()));
    let lease = c.put("k", "v", Some(PutOptions::new().with_lease(42))).await.unwrap_err();
    assert_eq!(code_and_message(lease), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
    let resp = c.get("k", None).await.unwrap();
    assert_eq!((resp.count(), resp.header().unwrap().revision()), (0, 1), "no failed request wrote anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_revisions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_t4(dir.path(), &[]);
    let mut c = server.client().await;
    for i in 0..20 {
        c.put(format!("k{i:02}"), format!("v{i}"), None).await.unwrap();
    }
    c.delete("k00", None).await.unwrap();
    drop(c);
    assert!(server.stop().success());
    let server = Server::start_t4(dir.path(), &[]);
    let mut c = server.client().await;
    let all = c.get("k", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(all.count(), 19);
    assert_eq!(all.header().unwrap().revision(), 22);
    assert_eq!(c.put("next", "x", None).await.unwrap().header().unwrap().revision(), 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                revs.push(c.put(format!("w{w}/{i}"), "v", None).await.unwrap().header().unwrap().revision());
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (2..402).collect::<Vec<i64>>(), "400 puts took revisions 2..=401 exactly once");
}
