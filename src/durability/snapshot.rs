//! Snapshots of a whole store, as etcd's `Maintenance.Snapshot` streams them and `t4 restore
//! --from-snapshot` reads them back. T4's own format, not a bbolt file etcd could open: the entries
//! a checkpoint holds (history above the compaction, current state, log, leases, revisions), cut
//! into the same checksummed, content-hashed tables, in one file:
//!
//! ```text
//! "T4SNAP02"
//! ( 'T' [name len u32][name: sst/<hash16>/table] [table len u64][lz4 len u64][lz4 block of the table] )*
//!                                                                                   every entry, in order
//! 'E' [len u32][JSON: format, revision, sub, compact, tables, entries, t4 version]
//! zeros, to a multiple of 512 bytes
//! [SHA-256 of everything before it]                                                as etcd appends it
//! ```
//!
//! The trailing digest is etcd's convention (its server sends it as the last message), so
//! `etcdctl snapshot save` stores it with the rest; it finds the digest by the content's size being
//! a multiple of 512 bytes (bbolt pages are), hence the padding. Restore checks the digest before it
//! reads anything else.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::table::{TableBuilder, decode_table};
use crate::error::{DurabilityError, Error, Result};
use crate::ids::Revision;
use crate::mvcc::Store;
use crate::mvcc::store::LogPosition;

/// The first bytes of a snapshot (the format's version is its last digits).
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"T4SNAP02";
/// The format this T4 writes and reads.
const FORMAT: u32 = 2;
/// Bytes of the trailing SHA-256.
pub const DIGEST_BYTES: usize = 32;
const TABLE_TAG: u8 = b'T';
const END_TAG: u8 = b'E';
/// Tables are cut at about this size (as checkpoints' are).
const TABLE_BYTES: usize = 4 * 1024 * 1024;
/// The content before the digest is a multiple of this many bytes (how etcdctl finds the digest).
const PAD_TO: u64 = 512;
/// The largest table a reader decompresses (tables are cut at 4 MiB; one entry alone can be larger).
const TABLE_BYTES_MAX: u64 = 1 << 30;
/// The longest table name or end record a reader accepts.
const RECORD_NAME_BYTES_MAX: u32 = 64 * 1024;

/// What a snapshot's end record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub format: u32,
    /// The log position the snapshot was taken at.
    pub revision: Revision,
    pub sub: u32,
    /// The compact revision then.
    pub compact: Revision,
    pub tables: u64,
    pub entries: u64,
    /// The T4 version that wrote it.
    pub t4: String,
}

/// Writes a snapshot of `store` (one consistent point in time) to `out`, without the trailing
/// digest; returns what its end record says. Blocking: reads the whole store.
pub fn write(store: &Store, out: &mut impl Write) -> Result<SnapshotInfo> {
    let io = |source: std::io::Error| DurabilityError::SnapshotWrite { doing: "writing a snapshot".into(), source };
    let mut counted = Counted { out, written: 0 };
    let out = &mut counted;
    out.write_all(SNAPSHOT_MAGIC).map_err(io)?;
    let mut builder = TableBuilder::new(TABLE_BYTES);
    let (mut tables, mut entries) = (0u64, 0u64);
    let mut emit = |table: super::table::Table, out: &mut dyn Write| -> Result<()> {
        tables += 1;
        entries += table.entries;
        out.write_all(&[TABLE_TAG]).map_err(io)?;
        out.write_all(&(table.key.len() as u32).to_be_bytes()).map_err(io)?;
        out.write_all(table.key.as_bytes()).map_err(io)?;
        let compressed = lz4_flex::block::compress(&table.bytes);
        out.write_all(&(table.bytes.len() as u64).to_be_bytes()).map_err(io)?;
        out.write_all(&(compressed.len() as u64).to_be_bytes()).map_err(io)?;
        Ok(out.write_all(&compressed).map_err(io)?)
    };
    let (LogPosition { revision, sub }, compact) =
        store.scan_checkpoint(&mut |space, key, value| match builder.push(space, key, value) {
            Some(table) => emit(table, out),
            None => Ok(()),
        })?;
    if let Some(table) = std::mem::replace(&mut builder, TableBuilder::new(TABLE_BYTES)).finish() {
        emit(table, out)?;
    }
    let info = SnapshotInfo {
        format: FORMAT,
        revision,
        sub,
        compact,
        tables,
        entries,
        t4: env!("CARGO_PKG_VERSION").to_string(),
    };
    let end = serde_json::to_vec(&info).map_err(DurabilityError::SnapshotEnd)?;
    out.write_all(&[END_TAG]).map_err(io)?;
    out.write_all(&(end.len() as u32).to_be_bytes()).map_err(io)?;
    out.write_all(&end).map_err(io)?;
    let padding = (PAD_TO - out.written % PAD_TO) % PAD_TO;
    out.write_all(&vec![0u8; padding as usize]).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(info)
}

/// A writer that counts what it writes (for the padding).
struct Counted<'a, W> {
    out: &'a mut W,
    written: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(bytes)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Why a file is not a snapshot `restore` can load.
