//! What a client connection is held to beyond hyper's HTTP/2 server, enforced by following its
//! frames as the bytes go by ([`GuardedIo`] sits between the socket and hyper): the client must send
//! HTTP/2's preface and first SETTINGS frame within the handshake timeout, and it must respect
//! grpc-go's keepalive enforcement as etcd configures it, or it gets GOAWAY ENHANCE_YOUR_CALM
//! "too_many_pings" and the connection closes. Nothing here buffers or alters what passes.

use std::cell::Cell;
use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::config::{
    Config, GRPC_DEFAULT_KEEPALIVE_INTERVAL_MS, GRPC_DEFAULT_KEEPALIVE_MIN_TIME_MS, GRPC_DEFAULT_KEEPALIVE_TIMEOUT_MS,
};

/// What every connection of a node is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionPolicy {
    /// Time to send the client preface and first SETTINGS frame.
    pub handshake_timeout: Duration,
    /// Least time between a client's pings while it has streams open.
    pub ping_min_time: Duration,
    /// Time without anything received before the server pings the client.
    pub keepalive_interval: Duration,
    /// Time the client has to answer the server's ping.
    pub keepalive_timeout: Duration,
    /// Open connections one core serves at most.
    pub connections_max: usize,
}

impl ConnectionPolicy {
    /// The policy `config` asks for, with zeros read as etcd 3.4 (on grpc-go 1.26) reads them.
    pub fn new(config: &Config) -> ConnectionPolicy {
        let ms = Duration::from_millis;
        let ping_min_time = match config.grpc_keepalive_min_time_ms {
            0 => GRPC_DEFAULT_KEEPALIVE_MIN_TIME_MS,
            t => t,
        };
        let (interval, timeout) = match (config.grpc_keepalive_interval_ms, config.grpc_keepalive_timeout_ms) {
            (0, _) | (_, 0) => (GRPC_DEFAULT_KEEPALIVE_INTERVAL_MS, GRPC_DEFAULT_KEEPALIVE_TIMEOUT_MS),
            both => both,
        };
        ConnectionPolicy {
            handshake_timeout: ms(config.handshake_timeout_ms),
            ping_min_time: ms(ping_min_time),
            keepalive_interval: ms(interval),
            keepalive_timeout: ms(timeout),
            connections_max: config.connections_per_core_max.max(1),
        }
    }
}

/// HTTP/2's connection preface, sent by the client before its first frame.
const CLIENT_PREFACE_BYTES: usize = 24;
const FRAME_HEADER_BYTES: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Follows the frames of one direction of a connection through its bytes, however they are cut.
#[derive(Debug)]
struct FrameCursor {
    /// Bytes still to pass before the first frame (the client's preface).
    preface_left: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    payload_left: usize,
    /// Frames whose every byte has passed.
    frames_done: u64,
}

impl FrameCursor {
    fn new(preface_bytes: usize) -> FrameCursor {
        FrameCursor {
            preface_left: preface_bytes,
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            payload_left: 0,
            frames_done: 0,
        }
    }

    /// Passes `bytes`, calling `on_header` for each frame header completed.
    fn pass(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(FrameHeader)) {
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                if self.payload_left == 0 {
                    self.frames_done += 1;
                }
            } else {
                let n = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == FRAME_HEADER_BYTES {
                    let h = &self.header;
                    self.header_len = 0;
                    self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    if self.payload_left == 0 {
                        self.frames_done += 1;
                    }
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    on_header(FrameHeader { kind: h[3], flags: h[4], stream });
                }
            }
        }
    }

    /// Whether the bytes passed so far end exactly after a frame.
    fn at_frame_boundary(&self) -> bool {
        self.preface_left == 0 && self.header_len == 0 && self.payload_left == 0
    }
}

/// grpc-go's pings allowed without streams: one per 2 hours (`defaultPingTimeout`).
const PING_WITHOUT_STREAMS_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);
/// grpc-go's `maxPingStrikes`: the connection closes at the strike after these.
const PING_STRIKES_MAX: u8 = 2;

/// grpc-go's keepalive enforcement (`http2Server.handlePing`, grpc-go 1.26 as in etcd 3.4, with
/// `PermitWithoutStream` false as etcd sets it): a ping sooner than the minimum time after the
/// previous one (2 h while the client has no stream open) is a strike, unless the server has sent
/// data or headers since, which forgives every strike; the third strike closes the connection.
#[derive(Debug)]
pub struct PingPolicy {
    min_time: Duration,
    last_ping_at: Option<Instant>,
    strikes: u8,
    /// The server sent data or headers since the last ping.
    forgiven: bool,
}

impl PingPolicy {
    pub fn new(min_time: Duration) -> PingPolicy {
        PingPolicy { min_time, last_ping_at: None, strikes: 0, forgiven: false }
    }

    /// The server sent a DATA or HEADERS frame.
    pub fn server_sent_data_or_headers(&mut self) {
        self.forgiven = true;
    }

