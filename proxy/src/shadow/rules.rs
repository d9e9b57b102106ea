//! The classifier's rules: data, not code. A default rules file is embedded in the binary
//! (`default_rules.yaml`); `--rules FILE` extends or overrides it without a rebuild.

use std::collections::HashMap;
use std::path::Path;

use regex::{Regex, RegexSet};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The rules every scan starts from.
pub const DEFAULT_RULES: &str = include_str!("default_rules.yaml");

/// One rules file as written (every section optional, unknown fields rejected).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RulesFile {
    /// Drop the rules loaded before this file (the defaults) instead of extending them.
    #[serde(default)]
    pub replace: bool,
    /// Confidence from which a request is an MCP hit, in (0, 1].
    pub threshold: Option<f64>,
    /// Destination rules.
    #[serde(default)]
    pub hosts: HostsFile,
    /// Path rules.
    #[serde(default)]
    pub paths: Vec<PatternRule>,
    /// Header rules.
    #[serde(default)]
    pub headers: Vec<HeaderRule>,
    /// JSON-RPC body rules.
    #[serde(default)]
    pub jsonrpc: JsonRpcFile,
    /// Destination correlation.
    pub correlation: Option<Correlation>,
}

/// `hosts:` of a rules file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    /// Known MCP SaaS hosts.
    pub known: Option<KnownHosts>,
    /// Host name patterns.
    #[serde(default)]
    pub patterns: Vec<PatternRule>,
}

/// Known MCP hosts and the weight of a match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownHosts {
    /// Weight of a match (keeps the previous one when absent).
    pub weight: Option<f64>,
    /// Host names; `*.example.com` matches every subdomain of example.com.
    #[serde(default)]
    pub names: Vec<String>,
}

/// A named regular expression with a weight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternRule {
    /// Name shown in the evidence (defaults to the regex).
    pub name: Option<String>,
    /// The regular expression.
    pub regex: String,
    /// Weight in (0, 1].
    pub weight: f64,
}

/// A request header that is evidence of MCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    /// Header name (case-insensitive).
    pub name: String,
    /// Only values containing this text (case-insensitive) count.
    pub contains: Option<String>,
    /// Weight in (0, 1].
    pub weight: f64,
}

/// `jsonrpc:` of a rules file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JsonRpcFile {
    /// Weight of a listed method without a weight of its own.
    pub weight: Option<f64>,
    /// MCP method names: a name, or `{name, weight}`.
    #[serde(default)]
    pub methods: Vec<MethodEntry>,
    /// The protocolVersion signal.
    pub protocol_version: Option<ProtocolVersionRule>,
}

/// One MCP method name, with an optional weight of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MethodEntry {
    /// Uses the section's weight.
    Name(String),
    /// With its own weight.
    Weighted {
        /// The method name.
        name: String,
        /// Weight in (0, 1].
        weight: f64,
    },
}

/// `protocolVersion` inside an MCP request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolVersionRule {
    /// Weight in (0, 1].
    pub weight: f64,
    /// What a version value looks like.
    pub regex: String,
}

/// Requests with weak evidence to destinations with confirmed MCP traffic.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Correlation {
    /// Least confidence of a request to be promoted (0 disables correlation when `weight` is 0).
    pub min_confidence: f64,
    /// Weight added to a promoted request.
    pub weight: f64,
}

/// The merged, compiled rules a [`super::Classifier`] runs.
#[derive(Debug, Clone)]
pub struct ClassifierRules {
    pub(crate) threshold: f64,
    pub(crate) known_weight: f64,
    pub(crate) known_exact: HashMap<String, ()>,
    pub(crate) known_suffixes: Vec<String>,
    pub(crate) host_patterns: Vec<PatternRule>,
    pub(crate) host_set: RegexSet,
    pub(crate) path_patterns: Vec<PatternRule>,
    pub(crate) path_set: RegexSet,
    pub(crate) headers: HashMap<String, Vec<HeaderRule>>,
    pub(crate) methods: HashMap<String, f64>,
    pub(crate) protocol_version_weight: f64,
    pub(crate) protocol_version: Regex,
    pub(crate) correlation: Correlation,
}

impl ClassifierRules {
    /// The embedded default rules.
    pub fn default_rules() -> Self {
        Self::load(&[]).expect("the embedded default rules are valid")
    }

    /// The defaults, extended by each file in order. Errors name the file and the field.
    pub fn load(files: &[&Path]) -> Result<Self> {
        let mut texts = vec![(
            Path::new("<default rules>").to_owned(),
            DEFAULT_RULES.to_owned(),
        )];
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|source| Error::Read {
                path: f.to_path_buf(),
                source,
            })?;
            texts.push((f.to_path_buf(), text));
        }
        let mut acc = Accumulator::default();
        for (path, text) in &texts {
            let de = serde_yaml::Deserializer::from_str(text);
            let file: RulesFile =
                serde_path_to_error::deserialize(de).map_err(|e| Error::Rules {
                    path: path.clone(),
                    message: format!("{}: {}", e.path(), e.inner()),
                })?;
            acc.merge(file).map_err(|message| Error::Rules {
                path: path.clone(),
                message,
            })?;
        }
        acc.compile().map_err(|message| Error::Rules {
            path: texts.last().unwrap().0.clone(),
            message,
        })
    }

    /// Confidence from which a request is a hit.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }
}

#[derive(Default)]
struct Accumulator {
    threshold: f64,
    known_weight: f64,
    known: Vec<String>,
    host_patterns: Vec<PatternRule>,
    paths: Vec<PatternRule>,
    headers: Vec<HeaderRule>,
    method_weight: f64,
    methods: Vec<(String, Option<f64>)>,
    protocol_version: Option<ProtocolVersionRule>,
    correlation: Option<Correlation>,
}

