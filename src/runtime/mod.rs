//! Executors and placement: one glommio executor per core, each accepting on the shared listen port
//! (SO_REUSEPORT) and serving the gRPC routes with hyper's HTTP/2 server, and running its core's
//! shard. Shutdown: stop accepting, let in-flight requests finish (bounded by a grace period),
//! report drained, then wait for the shard, which ends once committed groups stop coming.

pub mod blocking;
pub mod connection;
pub mod error;
pub mod hyper_io;
pub mod metrics_port;
pub mod panic_policy;

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use tokio::sync::watch;

use crate::config::CONNECTION_WINDOW_BYTES;
use crate::error::{Error, Result, RuntimeError};
use crate::etcd::http::HttpFace;
use crate::etcd::status::FrameLimitCompat;
use crate::shard::ShardActor;
use connection::{ConnectionPolicy, GuardedIo, RefusalLog};
use hyper_io::{GlommioExecutor, GlommioTimer, HyperIo};

thread_local! {
    /// The index of the executor running on this thread, if it is one.
    static CURRENT_CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The executor (core index) the calling thread runs, or `None` off the executors.
pub fn current_core() -> Option<usize> {
    CURRENT_CORE.with(|core| core.get())
}

/// Runs `task` to its end without anyone awaiting it: on this core's executor, or (off the
/// executors) on a thread of its own. For work a request must finish after its caller has gone.
pub fn spawn_detached(task: impl Future<Output = ()> + Send + 'static) {
    if current_core().is_some() {
        glommio::spawn_local(task).detach();
        return;
    }
    let spawned =
        std::thread::Builder::new().name("t4-detached".into()).spawn(move || futures_lite::future::block_on(task));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a thread for detached work: it is dropped");
    }
}

/// The gRPC services every core serves.
pub type Routes = FrameLimitCompat<tonic::service::Routes>;

/// HTTP/2 streams one connection may have open at once.
const STREAMS_PER_CONNECTION_MAX: u32 = 10_000;
/// Connections waiting in the kernel's accept queue.
const LISTEN_BACKLOG: i32 = 1024;
/// How often a draining core checks whether its connections are gone.
const DRAIN_POLL_MS: u64 = 5;
/// Least time between two log lines about connections refused at the limit (per core).
const REFUSAL_LOG_INTERVAL_MS: u64 = 1000;

/// Binds one listening socket per core on `addr` (port 0: a free port shared by all of them).
/// Refuses a port another socket holds, even one that also set SO_REUSEPORT.
pub fn bind_listeners(addr: SocketAddr, cores: usize) -> Result<(Vec<RawFd>, SocketAddr)> {
    let busy = |e: std::io::Error| Error::Listen { addr: addr.to_string(), reason: e.to_string() };
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr).map_err(busy)?);
    }
    let mut bound = addr;
    let mut fds = Vec::with_capacity(cores);
    for _ in 0..cores {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(busy)?;
        socket.set_reuse_address(true).map_err(busy)?;
        socket.set_reuse_port(true).map_err(busy)?;
        socket.bind(&bound.into()).map_err(busy)?;
        socket.listen(LISTEN_BACKLOG).map_err(busy)?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()
                .map_err(busy)?
                .as_socket()
                .ok_or_else(|| busy(std::io::Error::other("not an IP socket")))?;
        }
        fds.push(socket.into_raw_fd());
    }
    Ok((fds, bound))
}

/// What the executors need to start.
pub struct Plan {
    pub cores: usize,
    /// One listening socket per core, or none for a node that serves no API.
    pub listeners: Vec<RawFd>,
    /// The gRPC services every core serves.
    pub routes: Routes,
    /// What the same port answers to HTTP/1.1 clients (health, version, etcd's JSON gateway).
    pub http: HttpFace,
    /// One shard actor per core, in core order.
    pub shards: Vec<ShardActor>,
    pub shutdown_grace: Duration,
    /// What each client connection is held to.
    pub connections: ConnectionPolicy,
    /// Set to true to shut down: every core stops accepting and drains (watch streams close).
    pub shutdown: watch::Sender<bool>,
    /// How long an idle executor polls before it sleeps.
    pub spin_before_park: Duration,
}

/// Running executors.
pub struct Executors {
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    drained: flume::Receiver<()>,
}

