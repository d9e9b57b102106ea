//! `tools/call` straight to a stateless (2026-07-28) Streamable HTTP upstream.
//!
//! Through rmcp's client a call crosses the `Peer`, the service loop task, the Streamable HTTP
//! worker task and a spawned POST future, with channels back, and the worker serializes every
//! message to a `serde_json::Value` once more to build the SEP-2243 headers. For a stateless
//! upstream none of that is needed: a call is one POST whose answer is one JSON body or one SSE
//! stream. [`DirectClient`] makes that POST in the caller's own task and parses the answer into
//! rmcp's types. A plain `http://` upstream (the usual in-cluster case) is reached through the
//! in-task HTTP/1.1 client of [`super::h1`]; `https://` upstreams, and every upstream when a
//! proxy is configured in the environment, through reqwest. Everything else (discover, lists,
//! prompts, resources, `subscriptions/listen`, legacy-era, SSE and stdio upstreams, and calls
//! that want progress or `Mcp-Param-*` headers) stays on rmcp; see `Portal::call_tool_inner`
//! for when this path is taken.
//!
//! What goes on the wire is what rmcp's client sends for the same call at 2026-07-28: the
//! message serialized from rmcp's own types with `_meta` carrying the protocol version, the
//! portal's `clientInfo` and `clientCapabilities` (no `progressToken`: nobody asked for
//! progress); `Accept: text/event-stream, application/json`, `MCP-Protocol-Version`,
//! `Mcp-Method` and `Mcp-Name`; the configured headers, the portal's bearer token and, for
//! servers that opted in, the caller's signed identity. Answers are read the way rmcp's reqwest
//! client reads them (same size limits; JSON-RPC errors in JSON bodies of failed statuses pass
//! through as errors; 401/403/429 and other failed statuses are transport errors), with two
//! deliberate differences: a 401 with a token source is retried once with a fresh token, and an
//! answer that cannot carry our result (202, a notification in a JSON body, an SSE stream that
//! ends without the response) fails at once instead of waiting for the timeout.
//!
//! Cancellation: dropping the future drops the HTTP exchange and its connection; a stateless
//! rmcp server cancels the handler when its client goes away. rmcp's client does the same for
//! this era (it drops the request's stream and sends no `notifications/cancelled`).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicI64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ProtocolVersion, RequestId, RequestMetaObject,
    ServerJsonRpcMessage, ServerNotification, ServerResult,
};
use rmcp::service::ServiceError;
use rmcp::transport::DynamicTransportError;
use serde_json::value::RawValue;

use super::Upstream;
use super::h1::{H1Client, H1Error, H1Response};
use super::oauth::TokenSource;
use super::relay::{Relay, Route};
use crate::model::SignedIdentity;

/// Largest JSON answer read (rmcp's `max_json_response_size` default).
const MAX_JSON_ANSWER: usize = 16 * 1024 * 1024;
/// Largest single SSE event read (rmcp's default SSE event size limit).
const MAX_SSE_EVENT: usize = 16 * 1024 * 1024;
/// How much of a failed answer's body is kept for the log.
const ERROR_BODY_PREFIX: usize = 300;

const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";
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
    Token(String),
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

impl From<DirectError> for ServiceError {
    fn from(e: DirectError) -> Self {
        ServiceError::TransportSend(DynamicTransportError::from_parts(
            "direct streamable HTTP",
            std::any::TypeId::of::<DirectClient>(),
            Box::new(e),
        ))
    }
}

fn protocol(m: impl Into<Cow<'static, str>>) -> ServiceError {
    DirectError::Protocol(m.into()).into()
}

