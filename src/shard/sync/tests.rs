//! Single decisions of the watch sync state machine, one input at a time.

use super::*;
use crate::ids::Term;
use crate::log::{LogEvent, LogRecord};
use crate::proto::mvccpb::KeyValue;
use crate::shard::index::WatcherIndex;
use crate::shard::watch::WatcherKey;

/// A budget small enough for a few responses to fill.
const BUFFER_BYTES: usize = 1000;

const IDENTITY: Identity = Identity { member_id: 1, cluster_id: 2, term: Term(3) };

fn stream() -> StreamSync {
    StreamSync::new(Limits { buffer_bytes: BUFFER_BYTES, fragment_bytes: 1 << 20 }, IDENTITY)
}

fn now(current: i64) -> Now {
    Now { current: Revision(current), queued_bytes: 0 }
}

fn full(current: i64) -> Now {
    Now { current: Revision(current), queued_bytes: BUFFER_BYTES }
}

/// A watch of `key` alone.
fn watch(key: &str, start_revision: i64) -> WatchCreate {
    watch_range(key, "", start_revision)
}

fn watch_range(key: &str, end: &str, start_revision: i64) -> WatchCreate {
    WatchCreate {
        span: KeySpan::from_etcd(key.as_bytes(), end.as_bytes()),
        start_revision: Revision(start_revision),
        filter: EventFilter::default(),
        progress_notify: false,
        fragment: false,
        watch_id: None,
    }
}

fn put(key: &str, value: &str) -> LogEvent {
    LogEvent::Put { key: key.into(), value: value.into(), create_revision: Revision(2), version: 1, lease: 0 }
}

/// A record of puts at `revision`.
fn record(revision: i64, events: Vec<LogEvent>) -> LogRecord {
    LogRecord { revision: Revision(revision), sub: 0, events }
}

/// Feeds one group of `records` to `sync` as the shard would: routed through an index holding the
/// stream's watchers (stream 0).
fn apply(sync: &mut StreamSync, records: &[LogRecord], now: Now) -> Vec<Effect> {
    let mut index = WatcherIndex::default();
    for (watch_id, watcher) in sync.watchers() {
        index.insert(&watcher.span, WatcherKey { stream: 0, watch_id });
    }
    let prevs: Vec<Vec<Option<KeyValue>>> = records.iter().map(|r| vec![None; r.events.len()]).collect();
    let routed = route(&index, records, &prevs, records[0].revision.prev());
    sync.group_applied(routed.get(&0).map_or(&[][..], |r| r.as_slice()), now)
}

/// A batch holding `records`, read from `from` through `covered` with nothing compacted.
fn batch(from: i64, covered: i64, records: Vec<LogRecord>) -> HistoryBatch {
    let prevs = records.iter().map(|r| vec![None; r.events.len()]).collect();
    HistoryBatch {
        from: Revision(from),
        compact: Revision(1),
        covered: Revision(covered),
        records,
        prevs,
        with_prev: false,
    }
}

fn sent(effects: &[Effect]) -> Vec<&WatchOutput> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { output, .. } => Some(output),
            _ => None,
        })
        .collect()
}

/// The events of each response sent to `watch_id`, and whether more fragments follow.
fn event_responses(effects: &[Effect], watch_id: WatchId) -> Vec<(&[Event], bool)> {
    sent(effects)
        .into_iter()
        .filter_map(|r| match r {
            WatchOutput::Events { watch_id: id, events, fragment, .. } if *id == watch_id && !events.is_empty() => {
                Some((events.as_slice(), *fragment))
            }
            _ => None,
        })
        .collect()
}

/// The revisions of the events sent to `watch_id`, one list per response.
fn revisions(effects: &[Effect], watch_id: WatchId) -> Vec<Vec<i64>> {
    event_responses(effects, watch_id)
        .into_iter()
        .map(|(events, _)| events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect())
        .collect()
}

