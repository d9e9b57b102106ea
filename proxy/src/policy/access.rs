//! Effective access: "what can subject X (groups G) call through portal P", without logging in.
//!
//! Computed by [`PolicySet::tool_access`], the function the request path uses. Served on the
//! admin router as `GET /admin/access?subject=..&group=..&claim=name=value` and by the CLI
//! (`portcullis-proxy access ...`, through [`run`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;

use super::{Decision, Limits, PolicySet};
use crate::auth::Identity;
use crate::portal::{Catalog, Portal};

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
    pub limits: Limits,
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
        tools,
    }
}

/// [`effective_access`] over a running portal's policy and catalog.
pub fn for_portal(portal: &Portal, identity: &Identity) -> AccessReport {
    let cfg = portal.config();
    let servers: Vec<String> = cfg.servers.iter().map(|s| s.name.clone()).collect();
    effective_access(
        &cfg.name,
        &portal.policy(),
        &portal.catalog(),
        &servers,
        identity,
    )
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

fn reason(d: &Decision) -> String {
    use super::Reason::*;
    let r = match d {
        Decision::Allow(r) | Decision::Deny(r) => r,
    };
    match r {
        OpenPortal => "open portal".into(),
        GrantedBy(p) => format!("granted by {p}"),
        DeniedBy(p) => format!("denied by {p}"),
        WriteNotGranted(p) => format!("write tool; {p} grants read only"),
        NoGrant => "no rule grants it".into(),
        NotAuthenticated => "not authenticated".into(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || {
            std::str::from_utf8(b.get(i + 1..i + 3)?)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match hex() {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds the identity of a query: `subject` (absent: anonymous), `group` (repeatable, or
/// comma-separated), `claim` (repeatable, `name=value`; repeated names make an array).
pub fn identity_from_query(query: &str) -> Identity {
    let mut subject = None;
    let mut groups = Vec::new();
    let mut claims: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()).take(256) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        match k.as_str() {
            "subject" | "sub" | "user" => subject = Some(v),
            "group" | "groups" => {
                groups.extend(v.split(',').filter(|g| !g.is_empty()).map(str::to_owned))
            }
            "claim" => {
                if let Some((n, val)) = v.split_once('=').or_else(|| v.split_once(':')) {
                    claims.push((n.to_owned(), val.to_owned()));
                }
            }
            _ => {}
        }
    }
    identity_of(subject, groups, claims)
}

/// An identity from its parts (absent subject: anonymous).
pub fn identity_of(
    subject: Option<String>,
    groups: Vec<String>,
    claims: Vec<(String, String)>,
) -> Identity {
    let Some(subject) = subject.filter(|s| !s.is_empty()) else {
        return Identity::anonymous();
    };
    let mut id = Identity::user(subject, groups);
    for (name, value) in claims {
        let v = match id.claims.remove(&name) {
            None => Value::String(value),
            Some(Value::Array(mut a)) => {
                a.push(Value::String(value));
                Value::Array(a)
            }
            Some(prev) => Value::Array(vec![prev, Value::String(value)]),
        };
        id.claims.insert(name, v);
    }
    id
}

/// `GET /admin/access?subject=..&group=..&claim=name=value`.
pub async fn admin_handler(
    State(portal): State<Arc<Portal>>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let identity = identity_from_query(query.as_deref().unwrap_or(""));
    axum::Json(for_portal(&portal, &identity))
}

/// What the `access` CLI subcommand needs (clap-free).
#[derive(Debug, Clone)]
pub struct AccessQuery {
    /// Manifests file or directory.
    pub manifests: PathBuf,
    /// Portal name (may be omitted when the manifests hold one).
    pub portal: Option<String>,
    /// Directory of mounted Secrets.
    pub secrets_dir: PathBuf,
    /// Subject (absent: anonymous).
    pub subject: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra claims, `(name, value)`.
    pub claims: Vec<(String, String)>,
    /// How long to wait for upstreams to list their tools.
    pub settle: Duration,
}

/// Loads the manifests, connects to the portal's upstreams to learn their tools (as the portal
/// would), and reports what the identity could use. Makes no request as the user.
pub async fn run(q: &AccessQuery) -> crate::Result<AccessReport> {
    let (portal, shutdown) =
        Portal::start_from_manifests(&q.manifests, q.portal.as_deref(), &q.secrets_dir, q.settle)
            .await?;
    let identity = identity_of(q.subject.clone(), q.groups.clone(), q.claims.clone());
    let report = for_portal(&portal, &identity);
    shutdown.cancel();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_make_an_identity() {
        let id = identity_from_query(
            "subject=alice%40example.com&group=finance&group=eng,ops&claim=dept%3Dsales&claim=dept=hr",
        );
        assert_eq!(id.subject, "alice@example.com");
        assert_eq!(id.groups, ["finance", "eng", "ops"]);
        assert!(id.claim_has("dept", "sales") && id.claim_has("dept", "hr"));
        assert_eq!(
            identity_from_query("group=x").kind,
            crate::auth::IdentityKind::Anonymous
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a+b%zz"), "a b%zz");
    }
}
