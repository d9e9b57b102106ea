//! Tool definitions as the portal pins and screens them.
//!
//! Both the operator (status, events) and the proxy (what a portal exposes) call these
//! functions, so the hash a human copies from `kubectl get mcpserver -o yaml` or from
//! `portcullis-proxy tools` is exactly the one the portal compares with `spec.pinning.approved`.
//!
//! - [`definition_hash`]: `sha256:<hex>` over the canonical JSON of exactly `name`,
//!   `description`, `inputSchema`, `outputSchema` and `annotations` (absent or `null` fields are
//!   left out, object keys sorted, no whitespace). `title`, `icons`, `_meta` and anything else do
//!   not count: they are display data and vary between SDK versions.
//! - [`screen`]: heuristics for text in a definition that addresses the model instead of
//!   describing the tool (tool poisoning).
//! - [`evaluate`]: one tool's state against the approvals, the baseline and the screening.

use std::sync::LazyLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The fields of a tool definition that the hash covers, in canonical (sorted) order.
pub const HASHED_FIELDS: [&str; 5] = [
    "annotations",
    "description",
    "inputSchema",
    "name",
    "outputSchema",
];

/// `sha256:<64 hex>` of the canonical JSON ([`crate::canonical`]) of a tool definition's
/// hashed fields.
pub fn definition_hash(tool: &Value) -> String {
    let hashed: serde_json::Map<String, Value> = HASHED_FIELDS
        .iter()
        .filter_map(|f| match tool.get(f) {
            None | Some(Value::Null) => None,
            Some(v) => Some(((*f).to_owned(), v.clone())),
        })
        .collect();
    crate::canonical::sha256_object(&hashed)
}

/// Whether `s` has the form [`definition_hash`] produces.
pub fn is_hash(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// What a screening finding is about.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum FindingKind {
    /// Invisible, zero-width, bidirectional-override or Unicode tag characters: text a human
    /// reviewer does not see but the model reads.
    InvisibleUnicode,
    /// Text that addresses the model: `<IMPORTANT>` tags, "ignore previous instructions", "do
    /// not tell the user".
    HiddenDirective,
    /// A request to read or pass on secrets: SSH keys, `.env` files, `mcp.json`, credentials.
    SecretAccess,
    /// An instruction to call another tool first, or instead.
    ToolRedirect,
}

impl FindingKind {
    /// The name used in status, audit events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::InvisibleUnicode => "InvisibleUnicode",
            FindingKind::HiddenDirective => "HiddenDirective",
            FindingKind::SecretAccess => "SecretAccess",
            FindingKind::ToolRedirect => "ToolRedirect",
        }
    }
}

/// One screening finding.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// Where: `description`, or the JSON path of a string inside the schemas or annotations.
    pub field: String,
    /// A short excerpt around the match (at most about 80 characters; invisible characters
    /// written as `<U+XXXX>`).
    pub excerpt: String,
}

/// Characters that render as nothing (or reorder text) but reach the model.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD            // soft hyphen
        | 0x034F          // combining grapheme joiner
        | 0x061C          // Arabic letter mark
        | 0x115F | 0x1160 // Hangul fillers
        | 0x17B4 | 0x17B5
        | 0x180B..=0x180F // Mongolian variation selectors / vowel separator
        | 0x200B..=0x200F // zero-width space/joiners, LRM, RLM
        | 0x202A..=0x202E // bidi embeddings and overrides
        | 0x2060..=0x2064 // word joiner, invisible operators
        | 0x2066..=0x206F // bidi isolates, deprecated format characters
        | 0x3164 | 0xFFA0 // Hangul fillers
        | 0xFE00..=0xFE0F // variation selectors
        | 0xFEFF          // zero-width no-break space
        | 0xFFF9..=0xFFFB // interlinear annotations
        | 0x1D173..=0x1D17A
        | 0xE0000..=0xE007F // Unicode tags (ASCII smuggling)
        | 0xE0100..=0xE01EF // variation selectors supplement
    )
}

/// Byte offset of the first invisible character that is not part of an emoji: a variation
/// selector U+FE0E/U+FE0F right after a visible non-ASCII character (`✔️`) and a zero-width
/// joiner between two such characters (`👩‍💻`) are how emoji are written, and stay allowed.
fn first_hidden_char(text: &str) -> Option<usize> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let emoji_like = |c: char| !c.is_ascii() && !is_invisible(c) && !c.is_alphabetic();
    for (k, &(i, c)) in chars.iter().enumerate() {
        if !is_invisible(c) {
            continue;
        }
        let prev = k.checked_sub(1).map(|j| chars[j].1);
        let next = chars.get(k + 1).map(|&(_, c)| c);
        let benign = match c {
            '\u{FE0E}' | '\u{FE0F}' => prev.is_some_and(emoji_like),
            '\u{200D}' => {
                prev.is_some_and(|p| emoji_like(p) || matches!(p, '\u{FE0F}'))
                    && next.is_some_and(emoji_like)
            }
            _ => false,
        };
        if !benign {
            return Some(i);
        }
    }
    None
}

