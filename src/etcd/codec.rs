//! The gRPC codec of every generated service and client (build.rs names it): prost's encoding, with
//! a message that does not decode answered as etcd's gRPC layer (grpc-go) answers it, for unary
//! calls and for the messages of a stream alike (tonic's own codec words it its own way). A
//! `TxnRequest` is decoded without recursion (`txn_wire`), so nesting is bounded by validation and
//! not by prost's recursion limit or the stack.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};

use super::status::{self, Receipt};
use super::txn_wire::decode_txn;
use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, SnapshotRequest, TxnRequest, WatchRequest};

/// Encodes `T` and decodes `U` with prost.
#[derive(Debug, Clone)]
pub struct EtcdCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for EtcdCodec<T, U> {
    fn default() -> Self {
        EtcdCodec { _types: PhantomData }
    }
}

impl<T, U> Codec for EtcdCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = EtcdDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        EtcdDecoder { receipt: receipt_of::<U>(), _type: PhantomData }
    }
}

/// How etcd's server receives a message of type `U`: the requests of its streaming methods (Watch,
/// LeaseKeepAlive, Snapshot) are read from a stream, every other request as a unary call's. (On a
/// client, where `U` is a response, the distinction is not used: only servers answer with it.)
fn receipt_of<U: 'static>() -> Receipt {
    let streamed =
        [TypeId::of::<WatchRequest>(), TypeId::of::<LeaseKeepAliveRequest>(), TypeId::of::<SnapshotRequest>()];
    if streamed.contains(&TypeId::of::<U>()) { Receipt::Stream } else { Receipt::Unary }
}

/// Decodes `U` with prost; a failure is grpc-go's `Internal` status for how `U` is received.
#[derive(Debug, Clone)]
pub struct EtcdDecoder<U> {
    receipt: Receipt,
    _type: PhantomData<U>,
}

impl<U: Message + Default + 'static> Decoder for EtcdDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if TypeId::of::<U>() == TypeId::of::<TxnRequest>() {
            let bytes = buf.copy_to_bytes(buf.remaining());
            let txn = decode_txn(&bytes).map_err(|e| status::undecodable(self.receipt, &e.to_string()))?;
            let txn: Box<dyn Any> = Box::new(txn);
            return Ok(Some(*txn.downcast::<U>().expect("U is TxnRequest")));
        }
        U::decode(buf).map(Some).map_err(|e| status::undecodable(self.receipt, &prost_reason(&e)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// prost's description of a decode failure without its own "failed to decode" preamble.
pub fn prost_reason(error: &prost::DecodeError) -> String {
    let text = error.to_string();
    match text.strip_prefix("failed to decode Protobuf message: ") {
        Some(reason) => reason.to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::RangeRequest;

    #[test]
    fn streamed_requests_are_told_from_unary_ones() {
        assert_eq!(receipt_of::<WatchRequest>(), Receipt::Stream);
        assert_eq!(receipt_of::<LeaseKeepAliveRequest>(), Receipt::Stream);
        assert_eq!(receipt_of::<RangeRequest>(), Receipt::Unary);
    }

    #[test]
    fn prost_reasons_lose_the_preamble() {
        // Field 1 of WatchRequest (create_request) as a varint: the wrong wire type.
        let error = WatchRequest::decode(&[0x08, 0x01][..]).unwrap_err();
        let reason = prost_reason(&error);
        assert!(!reason.starts_with("failed to decode"), "{reason}");
        assert!(reason.contains("invalid wire type"), "{reason}");
    }
}
