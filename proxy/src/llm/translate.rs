//! OpenAI Chat Completions ⇄ Anthropic Messages: requests, responses and stream events. Pure
//! functions over JSON values; a field that cannot be carried across is refused with an error
//! naming it (never dropped silently), except the few listed in [`IGNORED_OPENAI`] and
//! [`IGNORED_ANTHROPIC`], which change nothing in the answer.

use serde_json::{Map, Value, json};

use super::{Usage, anthropic, openai};

/// `max_tokens` sent to an Anthropic target when an OpenAI caller set none (Anthropic requires
/// one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// OpenAI request fields that are accepted and not sent to an Anthropic target: bookkeeping
/// that does not change the answer.
pub const IGNORED_OPENAI: &[&str] = &["user", "store", "metadata", "service_tier", "seed"];
/// Anthropic request fields that are accepted and not sent to an OpenAI target.
pub const IGNORED_ANTHROPIC: &[&str] = &["metadata", "service_tier"];

/// Why a request cannot be translated: the field and what is wrong (a 400 for the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Untranslatable> {
    Err(Untranslatable(msg.into()))
}

/// Text of an OpenAI `content` (a string, or parts of which only `text` ones are allowed).
fn openai_text(content: &Value, at: &str) -> Result<String, Untranslatable> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(p.get("text").and_then(Value::as_str).unwrap_or("")),
                    other => {
                        return refuse(format!(
                            "{at}[{k}]: content part type {other:?} cannot be translated here (only text)"
                        ));
                    }
                }
            }
            Ok(out.join("\n"))
        }
        _ => refuse(format!("{at}: must be a string or an array of parts")),
    }
}

/// An OpenAI user content part as an Anthropic content block.
fn openai_part_to_block(p: &Value, at: &str) -> Result<Value, Untranslatable> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => {
            Ok(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))}))
        }
        Some("image_url") => {
            let url = p
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Some(rest) = url.strip_prefix("data:") {
                let Some((meta, data)) = rest.split_once(',') else {
                    return refuse(format!("{at}.image_url.url: a data URL without data"));
                };
                let Some(media) = meta.strip_suffix(";base64") else {
                    return refuse(format!("{at}.image_url.url: only base64 data URLs"));
                };
                Ok(
                    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}),
                )
            } else if url.starts_with("https://") || url.starts_with("http://") {
                Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
            } else {
                refuse(format!("{at}.image_url.url: not a data: or http(s) URL"))
            }
        }
        other => refuse(format!(
            "{at}: content part type {other:?} cannot be translated to Anthropic (text and image_url can)"
        )),
    }
}

/// Appends `block` as a message of `role`, merging with the previous message of the same role
/// (Anthropic wants user and assistant turns to alternate).
fn push_block(messages: &mut Vec<Value>, role: &str, block: Value) {
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.push(block);
        return;
    }
    messages.push(json!({"role": role, "content": [block]}));
}