/// The `tools/call` client of one stateless Streamable HTTP upstream, living as long as the
/// supervisor's connection to it.
pub struct DirectClient {
    name: String,
    http: reqwest::Client,
    /// The in-task client for a plain `http://` upstream (see [`super::h1`]); `None` sends
    /// through `http`.
    h1: Option<Arc<H1Client>>,
    url: reqwest::Url,
    /// Accept, Content-Type, the configured headers (sensitive), MCP-Protocol-Version and
    /// Mcp-Method: the same on every call.
    headers: HeaderMap,
    tokens: Option<Arc<TokenSource>>,
    identity_header: Option<HeaderName>,
    /// The client context SEP-2575 wants in every request's `_meta`.
    meta: RequestMetaObject,
    /// `meta` serialized, as it goes into every call that brings no `_meta` of its own.
    meta_json: Vec<u8>,
    next_id: AtomicI64,
    upstream: Weak<Upstream>,
    /// Where logs that arrive on a call's answer go (the portal), when it relays them.
    relay: Option<Weak<dyn Relay>>,
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
        let h1 = H1Client::for_url(&url, super::CONNECT_TIMEOUT).map(Arc::new);
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
        let config = super::client::client_config(false);
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
    fn without_h1(mut self) -> Self {
        self.h1 = None;
        self
    }

    /// Relays logs that arrive on a call's answer through `relay` (the portal), and announces
    /// the capabilities the rmcp connection to the same upstream announces when it relays.
    pub fn with_relay(mut self, relay: Option<Weak<dyn Relay>>) -> Self {
        let relays = relay.is_some();
        self.relay = relay;
        self.meta
            .set_client_capabilities(super::client::client_config(relays).capabilities);
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
                    .map_err(|_| DirectError::Token("not a header value".into()))?;
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
    fn request_body(
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

    /// Reads the answer to the request `id`.
    async fn answer(
        &self,
        mut response: Answer,
        id: &RequestId,
        route: Option<&Arc<Route>>,
    ) -> Result<ServerResult, ServiceError> {
        let status = response.status();
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        let is = |mime: &str| {
            content_type
                .as_ref()
                .is_some_and(|ct| media_type_is(ct.as_bytes(), mime))
        };
        if !status.is_success() {
            // As rmcp: a JSON body of a failed status may be the JSON-RPC error; but 401/403
            // are authentication failures and 429 a rate limit, whatever the body says.
            let auth = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            if is(JSON) && !auth && status != StatusCode::TOO_MANY_REQUESTS {
                let body = read_bounded(&mut response, MAX_JSON_ANSWER).await?;
                if let Ok(ServerJsonRpcMessage::Error(e)) = serde_json::from_slice(&body) {
                    return self
                        .on_message(ServerJsonRpcMessage::Error(e), id, route)
                        .unwrap_or_else(|| Err(protocol("error answer without a result")));
                }
                return Err(DirectError::Status {
                    status,
                    body: prefix(&body),
                }
                .into());
            }
            let body = read_prefix(&mut response).await;
            return Err(DirectError::Status { status, body }.into());
        }
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Err(protocol(format!("answered {status} to a request")));
        }
        if is(EVENT_STREAM) {
            return self.read_sse(response, id, route).await;
        }
        if is(JSON) {
            let body = read_bounded(&mut response, MAX_JSON_ANSWER).await?;
            if let Some(result) = call_tool_result(&body, id) {
                return Ok(ServerResult::CallToolResult(result));
            }
            let message: ServerJsonRpcMessage = serde_json::from_slice(&body).map_err(|e| {
                protocol(format!(
                    "JSON answer is not JSON-RPC: {e}: {}",
                    prefix(&body)
                ))
            })?;
            return match message {
                ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_) => self
                    .on_message(message, id, route)
                    .unwrap_or_else(|| Err(protocol("no result"))),
                _ => Err(protocol("a JSON answer that is not a response")),
            };
        }
        Err(protocol(format!(
            "content type {:?}",
            content_type
                .as_ref()
                .map(|ct| String::from_utf8_lossy(ct.as_bytes()))
                .unwrap_or_default()
        )))
    }

