//! The watch sync state machine of one stream: every decision about its watchers' sync state
//! (synced, behind, compacted) and about what the stream is sent, as plain state in and
//! [`Effect`]s out: no runtime, no store, no outbox. The shard's drivers (`requests`, `deliver`,
//! `catch_up`, `tick`) feed it inputs and carry out its effects; tests drive it directly.
//!
//! Invariants (etcd's watch guarantees): a synced watcher has been sent every matching event through
//! the shard's current revision; a watcher behind has been sent every matching event below its next
//! revision and none at or above it, and only the stream's catch-up serves it; each revision's events
//! go out in one response (split only into the fragments a watcher asked for), in revision order,
//! never twice; a watcher whose next revision was compacted is canceled with the compact revision and
//! sent nothing more; a progress notification never reports a revision whose events were not sent.

mod catch_up;
mod live;

/// Seeded random interleavings checked against etcd's guarantees.
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use catch_up::{HistoryBatch, HistoryRequest};
pub use live::route;
use prost::Message;

use super::watch::{CreateError, EventFilter, fragments, watch_span};
use crate::mvcc::store::Identity;
use crate::mvcc::{KeySpan, RangeEnd};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};

/// etcd's `AutoWatchID`: a create request with this id asks the server to pick one.
const AUTO_WATCH_ID: i64 = 0;

/// The bounds a stream is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes queued for the client above which the stream gets no live events (its watchers fall
    /// behind and catch up from the log); a catch-up reads on only below half of it.
    pub buffer_bytes: usize,
    /// Responses of watchers asking for fragments are split below this size.
    pub fragment_bytes: usize,
}

/// What the machine is told of the world with every input.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// The revision of the last group the shard applied.
    pub current: i64,
    /// Bytes queued on the stream's outbox that the client has not taken.
    pub queued_bytes: usize,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Queue this response on the stream's outbox.
    Send(WatchResponse),
    /// Match the watcher against live events from now on.
    Index { watch_id: i64, span: KeySpan },
    /// Match the watcher no more (canceled, or compacted).
    Unindex { watch_id: i64, span: KeySpan },
    /// The stream was over its budget: the watcher fell behind at `revision`, leaving `events` of
    /// its events to the catch-up.
    FellBehind { watch_id: i64, revision: i64, events: usize },
    /// Read the log and feed the batch to [`StreamSync::history_read`].
    ReadHistory(HistoryRequest),
    /// Wait until the client takes some of what is queued (or a while), then feed
    /// [`StreamSync::client_drained`].
    WaitForClient,
}

/// Where a watcher stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherState {
    /// Takes live events from revision `from` on (past the current one while its start revision is
    /// in the future); has been sent every matching event through the current revision.
    Synced { from: i64 },
    /// Has been sent every matching event below `next` and none at or above; the catch-up serves it.
    Behind { next: i64 },
    /// Its next revision was compacted: it got etcd's compacted response and is sent nothing more,
    /// but (as in etcd) keeps its id on the stream until canceled.
    Compacted,
}

/// One watch.
#[derive(Debug)]
pub struct Watcher {
    pub span: KeySpan,
    pub filter: EventFilter,
    progress_notify: bool,
    fragment: bool,
    state: WatcherState,
    /// An event response went out since the last progress tick.
    sent_since_tick: bool,
}

/// What the stream's catch-up is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatchUp {
    /// No watcher is behind (or none was found behind yet).
    Idle,
    /// The client has half the budget queued: the next read waits until it takes some.
    WaitingForClient,
    /// A read of the log is under way.
    Reading,
}

/// One stream's watchers and its catch-up.
#[derive(Debug)]
pub struct StreamSync {
    watchers: BTreeMap<i64, Watcher>,
    /// Where the search for the next free watch id starts (etcd assigns 0, 1, 2, ... per stream).
    next_watch_id: i64,
    catch_up: CatchUp,
    limits: Limits,
    /// Who answers, for response headers.
    identity: Identity,
}

impl StreamSync {
    pub fn new(limits: Limits, identity: Identity) -> StreamSync {
        StreamSync { watchers: BTreeMap::new(), next_watch_id: 0, catch_up: CatchUp::Idle, limits, identity }
    }

    /// The stream's watchers, by watch id.
    pub fn watchers(&self) -> impl Iterator<Item = (i64, &Watcher)> {
        self.watchers.iter().map(|(&id, watcher)| (id, watcher))
    }

    /// Where watcher `watch_id` stands.
    #[cfg(test)]
    pub fn state(&self, watch_id: i64) -> Option<WatcherState> {
        self.watchers.get(&watch_id).map(|w| w.state)
    }

