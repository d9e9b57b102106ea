//! The rule engine: compiles (policy, rule) pairs once and scans JSON values and text.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use crds::policy::{Direction, DlpAction, DlpRule};
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use super::detectors::{
    Builtins, Detector, DetectorSet, Hit, is_secret_key_name, looks_like_secret,
};
use super::{DlpError, glob_match};

/// Which side of a tool call is scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Tool arguments, before the upstream sees them.
    Arguments,
    /// Tool results, before the client sees them.
    Results,
}

/// One match of one rule. Never carries the matched text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleMatch {
    /// Detector id (`creditCard`, …) or `pattern` for a rule's custom regex.
    pub detector: &'static str,
    /// Policy the rule belongs to (shared with the compiled rule: no copy per finding).
    pub policy: Arc<str>,
    /// Rule name.
    pub rule: Arc<str>,
    /// The rule's action.
    pub action: DlpAction,
    /// JSON pointer of the string (for a key: of the object holding it); empty for raw text.
    pub path: String,
    /// The match is in an object key rather than a value.
    pub key: bool,
    /// Start, in characters, within the string (or the raw text).
    pub start: usize,
    /// End (exclusive), in characters.
    pub end: usize,
}

/// What a scan found and decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every finding, in document order.
    pub findings: Vec<RuleMatch>,
    /// The strictest action among the findings; `None` when nothing matched.
    pub action: Option<DlpAction>,
    /// Name of the first rule whose action is `Block`, when any.
    pub blocked_by: Option<String>,
}

impl Report {
    /// Whether a `Block` rule matched.
    pub fn is_blocked(&self) -> bool {
        self.action == Some(DlpAction::Block)
    }

    /// Distinct matches per detector (a match reported by several rules counts once): the
    /// shape audit events record.
    pub fn detector_counts(&self) -> BTreeMap<String, u64> {
        let mut seen = std::collections::HashSet::new();
        let mut out = BTreeMap::new();
        for f in &self.findings {
            if seen.insert((&f.detector, &f.path, f.key, f.start, f.end)) {
                *out.entry(f.detector.to_string()).or_insert(0) += 1;
            }
        }
        out
    }
}

