//! moto's S3 server for tests, started through `scripts/s3-server.sh` on a free loopback port and
//! stopped (its whole process group) when dropped. The script creates `.venv` the first time, which
//! needs the package index; `scripts/test.sh` installs it before the tests run.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use t4::object::{S3Config, S3Credentials};

/// How long moto may take to answer; the first start may also create `.venv` (downloads).
pub const MOTO_STARTUP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long moto may take to exit once told to.
const MOTO_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running moto S3 server with one bucket.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket the script created.
    pub bucket: String,
    /// moto's process id (the script execs into the server, so it leads the process group too).
    pub pid: i32,
    /// The script's process; its group is killed on drop.
    child: Child,
    /// Held open: the script exits when it closes (so a test process that dies leaves no server).
    _stdin: ChildStdin,
    /// moto's request log and the script's messages (shown when the start fails).
    _log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts moto with the script's default bucket.
    pub fn start() -> Moto {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-server.sh");
        let log = tempfile::NamedTempFile::new().expect("create moto's log file");
        let mut child = Command::new("bash")
            .arg(script)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen moto's log file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + MOTO_STARTUP_TIMEOUT;
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("endpoint=") => break line,
                Ok(_) => continue,
                Err(e) => {
                    kill_group(&mut child);
                    let log = std::fs::read_to_string(log.path()).unwrap_or_default();
                    panic!(
                        "{script} did not report an endpoint within {MOTO_STARTUP_TIMEOUT:?} ({e}); it needs \
                         the .venv that scripts/test.sh installs. Its output:\n{log}"
                    );
                }
            }
        };
        let field = |name: &str| {
            line.split(' ')
                .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_string()
        };
        Moto {
            endpoint: field("endpoint"),
            bucket: field("bucket"),
            pid: field("pid").parse().expect("numeric pid"),
            child,
            _stdin: stdin,
            _log: log,
        }
    }

    /// A configuration for this server's bucket under `prefix` (moto accepts any access key), with
    /// the default retries.
    pub fn s3_config(&self, prefix: &str) -> S3Config {
        let credentials =
            S3Credentials::Static { access_key_id: "t4-test".into(), secret_access_key: "t4-test-secret".into() };
        S3Config {
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            ..S3Config::new(self.bucket.clone(), credentials)
        }
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel but never answered.
    pub fn pause(&self) {
        signal(self.pid, libc::SIGSTOP);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid, libc::SIGCONT);
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// Stops the script's whole process group: politely, then for sure.
fn kill_group(child: &mut Child) {
    let group = child.id() as i32;
    // SAFETY: killpg(2) on the group our child leads has no memory-safety preconditions.
    unsafe {
        libc::killpg(group, libc::SIGCONT); // a paused server cannot act on SIGTERM
        libc::killpg(group, libc::SIGTERM);
    }
    let deadline = Instant::now() + MOTO_STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::killpg(group, libc::SIGKILL) };
    let _ = child.wait();
}

impl Drop for Moto {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}