fn reads(effects: &[Effect]) -> Vec<HistoryRequest> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ReadHistory(read) => Some(*read),
            _ => None,
        })
        .collect()
}

/// The id of the watcher a create answered.
fn created(effects: &[Effect]) -> WatchId {
    match *sent(effects)[0] {
        WatchOutput::Created { watch_id, .. } => watch_id,
        ref response => panic!("{response:?}"),
    }
}

#[test]
fn watch_ids_are_assigned_per_stream_and_duplicates_refused() {
    let mut sync = stream();
    let id = |sync: &mut StreamSync, key: &str, end: &str, watch_id: Option<i64>| {
        let c = WatchCreate { watch_id: watch_id.map(WatchId), ..watch_range(key, end, 0) };
        match sent(&sync.create(&c, now(5)))[0].clone() {
            WatchOutput::Created { watch_id, .. } => Ok(watch_id.get()),
            WatchOutput::Refused { reason, .. } => Err(reason),
            response => panic!("a create answered {response:?}"),
        }
    };
    assert_eq!(id(&mut sync, "a", "", None), Ok(0));
    assert_eq!(id(&mut sync, "a", "", Some(2)), Ok(2));
    assert_eq!(id(&mut sync, "a", "", None), Ok(1));
    assert_eq!(id(&mut sync, "a", "", None), Ok(3), "2 is taken");
    assert_eq!(id(&mut sync, "a", "", Some(2)), Err(CreateError::DuplicateId));
    assert_eq!(id(&mut sync, "b", "a", None), Err(CreateError::EmptyRange));
    assert_eq!(id(&mut sync, "b", "b", None), Err(CreateError::EmptyRange));
}

#[test]
fn start_revisions_decide_between_live_and_replay() {
    let mut sync = stream();
    let now_id = created(&sync.create(&watch("a", 0), now(5)));
    let future = created(&sync.create(&watch("a", 9), now(5)));
    let past = sync.create(&watch("a", 5), now(5));
    let past_id = created(&past);
    assert_eq!(sync.state(now_id), Some(WatcherState::Synced { from: Revision(6) }));
    assert_eq!(sync.state(future), Some(WatcherState::Synced { from: Revision(9) }));
    assert_eq!(
        sync.state(past_id),
        Some(WatcherState::Behind { next: Revision(5) }),
        "the current revision itself is replayed"
    );
    assert_eq!(reads(&past), vec![HistoryRequest { from: Revision(5), to: Revision(5), want_prev: false }]);
    assert!(sent(&past).iter().all(|r| r.header_revision().get() == 5), "created at the current revision");
}

#[test]
fn a_stalled_stream_falls_behind_and_catches_up_without_a_gap() {
    let mut sync = stream();
    let id = created(&sync.create(&watch("a", 0), now(5)));
    let mut seen = revisions(&apply(&mut sync, &[record(6, vec![put("a", "6")])], now(6)), id);

    // The client stalls: the outbox is full, so revision 7 is left to the catch-up, which waits.
    let stalled = apply(&mut sync, &[record(7, vec![put("a", "7")])], full(7));
    assert!(stalled.contains(&Effect::FellBehind { watch_id: id, revision: Revision(7), events: 1 }));
    assert!(stalled.contains(&Effect::WaitForClient) && sent(&stalled).is_empty());
    assert_eq!(sync.state(id), Some(WatcherState::Behind { next: Revision(7) }));
    // Behind, it takes no live events even with room again.
    assert!(revisions(&apply(&mut sync, &[record(8, vec![put("a", "8")])], now(8)), id).is_empty());

    let resumed = sync.client_drained(now(8));
    assert_eq!(reads(&resumed), vec![HistoryRequest { from: Revision(7), to: Revision(8), want_prev: false }]);
    // A live revision arrives while the read is under way: the next read brings it.
    assert!(apply(&mut sync, &[record(9, vec![put("a", "9")])], now(9)).is_empty());
    let first =
        sync.history_read(&batch(7, 8, vec![record(7, vec![put("a", "7")]), record(8, vec![put("a", "8")])]), now(9));
    seen.extend(revisions(&first, id));
    assert_eq!(reads(&first), vec![HistoryRequest { from: Revision(9), to: Revision(9), want_prev: false }]);
    let second = sync.history_read(&batch(9, 9, vec![record(9, vec![put("a", "9")])]), now(9));
    seen.extend(revisions(&second, id));
    assert!(reads(&second).is_empty());
    assert_eq!(
        sync.state(id),
        Some(WatcherState::Synced { from: Revision(10) }),
        "synced in the step that reached the current revision"
    );
    seen.extend(revisions(&apply(&mut sync, &[record(10, vec![put("a", "10")])], now(10)), id));
    assert_eq!(seen, vec![vec![6], vec![7, 8], vec![9], vec![10]], "every revision once, in order");
}

