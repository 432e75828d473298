//! HTTP/2 connections at their limits, driven frame by frame (tests/common/raw_h2.rs): bursts of
//! small frames that a legitimate client sends and floods that must still be cut off.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Server;
use common::raw_h2::{self, DATA, ENHANCE_YOUR_CALM, HEADERS, RawH2, grpc_message, grpc_messages};
use prost::Message;
use t4::proto::etcdserverpb::watch_request::RequestUnion;
use t4::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};

/// How long a step may take before the test gives up (generous: the machine may be busy).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn create(key: &str) -> Vec<u8> {
    let create = WatchCreateRequest { key: key.into(), ..Default::default() };
    WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }.encode_to_vec()
}

/// Held by every test here for its whole run, so they run one at a time: the bursts measure how
/// the server keeps up with a client while it is resumed (`Stopped`), and a second server under test
/// on the same two cores made that a race (the served stream's reader fell behind h2's read of the
/// burst about once in six suite runs).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stops a process until dropped (SIGSTOP/SIGCONT): what a busy machine does to a server, made
/// deterministic. Everything written meanwhile waits in the kernel and is read at once.
struct Stopped(i32);

impl Stopped {
    fn new(server: &Server) -> Stopped {
        let pid = server.pid() as i32;
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Reads watch responses (on any stream) until `want` of them satisfy `count`, failing on a
/// GOAWAY, a reset, an ended stream or a closed connection. `pending` holds each stream's partial
/// message.
fn read_watch_responses(
    h2: &mut RawH2,
    pending: &mut HashMap<u32, Vec<u8>>,
    want: usize,
    count: impl Fn(&WatchResponse) -> usize,
) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut seen = 0;
    while seen < want {
        let frame = h2.next_frame(deadline, true).unwrap_or_else(|e| panic!("after {seen} of {want}: {e:?}"));
        assert!(frame.go_away().is_none(), "after {seen} of {want}: {:?}", frame.go_away());
        assert_ne!(frame.kind, raw_h2::RST_STREAM, "after {seen} of {want}: stream {} was reset", frame.stream);
        if frame.kind == DATA {
            for message in grpc_messages(pending.entry(frame.stream).or_default(), &frame.payload) {
                seen += count(&WatchResponse::decode(&message[..]).expect("a WatchResponse"));
            }
        }
        if frame.kind == HEADERS && frame.flags & raw_h2::END_STREAM != 0 {
            panic!("after {seen} of {want}: watch stream {} ended", frame.stream);
        }
    }
}

/// Writes `served_creates` creates on a watch stream the server already serves, then `streams` new
/// Watch calls with `creates_per_stream` creates each, every create in its own DATA frame, while
/// the server is stopped; returns once the server has answered them all and one put has reached
/// every watch.
async fn burst_of_watch_creates(served_creates: usize, streams: u32, creates_per_stream: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let endpoint = server.endpoint.clone();
    let (mut h2, mut pending) = tokio::task::spawn_blocking(move || {
        // One watch before the burst: the connection is up and a stream is being served.
        let mut h2 = RawH2::handshake(&endpoint);
        h2.open_call(1, "/etcdserverpb.Watch/Watch");
        h2.write(&raw_h2::frame(DATA, 0, 1, &grpc_message(&create("hot"))));
        let mut pending = HashMap::new();
        read_watch_responses(&mut h2, &mut pending, 1, |r| usize::from(r.created));
        (h2, pending)
    })
    .await
    .unwrap();

    let stopped = Stopped::new(&server);
    let mut burst = Vec::new();
    for _ in 0..served_creates {
        burst.extend(raw_h2::frame(DATA, 0, 1, &grpc_message(&create("hot"))));
    }
    for stream in (0..streams).map(|i| 3 + 2 * i) {
        h2.open_call_into(&mut burst, stream, "/etcdserverpb.Watch/Watch");
        for _ in 0..creates_per_stream {
            burst.extend(raw_h2::frame(DATA, 0, stream, &grpc_message(&create("hot"))));
        }
    }
    h2.write(&burst); // completes: the socket buffers hold it all
    drop(stopped);

    let watches = 1 + served_creates + streams as usize * creates_per_stream;
    let mut client = server.client().await;
    let (mut h2, mut pending) = tokio::task::spawn_blocking(move || {
        read_watch_responses(&mut h2, &mut pending, watches - 1, |r| usize::from(r.created));
        (h2, pending)
    })
    .await
    .unwrap();
    client.put("hot", "v", None).await.unwrap();
    tokio::task::spawn_blocking(move || read_watch_responses(&mut h2, &mut pending, watches, |r| r.events.len()))
        .await
        .unwrap();
}

/// A client creating 10,000 watches back to back on a new stream, each request in its own small
/// DATA frame, all read by the server at once (it was stopped meanwhile): h2 charges each such
/// frame until the stream's reader takes it, and with hyper's 1 MiB connection window closed the
/// connection with GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames" after about 2,000 of them,
/// before the new stream's reader had started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_small_watch_creates_on_a_new_stream_keeps_the_connection() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    burst_of_watch_creates(0, 1, 9_999).await;
}

