//! The admin router (serve it on an internal port): `/admin/access` (what a subject could
//! call), `/admin/spend` (LLM budgets of a subject), `/admin/spend/summary` (every budget's
//! spend, subjects in aggregate), `/admin/upstreams`, `/admin/tools` (pinning verdicts),
//! `/metrics`, `/healthz`.

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
        .route("/admin/spend", get(spend))
        .route("/admin/spend/summary", get(spend_summary))
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

/// `GET /admin/access?subject=..&group=..&claim=name=value&sourceIp=..&amr=..&acr=..&clientCert=..`:
/// the portal's effective access report ([`crate::policy::access`]) for that identity in that
/// context, naming the rule and selector behind each decision (400 naming a malformed
/// parameter).
async fn access(
    State(portal): State<Arc<Portal>>,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
    match identity_from_query(query.as_deref().unwrap_or("")) {
        Ok(identity) => axum::Json(portal.access(&identity)).into_response(),
        Err(e) => (http::StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// `GET /admin/spend?subject=..&group=..`: the LLM budgets that apply to that identity (the
/// same query parameters as `/admin/access`), each with its window, limit, spend, reservations
/// in flight, what remains and when it resets (400 naming a malformed parameter, 503 when the
/// budget store cannot be reached).
async fn spend(
    State(portal): State<Arc<Portal>>,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
    let identity = match identity_from_query(query.as_deref().unwrap_or("")) {
        Ok(i) => i,
        Err(e) => return (http::StatusCode::BAD_REQUEST, e).into_response(),
    };
    match portal.llm.spend(&identity).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `GET /admin/spend/summary[?policy=NAME][&maxSubjects=N]`: every LLM budget of the portal's
/// policies (or of `policy`) with its spend ([`crds::budget::SpendSummary`]). `user` budgets
/// are summed over their subjects and never name one: the operator copies this answer into
/// McpPolicy `status.spend`, which anyone allowed to `get mcppolicies` reads. `maxSubjects`
/// (1-100000, default 10000) bounds the subjects read per `user` budget; more are reported as
/// `truncated`. 400 naming a malformed parameter, 503 when the budget store cannot be reached.
async fn spend_summary(
    State(portal): State<Arc<Portal>>,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
    use crate::llm::budget::summary::{DEFAULT_MAX_SUBJECTS, MAX_SUBJECTS};
    let mut policy = None;
    let mut max = DEFAULT_MAX_SUBJECTS;
    for (k, v, _) in query_pairs(query.as_deref().unwrap_or(""), 16) {
        match k.as_str() {
            "policy" => policy = Some(v),
            "maxSubjects" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_SUBJECTS).contains(&n) => max = n,
                _ => {
                    let e = format!("maxSubjects: {v:?} is not a number from 1 to {MAX_SUBJECTS}");
                    return (http::StatusCode::BAD_REQUEST, e).into_response();
                }
            },
            other => {
                let e = format!("{other}: unknown parameter (policy, maxSubjects)");
                return (http::StatusCode::BAD_REQUEST, e).into_response();
            }
        }
    }
    match portal.llm.spend_summary(policy.as_deref(), max).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
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

/// The first `max` `key=value` pairs of a query string, form-decoded (`+` is a space, `%XX` a
/// byte; a `%` without two hex digits stays as it is), each with its value as sent.
fn query_pairs(query: &str, max: usize) -> impl Iterator<Item = (String, String, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .take(max)
        .map(|pair| {
            let (k, raw) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(raw), raw)
        })
}

fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Builds the identity of a query: `subject` (absent: anonymous), `group` (repeatable, or
/// comma-separated), `claim` (repeatable, `name=value`; repeated names make an array), and the
/// access context: `sourceIp`, `amr` (repeatable), `acr`, `clientCert` (a URL-encoded PEM, as
/// an ingress forwards it). Malformed context values are an error naming the parameter.
pub fn identity_from_query(query: &str) -> Result<Identity, String> {
    let mut subject = None;
    let mut groups = Vec::new();
    let mut claims: Vec<(String, String)> = Vec::new();
    let mut ctx = AccessContext::default();
    for (k, v, raw) in query_pairs(query, 256) {
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
            "sourceIp" | "source_ip" => ctx.source_ip = Some(v),
            "amr" => ctx
                .amr
                .extend(v.split(',').filter(|a| !a.is_empty()).map(str::to_owned)),
            "acr" => ctx.acr = Some(v),
            // `+` is literal in base64: decode only %XX escapes.
            "clientCert" | "client_cert" => {
                ctx.client_cert_pem = Some(
                    percent_encoding::percent_decode_str(raw)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            }
            _ => {}
        }
    }
    ctx.apply(Identity::from_parts(subject, groups, claims))
}

/// The access context named on the admin endpoint or the CLI (`--source-ip`, `--amr`,
/// `--acr`, `--client-cert`).
#[derive(Debug, Clone, Default)]
pub struct AccessContext {
    /// The client address.
    pub source_ip: Option<String>,
    /// `amr` values of the token.
    pub amr: Vec<String>,
    /// The token's `acr`.
    pub acr: Option<String>,
    /// A PEM client certificate.
    pub client_cert_pem: Option<String>,
}

impl AccessContext {
    /// `identity` with this context: `amr`/`acr` become claims, the address and the
    /// certificate's names its request context (the certificate is read as the portal reads a
    /// forwarded one, validity included).
    pub fn apply(self, identity: Identity) -> Result<Identity, String> {
        let mut id = identity;
        if !self.amr.is_empty() {
            id = id.with_claim("amr", serde_json::json!(self.amr));
        }
        if let Some(acr) = self.acr {
            id = id.with_claim("acr", serde_json::json!(acr));
        }
        let mut context = id.context.clone();
        if let Some(ip) = self.source_ip {
            context.source_ip = Some(
                ip.trim()
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| format!("sourceIp: {ip:?} is not an IP address"))?
                    .to_canonical(),
            );
        }
        if let Some(pem) = self.client_cert_pem {
            context.client_certificate = Some(
                super::client::certificate_facts(&pem, std::time::SystemTime::now()).ok_or(
                    "clientCert: not a PEM certificate within its validity period".to_owned(),
                )?,
            );
        }
        Ok(id.with_context(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdentityKind;

    #[test]
    fn query_parameters_make_an_identity() {
        let id = identity_from_query(
            "subject=alice%40example.com&group=finance&group=eng,ops&claim=dept%3Dsales&claim=dept=hr&sourceIp=127.0.0.2&amr=mfa&amr=hwk&acr=2",
        )
        .unwrap();
        assert_eq!(id.context.source_ip, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(id.claims["amr"], serde_json::json!(["mfa", "hwk"]));
        assert_eq!(id.claims["acr"], "2");
        assert!(
            identity_from_query("subject=a&sourceIp=nope")
                .unwrap_err()
                .starts_with("sourceIp")
        );
        assert!(
            identity_from_query("subject=a&clientCert=junk")
                .unwrap_err()
                .starts_with("clientCert")
        );
        assert_eq!(id.subject, "alice@example.com");
        assert_eq!(id.groups, ["finance", "eng", "ops"]);
        assert!(id.claim_has("dept", "sales") && id.claim_has("dept", "hr"));
        assert_eq!(
            identity_from_query("group=x").unwrap().kind,
            IdentityKind::Anonymous
        );
        assert_eq!(form_decode("a%2"), "a%2");
        assert_eq!(form_decode("a+b%zz"), "a b%zz");
        assert_eq!(form_decode("%2B+%41"), "+ A", "an escaped + stays a +");
    }
}
