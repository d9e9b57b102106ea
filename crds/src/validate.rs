//! Validation beyond the schema: one function per kind that both the operator (status
//! conditions and events) and the proxy (reading manifests) call.
//!
//! The CRD schema (enums, ranges, patterns, CEL `x-kubernetes-validations`) refuses most bad
//! input at `kubectl apply`. These functions check the same cross-field rules again (a laptop
//! user reading manifests with the proxy gets the apiserver's answer) and what a schema cannot
//! express: regular expressions that do not compile, label selectors Kubernetes would refuse.

use crate::access::Selector;
use crate::budget::{
    Budget, BudgetScope, BudgetStore, MAX_BUDGET_COST, NANOS_PER_UNIT, parse_money,
};
use crate::detector::{Detector, DetectorName};
use crate::glob::{glob_problem, uri_glob_problem};
use crate::inspection::{Inspector, InspectorName};
use crate::llm::{LlmSpec, LlmStrategy};
use crate::policy::InspectionRule;
use crate::select::selector_problem;
use crate::server::DeployedTransport;
use crate::{McpPolicy, McpPortal, McpServer};

/// One problem, naming the field (`spec.dlp[0].patterns[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins problems for a condition message (`a: x; b: y`).
pub fn summary(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Largest compiled size of one custom DLP pattern (the regex crate's `size_limit`).
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Most selectors in each of a tool rule's `include`, `require` and `exclude` (the schema's
/// `maxItems`, which keeps the CRD's CEL within the apiserver's cost budget).
pub const RULE_SELECTORS_MAX: usize = 8;

/// Every problem of a policy.
pub fn policy_problems(policy: &McpPolicy) -> Vec<Problem> {
    let spec = &policy.spec;
    let mut out = Vec::new();
    if !spec.subjects.is_empty() && !spec.include.is_empty() {
        out.push(Problem::new(
            "spec.include",
            "subjects is the older name of include: set one of them",
        ));
    }
    for (list, sels) in [
        ("subjects", &spec.subjects),
        ("include", &spec.include),
        ("require", &spec.require),
        ("exclude", &spec.exclude),
    ] {
        for (i, s) in sels.iter().enumerate() {
            selector_problems(&mut out, &format!("spec.{list}[{i}]"), s);
        }
    }
    contradictions(&mut out, "spec", &spec.require, &spec.exclude);
    for (i, r) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        globs(&mut out, &at, &r.servers, &r.tools);
        for (list, sels) in [
            ("include", &r.include),
            ("require", &r.require),
            ("exclude", &r.exclude),
        ] {
            if sels.len() > RULE_SELECTORS_MAX {
                out.push(Problem::new(
                    format!("{at}.{list}"),
                    format!(
                        "{} selectors: a rule takes at most {RULE_SELECTORS_MAX} per list",
                        sels.len()
                    ),
                ));
            }
            for (j, s) in sels.iter().enumerate() {
                selector_problems(&mut out, &format!("{at}.{list}[{j}]"), s);
            }
        }
        contradictions(&mut out, &at, &r.require, &r.exclude);
        // A rule for callers the policy itself excludes never applies.
        for (list, sels) in [("include", &r.include), ("require", &r.require)] {
            for (j, s) in sels.iter().enumerate() {
                if spec.exclude.contains(s) {
                    out.push(Problem::new(
                        format!("{at}.{list}[{j}]"),
                        "the policy's exclude has this selector: the rule never applies",
                    ));
                }
            }
        }
    }
    for (i, d) in spec.dlp.iter().enumerate() {
        if d.name.trim().is_empty() {
            out.push(Problem::new(
                format!("spec.dlp[{i}].name"),
                "must not be empty",
            ));
        }
        if d.detectors.is_empty() && d.patterns.is_empty() {
            out.push(Problem::new(
                format!("spec.dlp[{i}]"),
                "set detectors or patterns (or both)",
            ));
        }
        for (j, name) in d.detectors.iter().enumerate() {
            if let DetectorName::Unknown(name) = name {
                out.push(Problem::new(
                    format!("spec.dlp[{i}].detectors[{j}]"),
                    format!(
                        "{name:?} is not a built-in detector (known: {})",
                        Detector::known()
                    ),
                ));
            }
        }
        for (j, p) in d.patterns.iter().enumerate() {
            if let Err(e) = regex::RegexBuilder::new(p)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
            {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                out.push(Problem::new(
                    format!("spec.dlp[{i}].patterns[{j}]"),
                    format!("not a valid regular expression: {first}"),
                ));
            }
        }
        globs(&mut out, &format!("spec.dlp[{i}]"), &d.servers, &d.tools);
        for (j, g) in d.models.iter().enumerate() {
            if let Some(p) = glob_problem(g) {
                out.push(Problem::new(format!("spec.dlp[{i}].models[{j}]"), p));
            }
        }
    }
    for (i, r) in spec.inspection.iter().enumerate() {
        inspection_problems(&mut out, i, r);
    }
    for (i, g) in spec.models.iter().enumerate() {
        if let Some(p) = glob_problem(g) {
            out.push(Problem::new(format!("spec.models[{i}]"), p));
        }
    }
    budget_problems(&mut out, &spec.budgets);
    if let Some(l) = &spec.limits {
        for (field, v) in [
            ("callsPerMinute", l.calls_per_minute),
            ("callsPerMinutePerTool", l.calls_per_minute_per_tool),
            ("burst", l.burst),
        ] {
            if v == Some(0) {
                out.push(Problem::new(
                    format!("spec.limits.{field}"),
                    "must be at least 1 (omit it for no limit)",
                ));
            }
        }
    }
    out
}

/// The problems of `spec.budgets`: what the schema's CEL refuses again (a laptop reading
/// manifests gets the apiserver's answer), and names that repeat.
fn budget_problems(out: &mut Vec<Problem>, budgets: &[Budget]) {
    let mut seen = std::collections::BTreeMap::new();
    for (i, b) in budgets.iter().enumerate() {
        let at = format!("spec.budgets[{i}]");
        let name_ok = (1..=63).contains(&b.name.len())
            && b.name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !b.name.starts_with('-')
            && !b.name.ends_with('-');
        if !name_ok {
            out.push(Problem::new(
                format!("{at}.name"),
                format!("{:?}: 1-63 characters of [a-z0-9-], starting and ending with a letter or digit", b.name),
            ));
        }
        if let Some(first) = seen.insert(b.name.as_str(), i) {
            out.push(Problem::new(
                format!("{at}.name"),
                format!(
                    "{:?} is also the name of spec.budgets[{first}]: names are unique",
                    b.name
                ),
            ));
        }
        if b.tokens.is_none() && b.cost.is_none() {
            out.push(Problem::new(
                at.clone(),
                "set tokens or cost (or both): a budget without a limit limits nothing",
            ));
        }
        if let Some(t) = b.tokens
            && !(1..=1_000_000_000_000).contains(&t)
        {
            out.push(Problem::new(format!("{at}.tokens"), "must be 1-10^12"));
        }
        if let Some(c) = &b.cost {
            match parse_money(c) {
                None => out.push(Problem::new(
                    format!("{at}.cost"),
                    format!("{c:?} is not an amount (a decimal such as \"25.00\": up to 9 digits before and after the point)"),
                )),
                Some(0) => out.push(Problem::new(format!("{at}.cost"), "must be more than 0")),
                Some(n) if n > MAX_BUDGET_COST * NANOS_PER_UNIT => out.push(Problem::new(
                    format!("{at}.cost"),
                    format!("must be at most {MAX_BUDGET_COST}"),
                )),
                Some(_) => {}
            }
        }
        match (b.scope, &b.group) {
            (BudgetScope::Group, None) => out.push(Problem::new(
                format!("{at}.group"),
                "required with scope group (the group whose members share the counter)",
            )),
            (BudgetScope::Group, Some(g)) if g.is_empty() || g.len() > 256 => out.push(
                Problem::new(format!("{at}.group"), "must be 1-256 characters"),
            ),
            (BudgetScope::User | BudgetScope::Portal, Some(_)) => out.push(Problem::new(
                format!("{at}.group"),
                "applies only to scope group",
            )),
            _ => {}
        }
        for (j, g) in b.models.iter().enumerate() {
            if let Some(p) = glob_problem(g) {
                out.push(Problem::new(format!("{at}.models[{j}]"), p));
            }
        }
        match (&b.window.calendar, b.window.rolling_seconds) {
            (Some(_), Some(_)) | (None, None) => out.push(Problem::new(
                format!("{at}.window"),
                "set exactly one of calendar and rollingSeconds",
            )),
            (None, Some(s)) if !(60..=31_536_000).contains(&s) => out.push(Problem::new(
                format!("{at}.window.rollingSeconds"),
                "must be 60-31536000",
            )),
            _ => {}
        }
    }
}

fn inspection_problems(out: &mut Vec<Problem>, i: usize, r: &InspectionRule) {
    let at = format!("spec.inspection[{i}]");
    if r.name.trim().is_empty() || r.name.len() > 128 {
        out.push(Problem::new(
            format!("{at}.name"),
            "must be 1-128 non-blank characters",
        ));
    }
    if r.detectors.is_empty() {
        out.push(Problem::new(
            format!("{at}.detectors"),
            format!("list at least one detector ({})", Inspector::known()),
        ));
    }
    for (j, name) in r.detectors.iter().enumerate() {
        if let InspectorName::Unknown(name) = name {
            out.push(Problem::new(
                format!("{at}.detectors[{j}]"),
                format!(
                    "{name:?} is not an inspection detector (known: {})",
                    Inspector::known()
                ),
            ));
        }
    }
    let wants_topics = r.detectors.contains(&Inspector::Topics.into());
    if wants_topics == r.topics.is_empty() {
        out.push(Problem::new(
            format!("{at}.topics"),
            "set topics exactly when detectors lists topics",
        ));
    }
    for (j, t) in r.topics.iter().enumerate() {
        if t.name.trim().is_empty() || t.name.len() > 64 {
            out.push(Problem::new(
                format!("{at}.topics[{j}].name"),
                "must be 1-64 non-blank characters",
            ));
        }
        if t.phrases.is_empty() || t.phrases.len() > 64 {
            out.push(Problem::new(
                format!("{at}.topics[{j}].phrases"),
                "list 1-64 phrases",
            ));
        }
        for (k, p) in t.phrases.iter().enumerate() {
            if p.trim().is_empty() || p.len() > 256 {
                out.push(Problem::new(
                    format!("{at}.topics[{j}].phrases[{k}]"),
                    "must be 1-256 non-blank characters",
                ));
            }
        }
    }
    if !(1..=99).contains(&r.threshold) {
        out.push(Problem::new(
            format!("{at}.threshold"),
            format!("{} is out of range: scores are 1-99", r.threshold),
        ));
    }
    globs(out, &at, &r.servers, &r.tools);
    for (j, g) in r.resources.iter().enumerate() {
        if let Some(p) = uri_glob_problem(g) {
            out.push(Problem::new(format!("{at}.resources[{j}]"), p));
        }
    }
}

/// Problems of one access selector (`at` names it: `spec.require[1]`).
fn selector_problems(out: &mut Vec<Problem>, at: &str, s: &Selector) {
    let set = s.fields_set();
    if set != 1 {
        out.push(Problem::new(
            at,
            format!(
                "set exactly one of {} ({set} set)",
                crate::access::SELECTOR_KINDS.join(", ")
            ),
        ));
    }
    for (field, v) in [("user", &s.user), ("group", &s.group)] {
        if let Some(v) = v
            && (v.trim().is_empty() || v.len() > 256)
        {
            out.push(Problem::new(
                format!("{at}.{field}"),
                "must be 1-256 non-blank characters",
            ));
        }
    }
    for (field, c) in [("claim", &s.claim), ("deviceClaim", &s.device_claim)] {
        if let Some(c) = c
            && (c.name.trim().is_empty() || c.name.len() > 256)
        {
            out.push(Problem::new(
                format!("{at}.{field}.name"),
                "must be 1-256 non-blank characters",
            ));
        }
    }
    if let Some(d) = &s.email_domain {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            out.push(Problem::new(
                format!("{at}.emailDomain"),
                format!("{d:?} is not a domain name such as example.com"),
            ));
        }
    }
    if let Some(m) = &s.auth_method {
        if m.amr.is_empty() && m.acr.is_empty() && m.min_acr.is_none() {
            out.push(Problem::new(
                format!("{at}.authMethod"),
                "set amr, acr or minAcr: an empty authMethod would match every caller",
            ));
        }
        if !m.acr.is_empty() && m.min_acr.is_some() {
            out.push(Problem::new(
                format!("{at}.authMethod"),
                "set acr (a list of accepted values) or minAcr (a numeric level), not both",
            ));
        }
    }
    if let Some(cidrs) = &s.source_cidrs {
        if cidrs.is_empty() {
            out.push(Problem::new(
                format!("{at}.sourceCidrs"),
                "list at least one address or CIDR: an empty list would match no one",
            ));
        }
        cidr_problems(out, &format!("{at}.sourceCidrs"), cidrs);
    }
    if let Some(c) = &s.client_certificate
        && c.issuer.is_none()
        && c.subject.is_none()
        && c.san.is_none()
    {
        out.push(Problem::new(
            format!("{at}.clientCertificate"),
            "set issuer, subject or san: an empty clientCertificate would match any certificate",
        ));
    }
}

