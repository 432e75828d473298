//! The Watch service on the wire: what a client sees for each kind of watch request. Every test runs
//! against T4, or against the reference etcd 3.4 with `T4_TEST_REFERENCE=etcd`, so each one pins
//! etcd's behaviour (field by field where the fields matter).
//!
//! Expected events come from a small model of the key space (`Model`), fed by the same writes the
//! test sends; every write checks that the server's revision matches the model's.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Server;
use common::watch_model::{Op, Writer, delete_op, mod_revision, model_watch, put_op, seen_by};
use prost::Message;
use t4::prefix_end;
use t4::proto::etcdserverpb::watch_client::WatchClient;
use t4::proto::etcdserverpb::watch_create_request::FilterType;
use t4::proto::etcdserverpb::watch_request::RequestUnion;
use t4::proto::etcdserverpb::{
    CompactionRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use t4::proto::mvccpb::{Event, KeyValue, event::EventType};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

/// The longest any single receive may take.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// etcd's default `--max-request-bytes` (1.5 MiB) plus the 512 KiB gRPC overhead etcd allows on top:
/// etcd cuts fragments at this size.
const FRAGMENT_LIMIT: usize = 1536 * 1024 + 512 * 1024;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A server under test and its data directory (dropped after the server).
struct Fixture {
    server: Server,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    // The harness blocks while the server starts; keep that off the test's runtime.
    let server = tokio::task::spawn_blocking(move || Server::start_under_test(&path, &[])).await.expect("start server");
    Fixture { server, _dir: dir }
}

impl Fixture {
    async fn channel(&self) -> Channel {
        common::channel(&self.server.endpoint).await.expect("connect")
    }

    /// Opens a watch stream on a new connection with `first` as its first request.
    async fn stream(&self, first: WatchRequest) -> WatchStream {
        WatchStream::open(self.channel().await, first).await
    }

    /// Opens a watch stream with one watch and returns it with the watch's id (after checking the
    /// created response).
    async fn watch(&self, request: WatchCreateRequest) -> (WatchStream, i64) {
        let mut stream = self.stream(create(request)).await;
        let id = stream.expect_created().await;
        (stream, id)
    }

    async fn writer(&self) -> Writer {
        Writer::new(self.server.kv().await)
    }
}

/// One bidirectional Watch call.
struct WatchStream {
    requests: mpsc::UnboundedSender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl WatchStream {
    async fn open(channel: Channel, first: WatchRequest) -> WatchStream {
        // The first request is queued before the call: etcd (grpc-go) sends the response headers only
        // with its first message, so the call would not complete without one.
        let (requests, queued) = mpsc::unbounded_channel();
        requests.send(first).expect("queue the first request");
        let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
        let call = client.watch(UnboundedReceiverStream::new(queued));
        let responses = timeout(RECV_TIMEOUT, call)
            .await
            .expect("no response headers for a Watch call")
            .expect("open a Watch call")
            .into_inner();
        WatchStream { requests, responses }
    }

    fn send(&self, request: WatchRequest) {
        self.requests.send(request).expect("the request side is open");
    }

    async fn recv(&mut self) -> WatchResponse {
        match timeout(RECV_TIMEOUT, self.responses.message()).await {
            Err(_) => panic!("no watch response within {RECV_TIMEOUT:?}"),
            Ok(Err(status)) => panic!("the watch stream failed: {status:?}"),
            Ok(Ok(None)) => panic!("the watch stream ended"),
            Ok(Ok(Some(response))) => response,
        }
    }

    /// Receives a created response for a watch that was accepted and returns its id.
    async fn expect_created(&mut self) -> i64 {
        let r = self.recv().await;
        assert!(r.created && !r.canceled && r.events.is_empty(), "expected a created response, got {r:?}");
        r.watch_id
    }

    /// Sends a create request and returns the accepted watch's id.
    async fn create(&mut self, request: WatchCreateRequest) -> i64 {
        self.send(create(request));
        self.expect_created().await
    }

    /// Receives event responses until each listed watch got its number of events. Anything else (a
    /// response for another id, a response without events, an event beyond a watch's count) fails.
    async fn collect(&mut self, wanted: &[(i64, usize)]) -> HashMap<i64, Vec<WatchResponse>> {
        let mut got: HashMap<i64, Vec<WatchResponse>> = HashMap::new();
        let count = |got: &HashMap<i64, Vec<WatchResponse>>, id: i64| {
            got.get(&id).map_or(0, |rs| rs.iter().map(|r| r.events.len()).sum::<usize>())
        };
        while wanted.iter().any(|&(id, n)| count(&got, id) < n) {
            let r = self.recv().await;
            let Some(&(id, n)) = wanted.iter().find(|(id, _)| *id == r.watch_id) else {
                panic!("a response for watch {} (expected only {wanted:?}): {r:?}", r.watch_id);
            };
            assert!(!r.events.is_empty() && !r.created && !r.canceled, "expected events for watch {id}, got {r:?}");
            got.entry(id).or_default().push(r);
            assert!(count(&got, id) <= n, "watch {id} got more than its {n} events: {:?}", got[&id]);
        }
        got
    }

    /// Receives event responses for one watch until it got `n` events.
    async fn events(&mut self, watch_id: i64, n: usize) -> Vec<WatchResponse> {
        self.collect(&[(watch_id, n)]).await.remove(&watch_id).unwrap_or_default()
    }
}

fn create(request: WatchCreateRequest) -> WatchRequest {
    WatchRequest { request_union: Some(RequestUnion::CreateRequest(request)) }
}

fn cancel(watch_id: i64) -> WatchRequest {
    WatchRequest { request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })) }
}

