//! Test support: fixture keys, token signing and a minimal issuer (discovery + JWKS) on
//! loopback. Used by unit tests and `benches/auth.rs`; never by the portal itself. The keys
//! here are public test fixtures: a portal trusts them only if configured with this issuer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// RSA-2048 private key (PKCS#8 PEM), kid `rsa-1` in [`TestIdp`]'s JWKS.
pub const RSA_PEM: &str = include_str!("testdata/rsa.pem");
/// Another RSA key, not in the JWKS unless added.
pub const RSA_OTHER_PEM: &str = include_str!("testdata/rsa_other.pem");
/// The public half of [`RSA_PEM`] (what an HS256 forgery would use as its "secret").
pub const RSA_PUBLIC_PEM: &str = include_str!("testdata/rsa_pub.pem");
/// P-256 private key (PKCS#8 PEM), kid `ec-1` in [`TestIdp`]'s JWKS.
pub const EC_PEM: &str = include_str!("testdata/ec.pem");

fn encoding_key(pem: &str, alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            EncodingKey::from_ec_pem(pem.as_bytes()).expect("EC PEM")
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(pem.as_bytes())
        }
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA PEM"),
    }
}

/// The public JWK of a private key, with `kid`, `use: sig` and `alg`.
pub fn public_jwk(pem: &str, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(pem, alg), alg).expect("JWK");
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    serde_json::to_value(jwk).expect("JWK JSON")
}

/// A compact JWS over `claims`.
pub fn sign(pem: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, &encoding_key(pem, alg)).expect("sign")
}

/// A token with `{"alg": "none"}` and no signature.
pub fn unsigned(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Access-token claims valid for five minutes.
pub fn claims(issuer: &str, audience: &str, sub: &str, groups: &[&str]) -> Value {
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "groups": groups,
        "iat": now(),
        "exp": now() + 300,
        "scope": "mcp",
    })
}

/// A minimal issuer on loopback: OIDC discovery and a JWKS whose keys tests may change.
pub struct TestIdp {
    /// Issuer URL (`http://127.0.0.1:P`).
    pub issuer: String,
    /// The keys served at `/jwks`.
    pub keys: Arc<Mutex<Vec<Value>>>,
    /// How many times `/jwks` was fetched.
    pub jwks_hits: Arc<AtomicU64>,
    /// How long `/jwks` takes to answer, in milliseconds (0 by default).
    pub jwks_delay_ms: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

impl TestIdp {
    /// Starts an issuer serving the RSA (`rsa-1`, RS256) and EC (`ec-1`, ES256) fixture keys.
    pub async fn start() -> TestIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let keys = Arc::new(Mutex::new(vec![
            public_jwk(RSA_PEM, Algorithm::RS256, "rsa-1"),
            public_jwk(EC_PEM, Algorithm::ES256, "ec-1"),
        ]));
        let jwks_hits = Arc::new(AtomicU64::new(0));
        let jwks_delay_ms = Arc::new(AtomicU64::new(0));
        let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let d = discovery.clone();
                    async move { axum::Json(d) }
                }),
            )
            .route(
                "/jwks",
                get({
                    let keys = keys.clone();
                    let hits = jwks_hits.clone();
                    let delay = jwks_delay_ms.clone();
                    move || {
                        hits.fetch_add(1, Ordering::Relaxed);
                        let k = keys.lock().expect("keys").clone();
                        let ms = delay.load(Ordering::Relaxed);
                        async move {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            axum::Json(json!({"keys": k}))
                        }
                    }
                }),
            );
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled_owned().await })
                .await;
        });
        TestIdp {
            issuer,
            keys,
            jwks_hits,
            jwks_delay_ms,
            shutdown,
        }
    }

    /// How many times the JWKS was fetched.
    pub fn hits(&self) -> u64 {
        self.jwks_hits.load(Ordering::Relaxed)
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
