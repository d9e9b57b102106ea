//! Prometheus metrics of the portal (prometheus-client), served on the admin listener.
//!
//! Label values are bounded: portal, server and tool names come from configuration, methods
//! from a fixed list, outcomes and actions from enums. Subjects never become labels.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
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
    /// Calls refused by policy.
    pub policy_denials: Family<ServerLabels, Counter>,
    /// Calls refused by rate limits.
    pub rate_limited: Counter,
    /// Stateless 2026-07-28 `tools/call` requests answered by the portal's fast path.
    pub fast_path_calls: Counter,
    /// 1 when the upstream is ready, else 0.
    pub upstream_up: Family<ServerLabels, Gauge>,
    /// Tools an upstream currently offers.
    pub upstream_tools: Family<ServerLabels, Gauge>,
    /// Code Mode executions by tool and outcome.
    pub codemode_executions: Family<CodeModeLabels, Counter>,
    /// Configuration reloads by result.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// Legacy sessions with a live notification channel in this process.
    pub active_sessions: Gauge,
    /// Tool definitions seen that differ from their trusted hash (or have none), by state.
    pub tool_definition_changes: Family<PinLabels, Counter>,
    /// Tool definitions seen with screening findings, by kind.
    pub tool_description_findings: Family<FindingLabels, Counter>,
    /// Tools currently quarantined (hidden) per server.
    pub tools_quarantined: Family<ServerLabels, Gauge>,
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
        let fast_path_calls = Counter::default();
        registry.register(
            "fast_path_tool_calls",
            "Stateless 2026-07-28 tools/call requests answered by the fast path (no rmcp serve loop)",
            fast_path_calls.clone(),
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
            "Legacy sessions with a live channel in this process",
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
        Arc::new(Metrics {
            registry,
            tool_definition_changes,
            tool_description_findings,
            tools_quarantined,
            requests,
            call_duration,
            upstream_duration,
            overhead_duration,
            dlp_findings,
            policy_denials,
            rate_limited,
            fast_path_calls,
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
}
