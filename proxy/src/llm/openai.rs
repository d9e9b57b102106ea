//! The OpenAI dialect (Chat Completions): error bodies, usage, the model list, event framing.

use serde_json::{Value, json};

use super::{ErrorKind, Usage};

/// An OpenAI error object: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(kind: ErrorKind, message: &str, code: Option<&str>) -> Value {
    let kind = match kind {
        ErrorKind::InvalidRequest | ErrorKind::TooLarge => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Api | ErrorKind::Overloaded => "api_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// OpenAI's error for a used-up quota (`insufficient_quota`): the body of a budget refusal.
pub fn quota_error_body(message: &str) -> Value {
    json!({"error": {"message": message, "type": "insufficient_quota", "param": null,
                     "code": "insufficient_quota"}})
}

/// The message of an OpenAI error body, if it is one.
pub fn error_message(body: &Value) -> Option<&str> {
    body.get("error")?.get("message")?.as_str()
}

/// The usage of a Chat Completions response (or of a stream's usage chunk). OpenAI's
/// `prompt_tokens` include the cached ones.
pub fn usage(body: &Value) -> Option<Usage> {
    let u = body.get("usage").filter(|u| u.is_object())?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        input: n(u.get("prompt_tokens")),
        output: n(u.get("completion_tokens")),
        cached: n(u.pointer("/prompt_tokens_details/cached_tokens")),
    })
}

/// `GET /v1/models`: the aliases the caller may use.
pub fn models(aliases: &[String]) -> Value {
    let data: Vec<Value> = aliases
        .iter()
        .map(|a| json!({"id": a, "object": "model", "created": 0, "owned_by": "portcullis"}))
        .collect();
    json!({"object": "list", "data": data})
}

/// One stream event: `data: <json>` and a blank line.
pub fn frame(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, data).expect("JSON values serialize");
    out.extend_from_slice(b"\n\n");
}

/// The end of an OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";
