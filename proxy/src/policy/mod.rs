//! McpPolicy enforcement: who sees and calls which tools of this portal.
//!
//! [`PolicySet::tool_access`] is the one filter. `tools/list`, call authorization, prompt and
//! resource visibility, Code Mode's search and execute, the admin endpoint and the `access`
//! CLI all go through it, so a tool hidden in one place is hidden in all.
//!
//! Semantics (per tool; a tool is identified by its McpServer name and upstream tool name):
//! - The portal's `spec.access` conditions come first: a caller who does not meet them sees
//!   nothing ([`Reason::PortalAccess`] names the selector that decided).
//! - A policy applies to an identity when it meets the policy's conditions
//!   ([`conditions::Conditions::evaluate`]): `include` (or its older name `subjects`) empty or
//!   one of its selectors matching, every `require` selector matching, no `exclude` selector
//!   matching (user = subject; group in the groups claim; claim = value, or value in an array
//!   claim, or in a space-separated `scope`; `emailDomain`, `authMethod`, `sourceCidrs`,
//!   `clientCertificate`, `deviceClaim` as the CRD documents).
//! - A rule matches a tool when its `servers` globs match the server (empty: all) and its
//!   `tools` globs match the upstream tool name (empty: all). Globs know `*` only.
//! - A rule with conditions of its own (`rules[].include/require/exclude`) applies only to a
//!   caller meeting them, evaluated by the same [`Conditions::evaluate`]: an allow rule the
//!   caller does not meet grants nothing, a deny rule the caller does not meet takes nothing
//!   away. Old rules (no conditions) apply to every caller the policy covers.
//! - `Deny` wins over any allow. A deny rule with `access: read` (the default) takes the tool
//!   away entirely; with `access: write` it takes away only write tools (a "no writes" rule).
//! - `Allow` with `access: write` grants the tool; with `access: read` only when the tool is
//!   read-only ([`PortalTool::read_only`]: the McpServer override, else `readOnlyHint`).
//! - Nothing matched: denied. Writes are therefore denied unless a rule grants `write`. When a
//!   policy whose conditions the caller does not meet would have granted the tool, the
//!   decision says so ([`Reason::ConditionNotMet`], with the selector).
//! - A public portal with no McpPolicy bound at all is open (the demo mode): every tool to
//!   everyone. Binding any policy switches it to the rules above. A portal with `auth` and no
//!   policy serves nothing.
//!
//! Prompts and resources (and resource templates) carry no tool name. They are visible (and
//! usable) when the identity may see some tool of the same McpServer, or when a rule grants the
//! whole server (a read-only tool of that server with an unnamed tool: rules with empty
//! `tools` or a `*` pattern). The server-level check is the same [`PolicySet::tool_access`].

pub mod access;
pub mod conditions;
pub mod ratelimit;

use std::collections::BTreeSet;

use crds::McpPolicy;
use crds::policy::PolicyLimits;
use crds::policy::{Access, Effect};
use serde::Serialize;

use crate::catalog::{Catalog, PortalTool};
use crate::model::{Identity, IdentityKind};
use conditions::{Conditions, Outcome, Unmet};

/// Tool and server patterns of policy rules: the API's one glob syntax (`*` only), from `crds`.
pub use crds::glob::Glob;

fn any_glob(globs: &[Glob], s: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| g.matches(s))
}

#[derive(Debug, Clone)]
struct Rule {
    effect: Effect,
    servers: Vec<Glob>,
    tools: Vec<Glob>,
    access: Access,
    /// The rule's own `include`/`require`/`exclude` (empty: every caller the policy covers),
    /// evaluated by the same [`Conditions::evaluate`] as the policy's.
    conditions: Conditions,
}

impl Rule {
    fn matches(&self, server: &str, tool: &str) -> bool {
        any_glob(&self.servers, server) && any_glob(&self.tools, tool)
    }

    /// Whether this rule, applying, would grant a tool that is `read_only` or not.
    fn would_grant(&self, read_only: bool) -> bool {
        self.effect == Effect::Allow && (self.access == Access::Write || read_only)
    }
}

#[derive(Debug, Clone)]
struct Policy {
    name: String,
    conditions: Conditions,
    rules: Vec<Rule>,
    limits: Option<PolicyLimits>,
}

impl Policy {
    fn applies_to(&self, id: &Identity) -> bool {
        self.conditions.evaluate(id).is_met()
    }
}

