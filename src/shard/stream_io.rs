//! What a watch stream carries, in the shard's terms: the client's requests ([`StreamRequest`]) and
//! what the shard sends ([`WatchOutput`]), each one etcd `WatchResponse`. `src/etcd/watch.rs`
//! translates both ways (validating requests, filling headers); the shard knows no wire type.
//! Invariant: [`WatchOutput::encoded_len`] is the exact size of the response the etcd layer makes,
//! since byte budgets and etcd's fragment split are counted in it (`src/etcd/watch.rs` tests this).

use prost::encoding::{encoded_len_varint, key_len, message};

use super::watch::EventFilter;
use crate::ids::{Revision, WatchId};
use crate::mvcc::KeySpan;
use crate::mvcc::store::Identity;
use crate::proto::mvccpb::Event;

/// A request a stream's client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamRequest {
    Create(WatchCreate),
    /// Cancel the stream's watcher with this id.
    Cancel(WatchId),
    /// Report the revision every watcher of the stream has been sent all events through.
    Progress,
}

/// A watcher to create.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchCreate {
    /// The keys watched (an empty span is refused).
    pub span: KeySpan,
    /// The first revision wanted; 0 is the revision after the current one.
    pub start_revision: Revision,
    pub filter: EventFilter,
    /// Idle, it gets a progress notification every progress interval.
    pub progress_notify: bool,
    /// Its large event responses are split into fragments.
    pub fragment: bool,
    /// The id the client asks for; `None`: the stream picks one.
    pub watch_id: Option<WatchId>,
}

/// Why a create was refused: etcd's mvcc errors, whose text is the response's `cancel_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
}

/// What a shard sends on a stream. `revision` is the one the response reports (its header's).
#[derive(Debug, Clone, PartialEq)]
pub enum WatchOutput {
    /// A watcher was created, at the shard's current revision.
    Created { watch_id: WatchId, revision: Revision },
    /// A create was refused (etcd answers it created and canceled, for no watch id).
    Refused { reason: CreateError, revision: Revision },
    /// A watcher's events: one revision's (live), or every revision of a catch-up batch through
    /// `revision`; `fragment` when more fragments of the same response follow.
    Events { watch_id: WatchId, revision: Revision, events: Vec<Event>, fragment: bool },
    /// A progress notification: the watcher has been sent every event through `revision`.
    Progress { watch_id: WatchId, revision: Revision },
    /// The answer to a progress request: every watcher of the stream has been sent every event
    /// through `revision`.
    StreamProgress { revision: Revision },
    /// The client canceled the watcher.
    Canceled { watch_id: WatchId, revision: Revision },
    /// The watcher's next revision was compacted: canceled with the compact revision (etcd reports
    /// no revision with it).
    Compacted { watch_id: WatchId, compact_revision: Revision },
}

/// `WatchResponse`'s field numbers (etcd's `rpc.proto`).
mod field {
    pub const HEADER: u32 = 1;
    pub const WATCH_ID: u32 = 2;
    pub const CREATED: u32 = 3;
    pub const CANCELED: u32 = 4;
    pub const COMPACT_REVISION: u32 = 5;
    pub const CANCEL_REASON: u32 = 6;
    pub const FRAGMENT: u32 = 7;
    pub const EVENTS: u32 = 11;
    /// `ResponseHeader`'s: cluster id, member id, revision, raft term.
    pub const HEADER_FIELDS: [u32; 4] = [1, 2, 3, 4];
}

/// The watch id etcd puts on responses that concern no watcher.
const NO_WATCH_ID: i64 = -1;

impl WatchOutput {
    /// The revision the response's header reports (etcd's compacted answer reports 0).
    pub fn header_revision(&self) -> Revision {
        match *self {
            WatchOutput::Created { revision, .. }
            | WatchOutput::Refused { revision, .. }
            | WatchOutput::Events { revision, .. }
            | WatchOutput::Progress { revision, .. }
            | WatchOutput::StreamProgress { revision }
            | WatchOutput::Canceled { revision, .. } => revision,
            WatchOutput::Compacted { .. } => Revision(0),
        }
    }

