//! What each `t4 inspect` command prints: its JSON document and its table. The documents' field
//! names are a stable interface, explained in each command's `--help` (`inspect/mod.rs`): rename
//! nothing, add fields only.

use serde::Serialize;
use t4::KeyValue;
use t4::inspect::{Change, CheckpointInfo, Diff, History, Listing, Summary};

use crate::cli::output::{Bytes, Table, cell, fields};

/// A key-value in JSON; `value` only where the command shows values.
#[derive(Debug, Serialize)]
pub struct KvDoc {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    value_bytes: usize,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

impl KvDoc {
    fn new(kv: &KeyValue, bytes: Bytes, with_value: bool) -> KvDoc {
        KvDoc {
            key: bytes.json(&kv.key),
            value: with_value.then(|| bytes.json(&kv.value)),
            value_bytes: kv.value.len(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// A log position in JSON.
#[derive(Debug, Serialize)]
pub struct PositionDoc {
    revision: i64,
    sub: u32,
}

fn position(p: Option<t4::inspect::LogPosition>) -> Option<PositionDoc> {
    p.map(|p| PositionDoc { revision: p.revision.get(), sub: p.sub })
}

fn position_text(p: Option<t4::inspect::LogPosition>) -> String {
    p.map_or_else(|| "none".to_string(), |p| format!("revision {} sub {}", p.revision, p.sub))
}

/// A lease id in a table: hex, as etcdctl prints lease ids; `-` for none.
fn lease_text(lease: i64) -> String {
    if lease == 0 { "-".to_string() } else { format!("{lease:x}") }
}

fn revision_or(rev: Option<i64>, absent: &str) -> String {
    rev.map_or_else(|| absent.to_string(), |r| r.to_string())
}

/// `t4 inspect meta` as JSON.
#[derive(Debug, Serialize)]
pub struct MetaDoc {
    data_dir: String,
    member_id: u64,
    cluster_id: u64,
    term: t4::inspect::Term,
    current_revision: i64,
    compact_revision: Option<i64>,
    compacted_through: Option<i64>,
    key_count: i64,
    lease_count: usize,
    db_size_bytes: u64,
    upload_watermark: Option<PositionDoc>,
    last_log_position: Option<PositionDoc>,
    object_store: Option<String>,
    last_checkpoint: Option<CheckpointDoc>,
}

#[derive(Debug, Serialize)]
pub struct CheckpointDoc {
    key: String,
    revision: i64,
    sub: u32,
    term: t4::inspect::Term,
    compact_revision: i64,
    entries: u64,
    tables: usize,
    created_unix_ms: u64,
}

/// What `meta` knows of the newest checkpoint: read from the named store, or not asked for.
pub enum CheckpointSource {
    /// No object store was named: the checkpoint is unknown.
    NotRead,
    /// Read from the store described.
    Read { store: String, latest: Option<CheckpointInfo> },
}

pub fn meta_json(data_dir: &str, s: &Summary, checkpoint: &CheckpointSource) -> MetaDoc {
    let (object_store, last_checkpoint) = match checkpoint {
        CheckpointSource::NotRead => (None, None),
        CheckpointSource::Read { store, latest } => (
            Some(store.clone()),
            latest.as_ref().map(|c| CheckpointDoc {
                key: c.key.clone(),
                revision: c.revision,
                sub: c.sub,
                term: c.term,
                compact_revision: c.compact_revision,
                entries: c.entries,
                tables: c.tables,
                created_unix_ms: c.created_unix_ms,
            }),
        ),
    };
    MetaDoc {
        data_dir: data_dir.to_string(),
        member_id: s.member_id,
        cluster_id: s.cluster_id,
        term: s.term,
        current_revision: s.current_revision,
        compact_revision: s.compact_revision,
        compacted_through: s.compacted_through,
        key_count: s.key_count,
        lease_count: s.lease_count,
        db_size_bytes: s.db_size_bytes,
        upload_watermark: position(s.upload_watermark),
        last_log_position: position(s.last_log_position),
        object_store,
        last_checkpoint,
    }
}

pub fn meta_table(data_dir: &str, s: &Summary, checkpoint: &CheckpointSource) -> String {
    let last_checkpoint = match checkpoint {
        CheckpointSource::NotRead => {
            "unknown (in object storage; name it with --object-store-dir or --s3-bucket)".to_string()
        }
        CheckpointSource::Read { store, latest: None } => format!("none in {store}"),
        CheckpointSource::Read { store, latest: Some(c) } => format!(
            "revision {} (term {}, compact revision {}, taken {}) in {store}",
            c.revision,
            c.term,
            c.compact_revision,
            utc_time(c.created_unix_ms)
        ),
    };
    fields(&[
        ("data_dir", data_dir.to_string()),
        ("member_id", format!("{:x}", s.member_id)),
        ("cluster_id", format!("{:x}", s.cluster_id)),
        ("term", s.term.to_string()),
        ("current_revision", s.current_revision.to_string()),
        ("compact_revision", revision_or(s.compact_revision, "never compacted")),
        ("compacted_through", revision_or(s.compacted_through, "never compacted")),
        ("key_count", s.key_count.to_string()),
        ("lease_count", s.lease_count.to_string()),
        ("db_size_bytes", format!("{} ({})", s.db_size_bytes, human_bytes(s.db_size_bytes))),
        ("upload_watermark", position_text(s.upload_watermark)),
        ("last_log_position", position_text(s.last_log_position)),
        ("last_checkpoint", last_checkpoint),
    ])
}

/// `t4 inspect list` as JSON.
#[derive(Debug, Serialize)]
pub struct ListDoc {
    revision: i64,
    count: i64,
    more: bool,
    keys: Vec<KvDoc>,
}

pub fn list_json(listing: &Listing, bytes: Bytes) -> ListDoc {
    ListDoc {
        revision: listing.revision,
        count: listing.count,
        more: listing.more,
        keys: listing.keys.iter().map(|kv| KvDoc::new(kv, bytes, false)).collect(),
    }
}

pub fn list_table(listing: &Listing, bytes: Bytes) -> String {
    let mut table = Table::new(&["KEY", "CREATE_REVISION", "MOD_REVISION", "VERSION", "LEASE", "VALUE_BYTES"]);
    for kv in &listing.keys {
        table.row(vec![
            cell(bytes.table(&kv.key)),
            kv.create_revision.to_string(),
            kv.mod_revision.to_string(),
            kv.version.to_string(),
            lease_text(kv.lease),
            kv.value.len().to_string(),
        ]);
    }
    let mut out = table.render();
    if listing.more {
        out.push_str(&format!("({} of {} keys; raise --limit for more)\n", listing.keys.len(), listing.count));
    }
    out
}

/// `t4 inspect get` as JSON.
#[derive(Debug, Serialize)]
pub struct GetDoc {
    revision: i64,
    kv: Option<KvDoc>,
}

pub fn get_json(revision: i64, kv: Option<&KeyValue>, bytes: Bytes) -> GetDoc {
    GetDoc { revision, kv: kv.map(|kv| KvDoc::new(kv, bytes, true)) }
}

pub fn get_table(revision: i64, key: &[u8], kv: Option<&KeyValue>, bytes: Bytes) -> String {
    match kv {
        None => format!("key {} not found at revision {revision}\n", bytes.table(key)),
        Some(kv) => fields(&[
            ("key", bytes.table(&kv.key)),
            ("value", bytes.table(&kv.value)),
            ("create_revision", kv.create_revision.to_string()),
            ("mod_revision", kv.mod_revision.to_string()),
            ("version", kv.version.to_string()),
            ("lease", lease_text(kv.lease)),
        ]),
    }
}

/// `t4 inspect history` as JSON.
#[derive(Debug, Serialize)]
pub struct HistoryDoc {
    key: String,
    current_revision: i64,
    compact_revision: Option<i64>,
    more: bool,
    versions: Vec<VersionDoc>,
}

#[derive(Debug, Serialize)]
pub struct VersionDoc {
    revision: i64,
    op: &'static str,
    kv: Option<KvDoc>,
}

pub fn history_json(key: &[u8], history: &History, bytes: Bytes) -> HistoryDoc {
    HistoryDoc {
        key: bytes.json(key),
        current_revision: history.current_revision,
        compact_revision: history.compact_revision,
        more: history.more,
        versions: history
            .versions
            .iter()
            .map(|v| VersionDoc {
                revision: v.revision,
                op: if v.kv.is_some() { "put" } else { "delete" },
                kv: v.kv.as_ref().map(|kv| KvDoc::new(kv, bytes, true)),
            })
            .collect(),
    }
}

pub fn history_table(history: &History, bytes: Bytes) -> String {
    let mut table = Table::new(&["REVISION", "OP", "CREATE_REVISION", "VERSION", "LEASE", "VALUE"]);
    for v in &history.versions {
        let row = match &v.kv {
            Some(kv) => vec![
                v.revision.to_string(),
                "put".into(),
                kv.create_revision.to_string(),
                kv.version.to_string(),
                lease_text(kv.lease),
                cell(bytes.table(&kv.value)),
            ],
            None => vec![v.revision.to_string(), "delete".into(), "-".into(), "-".into(), "-".into(), "-".into()],
        };
        table.row(row);
    }
    let mut out = table.render();
    if history.more {
        out.push_str(&format!("(the oldest {} versions; raise --limit for more)\n", history.versions.len()));
    }
    out
}

/// `t4 inspect diff` as JSON.
#[derive(Debug, Serialize)]
pub struct DiffDoc {
    from_revision: i64,
    to_revision: i64,
    more: bool,
    changes: Vec<ChangeDoc>,
}

#[derive(Debug, Serialize)]
pub struct ChangeDoc {
    key: String,
    change: &'static str,
    before: Option<KvDoc>,
    after: Option<KvDoc>,
}

fn change_name(change: Change) -> &'static str {
    match change {
        Change::Created => "created",
        Change::Changed => "changed",
        Change::Deleted => "deleted",
    }
}

pub fn diff_json(diff: &Diff, bytes: Bytes) -> DiffDoc {
    DiffDoc {
        from_revision: diff.from_revision,
        to_revision: diff.to_revision,
        more: diff.more,
        changes: diff
            .changes
            .iter()
            .map(|c| ChangeDoc {
                key: bytes.json(&c.key),
                change: change_name(c.change),
                before: c.before.as_ref().map(|kv| KvDoc::new(kv, bytes, true)),
                after: c.after.as_ref().map(|kv| KvDoc::new(kv, bytes, true)),
            })
            .collect(),
    }
}

pub fn diff_table(diff: &Diff, bytes: Bytes) -> String {
    let mut table = Table::new(&["CHANGE", "KEY", "FROM_MOD_REVISION", "TO_MOD_REVISION", "VALUE"]);
    let mod_revision = |kv: Option<&KeyValue>| kv.map_or_else(|| "-".to_string(), |kv| kv.mod_revision.to_string());
    for c in &diff.changes {
        table.row(vec![
            change_name(c.change).to_string(),
            cell(bytes.table(&c.key)),
            mod_revision(c.before.as_ref()),
            mod_revision(c.after.as_ref()),
            c.after.as_ref().map_or_else(|| "-".to_string(), |kv| cell(bytes.table(&kv.value))),
        ]);
    }
    let mut out = table.render();
    if diff.more {
        out.push_str(&format!("(the first {} changed keys; raise --limit for more)\n", diff.changes.len()));
    }
    out
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time in milliseconds (civil-from-days, proleptic Gregorian).
fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_read_naturally() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
