//! `McpPolicy`: who may do what through which portals, and which data may pass.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::access::{AuthMethod, CertificateMatch, ClaimMatch, Selector, Subject};
use crate::common::Condition;
use crate::detector::DetectorName;
use crate::inspection::InspectorName;

/// Grants (or denies) subjects access to tools of portals, and sets DLP rules and limits.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "McpPolicy",
    namespaced,
    status = "McpPolicyStatus",
    shortname = "mcppol",
    category = "portcullis",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Portals","type":"string","jsonPath":".status.portals"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.subjects) || !has(self.include)",
    "message": "subjects is the older name of include: set one of them",
    "fieldPath": ".include"
}, {
    "rule": crate::access::CONTRADICTION_RULE,
    "message": "a selector both in require and in exclude matches nobody",
    "fieldPath": ".exclude"
}]))]
pub struct McpPolicySpec {
    /// Portals (names in this namespace) the policy applies to. Empty: every portal of the
    /// namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub portals: Vec<String>,
    /// The older name of `include`, kept working with the same meaning: the policy covers a
    /// caller matching one of these selectors. Set `subjects` or `include`, not both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 256))]
    pub subjects: Vec<Selector>,
    /// Whom the policy covers: a caller matching one of these selectors (any of). Empty or
    /// absent: everyone, including anonymous users of public portals (narrowed by `require`
    /// and `exclude`). 1-256 selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 256))]
    pub include: Vec<Selector>,
    /// Conditions every covered caller must also meet, all of them: for example a group and
    /// `authMethod: {amr: [mfa]}` and a corporate `clientCertificate`. A caller failing one is
    /// not covered (the policy's rules do not apply to them). 1-64 selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64))]
    pub require: Vec<Selector>,
    /// Callers matching any of these are not covered, whatever `include` and `require` say:
    /// for example `group: contractors`. 1-64 selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64))]
    pub exclude: Vec<Selector>,
    /// Tool rules. A tool is visible and callable when some `allow` rule matches it and no
    /// `deny` rule does. Writes are denied unless a rule grants `write`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub rules: Vec<ToolRule>,
    /// Data-loss-prevention rules applied to calls this policy covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub dlp: Vec<DlpRule>,
    /// Inbound inspection rules (prompt injection, tool poisoning, owner-defined topics)
    /// applied to calls this policy covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub inspection: Vec<InspectionRule>,
    /// Rate limits for the covered subjects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PolicyLimits>,
    /// LLM model aliases (globs over the portal's `spec.llm.routes[].alias`) the covered
    /// subjects may call through the portal's `/llm/` endpoints. Nobody may call an alias no
    /// policy grants them (403 in the caller's API format); `["*"]` grants every alias.
    /// Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run of characters (also none); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub models: Vec<String>,
    /// Token and money budgets of the LLM gateway for the covered callers: each limits what
    /// they may spend through the portal's `/llm/` endpoints in a window (per user, per group or
    /// for the whole portal; optionally only on some aliases). Every budget that applies to a
    /// call is charged; a call is refused (429 in the caller's API format, with `Retry-After`
    /// at the window's reset) when it could cross a hard one. 1-32 budgets, names unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub budgets: Vec<crate::budget::Budget>,
}

