//! The McpServer reconciler: probes remote servers, deploys deployed ones.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crds::server::DeployedTransport;
use crds::{Condition, McpServer, McpServerStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::{Context, apply_object, delete_if_present, instrumented, secret_value, settle_status};
use crate::desired::{self, server::RESERVED_PORTS};
use crate::error::{Error, Result};
use crate::names;
use crate::probe::{Pinned, pin, summarize};
use crate::status::{condition, merge};

/// Reconciles one McpServer. No finalizer: the objects of a deployed server carry owner
/// references; a server that stops being deployed has its objects deleted by [`cleanup`].
pub async fn reconcile(server: Arc<McpServer>, ctx: Arc<Context>) -> Result<Action> {
    let work = async {
        if server.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        if server.spec.deployment.is_none() {
            let was_deployed =
                server.status.as_ref().and_then(|s| s.kind.as_deref()) == Some("deployment");
            if was_deployed {
                cleanup(&server, &ctx).await?;
            }
        }
        apply(&server, &ctx).await
    };
    instrumented(server.clone(), ctx.clone(), work).await
}

/// Deletes the objects of a server that is no longer deployed by the operator.
pub async fn cleanup(server: &McpServer, ctx: &Context) -> Result<()> {
    let ns = server
        .namespace()
        .ok_or(Error::MissingField("McpServer", "namespace"))?;
    let name = names::server_object_name(&server.name_any());
    delete_if_present::<Deployment>(&ctx.client, &ns, &name).await?;
    delete_if_present::<Service>(&ctx.client, &ns, &name).await?;
    delete_if_present::<NetworkPolicy>(&ctx.client, &ns, &name).await?;
    delete_if_present::<ConfigMap>(&ctx.client, &ns, &name).await?;
    ctx.event(
        server,
        false,
        "Cleanup",
        "Delete",
        format!("deleted the objects of the former deployment ({name})"),
    )
    .await;
    Ok(())
}

/// Resolves a remote server's headers; `Err` lists what is missing.
async fn remote_headers(
    server: &McpServer,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Vec<(String, String)>, String>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for h in server.spec.remote.iter().flat_map(|r| r.headers.iter()) {
        let value = match (&h.value, &h.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(r)) => match api
                .get_opt(&r.name)
                .await?
                .and_then(|s| secret_value(&s, &r.key))
            {
                Some(bytes) => String::from_utf8_lossy(&bytes)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
                None => {
                    missing.push(format!("{}/{}", r.name, r.key));
                    continue;
                }
            },
            (None, None) => String::new(),
        };
        out.push((h.name.clone(), value));
    }
    Ok(if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing.join(", "))
    })
}