fn check_weight(field: &str, w: f64) -> std::result::Result<(), String> {
    if w.is_finite() && w > 0.0 && w <= 1.0 {
        Ok(())
    } else {
        Err(format!("{field}: weight must be in (0, 1], got {w}"))
    }
}

/// Replaces the entry with the same key, else appends.
fn upsert<T>(list: &mut Vec<T>, item: T, key: impl Fn(&T) -> String) {
    let k = key(&item);
    match list.iter_mut().find(|x| key(x) == k) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

impl Accumulator {
    fn merge(&mut self, f: RulesFile) -> std::result::Result<(), String> {
        if f.replace {
            *self = Self::default();
        }
        if let Some(t) = f.threshold {
            if !(t.is_finite() && t > 0.0 && t <= 1.0) {
                return Err(format!("threshold: must be in (0, 1], got {t}"));
            }
            self.threshold = t;
        }
        if let Some(k) = f.hosts.known {
            if let Some(w) = k.weight {
                check_weight("hosts.known", w)?;
                self.known_weight = w;
            }
            for n in k.names {
                let n = n.trim().to_ascii_lowercase();
                if n.is_empty() || n == "*." {
                    return Err("hosts.known.names: empty host name".into());
                }
                if !self.known.contains(&n) {
                    self.known.push(n);
                }
            }
        }
        for (i, p) in f.hosts.patterns.into_iter().enumerate() {
            check_weight(&format!("hosts.patterns[{i}]"), p.weight)?;
            upsert(&mut self.host_patterns, p, |p| p.regex.clone());
        }
        for (i, p) in f.paths.into_iter().enumerate() {
            check_weight(&format!("paths[{i}]"), p.weight)?;
            upsert(&mut self.paths, p, |p| p.regex.clone());
        }
        for (i, mut h) in f.headers.into_iter().enumerate() {
            check_weight(&format!("headers[{i}]"), h.weight)?;
            h.name = h.name.to_ascii_lowercase();
            h.contains = h.contains.map(|c| c.to_ascii_lowercase());
            upsert(&mut self.headers, h, |h| {
                format!("{}\0{:?}", h.name, h.contains)
            });
        }
        if let Some(w) = f.jsonrpc.weight {
            check_weight("jsonrpc", w)?;
            self.method_weight = w;
        }
        for (i, m) in f.jsonrpc.methods.into_iter().enumerate() {
            let (name, w) = match m {
                MethodEntry::Name(n) => (n, None),
                MethodEntry::Weighted { name, weight } => {
                    check_weight(&format!("jsonrpc.methods[{i}]"), weight)?;
                    (name, Some(weight))
                }
            };
            upsert(&mut self.methods, (name, w), |m| m.0.clone());
        }
        if let Some(p) = f.jsonrpc.protocol_version {
            check_weight("jsonrpc.protocolVersion", p.weight)?;
            self.protocol_version = Some(p);
        }
        if let Some(c) = f.correlation {
            if !(0.0..=1.0).contains(&c.min_confidence) || !(0.0..=1.0).contains(&c.weight) {
                return Err("correlation: minConfidence and weight must be in [0, 1]".into());
            }
            self.correlation = Some(c);
        }
        Ok(())
    }

    fn compile(self) -> std::result::Result<ClassifierRules, String> {
        if self.threshold <= 0.0 {
            return Err(
                "threshold: missing (a rules file with `replace: true` must set it)".into(),
            );
        }
        let regex_set = |field: &str, rules: &[PatternRule]| {
            RegexSet::new(rules.iter().map(|r| r.regex.as_str()))
                .map_err(|e| format!("{field}: invalid regex: {e}"))
        };
        let host_set = regex_set("hosts.patterns", &self.host_patterns)?;
        let path_set = regex_set("paths", &self.paths)?;
        let (pv_weight, pv_regex) = match &self.protocol_version {
            Some(p) => (p.weight, p.regex.as_str()),
            None => (0.0, "^$"),
        };
        let protocol_version = Regex::new(pv_regex)
            .map_err(|e| format!("jsonrpc.protocolVersion.regex: invalid regex: {e}"))?;
        let mut known_exact = HashMap::new();
        let mut known_suffixes = Vec::new();
        for n in self.known {
            match n.strip_prefix("*.") {
                Some(rest) => known_suffixes.push(format!(".{rest}")),
                None => {
                    known_exact.insert(n, ());
                }
            }
        }
        let mut headers: HashMap<String, Vec<HeaderRule>> = HashMap::new();
        for h in self.headers {
            headers.entry(h.name.clone()).or_default().push(h);
        }
        let mut methods = HashMap::new();
        for (name, w) in self.methods {
            let w = w.unwrap_or(self.method_weight);
            if w <= 0.0 {
                return Err(format!(
                    "jsonrpc.methods: {name}: no weight (set jsonrpc.weight)"
                ));
            }
            methods.insert(name, w);
        }
        Ok(ClassifierRules {
            threshold: self.threshold,
            known_weight: if self.known_weight > 0.0 {
                self.known_weight
            } else {
                0.7
            },
            known_exact,
            known_suffixes,
            host_patterns: self.host_patterns,
            host_set,
            path_patterns: self.paths,
            path_set,
            headers,
            methods,
            protocol_version_weight: pv_weight,
            protocol_version,
            correlation: self.correlation.unwrap_or(Correlation {
                min_confidence: 1.0,
                weight: 0.0,
            }),
        })
    }
}
