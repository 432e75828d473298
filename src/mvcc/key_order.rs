//! Scans of `latest` and `kv` in user-key order. Keys stored as themselves come out of fjall in
//! order; the long keys of one bucket (see `encoding`) come out contiguous but ordered by hash, so
//! the scan gathers each bucket, sorts it by the keys its records carry, and releases it in order.
//! A bucket holds only keys longer than the storage limit, so gathering one costs memory in
//! proportion to bytes the scan reads anyway.

use std::collections::VecDeque;
use std::iter::Peekable;

use fjall::Slice;

use super::encoding::Version;
use super::error::{Doing, StoreError};
use crate::error::Result;

/// One stored entry, in user-key order.
pub struct OrderedEntry {
    /// The user key the entry's record carries: `Some` exactly for long keys (stored as bucket and
    /// hash); a short key is its stored key (`latest`) or decodes from it (`kv`).
    pub carried: Option<Vec<u8>>,
    /// The stored key.
    pub key: Slice,
    /// The stored record.
    pub value: Slice,
}

impl OrderedEntry {
    /// The user key of a `latest` entry: its stored key, or the one it carries.
    pub fn latest_user_key(&self) -> &[u8] {
        self.carried.as_deref().unwrap_or(&self.key)
    }
}

/// Puts a keyspace scan in user-key order (see the module doc).
pub struct KeyOrder<I: Iterator<Item = fjall::Result<(Slice, Slice)>>> {
    inner: Peekable<I>,
    /// Whether a stored key is a long key's.
    is_long: fn(&[u8]) -> bool,
    /// The bucket of a long stored key.
    bucket: fn(&[u8]) -> &[u8],
    /// The rest of a sorted bucket.
    pending: VecDeque<OrderedEntry>,
}

impl<I: Iterator<Item = fjall::Result<(Slice, Slice)>>> KeyOrder<I> {
    pub fn new(inner: I, is_long: fn(&[u8]) -> bool, bucket: fn(&[u8]) -> &[u8]) -> Self {
        KeyOrder { inner: inner.peekable(), is_long, bucket, pending: VecDeque::new() }
    }

    fn long_entry(key: Slice, value: Slice) -> Result<OrderedEntry> {
        let carried = Version::carried_key(&value)?
            .ok_or_else(|| {
                StoreError::corrupt(format!("record of a long key ({} stored bytes) without it", key.len()))
            })?
            .to_vec();
        Ok(OrderedEntry { carried: Some(carried), key, value })
    }

    /// Reads the bucket `first` opens and queues it in user-key order. Entries of one key are
    /// adjacent and ascending in the scan, and the sort is stable, so they stay so.
    fn gather_bucket(&mut self, first: OrderedEntry) -> Result<()> {
        let bucket = (self.bucket)(&first.key).to_vec();
        let mut entries = vec![first];
        while let Some(Ok((next, _))) = self.inner.peek() {
            if !(self.is_long)(next) || (self.bucket)(next) != bucket.as_slice() {
                break;
            }
            let (key, value) = self.inner.next().expect("just peeked").doing("reading a bucket of long keys")?;
            entries.push(Self::long_entry(key, value)?);
        }
        entries.sort_by(|a, b| a.carried.cmp(&b.carried));
        self.pending.extend(entries);
        Ok(())
    }
}

impl<I: Iterator<Item = fjall::Result<(Slice, Slice)>>> Iterator for KeyOrder<I> {
    type Item = Result<OrderedEntry>;

    fn next(&mut self) -> Option<Result<OrderedEntry>> {
        if let Some(entry) = self.pending.pop_front() {
            return Some(Ok(entry));
        }
        let (key, value) = match self.inner.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(StoreError::database("reading keys in order")(e).into())),
        };
        if !(self.is_long)(&key) {
            return Some(Ok(OrderedEntry { carried: None, key, value }));
        }
        let gathered = Self::long_entry(key, value).and_then(|first| self.gather_bucket(first));
        match gathered {
            Ok(()) => self.pending.pop_front().map(Ok),
            Err(e) => Some(Err(e)),
        }
    }
}
