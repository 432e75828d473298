//! Malformed and oversized requests get an error status; the server keeps serving afterwards.

mod common;

use common::{Server, channel};
use tonic::codegen::http::uri::PathAndQuery;

/// Field 1 of RangeRequest is `bytes key`; sending it as a fixed64 makes the body undecodable.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(fixed64, tag = "1")]
    key: u64,
}

/// A PutRequest-shaped message with an arbitrary value size.
#[derive(Clone, PartialEq, prost::Message)]
struct BigPut {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

async fn call<M: prost::Message + Default + 'static>(endpoint: &str, path: &'static str, msg: M) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel(endpoint).await.unwrap());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<M, t4::proto::etcdserverpb::RangeResponse>::default();
    grpc.unary(tonic::Request::new(msg), PathAndQuery::from_static(path), codec)
        .await
        .expect_err("a malformed request must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_fail_cleanly_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let status = call(&server.endpoint, "/etcdserverpb.KV/Range", WrongWireType { key: 7 }).await;
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    // Above max-request-bytes plus gRPC's headroom, the frame itself is refused, as etcd's gRPC layer does.
    let huge = BigPut { key: b"k".to_vec(), value: vec![0; 3 * 1024 * 1024] };
    let status = call(&server.endpoint, "/etcdserverpb.KV/Put", huge).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("grpc: received message larger than max ("), "{status:?}");
    let status = call(&server.endpoint, "/etcdserverpb.KV/NoSuchMethod", BigPut::default()).await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let status = call(&server.endpoint, "/etcdserverpb.Auth/Authenticate", BigPut::default()).await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "services not built yet say so: {status:?}");

    let mut client = server.client().await;
    client.put("still", "alive", None).await.unwrap();
    assert_eq!(client.get("still", None).await.unwrap().kvs()[0].value(), b"alive");
}
