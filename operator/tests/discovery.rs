//! Shadow MCP discovery against kube-rs's mocked API server: one pass over Services and Pods
//! of each kind (MCP by port name, by appProtocol, by probe only, a plain HTTP service, a
//! JSON-RPC service that is not MCP, one backed by an McpServer, the portal's own Service, a
//! lone Pod), asserting every request, the Events, the reported list, the metrics, and the
//! NetworkPolicies (applied only with confine on).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use operator::controller::Context;
use operator::desired::RenderOptions;
use operator::discovery::probe::{ProbeOutcome, ShadowProber};
use operator::discovery::{Discovery, DiscoveryOptions};
use operator::metrics::Metrics;
use operator::probe::Prober;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The tool prober is not used by discovery.
struct NoToolProber;

impl Prober for NoToolProber {
    fn probe(
        &self,
        url: String,
        _: Vec<(String, String)>,
    ) -> BoxFuture<'static, operator::Result<Vec<Value>>> {
        panic!("discovery must not list tools ({url})")
    }
}

/// Answers discovery probes from a table keyed by base URL; records what was probed.
#[derive(Default)]
struct FakeShadowProber {
    answers: HashMap<String, ProbeOutcome>,
    probed: Mutex<Vec<String>>,
}

impl ShadowProber for FakeShadowProber {
    fn probe(&self, base_url: String) -> BoxFuture<'static, ProbeOutcome> {
        self.probed.lock().unwrap().push(base_url.clone());
        let o = self
            .answers
            .get(&base_url)
            .cloned()
            .unwrap_or_else(|| ProbeOutcome::Inconclusive("connection refused".into()));
        Box::pin(async move { o })
    }
}

struct ApiServer(Handle);

impl ApiServer {
    async fn next(
        &mut self,
        method: Method,
        path: &str,
    ) -> (
        Request<Body>,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"))
            .expect("a request");
        assert_eq!(req.method(), method, "method of {}", req.uri());
        assert_eq!(req.uri().path(), path, "path");
        (req, send)
    }

    async fn respond(
        &mut self,
        method: Method,
        path: &str,
        status: StatusCode,
        answer: impl FnOnce(Value) -> Value,
    ) -> (Value, String) {
        let (req, send) = self.next(method, path).await;
        let query = req.uri().query().unwrap_or_default().to_owned();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let a = answer(body.clone());
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&a).unwrap()))
                .unwrap(),
        );
        (body, query)
    }

    async fn list(&mut self, path: &str, items: Vec<Value>) {
        self.respond(Method::GET, path, StatusCode::OK, move |_| {
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
        })
        .await;
    }

    async fn event(&mut self, ns: &str) -> Value {
        let path = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events");
        let (body, _) = self
            .respond(Method::POST, &path, StatusCode::CREATED, |b| b)
            .await;
        assert_eq!(body["reason"], "ShadowMcp", "{body}");
        assert_eq!(body["type"], "Warning");
        body
    }

    async fn done(&mut self) {
        let extra = tokio::time::timeout(Duration::from_millis(100), self.0.next_request()).await;
        if let Ok(Some((req, _))) = extra {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}

/// Waits for a pass; a pass blocked on a request the test did not expect fails here, not hangs.
async fn finish<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the pass did not finish: it made a request the test did not answer")
        .unwrap()
}

fn service(name: &str, ports: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
           "spec": {"selector": {"app": name}, "clusterIP": "10.96.0.10", "ports": ports}})
}

/// The Services and Pods of every kind, and the McpServer and McpPortal that sanction two.
fn inventory() -> (Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut portal_svc = service(
        "eng-portal",
        json!([{"name": "http", "port": 80, "targetPort": "mcp"}]),
    );
    portal_svc["metadata"]["ownerReferences"] = json!([{"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPortal", "name": "eng", "uid": "uid-portal-eng", "controller": true}]);
    let services = vec![
        service(
            "by-name",
            json!([{"name": "mcp", "port": 80, "targetPort": 8000}]),
        ),
        service(
            "by-proto",
            json!([{"name": "api", "port": 8080, "appProtocol": "kubernetes.io/mcp"}]),
        ),
        service("probe-only", json!([{"name": "http", "port": 80}])),
        service("web", json!([{"name": "http", "port": 80}])),
        service("jsonrpc", json!([{"name": "http", "port": 80}])),
        service("backed", json!([{"name": "mcp", "port": 80}])),
        portal_svc,
        service("db", json!([{"name": "postgres", "port": 5432}])),
    ];
    let pods = vec![
        json!({"metadata": {"name": "web-1", "namespace": "team", "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"name": "http", "containerPort": 80}]}]},
               "status": {"phase": "Running", "podIP": "10.1.0.2"}}),
        json!({"metadata": {"name": "agent-tools", "namespace": "team", "uid": "uid-agent-tools", "labels": {"app": "agent-tools"}},
               "spec": {"containers": [{"name": "c", "image": "example/tools", "ports": [{"name": "mcp", "containerPort": 3000}]}]},
               "status": {"phase": "Running", "podIP": "10.1.0.3"}}),
    ];
    let servers = vec![
        json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "wiki", "namespace": "portals", "uid": "uid-wiki"},
        "spec": {"remote": {"url": "http://backed.team.svc.cluster.local/mcp"}}}),
    ];
    let portals = vec![
        json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPortal",
        "metadata": {"name": "eng", "namespace": "team", "uid": "uid-portal-eng"},
        "spec": {"servers": {"names": ["wiki"]}, "public": true}}),
    ];
    (services, pods, servers, portals)
}

