//! A minimal HTTP/1.1 client and Server-Sent Events reader for the load
//! generator; its streams may also come over HTTP/2 ([`crate::http2`]).
//!
//! Written by hand because the load generator runs on one core against a
//! server on another, and must read faster than the server writes: a
//! general-purpose client (reqwest, eventsource-stream) parses headers into
//! maps and allocates per event, which at 10,000 streams would measure the
//! client instead of the server. Here a stream is one socket, one read
//! buffer, a chunked-encoding decoder and an event splitter that hands out
//! borrowed slices. Only what the load generator needs is understood:
//! `Content-Length`, chunked and close-delimited bodies; the `event`, `id`
//! and `data` fields of SSE (one `data` line per event, as every server
//! under test writes).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Where to connect, and the loopback source addresses to spread
/// connections over (each has its own ephemeral port range).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub sources: Vec<IpAddr>,
    /// The credential every request sends as `Authorization: Bearer`, if any.
    pub bearer: Option<String>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, source_count: usize) -> Self {
        let sources = (0..source_count.max(1))
            .map(|index| IpAddr::from([127, 0, 0, 1 + (index % 250) as u8]))
            .collect();
        Endpoint {
            addr,
            sources,
            bearer: None,
        }
    }

    /// The same endpoint, sending `credential` as a bearer token.
    pub fn with_bearer(mut self, credential: Option<&str>) -> Self {
        self.bearer = credential.map(str::to_owned);
        self
    }

    /// The `Authorization` header line of every request (empty without a credential).
    fn authorization_line(&self) -> String {
        self.bearer
            .as_ref()
            .map(|credential| format!("authorization: Bearer {credential}\r\n"))
            .unwrap_or_default()
    }

    /// Opens connection number `index`, from its source address.
    pub async fn connect(&self, index: usize) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.sources[index % self.sources.len()], 0))?;
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// A whole response to a plain request.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads
/// the whole response.
pub async fn request(endpoint: &Endpoint, method: &str, path: &str, json: Option<&str>) -> io::Result<Response> {
    let mut stream = endpoint.connect(0).await?;
    exchange(&mut stream, endpoint, method, path, json, false).await
}

/// Sends one request on `stream` and reads the whole response; with
/// `keep_alive`, the connection stays open for the next request (the
/// response must then carry its length).
pub async fn exchange(
    stream: &mut TcpStream,
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    json: Option<&str>,
    keep_alive: bool,
) -> io::Result<Response> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: {connection}\r\n{}",
        endpoint.addr,
        endpoint.authorization_line()
    );
    if let Some(json) = json {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            json.len()
        ));
    }
    head.push_str("\r\n");
    if let Some(json) = json {
        head.push_str(json);
    }
    stream.write_all(head.as_bytes()).await?;
    let (raw, (status, framing, body_start)) = read_head(stream, 4096).await?;
    let mut body = Vec::new();
    let mut decoder = Decoder::new(framing);
    let mut done = decoder.feed(&raw[body_start..], &mut body);
    let mut buffer = vec![0u8; 16 * 1024];
    while !done {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        done = decoder.feed(&buffer[..read], &mut body);
    }
    Ok(Response { status, body })
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// Reads until the response head is complete: what was read (the head and
/// any of the body after it) and the parsed head.
async fn read_head(stream: &mut TcpStream, capacity: usize) -> io::Result<(Vec<u8>, (u16, Framing, usize))> {
    let mut raw = Vec::with_capacity(capacity);
    loop {
        if let Some(parsed) = parse_head(&raw)? {
            return Ok((raw, parsed));
        }
        if stream.read_buf(&mut raw).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the head",
            ));
        }
    }
}

/// Parses a response head; `None` until it is complete.
fn parse_head(raw: &[u8]) -> io::Result<Option<(u16, Framing, usize)>> {
    let Some(end) = memmem::find(raw, b"\r\n\r\n") else {
        if raw.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too long"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_ascii_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
    let mut framing = Framing::Close;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            framing = Framing::Length(value.parse().unwrap_or(0));
        }
    }
    if status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok(Some((status, framing, end + 4)))
}

/// Turns the bytes of a body, as they arrive, into its content.
struct Decoder {
    framing: Framing,
    state: ChunkState,
    line: Vec<u8>,
}

enum ChunkState {
    Size,
    Data(usize),
    DataEnd(usize),
    Done,
}

