//! etcd's JSON gateway and HTTP endpoints on T4's client port, differentially against etcd 3.4: the
//! same sequence of HTTP calls goes to both, and every answer's status and JSON body must match
//! (the member's ids and raft term aside). The same port keeps serving gRPC.

mod common;

use common::answers::{b64, normalise};
use common::http1::{Answer, request, stream_lines};
use serde_json::{Value, json};

/// How an answer is compared.
#[derive(Clone, Copy)]
enum Compare {
    /// Status and the whole JSON body.
    Body,
    /// Status and gRPC code only (the message quotes a JSON parser, which differs between Go and Rust).
    Code,
    /// Status only (a plain-text answer).
    Status,
}

/// The calls, in order: (method, path, body, how to compare).
fn script() -> Vec<(&'static str, &'static str, Value, Compare)> {
    use Compare::*;
    let k = |s: &str| Value::String(b64(s));
    vec![
        ("POST", "/v3/kv/put", json!({"key": k("foo"), "value": k("bar")}), Body),
        ("POST", "/v3/kv/put", json!({"key": k("foo"), "value": k("baz"), "prev_kv": true}), Body),
        ("POST", "/v3beta/kv/put", json!({"key": k("fop"), "value": k("1")}), Body),
        ("POST", "/v3/kv/put", json!({"key": k("g"), "value": k("")}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("foo")}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("fo"), "range_end": k("fp")}), Body),
        (
            "POST",
            "/v3/kv/range",
            json!({"key": k("f"), "range_end": k("h"), "limit": "2", "sort_order": "DESCEND", "sort_target": "KEY"}),
            Body,
        ),
        ("POST", "/v3/kv/range", json!({"key": k("f"), "range_end": k("h"), "keys_only": true}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("f"), "range_end": k("h"), "count_only": true}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("foo"), "revision": "2"}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("\0"), "range_end": k("\0")}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("absent")}), Body),
        (
            "POST",
            "/v3/kv/txn",
            json!({
                "compare": [{"key": k("foo"), "target": "VALUE", "result": "EQUAL", "value": k("baz")}],
                "success": [
                    {"request_put": {"key": k("t1"), "value": k("yes")}},
                    {"request_range": {"key": k("foo")}},
                    {"request_txn": {"success": [{"request_delete_range": {"key": k("g"), "prev_kv": true}}]}}
                ],
                "failure": [{"request_put": {"key": k("t1"), "value": k("no")}}]
            }),
            Body,
        ),
        (
            "POST",
            "/v3/kv/txn",
            json!({
                "compare": [{"key": k("foo"), "target": "MOD", "result": "LESS", "mod_revision": "1"}],
                "failure": [{"request_range": {"key": k("t1")}}]
            }),
            Body,
        ),
        ("POST", "/v3/kv/deleterange", json!({"key": k("fo"), "range_end": k("fp"), "prev_kv": true}), Body),
        ("POST", "/v3/kv/compaction", json!({"revision": "3"}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("foo"), "revision": "2"}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("foo"), "revision": "100"}), Body),
        ("POST", "/v3/lease/grant", json!({"ID": "4096", "TTL": "60"}), Body),
        ("POST", "/v3/lease/grant", json!({"ID": "4096", "TTL": "60"}), Body),
        ("POST", "/v3/kv/put", json!({"key": k("leased"), "value": k("v"), "lease": "4096"}), Body),
        ("POST", "/v3/kv/put", json!({"key": k("leased"), "value": k("v"), "lease": "7"}), Body),
        ("POST", "/v3/lease/leases", json!({}), Body),
        ("POST", "/v3/kv/lease/leases", json!({}), Body),
        ("POST", "/v3/lease/revoke", json!({"ID": "4096"}), Body),
        ("POST", "/v3/kv/lease/revoke", json!({"ID": "4096"}), Body),
        ("POST", "/v3/lease/timetolive", json!({"ID": "4096", "keys": true}), Body),
        ("POST", "/v3/kv/range", json!({"key": k("leased")}), Body),
        ("POST", "/v3/kv/put", json!({"value": k("no key")}), Body),
        ("POST", "/v3/kv/put", json!({"key": k("x"), "value": k("v"), "ignore_value": true}), Body),
        ("POST", "/v3/kv/put", json!({"key": k("x"), "value": 5}), Code),
        ("POST", "/v3/kv/range", json!({"key": k("x"), "no_such_field": 1}), Code),
        ("POST", "/v3/kv/range", Value::Null, Body), // an empty body: the empty request
        ("POST", "/v3/auth/authenticate", json!({"name": "root", "password": "pw"}), Body),
        ("POST", "/v3/auth/user/list", json!({}), Body),
        ("POST", "/v3/auth/role/get", json!({"role": "r"}), Body),
        ("POST", "/v3/auth/disable", json!({}), Body),
        ("POST", "/v3/auth/enable", json!({}), Body),
        ("POST", "/v3/kv/nothing", json!({}), Status),
        ("GET", "/v3/kv/range", Value::Null, Status),
        ("GET", "/health", Value::Null, Body),
        ("GET", "/not/a/path", Value::Null, Status),
    ]
}

