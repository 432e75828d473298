//! The one place where T4 errors become gRPC statuses: etcd's codes and exact message strings
//! (clients such as clientv3 match on the text).

use tonic::{Code, Status};

use crate::error::Error;
use crate::metrics::{CallRecord, Metrics};

/// The status etcd returns for `error`.
pub fn to_status(error: Error) -> Status {
    let (code, message) = match &error {
        Error::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        Error::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
        Error::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        Error::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        Error::TooManyOps => (Code::InvalidArgument, "etcdserver: too many operations in txn request"),
        Error::DuplicateKey => (Code::InvalidArgument, "etcdserver: duplicate key given in txn request"),
        Error::Compacted => (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
        Error::FutureRevision => (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision"),
        Error::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
        Error::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists"),
        Error::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL"),
        Error::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
        Error::Closed => (Code::Unavailable, "etcdserver: server stopped"),
        Error::WatchCanceled(_) => (Code::Cancelled, "etcdserver: watch canceled"),
        Error::Timeout => (Code::Unavailable, "etcdserver: request timed out"),
        Error::NoSpace => (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded"),
        Error::CorruptCluster => (Code::DataLoss, "etcdserver: corrupt cluster"),
        Error::StoreUnavailable(_) => {
            return Status::new(Code::Unavailable, format!("etcdserver: {error}"));
        }
        Error::Storage(_)
        | Error::Corrupt(_)
        | Error::Runtime(_)
        | Error::DataDir { .. }
        | Error::DataDirLocked { .. }
        | Error::Setting { .. }
        | Error::Listen { .. } => {
            tracing::error!(error = %error, "request failed");
            return Status::new(Code::Unavailable, format!("etcdserver: {error}"));
        }
    };
    Status::new(code, message)
}

/// How a server received a message: as a unary call's request, or from a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    Unary,
    Stream,
}

/// The status etcd's gRPC layer (grpc-go) answers when a received message does not decode:
/// `Internal`, worded by how it was received; `reason` is the decoder's (Go's protobuf reasons differ).
pub fn undecodable(receipt: Receipt, reason: &str) -> Status {
    let message = match receipt {
        Receipt::Unary => format!("grpc: error unmarshalling request: {reason}"),
        Receipt::Stream => format!("grpc: failed to unmarshal the received message {reason}"),
    };
    Status::new(Code::Internal, message)
}

/// Wraps the gRPC routes so a request frame over the size limit is refused as etcd's gRPC layer
/// (grpc-go) refuses it: `ResourceExhausted`, "grpc: received message larger than max (N vs. M)",
/// instead of tonic's own wording and code; and counts each call for `/metrics` (its final code and
/// how long it took, a stream from its start to its end).
#[derive(Clone)]
pub struct FrameLimitCompat<S> {
    pub inner: S,
    /// Where each answered call is counted (by method and final code).
    pub metrics: Metrics,
}

const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// Turns tonic's "found N bytes, the limit is: M bytes" into grpc-go's message, if it is that.
fn grpc_go_too_large(message: &str) -> Option<String> {
    let rest = message.strip_prefix(TONIC_TOO_LARGE)?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    let (found, limit): (u64, u64) = (found.parse().ok()?, limit.parse().ok()?);
    Some(format!("grpc: received message larger than max ({found} vs. {limit})"))
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for FrameLimitCompat<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let record = Metrics::grpc_method(request.uri().path()).map(|method| CallRecord::start(&self.metrics, method));
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // A call that fails at once carries its status in the headers; one that answers carries
            // it in the trailers, after its body: the call is counted when its body ends.
            let mut code = None;
            if let Some(status) = Status::from_header_map(response.headers()) {
                code = Some(status.code());
                if status.code() == Code::OutOfRange
                    && let Some(message) = grpc_go_too_large(status.message())
                {
                    let replacement = Status::new(Code::ResourceExhausted, message);
                    code = Some(replacement.code());
                    let headers = response.headers_mut();
                    headers.remove("grpc-status");
                    headers.remove("grpc-message");
                    if let Err(e) = replacement.add_header(headers) {
                        tracing::warn!(error = %e, "could not rewrite an oversized-frame status");
                    }
                }
            }
            let Some(mut record) = record else { return Ok(response) };
            if let Some(code) = code {
                record.set_code(code);
            }
            Ok(response.map(|body| tonic::body::Body::new(CountedBody { inner: body, record: Some(record) })))
        })
    }
}

pin_project_lite::pin_project! {
    /// A gRPC response body that counts its call when it ends, with the status of its trailers (or
    /// of its headers, for a call that failed at once), or as `Canceled` when it is dropped first.
    struct CountedBody {
        #[pin]
        inner: tonic::body::Body,
        record: Option<CallRecord>,
    }
}

impl hyper::body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(record)) = (frame.trailers_ref(), this.record.as_mut())
                    && let Some(status) = Status::from_header_map(trailers)
                {
                    record.set_code(status.code());
                }
            }
            std::task::Poll::Ready(Some(Err(status))) => {
                if let Some(record) = this.record.as_mut() {
                    record.set_code(status.code());
                }
            }
            std::task::Poll::Ready(None) => {
                if let Some(mut record) = this.record.take()
                    && !record.has_code()
                {
                    record.set_code(Code::Unknown); // a gRPC body always ends with a status
                }
            }
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::grpc_go_too_large;

    #[test]
    fn oversized_frame_messages_take_grpc_gos_wording() {
        assert_eq!(
            grpc_go_too_large(
                "Error, decoded message length too large: found 3145734 bytes, the limit is: 2097152 bytes"
            )
            .as_deref(),
            Some("grpc: received message larger than max (3145734 vs. 2097152)")
        );
        assert_eq!(grpc_go_too_large("etcdserver: mvcc: required revision is a future revision"), None);
    }
}