struct Rule {
    kind: FindingKind,
    re: Regex,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |kind, pattern: &str| Rule {
        kind,
        re: Regex::new(pattern).expect("screening patterns are valid"),
    };
    use FindingKind::*;
    vec![
        // Markup that frames text as instructions for the model.
        rule(
            HiddenDirective,
            r"(?i)<\s*/?\s*(important|system|instructions?|secret|hidden|admin|critical|assistant)\b[^>]{0,40}>",
        ),
        rule(
            HiddenDirective,
            r"(?i)\b(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|preceding|other|system)\s+(instructions|prompts?|rules|messages|directions|guidelines)",
        ),
        rule(
            HiddenDirective,
            r"(?i)\b(do\s+not|don'?t|never)\s+(tell|inform|mention|reveal|disclose|show|notify|alert)\b[^.\n]{0,60}\b(user|human|operator|anyone)",
        ),
        rule(
            HiddenDirective,
            r"(?i)\b(without|not)\s+(telling|informing|notifying|asking)\s+the\s+(user|human)",
        ),
        rule(
            HiddenDirective,
            r"(?i)\b(the\s+user|they)\s+(must|should)\s+not\s+(know|see|notice|be\s+told)",
        ),
        rule(
            HiddenDirective,
            r"(?i)\byou\s+(are\s+now|must\s+now|have\s+been\s+(re)?programmed)\b",
        ),
        // Secrets: file paths that only matter to an attacker, and verbs aimed at credentials.
        rule(
            SecretAccess,
            r"(?i)(~|\$home|/home/[a-z0-9_.-]+|/root)/\.(ssh|aws|gnupg|kube|docker|config/gcloud|netrc|npmrc|pypirc|git-credentials)\b",
        ),
        rule(
            SecretAccess,
            r"(?i)\b(id_(rsa|dsa|ecdsa|ed25519)|authorized_keys|known_hosts|\.aws/credentials|/etc/(passwd|shadow)|mcp\.json|claude_desktop_config\.json|\.netrc|\.pgpass|\.git-credentials)\b",
        ),
        rule(SecretAccess, r"(?i)(^|[\s`'(/])\.env(\.[a-z]+)?\b"),
        rule(
            SecretAccess,
            r"(?i)\b(read|cat|open|include|send|pass|provide|upload|attach|append|copy|exfiltrate|collect|extract|forward|leak|paste)\b[^.\n]{0,60}\b(api[\s_-]?keys?|private[\s_-]?keys?|passwords?|credentials|secrets?|access[\s_-]?tokens?|session[\s_-]?tokens?|ssh\s+keys?|env(ironment)?\s+variables)\b",
        ),
        // Steering the model to other tools.
        rule(
            ToolRedirect,
            r"(?i)\bbefore\s+(using|calling|invoking|running|executing)\s+(this|any|the)\s+(tool|function)\b[^.\n]{0,80}\b(call|invoke|run|use|read|execute|send)\b",
        ),
        rule(
            ToolRedirect,
            r#"(?i)\b(you\s+)?(must|should|always)\s+(first\s+|also\s+|always\s+)?(call|invoke|run|execute)\s+(the\s+)?[`'"]?[a-z0-9_.-]+[`'"]?(\s+tool)?\s+(first|before|afterwards|after\s+this|instead)\b"#,
        ),
        rule(
            ToolRedirect,
            r"(?i)\binstead\s+of\s+(this|the\s+\S+)\s+tool,?\s+(call|use|invoke)\b",
        ),
        rule(
            ToolRedirect,
            r"(?i)\b(when|whenever|if)\s+(the\s+user|you)\s+(calls?|uses?|invokes?)\s+(any\s+)?(other|another)\s+tool",
        ),
    ]
});

/// Screens one tool definition: its description, title, annotations' title and every string in
/// its input and output schemas (parameter descriptions are a favourite hiding place). Returns
/// at most one finding per kind and field, in a stable order.
pub fn screen(tool: &Value) -> Vec<Finding> {
    let mut texts: Vec<(String, &str)> = Vec::new();
    for field in ["description", "title"] {
        if let Some(s) = tool.get(field).and_then(Value::as_str) {
            texts.push((field.to_owned(), s));
        }
    }
    for field in ["inputSchema", "outputSchema", "annotations"] {
        if let Some(v) = tool.get(field) {
            collect_strings(v, field.to_owned(), &mut texts);
        }
    }
    let mut out: Vec<Finding> = Vec::new();
    for (field, text) in texts {
        if let Some(i) = first_hidden_char(text) {
            out.push(Finding {
                kind: FindingKind::InvisibleUnicode,
                field: field.clone(),
                excerpt: excerpt(text, i, i),
            });
        }
        // Match on the text with invisible characters removed, so a zero-width space cannot
        // split a keyword past the patterns.
        let visible: String = text.chars().filter(|&c| !is_invisible(c)).collect();
        for rule in RULES.iter() {
            if out.iter().any(|f| f.kind == rule.kind && f.field == field) {
                continue;
            }
            if let Some(m) = rule.re.find(&visible) {
                out.push(Finding {
                    kind: rule.kind,
                    field: field.clone(),
                    excerpt: excerpt(&visible, m.start(), m.end()),
                });
            }
        }
    }
    out
}

