//! The object layout under a store's prefix, and the JSON documents in it. One place names every
//! object, so the uploader, restore and GC agree on them:
//!
//! ```text
//! manifest/latest                                JSON LatestManifest: the newest complete checkpoint
//! checkpoint/<term:010>/<rev:020>/manifest.json  JSON CheckpointManifest: the checkpoint's tables, in key order
//! sst/<hash16>/table                             a table object, named by the hash of its bytes
//! wal/<term:010>/<first-rev:020>[-<sub:010>]     a WAL object; the suffix only when its first record has sub > 0
//! branches/<id>                                  JSON BranchPin: the checkpoint a branch keeps alive
//! ```
//!
//! Numbers are zero-padded to fixed widths so that byte order of keys is numeric order: listing
//! `wal/` returns WAL objects in (term, revision, sub) order. Parsers accept only the canonical form
//! the builders produce. Every document carries `format_version`; a reader refuses versions it does
//! not know rather than guess at their meaning.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::Revision;

/// The version of the JSON documents this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The key of the pointer to the newest complete checkpoint.
pub const LATEST_KEY: &str = "manifest/latest";
/// The prefix of every WAL object.
pub const WAL_PREFIX: &str = "wal/";
/// The prefix of every checkpoint manifest.
pub const CHECKPOINT_PREFIX: &str = "checkpoint/";
/// The prefix of every table object.
pub const TABLE_PREFIX: &str = "sst/";
/// The prefix of every branch pin.
pub const BRANCHES_PREFIX: &str = "branches/";

/// The largest term a key can carry: terms are written with 10 digits.
pub const TERM_MAX: u64 = 9_999_999_999;

const TERM_DIGITS: usize = 10;
const REVISION_DIGITS: usize = 20;
const SUB_DIGITS: usize = 10;
const HASH16_CHARS: usize = 16;
const CHECKPOINT_SUFFIX: &str = "/manifest.json";
const TABLE_SUFFIX: &str = "/table";

/// What parsing a document refuses.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Not JSON, or not the document's shape (a missing, unknown or mistyped field).
    #[error("{document}: invalid JSON: {source}")]
    Json {
        /// Which document was being read.
        document: &'static str,
        /// What serde_json found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// Written by a build with another document format; reading it as ours could misread it.
    #[error("{document}: unsupported format_version {version} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// Which document was being read.
        document: &'static str,
        /// The version it declares.
        version: u32,
    },
    /// Well-formed JSON whose content cannot be right (a bad object key, counts that disagree).
    #[error("{document}: {problem}")]
    Invalid {
        /// Which document was being read.
        document: &'static str,
        /// What is inconsistent.
        problem: String,
    },
}

/// The position a WAL object's name carries: the term that wrote it and its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalKey {
    /// The leader term that wrote the object.
    pub term: crate::ids::Term,
    /// The revision of the object's first record.
    pub revision: Revision,
    /// The sub-position of the object's first record (0 unless it is a lease-only record).
    pub sub: u32,
}

/// The position a checkpoint manifest's name carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointKey {
    /// The leader term that wrote the checkpoint.
    pub term: crate::ids::Term,
    /// The revision the checkpoint is a snapshot at.
    pub revision: Revision,
}

fn check_position(term: crate::ids::Term, revision: Revision) {
    assert!(term.get() <= TERM_MAX, "term {term} does not fit the {TERM_DIGITS} digits of object keys");
    assert!(revision.get() >= 0, "revision {revision} is negative");
}

/// The key of the WAL object whose first record is `(revision, sub)`, written in `term`.
///
/// Panics if `term` exceeds [`TERM_MAX`] or `revision` is negative: such a key would not sort.
pub fn wal_key(term: crate::ids::Term, revision: Revision, sub: u32) -> String {
    check_position(term, revision);
    if sub == 0 {
        format!("{WAL_PREFIX}{term:010}/{revision:020}")
    } else {
        format!("{WAL_PREFIX}{term:010}/{revision:020}-{sub:010}")
    }
}

/// The position in a WAL object's key; `None` unless `key` is exactly what [`wal_key`] writes.
pub fn parse_wal_key(key: &str) -> Option<WalKey> {
    let rest = key.strip_prefix(WAL_PREFIX)?;
    let (term, rest) = rest.split_once('/')?;
    let (revision, sub) = match rest.split_once('-') {
        Some((revision, sub)) => (revision, Some(sub)),
        None => (rest, None),
    };
    let term = crate::ids::Term(parse_digits(term, TERM_DIGITS)?);
    let revision = Revision(i64::try_from(parse_digits(revision, REVISION_DIGITS)?).ok()?);
    let sub = match sub {
        // Sub 0 is written without a suffix; a second spelling of the same position would not be canonical.
        Some(sub) => u32::try_from(parse_digits(sub, SUB_DIGITS)?).ok().filter(|&sub| sub > 0)?,
        None => 0,
    };
    Some(WalKey { term, revision, sub })
}