/// Entries of a CIDR list that are neither an address nor a CIDR.
fn cidr_problems(out: &mut Vec<Problem>, at: &str, cidrs: &[String]) {
    for (j, c) in cidrs.iter().enumerate() {
        if parse_cidr(c).is_none() {
            out.push(Problem::new(
                format!("{at}[{j}]"),
                format!("{c:?} is not an IP address or a CIDR such as 10.0.0.0/8"),
            ));
        }
    }
}

/// An address (a /32 or /128) or a CIDR; host bits are allowed and ignored
/// (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// A selector that is both required and excluded makes the conditions unsatisfiable.
fn contradictions(out: &mut Vec<Problem>, at: &str, require: &[Selector], exclude: &[Selector]) {
    for (i, e) in exclude.iter().enumerate() {
        if require.contains(e) {
            out.push(Problem::new(
                format!("{at}.exclude[{i}]"),
                "this selector is also in require: the conditions match nobody",
            ));
        }
    }
}

fn globs(out: &mut Vec<Problem>, at: &str, servers: &[String], tools: &[String]) {
    for (field, globs) in [("servers", servers), ("tools", tools)] {
        for (j, g) in globs.iter().enumerate() {
            if let Some(p) = glob_problem(g) {
                out.push(Problem::new(format!("{at}.{field}[{j}]"), p));
            }
        }
    }
}

