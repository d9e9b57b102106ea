//! What an McpServer's status says, and which Events tell its changes: pure, over what the
//! reconcile observed (its Secrets, its pods, its probe).

use std::collections::BTreeSet;
use std::time::Duration;

use crds::server::{DeployedTransport, DiscoveredTools};
use crds::tooldef::{PinAction, ToolState};
use crds::{Condition, McpServer, McpServerStatus};
use kube::ResourceExt;

use super::RESERVED_PORTS;
use crate::desired::Notice;
use crate::desired::tools::{Pinned, pin, summarize};
use crate::names;
use crate::status::{condition, is_true, merge};

/// Why a deployed server cannot be deployed as specified: its `http` port is one the proxy
/// sidecar listens on.
pub fn port_conflict(server: &McpServer) -> Option<String> {
    let dep = server.spec.deployment.as_ref()?;
    let port = i32::from(dep.port.unwrap_or(8080));
    (dep.transport == DeployedTransport::Http && RESERVED_PORTS.contains(&port)).then(|| {
        format!(
            "spec.deployment.port {port} is used by the proxy sidecar: pick another port (not {RESERVED_PORTS:?})"
        )
    })
}

/// Where the server is, and what the reconcile found there before probing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `spec.remote`.
    Remote {
        /// Its URL.
        url: String,
        /// Secret keys its headers need that do not exist (`name/key, ...`); it is not probed.
        missing_headers: Option<String>,
    },
    /// `spec.deployment` on a port of the sidecar ([`port_conflict`]): nothing is applied.
    PortConflict(String),
    /// `spec.deployment`, applied.
    Deployed {
        /// Its sidecar's Service URL.
        url: String,
        /// Available pods, as the apply returned the Deployment.
        available: i32,
        /// Pods it asks for.
        wanted: i32,
    },
}

/// A successful probe, summarized and pinned against the server's status ([`probed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// Count, names, hash; `definitions` are the pinning verdicts.
    pub tools: DiscoveredTools,
    /// The verdicts and the baseline.
    pub pinned: Pinned,
}

/// Summarizes a probe's tool definitions and pins them against `server`'s spec, its recorded
/// baseline and its last probe's verdicts.
pub fn probed(server: &McpServer, defs: &[serde_json::Value]) -> Probed {
    let old = server.status.clone().unwrap_or_default();
    let previous = old.tools.as_ref().map(|t| t.definitions.as_slice());
    let pinned = pin(defs, &server.spec, &old.tool_baseline, previous);
    let mut tools = summarize(defs);
    tools.definitions = pinned.verdicts.clone();
    Probed { tools, pinned }
}

/// The inputs of a server's status.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The server, with the status it has now.
    pub server: &'a McpServer,
    /// Where it is.
    pub source: Source,
    /// The probe: `None` when there was nothing to probe (missing headers, no pod available,
    /// port conflict), else what it listed or why it failed.
    pub probe: Option<Result<Probed, String>>,
}

