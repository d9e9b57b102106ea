//! The McpPolicy reconciler: validates, and reports which portals the policy binds to.

use std::sync::Arc;

use crds::{McpPolicy, McpPortal};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{Context, instrumented, settle_status};
use crate::desired;
use crate::error::{Error, Result};

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

/// Reads the portals of the namespace from the cache, publishes the Events the status calls
/// for and settles the status.
async fn apply(policy: &McpPolicy, ctx: &Context) -> Result<Action> {
    let ns = policy
        .namespace()
        .ok_or(Error::MissingField("McpPolicy", "namespace"))?;
    ctx.stores.ready().await?;
    let portals = ctx.stores.portals_in(&ns);
    let portals: Vec<&McpPortal> = portals.iter().collect();
    let (status, notices) = desired::policy::status(policy, &portals);
    ctx.publish(policy, &notices).await;
    settle_status(&ctx.client, policy, |o| o.status.as_ref(), status).await?;
    Ok(Action::await_change())
}
