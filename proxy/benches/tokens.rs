//! Tokens of the tools/list result a model reads: standard mode vs Code Mode.
//!
//! `cargo bench -p portcullis-proxy --bench tokens` prints, for 10, 52, 200 and 1,000 upstream
//! tools, the o200k_base and cl100k_base token counts of the `tools` array a client gets in
//! standard mode (every tool, prefixed `<server>_<tool>`) and in Code Mode (the two tools).
//! The tool definitions are generated like real ones: a title, one or two sentences of
//! description, a small JSON Schema with typed, described properties, and annotations.

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value, json};
use std::sync::Arc;

const AREAS: [&str; 8] = [
    "invoices",
    "tickets",
    "customers",
    "deployments",
    "documents",
    "calendar",
    "payroll",
    "inventory",
];
const ACTIONS: [(&str, &str, bool); 6] = [
    (
        "list",
        "List {a} matching optional filters, newest first, with pagination.",
        true,
    ),
    (
        "get",
        "Fetch one of the {a} by its identifier, with all fields and history.",
        true,
    ),
    (
        "search",
        "Full-text search over {a}; returns the best matches with a short excerpt.",
        true,
    ),
    (
        "create",
        "Create a new entry in {a} from the given fields and return it.",
        false,
    ),
    (
        "update",
        "Change fields of an existing entry in {a}; unspecified fields stay as they are.",
        false,
    ),
    (
        "archive",
        "Archive an entry in {a}. It disappears from lists but can be restored.",
        false,
    ),
];

fn schema(i: usize) -> Arc<Map<String, Value>> {
    let props = match i % 4 {
        0 => json!({"id": {"type": "string", "description": "Identifier of the entry"}}),
        1 => {
            json!({"query": {"type": "string", "description": "Words to look for"}, "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Most results to return"}})
        }
        2 => {
            json!({"status": {"type": "string", "enum": ["open", "in_progress", "done"], "description": "Only entries in this state"}, "cursor": {"type": "string", "description": "Opaque cursor from a previous page"}})
        }
        _ => {
            json!({"id": {"type": "string", "description": "Identifier of the entry"}, "fields": {"type": "object", "description": "Field names and their new values", "additionalProperties": {"type": "string"}}})
        }
    };
    let required: Vec<&str> = if matches!(i % 4, 0 | 3) {
        vec!["id"]
    } else {
        vec![]
    };
    json!({"type": "object", "properties": props, "required": required})
        .as_object()
        .cloned()
        .map(Arc::new)
        .unwrap_or_default()
}

fn tools(n: usize) -> Vec<Tool> {
    (0..n)
        .map(|i| {
            let area = AREAS[i % AREAS.len()];
            let (verb, desc, ro) = ACTIONS[(i / AREAS.len()) % ACTIONS.len()];
            let server = format!("srv{}", i / 20);
            let name = format!("{server}_{verb}_{area}_{i}");
            let mut t = Tool::new(name, desc.replace("{a}", area), schema(i));
            t.title = Some(format!("{verb} {area}"));
            t.annotations = Some(
                ToolAnnotations::new()
                    .read_only(ro)
                    .destructive(verb == "archive"),
            );
            t
        })
        .collect()
}

fn main() {
    let o200k = tiktoken_rs::o200k_base().expect("o200k_base is embedded");
    let cl100k = tiktoken_rs::cl100k_base().expect("cl100k_base is embedded");
    let count = |tools: &[Tool]| {
        let text = serde_json::to_string(&json!({"tools": tools})).unwrap_or_default();
        (
            o200k.encode_with_special_tokens(&text).len(),
            cl100k.encode_with_special_tokens(&text).len(),
            text.len(),
        )
    };
    let code_mode = proxy::codemode::tool_definitions();
    let (co, cc, cb) = count(&code_mode);
    println!("tools/list tokens (tiktoken-rs): standard mode vs Code Mode");
    println!(
        "{:>6} | {:>14} {:>14} {:>10} | {:>14} {:>14} {:>10}",
        "tools", "std o200k", "std cl100k", "std bytes", "code o200k", "code cl100k", "code bytes"
    );
    for n in [10, 52, 200, 1000] {
        let (so, sc, sb) = count(&tools(n));
        println!("{n:>6} | {so:>14} {sc:>14} {sb:>10} | {co:>14} {cc:>14} {cb:>10}");
    }
}