/// Whether an McpPolicy covers `identity` (its conditions, [`Conditions::evaluate`]; a policy
/// without any covers everyone). Used to pick the DLP and inspection rules that apply to a
/// caller.
pub fn covers(policy: &McpPolicy, identity: &Identity) -> bool {
    identity.kind != IdentityKind::Nobody
        && Conditions::of_policy(&policy.spec)
            .evaluate(identity)
            .is_met()
}

/// The decision on an LLM model alias (`McpPolicy.spec.models`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelAccess {
    /// Granted by the named policy.
    Granted(String),
    /// A policy's `models` match the alias, but the caller does not meet its conditions:
    /// the policy and the selector that decided (with a step-up hint for `authMethod`).
    NotMet(String, Unmet),
    /// No policy's `models` grant it to the caller.
    NoGrant,
}

impl ModelAccess {
    /// Whether the caller may use the model.
    pub fn is_granted(&self) -> bool {
        matches!(self, ModelAccess::Granted(_))
    }
}

/// May `identity` call an LLM model alias? `candidates`: the policies whose `models` globs
/// match the alias (the gateway matches its globs). The policy's conditions decide, by the
/// same [`Conditions::evaluate`] as tool rules: granted by the first candidate the caller
/// meets; otherwise the first candidate whose `include` the caller matched but whose
/// `require` or `exclude` it failed is named.
pub fn model_access<'a>(
    candidates: impl IntoIterator<Item = &'a McpPolicy>,
    identity: &Identity,
) -> ModelAccess {
    if identity.kind == IdentityKind::Nobody {
        return ModelAccess::NoGrant;
    }
    let mut unmet = None;
    for p in candidates {
        match Conditions::of_policy(&p.spec).evaluate(identity) {
            Outcome::Met(_) => {
                return ModelAccess::Granted(p.metadata.name.clone().unwrap_or_default());
            }
            Outcome::NotMet(u) if u.in_audience && unmet.is_none() => {
                unmet = Some(ModelAccess::NotMet(
                    p.metadata.name.clone().unwrap_or_default(),
                    u,
                ));
            }
            Outcome::NotMet(_) => {}
        }
    }
    unmet.unwrap_or(ModelAccess::NoGrant)
}

/// Why a tool is visible or not, naming the policy, its tool rule (index in `spec.rules`) and
/// the access selector that decided. Internal: shown on the admin endpoint, in the `access` CLI
/// and in audit events, never to MCP clients (they only ever see "Unknown tool").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum Reason {
    /// A public portal without policies: everything is allowed.
    OpenPortal,
    /// The named policy's rule grants it; `selector` is the `include` selector the caller
    /// matched (absent when the policy covers everyone).
    GrantedBy {
        /// McpPolicy name.
        policy: String,
        /// Index of the granting rule in `spec.rules`.
        rule: usize,
        /// The matching `include` selector, for example `include[0].group`, or the rule's
        /// own (`rules[1].include[0].group`).
        #[serde(skip_serializing_if = "Option::is_none")]
        selector: Option<String>,
    },
    /// A deny rule of the named policy takes it away.
    DeniedBy {
        /// McpPolicy name.
        policy: String,
        /// Index of the deny rule in `spec.rules`.
        rule: usize,
    },
    /// A write tool that the named policy grants only for reading.
    WriteNotGranted {
        /// McpPolicy name.
        policy: String,
        /// Index of the read-only rule in `spec.rules`.
        rule: usize,
    },
    /// A policy's rule would grant it, but the caller does not meet the policy's or the
    /// rule's conditions.
    ConditionNotMet {
        /// McpPolicy name.
        policy: String,
        /// Index of the rule that would grant it.
        rule: usize,
        /// The selector that decided, for example `require[0].clientCertificate` (the
        /// policy's) or `rules[1].require[0].authMethod` (the rule's own).
        selector: String,
    },
    /// The caller does not meet the portal's `spec.access` conditions.
    PortalAccess {
        /// The selector that decided, for example `require[1].sourceCidrs`.
        selector: String,
    },
    /// No rule of any policy that applies to the identity matches.
    NoGrant,
    /// The request carried no identity on a portal that needs one.
    NotAuthenticated,
}

/// The outcome of [`PolicySet::tool_access`]. Serialized flat, for example
/// `{"decision": "deny", "reason": "writeNotGranted", "policy": "finance-read", "rule": 0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "decision")]
pub enum Decision {
    /// Visible and callable, and why.
    Allow(Reason),
    /// Hidden and not callable, and why.
    Deny(Reason),
}

