//! etcd's HashKV over T4's history. `HashKV(rev)` covers the history a node keeps as etcd defines
//! it: every version at or below `rev` above the compact revision, and, at or below the compact
//! revision, each key's version current there (what compaction keeps) unless it is a deletion. So
//! it depends neither on how far physical compaction has got nor on how the store lays versions
//! out: two nodes, or a node and its restore, holding the same history give the same hash. CRC-32C
//! (Castagnoli), as etcd's; the bytes hashed are T4's own, so the values differ from etcd's.

use super::Version;
use crate::ids::Revision;

/// Hashes versions fed key by key (keys in store order, each key's versions by ascending revision).
#[derive(Debug)]
pub struct KvHasher {
    rev: Revision,
    compact: Revision,
    crc: u32,
    key: Vec<u8>,
    /// The current key's newest version at or below the compact revision, not hashed yet.
    kept: Option<Version>,
}

impl KvHasher {
    /// Hashes what is visible at `rev` over a history compacted at `compact`.
    pub fn new(rev: Revision, compact: Revision) -> KvHasher {
        KvHasher { rev, compact, crc: 0, key: Vec::new(), kept: None }
    }

    /// Feeds one version of `key`.
    pub fn push(&mut self, key: &[u8], version: Version) {
        if key != self.key.as_slice() {
            self.hash_kept();
            self.key.clear();
            self.key.extend_from_slice(key);
        }
        if version.mod_revision > self.rev {
            return;
        }
        if version.mod_revision <= self.compact {
            self.kept = Some(version); // a newer one at or below the compact revision replaces it
            return;
        }
        self.hash_kept();
        self.hash(&version);
    }

    /// The hash of everything fed.
    pub fn finish(mut self) -> u32 {
        self.hash_kept();
        self.crc
    }

    fn hash_kept(&mut self) {
        if let Some(kept) = self.kept.take()
            && !kept.is_tombstone()
        {
            self.hash(&kept);
        }
    }

    /// `[key len u32][key][mod][create][version][lease][tombstone u8][value]`, integers big-endian.
    fn hash(&mut self, version: &Version) {
        let mut crc = self.crc;
        let key_len = u32::try_from(self.key.len()).unwrap_or(u32::MAX);
        crc = crc32c::crc32c_append(crc, &key_len.to_be_bytes());
        crc = crc32c::crc32c_append(crc, &self.key);
        for n in [version.mod_revision.get(), version.create_revision.get(), version.version, version.lease] {
            crc = crc32c::crc32c_append(crc, &n.to_be_bytes());
        }
        crc = crc32c::crc32c_append(crc, &[u8::from(version.is_tombstone())]);
        self.crc = crc32c::crc32c_append(crc, version.value.as_deref().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: i64, created: i64, version: i64, value: &str) -> Version {
        Version {
            create_revision: Revision(created),
            mod_revision: Revision(rev),
            version,
            lease: 0,
            value: Some(value.as_bytes().to_vec()),
        }
    }

    /// a: put 2, put 3, deleted 5, put 7; b: put 4, put 6.
    fn history() -> Vec<(&'static [u8], Version)> {
        vec![
            (b"a", put(2, 2, 1, "a1")),
            (b"a", put(3, 2, 2, "a2")),
            (b"a", Version::tombstone(Revision(5))),
            (b"a", put(7, 7, 1, "a3")),
            (b"b", put(4, 4, 1, "b1")),
            (b"b", put(6, 4, 2, "b2")),
        ]
    }

    fn hash(rev: i64, compact: i64, versions: &[(&[u8], Version)]) -> u32 {
        let mut hasher = KvHasher::new(Revision(rev), Revision(compact));
        for (key, version) in versions {
            hasher.push(key, version.clone());
        }
        hasher.finish()
    }

    #[test]
    fn physical_compaction_does_not_change_the_hash() {
        let history = history();
        // Compacted at 5: a's newest version at or below 5 is a deletion (nothing kept), b keeps 4.
        let compacted: Vec<_> = history
            .iter()
            .filter(|(key, v)| v.mod_revision > Revision(5) || (*key == b"b" && v.mod_revision == Revision(4)))
            .cloned()
            .collect();
        assert_eq!(hash(7, 5, &history), hash(7, 5, &compacted));
        // Compacted at 3: a keeps 3, b nothing below.
        let compacted: Vec<_> = history.iter().filter(|(_, v)| v.mod_revision >= Revision(3)).cloned().collect();
        assert_eq!(hash(7, 3, &history), hash(7, 3, &compacted));
    }

    #[test]
    fn the_hash_covers_what_rev_sees_and_every_field() {
        let history = history();
        let at_6 = hash(6, 0, &history);
        assert_ne!(at_6, hash(7, 0, &history), "rev 7 adds a version");
        let before: Vec<_> = history.iter().filter(|(_, v)| v.mod_revision <= Revision(6)).cloned().collect();
        assert_eq!(at_6, hash(7, 0, &before), "versions above rev are not hashed");
        let mut changed = history.clone();
        changed[4].1.lease = 9;
        assert_ne!(hash(7, 0, &history), hash(7, 0, &changed), "a lease is hashed");
        let mut renamed = history.clone();
        renamed[5].0 = b"c";
        assert_ne!(hash(7, 0, &history), hash(7, 0, &renamed), "keys are hashed");
        assert_ne!(hash(7, 0, &history), hash(7, 3, &history), "the compact revision drops versions");
    }
}