/// The key of the manifest of the checkpoint at `revision`, written in `term`.
///
/// Panics if `term` exceeds [`TERM_MAX`] or `revision` is negative: such a key would not sort.
pub fn checkpoint_key(term: crate::ids::Term, revision: Revision) -> String {
    check_position(term, revision);
    format!("{CHECKPOINT_PREFIX}{term:010}/{revision:020}{CHECKPOINT_SUFFIX}")
}

/// The position in a checkpoint manifest's key; `None` unless `key` is exactly what [`checkpoint_key`] writes.
pub fn parse_checkpoint_key(key: &str) -> Option<CheckpointKey> {
    let rest = key.strip_prefix(CHECKPOINT_PREFIX)?.strip_suffix(CHECKPOINT_SUFFIX)?;
    let (term, revision) = rest.split_once('/')?;
    let term = crate::ids::Term(parse_digits(term, TERM_DIGITS)?);
    let revision = Revision(i64::try_from(parse_digits(revision, REVISION_DIGITS)?).ok()?);
    Some(CheckpointKey { term, revision })
}

/// The key of the table object whose bytes hash to `hash16` (see `table::hash16`).
pub fn table_key(hash16: &str) -> String {
    assert!(is_hash16(hash16), "{hash16:?} is not 16 lowercase hex digits");
    format!("{TABLE_PREFIX}{hash16}{TABLE_SUFFIX}")
}

/// The content hash in a table object's key; `None` unless `key` is exactly what [`table_key`] writes.
pub fn parse_table_key(key: &str) -> Option<&str> {
    let hash16 = key.strip_prefix(TABLE_PREFIX)?.strip_suffix(TABLE_SUFFIX)?;
    is_hash16(hash16).then_some(hash16)
}

/// The key of branch `id`'s pin; `None` for an id no store could hold as one key segment.
#[allow(dead_code)] // written by `t4 branch fork` (branches come later); GC already honours pins
pub fn branch_key(id: &str) -> Option<String> {
    let valid = !id.is_empty() && id != "." && id != ".." && !id.contains('/');
    valid.then(|| format!("{BRANCHES_PREFIX}{id}"))
}

fn is_hash16(s: &str) -> bool {
    s.len() == HASH16_CHARS && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `s` as a number if it is exactly `width` ASCII digits.
fn parse_digits(s: &str, width: usize) -> Option<u64> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `manifest/latest`: which checkpoint a restore starts from. Written last, after the checkpoint's
/// tables and manifest are stored, so it never points at an incomplete checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestManifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The key of the checkpoint's manifest; always `checkpoint_key(term, revision)`.
    pub checkpoint_key: String,
    /// The revision of the checkpoint.
    pub revision: Revision,
    /// The term that wrote the checkpoint.
    pub term: crate::ids::Term,
}

impl LatestManifest {
    /// The pointer to the checkpoint at `revision` written in `term`.
    pub fn new(term: crate::ids::Term, revision: Revision) -> Self {
        LatestManifest {
            format_version: FORMAT_VERSION,
            checkpoint_key: checkpoint_key(term, revision),
            revision,
            term,
        }
    }

    /// The document's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// One table object of a checkpoint, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRef {
    /// The table object's key (`sst/<hash16>/table`).
    pub key: String,
    /// The object's size, to plan and report downloads.
    pub bytes: u64,
    /// How many entries the table holds.
    pub entries: u64,
}

/// `checkpoint/<term>/<rev>/manifest.json`: a snapshot of the whole database at `(revision, sub)`,
/// as table objects whose entries, concatenated in list order, are the snapshot in key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointManifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The term that wrote the checkpoint.
    pub term: crate::ids::Term,
    /// The revision of the last record the snapshot includes.
    pub revision: Revision,
    /// The sub-position of that record: WAL replay resumes after `(revision, sub)`.
    pub sub: u32,
    /// The compaction revision at the snapshot; history before it is gone.
    pub compact_revision: Revision,
    /// The tables, in key order.
    pub tables: Vec<TableRef>,
    /// Entries over all tables; must equal their sum.
    pub entries: u64,
    /// When the checkpoint was taken, for operators and GC reports (never for ordering).
    pub created_unix_ms: u64,
}

