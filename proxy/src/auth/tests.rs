use std::sync::{Arc, Mutex};
use std::time::Duration;

use crds::McpPortalSpec;
use crds::policy::{
    Access, Effect, McpPolicySpec, PolicyLimits, Subject as PolicySubject, ToolRule,
};
use crds::portal::PortalAuth;
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use base64::Engine as _;

use super::testkit::*;
use super::*;
use crate::config::{PortalConfig, ServerConfig, Transport};
use crate::http::auth::{metadata_url, resource_uri};
use crate::model::{Identity, IdentityKind};
use crate::portal::Portal;

fn auth(issuer: &str) -> PortalAuth {
    PortalAuth {
        issuer: issuer.into(),
        scopes: vec!["mcp".into()],
        ..Default::default()
    }
}

const RESOURCE: &str = "http://portal.test/mcp";

async fn check(a: &Authenticator, idp: &TestIdp, token: &str) -> Result<Identity, AuthError> {
    a.authenticate(&auth(&idp.issuer), RESOURCE, token).await
}

fn authenticator() -> Authenticator {
    Authenticator::new(&crate::metrics::AuthMetrics::default())
}

#[tokio::test]
async fn valid_rs256_and_es256_tokens_become_identities_with_groups() {
    let idp = TestIdp::start().await;
    let a = authenticator();
    let c = claims(&idp.issuer, RESOURCE, "alice", &["finance", "ops"]);
    let id = check(
        &a,
        &idp,
        &sign(RSA_PEM, Algorithm::RS256, Some("rsa-1"), &c),
    )
    .await
    .unwrap();
    assert_eq!(
        (id.subject.as_str(), id.groups.clone()),
        ("alice", vec!["finance".to_string(), "ops".to_string()])
    );
    assert_eq!(id.kind, IdentityKind::Authenticated);
    let id = check(&a, &idp, &sign(EC_PEM, Algorithm::ES256, Some("ec-1"), &c))
        .await
        .unwrap();
    assert_eq!(id.subject, "alice");
    // One JWKS fetch serves both.
    assert_eq!(idp.hits(), 1);
}

#[tokio::test]
async fn configured_claim_names_pick_subject_and_groups() {
    let idp = TestIdp::start().await;
    let a = authenticator();
    let mut c = claims(&idp.issuer, RESOURCE, "opaque-id", &[]);
    c["email"] = json!("carol@example.com");
    c["roles"] = json!(["admins"]);
    let cfg = PortalAuth {
        subject_claim: Some("email".into()),
        groups_claim: Some("roles".into()),
        ..auth(&idp.issuer)
    };
    let id = a
        .authenticate(
            &cfg,
            RESOURCE,
            &sign(RSA_PEM, Algorithm::RS256, Some("rsa-1"), &c),
        )
        .await
        .unwrap();
    assert_eq!(
        (id.subject.as_str(), id.groups.as_slice()),
        ("carol@example.com", ["admins".to_string()].as_slice())
    );
}

