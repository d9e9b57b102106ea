//! Services and Pods -> candidate MCP endpoints, each with the evidence that made it one.
//! Pure functions: no I/O; the probe and the backed check come later.
//!
//! What counts as evidence (documented in the README):
//! - **strong**, reported even when the probe cannot confirm it:
//!   - a Service or container port whose name contains `mcp` (`mcp`, `http-mcp`, `mcp-sse`);
//!   - a Service port `appProtocol` whose last `/`-segment is `mcp` or starts with `mcp-`/`mcp+`
//!     (`mcp`, `kubernetes.io/mcp`, `example.com/mcp`, `mcp+http`);
//!   - a Service port whose `targetPort` is a container port named like the above;
//!   - the label `app.kubernetes.io/component` = `mcp-server` or `mcp` on a workload that
//!     exposes exactly one TCP port (with several ports the probe picks the MCP one).
//! - **weak**, reported only when the probe confirms MCP:
//!   - a container image whose repository contains `mcp` (`mcp/fetch`, `github-mcp-server`);
//!   - `app.kubernetes.io/name` containing `mcp`; the component label on a multi-port workload;
//!   - an HTTP port (name `http`, `http-*`, `*-http`, `web`; appProtocol `http` or
//!     `kubernetes.io/h2c`): the "probe only" case.
//!
//! A workload with weak evidence has every TCP port probed; without any, only its HTTP ports.
//! Pods selected by a Service are reported through that Service; the rest on their own.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde::Serialize;

/// The standard label some charts set to `mcp-server`.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Values of [`COMPONENT_LABEL`] that say "MCP server".
pub const COMPONENT_VALUES: [&str; 2] = ["mcp-server", "mcp"];

/// One reason to think an endpoint speaks MCP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Evidence {
    /// Strong evidence is reported without a confirming probe.
    pub strong: bool,
    /// What was seen, e.g. ``port name `mcp` ``.
    pub detail: String,
}

impl Evidence {
    fn strong(detail: impl Into<String>) -> Self {
        Self {
            strong: true,
            detail: detail.into(),
        }
    }
    fn weak(detail: impl Into<String>) -> Self {
        Self {
            strong: false,
            detail: detail.into(),
        }
    }
}

/// The object a candidate was found on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum SourceKind {
    /// A Service port.
    Service,
    /// A container port of a Pod no Service selects.
    Pod,
}

impl SourceKind {
    /// `Service` or `Pod`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Service => "Service",
            SourceKind::Pod => "Pod",
        }
    }
}

/// One port that may speak MCP.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Namespace of the Service or Pod.
    pub namespace: String,
    /// Service or Pod.
    pub kind: SourceKind,
    /// Name of the Service or Pod.
    pub name: String,
    /// uid of the Service or Pod (events, owner references).
    pub uid: Option<String>,
    /// `Deployment/x` (the pods' owner), `StatefulSet/x`, `Pod/x`, or `Service/x`.
    pub workload: String,
    /// What a person would dial: `svc.ns.svc:port` or `podIP:port`.
    pub endpoint: String,
    /// `http://host:port` to probe; `None` when there is nothing to dial (pod without IP).
    pub base_url: Option<String>,
    /// The port on the pods (Service targetPort, or the container port), for NetworkPolicies.
    pub pod_port: IntOrString,
    /// Why this is a candidate, strongest first.
    pub evidence: Vec<Evidence>,
    /// Labels of the Service or Pod.
    pub labels: BTreeMap<String, String>,
    /// uids of the Service's or Pod's owner references.
    pub owner_uids: Vec<String>,
    /// ClusterIP of a Service, IP of a Pod.
    pub ip: Option<String>,
    /// The Service port number or the container port number.
    pub port: i32,
    /// Labels selecting the pods behind the endpoint (Service selector; Pod labels without
    /// per-revision hashes). `None` when it cannot be confined (no selector, no labels).
    pub pod_selector: Option<BTreeMap<String, String>>,
    /// Every pod-side port the workload declares (for a NetworkPolicy that confines only the
    /// MCP ports and leaves the others as they were).
    pub workload_ports: Vec<IntOrString>,
}

