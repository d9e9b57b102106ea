//! DLP on LLM traffic: the McpPolicy `dlp` rules that cover a call's alias (`models` globs, or
//! a rule that names neither servers, tools nor models) scan its prompt as tool arguments are
//! scanned (direction `arguments`) and its completion as tool results are (`results`).
//!
//! - **Prompt** (the caller's request, before translation, so one scan serves every target):
//!   OpenAI `messages` (system/developer, user, assistant tool calls, tool results) and
//!   Anthropic `system` and `messages`. `block` refuses the call in the caller's format before
//!   any budget or provider is involved; `redact` rewrites the matches in the request sent on.
//! - **Completion, whole**: OpenAI `choices`, Anthropic `content` of the answer in the caller's
//!   format (text and tool-call arguments). `block` withholds the answer (an error in the
//!   caller's format; the provider's usage is still charged).
//! - **Completion, streamed** ([`StreamGuard`]): the caller's text and tool-argument deltas go
//!   through a hold-back window per content channel. The last [`HOLD_CHARS`] characters
//!   received are held back, and so is any match still touching them (it could grow); the text
//!   before is released, redacted. A secret of up to [`HOLD_CHARS`] characters is therefore
//!   seen whole however the provider split it. The scan also sees the last [`HOLD_CHARS`]
//!   characters already released, as context, so a match that only becomes one with the new
//!   text (a key name before a value) is still redacted in its unreleased part. The added delay
//!   is bounded: text reaches the caller [`HOLD_CHARS`] characters late (or at the end of its
//!   content block, which releases everything), and never more than [`MAX_HOLD_CHARS`] behind
//!   (past that, text is released even inside a match, whose released part is redacted).
//!   `block` ends the stream with an error event before the match is relayed.
//!
//! Findings are counted per detector for the audit event and metrics; the text never is.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crds::McpPolicy;
use crds::policy::DlpAction;
use serde_json::{Value, json};

use super::{Dialect, ErrorKind, anthropic, openai};
use crate::dlp::{Engine, Report, RuleMatch, Scope, marker};
use crate::model::Identity;

/// Characters of streamed completion held back (see the module documentation).
pub const HOLD_CHARS: usize = 256;

/// The most characters of one streamed content channel held back while a match grows.
pub const MAX_HOLD_CHARS: usize = 4096;

/// The DLP rules of one configuration, compiled per set of policies covering a caller.
pub struct Rules {
    policies: Vec<McpPolicy>,
    cache: Mutex<HashMap<Vec<usize>, Arc<Engine>>>,
}

