//! Portcullis API types (`portcullis.dev/v1alpha1`).
//!
//! These types are the single source of truth for the custom resources: the operator reconciles
//! them, the proxy parses the same documents from a ConfigMap or a local file, and `crdgen`
//! renders the CustomResourceDefinition YAML from them (`make generate`).
//!
//! The API's meaning lives here once, below both the operator and the proxy: the DLP
//! [`detector`] catalogue, the tool-name [`glob`] syntax, portal -> server and policy -> portal
//! [`select`]ion, [`validate`]ion beyond the schema, [`manifests`] reading and [`canonical`] JSON
//! for hashes.

pub mod access;
pub mod budget;
pub mod canonical;
pub mod common;
pub mod detector;
pub mod error;
pub mod glob;
pub mod inspection;
pub mod llm;
pub mod manifests;
pub mod policy;
pub mod portal;
pub mod select;
pub mod server;
pub mod tooldef;
pub mod validate;

pub use common::{Condition, SecretKeyRef};
pub use detector::{Detector, DetectorName};
pub use error::{Error, Result};
pub use manifests::Manifests;
pub use policy::{McpPolicy, McpPolicySpec, McpPolicyStatus};
pub use portal::{McpPortal, McpPortalSpec, McpPortalStatus};
pub use server::{McpServer, McpServerSpec, McpServerStatus};

/// API group of every Portcullis resource.
pub const GROUP: &str = "portcullis.dev";
/// API version of every Portcullis resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "portcullis.dev/v1alpha1";

/// All CustomResourceDefinitions, in a stable order (what `crdgen` prints).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![McpServer::crd(), McpPortal::crd(), McpPolicy::crd()]
}

/// The CRDs as one multi-document YAML string, exactly as committed under `crds/`.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("CRDs always serialize"));
    }
    out
}
