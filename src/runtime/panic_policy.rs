//! What a panic on one of T4's own threads does: it stops the process, after saying where.
//!
//! A node is one set of actors that wait on each other: a committer, core or read thread that died
//! alone left the rest answering `committer thread stopped` or hanging, and a node that looks alive
//! but cannot write is worse than one that is gone (a supervisor restarts it; clients fail over).
//! Until the actors have a supervisor that can restart one cleanly, any panic on a thread whose name
//! starts with [`T4_THREAD_PREFIX`] aborts the process. Other threads (an embedding program's) keep
//! Rust's default behaviour.

use std::sync::Once;

/// Every thread T4 starts is named with this prefix (executors, committer, compactor, read pool,
/// durability and S3 runtimes).
pub const T4_THREAD_PREFIX: &str = "t4-";

/// Installs the policy once per process; the previous hook still prints the panic first.
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let thread = std::thread::current();
            let Some(name) = thread.name().filter(|n| n.starts_with(T4_THREAD_PREFIX)) else { return };
            let location = info.location().map_or_else(String::new, |l| format!(" at {l}"));
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(thread = name, "T4 stops: thread {name} panicked{location}: {message}");
            eprintln!("t4: stopping: thread {name} panicked{location}: {message}");
            std::process::abort();
        }));
    });
}
