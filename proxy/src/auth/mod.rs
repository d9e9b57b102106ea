//! Token verification: an access token in, an [`Identity`] or an [`AuthError`] out. The HTTP
//! side (the bearer header, the `WWW-Authenticate` challenges, the RFC 9728 metadata) is the
//! `http::auth` module above; this one knows no request and no portal.
//!
//! - [`Authenticator`] validates tokens: allowed asymmetric algorithms only (never `none`, never
//!   HS*: keys come from a public JWKS), a key from the issuer's JWKS ([`jwks`]), signature,
//!   `iss`, `aud` (the portal's `audience`, else its resource URI), `exp`/`nbf` with
//!   [`LEEWAY_SECS`] of clock skew.

pub mod jwks;
#[doc(hidden)]
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crds::portal::PortalAuth;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::metrics::AuthMetrics;
use crate::model::Identity;
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
}

impl Authenticator {
    /// A validator that counts its key fetches in `metrics`.
    pub fn new(metrics: &AuthMetrics) -> Authenticator {
        Authenticator {
            keys: KeyCache::new(metrics.clone()),
        }
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
        let identity = identity_of_claims(
            data.claims,
            auth.subject_claim
                .as_deref()
                .unwrap_or(DEFAULT_SUBJECT_CLAIM),
            auth.groups_claim.as_deref().unwrap_or(DEFAULT_GROUPS_CLAIM),
        )?;
        let granted = identity.scopes();
        if !auth.scopes.iter().all(|s| granted.contains(&s.as_str())) {
            return Err(AuthError::InsufficientScope);
        }
        Ok(identity)
    }
}

/// The identity of validated token claims: the subject from `subject_claim` (a token without
/// one is invalid), the groups from `groups_claim`.
fn identity_of_claims(
    claims: Map<String, Value>,
    subject_claim: &str,
    groups_claim: &str,
) -> Result<Identity, AuthError> {
    let subject = match claims.get(subject_claim) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(AuthError::Invalid(format!(
                "token has no {subject_claim} claim"
            )));
        }
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
        kind: crate::model::IdentityKind::Authenticated,
        context: crate::model::RequestContext::default(),
    })
}

fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests;
