//! The MCP server handler of the portal: what each client session talks to.
//!
//! rmcp's Streamable HTTP service does the wire protocol of both eras (sessions, SSE, header
//! checks, `server/discover`); this handler answers the methods by aggregating the upstreams.
#![allow(deprecated)] // logging/setLevel is deprecated by SEP-2577 but 2025 clients still send it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, Reference, RequestMetaObject,
    ResourceContents, ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler};

use super::Portal;
use crate::auth::Identity;
use crate::policy::AccessCounters;
use super::pagination::page;

/// Handles one client session (legacy) or request (2026-07-28); cheap to clone.
#[derive(Clone)]
pub struct PortalHandler {
    portal: Arc<Portal>,
    /// Legacy-session peers to notify of list changes.
    sessions: Arc<Mutex<Vec<Peer<RoleServer>>>>,
}

impl PortalHandler {
    /// A handler over `portal`, and the task that forwards list changes to legacy sessions.
    pub fn new(portal: Arc<Portal>) -> Self {
        let handler = PortalHandler {
            portal,
            sessions: Arc::new(Mutex::new(Vec::new())),
        };
        tokio::spawn(notify_sessions(handler.clone()));
        handler
    }

    /// The portal this handler serves.
    pub fn portal(&self) -> &Arc<Portal> {
        &self.portal
    }

