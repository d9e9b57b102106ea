//! Signed user identity for upstreams (`McpServer.spec.identity`).
//!
//! The portal never forwards the client's token. An upstream that needs to know who acts gets a
//! short-lived JWT the portal signs instead: `iss` the portal (its `publicUrl`, else its name),
//! `aud` the McpServer name, `sub`, `groups`, the claims the server selected, `iat`, `exp`,
//! `jti`, and `kid` in the header. The public key is served at `/.well-known/jwks.json`, so an
//! upstream verifies the header with any JOSE library.
//!
//! How the token travels: the pipeline puts a [`SignedIdentity`] into the rmcp request's
//! extensions (never serialized, so it cannot reach any upstream as JSON, and no client can put
//! one there: extensions do not come from the wire). The HTTP transports of upstreams that
//! opted in (`upstream::oauth::AuthorizedClient`, the legacy SSE sink) take it out with
//! [`take_into_header`] and send it as their header. Stdio upstreams have no headers: the token is dropped with the
//! extensions. Anonymous callers of public portals get no token: there is nobody to attribute
//! the call to, and a made-up subject could be mistaken for a real user.
//!
//! Keys: a PKCS#8 PEM private key from a Secret (`McpPortal.spec.identitySigningKeyFrom`), EC
//! P-256 (ES256) or Ed25519 (EdDSA), so every replica signs with the same key and publishes the
//! same JWKS. There is no ephemeral fallback: with several replicas behind a Service, each would
//! publish a different key and an upstream would fail whichever key its cached JWKS lacks.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rmcp::model::{ClientJsonRpcMessage, GetExtensions};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::identity::{RESERVED_CLAIMS, TOKEN_TYPE};
use crate::model::{Identity, IdentityConfig, IdentityKind, SignedIdentity};

/// Signs identity tokens with the portal's key and publishes its public half.
pub struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    jwk: Value,
    issuer: String,
}

impl std::fmt::Debug for Signer {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a PKCS#8 PEM private key (EC P-256 or Ed25519). The error says what is
    /// wrong without quoting the key.
    pub fn from_pem(pem: &[u8], issuer: impl Into<String>) -> Result<Signer, String> {
        let (key, alg) = if let Ok(k) = EncodingKey::from_ec_pem(pem) {
            (k, Algorithm::ES256)
        } else if let Ok(k) = EncodingKey::from_ed_pem(pem) {
            (k, Algorithm::EdDSA)
        } else {
            return Err("not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----) of type EC P-256 or Ed25519; make one with `openssl genpkey -algorithm ed25519`".into());
        };
        let public = Jwk::from_encoding_key(&key, alg).map_err(|_| {
            "an EC key that is not on P-256 (only ES256 is supported for EC keys)".to_string()
        })?;
        let kid = thumbprint(&public.algorithm)?;
        let mut jwk = public;
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_id = Some(kid.clone());
        let jwk = serde_json::to_value(&jwk).map_err(|e| e.to_string())?;
        Ok(Signer {
            key,
            alg,
            kid,
            jwk,
            issuer: issuer.into(),
        })
    }

    /// The signer of a configured key; the error names the Secret the key came from.
    pub fn from_key(key: &crate::config::SigningKey) -> crate::Result<Signer> {
        Signer::from_pem(&key.pem, key.issuer.clone())
            .map_err(|e| crate::Error::Config(format!("{}: {e}", key.source)))
    }

    /// The key id (RFC 7638 SHA-256 thumbprint of the public key).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWK Set served at `/.well-known/jwks.json`: the public key only.
    pub fn jwks(&self) -> Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// The token for `identity` calling server `audience`, or `None` when the caller is not
    /// authenticated (anonymous users of public portals get no token).
    pub fn sign(
        &self,
        identity: &Identity,
        audience: &str,
        config: &IdentityConfig,
    ) -> Result<Option<String>, String> {
        if identity.kind != IdentityKind::Authenticated || identity.subject.is_empty() {
            return Ok(None);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let mut claims = Map::new();
        for name in &config.claims {
            if RESERVED_CLAIMS.contains(&name.as_str()) {
                continue;
            }
            if let Some(v) = identity.claims.get(name) {
                claims.insert(name.clone(), v.clone());
            }
        }
        let jti: [u8; 16] = rand::random();
        claims.insert("iss".into(), Value::from(self.issuer.clone()));
        claims.insert("aud".into(), Value::from(audience));
        claims.insert("sub".into(), Value::from(identity.subject.clone()));
        claims.insert("groups".into(), Value::from(identity.groups.clone()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + config.ttl.as_secs()));
        claims.insert("jti".into(), Value::from(URL_SAFE_NO_PAD.encode(jti)));
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some(TOKEN_TYPE.into());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(Some)
            .map_err(|e| format!("signing the identity token failed: {e}"))
    }
}

/// RFC 7638 thumbprint (SHA-256, base64url) of a public JWK. Written here because
/// jsonwebtoken's `Jwk::thumbprint` refuses Ed25519 keys.
fn thumbprint(params: &AlgorithmParameters) -> Result<String, String> {
    let canonical = match params {
        AlgorithmParameters::EllipticCurve(a) => serde_json::json!({
            "crv": a.curve, "kty": a.key_type, "x": a.x, "y": a.y,
        }),
        AlgorithmParameters::OctetKeyPair(a) => serde_json::json!({
            "crv": a.curve, "kty": a.key_type, "x": a.x,
        }),
        _ => return Err("unsupported key type".into()),
    };
    // serde_json keeps insertion order here (`preserve_order`); the members above are already
    // in the lexicographic order RFC 7638 requires.
    let text = serde_json::to_string(&canonical).map_err(|e| e.to_string())?;
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes())))
}

/// Takes the signed identity out of an outgoing message; when `header` is set (the upstream
/// opted in) it goes into `headers`. Without a header it is dropped.
pub fn take_into_header(
    message: &mut ClientJsonRpcMessage,
    header: Option<&HeaderName>,
    headers: &mut HashMap<HeaderName, HeaderValue>,
) {
    let ClientJsonRpcMessage::Request(r) = message else {
        return;
    };
    let Some(SignedIdentity(token)) = r.request.extensions_mut().remove::<SignedIdentity>() else {
        return;
    };
    if let Some(name) = header
        && let Ok(mut value) = HeaderValue::from_str(&token)
    {
        value.set_sensitive(true);
        headers.insert(name.clone(), value);
    }
}

#[cfg(test)]
mod tests;
