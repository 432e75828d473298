//! Every object store keeps one contract (`tests/common/object_contract.rs`): the memory and
//! directory stores, and the S3 store on moto. Then what only the S3 store has: prefixes, paging,
//! errors and outages, and callers on any executor.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::moto::Moto;
use common::object_contract::{check_contract, check_racing_creates};
use futures_lite::future::block_on;
use t4::object::{
    DirStore, MemStore, ObjectError, ObjectResult, ObjectStore, S3Config, S3Credentials, S3Retry, S3Store,
};

/// How long a call to an unreachable store may take to give up, with [`quick_retry`].
const GIVE_UP_WITHIN: Duration = Duration::from_secs(30);

fn s3(config: S3Config) -> Arc<dyn ObjectStore> {
    Arc::new(S3Store::open(config).expect("open the S3 store"))
}

/// Retries that give up after about a second, for outage tests.
fn quick_retry() -> S3Retry {
    S3Retry {
        attempts_max: 3,
        attempt_timeout: Duration::from_millis(300),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    }
}

/// Runs `call` on a thread of its own and waits for it at most `limit`.
fn within<T: Send + 'static>(limit: Duration, call: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(call()));
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("the call did not return within {limit:?}"))
}

fn fatal_message<T: std::fmt::Debug>(result: ObjectResult<T>) -> String {
    match result {
        Err(ObjectError::Fatal(message)) => message,
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

#[test]
fn the_memory_store_keeps_the_contract() {
    check_contract(Arc::new(MemStore::new()));
    check_racing_creates(Arc::new(MemStore::new()));
}

#[test]
fn the_directory_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    check_contract(Arc::new(DirStore::open(dir.path().join("a")).unwrap()));
    check_racing_creates(Arc::new(DirStore::open(dir.path().join("b")).unwrap()));
    // Two handles on one folder (two processes, say) still let only one racer win.
    let shared = dir.path().join("c");
    let (one, two) = (DirStore::open(&shared).unwrap(), DirStore::open(&shared).unwrap());
    block_on(one.put_if_absent("k", b"1".to_vec())).unwrap();
    assert!(matches!(block_on(two.put_if_absent("k", b"2".to_vec())), Err(ObjectError::PreconditionFailed(_))));
    for reserved in [".t4-lock", ".t4-tmp/x", "a%/b", "a%"] {
        assert!(matches!(block_on(one.put(reserved, vec![])), Err(ObjectError::Fatal(_))), "{reserved}");
    }
}

#[test]
fn the_s3_store_keeps_the_contract_on_moto() {
    let moto = Moto::start();
    check_contract(s3(moto.s3_config(""))); // at the bucket's root
    check_racing_creates(s3(moto.s3_config("race/")));
}

#[test]
fn s3_stores_under_different_prefixes_do_not_see_each_other() {
    let moto = Moto::start();
    let (x, y, xy, root) =
        (s3(moto.s3_config("x")), s3(moto.s3_config("/y/")), s3(moto.s3_config("xy")), s3(moto.s3_config("")));
    block_on(async {
        x.put("k", b"x".to_vec()).await.unwrap();
        y.put("k", b"y".to_vec()).await.unwrap();
        y.put("k2", b"y2".to_vec()).await.unwrap();
        xy.put("k", b"xy".to_vec()).await.unwrap();
        assert_eq!(x.get("k").await.unwrap().unwrap().bytes, b"x");
        assert_eq!(y.get("k").await.unwrap().unwrap().bytes, b"y");
        assert_eq!(x.get("k2").await.unwrap(), None);
        assert_eq!(x.list("", None).await.unwrap(), ["k"], "`x` does not list `xy`'s keys");
        assert_eq!(y.list("", None).await.unwrap(), ["k", "k2"]);
        assert_eq!(y.list("k", Some("k")).await.unwrap(), ["k2"]);
        assert_eq!(root.list("", None).await.unwrap(), ["x/k", "xy/k", "y/k", "y/k2"]);
        // Conditions and deletes stay inside the prefix too.
        x.put_if_absent("k2", b"x2".to_vec()).await.expect("`y/k2` is not `x/k2`");
        x.delete_many(&["k".to_string(), "k2".to_string()]).await.unwrap();
        assert_eq!(root.list("", None).await.unwrap(), ["xy/k", "y/k", "y/k2"]);
    });
}

#[test]
fn s3_listings_page_past_a_thousand_keys() {
    let moto = Moto::start();
    let store = s3(moto.s3_config("many"));
    let keys: Vec<String> = (0..1100).map(|i| format!("wal/{i:05}")).collect();
    std::thread::scope(|scope| {
        for share in keys.chunks(keys.len().div_ceil(4)) {
            let store = store.clone();
            scope.spawn(move || {
                for key in share {
                    block_on(store.put(key, key.as_bytes().to_vec())).unwrap();
                }
            });
        }
    });
    assert_eq!(block_on(store.list("wal/", None)).unwrap(), keys);
    assert_eq!(block_on(store.list("wal/", Some("wal/00099"))).unwrap(), keys[100..]);
    assert_eq!(block_on(store.list("", Some("wal/01098"))).unwrap(), ["wal/01099"]);
    // 1100 keys take two DeleteObjects requests.
    block_on(store.delete_many(&keys)).unwrap();
    assert!(block_on(store.list("", None)).unwrap().is_empty());
}

#[test]
fn of_sixteen_racing_s3_put_if_match_on_one_etag_exactly_one_wins() {
    let moto = Moto::start();
    let store = s3(moto.s3_config("t4"));
    let mut etag = block_on(store.put("manifest/current", b"start".to_vec())).unwrap();
    for round in 0..3u8 {
        let won: Vec<(u8, String)> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..16u8)
                .map(|i| {
                    let (store, etag) = (store.clone(), etag.clone());
                    scope.spawn(move || match block_on(store.put_if_match("manifest/current", vec![round, i], &etag)) {
                        Ok(new_etag) => Some((i, new_etag)),
                        Err(ObjectError::PreconditionFailed(_)) => None,
                        Err(e) => panic!("racer {i}: {e}"),
                    })
                })
                .collect();
            racers.into_iter().filter_map(|r| r.join().expect("racer")).collect()
        });
        assert_eq!(won.len(), 1, "round {round}: exactly one writer replaces the object: {won:?}");
        let current = block_on(store.get("manifest/current")).unwrap().unwrap();
        assert_eq!((current.bytes, &current.etag), (vec![round, won[0].0], &won[0].1), "round {round}");
        etag = current.etag;
    }
}

