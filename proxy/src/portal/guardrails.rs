//! DLP and inbound inspection in the portal: which rules apply to a caller, and scanning values
//! in place.
//!
//! Rules come from the McpPolicies bound to the portal. A policy's rules apply to the subjects
//! the policy covers (a policy without subjects covers everyone). Engines are compiled once per
//! distinct set of applicable policies and cached until the configuration changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::ErrorData;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::PortalConfig;
use crate::dlp::{Engine, Report, Scope};
use crate::inspect;

/// JSON-RPC error code of a request or result refused by a portal guardrail (DLP or
/// inspection).
pub const BLOCKED: i32 = -32003;

/// Compiled DLP and inspection engines of one configuration.
pub struct Guardrails {
    config: Arc<PortalConfig>,
    engines: Mutex<HashMap<Vec<usize>, Arc<Engine>>>,
    inspectors: Mutex<HashMap<Vec<usize>, Arc<inspect::Engine>>>,
}

impl Guardrails {
    /// Guardrails for `config`. Rules that fail to compile are reported here, at load time.
    pub fn new(config: Arc<PortalConfig>) -> crate::Result<Self> {
        Engine::compile(&dlp_rules(config.policies.iter()))
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        inspect::Engine::compile(&inspection_rules(config.policies.iter()))
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        Ok(Guardrails {
            config,
            engines: Mutex::new(HashMap::new()),
            inspectors: Mutex::new(HashMap::new()),
        })
    }

    /// The inspection engine for a caller: the inspection rules of every policy that `covers`
    /// the caller.
    pub fn inspector(&self, covers: impl Fn(&crds::McpPolicy) -> bool) -> Arc<inspect::Engine> {
        let key: Vec<usize> = self
            .config
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.spec.inspection.is_empty() && covers(p))
            .map(|(i, _)| i)
            .collect();
        if let Some(e) = self
            .inspectors
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return e;
        }
        let rules = inspection_rules(key.iter().map(|&i| &self.config.policies[i]));
        // `new` compiled the whole set, so every subset compiles.
        let engine = Arc::new(
            inspect::Engine::compile(&rules).expect("a subset of compiled rules compiles"),
        );
        if let Ok(mut m) = self.inspectors.lock() {
            m.insert(key, engine.clone());
        }
        engine
    }

    /// The engine for a caller: the rules of every policy that `covers` the caller.
    pub fn engine(&self, covers: impl Fn(&crds::McpPolicy) -> bool) -> Arc<Engine> {
        let key: Vec<usize> = self
            .config
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.spec.dlp.is_empty() && covers(p))
            .map(|(i, _)| i)
            .collect();
        if let Some(e) = self.engines.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return e;
        }
        let rules = dlp_rules(key.iter().map(|&i| &self.config.policies[i]));
        // `new` compiled the whole set, so every subset compiles.
        let engine =
            Arc::new(Engine::compile(&rules).expect("a subset of compiled rules compiles"));
        if let Ok(mut m) = self.engines.lock() {
            m.insert(key, engine.clone());
        }
        engine
    }
}

/// The DLP rules of `policies`, each named by its policy (what [`Engine::compile`] takes).
pub fn dlp_rules<'a>(
    policies: impl Iterator<Item = &'a crds::McpPolicy>,
) -> Vec<(String, crds::policy::DlpRule)> {
    policies
        .flat_map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            p.spec.dlp.iter().map(move |r| (name.clone(), r.clone()))
        })
        .collect()
}

/// The inspection rules of `policies`, each named by its policy (what
/// [`inspect::Engine::compile`] takes).
pub fn inspection_rules<'a>(
    policies: impl Iterator<Item = &'a crds::McpPolicy>,
) -> Vec<(String, crds::policy::InspectionRule)> {
    policies
        .flat_map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            p.spec
                .inspection
                .iter()
                .map(move |r| (name.clone(), r.clone()))
        })
        .collect()
}

