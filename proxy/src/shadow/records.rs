//! Input formats: HTTP request records from nginx JSON access logs, Envoy JSON access logs, HAR
//! files and JSON lines of `{host, path, method, headers, body}`, all turned into [`Record`]s.
//!
//! Line formats are read line by line with a bounded line length (memory does not grow with the
//! file); a HAR file is one JSON document and is read whole. A record that cannot be understood
//! is a [`BadRecord`] naming the file and the line (or HAR entry); reading goes on.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Longest accepted line (an access log line with a logged request body).
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// The format of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Decide from the file's first record.
    Auto,
    /// nginx `log_format ... escape=json` with nginx variable names.
    Nginx,
    /// Envoy JSON access log (`json_format`) with Envoy's field names.
    Envoy,
    /// HAR 1.2 (one JSON document).
    Har,
    /// JSON lines of `{host, path, method, headers, body}`.
    Jsonl,
}

impl Format {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Nginx => "nginx",
            Format::Envoy => "envoy",
            Format::Har => "har",
            Format::Jsonl => "jsonl",
        }
    }
}

/// One HTTP request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Destination: the Host header / authority as sent (may carry a port), lower-cased.
    pub host: String,
    /// Request method.
    pub method: String,
    /// Path with the query string.
    pub path: String,
    /// Request headers, names lower-cased. Empty values are dropped.
    pub headers: Vec<(String, String)>,
    /// The request body, when logged.
    pub body: Option<Body>,
}

/// A logged request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// As text (access logs, HAR `postData.text`).
    Text(String),
    /// Already JSON (a JSON-lines record whose `body` is an object or array).
    Json(Value),
}

/// A record that could not be read.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BadRecord {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (or HAR entry) number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Reads every record of `path`, calling `each` with the record (or why it is bad) and its
/// 1-based line (HAR: entry) number. Errors only when the file cannot be read or its format
/// cannot be told.
pub fn read_file(
    path: &Path,
    format: Format,
    each: &mut dyn FnMut(usize, std::result::Result<Record, String>),
) -> Result<Format> {
    let open = || {
        std::fs::File::open(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut reader = std::io::BufReader::with_capacity(256 << 10, open()?);
    let format = match format {
        Format::Auto => detect(path)?,
        f => f,
    };
    if format == Format::Har {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
        read_har(path, &text, each)?;
        return Ok(format);
    }
    let mut lines = Lines::new(reader);
    while let Some((n, line)) = lines.next_line().map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })? {
        let record = line.and_then(|l| {
            let l = l.trim();
            if l.is_empty() {
                return Err(String::new());
            }
            parse_line(format, l)
        });
        match record {
            Err(m) if m.is_empty() => {} // blank line
            r => each(n, r),
        }
    }
    Ok(format)
}

/// Looks at the first non-empty line without consuming it.
/// Reads the file's first non-empty line in full (a separate handle: nothing is consumed).
fn detect(path: &Path) -> Result<Format> {
    if path.extension().and_then(|e| e.to_str()) == Some("har") {
        return Ok(Format::Har);
    }
    let err = |message: String| Error::Scan {
        path: path.to_owned(),
        message,
    };
    let io = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut lines = Lines::new(std::io::BufReader::new(file));
    let first = loop {
        match lines.next_line().map_err(io)? {
            // An empty file has no records in any format.
            None => return Ok(Format::Jsonl),
            Some((_, Err(m))) => return Err(err(format!("line 1: {m}"))),
            Some((_, Ok(l))) if l.trim().is_empty() => continue,
            Some((_, Ok(l))) => break l.trim().to_owned(),
        }
    };
    let first = first.as_str();
    match serde_json::from_str::<Value>(first) {
        Ok(Value::Object(m)) => detect_keys(&m).ok_or_else(|| {
            err(format!(
                "cannot tell the format from the first record (keys: {}); pass --format",
                m.keys().take(8).cloned().collect::<Vec<_>>().join(", ")
            ))
        }),
        Ok(_) => Err(err(
            "the first record is not a JSON object; pass --format".into()
        )),
        // A pretty-printed JSON document: a HAR file.
        Err(_) if first.starts_with('{') => Ok(Format::Har),
        Err(e) => Err(err(format!(
            "line 1 is not JSON ({e}); expected a JSON access log, HAR or JSON lines"
        ))),
    }
}

fn detect_keys(m: &Map<String, Value>) -> Option<Format> {
    let has = |k: &str| m.contains_key(k);
    if m.get("log").is_some_and(Value::is_object) {
        Some(Format::Har)
    } else if has("request_method") || has("request_uri") || has("time_local") || has("request") {
        Some(Format::Nginx)
    } else if has("authority") || has(":authority") || has("response_code") || has("upstream_host")
    {
        Some(Format::Envoy)
    } else if (has("host") || has("url")) && (has("path") || has("method") || has("url")) {
        Some(Format::Jsonl)
    } else {
        None
    }
}