/// The redaction marker for a detector id: `[REDACTED:<id>]`.
pub fn marker(detector: &str) -> String {
    format!("[REDACTED:{detector}]")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Det {
    Builtin(Detector),
    Custom(usize),
}

impl Det {
    fn id(self) -> &'static str {
        match self {
            Det::Builtin(d) => d.id(),
            Det::Custom(_) => "pattern",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RawHit {
    start: usize,
    end: usize,
    det: Det,
}

enum Allow {
    Literal(String),
    Regex(String, Regex),
}

struct Rule {
    policy: Arc<str>,
    name: Arc<str>,
    action: DlpAction,
    direction: Direction,
    servers: Vec<String>,
    tools: Vec<String>,
    models: Vec<String>,
    detectors: DetectorSet,
    customs: Vec<usize>,
    allow: Vec<Allow>,
    scan_keys: bool,
}

impl Rule {
    fn in_scope(&self, dir: Scope, server: &str, tool: &str) -> bool {
        let dir_ok = matches!(
            (self.direction, dir),
            (Direction::Both, _)
                | (Direction::Arguments, Scope::Arguments)
                | (Direction::Results, Scope::Results)
        );
        // A rule naming only models covers no tool call.
        let tools_ok =
            !(self.servers.is_empty() && self.tools.is_empty() && !self.models.is_empty());
        dir_ok
            && tools_ok
            && (self.servers.is_empty() || self.servers.iter().any(|g| glob_match(g, server)))
            && (self.tools.is_empty() || self.tools.iter().any(|g| glob_match(g, tool)))
    }

    /// Whether the rule covers this side (prompt: `Arguments`, completion: `Results`) of an
    /// LLM call to `alias`: named by `models`, or a rule naming neither servers nor tools.
    fn covers_model(&self, dir: Scope, alias: &str) -> bool {
        let dir_ok = matches!(
            (self.direction, dir),
            (Direction::Both, _)
                | (Direction::Arguments, Scope::Arguments)
                | (Direction::Results, Scope::Results)
        );
        dir_ok
            && if self.models.is_empty() {
                self.servers.is_empty() && self.tools.is_empty()
            } else {
                self.models.iter().any(|g| glob_match(g, alias))
            }
    }

    fn covers(&self, det: Det) -> bool {
        match det {
            Det::Builtin(d) => self.detectors.contains(d),
            Det::Custom(i) => self.customs.contains(&i),
        }
    }

    fn allows(&self, text: &str) -> bool {
        self.allow.iter().any(|a| match a {
            Allow::Literal(l) => l == text,
            Allow::Regex(l, re) => l == text || re.is_match(text),
        })
    }
}

/// Compiled DLP rules. Cheap to share (`Arc<Engine>`); scanning takes `&self`.
pub struct Engine {
    rules: Vec<Rule>,
    customs: Vec<Regex>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .rules
            .iter()
            .map(|r| format!("{}/{}", r.policy, r.name))
            .collect();
        f.debug_struct("Engine")
            .field("rules", &names)
            .field("customPatterns", &self.customs.len())
            .finish()
    }
}

impl Engine {
    /// Compiles `(policy name, rule)` pairs. Unknown detectors, invalid custom regexes and
    /// rules without detectors or patterns are errors naming the policy and rule. An `allow`
    /// entry matches a found value when it equals it or, if it is a valid regex, fully
    /// matches it.
    pub fn compile(rules: &[(String, DlpRule)]) -> Result<Engine, DlpError> {
        let mut out = Vec::with_capacity(rules.len());
        let mut customs = Vec::new();
        for (policy, r) in rules {
            let mut detectors = DetectorSet::EMPTY;
            for (index, d) in r.detectors.iter().enumerate() {
                // crds::validate refuses unknown names before a configuration gets here; an
                // unvalidated one is still an error, never a detector silently skipped.
                let known = d.known().ok_or_else(|| DlpError::UnknownDetector {
                    policy: policy.clone(),
                    rule: r.name.clone(),
                    index,
                    name: d.to_string(),
                })?;
                detectors.insert(known);
            }
            let mut idx = Vec::new();
            for (index, p) in r.patterns.iter().enumerate() {
                let re = Regex::new(p).map_err(|e| DlpError::BadPattern {
                    policy: policy.clone(),
                    rule: r.name.clone(),
                    index,
                    message: e.to_string(),
                })?;
                idx.push(customs.len());
                customs.push(re);
            }
            if detectors.is_empty() && idx.is_empty() {
                return Err(DlpError::EmptyRule {
                    policy: policy.clone(),
                    rule: r.name.clone(),
                });
            }
            let allow = r
                .allow
                .iter()
                .map(|a| match Regex::new(&format!("^(?:{a})$")) {
                    Ok(re) => Allow::Regex(a.clone(), re),
                    Err(_) => Allow::Literal(a.clone()),
                })
                .collect();
            out.push(Rule {
                policy: policy.as_str().into(),
                name: r.name.as_str().into(),
                action: r.action,
                direction: r.direction,
                servers: r.servers.clone(),
                tools: r.tools.clone(),
                models: r.models.clone(),
                detectors,
                customs: idx,
                allow,
                scan_keys: r.scan_keys,
            });
        }
        Ok(Engine {
            rules: out,
            customs,
        })
    }

    /// Every built-in detector in one rule named `allDetectors` with action `Log`, both
    /// directions, keys scanned (what the CLI and the benchmark use).
    pub fn all_detectors() -> Engine {
        let rule = DlpRule {
            name: "allDetectors".into(),
            detectors: Detector::ALL.map(Into::into).to_vec(),
            scan_keys: true,
            ..DlpRule::default()
        };
        Engine::compile(&[(String::new(), rule)]).expect("built-in rule compiles")
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule applies to this side of a call to `server`/`tool` (callers may skip
    /// scanning otherwise).
    pub fn applies(&self, dir: Scope, server: &str, tool: &str) -> bool {
        self.rules.iter().any(|r| r.in_scope(dir, server, tool))
    }

    /// Scans every string value (and object keys for rules with `scanKeys`) of `value` with
    /// the rules in scope, and integers long enough to be card numbers. With `Redact` the
    /// strictest action, each match of a redacting rule is replaced in place by
    /// `[REDACTED:<detector>]`; with `Block` the value is left untouched.
    pub fn scan(&self, value: &mut Value, dir: Scope, server: &str, tool: &str) -> Report {
        let active: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].in_scope(dir, server, tool))
            .collect();
        self.scan_with(value, active)
    }

    fn scan_with(&self, value: &mut Value, active: Vec<usize>) -> Report {
        if active.is_empty() {
            return Report::default();
        }
        let mut w = Walker::new(self, active);
        w.walk(value);
        let report = w.report();
        if report.action == Some(DlpAction::Redact) {
            apply_edits(value, std::mem::take(&mut w.edits));
        }
        report
    }

    /// Whether any rule covers this side of an LLM call to `alias` (a prompt is `Arguments`, a
    /// completion `Results`).
    pub fn applies_to_model(&self, dir: Scope, alias: &str) -> bool {
        self.rules.iter().any(|r| r.covers_model(dir, alias))
    }

    /// [`Engine::scan`] for one side of an LLM call to `alias`: the rules whose `models` (or
    /// lack of any selector) cover it.
    pub fn scan_model(&self, value: &mut Value, dir: Scope, alias: &str) -> Report {
        let active: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].covers_model(dir, alias))
            .collect();
        self.scan_with(value, active)
    }

    /// Scans raw text with the rules covering this side of an LLM call to `alias` (what a
    /// stream's window is scanned with). Offsets are characters in `text`; every finding
    /// carries its rule's action.
    pub fn scan_model_text(&self, text: &str, dir: Scope, alias: &str) -> Vec<RuleMatch> {
        let active: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].covers_model(dir, alias))
            .collect();
        if active.is_empty() {
            return Vec::new();
        }
        let mut w = Walker::new(self, active);
        w.string(text, None, false, false);
        w.findings
    }

    /// Scans raw text with every rule (scope ignored). Offsets are characters in `text`.
    pub fn scan_text(&self, text: &str) -> Vec<RuleMatch> {
        let mut w = Walker::new(self, (0..self.rules.len()).collect());
        w.string(text, None, false, false);
        w.findings
    }
}

