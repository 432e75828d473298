//! Tables round-trip, refuse every corruption by name, stay within their size bounds, and two builds of
//! a mostly unchanged database share most of their objects.

use std::collections::{BTreeMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

type Entries = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

fn build(target_bytes: usize, entries: &Entries) -> Vec<Table> {
    let mut builder = TableBuilder::new(target_bytes);
    let mut tables: Vec<Table> =
        entries.iter().filter_map(|((space, key), value)| builder.push(*space, key, value)).collect();
    tables.extend(builder.finish());
    tables
}

fn random_bytes(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random()).collect()
}

/// `count` entries over spaces 0..3 with random keys of 1..=40 bytes and values of `value_bytes`.
fn random_entries(seed: u64, count: usize, value_bytes: std::ops::Range<usize>) -> Entries {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut entries = Entries::new();
    for _ in 0..count * 2 {
        if entries.len() == count {
            break;
        }
        let key_len = rng.random_range(1..=40);
        let key = (rng.random_range(0..3u8), random_bytes(&mut rng, key_len));
        let value_len = rng.random_range(value_bytes.clone());
        let value = random_bytes(&mut rng, value_len);
        entries.insert(key, value);
    }
    assert_eq!(entries.len(), count, "random keys of up to 40 bytes do not collide this often");
    entries
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    framed.extend_from_slice(payload);
    framed
}

fn payload(space: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut payload = vec![space];
    payload.extend_from_slice(&(key.len() as u32).to_be_bytes());
    payload.extend_from_slice(key);
    payload.extend_from_slice(value);
    payload
}

/// A table object of `frames` as written, named by its own hash.
fn named_table(frames: &[Vec<u8>]) -> (String, Vec<u8>) {
    let mut bytes = TABLE_MAGIC.to_vec();
    frames.iter().for_each(|f| bytes.extend_from_slice(f));
    (table_key(&hash16(&bytes)), bytes)
}

/// One table of three entries: `(0, "a") = "x"`, `(0, "bb") = "yy"`, `(1, "a") = "zzz"`.
fn small_table() -> Table {
    let mut builder = TableBuilder::new(1 << 20);
    for (space, key, value) in [(0, &b"a"[..], &b"x"[..]), (0, b"bb", b"yy"), (1, b"a", b"zzz")] {
        assert_eq!(builder.push(space, key, value), None, "far below the minimum size");
    }
    builder.finish().expect("three entries")
}

#[test]
fn tables_round_trip_in_key_order() {
    let entries = random_entries(1, 2_000, 0..400);
    let tables = build(8 << 10, &entries);
    assert!(tables.len() > 10, "{} tables", tables.len());
    let mut decoded = Vec::new();
    for table in &tables {
        assert_eq!(table.key, table_key(&hash16(&table.bytes)));
        let table_entries = decode_table(&table.key, &table.bytes).unwrap();
        assert_eq!(table_entries.len() as u64, table.entries);
        assert_eq!(
            table.table_ref(),
            TableRef { key: table.key.clone(), bytes: table.bytes.len() as u64, entries: table.entries }
        );
        decoded.extend(table_entries);
    }
    let expected: Vec<TableEntry> =
        entries.into_iter().map(|((space, key), value)| TableEntry { space, key, value }).collect();
    assert_eq!(decoded, expected);
    assert_eq!(TableBuilder::new(100).finish(), None);
}

#[test]
fn table_bytes_are_the_documented_format() {
    let table = small_table();
    let mut expected = b"T4TABLE1".to_vec();
    for (space, key, value) in [(0, &b"a"[..], &b"x"[..]), (0, b"bb", b"yy"), (1, b"a", b"zzz")] {
        expected.extend(frame(&payload(space, key, value)));
    }
    assert_eq!(table.bytes, expected);
    assert_eq!(table.entries, 3);
    assert_eq!(hash16(b"").len(), 16);
    assert_eq!(hash16(b""), "e3b0c44298fc1c14", "SHA-256 of nothing starts e3b0c442 98fc1c14");
}