impl Rules {
    /// The rules of `policies` (those with DLP rules).
    pub fn of(policies: &[McpPolicy]) -> Rules {
        Rules {
            policies: policies
                .iter()
                .filter(|p| !p.spec.dlp.is_empty())
                .cloned()
                .collect(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The engine for `identity` (the rules of every policy covering it); `None` when no rule
    /// covers either side of a call to `alias`. `Err` names a rule that does not compile.
    pub fn engine(&self, identity: &Identity, alias: &str) -> Result<Option<Arc<Engine>>, String> {
        let key: Vec<usize> = self
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| crate::policy::covers(p, identity))
            .map(|(i, _)| i)
            .collect();
        if key.is_empty() {
            return Ok(None);
        }
        let cached = self.cache.lock().ok().and_then(|m| m.get(&key).cloned());
        let engine = match cached {
            Some(e) => e,
            None => {
                let rules: Vec<(String, crds::policy::DlpRule)> = key
                    .iter()
                    .flat_map(|&i| {
                        let p = &self.policies[i];
                        let name = p.metadata.name.clone().unwrap_or_default();
                        p.spec.dlp.iter().map(move |r| (name.clone(), r.clone()))
                    })
                    .collect();
                let e = Arc::new(Engine::compile(&rules).map_err(|e| e.to_string())?);
                if let Ok(mut m) = self.cache.lock() {
                    m.insert(key, e.clone());
                }
                e
            }
        };
        let applies = engine.applies_to_model(Scope::Arguments, alias)
            || engine.applies_to_model(Scope::Results, alias);
        Ok(applies.then_some(engine))
    }
}

/// What the DLP scans of one call found: merged reports.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Matches per detector (prompt and completion).
    pub detectors: BTreeMap<String, u64>,
    /// `(detector, action)` of every match, for the metrics.
    pub actions: Vec<(&'static str, DlpAction)>,
}

impl Findings {
    fn add(&mut self, report: &Report) {
        for (d, n) in report.detector_counts() {
            *self.detectors.entry(d).or_insert(0) += n;
        }
        self.actions
            .extend(report.findings.iter().map(|f| (f.detector, f.action)));
    }

    fn add_matches(&mut self, matches: &[&RuleMatch]) {
        let mut seen = std::collections::HashSet::new();
        for f in matches {
            if seen.insert((f.detector, f.start, f.end)) {
                *self.detectors.entry(f.detector.to_owned()).or_insert(0) += 1;
            }
            self.actions.push((f.detector, f.action));
        }
    }

    /// Whether anything was found.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// Takes the findings out (for a record that is written once).
    pub fn merge(&mut self, other: Findings) {
        for (d, n) in other.detectors {
            *self.detectors.entry(d).or_insert(0) += n;
        }
        self.actions.extend(other.actions);
    }
}

/// A block decision: the rule and the detectors that fired.
#[derive(Debug, Clone)]
pub struct Blocked {
    /// Rule name.
    pub rule: String,
    /// Detector ids.
    pub detectors: Vec<String>,
}

impl Blocked {
    fn of(report: &Report) -> Blocked {
        Blocked {
            rule: report.blocked_by.clone().unwrap_or_default(),
            detectors: report.detector_counts().into_keys().collect(),
        }
    }

    /// The message a caller gets: rule and detectors, never the data.
    pub fn message(&self, what: &str) -> String {
        format!(
            "{what} blocked by DLP rule {:?} (detectors: {})",
            self.rule,
            self.detectors.join(", ")
        )
    }

    /// The audit reason.
    pub fn reason(&self, what: &str) -> String {
        format!("{what} blocked by DLP rule {}", self.rule)
    }
}

fn scan_fields(
    engine: &Engine,
    doc: &mut Value,
    fields: &[&str],
    dir: Scope,
    alias: &str,
    found: &mut Findings,
) -> Option<Blocked> {
    let mut blocked = None;
    for f in fields {
        let Some(v) = doc.get_mut(*f) else { continue };
        let report = engine.scan_model(v, dir, alias);
        found.add(&report);
        if report.is_blocked() && blocked.is_none() {
            blocked = Some(Blocked::of(&report));
        }
    }
    blocked
}

/// Scans (and, for `redact` rules, rewrites) the prompt of a request in `caller`'s format.
pub fn scan_prompt(
    engine: &Engine,
    caller: Dialect,
    req: &mut Value,
    alias: &str,
    found: &mut Findings,
) -> Option<Blocked> {
    let fields: &[&str] = match caller {
        Dialect::OpenAi => &["messages"],
        Dialect::Anthropic => &["system", "messages"],
    };
    scan_fields(engine, req, fields, Scope::Arguments, alias, found)
}

/// Scans (and redacts) a whole answer in `caller`'s format.
pub fn scan_completion(
    engine: &Engine,
    caller: Dialect,
    answer: &mut Value,
    alias: &str,
    found: &mut Findings,
) -> Option<Blocked> {
    let fields: &[&str] = match caller {
        Dialect::OpenAi => &["choices"],
        Dialect::Anthropic => &["content"],
    };
    scan_fields(engine, answer, fields, Scope::Results, alias, found)
}

/// A DLP refusal in `dialect`'s format: 400 for a prompt (OpenAI code `content_filter`), 403 for
/// a withheld answer; `x-should-retry: false` either way (a retry would meet the same rule).
pub fn refusal(dialect: Dialect, status: u16, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let kind = ErrorKind::of(status);
    let body = match dialect {
        Dialect::OpenAi => openai::error_body(kind, message, Some("content_filter")),
        Dialect::Anthropic => anthropic::error_body(kind, message),
    };
    let mut resp = (
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::FORBIDDEN),
        axum::Json(body),
    )
        .into_response();
    resp.headers_mut()
        .insert("x-should-retry", http::HeaderValue::from_static("false"));
    resp
}

/// One content channel of a stream: released context and held text (original, unredacted).
#[derive(Debug, Default)]
struct Channel {
    /// The last [`HOLD_CHARS`] characters released (context for the next scans).
    ctx: String,
    /// Received, not yet released.
    held: String,
}

/// Byte offset of the `n`th character of `s`.
fn byte_at(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(b, _)| b)
}

