//! A fatal failure in any of the node's actors stops the whole node, and `t4 run` exits non-zero
//! naming the actor and its error: never a node that keeps answering with a dead part. Each test
//! provokes one failure through a fault point (`FAILPOINTS`, compiled into test builds).

mod common;

use std::time::Duration;

use common::Server;

/// Starts t4 with fault point `point` set to `return`, runs `etcdctl` with each of `commands` (their
/// outcome does not matter: the failure is what is looked at), and returns the exit status and
/// stderr of the node, which must stop by itself.
fn provoke(point: &str, commands: &[&[&str]]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let failpoints = format!("{point}=return");
    let mut server = Server::try_start_t4_env(dir.path(), &[], &[("FAILPOINTS", failpoints.as_str())])
        .expect("t4 starts (the fault point fires on first use)");
    for command in commands {
        let mut args = vec!["--command-timeout", "5s"];
        args.extend_from_slice(command);
        let _ = server.etcdctl(&args);
    }
    let status = server.wait_exit(Duration::from_secs(30)).expect("the node stops by itself after a fatal error");
    (status, server.stderr())
}

#[test]
fn a_failed_commit_stops_the_node_with_the_committers_error() {
    let (status, stderr) = provoke("store-commit", &[&["put", "k", "v"]]);
    assert!(!status.success(), "exits with a failure: {status:?}");
    assert!(
        stderr.contains("t4: error: the node stopped: committer failed:") && stderr.contains("injected commit failure"),
        "stderr names the actor and its error: {stderr}"
    );
}

#[test]
fn a_failed_physical_compaction_stops_the_node_with_the_compactors_error() {
    let (status, stderr) = provoke("store-compact", &[&["put", "k", "v1"], &["put", "k", "v2"], &["compact", "2"]]);
    assert!(!status.success(), "exits with a failure: {status:?}");
    assert!(
        stderr.contains("t4: error: the node stopped: compactor failed:")
            && stderr.contains("injected compaction failure"),
        "stderr names the actor and its error: {stderr}"
    );
}

#[test]
fn a_store_the_sequencer_cannot_read_stops_the_node_with_the_sequencers_error() {
    let (status, stderr) = provoke("sequencer-read-view", &[&["put", "k", "v"]]);
    assert!(!status.success(), "exits with a failure: {status:?}");
    assert!(
        stderr.contains("t4: error: the node stopped: sequencer failed:")
            && stderr.contains("injected read view failure"),
        "stderr names the actor and its error: {stderr}"
    );
}
