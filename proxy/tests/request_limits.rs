//! The portal's request and session limits, in process over real sockets:
//! `spec.limits.bodyReadTimeoutSeconds` (a body sent a byte at a time gets 408 and is cut while
//! others are served, on `/mcp` and on the LLM gateway) and `spec.limits.maxSessions` (the least
//! recently used idle legacy session is evicted and restored by its next request; a session
//! with a request in flight is never evicted) and `spec.limits.sessionIdleTimeoutSeconds` (a
//! session its client stopped using leaves memory, however often the portal notifies it).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy::portal::Portal;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn manifests(limits: &str) -> String {
    manifests_with(limits, "[]")
}

/// `tools`: the McpServer's tool overrides.
fn manifests_with(limits: &str, tools: &str) -> String {
    let demo = common::demo_binary();
    format!(
        r#"
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {{name: tickets}}
spec: {{deployment: {{image: unused, command: ["{demo}"], args: [tickets, --stdio]}}, tools: {tools}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpPortal
metadata: {{name: demo}}
spec:
  public: true
  servers: {{names: [tickets]}}
  limits: {limits}
"#
    )
}

struct Running {
    url: String,
    portal: Arc<Portal>,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(limits: &str) -> Running {
    let shutdown = CancellationToken::new();
    let (portal, url) = common::serve_portal(&manifests(limits), &shutdown, async |portal| {
        !portal.catalog().tools.is_empty()
    })
    .await;
    Running {
        url,
        portal,
        shutdown,
    }
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

async fn post(
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// The JSON-RPC message of a JSON or SSE response.
fn message(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or(Value::Null)
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// A modern `tools/list`, answered with tools.
async fn list_tools(url: &str) {
    let (status, _, text) = post(
        url,
        LIST,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        message(&text)["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{text}"
    );
}

/// Sends `head` and then a declared 200-byte body a byte every 100 ms (20 s in all); returns
/// the server's answer and when it came, or `None` if the whole body was taken.
async fn slow_body(address: &str, head: &str) -> Option<(String, Duration)> {
    let mut s = TcpStream::connect(address).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for _ in 0..200 {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0; 4096];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    if answer.is_empty() {
        return None;
    }
    // The rest of the answer (the body), until the server closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer)).await;
    Some((
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    ))
}

fn head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}Content-Length: 200\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_gets_408_and_is_cut_while_others_are_served() {
    let portal = start("{bodyReadTimeoutSeconds: 1}").await;
    let address = addr(&portal.url);
    for (path, extra, kind) in [
        ("/mcp", "", "mcp"),
        // The hot request takes its own way to the same body read.
        (
            "/mcp",
            "Mcp-Method: tools/call\r\nMcp-Protocol-Version: 2026-07-28\r\n",
            "mcp hot",
        ),
        ("/llm/openai/v1/chat/completions", "", "llm"),
    ] {
        let slow = tokio::spawn({
            let (address, head) = (address.clone(), head(path, extra));
            async move { slow_body(&address, &head).await }
        });
        // Meanwhile, others are served.
        for _ in 0..3 {
            list_tools(&portal.url).await;
        }
        let (answer, after) = slow
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{kind}: the slow body was read whole, for 20 s"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{kind}: {answer}");
        assert!(
            answer.contains("bodyReadTimeoutSeconds"),
            "{kind}: the answer names the limit: {answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{kind}: {answer}"
        );
        assert!(
            after < Duration::from_secs(10),
            "{kind}: cut after {after:?}"
        );
    }
    // A body sent at once is served as before.
    list_tools(&portal.url).await;
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// A legacy session: initialize + notifications/initialized; its id.
async fn open_session(url: &str) -> Result<String, (u16, String)> {
    let (status, headers, text) = post(url, INIT, &[]).await;
    if status != 200 {
        return Err((status, text));
    }
    let sid = headers["mcp-session-id"].to_str().unwrap().to_owned();
    let (status, _, text) = post(
        url,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &session_headers(&sid),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    Ok(sid)
}

fn session_headers(sid: &str) -> [(&str, &str); 2] {
    [
        ("mcp-session-id", sid),
        ("mcp-protocol-version", "2025-11-25"),
    ]
}

/// `tools/list` in session `sid`: the number of tools.
async fn session_list(url: &str, sid: &str) -> usize {
    let (status, _, text) = post(
        url,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
        &session_headers(sid),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    message(&text)["result"]["tools"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_sessions_the_least_recently_used_idle_session_is_evicted_and_restored_on_use() {
    let portal = start("{maxSessions: 2}").await;
    let m = &portal.portal.metrics.sessions;
    let a = open_session(&portal.url).await.unwrap();
    let b = open_session(&portal.url).await.unwrap();
    assert_eq!((m.open.get(), m.evicted.get()), (2, 0));
    // `a` used last: `b` is the least recently used and goes when `c` comes.
    assert!(session_list(&portal.url, &a).await > 0);
    let c = open_session(&portal.url).await.unwrap();
    assert_eq!((m.open.get(), m.evicted.get()), (2, 1));
    // `b`'s id still works: its next request restores it (evicting `a`, now the oldest).
    assert!(session_list(&portal.url, &b).await > 0);
    assert_eq!((m.open.get(), m.evicted.get()), (2, 2));
    for sid in [&a, &b, &c, &a] {
        assert!(session_list(&portal.url, sid).await > 0);
    }
    assert_eq!(m.open.get(), 2);
    assert_eq!(m.refused.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_a_request_in_flight_is_not_evicted_and_a_full_replica_refuses() {
    let portal = start("{maxSessions: 2}").await;
    let m = &portal.portal.metrics.sessions;
    let http = reqwest::Client::new();
    // Two sessions, each with a GET stream open (a request in flight for as long as it is).
    let mut streams = Vec::new();
    let mut sids = Vec::new();
    for _ in 0..2 {
        let sid = open_session(&portal.url).await.unwrap();
        let resp = http
            .get(&portal.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        streams.push(resp);
        sids.push(sid);
    }
    let (status, text) = open_session(&portal.url).await.unwrap_err();
    assert!(
        status >= 500 && text.contains("spec.limits.maxSessions"),
        "{status} {text}"
    );
    assert_eq!((m.evicted.get(), m.refused.get()), (0, 1));
    // Both sessions kept their streams and still answer.
    for sid in &sids {
        assert!(session_list(&portal.url, sid).await > 0);
    }
    // One stream ends: its session is idle and makes room (once the server notices the
    // closed connection: at the latest at the next SSE keep-alive, 15 s).
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(40);
    let third = loop {
        match open_session(&portal.url).await {
            Ok(sid) => break sid,
            Err(e) => {
                assert!(Instant::now() < deadline, "still refused: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(session_list(&portal.url, &third).await > 0);
    assert!(m.evicted.get() >= 1);
    assert!(m.open.get() <= 2);
}

/// The portal configuration of `yaml` (as `common::serve_portal` reads it).
fn config_of(yaml: &str) -> Arc<proxy::config::PortalConfig> {
    let mut m = proxy::config::Manifests::default();
    proxy::config::manifests::parse_into(&mut m, std::path::Path::new("test.yaml"), yaml).unwrap();
    Arc::new(proxy::config::resolve(&m, "demo", std::path::Path::new("/nonexistent")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_its_client_stopped_using_leaves_memory_though_the_portal_keeps_notifying_it() {
    // rmcp's own idle timer restarts on every message a session carries, the portal's
    // `list_changed` notifications included: with catalog changes more often than the idle
    // timeout, an abandoned session never left (the soak's RSS grew per upstream restart).
    let limits = "{sessionIdleTimeoutSeconds: 10}";
    let portal = start(limits).await;
    let m = &portal.portal.metrics.sessions;
    let sid = open_session(&portal.url).await.unwrap();
    assert!(session_list(&portal.url, &sid).await > 0);
    assert_eq!(m.open.get(), 1);
    let with = config_of(&manifests(limits));
    let without = config_of(&manifests_with(
        limits,
        "[{name: list_tickets, hidden: true}]",
    ));
    let notifications = portal.portal.catalog_changes();
    let mut changes = 0;
    let started = Instant::now();
    // The catalog changes every second (each change notifies the session) until the session
    // is gone; its client sends nothing.
    while m.open.get() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "the unused session is still in memory after {changes} catalog changes"
        );
        let cfg = if changes % 2 == 0 { &without } else { &with };
        portal.portal.reconfigure(cfg.clone()).await.unwrap();
        changes += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed before its idle timeout"
    );
    assert!(
        notifications.has_changed().unwrap(),
        "the catalog never changed: the session was never notified"
    );
    assert!(changes >= 5, "{changes} catalog changes");
    assert_eq!(
        m.idle_closed.get(),
        1,
        "closed by the idle timeout, and counted"
    );
    // Its id still works: the next request restores the session.
    assert!(session_list(&portal.url, &sid).await > 0);
    assert_eq!(m.open.get(), 1);
}