fn url(svc: &str, port: u16) -> String {
    format!("http://{svc}.team.svc.cluster.local:{port}")
}

fn prober() -> Arc<FakeShadowProber> {
    let mut answers = HashMap::new();
    answers.insert(
        url("by-proto", 8080),
        ProbeOutcome::Mcp("server/discover answered".into()),
    );
    answers.insert(
        url("probe-only", 80),
        ProbeOutcome::Mcp("legacy MCP (wants a session)".into()),
    );
    answers.insert(
        url("web", 80),
        ProbeOutcome::NotMcp("HTTP 404, not JSON-RPC".into()),
    );
    answers.insert(
        url("jsonrpc", 80),
        ProbeOutcome::NotMcp("JSON-RPC error -32601 Method not found".into()),
    );
    answers.insert(
        "http://10.1.0.3:3000".into(),
        ProbeOutcome::Mcp("server/discover answered".into()),
    );
    Arc::new(FakeShadowProber {
        answers,
        probed: Mutex::default(),
    })
}

fn discovery(
    opts: DiscoveryOptions,
    prober: Arc<FakeShadowProber>,
) -> (Arc<Discovery>, Arc<Metrics>, ApiServer) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(
        client,
        RenderOptions::default(),
        Arc::new(NoToolProber),
        metrics.clone(),
        operator::controller::stores::Stores::new().0,
    ));
    (
        Arc::new(Discovery::new(ctx, prober, opts)),
        metrics,
        ApiServer(handle),
    )
}

const EXPECTED: [(&str, &str); 4] = [
    ("agent-tools", "10.1.0.3:3000"),
    ("by-name", "by-name.team.svc:80"),
    ("by-proto", "by-proto.team.svc:8080"),
    ("probe-only", "probe-only.team.svc:80"),
];