impl Decision {
    /// Whether the tool is visible and callable.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Rate limits in force for one identity (the most restrictive of every applicable policy:
/// each policy's limits apply to the subjects it covers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// Calls per minute per subject on this portal.
    pub calls_per_minute: Option<u32>,
    /// Calls per minute per subject per tool.
    pub calls_per_minute_per_tool: Option<u32>,
    /// Burst of the portal bucket.
    pub burst: Option<u32>,
    /// Burst of the per-tool bucket.
    pub tool_burst: Option<u32>,
}

/// The compiled McpPolicies of one portal.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    open: bool,
    /// The portal's `spec.access` gate.
    portal: Conditions,
}

impl PolicySet {
    /// Compiles the policies bound to a portal. `public`: whether the portal serves anonymous
    /// users (a public portal without tool rules in any policy is open).
    pub fn compile(policies: &[McpPolicy], public: bool) -> PolicySet {
        let policies: Vec<Policy> = policies
            .iter()
            .map(|p| Policy {
                name: p.metadata.name.clone().unwrap_or_default(),
                conditions: Conditions::of_policy(&p.spec),
                rules: p
                    .spec
                    .rules
                    .iter()
                    .map(|r| Rule {
                        effect: r.effect,
                        servers: r.servers.iter().map(|g| Glob::new(g)).collect(),
                        tools: r.tools.iter().map(|g| Glob::new(g)).collect(),
                        access: r.access,
                        conditions: Conditions::compile(&[], &r.include, &r.require, &r.exclude),
                    })
                    .collect(),
                limits: p.spec.limits.clone(),
            })
            .collect();
        // A public portal is open until some policy says who may use which tools: policies
        // that only carry DLP rules or limits do not lock everyone out.
        PolicySet {
            open: public && policies.iter().all(|p| p.rules.is_empty()),
            policies,
            portal: Conditions::default(),
        }
    }

    /// The same set gated by a portal's `spec.access` conditions.
    pub fn with_portal_access(mut self, access: Option<&crds::access::PortalAccess>) -> PolicySet {
        self.portal = Conditions::of_portal(access);
        self
    }

    /// The policy set of a portal configuration.
    pub fn for_config(cfg: &crate::config::PortalConfig) -> PolicySet {
        Self::compile(&cfg.policies, cfg.spec.public == Some(true))
            .with_portal_access(cfg.spec.access.as_ref())
    }

    /// The portal-level gate alone (`spec.access`): what the HTTP edge checks before reading
    /// a request, and what every tool decision checks first.
    pub fn portal_access(&self, identity: &Identity) -> Outcome {
        self.portal.evaluate(identity)
    }

    /// Whether this set allows everything (a public portal without policies).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// THE filter: may `identity` see and call `tool`?
    pub fn tool_access(&self, identity: &Identity, tool: &PortalTool) -> Decision {
        self.access(identity, &tool.server, &tool.upstream_name, tool.read_only)
    }

