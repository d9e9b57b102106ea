//! The fast path for the hot request: a `tools/call`, stateless 2026-07-28 or on a legacy
//! (2025-era) session.
//!
//! rmcp's Streamable HTTP service answers a stateless request by spawning a serve loop with a
//! one-shot transport for it, and passing the request and its answer through channels between
//! tasks. That machinery is most of the portal's own CPU per call. A `tools/call` with the
//! 2026-07-28 `_meta` envelope needs none of it: there is no session, nothing to stream back
//! (the call asks for no progress), and the answer is one JSON object.
//!
//! [`FastPath::answer`] (called by the validation layer once the body is parsed) answers
//! exactly those requests itself, through the same [`Portal::call_tool`]
//! pipeline (authorization, rate limits, DLP, audit, metrics) the rmcp handler uses. It is
//! deliberately narrow: every request it is not sure about — other methods, sessions, progress
//! tokens, Code Mode, an `Origin` header, unusual `Accept` values, SEP-2243 headers that are
//! missing, duplicated or encoded, a `_meta` envelope that is incomplete — goes on to rmcp
//! unchanged, so rmcp keeps producing every protocol error (-32020/-32021/-32022, 400, 406,
//! 415, 403). What it answers is byte-for-byte what rmcp answers
//! (`proxy/tests/portal.rs::the_fast_path_answers_exactly_as_rmcp_does` compares the two).
//!
//! A legacy session's `tools/call` costs rmcp more still: the session lookup, a channel to the
//! session's worker task, a task per request, and a channel back for the answer stream.
//! [`FastPath::answer`] serves those too, after opening the sealed session id once
//! ([`super::session`]), when nothing in the call needs the session's worker:
//!
//! - the client declared neither sampling nor elicitation in its `initialize` (requests from an
//!   upstream to the client need rmcp's session to carry the client's answer back; such
//!   sessions stay with rmcp, which relays them);
//! - the `_meta` carries no per-request protocol version, and the `MCP-Protocol-Version` header
//!   names a legacy version (what rmcp checks for a session's request).
//!
//! What an upstream sends while the call runs — progress for the client's token, log messages
//! at or above the session's level — is relayed on the answer's own SSE stream ([`Sink::Stream`]):
//! the answer is an event stream as rmcp's is. A call that ends before anything was sent (the
//! common case) is answered with one complete body, `data: <message>` and no stream machinery;
//! otherwise the answer streams, notifications first, with a keep-alive comment every 15 s
//! like rmcp's. Unlike rmcp's streams, this one has no event ids (there is nothing to resume:
//! the answer is the stream's last event). A `notifications/cancelled` for such a call
//! reaches it through [`InFlight`]. The same checks run (authentication, the session's owner,
//! policy, DLP, audit), and rmcp's answers and this path's carry the same JSON-RPC message
//! (`proxy/tests/portal.rs::the_legacy_fast_path_answers_as_rmcp_does`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt as _;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ErrorCode, JsonRpcVersion2_0,
    ProtocolVersion, RequestId, ServerJsonRpcMessage, ServerNotification, ServerResult,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::session::{Opened, OpenedSession, SessionSeal};
use crate::portal::context::{CallContext, Origin};
use crate::portal::{Portal, code_tools};
use crate::upstream::relay::{Downstream, Sink};

/// A POST body that is a `tools/call` message, parsed once by [`super::validate`] straight into
/// rmcp's types (see [`parse_call`]).
#[derive(Clone, Debug)]
pub struct ParsedCall {
    id: RequestId,
    params: CallToolRequestParams,
}

/// The wire form of a `tools/call` message this layer may answer: exactly these four members.
/// Anything else (another method, a missing or `null` id, an extra or duplicated member, a
/// version other than "2.0") fails to parse and is left to the general path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[allow(dead_code)] // checked by its type
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    #[serde(borrow)]
    method: Cow<'a, str>,
    params: CallToolRequestParams,
}

