//! Code Mode's value conversions (`codemode::Conversions`, the sandbox's own functions): a
//! tool's `CallToolResult` (JSON from an upstream) as the script receives it, then a value made
//! from it converted back as tool-call arguments and as the script's result (with the output
//! cap). One QuickJS runtime for the process.
//!
//! Input: a mode byte, then the tool result as JSON (mode bit 3 clear) or as the text of a text
//! content block (set). The low three bits pick the script function applied to the received
//! value. Property: a JSON value whose numbers are exact in a double comes back unchanged
//! (received, as arguments when an object, and as the result when within the output cap).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::codemode::{Conversions, Limits};
use serde_json::{Value, json};

/// Functions a script might apply to what a tool gave it before passing it on or returning it.
const WRAPS: [&str; 8] = [
    "v => v",
    "v => ({ v, f() {}, u: undefined, s: Symbol('x') })",
    "v => [v, v]",
    "v => { const o = { v }; o.self = o; return o }",
    "v => ({ toJSON() { return v } })",
    "v => ({ big: 10n, v })",
    "v => Object.assign(Object.create(null), { v, d: new Date(0), m: new Map([[1, 2]]) })",
    "v => (typeof v === 'string' ? v.repeat(3) : JSON.stringify(v))",
];

thread_local! {
    static CONV: Conversions = Conversions::new(Limits {
        memory_bytes: 64 << 20,
        max_output_bytes: 16 << 10,
        ..Limits::default()
    })
    .expect("a QuickJS runtime");
}

/// Whether every number in `v` survives a trip through a JS double unchanged.
fn exact(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.as_i64().is_some_and(|i| i.unsigned_abs() <= 1 << 53)
                || n.as_u64().is_some_and(|u| u <= 1 << 53)
        }
        Value::Array(a) => a.iter().all(exact),
        Value::Object(m) => m.values().all(exact),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let result = if mode & 8 == 0 {
        let Ok(v) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        v
    } else {
        json!({"content": [{"type": "text", "text": String::from_utf8_lossy(rest)}]})
    };
    let wrap = WRAPS[usize::from(mode & 7)];
    let converted = CONV.with(|c| c.round_trip(result.clone(), wrap));
    if wrap != "v => v" {
        return;
    }
    let Ok(received) = converted.received else {
        return;
    };
    // What the script received is what the tool gave (structured content or parsed text).
    if let Some(sc) = result.get("structuredContent").filter(|sc| !sc.is_null())
        && result.get("isError") != Some(&Value::Bool(true))
        && exact(sc)
    {
        assert_eq!(&received, sc);
    }
    if !exact(&received) {
        return;
    }
    // Arguments: an object as it is, `null` as `{}`, anything else refused.
    let want = match &received {
        Value::Null => Some(json!({})),
        Value::Object(_) => Some(received.clone()),
        _ => None,
    };
    match (&converted.arguments, want) {
        (Ok(args), Some(want)) => assert_eq!(args, &want),
        (Err(_), None) => {}
        (got, want) => panic!("arguments {got:?}, expected {want:?} for {received}"),
    }
    if !converted.returned.truncated {
        assert_eq!(
            converted.returned.result.as_ref(),
            Some(&received),
            "{:?}",
            converted.returned
        );
    }
});
