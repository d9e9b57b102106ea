//! `McpServer`: one upstream MCP server, remote or deployed by the operator.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, EnvVar, HeaderValue, SecretKeyRef};
use crate::tooldef::{PinAction, ToolPin, ToolVerdict};

/// One upstream MCP server. Exactly one of `remote` and `deployment` is set.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "McpServer",
    namespaced,
    status = "McpServerStatus",
    shortname = "mcps",
    category = "portcullis",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".status.kind"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Tools","type":"integer","jsonPath":".status.tools.count"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.remote) != has(self.deployment)",
    "message": "set exactly one of remote and deployment"
}]))]
pub struct McpServerSpec {
    /// A server that already runs somewhere and is reached over the network.
    /// Mutually exclusive with `deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteServer>,
    /// A server the operator runs as a Deployment, with the Portcullis proxy as a sidecar in
    /// front of it. On a laptop, `stdio` servers are started as child processes of the proxy.
    /// Mutually exclusive with `remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeployedServer>,
    /// Prefix of this server's tools, prompts and resources in a portal (`<prefix>_<tool>`).
    /// Defaults to the resource name. Up to 64 characters of `[A-Za-z0-9.-]`. The empty string
    /// exposes the server's names unchanged (only sensible for a portal with one server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^[A-Za-z0-9.-]*$"))]
    pub prefix: Option<String>,
    /// Seconds a single request to this server may take before the portal gives up on it.
    /// Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
    /// Per-tool overrides. Tool annotations come from the upstream and are untrusted; an
    /// override here is what the portal believes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub tools: Vec<ToolOverride>,
    /// What happens when a tool definition differs from the one first observed (the baseline
    /// in `status.toolBaseline`) or from its approved hashes. Defaults to `onChange: Alert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinning: Option<Pinning>,
    /// What happens when a tool definition carries text aimed at the model (hidden directives,
    /// requests to read secrets or call other tools, invisible Unicode). Defaults to
    /// `action: Alert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screening: Option<Screening>,
    /// Send the calling user's identity to this server in a header the portal signs (a
    /// short-lived JWT; verify it with the portal's `/.well-known/jwks.json`). Present: sent on
    /// `tools/call`, `prompts/get` and `resources/read` of authenticated users over HTTP
    /// transports. The portal needs `spec.identitySigningKeyFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityHeader>,
}

impl McpServerSpec {
    /// `spec.pinning.onChange`, defaulted.
    pub fn on_change(&self) -> PinAction {
        self.pinning
            .as_ref()
            .map(|p| p.on_change)
            .unwrap_or_default()
    }

    /// `spec.screening.action`, defaulted.
    pub fn on_finding(&self) -> PinAction {
        self.screening
            .as_ref()
            .map(|s| s.action)
            .unwrap_or_default()
    }

    /// `spec.pinning.approved`.
    pub fn approved(&self) -> &[ToolPin] {
        self.pinning.as_ref().map_or(&[], |p| p.approved.as_slice())
    }
}

/// Tool-definition pinning.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pinning {
    /// `Allow`: record the change in status and emit an event (the new definition becomes the
    /// baseline). `Alert` (default): also count it in `portcullis_*_tool_definition_changes_total`
    /// and set the `ToolsChanged` condition until it is approved. `Quarantine`: also hide changed
    /// and new tools from every portal (list, Code Mode search and execute, calls) until their
    /// hash is listed in `approved`.
    #[serde(default)]
    pub on_change: PinAction,
    /// Definitions a human reviewed: a tool with entries here is trusted only with one of these
    /// hashes (`status.tools.definitions[].hash`, or `portcullis-proxy tools`); a tool without
    /// entries is trusted with its baseline hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub approved: Vec<ToolPin>,
}

/// Tool description screening.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Screening {
    /// `Allow`: findings are only listed in status and audit. `Alert` (default): also the
    /// `ToolDescriptionsFlagged` condition and a metric. `Quarantine`: also hide flagged tools
    /// from every portal unless their exact hash is listed in `spec.pinning.approved`.
    #[serde(default)]
    pub action: PinAction,
}

/// How a server receives the caller's signed identity.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IdentityHeader {
    /// Header carrying the token. Defaults to `X-Portcullis-Identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub header: Option<String>,
    /// Lifetime of each token, in seconds. Defaults to 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub ttl_seconds: Option<u32>,
    /// Claims of the user's access token copied into the signed token (for example `email`),
    /// when present. `sub` and `groups` are always included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub claims: Vec<String>,
}

