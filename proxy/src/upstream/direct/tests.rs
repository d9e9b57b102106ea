use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use rmcp::model::{CallToolResult, ContentBlock, ErrorCode, ProtocolVersion};
use serde_json::{Value, json};

use super::*;

fn client() -> DirectClient {
    client_with(Weak::new(), None, None, "http://127.0.0.1:9/mcp")
}

fn client_with(
    upstream: Weak<Upstream>,
    tokens: Option<Arc<TokenSource>>,
    identity: Option<HeaderName>,
    url: &str,
) -> DirectClient {
    let mut custom = HeaderMap::new();
    let mut v = HeaderValue::from_static("configured-secret");
    v.set_sensitive(true);
    custom.insert("x-api-key", v);
    DirectClient::new(
        "up".into(),
        crate::tls::client_builder().build().unwrap(),
        url,
        custom,
        tokens,
        identity,
        upstream,
    )
    .unwrap()
}

fn id() -> RequestId {
    RequestId::Number(7)
}

fn response(status: u16, content_type: &str, body: impl Into<reqwest::Body>) -> Answer {
    Answer::Reqwest(
        http::Response::builder()
            .status(status)
            .header(CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap()
            .into(),
    )
}

/// A body delivered in the given chunks, without a length.
fn chunked(chunks: Vec<Vec<u8>>) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures::stream::iter(
        chunks
            .into_iter()
            .map(Ok::<_, std::io::Error>)
            .collect::<Vec<_>>(),
    ))
}

fn result_json(id: i64, text: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "content": [{"type": "text", "text": text}], "resultType": "complete"}})
    .to_string()
}

fn text(r: ServerResult) -> String {
    let ServerResult::CallToolResult(r) = r else {
        panic!("not a CallToolResult: {r:?}");
    };
    r.content[0].as_text().unwrap().text.clone()
}

/// The transport error's message, or a panic if it is an McpError or no error.
fn transport(r: Result<ServerResult, ServiceError>) -> String {
    match r {
        Err(ServiceError::TransportSend(e)) => e.error.to_string(),
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_json_answer_is_the_result() {
    let r = client()
        .answer(
            response(200, "application/json", result_json(7, "hi")),
            &id(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(text(r), "hi");
}

#[tokio::test]
async fn a_content_type_with_parameters_and_odd_case_still_counts() {
    let r = client()
        .answer(
            response(200, "Application/JSON; charset=utf-8", result_json(7, "hi")),
            &id(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(text(r), "hi");
}

#[tokio::test]
async fn an_sse_answer_skips_priming_and_notifications_until_the_response() {
    let stream = [
        "id: 0\ndata: \n\n".to_string(),
        ": keep-alive comment\n\n".into(),
        format!(
            "event: message\ndata: {}\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/message",
                   "params": {"level": "info", "data": "working"}})
        ),
        format!(
            "data: {}\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progressToken": 1, "progress": 1}})
        ),
        format!("data: {}\n\n", result_json(7, "done")),
        // Anything after the response is not read.
        "data: {broken\n\n".into(),
    ]
    .concat();
    // Split into 5-byte chunks: every line and event straddles chunk boundaries.
    let chunks = stream.as_bytes().chunks(5).map(<[u8]>::to_vec).collect();
    let r = client()
        .answer(
            response(200, "text/event-stream", chunked(chunks)),
            &id(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(text(r), "done");
}

#[tokio::test]
async fn a_list_changed_notification_in_the_stream_asks_the_supervisor_for_a_refresh() {
    let up = Arc::new(test_upstream());
    let c = client_with(Arc::downgrade(&up), None, None, "http://127.0.0.1:9/mcp");
    let stream = format!(
        "data: {}\r\n\r\ndata: {}\r\n\r\n",
        json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
        result_json(7, "ok"),
    );
    c.answer(response(200, "text/event-stream", stream), &id(), None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), up.refresh.notified())
        .await
        .expect("refresh requested");
}

fn test_upstream() -> Upstream {
    use crate::config::{ServerConfig, Transport};
    let config = ServerConfig {
        name: "up".into(),
        prefix: "up".into(),
        timeout: Duration::from_secs(5),
        transport: Transport::StreamableHttp {
            url: "http://127.0.0.1:9/mcp".into(),
            headers: vec![],
        },
        overrides: vec![],
        oauth: None,
        identity: None,
    };
    Upstream {
        config,
        state: tokio::sync::watch::channel(State {
            health: super::super::Health::Ready,
            peer: None,
            direct: None,
            catalog: Default::default(),
            error: None,
            protocol: None,
            since: std::time::Instant::now(),
        })
        .0,
        refresh: Default::default(),
        reconnect: Default::default(),
        cancel: Default::default(),
        tokens: None,
        direct_calls: Default::default(),
    }
}

use super::super::State;

#[tokio::test]
async fn a_json_rpc_error_reaches_the_caller_unchanged_whatever_the_status() {
    let body = json!({"jsonrpc": "2.0", "id": 7,
        "error": {"code": -32602, "message": "Unknown tool: nope", "data": {"hint": 1}}})
    .to_string();
    for status in [200, 400, 404, 500] {
        let err = client()
            .answer(
                response(status, "application/json", body.clone()),
                &id(),
                None,
            )
            .await
            .unwrap_err();
        let ServiceError::McpError(e) = err else {
            panic!("{status}: expected McpError, got {err:?}");
        };
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{status}");
        assert_eq!(e.message, "Unknown tool: nope", "{status}");
        assert_eq!(e.data, Some(json!({"hint": 1})), "{status}");
    }
}

#[tokio::test]
async fn an_error_in_an_sse_stream_reaches_the_caller_unchanged() {
    let body = json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32021, "message": "x"}});
    let err = client()
        .answer(
            response(200, "text/event-stream", format!("data: {body}\n\n")),
            &id(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::McpError(e) if e.code.0 == -32021));
}

