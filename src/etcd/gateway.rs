//! etcd's JSON gateway (grpc-gateway in etcd 3.4): `POST /v3/<service>/<method>` (or `/v3beta/…`)
//! with the request message as JSON, answered with the response message as JSON, or with
//! grpc-gateway's error body and the HTTP status it maps the gRPC code to. The JSON mapping is the
//! wire types' own (pbjson, proto field names as etcd's `OrigName`); every call goes to the same
//! service method gRPC calls, so no KV, lease or cluster rule is written twice.

use std::convert::Infallible;
use std::pin::Pin;

use bytes::Bytes;
use futures_lite::{Stream, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Code, Request, Status};

use super::Services;
use super::http::HttpBody;
use crate::metrics::{CallRecord, Metrics};
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{SnapshotRequest, WatchRequest};
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3lockpb::lock_server::Lock;

/// The path prefixes the gateway answers under (etcd 3.4 serves both).
const PREFIXES: [&str; 2] = ["/v3/", "/v3beta/"];

/// Whether `path` is the gateway's.
pub fn owns(path: &str) -> bool {
    PREFIXES.iter().any(|p| path.starts_with(p))
}

/// The gRPC method a gateway method calls, as `/package.Service/Method` (how `/metrics` counts it:
/// etcd's gateway calls its gRPC server, so its calls are counted there too).
fn grpc_path(method: &str) -> Option<&'static str> {
    Some(match method {
        "kv/range" => "/etcdserverpb.KV/Range",
        "kv/put" => "/etcdserverpb.KV/Put",
        "kv/deleterange" => "/etcdserverpb.KV/DeleteRange",
        "kv/txn" => "/etcdserverpb.KV/Txn",
        "kv/compaction" => "/etcdserverpb.KV/Compact",
        "watch" => "/etcdserverpb.Watch/Watch",
        "lease/grant" => "/etcdserverpb.Lease/LeaseGrant",
        "lease/revoke" | "kv/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke",
        "lease/keepalive" => "/etcdserverpb.Lease/LeaseKeepAlive",
        "lease/timetolive" | "kv/lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive",
        "lease/leases" | "kv/lease/leases" => "/etcdserverpb.Lease/LeaseLeases",
        "maintenance/status" => "/etcdserverpb.Maintenance/Status",
        "maintenance/alarm" => "/etcdserverpb.Maintenance/Alarm",
        "maintenance/defragment" => "/etcdserverpb.Maintenance/Defragment",
        "maintenance/hash" => "/etcdserverpb.Maintenance/HashKV",
        "maintenance/snapshot" => "/etcdserverpb.Maintenance/Snapshot",
        "maintenance/transfer-leadership" => "/etcdserverpb.Maintenance/MoveLeader",
        "cluster/member/list" => "/etcdserverpb.Cluster/MemberList",
        "cluster/member/add" => "/etcdserverpb.Cluster/MemberAdd",
        "cluster/member/remove" => "/etcdserverpb.Cluster/MemberRemove",
        "cluster/member/update" => "/etcdserverpb.Cluster/MemberUpdate",
        "cluster/member/promote" => "/etcdserverpb.Cluster/MemberPromote",
        "auth/enable" => "/etcdserverpb.Auth/AuthEnable",
        "auth/disable" => "/etcdserverpb.Auth/AuthDisable",
        "auth/status" => "/etcdserverpb.Auth/AuthStatus",
        "auth/authenticate" => "/etcdserverpb.Auth/Authenticate",
        "auth/user/add" => "/etcdserverpb.Auth/UserAdd",
        "auth/user/get" => "/etcdserverpb.Auth/UserGet",
        "auth/user/list" => "/etcdserverpb.Auth/UserList",
        "auth/user/delete" => "/etcdserverpb.Auth/UserDelete",
        "auth/user/changepw" => "/etcdserverpb.Auth/UserChangePassword",
        "auth/user/grant" => "/etcdserverpb.Auth/UserGrantRole",
        "auth/user/revoke" => "/etcdserverpb.Auth/UserRevokeRole",
        "auth/role/add" => "/etcdserverpb.Auth/RoleAdd",
        "auth/role/get" => "/etcdserverpb.Auth/RoleGet",
        "auth/role/list" => "/etcdserverpb.Auth/RoleList",
        "auth/role/delete" => "/etcdserverpb.Auth/RoleDelete",
        "auth/role/grant" => "/etcdserverpb.Auth/RoleGrantPermission",
        "auth/role/revoke" => "/etcdserverpb.Auth/RoleRevokePermission",
        "lock/lock" => "/v3lockpb.Lock/Lock",
        "lock/unlock" => "/v3lockpb.Lock/Unlock",
        "election/campaign" => "/v3electionpb.Election/Campaign",
        "election/proclaim" => "/v3electionpb.Election/Proclaim",
        "election/leader" => "/v3electionpb.Election/Leader",
        "election/observe" => "/v3electionpb.Election/Observe",
        "election/resign" => "/v3electionpb.Election/Resign",
        _ => return None,
    })
}

