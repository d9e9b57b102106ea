//! HTTP: the portal router, the admin router, and serving them.

pub mod admin;
pub mod auth;
pub mod client;
pub mod fast;
pub mod llm;
pub mod serve;
pub mod service;
pub mod session;
pub mod session_limit;
pub mod tls;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::error::{Error, Result};
use crate::portal::{Portal, PortalHandler};
pub use admin::app as admin_app;
use session::SessionSeal;
use session_limit::LimitedSessions;

/// The limits of `/mcp` read from `spec.limits` when the router is built (at start), with
/// their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `bodyReadTimeoutSeconds`: how long reading a request's body may take (then 408).
    pub body_read_timeout: Duration,
    /// `maxSessions`: legacy sessions in memory ([`session_limit`]).
    pub max_sessions: usize,
    /// `sessionIdleTimeoutSeconds`: how long a legacy session stays in memory unused.
    pub session_idle_timeout: Duration,
}

impl Limits {
    /// The limits `spec` sets, defaults for the others.
    pub fn of(spec: &crds::McpPortalSpec) -> Limits {
        use crds::portal as d;
        let l = spec.limits.as_ref();
        let secs =
            |v: Option<u32>, default: u32| Duration::from_secs(u64::from(v.unwrap_or(default)));
        Limits {
            body_read_timeout: secs(
                l.and_then(|l| l.body_read_timeout_seconds),
                d::DEFAULT_BODY_READ_TIMEOUT_SECONDS,
            ),
            max_sessions: l
                .and_then(|l| l.max_sessions)
                .unwrap_or(d::DEFAULT_MAX_SESSIONS) as usize,
            session_idle_timeout: secs(
                l.and_then(|l| l.session_idle_timeout_seconds),
                d::DEFAULT_SESSION_IDLE_TIMEOUT_SECONDS,
            ),
        }
    }
}

/// Options of the portal router that do not come from the manifests.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Whether the listener is on loopback only (then `Host` is checked against loopback names,
    /// which stops DNS-rebinding attacks on a laptop).
    pub loopback: bool,
}

/// The portal router: `/mcp` (both MCP eras), the LLM gateway under `/llm/` ([`llm`]),
/// `/.well-known/jwks.json`, `/healthz`, `/readyz`.
///
/// Layers on `/mcp`, outermost first: authentication ([`auth`]: bearer JWT -> `model::Identity`,
/// which also names the session's owner; 401/403 with `WWW-Authenticate`; RFC 9728 metadata at
/// `/.well-known/oauth-protected-resource[/mcp]`), body validation (size, JSON, JSON-RPC shape),
/// which hands plain stateless `tools/call` requests to the fast path (`fast`), session
/// sealing (opens and seals legacy session ids), then rmcp's Streamable HTTP service, which checks `Origin` (403), `Host`, the body size
/// (413) and the protocol headers before the handler sees a request.
///
/// The hot request (`POST /mcp` announced as `tools/call`) takes the same layers called
/// directly rather than through the router ([`service`]).
pub fn app(portal: Arc<Portal>, options: &ServeOptions) -> service::PortalService {
    let cfg = portal.config();
    let seal = SessionSeal::new(cfg.session_key.as_deref());
    let handler = PortalHandler::new(portal.clone());
    let mut origins = cfg.spec.allowed_origins.clone();
    if let Some(public) = &cfg.spec.public_url {
        origins.push(public.trim_end_matches('/').to_owned());
    }
    if options.loopback {
        // On a laptop, pages served from loopback may call the portal; DNS rebinding is still
        // stopped by the Host check, which stays on for loopback listeners.
        origins.extend(
            ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"].map(String::from),
        );
    }
    let mut sconfig = StreamableHttpServerConfig::default()
        .with_json_response(true)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_max_request_body_bytes(cfg.max_body_bytes)
        .with_cancellation_token(portal.shutdown.child_token())
        .with_allowed_origins(origins.clone())
        .enforce_origin_validation();
    if !options.loopback {
        // In a cluster the Host is the Service or Ingress name; Origin validation still applies.
        sconfig = sconfig.disable_allowed_hosts();
    }
    sconfig.session_store = Some(seal.store());
    let limits = Limits::of(&cfg.spec);
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(limits.session_idle_timeout);
    let sessions = Arc::new(LimitedSessions::new(
        sessions,
        limits.max_sessions,
        limits.session_idle_timeout,
        portal.metrics.sessions.clone(),
    ));
    session_limit::spawn_idle_sweeper(&sessions, portal.shutdown.child_token());
    let mcp = SharedMcp(Arc::new(StreamableHttpService::new(
        move || Ok(handler.clone()),
        sessions,
        sconfig,
    )));
    let below =
        Router::new()
            .route_service("/mcp", mcp)
            .layer(axum::middleware::from_fn_with_state(
                seal.clone(),
                session::middleware,
            ));
    let validation = validate::Validate {
        max_bytes: cfg.max_body_bytes,
        body_timeout: limits.body_read_timeout,
        fast: fast::FastPath::new(portal.clone(), options.loopback, seal),
    };
    let mcp = below
        .clone()
        // Body checks; answers plain stateless 2026-07-28 `tools/call` requests itself
        // (`fast`), without rmcp's machinery.
        .layer(axum::middleware::from_fn_with_state(
            validation.clone(),
            validate::middleware,
        ))
        // Outermost (added last, runs first): authentication, before any body is read.
        .layer(axum::middleware::from_fn_with_state(
            portal.clone(),
            auth::middleware,
        ));
    let router = Router::new()
        .merge(mcp)
        .route("/.well-known/oauth-protected-resource", get(auth::metadata))
        .route(
            "/.well-known/oauth-protected-resource/{*resource}",
            get(auth::metadata),
        )
        .merge(llm::routes(std::sync::Arc::new(origins)))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(portal.clone());
    let below = below.with_state(portal.clone());
    service::PortalService::new(router, below, portal, validation)
}