fn call(endpoint: &str, method: &str, path: &str, body: &Value) -> Answer {
    let bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    request(endpoint, method, path, &bytes)
}

#[test]
fn gateway_calls_answer_as_etcds_do() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_dirs, etcd, t4) = runtime.block_on(common::etcd_and_t4());
    let mut differences = Vec::new();
    for (step, (method, path, body, compare)) in script().into_iter().enumerate() {
        let (want, got) = (call(&etcd.endpoint, method, path, &body), call(&t4.endpoint, method, path, &body));
        let same = want.status == got.status
            && match compare {
                Compare::Status => true,
                Compare::Code => want.json()["code"] == got.json()["code"],
                Compare::Body => {
                    let (mut w, mut g) = (want.json(), got.json());
                    normalise(&mut w);
                    normalise(&mut g);
                    w == g
                }
            };
        if !same {
            differences.push(format!(
                "step {step}: {method} {path} {body}\n  etcd {} {}\n  t4   {} {}",
                want.status,
                String::from_utf8_lossy(&want.body),
                got.status,
                String::from_utf8_lossy(&got.body)
            ));
        }
    }
    // Streams: a watch from the first revision (created, then the history), keep-alives.
    let streams = [
        ("/v3/watch", json!({"create_request": {"key": b64("f"), "range_end": b64("h"), "start_revision": "1"}}), 2),
        ("/v3/watch", json!({"create_request": {"key": b64("t1"), "prev_kv": true, "start_revision": "5"}}), 2),
        ("/v3/lease/grant", json!({"ID": "8192", "TTL": "120"}), 0),
        ("/v3/lease/keepalive", json!({"ID": "8192"}), 1),
        ("/v3/lease/keepalive", json!({"ID": "12345"}), 1),
    ];
    for (path, body, lines) in streams {
        if lines == 0 {
            let statuses =
                (call(&etcd.endpoint, "POST", path, &body).status, call(&t4.endpoint, "POST", path, &body).status);
            assert_eq!(statuses.0, statuses.1, "{path}");
            continue;
        }
        let bytes = body.to_string().into_bytes();
        let (mut want, mut got) =
            (stream_lines(&etcd.endpoint, path, &bytes, lines), stream_lines(&t4.endpoint, path, &bytes, lines));
        want.iter_mut().chain(got.iter_mut()).for_each(normalise);
        if want != got {
            differences.push(format!("stream {path} {body}\n  etcd {want:?}\n  t4   {got:?}"));
        }
    }
    assert!(differences.is_empty(), "{} calls differ:\n{}", differences.len(), differences.join("\n"));
    // gRPC still works on the same port.
    let (ok, out, err) = t4.etcdctl(&["get", "t1"]);
    assert!(ok && out.contains("yes"), "etcdctl over gRPC: {out} {err}");
}

