//! The harness itself: t4 starts on a free port, answers, and stops cleanly on SIGTERM.

mod common;

use common::Server;

#[tokio::test]
async fn t4_starts_on_a_free_port_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_t4(&dir.path().join("data"), &[]);
    let mut client = server.client().await;
    let put = client.put("k", "v", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), 2, "an empty store is at revision 1, as etcd's");
    drop(client); // a current-thread runtime blocked in stop() could not answer the drain ping
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
}