#[test]
fn a_watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let mut sync = stream();
    let id = created(&sync.create(&watch("a", 3), now(10)));
    let compacted = HistoryBatch { compact: Revision(6), ..batch(6, 10, vec![record(8, vec![put("a", "8")])]) };
    let effects = sync.history_read(&compacted, now(10));
    let canceled = sent(&effects);
    assert_eq!(canceled.len(), 1, "the compacted answer, and no events");
    assert_eq!(*canceled[0], WatchOutput::Compacted { watch_id: id, compact_revision: Revision(6) });
    assert_eq!(canceled[0].header_revision().get(), 0, "etcd's compacted answer has a zero header revision");
    assert!(effects.iter().any(|e| matches!(e, Effect::Unindex { watch_id, .. } if *watch_id == id)));
    assert_eq!(sync.state(id), Some(WatcherState::Compacted));
    assert!(reads(&effects).is_empty(), "nothing is behind any more");
    let ticked = sync.progress_tick(now(10));
    assert!(sent(&ticked).is_empty(), "a compacted watcher gets no progress notifications");
    let answered = sync.cancel(id, now(10));
    assert!(matches!(sent(&answered)[0], WatchOutput::Canceled { .. }), "it keeps its id until canceled");
    assert!(!answered.iter().any(|e| matches!(e, Effect::Unindex { .. })), "it was unindexed already");
}

#[test]
fn a_watch_from_exactly_the_compact_revision_is_served() {
    let mut sync = stream();
    let id = created(&sync.create(&watch("a", 6), now(10)));
    let at_compact = HistoryBatch { compact: Revision(6), ..batch(6, 10, vec![record(6, vec![put("a", "6")])]) };
    let effects = sync.history_read(&at_compact, now(10));
    assert_eq!(revisions(&effects, id), vec![vec![6]]);
    assert_eq!(sync.state(id), Some(WatcherState::Synced { from: Revision(11) }));
}

#[test]
fn a_catch_up_reads_on_only_while_the_client_holds_at_most_half_the_budget() {
    let mut sync = stream();
    let id = created(&sync.create(&watch("a", 2), now(10)));
    let half = Now { current: Revision(10), queued_bytes: BUFFER_BYTES / 2 };
    let effects = sync.history_read(&batch(2, 5, Vec::new()), half);
    assert_eq!(
        reads(&effects),
        vec![HistoryRequest { from: Revision(6), to: Revision(10), want_prev: false }],
        "half queued: reads on"
    );
    let more = Now { current: Revision(10), queued_bytes: BUFFER_BYTES / 2 + 1 };
    let waiting = sync.history_read(&batch(6, 7, Vec::new()), more);
    assert_eq!(waiting, vec![Effect::WaitForClient]);
    assert_eq!(sync.state(id), Some(WatcherState::Behind { next: Revision(8) }));
    assert_eq!(
        reads(&sync.client_drained(now(10))),
        vec![HistoryRequest { from: Revision(8), to: Revision(10), want_prev: false }]
    );
    assert!(sync.client_drained(now(10)).is_empty(), "a read is under way: a late drain changes nothing");
}