/// Allow or deny a set of tools, optionally only for callers meeting the rule's own access
/// conditions (`include`/`require`/`exclude`, on top of the policy's): one policy can say
/// "engineering reads; writes only with MFA from a corporate device".
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": crate::access::CONTRADICTION_RULE,
    "message": "a selector both in require and in exclude matches nobody: the rule would never apply",
    "fieldPath": ".exclude"
}]))]
pub struct ToolRule {
    /// `Allow` (default) or `Deny`. Deny wins over any allow.
    #[serde(default)]
    pub effect: Effect,
    /// McpServer names (globs). Empty: every server.
    /// Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run of characters (also none); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub servers: Vec<String>,
    /// Upstream tool names (globs, without the portal prefix). Empty: every tool.
    /// Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run of characters (also none); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub tools: Vec<String>,
    /// `read` (read-only tools) or `write` (every tool). Defaults to `read`. On a `Deny` rule,
    /// `read` takes the matching tools away entirely and `write` takes away only the write
    /// tools among them (a "no writes" rule).
    #[serde(default)]
    pub access: Access,
    /// The rule applies only to a caller matching one of these selectors (any of), in addition
    /// to the policy's own conditions. Absent: every caller the policy covers. 1-8 selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 8))]
    pub include: Vec<Selector>,
    /// The rule applies only to a caller matching every one of these, for example
    /// `authMethod: {amr: [mfa]}` and a corporate `clientCertificate` on a write rule. A caller
    /// failing one is not granted (or, on a `Deny` rule, not denied) by this rule; decisions
    /// name the selector (`rules[1].require[0].authMethod`). 1-8 selectors (the apiserver's CEL
    /// cost budget bounds them: a policy may hold 256 rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 8))]
    pub require: Vec<Selector>,
    /// The rule does not apply to a caller matching any of these. 1-8 selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 8))]
    pub exclude: Vec<Selector>,
}

impl ToolRule {
    /// Whether the rule has conditions of its own.
    pub fn has_conditions(&self) -> bool {
        !self.include.is_empty() || !self.require.is_empty() || !self.exclude.is_empty()
    }
}

/// Effect of a rule.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
pub enum Effect {
    /// Grant access.
    #[default]
    Allow,
    /// Take access away, whatever other rules grant.
    Deny,
}

/// Level of access a rule grants.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum Access {
    /// Read-only tools only.
    #[default]
    Read,
    /// Read and write tools.
    Write,
}

/// One data-loss-prevention rule. Set `detectors` or `patterns` (or both).
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.detectors) && size(self.detectors) > 0) || (has(self.patterns) && size(self.patterns) > 0)",
    "message": "set detectors or patterns (or both): a rule without either never fires"
}]))]
pub struct DlpRule {
    /// Rule name, reported in errors and audit events. 1-128 characters.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Built-in detectors, by name: `creditCard`, `usSsn`, `iban`, `email`, `phone`, `ipv4`,
    /// `ipv6`, `jwt`, `privateKey`, `awsAccessKey`, `githubToken`, `gitlabToken`, `slackToken`,
    /// `googleApiKey`, `stripeKey`, `openaiKey`, `anthropicKey`, `genericSecret`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 18))]
    pub detectors: Vec<DetectorName>,
    /// Custom regular expressions (Rust `regex` syntax; compiled size up to 1 MiB each). A
    /// pattern that does not compile is reported in the policy's `Accepted` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 4096)))]
    pub patterns: Vec<String>,
    /// Values or regular expressions that never fire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Where to scan: `arguments`, `results` or `both` (default).
    #[serde(default)]
    pub direction: Direction,
    /// What a match does: `block` (the call fails naming the rule: a JSON-RPC error for a
    /// tool call, an error in the caller's API format for an LLM call), `redact` (each match
    /// becomes `[REDACTED:<detector>]`) or `log` (default: an audit event only).
    #[serde(default)]
    pub action: DlpAction,
    /// McpServer names (globs) the rule is limited to. Empty: every server.
    /// Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run of characters (also none); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub servers: Vec<String>,
    /// Upstream tool names (globs, without the portal prefix) the rule is limited to. Empty:
    /// every tool. Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run of characters (also none); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub tools: Vec<String>,
    /// LLM model aliases (globs over the portal's `spec.llm.routes[].alias`) whose traffic on
    /// the `/llm/` endpoints the rule scans: prompts (messages, system prompt, tool results
    /// sent back to the model) as `arguments`, completions (text and tool-call arguments,
    /// streamed or not) as `results`. `servers`, `tools` and `models` together say what the
    /// rule covers: with all three empty, every tool call and every LLM call; with `servers` or
    /// `tools` set and `models` empty, only those tool calls (no LLM call); with only `models`
    /// set, only those LLM calls (no tool call). `["*"]` adds every alias. Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run of characters (also none); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub models: Vec<String>,
    /// Also scan JSON object keys (not only string values). Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scan_keys: bool,
}

