//! The DLP scanner (`dlp::Engine`): every built-in detector plus a custom pattern and an allow
//! entry, redacting, over tool arguments/results (JSON) and raw text.
//!
//! Input: a mode byte, then text (mode even) or JSON (mode odd). Properties: findings lie inside
//! the scanned string (offsets in characters, start <= end); a redacted value is still JSON.
#![no_main]

use std::sync::LazyLock;

use crds::Detector;
use crds::policy::{Direction, DlpAction, DlpRule};
use libfuzzer_sys::fuzz_target;
use proxy::dlp::{Engine, RuleMatch, Scope};
use serde_json::Value;

static REDACT: LazyLock<Engine> = LazyLock::new(|| {
    let rules = vec![
        (
            "fuzz".to_owned(),
            DlpRule {
                name: "builtins".into(),
                detectors: Detector::ALL.map(Into::into).to_vec(),
                action: DlpAction::Redact,
                scan_keys: true,
                allow: vec!["ops@example\\.com".into(), "10.0.0.1".into()],
                ..DlpRule::default()
            },
        ),
        (
            "fuzz".to_owned(),
            DlpRule {
                name: "custom".into(),
                patterns: vec![
                    "(?i)acme-[0-9]{6}".into(),
                    "\\bproject (?:falcon|kestrel)\\b".into(),
                ],
                action: DlpAction::Block,
                direction: Direction::Results,
                ..DlpRule::default()
            },
        ),
    ];
    Engine::compile(&rules).unwrap_or_else(|e| panic!("{e}"))
});

fn check_offsets(findings: &[RuleMatch], text_of: impl Fn(&RuleMatch) -> Option<String>) {
    for f in findings {
        assert!(f.start <= f.end, "{f:?}");
        if let Some(text) = text_of(f) {
            assert!(f.end <= text.chars().count(), "{f:?} in {text:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let findings = REDACT.scan_text(&text);
        check_offsets(&findings, |_| Some(text.to_string()));
        let findings = proxy::dlp::scan_document(&REDACT, &text);
        check_offsets(&findings, |_| None);
        return;
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let original = value.clone();
    let scope = if mode & 2 == 0 {
        Scope::Arguments
    } else {
        Scope::Results
    };
    let report = REDACT.scan(&mut value, scope, "tickets", "list_tickets");
    for f in &report.findings {
        assert!(f.start <= f.end, "{f:?}");
        if f.key {
            continue;
        }
        if let Some(Value::String(s)) = original.pointer(&f.path) {
            assert!(f.end <= s.chars().count(), "{f:?} in {s:?}");
        }
    }
    serde_json::to_vec(&value).expect("a redacted value is JSON");
});
