//! What a deployed McpServer becomes: its pods with the proxy in front, a Service, the
//! sidecar's manifests and a NetworkPolicy. Remote servers become nothing (only status).
//!
//! How the proxy is put in front of the server:
//! - `http` servers: the pod has two containers, the server (its own image, env from Secrets
//!   through `secretKeyRef`) and the proxy sidecar, which reaches it on `127.0.0.1:<port>`.
//! - `stdio` servers: a process in one container cannot spawn a command that lives in another
//!   container's image. An init container copies the (static-enough, glibc) proxy binary from the
//!   proxy image into a shared `emptyDir`; the server container then runs the *server's* image
//!   with that proxy binary as its entrypoint, and the proxy starts the server's command as its
//!   child process. Any server image with a compatible libc works unchanged; its env values
//!   reach the child through the proxy, which reads Secret values from mounted files.

mod status;

use std::collections::BTreeMap;

use crds::McpServer;
use crds::portal::{McpPortalSpec, ServerSelection};
use crds::server::RemoteServer;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSpec,
    PodTemplateSpec, SecretKeySelector, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::ObjectMeta;

use super::{Object, PeerNamespaces, RenderOptions, clean_document, owner_refs, sha256_hex};
use crate::error::Result;
use crate::names::{
    self, CONFIG_HASH_ANNOTATION, CONFIG_KEY, PROXY_BIN_DIR, PROXY_PORT, SERVICE_PORT,
};

pub use status::{
    Observed, Probed, Source, newly_changed_tools, port_conflict, probed, requeue_after, status,
};

/// Ports a deployed `http` server may not listen on (the sidecar's).
pub const RESERVED_PORTS: [i32; 2] = [PROXY_PORT, names::ADMIN_PORT];

/// The objects of one deployed server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerObjects {
    /// The sidecar's single-server portal manifests.
    pub config_map: ConfigMap,
    /// Server plus proxy.
    pub deployment: Deployment,
    /// Stable address of the sidecar.
    pub service: Service,
    /// Only portal pods of the namespace (and the operator, for probes) may connect.
    pub network_policy: NetworkPolicy,
}

impl ServerObjects {
    /// In apply order.
    pub fn into_vec(self) -> Vec<Object> {
        vec![
            Object::ConfigMap(self.config_map),
            Object::Service(self.service),
            Object::NetworkPolicy(self.network_policy),
            Object::Deployment(Box::new(self.deployment)),
        ]
    }
}

/// The sidecar's manifests: a public single-server portal named after the server, whose
/// McpServer is the stdio command itself or the local HTTP endpoint, with no prefix (the
/// portal in front adds `<server>_`).
pub fn sidecar_config_yaml(server: &McpServer) -> Result<String> {
    let name = server.name_any();
    let mut inner = server.clone();
    inner.metadata = ObjectMeta {
        name: Some(name.clone()),
        ..Default::default()
    };
    inner.spec.prefix = Some(String::new());
    if let Some(dep) = &server.spec.deployment
        && dep.transport == crds::server::DeployedTransport::Http
    {
        inner.spec.deployment = None;
        inner.spec.remote = Some(RemoteServer {
            url: format!(
                "http://127.0.0.1:{}{}",
                dep.port.unwrap_or(8080),
                dep.path.clone().unwrap_or_else(|| "/mcp".into())
            ),
            ..Default::default()
        });
    }
    let portal = crds::McpPortal::new(
        &name,
        McpPortalSpec {
            public: Some(true),
            servers: ServerSelection {
                names: vec![name.clone()],
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let mut out =
        String::from("# Rendered by portcullis-operator: the sidecar of a deployed McpServer.\n");
    for doc in [clean_document(&portal)?, clean_document(&inner)?] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc)?);
    }
    Ok(out)
}

