//! Watches at scale: many watches on many streams each get exactly their events, and a client that
//! stops reading its watch stream holds up no one (and loses nothing). Every test runs against T4,
//! or against the reference etcd 3.4 with `T4_TEST_REFERENCE=etcd`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Server;
use common::watch_model::{
    Op, Writer, create_request, key_space, mod_revision, model_watch, prefix_end, random_watch, random_write, seen_by,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use t4::proto::etcdserverpb::kv_client::KvClient;
use t4::proto::etcdserverpb::watch_client::WatchClient;
use t4::proto::etcdserverpb::watch_request::RequestUnion;
use t4::proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use t4::proto::mvccpb::{Event, event::EventType};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

/// Each test's overall bound.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Harness (the same model as tests/watch.rs)
// ---------------------------------------------------------------------------------------------

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
}

/// Opens a Watch call whose first request is `first` (queued before the call: etcd sends the
/// response headers only with its first message). Returns the request sender and the responses.
async fn open_stream(
    channel: Channel,
    first: WatchCreateRequest,
    deadline: Instant,
) -> (mpsc::UnboundedSender<WatchRequest>, tonic::Streaming<WatchResponse>) {
    let (requests, queued) = mpsc::unbounded_channel();
    requests.send(create(first)).expect("queue the first request");
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    let responses = timeout_at(deadline, client.watch(UnboundedReceiverStream::new(queued)))
        .await
        .expect("no response headers for a Watch call before the deadline")
        .expect("open a Watch call")
        .into_inner();
    (requests, responses)
}

fn create(request: WatchCreateRequest) -> WatchRequest {
    WatchRequest { request_union: Some(RequestUnion::CreateRequest(request)) }
}

fn revision(r: &WatchResponse) -> i64 {
    r.header.as_ref().expect("a watch response carries a header").revision
}

fn all_events(responses: &[WatchResponse]) -> Vec<Event> {
    responses.iter().flat_map(|r| r.events.iter().cloned()).collect()
}

/// Why `responses` break "no revision split across responses, header revision at least the events'".
fn split_revisions(responses: &[WatchResponse]) -> Option<String> {
    let mut last_seen = 0;
    for r in responses {
        let first = mod_revision(r.events.first()?);
        if first <= last_seen {
            return Some(format!("revision {first} starts a response after revision {last_seen} was seen"));
        }
        last_seen = mod_revision(r.events.last().unwrap());
        if revision(r) < last_seen {
            return Some(format!("header revision {} is below its events' {last_seen}", revision(r)));
        }
    }
    None
}

impl Writer {
    /// The events a watch created with `w` sees from `from` on.
    fn expected(&self, w: &WatchCreateRequest, from: i64) -> Vec<Event> {
        let since: Vec<Event> = self.log.iter().filter(|e| mod_revision(e) >= from).cloned().collect();
        seen_by(&model_watch(w), &since)
    }
}

// ---------------------------------------------------------------------------------------------
// A thousand watchers
// ---------------------------------------------------------------------------------------------

const STREAMS: usize = 10;
const CONNECTIONS: usize = 3;
const WATCHES_PER_STREAM: usize = 100;

/// What one stream's reader hands back: each watch's responses.
type Received = HashMap<i64, Vec<WatchResponse>>;