#[test]
fn a_missing_s3_bucket_is_fatal_and_named() {
    let moto = Moto::start();
    let store = s3(S3Config { bucket: "t4-no-such-bucket".into(), ..moto.s3_config("t4") });
    let message = fatal_message(block_on(store.put("k", b"v".to_vec())));
    assert!(message.contains("t4-no-such-bucket") && message.contains("NoSuchBucket"), "{message}");
    // A missing bucket is not a refused precondition, even where a missing key would be one.
    fatal_message(block_on(store.put_if_absent("k", b"v".to_vec())));
    fatal_message(block_on(store.put_if_match("k", b"v".to_vec(), "0123")));
    let message = fatal_message(block_on(store.get("k")));
    assert!(message.contains("t4-no-such-bucket") && message.contains("NoSuchBucket"), "{message}");
    let message = fatal_message(block_on(store.list("", None)));
    assert!(message.contains("t4-no-such-bucket") && message.contains("NoSuchBucket"), "{message}");
    fatal_message(block_on(store.delete("k")));
    fatal_message(block_on(store.delete_many(&["k".to_string()])));
}

#[test]
fn an_s3_store_on_a_closed_port_gives_up_as_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let credentials = S3Credentials::Static { access_key_id: "t4-test".into(), secret_access_key: "secret".into() };
    let config = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        retry: quick_retry(),
        ..S3Config::new("t4-test", credentials)
    };
    let store = s3(config);
    let result = within(GIVE_UP_WITHIN, move || block_on(store.put("wal/a", b"v".to_vec())));
    match result {
        Err(ObjectError::Unavailable(message)) => {
            assert!(message.contains("s3://t4-test/wal/a") && message.contains("3 attempts"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn a_paused_s3_server_makes_calls_unavailable_until_it_resumes() {
    let moto = Moto::start();
    let store = s3(S3Config { retry: quick_retry(), ..moto.s3_config("t4") });
    block_on(store.put("k", b"v".to_vec())).unwrap();
    moto.pause();
    let paused = store.clone();
    let result = within(GIVE_UP_WITHIN, move || block_on(paused.get("k")));
    moto.resume();
    match result {
        Err(ObjectError::Unavailable(message)) => assert!(message.contains("no answer within"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(block_on(store.get("k")).unwrap().unwrap().bytes, b"v");
}

#[test]
fn s3_calls_work_from_glommio_and_from_another_tokio_runtime() {
    let moto = Moto::start();
    let store = s3(moto.s3_config("executors"));
    let on_glommio = store.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let etag = on_glommio.put_if_absent("glommio", b"g".to_vec()).await.unwrap();
            assert_eq!(on_glommio.get("glommio").await.unwrap().unwrap().etag, etag);
        })
        .unwrap()
        .join()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        store.put("tokio", b"t".to_vec()).await.unwrap();
        assert_eq!(store.list("", None).await.unwrap(), ["glommio", "tokio"]);
    });
}