/// Every problem of a server.
pub fn server_problems(server: &McpServer) -> Vec<Problem> {
    let spec = &server.spec;
    let mut out = Vec::new();
    match (&spec.remote, &spec.deployment) {
        (Some(_), Some(_)) | (None, None) => {
            out.push(Problem::new(
                "spec",
                "exactly one of remote and deployment must be set",
            ));
        }
        (Some(remote), None) => {
            if !(remote.url.starts_with("http://") || remote.url.starts_with("https://")) {
                out.push(Problem::new(
                    "spec.remote.url",
                    format!("{:?} is not an http(s) URL", remote.url),
                ));
            }
            for (i, h) in remote.headers.iter().enumerate() {
                if h.value.is_some() == h.value_from.is_some() {
                    out.push(Problem::new(
                        format!("spec.remote.headers[{i}]"),
                        format!(
                            "header {:?}: set exactly one of value and valueFrom",
                            h.name
                        ),
                    ));
                }
                if h.name.eq_ignore_ascii_case("host") {
                    out.push(Problem::new(
                        format!("spec.remote.headers[{i}].name"),
                        "the Host header cannot be set",
                    ));
                }
            }
        }
        (None, Some(dep)) => {
            if dep.command.is_empty() && dep.transport == DeployedTransport::Stdio {
                out.push(Problem::new(
                    "spec.deployment.command",
                    "a stdio server needs a command (what the sidecar, or the proxy locally, runs)",
                ));
            }
            if dep.transport != DeployedTransport::Http
                && (dep.port.is_some() || dep.path.is_some())
            {
                out.push(Problem::new(
                    "spec.deployment",
                    "port and path apply only to transport http",
                ));
            }
            for (i, e) in dep.env.iter().enumerate() {
                if e.value.is_some() && e.value_from.is_some() {
                    out.push(Problem::new(
                        format!("spec.deployment.env[{i}]"),
                        "set at most one of value and valueFrom",
                    ));
                }
            }
        }
    }
    if let Some(prefix) = &spec.prefix
        && (prefix.len() > 64
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        out.push(Problem::new(
            "spec.prefix",
            "up to 64 characters of [A-Za-z0-9.-]",
        ));
    }
    out
}

