//! The optional NetworkPolicy that confines a shadow MCP endpoint to sanctioned callers.
//! Pure functions: shadow endpoints in, NetworkPolicies out.
//!
//! One policy per Service or Pod, selecting its pods (the Service's selector, or the Pod's
//! labels without revision hashes), with two ingress rules:
//! 1. the MCP ports admit only portal pods (in the namespaces that hold an McpPortal) and the
//!    operator (which keeps probing);
//! 2. every other port the workload declares stays open to everyone, so confining MCP does not
//!    cut the workload's health checks or metrics. Undeclared ports are closed, as with any
//!    NetworkPolicy that selects a pod.
//!
//! An endpoint without a usable selector (a Service without selector, a Pod without labels) is
//! never confined: an empty pod selector would select every pod of the namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::ShadowEndpoint;
use super::candidates::{Candidate, SourceKind};
use crate::desired::{PeerNamespaces, operator_peer, portal_peer};
use crate::names::MANAGED_BY;

/// Label on every NetworkPolicy discovery creates (and the only ones it deletes).
pub const SHADOW_LABEL: &str = "portcullis.dev/shadow-mcp";
/// Annotation naming the confined object (`Service/name`, `Pod/name`).
pub const CONFINES_ANNOTATION: &str = "portcullis.dev/confines";

/// Who may still call a confined endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanctionedCallers {
    /// Namespaces that hold an McpPortal (their portal pods are admitted).
    pub portal_namespaces: Vec<String>,
    /// The operator's namespace; `None` admits operator pods of any namespace.
    pub operator_namespace: Option<String>,
}

/// `shadow-mcp-svc-<name>` / `shadow-mcp-pod-<name>`, at most 253 characters.
pub fn policy_name(kind: SourceKind, name: &str) -> String {
    let prefix = match kind {
        SourceKind::Service => "shadow-mcp-svc-",
        SourceKind::Pod => "shadow-mcp-pod-",
    };
    let mut n = format!("{prefix}{name}");
    n.truncate(253);
    n.trim_end_matches(['-', '.']).to_owned()
}

/// The NetworkPolicies confining `endpoints`, one per Service or Pod, in input order.
pub fn network_policies(
    endpoints: &[ShadowEndpoint],
    callers: &SanctionedCallers,
) -> Vec<NetworkPolicy> {
    let mut groups: BTreeMap<(String, SourceKind, String), Vec<&Candidate>> = BTreeMap::new();
    let mut order = Vec::new();
    for e in endpoints {
        let key = e.candidate.object_key();
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(&e.candidate);
    }
    order
        .iter()
        .filter_map(|k| confine(&groups[k], callers))
        .collect()
}

