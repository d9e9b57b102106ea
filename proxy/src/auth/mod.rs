//! Authentication: the portal as an OAuth 2.1 protected resource (RFC 9728).
//!
//! - [`middleware`] (the outermost layer on `/mcp`) turns a bearer JWT into an [`Identity`]
//!   and inserts it, with the session [`Subject`], into the request extensions. No token: 401
//!   with `WWW-Authenticate: Bearer resource_metadata="…", scope="…"`. Invalid token: 401
//!   `error="invalid_token"`. Missing scope: 403 `error="insufficient_scope"` (step-up).
//! - [`metadata`] serves `/.well-known/oauth-protected-resource` (and the path-suffixed form).
//! - [`Authenticator`] validates tokens: allowed asymmetric algorithms only (never `none`, never
//!   HS*: keys come from a public JWKS), a key from the issuer's JWKS ([`jwks`]), signature,
//!   `iss`, `aud` (the portal's `audience`, else its resource URI), `exp`/`nbf` with
//!   [`LEEWAY_SECS`] of clock skew.
//!
//! Public portals (`spec.public: true`) serve anonymous users; if they also configure `auth`,
//! a presented token is validated (and must be valid), so signing in stays possible.
//!
//! The resource URI is `<spec.publicUrl>/mcp`, or `http://<Host>/mcp` when no public URL is
//! configured (local use; set `publicUrl` behind an ingress).

pub mod jwks;
#[doc(hidden)]
pub mod testkit;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crds::portal::PortalAuth;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::PortalConfig;
use crate::http::session::Subject;
use crate::policy::AccessCounters;
use crate::portal::Portal;
use jwks::{KeyCache, KeyError};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest bearer token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Algorithms a token may be signed with. Symmetric algorithms are never accepted: the keys
/// come from a public JWKS, and HS256 "signed with the public key" is a classic forgery.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Default claim holding the subject.
pub const DEFAULT_SUBJECT_CLAIM: &str = "sub";
/// Default claim holding the groups.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// How an [`Identity`] came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityKind {
    /// A validated access token (or a subject named on the admin endpoint or CLI).
    Authenticated,
    /// An anonymous user of a public portal.
    Anonymous,
    /// No identity at all on a portal that needs one: the policy denies everything.
    Nobody,
}

/// Who is calling: what the policy engine reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// The subject (the configured subject claim, `sub` by default). Empty when anonymous.
    pub subject: String,
    /// Groups from the configured groups claim (`groups` by default).
    pub groups: Vec<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// How the identity was established.
    pub kind: IdentityKind,
}

impl Identity {
    /// An anonymous user of a public portal.
    pub fn anonymous() -> Identity {
        Identity {
            subject: String::new(),
            groups: Vec::new(),
            claims: Map::new(),
            kind: IdentityKind::Anonymous,
        }
    }

    /// No identity: sees nothing.
    pub fn nobody() -> Identity {
        Identity {
            kind: IdentityKind::Nobody,
            ..Identity::anonymous()
        }
    }

    /// An authenticated subject with groups (for the admin endpoint, the CLI and tests).
    pub fn user(
        subject: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Identity {
        Identity {
            subject: subject.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            claims: Map::new(),
            kind: IdentityKind::Authenticated,
        }
    }

    /// Adds a claim.
    pub fn with_claim(mut self, name: impl Into<String>, value: Value) -> Identity {
        self.claims.insert(name.into(), value);
        self
    }

    /// The identity of validated token claims.
    pub fn from_claims(
        claims: Map<String, Value>,
        subject_claim: &str,
        groups_claim: &str,
    ) -> Result<Identity, String> {
        let subject = match claims.get(subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(format!("token has no {subject_claim} claim")),
        };
        let groups = match claims.get(groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            subject,
            groups,
            claims,
            kind: IdentityKind::Authenticated,
        })
    }

    /// Whether claim `name` holds `value`: string equality, membership of an array, or (for
    /// `scope`) membership of the space-separated list.
    pub fn claim_has(&self, name: &str, value: &str) -> bool {
        match self.claims.get(name) {
            Some(Value::String(s)) => {
                s == value || (name == "scope" && s.split(' ').any(|x| x == value))
            }
            Some(Value::Array(a)) => a.iter().any(|v| scalar_eq(v, value)),
            Some(v) => scalar_eq(v, value),
            None => false,
        }
    }

    /// Scopes granted by the token (`scope`, space-separated, or `scp`, string or array).
    pub fn scopes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for name in ["scope", "scp"] {
            match self.claims.get(name) {
                Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
                Some(Value::Array(a)) => out.extend(a.iter().filter_map(|v| v.as_str())),
                _ => {}
            }
        }
        out
    }
}

