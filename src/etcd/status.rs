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
        // The client sees what etcd says of a server going away; the node's log and exit say why.
        Error::Stopped { .. } => (Code::Unavailable, "etcdserver: server stopped"),
        Error::WatchCanceled(_) => (Code::Cancelled, "etcdserver: watch canceled"),
        Error::Timeout => (Code::Unavailable, "etcdserver: request timed out"),
        Error::NoSpace => (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded"),
        Error::CorruptCluster => (Code::DataLoss, "etcdserver: corrupt cluster"),
        Error::BadLeaderTransferee => (Code::FailedPrecondition, "etcdserver: bad leader transferee"),
        Error::AuthNotEnabled => (Code::FailedPrecondition, "etcdserver: authentication is not enabled"),
        Error::RootUserNotExist => (Code::FailedPrecondition, "etcdserver: root user does not exist"),
        Error::UserEmpty => (Code::InvalidArgument, "etcdserver: user name is empty"),
        Error::UserNotFound => (Code::FailedPrecondition, "etcdserver: user name not found"),
        Error::RoleEmpty => (Code::InvalidArgument, "etcdserver: role name is empty"),
        Error::RoleNotFound => (Code::FailedPrecondition, "etcdserver: role name not found"),
        Error::MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
        Error::MemberNotLearner => (Code::FailedPrecondition, "etcdserver: can only promote a learner member"),
        Error::MemberBadUrls => (Code::InvalidArgument, "etcdserver: given member URLs are invalid"),
        // etcd 3.4 maps this error to its client-side form, which grpc-go does not recognise: Unknown.
        Error::NotEnoughStartedMembers => {
            (Code::Unknown, "etcdserver: re-configuration failed due to not enough started members")
        }
        // The lock and election services' own errors are plain Go errors in etcd: Unknown.
        Error::ElectionNotLeader => (Code::Unknown, "election: not leader"),
        Error::ElectionNoLeader => (Code::Unknown, "election: no leader"),
        Error::LeaderKeyMissing => (Code::Unknown, "\"leader\" field must be provided"),
        Error::LostWatcher => (Code::Unknown, "lost watcher waiting for delete"),
        Error::Unimplemented(missing) => return Status::new(Code::Unimplemented, format!("t4: {missing}")),
        Error::StoreUnavailable(_) => {
            return Status::new(Code::Unavailable, format!("etcdserver: {error}"));
        }
        Error::WatchHistoryUnreadable(source) => {
            return Status::new(Code::Unavailable, format!("etcdserver: {source}"));
        }
        // `open_watch` answers with the requests' own status; this only if it was lost.
        Error::WatchRequestsBroken => (Code::Internal, "t4: the watch stream's requests broke"),
        Error::Internal(_)
        | Error::InputEnded(_)
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

/// The status etcd's lock and election services answer when a KV or lease call they make fails.
/// They call etcd through its Go client, which turns etcd's own errors into a client-side type that
/// grpc-go does not recognise, so those reach the caller as `Unknown` with etcd's message; errors
/// the client does not know keep their status.
pub fn through_etcd_client(error: Error) -> Status {
    let known_to_client = matches!(
        error,
        Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::DuplicateKey
            | Error::Compacted
            | Error::FutureRevision
            | Error::LeaseNotFound
            | Error::LeaseExists
            | Error::LeaseTtlTooLarge
            | Error::RequestTooLarge
            | Error::Closed
            | Error::Timeout
            | Error::NoSpace
    );
    let status = to_status(error);
    if known_to_client { Status::new(Code::Unknown, status.message()) } else { status }
}

/// What tonic's generated default methods answer (a method of T4's protos it does not serve yet).
const TONIC_DEFAULT_STUB: &str = "Not yet implemented";

/// The message of an `Unimplemented` answer to the call of gRPC `path` (`/package.Service/Method`)
/// that carries none of its own (tonic leaves it empty for paths it does not route, and gives
/// default methods a fixed text): grpc-go's words for a service or method T4's protos do not have
/// (as etcd answers), or the method's name for one T4 has not built yet. `None` if the status
/// already says what is missing.
pub fn unimplemented_message(path: &str, message: &str, served_services: &[&str]) -> Option<String> {
    if !message.is_empty() && message != TONIC_DEFAULT_STUB {
        return None;
    }
    let (service, method) = path.strip_prefix('/').and_then(|p| p.split_once('/')).unwrap_or((path, ""));
    Some(if message == TONIC_DEFAULT_STUB {
        format!("t4: {service}/{method} is not implemented yet")
    } else if served_services.contains(&service) {
        format!("unknown method {method} for service {service}")
    } else {
        format!("unknown service {service}")
    })
}

/// grpc.health.v1's answer for a service it does not know.
pub fn health_service_unknown() -> Status {
    Status::new(Code::NotFound, "unknown service")
}

/// A gateway stream's request that grew past the request limit (grpc-go's words, without sizes).
pub fn gateway_message_too_large() -> Status {
    Status::new(Code::ResourceExhausted, "grpc: received message larger than max")
}

/// A gateway request body that is not the request's JSON (grpc-gateway answers InvalidArgument).
pub fn gateway_undecodable(error: &serde_json::Error) -> Status {
    Status::new(Code::InvalidArgument, error.to_string())
}

/// A gateway answer that could not be written as JSON.
pub fn gateway_unencodable(error: &serde_json::Error) -> Status {
    Status::new(Code::Internal, format!("encoding the response: {error}"))
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
/// instead of tonic's own wording and code; so an `Unimplemented` answer always says what is
/// missing ([`unimplemented_message`]); and counts each call for `/metrics` (its final code and how
/// long it took, a stream from its start to its end).
#[derive(Clone)]
pub struct FrameLimitCompat<S> {
    pub inner: S,
    /// Where each answered call is counted (by method and final code).
    pub metrics: Metrics,
    /// The gRPC services the routes serve (to tell an unknown method from an unknown service).
    pub served_services: &'static [&'static str],
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
        let path = request.uri().path_and_query().cloned();
        let served_services = self.served_services;
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // A call that fails at once carries its status in the headers; one that answers carries
            // it in the trailers, after its body: the call is counted when its body ends.
            let mut code = None;
            if let Some(status) = Status::from_header_map(response.headers()) {
                code = Some(status.code());
                let replacement = match status.code() {
                    Code::OutOfRange => {
                        grpc_go_too_large(status.message()).map(|m| Status::new(Code::ResourceExhausted, m))
                    }
                    Code::Unimplemented => {
                        let path = path.as_ref().map_or("", |p| p.path());
                        unimplemented_message(path, status.message(), served_services)
                            .map(|m| Status::new(Code::Unimplemented, m))
                    }
                    _ => None,
                };
                if let Some(replacement) = replacement {
                    code = Some(replacement.code());
                    let headers = response.headers_mut();
                    headers.remove("grpc-status");
                    headers.remove("grpc-message");
                    if let Err(e) = replacement.add_header(headers) {
                        tracing::warn!(error = %e, "could not rewrite a call's status");
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

    #[test]
    fn unimplemented_answers_name_what_is_missing() {
        use super::unimplemented_message;
        let served = ["etcdserverpb.KV", "etcdserverpb.Maintenance"];
        let named = |path, message| unimplemented_message(path, message, &served);
        assert_eq!(
            named("/etcdserverpb.Maintenance/Hash", "Not yet implemented").as_deref(),
            Some("t4: etcdserverpb.Maintenance/Hash is not implemented yet")
        );
        assert_eq!(
            named("/etcdserverpb.KV/Nope", "").as_deref(),
            Some("unknown method Nope for service etcdserverpb.KV")
        );
        assert_eq!(named("/foo.Bar/Baz", "").as_deref(), Some("unknown service foo.Bar"));
        assert_eq!(named("/etcdserverpb.KV/Range", "t4: says what is missing"), None);
    }
}