/// Scans a document for the CLI: JSON is walked (findings carry pointers and offsets within
/// each string), anything else is scanned as raw text. Every rule applies; nothing is modified.
pub fn scan_document(engine: &Engine, text: &str) -> Vec<RuleMatch> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.is_object() || v.is_array() => {
            let mut w = Walker::new(engine, (0..engine.rules.len()).collect());
            w.walk(&v);
            w.findings
        }
        _ => engine.scan_text(text),
    }
}

enum Edit {
    Value {
        ptr: String,
        new: Value,
    },
    Key {
        ptr: String,
        old: String,
        new: String,
    },
}

fn apply_edits(root: &mut Value, edits: Vec<Edit>) {
    let mut keys = Vec::new();
    for e in edits {
        match e {
            Edit::Value { ptr, new } => {
                if let Some(v) = root.pointer_mut(&ptr) {
                    *v = new;
                }
            }
            Edit::Key { ptr, old, new } => keys.push((ptr, old, new)),
        }
    }
    // Deepest objects first, so parent pointers stay valid.
    keys.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.matches('/').count()));
    for (ptr, old, new) in keys {
        let Some(Value::Object(map)) = root.pointer_mut(&ptr) else {
            continue;
        };
        let entries = std::mem::take(map);
        for (k, v) in entries {
            let mut k = if k == old { new.clone() } else { k };
            let base = k.clone();
            let mut n = 2;
            while map.contains_key(&k) {
                k = format!("{base}#{n}");
                n += 1;
            }
            map.insert(k, v);
        }
    }
}

struct Walker<'e> {
    engine: &'e Engine,
    active: Vec<usize>,
    key_active: Vec<usize>,
    set: DetectorSet,
    key_set: DetectorSet,
    customs: Vec<usize>,
    key_customs: Vec<usize>,
    bhits: Vec<Hit>,
    hits: Vec<RawHit>,
    findings: Vec<RuleMatch>,
    edits: Vec<Edit>,
    path: String,
    action: Option<DlpAction>,
    blocked_by: Option<String>,
}

fn card_only() -> DetectorSet {
    [Detector::CreditCard].into_iter().collect()
}

