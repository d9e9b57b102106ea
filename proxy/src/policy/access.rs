//! Effective access: "what can subject X (groups G) call through portal P", without logging in.
//!
//! Computed by [`PolicySet::tool_access`], the function the request path uses, over plain
//! values: no portal, no request. A running portal's report is `Portal::access`, served on the
//! admin router (`GET /admin/access`, in `http::admin`) and by the CLI
//! (`portcullis-proxy access ...`).

use serde::Serialize;

use super::{Decision, PolicySet, RateLimits};
use crate::catalog::Catalog;
use crate::model::Identity;

/// One tool of the portal and whether the identity may see and call it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolAccess {
    /// Name in the portal (`<prefix>_<tool>`).
    pub name: String,
    /// McpServer.
    pub server: String,
    /// Name at the upstream (what policy globs match).
    pub upstream_name: String,
    /// Whether the tool counts as read-only.
    pub read_only: bool,
    /// The decision and why.
    pub access: Decision,
}

/// Everything an identity can reach through one portal.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessReport {
    /// McpPortal name.
    pub portal: String,
    /// The identity evaluated.
    pub identity: Identity,
    /// Whether the portal is open (public, no policies).
    pub open: bool,
    /// Names of the tools the identity can see and call, in list order.
    pub allowed: Vec<String>,
    /// Every tool of the portal's catalog with its decision.
    pub tools: Vec<ToolAccess>,
    /// McpServers whose prompts and resources the identity can see.
    pub servers: Vec<String>,
    /// Rate limits in force for the identity.
    pub limits: RateLimits,
    /// The selector of the portal's `spec.access` that denies the identity (absent: the
    /// portal lets it in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal_access: Option<String>,
}

/// What `identity` can see and call, given the portal's policy and catalog. `servers`: the
/// McpServer names of the portal (for prompt and resource visibility).
pub fn effective_access(
    portal: &str,
    policy: &PolicySet,
    catalog: &Catalog,
    servers: &[String],
    identity: &Identity,
) -> AccessReport {
    let tools: Vec<ToolAccess> = catalog
        .tools
        .iter()
        .map(|t| ToolAccess {
            name: t.tool.name.to_string(),
            server: t.server.clone(),
            upstream_name: t.upstream_name.clone(),
            read_only: t.read_only,
            access: policy.tool_access(identity, t),
        })
        .collect();
    AccessReport {
        portal: portal.to_owned(),
        identity: identity.clone(),
        open: policy.is_open(),
        allowed: tools
            .iter()
            .filter(|t| t.access.is_allowed())
            .map(|t| t.name.clone())
            .collect(),
        servers: policy
            .visible_servers(identity, catalog, servers.iter().cloned())
            .into_iter()
            .collect(),
        limits: policy.limits(identity),
        portal_access: match policy.portal_access(identity) {
            super::conditions::Outcome::Met(_) => None,
            super::conditions::Outcome::NotMet(u) => Some(u.selector),
        },
        tools,
    }
}

impl AccessReport {
    /// A human-readable rendering (the CLI's default output).
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let who = if self.identity.subject.is_empty() {
            "anonymous".to_owned()
        } else {
            self.identity.subject.clone()
        };
        let _ = writeln!(
            out,
            "portal {}: subject {who}, groups [{}]{}",
            self.portal,
            self.identity.groups.join(", "),
            if self.open {
                " (open portal: no McpPolicy)"
            } else {
                ""
            }
        );
        let ctx = &self.identity.context;
        if let Some(ip) = ctx.source_ip {
            let _ = writeln!(out, "source address: {ip}");
        }
        if let Some(c) = &ctx.client_certificate {
            let _ = writeln!(
                out,
                "client certificate: subject {}, issuer {}, SANs [{}]",
                c.subject,
                c.issuer,
                c.sans.join(", ")
            );
        }
        for claim in ["amr", "acr"] {
            if let Some(v) = self.identity.claims.get(claim) {
                let _ = writeln!(out, "{claim}: {v}");
            }
        }
        match &self.portal_access {
            Some(s) => {
                let _ = writeln!(out, "portal access: DENIED ({s} not met)");
            }
            None => {
                let _ = writeln!(out, "portal access: allowed");
            }
        }
        let _ = writeln!(
            out,
            "allowed tools ({} of {}):",
            self.allowed.len(),
            self.tools.len()
        );
        for t in self.tools.iter().filter(|t| t.access.is_allowed()) {
            let _ = writeln!(
                out,
                "  {:<40} {:<5} {}",
                t.name,
                if t.read_only { "read" } else { "write" },
                reason(&t.access)
            );
        }
        let denied: Vec<_> = self
            .tools
            .iter()
            .filter(|t| !t.access.is_allowed())
            .collect();
        if !denied.is_empty() {
            let _ = writeln!(out, "hidden tools ({}):", denied.len());
            for t in denied {
                let _ = writeln!(
                    out,
                    "  {:<40} {:<5} {}",
                    t.name,
                    if t.read_only { "read" } else { "write" },
                    reason(&t.access)
                );
            }
        }
        let _ = writeln!(
            out,
            "prompts and resources of: [{}]",
            self.servers.join(", ")
        );
        let l = &self.limits;
        if l.calls_per_minute.is_some() || l.calls_per_minute_per_tool.is_some() {
            let f = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "rate limits: {}/min on the portal, {}/min per tool",
                f(l.calls_per_minute),
                f(l.calls_per_minute_per_tool)
            );
        }
        out
    }
}

/// A one-line description of a decision (the CLI's text and audit events' `reason`).
pub fn reason(d: &Decision) -> String {
    use super::Reason::*;
    let r = match d {
        Decision::Allow(r) | Decision::Deny(r) => r,
    };
    match r {
        OpenPortal => "open portal".into(),
        GrantedBy {
            policy,
            rule,
            selector,
        } => match selector {
            Some(s) => format!("granted by {policy} rules[{rule}] ({s} matched)"),
            None => format!("granted by {policy} rules[{rule}]"),
        },
        DeniedBy { policy, rule } => format!("denied by {policy} rules[{rule}]"),
        WriteNotGranted { policy, rule } => {
            format!("write tool; {policy} rules[{rule}] grants read only")
        }
        ConditionNotMet {
            policy,
            rule,
            selector,
        } => format!("{policy} rules[{rule}] would grant it; {selector} not met"),
        PortalAccess { selector } => format!("portal access: {selector} not met"),
        NoGrant => "no rule grants it".into(),
        NotAuthenticated => "not authenticated".into(),
    }
}
