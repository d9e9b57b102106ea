//! Scoring one request: every rule that fires adds weighted evidence; the confidence is the
//! noisy-or of the weights, `1 - prod(1 - w)`, so independent weak signals add up but never
//! reach 1, and one strong signal (an `Mcp-Session-Id` header, an MCP JSON-RPC method) suffices.

use serde::Serialize;
use serde_json::Value;

use super::records::{Body, Record};
use super::rules::ClassifierRules;

/// Bodies larger than this are not parsed (their other signals still count).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// What kind of signal fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Signal {
    /// Destination host.
    Host,
    /// Request path.
    Path,
    /// Request header.
    Header,
    /// JSON-RPC method or protocol version in the body.
    Body,
    /// The destination has confirmed MCP traffic.
    Correlation,
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// The kind of signal.
    pub signal: Signal,
    /// What fired, for people (`header mcp-session-id`, `jsonrpc method tools/call`).
    pub detail: String,
    /// Its weight.
    pub weight: f64,
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The classifier's verdict on one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Combined confidence in [0, 1).
    pub confidence: f64,
    /// Every signal that fired.
    pub evidence: Vec<Evidence>,
}

impl Verdict {
    /// Adds evidence and updates the confidence.
    pub fn add(&mut self, signal: Signal, detail: String, weight: f64) {
        self.confidence = 1.0 - (1.0 - self.confidence) * (1.0 - weight);
        self.evidence.push(Evidence {
            signal,
            detail,
            weight,
        });
    }
}

/// Runs [`ClassifierRules`] over [`Record`]s.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: ClassifierRules,
}

/// `host[:port]` -> `host` (also for `[v6]:port`).
pub fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl Classifier {
    /// A classifier over `rules`.
    pub fn new(rules: ClassifierRules) -> Self {
        Self { rules }
    }

    /// The rules.
    pub fn rules(&self) -> &ClassifierRules {
        &self.rules
    }

    /// Scores one request.
    pub fn classify(&self, r: &Record) -> Verdict {
        let rules = &self.rules;
        let mut v = Verdict::default();

        let host = host_name(&r.host);
        let host = host.strip_suffix('.').unwrap_or(host);
        if rules.known_exact.contains_key(host)
            || rules
                .known_suffixes
                .iter()
                .any(|s| host.ends_with(s.as_str()))
        {
            v.add(
                Signal::Host,
                format!("known MCP host {host}"),
                rules.known_weight,
            );
        }
        for i in rules.host_set.matches(host).iter() {
            let p = &rules.host_patterns[i];
            v.add(
                Signal::Host,
                format!("host: {}", label(p.name.as_deref(), &p.regex)),
                p.weight,
            );
        }

        for i in rules.path_set.matches(&r.path).iter() {
            let p = &rules.path_patterns[i];
            v.add(
                Signal::Path,
                format!("path: {}", label(p.name.as_deref(), &p.regex)),
                p.weight,
            );
        }

        let mut fired: Vec<&super::rules::HeaderRule> = Vec::new();
        for (name, value) in &r.headers {
            let Some(hrules) = rules.headers.get(name.as_str()) else {
                continue;
            };
            for h in hrules {
                let fires = match &h.contains {
                    None => true,
                    Some(c) => value.to_ascii_lowercase().contains(c.as_str()),
                };
                // A header repeated in the record counts once.
                if fires && !fired.iter().any(|f| std::ptr::eq(*f, h)) {
                    fired.push(h);
                    let detail = match &h.contains {
                        None => format!("header {name}"),
                        Some(c) => format!("header {name}: {c}"),
                    };
                    v.add(Signal::Header, detail, h.weight);
                }
            }
        }

        match &r.body {
            Some(Body::Json(value)) => self.body(value, &mut v),
            Some(Body::Text(text)) if text.len() <= MAX_BODY_BYTES && text.contains("jsonrpc") => {
                if let Ok(value) = serde_json::from_str::<Value>(text) {
                    self.body(&value, &mut v);
                }
            }
            _ => {}
        }
        v
    }

    /// JSON-RPC 2.0 requests (single or batch) whose method is an MCP method.
    fn body(&self, value: &Value, v: &mut Verdict) {
        let one = |m: &Value, v: &mut Verdict| {
            if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
                return;
            }
            let Some(method) = m.get("method").and_then(Value::as_str) else {
                return;
            };
            // A JSON-RPC method that is not MCP's adds nothing: not even its protocolVersion.
            let Some(&w) = self.rules.methods.get(method) else {
                return;
            };
            v.add(Signal::Body, format!("jsonrpc method {method}"), w);
            if self.rules.protocol_version_weight > 0.0
                && let Some(pv) = protocol_version(m.get("params"))
                && self.rules.protocol_version.is_match(pv)
            {
                v.add(
                    Signal::Body,
                    format!("protocolVersion {pv}"),
                    self.rules.protocol_version_weight,
                );
            }
        };
        match value {
            Value::Array(batch) => batch.iter().take(64).for_each(|m| one(m, v)),
            m => one(m, v),
        }
    }
}

fn label<'a>(name: Option<&'a str>, regex: &'a str) -> &'a str {
    name.unwrap_or(regex)
}

/// `params.protocolVersion`, or a `params._meta` key ending in `protocolVersion`.
fn protocol_version(params: Option<&Value>) -> Option<&str> {
    let params = params?;
    if let Some(pv) = params.get("protocolVersion").and_then(Value::as_str) {
        return Some(pv);
    }
    params
        .get("_meta")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.ends_with("protocolVersion"))
        .and_then(|(_, v)| v.as_str())
}
