//! The inbound inspection engine (`inspect::Engine`: prompt injection, tool poisoning and a
//! denied topic, with the shipped classifier) over raw text and over tool results (JSON), where
//! a flagged string is rewritten in place.
//!
//! Input: a mode byte, then text (mode even) or JSON (mode odd). Properties: findings lie inside
//! the scanned string (offsets in characters, start <= end, score at most 100); a rewritten
//! value is still JSON.
#![no_main]

use std::sync::LazyLock;

use crds::inspection::Inspector;
use crds::policy::{Direction, InspectionAction, InspectionRule, Topic};
use libfuzzer_sys::fuzz_target;
use proxy::inspect::{Engine, Finding, Scope, Target};
use serde_json::Value;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let rules = vec![
        (
            "fuzz".to_owned(),
            InspectionRule {
                name: "flag".into(),
                detectors: vec![
                    Inspector::PromptInjection.into(),
                    Inspector::ToolPoisoning.into(),
                ],
                action: InspectionAction::Flag,
                threshold: 30,
                ..InspectionRule::default()
            },
        ),
        (
            "fuzz".to_owned(),
            InspectionRule {
                name: "topics".into(),
                detectors: vec![Inspector::Topics.into()],
                topics: vec![Topic {
                    name: "mergers".into(),
                    phrases: vec!["merger talks".into(), "acquisition target".into()],
                }],
                direction: Direction::Arguments,
                action: InspectionAction::Block,
                ..InspectionRule::default()
            },
        ),
    ];
    Engine::compile(&rules).unwrap_or_else(|e| panic!("{e}"))
});

fn check(findings: &[Finding], chars: Option<usize>) {
    for f in findings {
        assert!(f.start <= f.end, "{f:?}");
        assert!(f.score <= 100, "{f:?}");
        if let Some(n) = chars {
            assert!(f.end <= n, "{f:?} in {n} chars");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let n = text.chars().count();
        check(&ENGINE.scan_text(&text), Some(n));
        check(&ENGINE.scan_result_text(&text), Some(n));
        return;
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let (scope, target) = match mode & 6 {
        0 => (Scope::Arguments, Target::Tool("search")),
        2 => (Scope::Results, Target::Tool("search")),
        4 => (Scope::Results, Target::Prompt("summarize")),
        _ => (Scope::Results, Target::Resource("file:///notes.md")),
    };
    let original = value.clone();
    let report = ENGINE.scan(&mut value, scope, "docs", target);
    for f in &report.findings {
        let chars = match original.pointer(&f.path) {
            Some(Value::String(s)) => Some(s.chars().count()),
            _ => None,
        };
        check(std::slice::from_ref(f), chars);
    }
    serde_json::to_vec(&value).expect("a rewritten value is JSON");
});