fn bad(file: &Path, why: impl Into<String>) -> Error {
    DurabilityError::NotASnapshot { path: file.to_path_buf(), why: why.into() }.into()
}

/// A snapshot file that cannot be read.
fn unreadable(file: &Path) -> impl FnOnce(std::io::Error) -> DurabilityError + '_ {
    |source| DurabilityError::SnapshotUnreadable { path: file.to_path_buf(), source }
}

/// Checks `file`'s trailing SHA-256 against the rest of it (a file cut short or damaged fails here,
/// before anything is loaded). Returns the length of the content before the digest.
pub fn verify_digest(file: &Path) -> Result<u64> {
    let mut reader = std::fs::File::open(file).map_err(unreadable(file))?;
    let len = reader.metadata().map_err(unreadable(file))?.len();
    let content = len
        .checked_sub(DIGEST_BYTES as u64)
        .filter(|content| *content >= SNAPSHOT_MAGIC.len() as u64)
        .ok_or_else(|| bad(file, format!("{len} bytes is too short")))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut (&mut reader).take(content), &mut hasher).map_err(unreadable(file))?;
    let mut digest = [0u8; DIGEST_BYTES];
    reader.read_exact(&mut digest).map_err(unreadable(file))?;
    if hasher.finalize().as_slice() != digest {
        return Err(bad(file, "its SHA-256 does not match (damaged, or cut short)"));
    }
    Ok(content)
}

/// Checks the digest of the snapshot in `file`, then [`load`]s it into `store` (what
/// [`restore_data_dir`] does without the data directory).
#[cfg(test)]
pub fn restore(file: &Path, store: &Store) -> Result<SnapshotInfo> {
    let content = verify_digest(file)?;
    let info = load(file, content, store)?;
    // The store is read after this, so its key index is built from what was loaded
    // (`restore_data_dir` closes the store instead: its next open builds the index).
    store.rebuild_index()?;
    Ok(info)
}

/// Loads the snapshot in `file`, whose digest was checked and whose content before it is `content`
/// bytes, into `store`, which must be empty, and syncs it; returns what its end record says. Checks
/// every table's hash, checksums and order, and that the counts match the end record. The store's
/// key index is left as it was: a caller that reads the store on rebuilds it.
fn load(file: &Path, content: u64, store: &Store) -> Result<SnapshotInfo> {
    let opened = std::fs::File::open(file).map_err(unreadable(file))?;
    let mut reader = BufReader::new(opened.take(content));
    let mut magic = [0u8; SNAPSHOT_MAGIC.len()];
    reader.read_exact(&mut magic).map_err(unreadable(file))?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(bad(
            file,
            "it does not start as a T4 snapshot does (an etcd snapshot is a bbolt file T4 cannot read)",
        ));
    }
    let (mut tables, mut entries) = (0u64, 0u64);
    let mut last: Option<(u8, Vec<u8>)> = None;
    loop {
        let mut tag = [0u8; 1];
        reader
            .read_exact(&mut tag)
            .map_err(|source| DurabilityError::SnapshotEndMissing { path: file.to_path_buf(), source })?;
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(unreadable(file))?;
        let len = u32::from_be_bytes(len);
        if len > RECORD_NAME_BYTES_MAX {
            return Err(bad(file, format!("a record of {len} bytes")));
        }
        let mut name = vec![0u8; len as usize];
        reader.read_exact(&mut name).map_err(unreadable(file))?;
        match tag[0] {
            TABLE_TAG => {
                let name = String::from_utf8(name).map_err(|_| bad(file, "a table name is not UTF-8"))?;
                let mut sizes = [0u8; 16];
                reader.read_exact(&mut sizes).map_err(unreadable(file))?;
                let size = u64::from_be_bytes(sizes[..8].try_into().expect("8 bytes"));
                let compressed_size = u64::from_be_bytes(sizes[8..].try_into().expect("8 bytes"));
                if size > TABLE_BYTES_MAX || compressed_size > content {
                    return Err(bad(file, format!("table {name} of {size} bytes ({compressed_size} compressed)")));
                }
                let mut compressed = vec![0u8; compressed_size as usize];
                reader.read_exact(&mut compressed).map_err(unreadable(file))?;
                let mut bytes = vec![0u8; size as usize];
                match lz4_flex::block::decompress_into(&compressed, &mut bytes) {
                    Ok(n) if n == bytes.len() => {}
                    Ok(n) => return Err(bad(file, format!("table {name} decompresses to {n} bytes, not {size}"))),
                    Err(e) => return Err(bad(file, format!("table {name} does not decompress: {e}"))),
                }
                let decoded = decode_table(&name, &bytes)
                    .map_err(|source| DurabilityError::SnapshotTable { path: file.to_path_buf(), source })?;
                let first = decoded.first().map(|e| (e.space, e.key.as_slice()));
                if let (Some(last), Some(first)) = (&last, first)
                    && (last.0, last.1.as_slice()) >= first
                {
                    return Err(bad(file, format!("table {name} is out of order")));
                }
                last = decoded.last().map(|e| (e.space, e.key.clone()));
                tables += 1;
                entries += decoded.len() as u64;
                let rows: Vec<(u8, Vec<u8>, Vec<u8>)> =
                    decoded.into_iter().map(|e| (e.space, e.key, e.value)).collect();
                store.load_checkpoint_entries(&rows)?;
            }
            END_TAG => {
                let info: SnapshotInfo = serde_json::from_slice(&name)
                    .map_err(|source| DurabilityError::SnapshotEndRecord { path: file.to_path_buf(), source })?;
                if info.format != FORMAT {
                    return Err(bad(file, format!("format {} (this T4 reads format {FORMAT})", info.format)));
                }
                if (info.tables, info.entries) != (tables, entries) {
                    return Err(bad(
                        file,
                        format!(
                            "{tables} tables of {entries} entries, the end record says {} of {}",
                            info.tables, info.entries
                        ),
                    ));
                }
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest).map_err(unreadable(file))?;
                if rest.len() as u64 >= PAD_TO || rest.iter().any(|b| *b != 0) {
                    return Err(bad(file, format!("{} bytes after the end record that are not padding", rest.len())));
                }
                let position = LogPosition::new(info.revision, info.sub);
                if store.current_revision()? != info.revision {
                    return Err(bad(
                        file,
                        format!(
                            "it loads revision {}, its end record says {}",
                            store.current_revision()?,
                            position.revision
                        ),
                    ));
                }
                store.sync()?;
                return Ok(info);
            }
            other => return Err(bad(file, format!("a record tagged {other}"))),
        }
    }
}

