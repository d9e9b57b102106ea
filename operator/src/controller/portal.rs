//! The McpPortal reconciler.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crds::{Condition, McpPolicy, McpPortal, McpPortalStatus, McpServer};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{Context, SecretVersions, apply_object, instrumented, secret_value, settle_status};
use crate::desired::{self, Object};
use crate::error::{Error, Result};
use crate::names;
use crate::status::{condition, is_true, merge};
use crds::{select, validate};

/// Every portal of a namespace (the mapper of the McpServer and McpPolicy watches: a change
/// can add a server to a portal or take it away, so each portal of the namespace re-resolves).
pub fn portals_in_namespace(
    store: &Store<McpPortal>,
    ns: Option<&str>,
) -> Vec<ObjectRef<McpPortal>> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == ns)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Reconciles one McpPortal. Deletion needs no finalizer: everything the portal owns carries
/// an owner reference, and the garbage collector removes it.
pub async fn reconcile(portal: Arc<McpPortal>, ctx: Arc<Context>) -> Result<Action> {
    let work = async {
        if portal.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        apply(&portal, &ctx).await
    };
    instrumented(portal.clone(), ctx.clone(), work).await
}

/// What the portal needs from its Secrets.
#[derive(Debug, Default)]
struct SecretCheck {
    versions: SecretVersions,
    missing: Vec<String>,
}

async fn check_secrets(
    ctx: &Context,
    ns: &str,
    refs: &[crds::SecretKeyRef],
) -> Result<SecretCheck> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = SecretCheck::default();
    for name in select::secret_names(refs) {
        match api.get_opt(&name).await? {
            Some(secret) => {
                for r in refs.iter().filter(|r| r.name == name) {
                    if secret_value(&secret, &r.key).is_none() {
                        out.missing
                            .push(format!("{}/{} (no key {:?})", r.name, r.key, r.key));
                    }
                }
                out.versions
                    .insert(name, secret.resource_version().unwrap_or_default());
            }
            None => out.missing.push(format!("Secret {name:?}")),
        }
    }
    Ok(out)
}

async fn apply(portal: &McpPortal, ctx: &Context) -> Result<Action> {
    let ns = portal
        .namespace()
        .ok_or(Error::MissingField("McpPortal", "namespace"))?;
    let name = portal.name_any();
    let generation = portal.metadata.generation;
    let servers = Api::<McpServer>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let policies = Api::<McpPolicy>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let selected = select::selected_servers(portal, &servers);
    // Invalid policies are left out of the configuration; the portal says so (condition and
    // event) and each policy's own status says why.
    let (bound, left_out) = split_valid(select::bound_policies(portal, &policies));
    let portal_problems = validate::portal_problems(portal);
    let refs = select::portal_secret_refs(portal, &selected);
    ctx.index_secrets(&ns, &name, &select::secret_names(&refs));
    let secrets = check_secrets(ctx, &ns, &refs).await?;
    let conflicts = select::prefix_conflicts(&selected);

    let old = portal.status.clone().unwrap_or_default();
    let mut conditions = Vec::new();
    let mut config_hash = old.config_hash.clone();
    let mut available = 0;
    let mut wanted = 0;
    let rendered = secrets.missing.is_empty() && conflicts.is_empty() && portal_problems.is_empty();
    if rendered {
        let objs =
            desired::portal::objects(portal, &selected, &bound, &secrets.versions, &ctx.options)?;
        config_hash = Some(objs.config_hash.clone());
        for obj in objs.into_vec() {
            if let Object::Deployment(d) = &obj {
                wanted = d.spec.replicas.unwrap_or(1);
            }
            if let Some(dep) = apply_object(&ctx.client, &obj).await? {
                available = dep.status.and_then(|s| s.available_replicas).unwrap_or(0);
            }
        }
        conditions.push(condition(
            "ConfigRendered",
            true,
            "Rendered",
            format!(
                "ConfigMap {} holds {} server(s) and {} polic(ies)",
                names::portal_object_name(&name),
                selected.len(),
                bound.len()
            ),
            generation,
        ));
        if old.config_hash.is_some() && old.config_hash != config_hash {
            ctx.event(
                portal,
                false,
                "ConfigChanged",
                "Render",
                format!(
                    "configuration {} rolled out to the proxy pods",
                    config_hash.as_deref().unwrap_or_default()
                ),
            )
            .await;
        }
    } else {
        let (reason, message) = if !portal_problems.is_empty() {
            (
                "InvalidSpec",
                format!(
                    "{}; the running proxy keeps its last configuration",
                    validate::summary(&portal_problems)
                ),
            )
        } else if !secrets.missing.is_empty() {
            (
                "SecretMissing",
                format!(
                    "missing {}: create it or fix the reference; the running proxy keeps its last configuration",
                    secrets.missing.join(", ")
                ),
            )
        } else {
            let (a, b, p) = &conflicts[0];
            (
                "PrefixConflict",
                format!(
                    "McpServers {a} and {b} both use the tool prefix {p:?}: set spec.prefix on one of them"
                ),
            )
        };
        if !has_reason(&old, "ConfigRendered", reason) {
            ctx.event(portal, true, reason, "Render", message.clone())
                .await;
        }
        conditions.push(condition(
            "ConfigRendered",
            false,
            reason,
            message,
            generation,
        ));
    }

    let policies_condition = policies_condition(&left_out, generation);
    if policies_condition.status == "False"
        && !has_message(&old, "PoliciesAccepted", &policies_condition.message)
    {
        ctx.event(
            portal,
            true,
            "PolicyLeftOut",
            "Render",
            policies_condition.message.clone(),
        )
        .await;
    }
    conditions.push(policies_condition);

    let ready: Vec<&&McpServer> = selected
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| is_true(&st.conditions, "Ready"))
        })
        .collect();
    let not_ready: Vec<String> = selected
        .iter()
        .filter(|s| !ready.iter().any(|r| r.name_any() == s.name_any()))
        .map(|s| s.name_any())
        .collect();
    let tools_exposed: u32 = ready.iter().map(|s| exposed_tools(s)).sum();
    let missing_names = select::missing_server_names(portal, &servers);
    conditions.push(if selected.is_empty() {
        let mut m = "no McpServer in this namespace matches spec.servers".to_owned();
        if !missing_names.is_empty() {
            m.push_str(&format!(" (not found: {})", missing_names.join(", ")));
        }
        condition("ServersReady", false, "NoServersSelected", m, generation)
    } else if !not_ready.is_empty() {
        condition(
            "ServersReady",
            false,
            "ServersNotReady",
            format!(
                "not ready: {} (see kubectl describe mcpserver)",
                not_ready.join(", ")
            ),
            generation,
        )
    } else {
        condition(
            "ServersReady",
            true,
            "AllServersReady",
            format!("{} server(s) ready", ready.len()),
            generation,
        )
    });
    conditions.push(if !rendered {
        condition(
            "Ready",
            false,
            "ConfigNotRendered",
            "see the ConfigRendered condition",
            generation,
        )
    } else if available < 1 && wanted > 0 {
        condition(
            "Ready",
            false,
            "DeploymentUnavailable",
            format!(
                "0/{wanted} proxy replicas available; see kubectl describe deployment {}",
                names::portal_object_name(&name)
            ),
            generation,
        )
    } else {
        condition(
            "Ready",
            true,
            "Available",
            format!("{available}/{wanted} proxy replicas available"),
            generation,
        )
    });

    let total = u32::try_from(selected.len()).unwrap_or(u32::MAX);
    let ready_n = u32::try_from(ready.len()).unwrap_or(u32::MAX);
    let status = McpPortalStatus {
        url: Some(desired::portal::url(portal, &ctx.options)),
        servers_ready: ready_n,
        servers_total: total,
        servers_summary: Some(format!("{ready_n}/{total}")),
        tools_exposed,
        conditions: merge(&old.conditions, conditions),
        observed_generation: generation,
        config_hash,
    };
    settle_status(&ctx.client, portal, |o| o.status.as_ref(), status.clone()).await?;
    let all_good =
        is_true(&status.conditions, "Ready") && is_true(&status.conditions, "ServersReady");
    Ok(Action::requeue(Duration::from_secs(if all_good {
        300
    } else {
        15
    })))
}