/// `body` as a `tools/call` message in the exact shape this layer answers, parsed once into the
/// types the pipeline takes (no intermediate `serde_json::Value`). `None` for every other body.
pub fn parse_call(body: &[u8]) -> Option<ParsedCall> {
    let wire: Wire<'_> = serde_json::from_slice(body).ok()?;
    (wire.method == "tools/call").then_some(ParsedCall {
        id: wire.id,
        params: wire.params,
    })
}

/// State of the fast path.
#[derive(Clone)]
pub struct FastPath {
    portal: Arc<Portal>,
    /// Whether rmcp checks `Host` against loopback names (the listener is on loopback).
    loopback: bool,
    /// Opens legacy session ids (the same sealer as the session layer's).
    seal: Arc<SessionSeal>,
    /// Legacy-session calls in flight here, for `notifications/cancelled`.
    in_flight: Arc<InFlight>,
}

impl FastPath {
    /// The fast path for `portal`; `loopback` as in [`super::ServeOptions`], `seal` the
    /// session layer's.
    pub fn new(portal: Arc<Portal>, loopback: bool, seal: Arc<SessionSeal>) -> Self {
        FastPath {
            portal,
            loopback,
            seal,
            in_flight: Arc::default(),
        }
    }
}

/// Legacy-session calls answered by the fast path, by (rmcp's session id, JSON-RPC id).
///
/// A client cancels a call with a `notifications/cancelled` POST of its own, which goes to
/// rmcp's session; rmcp never saw a call answered here, so the notification is also looked up
/// here ([`FastPath::cancelled`]).
#[derive(Default)]
pub struct InFlight {
    calls: Mutex<HashMap<(String, RequestId), (u64, CancellationToken)>>,
    next: AtomicU64,
}

/// A call's entry in [`InFlight`], removed when the call ends.
struct Registration {
    in_flight: Arc<InFlight>,
    key: (String, RequestId),
    generation: u64,
}

impl InFlight {
    fn register(self: &Arc<Self>, key: (String, RequestId), ct: CancellationToken) -> Registration {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(key.clone(), (generation, ct));
        }
        Registration {
            in_flight: self.clone(),
            key,
            generation,
        }
    }

    fn cancel(&self, session: &str, id: &RequestId) -> bool {
        let key = (session.to_owned(), id.clone());
        let ct = self
            .calls
            .lock()
            .ok()
            .and_then(|calls| calls.get(&key).map(|(_, ct)| ct.clone()));
        ct.inspect(CancellationToken::cancel).is_some()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.in_flight.calls.lock()
            // A reused id registered later is that call's entry, not this one's.
            && calls.get(&self.key).is_some_and(|(g, _)| *g == self.generation)
        {
            calls.remove(&self.key);
        }
    }
}

const MODERN: &str = "2026-07-28";
const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";

impl FastPath {
    /// Answers `call` (the body of the request whose head is `parts`) when it is a plain
    /// stateless `tools/call`; `None` when it is not, and the request goes on to rmcp.
    ///
    /// Called by [`super::validate`] right after it parsed the body, rather than from a layer
    /// of its own: a layer costs a boxed future and a clone and drop of the whole service stack
    /// below it on every request (measured at over a tenth of the proxy's instructions per
    /// call).
    ///
    /// An answered request's header map is taken from `parts` and becomes the answer's: hyper
    /// parses the connection's next request into the map of the last answer, so it is then
    /// already large enough, and no map is allocated or freed per call.
    pub async fn answer(
        &self,
        call: ParsedCall,
        parts: &mut http::request::Parts,
    ) -> Option<Response> {
        let seen = Seen::of(&parts.headers);
        if !seen.transport_qualifies(self.loopback) || parts.uri.authority().is_some() {
            return None;
        }
        if seen.session.present() {
            let token = seen.legacy_call_qualifies(&call)?;
            // A token that does not open goes on to the session layer, which answers 404.
            let session = self.seal.open_cached(token).ok()?;
            return self.answer_legacy(call, session, parts).await;
        }
        if seen.protocol_version.single() != Some(MODERN) {
            return None;
        }
        // Only whether it declares tasks is kept: the capabilities are not held across the
        // call (the future would carry them).
        let tasks_declared = seen.call_qualifies(&call)?.supports_tasks();
        // Taken, not cloned: from here on the request is answered here, and nothing else reads
        // its extensions.
        let identity = parts
            .extensions
            .remove::<crate::model::Identity>()
            .unwrap_or_else(crate::model::Identity::nobody);
        self.portal.metrics.fast_path_calls.inc();
        let headers = std::mem::take(&mut parts.headers);
        Some(answer(&self.portal, call, identity, tasks_declared, headers).await)
    }
}

