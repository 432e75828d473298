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
    burst_of_watch_creates(0, 1, 9_999).await;
}

/// The same burst spread over a thousand new watch streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_watch_streams_keeps_the_connection() {
    burst_of_watch_creates(0, 1_000, 10).await;
}

/// 30,000 creates on a stream already served: more small frames than h2's whole budget (7 MiB of
/// charges against 4 MiB); the stream's reader takes them as they are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_frame_budget_on_a_served_stream_keeps_the_connection() {
    burst_of_watch_creates(30_000, 0, 0).await;
}

/// Small DATA frames that no reader will take (the request side of a call already answered, here
/// with Unimplemented) are a flood: h2's budget still closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_frames_nobody_reads_still_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_t4(dir.path(), &[]);
    let endpoint = server.endpoint.clone();
    let go_away = tokio::task::spawn_blocking(move || {
        let mut h2 = RawH2::handshake(&endpoint);
        h2.open_call(1, "/etcdserverpb.Auth/Authenticate");
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
