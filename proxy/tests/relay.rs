//! Server-to-client traffic through the portal, in process: a real rmcp upstream (Streamable
//! HTTP, legacy sessions) that asks for sampling, logs outside any request and publishes resource
//! updates, and real rmcp clients that record everything they are sent. What one caller's
//! request causes reaches that caller only.
#![allow(deprecated)] // sampling, logging and resources/subscribe are legacy-era features.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy::portal::Portal;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ContentBlock, CreateMessageRequestParams, CreateMessageResult, DiscoverResult, Implementation,
    ListResourcesResult, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceUpdatedNotificationParam, SamplingCapability,
    SamplingMessage, ServerCapabilities, ServerConfig, SubscribeRequestParams, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, RequestContext, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WATCHED: &str = "mem://watched";

/// The upstream: a 2025-11-25 server (the era with server-to-client requests).
#[derive(Clone, Default)]
struct Upstream {
    subscribed: Arc<Mutex<Vec<String>>>,
}

impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_logging()
                .build(),
        )
    }

    /// No `server/discover`: clients fall back to `initialize`, and a legacy session.
    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, ErrorData> {
        Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            "Method not found",
            None,
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = Arc::new(
            json!({"type": "object", "properties": {"prompt": {"type": "string"}}})
                .as_object()
                .unwrap()
                .clone(),
        );
        Ok(ListToolsResult::with_all_items(
            ["ask", "log_outside", "touch", "progress", "wait"]
                .into_iter()
                .map(|n| Tool::new(n, n, schema.clone()))
                .collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let prompt = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("prompt"))
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .to_owned();
        let text = match request.name.as_ref() {
            "ask" => {
                let params =
                    CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 50);
                match context.peer.create_message(params).await {
                    Ok(r) => format!("sampled: {}", serde_json::to_string(&r.message).unwrap()),
                    Err(e) => format!("sampling failed: {e}"),
                }
            }
            "log_outside" => {
                // rmcp sends this on the session's standalone stream: nothing names the request.
                let _ = context
                    .peer
                    .notify_logging_message(LoggingMessageNotificationParam::new(
                        LoggingLevel::Error,
                        json!("activity of whoever else uses this upstream"),
                    ))
                    .await;
                "logged".into()
            }
            "progress" => {
                // Two steps of progress for the caller's token, on the request's stream.
                if let Some(token) = context.meta.get_progress_token() {
                    for step in 1..=2 {
                        let _ = context
                            .peer
                            .notify_progress(rmcp::model::ProgressNotificationParam::new(
                                token.clone(),
                                f64::from(step),
                            ))
                            .await;
                    }
                }
                "progressed".into()
            }
            "wait" => {
                // Until the portal cancels the request (at most 20 s).
                tokio::select! {
                    () = context.ct.cancelled() => {
                        self.subscribed.lock().unwrap().push("wait: cancelled".into());
                        "cancelled".into()
                    }
                    () = tokio::time::sleep(Duration::from_secs(20)) => "waited".into(),
                }
            }
            "touch" => {
                let _ = context
                    .peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(WATCHED))
                    .await;
                "touched".into()
            }
            _ => return Err(ErrorData::invalid_params("unknown tool", None)),
        };
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new(
            WATCHED, "watched",
        )]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
            vec![ResourceContents::text("now", request.uri)],
        )))
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscribed.lock().unwrap().push(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscribed
            .lock()
            .unwrap()
            .retain(|u| *u != request.uri);
        Ok(())
    }
}

async fn serve_upstream(up: Upstream, ct: CancellationToken) -> String {
    let mut config = StreamableHttpServerConfig::default();
    config.legacy_session_mode = true;
    config.cancellation_token = ct.child_token();
    let service: StreamableHttpService<Upstream, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(up.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { ct.cancelled().await })
            .await
    });
    format!("http://{addr}/mcp")
}