#[test]
fn a_progress_request_never_reports_past_a_watcher_behind() {
    let mut sync = stream();
    created(&sync.create(&watch("a", 0), now(10)));
    let progress = sync.progress_requested(now(10));
    assert_eq!(*sent(&progress)[0], WatchOutput::StreamProgress { revision: Revision(10) }, "for the stream, at 10");
    created(&sync.create(&watch("b", 4), now(10)));
    let progress = sync.progress_requested(now(12));
    assert_eq!(sent(&progress)[0].header_revision().get(), 3, "the watcher behind has been sent everything below 4");
    sync.history_read(&batch(4, 10, Vec::new()), now(12));
    let progress = sync.progress_requested(now(12));
    assert_eq!(sent(&progress)[0].header_revision().get(), 10);
}

#[test]
fn progress_notifications_go_to_idle_synced_watchers_that_asked_while_the_stream_has_room() {
    let mut sync = stream();
    let notify = |key: &str, start| WatchCreate { progress_notify: true, ..watch(key, start) };
    let idle = created(&sync.create(&notify("a", 0), now(5)));
    let busy = created(&sync.create(&notify("b", 0), now(5)));
    created(&sync.create(&watch("c", 0), now(5))); // did not ask
    created(&sync.create(&notify("d", 2), now(5))); // behind
    apply(&mut sync, &[record(6, vec![put("b", "6")])], now(6));
    let ticked = sync.progress_tick(now(6));
    let notified: Vec<&WatchOutput> = sent(&ticked);
    assert_eq!(
        notified,
        [&WatchOutput::Progress { watch_id: idle, revision: Revision(6) }],
        "the busy one was sent events since the last tick"
    );
    assert!(sent(&sync.progress_tick(full(6))).is_empty(), "a stream over its budget is skipped");
    let notified: Vec<WatchOutput> = sent(&sync.progress_tick(now(6))).into_iter().cloned().collect();
    let progress = |watch_id| WatchOutput::Progress { watch_id, revision: Revision(6) };
    assert_eq!(notified, vec![progress(idle), progress(busy)]);
}

#[test]
fn a_watcher_that_fell_behind_after_a_read_was_planned_waits_for_the_next_read() {
    let mut sync = stream();
    let old = created(&sync.create(&watch("a", 3), now(5)));
    let live = created(&sync.create(&watch("b", 0), now(5)));
    // While the read of 3..=5 is under way, the stream is full at revision 6: `live` falls behind.
    apply(&mut sync, &[record(6, vec![put("b", "6")])], full(6));
    assert_eq!(sync.state(live), Some(WatcherState::Behind { next: Revision(6) }));
    let effects = sync.history_read(&batch(3, 5, vec![record(4, vec![put("a", "4"), put("b", "4")])]), now(6));
    assert_eq!(revisions(&effects, old), vec![vec![4]]);
    assert!(revisions(&effects, live).is_empty(), "revision 4 is below what it wants: never sent twice");
    assert_eq!(reads(&effects), vec![HistoryRequest { from: Revision(6), to: Revision(6), want_prev: false }]);
}

#[test]
fn a_watcher_wanting_prev_kv_skips_a_batch_read_without_it() {
    let mut sync = stream();
    let plain = created(&sync.create(&watch("a", 3), now(5)));
    let prev_kv = EventFilter { prev_kv: true, ..EventFilter::default() };
    let read = sync.create(&WatchCreate { filter: prev_kv, ..watch("a", 3) }, now(5));
    let with_prev = created(&read);
    assert!(reads(&read).is_empty(), "a read is under way already");
    let effects = sync.history_read(&batch(3, 5, vec![record(4, vec![put("a", "4")])]), now(5));
    assert_eq!(revisions(&effects, plain), vec![vec![4]]);
    assert!(revisions(&effects, with_prev).is_empty());
    assert_eq!(reads(&effects), vec![HistoryRequest { from: Revision(3), to: Revision(5), want_prev: true }]);
}