/// Every object of a deployed server; `None` for a remote one.
pub fn objects(server: &McpServer, opts: &RenderOptions) -> Result<Option<ServerObjects>> {
    let Some(dep) = &server.spec.deployment else {
        return Ok(None);
    };
    let name = server.name_any();
    let ns = server
        .namespace()
        .unwrap_or_else(|| opts.default_namespace.clone());
    let obj_name = names::server_object_name(&name);
    let selector = names::server_selector(&name);
    let labels = names::object_labels(&selector, &name);
    let meta = ObjectMeta {
        name: Some(obj_name.clone()),
        namespace: Some(ns),
        labels: Some(labels.clone()),
        owner_references: owner_refs(server),
        ..Default::default()
    };
    let config = sidecar_config_yaml(server)?;
    let config_hash = sha256_hex(config.as_bytes())[..16].to_owned();
    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config)])),
        ..Default::default()
    };

    let stdio = dep.transport == crds::server::DeployedTransport::Stdio;
    let (mut containers, mut init_containers) = (Vec::new(), Vec::new());
    let mut volumes;
    if stdio {
        // The proxy runs inside the server's image and spawns the command; it needs the
        // Secrets of the env as files.
        let secrets = crds::select::secret_names(&crds::select::deployed_secret_refs(server));
        let (v, mut mounts) = super::config_and_secret_volumes(&obj_name, secrets);
        volumes = v;
        volumes.push(Volume {
            name: "portcullis-bin".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        let bin_mount = VolumeMount {
            name: "portcullis-bin".into(),
            mount_path: PROXY_BIN_DIR.into(),
            ..Default::default()
        };
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..bin_mount.clone()
        });
        init_containers.push(Container {
            name: "install-proxy".into(),
            image: Some(opts.proxy_image.clone()),
            image_pull_policy: Some(opts.image_pull_policy.clone()),
            command: Some(vec![
                "cp".into(),
                names::PROXY_BIN_IN_IMAGE.into(),
                format!("{PROXY_BIN_DIR}/portcullis-proxy"),
            ]),
            security_context: Some(super::restricted_container(true)),
            volume_mounts: Some(vec![bin_mount]),
            resources: Some(super::proxy_resources()),
            ..Default::default()
        });
        containers.push(Container {
            name: "server".into(),
            image: Some(dep.image.clone()),
            command: Some(vec![format!("{PROXY_BIN_DIR}/portcullis-proxy")]),
            args: Some(super::proxy_args(&name)),
            env: Some(vec![EnvVar {
                name: "HOME".into(),
                value: Some("/tmp".into()),
                ..Default::default()
            }]),
            ports: Some(super::proxy_ports()),
            readiness_probe: Some(super::http_probe("/readyz", 5)),
            liveness_probe: Some(super::http_probe("/healthz", 10)),
            resources: dep.resources.clone(),
            // Server images often write caches: the root filesystem stays writable.
            security_context: Some(super::restricted_container(false)),
            volume_mounts: Some(mounts),
            ..Default::default()
        });
    } else {
        let (v, mounts) = super::config_and_secret_volumes(&obj_name, []);
        volumes = v;
        let port = i32::from(dep.port.unwrap_or(8080));
        let env = dep
            .env
            .iter()
            .map(|e| EnvVar {
                name: e.name.clone(),
                value: e.value.clone(),
                value_from: e.value_from.as_ref().map(|r| EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: r.name.clone(),
                        key: r.key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            })
            .chain([EnvVar {
                name: "HOME".into(),
                value: Some("/tmp".into()),
                ..Default::default()
            }])
            .collect();
        containers.push(Container {
            name: "server".into(),
            image: Some(dep.image.clone()),
            command: (!dep.command.is_empty()).then(|| dep.command.clone()),
            args: (!dep.args.is_empty()).then(|| dep.args.clone()),
            env: Some(env),
            ports: Some(vec![ContainerPort {
                name: Some("server".into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            resources: dep.resources.clone(),
            security_context: Some(super::restricted_container(false)),
            volume_mounts: Some(vec![VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        containers.push(Container {
            name: "proxy".into(),
            image: Some(opts.proxy_image.clone()),
            image_pull_policy: Some(opts.image_pull_policy.clone()),
            args: Some(super::proxy_args(&name)),
            ports: Some(super::proxy_ports()),
            readiness_probe: Some(super::http_probe("/readyz", 5)),
            liveness_probe: Some(super::http_probe("/healthz", 10)),
            resources: Some(super::proxy_resources()),
            security_context: Some(super::restricted_container(true)),
            volume_mounts: Some(mounts),
            ..Default::default()
        });
    }

    let deployment = Deployment {
        metadata: meta.clone(),
        spec: DeploymentSpec {
            replicas: Some(dep.replicas.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash,
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(super::restricted_pod()),
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers,
                    volumes: Some(volumes),
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
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("mcp".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };

    let network_policy = NetworkPolicy {
        metadata: meta,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    // Portal pods of this namespace.
                    super::portal_peer(PeerNamespaces::Same),
                    // The operator's pods, in the operator's own namespace only: it probes the
                    // server for its tools.
                    super::operator_peer(PeerNamespaces::Named(vec![
                        opts.operator_namespace.clone(),
                    ])),
                ]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::String("mcp".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    };

    Ok(Some(ServerObjects {
        config_map,
        deployment,
        service,
        network_policy,
    }))
}