/// Lines of at most [`MAX_LINE_BYTES`]; a longer one is skipped and reported.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    line: usize,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::with_capacity(4096),
            line: 0,
        }
    }

    #[allow(clippy::type_complexity)]
    fn next_line(&mut self) -> std::io::Result<Option<(usize, std::result::Result<&str, String>)>> {
        self.buf.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.len() > MAX_LINE_BYTES && self.buf.last() != Some(&b'\n') {
            // Skip the rest of the over-long line.
            loop {
                let avail = self.reader.fill_buf()?;
                if avail.is_empty() {
                    break;
                }
                if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                    self.reader.consume(i + 1);
                    break;
                }
                let len = avail.len();
                self.reader.consume(len);
            }
            return Ok(Some((
                self.line,
                Err(format!("line longer than {MAX_LINE_BYTES} bytes: skipped")),
            )));
        }
        let line = std::str::from_utf8(&self.buf).map_err(|e| format!("not UTF-8: {e}"));
        Ok(Some((self.line, line)))
    }
}

/// Parses one line of a line format.
pub fn parse_line(format: Format, line: &str) -> std::result::Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(m) = value else {
        return Err("not a JSON object".into());
    };
    match format {
        Format::Nginx => from_nginx(m),
        Format::Envoy => from_envoy(m),
        Format::Jsonl | Format::Auto => from_jsonl(m),
        Format::Har => Err("a HAR file is not read line by line".into()),
    }
}

/// A logged string value: nginx logs "" and Envoy "-" for "not set".
fn logged(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) if !s.is_empty() && s != "-" => Some(s),
        _ => None,
    }
}

fn required<'a>(m: &'a Map<String, Value>, keys: &[&str]) -> std::result::Result<&'a str, String> {
    keys.iter()
        .find_map(|k| logged(m.get(*k)))
        .ok_or_else(|| format!("missing field {}", keys.join(" or ")))
}

fn push_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    if !value.is_empty() && value != "-" {
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
    }
}

/// `request_headers`: an object of name -> value (or list of values).
fn header_object(headers: &mut Vec<(String, String)>, v: Option<&Value>) {
    if let Some(Value::Object(h)) = v {
        for (k, v) in h {
            match v {
                Value::String(s) => push_header(headers, k, s),
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .for_each(|s| push_header(headers, k, s)),
                _ => {}
            }
        }
    }
}

fn body_text(v: Option<&Value>) -> Option<Body> {
    logged(v).map(|s| Body::Text(s.to_owned()))
}

fn from_nginx(m: Map<String, Value>) -> std::result::Result<Record, String> {
    let (method, path) = match (
        logged(m.get("request_method")),
        logged(m.get("request_uri")),
    ) {
        (Some(meth), Some(uri)) => (meth.to_owned(), uri.to_owned()),
        (meth, _) => match logged(m.get("request")) {
            // "$request": "POST /mcp HTTP/1.1"
            Some(req) => {
                let mut parts = req.split_ascii_whitespace();
                let meth2 = parts.next().unwrap_or_default();
                let uri = parts
                    .next()
                    .ok_or("request: expected \"METHOD URI PROTOCOL\"")?;
                (meth.unwrap_or(meth2).to_owned(), uri.to_owned())
            }
            None => {
                let meth = meth.ok_or("missing field request_method (or request)")?;
                let uri = required(&m, &["uri"])?;
                let path = match logged(m.get("args")) {
                    Some(args) => format!("{uri}?{args}"),
                    None => uri.to_owned(),
                };
                (meth.to_owned(), path)
            }
        },
    };
    let host = required(&m, &["host", "http_host", "server_name"])?;
    let mut headers = Vec::new();
    for (k, v) in &m {
        if let (Some(name), Value::String(s)) = (k.strip_prefix("http_"), v) {
            push_header(&mut headers, &name.replace('_', "-"), s);
        }
    }
    header_object(&mut headers, m.get("request_headers"));
    Ok(Record {
        host: host.to_ascii_lowercase(),
        method,
        path,
        headers,
        body: body_text(m.get("request_body")),
    })
}

/// Envoy fields that are not request headers.
const ENVOY_FIELDS: &[&str] = &[
    "start_time",
    "method",
    ":method",
    "path",
    ":path",
    "protocol",
    "response_code",
    "response_flags",
    "response_code_details",
    "connection_termination_details",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "request_id",
    "authority",
    ":authority",
    "upstream_host",
    "upstream_cluster",
    "upstream_local_address",
    "downstream_local_address",
    "downstream_remote_address",
    "requested_server_name",
    "route_name",
    "upstream_transport_failure_reason",
    "request_body",
    "request_headers",
    "x_envoy_original_path",
];

