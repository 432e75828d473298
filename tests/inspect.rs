//! `t4 inspect` on data directories a real node wrote (overwrites, deletes, a lease, bytes that are
//! not UTF-8, a compaction), on directories in use or not T4's; and `t4 status` against T4 and etcd.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use common::{Server, t4_binary};
use serde_json::{Value, json};
use t4::proto::etcdserverpb::lease_client::LeaseClient;
use t4::proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest};

/// The lease `c` is attached to (granted with this id, so outputs are fixed).
const LEASE: i64 = 0x1234abcd;

/// Runs `t4` with `args`; returns (success, stdout, stderr).
fn t4<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(t4_binary()).args(args).output().expect("run t4");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `t4 inspect <command> --data-dir <dir> <args>`, which must succeed; returns its stdout.
fn inspect(dir: &Path, command: &str, args: &[&str]) -> String {
    let mut all: Vec<&OsStr> = vec!["inspect".as_ref(), command.as_ref(), "--data-dir".as_ref(), dir.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let (ok, out, err) = t4(&all);
    assert!(ok, "t4 inspect {command} {args:?} failed: {err}");
    out
}

/// Like [`inspect`] with `--output json`, parsed.
fn inspect_json(dir: &Path, command: &str, args: &[&str]) -> Value {
    let out = inspect(dir, command, &[args, &["--output", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{out}"))
}

/// `t4 inspect <command> --data-dir <dir> <args>`, which must fail; returns its stderr.
fn inspect_error(dir: &Path, command: &str, args: &[&str]) -> String {
    let mut all: Vec<&OsStr> = vec!["inspect".as_ref(), command.as_ref(), "--data-dir".as_ref(), dir.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let (ok, out, err) = t4(&all);
    assert!(!ok && out.is_empty(), "t4 inspect {command} {args:?} succeeded: {out}");
    err
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

async fn put(server: &Server, key: &[u8], value: &[u8], lease: i64) {
    let request = PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() };
    server.kv().await.put(request).await.expect("put");
}

/// Writes this history through a running node, then stops it (SIGTERM):
///
/// | rev | write |
/// |---|---|
/// | 2 | a = 1 |
/// | 3 | b = 1 |
/// | 4 | a = 2 |
/// | 5 | delete b |
/// | 6 | c = x, with lease [`LEASE`] |
/// | 7 | `bin\xff` = `\x00\xfe` (neither is UTF-8) |
/// | - | compact at 4, physically |
/// | 8 | a = 3 |
/// | 9 | dir/k = `line\nnext` |
fn build_data_dir(dir: &Path) {
    let mut server = Server::start_t4(dir, &[]);
    block_on(async {
        put(&server, b"a", b"1", 0).await;
        put(&server, b"b", b"1", 0).await;
        put(&server, b"a", b"2", 0).await;
        let delete = DeleteRangeRequest { key: b"b".to_vec(), ..Default::default() };
        server.kv().await.delete_range(delete).await.expect("delete");
        let mut leases = LeaseClient::new(common::channel(&server.endpoint).await.expect("connect"));
        leases.lease_grant(LeaseGrantRequest { ttl: 600, id: LEASE }).await.expect("grant");
        put(&server, b"c", b"x", LEASE).await;
        put(&server, b"bin\xff", b"\x00\xfe", 0).await;
        server.kv().await.compact(CompactionRequest { revision: 4, physical: true }).await.expect("compact");
        put(&server, b"a", b"3", 0).await;
        put(&server, b"dir/k", b"line\nnext", 0).await;
    });
    assert!(server.stop().success());
}

fn built() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_data_dir(dir.path());
    dir
}

#[test]
fn meta_shows_revisions_counts_and_that_the_checkpoint_is_in_object_storage() {
    let dir = built();
    let meta = inspect_json(dir.path(), "meta", &[]);
    let (member, cluster) = (meta["member_id"].as_u64().unwrap(), meta["cluster_id"].as_u64().unwrap());
    let db_size = meta["db_size_bytes"].as_u64().unwrap();
    assert!(member != 0 && cluster != 0 && db_size > 0, "{meta}");
    let expected = json!({
        "data_dir": dir.path().display().to_string(),
        "member_id": member,
        "cluster_id": cluster,
        "term": 1,
        "current_revision": 9,
        "compact_revision": 4,
        "compacted_through": 4,
        "key_count": 4,
        "lease_count": 1,
        "db_size_bytes": db_size,
        "upload_watermark": null,
        "last_log_position": {"revision": 9, "sub": 0},
        "object_store": null,
        "last_checkpoint": null,
    });
    assert_eq!(meta, expected);

    let table = inspect(dir.path(), "meta", &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 13, "{table}");
    assert!(lines[9].starts_with(&format!("db_size_bytes      {db_size} (")), "{table}");
    let without_size: Vec<&str> = lines.iter().copied().filter(|l| !l.starts_with("db_size_bytes")).collect();
    assert_eq!(
        without_size,
        [
            format!("data_dir           {}", dir.path().display()).as_str(),
            &format!("member_id          {member:x}"),
            &format!("cluster_id         {cluster:x}"),
            "term               1",
            "current_revision   9",
            "compact_revision   4",
            "compacted_through  4",
            "key_count          4",
            "lease_count        1",
            "upload_watermark   none",
            "last_log_position  revision 9 sub 0",
            "last_checkpoint    unknown (in object storage; name it with --object-store-dir or --s3-bucket)",
        ]
    );
}

#[test]
fn meta_reads_the_last_checkpoint_from_an_object_store_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (data, store) = (dir.path().join("data"), dir.path().join("store"));
    let store_arg = store.to_str().unwrap();
    let mut server = Server::start_t4(&data, &["--object-store-dir", store_arg, "--checkpoint-entries", "2"]);
    block_on(async {
        for i in 0..4 {
            put(&server, b"k", format!("{i}").as_bytes(), 0).await;
        }
    });
    // A checkpoint is written within a second of reaching the count (bounded wait).
    let deadline = std::time::Instant::now() + common::STARTUP_TIMEOUT;
    // The folder store keeps `manifest/latest` as `manifest/latest%`, moved into place whole.
    while !store.join("manifest").join("latest%").exists() {
        assert!(std::time::Instant::now() < deadline, "no checkpoint was written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(server.stop().success());
    let meta = inspect_json(&data, "meta", &["--object-store-dir", store_arg]);
    assert_eq!(meta["object_store"], json!(store_arg));
    let checkpoint = &meta["last_checkpoint"];
    let revision = checkpoint["revision"].as_i64().expect("a checkpoint");
    assert!((3..=5).contains(&revision), "{checkpoint}");
    let key = format!("checkpoint/{:010}/{revision:020}/manifest.json", checkpoint["term"].as_u64().unwrap());
    assert_eq!(checkpoint["key"], json!(key));
    assert_eq!(meta["upload_watermark"], json!({"revision": 5, "sub": 0}), "sync upload stored every record");

    let missing = dir.path().join("no-store");
    let err = inspect_error(&data, "meta", &["--object-store-dir", missing.to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists(), "inspect created no object store");
}

#[test]
fn list_shows_keys_at_the_current_or_an_earlier_revision() {
    let dir = built();
    assert_eq!(
        inspect(dir.path(), "list", &[]),
        "KEY      CREATE_REVISION  MOD_REVISION  VERSION  LEASE     VALUE_BYTES\n\
         a        2                8             3        -         1\n\
         bin\\xff  7                7             1        -         2\n\
         c        6                6             1        1234abcd  1\n\
         dir/k    9                9             1        -         9\n"
    );
    let kv = |key: &str, create: i64, modified: i64, version: i64, lease: i64, bytes: usize| {
        json!({"key": key, "value_bytes": bytes, "create_revision": create, "mod_revision": modified,
               "version": version, "lease": lease})
    };
    assert_eq!(
        inspect_json(dir.path(), "list", &[]),
        json!({"revision": 9, "count": 4, "more": false, "keys": [
            kv("a", 2, 8, 3, 0, 1), kv("bin\\xff", 7, 7, 1, 0, 2), kv("c", 6, 6, 1, LEASE, 1), kv("dir/k", 9, 9, 1, 0, 9),
        ]})
    );
    assert_eq!(
        inspect_json(dir.path(), "list", &["--rev", "5"]),
        json!({"revision": 5, "count": 1, "more": false, "keys": [kv("a", 2, 4, 2, 0, 1)]})
    );
    assert_eq!(
        inspect_json(dir.path(), "list", &["--limit", "2", "--prefix", "b"]),
        json!({"revision": 9, "count": 1, "more": false, "keys": [kv("bin\\xff", 7, 7, 1, 0, 2)]})
    );
    let limited = inspect(dir.path(), "list", &["--limit", "1"]);
    assert!(
        limited.ends_with(
            "a    2                8             3        -      1\n(1 of 4 keys; raise --limit for more)\n"
        ),
        "{limited}"
    );
    assert_eq!(inspect_json(dir.path(), "list", &["--hex", "--prefix", "62"])["keys"][0]["key"], json!("62696eff"));
    assert_eq!(
        inspect_error(dir.path(), "list", &["--rev", "3"]),
        "t4 inspect: error: revision 3: mvcc: required revision has been compacted (the compact revision is 4)\n"
    );
    assert_eq!(
        inspect_error(dir.path(), "list", &["--rev", "10"]),
        "t4 inspect: error: revision 10: mvcc: required revision is a future revision (the current revision is 9)\n"
    );
}

#[test]
fn get_shows_a_value_and_its_metadata_escaped_or_as_hex() {
    let dir = built();
    assert_eq!(
        inspect(dir.path(), "get", &["c"]),
        "key              c\nvalue            x\ncreate_revision  6\nmod_revision     6\nversion          1\nlease            1234abcd\n"
    );
    assert_eq!(
        inspect_json(dir.path(), "get", &["a", "--rev", "4"]),
        json!({"revision": 4, "kv": {"key": "a", "value": "2", "value_bytes": 1, "create_revision": 2,
               "mod_revision": 4, "version": 2, "lease": 0}})
    );
    // A key that is not UTF-8 is given as its bytes on the command line (or as hex with --hex).
    let mut args: Vec<&OsStr> = vec!["inspect".as_ref(), "get".as_ref(), "--data-dir".as_ref(), dir.path().as_os_str()];
    args.extend([OsStr::from_bytes(b"bin\xff"), "--output".as_ref(), "json".as_ref()]);
    let (ok, out, err) = t4(&args);
    assert!(ok, "{err}");
    let escaped: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&escaped["kv"]["key"], &escaped["kv"]["value"]), (&json!("bin\\xff"), &json!("\\x00\\xfe")));
    let hex = inspect_json(dir.path(), "get", &["--hex", "62696eff"]);
    assert_eq!((&hex["kv"]["key"], &hex["kv"]["value"]), (&json!("62696eff"), &json!("00fe")));
    // Control characters are escaped in tables only; JSON strings carry them as they are.
    assert!(inspect(dir.path(), "get", &["dir/k"]).contains("value            line\\x0anext\n"));
    assert_eq!(inspect_json(dir.path(), "get", &["dir/k"])["kv"]["value"], json!("line\nnext"));
    assert_eq!(inspect(dir.path(), "get", &["b"]), "key b not found at revision 9\n");
    assert_eq!(inspect_json(dir.path(), "get", &["b", "--rev", "4"])["kv"]["value"], json!("1"));
    assert_eq!(inspect_json(dir.path(), "get", &["b"]), json!({"revision": 9, "kv": null}));
}

#[test]
fn history_lists_every_version_left_after_compaction() {
    let dir = built();
    // a = 1 at 2 was compacted away; a = 2 at 4 stays (reads at the compact revision see it).
    assert_eq!(
        inspect(dir.path(), "history", &["a"]),
        "REVISION  OP   CREATE_REVISION  VERSION  LEASE  VALUE\n\
         4         put  2                2        -      2\n\
         8         put  2                3        -      3\n"
    );
    assert_eq!(
        inspect(dir.path(), "history", &["b"]),
        "REVISION  OP      CREATE_REVISION  VERSION  LEASE  VALUE\n\
         3         put     3                1        -      1\n\
         5         delete  -                -        -      -\n"
    );
    assert_eq!(
        inspect_json(dir.path(), "history", &["b"]),
        json!({"key": "b", "current_revision": 9, "compact_revision": 4, "more": false, "versions": [
            {"revision": 3, "op": "put", "kv": {"key": "b", "value": "1", "value_bytes": 1, "create_revision": 3,
                                               "mod_revision": 3, "version": 1, "lease": 0}},
            {"revision": 5, "op": "delete", "kv": null},
        ]})
    );
    let first = inspect_json(dir.path(), "history", &["a", "--limit", "1"]);
    assert_eq!((first["versions"].as_array().unwrap().len(), &first["more"]), (1, &json!(true)));
    assert_eq!(inspect_json(dir.path(), "history", &["missing"])["versions"], json!([]));
}

#[test]
fn diff_names_what_was_created_changed_and_deleted_between_two_revisions() {
    let dir = built();
    assert_eq!(
        inspect(dir.path(), "diff", &["--from-rev", "4", "--to-rev", "9"]),
        "CHANGE   KEY      FROM_MOD_REVISION  TO_MOD_REVISION  VALUE\n\
         changed  a        4                  8                3\n\
         deleted  b        3                  -                -\n\
         created  bin\\xff  -                  7                \\x00\\xfe\n\
         created  c        -                  6                x\n\
         created  dir/k    -                  9                line\\x0anext\n"
    );
    assert_eq!(
        inspect_json(dir.path(), "diff", &["--from-rev", "5", "--to-rev", "8", "--prefix", "a"]),
        json!({"from_revision": 5, "to_revision": 8, "more": false, "changes": [{
            "key": "a", "change": "changed",
            "before": {"key": "a", "value": "2", "value_bytes": 1, "create_revision": 2, "mod_revision": 4,
                       "version": 2, "lease": 0},
            "after": {"key": "a", "value": "3", "value_bytes": 1, "create_revision": 2, "mod_revision": 8,
                      "version": 3, "lease": 0},
        }]})
    );
    let deleted = inspect_json(dir.path(), "diff", &["--from-rev", "4", "--to-rev", "5"]);
    assert_eq!(deleted["changes"][0]["change"], json!("deleted"));
    assert_eq!(deleted["changes"][0]["after"], json!(null));
    assert_eq!(inspect_json(dir.path(), "diff", &["--from-rev", "9", "--to-rev", "9"])["changes"], json!([]));
    assert_eq!(
        inspect_error(dir.path(), "diff", &["--from-rev", "3", "--to-rev", "9"]),
        "t4 inspect: error: revision 3: mvcc: required revision has been compacted (the compact revision is 4)\n"
    );
    assert_eq!(
        inspect_error(dir.path(), "diff", &["--from-rev", "4", "--to-rev", "12"]),
        "t4 inspect: error: revision 12: mvcc: required revision is a future revision (the current revision is 9)\n"
    );
    assert_eq!(
        inspect_error(dir.path(), "diff", &["--from-rev", "8", "--to-rev", "5"]),
        "t4 inspect: error: --from-rev 8 is above --to-rev 5\n"
    );
}

#[test]
fn a_data_dir_in_use_is_refused_naming_the_node_which_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_t4(dir.path(), &[]);
    block_on(put(&server, b"k", b"before", 0));
    for command in ["meta", "list", "history"] {
        let args: &[&str] = if command == "history" { &["k"] } else { &[] };
        assert_eq!(
            inspect_error(dir.path(), command, args),
            format!(
                "t4 inspect: error: data directory {} is in use by t4 (pid {}, serving {ep}); stop it or use \
                 `t4 status --endpoint {ep}`\n",
                dir.path().display(),
                server.pid(),
                ep = server.endpoint
            )
        );
    }
    block_on(async {
        put(&server, b"k", b"after", 0).await;
        let range = RangeRequest { key: b"k".to_vec(), ..Default::default() };
        let kvs = server.kv().await.range(range).await.expect("range").into_inner().kvs;
        assert_eq!(kvs[0].value, b"after");
        assert_eq!(kvs[0].version, 2);
    });
    // A node killed outright leaves its record in the lock file, but not its lock.
    server.kill();
    assert_eq!(inspect_json(dir.path(), "get", &["k"])["kv"]["value"], json!("after"));
}

#[test]
fn directories_without_a_t4_database_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("db")).unwrap();
    std::fs::write(other.join("notes.txt"), b"not a database").unwrap();
    let missing = dir.path().join("missing");
    let listing = |path: &Path| -> Vec<String> {
        let mut names: Vec<String> = walk(path).into_iter().map(|p| p.display().to_string()).collect();
        names.sort();
        names
    };
    let before = listing(dir.path());
    for (path, reason) in [
        (&empty, "not a T4 data directory: no database (db/) in it"),
        (&other, "not a T4 data directory: no database (db/) in it"),
        (&missing, "does not exist"),
    ] {
        for command in ["meta", "list"] {
            assert_eq!(
                inspect_error(path, command, &[]),
                format!("t4 inspect: error: data directory {}: {reason}\n", path.display())
            );
        }
    }
    assert_eq!(listing(dir.path()), before, "inspect created nothing");
}

fn walk(path: &Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![path.to_path_buf()];
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            found.extend(walk(&entry.unwrap().path()));
        }
    }
    found
}

