//! The McpServer reconciler: probes remote servers, deploys deployed ones.

use std::sync::Arc;

use crds::McpServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::{Context, apply_all, delete_if_present, instrumented, settle_status};
use crate::desired::server::{self as desired, Observed, Source};
use crate::desired::{Notice, secret_value};
use crate::error::{Error, Result};
use crate::metrics::ToolChangeLabels;
use crate::names;

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
    let note = format!("deleted the objects of the former deployment ({name})");
    ctx.publish(server, &[Notice::normal("Cleanup", "Delete", note)])
        .await;
    Ok(())
}

/// Resolves a remote server's headers; `Err` lists what is missing. Read from the API, not
/// from the Secret cache: probing needs the values, which the cache does not keep.
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

/// Finds where the server is (applying a deployed server's objects), probes it when it can,
/// publishes the Events its status calls for and settles the status.
async fn apply(server: &McpServer, ctx: &Context) -> Result<Action> {
    let ns = server
        .namespace()
        .ok_or(Error::MissingField("McpServer", "namespace"))?;
    let (source, target) = if let Some(remote) = &server.spec.remote {
        match remote_headers(server, ctx, &ns).await? {
            Ok(headers) => (
                Source::Remote {
                    url: remote.url.clone(),
                    missing_headers: None,
                },
                Some((remote.url.clone(), headers)),
            ),
            Err(missing) => (
                Source::Remote {
                    url: remote.url.clone(),
                    missing_headers: Some(missing),
                },
                None,
            ),
        }
    } else if let Some(conflict) = desired::port_conflict(server) {
        (Source::PortConflict(conflict), None)
    } else if let Some(objects) = desired::objects(server, &ctx.options)? {
        let (available, wanted) = apply_all(&ctx.client, objects.into_vec()).await?;
        let url = names::server_url(&server.name_any(), &ns, &ctx.options.cluster_domain);
        let target = (available > 0).then(|| (url.clone(), Vec::new()));
        let source = Source::Deployed {
            url,
            available,
            wanted,
        };
        (source, target)
    } else {
        return Err(Error::MissingField(
            "McpServer",
            "spec.remote or spec.deployment",
        ));
    };
    let probe = match target {
        Some((url, headers)) => Some(match ctx.prober.probe(url, headers).await {
            Ok(defs) => Ok(desired::probed(server, &defs)),
            Err(e) => Err(e.to_string()),
        }),
        None => None,
    };
    if let Some(Ok(p)) = &probe {
        for state in desired::newly_changed_tools(server, p) {
            let labels = ToolChangeLabels {
                server: format!("{ns}/{}", server.name_any()),
                state: state.to_owned(),
            };
            ctx.metrics
                .tool_definition_changes
                .get_or_create(&labels)
                .inc();
        }
    }
    let observed = Observed {
        server,
        source,
        probe,
    };
    let (status, notices) = desired::status(&observed);
    ctx.publish(server, &notices).await;
    let requeue = desired::requeue_after(&observed, &status);
    settle_status(&ctx.client, server, |o| o.status.as_ref(), status).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}
