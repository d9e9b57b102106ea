//! Prometheus metrics of the portal (prometheus-client), served on the admin listener.
//!
//! Label values are bounded: portal, server and tool names come from configuration, methods
//! from a fixed list, outcomes and actions from enums. Subjects never become labels.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a handled request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// McpServer name (empty for portal-level methods).
    pub server: String,
    /// JSON-RPC method.
    pub method: String,
    /// `allow`, `deny`, `block` or `error`.
    pub outcome: String,
}

/// Labels of per-server series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// McpServer name.
    pub server: String,
}

/// Labels of DLP findings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DlpLabels {
    /// Detector id.
    pub detector: String,
    /// `log`, `redact` or `block`.
    pub action: String,
}

/// Labels of inspection hits.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InspectionLabels {
    /// Rule name.
    pub rule: String,
    /// The rule's action: `block`, `flag` or `log`.
    pub action: String,
    /// `arguments` or `results`.
    pub direction: String,
    /// `true` for a rule in shadow mode (counted only, not acted on).
    pub shadow: String,
}

/// Labels of Code Mode executions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeModeLabels {
    /// `search` or `execute`.
    pub tool: String,
    /// `ok`, `error`, or the limit that was hit.
    pub outcome: String,
}

/// Labels of configuration reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: String,
}

/// Labels of tool-definition changes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PinLabels {
    /// McpServer name.
    pub server: String,
    /// `Changed`, `New` or `Quarantined` (the verdict's state).
    pub state: String,
}

/// Labels of screening findings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    /// McpServer name.
    pub server: String,
    /// Finding kind (`HiddenDirective`, `SecretAccess`, ...).
    pub kind: String,
}

/// How the authentication of one request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as exported
pub enum AuthOutcome {
    /// A valid token, or an anonymous user of a public portal.
    authenticated,
    /// No bearer token (401).
    missing_token,
    /// An invalid token or a malformed `Authorization` header (401).
    invalid_token,
    /// A valid token without a required scope (403).
    insufficient_scope,
    /// The identity provider's keys could not be fetched (503).
    idp_unavailable,
}

/// Labels of authentication outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// How it ended.
    pub outcome: AuthOutcome,
}

/// Labels of JWKS fetches.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// The counters authentication moves: one handle per series, taken out of its family once, so
/// counting a request is one atomic add (no label lookup on the request path).
#[derive(Clone, Debug, Default)]
pub struct AuthMetrics {
    /// Requests with a valid token (or anonymous on a public portal).
    pub authenticated: Counter,
    /// Requests without a bearer token.
    pub missing_token: Counter,
    /// Requests with an invalid token.
    pub invalid_token: Counter,
    /// Requests whose token lacked a required scope.
    pub insufficient_scope: Counter,
    /// Requests refused because the identity provider's keys could not be fetched.
    pub idp_unavailable: Counter,
    /// JWKS (or discovery) documents fetched.
    pub jwks_fetched: Counter,
    /// JWKS (or discovery) fetches that failed.
    pub jwks_fetch_failed: Counter,
}

impl AuthMetrics {
    /// The counters, registered in `registry` as `auth_requests{outcome}` and
    /// `auth_jwks_fetches{result}`.
    fn register(registry: &mut Registry) -> AuthMetrics {
        let requests = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_requests",
            "Requests authenticated or refused at the portal's edge, by outcome",
            requests.clone(),
        );
        let fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "auth_jwks_fetches",
            "Identity provider key (JWKS) fetches, by result",
            fetches.clone(),
        );
        let outcome = |o| requests.get_or_create(&AuthLabels { outcome: o }).clone();
        let fetch = |r: &str| {
            fetches
                .get_or_create(&FetchLabels { result: r.into() })
                .clone()
        };
        AuthMetrics {
            authenticated: outcome(AuthOutcome::authenticated),
            missing_token: outcome(AuthOutcome::missing_token),
            invalid_token: outcome(AuthOutcome::invalid_token),
            insufficient_scope: outcome(AuthOutcome::insufficient_scope),
            idp_unavailable: outcome(AuthOutcome::idp_unavailable),
            jwks_fetched: fetch("ok"),
            jwks_fetch_failed: fetch("error"),
        }
    }
}

