//! `McpPortal`: one portal endpoint that fronts a set of McpServers.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::common::{Condition, SecretKeyRef};

/// One portal: a single MCP endpoint over the servers it selects.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "McpPortal",
    namespaced,
    status = "McpPortalStatus",
    shortname = "mcpp",
    category = "portcullis",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Servers","type":"string","jsonPath":".status.serversSummary"}"#,
    printcolumn = r#"{"name":"Tools","type":"integer","jsonPath":".status.toolsExposed"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.auth) || (has(self.public) && self.public)",
    "message": "set auth, or public: true for a portal that serves without authentication",
    "fieldPath": ".auth"
}]))]
pub struct McpPortalSpec {
    /// Which McpServers (in the portal's namespace) this portal fronts: the union of `names`
    /// and the servers matching `selector`.
    #[serde(default)]
    pub servers: ServerSelection,
    /// OAuth 2.1 protected-resource settings. Required unless `public` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PortalAuth>,
    /// Serve without authentication. Only for demos and fully trusted networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    /// Code Mode: two tools (search, execute) in place of the full tool list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_mode: Option<CodeModeSpec>,
    /// Proxy replicas. Defaults to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Secret key holding the key (32 bytes or more) that seals legacy session ids so that any
    /// replica can serve any session. Without it each process makes a random key at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key_from: Option<SecretKeyRef>,
    /// Browser origins allowed to call the portal (`scheme://host[:port]`). Requests with
    /// another `Origin` header get 403. Requests without `Origin` are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^https?://[^/]+$")))]
    pub allowed_origins: Vec<String>,
    /// Public base URL of the portal (for example `https://mcp.example.com`), used in
    /// metadata documents and status. Defaults to the in-cluster Service URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://"))]
    pub public_url: Option<String>,
    /// Bounds on what clients may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PortalLimits>,
    /// CPU and memory of each proxy replica. Defaults to requests of 100m CPU and 64Mi memory
    /// and a 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Secret key holding the PEM (PKCS#8) private key, EC P-256 (ES256) or Ed25519 (EdDSA),
    /// that signs user identities for servers with `spec.identity`. Its public key is served at
    /// `/.well-known/jwks.json`. Required when a selected server asks for identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_signing_key_from: Option<SecretKeyRef>,
    /// The audit log: its chain key, periodic checkpoints, and what happens to tool calls
    /// while it cannot be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<PortalAudit>,
    /// The portal's LLM gateway: OpenAI- and Anthropic-compatible endpoints under `/llm/` on
    /// the portal's listener, authenticated like `/mcp`, with model aliases routed to provider
    /// targets (failover, translation between the two APIs). Who may call which alias is an
    /// McpPolicy's `models`. Absent: the `/llm/` endpoints answer 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<crate::llm::LlmSpec>,
    /// Conditions every request to the portal must meet (`include`, `require`, `exclude`, as
    /// in McpPolicy), and which proxies are trusted to report the client's address and device
    /// certificate. A request failing them gets 403 (401 `insufficient_user_authentication`
    /// with an `acr_values` hint when an `authMethod` is what is missing) before any MCP
    /// message is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::access::PortalAccess>,
    /// An HTTPS listener beside the plain one, serving the same endpoints, that can request
    /// client (device) certificates: a certificate presented here feeds the
    /// `clientCertificate` access selector directly, with no ingress in between. Read when
    /// the proxy starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PortalTls>,
    /// Where the per-subject tool-call rate limits (McpPolicy `limits`) keep their token
    /// buckets. Absent: in the memory of each replica, so behind a Service with N replicas a
    /// subject gets up to N times the configured rate. With `redis`, every replica takes from
    /// the same buckets and the limit holds for the portal as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_store: Option<RateLimitStore>,
}

