//! `GET /metrics` on the client port: after a known workload the counts are exact, and the text is
//! well-formed OpenMetrics (every sample of a declared family, every value a number, `# EOF` last).

mod common;

use std::collections::BTreeMap;

use common::Server;
use common::http1::request;

/// The samples of a scrape by `name{labels}`, checking the text's shape as it goes.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut families: Vec<(String, String)> = Vec::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "OpenMetrics text ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.push((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        let (family, kind) = families.last().expect("a sample after its # TYPE");
        let expected = if kind == "counter" { format!("{family}_total") } else { family.clone() };
        assert_eq!(name, expected, "sample of the declared family: {line}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "labels: {line}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (key, quoted) = pair.split_once('=').expect("label=value");
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
                assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{line}");
            }
        }
        assert!(samples.insert(series.to_string(), value).is_none(), "a series appears once: {line}");
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let mut client = server.client().await;
    for i in 0..25 {
        client.put(format!("k{i}"), "v", None).await.expect("put");
    }
    for _ in 0..7 {
        client.txn(etcd_client::Txn::new()).await.expect("txn");
    }
    client.put("", "no key", None).await.expect_err("an empty key is refused");
    let endpoint = server.endpoint.clone();
    let scrape = tokio::task::spawn_blocking(move || request(&endpoint, "GET", "/metrics", b"")).await.unwrap();
    assert_eq!(scrape.status, 200);
    assert!(scrape.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let samples = parse(&String::from_utf8(scrape.body).expect("utf-8"));
    let handled = |method: &str, code: &str| {
        let series = format!(
            "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}}"
        );
        samples.get(&series).copied()
    };
    assert_eq!(handled("Put", "OK"), Some(25.0));
    assert_eq!(handled("Txn", "OK"), Some(7.0));
    assert_eq!(handled("Put", "InvalidArgument"), Some(1.0));
    assert_eq!(samples.get("etcd_server_has_leader"), Some(&1.0));
    // Revision 1 is the empty store; every put and nothing else took one.
    assert_eq!(samples.get("etcd_server_proposals_committed_total"), Some(&26.0));
    assert!(samples.get("etcd_mvcc_db_total_size_in_bytes").is_some_and(|size| *size > 0.0));
    assert_eq!(samples.get("t4_alarms_raised"), Some(&0.0));
}
