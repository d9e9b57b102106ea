//! What an McpPortal becomes: a ConfigMap of proxy manifests, a Deployment of the proxy, a
//! Service, a PodDisruptionBudget and, when enabled, a ServiceMonitor; and its status.

mod status;

use std::collections::BTreeMap;

use crds::server::RemoteServer;
use crds::{McpPolicy, McpPortal, McpServer};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};

use super::{Object, RenderOptions, clean_document, owner_refs, sha256_hex};
use crate::error::{Error, Result};
use crate::names::{self, CONFIG_HASH_ANNOTATION, CONFIG_KEY, SERVICE_PORT};
use crds::select;

pub use status::{
    Blocked, Observed, Rollout, SecretCheck, blocked, check_secrets, policies_condition,
    requeue_after, split_valid, status,
};

/// Default number of proxy replicas.
pub const DEFAULT_REPLICAS: i32 = 2;

/// The objects of one portal.
#[derive(Debug, Clone, PartialEq)]
pub struct PortalObjects {
    /// Rendered manifests the proxy reads.
    pub config_map: ConfigMap,
    /// The proxy.
    pub deployment: Deployment,
    /// The portal's stable address.
    pub service: Service,
    /// At most one replica down during voluntary disruptions.
    pub pdb: PodDisruptionBudget,
    /// Prometheus Operator scrape config.
    pub service_monitor: Option<DynamicObject>,
    /// Hash of the configuration and the referenced Secrets' versions.
    pub config_hash: String,
}

impl PortalObjects {
    /// In apply order.
    pub fn into_vec(self) -> Vec<Object> {
        let mut v = vec![
            Object::ConfigMap(self.config_map),
            Object::Service(self.service),
            Object::Deployment(Box::new(self.deployment)),
            Object::PodDisruptionBudget(self.pdb),
        ];
        v.extend(self.service_monitor.map(Object::ServiceMonitor));
        v
    }
}

/// The URL clients use: `spec.publicUrl` + `/mcp`, else the in-cluster Service URL.
pub fn url(portal: &McpPortal, opts: &RenderOptions) -> String {
    match &portal.spec.public_url {
        Some(base) => format!("{}/mcp", base.trim_end_matches('/')),
        None => format!(
            "http://{}.{}.svc.{}/mcp",
            names::portal_object_name(&portal.name_any()),
            portal
                .namespace()
                .unwrap_or_else(|| opts.default_namespace.clone()),
            opts.cluster_domain
        ),
    }
}

/// The server as the portal's proxy sees it: deployed servers become remote servers at their
/// sidecar's Service URL (the sidecar holds their secrets and runs their stdio command).
pub fn server_as_seen_by_portal(server: &McpServer, opts: &RenderOptions) -> McpServer {
    let mut s = server.clone();
    if s.spec.deployment.take().is_some() {
        let ns = server
            .namespace()
            .unwrap_or_else(|| opts.default_namespace.clone());
        s.spec.remote = Some(RemoteServer {
            url: names::server_url(&server.name_any(), &ns, &opts.cluster_domain),
            ..Default::default()
        });
    }
    s
}

/// The proxy's manifests for one portal: the McpPortal, the servers it selects and the
/// policies bound to it, as multi-document YAML without secret values. Status is dropped except
/// each server's `status.toolBaseline`: the tool-definition baseline the portal pins against
/// (it changes only on a server's first probe, or with `onChange: Allow`).
pub fn config_yaml(
    portal: &McpPortal,
    servers: &[&McpServer],
    policies: &[&McpPolicy],
    opts: &RenderOptions,
) -> Result<String> {
    let mut docs = vec![clean_document(portal)?];
    for s in servers {
        let mut doc = clean_document(&server_as_seen_by_portal(s, opts))?;
        let baseline = s.status.as_ref().map(|st| &st.tool_baseline);
        if let (Some(b), Some(obj)) = (baseline.filter(|b| !b.is_empty()), doc.as_object_mut()) {
            obj.insert("status".into(), serde_json::json!({ "toolBaseline": b }));
        }
        docs.push(doc);
    }
    for p in policies {
        docs.push(clean_document(*p)?);
    }
    let mut out =
        String::from("# Rendered by portcullis-operator. Do not edit: changes are overwritten.\n");
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&d)?);
    }
    Ok(out)
}

