//! A small HTTP/1.1 client for the direct path's one request: a `tools/call` POST to a plain
//! `http://` upstream, written and answered in the caller's own task.
//!
//! Why not reqwest, which every other outbound request of the portal uses (and this path too,
//! for `https://` upstreams and when a proxy is configured): reqwest drives each connection in
//! a task of its own, passes every request and its answer between the caller's task and that
//! task through channels, and builds a URL, a header map and a boxed body for each request. On
//! the portal's hottest request that machinery cost more CPU than the portal's own work (see
//! the README's benchmark notes). Here the caller writes the request and reads the answer on a
//! pooled connection itself; nothing is spawned.
//! hyper's `client::conn::http1` driven the same way, in the caller's task with the same pool
//! (`cargo bench -p portcullis-proxy --bench h1`), takes 2.2-2.3 times the instructions per call
//! (about 23k against 10k for a JSON answer), which is why this client is written here.
//!
//! What it does: keep-alive connections in a small LIFO pool (idle ones expire, and each is
//! checked for a close by the server before it is reused); the request in one write; the answer
//! head parsed by `httparse` (the parser hyper uses); bodies framed by `Content-Length`, the
//! chunked transfer coding or the end of the connection; interim 1xx answers skipped.
//! It is strict where framing could be ambiguous: a transfer coding other than chunked,
//! conflicting `Content-Length` values, a malformed chunk, a head or trailer over [`MAX_HEAD`]
//! or more than a few interim answers is an error and the connection is dropped. A connection whose answer was not read to its end is
//! dropped too, which is how a cancelled call tells the upstream its client went away.
//!
//! A reused connection that the server closed just as the request went out (it wrote nothing
//! back) is retried once on a new connection, as hyper does for requests it never saw
//! answered. The server cannot have answered it; a server that ran the tool and then closed
//! without a word would run it twice, which is the known trade-off of every pooled client.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer head (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers in an answer head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4 * 1024;
/// Most idle connections kept per upstream.
const MAX_IDLE: usize = 64;
/// How long an idle connection is kept (as the portal's reqwest pool).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Read buffer of a connection.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// No connection could be made.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// host:port
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// The connection failed during the exchange.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before the answer was complete.
    #[error("connection closed before the answer was complete")]
    Closed,
    /// The answer is not HTTP/1.1 we can read safely.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

fn malformed(m: impl Into<String>) -> H1Error {
    H1Error::Malformed(m.into())
}

/// A connection and what has been read from it but not consumed.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Reads more into the buffer; `Ok(0)` at the end of the connection.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        self.io.read_buf(&mut self.buf).await
    }
}

/// The client of one `http://` endpoint (host, port and path are fixed).
pub struct H1Client {
    host: String,
    port: u16,
    /// The `Host` header.
    authority: HeaderValue,
    /// Path and query of the request target.
    target: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl std::fmt::Debug for H1Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Client")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Environment variables through which reqwest picks up an HTTP proxy; when one is set the
/// request goes through reqwest, which honours it.
const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

impl H1Client {
    /// A client for `url` when it is a plain `http://` URL without credentials and no proxy is
    /// configured in the environment; `None` otherwise (the caller keeps using reqwest).
    pub fn for_url(url: &reqwest::Url, connect_timeout: Duration) -> Option<H1Client> {
        if PROXY_VARS
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
        {
            return None;
        }
        Self::for_url_without_proxy(url, connect_timeout)
    }

