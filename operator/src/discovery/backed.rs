//! Whether a candidate is backed by an McpServer (so it is not shadow). Pure functions.
//!
//! A candidate is sanctioned when:
//! - it is the operator's own: a Service owned (ownerReferences uid) by an existing McpServer
//!   or McpPortal (the deployed servers' and the portals' Services), or a Pod labelled as the
//!   pod of an existing deployed McpServer or McpPortal of its namespace
//!   (`portcullis.dev/server` / `portcullis.dev/portal`);
//! - a remote McpServer's URL points at it: host `svc`, `svc.ns`, `svc.ns.svc` or
//!   `svc.ns.svc.<cluster domain>` (a bare `svc` is resolved in the McpServer's namespace), or
//!   its ClusterIP / pod IP, on the same port (80/443 when the URL names none).
//!
//! Labels alone are not trusted for Services: anyone who can create a Service could label it.
//! A Pod with the labels of an existing portal or server is trusted (it is selected by that
//! portal's or server's Service, so the Service would route portal traffic to it anyway).

use std::collections::BTreeSet;

use crds::{McpPortal, McpServer};
use kube::ResourceExt;

use super::candidates::{Candidate, SourceKind};
use crate::names::{COMPONENT_LABEL, PORTAL_LABEL, SERVER_LABEL};

/// What the McpServers and McpPortals sanction.
#[derive(Debug, Default, Clone)]
pub struct Sanctioned {
    owner_uids: BTreeSet<String>,
    /// `(namespace, server or portal name, "server" | "portal")`.
    pods: BTreeSet<(String, String, &'static str)>,
    /// `(namespace, service, port)` named by a remote URL.
    services: BTreeSet<(String, String, i32)>,
    /// `(ip, port)` named by a remote URL.
    ips: BTreeSet<(String, i32)>,
}

impl Sanctioned {
    /// From every McpServer and McpPortal of the cluster.
    pub fn new(servers: &[McpServer], portals: &[McpPortal], cluster_domain: &str) -> Self {
        let mut s = Sanctioned::default();
        for server in servers {
            let ns = server.namespace().unwrap_or_default();
            if let Some(uid) = &server.metadata.uid {
                s.owner_uids.insert(uid.clone());
            }
            if server.spec.deployment.is_some() {
                s.pods.insert((ns.clone(), server.name_any(), "server"));
            }
            if let Some(remote) = &server.spec.remote {
                s.add_url(&remote.url, &ns, cluster_domain);
            }
        }
        for portal in portals {
            if let Some(uid) = &portal.metadata.uid {
                s.owner_uids.insert(uid.clone());
            }
            s.pods.insert((
                portal.namespace().unwrap_or_default(),
                portal.name_any(),
                "portal",
            ));
        }
        s
    }

    fn add_url(&mut self, url: &str, server_ns: &str, cluster_domain: &str) {
        let Ok(u) = reqwest::Url::parse(url) else {
            return;
        };
        let Some(port) = u.port_or_known_default() else {
            return;
        };
        let port = i32::from(port);
        let Some(host) = u.host_str() else {
            return;
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            self.ips.insert((ip.to_string(), port));
        } else if let Some((svc, ns)) = service_of_host(host, server_ns, cluster_domain) {
            self.services.insert((ns, svc, port));
        }
    }

