//! Multi-version state: the fjall store, reads at a revision, and layers of not-yet-committed versions
//! that the sequencer evaluates against. Every read goes through [`VersionReader`], so a Range inside a
//! transaction and a Range from a client run the same code.

pub mod encoding;
pub mod error;
pub mod hash;
pub mod index;
pub mod lock;
pub mod range;
pub mod store;

use std::collections::BTreeMap;

pub use encoding::Version;
pub use store::Store;

use crate::error::Result;
use crate::ids::Revision;

/// Where a key span ends, in etcd's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeEnd {
    /// Empty `range_end`: just the start key.
    Single,
    /// `range_end` is `\0`: every key at or after the start.
    Unbounded,
    /// Keys below this one.
    Before(Vec<u8>),
}

/// A set of keys: `[start, end)` as etcd requests express them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpan {
    pub start: Vec<u8>,
    pub end: RangeEnd,
}

impl KeySpan {
    /// The span an etcd request's `key`/`range_end` pair names.
    pub fn from_etcd(key: &[u8], range_end: &[u8]) -> KeySpan {
        let end = match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            end => RangeEnd::Before(end.to_vec()),
        };
        KeySpan { start: key.to_vec(), end }
    }

    /// Whether `key` is in the span.
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_slice(),
            RangeEnd::Unbounded => key >= self.start.as_slice(),
            RangeEnd::Before(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

/// Read access to versioned state at any revision inside the history window.
pub trait VersionReader {
    /// The newest revision this reader can see.
    fn current_revision(&self) -> Revision;
    /// Reads below this revision fail with [`crate::Error::Compacted`].
    fn compact_revision(&self) -> Revision;
    /// Visits the live keys of `span` as of `rev`, in key order, until `visit` returns false.
    fn visit(&self, span: &KeySpan, rev: Revision, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()>;

    /// How many live keys `span` holds as of `rev` (implementations may skip decoding values).
    fn count(&self, span: &KeySpan, rev: Revision) -> Result<i64> {
        let mut count = 0;
        self.visit(span, rev, &mut |_, _| {
            count += 1;
            true
        })?;
        Ok(count)
    }

    /// The live version of `key` as of the current revision.
    fn get(&self, key: &[u8]) -> Result<Option<Version>> {
        let mut found = None;
        let span = KeySpan { start: key.to_vec(), end: RangeEnd::Single };
        self.visit(&span, self.current_revision(), &mut |_, v| {
            found = Some(v);
            false
        })?;
        Ok(found)
    }
}

/// Versions written above a lower reader and not yet visible in it: the sequencer's in-flight groups,
/// or a transaction's own writes. Each key's versions are in ascending revision order.
#[derive(Debug, Default)]
pub struct Layer {
    versions: BTreeMap<Vec<u8>, Vec<Version>>,
}

impl Layer {
    /// Records a new version (or tombstone) of `key`; revisions must not decrease.
    pub fn push(&mut self, key: &[u8], version: Version) {
        match self.versions.get_mut(key) {
            Some(versions) => append(versions, version),
            None => {
                self.versions.insert(key.to_vec(), vec![version]);
            }
        }
    }

    /// Moves every version of `newer` (a layer written above this one) into this layer.
    pub fn absorb(&mut self, newer: Layer) {
        for (key, versions) in newer.versions {
            let into = self.versions.entry(key).or_default();
            for version in versions {
                append(into, version);
            }
        }
    }

    /// Forgets every version at or below `revision` (it is now visible below this layer).
    pub fn forget_through(&mut self, revision: Revision) {
        self.versions.retain(|_, versions| {
            versions.retain(|v| v.mod_revision > revision);
            !versions.is_empty()
        });
    }

    /// Whether the layer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Every version in the layer, in key order.
    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = (&[u8], &Version)> {
        self.versions.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_slice(), v)))
    }

    fn newest_at(&self, key: &[u8], rev: Revision) -> Option<&Version> {
        self.versions.get(key)?.iter().rev().find(|v| v.mod_revision <= rev)
    }
}