    fn for_url_without_proxy(url: &reqwest::Url, connect_timeout: Duration) -> Option<H1Client> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        // As reqwest writes `Host`: the host as in the URL (IPv6 in brackets), the port only
        // when it is not the default.
        let host_in_url = url.host_str()?;
        let host = host_in_url
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host_in_url)
            .to_owned();
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(p) => format!("{host_in_url}:{p}"),
            None => host_in_url.to_owned(),
        };
        let mut target = url.path().to_owned();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        Some(H1Client {
            host,
            port,
            authority: HeaderValue::from_str(&authority).ok()?,
            target,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `body` with `headers` (plus `Host` and `Content-Length`, which are this client's
    /// to write; the same names in `headers` are left out, as are `Connection` and
    /// `Transfer-Encoding`) and reads the answer head. The body is read from the answer.
    pub async fn post(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<H1Response, H1Error> {
        let request = self.encode(headers, body);
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only { None } else { self.checkout() };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connect().await?,
            };
            if let Err(e) = conn.io.write_all(&request).await {
                if reused {
                    fresh_only = true;
                    continue;
                }
                return Err(e.into());
            }
            match read_head(&mut conn).await {
                Ok(head) => return H1Response::new(head, conn, self.clone()),
                // Closed (or reset) before a single byte of the answer: the server dropped the
                // idle connection as the request went out.
                Err(ReadHeadError {
                    nothing_read: true, ..
                }) if reused => {
                    fresh_only = true;
                }
                Err(e) => return Err(e.error),
            }
        }
    }

    fn encode(&self, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.authority.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            if matches!(
                *name,
                http::header::HOST
                    | http::header::CONTENT_LENGTH
                    | http::header::CONNECTION
                    | http::header::TRANSFER_ENCODING
            ) {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        out
    }

    async fn connect(&self) -> Result<Conn, H1Error> {
        let addr = || format!("{}:{}", self.host, self.port);
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let io = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(source)) => {
                return Err(H1Error::Connect {
                    addr: addr(),
                    source,
                });
            }
            Err(_) => {
                return Err(H1Error::Connect {
                    addr: addr(),
                    source: io::Error::new(io::ErrorKind::TimedOut, "timed out"),
                });
            }
        };
        // Without TCP_NODELAY a small request can wait for the peer's delayed ACK.
        io.set_nodelay(true)?;
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            // An idle connection has nothing to say: end of stream means the server closed
            // it, data means it is out of step. Either way it is dropped.
            match conn.io.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    /// Idle connections in the pool.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// The status line and headers of an answer.
struct Head {
    status: StatusCode,
    version: u8,
    headers: HeaderMap,
}

struct ReadHeadError {
    error: H1Error,
    /// The connection ended (or failed) before any byte of the answer arrived.
    nothing_read: bool,
}

impl From<H1Error> for ReadHeadError {
    fn from(error: H1Error) -> Self {
        ReadHeadError {
            error,
            nothing_read: false,
        }
    }
}

/// Most interim (1xx) answers read before the final one.
const MAX_INTERIM: usize = 8;

async fn read_head(conn: &mut Conn) -> Result<Head, ReadHeadError> {
    let mut read_any = !conn.buf.is_empty();
    let mut interim = 0;
    loop {
        if !conn.buf.is_empty() {
            // Uninitialized slots: httparse fills what it uses, and zeroing a hundred headers
            // for every answer cost more than parsing one.
            let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let outcome = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                &conn.buf,
                &mut slots,
            );
            match outcome {
                Ok(httparse::Status::Complete(len)) => {
                    let code = parsed.code.unwrap_or_default();
                    let version = parsed.version.unwrap_or_default();
                    // The values share one copy of the head instead of a copy each.
                    let head = Bytes::copy_from_slice(&conn.buf[..len]);
                    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
                    for h in parsed.headers.iter() {
                        let name = HeaderName::from_bytes(h.name.as_bytes())
                            .map_err(|_| malformed("bad header name"))?;
                        let value = HeaderValue::from_maybe_shared(shared_slice(
                            &head,
                            &conn.buf[..len],
                            h.value,
                        ))
                        .map_err(|_| malformed("bad header value"))?;
                        headers.append(name, value);
                    }
                    conn.buf.advance(len);
                    let status = StatusCode::from_u16(code)
                        .map_err(|_| malformed(format!("status {code}")))?;
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(malformed("unexpected protocol switch").into());
                    }
                    if status.is_informational() {
                        // 100 Continue, 103 Early Hints: the answer follows.
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(malformed("too many interim answers").into());
                        }
                        continue;
                    }
                    return Ok(Head {
                        status,
                        version,
                        headers,
                    });
                }
                Ok(httparse::Status::Partial) if conn.buf.len() > MAX_HEAD => {
                    return Err(malformed(format!("head larger than {MAX_HEAD} bytes")).into());
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(malformed(e.to_string()).into()),
            }
        }
        match conn.fill().await {
            Ok(0) => {
                return Err(ReadHeadError {
                    error: H1Error::Closed,
                    nothing_read: !read_any,
                });
            }
            Ok(_) => read_any = true,
            Err(e) => {
                let reset = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                );
                return Err(ReadHeadError {
                    error: e.into(),
                    nothing_read: reset && !read_any,
                });
            }
        }
    }
}

/// `part` (a slice of `original`) as the same range of `copy`, a copy of `original`; an empty
/// part, which need not point into `original`, is an empty `Bytes`.
fn shared_slice(copy: &Bytes, original: &[u8], part: &[u8]) -> Bytes {
    if part.is_empty() {
        return Bytes::new();
    }
    let start = (part.as_ptr() as usize).wrapping_sub(original.as_ptr() as usize);
    if start < original.len() && original.len() - start >= part.len() {
        copy.slice(start..start + part.len())
    } else {
        // Not a part of `original` (httparse guarantees it is): copied rather than trusted.
        Bytes::copy_from_slice(part)
    }
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding, in the given state.
    Chunked(Chunk),
    /// The body ends with the connection.
    Close,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// Trailer lines, up to an empty line, are next; this many bytes of them were read.
    Trailer(usize),
}

/// An answer whose head has been read; its body is read with [`H1Response::chunk`]. Read to
/// its end, the connection goes back to the pool (unless the answer closes it); dropped
/// before, the connection is closed.
pub struct H1Response {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
    conn: Option<Conn>,
    client: Arc<H1Client>,
}

impl std::fmt::Debug for H1Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Response")
            .field("status", &self.status)
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

