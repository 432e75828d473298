//! The Maintenance service: Status (what `etcdctl endpoint status` shows), Alarm (the node's
//! [`Alarms`](crate::alarms::Alarms): listed, raised and disarmed as etcd does), Hash and HashKV
//! (the store's, see [`crate::mvcc::hash`]) and Defragment. Whole-store work runs on a thread of its
//! own, never on an executor or the read pool.

use tonic::{Request, Response, Status};

use super::Services;
use super::status::to_status;
use crate::alarms::Alarm;
use crate::error::{DurabilityError, Internal, RuntimeError, StoreError};
use crate::ids::Revision;
use crate::mvcc::VersionReader;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use crate::runtime::blocking::on_own_thread;

/// The size of a snapshot's chunks (etcd's `snapshotSendBufferSize`).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// Chunks read ahead of a client that has not taken them yet.
const SNAPSHOT_CHUNKS_QUEUED: usize = 16;

type BoxStream<T> = std::pin::Pin<Box<dyn futures_lite::Stream<Item = Result<T, Status>> + Send>>;

/// Writes a snapshot of `store` to a scratch file, then sends it to `chunks` (with its digest
/// last), and removes the file. Stops early, without error, when the client goes away.
fn send_snapshot(
    store: &crate::mvcc::Store,
    chunks: &flume::Sender<Result<SnapshotResponse, Status>>,
) -> crate::Result<()> {
    use sha2::Digest;
    use std::io::Read;
    let started = std::time::Instant::now();
    let path = store.scratch_file("snapshot")?;
    let io = |source: std::io::Error| DurabilityError::SnapshotWrite {
        doing: format!("snapshot file {}", path.display()),
        source,
    };
    let sent = (|| {
        let file = std::fs::File::create(&path).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let info = crate::durability::snapshot::write(store, &mut out)?;
        drop(out);
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut digest = sha2::Sha256::new();
        let mut remaining = size;
        let mut buffer = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        while remaining > 0 {
            let n = (remaining as usize).min(SNAPSHOT_CHUNK_BYTES);
            file.read_exact(&mut buffer[..n]).map_err(io)?;
            digest.update(&buffer[..n]);
            remaining -= n as u64;
            let chunk = SnapshotResponse { header: None, remaining_bytes: remaining, blob: buffer[..n].to_vec() };
            if chunks.send(Ok(chunk)).is_err() {
                tracing::info!(sent_bytes = size - remaining, "snapshot client went away");
                return Ok(());
            }
        }
        let last = SnapshotResponse { header: None, remaining_bytes: 0, blob: digest.finalize().to_vec() };
        if chunks.send(Ok(last)).is_ok() {
            tracing::info!(
                revision = %info.revision,
                bytes = size,
                entries = info.entries,
                took_ms = started.elapsed().as_millis() as u64,
                "snapshot sent"
            );
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    sent
}

/// The etcd API version T4 answers as (the behaviour it is tested against).
pub const ETCD_API_VERSION: &str = "3.4.0";

#[tonic::async_trait]
impl Maintenance for Services {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let store = self.store.clone();
        let (revision, db_size, in_use) = self
            .reads
            .run(move || -> crate::Result<(Revision, u64, u64)> {
                Ok((store.read_view()?.current_revision(), store.disk_bytes(), store.data_bytes()))
            })
            .await
            .and_then(|r| r)
            .map_err(to_status)?;
        let identity = self.store.identity();
        // etcd's in-use size never exceeds its size (memtables are in the journal, so the directory
        // holds them too; the min guards against a table counted before its blocks are).
        let db_size_in_use = i64::try_from(in_use.min(db_size)).unwrap_or(i64::MAX);
        let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            header: self.header(revision),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: identity.member_id,
            raft_index: revision.get() as u64,
            raft_term: identity.term.get(),
            raft_applied_index: revision.get() as u64,
            errors: self.alarms.status_errors(identity.member_id),
            db_size_in_use,
            is_learner: false,
        }))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let store = self.store.clone();
        let hashed = on_own_thread("hash", move || store.hash_all()).await.and_then(|r| r);
        let (hash, revision) = self.corruption_checked(hashed)?;
        Ok(Response::new(HashResponse { header: self.header(revision), hash }))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let rev = Revision(request.into_inner().revision);
        let store = self.store.clone();
        let hashed = on_own_thread("hash", move || store.hash_kv(rev)).await.and_then(|r| r);
        let (hash, current, compact) = self.corruption_checked(hashed)?;
        Ok(Response::new(HashKvResponse {
            header: self.header(current),
            hash,
            compact_revision: compact.get(),
            hash_revision: if rev.get() == 0 { current.get() } else { rev.get() },
        }))
    }

    async fn defragment(&self, _request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        let store = self.store.clone();
        let (before, after, took) =
            on_own_thread("defrag", move || -> crate::Result<(u64, u64, std::time::Duration)> {
                let started = std::time::Instant::now();
                let before = store.disk_bytes();
                store.defragment()?;
                Ok((before, store.disk_bytes(), started.elapsed()))
            })
            .await
            .and_then(|r| r)
            .map_err(to_status)?;
        tracing::info!(
            before_bytes = before,
            after_bytes = after,
            took_ms = took.as_millis() as u64,
            "defragmented the store"
        );
        let revision = self.store.read_view().map_err(to_status)?.current_revision();
        Ok(Response::new(DefragmentResponse { header: self.header(revision) }))
    }

    /// etcd's snapshot stream: the whole store at one point in time, in 32 KiB chunks counting down
    /// `remaining_bytes`, then its SHA-256 as a last message. T4's own format (see
    /// [`crate::durability::snapshot`]): written to a scratch file first (its size is announced),
    /// then sent at the pace the client reads, by a thread of its own.
    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        let store = self.store.clone();
        let (chunks, stream) = flume::bounded(SNAPSHOT_CHUNKS_QUEUED);
        let sending = std::thread::Builder::new().name("t4-snapshot".into()).spawn(move || {
            if let Err(e) = send_snapshot(&store, &chunks) {
                tracing::warn!(error = %e, "snapshot not sent");
                let _ = chunks.send(Err(to_status(e)));
            }
        });
        sending.map_err(|e| to_status(RuntimeError::start("the snapshot thread")(e).into()))?;
        Ok(Response::new(Box::pin(stream.into_stream())))
    }

    /// As a single-member etcd: leadership "moves" to this member (it leads already); any other
    /// target is not a member that could lead.
    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        let identity = self.store.identity();
        if request.into_inner().target_id != identity.member_id {
            return Err(to_status(crate::Error::BadLeaderTransferee));
        }
        let revision = self.store.read_view().map_err(to_status)?.current_revision();
        Ok(Response::new(MoveLeaderResponse { header: self.header(revision) }))
    }

    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let request = request.into_inner();
        let member_id = self.store.identity().member_id;
        let member = |alarm: Alarm| AlarmMember { member_id, alarm: alarm.wire() };
        // etcd answers with the alarms the request matched: every raised one for GET, the one
        // raised or disarmed (if it changed) for ACTIVATE and DEACTIVATE.
        let alarms = match AlarmAction::try_from(request.action).unwrap_or(AlarmAction::Get) {
            AlarmAction::Get => self.alarms.raised().into_iter().map(member).collect(),
            action => {
                let alarm = Alarm::from_wire(request.alarm);
                let for_us = request.member_id == member_id || request.member_id == 0;
                let changed = match (alarm, for_us) {
                    (Some(alarm), true) if action == AlarmAction::Activate => self.alarms.raise(alarm).then_some(alarm),
                    (Some(alarm), true) => self.alarms.disarm(alarm).then_some(alarm),
                    _ => None,
                };
                if let Some(alarm) = changed {
                    tracing::warn!(alarm = alarm.name(), action = action.as_str_name(), "alarm changed by request");
                }
                changed.into_iter().map(member).collect()
            }
        };
        // etcd 3.4 answers alarms without a header (its applier fills none).
        Ok(Response::new(AlarmResponse { header: None, alarms }))
    }
}

impl Services {
    /// A hash's outcome; a hash that found the store damaged (a record that does not decode) raises
    /// the CORRUPT alarm, which refuses every write until an operator disarms it, as etcd's does.
    fn corruption_checked<T>(&self, hashed: crate::Result<T>) -> Result<T, Status> {
        if let Err(crate::Error::Internal(Internal::Store(StoreError::Corrupt { what: reason }))) = &hashed
            && self.alarms.raise(Alarm::Corrupt)
        {
            tracing::error!(%reason, "CORRUPT alarm raised: a hash of the store found it damaged; writes are refused");
        }
        hashed.map_err(to_status)
    }
}
