//! Names, labels, ports and paths shared by the desired-state functions and the controllers.

use std::collections::BTreeMap;

/// The one server-side-apply field manager of the operator (objects and status).
pub const FIELD_MANAGER: &str = "portcullis-operator";
/// `app.kubernetes.io/managed-by` value on everything the operator creates.
pub const MANAGED_BY: &str = "portcullis-operator";
/// Label every portal pod carries; deployed servers' NetworkPolicies admit pods with it.
pub const COMPONENT_LABEL: &str = "portcullis.dev/component";
/// Label naming the McpPortal a portal object belongs to.
pub const PORTAL_LABEL: &str = "portcullis.dev/portal";
/// Label naming the McpServer a server object belongs to.
pub const SERVER_LABEL: &str = "portcullis.dev/server";
/// Pod-template annotation holding the hash of the rendered configuration (and the
/// resourceVersions of the Secrets it references), so any change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "portcullis.dev/config-hash";
/// Label of the operator's own pods (deployed servers admit them, for probing).
pub const OPERATOR_NAME: &str = "portcullis-operator";

/// Port of the proxy's MCP endpoint inside pods (portal and sidecar).
pub const PROXY_PORT: i32 = 9180;
/// Port of the proxy's admin endpoint (`/metrics`, `/admin/*`).
pub const ADMIN_PORT: i32 = 9464;
/// Port of the Services in front of portals and deployed servers.
pub const SERVICE_PORT: i32 = 80;
/// Where the rendered manifests are mounted.
pub const CONFIG_DIR: &str = "/etc/portcullis/config";
/// Where referenced Secrets are mounted (`<dir>/<secret>/<key>`), the proxy's default.
pub const SECRETS_DIR: &str = "/var/run/portcullis/secrets";
/// Where the init container copies the proxy binary for stdio servers.
pub const PROXY_BIN_DIR: &str = "/portcullis/bin";
/// Path of the proxy binary inside the proxy image.
pub const PROXY_BIN_IN_IMAGE: &str = "/usr/local/bin/portcullis-proxy";
/// Key of the rendered manifests in the ConfigMaps.
pub const CONFIG_KEY: &str = "manifests.yaml";

/// Name of the objects (ConfigMap, Deployment, Service, PDB) of a portal.
pub fn portal_object_name(portal: &str) -> String {
    format!("{portal}-portal")
}

/// Name of the objects (ConfigMap, Deployment, Service, NetworkPolicy) of a deployed server.
pub fn server_object_name(server: &str) -> String {
    format!("{server}-mcp")
}

/// In-cluster URL of a deployed server's sidecar.
pub fn server_url(server: &str, namespace: &str, cluster_domain: &str) -> String {
    format!(
        "http://{}.{namespace}.svc.{cluster_domain}:{SERVICE_PORT}/mcp",
        server_object_name(server)
    )
}

/// Pod selector labels of a portal's pods.
pub fn portal_selector(portal: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT_LABEL.to_owned(), "portal".to_owned()),
        (PORTAL_LABEL.to_owned(), portal.to_owned()),
    ])
}

/// Pod selector labels of a deployed server's pods.
pub fn server_selector(server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT_LABEL.to_owned(), "server".to_owned()),
        (SERVER_LABEL.to_owned(), server.to_owned()),
    ])
}

/// Labels on every object of a portal or server: the selector plus the recommended labels.
pub fn object_labels(
    selector: &BTreeMap<String, String>,
    instance: &str,
) -> BTreeMap<String, String> {
    let mut labels = selector.clone();
    labels.insert("app.kubernetes.io/name".into(), "portcullis-proxy".into());
    labels.insert("app.kubernetes.io/instance".into(), instance.to_owned());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}
