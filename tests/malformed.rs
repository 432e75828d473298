//! Malformed and oversized requests get an error status; the server keeps serving afterwards.

mod common;

use common::{Server, channel};
use futures_lite::StreamExt;
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
    // etcd 3.4 (grpc-go) says "grpc: error unmarshalling request: proto: wrong wireType = 1 for field Key".
    assert!(status.message().starts_with("grpc: error unmarshalling request: "), "{status:?}");
    // Above max-request-bytes plus gRPC's headroom, the frame itself is refused, as etcd's gRPC layer does.
    let huge = BigPut { key: b"k".to_vec(), value: vec![0; 3 * 1024 * 1024] };
    let status = call(&server.endpoint, "/etcdserverpb.KV/Put", huge).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("grpc: received message larger than max ("), "{status:?}");
    let status = call(&server.endpoint, "/etcdserverpb.KV/NoSuchMethod", BigPut::default()).await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert_eq!(status.message(), "unknown method NoSuchMethod for service etcdserverpb.KV", "grpc-go's words");
    let status = call(&server.endpoint, "/etcdserverpb.Maintenance/Downgrade", BigPut::default()).await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert_eq!(
        status.message(),
        "t4: etcdserverpb.Maintenance/Downgrade is not implemented yet",
        "says what is missing"
    );

    let mut client = server.client().await;
    client.put("still", "alive", None).await.unwrap();
    assert_eq!(client.get("still", None).await.unwrap().kvs()[0].value(), b"alive");
}

/// Opens a bidi stream on `path`, sends one frame that does not decode as the method's request, keeps
/// the sending side open, and returns how the response stream ended.
async fn garbage_on_stream(endpoint: &str, path: &'static str) -> Result<Option<Vec<u8>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel(endpoint).await.unwrap());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<WrongWireType, t4::proto::etcdserverpb::LeaseKeepAliveResponse>::default();
    let requests = futures_lite::stream::once(WrongWireType { key: 7 }).chain(futures_lite::stream::pending());
    let mut responses =
        grpc.streaming(tonic::Request::new(requests), PathAndQuery::from_static(path), codec).await?.into_inner();
    responses.message().await.map(|m| m.map(|m| prost::Message::encode_to_vec(&m)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_watch_or_keep_alive_stream_ends_it_with_internal() {
    // etcd 3.4 answers "grpc: failed to unmarshal the received message proto: wrong wireType = 1 for
    // field CreateRequest" (and "... for field ID"); T4 used to end the watch stream with OK.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_under_test(dir.path(), &[]);
    for path in ["/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"] {
        let status = garbage_on_stream(&server.endpoint, path).await.expect_err("the stream must fail");
        assert_eq!(status.code(), tonic::Code::Internal, "{path}: {status:?}");
        // grpc-go's wording; what follows is the decoder's reason (Go's protobuf words it its own way).
        assert!(status.message().starts_with("grpc: failed to unmarshal the received message "), "{path}: {status:?}");
    }
}
