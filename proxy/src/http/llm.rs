//! The LLM gateway's endpoints on the portal's listener, authenticated exactly like `/mcp`
//! ([`super::auth::authenticate_request`]: the same bearer token, audience and groups), and
//! answered in the caller's API format, refusals included:
//!
//! - `POST /llm/openai/v1/chat/completions`, `POST /llm/openai/v1/responses` (streamed or not),
//!   `GET /llm/openai/v1/models` (OpenAI SDKs:
//!   `base_url=<portal>/llm/openai/v1`, the access token as the API key);
//! - `POST /llm/anthropic/v1/messages`, `GET /llm/anthropic/v1/models` (Anthropic SDKs:
//!   `base_url=<portal>/llm/anthropic`, the access token as `auth_token`).
//!
//! The caller's `Authorization` header ends at authentication; provider requests are built
//! from the target's configuration alone ([`crate::llm::provider`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{any, get, post};
use http::header;

use crate::llm::{self, Dialect};
use crate::model::Identity;
use crate::portal::Portal;

/// The `/llm/` routes (state: the portal). A request with an `Origin` header not among
/// `origins` (the portal's allowed origins, as `/mcp` checks them; `scheme://host:*` allows any
/// port) gets 403 before anything else.
pub fn routes(origins: Arc<Vec<String>>) -> Router<Arc<Portal>> {
    Router::new()
        .route(
            "/llm/openai/v1/chat/completions",
            post(|State(p): State<Arc<Portal>>, req: Request| {
                serve(p, Dialect::OpenAi, req, Kind::Call)
            }),
        )
        .route(
            "/llm/openai/v1/responses",
            post(|State(p): State<Arc<Portal>>, req: Request| {
                serve(p, Dialect::OpenAi, req, Kind::Responses)
            }),
        )
        .route(
            "/llm/openai/v1/models",
            get(|State(p): State<Arc<Portal>>, req: Request| {
                serve(p, Dialect::OpenAi, req, Kind::Models)
            }),
        )
        .route(
            "/llm/anthropic/v1/messages",
            post(|State(p): State<Arc<Portal>>, req: Request| {
                serve(p, Dialect::Anthropic, req, Kind::Call)
            }),
        )
        .route(
            "/llm/anthropic/v1/models",
            get(|State(p): State<Arc<Portal>>, req: Request| {
                serve(p, Dialect::Anthropic, req, Kind::Models)
            }),
        )
        .route(
            "/llm/openai/{*rest}",
            any(|| async { llm::error(Dialect::OpenAi, 404, "no such endpoint") }),
        )
        .route(
            "/llm/anthropic/{*rest}",
            any(|| async { llm::error(Dialect::Anthropic, 404, "no such endpoint") }),
        )
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let origins = origins.clone();
                async move {
                    let origin = req
                        .headers()
                        .get(header::ORIGIN)
                        .map(|o| o.to_str().unwrap_or(""));
                    if let Some(o) = origin
                        && !origin_allowed(o, &origins)
                    {
                        let dialect = if req.uri().path().starts_with("/llm/anthropic/") {
                            Dialect::Anthropic
                        } else {
                            Dialect::OpenAi
                        };
                        return llm::error(dialect, 403, "this Origin may not call the portal");
                    }
                    next.run(req).await
                }
            },
        ))
}

/// Whether a browser `origin` is allowed: equal to an entry (trailing `/` ignored), or matching
/// an entry `scheme://host:*` with any port.
fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    allowed.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(':') => origin
            .strip_prefix(prefix)
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())),
        _ => a.trim_end_matches('/') == origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_any_port_of_a_wildcard_entry() {
        let allowed = [
            "https://app.example.com".to_owned(),
            "http://127.0.0.1:*".to_owned(),
        ];
        assert!(origin_allowed("https://app.example.com", &allowed));
        assert!(origin_allowed("http://127.0.0.1:5173", &allowed));
        assert!(!origin_allowed("http://127.0.0.1:", &allowed));
        assert!(!origin_allowed("http://127.0.0.1:80.evil.com", &allowed));
        assert!(!origin_allowed(
            "https://app.example.com.evil.com",
            &allowed
        ));
        assert!(!origin_allowed("null", &allowed));
    }
}

/// What an endpoint does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Chat Completions or Messages.
    Call,
    /// OpenAI Responses (streamed or not).
    Responses,
    /// The caller's aliases.
    Models,
}

async fn serve(portal: Arc<Portal>, dialect: Dialect, mut req: Request, kind: Kind) -> Response {
    if let Err(refusal) = super::auth::authenticate_request(&portal, &mut req).await {
        return in_dialect(dialect, refusal).await;
    }
    let identity = req
        .extensions()
        .get::<Identity>()
        .cloned()
        .unwrap_or_else(Identity::nobody);
    if kind == Kind::Models {
        return portal.llm.models(dialect, &identity);
    }
    let cfg = portal.config();
    let limit = cfg.max_body_bytes;
    let timeout = super::Limits::of(&cfg.spec).body_read_timeout;
    drop(cfg);
    let body = match super::validate::read_body(req.into_body(), limit, timeout).await {
        Ok(body) => body,
        Err(super::validate::BodyError::TooLarge) => {
            return llm::error(
                dialect,
                413,
                &format!(
                    "the request body is larger than {limit} bytes (spec.limits.maxBodyBytes)"
                ),
            );
        }
        Err(super::validate::BodyError::TimedOut) => {
            let mut resp = llm::error(
                dialect,
                408,
                &format!(
                    "the request body did not arrive within {} s (spec.limits.bodyReadTimeoutSeconds)",
                    timeout.as_secs()
                ),
            );
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            return resp;
        }
    };
    if kind == Kind::Responses {
        return portal.llm.responses(&identity, &body).await;
    }
    portal.llm.call(dialect, &identity, &body).await
}

/// An authentication refusal (401/403 with `WWW-Authenticate`, 503) with its body in the
/// caller's API format; the challenge and `Retry-After` headers are kept.
async fn in_dialect(dialect: Dialect, refusal: Response) -> Response {
    let (parts, body) = refusal.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("error_description")
                .and_then(|d| d.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let mut resp = llm::error(dialect, parts.status.as_u16(), &message);
    for h in [header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&h) {
            resp.headers_mut().insert(h, v.clone());
        }
    }
    resp
}