/// Shared token buckets for the per-subject rate limits (`spec.rateLimitStore`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitStore {
    /// A Redis server every replica shares. Each call takes a token from the subject's portal
    /// bucket and its bucket for the tool in one Lua script (both or neither), timed by the
    /// Redis server's clock, so the replicas' clocks do not matter.
    pub redis: RateLimitRedis,
    /// What a call does while Redis cannot be reached (or answers too late): `perReplica`
    /// (the default: this replica's own buckets decide, as without a store), `failOpen` (the
    /// call is not limited) or `failClosed` (the call is refused). Every such call is logged
    /// and counted in `portcullis_rate_limit_store_errors_total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_unavailable: Option<RateLimitFallback>,
}

/// The Redis server of the shared rate-limit buckets.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRedis {
    /// Secret key holding the Redis URL (`redis://[:password@]host:port[/db]`; `rediss://`
    /// is not supported). The URL never reaches a log.
    pub url_from: SecretKeyRef,
    /// Prefix of every key the portal writes, 1-64 characters of `[A-Za-z0-9:_.-]`. Defaults
    /// to `portcullis:ratelimit:<portal>:`; portals sharing a Redis keep apart by their names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9:_.-]{1,64}$"))]
    pub key_prefix: Option<String>,
    /// How long a call may wait for Redis, in milliseconds, 10-10000. Defaults to 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 10_000))]
    pub timeout_millis: Option<u32>,
}

/// What a rate-limited call does while the shared store cannot be reached.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitFallback {
    /// This replica's own buckets decide (the limit holds per replica).
    #[default]
    PerReplica,
    /// The call is not limited.
    FailOpen,
    /// The call is refused with the rate-limit error.
    FailClosed,
}

/// The portal's HTTPS listener (`spec.tls`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortalTls {
    /// Port of the HTTPS listener in each proxy pod (and on the portal's Service, named
    /// `mcps`), 1-65535 except the proxy's own 8080 and 9090. Defaults to 8443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self != 8080 && self != 9090",
        "message": "8080 and 9090 are the proxy's MCP and admin ports"
    }]))]
    pub port: Option<i32>,
    /// Secret key holding the server's certificate chain, PEM, leaf first.
    pub certificate_from: SecretKeyRef,
    /// Secret key holding the server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key_from: SecretKeyRef,
    /// Secret key holding the CA certificates (a PEM bundle) client certificates are verified
    /// against. Set: the listener asks every client for a certificate; one that does not
    /// verify (another issuer, expired, not for client authentication) fails the handshake,
    /// and a client that presents none is still served (it meets no `clientCertificate`
    /// selector). Absent: no client certificates are requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_from: Option<SecretKeyRef>,
}

/// Default of `spec.tls.port`.
pub const DEFAULT_TLS_PORT: i32 = 8443;

/// Audit log settings of a portal. Every request writes one JSON line; each line's `prev` links
/// it to the line before, so an edited, inserted or deleted line breaks the chain
/// (`portcullis-proxy audit verify`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortalAudit {
    /// Secret key holding the chain key (32 bytes or more, used as is). With it each line is
    /// sealed by an HMAC-SHA256 (`mac`) instead of a plain SHA-256 (`hash`), so whoever can
    /// write the log but does not hold the key cannot rewrite it and re-chain it unnoticed:
    /// `audit verify --key FILE` refuses such a log. Read when the proxy starts (a change
    /// takes effect at the next restart, which the operator triggers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<SecretKeyRef>,
    /// What tool calls do while the audit log cannot be written. Defaults to `failClosed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<AuditFailureMode>,
    /// Seconds between checkpoints, 1-86400. Defaults to 60. A checkpoint (the sequence number
    /// and head of the chain) is written to the proxy's log and to the
    /// `portcullis_audit_checkpoint_sequence` metric, so a log whose tail was cut off is caught
    /// by `audit verify --checkpoint SEQ:HEAD`. Only taken when events were written since the
    /// last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub checkpoint_seconds: Option<u32>,
}

