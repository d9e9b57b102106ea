//! The harmless probe: does this HTTP endpoint speak MCP?
//!
//! Per path (`/mcp`, then `/`): one POST of a JSON-RPC `server/discover` carrying the 2026-07-28
//! `_meta` (a read-only request that needs no session and creates none), classified by the
//! answer; if that is not conclusive, one GET with `Accept: text/event-stream` (`/mcp`, `/sse`),
//! which a Streamable HTTP or legacy HTTP+SSE server answers with an event stream. Never
//! `initialize` (no session left behind), never a tool call. Each request is bounded by the
//! timeout, bodies are read up to 64 KiB, redirects are not followed and no proxy is used.
//!
//! Hand-written over reqwest rather than rmcp's client: the probe must classify raw answers
//! (status, headers, a legacy server's "missing session" error, a non-MCP JSON-RPC service's
//! "method not found") that the SDK turns into one opaque connection error. The MCP result
//! itself is parsed with rmcp's `DiscoverResult`.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};

/// Most bytes of an answer the probe reads.
pub const MAX_BODY: usize = 64 * 1024;
/// Paths the POST is tried on.
pub const POST_PATHS: [&str; 2] = ["/mcp", "/"];
/// Paths the GET (event stream) is tried on.
pub const GET_PATHS: [&str; 2] = ["/mcp", "/sse"];
/// The protocol version the probe announces.
pub const PROTOCOL_VERSION: &str = "2026-07-28";
/// JSON-RPC error codes only MCP 2026-07-28 servers send (unsupported protocol version,
/// missing required client capability, header mismatch).
pub const MCP_ERROR_CODES: [i64; 3] = [-32020, -32021, -32022];

/// What the probe concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "camelCase")]
pub enum ProbeOutcome {
    /// It answered like an MCP server.
    Mcp(String),
    /// It asked for OAuth with RFC 9728 protected-resource metadata, as MCP servers do.
    AuthRequired(String),
    /// It answered, and not like an MCP server.
    NotMcp(String),
    /// No conclusion: unreachable, timed out, 403, 5xx.
    Inconclusive(String),
    /// Not probed (no address, or probing disabled).
    NotProbed(String),
}

impl ProbeOutcome {
    /// Whether the probe says (or strongly suggests) MCP.
    pub fn is_mcp(&self) -> bool {
        matches!(self, ProbeOutcome::Mcp(_) | ProbeOutcome::AuthRequired(_))
    }

    /// `mcp`, `authRequired`, `notMcp`, `inconclusive`, `notProbed` (metric label).
    pub fn label(&self) -> &'static str {
        match self {
            ProbeOutcome::Mcp(_) => "mcp",
            ProbeOutcome::AuthRequired(_) => "authRequired",
            ProbeOutcome::NotMcp(_) => "notMcp",
            ProbeOutcome::Inconclusive(_) => "inconclusive",
            ProbeOutcome::NotProbed(_) => "notProbed",
        }
    }

    /// The explanation.
    pub fn detail(&self) -> &str {
        match self {
            ProbeOutcome::Mcp(d)
            | ProbeOutcome::AuthRequired(d)
            | ProbeOutcome::NotMcp(d)
            | ProbeOutcome::Inconclusive(d)
            | ProbeOutcome::NotProbed(d) => d,
        }
    }
}

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.label(), self.detail())
    }
}

/// Decides whether an endpoint speaks MCP. A trait so controller tests can answer without a
/// network; [`HttpShadowProber`] is the real one.
pub trait ShadowProber: Send + Sync {
    /// Probes `base_url` (`http://host:port`, no path).
    fn probe(&self, base_url: String) -> BoxFuture<'static, ProbeOutcome>;
}

/// The real probe over HTTP.
#[derive(Debug, Clone)]
pub struct HttpShadowProber {
    http: reqwest::Client,
}

impl HttpShadowProber {
    /// A prober whose every request is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        crate::probe::install_crypto_provider();
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("portcullis-discovery/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { http }
    }
}

/// The JSON-RPC `server/discover` request the probe sends.
pub fn discover_request() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "server/discover",
        "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
            "io.modelcontextprotocol/clientInfo": {
                "name": "portcullis-discovery",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "io.modelcontextprotocol/clientCapabilities": {},
        }},
    })
}