/// The error a request or result blocked by inspection gets: names the rule and detectors,
/// never the content.
pub fn inspection_blocked_error(report: &inspect::Report, what: &str) -> ErrorData {
    let rule = report.blocked_by.clone().unwrap_or_default();
    let mut detectors: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| *f.rule == *rule)
        .map(|f| f.detector.id())
        .collect();
    detectors.sort_unstable();
    detectors.dedup();
    ErrorData::new(
        rmcp::model::ErrorCode(BLOCKED),
        format!(
            "{what} blocked by inspection rule {rule:?} (detectors: {})",
            detectors.join(", ")
        ),
        None,
    )
}

/// Inspects any serializable value (through JSON). Returns the value (rewritten when a `flag`
/// rule fired on a result: see [`inspect::Engine::scan`]) and the report; on a block the value
/// is returned unchanged and the report says so.
pub fn inspect<T: Serialize + DeserializeOwned>(
    engine: &inspect::Engine,
    value: T,
    dir: inspect::Scope,
    server: &str,
    target: inspect::Target<'_>,
) -> Result<(T, inspect::Report), ErrorData> {
    if !engine.applies(dir, server, target) {
        return Ok((value, inspect::Report::default()));
    }
    let mut json = serde_json::to_value(&value)
        .map_err(|_| ErrorData::internal_error("value could not be inspected", None))?;
    let report = engine.scan(&mut json, dir, server, target);
    if dir == inspect::Scope::Results && report.action == Some(crds::policy::InspectionAction::Flag)
    {
        let flagged = serde_json::from_value(json)
            .map_err(|_| ErrorData::internal_error("flagged value could not be rebuilt", None))?;
        return Ok((flagged, report));
    }
    Ok((value, report))
}

/// Inspects a JSON object of arguments (never rewritten).
pub fn inspect_arguments(
    engine: &inspect::Engine,
    args: &mut Option<serde_json::Map<String, Value>>,
    server: &str,
    tool: &str,
) -> inspect::Report {
    let target = inspect::Target::Tool(tool);
    if !engine.applies(inspect::Scope::Arguments, server, target) {
        return inspect::Report::default();
    }
    let mut value = Value::Object(args.take().unwrap_or_default());
    let report = engine.scan(&mut value, inspect::Scope::Arguments, server, target);
    if let Value::Object(m) = value {
        *args = Some(m);
    }
    report
}

/// The error a blocked request or result gets: names the rule and detectors, never the data.
pub fn blocked_error(report: &Report, what: &str) -> ErrorData {
    let detectors: Vec<String> = report.detector_counts().into_keys().collect();
    let rule = report.blocked_by.clone().unwrap_or_default();
    ErrorData::new(
        rmcp::model::ErrorCode(BLOCKED),
        format!(
            "{what} blocked by DLP rule {rule:?} (detectors: {})",
            detectors.join(", ")
        ),
        None,
    )
}

/// Scans any serializable value in place (through JSON). Returns the possibly redacted value
/// and the report; on a block the value is returned unchanged and the report says so.
pub fn scan<T: Serialize + DeserializeOwned>(
    engine: &Engine,
    value: T,
    dir: Scope,
    server: &str,
    name: &str,
) -> Result<(T, Report), ErrorData> {
    if !engine.applies(dir, server, name) {
        return Ok((value, Report::default()));
    }
    let mut json = serde_json::to_value(&value)
        .map_err(|_| ErrorData::internal_error("value could not be inspected", None))?;
    let report = engine.scan(&mut json, dir, server, name);
    if report
        .findings
        .iter()
        .any(|f| f.action == crds::policy::DlpAction::Redact)
        && !report.is_blocked()
    {
        let redacted = serde_json::from_value(json)
            .map_err(|_| ErrorData::internal_error("redacted value could not be rebuilt", None))?;
        return Ok((redacted, report));
    }
    Ok((value, report))
}

/// Scans a JSON object of arguments in place.
pub fn scan_arguments(
    engine: &Engine,
    args: &mut Option<serde_json::Map<String, Value>>,
    server: &str,
    tool: &str,
) -> Report {
    if !engine.applies(Scope::Arguments, server, tool) {
        return Report::default();
    }
    let mut value = Value::Object(args.take().unwrap_or_default());
    let report = engine.scan(&mut value, Scope::Arguments, server, tool);
    if let Value::Object(m) = value {
        *args = Some(m);
    }
    report
}