impl Candidate {
    /// Whether any evidence is strong.
    pub fn has_strong_evidence(&self) -> bool {
        self.evidence.iter().any(|e| e.strong)
    }

    /// `namespace/Kind/name`, the key of the object the candidate is on.
    pub fn object_key(&self) -> (String, SourceKind, String) {
        (self.namespace.clone(), self.kind, self.name.clone())
    }
}

/// Whether a port name says MCP.
pub fn is_mcp_port_name(name: &str) -> bool {
    name.to_ascii_lowercase().contains("mcp")
}

/// Whether an `appProtocol` says MCP (`mcp`, `kubernetes.io/mcp`, `x.example/mcp+http`).
pub fn is_mcp_app_protocol(p: &str) -> bool {
    let lower = p.to_ascii_lowercase();
    let last = lower.rsplit('/').next().unwrap_or_default();
    last == "mcp" || last.starts_with("mcp-") || last.starts_with("mcp+")
}

/// Whether a port looks like plain HTTP (worth a probe).
pub fn is_http_port(name: Option<&str>, app_protocol: Option<&str>) -> bool {
    let proto = app_protocol.map(str::to_ascii_lowercase);
    if matches!(proto.as_deref(), Some("http" | "kubernetes.io/h2c")) {
        return true;
    }
    let Some(name) = name.map(str::to_ascii_lowercase) else {
        return false;
    };
    name == "http" || name == "web" || name.starts_with("http-") || name.ends_with("-http")
}

/// Whether an image reference's repository (not its tag or digest) mentions MCP.
pub fn is_mcp_image(image: &str) -> bool {
    let repo = image.split('@').next().unwrap_or_default();
    // Strip a tag: the last `:` after the last `/` (a registry port has a `/` after it).
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    repo.to_ascii_lowercase().contains("mcp")
}

/// Workload-level evidence from labels and images.
fn workload_evidence(
    labels: &BTreeMap<String, String>,
    containers: &[&Container],
    single_port: bool,
) -> Vec<Evidence> {
    let mut out = Vec::new();
    if let Some(v) = labels.get(COMPONENT_LABEL)
        && COMPONENT_VALUES.contains(&v.as_str())
    {
        let detail = format!("label {COMPONENT_LABEL}={v}");
        out.push(if single_port {
            Evidence::strong(detail)
        } else {
            Evidence::weak(format!("{detail} (several ports: probe decides)"))
        });
    }
    if let Some(v) = labels.get("app.kubernetes.io/name")
        && v.to_ascii_lowercase().contains("mcp")
    {
        out.push(Evidence::weak(format!("label app.kubernetes.io/name={v}")));
    }
    let images: BTreeSet<&str> = containers
        .iter()
        .filter_map(|c| c.image.as_deref())
        .filter(|i| is_mcp_image(i))
        .collect();
    for i in images {
        out.push(Evidence::weak(format!("image `{i}`")));
    }
    out
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
}

/// Whether `selector` (a Service's) selects a pod with `labels`, with Kubernetes' own
/// equality-selector semantics (`kube::core::Selector`, as portals select servers in
/// `crds::select`). An empty selector selects nothing here (such a Service has manually managed
/// endpoints).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    use kube::core::{Selector, SelectorExt};
    !selector.is_empty()
        && selector
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Selector>()
            .matches(labels)
}

/// `Deployment/x` for a pod of ReplicaSet `x-<hash>`, `StatefulSet/x`, ..., or `Pod/<name>`.
pub fn pod_workload(pod: &Pod) -> String {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => {
            let hash = pod.labels().get("pod-template-hash");
            match hash.and_then(|h| o.name.strip_suffix(&format!("-{h}"))) {
                Some(deployment) => format!("Deployment/{deployment}"),
                None => format!("ReplicaSet/{}", o.name),
            }
        }
        Some(o) => format!("{}/{}", o.kind, o.name),
        None => format!("Pod/{}", pod.name_any()),
    }
}