/// The status to write and the Events to publish.
pub fn status(o: &Observed<'_>) -> (McpServerStatus, Vec<Notice>) {
    let server = o.server;
    let generation = server.metadata.generation;
    let old = server.status.clone().unwrap_or_default();
    let mut notices = Vec::new();
    let (kind, endpoint, deployed) = match &o.source {
        Source::PortConflict(message) => {
            notices.push(Notice::warning("PortConflict", "Deploy", message.clone()));
            let ready = condition("Ready", false, "PortConflict", message.clone(), generation);
            let status = McpServerStatus {
                kind: Some("deployment".into()),
                endpoint: None,
                conditions: merge(&old.conditions, vec![ready]),
                observed_generation: generation,
                ..old
            };
            return (status, notices);
        }
        Source::Remote { url, .. } => ("remote", url, None),
        Source::Deployed {
            url,
            available,
            wanted,
        } => ("deployment", url, Some((*available, *wanted))),
    };

    let mut conditions: Vec<Condition> = Vec::new();
    match &o.source {
        Source::Remote {
            missing_headers: Some(missing),
            ..
        } => conditions.push(condition(
            "Reachable",
            false,
            "SecretMissing",
            format!("missing Secret key(s) {missing}: create them or fix spec.remote.headers"),
            generation,
        )),
        Source::Deployed {
            available: 0,
            wanted,
            ..
        } => conditions.push(condition(
            "Reachable",
            false,
            "Starting",
            format!(
                "0/{wanted} pods available yet; see kubectl describe deployment {}",
                names::server_object_name(&server.name_any())
            ),
            generation,
        )),
        _ => {}
    }

    // Pinning conditions describe the last successful probe; kept while the server is down.
    let mut pin_conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| PIN_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let mut tools = old.tools.clone();
    let mut tool_baseline = old.tool_baseline.clone();
    let mut reachable = false;
    match &o.probe {
        None => {}
        Some(Ok(p)) => {
            reachable = true;
            let (conds, pin_notices) =
                pinning_report(server, &p.pinned, old.tools.is_some(), generation);
            pin_conditions = conds;
            notices.extend(pin_notices);
            tool_baseline = p.pinned.baseline.clone();
            if let Some(prev) = &old.tools
                && !prev.hash.is_empty()
                && prev.hash != p.tools.hash
            {
                notices.push(Notice::normal(
                    "ToolDefinitionsChanged",
                    "Probe",
                    tools_diff(&prev.names, &p.tools.names, p.tools.count),
                ));
            }
            conditions.push(condition(
                "Reachable",
                true,
                "Probed",
                format!("tools/list returned {} tool(s)", p.tools.count),
                generation,
            ));
            tools = Some(p.tools.clone());
        }
        Some(Err(e)) => {
            if is_true(&old.conditions, "Reachable") || old.conditions.is_empty() {
                notices.push(Notice::warning("Unreachable", "Probe", e.clone()));
            }
            conditions.push(condition(
                "Reachable",
                false,
                "ProbeFailed",
                format!("{e}; check the URL, the server's logs and its credentials"),
                generation,
            ));
        }
    }
    let ready = match deployed {
        None => condition(
            "Ready",
            reachable,
            if reachable {
                "Reachable"
            } else {
                "Unreachable"
            },
            if reachable {
                "the server answers tools/list"
            } else {
                "see the Reachable condition"
            },
            generation,
        ),
        Some((available, wanted)) => condition(
            "Ready",
            available > 0,
            if available > 0 {
                "Available"
            } else {
                "DeploymentUnavailable"
            },
            format!("{available}/{wanted} server pods available"),
            generation,
        ),
    };
    conditions.insert(0, ready);
    conditions.extend(pin_conditions);
    let status = McpServerStatus {
        kind: Some(kind.into()),
        endpoint: Some(endpoint.clone()),
        tools,
        tool_baseline,
        conditions: merge(&old.conditions, conditions),
        observed_generation: generation,
    };
    (status, notices)
}

/// When to look again: `None` (on a change only) for a port conflict; in 5 minutes when the
/// server is ready and answered its probe; else in 30 seconds (a remote server's recovery
/// raises no watch event).
pub fn requeue_after(o: &Observed<'_>, status: &McpServerStatus) -> Option<Duration> {
    if matches!(o.source, Source::PortConflict(_)) {
        return None;
    }
    let ok = is_true(&status.conditions, "Ready") && matches!(o.probe, Some(Ok(_)));
    Some(Duration::from_secs(if ok { 300 } else { 30 }))
}

/// Tools of a probe that newly differ from their approved or baseline hash (or are new), with
/// their state: what `portcullis_operator_tool_definition_changes_total` counts. Nothing
/// under `onChange: Allow` or on a server's first probe (its baseline).
pub fn newly_changed_tools<'a>(server: &McpServer, p: &'a Probed) -> Vec<&'a str> {
    let probed_before = server.status.as_ref().is_some_and(|s| s.tools.is_some());
    if server.spec.on_change() == PinAction::Allow || !probed_before {
        return Vec::new();
    }
    let pinned = &p.pinned;
    pinned
        .verdicts
        .iter()
        .filter(|v| untrusted(v) && pinned.changed_since_last_probe.contains(&v.name))
        .map(|v| v.state.as_str())
        .collect()
}

/// Conditions the pinning step owns.
const PIN_CONDITIONS: [&str; 3] = [
    "ToolsChanged",
    "ToolsQuarantined",
    "ToolDescriptionsFlagged",
];

fn untrusted(v: &crds::tooldef::ToolVerdict) -> bool {
    matches!(v.state, ToolState::Changed | ToolState::New)
        || matches!(v.reason.as_deref(), Some("changed" | "new"))
}