#[test]
fn status_reports_a_running_t4_node_as_its_own_leader() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &["--name", "solo"]);
    block_on(put(&server, b"k", b"v", 0));
    let (ok, out, err) = t4(&["status", "--endpoint", &server.endpoint, "--output", "json"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    let member = status["member_id"].as_u64().unwrap();
    let (cluster, db_size) = (status["cluster_id"].as_u64().unwrap(), status["db_size_bytes"].as_i64().unwrap());
    // In use: the data the store holds (one small put here), never more than its size.
    let in_use = status["db_size_in_use_bytes"].as_i64().unwrap();
    assert!(in_use > 0 && in_use < db_size, "in use {in_use} of {db_size}");
    assert_eq!(
        status,
        json!({
            "endpoint": server.endpoint, "version": "3.4.0", "db_size_bytes": db_size,
            "db_size_in_use_bytes": in_use, "revision": 2, "raft_term": 1, "raft_index": 2, "leader": member,
            "member_id": member, "cluster_id": cluster, "role": "leader", "errors": [],
            "members": [{"id": member, "name": "solo", "client_urls": [format!("http://{}", server.endpoint)],
                         "peer_urls": [], "is_learner": false}],
        })
    );
    let (ok, table, err) = t4(&["status", "--endpoint", &server.endpoint]);
    assert!(ok, "{err}");
    let (id, url) = (format!("{member:x}"), format!("http://{}", server.endpoint));
    let expected = format!(
        "endpoint       {ep}\nversion        3.4.0\ndb_size_bytes  {db_size}\nrevision       2\nraft_term      1\n\
         leader         {id}\nmember_id      {id}\ncluster_id     {cluster:x}\nrole           leader\n\
         errors         none\n\n\
         {:w_id$}  NAME  {:w_url$}  PEER_URLS  LEARNER\n\
         {id}  solo  {url}  -          false\n",
        "ID",
        "CLIENT_URLS",
        ep = server.endpoint,
        w_id = id.len(),
        w_url = url.len(),
    );
    assert_eq!(table, expected);
}

#[test]
fn status_reads_etcd_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_etcd(dir.path());
    let (ok, out, err) = t4(&["status", "--endpoint", &server.endpoint, "--output", "json"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert!(status["version"].as_str().unwrap().starts_with("3.4."), "{status}");
    assert_eq!(status["role"], json!("leader"));
    assert_eq!(status["leader"], status["member_id"]);
    assert_eq!(status["members"][0]["name"], json!("reference"));
    assert_eq!(status["members"][0]["client_urls"], json!([format!("http://{}", server.endpoint)]));
}

#[test]
fn status_of_an_unreachable_endpoint_fails_with_a_clear_error() {
    let port = common::free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let (ok, out, err) = t4(&["status", "--endpoint", &endpoint, "--timeout-ms", "2000"]);
    assert!(!ok && out.is_empty());
    assert!(err.starts_with(&format!("t4 status: error: {endpoint}: cannot connect to {endpoint}:")), "{err}");
    let (ok, _, err) = t4(&["status", "--endpoint", "no-port"]);
    assert!(!ok && err == "t4 status: error: no-port: not an endpoint (HOST:PORT)\n", "{err}");
}