fn from_envoy(m: Map<String, Value>) -> std::result::Result<Record, String> {
    let method = required(&m, &["method", ":method"])?;
    let path = required(&m, &["x_envoy_original_path", "path", ":path"])?;
    let host = required(&m, &["authority", ":authority", "host"])?;
    let mut headers = Vec::new();
    for (k, v) in &m {
        if let Value::String(s) = v
            && !ENVOY_FIELDS.contains(&k.as_str())
        {
            push_header(&mut headers, &k.replace('_', "-"), s);
        }
    }
    header_object(&mut headers, m.get("request_headers"));
    Ok(Record {
        host: host.to_ascii_lowercase(),
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body: body_text(m.get("request_body")),
    })
}

fn from_jsonl(mut m: Map<String, Value>) -> std::result::Result<Record, String> {
    let (host, path) = match (logged(m.get("host")), logged(m.get("path"))) {
        (Some(h), Some(p)) => (h.to_owned(), p.to_owned()),
        (h, p) => {
            let url = logged(m.get("url")).ok_or("missing field host and path (or url)")?;
            let (uh, up) = split_url(url)?;
            (
                h.map(str::to_owned).unwrap_or(uh),
                p.map(str::to_owned).unwrap_or(up),
            )
        }
    };
    let method = required(&m, &["method"])?.to_owned();
    let mut headers = Vec::new();
    match m.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(_)) => header_object(&mut headers, m.get("headers")),
        Some(Value::Array(list)) => {
            for (i, h) in list.iter().enumerate() {
                match h {
                    Value::Object(o) => match (o.get("name"), o.get("value")) {
                        (Some(Value::String(n)), Some(Value::String(v))) => {
                            push_header(&mut headers, n, v)
                        }
                        _ => return Err(format!("headers[{i}]: expected {{name, value}} strings")),
                    },
                    Value::Array(pair) => match pair.as_slice() {
                        [Value::String(n), Value::String(v)] => push_header(&mut headers, n, v),
                        _ => return Err(format!("headers[{i}]: expected [name, value] strings")),
                    },
                    _ => {
                        return Err(format!(
                            "headers[{i}]: expected {{name, value}} or [name, value]"
                        ));
                    }
                }
            }
        }
        Some(_) => return Err("headers: expected an object or a list".into()),
    }
    let body = match m.remove("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(Body::Text(s)),
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(Body::Json(v)),
        Some(_) => return Err("body: expected a string, an object or an array".into()),
    };
    Ok(Record {
        host: host.to_ascii_lowercase(),
        method,
        path,
        headers,
        body,
    })
}

/// `http://host[:port]/path?query` -> (host[:port], /path?query).
fn split_url(url: &str) -> std::result::Result<(String, String), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
    let host = u
        .host_str()
        .ok_or_else(|| format!("url {url:?}: no host"))?;
    let host = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    Ok((host.to_ascii_lowercase(), path))
}

fn read_har(
    path: &Path,
    text: &str,
    each: &mut dyn FnMut(usize, std::result::Result<Record, String>),
) -> Result<()> {
    let err = |message: String| Error::Scan {
        path: path.to_owned(),
        message,
    };
    let doc: Value = serde_json::from_str(text).map_err(|e| err(format!("not a HAR file: {e}")))?;
    let entries = doc
        .get("log")
        .and_then(|l| l.get("entries"))
        .and_then(Value::as_array)
        .ok_or_else(|| err("not a HAR file: no log.entries list".into()))?;
    for (i, entry) in entries.iter().enumerate() {
        each(
            i + 1,
            har_entry(entry).map_err(|m| format!("log.entries[{i}]: {m}")),
        );
    }
    Ok(())
}

fn har_entry(entry: &Value) -> std::result::Result<Record, String> {
    let req = entry.get("request").ok_or("missing request")?;
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .ok_or("request.method: missing")?;
    let url = req
        .get("url")
        .and_then(Value::as_str)
        .ok_or("request.url: missing")?;
    let (mut host, path) = split_url(url).map_err(|m| format!("request.{m}"))?;
    let mut headers = Vec::new();
    if let Some(list) = req.get("headers").and_then(Value::as_array) {
        for h in list {
            if let (Some(n), Some(v)) = (
                h.get("name").and_then(Value::as_str),
                h.get("value").and_then(Value::as_str),
            ) {
                push_header(&mut headers, n, v);
            }
        }
    }
    // The Host header (or HTTP/2 :authority) names the destination when it differs from the
    // address connected to (a reverse proxy, a forward proxy, a pinned IP).
    if let Some((_, h)) = headers
        .iter()
        .find(|(n, _)| n == "host" || n == ":authority")
    {
        host = h.to_ascii_lowercase();
    }
    let body = req
        .get("postData")
        .and_then(|p| p.get("text"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| Body::Text(s.to_owned()));
    Ok(Record {
        host,
        method: method.to_owned(),
        path,
        headers,
        body,
    })
}