#[tokio::test]
async fn auth_failures_and_rate_limits_are_transport_errors_naming_the_status() {
    let body =
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32600, "message": "no"}}).to_string();
    for status in [401, 403, 429] {
        let e = transport(
            client()
                .answer(
                    response(status, "application/json", body.clone()),
                    &id(),
                    None,
                )
                .await,
        );
        assert!(e.contains(&status.to_string()), "{e}");
    }
}

#[tokio::test]
async fn a_failed_status_without_json_rpc_is_a_transport_error_naming_it() {
    let e = transport(
        client()
            .answer(
                response(502, "text/html", "<h1>Bad Gateway</h1>"),
                &id(),
                None,
            )
            .await,
    );
    assert!(e.contains("502") && e.contains("Bad Gateway"), "{e}");
    let e = transport(
        client()
            .answer(
                response(500, "application/json", "{\"oops\": 1}"),
                &id(),
                None,
            )
            .await,
    );
    assert!(e.contains("500"), "{e}");
}

#[tokio::test]
async fn garbage_answers_are_transport_errors() {
    let cases: Vec<(u16, &str, String)> = vec![
        (200, "application/json", "not json".into()),
        (200, "application/json", "{\"jsonrpc\": \"2.0\"}".into()),
        // A notification alone cannot answer a request.
        (
            200,
            "application/json",
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}).to_string(),
        ),
        // The answer to someone else's request.
        (200, "application/json", result_json(8, "x")),
        (200, "text/plain", result_json(7, "x")),
        (202, "application/json", String::new()),
        // A stream that ends without the response, or carries only garbage.
        (200, "text/event-stream", "data: {not json\n\n".into()),
        // An event is dispatched by its blank line; a stream cut before it has no response.
        (
            200,
            "text/event-stream",
            format!("data: {}", result_json(7, "no blank line")),
        ),
        // The server asks something of a client that offers nothing.
        (
            200,
            "text/event-stream",
            format!(
                "data: {}\n\n",
                json!({"jsonrpc": "2.0", "id": 1, "method": "roots/list"})
            ),
        ),
        (200, "text/event-stream", "data: \u{0}\u{1}\n\n".into()),
    ];
    for (status, ct, body) in cases {
        let r = client()
            .answer(response(status, ct, body.clone()), &id(), None)
            .await;
        let e = transport(r);
        assert!(!e.is_empty(), "{body}");
    }
}

