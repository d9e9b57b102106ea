//! OpenAI's Responses API (`POST /v1/responses`, not streamed) on top of Chat Completions: the
//! request becomes a Chat Completions request (then routed, failed over and translated like any
//! other), the answer becomes a Response object. Pure functions; what cannot be carried across
//! is refused naming the field.

use serde_json::{Map, Value, json};

use super::translate::Untranslatable;

/// Request fields accepted and not carried across (bookkeeping; no effect on the answer).
pub const IGNORED: &[&str] = &["store", "metadata", "user", "service_tier", "truncation"];

fn refuse<T>(msg: impl Into<String>) -> Result<T, Untranslatable> {
    Err(Untranslatable(msg.into()))
}

/// The text of a Responses content (a string, or `input_text`/`output_text` parts) and its
/// images, as Chat Completions content.
fn content(c: &Value, at: &str) -> Result<Value, Untranslatable> {
    match c {
        Value::String(s) => Ok(json!(s)),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text") | Some("output_text") => {
                        out.push(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))}))
                    }
                    Some("input_image") if p.get("image_url").is_some() => out.push(
                        json!({"type": "image_url", "image_url": {"url": p["image_url"]}}),
                    ),
                    other => {
                        return refuse(format!(
                            "{at}[{k}].type: {other:?} cannot be translated (input_text, output_text and input_image with an image_url can)"
                        ));
                    }
                }
            }
            if out.iter().all(|p| p["type"] == "text") {
                let texts: Vec<&str> = out
                    .iter()
                    .map(|p| p["text"].as_str().unwrap_or(""))
                    .collect();
                Ok(json!(texts.join("\n")))
            } else {
                Ok(Value::Array(out))
            }
        }
        _ => refuse(format!("{at}: must be a string or an array of parts")),
    }
}

/// A Responses request as a Chat Completions request (model unchanged: the alias).
pub fn request_to_chat(req: &Value) -> Result<Value, Untranslatable> {
    let Some(obj) = req.as_object() else {
        return refuse("the request body must be a JSON object");
    };
    let mut messages: Vec<Value> = Vec::new();
    if let Some(i) = obj.get("instructions").filter(|v| !v.is_null()) {
        let Some(text) = i.as_str() else {
            return refuse("instructions: must be a string");
        };
        messages.push(json!({"role": "system", "content": text}));
    }
    match obj.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("input[{i}]");
                match item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message")
                {
                    "message" => {
                        let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                        if !["user", "assistant", "system", "developer"].contains(&role) {
                            return refuse(format!("{at}.role: {role:?} cannot be translated"));
                        }
                        let c = content(
                            item.get("content").unwrap_or(&Value::Null),
                            &format!("{at}.content"),
                        )?;
                        messages.push(json!({"role": role, "content": c}));
                    }
                    "function_call" => {
                        let call = json!({
                            "id": item.get("call_id").cloned().unwrap_or(json!("")),
                            "type": "function",
                            "function": {"name": item.get("name").cloned().unwrap_or(json!("")),
                                         "arguments": item.get("arguments").cloned().unwrap_or(json!("{}"))},
                        });
                        // Consecutive calls belong to one assistant turn.
                        match messages.last_mut() {
                            Some(last)
                                if last["role"] == "assistant"
                                    && last.get("tool_calls").is_some() =>
                            {
                                if let Some(calls) = last["tool_calls"].as_array_mut() {
                                    calls.push(call);
                                }
                            }
                            _ => messages.push(
                                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                            ),
                        }
                    }
                    "function_call_output" => {
                        let output = match item.get("output") {
                            Some(Value::String(s)) => s.clone(),
                            Some(v) => content(v, &format!("{at}.output"))?
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                            None => String::new(),
                        };
                        messages.push(json!({"role": "tool",
                            "tool_call_id": item.get("call_id").cloned().unwrap_or(json!("")),
                            "content": output}));
                    }
                    other => return refuse(format!("{at}.type: {other:?} cannot be translated")),
                }
            }
        }
        _ => return refuse("input: required (a string or an array of items)"),
    }
    let mut out = Map::new();
    out.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(messages));
    for (k, v) in obj {
        match k.as_str() {
            "model" | "input" | "instructions" => {}
            "stream" if v.as_bool() != Some(true) => {}
            "stream" => {
                return refuse(
                    "stream: /llm/openai/v1/responses does not stream yet; use chat/completions to stream",
                );
            }
            "max_output_tokens" => {
                out.insert("max_tokens".into(), v.clone());
            }
            "temperature" | "top_p" | "parallel_tool_calls" => {
                out.insert(k.clone(), v.clone());
            }
            "tools" => {
                let mut tools = Vec::new();
                for (j, t) in v.as_array().into_iter().flatten().enumerate() {
                    if t.get("type").and_then(Value::as_str) != Some("function") {
                        return refuse(format!(
                            "tools[{j}].type: only function tools can be translated"
                        ));
                    }
                    let mut f = Map::new();
                    f.insert("name".into(), t.get("name").cloned().unwrap_or(json!("")));
                    if let Some(d) = t.get("description") {
                        f.insert("description".into(), d.clone());
                    }
                    f.insert(
                        "parameters".into(),
                        t.get("parameters")
                            .cloned()
                            .unwrap_or(json!({"type": "object", "properties": {}})),
                    );
                    tools.push(json!({"type": "function", "function": f}));
                }
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => {
                let c = match v {
                    Value::String(_) => v.clone(),
                    Value::Object(o)
                        if o.get("type").and_then(Value::as_str) == Some("function") =>
                    {
                        json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(json!(""))}})
                    }
                    _ => return refuse("tool_choice: must be auto, none, required or a function"),
                };
                out.insert("tool_choice".into(), c);
            }
            k if IGNORED.contains(&k) => {}
            other => {
                return refuse(format!(
                    "{other}: cannot be translated for /responses (see the README)"
                ));
            }
        }
    }
    Ok(Value::Object(out))
}