/// Every object of a portal. `secret_versions` maps referenced Secret names to their
/// resourceVersions (folded into the config hash so a rotated Secret rolls the pods).
pub fn objects(
    portal: &McpPortal,
    servers: &[&McpServer],
    policies: &[&McpPolicy],
    secret_versions: &BTreeMap<String, String>,
    opts: &RenderOptions,
) -> Result<PortalObjects> {
    let name = portal.name_any();
    let ns = portal
        .namespace()
        .unwrap_or_else(|| opts.default_namespace.clone());
    let obj_name = names::portal_object_name(&name);
    let selector = names::portal_selector(&name);
    let labels = names::object_labels(&selector, &name);
    let meta = ObjectMeta {
        name: Some(obj_name.clone()),
        namespace: Some(ns.clone()),
        labels: Some(labels.clone()),
        owner_references: owner_refs(portal),
        ..Default::default()
    };

    let config = config_yaml(portal, servers, policies, opts)?;
    let mut hash_input = config.clone();
    for (secret, rv) in secret_versions {
        hash_input.push_str(&format!("\n#secret {secret}={rv}"));
    }
    let config_hash = sha256_hex(hash_input.as_bytes())[..16].to_owned();

    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config)])),
        ..Default::default()
    };

    let refs = select::portal_secret_refs(portal, servers);
    // spec.tls: the proxy's HTTPS listener (it listens on 0.0.0.0:<port> by itself).
    let tls_port = portal
        .spec
        .tls
        .as_ref()
        .map(|t| t.port.unwrap_or(crds::portal::DEFAULT_TLS_PORT));
    let mut ports = super::proxy_ports();
    if let Some(port) = tls_port {
        ports.push(k8s_openapi::api::core::v1::ContainerPort {
            name: Some("mcps".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    let (volumes, mounts) =
        super::config_and_secret_volumes(&obj_name, select::secret_names(&refs));
    let container = Container {
        name: "proxy".into(),
        image: Some(opts.proxy_image.clone()),
        image_pull_policy: Some(opts.image_pull_policy.clone()),
        args: Some(super::proxy_args(&name)),
        ports: Some(ports),
        readiness_probe: Some(super::http_probe("/readyz", 5)),
        liveness_probe: Some(super::http_probe("/healthz", 10)),
        resources: Some(
            portal
                .spec
                .resources
                .clone()
                .unwrap_or_else(super::proxy_resources),
        ),
        security_context: Some(super::restricted_container(true)),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let replicas = portal.spec.replicas.unwrap_or(DEFAULT_REPLICAS);
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.clone(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(super::restricted_pod()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    };

    let service = Service {
        metadata: meta.clone(),
        spec: Some(ServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(
                vec![
                    ServicePort {
                        name: Some("http".into()),
                        port: SERVICE_PORT,
                        target_port: Some(IntOrString::String("mcp".into())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("admin".into()),
                        port: names::ADMIN_PORT,
                        target_port: Some(IntOrString::String("admin".into())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    },
                ]
                .into_iter()
                .chain(tls_port.map(|port| ServicePort {
                    name: Some("mcps".into()),
                    port,
                    target_port: Some(IntOrString::String("mcps".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }))
                .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };

    let pdb = PodDisruptionBudget {
        metadata: meta.clone(),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let service_monitor = if opts.service_monitor {
        Some(service_monitor(meta, &selector)?)
    } else {
        None
    };

    Ok(PortalObjects {
        config_map,
        deployment,
        service,
        pdb,
        service_monitor,
        config_hash,
    })
}

/// The `monitoring.coreos.com/v1` ServiceMonitor API resource.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

fn service_monitor(meta: ObjectMeta, selector: &BTreeMap<String, String>) -> Result<DynamicObject> {
    let mut sm = DynamicObject::new(
        meta.name.as_deref().unwrap_or_default(),
        &service_monitor_resource(),
    );
    sm.metadata = meta;
    sm.data = serde_json::json!({
        "spec": {
            "selector": {"matchLabels": selector},
            "endpoints": [{"port": "admin", "path": "/metrics", "interval": "30s"}],
        }
    });
    // Round-trip to catch anything that would not serialize.
    serde_json::to_value(&sm).map_err(|source| Error::Serialize {
        what: "ServiceMonitor".into(),
        source,
    })?;
    Ok(sm)
}