/// The same burst spread over a thousand new watch streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_watch_streams_keeps_the_connection() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    burst_of_watch_creates(0, 1_000, 10).await;
}

/// 30,000 creates on a stream already served: more small frames than h2's whole budget (7 MiB of
/// charges against 4 MiB); the stream's reader takes them as they are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_frame_budget_on_a_served_stream_keeps_the_connection() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    burst_of_watch_creates(30_000, 0, 0).await;
}

/// Small DATA frames that no reader will take (the request side of a call already answered, here
/// with Unimplemented: a service the node does not have) are a flood: h2's budget still closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_frames_nobody_reads_still_close_the_connection() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let endpoint = server.endpoint.clone();
    let go_away = tokio::task::spawn_blocking(move || {
        let mut h2 = RawH2::handshake(&endpoint);
        h2.open_call(1, "/etcdserverpb.NoSuchService/Call");
        // The answer ends the call; the request side stays open.
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let frame = h2.next_frame(deadline, true).expect("the answer");
            if frame.stream == 1 && (frame.flags & raw_h2::END_STREAM != 0 || frame.kind == raw_h2::RST_STREAM) {
                break;
            }
        }
        let mut flood = Vec::new();
        for _ in 0..20_000 {
            flood.extend(raw_h2::frame(DATA, 0, 1, &[0]));
        }
        // The server may close the connection before it has read it all.
        let _ = std::io::Write::write_all(&mut h2.socket, &flood);
        h2.wait_for_close(Instant::now() + STEP_TIMEOUT, true)
    })
    .await
    .unwrap();
    let go_away = go_away.expect("the server closes the connection").expect("with a GOAWAY");
    assert_eq!(go_away, (ENHANCE_YOUR_CALM, "too_many_data_frames".to_string()));
}

// ---------------------------------------------------------------------------------------------
// Handshake timeout, connection limit, keepalive
// ---------------------------------------------------------------------------------------------

/// Reads the first frame a new connection gets: true if the server speaks (its SETTINGS), false if
/// it closes the connection without a word.
fn served(h2: &mut RawH2) -> bool {
    match h2.next_frame(Instant::now() + STEP_TIMEOUT, true) {
        Ok(frame) => {
            assert_eq!(frame.kind, raw_h2::SETTINGS, "a server starts with its SETTINGS");
            true
        }
        Err(raw_h2::Ended::Closed) => false,
        Err(raw_h2::Ended::TimedOut) => panic!("the server neither spoke nor closed the connection"),
    }
}

