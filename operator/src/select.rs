//! Which servers a portal fronts, which policies bind to it, which Secrets it needs: pure
//! functions over the resources, shared by `render` and the controllers.

use std::collections::{BTreeMap, BTreeSet};

use crds::common::SecretKeyRef;
use crds::{McpPolicy, McpPortal, McpServer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

/// Kubernetes label-selector semantics (matchLabels AND matchExpressions); an empty selector
/// matches everything.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels
        && !ml.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.clone().unwrap_or_default();
        let have = labels.get(&expr.key);
        match expr.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    })
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

/// The Secret refs the portal's proxy reads: its session key, its identity signing key and the
/// credentials of the remote servers it fronts (deployed servers keep their secrets in their
/// own pods).
pub fn portal_secret_refs(portal: &McpPortal, servers: &[&McpServer]) -> Vec<SecretKeyRef> {
    let mut refs = Vec::new();
    refs.extend(portal.spec.session_key_from.clone());
    refs.extend(portal.spec.identity_signing_key_from.clone());
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
    use crds::McpPortalSpec;

    use super::*;

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
}