/// Adds `version` to one key's versions; revisions must not decrease.
fn append(versions: &mut Vec<Version>, version: Version) {
    debug_assert!(versions.last().is_none_or(|v| v.mod_revision <= version.mod_revision));
    if versions.last().is_some_and(|v| v.mod_revision == version.mod_revision) {
        versions.pop(); // a later change in the same revision supersedes the earlier one
    }
    versions.push(version);
}

/// A reader that sees `layer` on top of `lower`.
pub struct Layered<'a> {
    pub lower: &'a dyn VersionReader,
    pub layer: &'a Layer,
    /// The newest revision visible through this reader (at least the lower one's).
    pub current: Revision,
    /// Reads below this revision fail (the newest accepted compaction).
    pub compact: Revision,
}

impl VersionReader for Layered<'_> {
    fn current_revision(&self) -> Revision {
        self.current
    }

    fn compact_revision(&self) -> Revision {
        self.compact
    }

    fn visit(&self, span: &KeySpan, rev: Revision, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
        if self.layer.is_empty() {
            return self.lower.visit(span, rev.min(self.lower.current_revision()), visit);
        }
        // Merge: a key the layer has a version for (at or below `rev`) takes it, tombstones included.
        let mut merged: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
        self.lower.visit(span, rev.min(self.lower.current_revision()), &mut |k, v| {
            merged.insert(k.to_vec(), v);
            true
        })?;
        for (key, _) in self.layer.versions.iter().filter(|(k, _)| span.contains(k)) {
            if let Some(v) = self.layer.newest_at(key, rev) {
                merged.insert(key.clone(), v.clone());
            }
        }
        for (key, version) in merged {
            if !version.is_tombstone() && !visit(&key, version) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_etcd_range_end_conventions() {
        let single = KeySpan::from_etcd(b"a", b"");
        assert!(single.contains(b"a") && !single.contains(b"a\x00"));
        let from = KeySpan::from_etcd(b"b", b"\x00");
        assert!(from.contains(b"b") && from.contains(b"\xff\xff") && !from.contains(b"a"));
        let half_open = KeySpan::from_etcd(b"a", b"c");
        assert!(half_open.contains(b"a") && half_open.contains(b"bzz") && !half_open.contains(b"c"));
        let inverted = KeySpan::from_etcd(b"c", b"a");
        assert!(!inverted.contains(b"b") && !inverted.contains(b"c"));
    }

    #[test]
    fn layer_keeps_one_version_per_revision_and_forgets_committed_ones() {
        let mut layer = Layer::default();
        let put = |rev, v: &[u8]| Version {
            create_revision: Revision(2),
            mod_revision: Revision(rev),
            version: 1,
            lease: 0,
            value: Some(v.to_vec()),
        };
        layer.push(b"k", put(3, b"x"));
        layer.push(b"k", Version::tombstone(Revision(3))); // put then delete in one txn
        layer.push(b"k", put(4, b"y"));
        assert_eq!(layer.iter().count(), 2);
        assert!(layer.newest_at(b"k", Revision(3)).unwrap().is_tombstone());
        layer.forget_through(Revision(3));
        assert_eq!(layer.iter().count(), 1);
        layer.forget_through(Revision(4));
        assert!(layer.is_empty());
    }

    #[test]
    fn an_absorbed_layer_adds_its_versions_above_the_older_ones() {
        let mut older = Layer::default();
        older.push(b"a", Version::tombstone(Revision(3)));
        let mut newer = Layer::default();
        newer.push(b"a", Version::tombstone(Revision(4)));
        newer.push(b"b", Version::tombstone(Revision(4)));
        older.absorb(newer);
        assert_eq!(
            older.iter().map(|(k, v)| (k, v.mod_revision.get())).collect::<Vec<_>>(),
            [(&b"a"[..], 3), (&b"a"[..], 4), (&b"b"[..], 4)]
        );
    }
}