async fn apply(server: &McpServer, ctx: &Context) -> Result<Action> {
    let ns = server
        .namespace()
        .ok_or(Error::MissingField("McpServer", "namespace"))?;
    let name = server.name_any();
    let generation = server.metadata.generation;
    let old = server.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = Vec::new();
    let mut tools = old.tools.clone();
    let mut tool_baseline = old.tool_baseline.clone();
    // Pinning conditions describe the last successful probe; kept while the server is down.
    let mut pin_conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| PIN_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();

    let (kind, endpoint, deployed_ready, probe_target) = if let Some(remote) = &server.spec.remote {
        let target = match remote_headers(server, ctx, &ns).await? {
            Ok(headers) => Some(headers),
            Err(missing) => {
                conditions.push(condition(
                    "Reachable",
                    false,
                    "SecretMissing",
                    format!(
                        "missing Secret key(s) {missing}: create them or fix spec.remote.headers"
                    ),
                    generation,
                ));
                None
            }
        };
        (
            "remote",
            remote.url.clone(),
            None,
            target.map(|h| (remote.url.clone(), h)),
        )
    } else if let Some(dep) = &server.spec.deployment {
        let port = i32::from(dep.port.unwrap_or(8080));
        if dep.transport == DeployedTransport::Http && RESERVED_PORTS.contains(&port) {
            let msg = format!(
                "spec.deployment.port {port} is used by the proxy sidecar: pick another port (not {RESERVED_PORTS:?})"
            );
            let conds = vec![condition(
                "Ready",
                false,
                "PortConflict",
                msg.clone(),
                generation,
            )];
            ctx.event(server, true, "PortConflict", "Deploy", msg).await;
            let status = McpServerStatus {
                kind: Some("deployment".into()),
                endpoint: None,
                tools,
                tool_baseline,
                conditions: merge(&old.conditions, conds),
                observed_generation: generation,
            };
            settle_status(&ctx.client, server, |o| o.status.as_ref(), status.clone()).await?;
            return Ok(Action::await_change());
        }
        let objs = desired::server::objects(server, &ctx.options)?
            .into_iter()
            .flat_map(|o| o.into_vec());
        let mut available = 0;
        let mut wanted = 0;
        for obj in objs {
            if let desired::Object::Deployment(d) = &obj {
                wanted = d.spec.replicas.unwrap_or(1);
            }
            if let Some(d) = apply_object(&ctx.client, &obj).await? {
                available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            }
        }
        let url = names::server_url(&name, &ns, &ctx.options.cluster_domain);
        let target = (available > 0).then(|| (url.clone(), Vec::new()));
        if available == 0 {
            conditions.push(condition(
                "Reachable",
                false,
                "Starting",
                format!(
                    "0/{wanted} pods available yet; see kubectl describe deployment {}",
                    names::server_object_name(&name)
                ),
                generation,
            ));
        }
        ("deployment", url, Some((available, wanted)), target)
    } else {
        return Err(Error::MissingField(
            "McpServer",
            "spec.remote or spec.deployment",
        ));
    };

    let mut reachable = false;
    if let Some((url, headers)) = probe_target {
        match ctx.prober.probe(url, headers).await {
            Ok(defs) => {
                let mut summary = summarize(&defs);
                reachable = true;
                let previous = old.tools.as_ref().map(|t| t.definitions.as_slice());
                let pinned = pin(&defs, &server.spec, &old.tool_baseline, previous);
                pin_conditions =
                    report_pinning(server, ctx, &ns, &pinned, old.tools.is_some(), generation)
                        .await;
                tool_baseline = pinned.baseline;
                summary.definitions = pinned.verdicts;
                if let Some(prev) = &old.tools
                    && !prev.hash.is_empty()
                    && prev.hash != summary.hash
                {
                    ctx.event(
                        server,
                        false,
                        "ToolDefinitionsChanged",
                        "Probe",
                        tools_diff(&prev.names, &summary.names, summary.count),
                    )
                    .await;
                }
                conditions.push(condition(
                    "Reachable",
                    true,
                    "Probed",
                    format!("tools/list returned {} tool(s)", summary.count),
                    generation,
                ));
                tools = Some(summary);
            }
            Err(e) => {
                let was = crate::status::is_true(&old.conditions, "Reachable");
                if was || old.conditions.is_empty() {
                    ctx.event(server, true, "Unreachable", "Probe", e.to_string())
                        .await;
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
    }
    let ready = match deployed_ready {
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
        endpoint: Some(endpoint),
        tools,
        tool_baseline,
        conditions: merge(&old.conditions, conditions),
        observed_generation: generation,
    };
    settle_status(&ctx.client, server, |o| o.status.as_ref(), status.clone()).await?;
    let ok = crate::status::is_true(&status.conditions, "Ready") && reachable;
    Ok(Action::requeue(Duration::from_secs(if ok {
        300
    } else {
        30
    })))
}

/// Conditions the pinning step owns.
const PIN_CONDITIONS: [&str; 3] = [
    "ToolsChanged",
    "ToolsQuarantined",
    "ToolDescriptionsFlagged",
];

/// Events and metrics for what a probe's pinning verdicts say, and the conditions to set.
/// `probed_before`: whether an earlier probe's verdicts exist (the first probe of a server is
/// its baseline and reports nothing but screening findings).
async fn report_pinning(
    server: &McpServer,
    ctx: &Context,
    ns: &str,
    pinned: &Pinned,
    probed_before: bool,
    generation: Option<i64>,
) -> Vec<Condition> {
    use crds::tooldef::{PinAction, ToolState};
    let spec = &server.spec;
    let (on_change, on_finding) = (spec.on_change(), spec.on_finding());
    let fresh = |name: &str| pinned.changed_since_last_probe.iter().any(|n| n == name);
    let untrusted: Vec<&str> = pinned
        .verdicts
        .iter()
        .filter(|v| {
            matches!(v.state, ToolState::Changed | ToolState::New)
                || matches!(v.reason.as_deref(), Some("changed" | "new"))
        })
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
    let newly_untrusted: Vec<&str> = untrusted.iter().copied().filter(|n| fresh(n)).collect();
    if on_change != PinAction::Allow && probed_before {
        for v in pinned
            .verdicts
            .iter()
            .filter(|v| newly_untrusted.contains(&v.name.as_str()))
        {
            ctx.metrics
                .tool_definition_changes
                .get_or_create(&crate::metrics::ToolChangeLabels {
                    server: format!("{ns}/{}", server.name_any()),
                    state: v.state.as_str().to_owned(),
                })
                .inc();
        }
    }
    let newly_quarantined: Vec<&str> = quarantined.iter().copied().filter(|n| fresh(n)).collect();
    // Reported when a tool becomes quarantined, and once on a server's first probe.
    let report_quarantine = if probed_before {
        !newly_quarantined.is_empty()
    } else {
        !quarantined.is_empty()
    };
    if report_quarantine {
        ctx.event(
            server,
            true,
            "ToolsQuarantined",
            "Pin",
            format!(
                "hidden from every portal until spec.pinning.approved lists their hash: {}",
                quarantined.join(", ")
            ),
        )
        .await;
    }
    let newly_flagged = pinned
        .verdicts
        .iter()
        .any(|v| !v.findings.is_empty() && (fresh(&v.name) || !probed_before));
    if newly_flagged {
        ctx.event(
            server,
            on_finding != PinAction::Allow,
            "ToolDescriptionsFlagged",
            "Screen",
            format!(
                "tool definitions address the model: {}; see status.tools.definitions[].findings",
                flagged.join("; ")
            ),
        )
        .await;
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
    conds
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
