//! Object names sort like the positions they carry, parse only in canonical form, and documents refuse
//! what a reader could misread.

use super::*;
use crate::ids::Term;

#[test]
fn wal_keys_round_trip_and_show_sub_only_when_nonzero() {
    assert_eq!(wal_key(Term(3), Revision(42), 0), "wal/0000000003/00000000000000000042");
    assert_eq!(wal_key(Term(3), Revision(42), 7), "wal/0000000003/00000000000000000042-0000000007");
    for (term, revision, sub) in [(0, 0, 0), (1, 1, 1), (TERM_MAX, i64::MAX, u32::MAX), (5, 1_000_000, 0)] {
        let term = Term(term);
        assert_eq!(
            parse_wal_key(&wal_key(term, Revision(revision), sub)),
            Some(WalKey { term, revision: Revision(revision), sub })
        );
    }
}

#[test]
fn wal_key_order_is_term_revision_sub_order() {
    let mut positions = vec![];
    for term in [1, 2, 10, TERM_MAX] {
        for revision in [0, 1, 9, 10, 99, 100, i64::MAX] {
            for sub in [0, 1, 2, 10, u32::MAX] {
                positions.push(WalKey { term: Term(term), revision: Revision(revision), sub });
            }
        }
    }
    let mut keys: Vec<String> = positions.iter().map(|p| wal_key(p.term, p.revision, p.sub)).collect();
    keys.sort();
    let parsed: Vec<WalKey> = keys.iter().map(|key| parse_wal_key(key).expect("a key we wrote")).collect();
    positions.sort();
    assert_eq!(parsed, positions);
}

#[test]
fn wal_key_parsing_refuses_anything_but_the_canonical_form() {
    let refused = [
        "",
        "wal/",
        "wal/0000000003/00000000000000000042/",
        "wal/0000000003/0000000000000000042",             // 19 revision digits
        "wal/000000003/00000000000000000042",             // 9 term digits
        "wal/0000000003/00000000000000000042-0000000000", // sub 0 spelled out
        "wal/0000000003/00000000000000000042-000000007",  // 9 sub digits
        "wal/0000000003/00000000000000000042-4294967296", // sub past u32
        "wal/0000000003/99999999999999999999",            // revision past i64
        "wal/0000000003/+0000000000000000042",
        "wal/000000000x/00000000000000000042",
        "wal/0000000003/00000000000000000042-",
        "wal/0000000003/00000000000000000042-0000000007-0000000001",
        "WAL/0000000003/00000000000000000042",
        "x/wal/0000000003/00000000000000000042",
        "checkpoint/0000000003/00000000000000000042/manifest.json",
    ];
    for key in refused {
        assert_eq!(parse_wal_key(key), None, "{key:?}");
    }
}

#[test]
#[should_panic(expected = "does not fit")]
fn wal_key_refuses_a_term_too_wide_to_sort() {
    wal_key(Term(TERM_MAX + 1), Revision(1), 0);
}

#[test]
#[should_panic(expected = "negative")]
fn checkpoint_key_refuses_a_negative_revision() {
    checkpoint_key(Term(1), Revision(-1));
}

#[test]
fn checkpoint_keys_round_trip_sort_and_parse_strictly() {
    assert_eq!(checkpoint_key(Term(2), Revision(17)), "checkpoint/0000000002/00000000000000000017/manifest.json");
    let positions = [(1, 5), (1, 40), (2, 3), (10, 0)];
    let keys: Vec<String> =
        positions.iter().map(|&(term, revision)| checkpoint_key(Term(term), Revision(revision))).collect();
    assert!(keys.is_sorted());
    for (key, &(term, revision)) in keys.iter().zip(&positions) {
        assert_eq!(parse_checkpoint_key(key), Some(CheckpointKey { term: Term(term), revision: Revision(revision) }));
    }
    for key in [
        "checkpoint/0000000002/00000000000000000017",
        "checkpoint/0000000002/00000000000000000017/manifest.jso",
        "checkpoint/0000000002/0000000000000000017/manifest.json",
        "checkpoint/2/00000000000000000017/manifest.json",
        "checkpoint/0000000002/00000000000000000017/x/manifest.json",
        "wal/0000000002/00000000000000000017",
    ] {
        assert_eq!(parse_checkpoint_key(key), None, "{key:?}");
    }
}