/// How the portal reaches a remote server.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteServer {
    /// URL of the server's MCP endpoint, for example `https://mcp.example.com/mcp`, or the
    /// `/sse` endpoint of a legacy HTTP+SSE server. Must start with `http://` or `https://`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
    /// Wire transport. `streamableHttp` (default) negotiates either protocol era; `sse` is the
    /// legacy HTTP+SSE transport (protocol 2024-11-05).
    #[serde(default)]
    pub transport: RemoteTransport,
    /// Headers sent with every request to this server (API keys from Secrets). The client's own
    /// `Authorization` header is never forwarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub headers: Vec<HeaderValue>,
    /// OAuth 2.0 client credentials the portal uses to obtain its own token for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthClientCredentials>,
}

/// Wire transport of a remote server.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RemoteTransport {
    /// Streamable HTTP, either protocol era.
    #[default]
    StreamableHttp,
    /// Legacy HTTP+SSE (`GET /sse` plus a POST endpoint announced by the server).
    Sse,
}

/// OAuth 2.0 client credentials grant for an upstream.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuthClientCredentials {
    /// Token endpoint of the upstream's authorization server.
    pub token_url: String,
    /// Secret key holding the client id.
    pub client_id_from: SecretKeyRef,
    /// Secret key holding the client secret.
    pub client_secret_from: SecretKeyRef,
    /// Scopes to request, space-joined in the token request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// RFC 8707 resource indicator to request, when the upstream needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// A server the operator deploys.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.transport != 'stdio' || (has(self.command) && size(self.command) > 0)",
    "message": "a stdio server needs command: the proxy in front of it starts that command"
}, {
    "rule": "self.transport == 'http' || (!has(self.port) && !has(self.path))",
    "message": "port and path apply only to transport http"
}]))]
pub struct DeployedServer {
    /// Container image of the server.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// Entrypoint override (the container's `command`). Also what the proxy runs locally for
    /// `stdio` servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub args: Vec<String>,
    /// Environment of the server process; secret values come from Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub env: Vec<EnvVar>,
    /// How the server speaks MCP: `stdio` (the sidecar bridges it to Streamable HTTP) or `http`
    /// (Streamable HTTP on `port` at `path`).
    #[serde(default)]
    pub transport: DeployedTransport,
    /// Port the server listens on when `transport` is `http`. Defaults to 8080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// HTTP path of the MCP endpoint when `transport` is `http`, starting with `/`. Defaults to
    /// `/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// Replicas of the server Deployment. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// CPU and memory of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// How a deployed server speaks MCP.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum DeployedTransport {
    /// Newline-delimited JSON-RPC on stdin/stdout.
    #[default]
    Stdio,
    /// Streamable HTTP.
    Http,
}

/// What the portal believes about one upstream tool, overriding its annotations.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolOverride {
    /// The upstream tool name (without the portal prefix).
    pub name: String,
    /// `true`: the tool only reads (policies granting `read` allow it). `false`: it writes.
    /// Unset: trust the upstream's `readOnlyHint` (absent hint means write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Hide the tool from every portal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// Observed state of an McpServer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpServerStatus {
    /// `remote` or `deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// URL portals use to reach the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Tools discovered at the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<DiscoveredTools>,
    /// The tool definitions first observed (name and hash), sorted by name: what a changed
    /// definition is compared with when `spec.pinning.approved` has no entry for it. Recorded
    /// once; with `onChange: Allow` it follows the upstream. The operator carries it into each
    /// portal's configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_baseline: Vec<ToolPin>,
    /// Standard conditions: `Ready`, `Reachable`, and `ToolsChanged`, `ToolsQuarantined`,
    /// `ToolDescriptionsFlagged` once tools were listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Summary of the tools a server exposes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredTools {
    /// Number of tools.
    pub count: u32,
    /// Tool names, sorted.
    #[serde(default)]
    pub names: Vec<String>,
    /// SHA-256 over the canonical JSON of all tool definitions; changes when any definition does.
    #[serde(default)]
    pub hash: String,
    /// Each tool's definition hash, state against the baseline and approvals, and screening
    /// findings, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub definitions: Vec<ToolVerdict>,
}