fn tail_chars(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    &s[byte_at(s, count.saturating_sub(n))..]
}

impl Channel {
    /// Adds `delta`; returns the text to release now (redacted), or the block.
    fn push(
        &mut self,
        engine: &Engine,
        alias: &str,
        delta: &str,
        last: bool,
        found: &mut Findings,
    ) -> Result<String, Blocked> {
        self.held.push_str(delta);
        if self.held.is_empty() {
            return Ok(String::new());
        }
        let ctx_n = self.ctx.chars().count();
        let window = format!("{}{}", self.ctx, self.held);
        let total = ctx_n + self.held.chars().count();
        let matches = engine.scan_model_text(&window, Scope::Results, alias);
        // Matches over released text only were dealt with when it was released.
        let live: Vec<&RuleMatch> = matches.iter().filter(|m| m.end > ctx_n).collect();
        if let Some(b) = live.iter().find(|m| m.action == DlpAction::Block) {
            let mut detectors: Vec<String> = live
                .iter()
                .filter(|m| m.action == DlpAction::Block)
                .map(|m| m.detector.to_owned())
                .collect();
            detectors.sort();
            detectors.dedup();
            found.add_matches(&live);
            return Err(Blocked {
                rule: b.rule.to_string(),
                detectors,
            });
        }
        let mut release = if last {
            total
        } else {
            total.saturating_sub(HOLD_CHARS).max(ctx_n)
        };
        if !last {
            // Hold back any match still touching the held tail: it may grow.
            loop {
                let back = live
                    .iter()
                    .filter(|m| m.start < release && m.end > release)
                    .map(|m| m.start.max(ctx_n))
                    .min();
                match back {
                    Some(b) if b < release => release = b,
                    _ => break,
                }
            }
            if total - release > MAX_HOLD_CHARS {
                release = total - HOLD_CHARS;
            }
        }
        if release == ctx_n {
            return Ok(String::new());
        }
        // The released part of each match within [ctx_n, release).
        let done: Vec<&RuleMatch> = live.iter().copied().filter(|m| m.start < release).collect();
        found.add_matches(&done);
        let mut spans: Vec<(usize, usize, &'static str)> = Vec::new();
        let mut by_span: BTreeMap<(usize, usize), (DlpAction, &'static str)> = BTreeMap::new();
        for m in &done {
            let span = (m.start.max(ctx_n), m.end.min(release));
            let e = by_span.entry(span).or_insert((m.action, m.detector));
            if m.action > e.0 {
                *e = (m.action, m.detector);
            }
        }
        for ((s, e), (action, det)) in by_span {
            if action == DlpAction::Redact && s < e {
                spans.push((s, e, det));
            }
        }
        spans.sort_unstable();
        // Byte offset of each character (and of the end).
        let idx: Vec<usize> = window
            .char_indices()
            .map(|(b, _)| b)
            .chain(std::iter::once(window.len()))
            .collect();
        let mut out = String::new();
        let mut at = ctx_n;
        for (s, e, det) in spans {
            if e <= at {
                continue;
            }
            let s = s.max(at);
            out.push_str(&window[idx[at]..idx[s]]);
            out.push_str(&marker(det));
            at = e;
        }
        out.push_str(&window[idx[at]..idx[release]]);
        let released_end = idx[release];
        self.ctx = tail_chars(&window[..released_end], HOLD_CHARS).to_owned();
        self.held = window[released_end..].to_owned();
        Ok(out)
    }
}

/// The hold-back window over a stream in the caller's format (see the module documentation):
/// takes the caller's SSE frames, returns them with text held back and redacted.
pub struct StreamGuard {
    engine: Arc<Engine>,
    alias: String,
    dialect: Dialect,
    decoder: sse::Decoder,
    channels: BTreeMap<(u64, Option<u64>), Channel>,
    /// Anthropic content blocks by index: the delta type and field of their text.
    kinds: BTreeMap<u64, (&'static str, &'static str)>,
    /// The last OpenAI chunk seen (its id, model, created), to frame released text at `[DONE]`.
    template: Option<Value>,
    /// What was found so far.
    pub found: Findings,
    /// Some completion text was released to the caller.
    released: bool,
}

impl std::fmt::Debug for StreamGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGuard")
            .field("alias", &self.alias)
            .finish()
    }
}

