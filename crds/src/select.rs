//! Which servers a portal fronts, which policies bind to it, which Secrets it needs: pure
//! functions over the resources. The operator (controllers and `render`) and the proxy (reading
//! manifests) both select with these, so the two cannot disagree.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::common::SecretKeyRef;
use crate::{McpPolicy, McpPortal, McpServer};

/// Whether `sel` selects an object with `labels`: Kubernetes label-selector semantics
/// (matchLabels AND matchExpressions; an empty selector matches everything), evaluated by
/// `kube::core::Selector`. A selector Kubernetes would refuse (an unknown operator, `In` without
/// values) matches nothing; the `validate` module reports it.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(labels))
}

/// Why `sel` is not a valid label selector, or `None`.
pub fn selector_problem(sel: &LabelSelector) -> Option<String> {
    Selector::try_from(sel.clone()).err().map(|e| e.0)
}

/// Whether `portal` fronts `server` (same namespace; by name or by label).
pub fn portal_selects(portal: &McpPortal, server: &McpServer) -> bool {
    if portal.namespace() != server.namespace() {
        return false;
    }
    let name = server.name_any();
    portal.spec.servers.names.contains(&name)
        || portal
            .spec
            .servers
            .selector
            .as_ref()
            .is_some_and(|sel| selector_matches(sel, server.labels()))
}

/// The servers a portal fronts, sorted by name.
pub fn selected_servers<'a>(portal: &McpPortal, servers: &'a [McpServer]) -> Vec<&'a McpServer> {
    let mut out: Vec<&McpServer> = servers
        .iter()
        .filter(|s| portal_selects(portal, s))
        .collect();
    out.sort_by_key(|s| s.name_any());
    out
}

/// Names listed in `spec.servers.names` that no McpServer has (a likely typo).
pub fn missing_server_names(portal: &McpPortal, servers: &[McpServer]) -> Vec<String> {
    portal
        .spec
        .servers
        .names
        .iter()
        .filter(|n| {
            !servers
                .iter()
                .any(|s| &s.name_any() == *n && s.namespace() == portal.namespace())
        })
        .cloned()
        .collect()
}

/// Whether `policy` binds to `portal` (same namespace; listed, or no portals listed).
pub fn policy_binds(policy: &McpPolicy, portal: &McpPortal) -> bool {
    policy.namespace() == portal.namespace()
        && (policy.spec.portals.is_empty() || policy.spec.portals.contains(&portal.name_any()))
}

/// The policies bound to a portal, sorted by name.
pub fn bound_policies<'a>(portal: &McpPortal, policies: &'a [McpPolicy]) -> Vec<&'a McpPolicy> {
    let mut out: Vec<&McpPolicy> = policies
        .iter()
        .filter(|p| policy_binds(p, portal))
        .collect();
    out.sort_by_key(|p| p.name_any());
    out
}

/// The Secret refs the portal's proxy reads: its session key, its identity signing key, its
/// audit chain key, its HTTPS listener's certificate, key and client CA bundle, its LLM
/// targets' API keys, its budget and rate-limit stores' Redis URLs and the credentials of the remote servers it
/// fronts (deployed servers keep their secrets in their own pods).
pub fn portal_secret_refs(portal: &McpPortal, servers: &[&McpServer]) -> Vec<SecretKeyRef> {
    let mut refs = Vec::new();
    refs.extend(portal.spec.session_key_from.clone());
    refs.extend(portal.spec.identity_signing_key_from.clone());
    refs.extend(portal.spec.audit.as_ref().and_then(|a| a.key_from.clone()));
    if let Some(tls) = &portal.spec.tls {
        refs.push(tls.certificate_from.clone());
        refs.push(tls.private_key_from.clone());
        refs.extend(tls.client_ca_from.clone());
    }
    if let Some(llm) = &portal.spec.llm {
        for r in &llm.routes {
            refs.extend(r.targets.iter().filter_map(|t| t.api_key_from.clone()));
        }
        refs.extend(
            llm.budget_store
                .as_ref()
                .and_then(|s| s.redis.as_ref())
                .map(|r| r.url_from.clone()),
        );
    }
    refs.extend(
        portal
            .spec
            .rate_limit_store
            .as_ref()
            .map(|s| s.redis.url_from.clone()),
    );
    for s in servers {
        refs.extend(remote_secret_refs(s));
    }
    refs
}

/// The Secret refs of a remote server's headers and OAuth client credentials.
pub fn remote_secret_refs(server: &McpServer) -> Vec<SecretKeyRef> {
    let mut refs = Vec::new();
    if let Some(remote) = &server.spec.remote {
        refs.extend(remote.headers.iter().filter_map(|h| h.value_from.clone()));
        if let Some(oauth) = &remote.oauth {
            refs.push(oauth.client_id_from.clone());
            refs.push(oauth.client_secret_from.clone());
        }
    }
    refs
}

/// The Secret refs of a deployed server's environment.
pub fn deployed_secret_refs(server: &McpServer) -> Vec<SecretKeyRef> {
    server
        .spec
        .deployment
        .iter()
        .flat_map(|d| d.env.iter().filter_map(|e| e.value_from.clone()))
        .collect()
}