    /// The client pinged at `now`; true once it has pinged too often.
    pub fn client_pinged(&mut self, now: Instant, has_streams: bool) -> bool {
        let last = self.last_ping_at.replace(now);
        if std::mem::take(&mut self.forgiven) {
            self.strikes = 0;
            return false;
        }
        let allowed = if has_streams { self.min_time } else { PING_WITHOUT_STREAMS_INTERVAL };
        if last.is_some_and(|last| now < last + allowed) {
            self.strikes = self.strikes.saturating_add(1);
        }
        self.strikes > PING_STRIKES_MAX
    }
}

/// What a connection's frames have shown so far.
#[derive(Debug)]
struct ConnectionView {
    inbound: FrameCursor,
    outbound: FrameCursor,
    pings: PingPolicy,
    /// Client streams the server has not finished (sent END_STREAM or a reset on).
    open_streams: HashSet<u32>,
    /// The highest stream the client opened (a GOAWAY's last stream).
    last_client_stream: u32,
}

impl ConnectionView {
    /// Bytes received; true once the client has pinged too often.
    fn received(&mut self, bytes: &[u8], now: Instant) -> bool {
        let mut too_many_pings = false;
        let ConnectionView { inbound, pings, open_streams, last_client_stream, .. } = self;
        inbound.pass(bytes, |frame| match frame.kind {
            HEADERS if frame.stream > *last_client_stream => {
                *last_client_stream = frame.stream;
                open_streams.insert(frame.stream);
            }
            RST_STREAM => {
                open_streams.remove(&frame.stream);
            }
            PING if frame.flags & ACK == 0 => {
                too_many_pings |= pings.client_pinged(now, !open_streams.is_empty());
            }
            _ => {}
        });
        too_many_pings
    }

    /// Bytes sent.
    fn sent(&mut self, bytes: &[u8]) {
        let ConnectionView { outbound, pings, open_streams, .. } = self;
        outbound.pass(bytes, |frame| {
            if matches!(frame.kind, DATA | HEADERS) {
                pings.server_sent_data_or_headers();
            }
            let finished = matches!(frame.kind, DATA | HEADERS) && frame.flags & END_STREAM != 0;
            if finished || frame.kind == RST_STREAM {
                open_streams.remove(&frame.stream);
            }
        });
    }

    /// The GOAWAY that ends a connection whose client pinged too often.
    fn too_many_pings_goaway(&self) -> Vec<u8> {
        let debug = b"too_many_pings";
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + 8 + debug.len());
        frame.extend_from_slice(&((8 + debug.len()) as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&self.last_client_stream.to_be_bytes());
        frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        frame.extend_from_slice(debug);
        frame
    }
}

/// A client socket whose frames are followed and whose client is held to the [`PingPolicy`].
pub struct GuardedIo<T> {
    inner: T,
    view: ConnectionView,
    /// Set once the client's preface and first frame have arrived (the serving task's deadline
    /// checks it).
    handshake_done: Rc<Cell<bool>>,
    /// Closing for too many pings: the GOAWAY still to write (empty once written or when the
    /// server was mid-frame, where no frame can be slipped in).
    closing: Option<(Vec<u8>, usize)>,
}

impl<T> GuardedIo<T> {
    /// Guards `inner`; `handshake_done` becomes true once the handshake has arrived.
    pub fn new(inner: T, ping_min_time: Duration, handshake_done: Rc<Cell<bool>>) -> GuardedIo<T> {
        GuardedIo {
            inner,
            view: ConnectionView {
                inbound: FrameCursor::new(CLIENT_PREFACE_BYTES),
                outbound: FrameCursor::new(0),
                pings: PingPolicy::new(ping_min_time),
                open_streams: HashSet::new(),
                last_client_stream: 0,
            },
            handshake_done,
            closing: None,
        }
    }
}

fn too_many_pings() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the client sent too many pings")
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Starts closing: hyper gets errors from now on, once the GOAWAY is out.
    fn start_closing(&mut self) {
        tracing::info!("a client pinged too often; closing its connection (GOAWAY too_many_pings)");
        let goaway =
            if self.view.outbound.at_frame_boundary() { self.view.too_many_pings_goaway() } else { Vec::new() };
        self.closing = Some((goaway, 0));
    }

    /// Writes what is left of the GOAWAY; then the connection's error.
    fn poll_close_for_pings(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((goaway, written)) = &mut self.closing else { unreachable!("only called while closing") };
        while *written < goaway.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &goaway[*written..])) {
                Ok(0) | Err(_) => return Poll::Ready(too_many_pings()),
                Ok(n) => *written += n,
            }
        }
        let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        Poll::Ready(too_many_pings())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.closing.is_some() {
            return this.poll_close_for_pings(cx).map(Err);
        }
        let read = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.view.received(&buf[..read], Instant::now()) {
            this.start_closing();
            return this.poll_close_for_pings(cx).map(Err);
        }
        if this.view.inbound.frames_done > 0 && !this.handshake_done.get() {
            this.handshake_done.set(true);
        }
        Poll::Ready(Ok(read))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.closing.is_some() {
            return this.poll_close_for_pings(cx).map(Err);
        }
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.view.sent(&buf[..written]);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Counts connections refused at the limit and logs them at most once per interval.
#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    last_logged: Option<Instant>,
    /// Refused since the last log line.
    unlogged: u64,
}