/// Runs a Range on a new stream of an established connection and waits for its end.
fn range_call(h2: &mut RawH2, stream: u32) {
    h2.open_call(stream, "/etcdserverpb.KV/Range");
    let range = t4::proto::etcdserverpb::RangeRequest { key: b"k".to_vec(), ..Default::default() };
    h2.write(&raw_h2::frame(DATA, raw_h2::END_STREAM, stream, &grpc_message(&range.encode_to_vec())));
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let frame = h2.next_frame(deadline, true).expect("the Range answer");
        assert!(frame.go_away().is_none(), "{:?}", frame.go_away());
        if frame.stream == stream && frame.kind == HEADERS && frame.flags & raw_h2::END_STREAM != 0 {
            return;
        }
    }
}

/// A connection that sends nothing, or half of HTTP/2's preface, is closed once the handshake
/// timeout passes; one that completed its handshake before is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_do_not_complete_the_handshake_are_closed() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // Long enough that a busy machine still reads the complete handshake in time.
    let server = Server::start_t4(dir.path(), &["--handshake-timeout-ms", "1000"]);
    let endpoint = server.endpoint.clone();
    tokio::task::spawn_blocking(move || {
        let mut complete = RawH2::handshake(&endpoint);
        assert!(served(&mut complete));
        let mut silent = RawH2::connect(&endpoint);
        let mut half = RawH2::connect(&endpoint);
        half.write(&raw_h2::PREFACE[..12]);
        for (name, h2) in [("silent", &mut silent), ("half a preface", &mut half)] {
            let closed = h2.wait_for_close(Instant::now() + STEP_TIMEOUT, true);
            assert!(closed.is_some(), "{name}: still open");
        }
        // Both were opened after `complete`, so its handshake deadline has passed too.
        range_call(&mut complete, 1);
    })
    .await
    .unwrap();
}

/// With a limit of 2 connections (one core), a third is closed as it arrives, and once one of the
/// two closes, a new one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_until_one_closes() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &["--cores", "1", "--connections-per-core-max", "2"]);
    let endpoint = server.endpoint.clone();
    tokio::task::spawn_blocking(move || {
        let mut first = RawH2::handshake(&endpoint);
        let mut second = RawH2::handshake(&endpoint);
        assert!(served(&mut first) && served(&mut second));
        let mut third = RawH2::connect(&endpoint);
        assert!(!served(&mut third), "the third connection is refused");
        range_call(&mut second, 1);

        drop(first);
        // The server notices the close on its own time: try until served (each try is answered at
        // once, with SETTINGS or a close).
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut again = loop {
            let mut h2 = RawH2::handshake(&endpoint);
            if served(&mut h2) {
                break h2;
            }
            assert!(Instant::now() < deadline, "no connection served after one closed");
        };
        range_call(&mut again, 1);
        range_call(&mut second, 3);
    })
    .await
    .unwrap();
}

/// Sends `count` PINGs in one write.
fn pings(h2: &mut RawH2, count: u8) {
    let mut bytes = Vec::new();
    for i in 0..count {
        bytes.extend(raw_h2::frame(raw_h2::PING, 0, 0, &[i; 8]));
    }
    h2.write(&bytes);
}