impl FastPath {
    /// Answers a legacy session's call (the session opened: rmcp's id, the client's
    /// `initialize`, the owner) when nothing in it needs rmcp's session worker; otherwise
    /// leaves the opened session on the request for the session layer and returns `None`.
    async fn answer_legacy(
        &self,
        call: ParsedCall,
        session: Arc<OpenedSession>,
        parts: &mut http::request::Parts,
    ) -> Option<Response> {
        let subject = parts
            .extensions
            .get::<crate::model::Identity>()
            .map_or("", |i| i.subject.as_str());
        let capabilities = &session.state.initialize_params.capabilities;
        // Someone else's session is the session layer's to refuse (404, as for an unknown id).
        if session.owner != subject
            || capabilities.sampling.is_some()
            || capabilities.elicitation.is_some()
        {
            parts.extensions.insert(Opened(session));
            return None;
        }
        let identity = parts
            .extensions
            .remove::<crate::model::Identity>()
            .unwrap_or_else(crate::model::Identity::nobody);
        self.portal.metrics.fast_path_legacy_calls.inc();
        let headers = std::mem::take(&mut parts.headers);
        let ParsedCall { id, mut params } = call;
        let ct = CancellationToken::new();
        let registration = self
            .in_flight
            .register((session.internal.clone(), id.clone()), ct.clone());
        let (tx, rx) = mpsc::channel(RELAY_BUFFER);
        let tasks_declared = capabilities.supports_tasks();
        let ctx = CallContext {
            ct,
            downstream: Some(Downstream {
                sink: Sink::Stream(tx.clone()),
                request_id: id.clone(),
                progress: params.meta.as_ref().and_then(|m| m.get_progress_token()),
                // A legacy session (its header names a legacy version): the version in its
                // `initialize` is what the client asked for, not what was negotiated.
                accepts_requests: true,
                capabilities: capabilities.clone(),
                session: Some(session.internal.clone()),
            }),
            origin: Origin::Direct,
            subject: identity.subject.clone(),
            identity,
            session: Some(session.tag.clone()),
        };
        let portal = self.portal.clone();
        let call = Box::pin(async move {
            let _registration = registration;
            let arguments = params.arguments.take();
            let result = portal
                .call_tool(&params.name, arguments, Some(&params), &ctx)
                .await
                .and_then(|response| task_checked(response, tasks_declared))
                .and_then(legacy_shape);
            match result {
                Ok(result) => ServerJsonRpcMessage::response(result, id),
                Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
            }
        });
        Some(event_stream_answer(call, Relayed { rx, _keep: tx }, headers).await)
    }