#[test]
fn table_keys_parse_only_sixteen_lowercase_hex_digits() {
    let key = table_key("0123456789abcdef");
    assert_eq!(key, "sst/0123456789abcdef/table");
    assert_eq!(parse_table_key(&key), Some("0123456789abcdef"));
    for key in [
        "sst/0123456789ABCDEF/table",
        "sst/0123456789abcde/table",
        "sst/0123456789abcdef0/table",
        "sst/0123456789abcdeg/table",
        "sst/0123456789abcdef/table/",
        "sst/0123456789abcdef",
    ] {
        assert_eq!(parse_table_key(key), None, "{key:?}");
    }
}

#[test]
fn branch_keys_refuse_ids_that_are_not_one_segment() {
    assert_eq!(branch_key("feature-1").as_deref(), Some("branches/feature-1"));
    for id in ["", ".", "..", "a/b"] {
        assert_eq!(branch_key(id), None, "{id:?}");
    }
}

fn sample_checkpoint() -> CheckpointManifest {
    CheckpointManifest {
        format_version: FORMAT_VERSION,
        term: Term(4),
        revision: Revision(1234),
        sub: 2,
        compact_revision: Revision(1000),
        tables: vec![
            TableRef { key: table_key("00000000000000aa"), bytes: 70_000, entries: 230 },
            TableRef { key: table_key("ffffffffffffff01"), bytes: 12, entries: 1 },
        ],
        entries: 231,
        created_unix_ms: 1_700_000_000_000,
    }
}