/// A client pinging more often than the keepalive minimum time (5 s) while it has a stream, or at
/// all while it has none, gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings" at its third strike, from
/// etcd (grpc-go) and from T4 alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_pinging_too_often_get_too_many_pings_as_from_etcd() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    for server in [&etcd, &t4] {
        let endpoint = server.endpoint.clone();
        tokio::task::spawn_blocking(move || {
            // With a stream: the created response forgives the first ping; three more are strikes.
            let mut h2 = RawH2::handshake(&endpoint);
            h2.open_call(1, "/etcdserverpb.Watch/Watch");
            h2.write(&raw_h2::frame(DATA, 0, 1, &grpc_message(&create("hot"))));
            read_watch_responses(&mut h2, &mut HashMap::new(), 1, |r| usize::from(r.created));
            pings(&mut h2, 4);
            let go_away = h2.wait_for_close(Instant::now() + STEP_TIMEOUT, true).expect("closed");
            assert_eq!(go_away, Some((ENHANCE_YOUR_CALM, "too_many_pings".to_string())), "{endpoint}, with a stream");

            // Without a stream: the first ping is free, three more are strikes.
            let mut h2 = RawH2::handshake(&endpoint);
            assert!(served(&mut h2));
            pings(&mut h2, 3);
            let deadline = Instant::now() + STEP_TIMEOUT;
            let mut acks = 0;
            while acks < 3 {
                let frame = h2.next_frame(deadline, true).expect("three ping acks");
                acks += usize::from(frame.kind == raw_h2::PING && frame.flags & raw_h2::ACK != 0);
            }
            pings(&mut h2, 1);
            let go_away = h2.wait_for_close(Instant::now() + STEP_TIMEOUT, true).expect("closed");
            assert_eq!(go_away, Some((ENHANCE_YOUR_CALM, "too_many_pings".to_string())), "{endpoint}, no stream");
        })
        .await
        .unwrap();
    }
}

/// Pings that follow data from the server are never strikes: a client pinging after every event
/// it gets keeps its connection, on etcd and on T4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_after_server_data_are_forgiven_as_by_etcd() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (_dirs, etcd, t4) = common::etcd_and_t4().await;
    for server in [&etcd, &t4] {
        let endpoint = server.endpoint.clone();
        let mut h2 = tokio::task::spawn_blocking(move || {
            let mut h2 = RawH2::handshake(&endpoint);
            h2.open_call(1, "/etcdserverpb.Watch/Watch");
            h2.write(&raw_h2::frame(DATA, 0, 1, &grpc_message(&create("hot"))));
            read_watch_responses(&mut h2, &mut HashMap::new(), 1, |r| usize::from(r.created));
            h2
        })
        .await
        .unwrap();
        let mut client = server.client().await;
        for round in 0..6 {
            client.put("hot", format!("v{round}"), None).await.unwrap();
            h2 = tokio::task::spawn_blocking(move || {
                read_watch_responses(&mut h2, &mut HashMap::new(), 1, |r| r.events.len());
                pings(&mut h2, 2); // the second is one strike, forgiven by the next event
                h2
            })
            .await
            .unwrap();
        }
        client.put("hot", "last", None).await.unwrap();
        tokio::task::spawn_blocking(move || read_watch_responses(&mut h2, &mut HashMap::new(), 1, |r| r.events.len()))
            .await
            .unwrap();
    }
}

/// With a short keepalive interval and timeout, T4 pings a quiet client: one that answers stays
/// connected, one that does not is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_quiet_clients_and_drops_those_that_do_not_answer() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // The timeout is long enough that a busy machine still answers in time.
    let args = ["--grpc-keepalive-interval-ms", "200", "--grpc-keepalive-timeout-ms", "2000"];
    let server = Server::start_t4(dir.path(), &args);
    let endpoint = server.endpoint.clone();
    tokio::task::spawn_blocking(move || {
        let mut answering = RawH2::handshake(&endpoint);
        let mut silent = RawH2::handshake(&endpoint);
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut pinged = 0;
        while pinged < 3 {
            let frame = answering.next_frame(deadline, true).expect("the server's pings");
            assert!(frame.go_away().is_none(), "{:?}", frame.go_away());
            pinged += usize::from(frame.kind == raw_h2::PING && frame.flags & raw_h2::ACK == 0);
        }
        let mut saw_ping = false;
        loop {
            match silent.next_frame(deadline, false) {
                Ok(frame) => saw_ping |= frame.kind == raw_h2::PING && frame.flags & raw_h2::ACK == 0,
                Err(raw_h2::Ended::Closed) => break,
                Err(raw_h2::Ended::TimedOut) => panic!("a client that does not answer pings stays connected"),
            }
        }
        assert!(saw_ping, "closed after a ping went unanswered");
        range_call(&mut answering, 1);
    })
    .await
    .unwrap();
}
