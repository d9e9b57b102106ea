//! OAuth 2.0 client credentials for upstreams (`spec.remote.oauth`): the portal's own token,
//! never the user's.
//!
//! The grant is one form POST to the configured token endpoint (RFC 6749 §4.4, client
//! authentication `client_secret_basic`, RFC 8707 `resource` when configured). It is written
//! here rather than taken from the `oauth2` crate because there is nothing else to do: no
//! discovery, no redirects, no refresh tokens, and the `oauth2` crate would need an adapter for
//! this workspace's reqwest version. rmcp's own OAuth client is built for interactive
//! authorization against the MCP server's metadata, not for a fixed token endpoint.
//!
//! Tokens are cached and fetched again shortly before they expire, or at once after the
//! upstream answered 401. [`AuthorizedClient`] puts the current token on every Streamable HTTP
//! request rmcp sends (POSTs, GET streams, DELETE), so a token can rotate under a live
//! connection without dropping the upstream's tools.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use serde::Deserialize;
use sse_stream::{Error as SseError, Sse};
use tokio::sync::Mutex;

use crate::config::UpstreamOAuth;

/// Fetch again when less than this much lifetime is left.
const EARLY: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token endpoint does not say (`expires_in` is optional).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Why the token endpoint gave no usable token. Every message names the endpoint; none holds
/// the client secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request or the answer's body failed at the transport.
    #[error("token endpoint {url}: {source}")]
    Unreachable {
        /// The token endpoint.
        url: String,
        /// The HTTP error.
        source: reqwest::Error,
    },
    /// The answer passed the size limit.
    #[error("token endpoint {url}: answer larger than {limit} bytes")]
    TooLarge {
        /// The token endpoint.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// A failed status, with the RFC 6749 `error` (and description) when the body had one.
    #[error("token endpoint {url}: answered {status} {reason}")]
    Refused {
        /// The token endpoint.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
        /// `error: error_description`, or empty.
        reason: String,
    },
    /// A successful status whose body is no usable token response.
    #[error("token endpoint {url}: {message}")]
    Malformed {
        /// The token endpoint.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Fetches and caches the portal's access token for one upstream.
pub struct TokenSource {
    http: reqwest::Client,
    config: UpstreamOAuth,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    /// A source for `config`, fetching with `http`.
    pub fn new(http: reqwest::Client, config: UpstreamOAuth) -> Self {
        TokenSource {
            http,
            config,
            cached: Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a fresh one from the token endpoint.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + EARLY < *expires
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// Forgets the cached token (the upstream refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<(String, Duration), TokenError> {
        let c = &self.config;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        let scope = c.scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        if let Some(resource) = &c.resource {
            form.push(("resource", resource));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = || c.token_url.clone();
        let unreachable = |source| TokenError::Unreachable { url: url(), source };
        let malformed = |message| TokenError::Malformed {
            url: url(),
            message,
        };
        let resp = self
            .http
            .post(&c.token_url)
            .basic_auth(urlencode(&c.client_id), Some(urlencode(&c.client_secret)))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let bytes = match read_limited(resp).await {
            Ok(bytes) => bytes,
            Err(None) => {
                return Err(TokenError::TooLarge {
                    url: url(),
                    limit: MAX_TOKEN_RESPONSE,
                });
            }
            Err(Some(e)) => return Err(unreachable(e)),
        };
        if !status.is_success() {
            // RFC 6749 §5.2: `error` and `error_description` say why; nothing secret in them.
            let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    let e = v.get("error")?.as_str()?.to_string();
                    let d = v.get("error_description").and_then(|d| d.as_str());
                    Some(match d {
                        Some(d) => format!("{e}: {}", d.chars().take(200).collect::<String>()),
                        None => e,
                    })
                })
                .unwrap_or_default();
            return Err(TokenError::Refused {
                url: url(),
                status,
                reason,
            });
        }
        let t: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("answer is not a token response: {e}")))?;
        if t.access_token.is_empty() || HeaderValue::from_str(&t.access_token).is_err() {
            return Err(malformed("answered an unusable access_token".into()));
        }
        let lifetime = t
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        Ok((t.access_token, lifetime))
    }
}