/// Splits bound policies into the valid ones (rendered) and the invalid ones with their
/// problems (left out).
pub fn split_valid(policies: Vec<&McpPolicy>) -> (Vec<&McpPolicy>, Vec<(String, String)>) {
    let mut valid = Vec::new();
    let mut left_out = Vec::new();
    for p in policies {
        let problems = validate::policy_problems(p);
        if problems.is_empty() {
            valid.push(p);
        } else {
            left_out.push((p.name_any(), validate::summary(&problems)));
        }
    }
    (valid, left_out)
}

/// The `PoliciesAccepted` condition: which bound policies were left out of the configuration,
/// and why (pure).
pub fn policies_condition(left_out: &[(String, String)], generation: Option<i64>) -> Condition {
    if left_out.is_empty() {
        return condition(
            "PoliciesAccepted",
            true,
            "AllPoliciesValid",
            "every bound McpPolicy is in the configuration",
            generation,
        );
    }
    let list: Vec<String> = left_out
        .iter()
        .map(|(name, why)| format!("McpPolicy {name} ({why})"))
        .collect();
    condition(
        "PoliciesAccepted",
        false,
        "InvalidPoliciesLeftOut",
        format!(
            "left out of the configuration, so their rules and DLP do not apply: {}",
            list.join("; ")
        ),
        generation,
    )
}

fn has_message(status: &McpPortalStatus, type_: &str, message: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.message == message)
}

fn has_reason(status: &McpPortalStatus, type_: &str, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.reason == reason)
}

/// Tools a ready server contributes: what it lists, less the ones hidden by overrides.
fn exposed_tools(server: &McpServer) -> u32 {
    let Some(tools) = server.status.as_ref().and_then(|s| s.tools.as_ref()) else {
        return 0;
    };
    let hidden: BTreeSet<&str> = server
        .spec
        .tools
        .iter()
        .filter(|t| t.hidden)
        .map(|t| t.name.as_str())
        .collect();
    let hidden_listed = tools
        .names
        .iter()
        .filter(|n| hidden.contains(n.as_str()))
        .count();
    tools
        .count
        .saturating_sub(u32::try_from(hidden_listed).unwrap_or(0))
}