impl ShadowProber for HttpShadowProber {
    fn probe(&self, base_url: String) -> BoxFuture<'static, ProbeOutcome> {
        let http = self.http.clone();
        Box::pin(async move {
            let base = base_url.trim_end_matches('/');
            let mut first_no: Option<ProbeOutcome> = None;
            let mut last_inconclusive = None;
            for path in POST_PATHS {
                let o = post_discover(&http, &format!("{base}{path}")).await;
                match o {
                    ProbeOutcome::Mcp(_) | ProbeOutcome::AuthRequired(_) => return o,
                    ProbeOutcome::NotMcp(d) => {
                        first_no.get_or_insert(ProbeOutcome::NotMcp(format!("POST {path}: {d}")));
                    }
                    other => last_inconclusive = Some(other),
                }
            }
            for path in GET_PATHS {
                if let Some(o) = get_stream(&http, &format!("{base}{path}")).await {
                    return o;
                }
            }
            first_no
                .or(last_inconclusive)
                .unwrap_or_else(|| ProbeOutcome::Inconclusive("no answer".into()))
        })
    }
}

/// Printable, bounded excerpt of text from the peer (it goes into events and logs).
fn excerpt(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    clean.trim().to_owned()
}

async fn post_discover(http: &reqwest::Client, url: &str) -> ProbeOutcome {
    let req = http
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .header("MCP-Protocol-Version", PROTOCOL_VERSION)
        .header("Mcp-Method", "server/discover")
        .body(discover_request().to_string());
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return ProbeOutcome::Inconclusive(format!("unreachable: {}", error_chain(&e))),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let sse = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = Vec::new();
    // An event stream is read only up to its first event with data.
    let mut events = sse::Decoder::new(MAX_BODY);
    let mut decoded = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY.saturating_sub(body.len());
                let kept = &chunk[..chunk.len().min(room)];
                body.extend_from_slice(kept);
                let first_event = sse
                    && (events.feed(kept, &mut decoded).is_err() || decoded.iter().any(has_data));
                if body.len() >= MAX_BODY || first_event {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) if body.is_empty() => {
                return ProbeOutcome::Inconclusive(format!(
                    "reading the answer: {}",
                    error_chain(&e)
                ));
            }
            Err(_) => break,
        }
    }
    classify(status.as_u16(), &headers, &body, sse)
}

/// The data of the first complete event of an event stream that has any (the shared bounded
/// decoder's rules: CR, LF or CRLF line ends; `data` lines joined with LF).
fn first_sse_data(body: &[u8]) -> Option<String> {
    let mut events = Vec::new();
    // Whatever the decoder refuses, the events completed before are still an answer.
    let _ = sse::Decoder::new(MAX_BODY).feed(body, &mut events);
    events.into_iter().find(has_data).map(|e| e.data)
}

fn has_data(event: &sse::Event) -> bool {
    !event.data.trim().is_empty()
}