    /// Who is calling: the [`Identity`] the auth middleware put in the HTTP request. Without
    /// one (a transport that bypasses the HTTP layer), anonymous on a public portal, else
    /// nobody (sees nothing).
    fn identity(&self, ctx: &RequestContext<RoleServer>) -> Identity {
        ctx.extensions
            .get::<::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Identity>())
            .cloned()
            .unwrap_or_else(|| {
                if self.portal.config().spec.public == Some(true) {
                    Identity::anonymous()
                } else {
                    Identity::nobody()
                }
            })
    }

    /// Resolves an upstream by McpServer name to a callable peer and its timeout.
    async fn upstream(&self, server: &str) -> Result<(Peer<RoleClient>, Duration, Arc<crate::upstream::Upstream>), ErrorData> {
        let up = self
            .portal
            .upstreams
            .get(server)
            .await
            .ok_or_else(|| ErrorData::internal_error(format!("upstream {server} is not configured"), None))?;
        let peer = up.peer().map_err(|e| ErrorData::internal_error(e, None))?;
        Ok((peer, up.config.timeout, up))
    }

    /// Forwards one request upstream with the server's timeout and the client's cancellation.
    async fn forward<T>(
        &self,
        server: &str,
        ct: &tokio_util::sync::CancellationToken,
        call: impl AsyncFnOnce(Peer<RoleClient>) -> Result<T, rmcp::ServiceError>,
    ) -> Result<T, ErrorData> {
        let (peer, timeout, up) = self.upstream(server).await?;
        tokio::select! {
            // Dropping the call future sends notifications/cancelled upstream.
            _ = ct.cancelled() => Err(ErrorData::internal_error("request cancelled by the client", None)),
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
                    Err(ErrorData::internal_error(format!("upstream {server} failed: {}", short(&e.to_string())), None))
                }
            }
        }
    }

    /// Metadata to send upstream: only a progress token mapped to this request (never the
    /// client's own protocol metadata, which belongs to the downstream connection).
    fn upstream_meta(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> (Option<RequestMetaObject>, Option<crate::upstream::client::ProgressRoute>) {
        match ctx.meta.get_progress_token() {
            Some(token) => {
                let route = self.portal.upstreams.progress().register(token, ctx.peer.clone());
                (Some(RequestMetaObject::with_progress_token(route.token.clone())), Some(route))
            }
            None => (None, None),
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

impl ServerHandler for PortalHandler {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_completions()
            .enable_logging()
            .build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new(
                format!("portcullis/{}", self.portal.config().name),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "A Portcullis portal: tools of several MCP servers, named <server>_<tool>.",
            )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|p| !p.is_transport_closed());
            s.push(context.peer.clone());
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let catalog = self.portal.catalog();
        let (identity, policy) = (self.identity(&context), self.portal.policy());
        let tools: Vec<_> = policy.visible_tools(&identity, &catalog).map(|t| t.tool.clone()).collect();
        let (tools, next_cursor) = page(&tools, cursor(&request), &catalog.hash)?;
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = next_cursor;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let catalog = self.portal.catalog();
        let (identity, policy) = (self.identity(&context), self.portal.policy());
        // A hidden tool gets exactly the answer of an unknown one.
        let Some(tool) = policy.authorize_call(&identity, &catalog, &request.name) else {
            if catalog.tool(&request.name).is_some() {
                AccessCounters::inc(&self.portal.counters.calls_denied);
            }
            // A stale client may call a tool of a server that is down: say so plainly (only to
            // callers who may see that server).
            if let Some(server) = catalog.server_for_name(&request.name)
                && catalog.tool(&request.name).is_none()
                && policy.server_visible(&identity, &catalog, server)
                && let Some(up) = self.portal.upstreams.get(server).await
                && let Err(reason) = up.peer()
            {
                return Err(ErrorData::internal_error(reason, None));
            }
            return Err(ErrorData::invalid_params(format!("Unknown tool: {}", short(&request.name)), None));
        };
        if let Err(limited) = self.portal.limiter.check(&identity.subject, &request.name, &policy.limits(&identity)) {
            let counter = match limited.scope {
                crate::policy::ratelimit::Scope::Portal => &self.portal.counters.rate_limited_portal,
                crate::policy::ratelimit::Scope::Tool => &self.portal.counters.rate_limited_tool,
            };
            AccessCounters::inc(counter);
            return Err(ErrorData::new(
                rmcp::model::ErrorCode(RATE_LIMITED),
                limited.to_string(),
                Some(serde_json::json!({"retryAfterMs": limited.retry_after.as_millis() as u64})),
            ));
        }
        AccessCounters::inc(&self.portal.counters.calls_allowed);
        let (meta, _route) = self.upstream_meta(&context);
        let mut params = CallToolRequestParams::new(tool.upstream_name.clone());
        params.arguments = request.arguments;
        params.meta = meta;
        params.input_responses = request.input_responses;
        params.request_state = request.request_state;
        let server = tool.server.clone();
        self.forward(&server, &context.ct, async move |peer| peer.call_tool_once(params).await)
            .await
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let catalog = self.portal.catalog();
        let visible = self.visible_servers(&context, &catalog);
        let prompts: Vec<_> = catalog
            .prompts
            .iter()
            .filter(|p| visible.contains(&p.server))
            .map(|p| p.prompt.clone())
            .collect();
        let (prompts, next_cursor) = page(&prompts, cursor(&request), &catalog.hash)?;
        let mut result = ListPromptsResult::with_all_items(prompts);
        result.next_cursor = next_cursor;
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let catalog = self.portal.catalog();
        let visible = self.visible_servers(&context, &catalog);
        let Some(prompt) = catalog.prompt(&request.name).filter(|p| visible.contains(&p.server)) else {
            return Err(ErrorData::invalid_params(format!("Unknown prompt: {}", short(&request.name)), None));
        };
        let (meta, _route) = self.upstream_meta(&context);
        let mut params = GetPromptRequestParams::new(prompt.upstream_name.clone());
        params.arguments = request.arguments;
        params.meta = meta;
        params.input_responses = request.input_responses;
        let server = prompt.server.clone();
        self.forward(&server, &context.ct, async move |peer| peer.get_prompt_once(params).await)
            .await
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let catalog = self.portal.catalog();
        let visible = self.visible_servers(&context, &catalog);
        let resources: Vec<_> = catalog
            .resources
            .iter()
            .filter(|r| catalog.route_uri(&r.uri).is_some_and(|(s, _)| visible.contains(&s)))
            .cloned()
            .collect();
        let (resources, next_cursor) = page(&resources, cursor(&request), &catalog.hash)?;
        let mut result = ListResourcesResult::with_all_items(resources);
        result.next_cursor = next_cursor;
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let catalog = self.portal.catalog();
        let visible = self.visible_servers(&context, &catalog);
        let templates: Vec<_> = catalog
            .templates
            .iter()
            .filter(|t| catalog.route_uri(&t.uri_template).is_some_and(|(s, _)| visible.contains(&s)))
            .cloned()
            .collect();
        let (templates, next_cursor) = page(&templates, cursor(&request), &catalog.hash)?;
        let mut result = ListResourceTemplatesResult::with_all_items(templates);
        result.next_cursor = next_cursor;
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let catalog = self.portal.catalog();
        let visible = self.visible_servers(&context, &catalog);
        let Some((server, uri)) = catalog.route_uri(&request.uri).filter(|(s, _)| visible.contains(s)) else {
            return Err(ErrorData::resource_not_found(
                format!("Unknown resource: {}", short(&request.uri)),
                None,
            ));
        };
        let (meta, _route) = self.upstream_meta(&context);
        let mut params = ReadResourceRequestParams::new(uri);
        params.meta = meta;
        params.input_responses = request.input_responses;
        let response = self
            .forward(&server, &context.ct, async move |peer| peer.read_resource_once(params).await)
            .await?;
        Ok(match response {
            ReadResourceResponse::Complete(mut r) => {
                for c in &mut r.contents {
                    match c {
                        ResourceContents::TextResourceContents { uri, .. }
                        | ResourceContents::BlobResourceContents { uri, .. } => {
                            *uri = catalog.portal_uri(&server, uri);
                        }
                        _ => {}
                    }
                }
                ReadResourceResponse::Complete(r)
            }
            other => other,
        })
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let catalog = self.portal.catalog();
        let visible = self.visible_servers(&context, &catalog);
        let mut params = request.clone();
        params.meta = None;
        let server = match &request.r#ref {
            Reference::Prompt(p) => {
                let prompt = catalog
                    .prompt(&p.name)
                    .filter(|p| visible.contains(&p.server))
                    .ok_or_else(|| ErrorData::invalid_params("Unknown prompt", None))?;
                if let Reference::Prompt(q) = &mut params.r#ref {
                    q.name = prompt.upstream_name.clone();
                }
                prompt.server.clone()
            }
            Reference::Resource(r) => {
                let (server, uri) = catalog
                    .route_uri(&r.uri)
                    .filter(|(s, _)| visible.contains(s))
                    .ok_or_else(|| ErrorData::invalid_params("Unknown resource", None))?;
                if let Reference::Resource(q) = &mut params.r#ref {
                    q.uri = uri;
                }
                server
            }
            _ => return Err(ErrorData::invalid_params("unsupported completion reference", None)),
        };
        let supports = self
            .upstream(&server)
            .await?
            .0
            .peer_info()
            .is_some_and(|i| i.capabilities.completions.is_some());
        if !supports {
            return Ok(CompleteResult::default());
        }
        self.forward(&server, &context.ct, async move |peer| peer.complete(params).await)
            .await
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // The portal keeps its own log level; upstream logs go to the portal's log, not to
        // clients (they may reveal other users' activity).
        Ok(())
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::default();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.prompts_list_changed = requested.prompts_list_changed;
        accepted.resources_list_changed = requested.resources_list_changed;
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.portal.catalog_changes();
        changes.borrow_and_update();
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                r = changes.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    let sink = context.sink();
                    let accepted = context.accepted();
                    let mut failed = false;
                    if accepted.tools_list_changed == Some(true) {
                        failed |= sink.notify_tool_list_changed().await.is_err();
                    }
                    if accepted.prompts_list_changed == Some(true) {
                        failed |= sink.notify_prompt_list_changed().await.is_err();
                    }
                    if accepted.resources_list_changed == Some(true) {
                        failed |= sink.notify_resource_list_changed().await.is_err();
                    }
                    if failed {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// JSON-RPC error code of a call refused by a rate limit.
pub const RATE_LIMITED: i32 = -32029;

impl PortalHandler {
    /// McpServers whose prompts and resources the caller may see (see [`crate::policy`]).
    fn visible_servers(
        &self,
        ctx: &RequestContext<RoleServer>,
        catalog: &super::Catalog,
    ) -> std::collections::BTreeSet<String> {
        let servers = self.portal.config().servers.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        self.portal.policy().visible_servers(&self.identity(ctx), catalog, servers)
    }
}

fn cursor(request: &Option<PaginatedRequestParams>) -> Option<&str> {
    request.as_ref().and_then(|r| r.cursor.as_deref())
}

/// Sends `list_changed` notifications to every live legacy session when the catalog changes.
async fn notify_sessions(handler: PortalHandler) {
    let mut changes = handler.portal.catalog_changes();
    loop {
        tokio::select! {
            _ = handler.portal.shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        let peers: Vec<_> = match handler.sessions.lock() {
            Ok(mut s) => {
                s.retain(|p| !p.is_transport_closed());
                s.clone()
            }
            Err(_) => continue,
        };
        for peer in peers {
            let _ = peer.notify_tool_list_changed().await;
            let _ = peer.notify_prompt_list_changed().await;
            let _ = peer.notify_resource_list_changed().await;
        }
    }
}