/// What the portal does with a tool call (Code Mode's included) while audit events cannot be
/// written (disk full, a sink that fails, a queue that overflows): `failClosed` (the default)
/// refuses it with a JSON-RPC error before the upstream sees it, so no call goes unaudited;
/// `failOpen` forwards it and counts the event in `portcullis_audit_events_dropped_total` if it
/// is lost. Either way, events that could not be written are kept (up to 16 MiB per sink) and
/// written, in order, when the sink recovers.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AuditFailureMode {
    /// Refuse tool calls: nothing is called that is not recorded.
    #[default]
    FailClosed,
    /// Forward tool calls; events that cannot be kept are dropped and counted.
    FailOpen,
}

/// Which servers a portal fronts.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSelection {
    /// McpServer names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub names: Vec<String>,
    /// Label selector over McpServers (Kubernetes semantics: matchLabels AND
    /// matchExpressions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub selector: Option<LabelSelector>,
}

/// OAuth 2.1 protected-resource settings of a portal.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortalAuth {
    /// Issuer URL of the identity provider (its OIDC / RFC 8414 metadata is discovered).
    #[schemars(length(max = 2048), regex(pattern = r"^https?://"))]
    pub issuer: String,
    /// Expected `aud` of access tokens. Defaults to the portal's resource URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Scopes advertised in the protected-resource metadata and 401 challenges, and required of
    /// every access token (a token without one of them gets 403 `insufficient_scope`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Claim holding the user's groups. Defaults to `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// Claim holding the subject. Defaults to `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_claim: Option<String>,
}

/// Code Mode settings and sandbox limits of a portal.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.cpuMs) || !has(self.wallMs) || self.cpuMs <= self.wallMs",
    "message": "cpuMs must not exceed wallMs (CPU time is spent within the wall-clock budget)",
    "fieldPath": ".cpuMs"
}]))]
pub struct CodeModeSpec {
    /// Serve Code Mode by default (clients may still pick `?codemode=off`).
    #[serde(default)]
    pub default: bool,
    /// Memory cap of one execution, in MiB, 1-4096. Defaults to 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mib: Option<u32>,
    /// CPU time budget of one execution, in milliseconds, 1-600000; at most `wallMs`.
    /// Defaults to 2000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600000))]
    pub cpu_ms: Option<u32>,
    /// Wall-clock budget of one execution (including tool calls), in milliseconds, 1-3600000.
    /// Defaults to 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub wall_ms: Option<u32>,
    /// Maximum tool calls per execution, 1-10000. Defaults to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_tool_calls: Option<u32>,
    /// Maximum concurrent tool calls per execution, 1-256. Defaults to 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrent_calls: Option<u32>,
    /// Maximum script size, in bytes, 1-16777216. Defaults to 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777216))]
    pub max_code_bytes: Option<u32>,
    /// Maximum output (result plus console), in bytes, 1-67108864. Defaults to 262144.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_output_bytes: Option<u32>,
}

/// Bounds on client input.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortalLimits {
    /// Largest accepted request body, in bytes, 1024-268435456. Defaults to 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 268435456))]
    pub max_body_bytes: Option<u32>,
    /// Connections each proxy replica serves at once, 1-1000000. Defaults to 10000. Past it,
    /// new connections wait to be accepted until one ends; the proxy raises its open-files
    /// limit to fit (within the hard limit, with a warning when that is lower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_connections: Option<u32>,
    /// Seconds a client has to send a request's head (request line and headers), 1-300, and
    /// the longest idle time between requests on a kept-alive connection. Defaults to 10. A
    /// client sending headers a byte at a time is disconnected when it runs out; streamed
    /// responses (SSE) are not affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub header_read_timeout_seconds: Option<u32>,
    /// Seconds a client has to send a request's body once its head has arrived, 1-3600.
    /// Defaults to 30. A client sending its body a byte at a time gets 408 when it runs out,
    /// and its connection is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub body_read_timeout_seconds: Option<u32>,
    /// Legacy (2025-era) sessions each proxy replica keeps in memory, 1-1000000. Defaults to
    /// 1000. At the limit a new (or restored) session evicts the least recently used session
    /// that has no request in flight; the evicted session's id stays valid, and its next
    /// request restores it on whichever replica receives it. When every session has a request
    /// in flight, a new session is refused (an error naming this field). A session in memory
    /// costs about 100-130 KiB: the default fits the proxy's default 256Mi memory limit with
    /// room for the load; raise both together (about 128 KiB per session on top of 128 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_sessions: Option<u32>,
    /// Seconds a legacy session may stay in a replica's memory without a request, 10-86400.
    /// Defaults to 300. The session id stays valid (its next request restores the session);
    /// an open GET stream on which nothing was sent for that long is closed too (clients
    /// reopen it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86400))]
    pub session_idle_timeout_seconds: Option<u32>,
}

