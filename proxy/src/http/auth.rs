//! Authentication at the HTTP edge: the portal as an OAuth 2.1 protected resource (RFC 9728).
//!
//! - [`middleware`] (the outermost layer on `/mcp`) turns a bearer JWT into an [`Identity`]
//!   (through [`crate::auth::Authenticator`]) and inserts it into the request extensions. No
//!   token: 401 with `WWW-Authenticate: Bearer resource_metadata="…", scope="…"`. Invalid token:
//!   401 `error="invalid_token"`. Missing scope: 403 `error="insufficient_scope"` (step-up).
//! - [`metadata`] serves `/.well-known/oauth-protected-resource` (and the path-suffixed form).
//!
//! The resource URI is `<spec.publicUrl>/mcp`, or `http://<Host>/mcp` when no public URL is
//! configured (local use; set `publicUrl` behind an ingress).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::auth::AuthError;
use crate::config::PortalConfig;
use crate::model::Identity;
use crate::policy::conditions::{Outcome, Unmet};
use crate::portal::Portal;

/// The answer to a request that fails the portal's `spec.access` conditions, audited with the
/// selector that decided (never the token or the certificate). An `authMethod` that is not met
/// is an RFC 9470 step-up: 401 `insufficient_user_authentication` with `acr_values` (when the
/// selector names acceptable `acr` values) so that the client can sign in again more strongly.
/// Anything else is a plain 403 naming what is missing (the network, the device, the group):
/// signing in again would not help, so no bearer error code invites it.
fn refuse_access(
    portal: &Portal,
    cfg: &PortalConfig,
    req: &Request,
    identity: &Identity,
    unmet: &Unmet,
) -> Response {
    portal.audit(crate::audit::Event {
        portal: cfg.name.clone(),
        subject: identity.subject.clone(),
        method: req.method().to_string(),
        decision: crate::audit::Outcome::Deny,
        reason: Some(format!("portal access: {} not met", unmet.selector)),
        ..Default::default()
    });
    tracing::info!(selector = %unmet.selector, "portal access denied");
    let description = format!(
        "access to this portal requires {}",
        describe_unmet(&unmet.selector)
    );
    match &unmet.step_up {
        Some(step) => {
            let mut resp = challenge(
                StatusCode::UNAUTHORIZED,
                cfg,
                req.headers(),
                Some(("insufficient_user_authentication", &description)),
            );
            let mut extra = Vec::new();
            if !step.acr_values.is_empty() {
                extra.push(format!(
                    "acr_values=\"{}\"",
                    sanitize_desc(&step.acr_values.join(" "))
                ));
            }
            if let Some(v) = resp.headers().get(header::WWW_AUTHENTICATE)
                && let Ok(v) = v.to_str()
                && !extra.is_empty()
                && let Ok(h) = HeaderValue::from_str(&format!("{v}, {}", extra.join(", ")))
            {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, h);
            }
            resp
        }
        None => {
            let body = serde_json::json!({
                "error": "access_denied",
                "error_description": description,
                "selector": unmet.selector,
            });
            (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
        }
    }
}

/// What a failed selector asks for, in words a user can act on.
fn describe_unmet(selector: &str) -> String {
    let kind = selector.rsplit('.').next().unwrap_or(selector);
    let what = match kind {
        "authMethod" => "a stronger sign-in (multi-factor authentication or a higher acr)",
        "sourceCidrs" => "a connection from an allowed network",
        "clientCertificate" => "a device certificate from an allowed issuer",
        "deviceClaim" => "a managed device",
        "emailDomain" => "an account of an allowed email domain",
        "group" | "user" | "claim" => "an account the portal admits",
        _ if selector.starts_with("include") || selector.starts_with("subjects") => {
            "an account, network or device the portal admits"
        }
        _ => "conditions the caller does not meet",
    };
    if selector.starts_with("exclude") {
        format!("not matching {selector}")
    } else {
        format!("{what} ({selector})")
    }
}

/// The portal's resource URI: `<publicUrl>/mcp`, else `http://<Host>/mcp`.
pub fn resource_uri(cfg: &PortalConfig, headers: &HeaderMap) -> String {
    if let Some(u) = &cfg.spec.public_url {
        return format!("{}/mcp", u.trim_end_matches('/'));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}/mcp")
}

/// The RFC 9728 metadata URL of a resource: the well-known segment inserted before its path.
pub fn metadata_url(resource: &str) -> String {
    let (scheme, rest) = resource.split_once("://").unwrap_or(("http", resource));
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    format!("{scheme}://{host}/.well-known/oauth-protected-resource{path}")
}

fn challenge(
    status: StatusCode,
    cfg: &PortalConfig,
    headers: &HeaderMap,
    error: Option<(&str, &str)>,
) -> Response {
    let resource = resource_uri(cfg, headers);
    let scopes = cfg
        .spec
        .auth
        .as_ref()
        .map(|a| a.scopes.join(" "))
        .unwrap_or_default();
    let mut value = String::from("Bearer");
    let mut params = Vec::new();
    if let Some((code, description)) = error {
        params.push(format!("error=\"{code}\""));
        params.push(format!(
            "error_description=\"{}\"",
            sanitize_desc(description)
        ));
    }
    params.push(format!("resource_metadata=\"{}\"", metadata_url(&resource)));
    if !scopes.is_empty() {
        params.push(format!("scope=\"{}\"", sanitize_desc(&scopes)));
    }
    value.push(' ');
    value.push_str(&params.join(", "));
    let body = serde_json::json!({
        "error": error.map(|e| e.0).unwrap_or("unauthorized"),
        "error_description": error.map(|e| e.1).unwrap_or("authentication required"),
    });
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn sanitize_desc(s: &str) -> String {
    s.chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
        .take(200)
        .collect()
}

fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let v = headers.get(header::AUTHORIZATION)?;
    let Ok(s) = v.to_str() else {
        return Some(Err(()));
    };
    let (scheme, token) = s.split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Some(Err(()));
    }
    let token = token.trim();
    if token.is_empty() {
        Some(Err(()))
    } else {
        Some(Ok(token))
    }
}

