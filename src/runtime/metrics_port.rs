//! `--listen-metrics`: `/metrics` and the health endpoints (`/health`, `/livez`, `/readyz`,
//! `/version`) on a port of their own, as etcd's `--listen-metrics-urls` serves them. One thread
//! with a small tokio runtime of its own serves it from the node's first step to its last, so a
//! long restore's progress can be scraped while the client port does not answer yet.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, oneshot};

use crate::error::{Error, Result, RuntimeError};
use crate::etcd::http::{HttpBody, HttpFace, observe_starting};
use crate::metrics::Metrics;

/// Connections served at once; more wait in the kernel's queue (scrapers and probes are few).
const CONNECTIONS_MAX: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The metrics port, served until this is dropped.
pub struct MetricsPort {
    addr: SocketAddr,
    /// The node's HTTP face, once it serves; until then the port answers as a starting node.
    face: Arc<OnceLock<HttpFace>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsPort {
    /// Binds `addr` and starts serving `metrics` there.
    pub fn start(addr: SocketAddr, metrics: Metrics) -> Result<MetricsPort> {
        let listen_error = |e: std::io::Error| Error::Listen { addr: addr.to_string(), reason: e.to_string() };
        let listener = std::net::TcpListener::bind(addr).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let bound = listener.local_addr().map_err(listen_error)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RuntimeError::start("the metrics port's runtime"))?;
        let face = Arc::new(OnceLock::new());
        let (stop, stopped) = oneshot::channel();
        let serving = Serving { metrics, face: face.clone() };
        let thread = std::thread::Builder::new()
            .name("t4-metrics".into())
            .spawn(move || runtime.block_on(serving.run(listener, stopped)))
            .map_err(RuntimeError::start("the metrics port's thread"))?;
        Ok(MetricsPort { addr: bound, face, stop: Some(stop), thread: Some(thread) })
    }

    /// Where the port is bound (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, answers as the node `face` serves (ready, healthy, its live metrics).
    pub fn serve_node(&self, face: HttpFace) {
        let _ = self.face.set(face);
    }
}

impl Drop for MetricsPort {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the port's thread serves with.
#[derive(Clone)]
struct Serving {
    metrics: Metrics,
    face: Arc<OnceLock<HttpFace>>,
}

impl Serving {
    /// Accepts connections until `stopped`; connections still open then are dropped with the runtime.
    async fn run(self, listener: std::net::TcpListener, mut stopped: oneshot::Receiver<()>) {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "the metrics port cannot serve");
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        loop {
            let slot = tokio::select! {
                _ = &mut stopped => return,
                slot = slots.clone().acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return };
            let accepted = tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let serving = self.clone();
                    tokio::spawn(async move {
                        serving.connection(stream).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the metrics port cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    }

    async fn connection(self, stream: tokio::net::TcpStream) {
        let service = hyper::service::service_fn(move |request| {
            let serving = self.clone();
            async move { Ok::<_, std::convert::Infallible>(serving.answer(request).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
        if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
            tracing::debug!(error = %e, "a metrics port connection ended with an error");
        }
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<HttpBody> {
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        match self.face.get() {
            Some(face) => face.observe(&method, &path).await,
            None => observe_starting(&self.metrics, &method, &path),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::alarms::Alarms;

    /// One request to `addr`; the status line and the body.
    fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        (head.lines().next().unwrap_or_default().to_string(), body.to_string())
    }

    #[test]
    fn a_starting_node_is_alive_not_ready_and_shows_its_metrics() {
        let metrics = Metrics::new(1, Alarms::default());
        metrics.checkpoints().restore_bytes.store(1000, std::sync::atomic::Ordering::Relaxed);
        let port = MetricsPort::start("127.0.0.1:0".parse().unwrap(), metrics).expect("start");
        let addr = port.local_addr();
        assert!(get(addr, "/livez").0.contains(" 200 "));
        assert!(get(addr, "/readyz").0.contains(" 503 "));
        let (status, body) = get(addr, "/health");
        assert!(status.contains(" 503 ") && body.contains(r#"{"health":"false"}"#), "{status} {body}");
        let (status, body) = get(addr, "/metrics");
        assert!(status.contains(" 200 "), "{status}");
        assert!(body.contains("t4_restore_checkpoint_bytes 1000"), "{body}");
        assert!(get(addr, "/v3/kv/range").0.contains(" 404 "));
        drop(port);
        assert!(std::net::TcpStream::connect(addr).is_err(), "the port closes with its owner");
    }
}
