//! One run of up to [`CHUNK_ENTRIES_MAX`] consecutive keys of the index, stored compactly: the
//! prefix every key of the chunk shares once, each key's remainder back to back in one buffer, and
//! a fixed-size entry per key (where its remainder is, its newest revision, its older ones' slot).
//!
//! Invariants: entries ascend strictly by key; every key starts with `prefix`; `live` counts the
//! entries whose newest revision is not a tombstone; `garbage` counts the bytes of `suffixes` no
//! entry points at.

use std::cmp::Ordering;

use super::Rev;

/// Entries a chunk holds before it splits in two: small enough that an insert's shift and a
/// rebase stay cheap, large enough that per-chunk costs (prefix, headers) spread thin.
pub(super) const CHUNK_ENTRIES_MAX: usize = 128;

/// `Entry::history` of a key with one revision in the window.
pub(super) const NO_HISTORY: u32 = u32::MAX;

/// One key of a chunk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// Where the key's remainder (after the chunk's prefix) starts in `suffixes`, and its length.
    start: u32,
    len: u32,
    /// The key's newest revision.
    pub newest: Rev,
    /// Slot of the key's older revisions in the index's histories, or [`NO_HISTORY`].
    pub history: u32,
}

/// A run of consecutive keys.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    /// The bytes every key of the chunk starts with.
    prefix: Vec<u8>,
    /// Sorted by key.
    pub entries: Vec<Entry>,
    /// The keys' remainders after `prefix`, back to back (with `garbage` unused bytes).
    suffixes: Vec<u8>,
    /// Bytes of `suffixes` that removed entries left behind.
    garbage: usize,
    /// Entries whose newest revision is live.
    pub live: u32,
}

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn suffix(&self, e: &Entry) -> &[u8] {
        &self.suffixes[e.start as usize..(e.start + e.len) as usize]
    }

    /// Key `i` compared with `key`, without building it.
    pub fn cmp_key(&self, i: usize, key: &[u8]) -> Ordering {
        let p = self.prefix.len().min(key.len());
        match self.prefix[..p].cmp(&key[..p]) {
            Ordering::Equal if key.len() < self.prefix.len() => Ordering::Greater,
            Ordering::Equal => self.suffix(&self.entries[i]).cmp(&key[self.prefix.len()..]),
            unequal => unequal,
        }
    }

    /// Where `key` is (`Ok`) or would go (`Err`).
    pub fn find(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.entries.len());
        while low < high {
            let mid = (low + high) / 2;
            match self.cmp_key(mid, key) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// Writes key `i` into `out` (replacing what it held).
    pub fn key_into(&self, i: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(self.suffix(&self.entries[i]));
    }

    /// Key `i`.
    #[cfg(test)]
    pub fn key(&self, i: usize) -> Vec<u8> {
        let mut key = Vec::new();
        self.key_into(i, &mut key);
        key
    }

    /// Inserts `key` at position `i` (where `find` said it goes) with one revision.
    pub fn insert(&mut self, i: usize, key: &[u8], newest: Rev) {
        if !key.starts_with(&self.prefix) {
            self.rebase(common_prefix_len(&self.prefix, key));
        }
        let rest = &key[self.prefix.len()..];
        let start = u32::try_from(self.suffixes.len()).expect("a chunk's keys fit in 4 GiB");
        self.suffixes.extend_from_slice(rest);
        let len = u32::try_from(rest.len()).expect("a key fits in 4 GiB");
        self.entries.insert(i, Entry { start, len, newest, history: NO_HISTORY });
        self.live += u32::from(!newest.is_tombstone());
    }

    /// Removes entry `i`, handing it back.
    pub fn remove(&mut self, i: usize) -> Entry {
        let entry = self.entries.remove(i);
        self.garbage += entry.len as usize;
        self.live -= u32::from(!entry.newest.is_tombstone());
        if self.garbage > self.suffixes.len() / 2 {
            self.rebase(self.prefix.len());
        }
        entry
    }

    /// Re-lays the keys over the first `prefix_len` bytes of the current prefix, dropping garbage.
    fn rebase(&mut self, prefix_len: usize) {
        let moved = &self.prefix[prefix_len..];
        let mut suffixes = Vec::with_capacity(self.suffixes.len() - self.garbage + moved.len() * self.entries.len());
        for e in &mut self.entries {
            let start = suffixes.len() as u32;
            suffixes.extend_from_slice(moved);
            suffixes.extend_from_slice(&self.suffixes[e.start as usize..(e.start + e.len) as usize]);
            *e = Entry { start, len: suffixes.len() as u32 - start, ..*e };
        }
        self.prefix.truncate(prefix_len);
        self.suffixes = suffixes;
        self.garbage = 0;
    }

    /// Makes the prefix as long as the keys allow (after a split or removals from the ends).
    fn tighten(&mut self) {
        let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) else { return };
        let extra = common_prefix_len(self.suffix(first), self.suffix(last));
        if extra == 0 {
            return self.rebase(self.prefix.len());
        }
        let more = self.suffix(first)[..extra].to_vec();
        let mut suffixes = Vec::with_capacity(self.suffixes.len() - self.garbage);
        for e in &mut self.entries {
            let start = suffixes.len() as u32;
            suffixes.extend_from_slice(&self.suffixes[(e.start as usize + extra)..(e.start + e.len) as usize]);
            *e = Entry { start, len: e.len - extra as u32, ..*e };
        }
        self.prefix.extend_from_slice(&more);
        self.suffixes = suffixes;
        self.garbage = 0;
    }

    /// Moves the entries from `at` on into a new chunk.
    pub fn split(&mut self, at: usize) -> Chunk {
        let upper: Vec<Entry> = self.entries.split_off(at);
        self.entries.shrink_to_fit();
        let mut other = Chunk { prefix: self.prefix.clone(), ..Chunk::default() };
        for e in upper {
            let start = other.suffixes.len() as u32;
            other.suffixes.extend_from_slice(self.suffix(&e));
            other.entries.push(Entry { start, ..e });
            other.live += u32::from(!e.newest.is_tombstone());
            self.garbage += e.len as usize;
        }
        self.live -= other.live;
        self.tighten();
        other.tighten();
        other
    }

    /// Appends every entry of `next`, whose keys all follow this chunk's.
    pub fn absorb(&mut self, next: Chunk) {
        let Some(last) = next.entries.last() else { return };
        let last_key = [next.prefix.as_slice(), next.suffix(last)].concat();
        if !last_key.starts_with(&self.prefix) {
            self.rebase(common_prefix_len(&self.prefix, &last_key));
        }
        let mut key = Vec::new();
        for i in 0..next.entries.len() {
            next.key_into(i, &mut key);
            let e = next.entries[i];
            let start = self.suffixes.len() as u32;
            self.suffixes.extend_from_slice(&key[self.prefix.len()..]);
            self.entries.push(Entry { start, len: (key.len() - self.prefix.len()) as u32, ..e });
        }
        self.live += next.live;
        self.tighten();
    }

    /// Bytes this chunk holds on the heap (its own share, histories apart).
    pub fn heap_bytes(&self) -> usize {
        self.prefix.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.suffixes.capacity()
            + std::mem::size_of::<Chunk>()
    }
}
