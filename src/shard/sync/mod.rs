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

use super::stream_io::{CreateError, WatchCreate, WatchOutput, fragments};
use super::watch::EventFilter;
use crate::ids::{Revision, WatchId};
use crate::mvcc::store::Identity;
use crate::mvcc::{KeySpan, RangeEnd};
use crate::proto::mvccpb::Event;

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
    pub current: Revision,
    /// Bytes queued on the stream's outbox that the client has not taken.
    pub queued_bytes: usize,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Queue this output on the stream's outbox; `bytes` is its size as a response.
    Send { output: WatchOutput, bytes: usize },
    /// Match the watcher against live events from now on.
    Index { watch_id: WatchId, span: KeySpan },
    /// Match the watcher no more (canceled, or compacted).
    Unindex { watch_id: WatchId, span: KeySpan },
    /// The stream was over its budget: the watcher fell behind at `revision`, leaving `events` of
    /// its events to the catch-up.
    FellBehind { watch_id: WatchId, revision: Revision, events: usize },
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
    Synced { from: Revision },
    /// Has been sent every matching event below `next` and none at or above; the catch-up serves it.
    Behind { next: Revision },
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
    watchers: BTreeMap<WatchId, Watcher>,
    /// Where the search for the next free watch id starts (etcd assigns 0, 1, 2, ... per stream).
    next_watch_id: WatchId,
    catch_up: CatchUp,
    limits: Limits,
    /// Who answers: outputs are counted in the bytes of the responses the etcd layer makes of them,
    /// whose headers name it.
    identity: Identity,
}

impl StreamSync {
    pub fn new(limits: Limits, identity: Identity) -> StreamSync {
        StreamSync { watchers: BTreeMap::new(), next_watch_id: WatchId(0), catch_up: CatchUp::Idle, limits, identity }
    }

    /// The stream's watchers, by watch id.
    pub fn watchers(&self) -> impl Iterator<Item = (WatchId, &Watcher)> {
        self.watchers.iter().map(|(&id, watcher)| (id, watcher))
    }

    /// Where watcher `watch_id` stands.
    #[cfg(test)]
    pub fn state(&self, watch_id: WatchId) -> Option<WatcherState> {
        self.watchers.get(&watch_id).map(|w| w.state)
    }

    /// A create request: the watcher starts synced unless its start revision is at or below the
    /// current one (it then replays history first, from the catch-up).
    pub fn create(&mut self, c: &WatchCreate, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now, self.identity);
        let revision = now.current;
        let watch_id = match self.assign_id(c) {
            Ok(watch_id) => watch_id,
            Err(reason) => {
                out.send(WatchOutput::Refused { reason, revision });
                return out.effects;
            }
        };
        let state = match c.start_revision {
            Revision(0) => WatcherState::Synced { from: now.current.next() },
            start if start > now.current => WatcherState::Synced { from: start },
            start => WatcherState::Behind { next: start },
        };
        let watcher = Watcher {
            span: c.span.clone(),
            filter: c.filter,
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            state,
            sent_since_tick: false,
        };
        out.effects.push(Effect::Index { watch_id, span: watcher.span.clone() });
        self.watchers.insert(watch_id, watcher);
        out.send(WatchOutput::Created { watch_id, revision });
        if matches!(state, WatcherState::Behind { .. }) && self.catch_up == CatchUp::Idle {
            self.plan_catch_up(&mut out);
        }
        out.effects
    }

    /// The id a create request gets, or why it is refused.
    fn assign_id(&mut self, c: &WatchCreate) -> Result<WatchId, CreateError> {
        let span = &c.span;
        if let RangeEnd::Before(end) = &span.end
            && span.start >= *end
        {
            return Err(CreateError::EmptyRange);
        }
        if let Some(watch_id) = c.watch_id {
            return match self.watchers.contains_key(&watch_id) {
                true => Err(CreateError::DuplicateId),
                false => Ok(watch_id),
            };
        }
        while self.watchers.contains_key(&self.next_watch_id) {
            self.next_watch_id = self.next_watch_id.next();
        }
        let watch_id = self.next_watch_id;
        self.next_watch_id = watch_id.next();
        Ok(watch_id)
    }

    /// A cancel request; etcd answers nothing for an id that is not watching.
    pub fn cancel(&mut self, watch_id: WatchId, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now, self.identity);
        let Some(watcher) = self.watchers.remove(&watch_id) else { return out.effects };
        if watcher.state != WatcherState::Compacted {
            out.effects.push(Effect::Unindex { watch_id, span: watcher.span });
        }
        out.send(WatchOutput::Canceled { watch_id, revision: now.current });
        out.effects
    }

    /// A progress request: one response for the stream, at the revision every watcher has been sent
    /// all events up to (a watcher behind holds it back).
    pub fn progress_requested(&mut self, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now, self.identity);
        let revision = self
            .watchers
            .values()
            .filter_map(|w| match w.state {
                WatcherState::Behind { next } => Some(next.prev()),
                WatcherState::Synced { .. } | WatcherState::Compacted => None,
            })
            .min()
            .unwrap_or(now.current)
            .min(now.current);
        out.send(WatchOutput::StreamProgress { revision });
        out.effects
    }

    /// The periodic progress tick: an empty response at the current revision to every synced watcher
    /// that asked for progress notifications and was sent nothing since the last tick. A stream over
    /// its budget is skipped (its watchers' sent marks stay for the next tick).
    pub fn progress_tick(&mut self, now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now, self.identity);
        if self.over_budget(&out) {
            return out.effects;
        }
        for (&watch_id, watcher) in self.watchers.iter_mut() {
            if watcher.progress_notify
                && matches!(watcher.state, WatcherState::Synced { .. })
                && !watcher.sent_since_tick
            {
                out.send(WatchOutput::Progress { watch_id, revision: now.current });
            }
            watcher.sent_since_tick = false;
        }
        out.effects
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
    /// Who answers: the outputs' sizes count their headers.
    identity: Identity,
    /// Bytes of the responses queued by this input.
    sent_bytes: usize,
}

impl Effects {
    fn new(now: Now, identity: Identity) -> Effects {
        Effects { effects: Vec::new(), now, identity, sent_bytes: 0 }
    }

    fn send(&mut self, output: WatchOutput) {
        let bytes = output.encoded_len(&self.identity);
        self.sent_bytes += bytes;
        self.effects.push(Effect::Send { output, bytes });
    }

    /// A watcher's events at `revision` in one response, or in the fragments it asked for.
    fn send_events(
        &mut self,
        watcher: &mut Watcher,
        watch_id: WatchId,
        revision: Revision,
        events: Vec<Event>,
        fragment_bytes: usize,
    ) {
        watcher.sent_since_tick = true;
        if watcher.fragment {
            let parts = fragments(&self.identity, watch_id, revision, events, fragment_bytes);
            parts.into_iter().for_each(|part| self.send(part));
        } else {
            self.send(WatchOutput::Events { watch_id, revision, events, fragment: false });
        }
    }

    fn queued_bytes(&self) -> usize {
        self.now.queued_bytes + self.sent_bytes
    }
}