/// Every problem of a portal.
pub fn portal_problems(portal: &McpPortal) -> Vec<Problem> {
    let spec = &portal.spec;
    let mut out = Vec::new();
    if spec.auth.is_none() && spec.public != Some(true) {
        out.push(Problem::new(
            "spec.auth",
            "required unless spec.public is true",
        ));
    }
    if let Some(sel) = &spec.servers.selector
        && let Some(p) = selector_problem(sel)
    {
        out.push(Problem::new("spec.servers.selector", p));
    }
    if let Some(llm) = &spec.llm {
        llm_problems(&mut out, llm);
    }
    if let Some(store) = &spec.rate_limit_store {
        let r = &store.redis;
        redis_problems(
            &mut out,
            "spec.rateLimitStore.redis",
            &r.url_from,
            r.key_prefix.as_deref(),
            r.timeout_millis,
        );
    }
    if let Some(a) = &spec.access {
        for (list, sels) in [
            ("include", &a.include),
            ("require", &a.require),
            ("exclude", &a.exclude),
        ] {
            for (i, s) in sels.iter().enumerate() {
                selector_problems(&mut out, &format!("spec.access.{list}[{i}]"), s);
            }
        }
        contradictions(&mut out, "spec.access", &a.require, &a.exclude);
        cidr_problems(&mut out, "spec.access.trustedProxies", &a.trusted_proxies);
        if a.client_certificate_header.is_some() && a.trusted_proxies.is_empty() {
            out.push(Problem::new(
                "spec.access.trustedProxies",
                "clientCertificateHeader is read only from trustedProxies: list the ingress addresses",
            ));
        }
        if let Some(h) = &a.client_certificate_header
            && (h.is_empty() || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            out.push(Problem::new(
                "spec.access.clientCertificateHeader",
                format!("{h:?} is not a header name"),
            ));
        }
    }
    out
}

