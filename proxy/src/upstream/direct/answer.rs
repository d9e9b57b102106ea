//! Reading a direct call's answer the way rmcp's client reads it: a JSON body or an event
//! stream (decoded by the shared bounded decoder), size-limited, with a fast path for the
//! common `CallToolResult`, and the connection handed back to the pool when possible.

use std::sync::{Arc, Weak};

use http::{HeaderMap, StatusCode};
use rmcp::model::{
    CallToolResult, RequestId, ServerJsonRpcMessage, ServerNotification, ServerResult,
};
use rmcp::service::ServiceError;
use serde_json::value::RawValue;

use super::client::{DirectClient, DirectError, protocol};
use crate::upstream::h1::H1Response;
use crate::upstream::relay::Route;

/// Largest JSON answer read (rmcp's `max_json_response_size` default).
pub(super) const MAX_JSON_ANSWER: usize = 16 * 1024 * 1024;
/// Largest single SSE event read (rmcp's default SSE event size limit).
pub(super) const MAX_SSE_EVENT: usize = 16 * 1024 * 1024;
/// How much of a failed answer's body is kept for the log.
pub(super) const ERROR_BODY_PREFIX: usize = 300;

pub(super) const EVENT_STREAM: &str = "text/event-stream";
pub(super) const JSON: &str = "application/json";

impl DirectClient {
    /// Reads the answer to the request `id`.
    pub(super) async fn answer(
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
        let mut decoder = sse::Decoder::new(MAX_SSE_EVENT);
        let mut events = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            decoder
                .feed(&chunk, &mut events)
                .map_err(DirectError::from)?;
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
    pub(super) fn on_message(
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
                    _ => crate::upstream::client::log_message(&self.name, &n.params),
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
pub(super) fn call_tool_result(json: &[u8], id: &RequestId) -> Option<CallToolResult> {
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
pub(super) struct ResultKeys {
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
pub(super) const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How much of an event stream is read after the answer before its connection is given up.
pub(super) const RELEASE_BYTES: usize = 64 * 1024;

/// Lets the connection of an answered event stream go back to the pool. A stream dropped
/// before its end closes its connection, and the next call pays for a new one; the end
/// usually follows the answer at once, so it is read now if it is there, else by a short
/// task, bounded in time and bytes (a server that keeps the stream open loses the connection).
pub(super) fn release(mut response: Answer) {
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
pub(super) enum Answer {
    Reqwest(reqwest::Response),
    H1(H1Response),
}

impl Answer {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Answer::Reqwest(r) => r.status(),
            Answer::H1(r) => r.status(),
        }
    }

    pub(super) fn headers(&self) -> &HeaderMap {
        match self {
            Answer::Reqwest(r) => r.headers(),
            Answer::H1(r) => r.headers(),
        }
    }

    pub(super) fn content_length(&self) -> Option<u64> {
        match self {
            Answer::Reqwest(r) => r.content_length(),
            Answer::H1(r) => r.content_length(),
        }
    }

    /// The next piece of the body; `None` at its end.
    pub(super) async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, DirectError> {
        Ok(match self {
            Answer::Reqwest(r) => r.chunk().await?,
            Answer::H1(r) => r.chunk().await?,
        })
    }
}

/// Whether a `Content-Type` value names `mime` (parameters and case ignored).
pub(super) fn media_type_is(content_type: &[u8], mime: &str) -> bool {
    let essence = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(mime.as_bytes())
}

pub(super) async fn read_bounded(
    response: &mut Answer,
    limit: usize,
) -> Result<Vec<u8>, ServiceError> {
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
pub(super) async fn read_prefix(response: &mut Answer) -> String {
    let mut out = Vec::new();
    while out.len() < ERROR_BODY_PREFIX * 4
        && let Ok(Some(chunk)) = response.chunk().await
    {
        out.extend_from_slice(&chunk);
    }
    prefix(&out)
}

pub(super) fn prefix(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_PREFIX * 4)])
        .chars()
        .take(ERROR_BODY_PREFIX)
        .collect()
}
