//! A gRPC channel for the command line: one plaintext HTTP/2 connection (hyper's client) on the
//! caller's tokio runtime, seen by the generated tonic clients as a tower service. Enough for a few
//! unary calls to one endpoint; no reconnects, no load balancing (tonic's transport would bring both).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response, Uri};

/// One HTTP/2 connection carrying gRPC requests.
#[derive(Clone)]
pub struct Channel {
    /// Sends requests over the connection; the connection itself runs as a task on the runtime.
    sender: SendRequest<Body>,
}

/// The `http://host:port` origin of an endpoint given as `host:port` or `http://host:port`.
pub fn origin(endpoint: &str) -> Result<Uri, String> {
    if endpoint.starts_with("https://") {
        return Err("TLS endpoints are not supported yet".into());
    }
    let with_scheme = if endpoint.starts_with("http://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    let uri: Uri = with_scheme.parse().map_err(|e| format!("not an endpoint (HOST:PORT): {e}"))?;
    match uri.authority() {
        Some(authority) if authority.port().is_some() => Ok(uri),
        _ => Err("not an endpoint (HOST:PORT)".into()),
    }
}

impl Channel {
    /// Connects to `origin` and completes the HTTP/2 handshake. Must run inside a tokio runtime with
    /// I/O enabled (the connection task is spawned on it).
    pub async fn connect(origin: &Uri) -> Result<Channel, String> {
        let authority = origin.authority().map(|a| a.as_str()).unwrap_or_default();
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true); // only latency depends on it
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {authority} failed: {e}"))?;
        tokio::spawn(async move {
            // Ends when the last sender is dropped or the peer goes away; calls report their own errors.
            let _ = connection.await;
        });
        Ok(Channel { sender })
    }
}

impl tonic::codegen::Service<Request<Body>> for Channel {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(self.sender.send_request(request))
    }
}