/// Starts counting a gateway call of `path`, if its method is counted.
fn record(services: &Services, path: &str) -> Option<CallRecord> {
    let method = Metrics::grpc_method(grpc_path(method_of(path))?)?;
    Some(CallRecord::start(&services.metrics, method))
}

/// The gRPC code an error answer carries (a response extension), for `/metrics`.
#[derive(Clone, Copy)]
struct AnsweredCode(Code);

/// Answers a gateway call: `path` (one of [`owns`]'s) with the request `body`.
pub async fn call(services: &Services, path: &str, body: Bytes) -> Response<HttpBody> {
    let record = record(services, path);
    let response = dispatch(services, path, body).await;
    if let Some(mut record) = record {
        record.set_code(response.extensions().get::<AnsweredCode>().map_or(Code::Ok, |answered| answered.0));
    }
    response
}

async fn dispatch(services: &Services, path: &str, body: Bytes) -> Response<HttpBody> {
    let method = method_of(path);
    let s = services.clone();
    match method {
        "kv/range" => unary(body, |r| async move { Kv::range(&s, r).await }).await,
        "kv/put" => unary(body, |r| async move { Kv::put(&s, r).await }).await,
        "kv/deleterange" => unary(body, |r| async move { Kv::delete_range(&s, r).await }).await,
        "kv/txn" => unary(body, |r| async move { Kv::txn(&s, r).await }).await,
        "kv/compaction" => unary(body, |r| async move { Kv::compact(&s, r).await }).await,
        "lease/grant" => unary(body, |r| async move { Lease::lease_grant(&s, r).await }).await,
        "lease/revoke" | "kv/lease/revoke" => unary(body, |r| async move { Lease::lease_revoke(&s, r).await }).await,
        "lease/timetolive" | "kv/lease/timetolive" => {
            unary(body, |r| async move { Lease::lease_time_to_live(&s, r).await }).await
        }
        "lease/leases" | "kv/lease/leases" => unary(body, |r| async move { Lease::lease_leases(&s, r).await }).await,
        "maintenance/status" => unary(body, |r| async move { Maintenance::status(&s, r).await }).await,
        "maintenance/alarm" => unary(body, |r| async move { Maintenance::alarm(&s, r).await }).await,
        "cluster/member/list" => unary(body, |r| async move { Cluster::member_list(&s, r).await }).await,
        // Served by the same methods as over gRPC (those not built yet answer Unimplemented, named).
        "cluster/member/add" => unary(body, |r| async move { Cluster::member_add(&s, r).await }).await,
        "cluster/member/remove" => unary(body, |r| async move { Cluster::member_remove(&s, r).await }).await,
        "cluster/member/update" => unary(body, |r| async move { Cluster::member_update(&s, r).await }).await,
        "cluster/member/promote" => unary(body, |r| async move { Cluster::member_promote(&s, r).await }).await,
        "maintenance/defragment" => unary(body, |r| async move { Maintenance::defragment(&s, r).await }).await,
        "maintenance/hash" => unary(body, |r| async move { Maintenance::hash_kv(&s, r).await }).await,
        "maintenance/transfer-leadership" => {
            unary(body, |r| async move { Maintenance::move_leader(&s, r).await }).await
        }
        // A server stream: one request, each chunk (its blob base64) a JSON line, as etcd's gateway.
        "maintenance/snapshot" => match Maintenance::snapshot(&s, Request::new(SnapshotRequest {})).await {
            Ok(chunks) => streamed(Box::pin(results(chunks.into_inner(), None))),
            Err(status) => error(&status),
        },
        "auth/enable" => unary(body, |r| async move { Auth::auth_enable(&s, r).await }).await,
        "auth/disable" => unary(body, |r| async move { Auth::auth_disable(&s, r).await }).await,
        "auth/status" => unary(body, |r| async move { Auth::auth_status(&s, r).await }).await,
        "auth/authenticate" => unary(body, |r| async move { Auth::authenticate(&s, r).await }).await,
        "auth/user/add" => unary(body, |r| async move { Auth::user_add(&s, r).await }).await,
        "auth/user/get" => unary(body, |r| async move { Auth::user_get(&s, r).await }).await,
        "auth/user/list" => unary(body, |r| async move { Auth::user_list(&s, r).await }).await,
        "auth/user/delete" => unary(body, |r| async move { Auth::user_delete(&s, r).await }).await,
        "auth/user/changepw" => unary(body, |r| async move { Auth::user_change_password(&s, r).await }).await,
        "auth/user/grant" => unary(body, |r| async move { Auth::user_grant_role(&s, r).await }).await,
        "auth/user/revoke" => unary(body, |r| async move { Auth::user_revoke_role(&s, r).await }).await,
        "auth/role/add" => unary(body, |r| async move { Auth::role_add(&s, r).await }).await,
        "auth/role/get" => unary(body, |r| async move { Auth::role_get(&s, r).await }).await,
        "auth/role/list" => unary(body, |r| async move { Auth::role_list(&s, r).await }).await,
        "auth/role/delete" => unary(body, |r| async move { Auth::role_delete(&s, r).await }).await,
        "auth/role/grant" => unary(body, |r| async move { Auth::role_grant_permission(&s, r).await }).await,
        "auth/role/revoke" => unary(body, |r| async move { Auth::role_revoke_permission(&s, r).await }).await,
        "lock/lock" => unary(body, |r| async move { Lock::lock(&s, r).await }).await,
        "lock/unlock" => unary(body, |r| async move { Lock::unlock(&s, r).await }).await,
        "election/campaign" => unary(body, |r| async move { Election::campaign(&s, r).await }).await,
        "election/proclaim" => unary(body, |r| async move { Election::proclaim(&s, r).await }).await,
        "election/leader" => unary(body, |r| async move { Election::leader(&s, r).await }).await,
        "election/resign" => unary(body, |r| async move { Election::resign(&s, r).await }).await,
        // A server stream: one request, answered as the watch's are.
        "election/observe" => match decode(&body) {
            Ok(request) => streamed(Box::pin(results(s.observe_answers(request), None))),
            Err(status) => error(&status),
        },
        // grpc-gateway's answer to a path it has no route for.
        _ => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"Not Found\n")).boxed_unsync());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