#[tokio::test]
async fn every_kind_of_bad_token_is_rejected_with_a_reason() {
    let idp = TestIdp::start().await;
    let a = authenticator();
    let good = claims(&idp.issuer, RESOURCE, "alice", &[]);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let rs = |c: &Value| sign(RSA_PEM, Algorithm::RS256, Some("rsa-1"), c);
    let mut tampered = rs(&good);
    {
        // Change the payload, keep the signature.
        let parts: Vec<&str> = tampered.split('.').collect();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(with("sub", json!("mallory")).to_string());
        tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    }
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            rs(&with("exp", json!(now() - 120))),
            "token expired",
        ),
        (
            "not yet valid",
            rs(&with("nbf", json!(now() + 300))),
            "token not yet valid",
        ),
        (
            "wrong issuer",
            rs(&with("iss", json!("http://evil.test"))),
            "wrong issuer",
        ),
        (
            "wrong audience",
            rs(&with("aud", json!("some-client"))),
            "token is not for this resource",
        ),
        (
            "another resource",
            rs(&with("aud", json!("http://other.test/mcp"))),
            "token is not for this resource",
        ),
        (
            "no exp",
            rs(&{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            "token lacks a required claim",
        ),
        (
            "no subject",
            rs(&{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("sub");
                c
            }),
            "token has no sub claim",
        ),
        ("bad signature", tampered, "bad signature"),
        (
            "signed by another key under a known kid",
            sign(RSA_OTHER_PEM, Algorithm::RS256, Some("rsa-1"), &good),
            "bad signature",
        ),
        ("alg none", unsigned(&good), "algorithm none is not allowed"),
        (
            "HS256 with the public key",
            sign(RSA_PUBLIC_PEM, Algorithm::HS256, Some("rsa-1"), &good),
            "algorithm HS256 is not allowed",
        ),
        (
            "RS256 header on the EC key",
            sign(RSA_PEM, Algorithm::RS256, Some("ec-1"), &good),
            "unknown signing key",
        ),
        (
            "unknown kid",
            sign(RSA_OTHER_PEM, Algorithm::RS256, Some("rsa-2"), &good),
            "unknown signing key",
        ),
        ("garbage", "not.a.token".into(), "malformed token"),
        ("huge", "a".repeat(MAX_TOKEN_BYTES + 1), "token too large"),
    ];
    for (what, token, reason) in cases {
        assert_eq!(
            check(&a, &idp, &token).await,
            Err(AuthError::Invalid(reason.into())),
            "{what}"
        );
    }
    // Within the leeway an expired token still passes (clock skew).
    check(&a, &idp, &rs(&with("exp", json!(now() - 5))))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_without_the_required_scope_asks_for_step_up() {
    let idp = TestIdp::start().await;
    let a = authenticator();
    let mut c = claims(&idp.issuer, RESOURCE, "alice", &[]);
    c["scope"] = json!("openid profile");
    let t = sign(RSA_PEM, Algorithm::RS256, Some("rsa-1"), &c);
    assert_eq!(check(&a, &idp, &t).await, Err(AuthError::InsufficientScope));
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_keys_at_a_bounded_rate() {
    let idp = TestIdp::start().await;
    let mut a = authenticator();
    a.keys.min_refresh = Duration::from_millis(300);
    let good = claims(&idp.issuer, RESOURCE, "alice", &[]);
    check(
        &a,
        &idp,
        &sign(RSA_PEM, Algorithm::RS256, Some("rsa-1"), &good),
    )
    .await
    .unwrap();
    assert_eq!(idp.hits(), 1);
    let rotated = sign(RSA_OTHER_PEM, Algorithm::RS256, Some("rsa-2"), &good);
    // A flood of unknown kids right after a fetch fetches nothing.
    for _ in 0..20 {
        assert_eq!(
            check(&a, &idp, &rotated).await,
            Err(AuthError::Invalid("unknown signing key".into()))
        );
    }
    assert_eq!(idp.hits(), 1);
    // The IdP rotates; after the refresh interval the new kid triggers one refresh.
    idp.keys
        .lock()
        .unwrap()
        .push(public_jwk(RSA_OTHER_PEM, Algorithm::RS256, "rsa-2"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let id = check(&a, &idp, &rotated).await.unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(idp.hits(), 2);
    check(&a, &idp, &rotated).await.unwrap();
    assert_eq!(idp.hits(), 2, "known keys are served from the cache");
}

#[tokio::test]
async fn a_burst_of_first_requests_waits_for_the_one_key_fetch() {
    let idp = TestIdp::start().await;
    idp.jwks_delay_ms
        .store(300, std::sync::atomic::Ordering::Relaxed);
    let a = std::sync::Arc::new(authenticator());
    let token = sign(
        RSA_PEM,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(&idp.issuer, RESOURCE, "alice", &[]),
    );
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (a, token, issuer) = (a.clone(), token.clone(), idp.issuer.clone());
        calls.spawn(async move {
            // Spread over the fetch: some arrive before it starts, most while it is on its way.
            tokio::time::sleep(Duration::from_millis(i * 4)).await;
            a.authenticate(&auth(&issuer), RESOURCE, &token).await
        });
    }
    while let Some(r) = calls.join_next().await {
        assert_eq!(r.unwrap().map(|id| id.subject), Ok("alice".to_owned()));
    }
    assert_eq!(idp.hits(), 1, "one fetch served the whole burst");
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_invalid() {
    let metrics = crate::metrics::AuthMetrics::default();
    let a = Authenticator::new(&metrics);
    let issuer = "http://127.0.0.1:9"; // discard port: nothing listens
    let t = sign(
        RSA_PEM,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(issuer, RESOURCE, "a", &[]),
    );
    assert_eq!(
        a.authenticate(&auth(issuer), RESOURCE, &t).await,
        Err(AuthError::Unavailable)
    );
    assert!(metrics.jwks_fetch_failed.get() >= 1);
}

#[test]
fn metadata_urls_insert_the_well_known_segment() {
    assert_eq!(
        metadata_url("http://127.0.0.1:8080/mcp"),
        "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(
        metadata_url("https://x.example/team/mcp"),
        "https://x.example/.well-known/oauth-protected-resource/team/mcp"
    );
    let mut h = HeaderMap::new();
    h.insert("host", "evil\"host".parse().unwrap());
    let cfg = portal_config(McpPortalSpec::default(), vec![], vec![]);
    assert_eq!(resource_uri(&cfg, &h), "http://localhost/mcp");
}

// ---- over HTTP, with a recording upstream ---------------------------------------------------

/// An upstream MCP server with a read tool `peek` and a write tool `poke` that records every
/// HTTP request's headers.
#[derive(Clone)]
struct Recorder;

impl ServerHandler for Recorder {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = || Arc::new(json!({"type": "object"}).as_object().unwrap().clone());
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("peek", "read", schema())
                .with_annotations(ToolAnnotations::new().read_only(true)),
            Tool::new("poke", "write", schema()),
        ]))
    }

    async fn call_tool(
        &self,
        r: CallToolRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("called {}", r.name))]).into())
    }
}

