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
    /// A rule names a detector that does not exist.
    #[error(
        "DLP rule {rule:?} of policy {policy:?}: unknown detector {detector:?} (known: {known})"
    )]
    UnknownDetector {
        /// Policy name.
        policy: String,
        /// Rule name.
        rule: String,
        /// The unknown detector id.
        detector: String,
        /// Comma-separated known ids.
        known: String,
    },
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
    /// A rule has neither detectors nor patterns, so it could never fire.
    #[error("DLP rule {rule:?} of policy {policy:?} has no detectors and no patterns")]
    EmptyRule {
        /// Policy name.
        policy: String,
        /// Rule name.
        rule: String,
    },
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests;
