//! OpenAI's Responses API (`POST /v1/responses`, streamed or not) on top of Chat Completions:
//! the request becomes a Chat Completions request (then routed, failed over, metered, scanned
//! and translated like any other), the answer becomes a Response object, and a streamed answer's
//! chunks become the Responses event sequence ([`StreamToResponses`]): `response.created`,
//! `response.in_progress`, per output item `response.output_item.added`, then
//! `response.content_part.added`, `response.output_text.delta`..., `response.output_text.done`,
//! `response.content_part.done` for text or `response.function_call_arguments.delta`...,
//! `response.function_call_arguments.done` for a function call, `response.output_item.done`;
//! last `response.completed` (or `response.incomplete` when the output limit cut it) with the
//! usage. An error event of the chat stream (a hard budget reached, a DLP block, a provider
//! failure) becomes an `error` event. Pure functions; what cannot be carried across is refused
//! naming the field.

use serde_json::{Map, Value, json};

use super::translate::Untranslatable;

/// Request fields accepted and not carried across (bookkeeping; no effect on the answer).
pub const IGNORED: &[&str] = &[
    "store",
    "metadata",
    "user",
    "service_tier",
    "truncation",
    "stream_options",
];

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
                // The usage chunk is asked for: response.completed carries the usage.
                out.insert("stream".into(), Value::Bool(true));
                out.insert("stream_options".into(), json!({"include_usage": true}));
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

/// The item a stream is writing.
#[derive(Debug)]
enum Open {
    /// A message (output_text) item.
    Text { output_index: usize },
    /// A function call item, by its chat tool-call index.
    Call { output_index: usize, index: u64 },
}

/// Chat Completions stream chunks (in the OpenAI format, as the gateway relays them) to the
/// Responses API's events.
#[derive(Debug, Default)]
pub struct StreamToResponses {
    seq: u64,
    started: bool,
    finished: bool,
    /// The answer so far as a Chat Completions response (for the final Response object).
    chat: Value,
    text: String,
    calls: Vec<Value>,
    open: Option<Open>,
    items: usize,
}

