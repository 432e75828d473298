//! Uploading, at start, the local log records object storage lacks (a crash in async mode, or a
//! data dir that ran without a store), as WAL objects of the new term; a checkpoint instead when
//! the log no longer holds them all. Invariant: what is uploaded is contiguous from the upload mark.

use super::open::local_position;
use super::{Durability, layout, replay, upload};
use crate::error::Result;
use crate::ids::Revision;
use crate::log::LogRecord;
use crate::mvcc::store::{INITIAL_REVISION, LogPosition, ReadView};

/// Bytes of local log records per WAL object when a start uploads what the store lacks.
const TAIL_OBJECT_BYTES: usize = 8 * 1024 * 1024;

impl Durability {
    /// Uploads the local records object storage lacks (a crash in async mode, or a data dir that
    /// ran without a store), or, if the log no longer holds them all, writes a checkpoint.
    pub(super) async fn upload_tail(&self) -> Result<()> {
        let local = &self.local;
        let position = local_position(local)?;
        let uploaded = local.uploaded_through()?.unwrap_or(LogPosition::new(INITIAL_REVISION, 0));
        if uploaded >= position {
            return Ok(());
        }
        let view = local.read_view()?;
        // Uploads as it reads, one WAL object per TAIL_OBJECT_BYTES of records. Compaction removes
        // log records only from the log's start, so a missing record shows before anything is
        // uploaded; wherever one shows, what was uploaded is contiguous and a checkpoint covers the rest.
        let mut reader = TailReader::new(&view, uploaded, position.revision);
        let (mut last, mut first, mut bytes, mut records) = (uploaded, None, Vec::new(), 0usize);
        'read: while let Some(batch) = reader.next_batch()? {
            for record in batch {
                let at = record.position();
                if !replay::successors(last).contains(&at) {
                    break 'read;
                }
                let start = *first.get_or_insert(at);
                bytes.extend_from_slice(&record.encode());
                if bytes.len() >= TAIL_OBJECT_BYTES {
                    first = None;
                    self.upload_tail_object(start, at, std::mem::take(&mut bytes)).await?;
                }
                last = at;
                records += 1;
            }
        }
        if last != position {
            tracing::info!(
                uploaded_revision = %uploaded.revision,
                local_revision = %position.revision,
                "the local log does not hold every record object storage lacks; writing a checkpoint"
            );
            let mut checkpointing = self.checkpointer.shared.lock().await;
            self.checkpointer.checkpoint(&mut checkpointing).await?;
            local.set_uploaded_through(position)?;
            return Ok(());
        }
        if let Some(first) = first {
            self.upload_tail_object(first, position, bytes).await?;
        }
        tracing::info!(records, "uploaded the local records object storage lacked");
        Ok(())
    }

    /// Stores the encoded records from `first` through `last` as one WAL object of this term.
    async fn upload_tail_object(&self, first: LogPosition, last: LogPosition, bytes: Vec<u8>) -> Result<()> {
        let key = layout::wal_key(self.term, first.revision, first.sub);
        upload::store_object(self.store.as_ref(), &key, bytes, &self.stats, |e| {
            tracing::warn!(error = %e, key, "WAL upload failed; retrying");
        })
        .await?;
        self.local.set_uploaded_through(last)
    }
}

/// Reads the local log records after a position through a revision, in order, about
/// `TAIL_OBJECT_BYTES` at a time.
struct TailReader<'a> {
    view: &'a ReadView,
    /// The last record returned (or the position reading starts after).
    read: LogPosition,
    /// The next revision to read from.
    from: Revision,
    through: Revision,
    done: bool,
}

impl<'a> TailReader<'a> {
    fn new(view: &'a ReadView, after: LogPosition, through: Revision) -> TailReader<'a> {
        TailReader { view, read: after, from: after.revision, through, done: false }
    }

    /// The next records, or `None` once every record through `through` was returned.
    fn next_batch(&mut self) -> Result<Option<Vec<LogRecord>>> {
        if self.done {
            return Ok(None);
        }
        let (batch, covered) = self.view.log_records(self.from, self.through, TAIL_OBJECT_BYTES)?;
        let read = self.read;
        let mut records: Vec<LogRecord> = batch.into_iter().filter(|r| r.position() > read).collect();
        if covered >= self.through {
            self.done = true;
        } else {
            // The byte bound cut the read after a record of revision `covered`: the lease-only and
            // compaction records after it at that revision come before the next revision's.
            let read = records.last().map_or(read, |r| r.position());
            let (rest, _) = self.view.log_records(covered, covered, usize::MAX)?;
            records.extend(rest.into_iter().filter(|r| r.position() > read));
            self.from = covered.next();
        }
        if let Some(last) = records.last() {
            self.read = last.position();
        }
        Ok(Some(records))
    }
}