#[tokio::test]
async fn oversize_answers_are_refused() {
    // JSON: announced too large.
    let big = vec![b' '; MAX_JSON_ANSWER + 1];
    let e = transport(
        client()
            .answer(response(200, "application/json", big), &id(), None)
            .await,
    );
    assert!(e.contains("larger than"), "{e}");
    // JSON: streamed without a length.
    let chunks = (0..17).map(|_| vec![b' '; 1024 * 1024]).collect();
    let e = transport(
        client()
            .answer(
                response(200, "application/json", chunked(chunks)),
                &id(),
                None,
            )
            .await,
    );
    assert!(e.contains("larger than"), "{e}");
    // SSE: one event that never ends.
    let mut chunks = vec![b"data: ".to_vec()];
    chunks.extend((0..17).map(|_| vec![b'x'; 1024 * 1024]));
    let e = transport(
        client()
            .answer(
                response(200, "text/event-stream", chunked(chunks)),
                &id(),
                None,
            )
            .await,
    );
    assert!(e.contains("larger than"), "{e}");
}

/// What one upstream POST looked like.
#[derive(Debug, Clone)]
struct Seen {
    headers: http::HeaderMap,
    body: Value,
}

#[tokio::test]
async fn a_call_goes_out_as_rmcp_would_send_it_and_a_401_is_retried_once_with_a_fresh_token() {
    call_goes_out_as_rmcp_would_send_it(Transport::H1).await;
}

#[tokio::test]
async fn through_reqwest_a_call_goes_out_the_same_and_a_401_is_retried_once() {
    call_goes_out_as_rmcp_would_send_it(Transport::Reqwest).await;
}

/// Which HTTP client a test's calls go through.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// The in-task client (plain `http://`, no proxy).
    H1,
    /// reqwest (what `https://` upstreams and proxied ones use).
    Reqwest,
}

fn over(c: DirectClient, transport: Transport) -> DirectClient {
    match transport {
        Transport::H1 => {
            assert!(
                c.h1.is_some(),
                "a plain http upstream takes the in-task client"
            );
            c
        }
        Transport::Reqwest => c.without_h1(),
    }
}

