//! Tool-definition pinning and description screening, applied where the catalog is built.
//!
//! Every time the merged catalog is rebuilt (an upstream connected, re-listed after
//! `notifications/tools/list_changed`, or the manifests were reloaded) each upstream tool gets a
//! verdict from [`crds::tooldef::evaluate`]: its hash against the approved hashes in
//! `spec.pinning.approved`, else against the baseline. A `Quarantined` tool is removed from the
//! upstream's list before [`crate::catalog::Catalog::build`], so it is absent from `tools/list`, Code Mode
//! search and execute, and a call to it gets the answer of an unknown tool.
//!
//! The baseline is `status.toolBaseline` when the operator rendered one; otherwise the first
//! list this process saw from the server (trust on first use, kept in memory: a restarted
//! laptop proxy trusts what it sees first again, so pin with `spec.pinning.approved` when that
//! matters).
//!
//! A verdict is reported (audit event, metrics, log line) once per tool definition: the same
//! hash in the same state is not reported again on the next rebuild.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crds::tooldef::{self, PinAction, Rules, ToolPin, ToolState, ToolVerdict};

use crate::audit::{Event, Outcome};
use crate::config::{PortalConfig, ServerConfig, ServerPins};
use crate::metrics::{FindingLabels, Metrics, PinLabels, ServerLabels};
use crate::upstream::Lists;

/// One server's tools as the pinning step sees them.
#[derive(Debug, Clone)]
pub struct PinInput {
    /// The server.
    pub server: ServerConfig,
    /// Its last lists (empty when it is not ready).
    pub catalog: Arc<Lists>,
    /// Whether the lists are real (the upstream is ready): only a real list may become a
    /// trust-on-first-use baseline.
    pub ready: bool,
}

/// The verdicts of every tool of every server, by McpServer name (sorted by tool name).
pub type Verdicts = BTreeMap<String, Vec<ToolVerdict>>;

/// State kept across rebuilds: trust-on-first-use baselines and what was already reported.
#[derive(Debug, Default)]
pub struct Pinning {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Server -> baseline first seen by this process (used when the config has none).
    tofu: HashMap<String, Vec<ToolPin>>,
    /// (server, tool) -> (hash, state) last reported.
    reported: HashMap<(String, String), (String, ToolState)>,
}

/// What [`Pinning::apply`] decided.
#[derive(Debug, Default)]
pub struct Applied {
    /// The servers' catalogs with quarantined tools removed.
    pub inputs: Vec<(ServerConfig, Arc<Lists>)>,
    /// Every tool's verdict.
    pub verdicts: Verdicts,
}

impl Pinning {
    /// Evaluates every tool, reports what is new, and drops quarantined tools from the lists.
    pub fn apply(
        &self,
        cfg: &PortalConfig,
        inputs: Vec<PinInput>,
        metrics: &Metrics,
        audit: &dyn Fn(Event),
    ) -> Applied {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Applied::default();
        let default_pins = ServerPins::default();
        for input in inputs {
            let name = input.server.name.clone();
            let pins = cfg.pins.get(&name).unwrap_or(&default_pins);
            let tools: Vec<serde_json::Value> = input
                .catalog
                .tools
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or_default())
                .collect();
            if input.ready && pins.baseline.is_none() && !inner.tofu.contains_key(&name) {
                inner
                    .tofu
                    .insert(name.clone(), tooldef::baseline_of(&tools));
            }
            let baseline: &[ToolPin] = match &pins.baseline {
                Some(b) => b,
                None => inner.tofu.get(&name).map_or(&[], Vec::as_slice),
            };
            let rules = Rules {
                on_change: pins.on_change,
                on_finding: pins.on_finding,
                approved: &pins.approved,
                baseline,
            };
            let mut verdicts: Vec<ToolVerdict> =
                tools.iter().map(|t| tooldef::evaluate(t, &rules)).collect();
            verdicts.sort_by(|a, b| a.name.cmp(&b.name));
            if pins.on_change == PinAction::Allow && pins.baseline.is_none() && input.ready {
                // Allow: the baseline follows the upstream (the change was still reported).
                inner
                    .tofu
                    .insert(name.clone(), tooldef::baseline_of(&tools));
            }
            for v in &verdicts {
                report(&mut inner, &cfg.name, &name, v, metrics, audit);
            }
            let hidden: Vec<&str> = verdicts
                .iter()
                .filter(|v| v.hidden())
                .map(|v| v.name.as_str())
                .collect();
            metrics
                .tools_quarantined
                .get_or_create(&ServerLabels {
                    server: name.clone(),
                })
                .set(hidden.len() as i64);
            let catalog = if hidden.is_empty() {
                input.catalog
            } else {
                let mut c = (*input.catalog).clone();
                c.tools.retain(|t| !hidden.contains(&t.name.as_ref()));
                Arc::new(c)
            };
            out.inputs.push((input.server, catalog));
            out.verdicts.insert(name, verdicts);
        }
        out
    }
}