/// A downstream client that records what the portal sends it.
#[derive(Clone)]
struct Recorder {
    caps: ClientCapabilities,
    answer: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn new(sampling: bool, answer: &str) -> Self {
        let mut caps = ClientCapabilities::default();
        if sampling {
            caps.sampling = Some(SamplingCapability::default());
        }
        Recorder {
            caps,
            answer: answer.into(),
            seen: Default::default(),
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(self.caps.clone(), Implementation::new("recorder", "1"))
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        self.seen.lock().unwrap().push(format!(
            "sampling: {}",
            serde_json::to_string(&params.messages).unwrap()
        ));
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(self.answer.clone()),
            "test-model".into(),
        ))
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("log: {}", params.data));
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("updated: {}", params.uri));
    }
}

struct Running {
    url: String,
    shutdown: CancellationToken,
    upstreams: Vec<Upstream>,
    portal: Arc<Portal>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A public portal over two upstreams, `up` and `hidden`, with `extra` manifests appended.
async fn start(extra: &str) -> Running {
    let shutdown = CancellationToken::new();
    let upstreams = vec![Upstream::default(), Upstream::default()];
    let up = serve_upstream(upstreams[0].clone(), shutdown.clone()).await;
    let hidden = serve_upstream(upstreams[1].clone(), shutdown.clone()).await;
    let yaml = format!(
        r#"
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {{name: up}}
spec: {{remote: {{url: "{up}", transport: streamableHttp}}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {{name: hidden}}
spec: {{remote: {{url: "{hidden}", transport: streamableHttp}}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpPortal
metadata: {{name: demo}}
spec:
  public: true
  servers: {{names: [up, hidden]}}
{extra}"#
    );
    let (portal, url) =
        common::serve_portal(&yaml, &shutdown, async |p| p.catalog().tools.len() >= 10).await;
    Running {
        url,
        shutdown,
        upstreams,
        portal,
    }
}

/// Only `up` is visible to everyone (anonymous callers of the public portal included).
const ONLY_UP: &str = r#"---
apiVersion: portcullis.dev/v1alpha1
kind: McpPolicy
metadata: {name: only-up}
spec:
  rules:
  - {servers: [up], access: write}
"#;

async fn connect(url: &str, r: &Recorder) -> RunningService<RoleClient, Recorder> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    r.clone()
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .unwrap()
}

async fn call(c: &RunningService<RoleClient, Recorder>, tool: &str, prompt: &str) -> String {
    let mut p = CallToolRequestParams::new(tool.to_owned());
    p.arguments = Some(json!({"prompt": prompt}).as_object().unwrap().clone());
    match c.call_tool(p).await {
        Ok(r) => serde_json::to_string(&r.content).unwrap(),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_reaches_only_the_caller_whose_call_asked_for_it() {
    let portal = start("").await;
    let alice = Recorder::new(true, "answer for alice");
    let bob = Recorder::new(true, "answer for bob");
    let a = connect(&portal.url, &alice).await;
    let b = connect(&portal.url, &bob).await;
    // Concurrent calls on the same upstream connection: each sampling request goes back to the
    // session whose call caused it, and each answer to the call that asked.
    let (ra, rb) = tokio::join!(
        call(&a, "up_ask", "alice's private prompt"),
        call(&b, "up_ask", "bob's private prompt"),
    );
    assert!(ra.contains("answer for alice"), "{ra}");
    assert!(rb.contains("answer for bob"), "{rb}");
    let (sa, sb) = (alice.seen(), bob.seen());
    assert_eq!(sa.len(), 1, "{sa:?}");
    assert_eq!(sb.len(), 1, "{sb:?}");
    assert!(sa[0].contains("alice's private prompt"), "{sa:?}");
    assert!(sb[0].contains("bob's private prompt"), "{sb:?}");
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_asking_a_caller_without_sampling_gets_a_clear_error() {
    let portal = start("").await;
    let carol = Recorder::new(false, "unused");
    let bystander = Recorder::new(true, "must not be asked");
    let c = connect(&portal.url, &carol).await;
    let by = connect(&portal.url, &bystander).await;
    let r = call(&c, "up_ask", "carol's prompt").await;
    assert!(
        r.contains("did not declare the sampling capability"),
        "the upstream learns why: {r}"
    );
    assert!(carol.seen().is_empty(), "{:?}", carol.seen());
    assert!(bystander.seen().is_empty(), "{:?}", bystander.seen());
    c.cancel().await.unwrap();
    by.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlp_block_rule_stops_a_sampling_request_before_the_client_sees_it() {
    let portal = start(
        r#"---
apiVersion: portcullis.dev/v1alpha1
kind: McpPolicy
metadata: {name: dlp}
spec:
  rules:
  - {access: write}
  dlp:
  - {name: no-codenames, patterns: ["PROJECT-[A-Z]+"], direction: results, action: block}
"#,
    )
    .await;
    let alice = Recorder::new(true, "fine");
    let a = connect(&portal.url, &alice).await;
    let r = call(&a, "up_ask", "summarise PROJECT-ORCA").await;
    assert!(r.contains("blocked by DLP rule"), "{r}");
    assert!(alice.seen().is_empty(), "{:?}", alice.seen());
    a.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_an_upstream_sends_outside_any_request_reach_no_client() {
    let portal = start("").await;
    let alice = Recorder::new(true, "x");
    let bob = Recorder::new(true, "x");
    let a = connect(&portal.url, &alice).await;
    let b = connect(&portal.url, &bob).await;
    a.set_level(rmcp::model::SetLevelRequestParams::new(LoggingLevel::Debug))
        .await
        .unwrap();
    let r = call(&a, "up_log_outside", "").await;
    assert!(r.contains("logged"), "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for seen in [alice.seen(), bob.seen()] {
        assert!(!seen.iter().any(|s| s.starts_with("log:")), "{seen:?}");
    }
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_updates_reach_only_subscribed_sessions_of_visible_servers() {
    let portal = start(ONLY_UP).await;
    let alice = Recorder::new(false, "x");
    let bob = Recorder::new(false, "x");
    let a = connect(&portal.url, &alice).await;
    let b = connect(&portal.url, &bob).await;
    let watched = "portcullis://up/mem://watched";
    let resources = a.list_all_resources().await.unwrap();
    assert!(resources.iter().any(|r| r.uri == watched), "{resources:?}");

    // A resource of a server the caller cannot see is unknown, as for resources/read.
    let hidden = a
        .subscribe(SubscribeRequestParams::new(
            "portcullis://hidden/mem://watched",
        ))
        .await
        .unwrap_err()
        .to_string();
    let unknown = a
        .subscribe(SubscribeRequestParams::new(
            "portcullis://nosuch/mem://watched",
        ))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        hidden.replace("hidden", "X"),
        unknown.replace("nosuch", "X")
    );
    assert!(portal.upstreams[1].subscribed.lock().unwrap().is_empty());

    a.subscribe(SubscribeRequestParams::new(watched))
        .await
        .unwrap();
    assert_eq!(
        *portal.upstreams[0].subscribed.lock().unwrap(),
        vec![WATCHED.to_string()],
        "subscribed upstream with the upstream's own URI"
    );
    // Bob triggers the change; only Alice subscribed.
    assert!(call(&b, "up_touch", "").await.contains("touched"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !alice.seen().iter().any(|s| s.starts_with("updated:")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", alice.seen());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alice.seen(), vec![format!("updated: {watched}")]);
    assert!(bob.seen().is_empty(), "{:?}", bob.seen());

    a.unsubscribe(UnsubscribeRequestParams::new(watched))
        .await
        .unwrap();
    assert!(
        portal.upstreams[0].subscribed.lock().unwrap().is_empty(),
        "the last subscriber left: the upstream subscription goes too"
    );
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_with_its_session() {
    let portal = start("").await;
    let alice = Recorder::new(false, "x");
    let a = connect(&portal.url, &alice).await;
    a.subscribe(SubscribeRequestParams::new("portcullis://up/mem://watched"))
        .await
        .unwrap();
    assert_eq!(portal.upstreams[0].subscribed.lock().unwrap().len(), 1);
    a.cancel().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !portal.upstreams[0].subscribed.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream subscription outlived the only session that held it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A legacy session opened with raw HTTP (declaring nothing), for calls whose answer stream is
/// read as bytes.
async fn raw_session(url: &str, http: &reqwest::Client) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let resp = raw_post(http, url, None, init).await;
    assert_eq!(resp.status(), 200);
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(raw_post(http, url, Some(&sid), note).await.status(), 202);
    sid
}

async fn raw_post(
    http: &reqwest::Client,
    url: &str,
    sid: Option<&str>,
    body: serde_json::Value,
) -> reqwest::Response {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(sid) = sid {
        req = req
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25");
    }
    req.send().await.unwrap()
}

fn legacy_fast_calls(portal: &Portal) -> u64 {
    let text = portal.metrics.encode_text();
    text.lines()
        .find_map(|l| l.strip_prefix("portcullis_fast_path_legacy_tool_calls_total "))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap_or_else(|| panic!("no legacy fast-path counter in:\n{text}"))
}

/// A legacy session's call answered by the fast path still gets the upstream's progress for
/// its token, before the answer, on the answer's own event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_a_legacy_caller_before_the_answer_on_the_fast_path() {
    let portal = start(ONLY_UP).await;
    let http = proxy::tls::client_builder().build().unwrap();
    let sid = raw_session(&portal.url, &http).await;
    let before = legacy_fast_calls(&portal.portal);
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "up_progress", "arguments": {}, "_meta": {"progressToken": "mine"}}});
    let resp = raw_post(&http, &portal.url, Some(&sid), call).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.unwrap();
    let events: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        events.len(),
        3,
        "two progress events, then the answer: {body}"
    );
    let mut steps = Vec::new();
    for e in &events[..2] {
        assert_eq!(e["method"], "notifications/progress", "{body}");
        assert_eq!(
            e["params"]["progressToken"], "mine",
            "the caller's own token: {body}"
        );
        steps.push(e["params"]["progress"].as_f64().unwrap());
    }
    // Each upstream notification is handled by a task of its own (in rmcp's path as well), so
    // their order is not kept; that they all precede the answer is.
    steps.sort_by(f64::total_cmp);
    assert_eq!(steps, [1.0, 2.0], "{body}");
    assert_eq!(events[2]["id"], 5, "{body}");
    assert!(
        events[2]["result"].to_string().contains("progressed"),
        "{body}"
    );
    assert_eq!(
        legacy_fast_calls(&portal.portal),
        before + 1,
        "served by the fast path"
    );
}

/// `notifications/cancelled` from a legacy client reaches a call the fast path is serving
/// (rmcp never saw it), and the upstream request is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_client_cancels_a_call_on_the_fast_path() {
    let portal = start(ONLY_UP).await;
    let http = proxy::tls::client_builder().build().unwrap();
    let sid = raw_session(&portal.url, &http).await;
    let before = legacy_fast_calls(&portal.portal);
    let call = json!({"jsonrpc": "2.0", "id": "c1", "method": "tools/call", "params": {
        "name": "up_wait", "arguments": {}}});
    let pending = tokio::spawn({
        let (http, url, sid) = (http.clone(), portal.url.clone(), sid.clone());
        async move { raw_post(&http, &url, Some(&sid), call).await.text().await }
    });
    let upstream = &portal.upstreams[0];
    let started = std::time::Instant::now();
    while legacy_fast_calls(&portal.portal) == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the call never reached the fast path"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Someone else's id for the same request does nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = raw_session(&portal.url, &http).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": "c1", "reason": "user"}});
    assert_eq!(
        raw_post(&http, &portal.url, Some(&other), cancel.clone())
            .await
            .status(),
        202
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        upstream.subscribed.lock().unwrap().is_empty(),
        "another session cancelled the call"
    );
    assert_eq!(
        raw_post(&http, &portal.url, Some(&sid), cancel)
            .await
            .status(),
        202
    );
    while !upstream
        .subscribed
        .lock()
        .unwrap()
        .iter()
        .any(|s| s == "wait: cancelled")
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the upstream request was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the cancelled call's answer stream ended")
        .unwrap()
        .unwrap();
    assert!(!answer.contains("waited"), "{answer}");
}