    fn access(&self, identity: &Identity, server: &str, tool: &str, read_only: bool) -> Decision {
        if identity.kind == IdentityKind::Nobody {
            return Decision::Deny(Reason::NotAuthenticated);
        }
        if let Outcome::NotMet(Unmet { selector, .. }) = self.portal.evaluate(identity) {
            return Decision::Deny(Reason::PortalAccess { selector });
        }
        if self.open {
            return Decision::Allow(Reason::OpenPortal);
        }
        // (policy, rule, include selector) of the first grant and read-only grant; the first
        // policy that would grant but whose conditions are not met.
        let mut granted: Option<(&str, usize, Option<String>)> = None;
        let mut read_only_grant: Option<(&str, usize)> = None;
        let mut unmet: Option<(&str, usize, String)> = None;
        for p in &self.policies {
            let by = match p.conditions.evaluate(identity) {
                Outcome::Met(by) => by,
                Outcome::NotMet(u) => {
                    if unmet.is_none()
                        && u.in_audience
                        && let Some(i) = p
                            .rules
                            .iter()
                            .position(|r| r.would_grant(read_only) && r.matches(server, tool))
                    {
                        unmet = Some((&p.name, i, u.selector));
                    }
                    continue;
                }
            };
            for (i, r) in p.rules.iter().enumerate() {
                if !r.matches(server, tool) {
                    continue;
                }
                // The rule's own conditions: a rule the caller does not meet neither grants
                // nor denies; one that would have granted is named in the decision.
                let by = match r.conditions.evaluate(identity) {
                    Outcome::Met(rule_by) => {
                        rule_by.map(|s| format!("rules[{i}].{s}")).or(by.clone())
                    }
                    Outcome::NotMet(u) => {
                        if unmet.is_none() && u.in_audience && r.would_grant(read_only) {
                            unmet = Some((&p.name, i, format!("rules[{i}].{}", u.selector)));
                        }
                        continue;
                    }
                };
                let deny = || {
                    Decision::Deny(Reason::DeniedBy {
                        policy: p.name.clone(),
                        rule: i,
                    })
                };
                match (r.effect, r.access) {
                    (Effect::Deny, Access::Read) => return deny(),
                    (Effect::Deny, Access::Write) if !read_only => return deny(),
                    (Effect::Deny, Access::Write) => {}
                    (Effect::Allow, Access::Write) => {
                        granted.get_or_insert((&p.name, i, by.clone()));
                    }
                    (Effect::Allow, Access::Read) if read_only => {
                        granted.get_or_insert((&p.name, i, by.clone()));
                    }
                    (Effect::Allow, Access::Read) => {
                        read_only_grant.get_or_insert((&p.name, i));
                    }
                }
            }
        }
        match (granted, unmet, read_only_grant) {
            (Some((p, rule, selector)), _, _) => Decision::Allow(Reason::GrantedBy {
                policy: p.to_owned(),
                rule,
                selector,
            }),
            (None, Some((p, rule, selector)), _) => Decision::Deny(Reason::ConditionNotMet {
                policy: p.to_owned(),
                rule,
                selector,
            }),
            (None, None, Some((p, rule))) => Decision::Deny(Reason::WriteNotGranted {
                policy: p.to_owned(),
                rule,
            }),
            (None, None, None) => Decision::Deny(Reason::NoGrant),
        }
    }

    /// The catalog's tools `identity` may see, in catalog order (what `tools/list` and Code
    /// Mode search show, and exactly what [`PolicySet::authorize_call`] lets through).
    pub fn visible_tools<'a>(
        &'a self,
        identity: &'a Identity,
        catalog: &'a Catalog,
    ) -> impl Iterator<Item = &'a PortalTool> + 'a {
        catalog
            .tools
            .iter()
            .filter(move |t| self.tool_access(identity, t).is_allowed())
    }

    /// The tool a call by exposed `name` reaches, if `identity` may call it. `None` for unknown
    /// and for hidden tools alike, so callers answer both with the same error.
    pub fn authorize_call<'a>(
        &self,
        identity: &Identity,
        catalog: &'a Catalog,
        name: &str,
    ) -> Option<&'a PortalTool> {
        catalog
            .tool(name)
            .filter(|t| self.tool_access(identity, t).is_allowed())
    }

    /// Whether `identity` may see the prompts and resources of McpServer `server`: some tool of
    /// that server is visible, or a rule grants the whole server (see the module docs).
    pub fn server_visible(&self, identity: &Identity, catalog: &Catalog, server: &str) -> bool {
        self.access(identity, server, "", true).is_allowed()
            || catalog
                .tools
                .iter()
                .any(|t| t.server == server && self.tool_access(identity, t).is_allowed())
    }

    /// The McpServers whose prompts and resources `identity` may see.
    pub fn visible_servers(
        &self,
        identity: &Identity,
        catalog: &Catalog,
        servers: impl IntoIterator<Item = String>,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = catalog
            .tools
            .iter()
            .filter(|t| self.tool_access(identity, t).is_allowed())
            .map(|t| t.server.clone())
            .collect();
        for s in servers {
            if !out.contains(&s) && self.access(identity, &s, "", true).is_allowed() {
                out.insert(s);
            }
        }
        out
    }

    /// The rate limits in force for `identity`.
    pub fn limits(&self, identity: &Identity) -> RateLimits {
        let mut out = RateLimits::default();
        if identity.kind == IdentityKind::Nobody {
            return out;
        }
        let min = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        for p in self.policies.iter().filter(|p| p.applies_to(identity)) {
            let Some(l) = &p.limits else { continue };
            if l.calls_per_minute.is_some() {
                out.calls_per_minute = min(out.calls_per_minute, l.calls_per_minute);
                out.burst = min(out.burst, l.burst.or(l.calls_per_minute));
            }
            if l.calls_per_minute_per_tool.is_some() {
                out.calls_per_minute_per_tool =
                    min(out.calls_per_minute_per_tool, l.calls_per_minute_per_tool);
                out.tool_burst = min(out.tool_burst, l.burst.or(l.calls_per_minute_per_tool));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
