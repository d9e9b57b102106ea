use super::*;
use crds::policy::{Direction, DlpRule};

fn engine(action: DlpAction, direction: Direction, models: &[&str]) -> Arc<Engine> {
    let rule = DlpRule {
        name: "secrets".into(),
        detectors: vec![
            crds::detector::Detector::Email.into(),
            crds::detector::Detector::CreditCard.into(),
        ],
        action,
        direction,
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        ..DlpRule::default()
    };
    Arc::new(Engine::compile(&[("p".into(), rule)]).unwrap())
}

/// The OpenAI chunks of `text` split every `n` characters, then a finish chunk and `[DONE]`.
fn openai_stream(text: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(n) {
        let s: String = piece.iter().collect();
        openai::frame(
            &mut out,
            &json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": {"content": s}, "finish_reason": null}]}),
        );
    }
    openai::frame(
        &mut out,
        &json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    );
    out.extend_from_slice(openai::DONE);
    out
}

/// Feeds `frames` one SSE frame at a time; returns the caller's text and whether it was blocked.
fn run(g: &mut StreamGuard, frames: &[u8]) -> (String, Option<Blocked>) {
    let mut out = Vec::new();
    let text = String::from_utf8(frames.to_vec()).unwrap();
    for frame in text.split_inclusive("\n\n") {
        if let Err(b) = g.filter(frame.as_bytes(), &mut out) {
            return (collect(g.dialect, &out), Some(b));
        }
    }
    (collect(g.dialect, &out), None)
}

fn collect(dialect: Dialect, out: &[u8]) -> String {
    let mut d = sse::Decoder::new(1 << 20);
    let mut events = Vec::new();
    d.feed(out, &mut events).unwrap();
    let mut text = String::new();
    for ev in events {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            continue;
        };
        match dialect {
            Dialect::OpenAi => {
                if let Some(t) = v
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                {
                    text.push_str(t);
                }
            }
            Dialect::Anthropic => {
                if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
        }
    }
    text
}

#[test]
fn a_secret_split_across_deltas_is_redacted_and_the_rest_of_the_text_arrives_unchanged() {
    let text = "Write to alice.smith@example.com today, card 4111 1111 1111 1111 ok. ".repeat(3)
        + &"filler words ".repeat(40);
    for n in [1, 2, 3, 7, 50] {
        let mut g = StreamGuard::new(
            engine(DlpAction::Redact, Direction::Results, &["fast"]),
            Dialect::OpenAi,
            "fast",
        )
        .unwrap();
        let (got, blocked) = run(&mut g, &openai_stream(&text, n));
        assert!(blocked.is_none());
        let want = text
            .replace("alice.smith@example.com", "[REDACTED:email]")
            .replace("4111 1111 1111 1111", "[REDACTED:creditCard]");
        assert_eq!(got, want, "split every {n} characters");
        assert_eq!(g.found.detectors["email"], 3);
        assert_eq!(g.found.detectors["creditCard"], 3);
    }
}

#[test]
fn text_is_held_back_at_most_the_window_before_it_reaches_the_caller() {
    let mut g = StreamGuard::new(
        engine(DlpAction::Redact, Direction::Both, &[]),
        Dialect::OpenAi,
        "any",
    )
    .unwrap();
    let text = "x".repeat(HOLD_CHARS + 10);
    let mut out = Vec::new();
    let frames = openai_stream(&text, 1);
    let s = String::from_utf8(frames).unwrap();
    let pieces: Vec<&str> = s.split_inclusive("\n\n").collect();
    // Every character but the finish chunk and [DONE].
    for p in &pieces[..pieces.len() - 2] {
        g.filter(p.as_bytes(), &mut out).unwrap();
    }
    assert_eq!(collect(Dialect::OpenAi, &out).len(), 10);
    for p in &pieces[pieces.len() - 2..] {
        g.filter(p.as_bytes(), &mut out).unwrap();
    }
    assert_eq!(collect(Dialect::OpenAi, &out), text);
}

#[test]
fn a_block_rule_ends_the_stream_before_the_secret_is_relayed() {
    let mut g = StreamGuard::new(
        engine(DlpAction::Block, Direction::Results, &["f*"]),
        Dialect::OpenAi,
        "fast",
    )
    .unwrap();
    let (got, blocked) = run(
        &mut g,
        &openai_stream("Hello. Reach me at bob@example.org please.", 2),
    );
    let b = blocked.expect("blocked");
    assert_eq!(b.rule, "secrets");
    assert_eq!(b.detectors, vec!["email".to_owned()]);
    assert!(!got.contains('@'), "{got}");
}

#[test]
fn anthropic_text_deltas_are_held_and_released_before_the_block_stops() {
    let mut frames = Vec::new();
    anthropic::frame(
        &mut frames,
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for piece in ["mail ", "carol@exa", "mple.net", " now"] {
        anthropic::frame(
            &mut frames,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        );
    }
    anthropic::frame(
        &mut frames,
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    );
    let mut g = StreamGuard::new(
        engine(DlpAction::Redact, Direction::Both, &[]),
        Dialect::Anthropic,
        "claude",
    )
    .unwrap();
    let (got, blocked) = run(&mut g, &frames);
    assert!(blocked.is_none());
    assert_eq!(got, "mail [REDACTED:email] now");
}

#[test]
fn rules_select_llm_calls_by_model_globs_and_tool_rules_leave_them_alone() {
    let only_models = engine(DlpAction::Redact, Direction::Both, &["gpt-*"]);
    assert!(only_models.applies_to_model(Scope::Arguments, "gpt-4"));
    assert!(!only_models.applies_to_model(Scope::Arguments, "claude"));
    assert!(
        !only_models.applies(Scope::Arguments, "crm", "get"),
        "a models-only rule covers no tool"
    );
    let everything = engine(DlpAction::Redact, Direction::Arguments, &[]);
    assert!(everything.applies_to_model(Scope::Arguments, "claude"));
    assert!(
        !everything.applies_to_model(Scope::Results, "claude"),
        "direction holds"
    );
    let tools = Engine::compile(&[(
        "p".into(),
        DlpRule {
            name: "crm".into(),
            detectors: vec![crds::detector::Detector::Email.into()],
            tools: vec!["get".into()],
            ..DlpRule::default()
        },
    )])
    .unwrap();
    assert!(
        !tools.applies_to_model(Scope::Arguments, "claude"),
        "a tools rule covers no model"
    );
}

#[test]
fn prompts_and_whole_answers_are_scanned_in_each_dialect() {
    let e = engine(DlpAction::Redact, Direction::Both, &[]);
    let mut found = Findings::default();
    let mut req = json!({"model": "m", "system": "ops@example.com is the admin",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "mail x@example.com"}]}]});
    assert!(scan_prompt(&e, Dialect::Anthropic, &mut req, "m", &mut found).is_none());
    assert_eq!(req["system"], "[REDACTED:email] is the admin");
    assert_eq!(
        req["messages"][0]["content"][0]["text"],
        "mail [REDACTED:email]"
    );
    assert_eq!(found.detectors["email"], 2);
    let mut answer = json!({"id": "x@example.com", "choices": [{"message": {"content": "y@example.com",
        "tool_calls": [{"function": {"arguments": "{\"to\":\"z@example.com\"}"}}]}}]});
    assert!(scan_completion(&e, Dialect::OpenAi, &mut answer, "m", &mut found).is_none());
    assert_eq!(
        answer["id"], "x@example.com",
        "only the completion is scanned"
    );
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "[REDACTED:email]"
    );
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"to\":\"[REDACTED:email]\"}"
    );
}