/// Creates the data directory `data_dir` from the snapshot in `file` (`t4 restore
/// --from-snapshot`): it must not exist or be empty; a node started on it has the snapshot's keys,
/// history above its compaction, leases and revisions, under a new member and cluster id. On
/// failure nothing is left behind.
pub fn restore_data_dir(file: &Path, data_dir: &Path) -> Result<SnapshotInfo> {
    let existed = data_dir.exists();
    if existed {
        let mut entries = std::fs::read_dir(data_dir)
            .map_err(|e| Error::DataDir { path: data_dir.to_path_buf(), reason: format!("cannot read: {e}") })?;
        if entries.next().is_some() {
            return Err(Error::DataDir {
                path: data_dir.to_path_buf(),
                reason: "is not empty: a snapshot is restored into a new data directory".into(),
            });
        }
    }
    // The digest is checked (once) before the directory is created.
    let content = verify_digest(file)?;
    let restored = Store::open(data_dir).and_then(|store| load(file, content, &store));
    if restored.is_err() {
        let cleared = if existed { clear_dir(data_dir) } else { std::fs::remove_dir_all(data_dir) };
        if let Err(e) = cleared {
            tracing::warn!(path = %data_dir.display(), error = %e, "could not remove a failed restore");
        }
    }
    restored
}

/// Removes everything inside `dir`.
fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { std::fs::remove_dir_all(&path)? } else { std::fs::remove_file(&path)? }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `content` padded and followed by its digest, as a snapshot file.
    fn snapshot_file(dir: &Path, mut content: Vec<u8>) -> std::path::PathBuf {
        content.resize(content.len().div_ceil(PAD_TO as usize) * PAD_TO as usize, 0);
        let digest = sha2::Sha256::digest(&content);
        content.extend_from_slice(&digest);
        let path = dir.join("snapshot");
        std::fs::write(&path, content).unwrap();
        path
    }

    fn table_record(name: &str, size: u64, compressed: &[u8]) -> Vec<u8> {
        let mut record = vec![TABLE_TAG];
        record.extend_from_slice(&(name.len() as u32).to_be_bytes());
        record.extend_from_slice(name.as_bytes());
        record.extend_from_slice(&size.to_be_bytes());
        record.extend_from_slice(&(compressed.len() as u64).to_be_bytes());
        record.extend_from_slice(compressed);
        record
    }

    #[test]
    fn hostile_tables_with_a_good_digest_are_refused_without_huge_allocations() {
        let name = "sst/0123456789abcdef/table";
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("garbage instead of lz4", table_record(name, 100, &[0xff; 8]), "does not decompress"),
            ("a table claimed to be 1 TiB", table_record(name, 1 << 40, &[0; 8]), "bytes"),
            ("a record tag that is not one", vec![b'X', 0, 0, 0, 0], "tagged"),
            ("a name of 4 GiB", vec![TABLE_TAG, 0xff, 0xff, 0xff, 0xff], "a record of"),
        ];
        for (what, record, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut content = SNAPSHOT_MAGIC.to_vec();
            content.extend_from_slice(&record);
            let path = snapshot_file(dir.path(), content);
            let store = Store::open(&dir.path().join("data")).unwrap();
            let error = restore(&path, &store).expect_err(what).to_string();
            assert!(error.contains(expected), "{what}: {error}");
        }
    }
}
