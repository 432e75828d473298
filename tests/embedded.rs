//! The embedded API from a tokio program: a node in-process, no network.

use t4::{Compare, CompareOp, Config, Error, EventKind, Node, Txn, TxnOp, TxnOpResponse, WatchOptions};

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
    assert!(matches!(Node::open(Config::new(dir.path())), Err(Error::DataDirLocked { .. })));
    node.close().await.unwrap();
}

#[tokio::test]
async fn a_node_that_fails_to_open_releases_its_port() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(Config::new(dir.path())).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = Config::new(dir.path());
    config.listen = Some(addr);
    // The port is bound first, then the locked data dir refuses the node...
    assert!(matches!(Node::open(config), Err(Error::DataDirLocked { .. })));
    // ...which must not keep the port.
    std::net::TcpListener::bind(addr).expect("the refused node released its port");
    node.close().await.unwrap();
}

#[test]
fn invalid_settings_are_refused_before_the_data_dir_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.max_txn_ops = 0;
    let Err(Error::Setting { setting, .. }) = Node::open(config) else { panic!("max_txn_ops 0 accepted") };
    assert_eq!(setting, "--max-txn-ops");
    assert!(!dir.path().join("data").exists());
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

/// Bounds every wait on the node in these tests.
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

async fn next_event(watch: &mut t4::Watch) -> t4::Event {
    tokio::time::timeout(WAIT, watch.next()).await.expect("an event in time").expect("the watch goes on").unwrap()
}

#[tokio::test]
async fn embedded_watches_replay_history_then_follow_live_writes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(Config::new(dir.path())).unwrap();
    let first = node.put("app/a", "1").await.unwrap();
    node.put("other", "x").await.unwrap();
    let options = WatchOptions { prev_kv: true, ..Default::default() };
    let mut watch = node.watch_prefix("app/", first, options).await.unwrap();
    let replayed = next_event(&mut watch).await;
    assert_eq!((replayed.kind, replayed.kv.mod_revision, replayed.prev_kv), (EventKind::Put, first, None));
    let second = node.put("app/a", "2").await.unwrap();
    let live = next_event(&mut watch).await;
    assert_eq!((live.kv.value.as_slice(), live.kv.mod_revision, live.kv.version), (&b"2"[..], second, 2));
    assert_eq!(live.prev_kv.unwrap().value, b"1");
    node.delete("app/a").await.unwrap();
    let deleted = next_event(&mut watch).await;
    assert_eq!(
        (deleted.kind, deleted.kv.key.as_slice(), deleted.kv.value.len()),
        (EventKind::Delete, &b"app/a"[..], 0)
    );

    let mut puts_only = node.watch("k", "", 0, WatchOptions { no_delete: true, ..Default::default() }).await.unwrap();
    node.put("k", "v").await.unwrap();
    node.delete("k").await.unwrap();
    let revision = node.put("k", "w").await.unwrap();
    let event = next_event(&mut puts_only).await;
    assert_eq!((event.kind, event.kv.value.as_slice()), (EventKind::Put, &b"v"[..]));
    assert_eq!(next_event(&mut puts_only).await.kv.mod_revision, revision, "the delete is filtered out");

    node.compact(revision).await.unwrap();
    let mut compacted = node.watch_prefix("app/", first, WatchOptions::default()).await.unwrap();
    let outcome = tokio::time::timeout(WAIT, compacted.next()).await.unwrap();
    assert!(matches!(outcome, Some(Err(Error::Compacted))), "{outcome:?}");
    node.close().await.unwrap();
    let ended = tokio::time::timeout(WAIT, watch.next()).await.unwrap();
    assert!(ended.is_none(), "closing the node ends its watches: {ended:?}");
}

#[tokio::test]
async fn embedded_leases_attach_keys_renew_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(Config::new(dir.path())).unwrap();
    let lease = node.grant(1).await.unwrap();
    assert_eq!(lease.ttl, 2, "TTLs below etcd's minimum are raised to it");
    node.put_with_lease("session/a", "1", lease.id).await.unwrap();
    node.txn(Txn::new().and_then([TxnOp::put_with_lease("session/b", "2", lease.id)])).await.unwrap();
    assert!(matches!(node.put_with_lease("x", "1", lease.id + 1).await, Err(Error::LeaseNotFound)));
    assert_eq!(node.keep_alive(lease.id).await.unwrap(), 2);
    let status = node.time_to_live(lease.id).await.unwrap();
    assert_eq!((status.granted_ttl, status.keys.len()), (2, 2));
    assert!(status.ttl <= 2);
    assert_eq!(node.leases().await.unwrap(), vec![lease.id]);
    assert_eq!(node.get("session/a").await.unwrap().unwrap().lease, lease.id);

    let before = node.revision().await.unwrap();
    node.revoke(lease.id).await.unwrap();
    assert_eq!(node.revision().await.unwrap(), before + 1, "both keys are deleted at one revision");
    assert_eq!(node.count("session/").await.unwrap(), 0);
    assert!(matches!(node.time_to_live(lease.id).await, Err(Error::LeaseNotFound)));
    assert!(matches!(node.keep_alive(lease.id).await, Err(Error::LeaseNotFound)));
    assert!(matches!(node.revoke(lease.id).await, Err(Error::LeaseNotFound)));
    assert!(node.leases().await.unwrap().is_empty());
    node.close().await.unwrap();
}

#[tokio::test]
async fn a_watch_from_now_sees_every_write_made_after_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(Config::new(dir.path())).unwrap();
    // A write right after the watch returns must not slip in before the node created it.
    for i in 0..200 {
        let key = format!("race/{i}");
        let mut watch = node.watch(key.as_str(), "", 0, WatchOptions::default()).await.unwrap();
        let revision = node.put(key.as_str(), "v").await.unwrap();
        assert_eq!(next_event(&mut watch).await.kv.mod_revision, revision, "watch {i}");
    }
    node.close().await.unwrap();
}