    /// A create request: the watcher starts synced unless its start revision is at or below the
    /// current one (it then replays history first, from the catch-up).
    pub fn create(&mut self, c: &WatchCreateRequest, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now);
        let header = self.header(now.current);
        let watch_id = match self.assign_id(c) {
            Ok(watch_id) => watch_id,
            Err(e) => {
                out.send(WatchResponse {
                    header,
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    cancel_reason: e.reason().to_string(),
                    ..Default::default()
                });
                return out.effects;
            }
        };
        let state = match c.start_revision {
            0 => WatcherState::Synced { from: now.current + 1 },
            start if start > now.current => WatcherState::Synced { from: start },
            start => WatcherState::Behind { next: start },
        };
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        let watcher = Watcher {
            span: watch_span(c),
            filter: EventFilter {
                no_put: has(FilterType::Noput),
                no_delete: has(FilterType::Nodelete),
                prev_kv: c.prev_kv,
            },
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            state,
            sent_since_tick: false,
        };
        out.effects.push(Effect::Index { watch_id, span: watcher.span.clone() });
        self.watchers.insert(watch_id, watcher);
        out.send(WatchResponse { header, watch_id, created: true, ..Default::default() });
        if matches!(state, WatcherState::Behind { .. }) && self.catch_up == CatchUp::Idle {
            self.plan_catch_up(&mut out);
        }
        out.effects
    }

    /// The id a create request gets, or why it is refused.
    fn assign_id(&mut self, c: &WatchCreateRequest) -> Result<i64, CreateError> {
        let span = watch_span(c);
        if let RangeEnd::Before(end) = &span.end
            && span.start >= *end
        {
            return Err(CreateError::EmptyRange);
        }
        if c.watch_id != AUTO_WATCH_ID {
            return match self.watchers.contains_key(&c.watch_id) {
                true => Err(CreateError::DuplicateId),
                false => Ok(c.watch_id),
            };
        }
        while self.watchers.contains_key(&self.next_watch_id) {
            self.next_watch_id += 1;
        }
        self.next_watch_id += 1;
        Ok(self.next_watch_id - 1)
    }

    /// A cancel request; etcd answers nothing for an id that is not watching.
    pub fn cancel(&mut self, watch_id: i64, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now);
        let Some(watcher) = self.watchers.remove(&watch_id) else { return out.effects };
        if watcher.state != WatcherState::Compacted {
            out.effects.push(Effect::Unindex { watch_id, span: watcher.span });
        }
        let header = self.header(now.current);
        out.send(WatchResponse { header, watch_id, canceled: true, ..Default::default() });
        out.effects
    }

    /// A progress request: one response for the stream, at the revision every watcher has been sent
    /// all events up to (a watcher behind holds it back).
    pub fn progress_requested(&mut self, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now);
        let revision = self
            .watchers
            .values()
            .filter_map(|w| match w.state {
                WatcherState::Behind { next } => Some(next - 1),
                WatcherState::Synced { .. } | WatcherState::Compacted => None,
            })
            .min()
            .unwrap_or(now.current)
            .min(now.current);
        out.send(WatchResponse { header: self.header(revision), watch_id: -1, ..Default::default() });
        out.effects
    }

    /// The periodic progress tick: an empty response at the current revision to every synced watcher
    /// that asked for progress notifications and was sent nothing since the last tick. A stream over
    /// its budget is skipped (its watchers' sent marks stay for the next tick).
    pub fn progress_tick(&mut self, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now);
        if self.over_budget(&out) {
            return out.effects;
        }
        let header = self.header(now.current);
        for (&watch_id, watcher) in self.watchers.iter_mut() {
            if watcher.progress_notify
                && matches!(watcher.state, WatcherState::Synced { .. })
                && !watcher.sent_since_tick
            {
                out.send(WatchResponse { header, watch_id, ..Default::default() });
            }
            watcher.sent_since_tick = false;
        }
        out.effects
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.identity.response_header(revision))
    }

    /// Whether the outbox, with what this input queued so far, is at or over the budget.
    fn over_budget(&self, out: &Effects) -> bool {
        out.queued_bytes() >= self.limits.buffer_bytes
    }
}

/// The effects of one input, and the outbox's bytes as they grow with them.
struct Effects {
    effects: Vec<Effect>,
    now: Now,
    /// Bytes of the responses queued by this input.
    sent_bytes: usize,
}

impl Effects {
    fn new(now: Now) -> Effects {
        Effects { effects: Vec::new(), now, sent_bytes: 0 }
    }

    fn send(&mut self, response: WatchResponse) {
        self.sent_bytes += response.encoded_len();
        self.effects.push(Effect::Send(response));
    }

    /// A watcher's event response: whole, or in the fragments it asked for.
    fn send_events(&mut self, watcher: &mut Watcher, response: WatchResponse, fragment_bytes: usize) {
        watcher.sent_since_tick = true;
        if watcher.fragment {
            fragments(response, fragment_bytes).into_iter().for_each(|part| self.send(part));
        } else {
            self.send(response);
        }
    }

    fn queued_bytes(&self) -> usize {
        self.now.queued_bytes + self.sent_bytes
    }
}
