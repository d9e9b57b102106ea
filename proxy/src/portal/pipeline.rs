//! The tool-call pipeline: one path for every call, direct or from a Code Mode script.
//!
//! lookup -> authorize -> DLP on arguments -> upstream call -> DLP on the result -> audit.
//! Forwarding helpers for the other routed methods (prompts, resources, completion) live here
//! too, so timeouts, cancellation and upstream error handling are the same everywhere.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResponse, JsonObject, RequestMetaObject};
use rmcp::service::Peer;
use rmcp::{ErrorData, RoleClient, RoleServer};
use tokio_util::sync::CancellationToken;

use super::Portal;
use crate::upstream::Upstream;
use crate::upstream::client::ProgressRoute;

/// Where a call comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's `tools/call`.
    Direct,
    /// A `codemode.<tool>()` call inside a Code Mode execution.
    CodeMode,
}

/// Everything about the caller a call needs.
#[derive(Clone)]
pub struct CallContext {
    /// Cancelled when the client cancels the request or the execution deadline passes.
    pub ct: CancellationToken,
    /// The client's peer and progress token, when the client asked for progress.
    pub progress: Option<(rmcp::model::ProgressToken, Peer<RoleServer>)>,
    /// Direct or from Code Mode.
    pub origin: Origin,
}

impl CallContext {
    /// The context of a request handled by the portal's MCP handler.
    pub fn from_request(ctx: &rmcp::service::RequestContext<RoleServer>) -> Self {
        CallContext {
            ct: ctx.ct.clone(),
            progress: ctx.meta.get_progress_token().map(|t| (t, ctx.peer.clone())),
            origin: Origin::Direct,
        }
    }
}

/// Truncates text for error messages.
pub fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

/// The error for a tool the caller cannot call. Unknown and denied tools look the same.
pub fn unknown_tool(name: &str) -> ErrorData {
    ErrorData::invalid_params(format!("Unknown tool: {}", short(name)), None)
}

impl Portal {
    /// Calls a portal tool through the whole pipeline.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        request: Option<&CallToolRequestParams>,
        ctx: &CallContext,
    ) -> Result<CallToolResponse, ErrorData> {
        let catalog = self.catalog();
        let visible = self.visible_tools(&catalog);
        let Some(tool) = visible.iter().find(|t| t.tool.name == name) else {
            // A stale client may call a tool of a server that is down: say so plainly.
            if let Some(server) = catalog.server_for_name(name)
                && let Some(up) = self.upstreams.get(server).await
                && let Err(reason) = up.peer()
            {
                return Err(ErrorData::internal_error(reason, None));
            }
            return Err(unknown_tool(name));
        };
        let (meta, _route) = self.upstream_meta(ctx);
        let mut params = CallToolRequestParams::new(tool.upstream_name.clone());
        params.arguments = arguments;
        params.meta = meta;
        if let Some(r) = request {
            params.input_responses = r.input_responses.clone();
            params.request_state = r.request_state.clone();
        }
        let server = tool.server.clone();
        self.forward(&server, &ctx.ct, async move |peer| {
            peer.call_tool_once(params).await
        })
        .await
    }

    /// Resolves an upstream by McpServer name to a callable peer and its timeout.
    async fn upstream(
        &self,
        server: &str,
    ) -> Result<(Peer<RoleClient>, Duration, std::sync::Arc<Upstream>), ErrorData> {
        let up = self.upstreams.get(server).await.ok_or_else(|| {
            ErrorData::internal_error(format!("upstream {server} is not configured"), None)
        })?;
        let peer = up.peer().map_err(|e| ErrorData::internal_error(e, None))?;
        Ok((peer, up.config.timeout, up))
    }

    /// Whether an upstream advertises completions.
    pub async fn supports_completions(&self, server: &str) -> Result<bool, ErrorData> {
        let (peer, _, _) = self.upstream(server).await?;
        Ok(peer
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
        let (peer, timeout, up) = self.upstream(server).await?;
        tokio::select! {
            // Dropping the call future sends notifications/cancelled upstream.
            _ = ct.cancelled() => Err(ErrorData::internal_error("request cancelled", None)),
            r = tokio::time::timeout(timeout, call(peer)) => match r {
                Err(_) => Err(ErrorData::internal_error(
                    format!("upstream {server} did not answer within {}s", timeout.as_secs()),
                    None,
                )),
                Ok(Ok(v)) => Ok(v),
                Ok(Err(rmcp::ServiceError::McpError(e))) => Err(e),
                Ok(Err(e)) => {
                    up.report_broken();
                    tracing::warn!(upstream = %server, error = %e, "upstream request failed");
                    Err(ErrorData::internal_error(
                        format!("upstream {server} failed: {}", short(&e.to_string())),
                        None,
                    ))
                }
            }
        }
    }

    /// Metadata to send upstream: only a progress token mapped to this request (never the
    /// client's own protocol metadata, which belongs to the downstream connection).
    pub fn upstream_meta(
        &self,
        ctx: &CallContext,
    ) -> (Option<RequestMetaObject>, Option<ProgressRoute>) {
        match &ctx.progress {
            Some((token, peer)) => {
                let route = self
                    .upstreams
                    .progress()
                    .register(token.clone(), peer.clone());
                (
                    Some(RequestMetaObject::with_progress_token(route.token.clone())),
                    Some(route),
                )
            }
            None => (None, None),
        }
    }
}
