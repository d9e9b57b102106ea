//! `make bench`: what authentication and authorization add to a tool call.
//!
//! 1. Token validation alone (JWKS cached): RS256 and ES256, microseconds per token.
//!    Then signing a user identity for an upstream (`spec.identity`): microseconds per token.
//! 2. The policy filter alone: `tools/list` filtering of a 500-tool catalog under 20 policies.
//! 3. End to end over loopback HTTP (stateless 2026-07-28 `tools/call`, one connection, sequential):
//!    a public portal vs the same portal requiring a bearer JWT and a McpPolicy, over the same
//!    in-process upstream. The difference is the added latency per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::McpPortalSpec;
use crds::policy::{Access, McpPolicySpec, Subject, ToolRule};
use crds::portal::PortalAuth;
use jsonwebtoken::Algorithm;
use proxy::auth::Authenticator;
use proxy::auth::testkit::{EC_PEM, RSA_PEM, TestIdp, claims, sign};
use proxy::config::{PortalConfig, ServerConfig, Transport};
use proxy::model::Identity;
use proxy::policy::PolicySet;
use proxy::portal::Portal;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Upstream;

impl ServerHandler for Upstream {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
    async fn list_tools(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = Arc::new(json!({"type": "object"}).as_object().unwrap().clone());
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("peek", "read", schema)
                .with_annotations(ToolAnnotations::new().read_only(true)),
        ]))
    }
    async fn call_tool(
        &self,
        _r: CallToolRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text("ok")]).into())
    }
}

async fn start_upstream() -> String {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let svc: StreamableHttpService<Upstream, LocalSessionManager> = StreamableHttpService::new(
        || Ok(Upstream),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_json_response(true),
    );
    let (listener, addr) = proxy::http::bind("127.0.0.1:0").await.unwrap();
    let app = axum::Router::new().route_service("/mcp", svc);
    tokio::spawn(proxy::http::serve(listener, app, CancellationToken::new()));
    format!("http://{addr}/mcp")
}

fn per_op(d: Duration, n: u32) -> f64 {
    d.as_secs_f64() * 1e6 / f64::from(n)
}

async fn start_portal(upstream: &str, auth: Option<PortalAuth>) -> (String, Arc<Portal>) {
    let public = auth.is_none();
    let spec = McpPortalSpec {
        public: public.then_some(true),
        auth,
        ..Default::default()
    };
    let policies = if public {
        vec![]
    } else {
        vec![crds::McpPolicy::new(
            "eng",
            McpPolicySpec {
                subjects: vec![Subject {
                    group: Some("engineering".into()),
                    ..Default::default()
                }],
                rules: vec![ToolRule {
                    access: Access::Write,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )]
    };
    let cfg = PortalConfig {
        name: "bench".into(),
        spec,
        servers: vec![ServerConfig {
            name: "up".into(),
            prefix: "up".into(),
            timeout: Duration::from_secs(5),
            transport: Transport::StreamableHttp {
                url: upstream.into(),
                headers: vec![],
            },
            overrides: vec![],
            oauth: None,
            identity: None,
        }],
        policies,
        session_key: None,
        audit_key: None,
        max_body_bytes: 1 << 20,
        pins: Default::default(),
        identity_key: None,
        llm: None,
        rate_limit_store: None,
    };
    let portal = Portal::start(cfg, None, CancellationToken::new())
        .await
        .expect("portal starts");
    portal.upstreams.settled(Duration::from_secs(10)).await;
    for _ in 0..100 {
        if !portal.catalog().tools.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (listener, addr) = proxy::http::bind("127.0.0.1:0").await.unwrap();
    let app = proxy::http::app(
        portal.clone(),
        &proxy::http::ServeOptions { loopback: true },
    );
    tokio::spawn(proxy::http::serve(listener, app, CancellationToken::new()));
    (format!("http://{addr}/mcp"), portal)
}

async fn calls(url: &str, token: Option<&str>, n: u32) -> Vec<Duration> {
    let http = proxy::tls::client_builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "up_peek", "arguments": {},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }}})
    .to_string();
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut req = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "up_peek")
            .body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let t0 = Instant::now();
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.contains("\"ok\""), "{text}");
        out.push(t0.elapsed());
    }
    out
}