/// The problems of `spec.llm`: what the schema's CEL refuses, and what it cannot (a base URL
/// that does not parse, a key reference without a name).
fn llm_problems(out: &mut Vec<Problem>, llm: &LlmSpec) {
    if llm.routes.is_empty() {
        out.push(Problem::new(
            "spec.llm.routes",
            "list at least one route (or leave spec.llm out)",
        ));
    }
    if let Some(store) = &llm.budget_store {
        budget_store_problems(out, store);
    }
    let mut seen = std::collections::BTreeMap::new();
    for (i, r) in llm.routes.iter().enumerate() {
        let at = format!("spec.llm.routes[{i}]");
        if !(1..=128).contains(&r.alias.len())
            || !r
                .alias
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            out.push(Problem::new(
                format!("{at}.alias"),
                format!("{:?}: 1-128 characters of [A-Za-z0-9_.-]", r.alias),
            ));
        }
        if let Some(first) = seen.insert(r.alias.as_str(), i) {
            out.push(Problem::new(
                format!("{at}.alias"),
                format!(
                    "{:?} is also the alias of spec.llm.routes[{first}]: aliases are unique",
                    r.alias
                ),
            ));
        }
        if r.targets.is_empty() || r.targets.len() > 8 {
            out.push(Problem::new(format!("{at}.targets"), "list 1-8 targets"));
        }
        for (j, t) in r.targets.iter().enumerate() {
            let at = format!("{at}.targets[{j}]");
            match &t.base_url {
                None if t.provider.default_base_url().is_none() => out.push(Problem::new(
                    format!("{at}.baseUrl"),
                    format!("required for provider {}", t.provider.id()),
                )),
                Some(u) if !base_url_ok(u) => out.push(Problem::new(
                    format!("{at}.baseUrl"),
                    format!("{u:?} is not an http(s) URL with a host"),
                )),
                _ => {}
            }
            match &t.api_key_from {
                None if t.provider.needs_key() => out.push(Problem::new(
                    format!("{at}.apiKeyFrom"),
                    format!(
                        "required for provider {} (a Secret key holding the API key)",
                        t.provider.id()
                    ),
                )),
                Some(k) if k.name.is_empty() || k.key.is_empty() => out.push(Problem::new(
                    format!("{at}.apiKeyFrom"),
                    "name and key must not be empty",
                )),
                _ => {}
            }
            if t.model.trim().is_empty() || t.model.len() > 256 {
                out.push(Problem::new(
                    format!("{at}.model"),
                    "must be 1-256 non-blank characters",
                ));
            }
            if let Some(w) = t.weight {
                if r.strategy != LlmStrategy::Weighted {
                    out.push(Problem::new(
                        format!("{at}.weight"),
                        "applies only to a route with strategy: weighted",
                    ));
                } else if !(1..=1000).contains(&w) {
                    out.push(Problem::new(format!("{at}.weight"), "must be 1-1000"));
                }
            }
            if let Some(s) = t.timeout_seconds
                && !(1..=600).contains(&s)
            {
                out.push(Problem::new(
                    format!("{at}.timeoutSeconds"),
                    "must be 1-600",
                ));
            }
            if let Some(p) = &t.price {
                for (field, v) in [
                    ("input", Some(&p.input)),
                    ("output", Some(&p.output)),
                    ("cachedInput", p.cached_input.as_ref()),
                ] {
                    if let Some(v) = v
                        && parse_money(v).is_none()
                    {
                        out.push(Problem::new(
                            format!("{at}.price.{field}"),
                            format!("{v:?} is not an amount (a decimal such as \"2.50\": up to 9 digits before and after the point)"),
                        ));
                    }
                }
            }
        }
    }
}

