//! Data-loss prevention: built-in detectors, custom patterns and the rule engine that scans
//! tool arguments and results.
//!
//! ```text
//! Engine::compile(&[(policy, DlpRule)])      once per configuration
//!   engine.scan(&mut json, Scope::Results, server, tool) -> Report   per call
//! ```
//!
//! The engine walks decoded JSON string values (so JSON escapes cannot hide data), runs the
//! detectors the in-scope rules need, and applies the strictest action: `Redact` rewrites each
//! match in place as `[REDACTED:<detector>]`, `Block` leaves the value untouched and names the
//! rule. Findings carry detector, rule, path and offsets, never the matched text.

mod detectors;
mod engine;

pub use detectors::{Detector, DetectorSet, SECRET_ENTROPY_THRESHOLD, shannon_entropy};
pub use engine::{Engine, Report, RuleMatch, Scope, marker, scan_document};

/// Errors compiling DLP rules. Messages name the policy and rule; they never contain scanned
/// data.
#[derive(Debug, thiserror::Error)]
pub enum DlpError {
    /// A custom pattern is not a valid regular expression.
    #[error(
        "DLP rule {rule:?} of policy {policy:?}: pattern #{index} is not a valid regular expression: {message}"
    )]
    BadPattern {
        /// Policy name.
        policy: String,
        /// Rule name.
        rule: String,
        /// Index of the pattern in `patterns`.
        index: usize,
        /// The regex compiler's message.
        message: String,
    },
    /// A rule names a detector that is not built in.
    #[error(
        "DLP rule {rule:?} of policy {policy:?}: detectors[{index}] {name:?} is not a built-in detector"
    )]
    UnknownDetector {
        /// Policy name.
        policy: String,
        /// Rule name.
        rule: String,
        /// Index of the name in `detectors`.
        index: usize,
        /// The name as written.
        name: String,
    },
    /// A rule has neither detectors nor patterns, so it could never fire.
    #[error("DLP rule {rule:?} of policy {policy:?} has no detectors and no patterns")]
    EmptyRule {
        /// Policy name.
        policy: String,
        /// Rule name.
        rule: String,
    },
}

/// `servers`/`tools` patterns of DLP rules: the API's one glob syntax (`*` only), from `crds`.
pub use crds::glob::glob_match;

#[cfg(test)]
mod tests;
