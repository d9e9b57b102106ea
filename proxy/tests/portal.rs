//! Portal core end to end, in process: real upstream processes (the bundled demo servers),
//! real sockets, real MCP clients (rmcp) of both protocol eras.

mod common;

use std::sync::Arc;
use std::time::Duration;

use proxy::portal::Portal;
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const KEY: &str = "0123456789abcdef0123456789abcdef-shared";

fn demo_manifests(session_key: Option<&str>) -> String {
    let demo = common::demo_binary();
    let mut text = format!(
        r#"
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {{name: tickets}}
spec: {{deployment: {{image: unused, command: ["{demo}"], args: [tickets, --stdio]}}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {{name: docs}}
spec: {{deployment: {{image: unused, command: ["{demo}"], args: [docs, --stdio]}}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpPortal
metadata: {{name: demo}}
spec:
  public: true
  servers: {{names: [tickets, docs]}}
"#
    );
    if let Some(key) = session_key {
        text.push_str(&format!(
            "  sessionKeyFrom: {{name: session, key: key}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: session}}\nstringData: {{key: \"{key}\"}}\n"
        ));
    }
    text
}

struct Running {
    url: String,
    shutdown: CancellationToken,
    portal: Arc<Portal>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(yaml: &str) -> Running {
    let shutdown = CancellationToken::new();
    // Every upstream ready and the portal's catalog rebuilt over it (a task follows upstream
    // changes; on a loaded machine it can trail the upstreams).
    let (portal, url) = common::serve_portal(yaml, &shutdown, async |portal| {
        let catalog = portal.catalog();
        portal.upstreams.all().await.iter().all(|u| {
            u.state().health == proxy::upstream::Health::Ready
                && catalog.tools.iter().any(|t| t.server == u.config.name)
        })
    })
    .await;
    Running {
        url,
        shutdown,
        portal,
    }
}

async fn client(
    url: &str,
    mode: ClientLifecycleMode,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    ().serve_with_lifecycle(transport, mode).await.unwrap()
}

fn legacy() -> ClientLifecycleMode {
    ClientLifecycleMode::Initialize
}

fn modern() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_both_eras_see_prefixed_tools_and_calls_route_to_the_right_upstream() {
    let portal = start(&demo_manifests(None)).await;
    for (era, mode) in [("legacy", legacy()), ("2026-07-28", modern())] {
        let c = client(&portal.url, mode).await;
        let tools = c.list_all_tools().await.unwrap();
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert!(
            names.contains(&"tickets_list_tickets".to_string()),
            "{era}: {names:?}"
        );
        assert!(
            names.contains(&"docs_search_documents".to_string()),
            "{era}: {names:?}"
        );
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "{era}: deterministic order");
        let list = tools
            .iter()
            .find(|t| t.name == "tickets_list_tickets")
            .unwrap();
        assert!(
            list.output_schema.is_some(),
            "{era}: outputSchema preserved"
        );
        assert_eq!(
            list.annotations.as_ref().and_then(|a| a.read_only_hint),
            Some(true),
            "{era}: annotations preserved"
        );

        let mut params = CallToolRequestParams::new("tickets_list_tickets");
        params.arguments = Some(
            json!({"status": "in_progress"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let r = c.call_tool(params).await.unwrap();
        let structured = r.structured_content.expect("structuredContent preserved");
        let tickets = structured["tickets"].as_array().unwrap();
        assert_eq!(tickets.len(), 1, "{era}: {structured}");

        let mut params = CallToolRequestParams::new("docs_search_documents");
        params.arguments = Some(json!({"query": "rotation"}).as_object().unwrap().clone());
        let r = c.call_tool(params).await.unwrap();
        assert_ne!(r.is_error, Some(true), "{era}");

        let err = c
            .call_tool(CallToolRequestParams::new("nobody_nothing"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("Unknown tool: nobody_nothing"), "{era}: {err}");
        c.cancel().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_and_prompts_route_back_through_rewritten_uris() {
    let portal = start(&demo_manifests(None)).await;
    let c = client(&portal.url, legacy()).await;
    let resources = c.list_all_resources().await.unwrap();
    let ticket = resources
        .iter()
        .find(|r| r.uri.starts_with("portcullis://tickets/"))
        .expect("ticket resources are listed under portcullis://tickets/");
    let read = c
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            ticket.uri.clone(),
        ))
        .await
        .unwrap();
    let first = serde_json::to_value(&read.contents[0]).unwrap();
    assert_eq!(
        first["uri"],
        json!(ticket.uri),
        "content URIs are rewritten too"
    );
    let prompts = c.list_all_prompts().await.unwrap();
    assert!(
        prompts.iter().any(|p| p.name == "tickets_triage_ticket"),
        "{prompts:?}"
    );
    let templates = c.list_all_resource_templates().await.unwrap();
    assert!(
        templates
            .iter()
            .all(|t| t.uri_template.starts_with("portcullis://"))
    );
    c.cancel().await.unwrap();
}

async fn post(
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = proxy::tls::client_builder()
        .build()
        .unwrap()
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

/// The JSON-RPC message of a response that may be JSON or SSE.
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

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_session_is_served_by_any_replica_sharing_the_key() {
    let a = start(&demo_manifests(Some(KEY))).await;
    let b = start(&demo_manifests(Some(KEY))).await;
    let other = start(&demo_manifests(Some(
        "a different key, 32 bytes at least!!",
    )))
    .await;

    let (status, headers, _) = post(&a.url, INIT, &[]).await;
    assert_eq!(status, 200);
    let sid = headers["mcp-session-id"].to_str().unwrap().to_owned();
    let session = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let (status, _, _) = post(
        &a.url,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &session,
    )
    .await;
    assert_eq!(status, 202);

    for (i, replica) in [&b, &a, &b].iter().enumerate() {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/list"}}"#,
            10 + i
        );
        let (status, _, text) = post(&replica.url, &body, &session).await;
        assert_eq!(status, 200, "request {i}: {text}");
        let msg = message(&text);
        assert!(
            msg["result"]["tools"]
                .as_array()
                .is_some_and(|t| !t.is_empty()),
            "{msg}"
        );
    }
    let (status, _, text) = post(
        &other.url,
        r#"{"jsonrpc":"2.0","id":99,"method":"tools/list"}"#,
        &session,
    )
    .await;
    assert_eq!(
        status, 404,
        "a replica with another key must not accept the session: {text}"
    );
    let (status, _, _) = post(
        &a.url,
        r#"{"jsonrpc":"2.0","id":98,"method":"tools/list"}"#,
        &[
            ("mcp-session-id", "forged"),
            ("mcp-protocol-version", "2025-11-25"),
        ],
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_portal_keeps_serving() {
    let portal = start(&demo_manifests(None)).await;
    // Each case twice: as it comes, and announced as the hot request (`Mcp-Method: tools/call`),
    // which the portal serves without its router (`proxy::http::service`).
    let hot = [
        ("mcp-method", "tools/call"),
        ("mcp-protocol-version", "2026-07-28"),
    ];
    for headers in [&[][..], &hot[..]] {
        let (status, _, text) = post(&portal.url, "{not json", headers).await;
        assert_eq!(status, 400, "{headers:?}");
        assert_eq!(message(&text)["error"]["code"], json!(-32700), "{text}");
        let (status, _, text) = post(
            &portal.url,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            headers,
        )
        .await;
        assert_eq!(
            (status, message(&text)["error"]["code"].clone()),
            (400, json!(-32600)),
            "{headers:?}: {text}"
        );

        let evil = [headers, &[("origin", "http://evil.example")][..]].concat();
        let (status, _, text) = post(&portal.url, INIT, &evil).await;
        assert_eq!(status, 403, "{headers:?}: {text}");

        let huge = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"x":"{}"}}}}"#,
            "a".repeat(5 * 1024 * 1024)
        );
        let (status, _, text) = post(&portal.url, &huge, headers).await;
        assert_eq!(status, 413, "{headers:?}: {text}");
        assert!(text.contains("exceeds"), "{text}");
    }

    // Still serving after all of it.
    let c = client(&portal.url, modern()).await;
    assert!(!c.list_all_tools().await.unwrap().is_empty());
    c.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_leaves_the_lists_and_calls_to_it_fail_fast() {
    let mut child = tokio::process::Command::new(common::demo_binary())
        .args(["docs", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let url = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("demo server printed its URL");
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break u.to_owned();
        }
    };
    let demo = common::demo_binary();
    let yaml = demo_manifests(None).replacen(
        &format!("metadata: {{name: docs}}\nspec: {{deployment: {{image: unused, command: [\"{demo}\"], args: [docs, --stdio]}}}}"),
        &format!("metadata: {{name: docs}}\nspec: {{remote: {{url: \"{url}\"}}, timeoutSeconds: 2}}"),
        1,
    );
    let portal = start(&yaml).await;
    let c = client(&portal.url, legacy()).await;
    assert!(
        c.list_all_tools()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "docs_get_document")
    );

    child.kill().await.unwrap();
    // The first call after the death fails at the transport and triggers a health check.
    let err = c
        .call_tool(CallToolRequestParams::new("docs_get_document"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("docs"), "{err}");
    let mut gone = false;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tools = c.list_all_tools().await.unwrap();
        if !tools.iter().any(|t| t.name.starts_with("docs_")) {
            assert!(
                tools.iter().any(|t| t.name == "tickets_list_tickets"),
                "the other upstream stays"
            );
            gone = true;
            break;
        }
    }
    assert!(gone, "tools of the dead upstream must leave the list");
    let started = std::time::Instant::now();
    let err = c
        .call_tool(CallToolRequestParams::new("docs_get_document"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("docs") && err.contains("unavailable"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    let status = portal.portal.upstreams.status().await;
    let docs = status.iter().find(|s| s.name == "docs").unwrap();
    assert_eq!(docs.state, proxy::upstream::Health::Down);
    assert!(docs.error.is_some());
    c.cancel().await.unwrap();
}

const READ_ONLY_POLICY: &str = r#"---
apiVersion: portcullis.dev/v1alpha1
kind: McpPolicy
metadata: {name: readers}
spec:
  rules:
  - {servers: [tickets, docs], access: read}
"#;

fn text_of(r: &rmcp::model::CallToolResult) -> String {
    serde_json::to_string(&r.structured_content).unwrap_or_default()
        + &serde_json::to_string(&r.content).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tool_is_absent_from_list_search_and_execute_and_fails_like_an_unknown_one() {
    let portal = start(&(demo_manifests(None) + READ_ONLY_POLICY)).await;
    // Standard mode: only read-only tools are listed; a write tool is "unknown".
    let c = client(&portal.url, legacy()).await;
    let listed: Vec<String> = c
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        listed.contains(&"tickets_list_tickets".to_string()),
        "{listed:?}"
    );
    assert!(
        !listed.contains(&"tickets_attach_document".to_string()),
        "{listed:?}"
    );
    let denied = c
        .call_tool(CallToolRequestParams::new("tickets_attach_document"))
        .await
        .unwrap_err()
        .to_string();
    let unknown = c
        .call_tool(CallToolRequestParams::new("tickets_no_such_tool"))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        denied.replace("tickets_attach_document", "X"),
        unknown.replace("tickets_no_such_tool", "X"),
        "a denied tool must fail exactly like a tool that does not exist"
    );
    c.cancel().await.unwrap();

    // Code Mode: search sees exactly the listed tools; execute cannot reach the denied one.
    let cm = client(
        &format!("{}?codemode=search_and_execute", portal.url),
        legacy(),
    )
    .await;
    let mut search = CallToolRequestParams::new("portal_codemode_search");
    search.arguments = Some(
        json!({"code": "async () => (await codemode.tools()).map(t => t.tool)"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let r = cm.call_tool(search).await.unwrap();
    let mut seen: Vec<String> =
        serde_json::from_value(r.structured_content.unwrap()["result"].clone()).unwrap();
    seen.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(
        seen, listed_sorted,
        "Code Mode search shows exactly what tools/list shows"
    );

    let mut exec = CallToolRequestParams::new("portal_codemode_execute");
    exec.arguments = Some(
        json!({"code": "async () => typeof codemode.tickets_attach_document"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let r = cm.call_tool(exec).await.unwrap();
    assert!(text_of(&r).contains("undefined"), "{}", text_of(&r));
    cm.cancel().await.unwrap();
}

/// The fast path (`proxy::http::fast`) answers plain stateless `tools/call` requests without
/// rmcp. The same requests sent with an allowed `Origin` header go through rmcp instead; both
/// answers must be identical, byte for byte, and the fast path must actually have been taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_answers_exactly_as_rmcp_does() {
    let portal = start(&demo_manifests(None)).await;
    let http = proxy::tls::client_builder().build().unwrap();
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "fast-path-test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let post = async |name: &str, arguments: Value, via_rmcp: bool, extra_meta: Value| {
        let mut meta = meta.clone();
        meta.as_object_mut()
            .unwrap()
            .extend(extra_meta.as_object().unwrap().clone());
        let body = json!({"jsonrpc": "2.0", "id": "call-1", "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": meta}});
        let mut req = http
            .post(&portal.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", name)
            .body(body.to_string());
        if via_rmcp {
            // Allowed on a loopback listener, and enough to send the request to rmcp.
            req = req.header("origin", "http://127.0.0.1:9");
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
        (status, ctype, resp.bytes().await.unwrap())
    };
    let fast_calls = || {
        let text = portal.portal.metrics.encode_text();
        text.lines()
            .find_map(|l| l.strip_prefix("portcullis_fast_path_tool_calls_total "))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no fast-path counter in:\n{text}"))
    };

    let cases = [
        ("tickets_list_tickets", json!({"status": "in_progress"})),
        ("docs_search_documents", json!({"query": "rotation"})),
        ("docs_get_document", json!({})),
        ("nobody_nothing", json!({})),
    ];
    for (name, args) in &cases {
        let fast = post(name, args.clone(), false, json!({})).await;
        let slow = post(name, args.clone(), true, json!({})).await;
        assert_eq!(fast.0, slow.0, "{name}: status");
        assert_eq!(fast.1, slow.1, "{name}: content type");
        assert_eq!(
            String::from_utf8_lossy(&fast.2),
            String::from_utf8_lossy(&slow.2),
            "{name}: body"
        );
    }
    let answer: Value = serde_json::from_slice(
        &post(
            "tickets_list_tickets",
            json!({"status": "in_progress"}),
            false,
            json!({}),
        )
        .await
        .2,
    )
    .unwrap();
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["tickets"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(
        fast_calls(),
        cases.len() as u64 + 1,
        "only the requests without Origin took the fast path"
    );

    // A progress token needs rmcp's stream: served, but not by the fast path.
    let with_progress = post(
        "tickets_list_tickets",
        json!({"status": "in_progress"}),
        false,
        json!({"progressToken": "p1"}),
    )
    .await;
    assert_eq!(with_progress.0, 200);
    assert!(
        String::from_utf8_lossy(&with_progress.2).contains("tickets"),
        "{:?}",
        with_progress.2
    );
    assert_eq!(fast_calls(), cases.len() as u64 + 1);
}

/// The JSON-RPC messages of an SSE answer (priming events, whose data is empty, left out).
fn events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// A legacy session's `tools/call` is answered by the fast path (no rmcp session worker). The
/// same calls sent with an allowed `Origin` header go through rmcp; both answers are event
/// streams carrying the same JSON-RPC message. A client that declared sampling stays with
/// rmcp, and ids that are not the caller's are refused as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_fast_path_answers_as_rmcp_does() {
    let portal = start(&demo_manifests(None)).await;
    let http = proxy::tls::client_builder().build().unwrap();
    let base = |req: reqwest::RequestBuilder| {
        req.header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
    };
    let open = async |capabilities: Value| {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": capabilities,
            "clientInfo": {"name": "legacy-fast-path-test", "version": "1"}}});
        let resp = base(http.post(&portal.url))
            .body(init.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sid = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let resp = base(http.post(&portal.url))
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-11-25")
            .body(note.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        sid
    };
    let post = async |sid: &str, name: &str, arguments: Value, via_rmcp: bool| {
        let body = json!({"jsonrpc": "2.0", "id": "call-1", "method": "tools/call",
            "params": {"name": name, "arguments": arguments}});
        let mut req = base(http.post(&portal.url))
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25")
            .body(body.to_string());
        if via_rmcp {
            req = req.header("origin", "http://127.0.0.1:9");
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
        (status, ctype, resp.bytes().await.unwrap())
    };
    let fast_calls = || {
        let text = portal.portal.metrics.encode_text();
        text.lines()
            .find_map(|l| l.strip_prefix("portcullis_fast_path_legacy_tool_calls_total "))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no legacy fast-path counter in:\n{text}"))
    };

    let sid = open(json!({})).await;
    let cases = [
        ("tickets_list_tickets", json!({"status": "in_progress"})),
        ("docs_search_documents", json!({"query": "rotation"})),
        ("docs_get_document", json!({})),
        ("nobody_nothing", json!({})),
    ];
    for (name, args) in &cases {
        let fast = post(&sid, name, args.clone(), false).await;
        let slow = post(&sid, name, args.clone(), true).await;
        assert_eq!(fast.0, slow.0, "{name}: status");
        assert_eq!(fast.1, slow.1, "{name}: content type");
        let (fast_events, slow_events) = (events(&fast.2), events(&slow.2));
        assert_eq!(fast_events.len(), 1, "{name}: {fast_events:?}");
        assert_eq!(fast_events, slow_events, "{name}: the JSON-RPC message");
    }
    let answer = &events(
        &post(
            &sid,
            "tickets_list_tickets",
            json!({"status": "in_progress"}),
            false,
        )
        .await
        .2,
    )[0];
    assert_eq!(
        answer["result"]["structuredContent"]["tickets"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(
        fast_calls(),
        cases.len() as u64 + 1,
        "only the requests without Origin took the fast path"
    );

    // A client that declared sampling may be asked for it during a call: rmcp's session
    // worker carries its answer back, so its calls stay there.
    let sampling = open(json!({"sampling": {}})).await;
    let answer = post(
        &sampling,
        "tickets_list_tickets",
        json!({"status": "in_progress"}),
        false,
    )
    .await;
    assert_eq!(answer.0, 200);
    assert_eq!(events(&answer.2).len(), 1, "{:?}", answer.2);
    assert_eq!(fast_calls(), cases.len() as u64 + 1);

    // Ids that do not open are refused by the session layer, as before.
    for bad in ["not-a-session", &sid[..sid.len() - 2]] {
        let answer = post(bad, "tickets_list_tickets", json!({}), false).await;
        assert_eq!(answer.0, 404, "{bad}: {:?}", answer.2);
    }
    assert_eq!(fast_calls(), cases.len() as u64 + 1);
}