/// The policy confining the MCP ports of one object's candidates; `None` when it cannot be
/// confined safely (no selector).
pub fn confine(candidates: &[&Candidate], callers: &SanctionedCallers) -> Option<NetworkPolicy> {
    let first = candidates.first()?;
    let selector = first.pod_selector.clone().filter(|s| !s.is_empty())?;
    let mut mcp_ports: Vec<IntOrString> = Vec::new();
    for c in candidates {
        if !mcp_ports.contains(&c.pod_port) {
            mcp_ports.push(c.pod_port.clone());
        }
    }
    let others: Vec<IntOrString> = first
        .workload_ports
        .iter()
        .filter(|p| !mcp_ports.contains(p))
        .cloned()
        .collect();
    let tcp = |p: IntOrString| NetworkPolicyPort {
        port: Some(p),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut from = Vec::new();
    if !callers.portal_namespaces.is_empty() {
        from.push(portal_peer(PeerNamespaces::Named(
            callers.portal_namespaces.clone(),
        )));
    }
    from.push(operator_peer(match &callers.operator_namespace {
        Some(ns) => PeerNamespaces::Named(vec![ns.clone()]),
        None => PeerNamespaces::Any,
    }));
    let mut rules = vec![NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(mcp_ports.into_iter().map(tcp).collect()),
    }];
    if !others.is_empty() {
        rules.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(others.into_iter().map(tcp).collect()),
        });
    }
    let kind = first.kind.as_str();
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(policy_name(first.kind, &first.name)),
            namespace: Some(first.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGED_BY.to_owned(),
                ),
                (SHADOW_LABEL.to_owned(), "true".to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                CONFINES_ANNOTATION.to_owned(),
                format!("{kind}/{}", first.name),
            )])),
            // Deleting the Service or Pod deletes the policy with it.
            owner_references: first.uid.as_ref().map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: kind.into(),
                    name: first.name.clone(),
                    uid: uid.clone(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..Default::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::candidates::candidates;
    use crate::discovery::testkit::{pod, svc};
    use serde_json::json;

    fn callers() -> SanctionedCallers {
        SanctionedCallers {
            portal_namespaces: vec!["portals".into()],
            operator_namespace: Some("portcullis-system".into()),
        }
    }

    #[test]
    fn mcp_ports_admit_only_portals_and_the_operator_and_other_ports_stay_open() {
        let s = svc(
            "team",
            "x",
            json!([{"name": "mcp", "port": 80, "targetPort": "mcp"}, {"name": "metrics", "port": 9090}]),
        );
        let p = pod(
            "team",
            "x-1",
            json!({"app": "x"}),
            "img",
            json!([{"name": "mcp", "containerPort": 8000}, {"containerPort": 9090}]),
        );
        let c = candidates(&[s], &[p], "cluster.local");
        let mcp: Vec<&Candidate> = c.iter().filter(|c| c.port == 80).collect();
        let np = confine(&mcp, &callers()).expect("a policy");
        let v = serde_json::to_value(&np).unwrap();
        assert_eq!(v["metadata"]["name"], "shadow-mcp-svc-x");
        assert_eq!(v["metadata"]["namespace"], "team");
        assert_eq!(v["metadata"]["labels"][SHADOW_LABEL], "true");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-svc-x");
        assert_eq!(
            v["spec"]["podSelector"],
            json!({"matchLabels": {"app": "x"}})
        );
        assert_eq!(v["spec"]["policyTypes"], json!(["Ingress"]));
        let rules = v["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["ports"],
            json!([{"port": 8000, "protocol": "TCP"}])
        );
        let from = &rules[0]["from"];
        assert_eq!(
            from[0]["podSelector"]["matchLabels"]["portcullis.dev/component"],
            "portal"
        );
        assert_eq!(
            from[0]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["portals"])
        );
        assert_eq!(
            from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "portcullis-operator"
        );
        assert_eq!(
            from[1]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["portcullis-system"])
        );
        assert!(rules[1].get("from").is_none(), "other ports: any source");
        assert_eq!(
            rules[1]["ports"],
            json!([{"port": 9090, "protocol": "TCP"}])
        );
    }

    #[test]
    fn without_portals_only_the_operator_is_admitted() {
        let s = svc("team", "x", json!([{"name": "mcp", "port": 80}]));
        let c = candidates(&[s], &[], "cluster.local");
        let np = confine(&[&c[0]], &SanctionedCallers::default()).unwrap();
        let v = serde_json::to_value(&np).unwrap();
        let from = v["spec"]["ingress"][0]["from"].as_array().unwrap().clone();
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0]["namespaceSelector"],
            json!({}),
            "operator in any namespace"
        );
        assert_eq!(v["spec"]["ingress"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn an_endpoint_without_a_selector_is_never_confined_with_an_empty_one() {
        let mut s = svc("a", "manual", json!([{"name": "mcp", "port": 80}]));
        s.spec.as_mut().unwrap().selector = None;
        let unlabelled = pod(
            "a",
            "bare",
            json!({}),
            "img",
            json!([{"name": "mcp", "containerPort": 1}]),
        );
        for c in candidates(&[s], &[unlabelled], "cluster.local") {
            assert!(confine(&[&c], &callers()).is_none(), "{}", c.name);
        }
    }

    #[test]
    fn policy_names_fit_the_limit_and_do_not_end_in_a_dash() {
        assert_eq!(policy_name(SourceKind::Pod, "p"), "shadow-mcp-pod-p");
        let long = format!("{}-{}", "a".repeat(237), "b".repeat(20));
        let n = policy_name(SourceKind::Service, &long);
        assert!(n.len() <= 253 && !n.ends_with('-'), "{n}");
    }
}
