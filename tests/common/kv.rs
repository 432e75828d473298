//! Small helpers over the KV API shared by test files: the whole key space at a revision (raw
//! wire client), etcd's prefix range end, and a failed etcd-client call's gRPC code and message.
//! Each fails the test on what it does not expect (a missing header, an error of another kind).

use t4::proto::etcdserverpb::RangeRequest;
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::mvccpb::KeyValue;
use tonic::transport::Channel;

/// Every key at `revision` (0: now) and the header's revision, or the error as `"<code>: <message>"`.
pub async fn range_all(kv: &mut KvClient<Channel>, revision: i64) -> Result<(i64, Vec<KeyValue>), String> {
    let request = RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() };
    match kv.range(request).await {
        Ok(resp) => {
            let resp = resp.into_inner();
            Ok((resp.header.expect("header").revision, resp.kvs))
        }
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// A failed etcd-client call's gRPC code and message (any other error fails the test).
pub fn code_and_message(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}