fn progress() -> WatchRequest {
    WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) }
}

/// A create request for `[key, range_end)` from now (etcd's range conventions for `range_end`).
fn watch_range(key: &[u8], range_end: &[u8]) -> WatchCreateRequest {
    WatchCreateRequest { key: key.to_vec(), range_end: range_end.to_vec(), ..Default::default() }
}

fn watch_key(key: &str) -> WatchCreateRequest {
    watch_range(key.as_bytes(), b"")
}

fn revision(r: &WatchResponse) -> i64 {
    r.header.as_ref().expect("a watch response carries a header").revision
}

fn all_events(responses: &[WatchResponse]) -> Vec<Event> {
    responses.iter().flat_map(|r| r.events.iter().cloned()).collect()
}

/// Checks that no revision's events are split across responses and that each response's header
/// revision is at least its events' revision.
/// (etcd sends replayed history in batches: one response may hold many revisions, with the header at
/// the store's revision when the batch was read, not at its last event's.)
fn assert_revisions_whole(responses: &[WatchResponse]) {
    let mut last_seen = 0;
    for r in responses {
        let revs: Vec<i64> = r.events.iter().map(mod_revision).collect();
        let first = *revs.first().expect("an event response has events");
        assert!(first > last_seen, "revision {first} continues in a later response (or goes back): {responses:?}");
        last_seen = *revs.last().unwrap();
        assert!(revision(r) >= last_seen, "header revision {} is below its events' {last_seen}", revision(r));
    }
}

/// `events` as a watch without prev_kv sees them.
fn plain(events: &[Event]) -> Vec<Event> {
    events.iter().map(|e| Event { prev_kv: None, ..e.clone() }).collect()
}

// ---------------------------------------------------------------------------------------------
// A model of the key space, and the writes that feed both it and the server
// ---------------------------------------------------------------------------------------------

impl Writer {
    async fn put(&mut self, key: &str, value: &str) -> Vec<Event> {
        self.write(vec![put_op(key, value)]).await
    }

    async fn delete(&mut self, key: &str) -> Vec<Event> {
        self.write(vec![delete_op(key)]).await
    }

    async fn compact(&mut self, revision: i64) {
        self.kv.compact(CompactionRequest { revision, physical: true }).await.expect("compact");
    }

    fn revision(&self) -> i64 {
        self.model.revision
    }

    /// The events a watch created with `w` sees from `from` on.
    fn expected(&self, w: &WatchCreateRequest, from: i64) -> Vec<Event> {
        let since: Vec<Event> = self.log.iter().filter(|e| mod_revision(e) >= from).cloned().collect();
        seen_by(&model_watch(w), &since)
    }
}