/// Axum middleware on `/mcp`: [`authenticate_request`], then the rest of the stack. Must run
/// before (outside) the session middleware.
pub async fn middleware(
    State(portal): State<Arc<Portal>>,
    mut req: Request,
    next: Next,
) -> Response {
    match authenticate_request(&portal, &mut req).await {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal,
    }
}

/// Authenticates `req` for `portal`: on success removes its `Authorization` header and inserts
/// its [`Identity`] (whose subject also owns the legacy session); otherwise returns the answer
/// (401/403 with `WWW-Authenticate`, or 503 when the identity provider cannot be reached).
pub async fn authenticate_request(portal: &Portal, req: &mut Request) -> Result<(), Response> {
    let cfg = portal.config();
    let public = cfg.spec.public == Some(true);
    let presented = bearer(req.headers());
    let identity = match (&cfg.spec.auth, presented) {
        (None, _) if public => Identity::anonymous(),
        (Some(_), None) if public => Identity::anonymous(),
        (None, _) => {
            // Unreachable through config::resolve (auth or public is required): fail closed.
            tracing::error!("portal has neither spec.auth nor spec.public: refusing requests");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "portal has no authentication configured",
            )
                .into_response());
        }
        (Some(_), None) => {
            portal.metrics.auth.missing_token.inc();
            return Err(challenge(
                StatusCode::UNAUTHORIZED,
                &cfg,
                req.headers(),
                None,
            ));
        }
        (Some(_), Some(Err(()))) => {
            portal.metrics.auth.invalid_token.inc();
            return Err(challenge(
                StatusCode::UNAUTHORIZED,
                &cfg,
                req.headers(),
                Some(("invalid_request", "expected Authorization: Bearer <token>")),
            ));
        }
        (Some(auth), Some(Ok(token))) => {
            let resource = resource_uri(&cfg, req.headers());
            // Boxed: token validation is the only large state here, and a request without a
            // token (a public portal) need not carry it.
            match Box::pin(portal.authenticator.authenticate(auth, &resource, token)).await {
                Ok(id) => id,
                Err(AuthError::Missing) => {
                    portal.metrics.auth.missing_token.inc();
                    return Err(challenge(
                        StatusCode::UNAUTHORIZED,
                        &cfg,
                        req.headers(),
                        None,
                    ));
                }
                Err(AuthError::Invalid(why)) => {
                    portal.metrics.auth.invalid_token.inc();
                    tracing::info!(reason = %why, "rejected an access token");
                    return Err(challenge(
                        StatusCode::UNAUTHORIZED,
                        &cfg,
                        req.headers(),
                        Some(("invalid_token", &why)),
                    ));
                }
                Err(AuthError::InsufficientScope) => {
                    portal.metrics.auth.insufficient_scope.inc();
                    return Err(challenge(
                        StatusCode::FORBIDDEN,
                        &cfg,
                        req.headers(),
                        Some(("insufficient_scope", "the token lacks a required scope")),
                    ));
                }
                Err(AuthError::Unavailable) => {
                    portal.metrics.auth.idp_unavailable.inc();
                    let mut r = (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "identity provider unavailable; retry later",
                    )
                        .into_response();
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return Err(r);
                }
            }
        }
    };
    // Where the request comes from (address, forwarded device certificate), then the
    // portal's `spec.access` gate: the same conditions every tool decision checks first.
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let presented = req
        .extensions()
        .get::<crate::http::tls::PresentedCertificate>()
        .map(|p| &p.0);
    let identity = if cfg.spec.access.is_some() || peer.is_some() {
        let trust = crate::http::client::ClientTrust::new(cfg.spec.access.as_ref());
        identity.with_context(trust.context(peer, req.headers(), presented))
    } else {
        identity
    };
    if let Outcome::NotMet(unmet) = portal.policy().portal_access(&identity) {
        return Err(refuse_access(portal, &cfg, req, &identity, &unmet));
    }
    portal.metrics.auth.authenticated.inc();
    // The client's credentials end here: nothing after this layer needs them, and upstream
    // requests are built from configured headers only.
    req.headers_mut().remove(header::AUTHORIZATION);
    req.extensions_mut().insert(identity);
    Ok(())
}

/// `GET /.well-known/oauth-protected-resource[/…]`: the RFC 9728 metadata (404 on a portal
/// without `auth`).
pub async fn metadata(State(portal): State<Arc<Portal>>, headers: HeaderMap) -> Response {
    let cfg = portal.config();
    let Some(auth) = &cfg.spec.auth else {
        return (
            StatusCode::NOT_FOUND,
            "this portal is public: no protected-resource metadata",
        )
            .into_response();
    };
    let mut doc = serde_json::json!({
        "resource": resource_uri(&cfg, &headers),
        "authorization_servers": [auth.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": format!("Portcullis portal {}", cfg.name),
    });
    if !auth.scopes.is_empty() {
        doc["scopes_supported"] = serde_json::json!(auth.scopes);
    }
    let mut resp = axum::Json(doc).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}