impl StreamGuard {
    /// A guard for a stream of `alias` answered in `dialect`, when `engine` has rules for its
    /// completions.
    pub fn new(engine: Arc<Engine>, dialect: Dialect, alias: &str) -> Option<StreamGuard> {
        engine
            .applies_to_model(Scope::Results, alias)
            .then(|| StreamGuard {
                engine,
                alias: alias.to_owned(),
                dialect,
                decoder: sse::Decoder::new(super::stream::MAX_EVENT_BYTES),
                channels: BTreeMap::new(),
                template: None,
                kinds: BTreeMap::new(),
                found: Findings::default(),
                released: false,
            })
    }

    /// Whether some completion text has been released to the caller.
    pub fn released_any(&self) -> bool {
        self.released
    }

    /// Filters the caller frames in `frames` into `out`.
    pub fn filter(&mut self, frames: &[u8], out: &mut Vec<u8>) -> Result<(), Blocked> {
        let mut events = Vec::new();
        if self.decoder.feed(frames, &mut events).is_err() {
            // Our own frames: cannot happen; pass them rather than lose them.
            out.extend_from_slice(frames);
            return Ok(());
        }
        for ev in events {
            match self.dialect {
                Dialect::OpenAi => self.openai(&ev, out)?,
                Dialect::Anthropic => self.anthropic(&ev, out)?,
            }
        }
        Ok(())
    }

    fn push(
        &mut self,
        key: (u64, Option<u64>),
        delta: &str,
        last: bool,
    ) -> Result<String, Blocked> {
        let ch = self.channels.entry(key).or_default();
        let out = ch.push(&self.engine, &self.alias, delta, last, &mut self.found)?;
        self.released |= !out.is_empty();
        Ok(out)
    }

