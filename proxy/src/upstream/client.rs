//! The MCP client side the portal presents to each upstream.
#![allow(deprecated)] // logging notifications (SEP-2577) are still sent by 2025-era servers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequestParams, ElicitResult, ElicitationCapability, FormElicitationCapability,
    Implementation, LoggingMessageNotificationParam, NotificationMetaObject, NumberOrString,
    ProgressNotification, ProgressNotificationParam, ProgressToken,
    ResourceUpdatedNotificationParam, SamplingCapability, ServerNotification,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ClientHandler, ErrorData, RoleClient};

use super::Upstream;
use super::relay::{Associations, Relay, Route, Sink};

/// Routes upstream progress notifications back to the downstream request that asked for them.
///
/// rmcp's client gives every upstream request a fresh progress token, counted per connection;
/// a route maps it (with the upstream's name: two upstreams hand out the same tokens) back to
/// the downstream request's own token and peer, and is removed when the request ends.
#[derive(Default)]
pub struct ProgressRouter {
    routes: Mutex<HashMap<String, (ProgressToken, Sink)>>,
}

/// Removes a progress route when the request it belongs to ends.
pub struct ProgressRoute {
    router: Arc<ProgressRouter>,
    key: String,
}

fn token_key(server: &str, t: &ProgressToken) -> String {
    match &t.0 {
        NumberOrString::String(s) => format!("{server}\0s:{s}"),
        NumberOrString::Number(n) => format!("{server}\0n:{n}"),
    }
}

impl Drop for ProgressRoute {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.router.routes.lock() {
            routes.remove(&self.key);
        }
    }
}

impl ProgressRouter {
    /// Routes progress for the upstream request sent to `server` with `upstream` to the
    /// downstream request that asked for progress with `downstream`.
    pub fn register(
        self: &Arc<Self>,
        server: &str,
        upstream: ProgressToken,
        downstream: ProgressToken,
        sink: Sink,
    ) -> ProgressRoute {
        let key = token_key(server, &upstream);
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(key.clone(), (downstream, sink));
        }
        ProgressRoute {
            router: self.clone(),
            key,
        }
    }

    async fn forward(&self, server: &str, mut params: ProgressNotificationParam) {
        let key = token_key(server, &params.progress_token);
        let route = self.routes.lock().ok().and_then(|r| r.get(&key).cloned());
        if let Some((token, sink)) = route {
            params.progress_token = token;
            let _ = sink
                .notify(ServerNotification::ProgressNotification(
                    ProgressNotification::new(params),
                ))
                .await;
        }
    }
}

/// The client handler of one upstream connection.
pub struct UpstreamClient {
    name: String,
    upstream: Weak<Upstream>,
    progress: Arc<ProgressRouter>,
    /// Which in-flight portal request each upstream message relates to; `None` on transports
    /// that cannot tell (stdio, legacy SSE), where nothing is relayed.
    associations: Option<Arc<Associations>>,
    relay: Option<Weak<dyn Relay>>,
}

impl UpstreamClient {
    /// A handler for the upstream `name`.
    pub fn new(name: String, upstream: Weak<Upstream>, progress: Arc<ProgressRouter>) -> Self {
        UpstreamClient {
            name,
            upstream,
            progress,
            associations: None,
            relay: None,
        }
    }

    /// Hands resource updates and associated server requests and log messages to `relay`.
    pub fn with_relay(mut self, relay: Option<Weak<dyn Relay>>) -> Self {
        self.relay = relay;
        self
    }

    /// The transport tells which portal request each message relates to: server requests and
    /// log messages are then relayed, and only then does the portal declare sampling and
    /// elicitation to the upstream.
    pub fn with_associations(mut self, associations: Arc<Associations>) -> Self {
        self.associations = Some(associations);
        self
    }

    fn refresh(&self) {
        if let Some(up) = self.upstream.upgrade() {
            up.request_refresh();
        }
    }

    /// The route of the portal request a notification arrived for (on its response stream).
    fn related(&self, context: &NotificationContext<RoleClient>) -> Option<Arc<Route>> {
        // rmcp 3.11 swaps the notification's extensions into the context before it reads the
        // `_meta` out of them, so the marker is in `context.extensions` (and `context.meta` is
        // empty); look in both, so a fixed rmcp keeps working.
        self.associations.as_ref().and_then(|a| {
            a.for_notification(&context.meta)
                .or_else(|| a.for_notification(context.extensions.get::<NotificationMetaObject>()?))
        })
    }

    fn relay(&self) -> Option<Arc<dyn Relay>> {
        self.relay.as_ref()?.upgrade()
    }

    /// The relay and the route of the portal request a server request arrived for.
    fn route_for(
        &self,
        method: &str,
        context: &RequestContext<RoleClient>,
    ) -> Result<(Arc<dyn Relay>, Arc<Route>), ErrorData> {
        let relay = self.relay().ok_or_else(|| {
            ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("{method} is not relayed by this portal"),
                None,
            )
        })?;
        let route = self
            .associations
            .as_ref()
            .and_then(|a| a.for_request(&context.extensions))
            .ok_or_else(|| {
                tracing::info!(upstream = %self.name, method, "server request not related to an in-flight portal request; refused");
                ErrorData::invalid_request(
                    format!(
                        "{method} must be sent on the response stream of the request it belongs to; \
                         the portal relays it to that request's caller only"
                    ),
                    None,
                )
            })?;
        Ok((relay, route))
    }
}

/// What the portal tells an upstream about itself: its name and version, and sampling and
/// (form) elicitation when the connection `relays` them to the caller (Streamable HTTP
/// connections of a portal; the caller's own capabilities are checked per request). The direct
/// `tools/call` path puts the same into each request's `_meta`.
pub fn client_config(relays: bool) -> ClientConfig {
    let mut caps = ClientCapabilities::default();
    if relays {
        caps.sampling = Some(SamplingCapability::default());
        caps.elicitation =
            Some(ElicitationCapability::new().with_form(FormElicitationCapability::new()));
    }
    ClientConfig::new(
        caps,
        Implementation::new("portcullis", env!("CARGO_PKG_VERSION")),
    )
}

/// An upstream's `notifications/message` goes to the portal's log (bounded).
pub(crate) fn log_message(upstream: &str, params: &LoggingMessageNotificationParam) {
    let data = params.data.to_string();
    let data: String = data.chars().take(2000).collect();
    tracing::info!(upstream = %upstream, level = ?params.level, "{data}");
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        client_config(self.associations.is_some() && self.relay.is_some())
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let (relay, route) = self.route_for("sampling/createMessage", &context)?;
        relay.sampling(route, params).await
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let (relay, route) = self.route_for("elicitation/create", &context)?;
        relay.elicitation(route, request).await
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        context: NotificationContext<RoleClient>,
    ) {
        let route = self.related(&context);
        self.progress.forward(&self.name, params).await;
        if let Some(route) = route {
            route.notification_done();
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh();
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh();
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(relay) = self.relay() {
            relay.resource_updated(&self.name, params.uri).await;
        }
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        context: NotificationContext<RoleClient>,
    ) {
        let route = self.related(&context);
        match (route, self.relay()) {
            (Some(route), Some(relay)) => {
                relay.log(route.clone(), params).await;
                route.notification_done();
            }
            (route, _) => {
                // Not related to a request the portal can name: it may be about anyone's
                // activity, so it goes to the portal's log only.
                log_message(&self.name, &params);
                if let Some(route) = route {
                    route.notification_done();
                }
            }
        }
    }
}
