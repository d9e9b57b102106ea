//! Desired state as pure functions: resources in, Kubernetes objects, status and Events out. No
//! I/O here; the controllers apply what these return, and `portcullis-operator render` prints the
//! objects. Per kind: `objects` (what it becomes) and `status` (what its status says, and which
//! Events tell the change), each over plain inputs the controller has read or observed.

pub mod policy;
pub mod portal;
pub mod server;
pub mod tools;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ContainerPort, HTTPGetAction, PodSecurityContext, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecurityContext, Service, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crds::manifests::Manifests;

/// Settings of the operator that shape what it renders (from flags / Helm values).
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Image of the proxy (portal pods, sidecars, the stdio init container).
    pub proxy_image: String,
    /// Pull policy of the proxy image.
    pub image_pull_policy: String,
    /// Cluster DNS domain, for Service URLs.
    pub cluster_domain: String,
    /// Namespace of resources that name none (render only).
    pub default_namespace: String,
    /// Render a ServiceMonitor (monitoring.coreos.com/v1) per portal.
    pub service_monitor: bool,
    /// Namespace the operator runs in: deployed servers' NetworkPolicies admit operator pods
    /// of this namespace only (a label alone is no proof: any tenant can set it on a pod).
    pub operator_namespace: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            proxy_image: "ghcr.io/portcullis/portcullis-proxy:latest".into(),
            image_pull_policy: "IfNotPresent".into(),
            cluster_domain: "cluster.local".into(),
            default_namespace: "default".into(),
            service_monitor: false,
            operator_namespace: "portcullis-system".into(),
        }
    }
}

/// One object the operator applies.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a handful per reconcile, built once, applied, dropped
pub enum Object {
    /// Rendered proxy configuration.
    ConfigMap(ConfigMap),
    /// Proxy (portal) or server-plus-sidecar pods.
    Deployment(Box<Deployment>),
    /// Stable address of a portal or a deployed server.
    Service(Service),
    /// Admits only portal pods (and the operator) to a deployed server.
    NetworkPolicy(NetworkPolicy),
    /// Keeps a portal available during voluntary disruptions.
    PodDisruptionBudget(PodDisruptionBudget),
    /// Prometheus Operator scrape config (only when enabled).
    ServiceMonitor(DynamicObject),
}

impl Object {
    /// `Kind/name`, for logs and errors.
    pub fn describe(&self) -> String {
        let (kind, name) = match self {
            Object::ConfigMap(o) => ("ConfigMap", o.name_any()),
            Object::Deployment(o) => ("Deployment", o.name_any()),
            Object::Service(o) => ("Service", o.name_any()),
            Object::NetworkPolicy(o) => ("NetworkPolicy", o.name_any()),
            Object::PodDisruptionBudget(o) => ("PodDisruptionBudget", o.name_any()),
            Object::ServiceMonitor(o) => ("ServiceMonitor", o.name_any()),
        };
        format!("{kind}/{name}")
    }

    /// The object as JSON, with apiVersion and kind (what server-side apply sends).
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let v = match self {
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::NetworkPolicy(o) => serde_json::to_value(o),
            Object::PodDisruptionBudget(o) => serde_json::to_value(o),
            Object::ServiceMonitor(o) => serde_json::to_value(o),
        };
        v.map_err(|source| Error::Serialize {
            what: self.describe(),
            source,
        })
    }
}

/// Every object the operator would apply for a set of manifests, in a stable order: per
/// deployed server its objects, then per portal its objects.
pub fn render_all(m: &Manifests, opts: &RenderOptions) -> Result<Vec<Object>> {
    let with_ns = |meta: &mut kube::api::ObjectMeta| {
        if meta.namespace.is_none() {
            meta.namespace = Some(opts.default_namespace.clone());
        }
    };
    let mut servers = m.servers.clone();
    servers.iter_mut().for_each(|s| with_ns(&mut s.metadata));
    let mut portals = m.portals.clone();
    portals.iter_mut().for_each(|p| with_ns(&mut p.metadata));
    let mut policies = m.policies.clone();
    policies.iter_mut().for_each(|p| with_ns(&mut p.metadata));

    let mut out = Vec::new();
    for s in &servers {
        if let Some(objs) = server::objects(s, opts)? {
            out.extend(objs.into_vec());
        }
    }
    for p in &portals {
        let selected = crds::select::selected_servers(p, &servers);
        let bound = crds::select::bound_policies(p, &policies);
        out.extend(portal::objects(p, &selected, &bound, &BTreeMap::new(), opts)?.into_vec());
    }
    Ok(out)
}

/// Multi-document YAML of objects (what `render` prints).
pub fn to_yaml(objects: &[Object]) -> Result<String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&o.to_json()?)?);
    }
    Ok(out)
}

/// An Event to publish about the reconciled object (`kubectl describe` shows it): what a
/// `status` function decides to tell; the controller publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// Short PascalCase reason (`SecretMissing`, `ConfigChanged`, ...).
    pub reason: &'static str,
    /// What the operator did (`Render`, `Probe`, ...).
    pub action: &'static str,
    /// The message.
    pub note: String,
}

impl Notice {
    /// A `Normal` event.
    pub fn normal(reason: &'static str, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            action,
            note: note.into(),
        }
    }

    /// A `Warning` event.
    pub fn warning(reason: &'static str, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            ..Self::normal(reason, action, note)
        }
    }
}

