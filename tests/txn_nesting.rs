//! Nested transactions against a real etcd 3.4 and T4, side by side: the same wire bytes go to
//! both, and both must answer alike. etcd bounds nesting only by its op budget (`--max-txn-ops`, 128:
//! each level spends what its longest list holds), so 128 levels of one-op txns pass, 129 do not,
//! and any deeper nesting, however deep, gets "too many operations in txn request". T4 used to fail
//! from 51 levels on with prost's "recursion limit reached".
//!
//! Requests are built as wire bytes without recursion (a 10,000-level `TxnRequest` value would
//! overflow the test's own stack when dropped), and responses are read only as far as their header
//! and `succeeded` (prost stops decoding responses nested 50 levels deep).

mod common;

use common::channel;
use prost::Message;
use prost::bytes::BufMut;
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, ResponseHeader};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// A TxnResponse read as far as a test needs: `responses` (field 3) is skipped as unknown.
#[derive(Clone, PartialEq, prost::Message)]
struct TxnOutcome {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    succeeded: bool,
}

/// Sends bytes as they are and reads a [`TxnOutcome`].
#[derive(Default)]
struct RawTxnCodec;

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Codec for RawTxnCodec {
    type Encode = Vec<u8>;
    type Decode = TxnOutcome;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<TxnOutcome>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `levels` txns nested through their single success op, the innermost one's body being
/// `innermost` (wire bytes of a TxnRequest); built outside in, without recursion.
fn nested(levels: usize, innermost: &[u8]) -> Vec<u8> {
    let mut bodies = vec![innermost.len()]; // bodies[i]: the body of level `levels - i`
    for i in 1..levels {
        let op = 1 + varint_len(bodies[i - 1]) + bodies[i - 1];
        bodies.push(1 + varint_len(op) + op);
    }
    let mut out = Vec::with_capacity(bodies[levels - 1]);
    for i in (1..levels).rev() {
        let inner = bodies[i - 1];
        out.push(0x12); // TxnRequest.success
        put_varint(&mut out, 1 + varint_len(inner) + inner);
        out.push(0x22); // RequestOp.request_txn
        put_varint(&mut out, inner);
    }
    out.extend_from_slice(innermost);
    out
}

/// A TxnRequest body whose success branch holds `ops` (each the wire bytes of a RequestOp).
fn with_ops(ops: &[Vec<u8>]) -> Vec<u8> {
    let mut txn = Vec::new();
    for op in ops {
        txn.push(0x12);
        put_varint(&mut txn, op.len());
        txn.extend_from_slice(op);
    }
    txn
}

/// A RequestOp holding the txn `body`.
fn txn_op(body: &[u8]) -> Vec<u8> {
    let mut op = vec![0x22];
    put_varint(&mut op, body.len());
    op.extend_from_slice(body);
    op
}

fn put_op(key: &str) -> Vec<u8> {
    let put = PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
    RequestOp { request: Some(Request::RequestPut(put)) }.encode_to_vec()
}

fn range_op(key: &str) -> Vec<u8> {
    RequestOp { request: Some(Request::RequestRange(RangeRequest { key: key.into(), ..Default::default() })) }
        .encode_to_vec()
}

/// What a server answered, comparable across servers: `Ok(succeeded)` or the error's code and message.
type Answer = Result<bool, (tonic::Code, String)>;

async fn txn(endpoint: &str, bytes: Vec<u8>) -> Answer {
    let mut grpc = tonic::client::Grpc::new(channel(endpoint).await.expect("connect"))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    grpc.ready().await.expect("ready");
    let path = PathAndQuery::from_static("/etcdserverpb.KV/Txn");
    match grpc.unary(tonic::Request::new(bytes), path, RawTxnCodec).await {
        Ok(response) => Ok(response.into_inner().succeeded),
        Err(status) => Err((status.code(), status.message().to_string())),
    }
}

/// Whether `key` exists on the server.
async fn exists(endpoint: &str, key: &str) -> bool {
    let mut kv = t4::proto::etcdserverpb::kv_client::KvClient::new(channel(endpoint).await.expect("connect"));
    let range = RangeRequest { key: key.into(), count_only: true, ..Default::default() };
    kv.range(range).await.expect("range").into_inner().count == 1
}

const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_txns_are_accepted_and_refused_exactly_as_etcd_does() {
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;

    let one_put = |key: &str| with_ops(&[put_op(key)]);
    let deep = nested(10_000, &one_put("never"));
    let cases: Vec<(String, Vec<u8>, Answer)> = vec![
        ("60 levels, a put".into(), nested(60, &one_put("l60")), Ok(true)),
        ("127 levels, a put".into(), nested(127, &one_put("l127")), Ok(true)),
        ("128 levels, a put".into(), nested(128, &one_put("l128")), Ok(true)),
        (
            "128 levels, a range (answered off the sequencer)".into(),
            nested(128, &with_ops(&[range_op("l60")])),
            Ok(true),
        ),
        ("129 levels, the last one empty".into(), nested(129, &[]), Ok(true)),
        (
            "129 levels, a put".into(),
            nested(129, &one_put("l129")),
            Err((tonic::Code::InvalidArgument, TOO_MANY_OPS.into())),
        ),
        (
            "130 levels, the last one empty".into(),
            nested(130, &[]),
            Err((tonic::Code::InvalidArgument, TOO_MANY_OPS.into())),
        ),
        ("200 levels".into(), nested(200, &one_put("l200")), Err((tonic::Code::InvalidArgument, TOO_MANY_OPS.into()))),
        ("10,000 levels".into(), deep.clone(), Err((tonic::Code::InvalidArgument, TOO_MANY_OPS.into()))),
        ("a MiB of nesting".into(), nested(200_000, &[]), Err((tonic::Code::InvalidArgument, TOO_MANY_OPS.into()))),
        // etcd checks in order: a fault before the deep op wins over it, one after it does not.
        (
            "an empty key, then 10,000 levels".into(),
            with_ops(&[range_op(""), txn_op(&deep)]),
            Err((tonic::Code::InvalidArgument, "etcdserver: key is not provided".into())),
        ),
        (
            "10,000 levels, then an empty key".into(),
            with_ops(&[txn_op(&deep), range_op("")]),
            Err((tonic::Code::InvalidArgument, TOO_MANY_OPS.into())),
        ),
    ];
    for (name, bytes, expected) in cases {
        let from_etcd = txn(&etcd.endpoint, bytes.clone()).await;
        assert_eq!(from_etcd, expected, "{name}: etcd (the test's expectation is wrong)");
        let from_t4 = txn(&t4.endpoint, bytes).await;
        assert_eq!(from_t4, from_etcd, "{name}: T4 differs from etcd");
    }
    for key in ["l60", "l127", "l128", "l129", "l200", "never"] {
        assert_eq!(exists(&t4.endpoint, key).await, exists(&etcd.endpoint, key).await, "{key}");
    }
    assert!(exists(&t4.endpoint, "l128").await, "the 128-level put took effect");

    // Bytes that do not decode, 10,000 levels down (success as a varint): both refuse the message.
    let garbage = nested(10_000, &[0x10, 0x01]);
    for server in [&etcd, &t4] {
        let Err((code, message)) = txn(&server.endpoint, garbage.clone()).await else {
            panic!("{}: undecodable bytes were accepted", server.endpoint)
        };
        assert_eq!(code, tonic::Code::Internal, "{message}");
        assert!(message.starts_with("grpc: error unmarshalling request: "), "{message}");
    }
    // T4 still serves.
    assert_eq!(txn(&t4.endpoint, nested(2, &one_put("after"))).await, Ok(true));
}
