//! `tools/call` to a stateless (2026-07-28) Streamable HTTP upstream takes the direct path
//! (one POST from the portal's own task); calls that want progress, or tools whose schema asks
//! for `Mcp-Param-*` headers, still go through rmcp. The upstream is a real rmcp server over
//! real sockets, which checks the SEP-2243 headers of every request against its body.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy::portal::Portal;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ErrorData, Implementation, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{
    StreamableHttpClientTransport, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::{ClientHandler, RoleClient, RoleServer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// An upstream that reports what it received.
#[derive(Clone, Default)]
struct Probe {
    /// `slow` calls whose handler saw its request cancelled.
    cancelled: Arc<AtomicUsize>,
}

fn tool(name: &'static str, schema: Value) -> Tool {
    Tool::new(name, "probe", Arc::new(schema.as_object().unwrap().clone()))
}

impl ServerHandler for Probe {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("probe", "1"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            tool("probe", json!({"type": "object"})),
            tool(
                "regional",
                json!({"type": "object", "properties": {
                    "region": {"type": "string", "x-mcp-header": "Region"}}}),
            ),
            tool("slow", json!({"type": "object"})),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let token = context.meta.get_progress_token();
        let header = |name: &str| {
            context
                .extensions
                .get::<::http::request::Parts>()
                .and_then(|p| p.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match request.name.as_ref() {
            "slow" => {
                tokio::select! {
                    _ = context.ct.cancelled() => {
                        self.cancelled.fetch_add(1, Ordering::SeqCst);
                    }
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                Ok(CallToolResult::success(vec![]).into())
            }
            _ => {
                if let Some(t) = &token {
                    for i in 1..=3 {
                        let _ = context
                            .peer
                            .notify_progress(ProgressNotificationParam::new(t.clone(), i as f64))
                            .await;
                    }
                }
                Ok(CallToolResult::structured(json!({
                    "progressToken": token.is_some(),
                    "mcpName": header("mcp-name"),
                    "region": header("mcp-param-region"),
                    "protocolVersion": context.meta.protocol_version().map(|v| v.to_string()),
                }))
                .into())
            }
        }
    }
}

/// The upstream's URL, and its server task: it ends once the listener and every connection are
/// closed (graceful shutdown on `shutdown`).
async fn start_probe(
    probe: Probe,
    shutdown: &CancellationToken,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = StreamableHttpService::new(
        move || Ok(probe.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token()),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let ct = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { ct.cancelled().await })
            .await
    });
    (format!("http://{addr}/mcp"), task)
}

struct Running {
    url: String,
    portal: Arc<Portal>,
    shutdown: CancellationToken,
    /// Stops the upstream alone.
    upstream_stop: CancellationToken,
    /// The upstream's server task (see [`start_probe`]).
    upstream_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(probe: Probe) -> Running {
    let shutdown = CancellationToken::new();
    let upstream_stop = shutdown.child_token();
    let (upstream, upstream_task) = start_probe(probe, &upstream_stop).await;
    let yaml = format!(
        r#"
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {{name: probe}}
spec: {{remote: {{url: "{upstream}"}}, timeoutSeconds: 2}}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpPortal
metadata: {{name: demo}}
spec:
  public: true
  servers: {{names: [probe]}}
"#
    );
    let (portal, url) =
        common::serve_portal(&yaml, &shutdown, async |p| p.catalog().tools.len() >= 3).await;
    Running {
        url,
        portal,
        shutdown,
        upstream_stop,
        upstream_task: Some(upstream_task),
    }
}

async fn direct_calls(r: &Running) -> u64 {
    let status = r.portal.upstreams.status().await;
    status
        .iter()
        .find(|s| s.name == "probe")
        .unwrap()
        .direct_calls
}

/// A 2026-07-28 `tools/call` as a plain HTTP client sends it: no progress token.
async fn raw_call(url: &str, tool: &str, arguments: Value, extra: &[(&str, &str)]) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}}});
    let mut req = proxy::tls::client_builder()
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(body.to_string());
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let text = resp.text().await.unwrap();
    if let Ok(v) = serde_json::from_str(&text) {
        return v;
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or_else(|| panic!("no response in {text}"))
}