/// An OpenAI Chat Completions request as an Anthropic Messages request for `model`.
pub fn openai_request_to_anthropic(req: &Value, model: &str) -> Result<Value, Untranslatable> {
    let Some(obj) = req.as_object() else {
        return refuse("the request body must be a JSON object");
    };
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let Some(msgs) = obj.get("messages").and_then(Value::as_array) else {
        return refuse("messages: required (an array)");
    };
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(openai_text(content, &format!("{at}.content"))?),
            "user" => match content {
                Value::String(s) => {
                    push_block(&mut messages, "user", json!({"type": "text", "text": s}))
                }
                Value::Array(parts) => {
                    for (k, p) in parts.iter().enumerate() {
                        let b = openai_part_to_block(p, &format!("{at}.content[{k}]"))?;
                        push_block(&mut messages, "user", b);
                    }
                }
                _ => {
                    return refuse(format!(
                        "{at}.content: must be a string or an array of parts"
                    ));
                }
            },
            "assistant" => {
                let text = openai_text(content, &format!("{at}.content"))?;
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for (k, c) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let args = c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input: Value =
                        match serde_json::from_str(if args.is_empty() { "{}" } else { args }) {
                            Ok(v @ Value::Object(_)) => v,
                            _ => {
                                return refuse(format!(
                                    "{at}.tool_calls[{k}].function.arguments: not a JSON object"
                                ));
                            }
                        };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": c.get("id").cloned().unwrap_or(json!("")),
                        "name": c.pointer("/function/name").cloned().unwrap_or(json!("")),
                        "input": input,
                    }));
                }
                if blocks.is_empty() {
                    blocks.push(json!({"type": "text", "text": ""}));
                }
                for b in blocks {
                    push_block(&mut messages, "assistant", b);
                }
            }
            "tool" => {
                let text = openai_text(content, &format!("{at}.content"))?;
                push_block(
                    &mut messages,
                    "user",
                    json!({
                        "type": "tool_result",
                        "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(json!("")),
                        "content": text,
                    }),
                );
            }
            other => {
                return refuse(format!(
                    "{at}.role: {other:?} cannot be translated to Anthropic"
                ));
            }
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max));
    let mut parallel = None;
    for (k, v) in obj {
        match k.as_str() {
            "model" | "messages" | "max_tokens" | "max_completion_tokens" => {}
            "temperature" | "top_p" | "stream" => {
                out.insert(k.clone(), v.clone());
            }
            "stream_options" => {} // usage is always reported on an Anthropic stream
            "stop" => {
                let seqs = match v {
                    Value::String(s) => vec![json!(s)],
                    Value::Array(a) => a.clone(),
                    Value::Null => vec![],
                    _ => return refuse("stop: must be a string or an array of strings"),
                };
                if !seqs.is_empty() {
                    out.insert("stop_sequences".into(), Value::Array(seqs));
                }
            }
            "n" if v.as_u64().is_none_or(|n| n == 1) => {}
            "tools" => {
                let mut tools = Vec::new();
                for (j, t) in v.as_array().into_iter().flatten().enumerate() {
                    if t.get("type").and_then(Value::as_str) != Some("function") {
                        return refuse(format!(
                            "tools[{j}].type: only function tools can be translated"
                        ));
                    }
                    let f = &t["function"];
                    let mut tool = Map::new();
                    tool.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
                    if let Some(d) = f.get("description") {
                        tool.insert("description".into(), d.clone());
                    }
                    tool.insert(
                        "input_schema".into(),
                        f.get("parameters")
                            .cloned()
                            .unwrap_or(json!({"type": "object", "properties": {}})),
                    );
                    tools.push(Value::Object(tool));
                }
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => {
                let choice = match v {
                    Value::String(s) if s == "auto" => json!({"type": "auto"}),
                    Value::String(s) if s == "none" => json!({"type": "none"}),
                    Value::String(s) if s == "required" => json!({"type": "any"}),
                    Value::Object(o)
                        if o.get("type").and_then(Value::as_str) == Some("function") =>
                    {
                        json!({"type": "tool", "name": v.pointer("/function/name").cloned().unwrap_or(json!(""))})
                    }
                    _ => return refuse("tool_choice: must be auto, none, required or a function"),
                };
                out.insert("tool_choice".into(), choice);
            }
            "parallel_tool_calls" => parallel = v.as_bool(),
            k if IGNORED_OPENAI.contains(&k) => {}
            other => {
                return refuse(format!(
                    "{other}: cannot be translated for an Anthropic target (see the README's list of translated fields)"
                ));
            }
        }
    }
    if parallel == Some(false) {
        let choice = out
            .entry("tool_choice")
            .or_insert_with(|| json!({"type": "auto"}));
        if let Some(c) = choice.as_object_mut() {
            c.insert("disable_parallel_tool_use".into(), json!(true));
        }
    }
    Ok(Value::Object(out))
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A [`Usage`] in OpenAI's shape.
pub fn openai_usage(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached},
    })
}

/// A [`Usage`] in Anthropic's shape (`input_tokens` without the cached ones).
pub fn anthropic_usage(u: Usage) -> Value {
    json!({
        "input_tokens": u.input.saturating_sub(u.cached),
        "output_tokens": u.output,
        "cache_read_input_tokens": u.cached,
        "cache_creation_input_tokens": 0,
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An Anthropic Messages response as an OpenAI Chat Completions response.
pub fn anthropic_response_to_openai(resp: &Value) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in resp
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(json!("")),
                    "arguments": serde_json::to_string(b.get("input").unwrap_or(&json!({}))).unwrap_or_default(),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let id = resp.get("id").and_then(Value::as_str).unwrap_or("");
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": now_secs(),
        "model": resp.get("model").cloned().unwrap_or(json!("")),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(resp.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": openai_usage(anthropic::usage(resp).unwrap_or_default()),
    })
}

/// Anthropic `content` (a string or blocks) split into OpenAI content parts and tool results.
fn anthropic_blocks(content: &Value, at: &str) -> Result<Vec<Value>, Untranslatable> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(a) => Ok(a.clone()),
        _ => refuse(format!("{at}: must be a string or an array of blocks")),
    }
}