/// The body, up to [`MAX_TOKEN_RESPONSE`]: `Err(None)` when larger.
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, Option<reqwest::Error>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Some)? {
        if out.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return Err(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` encoding (RFC 6749 appendix B, also used for the
/// client id and secret inside HTTP Basic).
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// rmcp's Streamable HTTP client with the upstream's current token on every request, and the
/// caller's signed identity ([`crate::identity`]) on the requests that carry one.
#[derive(Clone)]
pub struct AuthorizedClient {
    http: reqwest::Client,
    tokens: Option<Arc<TokenSource>>,
    identity_header: Option<HeaderName>,
    associations: Option<Arc<super::relay::Associations>>,
}

type HttpResult<T> = Result<T, StreamableHttpError<reqwest::Error>>;

impl AuthorizedClient {
    /// `tokens` is `None` for upstreams without OAuth. `identity_header` is `None` for
    /// upstreams that did not opt in to `spec.identity` (a signed identity is then dropped).
    pub fn new(
        http: reqwest::Client,
        tokens: Option<Arc<TokenSource>>,
        identity_header: Option<HeaderName>,
    ) -> Self {
        AuthorizedClient {
            http,
            tokens,
            identity_header,
            associations: None,
        }
    }

    /// Registers the portal requests it posts in `associations`, and marks the log messages on
    /// their response streams as theirs ([`super::relay`]).
    pub fn with_associations(mut self, associations: Arc<super::relay::Associations>) -> Self {
        self.associations = Some(associations);
        self
    }

    fn relate(
        &self,
        marker: Option<(String, std::sync::Weak<super::relay::Route>)>,
        r: HttpResult<StreamableHttpPostResponse>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        match (marker, r) {
            (Some(marker), Ok(StreamableHttpPostResponse::Sse(stream, session))) => {
                Ok(StreamableHttpPostResponse::Sse(
                    super::relay::Associations::tag_stream(stream, marker),
                    session,
                ))
            }
            (_, r) => r,
        }
    }

    async fn bearer(&self, given: Option<String>) -> HttpResult<Option<String>> {
        match &self.tokens {
            None => Ok(given),
            Some(t) => t
                .token()
                .await
                .map(Some)
                .map_err(|e| StreamableHttpError::Io(std::io::Error::other(e))),
        }
    }

    async fn check<T>(&self, r: HttpResult<T>) -> HttpResult<T> {
        if let (Some(t), Err(StreamableHttpError::AuthRequired(_))) = (&self.tokens, &r) {
            t.invalidate().await;
        }
        r
    }
}

impl StreamableHttpClient for AuthorizedClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let mut message = message;
        crate::identity::take_into_header(
            &mut message,
            self.identity_header.as_ref(),
            &mut custom_headers,
        );
        let marker = self
            .associations
            .as_ref()
            .and_then(|a| a.register(&message));
        let auth = self.bearer(auth_header).await?;
        let r = self
            .http
            .post_message(uri, message, session_id, auth, custom_headers)
            .await;
        let r = self.relate(marker, r);
        self.check(r).await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let mut message = message;
        crate::identity::take_into_header(
            &mut message,
            self.identity_header.as_ref(),
            &mut custom_headers,
        );
        let marker = self
            .associations
            .as_ref()
            .and_then(|a| a.register(&message));
        let auth = self.bearer(auth_header).await?;
        let r = self
            .http
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth,
                custom_headers,
                limits,
            )
            .await;
        let r = self.relate(marker, r);
        self.check(r).await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<()> {
        let auth = self.bearer(auth_header).await?;
        let r = self
            .http
            .delete_session(uri, session_id, auth, custom_headers)
            .await;
        self.check(r).await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        let auth = self.bearer(auth_header).await?;
        let r = self
            .http
            .get_stream(uri, session_id, last_event_id, auth, custom_headers)
            .await;
        self.check(r).await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        let auth = self.bearer(auth_header).await?;
        let r = self
            .http
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.check(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::urlencode;

    #[test]
    fn form_encoding_escapes_everything_outside_the_unreserved_set() {
        assert_eq!(urlencode("ci-bot_1.x*"), "ci-bot_1.x*");
        assert_eq!(urlencode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
