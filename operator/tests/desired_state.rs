//! The pure `spec -> objects` functions, without I/O.

use std::collections::BTreeMap;

use crds::manifests::{Manifests, parse_into};
use crds::select;
use crds::{McpPolicy, McpPortal, McpServer};
use operator::desired::{self, Object, RenderOptions};

const DOCS: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {name: wiki, namespace: team, labels: {team: a}}
spec:
  remote:
    url: http://wiki.example/mcp
    headers: [{name: X-Api-Key, valueFrom: {name: wiki-key, key: k}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {name: tickets, namespace: team, labels: {team: a}}
spec:
  deployment:
    image: tickets:1
    command: [tickets]
    env: [{name: TOKEN, valueFrom: {name: tickets-token, key: t}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: McpServer
metadata: {name: docs, namespace: team, labels: {team: b}}
spec:
  deployment: {image: docs:1, transport: http, port: 3000, path: /rpc}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpPortal
metadata: {name: p, namespace: team}
spec:
  public: true
  servers: {selector: {matchLabels: {team: a}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpPolicy
metadata: {name: other-portal, namespace: team}
spec: {portals: [q]}
---
apiVersion: portcullis.dev/v1alpha1
kind: McpPolicy
metadata: {name: everyone, namespace: team}
spec: {}
"#;

fn manifests() -> Manifests {
    let mut m = Manifests::default();
    parse_into(&mut m, std::path::Path::new("t.yaml"), DOCS).unwrap();
    m
}

fn find<'a>(objs: &'a [Object], describe: &str) -> &'a Object {
    objs.iter()
        .find(|o| o.describe() == describe)
        .unwrap_or_else(|| {
            panic!(
                "{describe} not in {:?}",
                objs.iter().map(Object::describe).collect::<Vec<_>>()
            )
        })
}

fn portal_parts(m: &Manifests) -> (&McpPortal, Vec<&McpServer>, Vec<&McpPolicy>) {
    let p = &m.portals[0];
    (
        p,
        select::selected_servers(p, &m.servers),
        select::bound_policies(p, &m.policies),
    )
}

#[test]
fn a_portal_selects_by_label_and_binds_unscoped_and_named_policies_only() {
    let m = manifests();
    let (_, servers, policies) = portal_parts(&m);
    let names: Vec<_> = servers
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["tickets", "wiki"]);
    let pols: Vec<_> = policies
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(pols, ["everyone"]);
}

#[test]
fn the_portal_config_turns_deployed_servers_into_their_sidecar_urls_and_holds_no_secret_values() {
    let m = manifests();
    let (p, servers, policies) = portal_parts(&m);
    let yaml =
        desired::portal::config_yaml(p, &servers, &policies, &RenderOptions::default()).unwrap();
    assert!(
        yaml.contains("url: http://tickets-mcp.team.svc.cluster.local:80/mcp"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("deployment:"),
        "the portal never spawns deployed servers: {yaml}"
    );
    assert!(yaml.contains("valueFrom:"), "secret refs stay refs");
    assert!(!yaml.contains("status:") && !yaml.contains("uid"), "{yaml}");
}

#[test]
fn the_portal_deployment_mounts_exactly_the_secrets_its_proxy_reads_and_is_restricted() {
    let m = manifests();
    let (p, servers, policies) = portal_parts(&m);
    let objs = desired::portal::objects(
        p,
        &servers,
        &policies,
        &BTreeMap::new(),
        &RenderOptions::default(),
    )
    .unwrap();
    let pod = objs.deployment.spec.template.spec.as_ref().unwrap();
    let secrets: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()))
        .collect();
    // The remote server's header Secret; the deployed server's env Secret stays in its own pod.
    assert_eq!(secrets, ["wiki-key"]);
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(objs.deployment.spec.replicas, Some(2));
    // render has no uids: no owner references rather than broken ones.
    assert!(objs.deployment.metadata.owner_references.is_none());
}

#[test]
fn the_config_hash_follows_the_config_and_the_secret_versions() {
    let m = manifests();
    let (p, servers, policies) = portal_parts(&m);
    let o = RenderOptions::default();
    let h = |v: &[(&str, &str)]| {
        let versions = v
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        desired::portal::objects(p, &servers, &policies, &versions, &o)
            .unwrap()
            .config_hash
    };
    assert_eq!(h(&[("wiki-key", "1")]), h(&[("wiki-key", "1")]));
    assert_ne!(h(&[("wiki-key", "1")]), h(&[("wiki-key", "2")]));
    assert_ne!(
        h(&[]),
        desired::portal::objects(p, &servers, &[], &BTreeMap::new(), &o)
            .unwrap()
            .config_hash,
        "dropping a policy changes the hash"
    );
}

#[test]
fn a_stdio_server_runs_its_own_image_with_the_proxy_copied_in_front() {
    let m = manifests();
    let objs = desired::render_all(&m, &RenderOptions::default()).unwrap();
    let Object::Deployment(d) = find(&objs, "Deployment/tickets-mcp") else {
        unreachable!()
    };
    let pod = d.spec.template.spec.as_ref().unwrap();
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init.image.as_deref(),
        Some("ghcr.io/portcullis/portcullis-proxy:latest")
    );
    let server = &pod.containers[0];
    assert_eq!(server.image.as_deref(), Some("tickets:1"));
    assert_eq!(
        server.command.as_ref().unwrap(),
        &["/portcullis/bin/portcullis-proxy"]
    );
    let mounts: Vec<_> = server
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(
        mounts.contains(&"/var/run/portcullis/secrets/tickets-token"),
        "{mounts:?}"
    );
    let Object::ConfigMap(cm) = find(&objs, "ConfigMap/tickets-mcp") else {
        unreachable!()
    };
    let cfg = &cm.data.as_ref().unwrap()["manifests.yaml"];
    assert!(
        cfg.contains("transport: stdio") && cfg.contains("prefix: ''"),
        "{cfg}"
    );
}

#[test]
fn an_http_server_gets_the_proxy_as_a_sidecar_on_loopback_and_env_from_secret_refs() {
    let m = manifests();
    let objs = desired::render_all(&m, &RenderOptions::default()).unwrap();
    let Object::Deployment(d) = find(&objs, "Deployment/docs-mcp") else {
        unreachable!()
    };
    let pod = d.spec.template.spec.as_ref().unwrap();
    let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["server", "proxy"]);
    assert!(pod.init_containers.is_none());
    let Object::ConfigMap(cm) = find(&objs, "ConfigMap/docs-mcp") else {
        unreachable!()
    };
    assert!(cm.data.as_ref().unwrap()["manifests.yaml"].contains("url: http://127.0.0.1:3000/rpc"));
    let Object::NetworkPolicy(np) = find(&objs, "NetworkPolicy/docs-mcp") else {
        unreachable!()
    };
    let from = &np.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0]
        .from
        .as_ref()
        .unwrap()[0];
    let labels = from
        .pod_selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(labels["portcullis.dev/component"], "portal");
    assert!(
        from.namespace_selector.is_none(),
        "only this namespace's portals"
    );
    let operator = &np.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0]
        .from
        .as_ref()
        .unwrap()[1];
    let namespaces = operator
        .namespace_selector
        .as_ref()
        .expect("operator pods of one namespace, not of any")
        .match_expressions
        .as_ref()
        .unwrap();
    assert_eq!(namespaces[0].key, "kubernetes.io/metadata.name");
    assert_eq!(namespaces[0].operator, "In");
    assert_eq!(
        namespaces[0].values.as_deref(),
        Some(&["portcullis-system".to_owned()][..]),
        "the operator's own namespace (RenderOptions::operator_namespace)"
    );
}