fn tool_result_text(content: &Value, at: &str) -> Result<String, Untranslatable> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (k, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return refuse(format!(
                        "{at}[{k}]: only text tool results can be translated"
                    ));
                }
                out.push(b.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Ok(out.join("\n"))
        }
        _ => refuse(format!("{at}: must be a string or text blocks")),
    }
}

/// An Anthropic Messages request as an OpenAI Chat Completions request for `model`.
pub fn anthropic_request_to_openai(req: &Value, model: &str) -> Result<Value, Untranslatable> {
    let Some(obj) = req.as_object() else {
        return refuse("the request body must be a JSON object");
    };
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut messages = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(v @ Value::Array(_)) => {
            messages.push(json!({"role": "system", "content": tool_result_text(v, "system")?}))
        }
        Some(_) => return refuse("system: must be a string or text blocks"),
    }
    let Some(msgs) = obj.get("messages").and_then(Value::as_array) else {
        return refuse("messages: required (an array)");
    };
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let blocks = anthropic_blocks(
            m.get("content").unwrap_or(&Value::Null),
            &format!("{at}.content"),
        )?;
        match role {
            "user" => {
                let mut parts = Vec::new();
                for (k, b) in blocks.iter().enumerate() {
                    let bat = format!("{at}.content[{k}]");
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or(json!(""))})),
                        Some("image") => {
                            let src = &b["source"];
                            let url = match src.get("type").and_then(Value::as_str) {
                                Some("base64") => format!(
                                    "data:{};base64,{}",
                                    src.get("media_type").and_then(Value::as_str).unwrap_or(""),
                                    src.get("data").and_then(Value::as_str).unwrap_or("")
                                ),
                                Some("url") => src.get("url").and_then(Value::as_str).unwrap_or("").to_owned(),
                                other => return refuse(format!("{bat}.source.type: {other:?} cannot be translated")),
                            };
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                        Some("tool_result") => {
                            // Tool results become `tool` messages, ahead of the user's own text.
                            messages.push(json!({
                                "role": "tool",
                                "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(json!("")),
                                "content": tool_result_text(b.get("content").unwrap_or(&Value::Null), &format!("{bat}.content"))?,
                            }));
                        }
                        other => return refuse(format!("{bat}.type: {other:?} cannot be translated to OpenAI")),
                    }
                }
                if !parts.is_empty() {
                    let content = if parts.iter().all(|p| p["type"] == "text") {
                        json!(
                            parts
                                .iter()
                                .map(|p| p["text"].as_str().unwrap_or(""))
                                .collect::<Vec<_>>()
                                .join("\n")
                        )
                    } else {
                        Value::Array(parts)
                    };
                    messages.push(json!({"role": "user", "content": content}));
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for (k, b) in blocks.iter().enumerate() {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                        Some("tool_use") => calls.push(json!({
                            "id": b.get("id").cloned().unwrap_or(json!("")),
                            "type": "function",
                            "function": {
                                "name": b.get("name").cloned().unwrap_or(json!("")),
                                "arguments": serde_json::to_string(b.get("input").unwrap_or(&json!({}))).unwrap_or_default(),
                            },
                        })),
                        other => return refuse(format!("{at}.content[{k}].type: {other:?} cannot be translated to OpenAI")),
                    }
                }
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            other => return refuse(format!("{at}.role: {other:?} is not user or assistant")),
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    for (k, v) in obj {
        match k.as_str() {
            "model" | "messages" | "system" => {}
            "max_tokens" | "temperature" | "top_p" => {
                out.insert(k.clone(), v.clone());
            }
            "stream" => {
                out.insert("stream".into(), v.clone());
                if v.as_bool() == Some(true) {
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "stop_sequences" => {
                out.insert("stop".into(), v.clone());
            }
            "tools" => {
                let mut tools = Vec::new();
                for (j, t) in v.as_array().into_iter().flatten().enumerate() {
                    if t.get("type").is_some_and(|ty| ty != "custom")
                        || t.get("input_schema").is_none()
                    {
                        return refuse(format!(
                            "tools[{j}]: only custom tools with an input_schema can be translated (server tools cannot)"
                        ));
                    }
                    let mut f = Map::new();
                    f.insert("name".into(), t.get("name").cloned().unwrap_or(json!("")));
                    if let Some(d) = t.get("description") {
                        f.insert("description".into(), d.clone());
                    }
                    f.insert("parameters".into(), t["input_schema"].clone());
                    tools.push(json!({"type": "function", "function": f}));
                }
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => {
                let (choice, parallel_off) = match v.get("type").and_then(Value::as_str) {
                    Some("auto") => (json!("auto"), v.get("disable_parallel_tool_use")),
                    Some("any") => (json!("required"), v.get("disable_parallel_tool_use")),
                    Some("none") => (json!("none"), None),
                    Some("tool") => (
                        json!({"type": "function", "function": {"name": v.get("name").cloned().unwrap_or(json!(""))}}),
                        v.get("disable_parallel_tool_use"),
                    ),
                    _ => return refuse("tool_choice.type: must be auto, any, tool or none"),
                };
                out.insert("tool_choice".into(), choice);
                if parallel_off.and_then(Value::as_bool) == Some(true) {
                    out.insert("parallel_tool_calls".into(), json!(false));
                }
            }
            k if IGNORED_ANTHROPIC.contains(&k) => {}
            other => {
                return refuse(format!(
                    "{other}: cannot be translated for an OpenAI target (see the README's list of translated fields)"
                ));
            }
        }
    }
    Ok(Value::Object(out))
}

/// An OpenAI Chat Completions response as an Anthropic Messages response.
pub fn openai_response_to_anthropic(resp: &Value) -> Value {
    let choice = resp.pointer("/choices/0").cloned().unwrap_or(json!({}));
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = msg.get("content").and_then(Value::as_str)
        && !t.is_empty()
    {
        content.push(json!({"type": "text", "text": t}));
    }
    if let Some(r) = msg.get("refusal").and_then(Value::as_str) {
        content.push(json!({"type": "text", "text": r}));
    }
    for c in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = c
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input = serde_json::from_str::<Value>(args)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        content.push(json!({
            "type": "tool_use",
            "id": c.get("id").cloned().unwrap_or(json!("")),
            "name": c.pointer("/function/name").cloned().unwrap_or(json!("")),
            "input": input,
        }));
    }
    let id = resp.get("id").and_then(Value::as_str).unwrap_or("");
    json!({
        "id": format!("msg_{}", id.trim_start_matches("chatcmpl-")),
        "type": "message",
        "role": "assistant",
        "model": resp.get("model").cloned().unwrap_or(json!("")),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": anthropic_usage(openai::usage(resp).unwrap_or_default()),
    })
}

/// An Anthropic event stream as OpenAI chunks, event by event.
#[derive(Debug, Default)]
pub struct AnthropicToOpenAi {
    id: String,
    model: Value,
    created: u64,
    /// Anthropic content block index -> OpenAI tool call index.
    tools: Vec<(u64, usize)>,
    /// What the stream reported so far.
    pub usage: Usage,
    /// Whether the caller asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    finished: bool,
}

impl AnthropicToOpenAi {
    /// A translator; `include_usage`: the caller asked for the usage chunk.
    pub fn new(include_usage: bool) -> Self {
        AnthropicToOpenAi {
            include_usage,
            created: now_secs(),
            ..Default::default()
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    /// Translates one event (`event` name, parsed `data`), appending OpenAI frames to `out`.
    pub fn event(&mut self, data: &Value, out: &mut Vec<u8>) {
        match data.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = &data["message"];
                self.id = format!(
                    "chatcmpl-{}",
                    m.get("id").and_then(Value::as_str).unwrap_or("")
                );
                self.model = m.get("model").cloned().unwrap_or(json!(""));
                if let Some(u) = anthropic::usage(m) {
                    self.usage = u;
                }
                openai::frame(
                    out,
                    &self.chunk(json!({"role": "assistant", "content": ""}), None),
                );
            }
            Some("content_block_start") => {
                let b = &data["content_block"];
                if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let n = self.tools.len();
                    self.tools.push((index, n));
                    openai::frame(
                        out,
                        &self.chunk(
                            json!({"tool_calls": [{"index": n, "id": b["id"], "type": "function",
                                   "function": {"name": b["name"], "arguments": ""}}]}),
                            None,
                        ),
                    );
                }
            }
            Some("content_block_delta") => {
                let d = &data["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        openai::frame(out, &self.chunk(json!({"content": d["text"]}), None))
                    }
                    Some("input_json_delta") => {
                        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some((_, n)) = self.tools.iter().find(|(i, _)| *i == index) {
                            openai::frame(
                                out,
                                &self.chunk(
                                    json!({"tool_calls": [{"index": n, "function": {"arguments": d["partial_json"]}}]}),
                                    None,
                                ),
                            );
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(u) = data.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.output = u;
                }
                if let Some(u) = anthropic::usage(data).filter(|u| u.input > 0) {
                    self.usage.input = u.input;
                    self.usage.cached = u.cached;
                }
                let reason = data.pointer("/delta/stop_reason").and_then(Value::as_str);
                openai::frame(out, &self.chunk(json!({}), Some(finish_reason(reason))));
            }
            Some("message_stop") => self.finish(out),
            Some("error") => {
                let msg = anthropic::error_message(data).unwrap_or("the provider's stream failed");
                openai::frame(
                    out,
                    &json!({"error": {"message": msg, "type": "api_error", "param": null, "code": null}}),
                );
                self.finished = true;
            }
            _ => {} // ping, content_block_stop
        }
    }

    /// Whether the stream ended (`message_stop` or an error event).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Ends the stream (the usage chunk when asked for, then `[DONE]`); idempotent.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.include_usage {
            let mut c = self.chunk(json!({}), None);
            c["choices"] = json!([]);
            c["usage"] = openai_usage(self.usage);
            openai::frame(out, &c);
        }
        out.extend_from_slice(openai::DONE);
    }
}

