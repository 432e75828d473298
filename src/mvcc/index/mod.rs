//! The key index: every key in the history window with the revisions of its versions, in key
//! order, in memory (etcd's `treeIndex`). A range read walks it to learn which version of each key
//! to read, so it costs what it returns, not the history of the keys it crosses; a count at the
//! newest revision adds up per-chunk counters instead of visiting every key.
//!
//! Invariants: keys ascend strictly across and inside chunks; no chunk is empty or holds more than
//! [`CHUNK_ENTRIES_MAX`] entries; each key's revisions ascend (the older ones in its history slot,
//! the newest in its entry); `live` counts keys whose newest revision is not a tombstone, per chunk
//! and in all. Only revisions a read at or above the compact revision can reach are kept.

mod chunk;
#[cfg(test)]
mod tests;

use self::chunk::{CHUNK_ENTRIES_MAX, Chunk, Entry, NO_HISTORY};
use super::{KeySpan, RangeEnd};
use crate::ids::Revision;

/// A revision of a key and whether it deleted the key, packed: `revision << 1 | tombstone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rev(i64);

impl Rev {
    pub fn put(revision: Revision) -> Rev {
        Rev(revision.get() << 1)
    }

    pub fn tombstone(revision: Revision) -> Rev {
        Rev(revision.get() << 1 | 1)
    }

    pub fn revision(self) -> Revision {
        Revision(self.0 >> 1)
    }

    pub fn is_tombstone(self) -> bool {
        self.0 & 1 == 1
    }
}

/// Every key in the history window, in key order, with the revisions of its versions.
#[derive(Debug, Default)]
pub struct KeyIndex {
    /// Consecutive runs of keys, in key order.
    chunks: Vec<Chunk>,
    /// The older revisions (ascending) of keys with more than one in the window; a key's entry
    /// names its slot.
    histories: Vec<Vec<Rev>>,
    /// Slots of `histories` free for reuse.
    free_histories: Vec<u32>,
    /// The newest revision applied: counts at or above it can use the per-chunk counters.
    revision: Revision,
    /// Revisions below this one may be gone: reads there are refused.
    compacted: Revision,
    /// Keys whose newest revision is live.
    live: usize,
}

/// Where a key is or would go: its chunk, and its place in the chunk.
struct Position {
    chunk: usize,
    found: Result<usize, usize>,
}