fn scalar_eq(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        _ => false,
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer token.
    Missing,
    /// The token is not valid; the text is safe to send (`error_description`).
    Invalid(String),
    /// Valid, but without every required scope.
    InsufficientScope,
    /// The identity provider's keys cannot be fetched.
    Unavailable,
}

/// Validates access tokens against identity providers' keys.
#[derive(Debug)]
pub struct Authenticator {
    /// The key cache (tunable in tests).
    pub keys: KeyCache,
    counters: Arc<AccessCounters>,
}

impl Authenticator {
    /// A validator that counts outcomes in `counters`.
    pub fn new(counters: Arc<AccessCounters>) -> Authenticator {
        Authenticator {
            keys: KeyCache::new(counters.clone()),
            counters,
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<AccessCounters> {
        &self.counters
    }

    /// Validates `token` for a portal with `auth` whose resource URI is `resource`.
    pub async fn authenticate(
        &self,
        auth: &PortalAuth,
        resource: &str,
        token: &str,
    ) -> Result<Identity, AuthError> {
        let invalid = |m: &str| AuthError::Invalid(m.to_owned());
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token too large"));
        }
        // Name the algorithm before anything else parses the token: `none` and HS* are refused
        // whatever the rest says.
        let alg_name = token
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned))
            .ok_or_else(|| invalid("malformed token"))?;
        let alg = alg_name
            .parse::<Algorithm>()
            .ok()
            .filter(|a| ALLOWED_ALGORITHMS.contains(a))
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "algorithm {} is not allowed",
                    sanitize(&alg_name, 20)
                ))
            })?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if header.alg != alg {
            return Err(invalid("malformed token"));
        }
        let jwk = match self
            .keys
            .key(&auth.issuer, header.kid.as_deref(), alg)
            .await
        {
            Ok(k) => k,
            Err(KeyError::Unknown) => return Err(invalid("unknown signing key")),
            Err(KeyError::Unavailable(e)) => {
                tracing::warn!(issuer = %auth.issuer, error = %e, "cannot validate tokens: no signing keys");
                return Err(AuthError::Unavailable);
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("unusable signing key"))?;
        let audience = auth.audience.as_deref().unwrap_or(resource);
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&auth.issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
            AuthError::Invalid(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not yet valid",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "token is not for this resource",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                    ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
                    _ => "invalid token",
                }
                .to_owned(),
            )
        })?;
        let identity = Identity::from_claims(
            data.claims,
            auth.subject_claim
                .as_deref()
                .unwrap_or(DEFAULT_SUBJECT_CLAIM),
            auth.groups_claim.as_deref().unwrap_or(DEFAULT_GROUPS_CLAIM),
        )
        .map_err(AuthError::Invalid)?;
        let granted = identity.scopes();
        if !auth.scopes.iter().all(|s| granted.contains(&s.as_str())) {
            return Err(AuthError::InsufficientScope);
        }
        Ok(identity)
    }
}

fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .take(max)
        .collect()
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
/// its [`Identity`] and session [`Subject`]; otherwise returns the answer (401/403 with
/// `WWW-Authenticate`, or 503 when the identity provider cannot be reached).
pub async fn authenticate_request(portal: &Portal, req: &mut Request) -> Result<(), Response> {
    let cfg = portal.config();
    let counters = portal.authenticator.counters().clone();
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
            AccessCounters::inc(&counters.missing_token);
            return Err(challenge(
                StatusCode::UNAUTHORIZED,
                &cfg,
                req.headers(),
                None,
            ));
        }
        (Some(_), Some(Err(()))) => {
            AccessCounters::inc(&counters.invalid_token);
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
                    AccessCounters::inc(&counters.missing_token);
                    return Err(challenge(
                        StatusCode::UNAUTHORIZED,
                        &cfg,
                        req.headers(),
                        None,
                    ));
                }
                Err(AuthError::Invalid(why)) => {
                    AccessCounters::inc(&counters.invalid_token);
                    tracing::info!(reason = %why, "rejected an access token");
                    return Err(challenge(
                        StatusCode::UNAUTHORIZED,
                        &cfg,
                        req.headers(),
                        Some(("invalid_token", &why)),
                    ));
                }
                Err(AuthError::InsufficientScope) => {
                    AccessCounters::inc(&counters.insufficient_scope);
                    return Err(challenge(
                        StatusCode::FORBIDDEN,
                        &cfg,
                        req.headers(),
                        Some(("insufficient_scope", "the token lacks a required scope")),
                    ));
                }
                Err(AuthError::Unavailable) => {
                    AccessCounters::inc(&counters.idp_unavailable);
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
    AccessCounters::inc(&counters.authenticated);
    // The client's credentials end here: nothing after this layer needs them, and upstream
    // requests are built from configured headers only.
    req.headers_mut().remove(header::AUTHORIZATION);
    req.extensions_mut()
        .insert(Subject(identity.subject.clone()));
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

#[cfg(test)]
mod tests;