/// What the audit writer moves. Made by the audit log (which counts into it from its writer
/// thread) and registered into the portal's registry by [`Metrics::with_audit`].
#[derive(Clone, Debug, Default)]
pub struct AuditMetrics {
    /// Events sealed and handed to the sinks.
    pub events_written: Counter,
    /// Events lost: the queue was full, or a failing sink's backlog was at its bound.
    pub events_dropped: Counter,
    /// Writes to a sink that failed (each retry counts).
    pub write_errors: Counter,
    /// 1 while every sink takes what it is given, 0 while one fails (tool calls are refused
    /// then under `onFailure: failClosed`).
    pub sink_up: Gauge,
    /// `seq` of the chain's head at the last checkpoint.
    pub checkpoint_sequence: Gauge,
    /// Checkpoints taken.
    pub checkpoints: Counter,
}

impl AuditMetrics {
    /// A fresh set; the sink counts as up until a write fails.
    pub fn new() -> AuditMetrics {
        let m = AuditMetrics::default();
        m.sink_up.set(1);
        m
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "audit_events_written",
            "Audit events sealed into the chain and handed to the sinks",
            self.events_written.clone(),
        );
        registry.register(
            "audit_events_dropped",
            "Audit events lost: the queue was full or a failing sink's backlog was at its bound",
            self.events_dropped.clone(),
        );
        registry.register(
            "audit_write_errors",
            "Writes to an audit sink that failed, retries included",
            self.write_errors.clone(),
        );
        registry.register(
            "audit_sink_up",
            "1 while every audit sink takes what it is given, 0 while one fails",
            self.sink_up.clone(),
        );
        registry.register(
            "audit_checkpoint_sequence",
            "seq of the audit chain's head at the last checkpoint (compare with the log's last seq: a lower one means a cut tail)",
            self.checkpoint_sequence.clone(),
        );
        registry.register(
            "audit_checkpoints",
            "Audit chain checkpoints taken",
            self.checkpoints.clone(),
        );
    }
}

/// Labels of LLM gateway calls. No subject: per-user series would be unbounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmLabels {
    /// The model alias (from configuration).
    pub model: String,
    /// The provider of the last target tried (empty when none was).
    pub provider: String,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
}

/// Labels of LLM token counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The model alias.
    pub model: String,
    /// The provider that answered.
    pub provider: String,
    /// `input` or `output` (OpenTelemetry's `gen_ai.token.type`).
    pub token_type: String,
}

/// Labels of the LLM token counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokensLabels {
    /// The portal.
    pub portal: String,
    /// The model alias.
    pub model: String,
    /// The provider that answered.
    pub provider: String,
    /// `input`, `output` or `cached_input` (cached prompt tokens, also counted in `input`).
    pub token_type: String,
    /// `ok` or `error` (a stream cut short, or ended by its budget).
    pub outcome: String,
}

/// Labels of the LLM cost counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpendLabels {
    /// The portal.
    pub portal: String,
    /// The model alias.
    pub model: String,
    /// The provider that answered.
    pub provider: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// Labels of budget events (a budget is named by configuration: bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// The portal.
    pub portal: String,
    /// `<policy>/<budget>`.
    pub budget: String,
}

/// Labels of budget store errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabels {
    /// The portal.
    pub portal: String,
    /// What the call did: `failClosed` (refused), `failOpen` (served uncounted) or `settle`
    /// (its spend could not be written).
    pub action: String,
}

/// Labels of per-model LLM latency histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The model alias.
    pub model: String,
    /// The provider that answered.
    pub provider: String,
}

/// Labels of the LLM gateway's overhead histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverheadLabels {
    /// The model alias.
    pub model: String,
    /// The provider that answered.
    pub provider: String,
    /// `true` for a streamed answer.
    pub stream: String,
}

/// The LLM gateway's metrics, named after OpenTelemetry's GenAI client metrics where one fits.
#[derive(Clone, Debug)]
pub struct LlmMetrics {
    /// Calls by alias, provider and outcome.
    pub requests: Family<LlmLabels, Counter>,
    /// Tokens per call (`gen_ai.client.token.usage`).
    pub token_usage: Family<TokenLabels, Histogram>,
    /// Time of a successful call as the client sees it, to its last byte
    /// (`gen_ai.client.operation.duration`).
    pub duration: Family<LlmLabels, Histogram>,
    /// Tokens used, by portal, alias, provider, token type and outcome (a counter beside
    /// `gen_ai.client.token.usage`, for rates and totals).
    pub tokens: Family<TokensLabels, Counter>,
    /// Money spent at the targets' prices, in the portal's currency.
    pub cost: Family<SpendLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Calls refused by a hard budget.
    pub budget_refusals: Family<BudgetLabels, Counter>,
    /// Calls settled past a soft budget's limit.
    pub budget_soft_exceeded: Family<BudgetLabels, Counter>,
    /// Calls that could not reach the budget store.
    pub budget_store_errors: Family<StoreErrorLabels, Counter>,
    /// Time from a streamed call's arrival to the first completion text sent to the caller
    /// (`gen_ai.server.time_to_first_token`), successful streams only.
    pub time_to_first_token: Family<ModelLabels, Histogram>,
    /// The gateway's own time per successful call: before the first provider attempt plus
    /// processing the answer (a stream's events: decoding, translating, metering, DLP), without
    /// the time spent waiting on providers.
    pub overhead: Family<OverheadLabels, Histogram>,
}