/// Reads one stream: first the created responses (in request order, with `created_ids`, at
/// `created_revision`), which it reports on `all_created`; then event responses until every watch
/// reached its count in `targets` (which arrive once the writes are done).
async fn read_stream(
    stream: usize,
    mut responses: tonic::Streaming<WatchResponse>,
    created_ids: Vec<i64>,
    created_revision: i64,
    all_created: oneshot::Sender<Vec<i64>>,
    targets: oneshot::Receiver<HashMap<i64, usize>>,
    deadline: Instant,
) -> Result<Received, String> {
    let mut ids = Vec::new();
    let mut received: Received = HashMap::new();
    let mut all_created = Some(all_created);
    let mut targets = Some(targets);
    let mut wanted: Option<HashMap<i64, usize>> = None;
    let count =
        |received: &Received, id: i64| received.get(&id).map_or(0, |rs| rs.iter().map(|r| r.events.len()).sum());
    loop {
        if let Some(wanted) = &wanted
            && wanted.iter().all(|(&id, &n)| count(&received, id) >= n)
        {
            return Ok(received);
        }
        let message = tokio::select! {
            t = async { targets.as_mut().unwrap().await }, if targets.is_some() => {
                targets = None;
                wanted = Some(t.map_err(|_| "the test dropped the targets".to_string())?);
                continue;
            }
            m = timeout_at(deadline, responses.message()) => m,
        };
        let r = match message {
            Err(_) => {
                let missing: Vec<String> = match &wanted {
                    None => vec![format!("{} of {} watches created", ids.len(), created_ids.len())],
                    Some(wanted) => wanted
                        .iter()
                        .filter(|(id, n)| count(&received, **id) < **n)
                        .map(|(id, n)| format!("watch {id}: {} of {n} events", count(&received, *id)))
                        .collect(),
                };
                let shown = &missing[..missing.len().min(5)];
                return Err(format!(
                    "stream {stream}: deadline passed; {} watches short, e.g. {shown:?}",
                    missing.len()
                ));
            }
            Ok(Err(status)) => return Err(format!("stream {stream} failed: {status:?}")),
            Ok(Ok(None)) => return Err(format!("stream {stream} ended")),
            Ok(Ok(Some(r))) => r,
        };
        if r.created {
            let n = ids.len();
            if r.canceled || n >= created_ids.len() || created_ids[n] != r.watch_id {
                return Err(format!("stream {stream}: created response #{n} unexpected (ids {created_ids:?}): {r:?}"));
            }
            if revision(&r) != created_revision {
                return Err(format!("stream {stream}: created at revision {}, not {created_revision}", revision(&r)));
            }
            ids.push(r.watch_id);
            if ids.len() == created_ids.len() {
                let _ = all_created.take().expect("reported once").send(ids.clone());
            }
            continue;
        }
        if r.canceled || r.events.is_empty() || !ids.contains(&r.watch_id) {
            return Err(format!("stream {stream}: unexpected response (watches {ids:?}): {r:?}"));
        }
        let id = r.watch_id;
        received.entry(id).or_default().push(r);
        if let Some(wanted) = &wanted
            && count(&received, id) > wanted[&id]
        {
            return Err(format!("stream {stream}: watch {id} got more than its {} events", wanted[&id]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_on_overlapping_prefixes_each_see_exactly_their_events() {
    let f = start().await;
    let deadline = Instant::now() + DEADLINE;
    let mut rng = ChaCha8Rng::seed_from_u64(0x7a7c4);
    let keys = key_space();
    let mut w = Writer::new(KvClient::new(f.channel().await));

    // History that a third of the watches replay.
    for i in 0..100 {
        let ops = if i < 60 {
            vec![Op::Put(keys[rng.random_range(0..keys.len())].clone(), b"early".to_vec())]
        } else {
            random_write(&mut rng, &keys, i)
        };
        w.write(ops).await;
    }
    let created_revision = w.model.revision;

    // 1,000 watches: ten streams over three connections. Even streams choose their watch ids,
    // odd ones let the server assign them (0, 1, 2, ... in request order).
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(f.channel().await);
    }
    let mut plans: Vec<Vec<(i64, WatchCreateRequest)>> = Vec::new();
    let mut readers = Vec::new();
    let mut created = Vec::new();
    let mut target_senders = Vec::new();
    let mut request_sides = Vec::new();
    for stream in 0..STREAMS {
        let plan: Vec<(i64, WatchCreateRequest)> = (0..WATCHES_PER_STREAM)
            .map(|i| {
                let mut request = create_request(&random_watch(&mut rng, &keys, 2..=created_revision + 1));
                let id = if stream % 2 == 0 { 1000 + 7 * i as i64 } else { i as i64 };
                if stream % 2 == 0 {
                    request.watch_id = id;
                }
                (id, request)
            })
            .collect();
        let (requests, responses) =
            open_stream(connections[stream % CONNECTIONS].clone(), plan[0].1.clone(), deadline).await;
        for (_, request) in &plan[1..] {
            requests.send(create(request.clone())).expect("queue a create request");
        }
        let (created_tx, created_rx) = oneshot::channel();
        let (targets_tx, targets_rx) = oneshot::channel();
        let created_ids = plan.iter().map(|(id, _)| *id).collect();
        readers.push(tokio::spawn(read_stream(
            stream,
            responses,
            created_ids,
            created_revision,
            created_tx,
            targets_rx,
            deadline,
        )));
        created.push(created_rx);
        target_senders.push(targets_tx);
        request_sides.push(requests);
        plans.push(plan);
    }
    for (stream, created) in created.into_iter().enumerate() {
        if timeout_at(deadline, created).await.map_or(true, |r| r.is_err()) {
            let failure = match readers.swap_remove(stream).await {
                Ok(Err(e)) => e,
                other => format!("{other:?}"),
            };
            panic!("stream {stream}: not every watch was created before the deadline: {failure}");
        }
    }

    // Live writes: puts, deletes, range deletes and multi-key txns all over the key space.
    for i in 100..400 {
        w.write(random_write(&mut rng, &keys, i)).await;
    }

    // Each watch's exact expected events, and each stream's counts.
    let mut expected: Vec<HashMap<i64, Vec<Event>>> = Vec::new();
    for (plan, targets) in plans.iter().zip(target_senders) {
        let per_watch: HashMap<i64, Vec<Event>> = plan
            .iter()
            .map(|(id, request)| {
                let from = if request.start_revision == 0 { created_revision + 1 } else { request.start_revision };
                (*id, w.expected(request, from))
            })
            .collect();
        let _ = targets.send(per_watch.iter().map(|(id, events)| (*id, events.len())).collect());
        expected.push(per_watch);
    }
    let total: usize = expected.iter().flat_map(|s| s.values()).map(Vec::len).sum();
    assert!(total > 50_000, "the writes reach many watches ({total} events in all)");

    let mut failures = Vec::new();
    for (stream, reader) in readers.into_iter().enumerate() {
        let received = match timeout_at(deadline + Duration::from_secs(1), reader).await {
            Err(_) => panic!("stream {stream}'s reader did not finish"),
            Ok(joined) => joined.expect("reader task"),
        };
        let received = match received {
            Ok(received) => received,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for (id, want) in &expected[stream] {
            let responses = received.get(id).map_or(&[][..], Vec::as_slice);
            let got = all_events(responses);
            if &got != want {
                let first_difference =
                    got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
                let request = &plans[stream].iter().find(|(i, _)| i == id).unwrap().1;
                failures.push(format!(
                    "stream {stream} watch {id} ({:?}..{:?} from {} filters {:?} prev_kv {}): {} events, expected {}; \
                     first difference at #{first_difference}: got {:?}, expected {:?}",
                    String::from_utf8_lossy(&request.key),
                    String::from_utf8_lossy(&request.range_end),
                    request.start_revision,
                    request.filters,
                    request.prev_kv,
                    got.len(),
                    want.len(),
                    got.get(first_difference),
                    want.get(first_difference),
                ));
            } else if let Some(why) = split_revisions(responses) {
                failures.push(format!("stream {stream} watch {id}: {why}"));
            }
        }
    }
    drop(request_sides);
    assert!(
        failures.is_empty(),
        "{} failures, the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// A stalled stream
// ---------------------------------------------------------------------------------------------

const STALL_PUTS: usize = 20_000;
const STALL_WRITERS: usize = 8;
const STALL_VALUE_BYTES: usize = 1024;

/// Receives event responses on `responses` until `n` events arrived, all for `watch_id`.
async fn receive_events(
    responses: &mut tonic::Streaming<WatchResponse>,
    watch_id: i64,
    n: usize,
    deadline: Instant,
    what: &str,
) -> Vec<WatchResponse> {
    let mut got = Vec::new();
    let mut count = 0;
    while count < n {
        let r = match timeout_at(deadline, responses.message()).await {
            Err(_) => panic!("{what}: {count} of {n} events before the deadline"),
            Ok(Err(status)) => panic!("{what}: the stream failed: {status:?}"),
            Ok(Ok(None)) => panic!("{what}: the stream ended"),
            Ok(Ok(Some(r))) => r,
        };
        assert!(r.watch_id == watch_id && !r.events.is_empty() && !r.canceled, "{what}: unexpected {r:?}");
        count += r.events.len();
        got.push(r);
    }
    assert_eq!(count, n, "{what}: more events than written");
    got
}

/// The (revision, key, value) of each put event, checking it is a put creating its key.
fn puts(what: &str, responses: &[WatchResponse]) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    if let Some(why) = split_revisions(responses) {
        panic!("{what}: {why}");
    }
    all_events(responses)
        .into_iter()
        .map(|e| {
            let kv = e.kv.expect("a kv");
            assert_eq!(
                (e.r#type, kv.create_revision, kv.version),
                (EventType::Put as i32, kv.mod_revision, 1),
                "{what}"
            );
            (kv.mod_revision, kv.key, kv.value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watch_stream_gets_every_event_once_it_resumes() {
    let f = start().await;
    let deadline = Instant::now() + DEADLINE;
    let request = WatchCreateRequest { key: b"/s/".to_vec(), range_end: prefix_end(b"/s/"), ..Default::default() };

    // The stalled stream has a connection to itself: HTTP/2 flow control is per connection too, and
    // this client's unread data must not hold up the other stream's.
    let (_stalled_requests, mut stalled) = open_stream(f.channel().await, request.clone(), deadline).await;
    let created = timeout_at(deadline, stalled.message()).await.expect("created before the deadline").unwrap().unwrap();
    assert!(created.created, "{created:?}");
    let stalled_id = created.watch_id;

    let (_active_requests, mut active) = open_stream(f.channel().await, request.clone(), deadline).await;
    let created = timeout_at(deadline, active.message()).await.expect("created before the deadline").unwrap().unwrap();
    assert!(created.created, "{created:?}");
    let active_id = created.watch_id;
    let active_reader =
        tokio::spawn(
            async move { receive_events(&mut active, active_id, STALL_PUTS, deadline, "the active watch").await },
        );

    // About 20 MiB of events, ten times the client's HTTP/2 stream window and far beyond any
    // reasonable server-side buffer, written by concurrent writers on a third connection.
    let kv = KvClient::new(f.channel().await);
    let mut writers = Vec::new();
    for writer in 0..STALL_WRITERS {
        let mut kv = kv.clone();
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in (writer..STALL_PUTS).step_by(STALL_WRITERS) {
                let key = format!("/s/{i:05}").into_bytes();
                let mut value = format!("{i:05}:").into_bytes();
                value.resize(STALL_VALUE_BYTES, b'a' + (i % 26) as u8);
                let put = PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
                let revision = kv.put(put).await.expect("put").into_inner().header.expect("a header").revision;
                written.push((revision, key, value));
            }
            written
        }));
    }
    let mut written = Vec::new();
    for writer in writers {
        match timeout_at(deadline, writer).await {
            Err(_) => panic!("the writers did not finish before the deadline while a watch stream was stalled"),
            Ok(w) => written.extend(w.expect("writer task")),
        }
    }
    written.sort();
    assert!(written.windows(2).all(|p| p[0].0 < p[1].0), "each put has its own revision");

    // The active watch got everything while the stalled stream has not been read at all.
    let got = match timeout_at(deadline, active_reader).await {
        Err(_) => panic!("the active watch did not finish before the deadline while another stream was stalled"),
        Ok(got) => got.expect("active reader task"),
    };
    assert!(puts("the active watch", &got) == written, "the active watch saw exactly the puts, in order");

    // Now the stalled stream: every event, in order, none twice.
    let got = receive_events(&mut stalled, stalled_id, STALL_PUTS, deadline, "the stalled watch").await;
    let got = puts("the stalled watch", &got);
    if got != written {
        let at = got.iter().zip(&written).position(|(g, w)| g != w).unwrap_or(0);
        panic!(
            "the stalled watch differs from the writes at #{at}: got revision {:?}, expected {:?}",
            got.get(at).map(|p| p.0),
            written.get(at).map(|p| p.0)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Ten thousand watches on one stream
// ---------------------------------------------------------------------------------------------

/// A client creating 10,000 watches back to back on one stream (the case: T4's HTTP/2
/// layer closed the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames" under load;
/// tests/http2_limits.rs makes that load deterministic): every watch is created, one put reaches all
/// of them, and the connection keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watches_on_one_stream_are_all_created_and_fed() {
    const WATCHES: usize = 10_000;
    let fixture = start().await;
    let deadline = Instant::now() + DEADLINE;
    let mut client = fixture.server.client().await;
    let stream = timeout_at(deadline, client.watch("hot", None)).await.expect("in time").expect("open a watch stream");
    let (mut sender, mut responses) = stream.split();
    let creating = tokio::spawn(async move {
        for _ in 1..WATCHES {
            sender.watch("hot", None).await.expect("send a create");
        }
        sender // keeps the stream's sending side open
    });
    let mut created = std::collections::HashSet::new();
    while created.len() < WATCHES {
        let response = timeout_at(deadline, responses.message())
            .await
            .unwrap_or_else(|_| panic!("{} of {WATCHES} created before the deadline", created.len()))
            .unwrap_or_else(|e| panic!("after {} created: {e}", created.len()))
            .expect("the stream stays open");
        assert!(response.created() && !response.canceled(), "{response:?}");
        assert!(created.insert(response.watch_id()), "watch id {} created twice", response.watch_id());
    }
    let _sender = creating.await.expect("all creates sent");

    let put = client.put("hot", "v", None).await.expect("put").header().expect("header").revision();
    let mut fed = std::collections::HashSet::new();
    while fed.len() < WATCHES {
        let response = timeout_at(deadline, responses.message())
            .await
            .unwrap_or_else(|_| panic!("{} of {WATCHES} watches fed before the deadline", fed.len()))
            .unwrap_or_else(|e| panic!("after {} fed: {e}", fed.len()))
            .expect("the stream stays open");
        for event in response.events() {
            assert_eq!(event.kv().expect("a put event").mod_revision(), put);
            assert!(fed.insert(response.watch_id()), "watch {} fed twice", response.watch_id());
        }
    }
    assert_eq!(fed, created);
    // The connection still serves.
    assert_eq!(client.get("hot", None).await.expect("get").kvs()[0].value(), b"v");
}