#[test]
fn remote_servers_render_nothing_and_service_monitors_only_when_enabled() {
    let m = manifests();
    let objs = desired::render_all(&m, &RenderOptions::default()).unwrap();
    assert!(!objs.iter().any(|o| o.describe().contains("wiki")));
    assert!(!objs.iter().any(|o| matches!(o, Object::ServiceMonitor(_))));
    let with_sm = RenderOptions {
        service_monitor: true,
        ..Default::default()
    };
    let objs = desired::render_all(&m, &with_sm).unwrap();
    let Object::ServiceMonitor(sm) = find(&objs, "ServiceMonitor/p-portal") else {
        unreachable!()
    };
    let v = serde_json::to_value(sm).unwrap();
    assert_eq!(v["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(v["spec"]["endpoints"][0]["port"], "admin");
}

#[test]
fn two_servers_with_one_prefix_are_a_conflict() {
    let mut m = manifests();
    m.servers[1].spec.prefix = Some("wiki".into());
    m.servers[1].metadata.labels = m.servers[0].metadata.labels.clone();
    let p = &m.portals[0];
    let selected = select::selected_servers(p, &m.servers);
    let conflicts = select::prefix_conflicts(&selected);
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
}

#[test]
fn the_portal_config_carries_each_servers_tool_baseline_and_nothing_else_of_status() {
    let m = manifests();
    let (p, servers, policies) = portal_parts(&m);
    let mut with_status: Vec<crds::McpServer> = servers.iter().map(|s| (*s).clone()).collect();
    let pin = crds::tooldef::ToolPin {
        name: "list_tickets".into(),
        hash: format!("sha256:{}", "ab".repeat(32)),
    };
    with_status[0].status = Some(crds::McpServerStatus {
        tool_baseline: vec![pin.clone()],
        endpoint: Some("http://secret-endpoint".into()),
        ..Default::default()
    });
    let refs: Vec<&crds::McpServer> = with_status.iter().collect();
    let yaml =
        desired::portal::config_yaml(p, &refs, &policies, &RenderOptions::default()).unwrap();
    assert!(yaml.contains("toolBaseline:"), "{yaml}");
    assert!(yaml.contains(&pin.hash), "{yaml}");
    assert!(
        !yaml.contains("secret-endpoint"),
        "only the baseline: {yaml}"
    );
}
