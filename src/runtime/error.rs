//! What starting and running the node's threads, executors and tasks fails with.

/// A failure of the runtime: a thread or executor that cannot start, a task that ended without its
/// result, the random source.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A thread (or the executor or runtime on it) could not be started: `what` names it.
    #[error("cannot start {what}: {source}")]
    Start {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A task ended without its result (it panicked or was cancelled): `what` names it.
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(getrandom::Error),
    /// Something that must hold did not: says what.
    #[error("{0}")]
    Broken(String),
    /// A fault injected by a fail point (tests).
    #[error("{0}")]
    Injected(&'static str),
}

impl RuntimeError {
    /// What a thread's spawn failure becomes: `what` names the thread.
    pub fn start(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let what = what.into();
        move |source| RuntimeError::Start { what, source }
    }

    /// What a task's join failure becomes: `what` names the task.
    pub fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> RuntimeError {
        move |source| RuntimeError::Task { what, source }
    }
}