#[test]
fn each_revision_goes_in_one_response_split_only_for_a_fragment_watcher() {
    let mut sync = StreamSync::new(Limits { buffer_bytes: 1 << 20, fragment_bytes: 60 }, IDENTITY);
    let whole = created(&sync.create(&watch_range("a", "\0", 0), now(5)));
    let split = WatchCreate { fragment: true, ..watch_range("a", "\0", 0) };
    let split = created(&sync.create(&split, now(5)));
    let txn = record(6, vec![put("a", "0123456789"), put("b", "0123456789"), put("c", "0123456789")]);
    let effects = apply(&mut sync, &[txn], now(6));
    assert_eq!(revisions(&effects, whole), vec![vec![6, 6, 6]]);
    let parts = event_responses(&effects, split);
    assert!(parts.len() > 1);
    assert!(parts[..parts.len() - 1].iter().all(|p| p.1) && !parts[parts.len() - 1].1);
    assert_eq!(parts.iter().map(|p| p.0.len()).sum::<usize>(), 3);
}

#[test]
fn a_future_start_revision_waits_for_that_revision() {
    let mut sync = stream();
    let id = created(&sync.create(&watch("a", 8), now(5)));
    assert!(
        revisions(&apply(&mut sync, &[record(6, vec![put("a", "6")]), record(7, vec![put("a", "7")])], now(7)), id)
            .is_empty()
    );
    assert_eq!(revisions(&apply(&mut sync, &[record(8, vec![put("a", "8")])], now(8)), id), vec![vec![8]]);
}

#[test]
fn cancel_answers_once_and_unindexes() {
    let mut sync = stream();
    let id = created(&sync.create(&watch("a", 0), now(5)));
    let effects = sync.cancel(id, now(7));
    assert!(effects.iter().any(|e| matches!(e, Effect::Unindex { watch_id, .. } if *watch_id == id)));
    let answer = sent(&effects)[0];
    assert_eq!(*answer, WatchOutput::Canceled { watch_id: id, revision: Revision(7) });
    assert!(sync.cancel(id, now(7)).is_empty(), "an id that is not watching gets no answer");
    assert!(revisions(&apply(&mut sync, &[record(8, vec![put("a", "8")])], now(8)), id).is_empty());
}

#[test]
fn route_sorts_a_groups_revisions_by_stream_and_skips_what_the_shard_applied() {
    let mut index = WatcherIndex::default();
    index.insert(&KeySpan::from_etcd(b"a", b""), WatcherKey { stream: 1, watch_id: WatchId(0) });
    index.insert(&KeySpan::from_etcd(b"a", b"c"), WatcherKey { stream: 2, watch_id: WatchId(4) });
    index.insert(&KeySpan::from_etcd(b"b", b""), WatcherKey { stream: 2, watch_id: WatchId(3) });
    let records = vec![
        record(5, vec![put("a", "5")]),
        record(6, vec![put("b", "6"), put("a", "6")]),
        LogRecord { revision: Revision(6), sub: 1, events: vec![LogEvent::LeaseGrant { id: 1, ttl: 5 }] },
        record(7, vec![put("z", "7")]),
    ];
    let prevs: Vec<Vec<Option<KeyValue>>> = records.iter().map(|r| vec![None; r.events.len()]).collect();
    let routed = route(&index, &records, &prevs, Revision(5));
    let summary: Vec<String> = routed
        .iter()
        .flat_map(|(stream, revisions)| {
            revisions.iter().map(move |r| format!("{stream}@{}: {:?}", r.revision, r.watchers))
        })
        .collect();
    assert_eq!(summary, vec!["1@6: [(0, [1])]", "2@6: [(3, [0]), (4, [0, 1])]"], "by stream, then watch id");
}
