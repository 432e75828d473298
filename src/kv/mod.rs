//! The key-value model's requests and results as the sequencer and `mvcc` take and give them: etcd's
//! KV semantics without its API. `src/etcd/` converts wire requests into these once validated (moving
//! keys and values, never copying them) and these results back into wire responses, where it fills
//! the response header. Key-values and events are `mvccpb`'s, etcd's storage model. Invariant: no
//! type here carries a response header; results carry the revision the header will report.

mod txn;

pub use txn::{Compare, CompareResult, CompareTarget, Txn, TxnOp, TxnOpResult, TxnResult};

use crate::ids::{LeaseId, Revision};
use crate::proto::mvccpb::KeyValue;

/// How a range orders what it returns (etcd's `SortOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Key order, unless the target is not the key (then ascending, as etcd promotes it).
    #[default]
    None,
    Ascend,
    Descend,
    /// An order etcd does not know (a newer client's): etcd reads every key and sorts none.
    Unknown,
}

/// What a range sorts by (etcd's `SortTarget`; one etcd does not know sorts by key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of the keys `[key, range_end)` at a revision, with etcd's Range options (`src/mvcc/range.rs`
/// applies them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeQuery {
    pub key: Vec<u8>,
    /// Empty: the key alone; `\0`: every key from `key` on.
    pub range_end: Vec<u8>,
    /// Most key-values returned (0 or less: no limit).
    pub limit: i64,
    /// The revision read (0 or less: the current one).
    pub revision: Revision,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Filters on the key-values found (0: none).
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

/// What a range found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Whether the limit left out key-values.
    pub more: bool,
    /// How many keys the span holds at the revision read.
    pub count: i64,
    /// The reader's current revision (the response header's).
    pub revision: Revision,
}

/// A write of `value` at `key`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The lease the key is attached to ([`LeaseId::NONE`]: none).
    pub lease: LeaseId,
    /// Return the key-value replaced.
    pub prev_kv: bool,
    /// Keep the key's value (the key must exist).
    pub ignore_value: bool,
    /// Keep the key's lease (the key must exist).
    pub ignore_lease: bool,
}

/// What a put did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PutResult {
    /// The key-value replaced, if asked and there was one.
    pub prev_kv: Option<KeyValue>,
    /// The put's revision.
    pub revision: Revision,
}

/// A delete of the keys `[key, range_end)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRange {
    pub key: Vec<u8>,
    /// Empty: the key alone; `\0`: every key from `key` on.
    pub range_end: Vec<u8>,
    /// Return the key-values deleted.
    pub prev_kv: bool,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeleteResult {
    /// How many keys it deleted.
    pub deleted: i64,
    /// The key-values deleted, if asked.
    pub prev_kvs: Vec<KeyValue>,
    /// The revision after the delete (the one before if it deleted nothing).
    pub revision: Revision,
}

/// A compaction of the history below `revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compaction {
    pub revision: Revision,
    /// Answer only once the unreachable versions are removed.
    pub physical: bool,
}

/// A lease to grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseGrant {
    /// The id asked for ([`LeaseId::NONE`]: the node picks one).
    pub id: LeaseId,
    /// The TTL asked for, in seconds.
    pub ttl: i64,
}

/// A lease granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantedLease {
    pub id: LeaseId,
    /// The TTL granted (raised to the minimum), in seconds.
    pub ttl: i64,
    /// The current revision (a grant opens none).
    pub revision: Revision,
}