impl KeyIndex {
    /// The newest revision applied.
    #[cfg(test)]
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Keys whose newest version is live.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live
    }

    /// The revision of the last compaction: reads below it may miss versions.
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Keys indexed, deleted ones still in the window included.
    pub fn keys(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    /// Bytes the index holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        let histories: usize = self.histories.iter().map(|h| h.capacity() * std::mem::size_of::<Rev>()).sum();
        self.chunks.iter().map(Chunk::heap_bytes).sum::<usize>()
            + histories
            + self.histories.capacity() * std::mem::size_of::<Vec<Rev>>()
            + self.free_histories.capacity() * 4
    }

    fn locate(&self, key: &[u8]) -> Position {
        // The last chunk whose first key is at or below `key` (or the first chunk).
        let after = self.chunks.partition_point(|c| c.cmp_key(0, key).is_le());
        let chunk = after.saturating_sub(1);
        let found = self.chunks.get(chunk).map_or(Err(0), |c| c.find(key));
        Position { chunk, found }
    }

    /// A put of `key` at `revision` (above every revision applied before).
    pub fn put(&mut self, key: &[u8], revision: Revision) {
        self.apply(key, Rev::put(revision));
    }

    /// A delete of `key` at `revision`; nothing if the key is not live.
    pub fn delete(&mut self, key: &[u8], revision: Revision) {
        self.apply(key, Rev::tombstone(revision));
    }

    fn apply(&mut self, key: &[u8], rev: Rev) {
        assert!(rev.revision() >= self.revision, "index revisions go back: {} after {}", rev.revision(), self.revision);
        let position = self.locate(key);
        let live = matches!(position.found, Ok(i) if !self.chunks[position.chunk].entries[i].newest.is_tombstone());
        if rev.is_tombstone() && !live {
            return; // deleting what is not there writes nothing
        }
        self.insert(key, rev, position);
    }

    /// A version of `key` as the store holds it, when the index is built from the store: keys in
    /// any order, each key's versions in ascending order (a tombstone may come first: the versions
    /// before it were compacted away).
    pub fn load(&mut self, key: &[u8], rev: Rev) {
        let position = self.locate(key);
        self.insert(key, rev, position);
    }

    /// Records `rev` for `key`, which is at `position`.
    fn insert(&mut self, key: &[u8], rev: Rev, Position { chunk, found }: Position) {
        self.revision = self.revision.max(rev.revision());
        match found {
            Ok(i) => {
                let entry = self.chunks[chunk].entries[i];
                assert!(
                    rev.revision() > entry.newest.revision(),
                    "a key's revisions go back: {} after {}",
                    rev.revision(),
                    entry.newest.revision()
                );
                let history = self.push_history(entry, entry.newest);
                let was_live = !entry.newest.is_tombstone();
                let now_live = !rev.is_tombstone();
                let c = &mut self.chunks[chunk];
                let e = &mut c.entries[i];
                (e.newest, e.history) = (rev, history);
                c.live = c.live + u32::from(now_live) - u32::from(was_live);
                self.live = self.live + usize::from(now_live) - usize::from(was_live);
            }
            Err(i) => {
                if self.chunks.is_empty() {
                    self.chunks.push(Chunk::default());
                }
                self.chunks[chunk].insert(i, key, rev);
                self.live += usize::from(!rev.is_tombstone());
                let len = self.chunks[chunk].len();
                if len > CHUNK_ENTRIES_MAX {
                    // Keys written in order (the common case: names with counters, timestamps)
                    // leave full chunks behind them; others split in the middle.
                    let at = if i == len - 1 { i } else { len / 2 };
                    let upper = self.chunks[chunk].split(at);
                    self.chunks.insert(chunk + 1, upper);
                }
            }
        }
    }

    /// Appends `rev` to `entry`'s history, making a slot if it has none; the slot.
    fn push_history(&mut self, entry: Entry, rev: Rev) -> u32 {
        let slot = match entry.history {
            NO_HISTORY => match self.free_histories.pop() {
                Some(slot) => slot,
                None => {
                    self.histories.push(Vec::new());
                    u32::try_from(self.histories.len() - 1).expect("fewer than 4 billion keys with history")
                }
            },
            slot => slot,
        };
        self.histories[slot as usize].push(rev);
        slot
    }

    fn free_history(&mut self, slot: u32) {
        if slot != NO_HISTORY {
            self.histories[slot as usize] = Vec::new();
            self.free_histories.push(slot);
        }
    }

    /// The newest revision of `entry` at or below `at`, if that version is live.
    fn live_at(&self, entry: &Entry, at: Revision) -> Option<Revision> {
        let rev = if entry.newest.revision() <= at {
            entry.newest
        } else if entry.history == NO_HISTORY {
            return None;
        } else {
            *self.histories[entry.history as usize].iter().rev().find(|r| r.revision() <= at)?
        };
        (!rev.is_tombstone()).then_some(rev.revision())
    }

    /// The revision of `key`'s version live at `at`, if there is one.
    pub fn get(&self, key: &[u8], at: Revision) -> Option<Revision> {
        let Position { chunk, found: Ok(i) } = self.locate(key) else { return None };
        self.live_at(&self.chunks[chunk].entries[i], at)
    }

    /// Visits the keys of `span` live at `at`, in key order, with the revision of the version to
    /// read, until `visit` returns false.
    pub fn range(&self, span: &KeySpan, at: Revision, mut visit: impl FnMut(&[u8], Revision) -> bool) {
        if span.end == RangeEnd::Single {
            if let Some(rev) = self.get(&span.start, at) {
                visit(&span.start, rev);
            }
            return;
        }
        let Position { chunk, found } = self.locate(&span.start);
        let mut i = found.unwrap_or_else(|i| i);
        let mut key = Vec::new();
        for c in &self.chunks[chunk.min(self.chunks.len())..] {
            while i < c.len() {
                c.key_into(i, &mut key);
                if !span.contains(&key) {
                    return; // past the end: every key from here on is too
                }
                if let Some(rev) = self.live_at(&c.entries[i], at)
                    && !visit(&key, rev)
                {
                    return;
                }
                i += 1;
            }
            i = 0;
        }
    }

    /// How many keys of `span` are live at `at`. At or above the newest revision applied, whole
    /// chunks inside the span add their counters; otherwise every key of the span is visited.
    pub fn count(&self, span: &KeySpan, at: Revision) -> usize {
        if span.end == RangeEnd::Single {
            return usize::from(self.get(&span.start, at).is_some());
        }
        if at < self.revision {
            let mut count = 0;
            self.range(span, at, |_, _| {
                count += 1;
                true
            });
            return count;
        }
        let Position { chunk, found } = self.locate(&span.start);
        let mut i = found.unwrap_or_else(|i| i);
        let mut count = 0;
        let mut key = Vec::new();
        for c in &self.chunks[chunk.min(self.chunks.len())..] {
            if i == 0 && c.len() > 0 {
                c.key_into(c.len() - 1, &mut key);
                if span.contains(&key) {
                    // The first key is at or past the start, the last inside the span: all are.
                    count += c.live as usize;
                    continue;
                }
            }
            while i < c.len() {
                c.key_into(i, &mut key);
                if !span.contains(&key) {
                    return count;
                }
                count += usize::from(!c.entries[i].newest.is_tombstone());
                i += 1;
            }
            i = 0;
        }
        count
    }

    /// Drops the revisions of `keys` no read at or above `at` can reach: for each key, the
    /// versions below its newest one at or below `at`, and that one too if it is a tombstone; a key
    /// left with none leaves the index. Only keys written since the previous compaction can have
    /// such revisions (as in the store's physical compaction), so those are the keys to give.
    /// Returns whether a key left the index: then [`KeyIndex::tidy`] is worth calling once the
    /// compaction's keys are all given.
    pub fn compact_keys<'a>(&mut self, keys: impl IntoIterator<Item = &'a [u8]>, at: Revision) -> bool {
        self.compacted = self.compacted.max(at);
        let mut removed = false;
        for key in keys {
            let Position { chunk, found: Ok(i) } = self.locate(key) else { continue };
            if self.compact_entry(chunk, i, at) {
                removed = true;
                if self.chunks[chunk].len() == 0 {
                    self.chunks.remove(chunk);
                }
            }
        }
        removed
    }

    /// Compacts entry `i` of chunk `chunk` at `at`; true if the key left the index.
    fn compact_entry(&mut self, chunk: usize, i: usize, at: Revision) -> bool {
        let entry = self.chunks[chunk].entries[i];
        let mut revs = match entry.history {
            NO_HISTORY => Vec::new(),
            slot => std::mem::take(&mut self.histories[slot as usize]),
        };
        revs.push(entry.newest);
        // Keep the newest at or below `at` (if live) and everything above it.
        let first_kept = match revs.iter().rposition(|r| r.revision() <= at) {
            Some(p) if revs[p].is_tombstone() => p + 1,
            Some(p) => p,
            None => 0,
        };
        revs.drain(..first_kept);
        match revs.len() {
            0 => {
                self.free_history(entry.history);
                let removed = self.chunks[chunk].remove(i);
                self.live -= usize::from(!removed.newest.is_tombstone());
                true
            }
            1 => {
                self.free_history(entry.history);
                self.chunks[chunk].entries[i].history = NO_HISTORY;
                false
            }
            _ => {
                revs.pop(); // the newest stays in the entry
                self.histories[entry.history as usize] = revs;
                false
            }
        }
    }

    /// Merges neighbouring chunks that fit in half a chunk together, so removals do not leave dust.
    /// One pass over the chunks.
    pub fn tidy(&mut self) {
        let chunks = std::mem::take(&mut self.chunks);
        let mut merged: Vec<Chunk> = Vec::with_capacity(chunks.len());
        for c in chunks {
            match merged.last_mut() {
                Some(last) if last.len() + c.len() <= CHUNK_ENTRIES_MAX / 2 => last.absorb(c),
                _ => merged.push(c),
            }
        }
        self.chunks = merged;
    }
}