/// Whether the comma-separated header values of `name` contain `token` (case ignored).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl H1Response {
    fn new(head: Head, conn: Conn, client: Arc<H1Client>) -> Result<H1Response, H1Error> {
        let Head {
            status,
            version,
            headers,
        } = head;
        // HTTP/1.0 answers are never reused; HTTP/1.1 ones unless they say `close`.
        let mut keep_alive =
            version == 1 && !has_token(&headers, http::header::CONNECTION, "close");
        let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Done
        } else if headers.contains_key(http::header::TRANSFER_ENCODING) {
            let codings: Vec<String> = headers
                .get_all(http::header::TRANSFER_ENCODING)
                .iter()
                .map(|v| v.to_str().map(|s| s.to_owned()))
                .collect::<Result<_, _>>()
                .map_err(|_| malformed("bad Transfer-Encoding"))?;
            let codings: Vec<&str> = codings
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
                return Err(malformed(format!(
                    "transfer coding {codings:?} (only chunked is read)"
                )));
            }
            // With both framings present the message is suspect: read it, never reuse it.
            if headers.contains_key(http::header::CONTENT_LENGTH) {
                keep_alive = false;
            }
            Framing::Chunked(Chunk::Size)
        } else if headers.contains_key(http::header::CONTENT_LENGTH) {
            Framing::Length(content_length(&headers)?)
        } else {
            keep_alive = false;
            Framing::Close
        };
        let mut response = H1Response {
            status,
            headers,
            framing,
            keep_alive,
            conn: Some(conn),
            client,
        };
        if matches!(response.framing, Framing::Done | Framing::Length(0)) {
            response.finish();
        }
        Ok(response)
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body length the answer announced, when it did.
    pub fn content_length(&self) -> Option<u64> {
        content_length(&self.headers).ok()
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, H1Error> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(left) => {
                    if conn.buf.is_empty() && conn.fill().await? == 0 {
                        self.conn = None;
                        return Err(H1Error::Closed);
                    }
                    let take = (conn.buf.len() as u64).min(left) as usize;
                    let piece = conn.buf.split_to(take).freeze();
                    self.framing = Framing::Length(left - take as u64);
                    if left == take as u64 {
                        self.finish();
                    }
                    return Ok(Some(piece));
                }
                Framing::Close => {
                    if conn.buf.is_empty() && conn.fill().await? == 0 {
                        self.framing = Framing::Done;
                        self.conn = None;
                        return Ok(None);
                    }
                    let n = conn.buf.len();
                    return Ok(Some(conn.buf.split_to(n).freeze()));
                }
                Framing::Chunked(Chunk::Size) => {
                    let line = read_line(conn).await?;
                    let size = chunk_size(&line)?;
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailer(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if conn.buf.is_empty() && conn.fill().await? == 0 {
                        self.conn = None;
                        return Err(H1Error::Closed);
                    }
                    let take = (conn.buf.len() as u64).min(left) as usize;
                    let piece = conn.buf.split_to(take).freeze();
                    self.framing = Framing::Chunked(if left == take as u64 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take as u64)
                    });
                    return Ok(Some(piece));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if !read_line(conn).await?.is_empty() {
                        self.conn = None;
                        return Err(malformed("chunk data longer than its size"));
                    }
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailer(read)) => {
                    // Trailer fields are not used; the body ends at the empty line. They are
                    // bounded like a head, so an endless trailer cannot hold the call.
                    let line = read_line(conn).await?;
                    if line.is_empty() {
                        self.framing = Framing::Length(0);
                        self.finish();
                        return Ok(None);
                    }
                    let read = read + line.len() + 2;
                    if read > MAX_HEAD {
                        self.conn = None;
                        return Err(malformed(format!("trailer larger than {MAX_HEAD} bytes")));
                    }
                    self.framing = Framing::Chunked(Chunk::Trailer(read));
                }
            }
        }
    }

    /// The body has been read: the connection goes back to the pool if it may be reused and
    /// nothing unexpected follows the answer.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.client.checkin(conn);
        }
    }
}

/// The single `Content-Length` of `headers` (repeated equal values are one value).
fn content_length(headers: &HeaderMap) -> Result<u64, H1Error> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| malformed("bad Content-Length"))?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(format!("Content-Length {text:?}")));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| malformed(format!("Content-Length {text:?}")))?;
            if found.is_some_and(|f| f != n) {
                return Err(malformed("conflicting Content-Length values"));
            }
            found = Some(n);
        }
    }
    found.ok_or_else(|| malformed("no Content-Length"))
}

/// The next CRLF-terminated line (without the CRLF), at most [`MAX_LINE`] bytes.
async fn read_line(conn: &mut Conn) -> Result<Bytes, H1Error> {
    let mut searched = 0;
    loop {
        if let Some(at) = conn.buf[searched..].windows(2).position(|w| w == b"\r\n") {
            let line = conn.buf.split_to(searched + at).freeze();
            conn.buf.advance(2);
            return Ok(line);
        }
        searched = conn.buf.len().saturating_sub(1);
        if conn.buf.len() > MAX_LINE {
            return Err(malformed("chunk line too long"));
        }
        if conn.fill().await? == 0 {
            return Err(H1Error::Closed);
        }
    }
}

/// The size of a chunk-size line (`1a` or `1a;ext=1`).
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("bad chunk size"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| malformed("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| malformed("bad chunk size"))
}

#[cfg(test)]
mod tests;
