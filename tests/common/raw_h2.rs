//! A bare HTTP/2 client over a blocking socket, for tests that need frames no gRPC client sends on
//! purpose: many tiny DATA frames written at once, pings at will, a preface left half sent. It
//! speaks just enough HTTP/2 for a gRPC call (headers are sent, never decoded).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// HTTP/2's ENHANCE_YOUR_CALM error code.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A window large enough that the server never waits for this client to take data.
const WINDOW_BYTES: u32 = 64 * 1024 * 1024;

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's error code and debug data.
    pub fn go_away(&self) -> Option<(u32, String)> {
        if self.kind != GOAWAY || self.payload.len() < 8 {
            return None;
        }
        let code = u32::from_be_bytes(self.payload[4..8].try_into().expect("4 bytes"));
        Some((code, String::from_utf8_lossy(&self.payload[8..]).into_owned()))
    }
}

/// What reading frames ended with.
#[derive(Debug)]
pub enum Ended {
    /// The server closed the connection.
    Closed,
    /// Nothing arrived before the deadline.
    TimedOut,
}

/// The bytes of one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A gRPC message frame (uncompressed) holding `message`.
pub fn grpc_message(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The HPACK block of a gRPC request to `path` (literals only, no Huffman, no dynamic table).
fn grpc_headers(path: &str, authority: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    let mut literal = |index: u8, value: &str| {
        block.push(index); // literal without indexing, name from the static table (index < 15)
        assert!(value.len() < 127, "short values only");
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    };
    literal(0x04, path);
    literal(0x01, authority);
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (static index 31)
    block.push(16);
    block.extend_from_slice(b"application/grpc");
    block.push(0x00); // te: a new name
    block.push(2);
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    block
}

/// A raw HTTP/2 connection.
pub struct RawH2 {
    pub socket: TcpStream,
    buffered: Vec<u8>,
}

impl RawH2 {
    /// Connects to `endpoint` and sends nothing yet.
    pub fn connect(endpoint: &str) -> RawH2 {
        let socket = TcpStream::connect(endpoint).expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        // Room for everything a test writes while the server does not read.
        socket2::SockRef::from(&socket).set_send_buffer_size(4 * 1024 * 1024).expect("send buffer");
        RawH2 { socket, buffered: Vec::new() }
    }

    /// Connects and completes the client's half of the handshake: preface, SETTINGS (a large
    /// initial window) and a large connection window.
    pub fn handshake(endpoint: &str) -> RawH2 {
        let mut h2 = RawH2::connect(endpoint);
        let mut settings = Vec::new();
        settings.extend_from_slice(&0x4u16.to_be_bytes()); // SETTINGS_INITIAL_WINDOW_SIZE
        settings.extend_from_slice(&WINDOW_BYTES.to_be_bytes());
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &settings));
        hello.extend(frame(WINDOW_UPDATE, 0, 0, &(WINDOW_BYTES - 65_535).to_be_bytes()));
        h2.write(&hello);
        h2
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).expect("write to the server");
    }

    /// Opens stream `stream` as a gRPC call to `path`.
    pub fn open_call(&mut self, stream: u32, path: &str) {
        let mut headers = Vec::new();
        self.open_call_into(&mut headers, stream, path);
        self.write(&headers);
    }

    /// Appends to `out` the frame that opens stream `stream` as a gRPC call to `path`.
    pub fn open_call_into(&self, out: &mut Vec<u8>, stream: u32, path: &str) {
        let authority = self.socket.peer_addr().expect("peer").to_string();
        out.extend(frame(HEADERS, END_HEADERS, stream, &grpc_headers(path, &authority)));
    }

    /// Reads the next frame, answering the server's SETTINGS (and, if `answer_pings`, its PINGs)
    /// on the way; `Err` once the server closed the connection or `deadline` passed.
    pub fn next_frame(&mut self, deadline: Instant, answer_pings: bool) -> Result<Frame, Ended> {
        loop {
            if self.buffered.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buffered[0], self.buffered[1], self.buffered[2]]) as usize;
                if self.buffered.len() >= 9 + len {
                    let rest = self.buffered.split_off(9 + len);
                    let raw = std::mem::replace(&mut self.buffered, rest);
                    let stream = u32::from_be_bytes(raw[5..9].try_into().expect("4 bytes")) & 0x7fff_ffff;
                    let frame = Frame { kind: raw[3], flags: raw[4], stream, payload: raw[9..].to_vec() };
                    if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                        self.write(&self::frame(SETTINGS, ACK, 0, &[]));
                    }
                    if answer_pings && frame.kind == PING && frame.flags & ACK == 0 {
                        self.write(&self::frame(PING, ACK, 0, &frame.payload));
                    }
                    return Ok(frame);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Ended::TimedOut);
            }
            self.socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("read timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.socket.read(&mut chunk) {
                Ok(0) => return Err(Ended::Closed),
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err(Ended::Closed),
                Err(e) => panic!("read from the server: {e}"),
            }
        }
    }

    /// Reads frames until the server closes the connection (returning the GOAWAY it sent, if any)
    /// or `deadline` passes (`None`).
    pub fn wait_for_close(&mut self, deadline: Instant, answer_pings: bool) -> Option<Option<(u32, String)>> {
        let mut go_away = None;
        loop {
            match self.next_frame(deadline, answer_pings) {
                Ok(frame) => go_away = frame.go_away().or(go_away),
                Err(Ended::Closed) => return Some(go_away),
                Err(Ended::TimedOut) => return None,
            }
        }
    }
}

/// Splits the gRPC messages out of a stream's DATA payloads (`pending` holds a partial message).
pub fn grpc_messages(pending: &mut Vec<u8>, payload: &[u8]) -> Vec<Vec<u8>> {
    pending.extend_from_slice(payload);
    let mut messages = Vec::new();
    while pending.len() >= 5 {
        let len = u32::from_be_bytes(pending[1..5].try_into().expect("4 bytes")) as usize;
        if pending.len() < 5 + len {
            break;
        }
        messages.push(pending[5..5 + len].to_vec());
        pending.drain(..5 + len);
    }
    messages
}
