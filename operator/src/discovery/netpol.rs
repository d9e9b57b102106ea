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
                ("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()),
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