#[test]
fn any_flipped_byte_fails_the_hash_check() {
    let table = small_table();
    // Positions named for the reader; the loop below covers them and every other byte.
    let magic = 3;
    let first_len = 8 + 3;
    let first_crc = 8 + 4;
    let first_key = 8 + 8 + 5;
    let last_value = table.bytes.len() - 1;
    for position in [magic, first_len, first_crc, first_key, last_value].into_iter().chain(0..table.bytes.len()) {
        for flip in [0x01, 0x80, 0xff] {
            let mut corrupt = table.bytes.clone();
            corrupt[position] ^= flip;
            match decode_table(&table.key, &corrupt) {
                Err(error @ TableError::HashMismatch { .. }) => {
                    assert!(error.to_string().contains(&table.key), "{error}")
                }
                other => panic!("byte {position} ^ {flip:#x}: {other:?}"),
            }
        }
    }
    assert!(decode_table(&table.key, &table.bytes).is_ok());
}

#[test]
fn truncated_tables_are_refused() {
    let table = small_table();
    let frame_ends: Vec<usize> = {
        let mut ends = vec![TABLE_MAGIC.len()];
        for (key, value) in [(&b"a"[..], &b"x"[..]), (b"bb", b"yy"), (b"a", b"zzz")] {
            ends.push(ends.last().unwrap() + FRAME_HEADER_BYTES + PAYLOAD_HEADER_BYTES + key.len() + value.len());
        }
        ends
    };
    assert_eq!(*frame_ends.last().unwrap(), table.bytes.len());
    for len in 0..table.bytes.len() {
        let truncated = &table.bytes[..len];
        // Under its own name, any truncation is a hash mismatch.
        assert!(matches!(decode_table(&table.key, truncated), Err(TableError::HashMismatch { .. })), "{len}");
        // Renamed to match, the framing still refuses a cut inside a frame.
        let key = table_key(&hash16(truncated));
        let result = decode_table(&key, truncated);
        match frame_ends.iter().position(|&end| end == len) {
            _ if len < TABLE_MAGIC.len() => assert!(matches!(result, Err(TableError::BadMagic { .. })), "{len}"),
            Some(0) => assert!(matches!(result, Err(TableError::Empty { .. })), "{len}"),
            Some(entries) => assert_eq!(result.unwrap().len(), entries, "a shorter table, but a whole one"),
            None => assert!(matches!(result, Err(TableError::Truncated { .. })), "{len}: {result:?}"),
        }
    }
}

#[test]
fn framing_errors_behind_a_matching_hash_are_refused() {
    let table = small_table();
    // Flips one byte and renames the object after its new content, so that only the framing can tell.
    let corrupt_at = |position: usize| {
        let mut corrupt = table.bytes.clone();
        corrupt[position] ^= 0x40;
        let key = table_key(&hash16(&corrupt));
        let error = decode_table(&key, &corrupt).unwrap_err();
        assert!(error.to_string().contains(&key), "{error}");
        error
    };
    let magic = corrupt_at(2);
    assert!(matches!(magic, TableError::BadMagic { .. }), "{magic:?}");
    let first_crc = corrupt_at(8 + 5);
    assert!(matches!(first_crc, TableError::ChecksumMismatch { index: 0, offset: 8, .. }), "{first_crc:?}");
    let last_value = corrupt_at(table.bytes.len() - 1);
    assert!(matches!(last_value, TableError::ChecksumMismatch { index: 2, .. }), "{last_value:?}");
    let first_len = corrupt_at(8 + 1);
    assert!(matches!(first_len, TableError::Truncated { index: 0, offset: 8, .. }), "{first_len:?}");
    // A key length past the payload, checksummed as written.
    let mut bad_payload = payload(0, b"abc", b"");
    bad_payload[1..5].copy_from_slice(&4u32.to_be_bytes());
    for payload in [bad_payload, vec![], vec![0, 0, 0]] {
        let (key, bytes) = named_table(&[frame(&payload)]);
        assert!(matches!(decode_table(&key, &bytes), Err(TableError::Malformed { index: 0, .. })), "{payload:?}");
    }
    for key in ["sst/0123/table", "wal/0000000001/00000000000000000001", "sst/0123456789ABCDEF/table"] {
        assert!(matches!(decode_table(key, &table.bytes), Err(TableError::NotATableKey { .. })), "{key}");
    }
}