fn collect_strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_strings(x, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                collect_strings(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// About 80 characters around bytes `start..end` of `text`, invisible characters spelled out.
fn excerpt(text: &str, start: usize, end: usize) -> String {
    const CONTEXT: usize = 24;
    const MAX: usize = 80;
    let from = text[..start]
        .char_indices()
        .rev()
        .nth(CONTEXT - 1)
        .map_or(0, |(i, _)| i);
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    for (shown, (i, c)) in text[from..].char_indices().enumerate() {
        if shown >= MAX || (from + i > end && shown >= CONTEXT + (end - start).min(MAX)) {
            out.push('…');
            break;
        }
        if is_invisible(c) {
            out.push_str(&format!("<U+{:04X}>", c as u32));
        } else if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// What a changed or flagged tool leads to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq, Hash)]
pub enum PinAction {
    /// Record it in status and emit an event; the tool stays available.
    Allow,
    /// Also count it in a metric and set a condition; the tool stays available.
    #[default]
    Alert,
    /// Also hide the tool from every portal (list, Code Mode search and execute, calls) until
    /// its hash is approved in `spec.pinning.approved`.
    Quarantine,
}

/// A tool's state against the approvals and the baseline.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq, Hash)]
pub enum ToolState {
    /// Same definition as the baseline (the first one observed).
    Pinned,
    /// The definition's hash is listed in `spec.pinning.approved`.
    Approved,
    /// Differs from its approved hash(es), or from the baseline; still available.
    Changed,
    /// Not in the baseline and not approved; still available.
    New,
    /// Changed, new or flagged, and the configured action is `Quarantine`: hidden from every
    /// portal.
    Quarantined,
}

impl ToolState {
    /// The name used in status, audit events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolState::Pinned => "Pinned",
            ToolState::Approved => "Approved",
            ToolState::Changed => "Changed",
            ToolState::New => "New",
            ToolState::Quarantined => "Quarantined",
        }
    }
}

/// A tool name with the hash of one of its definitions.
#[derive(
    Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct ToolPin {
    /// The upstream tool name (without the portal prefix).
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// `sha256:<64 lowercase hex>` of the definition, as shown in status and by
    /// `portcullis-proxy tools`.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub hash: String,
}

/// The verdict on one tool.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolVerdict {
    /// The upstream tool name.
    pub name: String,
    /// [`definition_hash`] of the current definition.
    pub hash: String,
    /// The state against approvals and baseline (or `Quarantined`).
    pub state: ToolState,
    /// Why it was quarantined, when it was: `changed`, `new` or `flagged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Screening findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

impl ToolVerdict {
    /// Whether the portal hides this tool.
    pub fn hidden(&self) -> bool {
        self.state == ToolState::Quarantined
    }
}

/// The rules that decide a verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules<'a> {
    /// What a changed or new definition leads to.
    pub on_change: PinAction,
    /// What a flagged definition leads to.
    pub on_finding: PinAction,
    /// Hashes a human approved.
    pub approved: &'a [ToolPin],
    /// The definitions first observed.
    pub baseline: &'a [ToolPin],
}

/// The verdict on `tool` (a definition as JSON). The trusted hashes of a tool are its entries
/// in `approved` when there is any, else its baseline entry. A flagged tool is quarantined
/// (when screening says `Quarantine`) unless its exact hash is approved: approving is how a
/// human says "I read it".
pub fn evaluate(tool: &Value, rules: &Rules<'_>) -> ToolVerdict {
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let hash = definition_hash(tool);
    let findings = screen(tool);
    let mut approved = rules.approved.iter().filter(|p| p.name == name).peekable();
    let state = if approved.peek().is_some() {
        if approved.any(|p| p.hash == hash) {
            ToolState::Approved
        } else {
            ToolState::Changed
        }
    } else {
        match rules.baseline.iter().find(|p| p.name == name) {
            Some(p) if p.hash == hash => ToolState::Pinned,
            Some(_) => ToolState::Changed,
            None => ToolState::New,
        }
    };
    let reason = match state {
        ToolState::Changed if rules.on_change == PinAction::Quarantine => Some("changed"),
        ToolState::New if rules.on_change == PinAction::Quarantine => Some("new"),
        s if s != ToolState::Approved
            && !findings.is_empty()
            && rules.on_finding == PinAction::Quarantine =>
        {
            Some("flagged")
        }
        _ => None,
    };
    ToolVerdict {
        name,
        hash,
        state: if reason.is_some() {
            ToolState::Quarantined
        } else {
            state
        },
        reason: reason.map(str::to_owned),
        findings,
    }
}

/// The baseline of a list of tools: each name with its current hash, sorted by name.
pub fn baseline_of(tools: &[Value]) -> Vec<ToolPin> {
    let mut pins: Vec<ToolPin> = tools
        .iter()
        .map(|t| ToolPin {
            name: t
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            hash: definition_hash(t),
        })
        .collect();
    pins.sort();
    pins.dedup_by(|a, b| a.name == b.name);
    pins
}

#[cfg(test)]
mod tests;