    /// Looks up the call a legacy session's `notifications/cancelled` (`message`, on the
    /// request whose head is `parts`) names among the calls answered here, and cancels it.
    /// The notification goes on to rmcp either way (it may name a call rmcp serves); the
    /// session opened here is left on the request for the session layer.
    pub fn cancelled(&self, message: &serde_json::Value, parts: &mut http::request::Parts) {
        let Some(token) = parts
            .headers
            .get(super::session::SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        let Some(id) = message
            .pointer("/params/requestId")
            .and_then(|v| serde_json::from_value::<RequestId>(v.clone()).ok())
        else {
            return;
        };
        let Ok(session) = self.seal.open_cached(token) else {
            return;
        };
        let subject = parts
            .extensions
            .get::<crate::model::Identity>()
            .map_or("", |i| i.subject.as_str());
        if session.owner == subject && self.in_flight.cancel(&session.internal, &id) {
            tracing::debug!("a fast-path call was cancelled by its client");
        }
        parts.extensions.insert(Opened(session));
    }
}

/// Notifications for one fast-path answer that may wait for the client; beyond them, what an
/// upstream sends is dropped rather than queued without bound.
const RELAY_BUFFER: usize = 256;
/// A comment on a streaming answer this often, as rmcp's streams send (proxies in between
/// close connections that stay silent).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

type CallFuture = Pin<Box<dyn Future<Output = ServerJsonRpcMessage> + Send>>;

/// `message` as one SSE event.
fn push_event<T: serde::Serialize>(out: &mut Vec<u8>, message: &T) {
    out.extend_from_slice(b"data: ");
    if let Err(e) = serde_json::to_writer(&mut *out, message) {
        tracing::error!(error = %e, "cannot encode an event of a tools/call answer");
    }
    out.extend_from_slice(b"\n\n");
}

fn push_notification(out: &mut Vec<u8>, notification: ServerNotification) {
    push_event(out, &ServerJsonRpcMessage::notification(notification));
}

/// The notifications relayed to one answer, and a sender of our own kept until the receiver is
/// gone. Without it the call's sender, dropped when the call ends, would be the last: closing
/// the channel wakes the receiver's task — the one running the call, which had polled it — so
/// every call was polled once more and, on the multi-threaded runtime, woke another worker (a
/// futex call per answer, seen with `strace -c`).
struct Relayed {
    rx: mpsc::Receiver<ServerNotification>,
    _keep: mpsc::Sender<ServerNotification>,
}

/// Every notification already waiting, then the answer.
fn last_events(relayed: Relayed, message: &ServerJsonRpcMessage) -> Bytes {
    let Relayed { mut rx, _keep } = relayed;
    let mut out = Vec::with_capacity(256);
    while let Ok(n) = rx.try_recv() {
        push_notification(&mut out, n);
    }
    push_event(&mut out, message);
    // The receiver first: once it is gone, dropping the last sender wakes nobody.
    drop(rx);
    drop(_keep);
    Bytes::from(out)
}

/// The answer of a legacy session's call: an event stream, as rmcp's are. While `call` runs,
/// notifications from `rx` are sent first; when `call` ends before any (and before the first
/// keep-alive), the answer is one complete body.
async fn event_stream_answer(
    mut call: CallFuture,
    mut relayed: Relayed,
    mut headers: HeaderMap,
) -> Response {
    headers.clear();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(SSE));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    let keep_alive = tokio::time::sleep(KEEP_ALIVE);
    tokio::pin!(keep_alive);
    let first = tokio::select! {
        biased;
        message = &mut call => {
            let mut response = Response::new(Body::from(last_events(relayed, &message)));
            *response.headers_mut() = headers;
            return response;
        }
        Some(n) = relayed.rx.recv() => {
            let mut out = Vec::new();
            push_notification(&mut out, n);
            Bytes::from(out)
        }
        () = &mut keep_alive => Bytes::from_static(b":\n\n"),
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = futures::stream::unfold(Some((call, relayed, tick)), |state| async move {
        let (mut call, mut relayed, mut tick) = state?;
        enum Next {
            Done(ServerJsonRpcMessage),
            Notification(ServerNotification),
            KeepAlive,
        }
        let next = tokio::select! {
            biased;
            message = &mut call => Next::Done(message),
            Some(n) = relayed.rx.recv() => Next::Notification(n),
            _ = tick.tick() => Next::KeepAlive,
        };
        Some(match next {
            Next::Done(message) => (last_events(relayed, &message), None),
            Next::Notification(n) => {
                let mut out = Vec::new();
                push_notification(&mut out, n);
                (Bytes::from(out), Some((call, relayed, tick)))
            }
            Next::KeepAlive => (Bytes::from_static(b":\n\n"), Some((call, relayed, tick))),
        })
    });
    let stream = futures::stream::once(async move { first })
        .chain(live)
        .map(Ok::<_, std::convert::Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    *response.headers_mut() = headers;
    response
}

/// As rmcp's server handler for a peer of a version before 2026-07-28: no input-required
/// results, and the legacy shape of the others (no `resultType: "complete"`, no non-object
/// tool output; SEP-2106).
fn legacy_shape(mut result: ServerResult) -> Result<ServerResult, rmcp::ErrorData> {
    if matches!(result, ServerResult::InputRequiredResult(_)) {
        return Err(rmcp::ErrorData::invalid_request(
            "InputRequiredResult requires negotiated protocol version 2026-07-28 or newer",
            None,
        ));
    }
    result.strip_result_type_for_legacy_peer();
    result.strip_non_object_output_for_legacy_peer();
    Ok(result)
}

/// As rmcp's server handler: never hand a task to a client that cannot take one.
fn task_checked(
    response: CallToolResponse,
    tasks_declared: bool,
) -> Result<ServerResult, rmcp::ErrorData> {
    if matches!(response, CallToolResponse::Task(_)) && !tasks_declared {
        return Err(rmcp::ErrorData::missing_required_client_capability(
            rmcp::model::ClientCapabilities::builder()
                .enable_tasks()
                .build(),
        ));
    }
    Ok(ServerResult::from(response))
}

/// Runs the call through the portal's pipeline and encodes the answer as rmcp would, with
/// `headers` (the request's, cleared here) as the answer's header map.
async fn answer(
    portal: &Portal,
    call: ParsedCall,
    identity: crate::model::Identity,
    tasks_declared: bool,
    mut headers: HeaderMap,
) -> Response {
    let ParsedCall { id, mut params } = call;
    // rmcp gives every stateless request its own token, cancelled when the client goes away;
    // here the whole future is dropped then, which cancels the upstream call the same way.
    let ctx = CallContext {
        ct: CancellationToken::new(),
        // Nothing is relayed to a fast-path caller: it asked for no progress, and a 2026-07-28
        // client is sent no server requests (logging, deprecated by SEP-2577, stays in the log).
        downstream: None,
        origin: Origin::Direct,
        subject: identity.subject.clone(),
        identity,
        session: None,
    };
    let arguments = params.arguments.take();
    let result = portal
        .call_tool(&params.name, arguments, Some(&params), &ctx)
        .await
        .and_then(|response| task_checked(response, tasks_declared));
    let (message, status) = match result {
        Ok(result) => (ServerJsonRpcMessage::response(result, id), StatusCode::OK),
        Err(error) => {
            let status = status_of(error.code);
            (ServerJsonRpcMessage::error(error, Some(id)), status)
        }
    };
    match serde_json::to_vec(&message) {
        Ok(body) => {
            headers.clear();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a tools/call answer");
            internal_error()
        }
    }
}

fn internal_error() -> Response {
    let mut response = Response::new(Body::from("Internal Server Error"));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// The HTTP status rmcp gives a JSON-RPC error on the 2026-07-28 path (the request's `_meta`
/// is known to be complete here).
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// A header the fast path reads: absent, one value, or more than one.
#[derive(Clone, Copy, Default)]
enum Slot<'a> {
    #[default]
    Absent,
    One(&'a HeaderValue),
    Many,
}

impl<'a> Slot<'a> {
    fn push(&mut self, value: &'a HeaderValue) {
        *self = match self {
            Slot::Absent => Slot::One(value),
            _ => Slot::Many,
        };
    }

    fn present(&self) -> bool {
        !matches!(self, Slot::Absent)
    }

    /// The value, when there is exactly one and it is text.
    fn single(&self) -> Option<&'a str> {
        match self {
            Slot::One(v) => v.to_str().ok(),
            _ => None,
        }
    }
}

/// The request headers the fast path reads, found in one pass over the map. Looking each one
/// up by name hashes the name every time, which cost more than all the checks on them.
#[derive(Default)]
struct Seen<'a> {
    session: Slot<'a>,
    origin: Slot<'a>,
    protocol_version: Slot<'a>,
    content_type: Slot<'a>,
    accept: Slot<'a>,
    host: Slot<'a>,
    method: Slot<'a>,
    name: Slot<'a>,
}

impl<'a> Seen<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut seen = Seen::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                crate::http::session::SESSION_HEADER => &mut seen.session,
                "origin" => &mut seen.origin,
                "mcp-protocol-version" => &mut seen.protocol_version,
                "content-type" => &mut seen.content_type,
                "accept" => &mut seen.accept,
                "host" => &mut seen.host,
                "mcp-method" => &mut seen.method,
                "mcp-name" => &mut seen.name,
                _ => continue,
            };
            slot.push(value);
        }
        seen
    }

    /// The transport-level conditions under which rmcp would accept the request without a
    /// word, the protocol version and session aside: both media types accepted (no quality
    /// values), a JSON body, no `Origin`, an allowed `Host`.
    fn transport_qualifies(&self, loopback: bool) -> bool {
        if self.origin.present() {
            return false;
        }
        let Some(content_type) = self.content_type.single() else {
            return false;
        };
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case(JSON) {
            return false;
        }
        let Some(accept) = self.accept.single() else {
            return false;
        };
        let (mut json, mut sse) = (false, false);
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let essence = parts.next().unwrap_or_default().trim();
            if parts.next().is_some() {
                // Parameters (quality values): rmcp's own parser decides.
                return false;
            }
            json |= essence.eq_ignore_ascii_case(JSON);
            sse |= essence.eq_ignore_ascii_case(SSE);
        }
        if !(json && sse) {
            return false;
        }
        !loopback || self.host.single().is_some_and(is_loopback_host)
    }

    /// The session id when `call` on a legacy session needs nothing of rmcp's session worker
    /// that the request shows: one session id, a legacy `MCP-Protocol-Version` header, no
    /// per-request protocol version in `_meta` (rmcp would check it against the header), and
    /// not a Code Mode tool. (What the client declared is known once the id is opened.)
    fn legacy_call_qualifies(&self, call: &ParsedCall) -> Option<&'a str> {
        let version = self.protocol_version.single()?;
        if !ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .any(|v| v.as_str() == version && v.has_initialize())
        {
            return None;
        }
        if call
            .params
            .meta
            .as_ref()
            .is_some_and(|m| m.protocol_version().is_some())
            || code_tools::is_code_mode_tool(&call.params.name)
        {
            return None;
        }
        self.session.single()
    }

    /// The caller's capabilities when `call` is a plain 2026-07-28 `tools/call` whose SEP-2243
    /// headers agree with it and whose `_meta` is complete and asks for no progress; `None`
    /// otherwise.
    fn call_qualifies(&self, call: &ParsedCall) -> Option<ClientCapabilities> {
        if self.method.single() != Some("tools/call") {
            return None;
        }
        let params = &call.params;
        let meta = params.meta.as_ref()?;
        if meta.contains_key("progressToken") {
            return None;
        }
        let name = self.name.single()?;
        // An encoded name (`=?base64?...?=`) is rmcp's to decode.
        if name != params.name || name.starts_with("=?") || code_tools::is_code_mode_tool(name) {
            return None;
        }
        complete_modern_meta(meta)
    }
}

