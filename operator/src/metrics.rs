//! Prometheus metrics of the reconcilers, served on `/metrics`.

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `mcpserver`, `mcpportal` or `mcppolicy`.
    pub controller: String,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `mcpserver`, `mcpportal` or `mcppolicy`.
    pub controller: String,
    /// The error's kind.
    pub error: String,
}

/// Labels of tool-definition changes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolChangeLabels {
    /// `namespace/name` of the McpServer.
    pub server: String,
    /// The verdict's state: `Changed`, `New` or `Quarantined`.
    pub state: String,
}

/// Labels of the per-namespace shadow MCP gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// The namespace.
    pub namespace: String,
}

/// Labels of the discovery counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Probe outcome (`mcp`, `authRequired`, `notMcp`, `inconclusive`) or pass result
    /// (`ok`, `error`).
    pub outcome: String,
}

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Reconciliations started.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconciliations that failed.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile durations.
    pub duration: Family<ReconcileLabels, Histogram>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// Tool definitions that differ from their approved or baseline hash (or are new), counted
    /// once per probe that first sees them (`onChange: Alert` and `Quarantine`).
    pub tool_definition_changes: Family<ToolChangeLabels, Counter>,
    /// Shadow MCP endpoints found by the last discovery pass, per namespace.
    pub shadow_mcp_endpoints: Family<NamespaceLabels, Gauge>,
    /// Discovery probes, by outcome.
    pub shadow_mcp_probes: Family<OutcomeLabels, Counter>,
    /// Discovery passes, by result.
    pub shadow_mcp_scans: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("portcullis_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let tool_definition_changes = Family::<ToolChangeLabels, Counter>::default();
        registry.register(
            "tool_definition_changes",
            "Tool definitions that differ from their approved or baseline hash, or are new",
            tool_definition_changes.clone(),
        );
        let shadow_mcp_endpoints = Family::<NamespaceLabels, Gauge>::default();
        let shadow_mcp_probes = Family::<OutcomeLabels, Counter>::default();
        let shadow_mcp_scans = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "shadow_mcp_endpoints",
            "Shadow MCP endpoints (not backed by an McpServer) found by the last discovery pass",
            shadow_mcp_endpoints.clone(),
        );
        registry.register(
            "shadow_mcp_probes",
            "Shadow MCP discovery probes, by outcome",
            shadow_mcp_probes.clone(),
        );
        registry.register(
            "shadow_mcp_scans",
            "Shadow MCP discovery passes, by result",
            shadow_mcp_scans.clone(),
        );
        Self {
            tool_definition_changes,
            registry: Mutex::new(registry),
            reconciles,
            failures,
            duration,
            leader,
            shadow_mcp_endpoints,
            shadow_mcp_probes,
            shadow_mcp_scans,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `controller` and times it until the guard drops.
    pub fn reconcile(&self, controller: &str) -> ReconcileTimer<'_> {
        let labels = ReconcileLabels {
            controller: controller.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn failure(&self, controller: &str, error: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                controller: controller.to_owned(),
                error: error.to_owned(),
            })
            .inc();
    }

    /// Sets the number of shadow MCP endpoints of `namespace`.
    pub fn shadow_endpoints(&self, namespace: &str, n: i64) {
        self.shadow_mcp_endpoints
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_owned(),
            })
            .set(n);
    }

    /// Counts `n` discovery probes with `outcome`.
    pub fn shadow_probes(&self, outcome: &str, n: u64) {
        self.shadow_mcp_probes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts a discovery pass with `result` (`ok`, `error`).
    pub fn shadow_scan(&self, result: &str) {
        self.shadow_mcp_scans
            .get_or_create(&OutcomeLabels {
                outcome: result.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Observes the reconcile duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ReconcileLabels,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}