    fn openai(&mut self, ev: &sse::Event, out: &mut Vec<u8>) -> Result<(), Blocked> {
        if ev.data.trim() == "[DONE]" {
            // Anything still held (a stream without a finish_reason): released before the end.
            let keys: Vec<_> = self.channels.keys().copied().collect();
            let mut pending: BTreeMap<u64, Value> = BTreeMap::new();
            for k in keys {
                let text = self.push(k, "", true)?;
                if !text.is_empty() {
                    let d = pending.entry(k.0).or_insert_with(|| json!({}));
                    put_openai_delta(d, k.1, text);
                }
            }
            if let Some(t) = self.template.clone() {
                for (i, delta) in pending {
                    let mut c = t.clone();
                    c["choices"] = json!([{"index": i, "delta": delta, "finish_reason": null}]);
                    if let Some(o) = c.as_object_mut() {
                        o.remove("usage");
                    }
                    openai::frame(out, &c);
                }
            }
            out.extend_from_slice(openai::DONE);
            return Ok(());
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else {
            pass(ev, out);
            return Ok(());
        };
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            pass(ev, out);
            return Ok(());
        };
        let mut work: Vec<(usize, u64, bool)> = Vec::new();
        for (k, c) in choices.iter().enumerate() {
            let i = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let last = c.get("finish_reason").is_some_and(|f| !f.is_null());
            work.push((k, i, last));
        }
        for (k, i, last) in work {
            let c = &mut choices[k];
            if let Some(text) = c.pointer("/delta/content").and_then(Value::as_str) {
                let text = text.to_owned();
                let released = self.push((i, None), &text, last)?;
                c["delta"]["content"] = Value::String(released);
            } else if last && self.channels.contains_key(&(i, None)) {
                let released = self.push((i, None), "", true)?;
                if !released.is_empty() {
                    if !c.get("delta").is_some_and(Value::is_object) {
                        c["delta"] = json!({});
                    }
                    c["delta"]["content"] = Value::String(released);
                }
            }
            // Tool-call arguments, one channel per call index.
            let mut seen = Vec::new();
            if let Some(calls) = c
                .pointer_mut("/delta/tool_calls")
                .and_then(Value::as_array_mut)
            {
                for call in calls.iter_mut() {
                    let t = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                    seen.push(t);
                    let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str)
                    else {
                        continue;
                    };
                    let args = args.to_owned();
                    let released = self.push((i, Some(t)), &args, last)?;
                    call["function"]["arguments"] = Value::String(released);
                }
            }
            if last {
                let rest: Vec<(u64, Option<u64>)> = self
                    .channels
                    .keys()
                    .copied()
                    .filter(|(ci, t)| *ci == i && t.is_some_and(|t| !seen.contains(&t)))
                    .collect();
                for key in rest {
                    let released = self.push(key, "", true)?;
                    if !released.is_empty() {
                        if !c.get("delta").is_some_and(Value::is_object) {
                            c["delta"] = json!({});
                        }
                        put_openai_delta(&mut c["delta"], key.1, released);
                    }
                }
            }
        }
        if v.get("id").is_some() {
            self.template = Some(v.clone());
        }
        openai::frame(out, &v);
        Ok(())
    }

    fn anthropic(&mut self, ev: &sse::Event, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let name = ev.event.as_deref().unwrap_or("message");
        let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else {
            pass(ev, out);
            return Ok(());
        };
        match name {
            "content_block_delta" => {
                let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let field = match v.pointer("/delta/type").and_then(Value::as_str) {
                    Some("text_delta") => "text",
                    Some("input_json_delta") => "partial_json",
                    _ => {
                        anthropic::frame(out, name, &v);
                        return Ok(());
                    }
                };
                let text = v["delta"][field].as_str().unwrap_or("").to_owned();
                let released = self.push((i, None), &text, false)?;
                if released.is_empty() {
                    return Ok(());
                }
                v["delta"][field] = Value::String(released);
                anthropic::frame(out, name, &v);
            }
            "content_block_stop" => {
                let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(kind) = self.kinds.get(&i).copied() {
                    let released = self.push((i, None), "", true)?;
                    if !released.is_empty() {
                        let (t, field) = kind;
                        let mut d = json!({"type": "content_block_delta", "index": i,
                            "delta": {"type": t}});
                        d["delta"][field] = Value::String(released);
                        anthropic::frame(out, "content_block_delta", &d);
                    }
                }
                anthropic::frame(out, name, &v);
            }
            "content_block_start" => {
                let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match v.pointer("/content_block/type").and_then(Value::as_str) {
                    Some("text") => {
                        self.kinds.insert(i, ("text_delta", "text"));
                    }
                    Some("tool_use") => {
                        self.kinds.insert(i, ("input_json_delta", "partial_json"));
                    }
                    _ => {}
                }
                anthropic::frame(out, name, &v);
            }
            _ => anthropic::frame(out, name, &v),
        }
        Ok(())
    }
}

fn put_openai_delta(delta: &mut Value, call: Option<u64>, text: String) {
    match call {
        None => delta["content"] = Value::String(text),
        Some(t) => {
            if !delta.get("tool_calls").is_some_and(Value::is_array) {
                delta["tool_calls"] = json!([]);
            }
            if let Some(a) = delta["tool_calls"].as_array_mut() {
                a.push(json!({"index": t, "function": {"arguments": text}}));
            }
        }
    }
}

fn pass(ev: &sse::Event, out: &mut Vec<u8>) {
    if let Some(name) = &ev.event {
        out.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    for line in ev.data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests;
