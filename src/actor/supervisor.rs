//! The node's supervisor: records the first fatal error of any actor, thread or task and tells the
//! node to stop. Invariant: a fatal error is never lost: the first is kept (later ones are logged),
//! and whoever waits on [`Supervisor::failed`] learns of it, however late it starts waiting.

use std::sync::{Arc, Mutex};

use crate::error::Error;

/// The first fatal error: which actor, thread or task failed, and with what.
#[derive(Debug, Clone)]
pub struct Fatal {
    pub actor: String,
    pub error: Arc<Error>,
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.actor, self.error)
    }
}

impl From<Fatal> for Error {
    fn from(fatal: Fatal) -> Error {
        Error::Stopped { actor: fatal.actor, source: fatal.error }
    }
}

/// A cloneable handle every actor of a node holds.
#[derive(Clone)]
pub struct Supervisor {
    first: Arc<Mutex<Option<Fatal>>>,
    /// Flips to `true` once a fatal error is recorded (tokio's watch needs no tokio runtime).
    failed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new()
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        let (failed, _) = tokio::sync::watch::channel(false);
        Supervisor { first: Arc::new(Mutex::new(None)), failed: Arc::new(failed) }
    }

    /// Records that `actor` failed with `error`. The first failure stops the node; later ones are
    /// only logged (they most often follow from the first), except that a cause replaces a
    /// consequence: an actor whose input ended ([`Error::InputEnded`]) may notice before the actor
    /// upstream that failed has been recorded (its channels close as it ends).
    pub fn fail(&self, actor: &str, error: Error) {
        let mut first = self.first.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let replaces = |recorded: &Fatal| {
            matches!(*recorded.error, Error::InputEnded(_)) && !matches!(error, Error::InputEnded(_))
        };
        match first.as_ref() {
            Some(recorded) if replaces(recorded) => {
                tracing::error!(actor, error = %error, consequence = %recorded, "fatal error, the cause of the one before");
            }
            Some(_) => {
                tracing::warn!(actor, error = %error, "after the node's fatal error, another actor failed too");
                return;
            }
            None => tracing::error!(actor, error = %error, "fatal error: the node stops"),
        }
        *first = Some(Fatal { actor: actor.to_string(), error: Arc::new(error) });
        drop(first);
        self.failed.send_replace(true);
    }

    /// The first fatal error, if one was recorded.
    pub fn fatal(&self) -> Option<Fatal> {
        self.first.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Waits until a fatal error is recorded, and returns it.
    pub async fn failed(&self) -> Fatal {
        let mut failed = self.failed.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = failed.wait_for(|failed| *failed).await;
        self.fatal().expect("the flag is set only after the error is recorded")
    }
}