/// Classifies one answer to `server/discover`.
pub fn classify(status: u16, headers: &http::HeaderMap, body: &[u8], sse: bool) -> ProbeOutcome {
    if status == 401 {
        let www = headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        return if www.contains("resource_metadata") {
            ProbeOutcome::AuthRequired(
                "401 with RFC 9728 resource_metadata (an OAuth-protected MCP server)".into(),
            )
        } else {
            ProbeOutcome::Inconclusive("401 without protected-resource metadata".into())
        };
    }
    if headers.contains_key("mcp-session-id") {
        return ProbeOutcome::Mcp("answered with an Mcp-Session-Id header".into());
    }
    if status == 501 {
        return ProbeOutcome::NotMcp("HTTP 501: POST not implemented".into());
    }
    if status == 403 || status == 429 || status >= 500 {
        return ProbeOutcome::Inconclusive(format!("HTTP {status}"));
    }
    let json: Option<Value> = if sse {
        first_sse_data(body).and_then(|d| serde_json::from_str(&d).ok())
    } else {
        serde_json::from_slice(body).ok()
    };
    let text = String::from_utf8_lossy(body);
    let Some(v) = json.filter(|v| v.get("jsonrpc").is_some()) else {
        let lower = text.to_ascii_lowercase();
        if (400..500).contains(&status) && lower.contains("session") {
            return ProbeOutcome::Mcp(format!(
                "HTTP {status} asking for an MCP session: {}",
                excerpt(&text)
            ));
        }
        return ProbeOutcome::NotMcp(format!("HTTP {status}, not JSON-RPC"));
    };
    if let Some(result) = v.get("result") {
        return match serde_json::from_value::<rmcp::model::DiscoverResult>(result.clone()) {
            Ok(d) => ProbeOutcome::Mcp(format!(
                "server/discover answered (versions {})",
                d.supported_versions
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(_) if result.get("supportedVersions").is_some() => {
                ProbeOutcome::Mcp("server/discover answered".into())
            }
            Err(_) => {
                ProbeOutcome::NotMcp("JSON-RPC result that is not an MCP discover result".into())
            }
        };
    }
    let Some(err) = v.get("error") else {
        return ProbeOutcome::NotMcp("JSON-RPC without result or error".into());
    };
    let code = err.get("code").and_then(Value::as_i64).unwrap_or_default();
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if MCP_ERROR_CODES.contains(&code)
        || err.pointer("/data/supported").is_some()
        || err.pointer("/data/supportedVersions").is_some()
    {
        return ProbeOutcome::Mcp(format!("MCP protocol error {code}: {}", excerpt(message)));
    }
    let lower = message.to_ascii_lowercase();
    if lower.contains("session")
        || lower.contains("not initialized")
        || lower.contains("initialize")
    {
        return ProbeOutcome::Mcp(format!(
            "legacy MCP (wants a session): {code} {}",
            excerpt(message)
        ));
    }
    ProbeOutcome::NotMcp(format!(
        "JSON-RPC error {code} {} (no MCP method)",
        excerpt(message)
    ))
}

/// One GET asking for an event stream; `Some` only when conclusive (an event stream).
async fn get_stream(http: &reqwest::Client, url: &str) -> Option<ProbeOutcome> {
    let resp = http
        .get(url)
        .header(http::header::ACCEPT, "text/event-stream")
        .header("MCP-Protocol-Version", PROTOCOL_VERSION)
        .send()
        .await
        .ok()?;
    let sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    // Dropping the response closes the stream without reading it.
    (resp.status().is_success() && sse).then(|| {
        ProbeOutcome::Mcp(format!(
            "GET {} answered text/event-stream",
            reqwest::Url::parse(url)
                .map(|u| u.path().to_owned())
                .unwrap_or_default()
        ))
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    excerpt(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_answer(status: u16, body: Value) -> ProbeOutcome {
        classify(
            status,
            &http::HeaderMap::new(),
            body.to_string().as_bytes(),
            false,
        )
    }

    #[test]
    fn a_discover_result_is_mcp_and_any_other_result_is_not() {
        let ok = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "resultType": "complete", "supportedVersions": ["2026-07-28"], "capabilities": {},
            "ttlMs": 0, "cacheScope": "private"}});
        assert!(matches!(json_answer(200, ok), ProbeOutcome::Mcp(_)));
        let other = json!({"jsonrpc": "2.0", "id": 1, "result": {"balance": 3}});
        assert!(matches!(json_answer(200, other), ProbeOutcome::NotMcp(_)));
    }

    #[test]
    fn method_not_found_is_a_json_rpc_service_that_is_not_mcp() {
        let e = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}});
        let o = json_answer(200, e);
        assert!(matches!(o, ProbeOutcome::NotMcp(_)), "{o}");
    }

    #[test]
    fn legacy_session_errors_and_modern_error_codes_are_mcp() {
        let legacy = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}});
        assert!(json_answer(400, legacy).is_mcp());
        let modern = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32020, "message": "x"}});
        assert!(json_answer(400, modern).is_mcp());
    }

    #[test]
    fn an_event_stream_answer_is_parsed_from_its_first_data_line() {
        let body = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"supportedVersions\":[\"2026-07-28\"]}}\r\n\r\n";
        assert!(classify(200, &http::HeaderMap::new(), body, true).is_mcp());
        assert_eq!(first_sse_data(b"data: {\"a\":1}"), None, "incomplete event");
        assert_eq!(
            first_sse_data(b": hello\r\r\ndata:\n\ndata: {\"a\":\rdata: 1}\r\rdata: 2\n\n"),
            Some("{\"a\":\n1}".into()),
            "the first event with data, whatever the line ends"
        );
    }

    #[test]
    fn status_codes_classify_without_a_body() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::WWW_AUTHENTICATE,
            "Bearer resource_metadata=\"https://x/.well-known/oauth-protected-resource\""
                .parse()
                .unwrap(),
        );
        assert!(matches!(
            classify(401, &h, b"", false),
            ProbeOutcome::AuthRequired(_)
        ));
        let none = http::HeaderMap::new();
        assert!(matches!(
            classify(401, &none, b"", false),
            ProbeOutcome::Inconclusive(_)
        ));
        assert!(matches!(
            classify(503, &none, b"", false),
            ProbeOutcome::Inconclusive(_)
        ));
        assert!(matches!(
            classify(404, &none, b"<html>", false),
            ProbeOutcome::NotMcp(_)
        ));
        assert!(matches!(
            classify(501, &none, b"", false),
            ProbeOutcome::NotMcp(_)
        ));
    }

    #[test]
    fn peer_text_in_details_is_bounded_and_printable() {
        let msg = format!("session\n{}", "x".repeat(10_000));
        let e = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": msg}});
        let o = json_answer(400, e);
        assert!(o.detail().len() < 200 && !o.detail().contains('\n'), "{o}");
    }

    #[test]
    fn the_request_is_server_discover_with_the_2026_meta_and_no_tool_call() {
        let r = discover_request();
        assert_eq!(r["method"], "server/discover");
        assert_eq!(
            r["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
    }
}