/// A Chat Completions response as a Response object.
pub fn chat_to_response(chat: &Value) -> Value {
    let msg = chat
        .pointer("/choices/0/message")
        .cloned()
        .unwrap_or(json!({}));
    let id = chat
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim_start_matches("chatcmpl-")
        .to_owned();
    let mut output = Vec::new();
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        output.push(json!({"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": t, "annotations": []}]}));
    }
    for (k, c) in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        output.push(
            json!({"type": "function_call", "id": format!("fc_{id}_{k}"), "status": "completed",
            "call_id": c.get("id").cloned().unwrap_or(json!("")),
            "name": c.pointer("/function/name").cloned().unwrap_or(json!("")),
            "arguments": c.pointer("/function/arguments").cloned().unwrap_or(json!("{}"))}),
        );
    }
    let usage = super::openai::usage(chat).unwrap_or_default();
    let incomplete = chat
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
        == Some("length");
    json!({
        "id": format!("resp_{id}"),
        "object": "response",
        "created_at": chat.get("created").cloned().unwrap_or(json!(0)),
        "status": if incomplete { "incomplete" } else { "completed" },
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "error": null,
        "model": chat.get("model").cloned().unwrap_or(json!("")),
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": usage.input,
            "input_tokens_details": {"cached_tokens": usage.cached},
            "output_tokens": usage.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input + usage.output,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_responses_request_with_instructions_tool_calls_and_outputs_becomes_chat_messages() {
        let req = json!({
            "model": "fast", "instructions": "Be brief.", "max_output_tokens": 30, "store": false,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "18C"}
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": "auto"
        });
        assert_eq!(
            request_to_chat(&req).unwrap(),
            json!({"model": "fast", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "18C"}],
              "max_tokens": 30,
              "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
              "tool_choice": "auto"})
        );
        for (field, v) in [
            ("stream", json!(true)),
            ("reasoning", json!({"effort": "low"})),
            ("previous_response_id", json!("r")),
        ] {
            let mut r = req.clone();
            r[field] = v;
            assert!(
                request_to_chat(&r)
                    .unwrap_err()
                    .0
                    .starts_with(&format!("{field}: ")),
                "{field}"
            );
        }
    }

    #[test]
    fn a_chat_answer_becomes_a_response_with_text_function_calls_and_usage() {
        let chat = json!({"id": "chatcmpl-9", "created": 5, "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let r = chat_to_response(&chat);
        assert_eq!(r["status"], "completed");
        assert_eq!(r["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(r["output"][1]["type"], "function_call");
        assert_eq!(r["output"][1]["call_id"], "c1");
        assert_eq!(r["usage"]["total_tokens"], 7);
    }
}