/// The capabilities in `meta` when it is a complete 2026-07-28 `_meta`: its protocol version
/// is 2026-07-28 and no key rmcp requires of that version is missing or invalid (rmcp's
/// `missing_required_keys`, which needs the version and the capabilities, each decoded from a
/// copy of its value: done once here, and the capabilities kept for the answer).
fn complete_modern_meta(meta: &rmcp::model::RequestMetaObject) -> Option<ClientCapabilities> {
    if meta.protocol_version()? != ProtocolVersion::V_2026_07_28 {
        return None;
    }
    meta.client_capabilities()
}

/// Whether `host` (a `Host` header) names loopback as rmcp's default allowed hosts do.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, "")) => inner,
            Some((inner, port)) if port.strip_prefix(':').is_some_and(is_port) => inner,
            _ => return false,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    matches!(name, "127.0.0.1" | "localhost" | "::1")
}

fn is_port(s: &str) -> bool {
    s.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the headers qualify for the modern fast path (as [`FastPath::answer`] checks).
    fn headers_qualify(headers: &HeaderMap, loopback: bool) -> bool {
        let seen = Seen::of(headers);
        seen.transport_qualifies(loopback)
            && !seen.session.present()
            && seen.protocol_version.single() == Some(MODERN)
    }

    fn call_qualifies(call: &ParsedCall, headers: &HeaderMap) -> bool {
        Seen::of(headers).call_qualifies(call).is_some()
    }

    #[test]
    fn a_complete_modern_meta_is_what_rmcp_requires() {
        let version = "io.modelcontextprotocol/protocolVersion";
        let caps = "io.modelcontextprotocol/clientCapabilities";
        let metas = [
            json!({version: MODERN, caps: {}}),
            json!({version: MODERN, caps: {"tasks": {}}, "io.modelcontextprotocol/clientInfo": {}}),
            json!({version: MODERN}),
            json!({version: MODERN, caps: 3}),
            json!({version: MODERN, caps: null}),
            json!({version: "2025-11-25", caps: {}}),
            json!({version: 20260728, caps: {}}),
            json!({caps: {}}),
            json!({}),
        ];
        for meta in metas {
            let object: rmcp::model::RequestMetaObject =
                serde_json::from_value(meta.clone()).unwrap();
            let rmcp_says = object.protocol_version() == Some(ProtocolVersion::V_2026_07_28)
                && object
                    .missing_required_keys(&ProtocolVersion::V_2026_07_28)
                    .is_empty();
            let ours = complete_modern_meta(&object);
            assert_eq!(ours.is_some(), rmcp_says, "{meta}");
            assert_eq!(
                ours,
                object.client_capabilities().filter(|_| rmcp_says),
                "{meta}"
            );
        }
    }
    use serde_json::{Value, json};

    /// The call, when `body` parses as one and qualifies.
    fn call_of(body: Value, headers: &HeaderMap) -> Option<ParsedCall> {
        let call = parse_call(&serde_json::to_vec(&body).unwrap())?;
        call_qualifies(&call, headers).then_some(call)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn good_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "a_echo"),
            ("host", "127.0.0.1:8080"),
        ]
    }

    fn good_body() -> Value {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "a_echo", "arguments": {"message": "hi"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }})
    }

    #[test]
    fn a_plain_modern_call_qualifies() {
        let h = headers(&good_headers());
        assert!(headers_qualify(&h, true));
        let call = call_of(good_body(), &h).expect("qualifies");
        assert_eq!(call.id, RequestId::Number(7));
        assert_eq!(call.params.name, "a_echo");
    }

    #[test]
    fn anything_rmcp_must_judge_goes_to_rmcp() {
        let without = |name: &str| {
            let h: Vec<_> = good_headers()
                .into_iter()
                .filter(|(k, _)| *k != name)
                .collect();
            headers(&h)
        };
        let with = |extra: (&'static str, &'static str)| {
            let mut h = good_headers();
            h.push(extra);
            headers(&h)
        };
        // Transport conditions.
        for missing in ["content-type", "accept", "mcp-protocol-version", "host"] {
            assert!(!headers_qualify(&without(missing), true), "{missing}");
        }
        assert!(!headers_qualify(
            &with(("origin", "http://127.0.0.1:1")),
            true
        ));
        assert!(!headers_qualify(&with(("mcp-session-id", "x")), true));
        assert!(!headers_qualify(
            &with(("mcp-protocol-version", MODERN)),
            true
        ));
        let mut h = good_headers();
        h[1] = ("accept", "application/json;q=0.5, text/event-stream");
        assert!(!headers_qualify(&headers(&h), true));
        h[1] = ("accept", "application/json");
        assert!(!headers_qualify(&headers(&h), true));
        let mut h = good_headers();
        h[2] = ("mcp-protocol-version", "2025-11-25");
        assert!(!headers_qualify(&headers(&h), true));
        let mut h = good_headers();
        h[5] = ("host", "evil.example:8080");
        assert!(!headers_qualify(&headers(&h), true));
        assert!(headers_qualify(&headers(&h), false));

        // SEP-2243 headers against the body.
        assert!(call_of(good_body(), &without("mcp-method")).is_none());
        assert!(call_of(good_body(), &without("mcp-name")).is_none());
        let mut h = good_headers();
        h[4] = ("mcp-name", "a_other");
        assert!(call_of(good_body(), &headers(&h)).is_none());
        assert!(call_of(good_body(), &with(("mcp-name", "a_echo"))).is_none());

        // The body.
        let h = headers(&good_headers());
        let mut b = good_body();
        b["params"]["_meta"]["progressToken"] = json!(1);
        assert!(call_of(b, &h).is_none(), "progress needs rmcp's stream");
        let mut b = good_body();
        b["params"]["_meta"]
            .as_object_mut()
            .unwrap()
            .remove("io.modelcontextprotocol/clientCapabilities");
        assert!(call_of(b, &h).is_none(), "incomplete _meta");
        let mut b = good_body();
        b["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2025-11-25");
        assert!(call_of(b, &h).is_none(), "version mismatch");
        let mut b = good_body();
        b["method"] = json!("tools/list");
        assert!(call_of(b, &h).is_none());
        let mut b = good_body();
        b["id"] = json!(null);
        assert!(call_of(b, &h).is_none());
        let mut b = good_body();
        b["extra"] = json!(1);
        assert!(call_of(b, &h).is_none());
        let mut b = good_body();
        b["params"]["name"] = json!(3);
        assert!(call_of(b, &h).is_none());
        let mut b = good_body();
        b["jsonrpc"] = json!("1.0");
        assert!(call_of(b, &h).is_none(), "validate answers a wrong version");
        // A duplicated member: serde_json's Value keeps the last, rmcp decides.
        let dup = serde_json::to_string(&good_body()).unwrap().replacen(
            "\"id\":7",
            "\"id\":7,\"id\":8",
            1,
        );
        assert!(dup.contains("\"id\":8"));
        assert!(parse_call(dup.as_bytes()).is_none());
    }

    #[test]
    fn code_mode_tools_go_to_rmcp() {
        for tool in [crate::codemode::EXECUTE_TOOL, crate::codemode::SEARCH_TOOL] {
            let mut h = good_headers();
            h[4] = ("mcp-name", tool);
            let mut b = good_body();
            b["params"]["name"] = json!(tool);
            assert!(call_of(b, &headers(&h)).is_none(), "{tool}");
        }
    }

    /// A waker that counts its wakes.
    struct Counting(AtomicU64);

    impl futures::task::ArcWake for Counting {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_legacy_answer_is_woken_once_when_its_call_ends() {
        let (tx, rx) = mpsc::channel(RELAY_BUFFER);
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        // As the call's context holds the relay's sender until the call ends.
        let sink = tx.clone();
        let call: CallFuture = Box::pin(async move {
            let _sink = sink;
            let _ = wait.await;
            ServerJsonRpcMessage::response(ServerResult::empty(()), RequestId::Number(1))
        });
        let mut answer = Box::pin(event_stream_answer(
            call,
            Relayed { rx, _keep: tx },
            HeaderMap::new(),
        ));
        let counter = Arc::new(Counting(AtomicU64::new(0)));
        let waker = futures::task::waker(counter.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(answer.as_mut().poll(&mut cx).is_pending());
        done.send(()).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken by the call");
        let std::task::Poll::Ready(response) = answer.as_mut().poll(&mut cx) else {
            panic!("the call ended: the answer is complete");
        };
        // Before `Relayed`, the call's sender was the last one: dropping it when the call
        // ended closed the channel and woke the task once more (an extra poll, and a worker
        // woken across threads).
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "no wake after the end");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(
            &body[..],
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
        );
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:80",
            "localhost:3000",
            "[::1]:9",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "127.0.0.2",
            "localhost.evil",
            "localhost:",
            "[::1]x",
            "a:b:c",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn error_statuses_match_rmcp() {
        assert_eq!(
            status_of(ErrorCode::HEADER_MISMATCH),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(ErrorCode::METHOD_NOT_FOUND),
            StatusCode::NOT_FOUND
        );
        assert_eq!(status_of(ErrorCode::INVALID_PARAMS), StatusCode::OK);
        assert_eq!(status_of(ErrorCode(-32029)), StatusCode::OK);
    }
}
