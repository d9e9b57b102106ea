//! The resolved configuration as plain data: what one portal serves, each upstream as the proxy
//! reaches it, and the defaults. No I/O here; [`super::resolve`] builds these from manifests.

use std::collections::BTreeMap;
use std::time::Duration;

use crds::server::ToolOverride;
use crds::{McpPolicy, McpPortalSpec, McpServer};

/// Where mounted Secrets live in a pod (`<dir>/<secret>/<key>`), as the operator mounts them.
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/portcullis/secrets";
/// Default per-request timeout of an upstream.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on request bodies.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The resolved configuration of one portal: what the proxy serves.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// McpPortal name.
    pub name: String,
    /// The portal's spec.
    pub spec: McpPortalSpec,
    /// Selected servers, sorted by name.
    pub servers: Vec<ServerConfig>,
    /// Policies bound to this portal, sorted by name.
    pub policies: Vec<McpPolicy>,
    /// Key sealing legacy session ids (from `sessionKeyFrom`), if configured.
    pub session_key: Option<KeyBytes>,
    /// Key of the audit chain's HMAC (from `audit.keyFrom`), if configured.
    pub audit_key: Option<KeyBytes>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Tool-definition pinning and screening of each server, by McpServer name. Kept apart from
    /// [`ServerConfig`] so approving a hash does not reconnect the upstream.
    pub pins: BTreeMap<String, ServerPins>,
    /// The key that signs user identities for servers with `spec.identity` (from
    /// `identitySigningKeyFrom`), as read; `identity::Signer::from_key` parses it.
    pub identity_key: Option<SigningKey>,
    /// The LLM gateway (`spec.llm`) with its targets' API keys read, if the portal has one.
    pub llm: Option<LlmConfig>,
    /// The shared store of the rate limits' buckets (`spec.rateLimitStore`), if configured.
    pub rate_limit_store: Option<RateLimitStoreConfig>,
}

/// `spec.rateLimitStore` resolved: the Redis URL read from its Secret, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitStoreConfig {
    /// The Redis every replica shares.
    pub redis: RedisConfig,
    /// What a call does while Redis cannot be reached.
    pub on_unavailable: crds::portal::RateLimitFallback,
}

/// Default time a rate-limit check waits for Redis.
pub const DEFAULT_RATE_LIMIT_STORE_TIMEOUT: Duration = Duration::from_millis(200);

/// Default time a provider target has to answer.
pub const DEFAULT_LLM_TIMEOUT: Duration = Duration::from_secs(60);

/// `spec.llm` resolved: defaults applied, API keys read from their Secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// The routes, in manifest order (aliases are unique).
    pub routes: Vec<LlmRouteConfig>,
    /// Where budget counters are kept (`spec.llm.budgetStore`).
    pub budget_store: BudgetStoreConfig,
}

/// `spec.llm.budgetStore` resolved: the Redis URL read from its Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetStoreConfig {
    /// The shared Redis store; `None`: each replica's memory.
    pub redis: Option<RedisConfig>,
    /// What a call under a budget does while the store is unreachable (`None`: closed when a
    /// hard budget applies, open otherwise).
    pub on_unavailable: Option<crds::budget::OnUnavailable>,
}

/// A Redis budget store.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://...`, from its Secret. Never printed.
    pub url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// How long a call waits for Redis.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    // The URL may hold a password: it never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A target's price per million tokens, in nano-units of the portal's currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PriceConfig {
    /// Per million uncached prompt tokens.
    pub input: u64,
    /// Per million completion tokens.
    pub output: u64,
    /// Per million cached prompt tokens.
    pub cached_input: u64,
}

/// One alias and its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRouteConfig {
    /// What clients name as `model`.
    pub alias: String,
    /// How the first target is chosen.
    pub strategy: crds::llm::LlmStrategy,
    /// The targets, in failover order.
    pub targets: Vec<LlmTargetConfig>,
}

/// One provider target as the proxy calls it.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmTargetConfig {
    /// The provider's API.
    pub provider: crds::llm::LlmProvider,
    /// Base URL without a trailing slash (the provider's default when none was set).
    pub base_url: String,
    /// The model asked for.
    pub model: String,
    /// The API key, when one is configured. Never printed.
    pub api_key: Option<String>,
    /// Share of first attempts on a weighted route (1 when unset).
    pub weight: u32,
    /// How long the provider has to answer.
    pub timeout: Duration,
    /// What its tokens cost (`None`: nothing).
    pub price: Option<PriceConfig>,
}

