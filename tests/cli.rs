//! The `t4` command line: help, environment variables, and clear errors for unusable settings.

mod common;

use std::process::Command;

use common::{Server, t4_binary};

fn t4(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(t4_binary()).args(args).envs(env.iter().copied()).output().expect("run t4");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn help_lists_every_run_flag_with_its_environment_variable() {
    let (ok, out, _) = t4(&["--help"], &[]);
    assert!(ok && out.contains("run"), "{out}");
    let (ok, out, _) = t4(&["run", "--help"], &[]);
    assert!(ok);
    for (flag, env) in [
        ("--data-dir", "T4_DATA_DIR"),
        ("--listen", "T4_LISTEN"),
        ("--cores", "T4_CORES"),
        ("--max-request-bytes", "T4_MAX_REQUEST_BYTES"),
        ("--max-txn-ops", "T4_MAX_TXN_OPS"),
        ("--name", "T4_NAME"),
        ("--log", "T4_LOG"),
    ] {
        assert!(out.contains(flag) && out.contains(env), "{flag}/{env} missing from:\n{out}");
    }
    assert!(out.contains("./t4-data") && out.contains("127.0.0.1:3379"), "defaults shown:\n{out}");
}

#[test]
fn a_locked_data_dir_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start_t4(dir.path(), &[]);
    let err = Server::try_start_t4(dir.path(), &[]).err().expect("second server must not start");
    let holder = format!("is in use by t4 (pid {}, serving {})", first.pid(), first.endpoint);
    assert!(err.contains(&holder), "{err}");
}

#[test]
fn a_busy_port_is_refused_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = t4(&["run", "--data-dir", dir.path().to_str().unwrap(), "--listen", &addr], &[]);
    assert!(!ok && err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn an_unusable_data_dir_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let (ok, _, err) = t4(&["run", "--data-dir", file.to_str().unwrap(), "--listen", "127.0.0.1:0"], &[]);
    assert!(!ok && err.contains("data directory") && err.contains("not-a-dir"), "{err}");
}

#[test]
fn flags_win_over_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let env_dir = dir.path().join("from-env");
    let flag_dir = dir.path().join("from-flag");
    // The environment alone is honoured...
    let mut child = Command::new(t4_binary())
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("T4_DATA_DIR", &env_dir)
        .env("T4_NAME", "env-name")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_dir(&env_dir);
    let _ = child.kill();
    let _ = child.wait();
    // ...and a flag beats it.
    let server = Server::start_t4(&flag_dir, &["--name", "flag-name"]);
    assert!(flag_dir.join("LOCK").exists());
    let (_, members, _) = server.etcdctl(&["member", "list"]);
    assert!(members.contains("flag-name"), "{members}");
    let child = Command::new(t4_binary())
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&flag_dir)
        .env("T4_DATA_DIR", &env_dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is in use by t4"),
        "the flag's directory (locked by the running server) was used, not the environment's"
    );
}

fn wait_for_dir(dir: &std::path::Path) {
    let deadline = std::time::Instant::now() + common::STARTUP_TIMEOUT;
    while !dir.join("LOCK").exists() {
        assert!(std::time::Instant::now() < deadline, "{} never created", dir.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every file and directory under `dir` with group or other permission bits set.
fn shared_paths(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut shared = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        if meta.permissions().mode() & 0o077 != 0 {
            shared.push(format!("{} {:o}", path.display(), meta.permissions().mode() & 0o777));
        }
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).expect("read dir").map(|e| e.expect("entry").path()));
        }
    }
    shared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_object_store_files_are_the_owners_only() {
    let dir = tempfile::tempdir().unwrap();
    let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
    let mut server = Server::start_t4(&data, &["--object-store-dir", objects.to_str().unwrap()]);
    let mut client = server.client().await;
    for i in 0..50 {
        client.put(format!("k{i}"), "secret", None).await.expect("put");
    }
    server.stop();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700, "etcd's data dir mode");
    assert_eq!(shared_paths(&data), Vec::<String>::new(), "files others could read");
    assert_eq!(shared_paths(&objects), Vec::<String>::new(), "objects others could read");
}