type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

async fn start_recorder(seen: Seen) -> String {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let svc: StreamableHttpService<Recorder, LocalSessionManager> = StreamableHttpService::new(
        || Ok(Recorder),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    async fn record(
        axum::extract::State(seen): axum::extract::State<Seen>,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        seen.lock().unwrap().push((
            parts.headers.clone(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
        next.run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await
    }
    let app = axum::Router::new()
        .route_service("/mcp", svc)
        .layer(axum::middleware::from_fn_with_state(seen, record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn portal_config(
    spec: McpPortalSpec,
    servers: Vec<ServerConfig>,
    policies: Vec<crds::McpPolicy>,
) -> PortalConfig {
    PortalConfig {
        name: "p".into(),
        spec,
        servers,
        policies,
        session_key: None,
        audit_key: None,
        max_body_bytes: 1 << 20,
        pins: Default::default(),
        identity_key: None,
        llm: None,
        rate_limit_store: None,
    }
}

fn grant(name: &str, group: &str, access: Access, limits: Option<PolicyLimits>) -> crds::McpPolicy {
    crds::McpPolicy::new(
        name,
        McpPolicySpec {
            subjects: vec![PolicySubject {
                group: Some(group.into()),
                ..Default::default()
            }],
            rules: vec![ToolRule {
                effect: Effect::Allow,
                access,
                ..Default::default()
            }],
            limits,
            ..Default::default()
        },
    )
}

struct Fixture {
    idp: TestIdp,
    url: String,
    resource: String,
    seen: Seen,
    http: reqwest::Client,
    portal: Arc<Portal>,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn fixture() -> Fixture {
    let idp = TestIdp::start().await;
    let seen: Seen = Arc::default();
    let upstream = start_recorder(seen.clone()).await;
    let spec = McpPortalSpec {
        auth: Some(auth(&idp.issuer)),
        ..Default::default()
    };
    let servers = vec![ServerConfig {
        name: "rec".into(),
        prefix: "rec".into(),
        timeout: Duration::from_secs(5),
        transport: Transport::StreamableHttp {
            url: upstream,
            headers: vec![("X-Api-Key".into(), "upstream-secret".into())],
        },
        overrides: vec![],
        oauth: None,
        identity: None,
    }];
    let limits = PolicyLimits {
        calls_per_minute: None,
        calls_per_minute_per_tool: Some(3),
        burst: None,
    };
    let policies = vec![
        grant("finance-read", "finance", Access::Read, None),
        grant("eng-write", "engineering", Access::Write, None),
        grant("limited", "limited", Access::Read, Some(limits)),
    ];
    let shutdown = CancellationToken::new();
    let portal = Portal::start(
        portal_config(spec, servers, policies),
        None,
        shutdown.clone(),
    )
    .await
    .unwrap();
    portal.upstreams.settled(Duration::from_secs(10)).await;
    for _ in 0..100 {
        if portal.catalog().tools.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        portal.catalog().tools.len(),
        2,
        "the recording upstream's tools are in the catalog"
    );
    let (listener, addr) = crate::http::bind("127.0.0.1:0").await.unwrap();
    let router = crate::http::app(
        portal.clone(),
        &crate::http::ServeOptions { loopback: true },
    );
    tokio::spawn(crate::http::serve(listener, router, shutdown.clone()));
    Fixture {
        idp,
        url: format!("http://{addr}/mcp"),
        resource: format!("http://{addr}/mcp"),
        seen,
        http: crate::tls::client_builder().build().unwrap(),
        portal,
        shutdown,
    }
}

impl Fixture {
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        sign(
            RSA_PEM,
            Algorithm::RS256,
            Some("rsa-1"),
            &claims(&self.idp.issuer, &self.resource, sub, groups),
        )
    }

    /// A stateless 2026-07-28 request; returns (status, headers, JSON-RPC message or body).
    async fn rpc(
        &self,
        token: Option<&str>,
        method: &str,
        params: Value,
    ) -> (u16, HeaderMap, Value) {
        let mut params = params;
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}
        });
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = params.get("name").and_then(|n| n.as_str()) {
            req = req.header("mcp-name", name);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
            )
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        (status, headers, message(&body))
    }

    fn upstream_calls(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b.contains("\"tools/call\""))
            .count()
    }
}

fn message(body: &str) -> Value {
    let payload = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .rfind(|d| !d.is_empty())
        .unwrap_or(body);
    serde_json::from_str(payload).unwrap_or(Value::String(body.to_owned()))
}

fn tool_names(m: &Value) -> Vec<String> {
    m["result"]["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["name"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn no_token_gets_401_pointing_at_the_metadata_and_nothing_reaches_upstream() {
    let f = fixture().await;
    let before = f.seen.lock().unwrap().len();
    let (status, headers, _) = f.rpc(None, "tools/list", json!({})).await;
    assert_eq!(status, 401);
    let www = headers["www-authenticate"].to_str().unwrap();
    let meta = f
        .url
        .replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(
        www,
        format!("Bearer resource_metadata=\"{meta}\", scope=\"mcp\"")
    );
    let doc: Value = f
        .http
        .get(&meta)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], f.resource.as_str());
    assert_eq!(doc["authorization_servers"], json!([f.idp.issuer]));
    assert_eq!(doc["scopes_supported"], json!(["mcp"]));
    let root: Value = f
        .http
        .get(
            f.url
                .replace("/mcp", "/.well-known/oauth-protected-resource"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root, doc);
    assert_eq!(f.seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn invalid_tokens_get_401_invalid_token_and_never_reach_upstream() {
    let f = fixture().await;
    let good = claims(&f.idp.issuer, &f.resource, "alice", &["engineering"]);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let rs = |c: &Value| sign(RSA_PEM, Algorithm::RS256, Some("rsa-1"), c);
    let tokens = [
        rs(&with("exp", json!(now() - 300))),
        rs(&with("nbf", json!(now() + 300))),
        rs(&with("iss", json!("http://evil.test"))),
        rs(&with("aud", json!("http://127.0.0.1:1/mcp"))),
        unsigned(&good),
        sign(RSA_PUBLIC_PEM, Algorithm::HS256, Some("rsa-1"), &good),
        sign(RSA_OTHER_PEM, Algorithm::RS256, Some("rsa-9"), &good),
        sign(RSA_OTHER_PEM, Algorithm::RS256, Some("rsa-1"), &good),
    ];
    for t in &tokens {
        let (status, headers, _) = f
            .rpc(
                Some(t),
                "tools/call",
                json!({"name": "rec_poke", "arguments": {}}),
            )
            .await;
        assert_eq!(status, 401, "{t}");
        let www = headers["www-authenticate"].to_str().unwrap();
        assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
        assert!(www.contains("resource_metadata="), "{www}");
    }
    assert_eq!(f.upstream_calls(), 0);
    // Not a bearer token at all.
    let r = f
        .http
        .post(&f.url)
        .header("authorization", "Basic YTpi")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Missing scope: 403 insufficient_scope (step-up).
    let t = rs(&with("scope", json!("openid")));
    let (status, headers, _) = f.rpc(Some(&t), "tools/list", json!({})).await;
    assert_eq!(status, 403);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    assert_eq!(
        f.portal.metrics.auth.invalid_token.get(),
        tokens.len() as u64 + 1
    );
}

#[tokio::test]
async fn each_group_sees_and_calls_exactly_its_tools_and_hidden_tools_look_unknown() {
    let f = fixture().await;
    let fin = f.token("alice", &["finance"]);
    let eng = f.token("bob", &["engineering"]);
    let none = f.token("eve", &["visitors"]);
    assert_eq!(
        tool_names(&f.rpc(Some(&fin), "tools/list", json!({})).await.2),
        ["rec_peek"]
    );
    assert_eq!(
        tool_names(&f.rpc(Some(&eng), "tools/list", json!({})).await.2),
        ["rec_peek", "rec_poke"]
    );
    assert!(tool_names(&f.rpc(Some(&none), "tools/list", json!({})).await.2).is_empty());

    let ok = f
        .rpc(
            Some(&fin),
            "tools/call",
            json!({"name": "rec_peek", "arguments": {}}),
        )
        .await
        .2;
    assert_eq!(ok["result"]["content"][0]["text"], "called peek", "{ok}");
    let hidden = f
        .rpc(
            Some(&fin),
            "tools/call",
            json!({"name": "rec_poke", "arguments": {}}),
        )
        .await
        .2;
    let unknown = f
        .rpc(
            Some(&fin),
            "tools/call",
            json!({"name": "rec_nope", "arguments": {}}),
        )
        .await
        .2;
    assert_eq!(
        hidden["error"]["message"], "Unknown tool: rec_poke",
        "{hidden}"
    );
    assert_eq!(unknown["error"]["message"], "Unknown tool: rec_nope");
    assert_eq!(hidden["error"]["code"], unknown["error"]["code"]);
    let ok = f
        .rpc(
            Some(&eng),
            "tools/call",
            json!({"name": "rec_poke", "arguments": {}}),
        )
        .await
        .2;
    assert_eq!(ok["result"]["content"][0]["text"], "called poke");
    // Two allowed calls reached the upstream, the denied ones did not.
    assert_eq!(f.upstream_calls(), 2);
}

#[tokio::test]
async fn the_upstream_never_sees_the_clients_authorization_header() {
    let f = fixture().await;
    let eng = f.token("bob", &["engineering"]);
    for tool in ["rec_peek", "rec_poke"] {
        f.rpc(
            Some(&eng),
            "tools/call",
            json!({"name": tool, "arguments": {}}),
        )
        .await;
    }
    f.rpc(Some(&eng), "tools/list", json!({})).await;
    let seen = f.seen.lock().unwrap();
    assert!(
        seen.len() >= 3,
        "the upstream saw the handshake and the calls"
    );
    for (headers, body) in seen.iter() {
        assert!(
            headers.get("authorization").is_none(),
            "Authorization reached the upstream: {headers:?}"
        );
        for v in headers.values() {
            assert!(
                !v.to_str().unwrap_or("").contains(&eng),
                "the token reached the upstream in a header"
            );
        }
        assert!(
            !body.contains(&eng),
            "the token reached the upstream in a body"
        );
        assert_eq!(
            headers["x-api-key"], "upstream-secret",
            "configured upstream headers are sent"
        );
    }
}

#[tokio::test]
async fn a_session_opened_by_one_subject_is_not_found_for_another() {
    let f = fixture().await;
    let alice = f.token("alice", &["finance"]);
    let bob = f.token("bob", &["finance"]);
    let init = f
        .http
        .post(&f.url)
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let list = |token: String| {
        f.http
            .post(&f.url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .body(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string())
            .send()
    };
    let r = list(bob).await.unwrap();
    assert_eq!(r.status(), 404, "another subject's session is unknown");
    let r = list(alice).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(tool_names(&message(&r.text().await.unwrap())), ["rec_peek"]);
}

#[tokio::test]
async fn per_tool_rate_limits_answer_with_a_clear_error_and_count() {
    let f = fixture().await;
    let t = f.token("lim", &["limited"]);
    for _ in 0..3 {
        let m = f
            .rpc(
                Some(&t),
                "tools/call",
                json!({"name": "rec_peek", "arguments": {}}),
            )
            .await
            .2;
        assert!(m.get("result").is_some(), "{m}");
    }
    let m = f
        .rpc(
            Some(&t),
            "tools/call",
            json!({"name": "rec_peek", "arguments": {}}),
        )
        .await
        .2;
    assert_eq!(
        m["error"]["code"],
        crate::portal::pipeline::RATE_LIMITED,
        "{m}"
    );
    let msg = m["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Rate limit exceeded: 3 calls per minute to this tool"),
        "{msg}"
    );
    assert!(m["error"]["data"]["retryAfterMs"].as_u64().unwrap() > 0);
    assert_eq!(f.upstream_calls(), 3);
    assert_eq!(f.portal.metrics.rate_limited.get(), 1);
}

#[tokio::test]
async fn admin_access_reports_what_a_subject_could_call_with_the_request_path_filter() {
    let f = fixture().await;
    let admin = crate::http::admin_app(f.portal.clone());
    use tower::ServiceExt as _;
    let get = |q: &'static str| {
        admin.clone().oneshot(
            axum::http::Request::get(format!("/admin/access?{q}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
    };
    let body = |r: axum::response::Response| async move {
        serde_json::from_slice::<Value>(
            &axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap(),
        )
        .unwrap()
    };
    let fin = body(get("subject=alice&group=finance").await.unwrap()).await;
    assert_eq!(fin["allowed"], json!(["rec_peek"]));
    assert_eq!(
        fin["tools"][1]["access"],
        json!({"decision": "deny", "reason": "writeNotGranted", "policy": "finance-read", "rule": 0})
    );
    let eng = body(get("subject=bob&group=engineering").await.unwrap()).await;
    assert_eq!(eng["allowed"], json!(["rec_peek", "rec_poke"]));
    assert_eq!(eng["servers"], json!(["rec"]));
    let anon = body(get("").await.unwrap()).await;
    assert_eq!(anon["allowed"], json!([]));
}

#[tokio::test]
async fn a_public_portal_serves_anonymous_users_and_has_no_metadata() {
    let shutdown = CancellationToken::new();
    let spec = McpPortalSpec {
        public: Some(true),
        ..Default::default()
    };
    let portal = Portal::start(portal_config(spec, vec![], vec![]), None, shutdown.clone())
        .await
        .unwrap();
    let app = crate::http::app(portal, &crate::http::ServeOptions { loopback: false });
    use tower::ServiceExt as _;
    let r = app
        .clone()
        .oneshot(
            axum::http::Request::post("/mcp")
                .header("host", "portal.test")
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(axum::body::Body::from(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "t", "version": "0"}}})
                    .to_string(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let r = app
        .oneshot(
            axum::http::Request::get("/.well-known/oauth-protected-resource/mcp")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    shutdown.cancel();
}
