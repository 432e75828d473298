//! Which watchers a changed key concerns. Most watches are on one key or on a prefix, so those are
//! found by hash lookups (the key itself, and each of its prefixes whose length some prefix watch
//! uses); the remaining ranges are checked one by one.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use crate::mvcc::{KeySpan, RangeEnd};
use crate::types::prefix_end;

/// Watchers by the keys they watch. `W` identifies a watcher.
#[derive(Debug)]
pub struct WatcherIndex<W> {
    /// Single-key watches, by key.
    exact: HashMap<Vec<u8>, Vec<W>>,
    /// Prefix watches (`[p, prefix_end(p))`), by prefix.
    prefixes: HashMap<Vec<u8>, Vec<W>>,
    /// Prefix lengths in use, with how many prefixes have each.
    prefix_lengths: BTreeMap<usize, usize>,
    /// Every other span.
    ranges: Vec<(KeySpan, W)>,
    /// Watchers indexed.
    len: usize,
}

impl<W> Default for WatcherIndex<W> {
    fn default() -> Self {
        WatcherIndex {
            exact: HashMap::new(),
            prefixes: HashMap::new(),
            prefix_lengths: BTreeMap::new(),
            ranges: Vec::new(),
            len: 0,
        }
    }
}

/// How an index stores a span.
enum Slot<'a> {
    Exact(&'a [u8]),
    Prefix(&'a [u8]),
    Range,
}

fn slot(span: &KeySpan) -> Slot<'_> {
    match &span.end {
        RangeEnd::Single => Slot::Exact(&span.start),
        RangeEnd::Before(end) if !span.start.is_empty() && *end == prefix_end(&span.start) => Slot::Prefix(&span.start),
        _ => Slot::Range,
    }
}

impl<W: Copy + Eq + Hash> WatcherIndex<W> {
    /// Adds `watcher` for `span`.
    pub fn insert(&mut self, span: &KeySpan, watcher: W) {
        self.len += 1;
        match slot(span) {
            Slot::Exact(key) => self.exact.entry(key.to_vec()).or_default().push(watcher),
            Slot::Prefix(prefix) => {
                let watchers = self.prefixes.entry(prefix.to_vec()).or_default();
                if watchers.is_empty() {
                    *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
                }
                watchers.push(watcher);
            }
            Slot::Range => self.ranges.push((span.clone(), watcher)),
        }
    }

    /// Removes `watcher`, which was inserted with `span`.
    pub fn remove(&mut self, span: &KeySpan, watcher: W) {
        match slot(span) {
            Slot::Exact(key) => {
                if let Some(watchers) = self.exact.get_mut(key) {
                    self.len -= retain_counting(watchers, |w| *w != watcher);
                    if watchers.is_empty() {
                        self.exact.remove(key);
                    }
                }
            }
            Slot::Prefix(prefix) => {
                if let Some(watchers) = self.prefixes.get_mut(prefix) {
                    self.len -= retain_counting(watchers, |w| *w != watcher);
                    if watchers.is_empty() {
                        self.prefixes.remove(prefix);
                        if let Some(count) = self.prefix_lengths.get_mut(&prefix.len()) {
                            *count -= 1;
                            if *count == 0 {
                                self.prefix_lengths.remove(&prefix.len());
                            }
                        }
                    }
                }
            }
            Slot::Range => self.len -= retain_counting(&mut self.ranges, |(s, w)| !(*w == watcher && s == span)),
        }
    }

    /// Calls `found` once for every watcher whose span holds `key`.
    pub fn for_each_match(&self, key: &[u8], mut found: impl FnMut(W)) {
        if let Some(watchers) = self.exact.get(key) {
            watchers.iter().copied().for_each(&mut found);
        }
        for &len in self.prefix_lengths.keys() {
            if len > key.len() {
                break;
            }
            if let Some(watchers) = self.prefixes.get(&key[..len]) {
                watchers.iter().copied().for_each(&mut found);
            }
        }
        for (span, watcher) in &self.ranges {
            if span.contains(key) {
                found(*watcher);
            }
        }
    }

    /// Whether no watcher is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many watchers are indexed.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// Keeps the items `keep` accepts; returns how many it removed.
fn retain_counting<T>(items: &mut Vec<T>, keep: impl FnMut(&T) -> bool) -> usize {
    let before = items.len();
    items.retain(keep);
    before - items.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(index: &WatcherIndex<u32>, key: &[u8]) -> Vec<u32> {
        let mut found = Vec::new();
        index.for_each_match(key, |w| found.push(w));
        found.sort_unstable();
        found
    }

    #[test]
    fn every_kind_of_span_matches_exactly_its_keys() {
        let mut index = WatcherIndex::default();
        let spans = [
            (1, KeySpan::from_etcd(b"a", b"")),              // the key a
            (2, KeySpan::from_etcd(b"a", b"b")),             // prefix a
            (3, KeySpan::from_etcd(b"ab", b"ac")),           // prefix ab
            (4, KeySpan::from_etcd(b"a", b"ab")),            // range [a, ab)
            (5, KeySpan::from_etcd(b"b", b"\0")),            // everything from b
            (6, KeySpan::from_etcd(b"\0", b"\0")),           // every key
            (7, KeySpan::from_etcd(b"a\xff", b"a\xff\xff")), // a range that is not a prefix
            (8, KeySpan::from_etcd(b"\xff", b"")),           // the key 0xff
        ];
        for (id, span) in &spans {
            index.insert(span, *id);
        }
        assert_eq!(index.len(), spans.len());
        let keys: [&[u8]; 8] = [b"a", b"aa", b"ab", b"abc", b"b", b"\x00", b"a\xff\x00", b"\xff"];
        for key in keys {
            let expected: Vec<u32> = spans.iter().filter(|(_, s)| s.contains(key)).map(|(id, _)| *id).collect();
            assert_eq!(matches(&index, key), expected, "key {key:?}");
        }
        for (id, span) in &spans {
            index.remove(span, *id);
            index.remove(span, *id); // a second removal changes nothing
        }
        assert!(index.is_empty());
        assert!(index.exact.is_empty() && index.prefixes.is_empty() && index.ranges.is_empty());
        assert!(index.prefix_lengths.is_empty());
    }

    #[test]
    fn watchers_sharing_a_span_are_removed_one_at_a_time() {
        let mut index = WatcherIndex::default();
        let prefix = KeySpan::from_etcd(b"/p/", b"/p0");
        index.insert(&prefix, 1);
        index.insert(&prefix, 2);
        index.remove(&prefix, 1);
        assert_eq!(matches(&index, b"/p/x"), vec![2]);
        assert_eq!(index.len(), 1);
        index.remove(&prefix, 2);
        assert!(matches(&index, b"/p/x").is_empty());
        assert!(index.is_empty());
    }
}
