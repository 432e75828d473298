//! The index against a plain model (a `BTreeMap` of every key's revisions), driven by seeded random
//! puts, deletes, compactions and reads.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Every key's revisions, ascending, as the index should hold them.
#[derive(Default)]
struct Model {
    keys: BTreeMap<Vec<u8>, Vec<Rev>>,
    compacted: i64,
}

impl Model {
    fn live_at(&self, key: &[u8], at: i64) -> Option<Revision> {
        let rev = self.keys.get(key)?.iter().rev().find(|r| r.revision() <= Revision(at))?;
        (!rev.is_tombstone()).then_some(rev.revision())
    }

    fn range(&self, span: &KeySpan, at: i64) -> Vec<(Vec<u8>, Revision)> {
        self.keys
            .keys()
            .filter(|k| span.contains(k))
            .filter_map(|k| self.live_at(k, at).map(|rev| (k.clone(), rev)))
            .collect()
    }
}

fn index_range(index: &KeyIndex, span: &KeySpan, at: i64) -> Vec<(Vec<u8>, Revision)> {
    let mut out = Vec::new();
    index.range(span, Revision(at), |k, rev| {
        out.push((k.to_vec(), rev));
        true
    });
    out
}

/// Keys shaped like real ones: long shared prefixes, a few short and odd ones.
fn random_key(rng: &mut ChaCha8Rng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 => vec![rng.random_range(0..4u8)],
        1 => vec![0xFF; rng.random_range(1..4)],
        2 => format!("/registry/pods/ns{}/", rng.random_range(0..3)).into_bytes(),
        _ => format!("/registry/pods/ns{}/pod-{:04}", rng.random_range(0..3), rng.random_range(0..400)).into_bytes(),
    }
}

fn random_span(rng: &mut ChaCha8Rng) -> KeySpan {
    let start = random_key(rng);
    let end = match rng.random_range(0..4) {
        0 => RangeEnd::Single,
        1 => RangeEnd::Unbounded,
        2 => RangeEnd::Before(random_key(rng)),
        _ => RangeEnd::Before(crate::types::prefix_end(&start[..start.len().min(rng.random_range(1..20))])),
    };
    KeySpan { start, end }
}

/// What must hold of the index's structure whatever happened to it.
fn check_invariants(index: &KeyIndex) {
    let mut previous: Option<Vec<u8>> = None;
    let mut live = 0;
    for c in &index.chunks {
        assert!(c.len() > 0 && c.len() <= CHUNK_ENTRIES_MAX, "chunk of {}", c.len());
        let mut chunk_live = 0;
        for i in 0..c.len() {
            let key = c.key(i);
            assert!(previous.as_ref().is_none_or(|p| *p < key), "keys out of order");
            let e = c.entries[i];
            chunk_live += u32::from(!e.newest.is_tombstone());
            if e.history != NO_HISTORY {
                let h = &index.histories[e.history as usize];
                assert!(!h.is_empty());
                assert!(h.windows(2).all(|w| w[0].revision() < w[1].revision()));
                assert!(h.last().unwrap().revision() < e.newest.revision());
            }
            previous = Some(key);
        }
        assert_eq!(c.live, chunk_live);
        live += chunk_live as usize;
    }
    assert_eq!(index.live, live);
}

fn run(seed: u64, ops: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut index = KeyIndex::default();
    let mut model = Model::default();
    let mut revision = 1;
    // Keys written since the last compaction: the ones a compaction is given, as in the store.
    let mut written: std::collections::BTreeSet<Vec<u8>> = Default::default();
    for _ in 0..ops {
        match rng.random_range(0..100) {
            0..60 => {
                revision += 1;
                let key = random_key(&mut rng);
                index.put(&key, Revision(revision));
                model.keys.entry(key.clone()).or_default().push(Rev::put(Revision(revision)));
                written.insert(key);
            }
            60..80 => {
                // A delete of a live key (etcd writes no tombstone for an absent one).
                let key = random_key(&mut rng);
                if model.live_at(&key, revision).is_some() {
                    revision += 1;
                    index.delete(&key, Revision(revision));
                    model.keys.get_mut(&key).unwrap().push(Rev::tombstone(Revision(revision)));
                    written.insert(key);
                } else {
                    index.delete(&key, Revision(revision)); // writes nothing
                }
            }
            80..82 => {
                let at = rng.random_range(model.compacted..=revision);
                index.compact_keys(written.iter().map(Vec::as_slice), Revision(at));
                // Written keys with a revision above `at` are compacted again next time.
                written.retain(|k| model.keys[k].last().unwrap().revision() > Revision(at));
                model.compacted = at;
            }
            _ => {
                let at = rng.random_range(model.compacted..=revision);
                let span = random_span(&mut rng);
                let want = model.range(&span, at);
                assert_eq!(index_range(&index, &span, at), want, "seed {seed}: range {span:?} at {at}");
                assert_eq!(index.count(&span, Revision(at)), want.len(), "seed {seed}: count {span:?} at {at}");
                assert_eq!(index.count(&span, Revision(revision)), model.range(&span, revision).len(), "seed {seed}");
                let key = random_key(&mut rng);
                assert_eq!(index.get(&key, Revision(at)), model.live_at(&key, at), "seed {seed}: get at {at}");
            }
        }
    }
    check_invariants(&index);
    // Compacting everything leaves exactly the live keys, one revision each.
    index.compact_keys(written.iter().map(Vec::as_slice), Revision(revision));
    check_invariants(&index);
    let all = KeySpan { start: vec![], end: RangeEnd::Unbounded };
    assert_eq!(index.keys(), model.range(&all, revision).len());
    assert!(index.histories.iter().all(Vec::is_empty));
}

