//! The McpPortal reconciler.

use std::sync::Arc;

use crds::McpPortal;
use crds::select;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{Context, apply_all, instrumented, settle_status};
use crate::desired::portal::{self as desired, Observed, Rollout};
use crate::error::{Error, Result};

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

/// Reads the caches, renders and applies the portal's objects (unless something blocks the
/// configuration), publishes the Events its status calls for and settles the status.
async fn apply(portal: &McpPortal, ctx: &Context) -> Result<Action> {
    let ns = portal
        .namespace()
        .ok_or(Error::MissingField("McpPortal", "namespace"))?;
    ctx.stores.ready().await?;
    let servers = ctx.stores.servers_in(&ns);
    let policies = ctx.stores.policies_in(&ns);
    let selected = select::selected_servers(portal, &servers);
    let (bound, left_out) = desired::split_valid(select::bound_policies(portal, &policies));
    let refs = select::portal_secret_refs(portal, &selected);
    // Before the Secrets are read: a Secret created from now on triggers this portal.
    ctx.index_secrets(&ns, &portal.name_any(), &select::secret_names(&refs));
    let secrets = desired::check_secrets(&refs, |name| ctx.stores.secret(&ns, name));

    let rollout = match desired::blocked(portal, &selected, &secrets.missing) {
        Some(b) => Rollout::Blocked(b),
        None => {
            let objects =
                desired::objects(portal, &selected, &bound, &secrets.versions, &ctx.options)?;
            let config_hash = objects.config_hash.clone();
            let (available, wanted) = apply_all(&ctx.client, objects.into_vec()).await?;
            Rollout::Applied {
                config_hash,
                available,
                wanted,
            }
        }
    };
    let (status, notices) = desired::status(&Observed {
        portal,
        selected: &selected,
        missing_servers: &select::missing_server_names(portal, &servers),
        policies_rendered: bound.len(),
        policies_left_out: &left_out,
        rollout,
        url: desired::url(portal, &ctx.options),
    });
    ctx.publish(portal, &notices).await;
    settle_status(&ctx.client, portal, |o| o.status.as_ref(), status.clone()).await?;
    Ok(Action::requeue(desired::requeue_after(&status)))
}
