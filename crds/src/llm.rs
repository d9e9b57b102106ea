//! The LLM gateway of a portal (`McpPortal.spec.llm`): model aliases and the provider targets
//! behind each. Who may call which alias is an McpPolicy's `models`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;

/// The glob syntax of aliases and of McpPolicy `models` (the API's one glob syntax).
pub const ALIAS_PATTERN: &str = r"^[A-Za-z0-9_.-]{1,128}$";

/// The portal's LLM endpoints (`/llm/openai/v1/...`, `/llm/anthropic/v1/...` on the portal's
/// listener, authenticated like `/mcp`): the model aliases clients may name and the provider
/// targets behind each.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LlmSpec {
    /// Model aliases. A client names an alias as its `model`; the portal sends the request to
    /// the alias's targets. Aliases are unique. 1-64 routes.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["alias"]))]
    pub routes: Vec<LlmRoute>,
    /// Where the counters of McpPolicy `budgets` are kept. Absent: in each replica's memory
    /// (right for one replica; several replicas need a shared `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_store: Option<crate::budget::BudgetStore>,
}

/// One model alias and the provider targets that serve it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.strategy == 'weighted' || self.targets.all(t, !has(t.weight))",
    "message": "weight applies only to a route with strategy: weighted",
    "fieldPath": ".targets"
}]))]
pub struct LlmRoute {
    /// The name clients put in `model` (for example `fast`, `claude-smart`, or a provider's
    /// own model name). 1-128 characters of `[A-Za-z0-9_.-]`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"))]
    pub alias: String,
    /// How the first target of a request is chosen: `failover` (default: always the first
    /// listed target that is not skipped by its circuit breaker) or `weighted` (at random in
    /// proportion to `weight`). Either way, a request that fails with 429, 5xx, 529, a timeout
    /// or a connection error is retried on the remaining targets in list order; any other
    /// answer (a 400 content refusal, a 401 from the provider) goes back to the client as is.
    #[serde(default)]
    pub strategy: LlmStrategy,
    /// The providers that serve the alias, in failover order. 1-8 targets.
    #[schemars(length(min = 1, max = 8))]
    pub targets: Vec<LlmTarget>,
}

/// How a route picks the first target of a request.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LlmStrategy {
    /// The first listed target (that its circuit breaker does not skip).
    #[default]
    Failover,
    /// A target at random in proportion to its `weight`.
    Weighted,
}

/// One provider endpoint and the model to ask it for.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.provider in ['openai', 'anthropic'] || has(self.baseUrl)",
    "message": "azureOpenAI and openAICompatible targets need a baseUrl",
    "fieldPath": ".baseUrl"
}, {
    "rule": "self.provider == 'openAICompatible' || has(self.apiKeyFrom)",
    "message": "openai, anthropic and azureOpenAI targets need an apiKeyFrom",
    "fieldPath": ".apiKeyFrom"
}]))]
pub struct LlmTarget {
    /// The provider's API: `openai` (Chat Completions, `Authorization: Bearer`), `anthropic`
    /// (Messages, `x-api-key`), `azureOpenAI` (Azure OpenAI's v1 API, `api-key` header) or
    /// `openAICompatible` (any server speaking OpenAI Chat Completions; the key is optional).
    pub provider: LlmProvider,
    /// The API's base URL, up to the version segment: `https://api.openai.com/v1` (the default
    /// for `openai`), `https://api.anthropic.com` (the default for `anthropic`; the portal adds
    /// `/v1/messages`), `https://RESOURCE.openai.azure.com/openai/v1` for `azureOpenAI`.
    /// Required for `azureOpenAI` and `openAICompatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://"))]
    pub base_url: Option<String>,
    /// The model (for `azureOpenAI`, the deployment) the provider is asked for, replacing the
    /// alias in the request. 1-256 characters.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Secret key holding the provider's API key. Required except for `openAICompatible`. The
    /// key is sent only to this target, never to clients and never to a log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_from: Option<SecretKeyRef>,
    /// Relative share of first attempts on a `weighted` route, 1-1000. Defaults to 1. Refused
    /// on a `failover` route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: Option<u32>,
    /// How long the provider has to answer, in seconds, 1-600 (for a streamed answer: until
    /// its headers; the stream itself is not cut). Past it the next target is tried. Defaults
    /// to 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<u32>,
    /// What this target's tokens cost, per million, for McpPolicy budgets with a `cost`.
    /// Absent: calls served by this target cost nothing (only token limits apply to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::budget::Price>,
}

/// A provider's API.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
pub enum LlmProvider {
    /// OpenAI's Chat Completions API.
    #[default]
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Azure OpenAI's v1 API (OpenAI Chat Completions with an `api-key` header).
    #[serde(rename = "azureOpenAI")]
    AzureOpenAi,
    /// Any server speaking OpenAI Chat Completions.
    #[serde(rename = "openAICompatible")]
    OpenAiCompatible,
}

impl LlmProvider {
    /// The name as written in manifests.
    pub fn id(self) -> &'static str {
        match self {
            LlmProvider::OpenAi => "openai",
            LlmProvider::Anthropic => "anthropic",
            LlmProvider::AzureOpenAi => "azureOpenAI",
            LlmProvider::OpenAiCompatible => "openAICompatible",
        }
    }

    /// Whether an API key is required.
    pub fn needs_key(self) -> bool {
        self != LlmProvider::OpenAiCompatible
    }

    /// The base URL used when none is set (`None`: one must be set).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            LlmProvider::OpenAi => Some("https://api.openai.com/v1"),
            LlmProvider::Anthropic => Some("https://api.anthropic.com"),
            LlmProvider::AzureOpenAi | LlmProvider::OpenAiCompatible => None,
        }
    }
}
