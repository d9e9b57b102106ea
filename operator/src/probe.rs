//! Probing an MCP server: connect (server/discover, falling back to initialize), list every
//! tool, and summarize the definitions (count, sorted names, a hash).

use std::collections::HashMap;
use std::time::Duration;

use crds::server::DiscoveredTools;
use futures::future::BoxFuture;
use rmcp::model::ProtocolVersion;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};
use rmcp::{ClientLifecycleMode, ClientServiceExt};

use crate::error::{Error, Result};

/// Installs ring as the process's rustls crypto provider. reqwest is built without a provider of
/// its own (one provider in the workspace: see proxy/src/tls.rs) and panics when a client is
/// built before one is installed, so every client constructor here calls this first.
pub fn install_crypto_provider() {
    // Err means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Lists the tools of an MCP endpoint. A trait so controller tests can answer without a
/// network; [`McpProber`] is the real one.
pub trait Prober: Send + Sync {
    /// The tool definitions (as JSON) of the server at `url`, sent `headers`.
    fn probe(
        &self,
        url: String,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<Vec<serde_json::Value>>>;
}

/// Probes over Streamable HTTP with the official SDK, either protocol era.
#[derive(Debug, Clone)]
pub struct McpProber {
    http: reqwest::Client,
    timeout: Duration,
}

impl McpProber {
    /// A prober whose whole probe (connect and list) is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self { http, timeout }
    }
}

impl Prober for McpProber {
    fn probe(
        &self,
        url: String,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<Vec<serde_json::Value>>> {
        let http = self.http.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let err = |message: String| Error::Probe {
                url: url.clone(),
                message,
            };
            let mut custom = HashMap::new();
            for (k, v) in &headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| err(format!("invalid header name {k:?}")))?;
                let mut value = http::HeaderValue::from_str(v)
                    .map_err(|_| err(format!("invalid value for header {k:?}")))?;
                value.set_sensitive(true);
                custom.insert(name, value);
            }
            let config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
            let transport = StreamableHttpClientTransport::with_client(http, config);
            let lifecycle = ClientLifecycleMode::Auto {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                legacy_version: Some(ProtocolVersion::V_2025_11_25),
            };
            let work = async {
                let mut client =
                    ().serve_with_lifecycle(transport, lifecycle)
                        .await
                        .map_err(|e| err(format!("connecting: {e}")))?;
                let tools = client
                    .list_all_tools()
                    .await
                    .map_err(|e| err(format!("tools/list: {e}")));
                let _ = client.close_with_timeout(Duration::from_secs(2)).await;
                tools
            };
            let tools = tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| err(format!("no answer within {}s", timeout.as_secs())))??;
            tools
                .iter()
                .map(|t| {
                    serde_json::to_value(t).map_err(|source| Error::Serialize {
                        what: "tool".into(),
                        source,
                    })
                })
                .collect()
        })
    }
}

/// Count, sorted names and SHA-256 of the canonical JSON (keys sorted, tools sorted by name)
/// of tool definitions, and each tool's hash and screening findings.
pub fn summarize(tools: &[serde_json::Value]) -> DiscoveredTools {
    let mut sorted: Vec<serde_json::Value> = tools.to_vec();
    sorted.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    let names = sorted.iter().map(|t| name_of(t).to_owned()).collect();
    let bytes = crds::canonical::to_vec(&serde_json::Value::Array(sorted));
    DiscoveredTools {
        count: u32::try_from(tools.len()).unwrap_or(u32::MAX),
        names,
        hash: crate::desired::sha256_hex(&bytes),
        // Each tool against itself as the baseline: hashes and screening findings, so
        // `portcullis-operator probe` shows what to approve.
        definitions: pin(tools, &crds::McpServerSpec::default(), &[], None).verdicts,
    }
}

/// The outcome of comparing a probe's tool definitions with the recorded baseline and the
/// approvals in the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Pinned {
    /// The baseline to record in status (first observation; follows the upstream under
    /// `onChange: Allow`).
    pub baseline: Vec<crds::tooldef::ToolPin>,
    /// The verdict on each tool, sorted by name.
    pub verdicts: Vec<crds::tooldef::ToolVerdict>,
    /// Tools whose definition differs from the last probe's, or that are new since it (empty on
    /// the first probe).
    pub changed_since_last_probe: Vec<String>,
}