/// The problems of `spec.llm.budgetStore`.
fn budget_store_problems(out: &mut Vec<Problem>, store: &BudgetStore) {
    if let Some(r) = &store.redis {
        redis_problems(
            out,
            "spec.llm.budgetStore.redis",
            &r.url_from,
            r.key_prefix.as_deref(),
            r.timeout_millis,
        );
    }
}

/// The problems of a Redis store's fields at `at` (the budget and rate-limit stores).
fn redis_problems(
    out: &mut Vec<Problem>,
    at: &str,
    url_from: &crate::SecretKeyRef,
    key_prefix: Option<&str>,
    timeout_millis: Option<u32>,
) {
    if url_from.name.is_empty() || url_from.key.is_empty() {
        out.push(Problem::new(
            format!("{at}.urlFrom"),
            "name and key must not be empty",
        ));
    }
    if let Some(p) = key_prefix
        && (p.is_empty()
            || p.len() > 64
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":_.-".contains(c)))
    {
        out.push(Problem::new(
            format!("{at}.keyPrefix"),
            format!("{p:?}: 1-64 characters of [A-Za-z0-9:_.-]"),
        ));
    }
    if let Some(t) = timeout_millis
        && !(10..=10_000).contains(&t)
    {
        out.push(Problem::new(
            format!("{at}.timeoutMillis"),
            "must be 10-10000",
        ));
    }
}

/// `http(s)://host...` with a non-empty host and no spaces.
fn base_url_ok(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            !host.is_empty() && !u.contains(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
