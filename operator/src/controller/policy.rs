//! The McpPolicy reconciler: validates, and reports which portals the policy binds to.

use std::collections::BTreeSet;
use std::sync::Arc;

use crds::{McpPolicy, McpPolicyStatus, McpPortal};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{Context, instrumented, names_csv, settle_status};
use crate::error::{Error, Result};
use crate::status::{condition, merge};
use crds::select;
use crds::validate::{policy_problems, summary};

/// Every policy of a namespace (mapper of the McpPortal watch).
pub fn policies_in_namespace(
    store: &Store<McpPolicy>,
    ns: Option<&str>,
) -> Vec<ObjectRef<McpPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == ns)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Reconciles one McpPolicy (status only; the portals read policies themselves).
pub async fn reconcile(policy: Arc<McpPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let work = async {
        if policy.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        apply(&policy, &ctx).await
    };
    instrumented(policy.clone(), ctx.clone(), work).await
}

/// The status of a policy given the portals of its namespace (pure).
pub fn desired_status(policy: &McpPolicy, portals: &[McpPortal]) -> McpPolicyStatus {
    let generation = policy.metadata.generation;
    let problems = policy_problems(policy);
    let bound: BTreeSet<String> = portals
        .iter()
        .filter(|p| select::policy_binds(policy, p))
        .map(|p| p.name_any())
        .collect();
    let missing: Vec<&String> = policy
        .spec
        .portals
        .iter()
        .filter(|n| !bound.contains(*n))
        .collect();
    let mut conditions = vec![if problems.is_empty() {
        condition("Accepted", true, "Valid", "the policy is valid", generation)
    } else {
        condition(
            "Accepted",
            false,
            "Invalid",
            format!(
                "{}; the policy is left out of every portal's configuration until fixed",
                summary(&problems)
            ),
            generation,
        )
    }];
    conditions.push(if !missing.is_empty() {
        condition(
            "Bound",
            !bound.is_empty(),
            "PortalNotFound",
            format!(
                "no McpPortal named {} in this namespace",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            generation,
        )
    } else if bound.is_empty() {
        condition(
            "Bound",
            false,
            "NoPortals",
            "no McpPortal in this namespace yet",
            generation,
        )
    } else {
        condition(
            "Bound",
            true,
            "Bound",
            format!("bound to {} portal(s)", bound.len()),
            generation,
        )
    });
    McpPolicyStatus {
        portals: names_csv(&bound),
        conditions,
        observed_generation: generation,
    }
}

async fn apply(policy: &McpPolicy, ctx: &Context) -> Result<Action> {
    let ns = policy
        .namespace()
        .ok_or(Error::MissingField("McpPolicy", "namespace"))?;
    let portals = Api::<McpPortal>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let old = policy.status.clone().unwrap_or_default();
    let mut status = desired_status(policy, &portals);
    status.conditions = merge(&old.conditions, status.conditions);
    let was_invalid = old
        .conditions
        .iter()
        .any(|c| c.type_ == "Accepted" && c.status == "False");
    let invalid = !crate::status::is_true(&status.conditions, "Accepted");
    if invalid && !was_invalid {
        let msg = status.conditions[0].message.clone();
        ctx.event(policy, true, "Rejected", "Validate", msg).await;
    }
    settle_status(&ctx.client, policy, |o| o.status.as_ref(), status.clone()).await?;
    Ok(Action::await_change())
}