#[tokio::test]
async fn one_pass_reports_each_kind_of_shadow_endpoint_once_and_never_the_sanctioned_ones() {
    let fake = prober();
    let (d, metrics, mut api) = discovery(DiscoveryOptions::default(), fake.clone());
    let (services, pods, servers, portals) = inventory();
    let task = tokio::spawn({
        let d = d.clone();
        async move { d.pass().await }
    });
    api.list("/api/v1/services", services.clone()).await;
    api.list("/api/v1/pods", pods.clone()).await;
    api.list("/apis/portcullis.dev/v1alpha1/mcpservers", servers.clone())
        .await;
    api.list("/apis/portcullis.dev/v1alpha1/mcpportals", portals.clone())
        .await;
    let mut regarding = Vec::new();
    for _ in 0..EXPECTED.len() {
        let ev = api.event("team").await;
        assert!(
            ev["note"]
                .as_str()
                .unwrap()
                .contains("not backed by an McpServer"),
            "{ev}"
        );
        regarding.push((
            ev["regarding"]["kind"].as_str().unwrap().to_owned(),
            ev["regarding"]["name"].as_str().unwrap().to_owned(),
            ev["note"].as_str().unwrap().to_owned(),
        ));
    }
    let found = finish(task).await.expect("the pass succeeds");
    api.done().await;

    // The reported list: exactly the four shadow endpoints, with evidence and probe result.
    let got: Vec<(&str, &str)> = found
        .iter()
        .map(|e| (e.name.as_str(), e.endpoint.as_str()))
        .collect();
    let mut want = EXPECTED.to_vec();
    want.sort_by_key(|(n, _)| *n);
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|(n, _)| *n);
    assert_eq!(got_sorted, want);
    let by = |n: &str| found.iter().find(|e| e.name == n).unwrap();
    assert_eq!(by("by-name").evidence, ["port name `mcp`"]);
    assert!(
        matches!(by("by-name").probe, ProbeOutcome::Inconclusive(_)),
        "strong evidence is reported without a confirming probe"
    );
    assert_eq!(by("by-proto").evidence, ["appProtocol `kubernetes.io/mcp`"]);
    assert!(by("probe-only").probe.is_mcp());
    assert_eq!(by("agent-tools").workload, "Pod/agent-tools");
    assert_eq!(by("agent-tools").evidence, ["container port name `mcp`"]);

    // Events on the Service or Pod itself.
    assert!(
        regarding
            .iter()
            .any(|(k, n, _)| k == "Pod" && n == "agent-tools")
    );
    assert!(regarding.iter().any(|(k, n, note)| k == "Service"
        && n == "by-name"
        && note.contains("by-name.team.svc:80")));
    assert!(
        !regarding
            .iter()
            .any(|(_, _, note)| note.contains("NetworkPolicy")),
        "no confinement without --confine-shadow"
    );

    // Sanctioned endpoints are never probed; non-MCP HTTP and JSON-RPC services are probed
    // and dropped.
    let probed = fake.probed.lock().unwrap().clone();
    assert!(
        !probed
            .iter()
            .any(|u| u.contains("backed") || u.contains("eng-portal") || u.contains("db.")),
        "{probed:?}"
    );
    assert!(probed.contains(&url("web", 80)) && probed.contains(&url("jsonrpc", 80)));
    assert_eq!(probed.len(), 6, "{probed:?}");

    let text = metrics.encode();
    assert!(
        text.contains("portcullis_operator_shadow_mcp_endpoints{namespace=\"team\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_operator_shadow_mcp_probes_total{outcome=\"mcp\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_operator_shadow_mcp_probes_total{outcome=\"notMcp\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_operator_shadow_mcp_scans_total{outcome=\"ok\"} 1"),
        "{text}"
    );

    // A second pass with the same findings publishes no new Events; when the lone pod goes,
    // the gauge follows.
    let task = tokio::spawn({
        let d = d.clone();
        async move { d.pass().await }
    });
    api.list("/api/v1/services", services).await;
    api.list("/api/v1/pods", pods[..1].to_vec()).await;
    api.list("/apis/portcullis.dev/v1alpha1/mcpservers", servers)
        .await;
    api.list("/apis/portcullis.dev/v1alpha1/mcpportals", portals)
        .await;
    let found = finish(task).await.unwrap();
    api.done().await;
    assert_eq!(found.len(), 3);
    assert!(
        metrics
            .encode()
            .contains("portcullis_operator_shadow_mcp_endpoints{namespace=\"team\"} 3")
    );
}

#[tokio::test]
async fn missing_crds_mean_nothing_is_backed_and_a_failed_list_counts_a_failed_pass() {
    let (d, metrics, mut api) = discovery(DiscoveryOptions::default(), prober());
    let task = tokio::spawn({
        let d = d.clone();
        async move { d.pass().await }
    });
    api.list(
        "/api/v1/services",
        vec![service("backed", json!([{"name": "mcp", "port": 80}]))],
    )
    .await;
    api.list("/api/v1/pods", vec![]).await;
    for path in [
        "/apis/portcullis.dev/v1alpha1/mcpservers",
        "/apis/portcullis.dev/v1alpha1/mcpportals",
    ] {
        api.respond(Method::GET, path, StatusCode::NOT_FOUND, |_| {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
        })
        .await;
    }
    api.event("team").await;
    assert_eq!(finish(task).await.unwrap().len(), 1);

    let task = tokio::spawn({
        let d = d.clone();
        async move { d.pass().await }
    });
    api.respond(Method::GET, "/api/v1/services", StatusCode::FORBIDDEN, |_| {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "services is forbidden"})
    })
    .await;
    let err = task
        .await
        .unwrap()
        .expect_err("a forbidden list fails the pass");
    assert!(err.to_string().contains("forbidden"), "{err}");
    api.done().await;
    assert!(
        metrics
            .encode()
            .contains("portcullis_operator_shadow_mcp_scans_total{outcome=\"error\"} 1")
    );
}

