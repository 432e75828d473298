//! A small pool of plain threads for blocking work (large scans) that must not stall an executor.
//! Futures awaiting it are `Send` and runtime-agnostic, so handlers and embedded callers share it.

use crate::error::{Error, Result, RuntimeError};

type Job = Box<dyn FnOnce() + Send>;

/// Jobs queued at most; callers wait when the queue is full.
const QUEUE_CAPACITY: usize = 1024;

/// A cloneable handle to the pool; the threads stop when every handle is dropped.
#[derive(Clone)]
pub struct BlockingPool {
    jobs: flume::Sender<Job>,
}

impl BlockingPool {
    /// Starts `threads` worker threads named `t4-<name>-<i>`.
    pub fn start(name: &str, threads: usize) -> Result<(BlockingPool, Vec<std::thread::JoinHandle<()>>)> {
        let (jobs, queue) = flume::bounded::<Job>(QUEUE_CAPACITY);
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let handle = std::thread::Builder::new()
                .name(format!("t4-{name}-{i}"))
                .spawn(move || {
                    for job in queue.iter() {
                        job();
                    }
                })
                .map_err(RuntimeError::start(format!("the {name} thread")))?;
            handles.push(handle);
        }
        Ok((BlockingPool { jobs }, handles))
    }

    /// Runs `f` on a pool thread and returns its result (for work of milliseconds: a long job would
    /// hold back the reads queued behind it; see [`on_own_thread`]).
    pub async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let (tx, rx) = flume::bounded(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send_async(job).await.map_err(|_| Error::Closed)?;
        rx.recv_async().await.map_err(|_| Error::Closed)
    }
}

/// Runs `f` on a thread of its own, named `t4-<name>`, and returns its result: for blocking work that
/// may take minutes (defragmentation, snapshots, whole-store hashes), which must hold back neither an
/// executor nor the reads of the pool.
pub async fn on_own_thread<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    let (tx, rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name(format!("t4-{name}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(RuntimeError::start(format!("the {name} thread")))?;
    rx.recv_async().await.map_err(|_| Error::Closed)
}