impl LlmTargetConfig {
    /// `provider model @ base URL`: a name for logs, audit events and metrics (no key).
    pub fn describe(&self) -> String {
        format!("{} {} @ {}", self.provider.id(), self.model, self.base_url)
    }
}

impl std::fmt::Debug for LlmTargetConfig {
    // The API key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmTargetConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("weight", &self.weight)
            .field("timeout", &self.timeout)
            .field("price", &self.price)
            .finish()
    }
}

/// A symmetric key as read from its Secret. Its bytes never reach a log: `Debug` shows the
/// length only.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBytes(pub Vec<u8>);

impl std::ops::Deref for KeyBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyBytes({} bytes)", self.0.len())
    }
}

/// A private key as read from its Secret, and the `iss` of what it signs.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The PEM bytes.
    pub pem: Vec<u8>,
    /// The `iss` of every token: the portal's `publicUrl`, else its name.
    pub issuer: String,
    /// Where the key came from, for errors: `McpPortal p: spec.identitySigningKeyFrom: secret s/k`.
    pub source: String,
}

impl std::fmt::Debug for SigningKey {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("issuer", &self.issuer)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// How one server's tool definitions are pinned and screened (`spec.pinning`,
/// `spec.screening`, and the baseline the operator recorded in `status.toolBaseline`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerPins {
    /// `spec.pinning.onChange`.
    pub on_change: crds::tooldef::PinAction,
    /// `spec.screening.action`.
    pub on_finding: crds::tooldef::PinAction,
    /// `spec.pinning.approved`.
    pub approved: Vec<crds::tooldef::ToolPin>,
    /// `status.toolBaseline` as the operator rendered it; `None` (a laptop's manifests) means
    /// the first definitions this process sees become the baseline (trust on first use).
    pub baseline: Option<Vec<crds::tooldef::ToolPin>>,
}

impl ServerPins {
    /// The pinning and screening of an McpServer document.
    pub fn of(server: &McpServer) -> ServerPins {
        let baseline = server
            .status
            .as_ref()
            .map(|s| s.tool_baseline.clone())
            .filter(|b| !b.is_empty());
        ServerPins {
            on_change: server.spec.on_change(),
            on_finding: server.spec.on_finding(),
            approved: server.spec.approved().to_vec(),
            baseline,
        }
    }
}

/// One upstream as the proxy uses it: secrets resolved, defaults applied.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// McpServer name.
    pub name: String,
    /// Name prefix in the portal (`<prefix>_<tool>`); empty means unprefixed.
    pub prefix: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How to reach it.
    pub transport: Transport,
    /// Per-tool overrides from the spec.
    pub overrides: Vec<ToolOverride>,
    /// OAuth client credentials for the portal's own token to this upstream (remote servers).
    pub oauth: Option<UpstreamOAuth>,
    /// Send the caller's signed identity in this header (`spec.identity`).
    pub identity: Option<crate::model::IdentityConfig>,
}

/// `spec.remote.oauth` with the client id and secret resolved from their Secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamOAuth {
    /// Token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// RFC 8707 resource indicator.
    pub resource: Option<String>,
}

impl std::fmt::Debug for UpstreamOAuth {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamOAuth")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ServerConfig {
    // Header and env values may be secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("transport", &self.transport.describe())
            .field("oauth", &self.oauth)
            .field("identity", &self.identity)
            .finish()
    }
}

/// How the proxy reaches an upstream.
#[derive(Clone, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP (either era).
    StreamableHttp {
        /// Endpoint URL.
        url: String,
        /// Extra headers (secret values resolved).
        headers: Vec<(String, String)>,
    },
    /// Legacy HTTP+SSE.
    Sse {
        /// The SSE endpoint URL.
        url: String,
        /// Extra headers (secret values resolved).
        headers: Vec<(String, String)>,
    },
    /// A child process speaking newline-delimited JSON-RPC on stdio.
    Stdio {
        /// Program.
        command: String,
        /// Arguments.
        args: Vec<String>,
        /// Extra environment (secret values resolved).
        env: Vec<(String, String)>,
    },
}

impl std::fmt::Debug for Transport {
    // Header and env values may be secrets: print only the description.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Transport {
    /// A description safe for logs and status (no header or env values).
    pub fn describe(&self) -> String {
        match self {
            Transport::StreamableHttp { url, .. } => format!("streamableHttp {url}"),
            Transport::Sse { url, .. } => format!("sse {url}"),
            Transport::Stdio { command, args, .. } => format!("stdio {command} {}", args.join(" ")),
        }
    }
}