#[test]
fn random_histories_read_as_the_model_does() {
    for seed in 0..40 {
        run(seed, 3_000);
    }
}

#[test]
fn a_hot_key_costs_one_entry_however_often_it_is_written() {
    let mut index = KeyIndex::default();
    for rev in 2..1_002 {
        index.put(b"/hot", Revision(rev));
    }
    assert_eq!(index.keys(), 1);
    assert_eq!(index.get(b"/hot", Revision(500)), Some(Revision(500)));
    index.compact_keys([b"/hot".as_slice()], Revision(900));
    assert_eq!(index.histories.iter().map(Vec::len).sum::<usize>(), 101, "900 through 1000 stay behind 1001");
    assert_eq!(
        (index.get(b"/hot", Revision(900)), index.get(b"/hot", Revision(1_001))),
        (Some(Revision(900)), Some(Revision(1_001)))
    );
}

#[test]
fn loading_takes_keys_in_any_order_and_tombstones_first() {
    let mut index = KeyIndex::default();
    index.load(b"/b", Rev::put(Revision(9)));
    index.load(b"/a", Rev::tombstone(Revision(4)));
    index.load(b"/a", Rev::put(Revision(7)));
    index.load(b"/c", Rev::put(Revision(3)));
    let all = KeySpan { start: vec![], end: RangeEnd::Unbounded };
    let mut seen = Vec::new();
    index.range(&all, Revision(9), |k, rev| {
        seen.push((k.to_vec(), rev));
        true
    });
    assert_eq!(seen, vec![(b"/a".to_vec(), Revision(7)), (b"/b".to_vec(), Revision(9)), (b"/c".to_vec(), Revision(3))]);
    assert_eq!((index.revision(), index.live(), index.get(b"/a", Revision(5))), (Revision(9), 3, None));
}

#[test]
fn counts_at_the_newest_revision_add_up_whole_chunks() {
    let mut index = KeyIndex::default();
    let mut rev = 1;
    for i in 0..10_000u32 {
        rev += 1;
        index.put(format!("/k/{i:06}").as_bytes(), Revision(rev));
    }
    for i in (0..10_000u32).step_by(3) {
        rev += 1;
        index.delete(format!("/k/{i:06}").as_bytes(), Revision(rev));
    }
    let span = |a: &str, b: &str| KeySpan { start: a.into(), end: RangeEnd::Before(b.into()) };
    assert_eq!(index.count(&span("/k/", "/k0"), Revision(rev)), 6_666);
    assert_eq!(index.count(&span("/k/000100", "/k/000200"), Revision(rev)), 67);
    assert_eq!(index.count(&span("/k/", "/k0"), Revision(10_001)), 10_000, "before the deletes");
    assert!(index.chunks.len() > 10_000 / CHUNK_ENTRIES_MAX);
}

#[test]
fn shared_prefixes_are_stored_once() {
    let mut index = KeyIndex::default();
    for i in 0..100_000u32 {
        index.put(format!("/registry/configmaps/default/config-{i:08}").as_bytes(), Revision(i64::from(i) + 2));
    }
    let per_key = index.heap_bytes() / 100_000;
    // 47-byte keys: an entry (24 bytes) and the few bytes where neighbours differ.
    assert!(per_key < 40, "{per_key} bytes per key");
}
