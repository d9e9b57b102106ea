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
//!
//! The files: [`client`] holds the client and builds the request; [`answer`] reads the answer
//! (JSON or an event stream, the latter through the shared bounded `sse` decoder). Which tools
//! fit the direct way is decided once per tool by the catalog (`fits_direct`, a layer above).

mod answer;
mod client;

pub use client::{DirectClient, DirectError};

#[cfg(test)]
use {
    super::{Upstream, oauth::TokenSource},
    crate::model::SignedIdentity,
    crate::upstream::relay::Relay,
    answer::*,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    rmcp::model::{
        CallToolRequestParams, RequestId, RequestMetaObject, ServerJsonRpcMessage, ServerResult,
    },
    rmcp::service::ServiceError,
    std::sync::atomic::Ordering,
    std::sync::{Arc, Weak},
};

#[cfg(test)]
mod tests;