/// Whether `path` is a streaming call (its requests and answers are sequences of JSON objects).
pub fn is_streaming(path: &str) -> bool {
    matches!(method_of(path), "watch" | "lease/keepalive")
}

fn method_of(path: &str) -> &str {
    PREFIXES.iter().find_map(|p| path.strip_prefix(p)).unwrap_or(path)
}

/// Answers a streaming call: the request body is read as a sequence of JSON request messages as
/// they arrive (each at most `limit` bytes), and each answer is written as `{"result":…}` and a
/// newline, as grpc-gateway streams; an error ends the answers with `{"error":…}`.
pub fn call_streaming(services: &Services, path: &str, body: Incoming, limit: usize) -> Response<HttpBody> {
    let mut record = record(services, path);
    let answers: Pin<Box<dyn Stream<Item = Bytes> + Send>> = match method_of(path) {
        "watch" => {
            // A watch outlives its request body (a client sends its creates and then only reads), as
            // a gRPC watch outlives its client's half-close: its requests end only when its answers
            // are dropped (the client went away), so the shard's task reading them ends then too.
            let (requests, answering) = until_answers_dropped(json_messages::<WatchRequest>(body, limit));
            let requests = Box::pin(requests);
            let services = services.clone();
            let opened = async move { services.open_watch(requests).await.map_err(super::status::to_status) };
            Box::pin(futures_lite::stream::once_future(opened).flat_map(
                move |opened| -> Pin<Box<dyn Stream<Item = Bytes> + Send>> {
                    let _held_while_answering = &answering;
                    match opened {
                        Ok(responses) => Box::pin(results(responses, record.take())),
                        Err(status) => {
                            if let Some(record) = record.as_mut() {
                                record.set_code(status.code());
                            }
                            Box::pin(futures_lite::stream::once(stream_error(&status)))
                        }
                    }
                },
            ))
        }
        _ => Box::pin(results(services.keep_alive_answers(Box::pin(json_messages(body, limit))), record)),
    };
    streamed(answers)
}

