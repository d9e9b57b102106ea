//! Counting tokens with tiktoken-rs (o200k_base, embedded: works offline): a request's prompt
//! before it is sent (its worst case), and an answer's text when a provider reports no usage
//! (the figure is then marked estimated).
//!
//! The prompt count is meant to be at or above what a provider bills: every string of the
//! messages, the system prompt and the tool definitions is counted (roles and part types
//! included), plus [`PER_MESSAGE`] tokens per message and [`PER_REQUEST`] per request (the
//! framing OpenAI documents); an image or other `data:` URL counts [`PER_IMAGE`].

use serde_json::Value;

/// Framing tokens per message.
pub const PER_MESSAGE: u64 = 4;
/// Framing tokens per request (the reply's priming).
pub const PER_REQUEST: u64 = 3;
/// What an inline image (a `data:` URL or base64 source) counts.
pub const PER_IMAGE: u64 = 1_000;

/// Tokens of `text` (o200k_base).
pub fn tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton().count_ordinary(text) as u64
}

fn strings(v: &Value, n: &mut u64) {
    match v {
        Value::String(s) if s.starts_with("data:") || s.len() > 64 * 1024 => *n += PER_IMAGE,
        Value::String(s) => *n += tokens(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, n)),
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("base64") {
                *n += PER_IMAGE;
                return;
            }
            o.values().for_each(|x| strings(x, n))
        }
        _ => {}
    }
}

/// The prompt tokens of a Chat Completions or Messages request (either shape is read:
/// `messages`, `system`, `tools`, `tool_choice`).
pub fn prompt_tokens(req: &Value) -> u64 {
    let mut n = PER_REQUEST;
    if let Some(m) = req.get("messages").and_then(Value::as_array) {
        n += PER_MESSAGE * m.len() as u64;
    }
    for field in ["messages", "system", "tools", "tool_choice"] {
        if let Some(v) = req.get(field) {
            strings(v, &mut n);
        }
    }
    n
}

/// The text a Chat Completions or Messages answer carries (content, tool-call names and
/// arguments), counted.
pub fn answer_tokens(answer: &Value) -> u64 {
    let mut n = 0;
    if let Some(choices) = answer.get("choices").and_then(Value::as_array) {
        for c in choices {
            if let Some(m) = c.get("message") {
                for f in ["content", "tool_calls", "refusal"] {
                    if let Some(v) = m.get(f) {
                        strings(v, &mut n);
                    }
                }
            }
        }
    }
    if let Some(content) = answer.get("content").and_then(Value::as_array) {
        for b in content {
            for f in ["text", "name", "input", "thinking"] {
                if let Some(v) = b.get(f) {
                    strings(v, &mut n);
                }
            }
        }
    }
    n
}

/// The generated text of one stream event of either API (content and tool-argument deltas).
pub fn delta_text(event: &Value) -> String {
    let mut out = String::new();
    if let Some(choices) = event.get("choices").and_then(Value::as_array) {
        for c in choices {
            let Some(d) = c.get("delta") else { continue };
            if let Some(t) = d.get("content").and_then(Value::as_str) {
                out.push_str(t);
            }
            if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    for p in ["/function/name", "/function/arguments"] {
                        if let Some(t) = call.pointer(p).and_then(Value::as_str) {
                            out.push_str(t);
                        }
                    }
                }
            }
        }
    }
    if let Some(d) = event.get("delta") {
        for f in ["text", "partial_json", "thinking"] {
            if let Some(t) = d.get(f).and_then(Value::as_str) {
                out.push_str(t);
            }
        }
    }
    out
}

/// The completion limit a request sets: `max_completion_tokens` or `max_tokens`.
pub fn max_tokens(req: &Value) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|f| req.get(*f).and_then(Value::as_u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_prompt_counts_every_text_and_framing_and_at_least_one_token_per_word() {
        let text = "the quick brown fox jumps over the lazy dog";
        let openai = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": text}]}
        ]});
        let n = prompt_tokens(&openai);
        assert!(n >= 9 + 2 + 2 * PER_MESSAGE + PER_REQUEST, "{n}");
        let anthropic = json!({"model": "m", "system": "be brief", "max_tokens": 5,
            "messages": [{"role": "user", "content": text}]});
        assert!(
            prompt_tokens(&anthropic) >= 9 + 2,
            "{}",
            prompt_tokens(&anthropic)
        );
        // An inline image is a flat amount, not its base64 length.
        let img = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100_000))}}]}]});
        assert!(prompt_tokens(&img) < PER_IMAGE + 20);
    }

    #[test]
    fn answers_and_stream_deltas_of_both_apis_are_counted() {
        let openai =
            json!({"choices": [{"message": {"role": "assistant", "content": "hello there"}}]});
        assert_eq!(answer_tokens(&openai), 2);
        let anthropic = json!({"content": [{"type": "text", "text": "hello there"}]});
        assert_eq!(answer_tokens(&anthropic), 2);
        assert_eq!(
            delta_text(&json!({"choices": [{"delta": {"content": " world"}}]})),
            " world"
        );
        assert_eq!(
            delta_text(
                &json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}})
            ),
            "hi"
        );
        assert_eq!(max_tokens(&json!({"max_tokens": 7})), Some(7));
        assert_eq!(
            max_tokens(&json!({"max_completion_tokens": 9, "max_tokens": 7})),
            Some(9)
        );
    }
}
