//! etcd's watch guarantees, checked as a client reads one stream's responses in order: each
//! revision's events in one response (fragments put together first), in order, never twice, exactly
//! the model's events from the start revision on with no gap, a watcher whose start was compacted
//! canceled with a compact revision it could not have been sent past, and progress (per watcher or
//! for the stream) never ahead of the events sent.

use std::collections::BTreeMap;

use crate::ids::WatchId;
use crate::proto::mvccpb::Event;
use crate::shard::stream_io::WatchOutput;
use crate::shard::watch_model::{Watch, mod_revision, seen_by};

/// A create request as the stream got it (as the model reads it), and the world then.
pub struct Create {
    pub request: Watch,
    pub current: i64,
    pub compact: i64,
    /// It names an id in use: etcd refuses it.
    pub refused: bool,
}

/// What the store went through in a run.
#[derive(Clone, Copy)]
pub struct History<'a> {
    /// Every event, in order.
    pub events: &'a [Event],
    /// The last revision.
    pub current: i64,
    /// The last compact revision.
    pub compact: i64,
}

/// How a watcher ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Canceled,
    Compacted(i64),
}

/// One watcher as its client saw it.
struct Seen {
    request: Watch,
    /// Its first revision wanted.
    start: i64,
    /// The compact revision when it was created.
    compact: i64,
    /// The revision of the last event it was sent (its start revision - 1 before any).
    last: i64,
    /// Fragments of a response not yet whole.
    fragments: Vec<Event>,
    end: Option<End>,
}

/// Reads one stream's responses in order, as a client would, checking each.
pub struct Client<'a> {
    history: History<'a>,
    watchers: BTreeMap<WatchId, Seen>,
}

