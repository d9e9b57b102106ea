//! Forwarding to upstreams: the one place where upstream timeouts, cancellation, error
//! mapping and the relaying of an upstream's progress and requests to the caller happen, for
//! every routed method (tools, prompts, resources, completion).

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolResponse, CallToolResult, CancelledNotificationParam, ClientRequest, ServerResult,
};
use rmcp::service::{Peer, PeerRequestOptions};
use rmcp::{ErrorData, RoleClient};
use tokio_util::sync::CancellationToken;

use super::Portal;
use crate::upstream::ProgressRouter;
use crate::upstream::relay::{RelayTag, Route};
use crate::upstream::{Link, Upstream};

impl Portal {
    /// Resolves an upstream by McpServer name to a callable link and its timeout.
    pub(super) async fn upstream(
        &self,
        server: &str,
    ) -> Result<(Link, Duration, std::sync::Arc<Upstream>), ErrorData> {
        let up = self.upstreams.get(server).await.ok_or_else(|| {
            ErrorData::internal_error(format!("upstream {server} is not configured"), None)
        })?;
        let link = up
            .link()
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok((link, up.config.timeout, up))
    }

    /// Whether an upstream advertises completions.
    pub async fn supports_completions(&self, server: &str) -> Result<bool, ErrorData> {
        let (link, _, _) = self.upstream(server).await?;
        Ok(link
            .peer
            .peer_info()
            .is_some_and(|i| i.capabilities.completions.is_some()))
    }

    /// Forwards one request upstream with the server's timeout and the caller's cancellation.
    pub async fn forward<T>(
        &self,
        server: &str,
        ct: &CancellationToken,
        call: impl AsyncFnOnce(Peer<RoleClient>) -> Result<T, rmcp::ServiceError>,
    ) -> Result<T, ErrorData> {
        self.forward_link(server, ct, async move |link: Link| call(link.peer).await)
            .await
    }

    /// [`Portal::forward`] for callers that may use the direct `tools/call` client: the one
    /// place where upstream timeouts, cancellation and error mapping happen.
    pub(super) async fn forward_link<T>(
        &self,
        server: &str,
        ct: &CancellationToken,
        call: impl AsyncFnOnce(Link) -> Result<T, rmcp::ServiceError>,
    ) -> Result<T, ErrorData> {
        let (link, timeout, up) = self.upstream(server).await?;
        tokio::select! {
            // Dropping the call future ends the request upstream: rmcp sends
            // notifications/cancelled to legacy-era upstreams, and a stateless upstream (either
            // path) sees its HTTP exchange closed.
            _ = ct.cancelled() => Err(ErrorData::internal_error("request cancelled", None)),
            r = tokio::time::timeout(timeout, call(link)) => match r {
                Err(_) => Err(ErrorData::internal_error(
                    format!("upstream {server} did not answer within {}s", timeout.as_secs()),
                    None,
                )),
                Ok(Ok(v)) => Ok(v),
                Ok(Err(rmcp::ServiceError::McpError(e))) => Err(e),
                Ok(Err(e)) => {
                    up.report_broken();
                    tracing::warn!(upstream = %server, error = %e, "upstream request failed");
                    // Transport details (URLs, types) go to the log, not to the client.
                    Err(ErrorData::internal_error(
                        format!("upstream {server} failed to answer; try again later"),
                        None,
                    ))
                }
            }
        }
    }
}

/// Sends a request upstream on `route`: progress the upstream reports for it is relayed to the
/// caller, and so are the server requests and log messages the transport can associate with it
/// ([`crate::upstream::relay`]).
///
/// rmcp's client puts its own progress token on every request, so the progress route is keyed
/// by the token of the request actually sent. Dropping the future before the answer (client
/// cancel, deadline) tells the upstream with `notifications/cancelled`.
pub async fn send_routed(
    peer: &Peer<RoleClient>,
    mut request: ClientRequest,
    route: Option<Arc<Route>>,
    router: &Arc<ProgressRouter>,
) -> Result<ServerResult, rmcp::ServiceError> {
    use rmcp::model::GetExtensions;
    if let Some(route) = &route {
        request.extensions_mut().insert(RelayTag(route.clone()));
    }
    // Relayed requests still waiting for the caller stop when this request ends.
    let _done = route.as_ref().map(|r| r.done().clone().drop_guard());
    let handle = peer
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await?;
    let _progress = route.as_ref().and_then(|r| {
        let token = r.downstream.progress.clone()?;
        Some(router.register(
            &r.server,
            handle.progress_token.clone(),
            token,
            r.downstream.sink.clone(),
        ))
    });
    let mut guard = CancelUpstreamOnDrop {
        peer: peer.clone(),
        id: Some(handle.id.clone()),
    };
    let result = handle.await_response().await;
    guard.id = None;
    // Progress and logs the upstream sent before its answer reach the caller before it.
    if let Some(route) = &route {
        route.settle(RELAY_SETTLE).await;
    }
    result
}

/// Longest wait for notifications that arrived before an answer to be relayed.
const RELAY_SETTLE: Duration = Duration::from_millis(500);

struct CancelUpstreamOnDrop {
    peer: Peer<RoleClient>,
    id: Option<rmcp::model::RequestId>,
}

impl Drop for CancelUpstreamOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let peer = self.peer.clone();
            tokio::spawn(async move {
                let params = CancelledNotificationParam::new(
                    Some(id),
                    Some("cancelled by the portal's client".into()),
                );
                let _ = peer.notify_cancelled(params).await;
            });
        }
    }
}

/// Maps a `tools/call` answer the way rmcp's `call_tool_once` does.
pub fn call_tool_response(result: ServerResult) -> Result<CallToolResponse, rmcp::ServiceError> {
    match result {
        ServerResult::CallToolResult(r) => Ok(CallToolResponse::Complete(r)),
        ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
        ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
        // Some servers answer a content-less tool with an empty object.
        ServerResult::EmptyResult(_) => {
            Ok(CallToolResponse::Complete(CallToolResult::success(vec![])))
        }
        _ => Err(rmcp::ServiceError::UnexpectedResponse),
    }
}