/// A streamed answer: each item of `answers` as it comes.
fn streamed(answers: Pin<Box<dyn Stream<Item = Bytes> + Send>>) -> Response<HttpBody> {
    let frames = answers.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("valid"));
    response
}

/// `requests`, then nothing more until the returned guard is dropped (with the answers it is kept
/// in), then the end.
fn until_answers_dropped<T: Send + 'static>(
    requests: impl Stream<Item = T> + Send + 'static,
) -> (impl Stream<Item = T> + Send + 'static, flume::Sender<()>) {
    let (answering, answers_dropped) = flume::bounded::<()>(0);
    let dropped = async move {
        let _ = answers_dropped.recv_async().await;
    };
    (requests.chain(futures_lite::stream::once_future(dropped).filter_map(|()| None)), answering)
}

/// Each answer as `{"result":…}\n`; after an error, `{"error":…}\n` and the end. The call is
/// counted (`record`) when the answers end, or as canceled if the client goes away first.
fn results<T: Serialize + Send + 'static>(
    answers: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
    record: Option<CallRecord>,
) -> impl Stream<Item = Bytes> + Send {
    futures_lite::stream::unfold(Some((answers, record)), |state| async move {
        let (mut answers, mut record) = state?;
        let next = answers.next().await;
        let code = match &next {
            Some(Ok(_)) => None,
            Some(Err(status)) => Some(status.code()),
            None => Some(Code::Ok),
        };
        if let (Some(code), Some(record)) = (code, record.as_mut()) {
            record.set_code(code);
        }
        match next? {
            Ok(answer) => {
                let mut line = serde_json::to_vec(&StreamResult { result: &answer })
                    .unwrap_or_else(|e| format!("{{\"error\":{{\"message\":\"encoding: {e}\"}}}}").into_bytes());
                line.push(b'\n');
                Some((Bytes::from(line), Some((answers, record))))
            }
            Err(status) => Some((stream_error(&status), None)),
        }
    })
}

/// One answer of a stream, as grpc-gateway wraps it (the answer's fields keep their order).
#[derive(Serialize)]
struct StreamResult<'a, T> {
    result: &'a T,
}

