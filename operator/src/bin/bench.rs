//! `make bench` (operator part): reconcile time of one portal over 50 McpServers and 20
//! McpPolicies (read from filled caches, as the watches fill them) against an in-process mocked
//! API server, the time of the pure render alone, and
//! the process's memory. Prints figures; asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::server::{DiscoveredTools, RemoteServer};
use crds::{
    Condition, McpPolicy, McpPolicySpec, McpPortal, McpPortalSpec, McpServer, McpServerSpec,
    McpServerStatus,
};
use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;
use kube::{Client, Resource};
use operator::controller::stores::Stores;
use operator::controller::{self, Context};
use operator::desired::RenderOptions;
use operator::metrics::Metrics;
use operator::probe::Prober;
use serde_json::{Value, json};

const SERVERS: usize = 50;
const POLICIES: usize = 20;
const ITERATIONS: usize = 200;

struct NoProbe;
impl Prober for NoProbe {
    fn probe(
        &self,
        _: String,
        _: Vec<(String, String)>,
    ) -> BoxFuture<'static, operator::Result<Vec<Value>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn named<K: Resource<DynamicType = ()>>(mut k: K, name: &str) -> K {
    let m = k.meta_mut();
    m.name = Some(name.into());
    m.namespace = Some("bench".into());
    m.uid = Some(format!("uid-{name}"));
    m.generation = Some(1);
    m.labels = Some([("team".to_owned(), "bench".to_owned())].into());
    k
}

fn fixtures() -> (McpPortal, Vec<McpServer>, Vec<McpPolicy>) {
    let servers = (0..SERVERS)
        .map(|i| {
            let mut s = named(
                McpServer::new(
                    "",
                    McpServerSpec {
                        remote: Some(RemoteServer {
                            url: format!("http://server-{i}.bench.svc/mcp"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
                &format!("server-{i}"),
            );
            s.status = Some(McpServerStatus {
                tools: Some(DiscoveredTools {
                    count: 20,
                    names: (0..20).map(|t| format!("tool_{t}")).collect(),
                    hash: "h".into(),
                    ..Default::default()
                }),
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
            s
        })
        .collect();
    let policies = (0..POLICIES)
        .map(|i| {
            let spec: McpPolicySpec = serde_json::from_value(json!({
                "subjects": [{"group": format!("group-{i}")}],
                "rules": [{"servers": ["server-*"], "tools": ["tool_*"], "access": "read"}],
                "dlp": [{"name": "cards", "detectors": ["creditCard"], "patterns": ["\\bACME-[0-9]{6}\\b"], "action": "redact"}],
            }))
            .unwrap();
            named(McpPolicy::new("", spec), &format!("policy-{i}"))
        })
        .collect();
    let spec: McpPortalSpec = serde_json::from_value(json!({
        "public": true,
        "servers": {"selector": {"matchLabels": {"team": "bench"}}},
    }))
    .unwrap();
    (named(McpPortal::new("", spec), "portal"), servers, policies)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (portal, servers, policies) = fixtures();
    let portal_json = serde_json::to_value(&portal).unwrap();

    // The mocked API server: an object read before its apply is absent, applies echo the body
    // back, the status read and write answer with the portal.
    let svc = tower::service_fn(move |req: Request<Body>| {
        let portal_json = portal_json.clone();
        async move {
            let path = req.uri().path().to_owned();
            let read = req.method() == http::Method::GET;
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            let response = if path.ends_with("/status") {
                let mut p = portal_json;
                let patch: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                p["status"] = patch["status"].clone();
                Response::new(Body::from(serde_json::to_vec(&p).unwrap()))
            } else if read {
                let absent = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
                let mut r = Response::new(Body::from(serde_json::to_vec(&absent).unwrap()));
                *r.status_mut() = http::StatusCode::NOT_FOUND;
                r
            } else {
                Response::new(Body::from(bytes.to_vec()))
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let client = Client::new(svc, "bench");
    let ctx = Arc::new(Context::new(
        client,
        RenderOptions::default(),
        Arc::new(NoProbe),
        Arc::new(Metrics::default()),
        Stores::filled(
            servers.clone(),
            policies.clone(),
            vec![portal.clone()],
            Vec::new(),
        ),
    ));
    let portal = Arc::new(portal);

    let rss_before = rss_kib("VmRSS:");
    // Warm up, then measure.
    for _ in 0..10 {
        controller::portal::reconcile(portal.clone(), ctx.clone())
            .await
            .unwrap();
    }
    let mut times = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        controller::portal::reconcile(portal.clone(), ctx.clone())
            .await
            .unwrap();
        times.push(t.elapsed());
    }
    times.sort();

    let selected: Vec<&McpServer> = crds::select::selected_servers(&portal, &servers);
    let bound: Vec<&McpPolicy> = crds::select::bound_policies(&portal, &policies);
    let mut render_times = Vec::with_capacity(ITERATIONS);
    let mut config_bytes = 0;
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        let objs = operator::desired::portal::objects(
            &portal,
            &selected,
            &bound,
            &Default::default(),
            &RenderOptions::default(),
        )
        .unwrap();
        render_times.push(t.elapsed());
        config_bytes = objs.config_map.data.as_ref().unwrap()["manifests.yaml"].len();
    }
    render_times.sort();

    println!(
        "operator bench: one McpPortal over {SERVERS} McpServers and {POLICIES} McpPolicies, mocked API (in-process)"
    );
    println!(
        "  reconcile (stores, 4 applies, status):     median {:?}  p95 {:?}  max {:?}  ({ITERATIONS} runs)",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[times.len() - 1]
    );
    println!(
        "  pure render (spec -> objects):             median {:?}  p95 {:?}",
        percentile(&render_times, 0.5),
        percentile(&render_times, 0.95)
    );
    println!("  rendered config: {config_bytes} bytes of manifests");
    println!(
        "  RSS: {} KiB before, {} KiB after, peak {} KiB",
        rss_before,
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:")
    );
}
