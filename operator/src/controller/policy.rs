//! The McpPolicy reconciler: validates, reports which portals the policy binds to, and (for a
//! policy with LLM budgets) the spend each bound portal counts ([`crate::spend`]).

use std::sync::Arc;

use crds::{McpPolicy, McpPortal, select};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{Context, instrumented, settle_status};
use crate::desired;
use crate::error::{Error, Result};
use crate::spend;
use crate::status::merge;

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

/// Reads the portals of the namespace from the cache (and, for a policy with budgets, their
/// spend), publishes the Events the status calls for and settles the status. A policy with
/// budgets is read again every `ctx.spend.interval`.
async fn apply(policy: &McpPolicy, ctx: &Context) -> Result<Action> {
    let ns = policy
        .namespace()
        .ok_or(Error::MissingField("McpPolicy", "namespace"))?;
    ctx.stores.ready().await?;
    let portals = ctx.stores.portals_in(&ns);
    let portals: Vec<&McpPortal> = portals.iter().collect();
    let (mut status, notices) = desired::policy::status(policy, &portals);
    let mut next = Action::await_change();
    if policy.spec.budgets.is_empty() {
        status.spend.clear();
        status
            .conditions
            .retain(|c| c.type_ != spend::SPEND_REPORTED);
    } else if let Some(fetcher) = &ctx.spend.fetcher {
        let bound: Vec<&McpPortal> = portals
            .iter()
            .copied()
            .filter(|p| select::policy_binds(policy, p))
            .collect();
        let name = policy.name_any();
        let reads = futures::future::join_all(bound.iter().map(|p| {
            let url = spend::summary_url(p, &name, &ctx.options.cluster_domain);
            let read = fetcher.fetch(url);
            async move { (p.name_any(), read.await) }
        }))
        .await;
        let old = policy.status.clone().unwrap_or_default();
        let (figures, reported) = spend::merge(
            &name,
            &old.spend,
            reads,
            &crate::status::now(),
            policy.metadata.generation,
        );
        status.spend = figures;
        let reported = merge(&old.conditions, vec![reported]);
        status.conditions.extend(reported);
        if !bound.is_empty() {
            next = Action::requeue(ctx.spend.interval);
        }
    }
    ctx.publish(policy, &notices).await;
    settle_status(&ctx.client, policy, |o| o.status.as_ref(), status).await?;
    Ok(next)
}