#[test]
fn entries_out_of_order_are_refused() {
    let cases: [[(u8, &[u8]); 2]; 4] =
        [[(0, b"b"), (0, b"a")], [(0, b"a"), (0, b"a")], [(1, b"a"), (0, b"z")], [(0, b"ab"), (0, b"a")]];
    for [first, second] in cases {
        let (key, bytes) =
            named_table(&[frame(&payload(first.0, first.1, b"v")), frame(&payload(second.0, second.1, b"v"))]);
        match decode_table(&key, &bytes) {
            Err(TableError::OutOfOrder { index: 1, offset, .. }) => assert_eq!(offset, 8 + 8 + 5 + first.1.len() + 1),
            other => panic!("{first:?} then {second:?}: {other:?}"),
        }
    }
    let (key, bytes) =
        named_table(&[frame(&payload(0, b"a", b"v")), frame(&payload(0, b"ab", b"v")), frame(&payload(1, b"", b"v"))]);
    assert_eq!(decode_table(&key, &bytes).unwrap().len(), 3, "shorter keys and lower spaces first");
}

#[test]
#[should_panic(expected = "out of order")]
fn the_builder_refuses_entries_out_of_order() {
    let mut builder = TableBuilder::new(1 << 20);
    builder.push(1, b"b", b"");
    builder.push(1, b"a", b"");
}

#[test]
#[should_panic(expected = "out of order")]
fn the_builder_refuses_entries_out_of_order_across_a_cut() {
    let mut builder = TableBuilder::new(16);
    builder.push(1, b"b", &[0; 100]).expect("past 4 * target: cut");
    builder.push(1, b"a", b"");
}

/// min, p10, median, p90, max and mean of the sizes of all tables but the last.
fn size_summary(tables: &[Table]) -> [usize; 6] {
    let mut sizes: Vec<usize> = tables[..tables.len() - 1].iter().map(|t| t.bytes.len()).collect();
    sizes.sort_unstable();
    let at = |q: usize| sizes[(sizes.len() - 1) * q / 100];
    [at(0), at(10), at(50), at(90), at(100), sizes.iter().sum::<usize>() / sizes.len()]
}

#[test]
fn tables_stay_between_a_quarter_and_four_times_the_target() {
    let target = 4 << 10;
    let entries = random_entries(2, 6_000, 0..600);
    let tables = build(target, &entries);
    let mut cut_at_max = 0;
    for table in &tables[..tables.len() - 1] {
        assert!(table.bytes.len() >= target / 4, "{} bytes", table.bytes.len());
        let last = decode_table(&table.key, &table.bytes).unwrap().pop().unwrap();
        let last_frame = FRAME_HEADER_BYTES + PAYLOAD_HEADER_BYTES + last.key.len() + last.value.len();
        assert!(table.bytes.len() - last_frame < 4 * target, "the maximum cuts after the entry that reaches it");
        cut_at_max += usize::from(table.bytes.len() >= 4 * target);
    }
    println!(
        "{} tables, {cut_at_max} cut at the maximum, sizes [min p10 p50 p90 max mean] {:?}",
        tables.len(),
        size_summary(&tables)
    );
    assert!(cut_at_max > 0, "the maximum is exercised (about 2% of tables reach it)");

    // An entry larger than the maximum is one table by itself, and cuts whatever precedes it.
    let mut builder = TableBuilder::new(target);
    assert_eq!(builder.push(0, b"a", b"small"), None);
    let table = builder.push(0, b"b", &vec![7; 5 * target]).expect("past the maximum");
    assert_eq!(table.entries, 2);
    let table = builder.push(0, b"c", &vec![7; 5 * target]).expect("past the maximum");
    assert_eq!(table.entries, 1);
    assert_eq!(builder.finish(), None);
}