impl CheckpointManifest {
    /// The document's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// `branches/<id>`: a branch's claim on the checkpoint it was forked from; GC keeps every pinned
/// checkpoint and its tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchPin {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The key of the pinned checkpoint's manifest.
    pub checkpoint_key: String,
}

#[allow(dead_code)] // written by `t4 branch fork` (branches come later); GC already reads pins
impl BranchPin {
    /// A pin on the checkpoint whose manifest is at `checkpoint_key`.
    pub fn new(checkpoint_key: String) -> Self {
        BranchPin { format_version: FORMAT_VERSION, checkpoint_key }
    }

    /// The document's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

const LATEST_DOCUMENT: &str = "manifest/latest";
const CHECKPOINT_DOCUMENT: &str = "checkpoint manifest";
const BRANCH_PIN_DOCUMENT: &str = "branch pin";

/// Reads `manifest/latest`, refusing one whose checkpoint key disagrees with its term and revision.
pub fn parse_latest(bytes: &[u8]) -> Result<LatestManifest, LayoutError> {
    let latest: LatestManifest = parse_versioned(LATEST_DOCUMENT, bytes)?;
    let named = parse_checkpoint_key(&latest.checkpoint_key);
    if named != Some(CheckpointKey { term: latest.term, revision: latest.revision }) {
        return Err(invalid(
            LATEST_DOCUMENT,
            format!(
                "checkpoint_key {:?} is not the key of term {} revision {}",
                latest.checkpoint_key, latest.term, latest.revision
            ),
        ));
    }
    Ok(latest)
}

/// Reads a checkpoint manifest, refusing one whose table keys are not table keys, whose counts
/// disagree, or whose compaction revision is past its revision.
pub fn parse_checkpoint(bytes: &[u8]) -> Result<CheckpointManifest, LayoutError> {
    let manifest: CheckpointManifest = parse_versioned(CHECKPOINT_DOCUMENT, bytes)?;
    let mut sum: u64 = 0;
    for (i, table) in manifest.tables.iter().enumerate() {
        if parse_table_key(&table.key).is_none() {
            return Err(invalid(CHECKPOINT_DOCUMENT, format!("tables[{i}].key {:?} is not a table key", table.key)));
        }
        if table.entries == 0 {
            return Err(invalid(CHECKPOINT_DOCUMENT, format!("tables[{i}] ({}) holds no entries", table.key)));
        }
        sum = sum.checked_add(table.entries).ok_or_else(|| invalid(CHECKPOINT_DOCUMENT, "entries overflow".into()))?;
    }
    if sum != manifest.entries {
        return Err(invalid(CHECKPOINT_DOCUMENT, format!("entries is {} but its tables hold {sum}", manifest.entries)));
    }
    if manifest.compact_revision > manifest.revision {
        return Err(invalid(
            CHECKPOINT_DOCUMENT,
            format!("compact_revision {} is past revision {}", manifest.compact_revision, manifest.revision),
        ));
    }
    Ok(manifest)
}

/// Reads a branch pin, refusing one that does not name a checkpoint manifest.
pub fn parse_branch_pin(bytes: &[u8]) -> Result<BranchPin, LayoutError> {
    let pin: BranchPin = parse_versioned(BRANCH_PIN_DOCUMENT, bytes)?;
    if parse_checkpoint_key(&pin.checkpoint_key).is_none() {
        return Err(invalid(
            BRANCH_PIN_DOCUMENT,
            format!("checkpoint_key {:?} is not a checkpoint key", pin.checkpoint_key),
        ));
    }
    Ok(pin)
}

/// Just the version, read before the rest so that a document of another version is refused for its
/// version rather than for fields it renamed.
#[derive(Deserialize)]
struct VersionProbe {
    format_version: u32,
}

fn parse_versioned<T: DeserializeOwned>(document: &'static str, bytes: &[u8]) -> Result<T, LayoutError> {
    let json = |source| LayoutError::Json { document, source };
    let probe: VersionProbe = serde_json::from_slice(bytes).map_err(json)?;
    if probe.format_version != FORMAT_VERSION {
        return Err(LayoutError::UnsupportedVersion { document, version: probe.format_version });
    }
    serde_json::from_slice(bytes).map_err(json)
}

fn invalid(document: &'static str, problem: String) -> LayoutError {
    LayoutError::Invalid { document, problem }
}

fn to_json<T: Serialize>(document: &T) -> Vec<u8> {
    // Pretty: these documents are few and small next to the tables, and operators read them.
    serde_json::to_vec_pretty(document).expect("documents of strings and integers always serialize")
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