fn live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn containers(pod: &Pod) -> Vec<&Container> {
    pod.spec.iter().flat_map(|s| s.containers.iter()).collect()
}

/// Pod labels that identify the workload, without per-revision hashes.
fn stable_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "pod-template-hash" | "controller-revision-hash"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every candidate of the Services and Pods, ordered by namespace, kind, name, port.
pub fn candidates(services: &[Service], pods: &[Pod], cluster_domain: &str) -> Vec<Candidate> {
    let pods: Vec<&Pod> = pods.iter().filter(|p| live(p)).collect();
    let mut out = Vec::new();
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    for svc in services {
        let ns = svc.namespace().unwrap_or_default();
        let selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let selected: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| {
                p.namespace().as_deref() == Some(ns.as_str()) && selects(&selector, p.labels())
            })
            .collect();
        for p in &selected {
            covered.insert((ns.clone(), p.name_any()));
        }
        out.extend(service_candidates(
            svc,
            &ns,
            &selector,
            &selected,
            cluster_domain,
        ));
    }
    for pod in pods {
        let ns = pod.namespace().unwrap_or_default();
        if !covered.contains(&(ns.clone(), pod.name_any())) {
            out.extend(pod_candidates(pod, &ns));
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, a.kind, &a.name, a.port).cmp(&(&b.namespace, b.kind, &b.name, b.port))
    });
    out
}

/// Resolves a pod-side port (named or numbered) to a number through the pods' containers.
fn resolve(port: &IntOrString, pods: &[&Pod]) -> IntOrString {
    if let IntOrString::String(name) = port {
        for p in pods {
            for c in containers(p) {
                for cp in c.ports.iter().flatten() {
                    if cp.name.as_deref() == Some(name.as_str()) {
                        return IntOrString::Int(cp.container_port);
                    }
                }
            }
        }
    }
    port.clone()
}

