//! The maintenance calls etcd's own tools make, run against etcd 3.4 and against T4 side by side:
//! python-etcd3's (status, hash, compaction, defragment, snapshot, alarms, members, lock, lease) and
//! etcdctl's. T4 must pass every call etcd passes; the one expected difference (`etcdctl snapshot
//! status`, which reads bbolt files only) is pinned.

mod common;

use common::Server;

/// python-etcd3's maintenance calls against `server`: (call, passed) in order.
fn python_etcd3(server: &Server, scratch: &std::path::Path) -> Vec<(String, bool)> {
    let (host, port) = server.endpoint.rsplit_once(':').expect("host:port");
    let script = r#". scripts/lib/venv.sh && ensure_venv "$PWD/.venv" && exec .venv/bin/python tests/clients/maintenance_calls.py "$0" "$1" "$2""#;
    let output = std::process::Command::new("bash")
        .args(["-c", script, host, port, scratch.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let calls: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    for call in &calls {
        if call["ok"] != true {
            eprintln!("{} against {}: {}", call["call"], server.endpoint, call["detail"]);
        }
    }
    calls.iter().map(|c| (c["call"].as_str().unwrap().to_string(), c["ok"] == true)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3_maintenance_calls_pass_against_t4_as_against_etcd() {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    let scratch = tempfile::tempdir().unwrap();
    let (on_etcd, on_t4) = (python_etcd3(&etcd, scratch.path()), python_etcd3(&t4, scratch.path()));
    assert_eq!(on_etcd.len(), 10);
    assert!(on_etcd.iter().all(|(_, ok)| *ok), "etcd itself: {on_etcd:?}");
    assert_eq!(on_t4, on_etcd);
}

/// etcdctl's maintenance commands against `server`: (command, passed).
fn etcdctl_commands(server: &Server, scratch: &std::path::Path) -> Vec<(String, bool)> {
    for i in 0..10 {
        assert!(server.etcdctl(&["put", &format!("m/{i}"), "v"]).0);
    }
    let member = {
        let (_, out, _) = server.etcdctl(&["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
        format!("{:x}", status[0]["Status"]["header"]["member_id"].as_u64().expect("member id"))
    };
    let snapshot = scratch.join(format!("{}.snapshot", server.endpoint.replace(':', "_")));
    let snapshot = snapshot.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["endpoint", "status"],
        vec!["endpoint", "health"],
        vec!["endpoint", "hashkv"],
        vec!["compaction", "5"],
        vec!["compaction", "--physical", "8"],
        vec!["defrag"],
        vec!["snapshot", "save", snapshot],
        vec!["snapshot", "status", snapshot],
        vec!["alarm", "list"],
        vec!["alarm", "disarm"],
        vec!["member", "list"],
        vec!["move-leader", &member],
        vec!["lock", "maint-lock", "true"],
        vec!["--user", "root:pw", "get", "m/1"],
    ];
    commands
        .into_iter()
        .map(|args| {
            let (ok, _, err) = server.etcdctl(&args);
            if !ok {
                eprintln!("etcdctl {} against {}: {err}", args.join(" "), server.endpoint);
            }
            (args.iter().filter(|a| !a.starts_with('/')).copied().collect::<Vec<_>>().join(" "), ok)
        })
        .map(|(command, ok)| (command.replace(&member, "<member>"), ok))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_maintenance_commands_pass_against_t4_as_against_etcd() {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    let scratch = tempfile::tempdir().unwrap();
    let on_etcd = etcdctl_commands(&etcd, scratch.path());
    let on_t4 = etcdctl_commands(&t4, scratch.path());
    assert!(on_etcd.iter().all(|(_, ok)| *ok), "etcd itself: {on_etcd:?}");
    // `snapshot status` opens the file as bbolt: T4's snapshots are its own format (`t4 restore`).
    let expected: Vec<(String, bool)> =
        on_etcd.iter().map(|(command, ok)| (command.clone(), *ok && !command.starts_with("snapshot status"))).collect();
    assert_eq!(on_t4, expected);
}
