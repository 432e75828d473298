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
        ("--advertise-client-urls", "T4_ADVERTISE_CLIENT_URLS"),
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

/// Runs `t4 run` on a fresh data dir with `args` (expected to be refused): its stderr, and
/// whether the data dir exists afterwards.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (String, bool) {
    let dir = tempfile::tempdir().unwrap();
    refused_on(&dir.path().join("data"), args, env)
}

/// Like [`refused`], on the data dir `data`.
fn refused_on(data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (String, bool) {
    let mut all = vec!["run", "--data-dir", data.to_str().unwrap()];
    if !args.contains(&"--listen") {
        all.extend(["--listen", "127.0.0.1:0"]);
    }
    all.extend_from_slice(args);
    let child = Command::new(t4_binary())
        .args(&all)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run t4");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(common::STARTUP_TIMEOUT) else {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("{args:?} {env:?} was accepted: t4 is running");
    };
    let out = out.expect("wait for t4");
    assert!(!out.status.success(), "{args:?} {env:?} was accepted");
    (String::from_utf8_lossy(&out.stderr).into(), data.exists())
}

#[test]
fn object_store_flags_without_a_store_are_refused_naming_the_flag() {
    for flag in [
        ["--s3-prefix", "p/"],
        ["--s3-endpoint", "http://127.0.0.1:9000"],
        ["--s3-region", "eu-west-1"],
        ["--s3-profile", "ops"],
        ["--wal-sync-upload", "false"],
        ["--wal-upload-timeout-ms", "500"],
        ["--checkpoint-entries", "100"],
        ["--checkpoint-interval", "15"], // its default, given explicitly
    ] {
        let (err, created) = refused(&flag, &[]);
        assert!(err.contains(&format!("{} is set, but no object store is", flag[0])), "{flag:?}: {err}");
        assert!(err.contains("--s3-bucket or --object-store-dir"), "{err}");
        assert!(!created, "{flag:?} created the data dir");
    }
    let (err, _) = refused(&[], &[("T4_S3_REGION", "eu-west-1"), ("T4_S3_PREFIX", "p/")]);
    assert!(err.contains("T4_S3_PREFIX, T4_S3_REGION are set, but no object store is"), "{err}");
}

#[test]
fn object_store_flags_with_a_store_start_and_are_named_in_the_start_line() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let objects = objects.to_str().unwrap();
    let args = ["--listen", "127.0.0.1:0", "--object-store-dir", objects, "--s3-region", "eu"];
    let mut server = Server::try_start_t4_args(&dir.path().join("data"), &args, &[("T4_WAL_SYNC_UPLOAD", "0")])
        .expect("a store with its flags starts");
    assert!(server.stop().success());
    let log = server.stderr();
    assert!(log.contains(&format!("object_store=dir {objects}, async upload")), "{log}");
}

#[test]
fn the_start_line_says_when_no_object_store_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::try_start_t4_args(dir.path(), &["--listen", "127.0.0.1:0"], &[]).expect("start");
    assert!(server.stop().success());
    let log = server.stderr();
    assert!(log.contains("object_store=none (local disk only)"), "{log}");
}

#[test]
fn boolean_variables_take_one_and_zero_and_yes_and_no() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    for (value, mode) in [("1", "sync"), ("0", "async"), ("yes", "sync"), ("off", "async"), ("true", "sync")] {
        let args = ["--listen", "127.0.0.1:0", "--object-store-dir", objects.to_str().unwrap()];
        let mut server = Server::try_start_t4_args(&dir.path().join("data"), &args, &[("T4_WAL_SYNC_UPLOAD", value)])
            .unwrap_or_else(|e| panic!("T4_WAL_SYNC_UPLOAD={value}: {e}"));
        assert!(server.stop().success());
        let log = server.stderr();
        assert!(log.contains(&format!(", {mode} upload")), "T4_WAL_SYNC_UPLOAD={value}: {log}");
    }
    let (err, _) = refused(&["--object-store-dir", objects.to_str().unwrap()], &[("T4_WAL_SYNC_UPLOAD", "maybe")]);
    assert!(err.contains("'maybe'") && err.contains("--wal-sync-upload"), "{err}");
}

#[test]
fn unusable_settings_are_refused_naming_the_flag() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let too_many = (cpus + 1).to_string();
    for (args, expected) in [
        (["--max-request-bytes", "0"], "invalid --max-request-bytes: must be at least 1"),
        (["--max-txn-ops", "0"], "invalid --max-txn-ops: must be at least 1"),
        (["--cores", "0"], "invalid --cores: must be at least 1"),
        (["--cores", too_many.as_str()], &format!("invalid --cores: {too_many} is more than the {cpus} CPUs")),
        (["--log", "t4=loud"], "invalid --log filter \"t4=loud\""),
    ] {
        let (err, created) = refused(&args, &[]);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!created, "{args:?} created the data dir");
    }
    let (err, _) = refused(&[], &[("T4_LOG", "info,[")]);
    assert!(err.contains("invalid --log filter \"info,[\""), "{err}");
}