/// Which side of a call a DLP rule scans.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Tool arguments before the upstream sees them, and LLM prompts before a provider sees
    /// them.
    Arguments,
    /// Tool results, resource reads and prompt results before the client sees them, and LLM
    /// completions before the caller sees them.
    Results,
    /// Both.
    #[default]
    Both,
}

/// What a DLP match does.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum DlpAction {
    /// Record the finding only (monitor mode).
    #[default]
    Log,
    /// Replace each match with a typed marker.
    Redact,
    /// Refuse the request or result.
    Block,
}

/// The default `threshold` of a rule.
pub const DEFAULT_THRESHOLD: u32 = 50;

fn default_threshold() -> u32 {
    DEFAULT_THRESHOLD
}

fn is_default_threshold(t: &u32) -> bool {
    *t == DEFAULT_THRESHOLD
}

/// One inspection rule: which detectors look at which side of which calls, the score at which
/// they fire, and what a finding does.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.detectors.exists(d, d == 'topics') == (has(self.topics) && size(self.topics) > 0)",
    "message": "set topics exactly when detectors lists topics"
}]))]
pub struct InspectionRule {
    /// Rule name, reported in errors (a blocked call's JSON-RPC error names it), audit events
    /// and metrics. 1-128 characters.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Detectors, by name: `promptInjection` (the built-in classifier, override phrases and
    /// role markers), `toolPoisoning` (hidden Unicode, hidden HTML/markdown text, exfiltration
    /// links, role markers, overrides, requests to call tools or reveal secrets) and `topics`
    /// (this rule's `topics`). At least one.
    #[schemars(length(min = 1, max = 3))]
    pub detectors: Vec<InspectorName>,
    /// Owner-defined topics, for the `topics` detector (set exactly when it is listed). A topic
    /// is found when one of its phrases occurs in the text (case-insensitive, on word
    /// boundaries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub topics: Vec<Topic>,
    /// Where to look: `arguments` (tool arguments, before the upstream sees them), `results`
    /// (tool results, resource reads and prompt results, before the client sees them) or
    /// `both` (default).
    #[serde(default)]
    pub direction: Direction,
    /// McpServer names (globs) the rule is limited to. Empty: every server.
    /// Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run of characters (also none); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub servers: Vec<String>,
    /// Upstream tool names (globs, without the portal prefix) the rule is limited to; for
    /// prompts/get the prompt name stands in for the tool (resource URIs are matched by
    /// `resources`). `tools` and `resources` together say what the rule covers: with both
    /// empty, every tool, prompt and resource; with either set, only what they name. Glob syntax: 1-128 characters of `[A-Za-z0-9_.-]` and `*`, which matches any run of characters (also none); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(regex(pattern = r"^[A-Za-z0-9_.*-]{1,128}$")))]
    pub tools: Vec<String>,
    /// Upstream resource URIs (globs, as the upstream names them) the rule covers on
    /// resources/read, e.g. `file:///srv/wiki/*` or `memo://notes/*`. With both `tools` and
    /// `resources` empty the rule covers everything; with only `tools` set, no resource; with
    /// only `resources` set, no tool or prompt. URI glob syntax: 1-2048 characters without whitespace;
    /// `*` matches any run of characters (also none, also `/`); there is no other wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(regex(pattern = r"^\S+$"), length(min = 1, max = 2048))
    )]
    pub resources: Vec<String>,
    /// The score (1-99, higher is more certain) at or above which a finding fires. Defaults to
    /// 50. Scores: hidden Unicode tag characters 99; role markers 95; overrides and
    /// exfiltration links 90; the classifier 1-99 (its probability, calibrated so that 50 is
    /// its operating point); topics 60 for one phrase, 80 for two, 95 for three or more.
    #[serde(
        default = "default_threshold",
        skip_serializing_if = "is_default_threshold"
    )]
    #[schemars(range(min = 1, max = 99))]
    pub threshold: u32,
    /// What a finding does: `block` (the call fails with a JSON-RPC error naming the rule,
    /// never the content), `flag` (the content is delivered marked as untrusted data) or `log`
    /// (default: an audit event only).
    #[serde(default)]
    pub action: InspectionAction,
    /// Shadow mode: the rule only counts (Prometheus) what it would have done; no action, no
    /// audit finding. For trying a rule or threshold on live traffic. Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