/// The value of one key of a Secret (`data`, then `stringData`).
pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
}

/// `a,b,c`, or `None` for no names (status summary columns).
pub(crate) fn names_csv(names: &BTreeSet<String>) -> Option<String> {
    (!names.is_empty()).then(|| names.iter().cloned().collect::<Vec<_>>().join(","))
}

/// Which namespaces a NetworkPolicy peer's pods may be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerNamespaces {
    /// The policy's own namespace.
    Same,
    /// Any namespace.
    Any,
    /// These namespaces (by `kubernetes.io/metadata.name`).
    Named(Vec<String>),
}

/// A NetworkPolicy peer: pods with `labels` in `namespaces`.
pub fn pod_peer(labels: BTreeMap<String, String>, namespaces: PeerNamespaces) -> NetworkPolicyPeer {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..Default::default()
        }),
        namespace_selector: match namespaces {
            PeerNamespaces::Same => None,
            PeerNamespaces::Any => Some(LabelSelector::default()),
            PeerNamespaces::Named(names) => Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "In".into(),
                    values: Some(names),
                }]),
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}

/// The peer of portal pods (`portcullis.dev/component: portal`) in `namespaces`.
pub fn portal_peer(namespaces: PeerNamespaces) -> NetworkPolicyPeer {
    pod_peer(
        BTreeMap::from([(
            crate::names::COMPONENT_LABEL.to_owned(),
            "portal".to_owned(),
        )]),
        namespaces,
    )
}

/// The peer of the operator's pods (`app.kubernetes.io/name: portcullis-operator`), which
/// probe servers.
pub fn operator_peer(namespaces: PeerNamespaces) -> NetworkPolicyPeer {
    pod_peer(
        BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            crate::names::OPERATOR_NAME.to_owned(),
        )]),
        namespaces,
    )
}

/// The controller owner reference to `owner`, when it has a uid (it has none in `render`).
pub(crate) fn owner_refs<K: Resource<DynamicType = ()>>(owner: &K) -> Option<Vec<OwnerReference>> {
    owner
        .controller_owner_ref(&())
        .filter(|r| !r.uid.is_empty())
        .map(|r| vec![r])
}

/// SHA-256 (hex) of any serializable value.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// serde_yaml of a document, stripped of `status` and server-populated metadata.
pub(crate) fn clean_document<T: Serialize>(doc: &T) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(doc).map_err(|source| Error::Serialize {
        what: "manifest document".into(),
        source,
    })?;
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.retain(|k, _| matches!(k.as_str(), "name" | "labels"));
        }
    }
    Ok(v)
}

/// Restricted-profile security context of a container.
pub(crate) fn restricted_container(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Restricted-profile security context of a pod (non-root uid 65532).
pub(crate) fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Default requests/limits of a proxy container.
pub(crate) fn proxy_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("100m".into())),
            ("memory".into(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("256Mi".into()),
        )])),
        ..Default::default()
    }
}

/// The proxy's ports (MCP and admin).
pub(crate) fn proxy_ports() -> Vec<ContainerPort> {
    vec![
        ContainerPort {
            name: Some("mcp".into()),
            container_port: crate::names::PROXY_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
        ContainerPort {
            name: Some("admin".into()),
            container_port: crate::names::ADMIN_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
    ]
}

/// An HTTP GET probe on the proxy's MCP port.
pub(crate) fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("mcp".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// The proxy's command-line arguments inside a pod.
pub(crate) fn proxy_args(portal: &str) -> Vec<String> {
    use crate::names::{ADMIN_PORT, CONFIG_DIR, PROXY_PORT, SECRETS_DIR};
    vec![
        "--manifests".into(),
        CONFIG_DIR.into(),
        "--portal".into(),
        portal.into(),
        "--listen".into(),
        format!("0.0.0.0:{PROXY_PORT}"),
        "--admin-listen".into(),
        format!("0.0.0.0:{ADMIN_PORT}"),
        "--secrets-dir".into(),
        SECRETS_DIR.into(),
        "--log-format".into(),
        "json".into(),
    ]
}

/// Volumes and mounts for the config ConfigMap, each Secret, and a writable /tmp.
pub(crate) fn config_and_secret_volumes(
    config_map: &str,
    secrets: impl IntoIterator<Item = String>,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, EmptyDirVolumeSource, SecretVolumeSource,
    };
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: crate::names::CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    for (i, secret) in secrets.into_iter().enumerate() {
        let vname = format!("secret-{i}");
        volumes.push(Volume {
            name: vname.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: vname,
            mount_path: format!("{}/{secret}", crate::names::SECRETS_DIR),
            read_only: Some(true),
            ..Default::default()
        });
    }
    (volumes, mounts)
}

/// Helpers of the status tests.
#[cfg(test)]
pub(crate) mod testing {
    use crds::Condition;
    use kube::Resource;

    /// `obj` in namespace `default`, with a uid and generation 1 (as the API server has it).
    pub fn named<K: Resource<DynamicType = ()>>(mut obj: K) -> K {
        let m = obj.meta_mut();
        m.namespace = Some("default".into());
        m.uid = Some(format!("uid-{}", m.name.clone().unwrap_or_default()));
        m.generation = Some(1);
        obj
    }

    /// The condition of `type_`; panics naming it when absent.
    pub fn condition_of<'a>(conds: &'a [Condition], type_: &str) -> &'a Condition {
        conds
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {conds:?}"))
    }
}