#[tokio::test]
async fn with_confine_on_each_shadow_object_gets_a_network_policy_and_stale_ones_are_deleted() {
    let opts = DiscoveryOptions {
        namespaces: vec!["team".into()],
        confine: true,
        operator_namespace: Some("portcullis-system".into()),
        ..Default::default()
    };
    let (d, _metrics, mut api) = discovery(opts, prober());
    let (services, pods, servers, portals) = inventory();
    let task = tokio::spawn({
        let d = d.clone();
        async move { d.pass().await }
    });
    api.list("/api/v1/namespaces/team/services", services).await;
    api.list("/api/v1/namespaces/team/pods", pods).await;
    api.list("/apis/portcullis.dev/v1alpha1/mcpservers", servers)
        .await;
    api.list("/apis/portcullis.dev/v1alpha1/mcpportals", portals)
        .await;
    for _ in 0..EXPECTED.len() {
        let ev = api.event("team").await;
        assert!(
            ev["note"]
                .as_str()
                .unwrap()
                .contains("; confined by NetworkPolicy shadow-mcp-"),
            "{ev}"
        );
    }
    let mut applied = Vec::new();
    for name in [
        "shadow-mcp-pod-agent-tools",
        "shadow-mcp-svc-by-name",
        "shadow-mcp-svc-by-proto",
        "shadow-mcp-svc-probe-only",
    ] {
        let path = format!("/apis/networking.k8s.io/v1/namespaces/team/networkpolicies/{name}");
        // The read of apply_settled: absent, so it applies.
        api.respond(Method::GET, &path, StatusCode::NOT_FOUND, |_| {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
        })
        .await;
        let (body, query) = api
            .respond(Method::PATCH, &path, StatusCode::OK, |b| b)
            .await;
        assert!(
            query.contains("fieldManager=portcullis-operator") && query.contains("force=true"),
            "{query}"
        );
        applied.push(body);
    }
    let stale = json!({"metadata": {"name": "shadow-mcp-svc-gone", "namespace": "team", "labels": {"portcullis.dev/shadow-mcp": "true"}}});
    let kept = json!({"metadata": {"name": "shadow-mcp-svc-by-name", "namespace": "team", "labels": {"portcullis.dev/shadow-mcp": "true"}}});
    let (_, query) = api
        .respond(Method::GET, "/apis/networking.k8s.io/v1/namespaces/team/networkpolicies", StatusCode::OK, move |_| {
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": [stale, kept]})
        })
        .await;
    assert!(
        query.contains("labelSelector=portcullis.dev%2Fshadow-mcp%3Dtrue"),
        "{query}"
    );
    api.respond(
        Method::DELETE,
        "/apis/networking.k8s.io/v1/namespaces/team/networkpolicies/shadow-mcp-svc-gone",
        StatusCode::OK,
        |_| json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    )
    .await;
    finish(task).await.unwrap();
    api.done().await;

    let by_name = applied
        .iter()
        .find(|p| p["metadata"]["name"] == "shadow-mcp-svc-by-name")
        .unwrap();
    assert_eq!(by_name["kind"], "NetworkPolicy");
    assert_eq!(
        by_name["spec"]["podSelector"]["matchLabels"],
        json!({"app": "by-name"})
    );
    let from = &by_name["spec"]["ingress"][0]["from"];
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["portcullis.dev/component"],
        "portal"
    );
    assert_eq!(
        from[0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["team"]),
        "namespaces with an McpPortal"
    );
    assert_eq!(
        from[1]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["portcullis-system"])
    );
    assert_eq!(
        by_name["spec"]["ingress"][0]["ports"],
        json!([{"port": 8000, "protocol": "TCP"}])
    );
    let lone = applied
        .iter()
        .find(|p| p["metadata"]["name"] == "shadow-mcp-pod-agent-tools")
        .unwrap();
    assert_eq!(lone["metadata"]["ownerReferences"][0]["kind"], "Pod");
    assert_eq!(
        lone["spec"]["podSelector"]["matchLabels"],
        json!({"app": "agent-tools"})
    );
}

#[tokio::test]
async fn the_loop_runs_a_pass_at_once_and_stops_on_shutdown_while_waiting() {
    let opts = DiscoveryOptions {
        interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let (d, metrics, mut api) = discovery(opts, prober());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (d, stop) = (d.clone(), stop.clone());
        async move { d.run(stop).await }
    });
    api.list("/api/v1/services", vec![]).await;
    api.list("/api/v1/pods", vec![]).await;
    api.list("/apis/portcullis.dev/v1alpha1/mcpservers", vec![])
        .await;
    api.list("/apis/portcullis.dev/v1alpha1/mcpportals", vec![])
        .await;
    // The first pass is done once the loop waits; stopping then ends it well before the interval.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    finish(task).await;
    api.done().await;
    assert!(
        metrics
            .encode()
            .contains("portcullis_operator_shadow_mcp_scans_total{outcome=\"ok\"} 1")
    );
}
