//! The integration-test harness: starts the real `t4` binary (or a reference etcd 3.4) on a free
//! loopback port, hands back clients, and stops the process when dropped. Every wait is bounded.
#![allow(dead_code)] // each test binary uses part of the harness

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;

pub mod answers;
pub mod http1;
pub mod kv;
pub mod moto;
pub mod object_contract;
pub mod objects;
pub mod raw_h2;
pub mod wait;
pub mod watch_model;

/// How long a server may take to start or stop.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server process under test.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:<port>` of its etcd v3 API.
    pub endpoint: String,
    /// Where it serves `--listen-metrics`, if it does.
    pub metrics_endpoint: Option<String>,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// The `t4` binary cargo built for these tests.
pub fn t4_binary() -> &'static str {
    env!("CARGO_BIN_EXE_t4")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

impl Server {
    /// Starts `t4 run` on `data_dir` and a free loopback port; `extra` args are appended.
    pub fn start_t4(data_dir: &Path, extra: &[&str]) -> Server {
        Self::try_start_t4(data_dir, extra).unwrap_or_else(|e| panic!("t4 did not start: {e}"))
    }

    /// Like [`Server::start_t4`], but returns what the process printed if it failed to start.
    pub fn try_start_t4(data_dir: &Path, extra: &[&str]) -> Result<Server, String> {
        Self::try_start_t4_env(data_dir, extra, &[])
    }

    /// Like [`Server::try_start_t4`], with extra environment variables for the process.
    pub fn try_start_t4_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        let args = [&["--listen", "127.0.0.1:0", "--log", "warn"], extra].concat();
        Self::try_start_t4_args(data_dir, &args, env)
    }

    /// Starts `t4 run --data-dir <data_dir>` with `args` alone after it (no listen address or log
    /// filter of the harness's: `args` must give a listen address with port 0).
    pub fn try_start_t4_args(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        let mut child = Command::new(t4_binary())
            .envs(env.iter().copied())
            .arg("run")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", t4_binary()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("metrics listening on ") {
                    let _ = tx.send((true, addr.to_string()));
                } else if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send((false, addr.to_string()));
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut metrics_endpoint = None;
        let started = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((true, addr)) => metrics_endpoint = Some(addr),
                Ok((false, endpoint)) => break Some(endpoint),
                Err(_) => break None,
            }
        };
        match started {
            Some(endpoint) => {
                Ok(Server { child: Some(child), endpoint, metrics_endpoint, data_dir: data_dir.to_path_buf() })
            }
            None => {
                let _ = child.kill();
                let output = child.wait_with_output().map_err(|e| e.to_string())?;
                Err(format!("status {}; stderr: {}", output.status, String::from_utf8_lossy(&output.stderr)))
            }
        }
    }

    /// Starts the server a behaviour test runs against: T4, or the reference etcd 3.4 when
    /// `T4_TEST_REFERENCE=etcd` (to check that the test itself pins etcd's behaviour). `t4_args`
    /// are passed to T4 only.
    pub fn start_under_test(data_dir: &Path, t4_args: &[&str]) -> Server {
        match std::env::var("T4_TEST_REFERENCE").as_deref() {
            Ok("etcd") => Self::start_etcd(data_dir),
            Ok("") | Ok("t4") | Err(_) => Self::start_t4(data_dir, t4_args),
            Ok(other) => panic!("T4_TEST_REFERENCE={other}: expected `etcd` or `t4`"),
        }
    }

    /// Whether [`Server::start_under_test`] starts the reference etcd.
    pub fn testing_reference() -> bool {
        std::env::var("T4_TEST_REFERENCE").as_deref() == Ok("etcd")
    }

    /// Starts a reference etcd 3.4 (Debian's `etcd-server`) on free loopback ports.
    pub fn start_etcd(data_dir: &Path) -> Server {
        Self::start_etcd_args(data_dir, &[])
    }

    /// Like [`Server::start_etcd`], with `extra` flags for etcd.
    pub fn start_etcd_args(data_dir: &Path, extra: &[&str]) -> Server {
        for _attempt in 0..3 {
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new("etcd")
                .args(["--name", "reference", "--data-dir"])
                .arg(data_dir)
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("reference={peer_url}")])
                .args(["--log-level", "error", "--logger", "zap"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd not found: run scripts/test.sh, which installs Debian's etcd-server");
            let mut server = Server {
                child: Some(child),
                endpoint: format!("127.0.0.1:{client}"),
                metrics_endpoint: None,
                data_dir: data_dir.to_path_buf(),
            };
            if server.wait_until_serving() {
                return server;
            }
            server.kill();
            let _ = std::fs::remove_dir_all(data_dir);
        }
        panic!("etcd did not start in three attempts");
    }

    /// Polls the server's Status until it answers. Runs its own runtime on a scoped thread, so it
    /// works from inside a test's tokio runtime as well as from plain code.
    fn wait_until_serving(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let endpoint = self.endpoint.clone();
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            let ok = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                        rt.block_on(async {
                            let Ok(channel) = channel(&endpoint).await else {
                                return false;
                            };
                            MaintenanceClient::new(channel)
                                .status(t4::proto::etcdserverpb::StatusRequest {})
                                .await
                                .is_ok()
                        })
                    })
                    .join()
                    .unwrap_or(false)
            });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits (bounded) for the process to exit on its own; `None` if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// What the process wrote to stderr; reads to the end, so call it once the process has exited.
    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(stderr) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = std::io::Read::read_to_string(stderr, &mut text);
        }
        text
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status. The process's stderr stays readable.
    pub fn stop(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within {STARTUP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An `etcd-client` client for this server.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.as_str()], None).await.expect("connect etcd-client")
    }

    /// A raw KV client speaking the wire types directly (every request field is reachable).
    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(channel(&self.endpoint).await.expect("connect kv client"))
    }

    /// Runs `etcdctl` (API v3) against this server and returns (success, stdout, stderr).
    pub fn etcdctl(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(["--command-timeout", "10s"])
            .args(args)
            .output()
            .expect("etcdctl not found: run scripts/test.sh, which installs Debian's etcd-client");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// Waits (bounded) until object storage holds a checkpoint at or above `revision`.
pub fn wait_for_checkpoint(objects: &Path, revision: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let latest = std::fs::read(objects.join("manifest/latest%")).ok();
        let at = latest
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|doc| doc["revision"].as_i64());
        if at.is_some_and(|at| at >= revision) {
            return;
        }
        assert!(Instant::now() < deadline, "no checkpoint at revision {revision} after 30 s (latest: {at:?})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reference etcd and a T4 side by side (etcd starting while T4 does), with their data dirs,
/// which must outlive both.
pub async fn etcd_and_t4() -> ((tempfile::TempDir, tempfile::TempDir), Server, Server) {
    let dirs = (tempfile::tempdir().expect("etcd dir"), tempfile::tempdir().expect("t4 dir"));
    let etcd_dir = dirs.0.path().to_path_buf();
    let etcd = tokio::task::spawn_blocking(move || Server::start_etcd(&etcd_dir));
    let t4 = Server::start_t4(dirs.1.path(), &[]);
    let etcd = etcd.await.expect("etcd start task");
    (dirs, etcd, t4)
}

/// A gRPC channel to `endpoint` (`host:port`).
pub async fn channel(endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{endpoint}")).expect("valid uri").connect().await
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