impl<'a> Client<'a> {
    pub fn new(history: History<'a>) -> Client<'a> {
        Client { history, watchers: BTreeMap::new() }
    }

    /// The events `w` should be sent at revisions in `(after, through]`.
    fn expected(&self, w: &Seen, after: i64, through: i64) -> Vec<Event> {
        let events: Vec<Event> = self
            .history
            .events
            .iter()
            .filter(|e| mod_revision(e) > after && mod_revision(e) <= through && mod_revision(e) >= w.start)
            .cloned()
            .collect();
        seen_by(&w.request, &events)
    }

    /// Checks `taken`, the outputs answering `creates` and every other request of the stream.
    pub fn check(mut self, creates: &[Create], taken: &[WatchOutput]) -> Result<(), String> {
        let mut creates = creates.iter();
        let mut fragmenting: Option<WatchId> = None;
        for (n, r) in taken.iter().enumerate() {
            let revision = r.header_revision().get();
            if let Some(id) = fragmenting
                && Some(id) != watch_id(r)
            {
                return Err(format!("response {n} for {:?} came between fragments of {id}", watch_id(r)));
            }
            if matches!(r, WatchOutput::Created { .. } | WatchOutput::Refused { .. }) {
                let create = creates.next().ok_or(format!("response {n}: created, but no create was sent"))?;
                self.created(n, r, create)?;
            } else if let WatchOutput::StreamProgress { .. } = r {
                // A progress response for the stream: every live watcher has been sent all up to it.
                for (id, w) in self.watchers.iter().filter(|(_, w)| w.end.is_none()) {
                    let missing = self.expected(w, w.last, revision);
                    if !missing.is_empty() {
                        return Err(format!("response {n}: progress at {revision} before {id} was sent {missing:?}"));
                    }
                }
            } else {
                fragmenting = match r {
                    WatchOutput::Events { watch_id, fragment: true, .. } => Some(*watch_id),
                    _ => None,
                };
                self.watcher_response(n, r, revision)?;
            }
        }
        if creates.next().is_some() {
            return Err("a create was never answered".into());
        }
        let current = self.history.current;
        for (id, w) in &self.watchers {
            if w.start < w.compact && w.end != Some(End::Canceled) && !matches!(w.end, Some(End::Compacted(_))) {
                return Err(format!(
                    "{id} started at compacted {} (compact {}) and was not canceled",
                    w.start, w.compact
                ));
            }
            if w.end.is_none() {
                let missing = self.expected(w, w.last, current);
                if !missing.is_empty() || !w.fragments.is_empty() {
                    return Err(format!(
                        "{id} (from {}) was never sent {missing:?} (sent through {})",
                        w.start, w.last
                    ));
                }
            }
        }
        Ok(())
    }

    fn created(&mut self, n: usize, r: &WatchOutput, create: &Create) -> Result<(), String> {
        let watch_id = match *r {
            WatchOutput::Created { watch_id, .. } if !create.refused => watch_id,
            WatchOutput::Refused { .. } if create.refused => return Ok(()),
            _ => return Err(format!("response {n}: create {:?} answered {r:?}", create.request)),
        };
        if r.header_revision().get() != create.current {
            return Err(format!("response {n}: created at {} answered {r:?}", create.current));
        }
        if self.watchers.get(&watch_id).is_some_and(|w| w.end != Some(End::Canceled)) {
            return Err(format!("response {n}: id {watch_id} given twice"));
        }
        let start = match create.request.start_revision {
            0 => create.current + 1,
            start => start,
        };
        let seen = Seen {
            request: create.request.clone(),
            start,
            compact: create.compact,
            last: start - 1,
            fragments: Vec::new(),
            end: None,
        };
        self.watchers.insert(watch_id, seen);
        Ok(())
    }

    fn watcher_response(&mut self, n: usize, r: &WatchOutput, revision: i64) -> Result<(), String> {
        let id = watch_id(r).expect("an output for a watcher");
        let Some(w) = self.watchers.get(&id) else {
            return Err(format!("response {n} for unknown watcher {id}"));
        };
        match (w.end, r) {
            (Some(End::Canceled), _) => return Err(format!("response {n} after {id} was canceled: {r:?}")),
            (Some(End::Compacted(_)), WatchOutput::Canceled { .. }) => {}
            (Some(End::Compacted(_)), _) => return Err(format!("response {n} after {id} was compacted: {r:?}")),
            _ => {}
        }
        let events = match r {
            WatchOutput::Compacted { compact_revision: k, .. } => {
                let k = k.get();
                if k <= w.start || k < w.last + 2 || k > self.history.compact || revision != 0 {
                    return Err(format!(
                        "response {n}: {id} (from {}, sent through {}) canceled with compact revision {k} (header {revision})",
                        w.start, w.last
                    ));
                }
                self.watchers.get_mut(&id).expect("looked up").end = Some(End::Compacted(k));
                return Ok(());
            }
            WatchOutput::Canceled { .. } => {
                self.watchers.get_mut(&id).expect("looked up").end = Some(End::Canceled);
                return Ok(());
            }
            WatchOutput::Events { events, .. } if !events.is_empty() => events,
            _ => {
                // A progress notification: never ahead of the events sent.
                let missing = self.expected(w, w.last, revision);
                if !missing.is_empty() {
                    return Err(format!("response {n}: progress at {revision} for {id} sent through {}", w.last));
                }
                return Ok(());
            }
        };
        let w = self.watchers.get_mut(&id).expect("looked up");
        w.fragments.extend(events.iter().cloned());
        if matches!(r, WatchOutput::Events { fragment: true, .. }) {
            return Ok(());
        }
        let events = std::mem::take(&mut w.fragments);
        let (first, last) = (mod_revision(&events[0]), mod_revision(&events[events.len() - 1]));
        let after = w.last;
        if first <= after || events.windows(2).any(|p| mod_revision(&p[0]) > mod_revision(&p[1])) || revision < last {
            return Err(format!(
                "response {n}: {id} sent through {after} got revisions {first}..={last} (header {revision})"
            ));
        }
        let w = &self.watchers[&id];
        let expected = self.expected(w, after, last);
        if events != expected {
            return Err(format!(
                "response {n}: {id} got {events:?}\nfor revisions {after}..={last} instead of {expected:?}"
            ));
        }
        self.watchers.get_mut(&id).expect("looked up").last = last;
        Ok(())
    }
}

/// The watcher an output is for (`None`: the stream, or no watcher).
fn watch_id(output: &WatchOutput) -> Option<WatchId> {
    match *output {
        WatchOutput::Created { watch_id, .. }
        | WatchOutput::Events { watch_id, .. }
        | WatchOutput::Progress { watch_id, .. }
        | WatchOutput::Canceled { watch_id, .. }
        | WatchOutput::Compacted { watch_id, .. } => Some(watch_id),
        WatchOutput::Refused { .. } | WatchOutput::StreamProgress { .. } => None,
    }
}