/// Compares `tools` with `spec.pinning`, `spec.screening`, the recorded baseline and the last
/// probe's verdicts (`previous`). An empty baseline is a first observation: `tools` become it.
pub fn pin(
    tools: &[serde_json::Value],
    spec: &crds::McpServerSpec,
    baseline: &[crds::tooldef::ToolPin],
    previous: Option<&[crds::tooldef::ToolVerdict]>,
) -> Pinned {
    use crds::tooldef::{self, PinAction, Rules};
    let baseline = if baseline.is_empty() || spec.on_change() == PinAction::Allow {
        tooldef::baseline_of(tools)
    } else {
        baseline.to_vec()
    };
    let rules = Rules {
        on_change: spec.on_change(),
        on_finding: spec.on_finding(),
        approved: spec.approved(),
        baseline: &baseline,
    };
    let mut verdicts: Vec<_> = tools.iter().map(|t| tooldef::evaluate(t, &rules)).collect();
    verdicts.sort_by(|a, b| a.name.cmp(&b.name));
    let changed_since_last_probe = match previous {
        None => Vec::new(),
        Some(prev) => verdicts
            .iter()
            .filter(|v| !prev.iter().any(|p| p.name == v.name && p.hash == v.hash))
            .map(|v| v.name.clone())
            .collect(),
    };
    Pinned {
        baseline,
        verdicts,
        changed_since_last_probe,
    }
}

fn name_of(v: &serde_json::Value) -> &str {
    v.get("name").and_then(|n| n.as_str()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(on_change: crds::tooldef::PinAction) -> crds::McpServerSpec {
        crds::McpServerSpec {
            pinning: Some(crds::server::Pinning {
                on_change,
                approved: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn first_probe_records_the_baseline_and_a_changed_description_is_reported_against_it() {
        use crds::tooldef::{PinAction, ToolState};
        let v1 = [json!({"name": "a", "description": "Reads a"})];
        let v2 = [json!({"name": "a", "description": "Reads a, then deletes it"})];
        let first = pin(&v1, &spec(PinAction::Alert), &[], None);
        assert_eq!(first.baseline.len(), 1);
        assert_eq!(first.verdicts[0].state, ToolState::Pinned);
        assert!(first.changed_since_last_probe.is_empty());
        let second = pin(
            &v2,
            &spec(PinAction::Alert),
            &first.baseline,
            Some(&first.verdicts),
        );
        assert_eq!(second.baseline, first.baseline, "Alert keeps the baseline");
        assert_eq!(second.verdicts[0].state, ToolState::Changed);
        assert_eq!(second.changed_since_last_probe, ["a"]);
        let allowed = pin(
            &v2,
            &spec(PinAction::Allow),
            &first.baseline,
            Some(&first.verdicts),
        );
        assert_ne!(
            allowed.baseline, first.baseline,
            "Allow follows the upstream"
        );
        assert_eq!(allowed.verdicts[0].state, ToolState::Pinned);
        assert_eq!(allowed.changed_since_last_probe, ["a"]);
        let q = pin(
            &v2,
            &spec(PinAction::Quarantine),
            &first.baseline,
            Some(&first.verdicts),
        );
        assert_eq!(q.verdicts[0].state, ToolState::Quarantined);
    }

    #[test]
    fn summary_is_independent_of_tool_and_key_order_and_changes_with_any_definition() {
        let a = json!({"name": "a", "description": "x", "inputSchema": {"type": "object"}});
        let b = json!({"inputSchema": {"type": "object"}, "name": "b"});
        let s1 = summarize(&[a.clone(), b.clone()]);
        let s2 = summarize(&[b.clone(), a.clone()]);
        assert_eq!(s1, s2);
        assert_eq!(s1.count, 2);
        assert_eq!(s1.names, ["a", "b"]);
        let a2 = json!({"name": "a", "description": "y", "inputSchema": {"type": "object"}});
        assert_ne!(summarize(&[a2, b]).hash, s1.hash);
    }
}