async fn call_goes_out_as_rmcp_would_send_it(transport: Transport) {
    use axum::routing::post;
    let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
    let tokens_issued = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/token",
            post({
                let issued = tokens_issued.clone();
                async move || {
                    let n = issued.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"access_token": format!("tok-{n}"), "expires_in": 3600}))
                }
            }),
        )
        .route(
            "/mcp",
            post({
                let seen = seen.clone();
                async move |headers: http::HeaderMap, body: axum::body::Bytes| {
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    seen.lock().unwrap().push(Seen {
                        headers: headers.clone(),
                        body: body.clone(),
                    });
                    // The first token is "revoked".
                    if headers.get("authorization").unwrap() == "Bearer tok-0" {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(CONTENT_TYPE, "text/plain")],
                            String::new(),
                        );
                    }
                    let answer = json!({"jsonrpc": "2.0", "id": body["id"], "result":
                        CallToolResult::success(vec![ContentBlock::text("ok")])});
                    (
                        StatusCode::OK,
                        [(CONTENT_TYPE, "application/json")],
                        answer.to_string(),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let tokens = Arc::new(TokenSource::new(
        crate::tls::client_builder().build().unwrap(),
        crate::config::UpstreamOAuth {
            token_url: format!("http://{addr}/token"),
            client_id: "c".into(),
            client_secret: "s".into(),
            scopes: vec![],
            resource: None,
        },
    ));
    let up = Arc::new(test_upstream());
    let c = over(
        client_with(
            Arc::downgrade(&up),
            Some(tokens),
            Some(HeaderName::from_static("x-portcullis-identity")),
            &format!("http://{addr}/mcp"),
        ),
        transport,
    );
    let params = CallToolRequestParams::new("search")
        .with_arguments(json!({"q": "x"}).as_object().unwrap().clone());
    let r = c
        .call_tool(
            params,
            Some(SignedIdentity("signed.jwt.value".into())),
            None,
        )
        .await
        .unwrap();
    assert_eq!(text(r), "ok");
    assert_eq!(up.direct_calls.load(Ordering::Relaxed), 1);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one 401, one retry");
    let auth: Vec<_> = seen
        .iter()
        .map(|s| s.headers["authorization"].clone())
        .collect();
    assert_eq!(auth, ["Bearer tok-0", "Bearer tok-1"]);
    assert_eq!(tokens_issued.load(Ordering::SeqCst), 2);
    for s in &seen {
        let h = &s.headers;
        assert_eq!(h["accept"], "text/event-stream, application/json");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["mcp-protocol-version"], "2026-07-28");
        assert_eq!(h["mcp-method"], "tools/call");
        assert_eq!(h["mcp-name"], "search");
        assert_eq!(h["x-api-key"], "configured-secret");
        assert_eq!(h["x-portcullis-identity"], "signed.jwt.value");
        assert!(h.get("mcp-session-id").is_none());
    }
    let body = &seen[1].body;
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["method"], "tools/call");
    assert_eq!(body["params"]["name"], "search");
    assert_eq!(body["params"]["arguments"], json!({"q": "x"}));
    let meta = &body["params"]["_meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/protocolVersion"],
        ProtocolVersion::V_2026_07_28.as_str()
    );
    let info = super::super::client::client_config(false);
    assert_eq!(
        meta["io.modelcontextprotocol/clientInfo"],
        serde_json::to_value(&info.client_info).unwrap()
    );
    assert_eq!(
        meta["io.modelcontextprotocol/clientCapabilities"],
        serde_json::to_value(&info.capabilities).unwrap()
    );
    assert!(meta.get("progressToken").is_none(), "{meta}");
    // Ids do not repeat.
    assert_ne!(seen[0].body["id"], Value::Null);
}