#[test]
fn listen_takes_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::try_start_t4_args(dir.path(), &["--listen", "localhost:0"], &[]).expect("localhost resolves");
    let addr: std::net::SocketAddr = server.endpoint.parse().expect("an address printed");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let (ok, _, err) = server.etcdctl(&["put", "k", "v"]);
    assert!(ok, "{err}");
    let (err, _) = refused(&["--listen", "no-such-host.invalid:3379"], &[]);
    assert!(err.contains("--listen") && err.contains("no-such-host.invalid:3379"), "{err}");
}

/// The client URLs etcdctl's `member list` shows for the one member.
fn client_urls(server: &Server) -> String {
    let (ok, out, err) = server.etcdctl(&["member", "list"]);
    assert!(ok, "{err}");
    // `<id>, started, <name>, <peer urls>, <client urls>, <is learner>`
    out.trim().split(", ").nth(4).expect("client urls column").to_string()
}

#[test]
fn member_list_advertises_the_listen_address_never_an_unspecified_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(&dir.path().join("a"), &[]);
    assert_eq!(client_urls(&server), format!("http://{}", server.endpoint));
    drop(server);
    let mut server = Server::try_start_t4_args(&dir.path().join("b"), &["--listen", "0.0.0.0:0"], &[]).expect("start");
    let port = server.endpoint.rsplit_once(':').unwrap().1.to_string();
    server.endpoint = format!("127.0.0.1:{port}");
    assert_eq!(client_urls(&server), format!("http://127.0.0.1:{port}"));
}

#[test]
fn member_list_advertises_the_given_client_urls() {
    let dir = tempfile::tempdir().unwrap();
    let urls = "http://db1.example:2379,https://10.1.2.3:2379";
    let server = Server::start_t4(dir.path(), &["--advertise-client-urls", urls]);
    assert_eq!(client_urls(&server), urls);
    let (err, _) = refused(&["--advertise-client-urls", "db1.example:2379"], &[]);
    assert!(err.contains("--advertise-client-urls") && err.contains("http://"), "{err}");
}

#[test]
fn a_busy_port_leaves_no_data_dir_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (err, created) = refused(&["--listen", &addr], &[]);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!created, "the data dir was created although the node could not listen");
}

#[test]
fn logs_name_the_version_and_the_shutdown_without_colours_or_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::try_start_t4_args(dir.path(), &["--listen", "127.0.0.1:0"], &[]).expect("start");
    assert!(server.stop().success());
    let log = server.stderr(); // a pipe, not a terminal
    assert!(!log.contains('\x1b'), "ANSI escapes in:\n{log}");
    assert!(!log.contains("Some("), "Debug output in:\n{log}");
    let start = log.lines().find(|l| l.contains("t4 is serving")).expect("a start line");
    assert!(start.contains(&format!("version={}", env!("CARGO_PKG_VERSION"))), "{start}");
    assert!(start.contains(&format!("listen={}", server.endpoint)), "{start}");
    assert!(log.contains("signal=SIGTERM"), "{log}");
    assert!(log.trim_end().lines().last().unwrap().ends_with("shutdown complete"), "{log}");
}

#[test]
fn readme_documents_every_run_flag_and_sets_up_in_two_commands() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let (ok, help, _) = t4(&["run", "--help"], &[]);
    assert!(ok);
    // Each flag's own line starts with it (`      --listen <LISTEN>`); its description may name etcd's.
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|flag| !matches!(*flag, "help" | "version"))
        .collect();
    let flags: Vec<String> = flags.iter().map(|flag| format!("--{flag}")).collect();
    assert!(flags.len() > 20, "{flags:?}");
    for flag in flags {
        assert!(
            readme.contains(&format!("| `{flag}`")) || readme.contains(&format!(", `{flag}`")),
            "{flag} not in README"
        );
    }
    let setup = readme.split("## Set up").nth(1).and_then(|s| s.split("```sh\n").nth(1)).expect("a set-up block");
    let commands = setup.split("```").next().unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(commands, 2, "the set-up section is two commands");
}

#[test]
fn bench_script_takes_given_binaries_instead_of_building() {
    use std::os::unix::process::CommandExt;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench.sh");
    let child = Command::new(script)
        .arg("--quick")
        .env("BENCH_T4_BIN", "/nonexistent/t4")
        .env("BENCH_LOADTEST_BIN", "/nonexistent/t4-loadtest")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0) // a build it starts is killed with it
        .spawn()
        .expect("run scripts/bench.sh");
    let group = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(common::STARTUP_TIMEOUT) else {
        // SAFETY: killpg(2) on the process group this test created has no memory-safety preconditions.
        unsafe { libc::killpg(group, libc::SIGKILL) };
        panic!("bench.sh did not check the given binaries first (it is building or benchmarking)");
    };
    let out = out.expect("wait for bench.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("BENCH_T4_BIN=/nonexistent/t4 is not an executable file"), "{err}");
    assert!(!err.contains("building"), "{err}");
}

#[test]
fn a_second_node_on_the_same_port_and_data_dir_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let first = Server::try_start_t4_args(dir.path(), &["--listen", &addr, "--log", "warn"], &[]).expect("start");
    let (err, _) = refused_on(dir.path(), &["--listen", &addr], &[]);
    assert!(err.contains(&format!("is in use by t4 (pid {}, serving {addr})", first.pid())), "{err}");
}
