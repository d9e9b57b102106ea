//! The MCP client side the portal presents to each upstream.
#![allow(deprecated)] // logging notifications (SEP-2577) are still sent by 2025-era servers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, LoggingMessageNotificationParam,
    NumberOrString, ProgressNotificationParam, ProgressToken,
};
use rmcp::service::{NotificationContext, Peer};
use rmcp::{ClientHandler, RoleClient, RoleServer};

use super::Upstream;

/// Routes upstream progress notifications back to the downstream request that asked for them.
///
/// rmcp's client gives every upstream request a fresh progress token; a route maps it back to
/// the downstream request's own token and peer, and is removed when the request ends.
#[derive(Default)]
pub struct ProgressRouter {
    routes: Mutex<HashMap<String, (ProgressToken, Peer<RoleServer>)>>,
}

/// Removes a progress route when the request it belongs to ends.
pub struct ProgressRoute {
    router: Arc<ProgressRouter>,
    key: String,
}

fn token_key(t: &ProgressToken) -> String {
    match &t.0 {
        NumberOrString::String(s) => format!("s:{s}"),
        NumberOrString::Number(n) => format!("n:{n}"),
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
    /// Routes progress for the upstream request sent with `upstream` to the downstream
    /// request that asked for progress with `downstream`.
    pub fn register(
        self: &Arc<Self>,
        upstream: ProgressToken,
        downstream: ProgressToken,
        peer: Peer<RoleServer>,
    ) -> ProgressRoute {
        let key = token_key(&upstream);
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(key.clone(), (downstream, peer));
        }
        ProgressRoute {
            router: self.clone(),
            key,
        }
    }

    async fn forward(&self, mut params: ProgressNotificationParam) {
        let key = token_key(&params.progress_token);
        let route = self.routes.lock().ok().and_then(|r| r.get(&key).cloned());
        if let Some((token, peer)) = route {
            params.progress_token = token;
            let _ = peer.notify_progress(params).await;
        }
    }
}

/// The client handler of one upstream connection.
pub struct UpstreamClient {
    name: String,
    upstream: Weak<Upstream>,
    progress: Arc<ProgressRouter>,
}

impl UpstreamClient {
    /// A handler for the upstream `name`.
    pub fn new(name: String, upstream: Weak<Upstream>, progress: Arc<ProgressRouter>) -> Self {
        UpstreamClient {
            name,
            upstream,
            progress,
        }
    }

    fn refresh(&self) {
        if let Some(up) = self.upstream.upgrade() {
            up.request_refresh();
        }
    }
}

/// What the portal tells every upstream about itself: its name and version, and no client
/// capabilities (no sampling, elicitation or roots to offer). The direct `tools/call` path puts
/// the same into each request's `_meta`.
pub fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
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
        client_config()
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.forward(params).await;
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

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        log_message(&self.name, &params);
    }
}