#[tokio::test]
async fn a_second_401_fails_without_a_third_try() {
    use axum::routing::post;
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/token",
            post(async || axum::Json(json!({"access_token": "t", "expires_in": 3600}))),
        )
        .route(
            "/mcp",
            post({
                let hits = hits.clone();
                async move || {
                    hits.fetch_add(1, Ordering::SeqCst);
                    StatusCode::UNAUTHORIZED
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let tokens = Arc::new(TokenSource::new(
        crate::tls::client_builder().build().unwrap(),
        crate::config::UpstreamOAuth {
            token_url: format!("http://{addr}/token"),
            client_id: "c".into(),
            client_secret: "s".into(),
            scopes: vec![],
            resource: None,
        },
    ));
    let c = client_with(
        Weak::new(),
        Some(tokens),
        None,
        &format!("http://{addr}/mcp"),
    );
    let e = transport(
        c.call_tool(CallToolRequestParams::new("t"), None, None)
            .await,
    );
    assert!(e.contains("401"), "{e}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

/// An event stream whose end comes a moment after the answer: the connection must still go
/// back to the pool, not be closed and replaced on every call.
#[tokio::test]
async fn an_answered_event_stream_gives_its_connection_back() {
    answered_event_stream_gives_its_connection_back(Transport::H1).await;
}

#[tokio::test]
async fn through_reqwest_an_answered_event_stream_gives_its_connection_back() {
    answered_event_stream_gives_its_connection_back(Transport::Reqwest).await;
}

async fn answered_event_stream_gives_its_connection_back(transport: Transport) {
    use axum::serve::ListenerExt;
    use futures::StreamExt;

    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(async move |body: axum::body::Bytes| {
            let body: Value = serde_json::from_slice(&body).unwrap();
            let event = format!(
                "data: {}\n\n",
                result_json(body["id"].as_i64().unwrap(), "ok")
            );
            let end = futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(bytes::Bytes::new())
            });
            let stream =
                futures::stream::once(async move { Ok(bytes::Bytes::from(event)) }).chain(end);
            (
                [(CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(stream),
            )
        }),
    );
    let connections = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = connections.clone();
    let listener = listener.tap_io(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let c = over(
        client_with(Weak::new(), None, None, &format!("http://{addr}/mcp")),
        transport,
    );
    for _ in 0..5 {
        let r = c
            .call_tool(CallToolRequestParams::new("t"), None, None)
            .await;
        assert_eq!(text(r.unwrap()), "ok");
        // The end of the previous stream (20 ms after the answer) arrives meanwhile. 60 ms was
        // too short once, with the cluster suite loading both cores: the next call found the
        // connection still busy and opened another.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
}

/// What rmcp's parse makes of one message of an answer, as `answer` settled the call before
/// [`call_tool_result`] existed.
fn rmcp_outcome(c: &DirectClient, json: &[u8]) -> Option<Result<ServerResult, ServiceError>> {
    let message = serde_json::from_slice::<ServerJsonRpcMessage>(json).ok()?;
    c.on_message(message, &id(), None)
}

/// What the portal makes of an outcome (`call_tool_response`), as text to compare.
fn seen_by_portal(outcome: Option<Result<ServerResult, ServiceError>>) -> String {
    let outcome = outcome.map(|r| r.and_then(crate::portal::forward::call_tool_response));
    format!("{outcome:?}")
}

/// Checks one message: where the cheap parse gives a result, rmcp's parse gives the same
/// `CallToolResult` for our request, and the portal sees the same. Returns whether the cheap
/// parse took it.
fn same_outcome(c: &DirectClient, json: &str) -> bool {
    let rmcp = rmcp_outcome(c, json.as_bytes());
    let Some(fast) = call_tool_result(json.as_bytes(), &id()) else {
        return false;
    };
    let rmcp_result = match &rmcp {
        Some(Ok(ServerResult::CallToolResult(r))) => r.clone(),
        other => panic!("cheap parse took {json}, rmcp made {other:?} of it"),
    };
    assert_eq!(fast, rmcp_result, "{json}");
    assert_eq!(
        seen_by_portal(Some(Ok(ServerResult::CallToolResult(fast)))),
        seen_by_portal(rmcp),
        "{json}"
    );
    true
}

#[test]
fn the_cheap_parse_of_an_answer_agrees_with_rmcps() {
    let c = client();
    let wrap = |result: &str| format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#);
    let text = r#"[{"type":"text","text":"hi"}]"#;
    // The cheap parse must take these.
    let taken = [
        result_json(7, "hi"),
        wrap(&format!(r#"{{"content":{text}}}"#)),
        wrap(&format!(
            r#"{{"content":{text},"isError":false,"resultType":"complete"}}"#
        )),
        wrap(r#"{"isError":true}"#),
        wrap(r#"{"content":[],"structuredContent":{"a":[1,2.5,"x",null]}}"#),
        wrap(r#"{"structuredContent":null}"#),
        wrap(r#"{"structuredContent":[1,2]}"#),
        wrap(r#"{"structuredContent":3}"#),
        wrap(r#"{"content":null,"isError":false}"#),
        wrap(&format!(r#"{{"content":{text},"_meta":{{"k":"v"}}}}"#)),
        wrap(&format!(r#"{{"content":{text},"resultType":null}}"#)),
        wrap(&format!(r#"{{"content":{text},"_meta":null}}"#)),
        wrap(r#"{"content":[{"type":"text","text":"caf\u00e9 \ud83d\ude00 \"q\" \\ \n"}]}"#),
        wrap(
            r#"{"content":[{"type":"image","data":"aGk=","mimeType":"image/png"},
            {"type":"resource","resource":{"uri":"file:///a","text":"t"}},
            {"type":"resource_link","uri":"file:///b","name":"b"},
            {"type":"text","text":"x","annotations":{"audience":["user"],"priority":0.5},
             "_meta":{"m":1}}]}"#,
        ),
        // Member order, whitespace, an integer id written plainly.
        format!(
            " \n{{ \"result\" : {{\"content\":{text}}} , \"id\" : 7,\t\"jsonrpc\":\"2.0\" }}\r\n"
        ),
    ];
    for json in &taken {
        assert!(same_outcome(&c, json), "not taken: {json}");
    }
    // Anything else may go either way, but must come out the same.
    let others = [
        // Other results of a tools/call.
        wrap("{}"),
        wrap(r#"{"resultType":"complete"}"#),
        wrap(r#"{"resultType":"complete","_meta":{"k":1}}"#),
        wrap(r#"{"resultType":"complete","_meta":{"io.modelcontextprotocol/subscriptionId":1}}"#),
        // rmcp reads this as the end of a subscription, not as a tool result.
        wrap(&format!(
            r#"{{"resultType":"complete","_meta":{{"io.modelcontextprotocol/subscriptionId":1}},"content":{text}}}"#
        )),
        wrap(
            r#"{"resultType":"task","taskId":"t1","status":"working","createdAt":"2026-01-01T00:00:00Z",
            "lastUpdatedAt":"2026-01-01T00:00:00Z","ttlMs":null}"#,
        ),
        wrap(r#"{"resultType":"input_required","requestState":"s"}"#),
        wrap(
            r#"{"resultType":"input_required","inputRequests":{"a":{"method":"roots/list"}}}"#,
        ),
        wrap(&format!(r#"{{"resultType":"input_required","content":{text}}}"#)),
        wrap(&format!(r#"{{"resultType":"other","content":{text}}}"#)),
        wrap(&format!(r#"{{"content":{text},"resultType":null,"_meta":null}}"#)),
        wrap(&format!(r#"{{"resultType":5,"content":{text}}}"#)),
        // Unknown and foreign keys: rmcp ignores the first, the second makes another result.
        wrap(&format!(r#"{{"content":{text},"extra":1}}"#)),
        wrap(&format!(r#"{{"content":{text},"tools":[]}}"#)),
        wrap(r#"{"action":"accept","content":{"a":1}}"#),
        // Fields of the wrong type, a block of an unknown type.
        wrap(r#"{"content":"text"}"#),
        wrap(r#"{"isError":"yes"}"#),
        wrap(r#"{"content":[{"type":"bogus"}]}"#),
        wrap(r#"{"content":[{"type":"text"}]}"#),
        // Results that are not objects.
        wrap("[]"),
        wrap("null"),
        wrap(r#""x""#),
        wrap("5"),
        wrap(&format!("[{text}]")),
        // Escapes in keys, repeated keys, a lone surrogate.
        wrap(&format!(r#"{{"cont\u0065nt":{text}}}"#)),
        format!(r#"{{"jsonrpc":"2.0","id":7,"res\u0075lt":{{"content":{text}}}}}"#),
        wrap(&format!(r#"{{"content":{text},"content":{text}}}"#)),
        format!(r#"{{"jsonrpc":"2.0","id":7,"id":7,"result":{{"content":{text}}}}}"#),
        wrap(r#"{"content":[{"type":"text","text":"\ud800"}]}"#),
        wrap(r#"{"structuredContent":{"a":"\ud800"}}"#),
        // Ids: someone else's, other spellings of ours, none.
        result_json(8, "x"),
        format!(r#"{{"jsonrpc":"2.0","id":"7","result":{{"content":{text}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":7.0,"result":{{"content":{text}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":7e0,"result":{{"content":{text}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":-7,"result":{{"content":{text}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":null,"result":{{"content":{text}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","result":{{"content":{text}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":99999999999999999999,"result":{{"content":{text}}}}}"#),
        // The version.
        format!(r#"{{"jsonrpc":"1.0","id":7,"result":{{"content":{text}}}}}"#),
        format!(r#"{{"jsonrpc":"2\u002e0","id":7,"result":{{"content":{text}}}}}"#),
        format!(r#"{{"id":7,"result":{{"content":{text}}}}}"#),
        // Other members next to the result.
        format!(r#"{{"jsonrpc":"2.0","id":7,"result":{{"content":{text}}},"extra":1}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":7,"result":{{"content":{text}}},"error":{{"code":1,"message":"m"}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":7,"result":{{"content":{text}}},"method":"x"}}"#),
        // Errors, notifications, requests.
        r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"bad"}}"#.into(),
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"parse"}}"#.into(),
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}"#.into(),
        r#"{"jsonrpc":"2.0","id":8,"error":{"code":-32602,"message":"bad"}}"#.into(),
        r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#.into(),
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}"#.into(),
        r#"{"jsonrpc":"2.0","id":7,"method":"roots/list"}"#.into(),
        r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#.into(),
        // Junk.
        String::new(),
        "not json".into(),
        "[]".into(),
        format!("[{}]", result_json(7, "x")),
        format!("{} x", result_json(7, "x")),
        format!("\u{feff}{}", result_json(7, "x")),
        format!("\u{c}{}", result_json(7, "x")),
        r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}"#.into(),
        "null".into(),
    ];
    for json in &others {
        same_outcome(&c, json);
    }
    // Why the cheap parse is narrow: objects with CallToolResult's fields that rmcp reads as
    // something else.
    let subscription = wrap(&format!(
        r#"{{"resultType":"complete","_meta":{{"io.modelcontextprotocol/subscriptionId":1}},"content":{text}}}"#
    ));
    let tools = wrap(&format!(r#"{{"content":{text},"tools":[]}}"#));
    for (json, variant) in [
        (subscription, "SubscriptionsListenResult"),
        (tools, "ListToolsResult"),
    ] {
        let outcome = format!("{:?}", rmcp_outcome(&c, json.as_bytes()));
        assert!(
            outcome.starts_with(&format!("Some(Ok({variant}(")),
            "{outcome}"
        );
    }

    // Every combination of CallToolResult's fields, with values right, wrong and null.
    let options: [(&str, &[&str]); 5] = [
        (
            "resultType",
            &[
                r#""complete""#,
                r#""task""#,
                r#""input_required""#,
                "5",
                "null",
            ],
        ),
        (
            "content",
            &[text, "[]", r#"[{"type":"x"}]"#, r#""s""#, "null"],
        ),
        ("structuredContent", &[r#"{"a":1}"#, "[1]", "3", "null"]),
        ("isError", &["true", r#""yes""#, "null"]),
        (
            "_meta",
            &[
                "{}",
                r#"{"io.modelcontextprotocol/subscriptionId":1}"#,
                "3",
                "null",
            ],
        ),
    ];
    let mut objects = vec![String::new()];
    for (key, values) in options {
        objects = objects
            .into_iter()
            .flat_map(|o| {
                let mut next = vec![o.clone()];
                for v in values {
                    let sep = if o.is_empty() { "" } else { "," };
                    next.push(format!(r#"{o}{sep}"{key}":{v}"#));
                }
                next
            })
            .collect();
    }
    let mut fast = 0;
    for o in &objects {
        fast += usize::from(same_outcome(&c, &wrap(&format!("{{{o}}}"))));
    }
    assert!(fast > 100, "{fast} of {}", objects.len());
}

#[tokio::test]
async fn answers_read_the_cheap_way_are_the_same_in_json_and_in_sse() {
    // `answer` reaches the cheap parse for both kinds of body; a result it cannot take still
    // arrives through rmcp's.
    let bodies = [
        result_json(7, "hi"),
        json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [], "tools": []}}).to_string(),
        json!({"jsonrpc": "2.0", "id": 7, "result": {}}).to_string(),
    ];
    for body in bodies {
        let c = client();
        let from_json = c
            .answer(response(200, "application/json", body.clone()), &id(), None)
            .await;
        let from_sse = c
            .answer(
                response(200, "text/event-stream", format!("data: {body}\n\n")),
                &id(),
                None,
            )
            .await;
        let expected = seen_by_portal(rmcp_outcome(&c, body.as_bytes()));
        assert_eq!(seen_by_portal(Some(from_json)), expected, "{body}");
        assert_eq!(seen_by_portal(Some(from_sse)), expected, "{body}");
    }
}

/// The request as rmcp serialized it, the way `call_tool` built it before `request_body`.
fn rmcp_body(c: &DirectClient, id: &RequestId, mut params: CallToolRequestParams) -> Vec<u8> {
    use rmcp::model::{CallToolRequest, ClientJsonRpcMessage, ClientRequest};
    let mut meta = c.meta.clone();
    if let Some(extra) = params.meta.take() {
        meta.extend(extra);
    }
    let mut request = CallToolRequest::new(params);
    request.extensions.insert(meta);
    let message =
        ClientJsonRpcMessage::request(ClientRequest::CallToolRequest(request), id.clone());
    serde_json::to_vec(&message).unwrap()
}

#[test]
fn the_request_body_is_what_rmcp_sends() {
    let object = |v: Value| v.as_object().unwrap().clone();
    let mut caller_meta = RequestMetaObject::default();
    // Over a context entry, and one of its own.
    caller_meta.insert(
        "io.modelcontextprotocol/protocolVersion".into(),
        json!("2099-01-01"),
    );
    caller_meta.insert("trace".into(), json!({"id": "abc"}));
    let mut responses = rmcp::model::InputResponses::new();
    responses.insert("b".into(), json!({"action": "accept"}));
    responses.insert("a".into(), json!({"roots": []}));
    let all = {
        let mut p = CallToolRequestParams::new("search")
            .with_arguments(object(
                json!({"q": "x", "n": 1.5, "deep": {"z": [1, null, "\u{e9}\n"]}}),
            ))
            .with_input_responses(responses)
            .with_request_state("opaque-state");
        p.meta = Some(caller_meta.clone());
        p
    };
    let cases = [
        CallToolRequestParams::new("t"),
        CallToolRequestParams::new("t").with_arguments(rmcp::model::JsonObject::new()),
        CallToolRequestParams::new("na\"me\\").with_arguments(object(json!({"b": 1, "a": 2}))),
        CallToolRequestParams::new("t").with_request_state("s"),
        {
            let mut p = CallToolRequestParams::new("t");
            p.meta = Some(caller_meta.clone());
            p
        },
        {
            let mut p = CallToolRequestParams::new("t");
            p.meta = Some(RequestMetaObject::default());
            p
        },
        all,
    ];
    for relays in [false, true] {
        let c = client()
            .with_relay(relays.then(|| Weak::<crate::portal::Portal>::new() as Weak<dyn Relay>));
        for (n, params) in cases.iter().enumerate() {
            for id in [RequestId::Number(0), RequestId::Number(i64::MAX)] {
                let ours = c.request_body(&id, params.clone()).unwrap();
                let rmcp = rmcp_body(&c, &id, params.clone());
                let (a, b): (Value, Value) = (
                    serde_json::from_slice(&ours).unwrap(),
                    serde_json::from_slice(&rmcp).unwrap(),
                );
                assert_eq!(a, b, "case {n}");
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    String::from_utf8(rmcp).unwrap(),
                    "case {n}"
                );
            }
        }
    }
}
