//! The harness itself: t4 starts on a free port, answers, and stops cleanly on SIGTERM.

mod common;

use common::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_starts_on_a_free_port_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_t4(&dir.path().join("data"), &[]);
    let mut client = server.client().await;
    let put = client.put("k", "v", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), 2, "an empty store is at revision 1, as etcd's");
    // A multi-thread runtime keeps the client's connection task running while stop() blocks, so it
    // answers the server's drain ping and the graceful shutdown completes at once.
    drop(client);
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
}