#[test]
fn tables_average_about_the_target_whatever_the_entry_sizes() {
    // Theory for entries much smaller than the target: target/4 + an exponential of mean target,
    // truncated at 4 * target, averages 1.23 * target.
    for (seed, target, count, values) in [
        (3, 1 << 10, 20_000, 0..20),
        (4, 16 << 10, 20_000, 200..400),
        (5, 16 << 10, 6_000, 0..4_000),
        (6, 64 << 10, 20_000, 200..1_000),
    ] {
        let tables = build(target, &random_entries(seed, count, values.clone()));
        let summary = size_summary(&tables);
        println!(
            "target {target}, values {values:?}: {} tables, sizes [min p10 p50 p90 max mean] {summary:?}, mean/target {:.2}",
            tables.len(),
            summary[5] as f64 / target as f64
        );
        assert!(tables.len() >= 20, "enough tables to average");
        let mean = summary[5];
        assert!(mean >= target && mean <= target * 3 / 2, "mean {mean} for target {target}");
    }
}

#[test]
fn boundaries_ignore_values_of_the_same_size() {
    let first = random_entries(7, 3_000, 0..300);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let second: Entries = first.iter().map(|(k, v)| (k.clone(), random_bytes(&mut rng, v.len()))).collect();
    let counts = |tables: Vec<Table>| tables.iter().map(|t| t.entries).collect::<Vec<u64>>();
    let first_counts = counts(build(4 << 10, &first));
    assert!(first_counts.len() > 20);
    assert_eq!(first_counts, counts(build(4 << 10, &second)));
}

#[test]
fn a_changed_value_of_the_same_size_rewrites_only_its_own_table() {
    let mut entries = random_entries(9, 3_000, 0..300);
    let before = build(4 << 10, &entries);
    let (_, value) =
        entries.iter_mut().skip(1_500).find(|(_, value)| !value.is_empty()).expect("values of 0..300 bytes");
    value.iter_mut().for_each(|b| *b = !*b);
    let after = build(4 << 10, &entries);
    assert_eq!(before.len(), after.len());
    let differing = before.iter().zip(&after).filter(|(b, a)| b.key != a.key).count();
    assert_eq!(differing, 1);
}

/// How many tables of `after` were not already stored by `before`.
fn new_tables(before: &[Table], after: &[Table]) -> usize {
    let stored: HashSet<&str> = before.iter().map(|t| t.key.as_str()).collect();
    after.iter().filter(|t| !stored.contains(t.key.as_str())).count()
}

#[test]
fn successive_checkpoints_of_a_mostly_unchanged_database_share_most_tables() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // Keys step by 10 so that new keys can go between them; entries of about 300 bytes.
    let key = |i: u64| format!("/registry/pods/default/pod-{i:010}").into_bytes();
    let mut entries = Entries::new();
    for i in 0..20_000u64 {
        let len = rng.random_range(230..=270);
        entries.insert((1, key(i * 10)), random_bytes(&mut rng, len));
    }
    let mut edited = entries.clone();
    for _ in 0..10 {
        let i = rng.random_range(0..20_000u64) * 10;
        let len = rng.random_range(230..=270);
        edited.insert((1, key(i)), random_bytes(&mut rng, len)).expect("an existing key");
    }
    for _ in 0..5 {
        let i = rng.random_range(0..20_000u64) * 10 + 5;
        let len = rng.random_range(230..=270);
        assert_eq!(edited.insert((1, key(i)), random_bytes(&mut rng, len)), None);
    }
    for _ in 0..5 {
        let i = rng.random_range(0..20_000u64) * 10;
        edited.remove(&(1, key(i))).expect("an existing key");
    }
    // 20 edits land in about 20 distinct tables: with ~76 tables of 64 KiB that is ~77% shared at
    // best; with ~300 tables of 16 KiB, ~93%. The locality bound (at most two new tables per edit)
    // is the property; the share follows from it and the number of tables.
    for target in [16 << 10, 64 << 10] {
        let (before, after) = (build(target, &entries), build(target, &edited));
        let new_tables = new_tables(&before, &after);
        let share = 1.0 - new_tables as f64 / after.len() as f64;
        println!(
            "target {target}: {} tables before, {} after, {new_tables} new, {:.1}% of the second build already stored",
            before.len(),
            after.len(),
            share * 100.0
        );
        assert!(share >= 0.70, "share {share} at target {target}");
        assert!(new_tables <= 2 * 20, "20 edits rewrite {new_tables} tables");
    }
}