/// `document` as JSON with `edit` applied, for refusals that need well-formed but wrong content.
fn edited<T: Serialize>(document: &T, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut value = serde_json::to_value(document).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn documents_round_trip() {
    let latest = LatestManifest::new(Term(4), Revision(1234));
    assert_eq!(parse_latest(&latest.to_json()).unwrap(), latest);
    let checkpoint = sample_checkpoint();
    assert_eq!(parse_checkpoint(&checkpoint.to_json()).unwrap(), checkpoint);
    let empty = CheckpointManifest { tables: vec![], entries: 0, ..sample_checkpoint() };
    assert_eq!(parse_checkpoint(&empty.to_json()).unwrap(), empty);
    let pin = BranchPin::new(checkpoint_key(Term(4), Revision(1234)));
    assert_eq!(parse_branch_pin(&pin.to_json()).unwrap(), pin);
}

#[test]
fn documents_refuse_invalid_json() {
    for bytes in [&b""[..], b"{", b"null", b"[]", b"{\"format_version\": 1,}", b"\xff\xfe"] {
        assert!(matches!(parse_latest(bytes), Err(LayoutError::Json { .. })), "{bytes:?}");
        assert!(matches!(parse_checkpoint(bytes), Err(LayoutError::Json { .. })), "{bytes:?}");
        assert!(matches!(parse_branch_pin(bytes), Err(LayoutError::Json { .. })), "{bytes:?}");
    }
}

fn assert_missing_field(result: Result<impl std::fmt::Debug, LayoutError>, field: &str) {
    match result {
        Err(error @ LayoutError::Json { .. }) => {
            assert!(error.to_string().contains(&format!("missing field `{field}`")), "{error}")
        }
        other => panic!("expected a missing {field}, got {other:?}"),
    }
}

#[test]
fn documents_refuse_missing_fields() {
    let latest = LatestManifest::new(Term(4), Revision(1234));
    for field in ["format_version", "checkpoint_key", "revision", "term"] {
        let bytes = edited(&latest, |v| drop(v.as_object_mut().unwrap().remove(field)));
        assert_missing_field(parse_latest(&bytes), field);
    }
    let checkpoint = sample_checkpoint();
    let fields =
        ["format_version", "term", "revision", "sub", "compact_revision", "tables", "entries", "created_unix_ms"];
    for field in fields {
        let bytes = edited(&checkpoint, |v| drop(v.as_object_mut().unwrap().remove(field)));
        assert_missing_field(parse_checkpoint(&bytes), field);
    }
    for field in ["key", "bytes", "entries"] {
        let bytes = edited(&checkpoint, |v| drop(v["tables"][1].as_object_mut().unwrap().remove(field)));
        assert_missing_field(parse_checkpoint(&bytes), field);
    }
    let pin = BranchPin::new(checkpoint_key(Term(4), Revision(1234)));
    for field in ["format_version", "checkpoint_key"] {
        let bytes = edited(&pin, |v| drop(v.as_object_mut().unwrap().remove(field)));
        assert_missing_field(parse_branch_pin(&bytes), field);
    }
}

#[test]
fn documents_refuse_unknown_and_mistyped_fields() {
    let bytes = edited(&LatestManifest::new(Term(4), Revision(1234)), |v| v["surprise"] = true.into());
    assert!(matches!(parse_latest(&bytes), Err(LayoutError::Json { .. })));
    let bytes = edited(&sample_checkpoint(), |v| v["revision"] = "1234".into());
    assert!(matches!(parse_checkpoint(&bytes), Err(LayoutError::Json { .. })));
    let bytes = edited(&sample_checkpoint(), |v| v["format_version"] = (-1).into());
    assert!(matches!(parse_checkpoint(&bytes), Err(LayoutError::Json { .. })));
}

#[test]
fn documents_refuse_unknown_format_versions_by_number() {
    for version in [0u32, 2, 77] {
        // Another version may rename fields: it is refused for its version, not for its shape.
        let checks: [(&str, Result<(), LayoutError>); 3] = [
            ("manifest/latest", parse_latest(format!(r#"{{"format_version": {version}}}"#).as_bytes()).map(drop)),
            (
                "checkpoint manifest",
                parse_checkpoint(&edited(&sample_checkpoint(), |v| v["format_version"] = version.into())).map(drop),
            ),
            (
                "branch pin",
                parse_branch_pin(format!(r#"{{"format_version": {version}, "pins": []}}"#).as_bytes()).map(drop),
            ),
        ];
        for (name, result) in checks {
            match result {
                Err(error @ LayoutError::UnsupportedVersion { document, version: found }) => {
                    assert_eq!((document, found), (name, version));
                    assert!(error.to_string().contains(&format!("format_version {version}")), "{error}");
                }
                other => panic!("{name} version {version}: {other:?}"),
            }
        }
    }
}

#[test]
fn latest_refuses_a_checkpoint_key_that_disagrees_with_its_position() {
    let latest = LatestManifest::new(Term(4), Revision(1234));
    for edit in [
        |v: &mut serde_json::Value| v["revision"] = 1235.into(),
        |v: &mut serde_json::Value| v["term"] = 3.into(),
        |v: &mut serde_json::Value| v["checkpoint_key"] = "checkpoint/latest".into(),
    ] {
        let result = parse_latest(&edited(&latest, edit));
        assert!(matches!(result, Err(LayoutError::Invalid { .. })), "{result:?}");
    }
}

#[test]
fn checkpoint_refuses_tables_that_are_not_table_objects() {
    for bad in ["sst/00000000000000aa", "wal/0000000001/00000000000000000001", "sst/00000000000000AA/table"] {
        let bytes = edited(&sample_checkpoint(), |v| v["tables"][0]["key"] = bad.into());
        match parse_checkpoint(&bytes) {
            Err(error @ LayoutError::Invalid { .. }) => assert!(error.to_string().contains(bad), "{error}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn checkpoint_refuses_counts_that_disagree() {
    for entries in [0u64, 230, 232, u64::MAX] {
        let bytes = edited(&sample_checkpoint(), |v| v["entries"] = entries.into());
        match parse_checkpoint(&bytes) {
            Err(error @ LayoutError::Invalid { .. }) => {
                assert!(error.to_string().contains("231"), "{error}")
            }
            other => panic!("entries {entries}: {other:?}"),
        }
    }
    let overflow = edited(&sample_checkpoint(), |v| {
        v["tables"][0]["entries"] = u64::MAX.into();
        v["entries"] = u64::MAX.into();
    });
    assert!(matches!(parse_checkpoint(&overflow), Err(LayoutError::Invalid { .. })));
    let empty_table = edited(&sample_checkpoint(), |v| {
        v["tables"][1]["entries"] = 0.into();
        v["entries"] = 230.into();
    });
    assert!(matches!(parse_checkpoint(&empty_table), Err(LayoutError::Invalid { .. })));
    let compact_past_revision = edited(&sample_checkpoint(), |v| v["compact_revision"] = 1235.into());
    assert!(matches!(parse_checkpoint(&compact_past_revision), Err(LayoutError::Invalid { .. })));
}

#[test]
fn branch_pin_refuses_a_key_that_is_not_a_checkpoint() {
    let bytes = BranchPin::new(table_key("00000000000000aa")).to_json();
    assert!(matches!(parse_branch_pin(&bytes), Err(LayoutError::Invalid { .. })));
}