/// rmcp's Streamable HTTP service behind an `Arc`. Axum clones a route's service for every
/// request, and rmcp's service clones itself once more to call; each clone copies its whole
/// configuration (the allowed hosts and origins, strings on the heap). Here a clone is one
/// reference count, and the request goes to rmcp's `handle` unchanged.
#[derive(Clone)]
struct SharedMcp(Arc<StreamableHttpService<PortalHandler, LimitedSessions>>);

impl tower::Service<axum::extract::Request> for SharedMcp {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { Ok(service.handle(req).await.map(axum::body::Body::new)) })
    }
}

/// The public key that signs user identities for upstreams (`spec.identitySigningKeyFrom`),
/// as a JWK Set. 404 when the portal signs none.
async fn jwks(State(portal): State<Arc<Portal>>) -> axum::response::Response {
    match portal.signer() {
        Some(signer) => (
            [(http::header::CACHE_CONTROL, "public, max-age=300")],
            axum::Json(signer.jwks()),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "this portal signs no identities (spec.identitySigningKeyFrom is not set)",
        )
            .into_response(),
    }
}

async fn readyz(State(portal): State<Arc<Portal>>) -> impl IntoResponse {
    let status = portal.upstreams.status().await;
    let connecting = status
        .iter()
        .filter(|s| s.state == crate::upstream::Health::Connecting)
        .count();
    if connecting == 0 {
        (StatusCode::OK, "ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{connecting} upstream(s) still connecting"),
        )
    }
}

/// Binds `addr` (TCP_NODELAY on every accepted socket) and returns the listener and the
/// actual address.
pub async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_owned(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Listen {
        addr: addr.to_owned(),
        source,
    })?;
    Ok((listener, local))
}

/// Serves `app` (the portal's [`app`] or the [`admin_app`] router) until `shutdown` is
/// cancelled, then drains in-flight requests; with the default [`serve::ServeLimits`].
pub async fn serve<S>(
    listener: tokio::net::TcpListener,
    app: S,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    serve::serve_with(listener, app, shutdown, serve::ServeLimits::default()).await
}