/// grpc-gateway's error object in a stream.
fn stream_error(status: &Status) -> Bytes {
    let http = http_status(status.code());
    let error = serde_json::json!({ "error": {
        "grpc_code": status.code() as i32,
        "http_code": http.as_u16(),
        "message": status.message(),
        "http_status": http.canonical_reason().unwrap_or(""),
    }});
    let mut line = error.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

/// The request messages of a streaming call's body, decoded as they arrive. A message that does not
/// decode ends them, as grpc-gateway ends the call's sending side then (its answers go on); one
/// that grows past `limit` bytes ends them with ResourceExhausted.
fn json_messages<T: DeserializeOwned + Send + 'static>(
    body: Incoming,
    limit: usize,
) -> impl Stream<Item = Result<T, Status>> + Send {
    struct Reading {
        body: Incoming,
        buffer: Vec<u8>,
        ended: bool,
        failed: bool,
    }
    let start = Reading { body, buffer: Vec::new(), ended: false, failed: false };
    futures_lite::stream::unfold(start, move |mut r| async move {
        if r.failed {
            return None;
        }
        loop {
            let pending = r.buffer.iter().position(|b| !b.is_ascii_whitespace());
            if let Some(at) = pending {
                r.buffer.drain(..at);
                let mut messages = serde_json::Deserializer::from_slice(&r.buffer).into_iter::<T>();
                match messages.next() {
                    Some(Ok(message)) => {
                        let used = messages.byte_offset();
                        r.buffer.drain(..used);
                        return Some((Ok(message), r));
                    }
                    Some(Err(e)) if !e.is_eof() || r.ended => {
                        tracing::debug!(error = %e, "a gateway stream's request does not decode: no more requests");
                        return None;
                    }
                    _ => {} // a message not complete yet
                }
            } else if r.ended {
                return None;
            }
            if r.buffer.len() > limit {
                r.failed = true;
                return Some((Err(super::status::gateway_message_too_large()), r));
            }
            match r.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        r.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => r.ended = true,
            }
        }
    })
}

/// Decodes the request (an empty body is the empty message, as grpc-gateway reads it), calls the
/// service, and encodes its answer or its error.
async fn unary<Req, Resp, F, Fut>(body: Bytes, call: F) -> Response<HttpBody>
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let request = match decode(&body) {
        Ok(request) => request,
        Err(status) => return error(&status),
    };
    match call(Request::new(request)).await {
        Ok(response) => match serde_json::to_vec(response.get_ref()) {
            Ok(json) => answer(StatusCode::OK, json),
            Err(e) => error(&super::status::gateway_unencodable(&e)),
        },
        Err(status) => error(&status),
    }
}

/// A request message from its JSON body (an empty body is the empty message, as grpc-gateway reads it).
fn decode<Req: DeserializeOwned + Default>(body: &[u8]) -> Result<Req, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Req::default());
    }
    serde_json::from_slice::<Req>(body).map_err(|e| super::status::gateway_undecodable(&e))
}

/// grpc-gateway's error body (its fields in the order etcd 3.4 writes them) for a gRPC status.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

fn error(status: &Status) -> Response<HttpBody> {
    let body = ErrorBody { error: status.message(), message: status.message(), code: status.code() as i32 };
    let json = serde_json::to_vec(&body).expect("an error body always encodes");
    let mut response = answer(http_status(status.code()), json);
    response.extensions_mut().insert(AnsweredCode(status.code()));
    response
}

/// `HTTPStatusFromCode` of the grpc-gateway etcd 3.4 is built with (FailedPrecondition is 412 there).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn answer(status: StatusCode, json: Vec<u8>) -> Response<HttpBody> {
    let mut response = Response::new(Full::new(Bytes::from(json)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("valid"));
    response
}

/// The CORS headers etcd's client port sends with every answer (its default `--cors`: any origin).
pub fn allow_any_origin(response: &mut Response<HttpBody>) {
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", "*".parse().expect("valid"));
    headers.insert("access-control-allow-methods", "POST, GET, OPTIONS, PUT, DELETE".parse().expect("valid"));
    headers.insert("access-control-allow-headers", "accept, content-type, authorization".parse().expect("valid"));
}

#[cfg(test)]
mod tests {
    use futures_lite::StreamExt;

    use super::until_answers_dropped;

    #[test]
    fn a_watchs_requests_end_once_its_answers_are_dropped() {
        let (requests, answering) = until_answers_dropped(futures_lite::stream::iter([1, 2]));
        let mut requests = Box::pin(requests);
        futures_lite::future::block_on(async {
            assert_eq!(requests.next().await, Some(1));
            assert_eq!(requests.next().await, Some(2));
            // The client's body ended: the requests wait (the watch goes on) while answers are read.
            let waiting = futures_lite::future::poll_once(requests.next()).await;
            assert!(waiting.is_none(), "still waiting");
            drop(answering);
            assert_eq!(requests.next().await, None, "the answers are gone: so are the requests");
        });
    }
}