impl RefusalLog {
    pub fn new(interval: Duration) -> RefusalLog {
        RefusalLog { interval, last_logged: None, unlogged: 0 }
    }

    /// A connection was refused at `now`; returns how many to report if a line is due.
    pub fn refused(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self.last_logged.is_some_and(|last| now < last + self.interval) {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_are_followed_however_the_bytes_are_cut() {
        let mut bytes = vec![b'P'; CLIENT_PREFACE_BYTES];
        bytes.extend(frame(0x4, 0, 0, &[0; 6]));
        bytes.extend(frame(HEADERS, 0x4, 1, &[1, 2, 3]));
        bytes.extend(frame(PING, 0, 0, &[7; 8]));
        bytes.extend(frame(DATA, END_STREAM, 1, &[]));
        for cut in 1..bytes.len() {
            let mut cursor = FrameCursor::new(CLIENT_PREFACE_BYTES);
            let mut seen = Vec::new();
            for chunk in bytes.chunks(cut) {
                cursor.pass(chunk, |h| seen.push((h.kind, h.stream)));
            }
            assert_eq!(seen, vec![(0x4, 0), (HEADERS, 1), (PING, 0), (DATA, 1)], "chunks of {cut}");
            assert_eq!(cursor.frames_done, 4);
            assert!(cursor.at_frame_boundary());
        }
        let mut cursor = FrameCursor::new(CLIENT_PREFACE_BYTES);
        cursor.pass(&bytes[..CLIENT_PREFACE_BYTES + 12], |_| {});
        assert_eq!(cursor.frames_done, 0, "a SETTINGS frame cut short is not there yet");
        assert!(!cursor.at_frame_boundary());
    }

    #[test]
    fn pings_follow_grpc_gos_strikes() {
        let min = Duration::from_secs(5);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // With streams: the first ping is free, then three quick ones close the connection.
        let mut p = PingPolicy::new(min);
        assert!(!p.client_pinged(at(0), true));
        assert!(!p.client_pinged(at(1), true));
        assert!(!p.client_pinged(at(2), true));
        assert!(p.client_pinged(at(3), true), "the third strike");
        // Pings at the minimum time are fine forever.
        let mut p = PingPolicy::new(min);
        assert!((0..20).all(|i| !p.client_pinged(at(5 * i), true)));
        // Data or headers sent in between forgive every strike.
        let mut p = PingPolicy::new(min);
        for i in 0..20 {
            p.server_sent_data_or_headers();
            assert!(!p.client_pinged(at(i), true));
            assert!(!p.client_pinged(at(i), true), "one strike after the forgiven ping");
        }
        // Without streams, pings closer than 2 hours are strikes.
        let mut p = PingPolicy::new(min);
        assert!(!p.client_pinged(at(0), false));
        assert!(!p.client_pinged(at(60), false));
        assert!(!p.client_pinged(at(120), false));
        assert!(p.client_pinged(at(180), false));
    }

    #[test]
    fn open_streams_end_when_the_server_finishes_them() {
        let mut view = ConnectionView {
            inbound: FrameCursor::new(0),
            outbound: FrameCursor::new(0),
            pings: PingPolicy::new(Duration::from_secs(5)),
            open_streams: HashSet::new(),
            last_client_stream: 0,
        };
        let now = Instant::now();
        assert!(!view.received(&frame(HEADERS, 0x4, 1, &[]), now));
        assert!(!view.received(&frame(HEADERS, 0x4 | END_STREAM, 3, &[]), now));
        assert_eq!(view.open_streams.len(), 2);
        view.sent(&frame(HEADERS, 0x4 | END_STREAM, 3, &[]));
        assert_eq!(view.open_streams, HashSet::from([1]));
        view.sent(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        assert!(view.open_streams.is_empty());
        assert_eq!(view.last_client_stream, 3);
        let goaway = view.too_many_pings_goaway();
        assert_eq!(&goaway[3..5], &[GOAWAY, 0]);
        assert_eq!(&goaway[9..13], &3u32.to_be_bytes());
        assert_eq!(&goaway[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
        assert_eq!(&goaway[17..], b"too_many_pings");
    }

    #[test]
    fn refusals_are_logged_at_most_once_per_interval_with_their_count() {
        let mut log = RefusalLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(log.refused(t0), Some(1));
        assert_eq!(log.refused(t0 + Duration::from_millis(10)), None);
        assert_eq!(log.refused(t0 + Duration::from_millis(500)), None);
        assert_eq!(log.refused(t0 + Duration::from_millis(1000)), Some(3));
    }
}