/// Default of [`PortalLimits::body_read_timeout_seconds`].
pub const DEFAULT_BODY_READ_TIMEOUT_SECONDS: u32 = 30;
/// Default of [`PortalLimits::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: u32 = 1_000;
/// Default of [`PortalLimits::session_idle_timeout_seconds`].
pub const DEFAULT_SESSION_IDLE_TIMEOUT_SECONDS: u32 = 300;

/// Observed state of an McpPortal.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpPortalStatus {
    /// URL clients connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Selected servers that are ready.
    #[serde(default)]
    pub servers_ready: u32,
    /// Selected servers.
    #[serde(default)]
    pub servers_total: u32,
    /// `ready/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers_summary: Option<String>,
    /// Tools the portal exposes (before per-user policy).
    #[serde(default)]
    pub tools_exposed: u32,
    /// Standard conditions: `Ready`, `ConfigRendered`, `ServersReady` and `PoliciesAccepted`
    /// (which bound McpPolicies are invalid and so left out of the configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Hash of the rendered proxy configuration (and the versions of the Secrets it
    /// references) that the portal's pods run with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// The schema of `spec.servers.selector`: Kubernetes' LabelSelector with what the apiserver
/// checks for built-in selectors (operator enum, values required exactly for `In`/`NotIn`,
/// label syntax) and bounds, so a bad selector is refused at `kubectl apply` rather than
/// silently selecting nothing.
fn label_selector_schema(_: &mut SchemaGenerator) -> Schema {
    const VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
    const KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";
    json_schema!({
        "description": "Label selector over McpServers (Kubernetes semantics: matchLabels AND matchExpressions; an empty selector selects every McpServer of the namespace).",
        "type": "object",
        "properties": {
            "matchLabels": {
                "description": "Labels a server must have, each with exactly this value.",
                "type": "object",
                "maxProperties": 32,
                "additionalProperties": {"type": "string", "maxLength": 63, "pattern": VALUE}
            },
            "matchExpressions": {
                "description": "Requirements a server's labels must meet, all of them.",
                "type": "array",
                "maxItems": 32,
                "items": {
                    "description": "One requirement: a key, an operator and (for In and NotIn) values.",
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "description": "Label key, for example `team` or `portcullis.dev/tier`.",
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 317,
                            "pattern": KEY
                        },
                        "operator": {
                            "description": "`In`, `NotIn`, `Exists` or `DoesNotExist`.",
                            "type": "string",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"]
                        },
                        "values": {
                            "description": "Values for `In` and `NotIn` (at least one); empty for `Exists` and `DoesNotExist`.",
                            "type": "array",
                            "maxItems": 64,
                            "items": {"type": "string", "maxLength": 63, "pattern": VALUE}
                        }
                    },
                    "x-kubernetes-validations": [{
                        "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
                        "message": "In and NotIn need at least one value; Exists and DoesNotExist take none",
                        "fieldPath": ".values"
                    }]
                }
            }
        }
    })
}
