//! A server's tool definitions as status: the summary a probe reports (count, sorted names,
//! hash) and pinning (each definition against the recorded baseline and the approvals). Pure.

use crds::server::DiscoveredTools;

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
        hash: super::sha256_hex(&bytes),
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
