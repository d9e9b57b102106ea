//! McpPolicy enforcement: who sees and calls which tools of this portal.
//!
//! [`PolicySet::tool_access`] is the one filter. `tools/list`, call authorization, prompt and
//! resource visibility, Code Mode's search and execute, the admin endpoint and the `access`
//! CLI all go through it, so a tool hidden in one place is hidden in all.
//!
//! Semantics (per tool; a tool is identified by its McpServer name and upstream tool name):
//! - A policy applies to an identity when its `subjects` is empty (everyone, anonymous users of
//!   public portals included) or one of its subjects matches (user = subject; group in the
//!   groups claim; claim = value, or value in an array claim, or in a space-separated `scope`).
//! - A rule matches a tool when its `servers` globs match the server (empty: all) and its
//!   `tools` globs match the upstream tool name (empty: all). Globs know `*` only.
//! - `Deny` wins over any allow. A deny rule with `access: read` (the default) takes the tool
//!   away entirely; with `access: write` it takes away only write tools (a "no writes" rule).
//! - `Allow` with `access: write` grants the tool; with `access: read` only when the tool is
//!   read-only ([`PortalTool::read_only`]: the McpServer override, else `readOnlyHint`).
//! - Nothing matched: denied. Writes are therefore denied unless a rule grants `write`.
//! - A public portal with no McpPolicy bound at all is open (the demo mode): every tool to
//!   everyone. Binding any policy switches it to the rules above. A portal with `auth` and no
//!   policy serves nothing.
//!
//! Prompts and resources (and resource templates) carry no tool name. They are visible (and
//! usable) when the identity may see some tool of the same McpServer, or when a rule grants the
//! whole server (a read-only tool of that server with an unnamed tool: rules with empty
//! `tools` or a `*` pattern). The server-level check is the same [`PolicySet::tool_access`].

pub mod access;
pub mod ratelimit;

use std::collections::BTreeSet;

use crds::McpPolicy;
use crds::policy::PolicyLimits;
use crds::policy::{Access, Effect, Subject};
use serde::Serialize;

use crate::catalog::{Catalog, PortalTool};
use crate::model::{Identity, IdentityKind};

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
}

#[derive(Debug, Clone)]
struct Policy {
    name: String,
    subjects: Vec<Subject>,
    rules: Vec<Rule>,
    limits: Option<PolicyLimits>,
}

impl Policy {
    fn applies_to(&self, id: &Identity) -> bool {
        self.subjects.is_empty() || self.subjects.iter().any(|s| subject_matches(s, id))
    }
}

/// Whether an McpPolicy covers `identity` (a policy without subjects covers everyone). Used to
/// pick the DLP rules that apply to a caller.
pub fn covers(policy: &McpPolicy, identity: &Identity) -> bool {
    identity.kind != IdentityKind::Nobody
        && (policy.spec.subjects.is_empty()
            || policy
                .spec
                .subjects
                .iter()
                .any(|s| subject_matches(s, identity)))
}

fn subject_matches(s: &Subject, id: &Identity) -> bool {
    if id.kind != IdentityKind::Authenticated {
        // Anonymous users have no subject, groups or claims to match.
        return false;
    }
    if let Some(u) = &s.user {
        return *u == id.subject;
    }
    if let Some(g) = &s.group {
        return id.groups.iter().any(|x| x == g);
    }
    if let Some(c) = &s.claim {
        return id.claim_has(&c.name, &c.value);
    }
    false
}

/// Why a tool is visible or not. Internal: shown on the admin endpoint and in logs, never to
/// MCP clients (they only ever see "Unknown tool").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "reason", content = "policy")]
pub enum Reason {
    /// A public portal without policies: everything is allowed.
    OpenPortal,
    /// The named policy grants it.
    GrantedBy(String),
    /// A deny rule of the named policy takes it away.
    DeniedBy(String),
    /// A write tool that the named policy grants only for reading.
    WriteNotGranted(String),
    /// No rule of any policy that applies to the identity matches.
    NoGrant,
    /// The request carried no identity on a portal that needs one.
    NotAuthenticated,
}

/// The outcome of [`PolicySet::tool_access`]. Serialized flat, for example
/// `{"decision": "deny", "reason": "writeNotGranted", "policy": "finance-read"}`.
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
}

impl PolicySet {
    /// Compiles the policies bound to a portal. `public`: whether the portal serves anonymous
    /// users (a public portal without tool rules in any policy is open).
    pub fn compile(policies: &[McpPolicy], public: bool) -> PolicySet {
        let policies: Vec<Policy> = policies
            .iter()
            .map(|p| Policy {
                name: p.metadata.name.clone().unwrap_or_default(),
                subjects: p.spec.subjects.clone(),
                rules: p
                    .spec
                    .rules
                    .iter()
                    .map(|r| Rule {
                        effect: r.effect,
                        servers: r.servers.iter().map(|g| Glob::new(g)).collect(),
                        tools: r.tools.iter().map(|g| Glob::new(g)).collect(),
                        access: r.access,
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
        }
    }

    /// The policy set of a portal configuration.
    pub fn for_config(cfg: &crate::config::PortalConfig) -> PolicySet {
        Self::compile(&cfg.policies, cfg.spec.public == Some(true))
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
        if self.open {
            return Decision::Allow(Reason::OpenPortal);
        }
        let mut granted: Option<&str> = None;
        let mut read_only_grant: Option<&str> = None;
        for p in self.policies.iter().filter(|p| p.applies_to(identity)) {
            for r in &p.rules {
                if !any_glob(&r.servers, server) || !any_glob(&r.tools, tool) {
                    continue;
                }
                match (r.effect, r.access) {
                    (Effect::Deny, Access::Read) => {
                        return Decision::Deny(Reason::DeniedBy(p.name.clone()));
                    }
                    (Effect::Deny, Access::Write) if !read_only => {
                        return Decision::Deny(Reason::DeniedBy(p.name.clone()));
                    }
                    (Effect::Deny, Access::Write) => {}
                    (Effect::Allow, Access::Write) => {
                        granted.get_or_insert(&p.name);
                    }
                    (Effect::Allow, Access::Read) if read_only => {
                        granted.get_or_insert(&p.name);
                    }
                    (Effect::Allow, Access::Read) => {
                        read_only_grant.get_or_insert(&p.name);
                    }
                }
            }
        }
        match (granted, read_only_grant) {
            (Some(p), _) => Decision::Allow(Reason::GrantedBy(p.to_owned())),
            (None, Some(p)) => Decision::Deny(Reason::WriteNotGranted(p.to_owned())),
            (None, None) => Decision::Deny(Reason::NoGrant),
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