#[test]
fn health_version_and_probes_answer_on_the_client_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start_t4(dir.path(), &[]);
    let version = request(&server.endpoint, "GET", "/version", b"");
    assert_eq!(version.status, 200);
    let version = version.json();
    assert_eq!(version["etcdcluster"], "3.4.0");
    assert!(version["etcdserver"].as_str().is_some_and(|v| v.starts_with("3.4.")), "{version}");
    assert_eq!(version["t4"], env!("CARGO_PKG_VERSION"));
    for probe in ["/livez", "/readyz"] {
        let answer = request(&server.endpoint, "GET", probe, b"");
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"ok"[..]), "{probe}");
    }
    let health = request(&server.endpoint, "GET", "/health", b"");
    assert_eq!((health.status, health.json()), (200, json!({"health": "true"})));
    assert_eq!(health.header("access-control-allow-origin"), Some("*"), "etcd's CORS headers");
    // A raised alarm makes /health false, as in etcd 3.4; disarmed, it is true again.
    let alarm = |action: &str| {
        let body = json!({"action": action, "alarm": "NOSPACE"}).to_string();
        let answer = request(&server.endpoint, "POST", "/v3/maintenance/alarm", body.as_bytes());
        assert_eq!(answer.status, 200, "{action}: {}", String::from_utf8_lossy(&answer.body));
        answer.json()
    };
    assert_eq!(alarm("ACTIVATE")["alarms"][0]["alarm"], "NOSPACE");
    let health = request(&server.endpoint, "GET", "/health", b"");
    assert_eq!((health.status, health.json()), (503, json!({"health": "false"})));
    alarm("DEACTIVATE");
    assert_eq!(request(&server.endpoint, "GET", "/health", b"").status, 200);
}

/// A real HTTP client of etcd's gateway, OpenStack's etcd3gw (installed in the test venv), runs its
/// calls against T4: put/get/prefix/delete, a transaction, a lease, a watch and a lock.
#[test]
fn etcd3gw_works_against_t4() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start_t4(dir.path(), &[]);
    let (host, port) = server.endpoint.rsplit_once(':').expect("host:port");
    let script = r#". scripts/lib/venv.sh && ensure_venv "$PWD/.venv" && exec .venv/bin/python tests/clients/etcd3gw_check.py "$0" "$1""#;
    let output = std::process::Command::new("bash")
        .args(["-c", script, host, port])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run bash");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "etcd3gw against T4 failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// Hostile HTTP input costs a bounded answer and leaves the node serving: a body far over the
/// request limit, JSON nested 100,000 deep, and a client that never finishes its headers.
#[test]
fn hostile_http_requests_get_bounded_answers_and_the_node_keeps_serving() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start_t4(dir.path(), &["--handshake-timeout-ms", "300"]);
    // A 20 MiB body is refused from its announced length, before it is sent.
    let mut big = std::net::TcpStream::connect(&server.endpoint).unwrap();
    big.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let head = "POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\nConnection: close\r\n\r\n";
    big.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "a 20 MiB body: {answer}");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let answer = request(&server.endpoint, "POST", "/v3/kv/range", deep.as_bytes());
    assert_eq!((answer.status, answer.json()["code"].as_i64()), (400, Some(3)), "JSON nested 100,000 deep");
    let mut slow = std::net::TcpStream::connect(&server.endpoint).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap(); // and never the blank line
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    assert!(closed.is_ok(), "the server closes a connection whose headers never end: {closed:?}");
    let health = request(&server.endpoint, "GET", "/health", b"");
    assert_eq!(health.status, 200, "still serving");
    let (ok, _, err) = server.etcdctl(&["put", "after", "hostile"]);
    assert!(ok, "gRPC still serving: {err}");
}