    /// The bytes of the `WatchResponse` the etcd layer makes of this output, with `identity`'s
    /// header (proto3: fields at their default are not sent).
    pub fn encoded_len(&self, identity: &Identity) -> usize {
        let header = |revision: Revision| header_len(identity, revision);
        match self {
            WatchOutput::Created { watch_id, revision } => {
                header(*revision) + int_len(field::WATCH_ID, watch_id.get()) + bool_len(field::CREATED, true)
            }
            WatchOutput::Refused { reason, revision } => {
                let reason = reason.to_string().len();
                header(*revision)
                    + int_len(field::WATCH_ID, NO_WATCH_ID)
                    + bool_len(field::CREATED, true)
                    + bool_len(field::CANCELED, true)
                    + key_len(field::CANCEL_REASON)
                    + encoded_len_varint(reason as u64)
                    + reason
            }
            WatchOutput::Events { watch_id, revision, events, fragment } => {
                events_base_len(identity, *watch_id, *revision, *fragment)
                    + message::encoded_len_repeated(field::EVENTS, events)
            }
            WatchOutput::Progress { watch_id, revision } => {
                header(*revision) + int_len(field::WATCH_ID, watch_id.get())
            }
            WatchOutput::StreamProgress { revision } => header(*revision) + int_len(field::WATCH_ID, NO_WATCH_ID),
            WatchOutput::Canceled { watch_id, revision } => {
                header(*revision) + int_len(field::WATCH_ID, watch_id.get()) + bool_len(field::CANCELED, true)
            }
            WatchOutput::Compacted { watch_id, compact_revision } => {
                header(Revision(0))
                    + int_len(field::WATCH_ID, watch_id.get())
                    + bool_len(field::CANCELED, true)
                    + int_len(field::COMPACT_REVISION, compact_revision.get())
            }
        }
    }
}

/// Splits a watcher's events as etcd's `sendFragments` does when the watcher asked for fragments:
/// a response of at least `limit` bytes with two or more events becomes several, each below `limit`
/// (or holding one event), all but the last marked `fragment`.
pub fn fragments(
    identity: &Identity,
    watch_id: WatchId,
    revision: Revision,
    events: Vec<Event>,
    limit: usize,
) -> Vec<WatchOutput> {
    let whole = |events| WatchOutput::Events { watch_id, revision, events, fragment: false };
    let whole_len = |events: &[Event]| {
        events_base_len(identity, watch_id, revision, false) + message::encoded_len_repeated(field::EVENTS, events)
    };
    if events.len() < 2 || whole_len(&events) < limit {
        return vec![whole(events)];
    }
    let base = events_base_len(identity, watch_id, revision, true);
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut size = base;
    for event in events {
        let bytes = message::encoded_len(field::EVENTS, &event);
        if !current.is_empty() && size + bytes >= limit {
            let part = std::mem::take(&mut current);
            parts.push(WatchOutput::Events { watch_id, revision, events: part, fragment: true });
            size = base;
        }
        size += bytes;
        current.push(event);
    }
    parts.push(whole(current));
    parts
}

/// The bytes of an event response without its events.
fn events_base_len(identity: &Identity, watch_id: WatchId, revision: Revision, fragment: bool) -> usize {
    header_len(identity, revision) + int_len(field::WATCH_ID, watch_id.get()) + bool_len(field::FRAGMENT, fragment)
}

/// The bytes of the header field: etcd's `ResponseHeader` from `identity` at `revision`.
fn header_len(identity: &Identity, revision: Revision) -> usize {
    let values = [identity.cluster_id, identity.member_id, revision.get() as u64, identity.term.get()];
    let inner: usize = field::HEADER_FIELDS.iter().zip(values).map(|(&tag, value)| varint_len(tag, value)).sum();
    key_len(field::HEADER) + encoded_len_varint(inner as u64) + inner
}

/// An `int64` field (negative values take ten bytes, as protobuf encodes them).
fn int_len(tag: u32, value: i64) -> usize {
    varint_len(tag, value as u64)
}

fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + encoded_len_varint(value) }
}

fn bool_len(tag: u32, value: bool) -> usize {
    if value { key_len(tag) + 1 } else { 0 }
}
