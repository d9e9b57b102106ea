//! The identity provider's signing keys: discovered from its metadata, cached, refreshed when
//! stale or when a token names an unknown `kid` — at most once per [`KeyCache::min_refresh`]
//! per issuer, one fetch at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily};

use crate::metrics::AuthMetrics;

/// Largest metadata or JWKS document accepted.
const MAX_DOC_BYTES: usize = 512 * 1024;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;
/// Most issuers cached (a portal has one; reloads may change it).
const MAX_ISSUERS: usize = 16;

/// Why no key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The JWKS holds no key for this `kid` and algorithm (after a refresh, if one was allowed).
    Unknown,
    /// The keys could not be fetched (and none are cached).
    Unavailable(String),
}

#[derive(Default)]
struct KeyState {
    keys: Option<Arc<Vec<Jwk>>>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
    /// Bumped on every fetch attempt, so waiters see that someone else just refreshed.
    generation: u64,
    jwks_uri: Option<String>,
    last_error: Option<String>,
}

struct IssuerKeys {
    state: RwLock<KeyState>,
    refresh: tokio::sync::Mutex<()>,
}

/// Signing keys of identity providers, by issuer.
pub struct KeyCache {
    http: reqwest::Client,
    issuers: Mutex<HashMap<String, Arc<IssuerKeys>>>,
    /// Least time between two fetches for one issuer once keys are cached (unknown `kid`s
    /// cannot make the portal hammer the IdP).
    pub min_refresh: Duration,
    /// Least time between two fetches while no key could be fetched yet.
    pub min_retry: Duration,
    /// Age after which cached keys are refreshed on the next use.
    pub ttl: Duration,
    metrics: AuthMetrics,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("min_refresh", &self.min_refresh)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Whether `jwk` may verify a token signed with `alg`: a public signing key of the algorithm's
/// family (never a symmetric key), with a matching `alg` when the key names one.
fn usable(jwk: &Jwk, alg: Algorithm) -> bool {
    if let Some(u) = &jwk.common.public_key_use
        && *u != PublicKeyUse::Signature
    {
        return false;
    }
    if let Some(ka) = jwk.common.key_algorithm
        && ka != jsonwebtoken::jwk::KeyAlgorithm::from(alg)
    {
        return false;
    }
    matches!(
        (&jwk.algorithm, alg.family()),
        (AlgorithmParameters::RSA(_), AlgorithmFamily::Rsa)
            | (AlgorithmParameters::EllipticCurve(_), AlgorithmFamily::Ec)
            | (AlgorithmParameters::OctetKeyPair(_), AlgorithmFamily::Ed)
    )
}

fn find(keys: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
    keys.iter()
        .filter(|k| usable(k, alg))
        .find(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
        .cloned()
}

/// RFC 8414 metadata URL: `/.well-known/oauth-authorization-server` inserted before the path.
fn rfc8414_url(issuer: &str) -> String {
    let (scheme, rest) = issuer.split_once("://").unwrap_or(("https", issuer));
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    format!(
        "{scheme}://{host}/.well-known/oauth-authorization-server{}",
        path.trim_end_matches('/')
    )
}

impl KeyCache {
    /// An empty cache that counts its fetches in `metrics`.
    pub fn new(metrics: AuthMetrics) -> KeyCache {
        let http = crate::tls::client_builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        KeyCache {
            http,
            issuers: Mutex::default(),
            min_refresh: Duration::from_secs(10),
            min_retry: Duration::from_secs(1),
            ttl: Duration::from_secs(600),
            metrics,
        }
    }

    fn issuer(&self, issuer: &str) -> Arc<IssuerKeys> {
        let mut m = self.issuers.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(issuer) && m.len() >= MAX_ISSUERS {
            m.clear();
        }
        m.entry(issuer.to_owned())
            .or_insert_with(|| {
                Arc::new(IssuerKeys {
                    state: RwLock::default(),
                    refresh: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The key of `issuer` that verifies a token with header `kid` and `alg`.
    pub async fn key(
        &self,
        issuer: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Jwk, KeyError> {
        let ik = self.issuer(issuer);
        let now = Instant::now();
        let (found, stale, may_fetch, generation) = {
            let st = ik.state.read().unwrap_or_else(|e| e.into_inner());
            let found = st.keys.as_ref().and_then(|k| find(k, kid, alg));
            let stale = st.fetched.is_none_or(|t| now.duration_since(t) >= self.ttl);
            let gap = if st.keys.is_some() {
                self.min_refresh
            } else {
                self.min_retry
            };
            let may_fetch = st.attempted.is_none_or(|t| now.duration_since(t) >= gap);
            (found, stale, may_fetch, st.generation)
        };
        if let Some(k) = &found
            && !stale
        {
            return Ok(k.clone());
        }
        // Without a usable key, a fetch in flight (another request's) is waited for: the
        // lock is held for exactly the length of one fetch. A cold replica's first burst of
        // requests otherwise failed as "unavailable" while the first fetch was on its way.
        if may_fetch || found.is_none() {
            let _one_at_a_time = ik.refresh.lock().await;
            let current = ik
                .state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .generation;
            if may_fetch && current == generation {
                self.refresh(issuer, &ik).await;
            }
        }
        let st = ik.state.read().unwrap_or_else(|e| e.into_inner());
        match st.keys.as_ref() {
            Some(keys) => find(keys, kid, alg).or(found).ok_or(KeyError::Unknown),
            None => Err(KeyError::Unavailable(
                st.last_error
                    .clone()
                    .unwrap_or_else(|| "signing keys not fetched yet".into()),
            )),
        }
    }

    async fn refresh(&self, issuer: &str, ik: &IssuerKeys) {
        let jwks_uri = {
            let mut st = ik.state.write().unwrap_or_else(|e| e.into_inner());
            st.attempted = Some(Instant::now());
            st.generation += 1;
            st.jwks_uri.clone()
        };
        let result = async {
            let uri = match jwks_uri {
                Some(u) => u,
                None => self.discover(issuer).await?,
            };
            let doc = self.get_json(&uri).await?;
            let keys: Vec<Jwk> = doc
                .get("keys")
                .and_then(|k| k.as_array())
                .ok_or_else(|| format!("{uri}: not a JWK set"))?
                .iter()
                .take(MAX_KEYS)
                // Skip keys this library cannot represent (for example encryption keys).
                .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                .collect();
            Ok::<_, String>((uri, keys))
        }
        .await;
        let mut st = ik.state.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((uri, keys)) => {
                self.metrics.jwks_fetched.inc();
                tracing::debug!(
                    issuer,
                    keys = keys.len(),
                    "fetched the identity provider's signing keys"
                );
                st.keys = Some(Arc::new(keys));
                st.fetched = Some(Instant::now());
                st.jwks_uri = Some(uri);
                st.last_error = None;
            }
            Err(e) => {
                self.metrics.jwks_fetch_failed.inc();
                tracing::warn!(issuer, error = %e, "cannot fetch the identity provider's signing keys");
                // Discover again next time: the IdP may have moved its keys.
                st.jwks_uri = None;
                st.last_error = Some(e);
            }
        }
    }

    /// The `jwks_uri` from the issuer's OIDC discovery document, else its RFC 8414 metadata.
    /// The document must name exactly this issuer.
    async fn discover(&self, issuer: &str) -> Result<String, String> {
        let oidc = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let mut errors = Vec::new();
        for url in [oidc, rfc8414_url(issuer)] {
            match self.get_json(&url).await {
                Ok(doc) => {
                    if doc.get("issuer").and_then(|i| i.as_str()) != Some(issuer) {
                        errors.push(format!("{url}: issuer does not match {issuer}"));
                        continue;
                    }
                    match doc.get("jwks_uri").and_then(|u| u.as_str()) {
                        Some(u) => return Ok(u.to_owned()),
                        None => errors.push(format!("{url}: no jwks_uri")),
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let mut resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOC_BYTES {
                return Err(format!("{url}: document larger than {MAX_DOC_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8414_metadata_url_inserts_the_well_known_segment_before_the_path() {
        assert_eq!(
            rfc8414_url("http://127.0.0.1:9600"),
            "http://127.0.0.1:9600/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            rfc8414_url("https://idp.example.com/tenant/a/"),
            "https://idp.example.com/.well-known/oauth-authorization-server/tenant/a"
        );
    }
}
