//! The direct client of one upstream: its fixed headers and client context, the `tools/call`
//! request it writes, and the POST (with one retry on a 401 when it has a token source).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicI64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rmcp::model::{
    CallToolRequestParams, ProtocolVersion, RequestId, RequestMetaObject, ServerResult,
};
use rmcp::service::ServiceError;
use rmcp::transport::DynamicTransportError;

use super::answer::{Answer, JSON};
use crate::model::SignedIdentity;
use crate::upstream::Upstream;
use crate::upstream::h1::{H1Client, H1Error};
use crate::upstream::oauth::{TokenError, TokenSource};
use crate::upstream::relay::{Relay, Route};

/// `Mcp-Name` (SEP-2243).
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// Why a direct call failed below JSON-RPC. These reach the log, never a client.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The HTTP exchange failed (connect, reset, body).
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The HTTP exchange on the in-task HTTP/1.1 client failed.
    #[error("request failed: {0}")]
    H1(#[from] H1Error),
    /// The token endpoint did not give us a token.
    #[error("no token for the upstream: {0}")]
    Token(#[from] TokenError),
    /// The token endpoint's token cannot be sent in a header.
    #[error("no token for the upstream: not a header value")]
    TokenNotHeader,
    /// A failed HTTP status without a JSON-RPC error in it.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// An answer larger than the limits.
    #[error("answer larger than {limit} bytes")]
    TooLarge {
        /// The limit that was passed.
        limit: usize,
    },
    /// An answer that is not a well-formed answer to our request.
    #[error("unexpected answer: {0}")]
    Protocol(Cow<'static, str>),
}

impl From<sse::Error> for DirectError {
    fn from(e: sse::Error) -> Self {
        match e {
            sse::Error::TooLarge { limit } => DirectError::TooLarge { limit },
            sse::Error::NotUtf8 => DirectError::Protocol("an SSE event that is not UTF-8".into()),
        }
    }
}

impl From<DirectError> for ServiceError {
    fn from(e: DirectError) -> Self {
        ServiceError::TransportSend(DynamicTransportError::from_parts(
            "direct streamable HTTP",
            std::any::TypeId::of::<DirectClient>(),
            Box::new(e),
        ))
    }
}

pub(super) fn protocol(m: impl Into<Cow<'static, str>>) -> ServiceError {
    DirectError::Protocol(m.into()).into()
}

/// The `tools/call` client of one stateless Streamable HTTP upstream, living as long as the
/// supervisor's connection to it.
pub struct DirectClient {
    pub(super) name: String,
    pub(super) http: reqwest::Client,
    /// The in-task client for a plain `http://` upstream (see [`super::h1`]); `None` sends
    /// through `http`.
    pub(super) h1: Option<Arc<H1Client>>,
    pub(super) url: reqwest::Url,
    /// Accept, Content-Type, the configured headers (sensitive), MCP-Protocol-Version and
    /// Mcp-Method: the same on every call.
    pub(super) headers: HeaderMap,
    pub(super) tokens: Option<Arc<TokenSource>>,
    pub(super) identity_header: Option<HeaderName>,
    /// The client context SEP-2575 wants in every request's `_meta`.
    pub(super) meta: RequestMetaObject,
    /// `meta` serialized, as it goes into every call that brings no `_meta` of its own.
    pub(super) meta_json: Vec<u8>,
    pub(super) next_id: AtomicI64,
    pub(super) upstream: Weak<Upstream>,
    /// Where logs that arrive on a call's answer go (the portal), when it relays them.
    pub(super) relay: Option<Weak<dyn Relay>>,
}

impl std::fmt::Debug for DirectClient {
    // Header values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectClient")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl DirectClient {
    /// A client for the upstream `name` at `url`. `custom` are the configured headers (marked
    /// sensitive); `tokens` the portal's OAuth token source; `identity_header` where a signed
    /// identity goes (only for servers that opted in).
    pub fn new(
        name: String,
        http: reqwest::Client,
        url: &str,
        custom: HeaderMap,
        tokens: Option<Arc<TokenSource>>,
        identity_header: Option<HeaderName>,
        upstream: Weak<Upstream>,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("bad url: {e}"))?;
        let h1 = H1Client::for_url(&url, crate::upstream::CONNECT_TIMEOUT).map(Arc::new);
        let version = ProtocolVersion::V_2026_07_28;
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream, application/json"),
        );
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        for (k, v) in &custom {
            headers.append(k, v.clone());
        }
        // The protocol headers win over configured ones, as in rmcp.
        headers.insert(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_str(version.as_str()).map_err(|e| e.to_string())?,
        );
        headers.insert(
            HeaderName::from_static("mcp-method"),
            HeaderValue::from_static("tools/call"),
        );
        let config = crate::upstream::client::client_config(false);
        let meta = RequestMetaObject::with_client_context(
            version,
            config.client_info,
            config.capabilities,
        );
        Ok(DirectClient {
            name,
            http,
            h1,
            url,
            headers,
            tokens,
            identity_header,
            meta_json: meta_json(&meta),
            meta,
            next_id: AtomicI64::new(0),
            upstream,
            relay: None,
        })
    }

    /// Sends through reqwest even to a plain `http://` upstream (tests of that path).
    #[cfg(test)]
    pub(super) fn without_h1(mut self) -> Self {
        self.h1 = None;
        self
    }

    /// Relays logs that arrive on a call's answer through `relay` (the portal), and announces
    /// the capabilities the rmcp connection to the same upstream announces when it relays.
    pub fn with_relay(mut self, relay: Option<Weak<dyn Relay>>) -> Self {
        let relays = relay.is_some();
        self.relay = relay;
        self.meta
            .set_client_capabilities(crate::upstream::client::client_config(relays).capabilities);
        self.meta_json = meta_json(&self.meta);
        self
    }

    /// Calls a tool. JSON-RPC errors of the upstream come back as [`ServiceError::McpError`];
    /// everything else that goes wrong is a transport error.
    pub async fn call_tool(
        &self,
        params: CallToolRequestParams,
        signed: Option<SignedIdentity>,
        route: Option<Arc<Route>>,
    ) -> Result<ServerResult, ServiceError> {
        let id = RequestId::Number(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut headers = self.headers.clone();
        headers.insert(
            MCP_NAME,
            HeaderValue::from_str(&params.name)
                .map_err(|_| protocol("tool name is not a header value"))?,
        );
        if let (Some(name), Some(SignedIdentity(token))) = (&self.identity_header, signed)
            && let Ok(mut value) = HeaderValue::from_str(&token)
        {
            value.set_sensitive(true);
            headers.insert(name.clone(), value);
        }
        let body = bytes::Bytes::from(
            self.request_body(&id, params)
                .map_err(|e| protocol(format!("serializing: {e}")))?,
        );
        if let Some(up) = self.upstream.upgrade() {
            up.direct_calls.fetch_add(1, Ordering::Relaxed);
        }
        let mut retried = false;
        loop {
            // Only a call with a token source may need a second attempt.
            let mut attempt = if self.tokens.is_some() && !retried {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            if let Some(tokens) = &self.tokens {
                // The configuration refuses a static Authorization header beside OAuth, so
                // this is the request's only one.
                let token = tokens.token().await.map_err(DirectError::Token)?;
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| DirectError::TokenNotHeader)?;
                value.set_sensitive(true);
                attempt.insert(http::header::AUTHORIZATION, value);
            }
            let response = match &self.h1 {
                Some(h1) => Answer::H1(h1.post(&attempt, &body).await.map_err(DirectError::from)?),
                None => {
                    // The request is made here, not by `Client::post`: `RequestBuilder::headers`
                    // would insert the map into the request's empty one entry by entry.
                    let mut request =
                        reqwest::Request::new(reqwest::Method::POST, self.url.clone());
                    *request.headers_mut() = attempt;
                    *request.body_mut() = Some(body.clone().into());
                    Answer::Reqwest(
                        self.http
                            .execute(request)
                            .await
                            .map_err(DirectError::from)?,
                    )
                }
            };
            if response.status() == StatusCode::UNAUTHORIZED
                && let Some(tokens) = &self.tokens
            {
                // The token was revoked or rotated early: fetch a fresh one, once. A 401 means
                // the server did not run the tool, so sending it again is safe.
                tokens.invalidate().await;
                if !retried {
                    retried = true;
                    continue;
                }
            }
            return self.answer(response, &id, route.as_ref()).await;
        }
    }

    /// The `tools/call` message, byte for byte what rmcp serializes for it as a
    /// `ClientJsonRpcMessage` with the client context in its extensions:
    /// `{"jsonrpc":"2.0","id":…,"method":"tools/call","params":{"_meta":…,…}}`, where `_meta` is
    /// the client context with the caller's `_meta` entries over it.
    ///
    /// rmcp gets there by cloning the context into the request's `Extensions`, serializing the
    /// params into a `serde_json::Value` (a copy of the arguments) to merge `_meta` in, writing
    /// that out and dropping it all: about a tenth of this client's CPU per call. Here the
    /// context was serialized once (`meta_json`), and the params are written by their own
    /// `Serialize`, the one rmcp's `Value` comes from (same members, same order), after it.
    pub(super) fn request_body(
        &self,
        id: &RequestId,
        mut params: CallToolRequestParams,
    ) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.meta_json.len() + 256);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        serde_json::to_writer(&mut out, id)?;
        out.extend_from_slice(br#","method":"tools/call","params":{"_meta":"#);
        match params.meta.take() {
            None => out.extend_from_slice(&self.meta_json),
            Some(extra) => {
                let mut meta = self.meta.clone();
                meta.extend(extra);
                serde_json::to_writer(&mut out, &meta)?;
            }
        }
        let at = out.len();
        serde_json::to_writer(&mut out, &params)?;
        // The params' own object, `_meta` skipped: its members go on after `_meta`.
        debug_assert_eq!(out.get(at), Some(&b'{'));
        if out[at..] == *b"{}" {
            out.truncate(at);
            out.push(b'}');
        } else {
            out[at] = b',';
        }
        out.push(b'}');
        Ok(out)
    }
}

fn meta_json(meta: &RequestMetaObject) -> Vec<u8> {
    serde_json::to_vec(meta).expect("a map with string keys serializes")
}
