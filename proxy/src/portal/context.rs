//! The caller of one call: who, from where, and where upstream traffic for it is relayed.

use std::sync::Arc;

use rmcp::RoleServer;
use tokio_util::sync::CancellationToken;

use crate::upstream::relay::{Downstream, Route};

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
    /// The client's request, where upstream progress, logs, sampling and elicitation for this
    /// call are relayed (`None` for Code Mode's inner calls: nothing is relayed for them).
    pub downstream: Option<Downstream>,
    /// Direct or from Code Mode.
    pub origin: Origin,
    /// Who is calling (set by the auth middleware).
    pub identity: crate::model::Identity,
    /// The authenticated subject (empty for anonymous callers of public portals).
    pub subject: String,
    /// A short, non-reversible tag of the legacy session, for audit correlation.
    pub session: Option<String>,
}

impl CallContext {
    /// The context of a request handled by the portal's MCP handler.
    pub fn from_request(ctx: &rmcp::service::RequestContext<RoleServer>) -> Self {
        let parts = ctx.extensions.get::<http::request::Parts>();
        let session = parts
            .and_then(|p| p.headers.get("mcp-session-id"))
            .map(|v| session_tag(v.as_bytes()));
        let identity = identity_of(ctx);
        let subject = identity.subject.clone();
        CallContext {
            identity,
            ct: ctx.ct.clone(),
            downstream: Some(downstream_of(ctx)),
            origin: Origin::Direct,
            subject,
            session,
        }
    }
}

impl CallContext {
    /// The route of an upstream request to `server` made for this call, shared: a `Route` is
    /// some hundreds of bytes, and every future that carries it would carry that inline.
    pub fn route(&self, server: &str) -> Option<Arc<Route>> {
        let downstream = self.downstream.clone()?;
        Some(Arc::new(Route::new(
            server,
            downstream,
            self.identity.clone(),
            self.session.clone(),
        )))
    }
}

/// The downstream request behind a request context, for relaying upstream traffic to it.
pub fn downstream_of(ctx: &rmcp::service::RequestContext<RoleServer>) -> Downstream {
    let info = ctx.peer.peer_info();
    // A legacy session declared its capabilities in `initialize`; a 2026-07-28 request carries
    // them in its `_meta`, and cannot be sent requests (input-required results replace them).
    let accepts_requests = info
        .as_ref()
        .is_some_and(|i| i.protocol_version < rmcp::model::ProtocolVersion::V_2026_07_28)
        && ctx.meta.protocol_version().is_none();
    let capabilities = match &info {
        Some(i) if accepts_requests => i.capabilities.clone(),
        _ => ctx.meta.client_capabilities().unwrap_or_default(),
    };
    Downstream {
        sink: crate::upstream::relay::Sink::Peer(ctx.peer.clone()),
        request_id: ctx.id.clone(),
        progress: ctx.meta.get_progress_token(),
        capabilities,
        accepts_requests,
        session: session_id(ctx),
    }
}

/// The legacy session id of a request, if it has one.
pub fn session_id(ctx: &rmcp::service::RequestContext<RoleServer>) -> Option<String> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Who is calling: the [`crate::model::Identity`] the auth middleware put in the HTTP request.
/// Without one (a transport that bypasses the HTTP layer): nobody, who sees nothing.
pub fn identity_of(ctx: &rmcp::service::RequestContext<RoleServer>) -> crate::model::Identity {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<crate::model::Identity>())
        .cloned()
        .unwrap_or_else(crate::model::Identity::nobody)
}

/// A short tag for a session id: enough to correlate audit events, useless to hijack it.
pub(crate) fn session_tag(id: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(id);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Origin {
    /// `direct` or `codemode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Direct => "direct",
            Origin::CodeMode => "codemode",
        }
    }
}