fn summary(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = v.iter().map(|d| us(*d)).sum::<f64>() / v.len() as f64;
    (mean, us(v[v.len() / 2]), us(v[v.len() * 99 / 100]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u32 = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let idp = TestIdp::start().await;
    let resource_probe = "http://bench/mcp";

    // 1. Token validation alone.
    let a = Authenticator::new(&proxy::metrics::AuthMetrics::default());
    let pa = PortalAuth {
        issuer: idp.issuer.clone(),
        ..Default::default()
    };
    for (label, pem, alg, kid) in [
        ("RS256", RSA_PEM, Algorithm::RS256, "rsa-1"),
        ("ES256", EC_PEM, Algorithm::ES256, "ec-1"),
    ] {
        let t = sign(
            pem,
            alg,
            Some(kid),
            &claims(&idp.issuer, resource_probe, "bench", &["engineering"]),
        );
        a.authenticate(&pa, resource_probe, &t).await.unwrap();
        let k = 2000;
        let t0 = Instant::now();
        for _ in 0..k {
            a.authenticate(&pa, resource_probe, &t).await.unwrap();
        }
        println!(
            "auth/validate_{label}_cached_jwks: {:.1} us/token",
            per_op(t0.elapsed(), k)
        );
    }

    // 1b. Signing a user identity for an upstream that asks for one (`spec.identity`), once
    // per call.
    let ed25519 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIABis2UcDDO1xIvhvAb/Wb5axz7nn40fNnk/S/xG6m9A\n-----END PRIVATE KEY-----\n";
    let who = Identity::user("bench", ["engineering"]);
    let wanted = proxy::model::IdentityConfig {
        header: proxy::model::identity::DEFAULT_HEADER.into(),
        ttl: proxy::model::identity::DEFAULT_TTL,
        claims: vec![],
    };
    for (label, pem) in [("ES256", EC_PEM), ("EdDSA", ed25519)] {
        let signer = proxy::identity::Signer::from_pem(pem.as_bytes(), "bench").unwrap();
        let k = 2000;
        let t0 = Instant::now();
        for _ in 0..k {
            signer.sign(&who, "s0", &wanted).unwrap().unwrap();
        }
        println!(
            "auth/identity_sign_{label}: {:.1} us/token",
            per_op(t0.elapsed(), k)
        );
    }

    // 2. The policy filter alone.
    let servers: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let policies: Vec<crds::McpPolicy> = (0..20)
        .map(|i| {
            crds::McpPolicy::new(
                &format!("p{i}"),
                McpPolicySpec {
                    subjects: vec![Subject {
                        group: Some(format!("g{}", i % 5)),
                        ..Default::default()
                    }],
                    rules: vec![
                        ToolRule {
                            servers: vec![format!("s{}", i % 10)],
                            tools: vec!["get_*".into(), "list_*".into()],
                            ..Default::default()
                        },
                        ToolRule {
                            effect: crds::policy::Effect::Deny,
                            tools: vec!["*_admin".into()],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
            )
        })
        .collect();
    let set = PolicySet::compile(&policies, false);
    let inputs: Vec<_> = servers
        .iter()
        .map(|s| {
            let schema = Arc::new(serde_json::Map::new());
            let tools = (0..50)
                .map(|j| {
                    let name = match j % 3 {
                        0 => format!("get_{j}"),
                        1 => format!("set_{j}"),
                        _ => format!("list_{j}_admin"),
                    };
                    Tool::new(name, "d", schema.clone())
                        .with_annotations(ToolAnnotations::new().read_only(j % 3 != 1))
                })
                .collect();
            (
                ServerConfig {
                    name: s.clone(),
                    prefix: s.clone(),
                    timeout: Duration::from_secs(1),
                    transport: Transport::Stdio {
                        command: "true".into(),
                        args: vec![],
                        env: vec![],
                    },
                    overrides: vec![],
                    oauth: None,
                    identity: None,
                },
                Arc::new(proxy::upstream::Lists {
                    tools,
                    ..Default::default()
                }),
            )
        })
        .collect();
    let catalog = proxy::catalog::Catalog::build(&inputs);
    let id = Identity::user("bench", ["g1", "g3"]);
    let k = 2000;
    let t0 = Instant::now();
    let mut visible = 0;
    for _ in 0..k {
        visible = set.visible_tools(&id, &catalog).count();
    }
    println!(
        "policy/filter_500_tools_20_policies: {:.1} us/list ({visible} visible)",
        per_op(t0.elapsed(), k)
    );
    let t0 = Instant::now();
    for _ in 0..k * 10 {
        std::hint::black_box(set.authorize_call(&id, &catalog, "s1_get_3"));
    }
    println!(
        "policy/authorize_call: {:.2} us/call",
        per_op(t0.elapsed(), k * 10)
    );

    // 3. End to end.
    let upstream = start_upstream().await;
    let (public_url, _p1) = start_portal(&upstream, None).await;
    let (auth_url_, _p2) = start_portal(
        &upstream,
        Some(PortalAuth {
            issuer: idp.issuer.clone(),
            ..Default::default()
        }),
    )
    .await;
    let token = sign(
        RSA_PEM,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(&idp.issuer, &auth_url_, "bench", &["engineering"]),
    );
    // Warm up both (connections, JWKS).
    calls(&public_url, None, 50).await;
    calls(&auth_url_, Some(&token), 50).await;
    let mut public = Vec::new();
    let mut authed = Vec::new();
    // Interleave rounds so background load hits both alike.
    for _ in 0..4 {
        public.extend(calls(&public_url, None, n / 4).await);
        authed.extend(calls(&auth_url_, Some(&token), n / 4).await);
    }
    let (pm, p50, p99) = summary(public);
    let (am, a50, a99) = summary(authed);
    println!(
        "e2e/public_portal_call: mean {pm:.0} us, p50 {p50:.0} us, p99 {p99:.0} us ({n} sequential calls)"
    );
    println!(
        "e2e/auth_portal_call (RS256 JWT + policy): mean {am:.0} us, p50 {a50:.0} us, p99 {a99:.0} us"
    );
    println!(
        "e2e/added_latency_per_call: mean {:.0} us, p50 {:.0} us",
        am - pm,
        a50 - p50
    );
}