impl Decoder {
    fn new(framing: Framing) -> Self {
        Decoder {
            framing,
            state: if framing == Framing::Length(0) {
                ChunkState::Done
            } else {
                ChunkState::Size
            },
            line: Vec::new(),
        }
    }

    /// Appends the content in `input` to `out`; true once the body is complete.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> bool {
        match self.framing {
            Framing::Close => {
                out.extend_from_slice(input);
                return false;
            }
            Framing::Length(left) => {
                let take = left.min(input.len());
                out.extend_from_slice(&input[..take]);
                self.framing = Framing::Length(left - take);
                return left == take;
            }
            Framing::Chunked => {}
        }
        while !input.is_empty() {
            match &mut self.state {
                ChunkState::Size => {
                    let Some(newline) = memchr::memchr(b'\n', input) else {
                        self.line.extend_from_slice(input);
                        return false;
                    };
                    self.line.extend_from_slice(&input[..newline]);
                    input = &input[newline + 1..];
                    let digits = self
                        .line
                        .iter()
                        .take_while(|byte| byte.is_ascii_hexdigit())
                        .fold(0usize, |size, &byte| {
                            size * 16 + (byte as char).to_digit(16).unwrap_or(0) as usize
                        });
                    self.line.clear();
                    self.state = if digits == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(digits)
                    };
                }
                ChunkState::Data(left) => {
                    let take = (*left).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *left -= take;
                    if *left == 0 {
                        self.state = ChunkState::DataEnd(2);
                    }
                }
                ChunkState::DataEnd(left) => {
                    let take = (*left).min(input.len());
                    input = &input[take..];
                    *left -= take;
                    if *left == 0 {
                        self.state = ChunkState::Size;
                    }
                }
                ChunkState::Done => return true,
            }
        }
        matches!(self.state, ChunkState::Done)
    }
}

/// One event, borrowed from the reader's buffer.
#[derive(Debug)]
pub struct Event<'a> {
    /// `message` when the event had no `event:` field.
    pub name: &'a [u8],
    pub id: Option<u64>,
    pub data: &'a [u8],
}

/// An open SSE response.
pub struct EventStream {
    body: Body,
    /// Decoded body bytes not yet split into events.
    pending: Vec<u8>,
    finished: bool,
}

/// Where a stream's body comes from.
enum Body {
    /// A connection of its own.
    Http1 {
        stream: TcpStream,
        decoder: Decoder,
        read_buffer: Box<[u8]>,
    },
    /// One stream of a shared HTTP/2 connection.
    Http2(h2::RecvStream),
}

/// What opening a stream answered.
pub enum Opened {
    Stream(EventStream),
    /// Any status but 200, with its body.
    Refused(Response),
}

