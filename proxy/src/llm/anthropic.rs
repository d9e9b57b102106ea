//! The Anthropic dialect (Messages): error bodies, usage, the model list, event framing.

use serde_json::{Value, json};

use super::{ErrorKind, Usage};

/// The `anthropic-version` the portal sends to Anthropic targets.
pub const VERSION: &str = "2023-06-01";

/// An Anthropic error body: `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(kind: ErrorKind, message: &str) -> Value {
    let kind = match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::TooLarge => "request_too_large",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Api => "api_error",
        ErrorKind::Overloaded => "overloaded_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The message of an Anthropic error body, if it is one.
pub fn error_message(body: &Value) -> Option<&str> {
    body.get("error")?.get("message")?.as_str()
}

/// The usage of a Messages response (or of a `message_start`'s message, or a
/// `message_delta`). Anthropic's `input_tokens` exclude the cached ones, which are reported
/// beside them; [`Usage::input`] counts every prompt token.
pub fn usage(body: &Value) -> Option<Usage> {
    let u = body.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    Some(Usage {
        input: n("input_tokens") + cached + n("cache_creation_input_tokens"),
        output: n("output_tokens"),
        cached,
    })
}

/// `GET /v1/models`: the aliases the caller may use.
pub fn models(aliases: &[String]) -> Value {
    let data: Vec<Value> = aliases
        .iter()
        .map(|a| {
            json!({"type": "model", "id": a, "display_name": a,
                   "created_at": "1970-01-01T00:00:00Z"})
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": aliases.first(),
        "last_id": aliases.last(),
    })
}

/// One stream event: `event: <name>`, `data: <json>` and a blank line.
pub fn frame(out: &mut Vec<u8>, event: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut *out, data).expect("JSON values serialize");
    out.extend_from_slice(b"\n\n");
}