impl Default for InspectionRule {
    fn default() -> InspectionRule {
        InspectionRule {
            name: String::new(),
            detectors: Vec::new(),
            topics: Vec::new(),
            direction: Direction::Both,
            servers: Vec::new(),
            tools: Vec::new(),
            resources: Vec::new(),
            threshold: DEFAULT_THRESHOLD,
            action: InspectionAction::Log,
            shadow: false,
        }
    }
}

/// An owner-defined topic: a name and the phrases that indicate it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Topic {
    /// Topic name, reported in findings. 1-64 characters.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Words or phrases (matched case-insensitively on word boundaries). 1-64 of them, each
    /// 1-256 characters.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 256)))]
    pub phrases: Vec<String>,
}

/// What an inspection finding does.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum InspectionAction {
    /// Record the finding only (an audit event).
    #[default]
    Log,
    /// Deliver the content marked as untrusted data.
    Flag,
    /// Refuse the request or result.
    Block,
}

impl InspectionAction {
    /// The camelCase name.
    pub fn id(self) -> &'static str {
        match self {
            InspectionAction::Log => "log",
            InspectionAction::Flag => "flag",
            InspectionAction::Block => "block",
        }
    }
}

/// Token-bucket rate limits per subject.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLimits {
    /// Sustained tool calls per minute per subject on a portal, 1-1000000. Omit for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub calls_per_minute: Option<u32>,
    /// Sustained calls per minute per subject per tool, 1-1000000. Omit for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub calls_per_minute_per_tool: Option<u32>,
    /// Burst size of the buckets, 1-1000000. Defaults to the per-minute rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<u32>,
}

/// Observed state of an McpPolicy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct McpPolicyStatus {
    /// Portals the policy binds to, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portals: Option<String>,
    /// Standard conditions: `Accepted`, `Bound`, and with budgets `SpendReported` (`False`
    /// naming each portal whose spend could not be read, and why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// LLM spend against the policy's `budgets`, per bound portal, as each portal counts it
    /// (read from the portal's admin port by the operator every `--spend-interval-seconds`,
    /// 60 by default; written only when a figure changed). Subjects are never named: `user`
    /// budgets are shown in aggregate. Absent when the policy declares no budgets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spend: Vec<PortalSpend>,
}

/// The spend against a policy's budgets on one portal.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortalSpend {
    /// The McpPortal (in this namespace).
    pub portal: String,
    /// Where the portal keeps its counters: `redis` (`spec.llm.budgetStore.redis`: one set of
    /// counters every replica shares, so the figures are the portal's) or `memory` (each
    /// replica counts, and enforces, alone: the figures are those of the one replica named in
    /// `replica`, which the operator reached through the portal's Service; with several
    /// replicas, the portal's total is about that many times more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The replica (pod) whose counters these are, with the `memory` store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// When the portal answered with these figures (RFC 3339). The operator reads them
    /// periodically but writes only changed figures, so unchanged figures keep the time they
    /// were first read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// Why the last read failed (the portal could not be reached, or answered an error). The
    /// figures are then the last ones read, at `observedAt` (none if it never answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The policy's budgets with their spend on this portal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<crate::budget::BudgetSpend>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_defaults_to_50_and_is_not_written_back() {
        let r: InspectionRule = serde_json::from_value(
            serde_json::json!({"name": "r", "detectors": ["promptInjection"]}),
        )
        .unwrap();
        assert_eq!(r.threshold, 50);
        assert_eq!(r.action, InspectionAction::Log);
        assert!(serde_json::to_value(&r).unwrap().get("threshold").is_none());
    }
}