#[derive(Clone, Default)]
struct ProgressCollector {
    seen: Arc<Mutex<Vec<f64>>>,
}

impl ClientHandler for ProgressCollector {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("collector", "1"),
        )
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen.lock().unwrap().push(params.progress);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_progress_goes_direct_and_one_with_progress_still_gets_it_through_rmcp() {
    let r = start(Probe::default()).await;
    assert_eq!(
        direct_calls(&r).await,
        0,
        "lists and discovery are not calls"
    );

    // No progress asked: the direct path. rmcp's client would have put a progressToken on it.
    let answer = raw_call(&r.url, "probe_probe", json!({}), &[]).await;
    let result = &answer["result"]["structuredContent"];
    assert_eq!(result["progressToken"], json!(false), "{answer}");
    assert_eq!(result["mcpName"], json!("probe"), "{answer}");
    assert_eq!(result["protocolVersion"], json!("2026-07-28"), "{answer}");
    assert_eq!(direct_calls(&r).await, 1);

    // rmcp's client always asks for progress: the call goes through rmcp and the progress
    // the upstream reports reaches the caller.
    let handler = ProgressCollector::default();
    let transport = StreamableHttpClientTransport::from_uri(r.url.clone());
    let client = handler
        .clone()
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .unwrap();
    let result = client
        .call_tool(CallToolRequestParams::new("probe_probe"))
        .await
        .unwrap();
    let structured = result.structured_content.clone().unwrap();
    assert_eq!(structured["progressToken"], json!(true), "{result:?}");
    assert_eq!(direct_calls(&r).await, 1, "not the direct path");
    // Notifications are delivered to the handler independently of the response.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while handler.seen.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // rmcp's client runs each notification's handler on a task of its own, so the handler may
    // see them in any order (CI saw 3, 1, 2); what this test proves is that all three arrive.
    let mut seen = handler.seen.lock().unwrap().clone();
    seen.sort_by(f64::total_cmp);
    assert_eq!(seen, vec![1.0, 2.0, 3.0]);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_whose_schema_asks_for_param_headers_goes_through_rmcp_which_sends_them() {
    let r = start(Probe::default()).await;
    let answer = raw_call(
        &r.url,
        "probe_regional",
        json!({"region": "eu-west"}),
        &[("mcp-param-region", "eu-west")],
    )
    .await;
    let result = &answer["result"]["structuredContent"];
    assert_eq!(result["region"], json!("eu-west"), "{answer}");
    assert_eq!(
        result["progressToken"],
        json!(true),
        "rmcp's own token: {answer}"
    );
    assert_eq!(direct_calls(&r).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_that_times_out_is_cancelled_at_the_upstream() {
    let probe = Probe::default();
    let r = start(probe.clone()).await;
    let started = std::time::Instant::now();
    let answer = raw_call(&r.url, "probe_slow", json!({}), &[]).await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not answer within 2s"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(direct_calls(&r).await, 1);
    // The portal dropped the exchange; the stateless upstream cancels the handler.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while probe.cancelled.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream handler was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The upstream is still healthy: a timeout is not a broken transport.
    let answer = raw_call(&r.url, "probe_probe", json!({}), &[]).await;
    assert_eq!(
        answer["result"]["structuredContent"]["progressToken"],
        json!(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_to_a_dead_upstream_fails_generically_and_takes_its_tools_away() {
    let mut r = start(Probe::default()).await;
    r.upstream_stop.cancel();
    // The listener and the idle pooled connection are gone once the server task has ended
    // (waiting a fixed time instead let a loaded machine still answer the call).
    let task = r.upstream_task.take().expect("the upstream's task");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the upstream shuts down within 10 s")
        .expect("the upstream's task")
        .expect("the upstream's server");
    let answer = raw_call(&r.url, "probe_probe", json!({}), &[]).await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(
        message, "upstream probe failed to answer; try again later",
        "transport details stay in the log: {answer}"
    );
    assert_eq!(direct_calls(&r).await, 1);
    // The failure asked the supervisor to check at once: the upstream goes down.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = r.portal.upstreams.status().await;
        if status[0].state == proxy::upstream::Health::Down {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !r.portal.catalog().tools.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the down upstream's tools stay listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