    async fn read_sse(
        &self,
        mut response: Answer,
        id: &RequestId,
        route: Option<&Arc<Route>>,
    ) -> Result<ServerResult, ServiceError> {
        let mut parser = SseParser::new(MAX_SSE_EVENT);
        let mut events = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            parser.feed(&chunk, &mut events)?;
            for event in events.drain(..) {
                // Only unnamed and `message` events carry JSON-RPC (as rmcp reads them); an
                // empty one is a priming event for resumption, which we never use.
                if !matches!(event.event.as_deref(), None | Some("" | "message"))
                    || event.data.trim().is_empty()
                {
                    continue;
                }
                if let Some(result) = call_tool_result(event.data.as_bytes(), id) {
                    release(response);
                    return Ok(ServerResult::CallToolResult(result));
                }
                match serde_json::from_str::<ServerJsonRpcMessage>(&event.data) {
                    Ok(message) => {
                        if let Some(done) = self.on_message(message, id, route) {
                            release(response);
                            return done;
                        }
                    }
                    // rmcp skips such events too; if the answer never comes, the stream's end
                    // or the timeout says so.
                    Err(e) => {
                        tracing::debug!(upstream = %self.name, error = %e, "SSE event that is not JSON-RPC skipped")
                    }
                }
            }
        }
        Err(protocol("event stream ended without the response"))
    }

    /// Handles one message of the answer: `Some` when it settles the call.
    fn on_message(
        &self,
        message: ServerJsonRpcMessage,
        id: &RequestId,
        route: Option<&Arc<Route>>,
    ) -> Option<Result<ServerResult, ServiceError>> {
        match message {
            ServerJsonRpcMessage::Response(r) if r.id == *id => Some(Ok(r.result)),
            ServerJsonRpcMessage::Response(r) => Some(Err(protocol(format!(
                "a response to another request ({})",
                r.id
            )))),
            // Without an id the server could not read our request; it is still the answer to it.
            ServerJsonRpcMessage::Error(e) if e.id.as_ref().is_none_or(|i| i == id) => {
                Some(Err(ServiceError::McpError(e.error)))
            }
            ServerJsonRpcMessage::Error(_) => Some(Err(protocol("an error for another request"))),
            ServerJsonRpcMessage::Notification(n) => {
                self.on_notification(n.notification, route);
                None
            }
            // The portal advertises no client capabilities, so a server has nothing to ask.
            ServerJsonRpcMessage::Request(r) => Some(Err(protocol(format!(
                "a server request (id {}) in the answer",
                r.id
            )))),
        }
    }

    fn on_notification(&self, n: ServerNotification, route: Option<&Arc<Route>>) {
        #[allow(deprecated)] // logging notifications (SEP-2577) are still sent
        match n {
            // On the call's own answer, so it is about this call: to its caller only (as the
            // rmcp path relays it), else to the portal's log.
            ServerNotification::LoggingMessageNotification(n) => {
                match (route, self.relay.as_ref().and_then(Weak::upgrade)) {
                    (Some(route), Some(relay)) => {
                        let route = route.clone();
                        tokio::spawn(async move { relay.log(route, n.params).await });
                    }
                    _ => super::client::log_message(&self.name, &n.params),
                }
            }
            ServerNotification::ToolListChangedNotification(_)
            | ServerNotification::PromptListChangedNotification(_)
            | ServerNotification::ResourceListChangedNotification(_) => {
                if let Some(up) = self.upstream.upgrade() {
                    up.request_refresh();
                }
            }
            // No progress token was sent, so progress is for nobody; the rest is not ours.
            _ => {}
        }
    }
}

fn meta_json(meta: &RequestMetaObject) -> Vec<u8> {
    serde_json::to_vec(meta).expect("a map with string keys serializes")
}