fn token_histogram() -> Histogram {
    // 1 .. ~4M tokens
    Histogram::new(exponential_buckets(1.0, 4.0, 12))
}

impl LlmMetrics {
    fn register(registry: &mut Registry) -> LlmMetrics {
        let requests = Family::default();
        registry.register(
            "llm_requests",
            "LLM gateway calls by model alias, provider and outcome",
            requests.clone(),
        );
        let token_usage = Family::<TokenLabels, Histogram>::new_with_constructor(
            token_histogram as fn() -> Histogram,
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per LLM gateway call, by model alias, provider and token type",
            token_usage.clone(),
        );
        let duration = Family::<LlmLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "gen_ai_client_operation_duration_seconds",
            "Time of successful LLM gateway calls, to the answer's last byte",
            duration.clone(),
        );
        let tokens = Family::default();
        registry.register(
            "llm_tokens",
            "Tokens used through the LLM gateway, by portal, model alias, provider, token type and outcome",
            tokens.clone(),
        );
        let cost = Family::default();
        registry.register(
            "llm_cost",
            "Money spent through the LLM gateway at the targets' prices (the portal's currency)",
            cost.clone(),
        );
        let budget_refusals = Family::default();
        registry.register(
            "llm_budget_refusals",
            "LLM calls refused by a hard budget, by budget",
            budget_refusals.clone(),
        );
        let budget_soft_exceeded = Family::default();
        registry.register(
            "llm_budget_soft_exceeded",
            "LLM calls settled past a soft budget's limit, by budget",
            budget_soft_exceeded.clone(),
        );
        let budget_store_errors = Family::default();
        registry.register(
            "llm_budget_store_errors",
            "LLM calls that could not reach the budget store, by what the call did",
            budget_store_errors.clone(),
        );
        let time_to_first_token = Family::<ModelLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from a streamed LLM gateway call's arrival to the first completion text sent to the caller",
            time_to_first_token.clone(),
        );
        let overhead = Family::<OverheadLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "llm_gateway_overhead_seconds",
            "Time the LLM gateway itself spends on a successful call, provider waits excluded",
            overhead.clone(),
        );
        LlmMetrics {
            time_to_first_token,
            overhead,
            requests,
            token_usage,
            duration,
            tokens,
            cost,
            budget_refusals,
            budget_soft_exceeded,
            budget_store_errors,
        }
    }
}

/// Legacy sessions in this process's memory (`http::session_limit`, `spec.limits.maxSessions`).
#[derive(Clone, Debug, Default)]
pub struct SessionMetrics {
    /// Sessions in memory (the `active_sessions` gauge).
    pub open: Gauge,
    /// Idle sessions evicted at the limit to make room for another.
    pub evicted: Counter,
    /// Sessions refused at the limit (every session had a request in flight).
    pub refused: Counter,
    /// Sessions closed because their client had not used them for the idle timeout.
    pub idle_closed: Counter,
}

impl SessionMetrics {
    /// The counters beside `open` (already registered), registered in `registry` as
    /// `sessions_evicted`, `sessions_refused` and `sessions_idle_closed`.
    fn register(registry: &mut Registry, open: Gauge) -> SessionMetrics {
        let m = SessionMetrics {
            open,
            ..SessionMetrics::default()
        };
        registry.register(
            "sessions_evicted",
            "Idle legacy sessions evicted from memory at spec.limits.maxSessions (their ids stay valid)",
            m.evicted.clone(),
        );
        registry.register(
            "sessions_refused",
            "Legacy sessions refused at spec.limits.maxSessions because every session had a request in flight",
            m.refused.clone(),
        );
        registry.register(
            "sessions_idle_closed",
            "Legacy sessions closed after spec.limits.sessionIdleTimeoutSeconds without a request from their client (their ids stay valid)",
            m.idle_closed.clone(),
        );
        m
    }
}