impl Executors {
    /// Starts one executor per core (pinned when the machine has that many CPUs).
    pub fn start(plan: Plan) -> Result<Executors> {
        let Plan {
            cores,
            mut listeners,
            routes,
            http,
            mut shards,
            shutdown_grace,
            connections,
            shutdown,
            spin_before_park,
        } = plan;
        assert_eq!(shards.len(), cores, "one shard actor per core");
        let shutdown_rx = shutdown.subscribe();
        // One report per core: bounded by `cores`.
        let (drained_tx, drained) = flume::unbounded();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = Vec::with_capacity(cores);
        listeners.reverse();
        shards.reverse();
        for core in 0..cores {
            let listener = listeners.pop();
            let shard = shards.pop().expect("one shard per core");
            let routes = routes.clone();
            let http = http.clone();
            let shutdown = shutdown_rx.clone();
            let drained = drained_tx.clone();
            let placement = if cores <= cpus { Placement::Fixed(core) } else { Placement::Unbound };
            let main = move || async move {
                CURRENT_CORE.with(|c| c.set(Some(core)));
                let shard_task = glommio::spawn_local(shard.run(shutdown.clone()));
                match listener {
                    // SAFETY: the fd is a listening socket bound for this core and owned by nobody else.
                    Some(fd) => {
                        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
                        serve(listener, routes, http, connections, shutdown, shutdown_grace).await;
                    }
                    None => {
                        let mut shutdown = shutdown;
                        let _ = shutdown.wait_for(|stop| *stop).await;
                    }
                }
                let _ = drained.send(());
                // The shard ends once the committer has stopped sending committed groups.
                shard_task.await;
                // Tasks still alive are dropped after this, outside the executor's run: what they
                // leave behind (spawn_detached) must not be spawned onto it.
                CURRENT_CORE.with(|c| c.set(None));
            };
            let mut builder = LocalExecutorBuilder::new(placement).name(&format!("t4-core-{core}"));
            if !spin_before_park.is_zero() {
                builder = builder.spin_before_park(spin_before_park);
            }
            // glommio's error is not `Sync` (it may hold a panic's payload); its I/O form is.
            let thread = builder
                .spawn(main)
                .map_err(|e| RuntimeError::start(format!("executor {core}"))(std::io::Error::from(e)))?;
            threads.push(thread);
        }
        Ok(Executors { threads, shutdown, drained })
    }

    /// Stops accepting and waits until every core has drained its connections.
    pub async fn drain(&self) {
        let _ = self.shutdown.send(true);
        for _ in 0..self.threads.len() {
            if self.drained.recv_async().await.is_err() {
                break;
            }
        }
    }

    /// Signals shutdown without waiting (used when a node is dropped without `close`).
    pub fn signal_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits for every executor thread to finish, off the caller's thread.
    pub async fn join(self) {
        let (done, finished) = flume::bounded(1);
        let threads = self.threads;
        let joiner = std::thread::Builder::new().name("t4-join".into()).spawn(move || {
            for thread in threads {
                if let Err(e) = thread.join() {
                    tracing::error!(error = %e, "executor ended with an error");
                }
            }
            let _ = done.send(());
        });
        if joiner.is_ok() {
            let _ = finished.recv_async().await;
        }
    }
}