fn service_candidates(
    svc: &Service,
    ns: &str,
    selector: &BTreeMap<String, String>,
    pods: &[&Pod],
    cluster_domain: &str,
) -> Vec<Candidate> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let name = svc.name_any();
    let ports: Vec<_> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| is_tcp(p.protocol.as_deref()))
        .collect();
    let pod_containers: Vec<&Container> = pods.iter().flat_map(|p| containers(p)).collect();
    let mut labels = svc.labels().clone();
    // Pod labels count too (the chart may label only the pods).
    for p in pods {
        for (k, v) in p.labels() {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let workload_ev = workload_evidence(&labels, &pod_containers, ports.len() == 1);
    let workload_weak = !workload_ev.is_empty();
    let workloads: BTreeSet<String> = pods.iter().map(|p| pod_workload(p)).collect();
    let workload = if workloads.is_empty() {
        format!("Service/{name}")
    } else {
        workloads.into_iter().collect::<Vec<_>>().join(",")
    };
    let ip = spec.cluster_ip.clone().filter(|ip| ip != "None");
    let mut workload_ports: BTreeSet<String> = BTreeSet::new();
    let mut wp = Vec::new();
    let mut push_port = |p: IntOrString| {
        let key = format!("{p:?}");
        if workload_ports.insert(key) {
            wp.push(p);
        }
    };
    for p in &ports {
        push_port(resolve(
            p.target_port.as_ref().unwrap_or(&IntOrString::Int(p.port)),
            pods,
        ));
    }
    for c in &pod_containers {
        for cp in c.ports.iter().flatten() {
            if is_tcp(cp.protocol.as_deref()) {
                push_port(IntOrString::Int(cp.container_port));
            }
        }
    }
    let mut out = Vec::new();
    for p in &ports {
        let mut ev = Vec::new();
        if let Some(n) = p.name.as_deref().filter(|n| is_mcp_port_name(n)) {
            ev.push(Evidence::strong(format!("port name `{n}`")));
        }
        if let Some(a) = p.app_protocol.as_deref().filter(|a| is_mcp_app_protocol(a)) {
            ev.push(Evidence::strong(format!("appProtocol `{a}`")));
        }
        let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
        let target_name = match &target {
            IntOrString::String(s) => Some(s.clone()),
            IntOrString::Int(n) => pod_containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.container_port == *n)
                .and_then(|cp| cp.name.clone()),
        };
        if let Some(t) = target_name.filter(|t| is_mcp_port_name(t)) {
            ev.push(Evidence::strong(format!("target port `{t}`")));
        }
        let http = is_http_port(p.name.as_deref(), p.app_protocol.as_deref());
        ev.extend(workload_ev.iter().cloned());
        if ev.is_empty() && !http {
            continue;
        }
        if http && !workload_weak && !ev.iter().any(|e| e.strong) {
            let label = p
                .name
                .clone()
                .or_else(|| p.app_protocol.clone())
                .unwrap_or_default();
            ev.push(Evidence::weak(format!("HTTP port `{label}` (probe only)")));
        }
        ev.sort_by(|a, b| b.strong.cmp(&a.strong).then(a.detail.cmp(&b.detail)));
        ev.dedup();
        out.push(Candidate {
            namespace: ns.to_owned(),
            kind: SourceKind::Service,
            name: name.clone(),
            uid: svc.metadata.uid.clone(),
            workload: workload.clone(),
            endpoint: format!("{name}.{ns}.svc:{}", p.port),
            base_url: Some(format!(
                "http://{name}.{ns}.svc.{cluster_domain}:{}",
                p.port
            )),
            pod_port: resolve(&target, pods),
            evidence: ev,
            labels: svc.labels().clone(),
            owner_uids: svc
                .metadata
                .owner_references
                .iter()
                .flatten()
                .map(|o| o.uid.clone())
                .collect(),
            ip: ip.clone(),
            port: p.port,
            pod_selector: (!selector.is_empty()).then(|| selector.clone()),
            workload_ports: wp.clone(),
        });
    }
    out
}