/// Every metric of one portal process.
pub struct Metrics {
    registry: Registry,
    /// Requests handled, by server, method and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Total time of tool calls as the client sees it (seconds).
    pub call_duration: Family<ServerLabels, Histogram>,
    /// Upstream round trip of tool calls (seconds).
    pub upstream_duration: Family<ServerLabels, Histogram>,
    /// Time the portal adds to a tool call (total minus upstream, seconds).
    pub overhead_duration: Histogram,
    /// DLP findings by detector and action.
    pub dlp_findings: Family<DlpLabels, Counter>,
    /// Inspection rules that fired, once per scanned message, by rule, action, direction and
    /// shadow mode.
    pub inspection_hits: Family<InspectionLabels, Counter>,
    /// Calls refused by policy.
    pub policy_denials: Family<ServerLabels, Counter>,
    /// Calls refused by rate limits.
    pub rate_limited: Counter,
    /// Rate-limit checks the shared store (`spec.rateLimitStore`) could not answer.
    pub rate_limit_store_errors: Counter,
    /// Stateless 2026-07-28 `tools/call` requests answered by the portal's fast path.
    pub fast_path_calls: Counter,
    /// `tools/call` requests of legacy (2025-era) sessions answered by the fast path.
    pub fast_path_legacy_calls: Counter,
    /// 1 when the upstream is ready, else 0.
    pub upstream_up: Family<ServerLabels, Gauge>,
    /// Tools an upstream currently offers.
    pub upstream_tools: Family<ServerLabels, Gauge>,
    /// Code Mode executions by tool and outcome.
    pub codemode_executions: Family<CodeModeLabels, Counter>,
    /// Configuration reloads by result.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// Legacy sessions in this process's memory (also `sessions.open`).
    pub active_sessions: Gauge,
    /// Tool definitions seen that differ from their trusted hash (or have none), by state.
    pub tool_definition_changes: Family<PinLabels, Counter>,
    /// Tool definitions seen with screening findings, by kind.
    pub tool_description_findings: Family<FindingLabels, Counter>,
    /// Tools currently quarantined (hidden) per server.
    pub tools_quarantined: Family<ServerLabels, Gauge>,
    /// Authentication outcomes and identity provider key fetches.
    pub auth: AuthMetrics,
    /// The audit writer's counters.
    pub audit: AuditMetrics,
    /// The LLM gateway.
    pub llm: LlmMetrics,
    /// Legacy sessions in memory, evicted and refused.
    pub sessions: SessionMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.5, 15))
}

impl Metrics {
    /// A fresh registry with every portal metric, prefixed `portcullis_`.
    pub fn new() -> Arc<Self> {
        Metrics::with_audit(AuditMetrics::new())
    }

