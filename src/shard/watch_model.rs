//! A model of the key space for watch tests: the writes that feed both it and the watches under
//! test, the events a watch should see, and seeded random writes and watches. Shared by the shard's
//! unit tests (`sync/simulation.rs`) and the integration tests (`tests/common/watch_model.rs`
//! includes this file with `#[path]`), so both check against one model. It knows watches as the
//! model's [`Watch`] (each side makes its own requests of it) and names the storage model's types
//! through its parent's `proto` (the crate's, or `t4::proto`), and nothing else of the crate.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::proto::mvccpb::{Event, KeyValue, event::EventType};

/// A watch as the model reads it: what of etcd's create request decides the events it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// etcd's: 0 is the revision after the current one.
    pub start_revision: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

/// The revision an event happened at.
pub fn mod_revision(e: &Event) -> i64 {
    e.kv.as_ref().expect("an event carries a kv").mod_revision
}

#[derive(Clone, Debug)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    /// DeleteRange of `[key, range_end)`.
    Delete(Vec<u8>, Vec<u8>),
}

pub fn put_op(key: &str, value: &str) -> Op {
    Op::Put(key.into(), value.into())
}

pub fn delete_op(key: &str) -> Op {
    Op::Delete(key.into(), Vec::new())
}

pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

#[derive(Clone)]
pub struct Model {
    pub revision: i64,
    pub live: BTreeMap<Vec<u8>, KeyValue>,
}

impl Default for Model {
    fn default() -> Self {
        Model { revision: 1, live: BTreeMap::new() }
    }
}

impl Model {
    /// Applies one request (a txn when several ops) and returns its events, each with its prev_kv.
    pub fn apply(&mut self, ops: &[Op]) -> Vec<Event> {
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    let prev = self.live.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        value: value.clone(),
                        lease: 0,
                    };
                    self.live.insert(key.clone(), kv.clone());
                    events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: prev });
                }
                Op::Delete(start, end) => {
                    let keys: Vec<Vec<u8>> = self.live.keys().filter(|k| in_range(k, start, end)).cloned().collect();
                    for key in keys {
                        let prev = self.live.remove(&key);
                        let kv = KeyValue { key, mod_revision: rev, ..Default::default() };
                        events.push(Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv: prev });
                    }
                }
            }
        }
        if !events.is_empty() {
            self.revision = rev;
        }
        events
    }
}

/// The events a watch created with `w` sees among `events` (start_revision aside).
pub fn seen_by(w: &Watch, events: &[Event]) -> Vec<Event> {
    let drops = |e: &Event| {
        (w.no_put && e.r#type == EventType::Put as i32) || (w.no_delete && e.r#type == EventType::Delete as i32)
    };
    events
        .iter()
        .filter(|e| in_range(&e.kv.as_ref().unwrap().key, &w.key, &w.range_end) && !drops(e))
        .map(|e| Event { prev_kv: if w.prev_kv { e.prev_kv.clone() } else { None }, ..e.clone() })
        .collect()
}

/// The end of the range holding every key with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key space: `/f/X/Y/n` for X, Y in a..d and n in 0..8, and neighbours of the watched
/// prefixes that no prefix watch may see.
pub fn key_space() -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for x in ["a", "b", "c", "d"] {
        for y in ["a", "b", "c", "d"] {
            for n in 0..8 {
                keys.push(format!("/f/{x}/{y}/{n}").into_bytes());
            }
        }
        keys.push(format!("/f/{x}").into_bytes()); // not under /f/X/
        keys.push(format!("/f/{x}0").into_bytes()); // just past the prefix /f/X/
    }
    for key in ["/f", "/f0", "/e/z", "/g/a", "/f/", "/f/a/"] {
        keys.push(key.as_bytes().to_vec());
    }
    keys
}

/// A watch on part of [`key_space`], from now or (one in three) from a revision in `past_revisions`.
pub fn random_watch(rng: &mut ChaCha8Rng, keys: &[Vec<u8>], past_revisions: std::ops::RangeInclusive<i64>) -> Watch {
    let letter = |rng: &mut ChaCha8Rng| ["a", "b", "c", "d"][rng.random_range(0..4)];
    let prefix = |p: String| {
        let end = prefix_end(p.as_bytes());
        (p.into_bytes(), end)
    };
    let (key, range_end) = match rng.random_range(0..8) {
        0 => prefix("/f/".to_string()),
        1 => prefix(format!("/f/{}/", letter(rng))),
        2 => prefix(format!("/f/{}/{}/", letter(rng), letter(rng))),
        3 => (keys[rng.random_range(0..keys.len())].clone(), Vec::new()),
        4 => {
            let (x, y) = (letter(rng), letter(rng));
            let (i, j) = (rng.random_range(0..7), rng.random_range(1..9));
            let (i, j) = if i < j { (i, j) } else { (j, i + 1) };
            (format!("/f/{x}/{y}/{i}").into_bytes(), format!("/f/{x}/{y}/{j}").into_bytes())
        }
        5 => {
            let (i, j) = (rng.random_range(0..3u8), rng.random_range(1..4u8));
            let (i, j) = if i < j { (i, j) } else { (j, i + 1) };
            (format!("/f/{}/", (b'a' + i) as char).into_bytes(), format!("/f/{}/", (b'a' + j) as char).into_bytes())
        }
        6 => (keys[rng.random_range(0..keys.len())].clone(), vec![0]),
        _ => (vec![0], vec![0]),
    };
    let filter = rng.random_range(0..10);
    let start_revision = if rng.random_range(0..3) == 0 { rng.random_range(past_revisions) } else { 0 };
    Watch {
        key,
        range_end,
        start_revision,
        no_put: filter == 0,
        no_delete: filter == 1,
        prev_kv: rng.random_range(0..10) < 3,
    }
}

/// One request's ops over `keys`: a put, a delete, a range delete or a txn of distinct keys; `i`
/// makes its values unique.
pub fn random_write(rng: &mut ChaCha8Rng, keys: &[Vec<u8>], i: usize) -> Vec<Op> {
    let key = |rng: &mut ChaCha8Rng| keys[rng.random_range(0..keys.len())].clone();
    let value = |i: usize, j: usize| format!("v{i}.{j}").into_bytes();
    match rng.random_range(0..20) {
        0..11 => vec![Op::Put(key(rng), value(i, 0))],
        11..14 => vec![Op::Delete(key(rng), Vec::new())],
        14..16 => {
            let from = key(rng);
            let range_end = match rng.random_range(0..3) {
                0 => prefix_end(&from),
                1 => {
                    let mut end = from.clone();
                    end.push(b'5');
                    end
                }
                _ => match key(rng) {
                    to if to > from => to,
                    _ => prefix_end(&from),
                },
            };
            vec![Op::Delete(from, range_end)]
        }
        _ => {
            // A txn over distinct keys (etcd refuses a txn whose puts overlap its deletes).
            let mut chosen: Vec<Vec<u8>> = Vec::new();
            while chosen.len() < rng.random_range(2..7) {
                let k = key(rng);
                if !chosen.contains(&k) {
                    chosen.push(k);
                }
            }
            chosen
                .into_iter()
                .enumerate()
                .map(
                    |(j, k)| {
                        if rng.random_range(0..4) == 0 { Op::Delete(k, Vec::new()) } else { Op::Put(k, value(i, j)) }
                    },
                )
                .collect()
        }
    }
}
