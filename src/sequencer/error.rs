//! What the sequencer and its committer fail with: a failed commit, which fences every later write,
//! and a committer or compactor that is gone.

use std::sync::Arc;

use crate::error::Error;

/// A failure of the write path.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// A commit failed: the database takes no more writes until the node restarts.
    #[error("storage failure: the database failed a write and takes no more until the node restarts ({0})")]
    CommitFailed(#[source] Box<Error>),
    /// A write refused because an earlier failure (the reason) stopped the write path.
    #[error("storage failure: {0}")]
    Fenced(#[source] Arc<Error>),
    /// A failure the sequencer both reports as its own and refuses waiting writes with.
    #[error(transparent)]
    Shared(Arc<Error>),
    /// Groups cannot be handed on: the committer (or the uploader before it) is gone.
    #[error("runtime: the committer stopped")]
    CommitterStopped,
    /// A physical compaction failed.
    #[error("storage failure: physical compaction to {revision}: {source}")]
    Compaction {
        revision: crate::ids::Revision,
        #[source]
        source: Arc<Error>,
    },
}