/// Accepts and serves connections until shutdown, then drains them. Connections beyond the
/// policy's limit are closed as they arrive.
async fn serve(
    listener: glommio::net::TcpListener,
    routes: Routes,
    http: HttpFace,
    policy: ConnectionPolicy,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let open_connections = Rc::new(Cell::new(0usize));
    let mut refusals = RefusalLog::new(Duration::from_millis(REFUSAL_LOG_INTERVAL_MS));
    loop {
        let accept = async { Some(listener.accept().await) };
        let stop = async {
            let _ = shutdown.wait_for(|stop| *stop).await;
            None
        };
        let stream = match futures_lite::future::or(stop, accept).await {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open_connections.get() >= policy.connections_max {
            drop(stream);
            if let Some(refused) = refusals.refused(Instant::now()) {
                tracing::warn!(
                    refused,
                    limit = policy.connections_max,
                    core = current_core(),
                    "connection limit reached: closing new connections"
                );
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(routes.clone());
        let http = http.clone();
        let connection_shutdown = shutdown.clone();
        let open = open_connections.clone();
        open.set(open.get() + 1);
        glommio::spawn_local(async move {
            match client_protocol(&stream, policy.handshake_timeout).await {
                Some(Protocol::Http2) => serve_connection(stream, service, policy, connection_shutdown).await,
                Some(Protocol::Http1) => serve_http1(stream, http, policy, connection_shutdown).await,
                None => {} // closed, or silent past the handshake timeout
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
    drop(listener);
    let deadline = Instant::now() + grace;
    while open_connections.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(DRAIN_POLL_MS)).await;
    }
    if open_connections.get() > 0 {
        tracing::warn!(connections = open_connections.get(), "closing connections still open after the grace period");
    }
}

/// The protocol a client speaks on the client port.
enum Protocol {
    /// HTTP/2 with prior knowledge: gRPC.
    Http2,
    /// HTTP/1.1: health, version and etcd's JSON gateway.
    Http1,
}

/// Tells the protocol from the client's first bytes without consuming them: HTTP/2's connection
/// preface starts with `PRI`, which is no HTTP/1.1 method. `None` if the client closes, or sends
/// fewer than three bytes within `timeout`.
async fn client_protocol(stream: &glommio::net::TcpStream, timeout: Duration) -> Option<Protocol> {
    const PREFACE_START: &[u8; 3] = b"PRI";
    const RETRY_MS: u64 = 1;
    let deadline = Instant::now() + timeout;
    let mut first = [0u8; 3];
    loop {
        let peek = async { Some(stream.peek(&mut first).await) };
        let expire = async {
            glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
            None
        };
        match futures_lite::future::or(peek, expire).await {
            None | Some(Err(_)) | Some(Ok(0)) => return None,
            Some(Ok(n)) if n >= first.len() => {
                return Some(if &first == PREFACE_START { Protocol::Http2 } else { Protocol::Http1 });
            }
            // Fewer bytes than it takes to tell: a peek returns at once while they wait, so pause.
            Some(Ok(_)) => glommio::timer::sleep(Duration::from_millis(RETRY_MS)).await,
        }
    }
}

/// Serves one HTTP/1.1 connection (keep-alive) until it ends or the node shuts down; a client that
/// does not send a request's headers within the handshake timeout is dropped.
async fn serve_http1(
    stream: glommio::net::TcpStream,
    http: HttpFace,
    policy: ConnectionPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request| {
        let http = http.clone();
        async move { http.handle(request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(GlommioTimer).header_read_timeout(policy.handshake_timeout).keep_alive(true);
    let mut connection = Box::pin(builder.serve_connection(HyperIo::new(stream), service));
    let finished = async {
        let _ = connection.as_mut().await;
        false
    };
    let stop = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
        true
    };
    if futures_lite::future::or(finished, stop).await {
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}

/// Serves one client connection until it ends, its handshake does not arrive in time, or the node
/// shuts down (then in-flight requests finish first).
async fn serve_connection(
    stream: glommio::net::TcpStream,
    service: hyper_util::service::TowerToHyperService<Routes>,
    policy: ConnectionPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    enum End {
        Finished,
        HandshakeTimedOut,
        Shutdown,
    }
    let handshake_done = Rc::new(Cell::new(false));
    let io = GuardedIo::new(stream, policy.ping_min_time, handshake_done.clone());
    let mut builder = hyper::server::conn::http2::Builder::new(GlommioExecutor);
    builder
        .timer(GlommioTimer)
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .keep_alive_interval(policy.keepalive_interval)
        .keep_alive_timeout(policy.keepalive_timeout);
    let mut connection = Box::pin(builder.serve_connection(HyperIo::new(io), service));
    let finished = async {
        let _ = connection.as_mut().await;
        End::Finished
    };
    let handshake = async {
        glommio::timer::sleep(policy.handshake_timeout).await;
        if handshake_done.get() {
            return futures_lite::future::pending().await;
        }
        End::HandshakeTimedOut
    };
    let stop = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
        End::Shutdown
    };
    match futures_lite::future::or(finished, futures_lite::future::or(handshake, stop)).await {
        End::Finished => {}
        // Dropping the connection closes the socket: the client never spoke HTTP/2 in time.
        End::HandshakeTimedOut => tracing::debug!("closing a connection whose HTTP/2 handshake did not arrive in time"),
        End::Shutdown => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