/// Starts the portal of `manifests` (without serving it), waits up to `settle` for its
/// upstreams, and returns the verdict on every upstream tool: what `portcullis-proxy tools`
/// prints.
pub async fn inspect(
    manifests: &std::path::Path,
    portal: Option<&str>,
    secrets_dir: &std::path::Path,
    settle: std::time::Duration,
) -> crate::Result<Verdicts> {
    let (portal, shutdown) =
        super::Portal::start_from_manifests(manifests, portal, secrets_dir, settle).await?;
    let verdicts = (*portal.tool_verdicts()).clone();
    shutdown.cancel();
    Ok(verdicts)
}

/// One line per tool: server, tool, state, hash, findings; then each finding's excerpt.
pub fn to_text(verdicts: &Verdicts) -> String {
    let mut out = String::from("SERVER\tTOOL\tSTATE\tHASH\tFINDINGS\n");
    for (server, tools) in verdicts {
        for v in tools {
            let kinds: Vec<&str> = v.findings.iter().map(|f| f.kind.as_str()).collect();
            let state = match &v.reason {
                Some(r) => format!("{}({r})", v.state.as_str()),
                None => v.state.as_str().to_owned(),
            };
            out.push_str(&format!(
                "{server}\t{}\t{state}\t{}\t{}\n",
                v.name,
                v.hash,
                if kinds.is_empty() {
                    "-".to_owned()
                } else {
                    kinds.join(",")
                }
            ));
            for f in &v.findings {
                out.push_str(&format!(
                    "  {} in {}: {}\n",
                    f.kind.as_str(),
                    f.field,
                    f.excerpt
                ));
            }
        }
    }
    out
}