/// Distinct Secret names of a list of refs, sorted.
pub fn secret_names(refs: &[SecretKeyRef]) -> BTreeSet<String> {
    refs.iter().map(|r| r.name.clone()).collect()
}

/// The prefix a server's tools get in a portal.
pub fn prefix_of(server: &McpServer) -> String {
    server
        .spec
        .prefix
        .clone()
        .unwrap_or_else(|| server.name_any())
}

/// Pairs of servers that would share a tool prefix in one portal (the proxy refuses those).
pub fn prefix_conflicts(servers: &[&McpServer]) -> Vec<(String, String, String)> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for s in servers {
        let prefix = prefix_of(s);
        if let Some(other) = seen.insert(prefix.clone(), s.name_any()) {
            out.push((other, s.name_any(), prefix));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;
    use crate::McpPortalSpec;

    fn server(name: &str, labels: &[(&str, &str)]) -> McpServer {
        let mut s = McpServer::new(name, Default::default());
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s
    }

    fn requirement(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        }
    }

    #[test]
    fn selector_expressions_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        assert!(selector_matches(
            &requirement("env", "In", &["prod"]),
            &labels
        ));
        assert!(!selector_matches(
            &requirement("env", "NotIn", &["prod"]),
            &labels
        ));
        assert!(selector_matches(
            &requirement("env", "Exists", &[]),
            &labels
        ));
        assert!(!selector_matches(
            &requirement("env", "DoesNotExist", &[]),
            &labels
        ));
        assert!(selector_matches(
            &requirement("tier", "NotIn", &["x"]),
            &labels
        ));
        assert!(selector_matches(
            &LabelSelector::default(),
            &BTreeMap::new()
        ));
    }

    #[test]
    fn a_selector_with_an_unknown_operator_matches_nothing_and_is_reported() {
        let bad = requirement("env", "Equals", &["prod"]);
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        assert!(!selector_matches(&bad, &labels));
        assert!(selector_problem(&bad).is_some());
        assert!(selector_problem(&requirement("env", "In", &[])).is_some());
        assert!(selector_problem(&requirement("env", "Exists", &[])).is_none());
    }

    #[test]
    fn a_portal_selects_servers_by_name_or_label_and_sorts_them() {
        let portal = McpPortal::new(
            "p",
            McpPortalSpec {
                servers: crate::portal::ServerSelection {
                    names: vec!["b".into(), "ghost".into()],
                    selector: Some(LabelSelector {
                        match_labels: Some([("team".to_string(), "x".to_string())].into()),
                        match_expressions: None,
                    }),
                },
                ..Default::default()
            },
        );
        let servers = [
            server("c", &[("team", "x")]),
            server("a", &[("team", "y")]),
            server("b", &[]),
        ];
        let names: Vec<String> = selected_servers(&portal, &servers)
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(missing_server_names(&portal, &servers), ["ghost"]);
    }

    #[test]
    fn a_policy_without_portals_binds_to_every_portal_of_its_namespace() {
        let portal = McpPortal::new("p", Default::default());
        let all = McpPolicy::new("all", Default::default());
        let mut other = McpPolicy::new("other", Default::default());
        other.spec.portals = vec!["q".into()];
        assert!(policy_binds(&all, &portal));
        assert!(!policy_binds(&other, &portal));
    }

    #[test]
    fn the_identity_signing_key_is_among_the_secrets_a_portal_reads() {
        let key = SecretKeyRef {
            name: "identity-signing".into(),
            key: "key.pem".into(),
        };
        let portal = McpPortal::new(
            "p",
            McpPortalSpec {
                identity_signing_key_from: Some(key.clone()),
                ..Default::default()
            },
        );
        assert_eq!(portal_secret_refs(&portal, &[]), [key]);
    }

    #[test]
    fn the_rate_limit_stores_redis_url_is_among_the_secrets_a_portal_reads() {
        let portal: McpPortal = serde_json::from_value(serde_json::json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPortal",
            "metadata": {"name": "p"},
            "spec": {"public": true, "servers": {},
                "rateLimitStore": {"redis": {"urlFrom": {"name": "limits-redis", "key": "url"}}}}
        }))
        .unwrap();
        assert_eq!(
            secret_names(&portal_secret_refs(&portal, &[])),
            ["limits-redis".to_owned()].into()
        );
    }

    #[test]
    fn the_budget_stores_redis_url_is_among_the_secrets_a_portal_reads() {
        let portal: McpPortal = serde_json::from_value(serde_json::json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPortal",
            "metadata": {"name": "p"},
            "spec": {"public": true, "servers": {}, "llm": {
                "routes": [{"alias": "a", "targets": [{"provider": "openai", "model": "m",
                    "apiKeyFrom": {"name": "keys", "key": "openai"}}]}],
                "budgetStore": {"redis": {"urlFrom": {"name": "budget-redis", "key": "url"}}}
            }}
        }))
        .unwrap();
        assert_eq!(
            secret_names(&portal_secret_refs(&portal, &[])),
            ["budget-redis".to_owned(), "keys".to_owned()].into()
        );
    }
}