/// The answer to the request `id` in `json` when it is the common one, a response carrying a
/// `CallToolResult`, read without rmcp's `ServerJsonRpcMessage` parse; `None` when that cannot
/// be shown cheaply, and the caller parses the message as before.
///
/// rmcp's parse is most of the CPU this client spends on an answer: `JsonRpcMessage` buffers
/// the whole message into serde's `Content` to check its shape and once more for its untagged
/// variants, and `ServerResult` is an untagged union that tries fifteen result types (each a
/// walk over the buffered result) before `CallToolResult`. This reads the same text the same
/// way when the outcome is known in advance:
/// - the message is an object with exactly `jsonrpc: "2.0"`, `id` and `result` (no `method`,
///   no `error`, nothing else), so rmcp classifies it as a response; its `id` is a plain
///   integer equal to ours, so `on_message` settles the call with the result;
/// - the result is an object whose keys are all fields of `CallToolResult` (`content`,
///   `structuredContent`, `isError`, `resultType`, `_meta`), and not both `resultType` and
///   `_meta`. Every variant before `CallToolResult` in `ServerResult` requires a field outside
///   that set (`supportedVersions`, `protocolVersion`, `completion`, `messages`, `prompts`,
///   `resources`, `resourceTemplates`, `contents`, `tools`, `skills`, `skill`, `action`,
///   `taskId`), except `SubscriptionsListenResult`, which requires exactly `resultType` and
///   `_meta`; so rmcp's union reaches `CallToolResult` and takes it if it accepts the object;
/// - `CallToolResult`'s own `Deserialize` accepts the result, read from the same text (its
///   checks: one of `content`/`structuredContent`/`isError` present, `resultType`, if any,
///   `"complete"`). When it refuses, rmcp would go on to the later variants: `None`.
///
/// The result is then what rmcp's parse gives. Keys written with escapes, duplicate keys and
/// ids in any other form also give `None`; the tests compare both parses on a corpus.
fn call_tool_result(json: &[u8], id: &RequestId) -> Option<CallToolResult> {
    /// A response's members, unparsed. `deny_unknown_fields` refuses `method`, `error` and
    /// anything else; serde refuses a missing or repeated member.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Response<'a> {
        #[serde(borrow)]
        jsonrpc: &'a RawValue,
        #[serde(borrow)]
        id: &'a RawValue,
        #[serde(borrow)]
        result: &'a RawValue,
    }
    let RequestId::Number(ours) = id else {
        return None;
    };
    // A derived struct also reads a JSON array; rmcp's parse refuses one.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let response: Response = serde_json::from_slice(json).ok()?;
    let id = response.id.get();
    let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    if response.jsonrpc.get() != "\"2.0\"" || !plain || id.parse::<i64>() != Ok(*ours) {
        return None;
    }
    let result = response.result.get();
    if !result.starts_with('{') {
        return None;
    }
    let keys: ResultKeys = serde_json::from_str(result).ok()?;
    if keys.result_type && keys.meta {
        return None;
    }
    serde_json::from_str(result).ok()
}

/// Which of `CallToolResult`'s fields a result object has; refuses an object with any other
/// key (see [`call_tool_result`]).
#[derive(Default)]
struct ResultKeys {
    result_type: bool,
    meta: bool,
}

impl<'de> serde::Deserialize<'de> for ResultKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = ResultKeys;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a CallToolResult object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ResultKeys, A::Error> {
                let mut keys = ResultKeys::default();
                // Borrowed: a key written with escapes is refused rather than decoded.
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "resultType" => keys.result_type = true,
                        "_meta" => keys.meta = true,
                        "content" | "structuredContent" | "isError" => {}
                        _ => return Err(serde::de::Error::custom("not a CallToolResult field")),
                    }
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(keys)
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// How long the end of an event stream is awaited after the answer, so that its connection
/// can go back to the pool.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How much of an event stream is read after the answer before its connection is given up.
const RELEASE_BYTES: usize = 64 * 1024;