/// The conditions and Events of a probe's pinning verdicts. `probed_before`: whether an
/// earlier probe's verdicts exist (the first probe of a server is its baseline and reports
/// nothing but screening findings).
fn pinning_report(
    server: &McpServer,
    pinned: &Pinned,
    probed_before: bool,
    generation: Option<i64>,
) -> (Vec<Condition>, Vec<Notice>) {
    let spec = &server.spec;
    let (on_change, on_finding) = (spec.on_change(), spec.on_finding());
    let fresh = |name: &str| pinned.changed_since_last_probe.iter().any(|n| n == name);
    let untrusted: Vec<&str> = pinned
        .verdicts
        .iter()
        .filter(|v| untrusted(v))
        .map(|v| v.name.as_str())
        .collect();
    let quarantined: Vec<&str> = pinned
        .verdicts
        .iter()
        .filter(|v| v.hidden())
        .map(|v| v.name.as_str())
        .collect();
    let flagged: Vec<String> = pinned
        .verdicts
        .iter()
        .filter(|v| !v.findings.is_empty())
        .map(|v| {
            let kinds: BTreeSet<&str> = v.findings.iter().map(|f| f.kind.as_str()).collect();
            format!(
                "{} ({})",
                v.name,
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    let mut notices = Vec::new();
    // Reported when a tool becomes quarantined, and once on a server's first probe.
    let report_quarantine = if probed_before {
        quarantined.iter().any(|n| fresh(n))
    } else {
        !quarantined.is_empty()
    };
    if report_quarantine {
        notices.push(Notice::warning(
            "ToolsQuarantined",
            "Pin",
            format!(
                "hidden from every portal until spec.pinning.approved lists their hash: {}",
                quarantined.join(", ")
            ),
        ));
    }
    let newly_flagged = pinned
        .verdicts
        .iter()
        .any(|v| !v.findings.is_empty() && (fresh(&v.name) || !probed_before));
    if newly_flagged {
        let note = format!(
            "tool definitions address the model: {}; see status.tools.definitions[].findings",
            flagged.join("; ")
        );
        notices.push(if on_finding == PinAction::Allow {
            Notice::normal("ToolDescriptionsFlagged", "Screen", note)
        } else {
            Notice::warning("ToolDescriptionsFlagged", "Screen", note)
        });
    }
    let mut conds = Vec::new();
    if on_change != PinAction::Allow {
        conds.push(if untrusted.is_empty() {
            condition(
                "ToolsChanged",
                false,
                "Pinned",
                "every tool definition matches its approved or baseline hash",
                generation,
            )
        } else {
            condition(
                "ToolsChanged",
                true,
                "DefinitionsChanged",
                format!(
                    "{} differ from their approved or baseline hash, or are new: review status.tools.definitions and add the hashes to spec.pinning.approved",
                    untrusted.join(", ")
                ),
                generation,
            )
        });
    }
    if on_change == PinAction::Quarantine || on_finding == PinAction::Quarantine {
        conds.push(condition(
            "ToolsQuarantined",
            !quarantined.is_empty(),
            if quarantined.is_empty() {
                "NoneQuarantined"
            } else {
                "Quarantined"
            },
            if quarantined.is_empty() {
                "no tool is quarantined".to_owned()
            } else {
                format!(
                    "hidden from every portal until approved: {}",
                    quarantined.join(", ")
                )
            },
            generation,
        ));
    }
    if on_finding != PinAction::Allow {
        conds.push(condition(
            "ToolDescriptionsFlagged",
            !flagged.is_empty(),
            if flagged.is_empty() {
                "Clean"
            } else {
                "InstructionLikeText"
            },
            if flagged.is_empty() {
                "no tool definition carries instruction-like text".to_owned()
            } else {
                format!(
                    "{}; see status.tools.definitions[].findings",
                    flagged.join("; ")
                )
            },
            generation,
        ));
    }
    (conds, notices)
}

fn tools_diff(before: &[String], after: &[String], count: u32) -> String {
    let b: BTreeSet<&String> = before.iter().collect();
    let a: BTreeSet<&String> = after.iter().collect();
    let added: Vec<&str> = a.difference(&b).map(|s| s.as_str()).collect();
    let removed: Vec<&str> = b.difference(&a).map(|s| s.as_str()).collect();
    let mut msg = format!("{count} tool(s) now");
    if !added.is_empty() {
        msg.push_str(&format!("; added: {}", added.join(", ")));
    }
    if !removed.is_empty() {
        msg.push_str(&format!("; removed: {}", removed.join(", ")));
    }
    if added.is_empty() && removed.is_empty() {
        msg.push_str("; same names, changed definitions");
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::testing::{condition_of, named};
    use crds::McpServerSpec;
    use crds::server::{DeployedServer, RemoteServer};
    use serde_json::json;

    fn remote() -> McpServer {
        named(McpServer::new(
            "wiki",
            McpServerSpec {
                remote: Some(RemoteServer {
                    url: "http://wiki.example/mcp".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
    }

    fn deployed(transport: DeployedTransport, port: Option<u16>) -> McpServer {
        named(McpServer::new(
            "tickets",
            McpServerSpec {
                deployment: Some(DeployedServer {
                    image: "demo:1".into(),
                    transport,
                    port,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
    }

    fn at(url: &str) -> Source {
        Source::Remote {
            url: url.into(),
            missing_headers: None,
        }
    }

    fn tools(names: &[&str]) -> Vec<serde_json::Value> {
        names
            .iter()
            .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
            .collect()
    }

    fn observe(
        server: &McpServer,
        source: Source,
        probe: Option<Result<Vec<serde_json::Value>, String>>,
    ) -> (McpServerStatus, Vec<Notice>, Option<Duration>) {
        let o = Observed {
            server,
            source,
            probe: probe.map(|r| r.map(|defs| probed(server, &defs))),
        };
        let (status, notices) = status(&o);
        let requeue = requeue_after(&o, &status);
        (status, notices, requeue)
    }

    fn after(s: &McpServer, status: McpServerStatus) -> McpServer {
        let mut s = s.clone();
        s.status = Some(status);
        s
    }

    fn reasons(notices: &[Notice]) -> Vec<&str> {
        notices.iter().map(|n| n.reason).collect()
    }

    #[test]
    fn a_remote_server_that_answers_is_ready_with_its_tools() {
        let s = remote();
        let (st, notices, requeue) = observe(
            &s,
            at("http://wiki.example/mcp"),
            Some(Ok(tools(&["b", "a"]))),
        );
        assert!(notices.is_empty());
        assert_eq!(st.kind.as_deref(), Some("remote"));
        assert_eq!(st.endpoint.as_deref(), Some("http://wiki.example/mcp"));
        let t = st.tools.as_ref().unwrap();
        assert_eq!(
            (t.count, t.names.clone()),
            (2, vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(st.tool_baseline.len(), 2, "the first probe is the baseline");
        let ready = condition_of(&st.conditions, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Reachable")
        );
        assert_eq!(
            condition_of(&st.conditions, "Reachable").message,
            "tools/list returned 2 tool(s)"
        );
        assert_eq!(st.conditions[0].type_, "Ready", "Ready comes first");
        assert_eq!(requeue, Some(Duration::from_secs(300)));
    }

    #[test]
    fn a_changed_tool_list_is_an_event_naming_what_was_added_and_removed() {
        let s = remote();
        let (first, _, _) = observe(&s, at("u"), Some(Ok(tools(&["a", "b"]))));
        let s = after(&s, first);
        let (_, notices, _) = observe(&s, at("u"), Some(Ok(tools(&["b", "c"]))));
        assert_eq!(reasons(&notices), ["ToolDefinitionsChanged"]);
        assert_eq!(notices[0].note, "2 tool(s) now; added: c; removed: a");
        let (_, same, _) = observe(&s, at("u"), Some(Ok(tools(&["a", "b"]))));
        assert!(same.is_empty(), "same definitions: no event");
    }

    #[test]
    fn a_probe_failure_warns_when_the_server_was_reachable_and_keeps_the_last_tools() {
        let s = remote();
        let (up, _, _) = observe(&s, at("u"), Some(Ok(tools(&["a"]))));
        let s = after(&s, up.clone());
        let (down, notices, requeue) = observe(&s, at("u"), Some(Err("connection refused".into())));
        assert_eq!(reasons(&notices), ["Unreachable"]);
        assert!(notices[0].warning);
        assert_eq!(notices[0].note, "connection refused");
        let reachable = condition_of(&down.conditions, "Reachable");
        assert_eq!(reachable.reason, "ProbeFailed");
        assert_eq!(
            reachable.message,
            "connection refused; check the URL, the server's logs and its credentials"
        );
        assert_eq!(
            condition_of(&down.conditions, "Ready").reason,
            "Unreachable"
        );
        assert_eq!(down.tools, up.tools, "the last probe's tools stay");
        assert_eq!(requeue, Some(Duration::from_secs(30)));
        let (_, again, _) = observe(&after(&s, down), at("u"), Some(Err("still".into())));
        assert!(again.is_empty(), "already unreachable: no second event");
    }

    #[test]
    fn missing_header_secrets_are_named_and_nothing_is_probed() {
        let s = remote();
        let source = Source::Remote {
            url: "u".into(),
            missing_headers: Some("token/value".into()),
        };
        let (st, notices, _) = observe(&s, source, None);
        assert!(notices.is_empty());
        let r = condition_of(&st.conditions, "Reachable");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "SecretMissing")
        );
        assert_eq!(
            r.message,
            "missing Secret key(s) token/value: create them or fix spec.remote.headers"
        );
        assert_eq!(condition_of(&st.conditions, "Ready").status, "False");
    }

    #[test]
    fn a_deployed_server_is_ready_when_a_pod_is_available_and_starting_before() {
        let s = deployed(DeployedTransport::Stdio, None);
        let url = "http://tickets-mcp.default.svc.cluster.local:80/mcp".to_owned();
        let starting = Source::Deployed {
            url: url.clone(),
            available: 0,
            wanted: 1,
        };
        let (st, _, requeue) = observe(&s, starting, None);
        let r = condition_of(&st.conditions, "Reachable");
        assert_eq!(r.reason, "Starting");
        assert_eq!(
            r.message,
            "0/1 pods available yet; see kubectl describe deployment tickets-mcp"
        );
        let ready = condition_of(&st.conditions, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "DeploymentUnavailable")
        );
        assert_eq!(requeue, Some(Duration::from_secs(30)));

        let up = Source::Deployed {
            url: url.clone(),
            available: 1,
            wanted: 1,
        };
        let (st, _, requeue) = observe(&s, up, Some(Ok(tools(&["a"]))));
        assert_eq!(st.kind.as_deref(), Some("deployment"));
        assert_eq!(st.endpoint.as_deref(), Some(url.as_str()));
        let ready = condition_of(&st.conditions, "Ready");
        assert_eq!(ready.message, "1/1 server pods available");
        assert_eq!(condition_of(&st.conditions, "Reachable").status, "True");
        assert_eq!(requeue, Some(Duration::from_secs(300)));
    }

    #[test]
    fn an_http_server_on_a_sidecar_port_is_a_port_conflict_with_an_event_and_no_requeue() {
        assert_eq!(
            port_conflict(&deployed(DeployedTransport::Http, Some(8080))),
            None
        );
        assert_eq!(
            port_conflict(&deployed(DeployedTransport::Stdio, Some(9180))),
            None
        );
        let s = deployed(DeployedTransport::Http, Some(9180));
        let msg = port_conflict(&s).expect("conflict");
        assert!(
            msg.starts_with("spec.deployment.port 9180 is used by the proxy sidecar"),
            "{msg}"
        );
        let (st, notices, requeue) = observe(&s, Source::PortConflict(msg.clone()), None);
        assert_eq!(reasons(&notices), ["PortConflict"]);
        assert_eq!(st.kind.as_deref(), Some("deployment"));
        assert_eq!(st.endpoint, None);
        let ready = condition_of(&st.conditions, "Ready");
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("PortConflict", msg.as_str())
        );
        assert_eq!(st.conditions.len(), 1);
        assert_eq!(requeue, None, "only a change can fix it");
    }

    #[test]
    fn a_changed_description_under_quarantine_is_hidden_reported_and_counted_once() {
        let mut s = remote();
        s.spec.pinning = Some(crds::server::Pinning {
            on_change: PinAction::Quarantine,
            approved: vec![],
        });
        let v1 = vec![json!({"name": "read", "description": "Reads a ticket"})];
        let v2 = vec![json!({"name": "read", "description": "Reads a ticket, then deletes it"})];
        let (first, notices, _) = observe(&s, at("u"), Some(Ok(v1)));
        assert!(notices.is_empty(), "the first probe is the baseline");
        assert_eq!(
            condition_of(&first.conditions, "ToolsQuarantined").status,
            "False"
        );
        let s = after(&s, first);
        let p = probed(&s, &v2);
        assert_eq!(newly_changed_tools(&s, &p), ["Quarantined"]);
        let (second, notices, _) = observe(&s, at("u"), Some(Ok(v2.clone())));
        assert_eq!(
            reasons(&notices),
            ["ToolsQuarantined", "ToolDefinitionsChanged"]
        );
        assert!(
            notices[0].note.ends_with("their hash: read"),
            "{}",
            notices[0].note
        );
        let changed = condition_of(&second.conditions, "ToolsChanged");
        assert_eq!(
            (changed.status.as_str(), changed.reason.as_str()),
            ("True", "DefinitionsChanged")
        );
        assert_eq!(
            condition_of(&second.conditions, "ToolsQuarantined").status,
            "True"
        );
        // Probed again, unchanged: still quarantined, nothing new to tell or count.
        let s = after(&s, second);
        assert!(newly_changed_tools(&s, &probed(&s, &v2)).is_empty());
        let (_, notices, _) = observe(&s, at("u"), Some(Ok(v2)));
        assert!(notices.is_empty());
        // While the server is down, the pinning conditions of its last probe stay.
        let (down, _, _) = observe(&s, at("u"), Some(Err("down".into())));
        assert_eq!(
            condition_of(&down.conditions, "ToolsQuarantined").status,
            "True"
        );
    }
}