    /// Why `c` is sanctioned, or `None` when it is shadow.
    pub fn backing(&self, c: &Candidate) -> Option<String> {
        if let Some(uid) = c.owner_uids.iter().find(|u| self.owner_uids.contains(*u)) {
            return Some(format!("owned by Portcullis resource uid {uid}"));
        }
        if c.kind == SourceKind::Pod {
            for (label, role) in [(SERVER_LABEL, "server"), (PORTAL_LABEL, "portal")] {
                if let Some(name) = c.labels.get(label)
                    && c.labels.get(COMPONENT_LABEL).map(String::as_str) == Some(role)
                    && self
                        .pods
                        .contains(&(c.namespace.clone(), name.clone(), role))
                {
                    return Some(format!(
                        "pod of Mcp{}{} {name}",
                        &role[..1].to_uppercase(),
                        &role[1..]
                    ));
                }
            }
        }
        if c.kind == SourceKind::Service
            && self
                .services
                .contains(&(c.namespace.clone(), c.name.clone(), c.port))
        {
            return Some("named by a remote McpServer URL".into());
        }
        if let Some(ip) = &c.ip
            && self.ips.contains(&(ip.clone(), c.port))
        {
            return Some("its IP is named by a remote McpServer URL".into());
        }
        None
    }
}

/// `(service, namespace)` of an in-cluster Service host name, or `None` for other hosts.
pub fn service_of_host(
    host: &str,
    default_ns: &str,
    cluster_domain: &str,
) -> Option<(String, String)> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let suffix = format!(".svc.{}", cluster_domain.to_ascii_lowercase());
    let stem = host
        .strip_suffix(&suffix)
        .or_else(|| host.strip_suffix(".svc"))
        .map(|s| (s, true))
        .unwrap_or((host.as_str(), false));
    let parts: Vec<&str> = stem.0.split('.').collect();
    match parts.as_slice() {
        [svc, ns] => Some(((*svc).to_owned(), (*ns).to_owned())),
        [svc] if !stem.1 => Some(((*svc).to_owned(), default_ns.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::candidates::candidates;
    use crate::discovery::testkit::{pod, svc};
    use crds::server::{DeployedServer, RemoteServer};
    use crds::{McpPortalSpec, McpServerSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    fn remote(ns: &str, name: &str, url: &str) -> McpServer {
        let mut s = McpServer::new(
            name,
            McpServerSpec {
                remote: Some(RemoteServer {
                    url: url.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        s.metadata.namespace = Some(ns.into());
        s.metadata.uid = Some(format!("uid-{name}"));
        s
    }

    fn mcp_service(ns: &str, name: &str, port: i32) -> Candidate {
        let s = svc(ns, name, json!([{"name": "mcp", "port": port}]));
        candidates(&[s], &[], "cluster.local").remove(0)
    }

    #[test]
    fn in_cluster_host_names_resolve_to_service_and_namespace() {
        let d = "cluster.local";
        assert_eq!(
            service_of_host("a", "ns", d),
            Some(("a".into(), "ns".into()))
        );
        assert_eq!(
            service_of_host("a.b", "ns", d),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(
            service_of_host("a.b.svc", "ns", d),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(
            service_of_host("a.b.svc.cluster.local.", "ns", d),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(service_of_host("mcp.example.com", "ns", d), None);
        assert_eq!(service_of_host("a.b.svc.other.domain", "ns", d), None);
    }

    #[test]
    fn a_remote_mcp_server_url_backs_the_service_it_names_on_that_port_only() {
        let servers = [
            remote(
                "portal-ns",
                "tickets",
                "http://tickets.team.svc.cluster.local:8080/mcp",
            ),
            remote("team", "short", "http://short/mcp"),
        ];
        let s = Sanctioned::new(&servers, &[], "cluster.local");
        assert!(s.backing(&mcp_service("team", "tickets", 8080)).is_some());
        assert!(
            s.backing(&mcp_service("team", "tickets", 9090)).is_none(),
            "other port"
        );
        assert!(
            s.backing(&mcp_service("other", "tickets", 8080)).is_none(),
            "other namespace"
        );
        assert!(
            s.backing(&mcp_service("team", "short", 80)).is_some(),
            "bare name, default port"
        );
    }

    #[test]
    fn a_remote_url_naming_the_cluster_ip_backs_the_service() {
        let s = Sanctioned::new(
            &[remote("a", "ip", "http://10.0.0.1:80/mcp")],
            &[],
            "cluster.local",
        );
        assert!(s.backing(&mcp_service("team", "any", 80)).is_some());
    }

    #[test]
    fn services_owned_by_portcullis_resources_are_sanctioned_but_labels_alone_are_not() {
        let portal = {
            let mut p = McpPortal::new("eng", McpPortalSpec::default());
            p.metadata.namespace = Some("team".into());
            p.metadata.uid = Some("uid-portal".into());
            p
        };
        let s = Sanctioned::new(&[], &[portal], "cluster.local");
        let mut owned = svc("team", "eng-portal", json!([{"name": "mcp", "port": 80}]));
        owned.metadata.owner_references = Some(vec![OwnerReference {
            uid: "uid-portal".into(),
            ..Default::default()
        }]);
        let owned = candidates(&[owned], &[], "cluster.local").remove(0);
        assert!(s.backing(&owned).is_some());
        let mut spoofed = svc("team", "spoof", json!([{"name": "mcp", "port": 80}]));
        spoofed.metadata.labels = Some([(COMPONENT_LABEL.to_owned(), "portal".to_owned())].into());
        let spoofed = candidates(&[spoofed], &[], "cluster.local").remove(0);
        assert!(
            s.backing(&spoofed).is_none(),
            "a label does not sanction a Service"
        );
    }

    #[test]
    fn pods_of_an_existing_deployed_server_are_sanctioned_and_of_a_missing_one_are_not() {
        let mut deployed = McpServer::new(
            "docs",
            McpServerSpec {
                deployment: Some(DeployedServer::default()),
                ..Default::default()
            },
        );
        deployed.metadata.namespace = Some("team".into());
        let s = Sanctioned::new(&[deployed], &[], "cluster.local");
        let labels = |server: &str| json!({"portcullis.dev/component": "server", "portcullis.dev/server": server});
        let ports = json!([{"name": "mcp", "containerPort": 9180}]);
        let ours = pod("team", "docs-1", labels("docs"), "proxy", ports.clone());
        let stray = pod("team", "ghost-1", labels("ghost"), "proxy", ports);
        let c = candidates(&[], &[ours, stray], "cluster.local");
        assert!(s.backing(&c[0]).is_some(), "{:?}", c[0].name);
        assert!(s.backing(&c[1]).is_none(), "{:?}", c[1].name);
    }
}