impl<'e> Walker<'e> {
    fn new(engine: &'e Engine, active: Vec<usize>) -> Walker<'e> {
        let key_active: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&i| engine.rules[i].scan_keys)
            .collect();
        let set_of = |ids: &[usize]| {
            ids.iter().fold(DetectorSet::EMPTY, |s, &i| {
                s.union(engine.rules[i].detectors)
            })
        };
        let customs_of = |ids: &[usize]| {
            let mut c: Vec<usize> = ids
                .iter()
                .flat_map(|&i| engine.rules[i].customs.iter().copied())
                .collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        Walker {
            set: set_of(&active),
            key_set: set_of(&key_active),
            customs: customs_of(&active),
            key_customs: customs_of(&key_active),
            engine,
            active,
            key_active,
            bhits: Vec::new(),
            hits: Vec::new(),
            findings: Vec::new(),
            edits: Vec::new(),
            path: String::new(),
            action: None,
            blocked_by: None,
        }
    }

    fn report(&mut self) -> Report {
        Report {
            findings: std::mem::take(&mut self.findings),
            action: self.action,
            blocked_by: self.blocked_by.clone(),
        }
    }

    fn walk(&mut self, v: &Value) {
        match v {
            Value::String(s) => {
                if let Some(new) = self.string(s, None, false, false) {
                    self.edits.push(Edit::Value {
                        ptr: self.path.clone(),
                        new: Value::String(new),
                    });
                }
            }
            Value::Number(n) => {
                if let Some(u) = n.as_u64().filter(|&u| u >= 1_000_000_000_000)
                    && self.set.contains(Detector::CreditCard)
                {
                    let s = u.to_string();
                    if let Some(new) = self.string(&s, None, false, true) {
                        self.edits.push(Edit::Value {
                            ptr: self.path.clone(),
                            new: Value::String(new),
                        });
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = self.path.len();
                    let _ = write!(self.path, "/{i}");
                    self.walk(x);
                    self.path.truncate(len);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    if !self.key_active.is_empty()
                        && let Some(new) = self.string(k, None, true, false)
                    {
                        self.edits.push(Edit::Key {
                            ptr: self.path.clone(),
                            old: k.clone(),
                            new,
                        });
                    }
                    let len = self.path.len();
                    self.path.push('/');
                    push_escaped(&mut self.path, k);
                    match x {
                        Value::String(s) => {
                            let extra = (self.set.contains(Detector::GenericSecret)
                                && is_secret_key_name(k)
                                && looks_like_secret(s.as_bytes()))
                            .then_some(Hit {
                                start: 0,
                                end: s.len(),
                                detector: Detector::GenericSecret,
                            });
                            if let Some(new) = self.string(s, extra, false, false) {
                                self.edits.push(Edit::Value {
                                    ptr: self.path.clone(),
                                    new: Value::String(new),
                                });
                            }
                        }
                        _ => self.walk(x),
                    }
                    self.path.truncate(len);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// Scans one string; records findings; returns its redacted form when a redacting rule
    /// matched.
    fn string(&mut self, s: &str, extra: Option<Hit>, key: bool, numeric: bool) -> Option<String> {
        let set = if key {
            self.key_set
        } else if numeric {
            card_only()
        } else {
            self.set
        };
        self.bhits.clear();
        self.hits.clear();
        Builtins::get().find(s, set, &mut self.bhits);
        self.bhits.extend(extra);
        self.hits.extend(self.bhits.iter().map(|h| RawHit {
            start: h.start,
            end: h.end,
            det: Det::Builtin(h.detector),
        }));
        if !numeric {
            let customs = if key {
                &self.key_customs
            } else {
                &self.customs
            };
            for &ci in customs {
                for m in self.engine.customs[ci].find_iter(s) {
                    if m.start() < m.end() {
                        self.hits.push(RawHit {
                            start: m.start(),
                            end: m.end(),
                            det: Det::Custom(ci),
                        });
                    }
                }
            }
        }
        if self.hits.is_empty() {
            return None;
        }
        self.hits.sort_unstable();
        self.hits.dedup();
        let ascii = s.is_ascii();
        let chars = |byte: usize| {
            if ascii {
                byte
            } else {
                s[..byte].chars().count()
            }
        };
        let rules = if key { &self.key_active } else { &self.active };
        let mut spans: Vec<RawHit> = Vec::new();
        for h in &self.hits {
            let text = &s[h.start..h.end];
            let mut strictest: Option<DlpAction> = None;
            for &ri in rules {
                let r = &self.engine.rules[ri];
                if !r.covers(h.det) || r.allows(text) {
                    continue;
                }
                self.findings.push(RuleMatch {
                    detector: h.det.id(),
                    policy: r.policy.clone(),
                    rule: r.name.clone(),
                    action: r.action,
                    path: self.path.clone(),
                    key,
                    start: chars(h.start),
                    end: chars(h.end),
                });
                strictest = strictest.max(Some(r.action));
                if r.action == DlpAction::Block && self.blocked_by.is_none() {
                    self.blocked_by = Some(r.name.to_string());
                }
            }
            self.action = self.action.max(strictest);
            if strictest >= Some(DlpAction::Redact) {
                spans.push(*h);
            }
        }
        (!spans.is_empty()).then(|| redact(s, &spans))
    }
}

/// Replaces the (sorted) spans with markers; overlapping spans merge and keep the detector of
/// the longest.
fn redact(s: &str, spans: &[RawHit]) -> String {
    let mut merged: Vec<RawHit> = Vec::with_capacity(spans.len());
    for &h in spans {
        match merged.last_mut() {
            Some(last) if h.start < last.end => {
                if h.end - h.start > last.end - last.start {
                    last.det = h.det;
                }
                last.end = last.end.max(h.end);
            }
            _ => merged.push(h),
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for h in merged {
        out.push_str(&s[at..h.start]);
        out.push_str(&marker(h.det.id()));
        at = h.end;
    }
    out.push_str(&s[at..]);
    out
}

fn push_escaped(path: &mut String, key: &str) {
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}
