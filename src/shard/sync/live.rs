//! Live delivery: a committed group's revisions, sorted by stream, and what a stream sends of them.
//! Only synced watchers get live events; over its budget, a stream sends none and the watchers they
//! concern fall behind at the revision they missed.

use std::collections::BTreeMap;

use super::{CatchUp, Effect, Effects, Now, StreamSync, WatcherState};
use crate::ids::{Revision, WatchId};
use crate::log::{LogEvent, LogRecord};
use crate::proto::mvccpb::KeyValue;
use crate::shard::index::WatcherIndex;
use crate::shard::watch::{StreamId, WatcherKey, to_event};

/// One revision of a committed group, as far as one stream's watchers are concerned.
#[derive(Debug)]
pub struct RevisionMatch<'a> {
    pub revision: Revision,
    pub events: &'a [LogEvent],
    /// Per event: the key's version before it.
    pub prevs: &'a [Option<KeyValue>],
    /// The stream's watchers the revision's events concern, in watch id order, each with the
    /// indexes of its events.
    pub watchers: Vec<(WatchId, Vec<usize>)>,
}

/// Sorts a committed group's key events by stream: per stream, the revisions above `applied` (the
/// revision the shard had applied; a group its start already saw is no news) in order, each with
/// the watchers it concerns. Lease-only records (sub > 0) carry no key events.
pub fn route<'a>(
    index: &WatcherIndex<WatcherKey>,
    records: &'a [LogRecord],
    prevs: &'a [Vec<Option<KeyValue>>],
    applied: Revision,
) -> BTreeMap<StreamId, Vec<RevisionMatch<'a>>> {
    let mut streams: BTreeMap<StreamId, Vec<RevisionMatch<'a>>> = BTreeMap::new();
    if index.is_empty() {
        return streams;
    }
    for (record, prevs) in records.iter().zip(prevs) {
        if record.sub != 0 || record.revision <= applied {
            continue;
        }
        let mut matched: BTreeMap<WatcherKey, Vec<usize>> = BTreeMap::new();
        for (i, event) in record.events.iter().enumerate() {
            if let Some(key) = event.key() {
                index.for_each_match(key, |w| matched.entry(w).or_default().push(i));
            }
        }
        for (key, indexes) in matched {
            let revisions = streams.entry(key.stream).or_default();
            if revisions.last().is_none_or(|r| r.revision != record.revision) {
                revisions.push(RevisionMatch {
                    revision: record.revision,
                    events: &record.events,
                    prevs,
                    watchers: Vec::new(),
                });
            }
            revisions.last_mut().expect("pushed above").watchers.push((key.watch_id, indexes));
        }
    }
    streams
}

impl StreamSync {
    /// A committed group's revisions for this stream, in order; `now.current` is the group's last
    /// revision. Synced watchers are sent each revision's events in one response while the stream
    /// is within its budget, and fall behind at the revision otherwise.
    pub fn group_applied(&mut self, revisions: &[RevisionMatch<'_>], now: Now) -> Vec<Effect> {
        let mut out = Effects::new(now, self.identity);
        let mut fell_behind = false;
        for revision in revisions {
            for (watch_id, indexes) in &revision.watchers {
                let over_budget = self.over_budget(&out);
                let Some(watcher) = self.watchers.get_mut(watch_id) else { continue };
                let WatcherState::Synced { from } = watcher.state else { continue };
                if revision.revision < from {
                    continue;
                }
                let events: Vec<_> = indexes
                    .iter()
                    .filter_map(|&i| {
                        to_event(watcher.filter, &revision.events[i], revision.revision, revision.prevs[i].as_ref())
                    })
                    .collect();
                if events.is_empty() {
                    continue;
                }
                if over_budget {
                    watcher.state = WatcherState::Behind { next: revision.revision };
                    out.effects.push(Effect::FellBehind {
                        watch_id: *watch_id,
                        revision: revision.revision,
                        events: events.len(),
                    });
                    fell_behind = true;
                    continue;
                }
                out.send_events(watcher, *watch_id, revision.revision, events, self.limits.fragment_bytes);
            }
        }
        if fell_behind && self.catch_up == CatchUp::Idle {
            self.plan_catch_up(&mut out);
        }
        out.effects
    }
}
