//! Identifiers that must not be confused with other integers. Each prints as its bare number, as
//! logs, errors and JSON documents have always shown it.

/// A revision of the key space: every write opens the next one (etcd's main revision). Versions,
/// log records, WAL objects and checkpoints are named by the revision they were committed at. It
/// becomes a plain `i64` only at the wire edge (`src/etcd/`, the embedded API's value types).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Revision(pub i64);

impl Revision {
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The revision after this one.
    pub const fn next(self) -> Revision {
        Revision(self.0 + 1)
    }

    /// The revision before this one.
    pub const fn prev(self) -> Revision {
        Revision(self.0 - 1)
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A leader's term: every WAL object and checkpoint carries the term of the node that wrote it, and
/// a newer term supersedes an older one from its first position on. A node takes a term above every
/// term in its store before it writes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Term(pub u64);

impl Term {
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The term after this one.
    pub const fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl std::fmt::Display for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A watcher's id on its watch stream: chosen by the client, or assigned by the stream (0, 1, 2, …)
/// when the client asks for any. Unique on its stream only; a shard names a watcher by its stream
/// and this id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WatchId(pub i64);

impl WatchId {
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The id after this one.
    pub const fn next(self) -> WatchId {
        WatchId(self.0 + 1)
    }
}

impl std::fmt::Display for WatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for WatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease's id, as etcd clients name it (positive when the node picks it; 0 names no lease). A
/// lease's timer lives in the shard of `id % cores`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub i64);

impl LeaseId {
    /// No lease: a key put with it is attached to none, and a grant asking for it gets an id picked.
    pub const NONE: LeaseId = LeaseId(0);

    pub const fn get(self) -> i64 {
        self.0
    }

    pub const fn is_none(self) -> bool {
        self.0 == LeaseId::NONE.0
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
