//! Inbound inspection (tier 1): prompt injection, tool poisoning and owner-defined topics in
//! tool arguments, tool results, resource reads and prompt results.
//!
//! ```text
//! Engine::compile(&[(policy, InspectionRule)])      once per configuration
//!   engine.scan(&mut json, Scope::Results, server, Target::Tool(name)) -> Report   per call
//! ```
//!
//! Every decoded JSON string is scored by the deterministic detectors ([`signals`]: hidden
//! Unicode, hidden HTML/markdown text, exfiltration links, role markers, overrides, requests to
//! call tools or reveal secrets) and, for `promptInjection`, by a linear model ([`model`]:
//! logistic regression over hashed character and word n-grams, weights shipped in
//! `model.bin`). Every finding has a score 1-99; a rule fires at or above its threshold.
//! Findings carry detector, signal, rule, score, path and offsets, never the text.
//!
//! This module sits beside `dlp` and uses nothing of the portal: the pipeline calls it.

mod engine;
pub mod model;
pub mod signals;

pub use engine::{
    Engine, Finding, META_KEY, Report, Scope, Target, UNTRUSTED_CLOSE, untrusted_open,
};

/// `servers`/`tools` patterns: the API's one glob syntax, from `crds`.
pub use crds::glob::glob_match;

/// A rule the engine cannot compile. The message names the policy, rule and field; never
/// scanned data.
#[derive(Debug, thiserror::Error)]
#[error("inspection rule {rule:?} of policy {policy:?}: {field}: {message}")]
pub struct InspectError {
    /// Policy name.
    pub policy: String,
    /// Rule name.
    pub rule: String,
    /// The rule's field (`detectors[1]`, `threshold`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

#[cfg(test)]
mod tests;