fn pod_candidates(pod: &Pod, ns: &str) -> Vec<Candidate> {
    let name = pod.name_any();
    let cs = containers(pod);
    let ports: Vec<_> = cs
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| is_tcp(p.protocol.as_deref()))
        .collect();
    let workload_ev = workload_evidence(pod.labels(), &cs, ports.len() == 1);
    let workload_weak = !workload_ev.is_empty();
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let stable = stable_labels(pod.labels());
    let workload_ports: Vec<IntOrString> = ports
        .iter()
        .map(|p| IntOrString::Int(p.container_port))
        .collect();
    let mut out = Vec::new();
    for p in ports {
        let mut ev = Vec::new();
        if let Some(n) = p.name.as_deref().filter(|n| is_mcp_port_name(n)) {
            ev.push(Evidence::strong(format!("container port name `{n}`")));
        }
        let http = is_http_port(p.name.as_deref(), None);
        ev.extend(workload_ev.iter().cloned());
        if ev.is_empty() && !http {
            continue;
        }
        if http && !workload_weak && !ev.iter().any(|e| e.strong) {
            ev.push(Evidence::weak(format!(
                "HTTP port `{}` (probe only)",
                p.name.clone().unwrap_or_default()
            )));
        }
        ev.sort_by(|a, b| b.strong.cmp(&a.strong).then(a.detail.cmp(&b.detail)));
        ev.dedup();
        let port = p.container_port;
        out.push(Candidate {
            namespace: ns.to_owned(),
            kind: SourceKind::Pod,
            name: name.clone(),
            uid: pod.metadata.uid.clone(),
            workload: pod_workload(pod),
            endpoint: match &ip {
                Some(ip) => format!("{ip}:{port}"),
                None => format!("{name}:{port} (no pod IP)"),
            },
            base_url: ip.as_ref().map(|ip| {
                if ip.contains(':') {
                    format!("http://[{ip}]:{port}")
                } else {
                    format!("http://{ip}:{port}")
                }
            }),
            pod_port: IntOrString::Int(port),
            evidence: ev,
            labels: pod.labels().clone(),
            owner_uids: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .map(|o| o.uid.clone())
                .collect(),
            ip: ip.clone(),
            port,
            pod_selector: (!stable.is_empty()).then(|| stable.clone()),
            workload_ports: workload_ports.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::testkit::{pod, svc};
    use serde_json::json;

    fn only(c: Vec<Candidate>) -> Candidate {
        assert_eq!(c.len(), 1, "{c:#?}");
        c.into_iter().next().unwrap()
    }

    #[test]
    fn port_names_and_app_protocols_follow_the_documented_set() {
        for n in ["mcp", "http-mcp", "mcp-sse", "MCP"] {
            assert!(is_mcp_port_name(n), "{n}");
        }
        for n in ["http", "metrics", "grpc"] {
            assert!(!is_mcp_port_name(n), "{n}");
        }
        for p in [
            "mcp",
            "kubernetes.io/mcp",
            "example.com/mcp",
            "mcp+http",
            "mcp-sse",
        ] {
            assert!(is_mcp_app_protocol(p), "{p}");
        }
        for p in ["http", "kubernetes.io/h2c", "mcpx", "mcp.example.com/http"] {
            assert!(!is_mcp_app_protocol(p), "{p}");
        }
        assert!(is_http_port(Some("http"), None));
        assert!(is_http_port(Some("http-api"), None));
        assert!(is_http_port(None, Some("kubernetes.io/h2c")));
        assert!(!is_http_port(Some("https"), None));
        assert!(!is_http_port(Some("postgres"), None));
        assert!(is_mcp_image("ghcr.io/github/github-mcp-server:v1"));
        assert!(is_mcp_image("mcp/fetch@sha256:abc"));
        assert!(!is_mcp_image("nginx:1.27"));
        assert!(
            !is_mcp_image("registry:5000/app:mcp"),
            "a tag is not the repository"
        );
    }

    #[test]
    fn a_service_port_named_mcp_is_a_strong_candidate_on_the_service_dns_name() {
        let s = svc(
            "team",
            "tickets",
            json!([{"name": "mcp", "port": 80, "targetPort": 8000}]),
        );
        let c = only(candidates(&[s], &[], "cluster.local"));
        assert!(c.has_strong_evidence());
        assert_eq!(c.evidence[0].detail, "port name `mcp`");
        assert_eq!(c.endpoint, "tickets.team.svc:80");
        assert_eq!(
            c.base_url.as_deref(),
            Some("http://tickets.team.svc.cluster.local:80")
        );
        assert_eq!(c.workload, "Service/tickets");
        assert_eq!(c.pod_port, IntOrString::Int(8000));
    }

    #[test]
    fn app_protocol_mcp_is_strong_and_plain_http_is_probe_only() {
        let s = svc(
            "team",
            "x",
            json!([{"name": "api", "port": 8080, "appProtocol": "kubernetes.io/mcp"},
                   {"name": "http", "port": 80}, {"name": "postgres", "port": 5432}]),
        );
        let c = candidates(&[s], &[], "cluster.local");
        assert_eq!(c.len(), 2, "the postgres port is not a candidate: {c:#?}");
        let by_port = |p| c.iter().find(|c| c.port == p).unwrap();
        assert!(by_port(8080).has_strong_evidence());
        assert!(!by_port(80).has_strong_evidence());
        assert!(by_port(80).evidence[0].detail.contains("probe only"));
    }

    #[test]
    fn a_service_inherits_evidence_from_the_pods_it_selects_and_names_their_deployment() {
        let s = svc(
            "team",
            "w",
            json!([{"name": "web", "port": 80, "targetPort": "serve"}]),
        );
        let mut p = pod(
            "team",
            "w-5d8f-abcde",
            json!({"app": "w", "pod-template-hash": "5d8f"}),
            "mcp/fetch:latest",
            json!([{"name": "serve", "containerPort": 3000}]),
        );
        p.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "w-5d8f".into(),
                uid: "rs".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        let all = candidates(&[s], &[p], "cluster.local");
        let c = only(all);
        assert_eq!(
            c.kind,
            SourceKind::Service,
            "the pod is reported through its Service"
        );
        assert_eq!(c.workload, "Deployment/w");
        assert!(!c.has_strong_evidence(), "an image name is weak");
        assert!(
            c.evidence
                .iter()
                .any(|e| e.detail == "image `mcp/fetch:latest`")
        );
        assert_eq!(
            c.pod_port,
            IntOrString::Int(3000),
            "named targetPort resolved"
        );
    }

    #[test]
    fn a_target_port_named_mcp_on_the_pods_is_strong() {
        let s = svc(
            "team",
            "w",
            json!([{"name": "http", "port": 80, "targetPort": 9000}]),
        );
        let p = pod(
            "team",
            "w-1",
            json!({"app": "w"}),
            "busybox",
            json!([{"name": "mcp", "containerPort": 9000}]),
        );
        let c = only(candidates(&[s], &[p], "cluster.local"));
        assert!(
            c.evidence
                .iter()
                .any(|e| e.strong && e.detail == "target port `mcp`")
        );
    }

    #[test]
    fn a_pod_no_service_selects_is_a_candidate_on_its_ip_with_a_label_selector() {
        let p = pod(
            "team",
            "lone",
            json!({"app": "lone", "pod-template-hash": "h"}),
            "busybox",
            json!([{"name": "mcp", "containerPort": 8000}, {"name": "metrics", "containerPort": 9090}]),
        );
        let c = only(candidates(&[], &[p], "cluster.local"));
        assert_eq!(c.kind, SourceKind::Pod);
        assert_eq!(c.endpoint, "10.1.0.7:8000");
        assert_eq!(c.workload, "Pod/lone");
        assert_eq!(
            c.pod_selector,
            Some(BTreeMap::from([("app".to_owned(), "lone".to_owned())])),
            "revision hashes are not part of the selector"
        );
        assert_eq!(
            c.workload_ports,
            [IntOrString::Int(8000), IntOrString::Int(9090)]
        );
    }

    #[test]
    fn the_component_label_is_strong_only_on_a_single_port_workload() {
        let one = pod(
            "a",
            "one",
            json!({"app.kubernetes.io/component": "mcp-server"}),
            "img",
            json!([{"containerPort": 8000}]),
        );
        let two = pod(
            "a",
            "two",
            json!({"app.kubernetes.io/component": "mcp-server"}),
            "img",
            json!([{"containerPort": 8000}, {"containerPort": 9090}]),
        );
        let c = candidates(&[], &[one, two], "cluster.local");
        assert_eq!(c.len(), 3);
        assert!(
            c.iter()
                .filter(|c| c.name == "one")
                .all(Candidate::has_strong_evidence)
        );
        assert!(
            c.iter()
                .filter(|c| c.name == "two")
                .all(|c| !c.has_strong_evidence())
        );
    }

    #[test]
    fn finished_pods_udp_ports_and_external_name_services_are_ignored() {
        let mut done = pod(
            "a",
            "done",
            json!({}),
            "img",
            json!([{"name": "mcp", "containerPort": 1}]),
        );
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let udp = pod(
            "a",
            "udp",
            json!({}),
            "img",
            json!([{"name": "mcp", "containerPort": 2, "protocol": "UDP"}]),
        );
        let mut ext = svc("a", "ext", json!([{"name": "mcp", "port": 80}]));
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(candidates(&[ext], &[done, udp], "cluster.local").is_empty());
    }

    #[test]
    fn a_service_without_selector_cannot_be_confined() {
        let mut s = svc("a", "manual", json!([{"name": "mcp", "port": 80}]));
        s.spec.as_mut().unwrap().selector = None;
        let c = only(candidates(&[s], &[], "cluster.local"));
        assert_eq!(c.pod_selector, None);
    }
}
