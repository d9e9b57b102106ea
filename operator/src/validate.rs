//! McpPolicy validation: what the CRD's schema and CEL rules cannot check.

use crds::McpPolicy;

/// Built-in DLP detectors the proxy knows.
pub const DETECTORS: &[&str] = &[
    "creditCard",
    "usSsn",
    "iban",
    "email",
    "awsAccessKey",
    "phoneNumber",
    "ipAddress",
    "jwt",
    "privateKey",
    "githubToken",
    "slackToken",
];

/// Every problem of a policy, each naming the field (`spec.dlp[0].patterns[1]: ...`).
pub fn policy_problems(policy: &McpPolicy) -> Vec<String> {
    let spec = &policy.spec;
    let mut out = Vec::new();
    for (i, s) in spec.subjects.iter().enumerate() {
        let set = [s.user.is_some(), s.group.is_some(), s.claim.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            out.push(format!(
                "spec.subjects[{i}]: set exactly one of user, group and claim ({set} set)"
            ));
        }
        for (field, v) in [("user", &s.user), ("group", &s.group)] {
            if let Some(v) = v
                && (v.trim().is_empty() || v.len() > 256)
            {
                out.push(format!(
                    "spec.subjects[{i}].{field}: must be 1-256 non-blank characters"
                ));
            }
        }
        if let Some(c) = &s.claim
            && (c.name.trim().is_empty() || c.name.len() > 256)
        {
            out.push(format!(
                "spec.subjects[{i}].claim.name: must be 1-256 non-blank characters"
            ));
        }
    }
    for (i, r) in spec.rules.iter().enumerate() {
        for (field, globs) in [("servers", &r.servers), ("tools", &r.tools)] {
            for (j, g) in globs.iter().enumerate() {
                if let Some(p) = glob_problem(g) {
                    out.push(format!("spec.rules[{i}].{field}[{j}]: {p}"));
                }
            }
        }
    }
    for (i, d) in spec.dlp.iter().enumerate() {
        if d.name.trim().is_empty() {
            out.push(format!("spec.dlp[{i}].name: must not be empty"));
        }
        if d.detectors.is_empty() && d.patterns.is_empty() {
            out.push(format!(
                "spec.dlp[{i}]: set detectors or patterns (or both)"
            ));
        }
        for (j, det) in d.detectors.iter().enumerate() {
            if !DETECTORS.contains(&det.as_str()) {
                out.push(format!(
                    "spec.dlp[{i}].detectors[{j}]: unknown detector {det:?} (known: {})",
                    DETECTORS.join(", ")
                ));
            }
        }
        for (j, p) in d.patterns.iter().enumerate() {
            if let Err(e) = regex::RegexBuilder::new(p).size_limit(1 << 20).build() {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                out.push(format!(
                    "spec.dlp[{i}].patterns[{j}]: not a valid regular expression: {first}"
                ));
            }
        }
        for (field, globs) in [("servers", &d.servers), ("tools", &d.tools)] {
            for (j, g) in globs.iter().enumerate() {
                if let Some(p) = glob_problem(g) {
                    out.push(format!("spec.dlp[{i}].{field}[{j}]: {p}"));
                }
            }
        }
    }
    if let Some(l) = &spec.limits {
        for (field, v) in [
            ("callsPerMinute", l.calls_per_minute),
            ("callsPerMinutePerTool", l.calls_per_minute_per_tool),
            ("burst", l.burst),
        ] {
            if v == Some(0) {
                out.push(format!(
                    "spec.limits.{field}: must be at least 1 (omit it for no limit)"
                ));
            }
        }
    }
    out
}

/// A server or tool glob: tool-name characters plus `*`.
fn glob_problem(g: &str) -> Option<String> {
    if g.is_empty() || g.len() > 128 {
        return Some("must be 1-128 characters".into());
    }
    g.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*')))
        .map(|c| format!("{g:?}: character {c:?} is not allowed (use [A-Za-z0-9_.-] and *)"))
}
