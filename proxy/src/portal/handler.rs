//! The MCP server handler of the portal: what each client session talks to.
//!
//! rmcp's Streamable HTTP service does the wire protocol of both eras (sessions, SSE, header
//! checks, `server/discover`); this handler answers the methods by aggregating the upstreams.
#![allow(deprecated)] // logging/setLevel is deprecated by SEP-2577 but 2025 clients still send it.

use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, Reference, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::context::{CallContext, identity_of, session_id};
use super::pagination::page;
use super::pipeline::short;
use super::{Portal, code_tools};

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
            .enable_resources_subscribe()
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
        if code_tools::requested(&self.portal, &context) {
            // Two small tools in place of the whole list; no pages needed.
            return Ok(ListToolsResult::with_all_items(
                crate::codemode::tool_definitions(),
            ));
        }
        let catalog = self.portal.catalog();
        let identity = identity_of(&context);
        // Clone each visible definition once (the page clones only its slice again).
        let policy = self.portal.policy();
        let tools: Vec<_> = policy
            .visible_tools(&identity, &catalog)
            .map(|t| t.tool.clone())
            .collect();
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
        let ctx = CallContext::from_request(&context);
        if code_tools::is_code_mode_tool(&request.name)
            && code_tools::requested(&self.portal, &context)
        {
            let visible = self
                .portal
                .visible_tools(&ctx.identity, &self.portal.catalog());
            return code_tools::call(
                &self.portal,
                &request.name,
                request.arguments,
                visible,
                &ctx,
            )
            .await;
        }
        let mut request = request;
        let arguments = request.arguments.take();
        self.portal
            .call_tool(&request.name, arguments, Some(&request), &ctx)
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
        let Some(prompt) = catalog
            .prompt(&request.name)
            .filter(|p| visible.contains(&p.server))
        else {
            return Err(ErrorData::invalid_params(
                format!("Unknown prompt: {}", short(&request.name)),
                None,
            ));
        };
        let ctx = CallContext::from_request(&context);
        self.portal.get_prompt(prompt, request, &ctx).await
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
            .filter(|r| {
                catalog
                    .route_uri(&r.uri)
                    .is_some_and(|(s, _)| visible.contains(&s))
            })
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
            .filter(|t| {
                catalog
                    .route_uri(&t.uri_template)
                    .is_some_and(|(s, _)| visible.contains(&s))
            })
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
        let (catalog, server, uri) = self.visible_resource(&request.uri, &context)?;
        let ctx = CallContext::from_request(&context);
        self.portal
            .read_resource(&catalog, server, uri, request, &ctx)
            .await
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
            _ => {
                return Err(ErrorData::invalid_params(
                    "unsupported completion reference",
                    None,
                ));
            }
        };
        if !self.portal.supports_completions(&server).await? {
            return Ok(CompleteResult::default());
        }
        self.portal
            .forward(&server, &context.ct, async move |peer| {
                peer.complete(params).await
            })
            .await
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Upstream logs reach a client only when they relate to one of its own requests
        // (`crate::upstream::relay`); this level filters those. Logs an upstream sends outside
        // any request stay in the portal's log: they may reveal other users' activity.
        if let Some(session) = session_id(&context) {
            self.portal.sessions.set_level(
                &session,
                &context.peer,
                &identity_of(&context),
                request.level,
            )?;
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Same visibility as resources/read.
        let (_, server, uri) = self.visible_resource(&request.uri, &context)?;
        let Some(session) = session_id(&context) else {
            return Err(ErrorData::invalid_request(
                "resources/subscribe needs a session (protocol 2025-11-25 or earlier); \
                 2026-07-28 clients use subscriptions/listen",
                None,
            ));
        };
        self.portal
            .sessions
            .subscribe(
                &self.portal,
                &session,
                &context.peer,
                &identity_of(&context),
                server,
                uri,
                request.uri,
                &context.ct,
            )
            .await
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let (_, server, uri) = self.visible_resource(&request.uri, &context)?;
        // Only the session's own subscription goes; unsubscribing from something never
        // subscribed to is a no-op, as upstream servers treat it.
        if let Some(session) = session_id(&context) {
            self.portal
                .sessions
                .unsubscribe(&self.portal, &session, server, uri)
                .await;
        }
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
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

impl PortalHandler {
    /// McpServers whose prompts and resources the caller may see (see [`crate::policy`]).
    /// A portal resource URI the caller may use: the catalog, the owning server and the
    /// upstream URI. A resource of a server the caller cannot see is unknown, exactly like one
    /// that does not exist.
    fn visible_resource(
        &self,
        portal_uri: &str,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<(Arc<crate::catalog::Catalog>, String, String), ErrorData> {
        let catalog = self.portal.catalog();
        let visible = self.visible_servers(ctx, &catalog);
        let Some((server, uri)) = catalog
            .route_uri(portal_uri)
            .filter(|(s, _)| visible.contains(s))
        else {
            return Err(ErrorData::resource_not_found(
                format!("Unknown resource: {}", short(portal_uri)),
                None,
            ));
        };
        Ok((catalog, server, uri))
    }

    fn visible_servers(
        &self,
        ctx: &RequestContext<RoleServer>,
        catalog: &crate::catalog::Catalog,
    ) -> std::collections::BTreeSet<String> {
        let servers = self
            .portal
            .config()
            .servers
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>();
        self.portal
            .policy()
            .visible_servers(&identity_of(ctx), catalog, servers)
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