impl StreamToResponses {
    fn event(&mut self, kind: &str, mut data: Value, out: &mut Vec<u8>) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        serde_json::to_writer(&mut *out, &data).expect("JSON values serialize");
        out.extend_from_slice(b"\n\n");
    }

    fn id(&self) -> String {
        self.chat
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim_start_matches("chatcmpl-")
            .to_owned()
    }

    /// The Response object as it stands (`status` given).
    fn snapshot(&self, status: &str) -> Value {
        let mut chat = self.chat.clone();
        let mut msg = json!({"role": "assistant", "content": self.text});
        if !self.calls.is_empty() {
            msg["tool_calls"] = Value::Array(self.calls.clone());
        }
        chat["choices"] = json!([{"index": 0, "message": msg,
            "finish_reason": self.chat.get("finish_reason").cloned().unwrap_or(Value::Null)}]);
        let mut r = chat_to_response(&chat);
        if status == "in_progress" {
            r["status"] = json!("in_progress");
            r["output"] = json!([]);
            r["usage"] = Value::Null;
        }
        r
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let id = self.id();
        match self.open.take() {
            None => {}
            Some(Open::Text { output_index }) => {
                let item_id = format!("msg_{id}");
                let text = self.text.clone();
                self.event(
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": output_index,
                    "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.event(
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": output_index,
                    "content_index": 0, "part": part}),
                    out,
                );
                self.event("response.output_item.done", json!({"output_index": output_index,
                    "item": {"id": item_id, "type": "message", "status": "completed", "role": "assistant",
                             "content": [part]}}), out);
            }
            Some(Open::Call {
                output_index,
                index,
            }) => {
                let call = self
                    .calls
                    .iter()
                    .find(|c| c["index"] == json!(index))
                    .cloned()
                    .unwrap_or(json!({}));
                let item_id = format!("fc_{id}_{index}");
                let args = call
                    .pointer("/function/arguments")
                    .cloned()
                    .unwrap_or(json!(""));
                let name = call.pointer("/function/name").cloned().unwrap_or(json!(""));
                self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id,
                    "output_index": output_index, "name": name, "arguments": args}),
                    out,
                );
                self.event(
                    "response.output_item.done",
                    json!({"output_index": output_index,
                    "item": {"id": item_id, "type": "function_call", "status": "completed",
                             "call_id": call.get("id").cloned().unwrap_or(json!("")),
                             "name": name, "arguments": args}}),
                    out,
                );
            }
        }
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        for k in ["id", "created", "model"] {
            if let Some(v) = chunk.get(k) {
                self.chat[k] = v.clone();
            }
        }
        let r = self.snapshot("in_progress");
        self.event("response.created", json!({"response": r}), out);
        self.event("response.in_progress", json!({"response": r}), out);
    }

    /// One event of the chat stream (its `data`), appending Responses events to `out`.
    pub fn data(&mut self, data: &str, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if data.trim() == "[DONE]" {
            self.done(out);
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(e) = v.get("error") {
            self.close(out);
            self.finished = true;
            self.event(
                "error",
                json!({"code": e.get("code").cloned().unwrap_or(Value::Null),
                "message": e.get("message").cloned().unwrap_or(json!("the stream failed")),
                "param": e.get("param").cloned().unwrap_or(Value::Null)}),
                out,
            );
            return;
        }
        self.start(&v, out);
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.chat["usage"] = u.clone();
        }
        let id = self.id();
        for c in v
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = c
                .pointer("/delta/content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                let output_index = match self.open {
                    Some(Open::Text { output_index }) => output_index,
                    _ => {
                        self.close(out);
                        let output_index = self.items;
                        self.items += 1;
                        self.open = Some(Open::Text { output_index });
                        let item_id = format!("msg_{id}");
                        self.event(
                            "response.output_item.added",
                            json!({"output_index": output_index,
                            "item": {"id": item_id, "type": "message", "status": "in_progress",
                                     "role": "assistant", "content": []}}),
                            out,
                        );
                        self.event(
                            "response.content_part.added",
                            json!({"item_id": item_id,
                            "output_index": output_index, "content_index": 0,
                            "part": {"type": "output_text", "text": "", "annotations": []}}),
                            out,
                        );
                        output_index
                    }
                };
                self.text.push_str(t);
                self.event(
                    "response.output_text.delta",
                    json!({"item_id": format!("msg_{id}"),
                    "output_index": output_index, "content_index": 0, "delta": t, "logprobs": []}),
                    out,
                );
            }
            for call in c
                .pointer("/delta/tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let output_index = match self.open {
                    Some(Open::Call {
                        output_index,
                        index: i,
                    }) if i == index => output_index,
                    _ => {
                        self.close(out);
                        let output_index = self.items;
                        self.items += 1;
                        self.open = Some(Open::Call {
                            output_index,
                            index,
                        });
                        let name = call.pointer("/function/name").cloned().unwrap_or(json!(""));
                        let call_id = call.get("id").cloned().unwrap_or(json!(""));
                        self.calls
                            .push(json!({"index": index, "id": call_id, "type": "function",
                            "function": {"name": name, "arguments": ""}}));
                        self.event(
                            "response.output_item.added",
                            json!({"output_index": output_index,
                            "item": {"id": format!("fc_{id}_{index}"), "type": "function_call",
                                     "status": "in_progress", "call_id": call_id, "name": name,
                                     "arguments": ""}}),
                            out,
                        );
                        output_index
                    }
                };
                if let Some(d) = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .filter(|d| !d.is_empty())
                {
                    if let Some(c) = self.calls.iter_mut().find(|c| c["index"] == json!(index)) {
                        let mut a = c["function"]["arguments"].as_str().unwrap_or("").to_owned();
                        a.push_str(d);
                        c["function"]["arguments"] = json!(a);
                    }
                    self.event(
                        "response.function_call_arguments.delta",
                        json!({
                        "item_id": format!("fc_{id}_{index}"), "output_index": output_index,
                        "delta": d}),
                        out,
                    );
                }
            }
            if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
                self.chat["finish_reason"] = f.clone();
                self.close(out);
            }
        }
    }

    /// The chat stream ended (`[DONE]`): the final event.
    pub fn done(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.close(out);
        self.finished = true;
        let r = self.snapshot("completed");
        let kind = if r["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.event(kind, json!({"response": r}), out);
    }

    /// Whether the final (or an error) event was written.
    pub fn finished(&self) -> bool {
        self.finished
    }
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
        let mut streamed = req.clone();
        streamed["stream"] = json!(true);
        let chat = request_to_chat(&streamed).unwrap();
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        for (field, v) in [
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

    fn types(out: &[u8]) -> Vec<(String, Value)> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        text.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (ev, data) = f.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.trim_start_matches("data: ")).unwrap();
                (ev.trim_start_matches("event: ").to_owned(), v)
            })
            .collect()
    }

    #[test]
    fn a_chat_stream_becomes_the_responses_event_sequence_with_usage_last() {
        let mut t = StreamToResponses::default();
        let mut out = Vec::new();
        let chunk = |delta: Value, fin: Value| {
            json!({"id": "chatcmpl-7", "created": 3, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]})
            .to_string()
        };
        t.data(
            &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            &mut out,
        );
        t.data(&chunk(json!({"content": "Hel"}), Value::Null), &mut out);
        t.data(&chunk(json!({"content": "lo"}), Value::Null), &mut out);
        t.data(
            &chunk(
                json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
            "function": {"name": "weather", "arguments": ""}}]}),
                Value::Null,
            ),
            &mut out,
        );
        t.data(
            &chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}),
                Value::Null,
            ),
            &mut out,
        );
        t.data(&chunk(json!({}), json!("tool_calls")), &mut out);
        t.data(&json!({"id": "chatcmpl-7", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}}).to_string(), &mut out);
        t.data("[DONE]", &mut out);
        let evs = types(&out);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (name, v)) in evs.iter().enumerate() {
            assert_eq!(v["type"], json!(name));
            assert_eq!(v["sequence_number"], json!(i));
        }
        let done = &evs.last().unwrap().1["response"];
        assert_eq!(done["id"], "resp_7");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][1]["call_id"], "c1");
        assert_eq!(done["usage"]["total_tokens"], 10);
        assert_eq!(evs[0].1["response"]["status"], "in_progress");
    }

    #[test]
    fn an_error_event_of_the_chat_stream_ends_the_responses_stream_with_an_error() {
        let mut t = StreamToResponses::default();
        let mut out = Vec::new();
        t.data(&json!({"id": "chatcmpl-8", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]}).to_string(), &mut out);
        t.data(&json!({"error": {"message": "budget", "type": "insufficient_quota", "code": "insufficient_quota"}}).to_string(), &mut out);
        t.data("[DONE]", &mut out);
        let evs = types(&out);
        let last = &evs.last().unwrap();
        assert_eq!(last.0, "error");
        assert_eq!(last.1["code"], "insufficient_quota");
        assert!(t.finished());
    }
}
