//! First look at a POST body: bounded, JSON, one JSON-RPC message.
//!
//! rmcp answers a body that does not parse with a plain-text 415. Clients deserve a JSON-RPC
//! error they can show, so malformed input is answered here, before the protocol layer:
//! `-32700` for bytes that are not JSON, `-32600` for JSON that is not a JSON-RPC message, and
//! 413 with a JSON-RPC error for bodies over the portal's limit.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// State of the validation layer: the body limit, and the fast path it hands a plain modern
/// `tools/call` to.
#[derive(Clone)]
pub struct Validate {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Longest time reading the body may take (`spec.limits.bodyReadTimeoutSeconds`).
    pub body_timeout: std::time::Duration,
    /// Answers plain stateless `tools/call` requests without rmcp.
    pub fast: super::fast::FastPath,
}

fn rpc_error(status: StatusCode, code: i64, message: String) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (or the connection failed while reading).
    TooLarge,
    /// Not all there within the body read timeout.
    TimedOut,
}

/// Reads `body`, at most `max_bytes`, within `timeout` (from now, that is from the end of the
/// request's head). A client sending its body a byte at a time holds a connection and a task
/// for no longer than `timeout`.
pub async fn read_body(
    body: Body,
    max_bytes: usize,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, BodyError> {
    match tokio::time::timeout(timeout, to_bytes(body, max_bytes)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// 408 for a body that did not arrive within `timeout`, closing the connection (the rest of
/// the body is never read).
fn body_timed_out(timeout: std::time::Duration) -> Response {
    let mut resp = rpc_error(
        StatusCode::REQUEST_TIMEOUT,
        -32600,
        format!(
            "the request body did not arrive within {} s (spec.limits.bodyReadTimeoutSeconds)",
            timeout.as_secs()
        ),
    );
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// Checks a JSON-RPC message's shape; returns the reason it is not one.
fn shape_error(v: &Value) -> Option<&'static str> {
    let Some(obj) = v.as_object() else {
        return Some(if v.is_array() {
            "batches are not supported; send one JSON-RPC message per request"
        } else {
            "a JSON-RPC message must be an object"
        });
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some("\"jsonrpc\" must be \"2.0\"");
    }
    match obj.get("method") {
        Some(Value::String(m)) if m.len() > 256 => Some("method name too long"),
        Some(Value::String(_)) => None,
        Some(_) => Some("\"method\" must be a string"),
        // Responses to server requests carry no method but an id and a result or error.
        None if obj.contains_key("id")
            && (obj.contains_key("result") || obj.contains_key("error")) =>
        {
            None
        }
        None => Some("missing \"method\""),
    }
}

/// Axum middleware enforcing the body limit and JSON-RPC shape on POSTs, and answering plain
/// modern `tools/call` requests through [`super::fast`].
pub async fn middleware(State(limits): State<Validate>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    match check_post(&limits, req).await {
        Checked::Answered(response) => response,
        Checked::Forward(req) => next.run(req).await,
    }
}

/// What [`check_post`] made of a POST.
pub enum Checked {
    /// Answered here: a JSON-RPC error for a bad body, or the fast path's answer.
    Answered(Response),
    /// A well-formed message for the protocol layer (the body, read, put back).
    Forward(Request),
}

/// Reads a POST's body within the limit and checks it is one JSON-RPC message; a plain modern
/// `tools/call` is answered by the fast path when it qualifies.
pub async fn check_post(limits: &Validate, req: Request) -> Checked {
    let (mut parts, body) = req.into_parts();
    let bytes = match read_body(body, limits.max_bytes, limits.body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TimedOut) => {
            return Checked::Answered(body_timed_out(limits.body_timeout));
        }
        Err(BodyError::TooLarge) => {
            return Checked::Answered(rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                -32600,
                format!(
                    "request body exceeds the portal's limit of {} bytes",
                    limits.max_bytes
                ),
            ));
        }
    };
    // The hot request (a modern `tools/call`, announced by its `Mcp-Method` header, or a legacy
    // session's, which says so only in its body) is parsed once, straight into the fast path's
    // types. Everything the fast path does not answer is checked as a generic JSON value.
    let headers = &parts.headers;
    let call = (headers.get("mcp-method").is_some_and(|m| m == "tools/call")
        || headers.contains_key(super::session::SESSION_HEADER)
            && memchr::memmem::find(&bytes, b"\"tools/call\"").is_some())
    .then(|| super::fast::parse_call(&bytes))
    .flatten();
    if let Some(call) = call
        && let Some(answer) = limits.fast.answer(call, &mut parts).await
    {
        return Checked::Answered(answer);
    }
    // Every body the fast path did not answer is checked here, also one `parse_call` read: it
    // skips members it does not know without checking them (serde ignores them), so such a body
    // may still hold bytes that are not JSON, and those get their -32700 here, not from rmcp.
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Checked::Answered(rpc_error(
                StatusCode::BAD_REQUEST,
                -32700,
                format!("Parse error: {e}"),
            ));
        }
    };
    if let Some(reason) = shape_error(&value) {
        return Checked::Answered(rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            format!("Invalid Request: {reason}"),
        ));
    }
    if value.get("method").and_then(Value::as_str) == Some("notifications/cancelled") {
        // It may name a call the fast path answers, which rmcp never saw.
        limits.fast.cancelled(&value, &mut parts);
    }
    Checked::Forward(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_json_rpc_messages_are_checked() {
        assert_eq!(
            shape_error(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
            None
        );
        assert_eq!(
            shape_error(&json!({"jsonrpc": "2.0", "id": 1, "result": {}})),
            None
        );
        assert!(
            shape_error(&json!([{"jsonrpc": "2.0"}]))
                .unwrap()
                .contains("batches")
        );
        assert!(shape_error(&json!({"jsonrpc": "1.0", "method": "x"})).is_some());
        assert!(shape_error(&json!({"jsonrpc": "2.0", "method": 3})).is_some());
        assert!(shape_error(&json!({"jsonrpc": "2.0"})).is_some());
        assert!(shape_error(&json!("text")).is_some());
    }

    /// A portal without upstreams, for the validation layer's fast path.
    async fn limits() -> (Validate, tokio_util::sync::CancellationToken) {
        let yaml = "apiVersion: portcullis.dev/v1alpha1\nkind: McpPortal\n\
                    metadata: {name: p}\nspec: {public: true}\n";
        let mut m = crate::config::Manifests::default();
        crate::config::manifests::parse_into(&mut m, std::path::Path::new("t.yaml"), yaml).unwrap();
        let cfg = crate::config::resolve(&m, "p", std::path::Path::new("/nonexistent")).unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let portal = crate::portal::Portal::start(cfg, None, shutdown.clone())
            .await
            .unwrap();
        let seal = super::super::session::SessionSeal::new(None);
        let fast = super::super::fast::FastPath::new(portal, true, seal);
        (
            Validate {
                max_bytes: 64 * 1024,
                body_timeout: std::time::Duration::from_secs(30),
                fast,
            },
            shutdown,
        )
    }

    /// Found by the `validate` fuzz target: a `tools/call` body that `parse_call` reads (it
    /// skips unknown members without checking them) but that is not JSON, on a request the fast
    /// path declines, went on to rmcp instead of being answered -32700 here.
    #[tokio::test]
    async fn a_call_body_that_is_not_json_is_a_parse_error_even_when_the_fast_path_declines() {
        let (limits, shutdown) = limits().await;
        let mut body =
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a_echo","x":""#
                .to_vec();
        body.extend_from_slice(b"\xd8\x7b");
        body.extend_from_slice(br#""}}"#);
        assert!(super::super::fast::parse_call(&body).is_some());
        assert!(serde_json::from_slice::<Value>(&body).is_err());
        // `Accept` without text/event-stream: the fast path declines.
        let req = Request::builder()
            .method(Method::POST)
            .uri("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "a_echo")
            .body(Body::from(body))
            .unwrap();
        let Checked::Answered(answer) = check_post(&limits, req).await else {
            panic!("a body that is not JSON was passed on");
        };
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        let bytes = to_bytes(answer.into_body(), usize::MAX).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], -32700, "{v}");
        // The same message as JSON is passed on.
        let req = Request::builder()
            .method(Method::POST)
            .uri("/mcp")
            .header("accept", "application/json")
            .header("mcp-method", "tools/call")
            .body(Body::from(
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": "a_echo", "x": "y"}})
                .to_string(),
            ))
            .unwrap();
        assert!(matches!(
            check_post(&limits, req).await,
            Checked::Forward(_)
        ));
        shutdown.cancel();
    }
}
