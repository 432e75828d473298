//! The HTTP/1.1 face of the client port, as etcd serves beside gRPC: etcd's JSON gateway under
//! `/v3/` (`gateway.rs`), `GET /health` (a read the node can serve, and no alarm), `/livez` and
//! `/readyz`, and `GET /version`. Every answer comes from the
//! same services the gRPC face calls; nothing here owns state.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::maintenance::ETCD_API_VERSION;
use super::{Services, gateway};
use crate::config::GRPC_OVERHEAD_BYTES;

/// The body type of every HTTP/1.1 answer: whole, or streamed (the gateway's watch and keep-alive).
pub type HttpBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the HTTP/1.1 face answers with. Cheap to clone (one per connection).
#[derive(Clone)]
pub struct HttpFace {
    services: Services,
}

impl HttpFace {
    pub fn new(services: Services) -> HttpFace {
        HttpFace { services }
    }

    /// Answers one request. Never fails: errors are HTTP answers.
    pub async fn handle(&self, request: Request<Incoming>) -> Result<Response<HttpBody>, Infallible> {
        let mut response = self.answer(request).await;
        gateway::allow_any_origin(&mut response);
        Ok(response)
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<HttpBody> {
        let path = request.uri().path().to_string();
        if request.method() == Method::OPTIONS {
            return text(StatusCode::OK, ""); // a CORS preflight: the headers are the answer
        }
        if gateway::owns(&path) {
            if request.method() != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
            }
            // JSON carries bytes as base64 (4/3) plus field names: bound the body by that much over
            // the largest request, so a huge body costs no more memory than a huge gRPC message.
            let limit = (self.services.max_request_bytes + GRPC_OVERHEAD_BYTES) / 3 * 4 + GRPC_OVERHEAD_BYTES;
            // A body announced over the limit is refused before it is read.
            if hyper::body::Body::size_hint(request.body()).lower() > limit as u64 {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            }
            if gateway::is_streaming(&path) {
                return gateway::call_streaming(&self.services, &path, request.into_body(), limit);
            }
            let body = match Limited::new(request.into_body(), limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading an HTTP request body failed");
                    return text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
                }
            };
            return gateway::call(&self.services, &path, body).await;
        }
        self.observe(request.method(), &path).await
    }

    /// The answers to operators and their tools (probes, Prometheus): what the client port serves
    /// besides the gateway, and all that `--listen-metrics` serves.
    pub async fn observe(&self, method: &Method, path: &str) -> Response<HttpBody> {
        match (method, path) {
            (&Method::GET, "/health") => self.health().await,
            (&Method::GET, "/livez") => text(StatusCode::OK, "ok"),
            (&Method::GET, "/metrics") => {
                let metrics = self.services.metrics.clone();
                // Off the executors: the database size walks the data dir.
                match self.services.reads.run(move || metrics.encode()).await {
                    Ok(encoded) => metrics_answer(encoded),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n"),
                }
            }
            (&Method::GET, "/readyz") => match self.services.serves_reads().await {
                true => text(StatusCode::OK, "ok"),
                false => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
            },
            (&Method::GET, "/version") => version(),
            (_, path) => not_served(path),
        }
    }

    /// etcd 3.4's `/health`: `{"health":"true"}` when a read succeeds and no alarm is raised, else
    /// `{"health":"false"}` with 503.
    async fn health(&self) -> Response<HttpBody> {
        let healthy = self.services.is_healthy().await;
        if !healthy {
            tracing::warn!(alarms = self.services.alarms.raised().len(), "/health answers false");
        }
        let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        // etcd 3.4 sends this JSON as text/plain.
        let body = if healthy { r#"{"health":"true"}"# } else { r#"{"health":"false"}"# };
        text(status, body)
    }
}

/// The cluster version `/version` reports (etcd's `etcdcluster`: major.minor.0).
const ETCD_CLUSTER_VERSION: &str = "3.4.0";

/// The paths [`HttpFace::observe`] answers.
const OBSERVED: [&str; 5] = ["/health", "/livez", "/metrics", "/readyz", "/version"];

/// What a node that is still starting (opening or restoring its store) answers on `--listen-metrics`:
/// alive, not ready, not healthy, and its metrics so far (a restore's progress among them).
pub fn observe_starting(metrics: &crate::metrics::Metrics, method: &Method, path: &str) -> Response<HttpBody> {
    match (method, path) {
        (&Method::GET, "/livez") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/metrics") => metrics_answer(metrics.encode()),
        (&Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: starting"),
        (&Method::GET, "/health") => text(StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#),
        (&Method::GET, "/version") => version(),
        (_, path) => not_served(path),
    }
}

/// etcd's `/version`, with T4's own version in a field of its own.
fn version() -> Response<HttpBody> {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "etcdserver": ETCD_API_VERSION,
            "etcdcluster": ETCD_CLUSTER_VERSION,
            "t4": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// The answer to a path [`HttpFace::observe`] does not serve, or to a method it does not take.
fn not_served(path: &str) -> Response<HttpBody> {
    if OBSERVED.contains(&path) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    // Go's net/http wording, which etcd answers with.
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// The metrics in OpenMetrics text, or a 500 if they could not be encoded.
fn metrics_answer(encoded: Result<String, std::fmt::Error>) -> Response<HttpBody> {
    let Ok(encoded) = encoded else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n");
    };
    let mut response = Response::new(Full::new(Bytes::from(encoded)).boxed_unsync());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8".parse().expect("valid"),
    );
    response
}

pub(super) fn text(status: StatusCode, body: &'static str) -> Response<HttpBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("valid"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<HttpBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("valid"));
    response
}
