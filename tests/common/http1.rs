//! A minimal HTTP/1.1 client for the tests of the client port's HTTP face: one request per
//! connection (`Connection: close`), bodies by length or chunked, every wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer: status code, lower-cased headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `method path` with `body` to `endpoint` (`host:port`) and reads the whole answer.
pub fn request(endpoint: &str, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(endpoint).expect("connect");
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).expect("read timeout");
    stream.set_write_timeout(Some(REQUEST_TIMEOUT)).expect("write timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body).expect("send body");
    read_answer(&mut BufReader::new(stream))
}

/// Sends a streaming call and reads the first `lines` newline-separated JSON objects of its chunked
/// answer (then drops the connection).
pub fn stream_lines(endpoint: &str, path: &str, body: &[u8], lines: usize) -> Vec<serde_json::Value> {
    let mut stream = JsonStream::open(endpoint, path, body);
    (0..lines).map(|_| stream.next_line()).collect()
}

/// The answer of a streaming call, read one JSON line at a time as it arrives.
pub struct JsonStream {
    reader: BufReader<TcpStream>,
    /// Bytes of a chunk read and not yet a whole line.
    pending: Vec<u8>,
    /// Lines read and not yet taken.
    lines: std::collections::VecDeque<serde_json::Value>,
}

impl JsonStream {
    /// Sends `body` to streaming call `path` and reads the answer's head.
    pub fn open(endpoint: &str, path: &str, body: &[u8]) -> JsonStream {
        let mut stream = TcpStream::connect(endpoint).expect("connect");
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).expect("read timeout");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("send head");
        stream.write_all(body).expect("send body");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).expect("status or header line");
            if line.trim_end().is_empty() {
                break;
            }
        }
        JsonStream { reader, pending: Vec::new(), lines: Default::default() }
    }

    /// The next JSON line (waits for it, at most the request timeout).
    pub fn next_line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        while self.lines.is_empty() {
            line.clear();
            self.reader.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).expect("chunk");
            self.pending.extend_from_slice(&chunk[..size]);
            while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let text: Vec<u8> = self.pending.drain(..=end).collect();
                self.lines.push_back(serde_json::from_slice(&text).expect("a JSON line"));
            }
        }
        self.lines.pop_front().expect("a line")
    }
}

fn read_answer(reader: &mut impl BufRead) -> Answer {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("header");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut answer = Answer { status, headers, body: Vec::new() };
    if answer.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).expect("chunk size");
            if size == 0 {
                break; // trailers, if any, are left unread: the connection closes
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            answer.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = answer.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        answer.body.resize(length, 0);
        reader.read_exact(&mut answer.body).expect("body");
    } else {
        reader.read_to_end(&mut answer.body).expect("body to the end");
    }
    answer
}
