//! `etcdctl` (Debian's etcd-client 3.4) against T4: the commands an operator types.

mod common;

use common::Server;

#[test]
fn etcdctl_reads_writes_and_inspects_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &["--name", "node-a"]);
    let ok = |args: &[&str]| {
        let (success, out, err) = server.etcdctl(args);
        assert!(success, "etcdctl {args:?} failed: {err}");
        out
    };
    assert_eq!(ok(&["put", "greeting", "hello"]).trim(), "OK");
    assert_eq!(ok(&["get", "greeting"]), "greeting\nhello\n");
    ok(&["put", "dir/a", "1"]);
    ok(&["put", "dir/b", "2"]);
    assert_eq!(
        ok(&["get", "dir/", "--prefix", "--keys-only"]).split_whitespace().collect::<Vec<_>>(),
        ["dir/a", "dir/b"]
    );
    assert!(ok(&["get", "dir/", "--prefix", "-w", "json"]).contains("\"count\":2"));
    assert_eq!(ok(&["del", "dir/", "--prefix"]).trim(), "2");
    let txn = "value(\"greeting\") = \"hello\"\n\nput greeting bye\n\nput greeting nope\n\n";
    let out = run_with_stdin(&server, &["txn"], txn);
    assert!(out.starts_with("SUCCESS"), "txn output: {out}");
    assert_eq!(ok(&["get", "greeting", "--print-value-only"]).trim(), "bye");
    assert!(ok(&["compact", "3"]).contains("compacted revision 3"));
    let (success, _, err) = server.etcdctl(&["get", "greeting", "--rev", "2"]);
    assert!(!success && err.contains("required revision has been compacted"), "{err}");
    let status = ok(&["endpoint", "status", "-w", "json"]);
    assert!(status.contains("\"leader\"") && status.contains("\"raft_term\":1"), "{status}");
    let (healthy, out, err) = server.etcdctl(&["endpoint", "health"]);
    assert!(healthy && format!("{out}{err}").contains("is healthy"), "{out}{err}");
    let members = ok(&["member", "list"]);
    assert!(members.contains("node-a") && members.contains(&format!("http://{}", server.endpoint)), "{members}");
}

fn run_with_stdin(server: &Server, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}