/// Lets the connection of an answered event stream go back to the pool. A stream dropped
/// before its end closes its connection, and the next call pays for a new one; the end
/// usually follows the answer at once, so it is read now if it is there, else by a short
/// task, bounded in time and bytes (a server that keeps the stream open loses the connection).
fn release(mut response: Answer) {
    use futures::FutureExt as _;
    match response.chunk().now_or_never() {
        Some(Ok(None)) | Some(Err(_)) => return,
        Some(Ok(Some(_))) | None => {}
    }
    tokio::spawn(async move {
        let mut read = 0;
        let _ = tokio::time::timeout(RELEASE_WAIT, async {
            while let Ok(Some(chunk)) = response.chunk().await {
                read += chunk.len();
                if read > RELEASE_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// An answer being read: from reqwest, or from the in-task HTTP/1.1 client.
enum Answer {
    Reqwest(reqwest::Response),
    H1(H1Response),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Reqwest(r) => r.status(),
            Answer::H1(r) => r.status(),
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Answer::Reqwest(r) => r.headers(),
            Answer::H1(r) => r.headers(),
        }
    }

    fn content_length(&self) -> Option<u64> {
        match self {
            Answer::Reqwest(r) => r.content_length(),
            Answer::H1(r) => r.content_length(),
        }
    }

    /// The next piece of the body; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, DirectError> {
        Ok(match self {
            Answer::Reqwest(r) => r.chunk().await?,
            Answer::H1(r) => r.chunk().await?,
        })
    }
}

/// Whether a `Content-Type` value names `mime` (parameters and case ignored).
fn media_type_is(content_type: &[u8], mime: &str) -> bool {
    let essence = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(mime.as_bytes())
}

async fn read_bounded(response: &mut Answer, limit: usize) -> Result<Vec<u8>, ServiceError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(DirectError::TooLarge { limit }.into());
    }
    let mut out = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > limit {
            return Err(DirectError::TooLarge { limit }.into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The start of a failed answer's body, for the log; read errors are not worth reporting.
async fn read_prefix(response: &mut Answer) -> String {
    let mut out = Vec::new();
    while out.len() < ERROR_BODY_PREFIX * 4
        && let Ok(Some(chunk)) = response.chunk().await
    {
        out.extend_from_slice(&chunk);
    }
    prefix(&out)
}

fn prefix(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_PREFIX * 4)])
        .chars()
        .take(ERROR_BODY_PREFIX)
        .collect()
}

/// One server-sent event.
#[derive(Debug, PartialEq)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

/// An incremental `text/event-stream` parser (the WHATWG rules: lines end with CRLF, LF or CR;
/// `data` lines are joined with LF; a blank line dispatches; comments and `id`/`retry` are
/// ignored) that refuses an event larger than its limit before buffering it.
struct SseParser {
    /// Bytes after the last complete line.
    partial: Vec<u8>,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in CR: a leading LF belongs to it.
    skip_lf: bool,
    started: bool,
    limit: usize,
}

impl SseParser {
    fn new(limit: usize) -> Self {
        SseParser {
            partial: Vec::new(),
            event: None,
            data: Vec::new(),
            has_data: false,
            skip_lf: false,
            started: false,
            limit,
        }
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), ServiceError> {
        let mut chunk = chunk;
        if !self.started && !chunk.is_empty() {
            // A UTF-8 byte order mark may open the stream.
            self.started = true;
            chunk = chunk.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(chunk);
        }
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            chunk = chunk.strip_prefix(b"\n").unwrap_or(chunk);
        }
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line_end = &rest[..end];
            let mut next = end + 1;
            if rest[end] == b'\r' {
                if next < rest.len() {
                    if rest[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    self.skip_lf = true;
                }
            }
            if self.partial.is_empty() {
                self.line(line_end, out)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(line_end);
                self.line(&line, out)?;
            }
            rest = &rest[next..];
        }
        self.partial.extend_from_slice(rest);
        if self.data.len() + self.partial.len() > self.limit {
            return Err(DirectError::TooLarge { limit: self.limit }.into());
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), ServiceError> {
        if line.is_empty() {
            let data = std::mem::take(&mut self.data);
            let event = self.event.take();
            if std::mem::take(&mut self.has_data) {
                let data = String::from_utf8(data)
                    .map_err(|_| protocol("an SSE event that is not UTF-8"))?;
                out.push(SseEvent { event, data });
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.has_data = true;
                self.data.extend_from_slice(value);
                if self.data.len() > self.limit {
                    return Err(DirectError::TooLarge { limit: self.limit }.into());
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