/// An OpenAI chunk stream as Anthropic events, chunk by chunk.
#[derive(Debug, Default)]
pub struct OpenAiToAnthropic {
    started: bool,
    /// The open content block: its index and, for a tool call, the OpenAI tool call index.
    open: Option<(u64, Option<u64>)>,
    next_block: u64,
    stop: Option<String>,
    /// What the stream reported so far.
    pub usage: Usage,
    finished: bool,
}

impl OpenAiToAnthropic {
    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = chunk.get("id").and_then(Value::as_str).unwrap_or("");
        anthropic::frame(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": format!("msg_{}", id.trim_start_matches("chatcmpl-")),
                "type": "message", "role": "assistant",
                "model": chunk.get("model").cloned().unwrap_or(json!("")),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": anthropic_usage(Usage::default()),
            }}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            anthropic::frame(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, block: Value, tool: Option<u64>, out: &mut Vec<u8>) -> u64 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, tool));
        anthropic::frame(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    /// Translates one chunk, appending Anthropic frames to `out`.
    pub fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if let Some(e) = chunk.get("error") {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider's stream failed");
            anthropic::frame(
                out,
                "error",
                &anthropic::error_body(super::ErrorKind::Api, msg),
            );
            self.finished = true;
            return;
        }
        self.start(chunk, out);
        if let Some(u) = openai::usage(chunk) {
            self.usage = u;
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(t) = delta.get("content").and_then(Value::as_str)
            && !t.is_empty()
        {
            let index = match self.open {
                Some((i, None)) => i,
                _ => self.open_block(json!({"type": "text", "text": ""}), None, out),
            };
            anthropic::frame(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
            );
        }
        for c in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let n = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let index = match self.open {
                Some((i, Some(open))) if open == n => i,
                _ => self.open_block(
                    json!({"type": "tool_use", "id": c.get("id").cloned().unwrap_or(json!("")),
                           "name": c.pointer("/function/name").cloned().unwrap_or(json!("")), "input": {}}),
                    Some(n),
                    out,
                ),
            };
            if let Some(a) = c.pointer("/function/arguments").and_then(Value::as_str)
                && !a.is_empty()
            {
                anthropic::frame(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": a}}),
                );
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(f.to_owned());
        }
    }

    /// Whether the stream ended (`[DONE]` or an error chunk).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Ends the stream (`message_delta` with the stop reason and usage, `message_stop`);
    /// idempotent.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(&json!({}), out);
        self.close(out);
        anthropic::frame(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(self.stop.as_deref()), "stop_sequence": null},
                    "usage": anthropic_usage(self.usage)}),
        );
        anthropic::frame(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests;