/// A live event response: one watch, one revision's events, and the header at that revision.
fn assert_live(r: &WatchResponse, watch_id: i64, events: &[Event]) {
    assert_eq!(r.watch_id, watch_id, "{r:?}");
    assert_eq!(r.events, events, "the events of one revision, in one response");
    assert_eq!(revision(r), mod_revision(&events[0]), "a live response's header revision is its events' revision");
    assert!(!r.created && !r.canceled && !r.fragment && r.compact_revision == 0, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Which keys a watch sees
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_watch_sees_only_that_key() {
    let f = start().await;
    let mut w = f.writer().await;
    let (mut s, id) = f.watch(watch_key("k")).await;
    let mut expected = Vec::new();
    for (key, value) in [("j", "1"), ("k", "1"), ("k1", "1"), ("k", "2"), ("k\0", "1"), ("K", "1"), ("k", "3")] {
        let events = w.put(key, value).await;
        if key == "k" {
            expected.push(plain(&events));
        }
    }
    expected.push(plain(&w.delete("k").await));
    let got = s.events(id, expected.len()).await;
    for (r, events) in got.iter().zip(&expected) {
        assert_live(r, id, events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_sees_every_key_under_the_prefix_and_nothing_else() {
    let f = start().await;
    let mut w = f.writer().await;
    let request = watch_range(b"/p/", &prefix_end(b"/p/"));
    assert_eq!(request.range_end, b"/p0");
    let (mut s, id) = f.watch(request.clone()).await;
    for key in ["/p", "/p/", "/o/z", "/p/a", "/p0", "/p/a/b", "/q", "/P/a", "/p/\u{ff}", "/p/z"] {
        w.put(key, "v").await;
    }
    w.delete("/p/a").await;
    w.delete("/p0").await;
    w.put("/p/last", "v").await;
    let expected = w.expected(&request, 0);
    assert_eq!(expected.len(), 7, "the prefix itself, /p/a, /p/a/b, /p/\u{ff}, /p/z, the delete of /p/a, /p/last");
    let got = s.events(id, expected.len()).await;
    assert_eq!(all_events(&got), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_key_watch_sees_every_key_at_or_after_it_and_a_zero_key_from_key_watch_sees_all() {
    let f = start().await;
    let mut w = f.writer().await;
    let from_m = watch_range(b"m", &[0]);
    let everything = watch_range(&[0], &[0]);
    let mut s = f.stream(create(from_m.clone())).await;
    let m_id = s.expect_created().await;
    let all_id = s.create(everything.clone()).await;
    assert_ne!(m_id, all_id);
    for key in ["a", "l\u{7f}", "m", "m\0", "zzz", "\u{7f}\u{7f}", "\0", "M", "n"] {
        w.put(key, "v").await;
    }
    w.delete("a").await;
    w.delete("zzz").await;
    let (want_m, want_all) = (w.expected(&from_m, 0), w.expected(&everything, 0));
    assert_eq!((want_m.len(), want_all.len()), (6, 11));
    let mut got = s.collect(&[(m_id, want_m.len()), (all_id, want_all.len())]).await;
    assert_eq!(all_events(&got.remove(&m_id).unwrap()), want_m);
    assert_eq!(all_events(&got.remove(&all_id).unwrap()), want_all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_watch_sees_the_half_open_range() {
    let f = start().await;
    let mut w = f.writer().await;
    let request = watch_range(b"b", b"d");
    let (mut s, id) = f.watch(request.clone()).await;
    for key in ["a", "b", "az", "bzz", "d", "c", "d0", "B", "c\u{7f}"] {
        w.put(key, "v").await;
    }
    w.delete("d").await;
    w.delete("b").await;
    let expected = w.expected(&request, 0);
    let keys: Vec<&[u8]> = expected.iter().map(|e| e.kv.as_ref().unwrap().key.as_slice()).collect();
    assert_eq!(keys, [&b"b"[..], b"bzz", b"c", b"c\x7f", b"b"]);
    let got = s.events(id, expected.len()).await;
    assert_eq!(all_events(&got), expected);
}

// ---------------------------------------------------------------------------------------------
// Start revisions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_past_revision_replays_history_then_continues_live_without_gap_or_duplicate() {
    let f = start().await;
    let mut w = f.writer().await;
    for i in 0..40 {
        let key = format!("h/{}", i % 5);
        if i % 7 == 6 {
            w.delete(&key).await;
        } else {
            w.put(&key, &format!("old{i}")).await;
        }
        w.put(&format!("other/{i}"), "x").await;
    }
    let request = WatchCreateRequest { start_revision: 20, prev_kv: true, ..watch_range(b"h/", &prefix_end(b"h/")) };
    let past = w.expected(&request, 20).len();
    let (mut s, id) = f.watch(request.clone()).await;
    // Live writes race with the replay: each one is a put to, or the delete of a live key, under h/.
    let live = 40;
    let writer = tokio::spawn(async move {
        for i in 0..live {
            let key = format!("h/{}", i % 6);
            if w.model.live.contains_key(key.as_bytes()) && i % 4 == 3 {
                w.delete(&key).await;
            } else {
                w.put(&key, &format!("new{i}")).await;
            }
        }
        w
    });
    let got = s.events(id, past + live).await;
    let w = timeout(RECV_TIMEOUT, writer).await.expect("the writer finished").expect("the writer");
    assert_eq!(all_events(&got), w.expected(&request, 20), "history from revision 20, then every live event");
    assert_revisions_whole(&got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_revision_zero_starts_after_the_current_revision() {
    let f = start().await;
    let mut w = f.writer().await;
    w.put("k", "before").await;
    w.put("k", "still before").await;
    let (mut s, id) = f.watch(watch_key("k")).await;
    let events = w.put("k", "after").await;
    let got = s.events(id, 1).await;
    assert_live(&got[0], id, &plain(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_future_revision_waits_for_that_revision() {
    let f = start().await;
    let mut w = f.writer().await;
    w.put("k", "0").await;
    let start_revision = w.revision() + 3;
    let request = WatchCreateRequest { start_revision, ..watch_key("k") };
    let (mut s, id) = f.watch(request.clone()).await;
    for i in 1..=5 {
        w.put("k", &i.to_string()).await;
    }
    let expected = w.expected(&request, start_revision);
    assert_eq!(
        expected.iter().map(mod_revision).collect::<Vec<_>>(),
        (start_revision..start_revision + 3).collect::<Vec<_>>()
    );
    let got = s.events(id, 3).await;
    assert_eq!(all_events(&got), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let f = start().await;
    let mut w = f.writer().await;
    for i in 0..5 {
        w.put("k", &i.to_string()).await; // revisions 2..=6
    }
    w.compact(4).await;
    let mut s = f.stream(create(WatchCreateRequest { start_revision: 3, ..watch_key("k") })).await;
    // The watch is created first (header at the current revision) ...
    let created = s.recv().await;
    assert!(created.created && !created.canceled && created.compact_revision == 0, "{created:?}");
    assert_eq!(revision(&created), 6);
    let id = created.watch_id;
    // ... then cancelled. etcd 3.4 sends this response with a header whose revision is 0 (the
    // header is present, its revision unset), no cancel_reason and no events.
    let compacted = s.recv().await;
    assert_eq!(
        (compacted.watch_id, compacted.created, compacted.canceled, compacted.compact_revision, compacted.fragment),
        (id, false, true, 4, false),
        "{compacted:?}"
    );
    assert_eq!(revision(&compacted), 0, "etcd 3.4 leaves the header revision of a compaction cancel at 0");
    assert_eq!((compacted.cancel_reason.as_str(), compacted.events.len()), ("", 0));
    // (etcd keeps the cancelled watch registered on the stream: a later CancelRequest for its id is
    // answered with a second canceled response. Not pinned: no client relies on it.)
    // The stream goes on: a new watch on it works.
    let next = s.create(watch_key("k")).await;
    let events = w.put("k", "after").await;
    assert_live(&s.recv().await, next, &plain(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_exactly_the_compact_revision_is_allowed() {
    let f = start().await;
    let mut w = f.writer().await;
    for i in 0..5 {
        w.put("k", &i.to_string()).await; // revisions 2..=6
    }
    w.compact(4).await;
    let request = WatchCreateRequest { start_revision: 4, ..watch_key("k") };
    let (mut s, id) = f.watch(request.clone()).await;
    w.put("k", "live").await;
    let expected = w.expected(&request, 4);
    assert_eq!(expected.len(), 4, "revisions 4, 5, 6 from history and 7 live");
    let got = s.events(id, expected.len()).await;
    assert_eq!(all_events(&got), expected);
    assert_revisions_whole(&got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_does_not_disturb_a_synced_watcher() {
    let f = start().await;
    let mut w = f.writer().await;
    w.put("c", "0").await;
    let from_now = watch_key("c");
    let from_past = WatchCreateRequest { start_revision: 2, ..watch_key("c") };
    let (mut now, now_id) = f.watch(from_now.clone()).await;
    for i in 1..=3 {
        w.put("c", &i.to_string()).await;
    }
    let (mut past, past_id) = f.watch(from_past.clone()).await;
    assert_eq!(all_events(&now.events(now_id, 3).await), w.expected(&from_now, 3));
    assert_eq!(all_events(&past.events(past_id, 4).await), w.expected(&from_past, 2), "caught up from history");
    w.compact(w.revision()).await;
    let before = w.revision();
    for i in 4..=6 {
        let events = plain(&w.put("c", &i.to_string()).await);
        assert_live(&now.recv().await, now_id, &events);
        assert_live(&past.recv().await, past_id, &events);
    }
    assert_eq!(w.expected(&from_past, before + 1).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// What an event carries
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noput_filter_drops_puts_and_a_revision_of_only_puts_sends_nothing() {
    let f = start().await;
    let mut w = f.writer().await;
    let request = WatchCreateRequest { filters: vec![FilterType::Noput as i32], ..watch_range(b"a", b"z") };
    let (mut s, id) = f.watch(request.clone()).await;
    w.put("a", "1").await;
    let first = w.delete("a").await;
    w.put("b", "1").await;
    w.put("c", "1").await;
    w.write(vec![put_op("d", "1"), put_op("e", "1")]).await;
    let mixed = w.write(vec![put_op("f", "1"), delete_op("b"), put_op("g", "1"), delete_op("c")]).await;
    assert_live(&s.recv().await, id, &plain(&first));
    // The next response is the mixed txn's, holding only its deletes: nothing was sent for the
    // revisions of only puts.
    let deletes: Vec<Event> = plain(&mixed).into_iter().filter(|e| e.r#type == EventType::Delete as i32).collect();
    assert_live(&s.recv().await, id, &deletes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodelete_filter_drops_deletes_and_a_revision_of_only_deletes_sends_nothing() {
    let f = start().await;
    let mut w = f.writer().await;
    for key in ["a", "b", "c", "d"] {
        w.put(key, "0").await;
    }
    let request = WatchCreateRequest { filters: vec![FilterType::Nodelete as i32], ..watch_range(b"a", b"z") };
    let (mut s, id) = f.watch(request.clone()).await;
    w.delete("a").await;
    w.write(vec![Op::Delete(b"b".to_vec(), b"c".to_vec()), delete_op("c")]).await;
    let first = w.put("a", "1").await;
    w.delete("a").await;
    let mixed = w.write(vec![delete_op("d"), put_op("e", "1"), put_op("f", "1")]).await;
    assert_live(&s.recv().await, id, &plain(&first));
    let puts: Vec<Event> = plain(&mixed).into_iter().filter(|e| e.r#type == EventType::Put as i32).collect();
    assert_live(&s.recv().await, id, &puts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prev_kv_carries_the_previous_pair_on_puts_and_deletes() {
    let f = start().await;
    let mut w = f.writer().await;
    let request = WatchCreateRequest { prev_kv: true, ..watch_range(b"k", b"l") };
    let (mut s, id) = f.watch(request).await;
    let created = w.put("k", "v1").await;
    let updated = w.put("k", "v2").await;
    let deleted = w.delete("k").await;
    let recreated = w.put("k", "v3").await;
    let got = s.events(id, 4).await;
    assert_eq!(got[0].events[0].prev_kv, None, "a put that creates the key has no previous pair");
    assert_eq!(got[1].events[0].prev_kv, created[0].kv, "an update carries the whole previous pair");
    assert_eq!(got[2].events[0].prev_kv, updated[0].kv, "a delete carries the whole pair it deleted");
    assert_eq!(got[3].events[0].prev_kv, None, "a put after a delete has no previous pair");
    for (r, events) in got.iter().zip([created, updated, deleted, recreated]) {
        assert_live(r, id, &events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prev_kv_events_carry_no_previous_pair_and_a_delete_carries_only_key_and_mod_revision() {
    let f = start().await;
    let mut w = f.writer().await;
    let (mut s, id) = f.watch(watch_key("k")).await;
    w.put("k", "v1").await;
    w.put("k", "v2").await;
    let deleted = w.delete("k").await;
    let got = s.events(id, 3).await;
    assert!(got.iter().all(|r| r.events[0].prev_kv.is_none()));
    let tombstone = &got[2].events[0];
    assert_eq!(tombstone.r#type, EventType::Delete as i32);
    assert_eq!(
        tombstone.kv,
        Some(KeyValue { key: b"k".to_vec(), mod_revision: mod_revision(&deleted[0]), ..Default::default() }),
        "create_revision, version, value and lease are all unset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_writing_several_keys_yields_one_response_with_its_events_in_operation_order() {
    let f = start().await;
    let mut w = f.writer().await;
    w.put("t/0", "old").await;
    w.put("t/9", "old").await;
    let request = WatchCreateRequest { prev_kv: true, ..watch_range(b"t/", &prefix_end(b"t/")) };
    let (mut s, id) = f.watch(request.clone()).await;
    // Operation order is not key order.
    let ops =
        vec![put_op("t/3", "a"), delete_op("t/9"), put_op("u", "outside"), put_op("t/1", "b"), put_op("t/0", "c")];
    let events = w.write(ops).await;
    let expected = seen_by(&model_watch(&request), &events);
    let keys: Vec<&[u8]> = expected.iter().map(|e| e.kv.as_ref().unwrap().key.as_slice()).collect();
    assert_eq!(keys, [&b"t/3"[..], b"t/9", b"t/1", b"t/0"]);
    assert_live(&s.recv().await, id, &expected);
    // Nothing more came for the txn: the next response is the next write's.
    let next = w.put("t/5", "d").await;
    assert_live(&s.recv().await, id, &next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_range_yields_one_delete_event_per_key_in_key_order_in_one_response() {
    let f = start().await;
    let mut w = f.writer().await;
    for key in ["d/c", "d/a", "d/b", "e"] {
        w.put(key, "v").await;
    }
    let request = WatchCreateRequest { prev_kv: true, ..watch_range(b"d", b"f") };
    let (mut s, id) = f.watch(request.clone()).await;
    let events = w.write(vec![Op::Delete(b"d/".to_vec(), prefix_end(b"d/"))]).await;
    assert_eq!(events.len(), 3);
    let keys: Vec<&[u8]> = events.iter().map(|e| e.kv.as_ref().unwrap().key.as_slice()).collect();
    assert_eq!(keys, [&b"d/a"[..], b"d/b", b"d/c"]);
    assert_live(&s.recv().await, id, &events);
    // Deleting nothing writes no revision and sends no event.
    assert!(w.write(vec![Op::Delete(b"d/".to_vec(), prefix_end(b"d/"))]).await.is_empty());
    let next = w.delete("e").await;
    assert_live(&s.recv().await, id, &next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_larger_than_the_request_limit_is_fragmented_only_for_a_fragment_watch() {
    let f = start().await;
    let mut w = f.writer().await;
    let value = |i: u8| String::from_utf8(vec![b'a' + i; 150 * 1024]).unwrap();
    for i in 0..8u8 {
        w.put(&format!("big/{i}"), &value(i)).await;
    }
    let whole_request = WatchCreateRequest { prev_kv: true, ..watch_range(b"big/", &prefix_end(b"big/")) };
    let fragment_request = WatchCreateRequest { fragment: true, ..whole_request.clone() };
    let (mut fragmented, fragment_id) = f.watch(fragment_request.clone()).await;
    let (mut whole, whole_id) = f.watch(whole_request.clone()).await;
    // One txn rewriting the eight keys: with prev_kv its events come to about 2.4 MB, over the
    // 1.5 MiB request limit plus etcd's 512 KiB gRPC allowance.
    let events = w.write((0..8u8).map(|i| put_op(&format!("big/{i}"), &value(7 - i))).collect()).await;
    let txn_revision = mod_revision(&events[0]);

    let mut parts = Vec::new();
    loop {
        let r = fragmented.recv().await;
        assert!(parts.len() < 8, "more fragments than events");
        let last = !r.fragment;
        parts.push(r);
        if last {
            break;
        }
    }
    assert!(parts.len() >= 2, "the response is split, got one of {} bytes", parts[0].encoded_len());
    for r in &parts {
        assert_eq!((r.watch_id, revision(r)), (fragment_id, txn_revision));
        assert!(!r.created && !r.canceled && !r.events.is_empty());
        assert!(
            r.events.len() == 1 || r.encoded_len() <= FRAGMENT_LIMIT,
            "a fragment of {} events is {} bytes",
            r.events.len(),
            r.encoded_len()
        );
    }
    assert_eq!(
        all_events(&parts),
        seen_by(&model_watch(&fragment_request), &events),
        "the fragments together are the events"
    );

    // A watch that did not ask for fragments gets it all in one response.
    let r = whole.recv().await;
    assert!(r.encoded_len() > FRAGMENT_LIMIT);
    assert!(!r.fragment);
    assert_live(&r, whole_id, &seen_by(&model_watch(&whole_request), &events));
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_created_response_carries_the_current_revision_whatever_the_start_revision() {
    let f = start().await;
    let mut w = f.writer().await;
    for i in 0..4 {
        w.put("k", &i.to_string()).await;
    }
    let current = w.revision();
    let mut s = f.stream(create(watch_key("k"))).await;
    for start_revision in [0, 2, current, current + 10] {
        if start_revision != 0 {
            s.send(create(WatchCreateRequest { start_revision, ..watch_key("other") }));
        }
        let r = s.recv().await;
        assert!(r.created && !r.canceled, "{r:?}");
        assert_eq!(revision(&r), current, "created response of a watch from {start_revision}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_event_response_carries_its_events_revision_in_the_header() {
    let f = start().await;
    let mut w = f.writer().await;
    let (mut s, id) = f.watch(watch_key("k")).await;
    for i in 0..5 {
        w.put("unwatched", &i.to_string()).await;
        let events = w.put("k", &i.to_string()).await;
        w.put("unwatched", "after").await;
        let r = s.recv().await;
        assert_eq!(revision(&r), mod_revision(&events[0]), "not the revision of a later write");
        assert_live(&r, id, &plain(&events));
    }
}

// ---------------------------------------------------------------------------------------------
// Watch ids, cancel and progress
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ids_are_assigned_per_stream_from_zero_skipping_ids_in_use_and_never_reused() {
    let f = start().await;
    let mut w = f.writer().await;
    let mut s = f.stream(create(WatchCreateRequest { watch_id: 1, ..watch_key("a") })).await;
    let mut ids = vec![s.expect_created().await];
    ids.push(s.create(watch_key("b")).await);
    ids.push(s.create(watch_key("c")).await);
    ids.push(s.create(WatchCreateRequest { watch_id: 5, ..watch_key("d") }).await);
    ids.push(s.create(watch_key("e")).await);
    ids.push(s.create(watch_key("f")).await);
    ids.push(s.create(watch_key("g")).await);
    assert_eq!(ids, [1, 0, 2, 5, 3, 4, 6], "assigned ids count from 0 and skip the client's 1 and 5");
    // Each id gets its own key's events.
    for (key, id) in ["a", "b", "c", "d", "e", "f", "g"].into_iter().zip(&ids) {
        let events = w.put(key, "v").await;
        assert_live(&s.recv().await, *id, &plain(&events));
    }
    // A cancelled id is not assigned again, but the client may choose it again.
    s.send(cancel(0));
    assert!(s.recv().await.canceled);
    assert_eq!(s.create(watch_key("h")).await, 7);
    s.send(cancel(1));
    assert!(s.recv().await.canceled);
    assert_eq!(s.create(WatchCreateRequest { watch_id: 1, ..watch_key("i") }).await, 1);
    let events = w.put("i", "v").await;
    assert_live(&s.recv().await, 1, &plain(&events));
    // Ids are per stream: another stream on the same connection starts again at 0.
    let mut other = WatchStream::open(f.channel().await, create(watch_key("a"))).await;
    assert_eq!(other.expect_created().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_client_chosen_watch_id_is_refused_with_a_created_and_canceled_response() {
    let f = start().await;
    let mut w = f.writer().await;
    w.put("x", "v").await;
    let (mut s, id) = f.watch(WatchCreateRequest { watch_id: 7, ..watch_key("a") }).await;
    assert_eq!(id, 7);
    s.send(create(WatchCreateRequest { watch_id: 7, ..watch_key("b") }));
    let refused = s.recv().await;
    assert_eq!(
        (refused.watch_id, refused.created, refused.canceled, refused.cancel_reason.as_str()),
        (-1, true, true, "mvcc: duplicate watch ID provided on the WatchStream"),
        "{refused:?}"
    );
    assert_eq!(revision(&refused), w.revision());
    // The first watch 7 is untouched, and nothing watches b.
    w.put("b", "v").await;
    let events = w.put("a", "v").await;
    assert_live(&s.recv().await, 7, &plain(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_key_range_is_refused_with_a_created_and_canceled_response() {
    let f = start().await;
    let mut w = f.writer().await;
    w.put("x", "v").await;
    let mut s = f.stream(create(watch_range(b"z", b"a"))).await;
    s.send(create(watch_range(b"m", b"m")));
    for _ in 0..2 {
        let refused = s.recv().await;
        assert_eq!(
            (refused.watch_id, refused.created, refused.canceled, refused.cancel_reason.as_str()),
            (-1, true, true, "mvcc: watcher range is empty"),
            "{refused:?}"
        );
        assert_eq!(revision(&refused), w.revision());
    }
    // A refused watch takes no id.
    assert_eq!(s.create(watch_key("k")).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_answers_canceled_at_the_current_revision_and_stops_only_that_watch() {
    let f = start().await;
    let mut w = f.writer().await;
    let mut s = f.stream(create(watch_key("k"))).await;
    let cancelled = s.expect_created().await;
    let kept = s.create(watch_range(b"k", b"l")).await;
    w.put("k", "1").await;
    s.collect(&[(cancelled, 1), (kept, 1)]).await;
    s.send(cancel(cancelled));
    let r = s.recv().await;
    assert_eq!((r.watch_id, r.canceled, r.created, r.events.len()), (cancelled, true, false, 0), "{r:?}");
    assert_eq!((r.cancel_reason.as_str(), revision(&r)), ("", w.revision()));
    // Writes to the key reach only the other watch.
    let first = w.put("k", "2").await;
    let second = w.put("k", "3").await;
    assert_live(&s.recv().await, kept, &plain(&first));
    assert_live(&s.recv().await, kept, &plain(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_unknown_watch_id_gets_no_response() {
    let f = start().await;
    let (mut s, id) = f.watch(watch_key("k")).await;
    s.send(cancel(id + 42));
    s.send(cancel(-1));
    // The next response is the answer to the next request.
    s.send(create(watch_key("j")));
    let r = s.recv().await;
    assert!(r.created && !r.canceled, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_request_gets_one_response_for_the_stream_with_watch_id_minus_one_and_the_current_revision() {
    let f = start().await;
    let mut w = f.writer().await;
    let mut s = f.stream(create(watch_key("a"))).await;
    let a = s.expect_created().await;
    let b = s.create(watch_key("b")).await;
    let c = s.create(WatchCreateRequest { watch_id: 9, ..watch_key("c") }).await;
    for key in ["a", "b", "c", "unwatched"] {
        w.put(key, "v").await;
    }
    s.collect(&[(a, 1), (b, 1), (c, 1)]).await;
    // All watches are up to date: a progress request gets one response, not one per watch. (etcd
    // 3.4.23 answers at once with the store's current revision even while a watch on the stream is
    // still replaying history, so its answer can overtake events; this test only asks when every
    // watch has caught up.)
    s.send(progress());
    let r = s.recv().await;
    assert_eq!(
        (r.watch_id, r.created, r.canceled, r.compact_revision, r.fragment, r.events.len()),
        (-1, false, false, 0, false, 0),
        "{r:?}"
    );
    assert_eq!(revision(&r), w.revision(), "the current revision, past every watch's last event");
    let next = s.create(watch_key("d")).await;
    assert_eq!(next, 2, "the response after the progress response answers the next request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_request_on_a_stream_without_watches_is_answered() {
    let f = start().await;
    let mut w = f.writer().await;
    w.put("k", "v").await;
    let mut s = f.stream(progress()).await;
    let r = s.recv().await;
    assert_eq!((r.watch_id, r.created, r.canceled, r.events.len()), (-1, false, false, 0), "{r:?}");
    assert_eq!(revision(&r), w.revision());
}

/// T4 only: etcd's interval is fixed at 10 minutes unless configured, so this starts T4 with a short
/// one. An idle watcher that asked for progress notifications gets empty responses at the current
/// revision; one that did not ask gets none; events in an interval replace that interval's
/// notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watchers_that_asked_get_progress_notifications_at_the_current_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let server =
        tokio::task::spawn_blocking(move || Server::start_t4(&path, &["--watch-progress-notify-interval-ms", "200"]))
            .await
            .expect("start t4");
    let fixture = Fixture { server, _dir: dir };
    let mut writer = fixture.writer().await;
    writer.put("/progress/a", "1").await;
    let revision = writer.revision();
    let request = |progress_notify| WatchCreateRequest {
        key: b"/progress/".to_vec(),
        range_end: b"/progress0".to_vec(),
        progress_notify,
        ..Default::default()
    };
    let (mut stream, notified) = fixture.watch(request(true)).await;
    let quiet = stream.create(request(false)).await;
    for _ in 0..3 {
        let r = stream.recv().await;
        assert_eq!(r.watch_id, notified, "only the watch that asked is notified: {r:?}");
        assert!(r.events.is_empty() && !r.created && !r.canceled, "{r:?}");
        assert_eq!(r.header.unwrap().revision, revision);
    }
    assert_ne!(notified, quiet);
}
