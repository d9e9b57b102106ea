use serde_json::json;

use super::*;

#[test]
fn an_openai_request_with_system_tools_and_tool_results_becomes_an_anthropic_one() {
    let req = json!({
        "model": "fast",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": [{"type": "text", "text": "And now?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
        ],
        "max_completion_tokens": 100,
        "temperature": 0.2,
        "stop": "END",
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "user": "u-1"
    });
    let out = openai_request_to_anthropic(&req, "claude-x").unwrap();
    assert_eq!(
        out,
        json!({
            "model": "claude-x",
            "system": "Be brief.\n\nUse tools.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "text", "text": "And now?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]}
            ],
            "max_tokens": 100,
            "temperature": 0.2,
            "stop_sequences": ["END"],
            "stream": true,
            "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
        })
    );
}

#[test]
fn openai_fields_without_an_anthropic_equivalent_are_refused_by_name() {
    for (field, value) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("response_format", json!({"type": "json_object"})),
        ("frequency_penalty", json!(0.5)),
    ] {
        let mut req = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
        req[field] = value;
        let e = openai_request_to_anthropic(&req, "c").unwrap_err();
        assert!(
            e.0.starts_with(&format!("{field}: cannot be translated")),
            "{field}: {e:?}"
        );
    }
    let req = json!({"model": "fast", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]});
    assert!(
        openai_request_to_anthropic(&req, "c")
            .unwrap_err()
            .0
            .contains("messages[0].content[0]")
    );
    // Without max tokens, Anthropic's required field gets the default.
    let req = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}], "n": 1});
    assert_eq!(
        openai_request_to_anthropic(&req, "c").unwrap()["max_tokens"],
        DEFAULT_MAX_TOKENS
    );
}

#[test]
fn an_anthropic_request_with_tool_use_and_results_becomes_an_openai_one() {
    let req = json!({
        "model": "fast",
        "system": [{"type": "text", "text": "Be brief."}],
        "max_tokens": 50,
        "stream": true,
        "stop_sequences": ["END"],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                                          {"type": "text", "text": "Thanks"}]}
        ],
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": true},
        "metadata": {"user_id": "u"}
    });
    let out = anthropic_request_to_openai(&req, "gpt-x").unwrap();
    assert_eq!(
        out,
        json!({
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "user", "content": "Thanks"}
            ],
            "max_tokens": 50,
            "stream": true,
            "stream_options": {"include_usage": true},
            "stop": ["END"],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "parallel_tool_calls": false
        })
    );
    let mut thinking = req.clone();
    thinking["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    assert!(
        anthropic_request_to_openai(&thinking, "g")
            .unwrap_err()
            .0
            .starts_with("thinking: ")
    );
    let mut top_k = req;
    top_k["top_k"] = json!(5);
    assert!(
        anthropic_request_to_openai(&top_k, "g")
            .unwrap_err()
            .0
            .starts_with("top_k: ")
    );
}

#[test]
fn responses_translate_both_ways_with_stop_reasons_and_usage() {
    let a = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2}
    });
    let o = anthropic_response_to_openai(&a);
    assert_eq!(o["object"], "chat.completion");
    assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(o["choices"][0]["message"]["content"], "Let me check.");
    assert_eq!(
        o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(
        o["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "prompt_tokens_details": {"cached_tokens": 2}})
    );
    let back = openai_response_to_anthropic(&o);
    assert_eq!(back["content"], a["content"]);
    assert_eq!(back["stop_reason"], "tool_use");
    assert_eq!(back["usage"]["input_tokens"], 10);
    assert_eq!(back["usage"]["output_tokens"], 5);
    assert_eq!(back["usage"]["cache_read_input_tokens"], 2);
    for (f, s) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        assert_eq!(stop_reason(Some(f)), s);
        assert_eq!(finish_reason(Some(s)), f);
    }
}

fn events(bytes: &[u8]) -> Vec<(Option<String>, serde_json::Value)> {
    let mut d = sse::Decoder::new(1 << 20);
    let mut out = Vec::new();
    d.feed(bytes, &mut out).unwrap();
    out.into_iter()
        .map(|e| {
            (
                e.event,
                serde_json::from_str(&e.data).unwrap_or(json!(e.data)),
            )
        })
        .collect()
}

#[test]
fn an_anthropic_stream_becomes_openai_chunks_with_tool_call_deltas_and_usage() {
    let mut t = AnthropicToOpenAi::new(true);
    let mut out = Vec::new();
    for e in [
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 7, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ] {
        t.event(&e, &mut out);
    }
    assert!(t.finished());
    let evs = events(&out);
    let chunks: Vec<_> = evs.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(
        chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
        "toolu_1"
    );
    assert_eq!(
        chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":"
    );
    assert_eq!(
        chunks[4]["choices"][0]["delta"]["tool_calls"][0]["index"],
        0
    );
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["prompt_tokens"], 7);
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 9);
    assert_eq!(chunks[7], json!("[DONE]"));
    assert_eq!(
        t.usage,
        Usage {
            input: 7,
            output: 9,
            cached: 0
        }
    );
}

#[test]
fn an_openai_stream_becomes_anthropic_events_in_order() {
    let mut t = OpenAiToAnthropic::default();
    let mut out = Vec::new();
    let c = |delta: serde_json::Value, finish: serde_json::Value| json!({"id": "chatcmpl-1", "model": "gpt-x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    for chunk in [
        c(json!({"role": "assistant", "content": ""}), json!(null)),
        c(json!({"content": "Hi"}), json!(null)),
        c(json!({"content": " there"}), json!(null)),
        c(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
            json!(null),
        ),
        c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            json!(null),
        ),
        c(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-1", "model": "gpt-x", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}}),
    ] {
        t.chunk(&chunk, &mut out);
    }
    t.finish(&mut out);
    let names: Vec<String> = events(&out).into_iter().map(|(e, _)| e.unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let evs = events(&out);
    assert_eq!(evs[0].1["message"]["id"], "msg_1");
    assert_eq!(evs[5].1["content_block"]["type"], "tool_use");
    assert_eq!(evs[5].1["index"], 1);
    assert_eq!(evs[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(evs[8].1["usage"]["input_tokens"], 4);
    assert_eq!(evs[8].1["usage"]["output_tokens"], 6);
}
