//! Transactions: compares, the ops of each branch (nested transactions included) and their results.
//! `src/sequencer/eval.rs` evaluates them as etcd's applier does.

use super::{DeleteRange, DeleteResult, Put, PutResult, RangeQuery, RangeResult};
use crate::ids::Revision;

/// What a compare reads from each key, with the operand it is compared to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(i64),
    Create(i64),
    Mod(i64),
    Lease(i64),
    /// A target etcd does not know: every key compares equal.
    Unknown,
}

/// How a compare relates a key's field to the operand (etcd's `CompareResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
    /// A relation etcd does not know: it holds for every key.
    Unknown,
}

/// One condition of a transaction, on every key of `[key, range_end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    /// Empty: the key alone; `\0`: every key from `key` on.
    pub range_end: Vec<u8>,
    pub target: CompareTarget,
    pub result: CompareResult,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Range(RangeQuery),
    Put(Put),
    DeleteRange(DeleteRange),
    Txn(Txn),
}

/// If every compare holds, run `success`, else `failure`; all writes at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// Whether no branch (nested ones included) can write. Keeps its own stack of txns instead of
    /// recursing.
    pub fn is_read_only(&self) -> bool {
        !self.any_op(|op| matches!(op, TxnOp::Put(_) | TxnOp::DeleteRange(_)))
    }

    /// Whether a branch at any depth holds a put (a txn that may grow the store).
    pub fn has_put(&self) -> bool {
        self.any_op(|op| matches!(op, TxnOp::Put(_)))
    }

    /// The bytes of the keys, range ends and values it carries, every branch at every depth.
    pub fn payload_bytes(&self) -> usize {
        let mut bytes = 0;
        let mut pending = vec![self];
        while let Some(txn) = pending.pop() {
            bytes += txn.compare.iter().map(|c| c.key.len() + c.range_end.len()).sum::<usize>();
            for op in txn.success.iter().chain(&txn.failure) {
                bytes += match op {
                    TxnOp::Range(r) => r.key.len() + r.range_end.len(),
                    TxnOp::Put(p) => p.key.len() + p.value.len(),
                    TxnOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
                    TxnOp::Txn(nested) => {
                        pending.push(nested);
                        0
                    }
                };
            }
        }
        bytes
    }

    /// Whether `matches` holds for an op (not a txn) in any branch at any depth.
    fn any_op(&self, matches: impl Fn(&TxnOp) -> bool) -> bool {
        let mut pending = vec![self];
        while let Some(txn) = pending.pop() {
            for op in txn.success.iter().chain(&txn.failure) {
                match op {
                    TxnOp::Txn(nested) => pending.push(nested),
                    op if matches(op) => return true,
                    _ => {}
                }
            }
        }
        false
    }
}

/// The result of one transaction operation.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOpResult {
    Range(RangeResult),
    Put(PutResult),
    DeleteRange(DeleteResult),
    Txn(TxnResult),
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnResult {
    /// Whether the compares held (so the success branch ran).
    pub succeeded: bool,
    /// One result per op of the branch that ran.
    pub responses: Vec<TxnOpResult>,
    /// The revision after the transaction (the one before if it wrote nothing).
    pub revision: Revision,
}
