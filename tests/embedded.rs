//! The embedded API from a tokio program: a node in-process, no network.

use t4::{Compare, CompareOp, Config, Error, Node, Txn, TxnOp, TxnOpResponse};

#[tokio::test]
async fn embedded_node_reads_writes_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(Config::new(dir.path())).unwrap();
    assert_eq!(node.local_addr(), None, "an embedded node serves no network API by default");
    let r1 = node.put("app/a", "1").await.unwrap();
    let r2 = node.put("app/b", "2").await.unwrap();
    node.put("other", "x").await.unwrap();
    assert_eq!((r1, r2), (2, 3));
    let a = node.get("app/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.mod_revision, a.version), (&b"1"[..], 2, 1));
    assert_eq!(node.get("missing").await.unwrap(), None);
    let listed: Vec<_> = node.list("app/").await.unwrap().into_iter().map(|kv| kv.key).collect();
    assert_eq!(listed, [b"app/a".to_vec(), b"app/b".to_vec()]);
    assert_eq!(node.count("app/").await.unwrap(), 2);
    assert_eq!(node.count("").await.unwrap(), 3);
    assert_eq!(node.range("app/b", "z").await.unwrap().len(), 2);

    let txn = Txn::new()
        .when([Compare::value("app/a", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("app/a", "10"), TxnOp::get("app/b")])
        .or_else([TxnOp::get("app/a")]);
    let resp = node.txn(txn.clone()).await.unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, 5);
    assert!(matches!(&resp.responses[0], TxnOpResponse::Put { prev: Some(kv) } if kv.value == b"1"));
    assert!(matches!(&resp.responses[1], TxnOpResponse::Get { kvs } if kvs[0].value == b"2"));
    assert!(!node.txn(txn).await.unwrap().succeeded);

    assert_eq!(node.delete("app/b").await.unwrap(), 1);
    assert_eq!(node.delete("app/b").await.unwrap(), 0);
    node.compact(node.revision().await.unwrap()).await.unwrap();
    assert!(matches!(node.compact(2).await, Err(Error::Compacted)));
    assert!(matches!(node.put("", "v").await, Err(Error::EmptyKey)));

    node.close().await.unwrap();
    node.close().await.unwrap(); // idempotent
    assert!(matches!(node.get("app/a").await, Err(Error::Closed)));
    assert!(matches!(node.put("k", "v").await, Err(Error::Closed)));

    let reopened = Node::open(Config::new(dir.path())).unwrap();
    assert_eq!(reopened.get("app/a").await.unwrap().unwrap().value, b"10");
    assert_eq!(reopened.revision().await.unwrap(), 6);
    assert_eq!(reopened.put("after", "reopen").await.unwrap(), 7);
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn a_second_node_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(Config::new(dir.path())).unwrap();
    assert!(matches!(Node::open(Config::new(dir.path())), Err(Error::DataDirLocked(_))));
    node.close().await.unwrap();
}

#[test]
fn embedded_node_works_without_any_async_runtime_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(Config::new(dir.path())).unwrap();
    futures_lite::future::block_on(async {
        node.put("k", "v").await.unwrap();
        assert_eq!(node.get("k").await.unwrap().unwrap().value, b"v");
        node.close().await.unwrap();
    });
}