fn report(
    inner: &mut Inner,
    portal: &str,
    server: &str,
    v: &ToolVerdict,
    metrics: &Metrics,
    audit: &dyn Fn(Event),
) {
    let key = (server.to_owned(), v.name.clone());
    let now = (v.hash.clone(), v.state);
    if inner.reported.get(&key) == Some(&now) {
        return;
    }
    let seen_hash_before = inner.reported.get(&key).is_some_and(|(h, _)| *h == v.hash);
    inner.reported.insert(key, now);
    let trusted = matches!(v.state, ToolState::Pinned | ToolState::Approved);
    if trusted && v.findings.is_empty() {
        return;
    }
    if !trusted {
        metrics
            .tool_definition_changes
            .get_or_create(&PinLabels {
                server: server.to_owned(),
                state: v.state.as_str().to_owned(),
            })
            .inc();
    }
    if !v.findings.is_empty() && !seen_hash_before {
        for f in &v.findings {
            metrics
                .tool_description_findings
                .get_or_create(&FindingLabels {
                    server: server.to_owned(),
                    kind: f.kind.as_str().to_owned(),
                })
                .inc();
        }
    }
    let kinds: Vec<&str> = v.findings.iter().map(|f| f.kind.as_str()).collect();
    let mut reason = format!("tool {}: {}", v.state.as_str(), v.hash);
    if let Some(r) = &v.reason {
        reason.push_str(&format!(" ({r})"));
    }
    if !kinds.is_empty() {
        reason.push_str(&format!("; findings: {}", kinds.join(",")));
    }
    if v.hidden() {
        tracing::warn!(server, tool = %v.name, hash = %v.hash, reason = ?v.reason, findings = ?kinds,
            "tool quarantined: hidden from the portal until spec.pinning.approved lists its hash");
    } else {
        tracing::warn!(server, tool = %v.name, hash = %v.hash, state = v.state.as_str(), findings = ?kinds,
            "tool definition differs from its pinned hash or was flagged by screening");
    }
    audit(Event {
        portal: portal.to_owned(),
        server: Some(server.to_owned()),
        tool: Some(v.name.clone()),
        method: "tools/pin".into(),
        origin: Some("portal".into()),
        decision: if v.hidden() {
            Outcome::Deny
        } else {
            Outcome::Allow
        },
        reason: Some(reason),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Transport;
    use rmcp::model::Tool;

    fn server(name: &str) -> ServerConfig {
        ServerConfig {
            name: name.into(),
            prefix: name.into(),
            timeout: std::time::Duration::from_secs(1),
            transport: Transport::Stdio {
                command: "x".into(),
                args: vec![],
                env: vec![],
            },
            overrides: vec![],
            oauth: None,
            identity: None,
        }
    }

    fn input(tools: &[(&str, &str)]) -> PinInput {
        PinInput {
            server: server("s"),
            catalog: Arc::new(Lists {
                tools: tools
                    .iter()
                    .map(|(n, d)| {
                        Tool::new(n.to_string(), d.to_string(), Arc::new(Default::default()))
                    })
                    .collect(),
                ..Default::default()
            }),
            ready: true,
        }
    }

    fn config(pins: ServerPins) -> PortalConfig {
        PortalConfig {
            name: "p".into(),
            spec: Default::default(),
            servers: vec![server("s")],
            policies: vec![],
            session_key: None,
            audit_key: None,
            max_body_bytes: 1,
            pins: [("s".to_string(), pins)].into(),
            identity_key: None,
            llm: None,
            rate_limit_store: None,
        }
    }

    fn names(a: &Applied) -> Vec<String> {
        a.inputs[0]
            .1
            .tools
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    #[test]
    fn trust_on_first_use_then_a_changed_description_is_quarantined_and_reported_once() {
        let cfg = config(ServerPins {
            on_change: PinAction::Quarantine,
            ..Default::default()
        });
        let pinning = Pinning::default();
        let metrics = Metrics::new();
        let events = Mutex::new(Vec::new());
        let audit = |e: Event| events.lock().unwrap().push(e);
        let first = pinning.apply(
            &cfg,
            vec![input(&[("a", "Reads a"), ("b", "Reads b")])],
            &metrics,
            &audit,
        );
        assert_eq!(names(&first), ["a", "b"]);
        assert!(events.lock().unwrap().is_empty());
        for _ in 0..2 {
            let second = pinning.apply(
                &cfg,
                vec![input(&[("a", "Reads a"), ("b", "Deletes b"), ("c", "New")])],
                &metrics,
                &audit,
            );
            assert_eq!(names(&second), ["a"]);
            let states: Vec<_> = second.verdicts["s"].iter().map(|v| v.state).collect();
            assert_eq!(
                states,
                [
                    ToolState::Pinned,
                    ToolState::Quarantined,
                    ToolState::Quarantined
                ]
            );
        }
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 2, "reported once per definition: {events:?}");
        assert!(events.iter().all(|e| e.decision == Outcome::Deny));
        assert!(
            events[0].reason.as_deref().unwrap().contains("(changed)"),
            "{events:?}"
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"portcullis_tools_quarantined{server="s"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"portcullis_tool_definition_changes_total{server="s",state="Quarantined"} 2"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_rendered_baseline_wins_over_first_use_and_alert_keeps_tools_visible() {
        let v1 = Tool::new("a", "Reads a", Arc::new(Default::default()));
        let hash = tooldef::definition_hash(&serde_json::to_value(&v1).unwrap());
        let cfg = config(ServerPins {
            baseline: Some(vec![ToolPin {
                name: "a".into(),
                hash,
            }]),
            ..Default::default()
        });
        let metrics = Metrics::new();
        let applied = Pinning::default().apply(
            &cfg,
            vec![input(&[("a", "Reads a and more")])],
            &metrics,
            &|_| {},
        );
        assert_eq!(names(&applied), ["a"], "Alert does not hide");
        assert_eq!(applied.verdicts["s"][0].state, ToolState::Changed);
        assert!(
            metrics.encode().contains(
                r#"portcullis_tool_definition_changes_total{server="s",state="Changed"} 1"#
            )
        );
    }

    #[test]
    fn a_server_that_is_not_ready_does_not_set_the_first_use_baseline() {
        let cfg = config(ServerPins {
            on_change: PinAction::Quarantine,
            ..Default::default()
        });
        let pinning = Pinning::default();
        let metrics = Metrics::new();
        let mut down = input(&[]);
        down.ready = false;
        pinning.apply(&cfg, vec![down], &metrics, &|_| {});
        let up = pinning.apply(&cfg, vec![input(&[("a", "Reads a")])], &metrics, &|_| {});
        assert_eq!(names(&up), ["a"]);
    }
}
