//! The admin router (serve it on an internal port): `/admin/access` (what a subject could
//! call), `/admin/upstreams`, `/admin/tools` (pinning verdicts), `/metrics`, `/healthz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::model::Identity;
use crate::portal::Portal;

/// The admin router.
pub fn app(portal: Arc<Portal>) -> Router {
    Router::new()
        .route("/admin/access", get(access))
        .route(
            "/admin/upstreams",
            get(|State(p): State<Arc<Portal>>| async move { axum::Json(p.upstreams.status().await) }),
        )
        .route(
            "/admin/tools",
            get(|State(p): State<Arc<Portal>>| async move {
                axum::Json((*p.tool_verdicts()).clone())
            }),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(portal)
}

/// `GET /admin/access?subject=..&group=..&claim=name=value`: the portal's effective access
/// report ([`crate::policy::access`]) for that identity.
async fn access(State(portal): State<Arc<Portal>>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let identity = identity_from_query(query.as_deref().unwrap_or(""));
    axum::Json(portal.access(&identity))
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format.
async fn metrics(State(portal): State<Arc<Portal>>, headers: http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            portal.metrics.encode(),
        )
    } else {
        (
            [(
                http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            portal.metrics.encode_text(),
        )
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || {
            std::str::from_utf8(b.get(i + 1..i + 3)?)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match hex() {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds the identity of a query: `subject` (absent: anonymous), `group` (repeatable, or
/// comma-separated), `claim` (repeatable, `name=value`; repeated names make an array).
pub fn identity_from_query(query: &str) -> Identity {
    let mut subject = None;
    let mut groups = Vec::new();
    let mut claims: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()).take(256) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        match k.as_str() {
            "subject" | "sub" | "user" => subject = Some(v),
            "group" | "groups" => {
                groups.extend(v.split(',').filter(|g| !g.is_empty()).map(str::to_owned))
            }
            "claim" => {
                if let Some((n, val)) = v.split_once('=').or_else(|| v.split_once(':')) {
                    claims.push((n.to_owned(), val.to_owned()));
                }
            }
            _ => {}
        }
    }
    Identity::from_parts(subject, groups, claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdentityKind;

    #[test]
    fn query_parameters_make_an_identity() {
        let id = identity_from_query(
            "subject=alice%40example.com&group=finance&group=eng,ops&claim=dept%3Dsales&claim=dept=hr",
        );
        assert_eq!(id.subject, "alice@example.com");
        assert_eq!(id.groups, ["finance", "eng", "ops"]);
        assert!(id.claim_has("dept", "sales") && id.claim_has("dept", "hr"));
        assert_eq!(identity_from_query("group=x").kind, IdentityKind::Anonymous);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a+b%zz"), "a b%zz");
    }
}
