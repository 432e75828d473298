//! Durability in object storage. Pure parts: the names of objects and the JSON documents that index
//! them (`layout`), the content-defined table objects a checkpoint is cut into (`table`), when a
//! checkpoint is due (`schedule`) and how loudly a failure is reported (`health`). Actors and
//! procedures: the uploader (`upload`), WAL replay (`replay`), checkpoints, restore and GC
//! (`checkpoint`), all driven by [`Durability`] on one small tokio runtime of their own (the object
//! store's calls are async; the S3 client needs tokio).
//!
//! Invariants: every object name that can go stale (WAL objects, checkpoints) carries its term, and a
//! node starts a new term at each start, so it never overwrites an object; table objects are named by
//! the hash of their bytes, so equal content is stored once and a reader can check what it fetched
//! against the name it asked for.
//!
//! Files: `settings` (how a node uses its store, and opening it), `open` (bringing the local store up to
//! date at start), `tail` (uploading local records the store lacks), `tasks` (start, supervision and
//! close of the background tasks), `checkpointer` (checkpoints asked for and the schedule's loop).

pub mod checkpoint;
mod checkpointer;
pub mod error;
mod health;
pub mod layout;
mod open;
mod progress;
pub mod replay;
mod schedule;
mod settings;
pub mod snapshot;
pub mod table;
mod tail;
mod tasks;
pub mod upload;

use std::sync::Arc;
use std::time::Instant;

use checkpointer::Checkpointer;
pub use settings::{Settings, open_object_store};

use crate::alarms::Alarms;
use crate::metrics::UploadStats;
use crate::mvcc::Store;
use crate::object::ObjectStore;

/// Object-storage durability of one node: its runtime, store, term and background tasks.
pub struct Durability {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    local: Arc<Store>,
    settings: Settings,
    term: crate::ids::Term,
    stats: Arc<UploadStats>,
    checkpointer: Checkpointer,
    /// Where failing uploads, checkpoints and GC are reported (`Status.errors`).
    alarms: Alarms,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}