    /// [`Metrics::new`] with the counters of a running audit log.
    pub fn with_audit(audit: AuditMetrics) -> Arc<Self> {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::default();
        registry.register(
            "requests",
            "MCP requests handled by the portal",
            requests.clone(),
        );
        let call_duration = Family::<ServerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "tool_call_duration_seconds",
            "Tool call time as the client sees it",
            call_duration.clone(),
        );
        let upstream_duration = Family::<ServerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "upstream_call_duration_seconds",
            "Upstream round trip of tool calls",
            upstream_duration.clone(),
        );
        let overhead_duration = latency_histogram();
        registry.register(
            "portal_overhead_seconds",
            "Time the portal adds to a tool call",
            overhead_duration.clone(),
        );
        let dlp_findings = Family::default();
        registry.register(
            "dlp_findings",
            "DLP findings by detector and action",
            dlp_findings.clone(),
        );
        let inspection_hits = Family::default();
        registry.register(
            "inspection_hits",
            "Inspection rules that fired, per scanned message, by rule, action, direction and shadow mode",
            inspection_hits.clone(),
        );
        let policy_denials = Family::default();
        registry.register(
            "policy_denials",
            "Calls refused by policy",
            policy_denials.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Calls refused by rate limits",
            rate_limited.clone(),
        );
        let rate_limit_store_errors = Counter::default();
        registry.register(
            "rate_limit_store_errors",
            "Rate-limit checks the shared store (spec.rateLimitStore) could not answer; spec.rateLimitStore.onUnavailable decided them",
            rate_limit_store_errors.clone(),
        );
        let fast_path_calls = Counter::default();
        registry.register(
            "fast_path_tool_calls",
            "Stateless 2026-07-28 tools/call requests answered by the fast path (no rmcp serve loop)",
            fast_path_calls.clone(),
        );
        let fast_path_legacy_calls = Counter::default();
        registry.register(
            "fast_path_legacy_tool_calls",
            "tools/call requests of legacy (2025-era) sessions answered by the fast path (no rmcp session worker)",
            fast_path_legacy_calls.clone(),
        );
        let upstream_up = Family::default();
        registry.register(
            "upstream_up",
            "Whether the upstream is ready (1) or not (0)",
            upstream_up.clone(),
        );
        let upstream_tools = Family::default();
        registry.register(
            "upstream_tools",
            "Tools an upstream offers",
            upstream_tools.clone(),
        );
        let codemode_executions = Family::default();
        registry.register(
            "codemode_executions",
            "Code Mode executions by tool and outcome",
            codemode_executions.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            config_reloads.clone(),
        );
        let active_sessions = Gauge::default();
        registry.register(
            "active_sessions",
            "Legacy sessions in this process's memory",
            active_sessions.clone(),
        );
        let tool_definition_changes = Family::default();
        registry.register(
            "tool_definition_changes",
            "Tool definitions seen that differ from their approved or baseline hash, or are new",
            tool_definition_changes.clone(),
        );
        let tool_description_findings = Family::default();
        registry.register(
            "tool_description_findings",
            "Tool definitions seen with screening findings, by kind",
            tool_description_findings.clone(),
        );
        let tools_quarantined = Family::default();
        registry.register(
            "tools_quarantined",
            "Tools hidden from the portal until their definition is approved",
            tools_quarantined.clone(),
        );
        let auth = AuthMetrics::register(&mut registry);
        audit.register(&mut registry);
        let llm = LlmMetrics::register(&mut registry);
        let sessions = SessionMetrics::register(&mut registry, active_sessions.clone());
        Arc::new(Metrics {
            registry,
            auth,
            audit,
            llm,
            sessions,
            tool_definition_changes,
            tool_description_findings,
            tools_quarantined,
            requests,
            call_duration,
            upstream_duration,
            overhead_duration,
            dlp_findings,
            inspection_hits,
            policy_denials,
            rate_limited,
            rate_limit_store_errors,
            fast_path_calls,
            fast_path_legacy_calls,
            upstream_up,
            upstream_tools,
            codemode_executions,
            config_reloads,
            active_sessions,
        })
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The classic Prometheus text format (0.0.4), for scrapers and tools that do not speak
    /// OpenMetrics (`promtool check metrics` before 2.46, many agents): counters are typed under
    /// their `_total` sample name, and the OpenMetrics-only lines are dropped.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    /// Counts one handled request.
    pub fn request(&self, server: &str, method: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                server: server.to_owned(),
                method: method.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// Converts prometheus-client's OpenMetrics exposition into the classic text format.
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            // Classic format has no exemplars or created timestamps.
            None if line.ends_with("_created")
                || line.contains("_created{")
                || line.contains("_created ") =>
            {
                continue;
            }
            None => out.push_str(line.split(" # {").next().unwrap_or(line)),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_types_counters_under_their_total_name() {
        let m = Metrics::new();
        m.request("a", "tools/call", "allow");
        let text = m.encode_text();
        assert!(
            text.contains("# TYPE portcullis_requests_total counter"),
            "{text}"
        );
        assert!(text.contains("# HELP portcullis_requests_total "), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(text.contains(
            "portcullis_requests_total{server=\"a\",method=\"tools/call\",outcome=\"allow\"} 1"
        ));
    }

    #[test]
    fn exposition_has_prefixed_series_with_bounded_labels() {
        let m = Metrics::new();
        m.request("tickets", "tools/call", "allow");
        m.upstream_up
            .get_or_create(&ServerLabels {
                server: "tickets".into(),
            })
            .set(1);
        let text = m.encode();
        assert!(text.contains("portcullis_requests_total{server=\"tickets\",method=\"tools/call\",outcome=\"allow\"} 1"), "{text}");
        assert!(
            text.contains("portcullis_upstream_up{server=\"tickets\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn authentication_outcomes_are_exported_from_the_first_scrape() {
        let m = Metrics::new();
        m.auth.invalid_token.inc();
        m.auth.invalid_token.inc();
        m.auth.jwks_fetched.inc();
        let text = m.encode_text();
        assert!(
            text.contains("# TYPE portcullis_auth_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_auth_requests_total{outcome=\"invalid_token\"} 2"),
            "{text}"
        );
        // Every outcome is a series before it first happens, so a rate() sees its first event.
        assert!(
            text.contains("portcullis_auth_requests_total{outcome=\"idp_unavailable\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_auth_jwks_fetches_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_auth_jwks_fetches_total{result=\"error\"} 0"),
            "{text}"
        );
    }
}