impl EventStream {
    /// Sends `GET path` on connection number `index` and reads the head.
    pub async fn open(
        endpoint: &Endpoint,
        index: usize,
        path: &str,
        last_event_id: Option<u64>,
        read_buffer: usize,
    ) -> io::Result<Opened> {
        let mut stream = endpoint.connect(index).await?;
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n{}",
            endpoint.addr,
            endpoint.authorization_line()
        );
        if let Some(id) = last_event_id {
            head.push_str(&format!("last-event-id: {id}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        let (raw, (status, framing, body_start)) = read_head(&mut stream, read_buffer).await?;
        let mut decoder = Decoder::new(framing);
        let mut pending = Vec::with_capacity(read_buffer);
        let finished = decoder.feed(&raw[body_start..], &mut pending);
        if status != 200 {
            let mut body = pending;
            let mut buffer = vec![0u8; 4096];
            let mut done = finished;
            while !done {
                let read = stream.read(&mut buffer).await?;
                if read == 0 {
                    break;
                }
                done = decoder.feed(&buffer[..read], &mut body);
            }
            return Ok(Opened::Refused(Response { status, body }));
        }
        Ok(Opened::Stream(EventStream {
            body: Body::Http1 {
                stream,
                decoder,
                read_buffer: vec![0u8; read_buffer].into_boxed_slice(),
            },
            pending,
            finished,
        }))
    }

    /// A stream whose body is an HTTP/2 stream's data.
    pub(crate) fn over_http2(body: h2::RecvStream, read_buffer: usize) -> EventStream {
        EventStream {
            body: Body::Http2(body),
            pending: Vec::with_capacity(read_buffer),
            finished: false,
        }
    }

    /// Hands every complete event received so far to `on_event`, with the
    /// time (microseconds since the epoch) its bytes were read; then reads
    /// once more. Returns false once the body has ended and every event in
    /// it was handed out.
    pub async fn next_events(&mut self, mut on_event: impl FnMut(Event<'_>, i64)) -> io::Result<bool> {
        let now = now_micros();
        self.split_events(&mut on_event, now);
        if self.finished {
            return Ok(false);
        }
        self.finished = match &mut self.body {
            Body::Http1 {
                stream,
                decoder,
                read_buffer,
            } => {
                let read = stream.read(read_buffer).await?;
                read == 0 || decoder.feed(&read_buffer[..read], &mut self.pending)
            }
            Body::Http2(body) => !crate::http2::read_data(body, &mut self.pending).await?,
        };
        let now = now_micros();
        self.split_events(&mut on_event, now);
        Ok(!self.finished)
    }

    /// The connection alone, without the buffers: for keeping a finished
    /// response's connection open, as an HTTP/1.1 client with keep-alive
    /// does. None over HTTP/2, whose connections stay open anyway.
    pub fn into_connection(self) -> Option<TcpStream> {
        match self.body {
            Body::Http1 { stream, .. } => Some(stream),
            Body::Http2(_) => None,
        }
    }

    fn split_events(&mut self, on_event: &mut impl FnMut(Event<'_>, i64), now: i64) {
        let mut start = 0;
        while let Some(end) = memmem::find(&self.pending[start..], b"\n\n") {
            let block = &self.pending[start..start + end];
            start += end + 2;
            if let Some(event) = parse_event(block) {
                on_event(event, now);
            }
        }
        if start > 0 {
            self.pending.drain(..start);
        }
    }
}

/// Parses one event block; `None` for comments and `retry:` alone.
fn parse_event(block: &[u8]) -> Option<Event<'_>> {
    let mut name: &[u8] = b"message";
    let mut id = None;
    let mut data = None;
    for line in block.split(|&byte| byte == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b':') {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => name = value,
            b"id" => id = std::str::from_utf8(value).ok().and_then(|id| id.parse().ok()),
            b"data" => data = Some(value),
            _ => {}
        }
    }
    Some(Event { name, id, data: data? })
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_micros() as i64)
        .unwrap_or(0)
}

/// The string value of `"key":"..."` in a flat JSON text (the first one).
pub fn json_str<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let pattern = format!("\"{key}\":\"");
    let start = memmem::find(json, pattern.as_bytes())? + pattern.len();
    let end = memchr::memchr(b'"', &json[start..])?;
    Some(&json[start..start + end])
}

/// The job's `updated_at`, in microseconds since the epoch.
pub fn updated_at_micros(json: &[u8]) -> Option<i64> {
    static FINDER: std::sync::OnceLock<memmem::Finder<'static>> = std::sync::OnceLock::new();
    let finder = FINDER.get_or_init(|| memmem::Finder::new(b"\"updated_at\":\""));
    let start = finder.find(json)? + b"\"updated_at\":\"".len();
    parse_rfc3339_micros(json.get(start..start + 27)?)
}

/// Parses `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, six fractional digits).
pub fn parse_rfc3339_micros(text: &[u8]) -> Option<i64> {
    if text.len() != 27 || text[26] != b'Z' || text[19] != b'.' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        text[range].iter().try_fold(0i64, |value, &byte| {
            byte.is_ascii_digit().then(|| value * 10 + (byte - b'0') as i64)
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, micros) = (number(11..13)?, number(14..16)?, number(17..19)?, number(20..26)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_micros_match_chrono() {
        let text = "2026-11-22T18:00:03.250001Z";
        let expected = chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros();
        assert_eq!(parse_rfc3339_micros(text.as_bytes()), Some(expected));
        let text = "2024-02-29T23:59:59.999999Z";
        let expected = chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros();
        assert_eq!(parse_rfc3339_micros(text.as_bytes()), Some(expected));
    }

    #[test]
    fn chunked_bodies_are_decoded_across_reads() {
        let mut decoder = Decoder::new(Framing::Chunked);
        let mut out = Vec::new();
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        let mut done = false;
        for piece in wire.chunks(3) {
            done = decoder.feed(piece, &mut out);
        }
        assert!(done);
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn events_carry_name_id_and_data() {
        let event = parse_event(b"event: progress\nid: 42\ndata: {\"a\":1}").unwrap();
        assert_eq!(event.name, b"progress");
        assert_eq!(event.id, Some(42));
        assert_eq!(event.data, b"{\"a\":1}");
        assert!(parse_event(b": keep-alive").is_none());
        assert!(parse_event(b"retry: 3000").is_none());
    }
}
