//! Who is calling, and the signed identity an upstream receives for them.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::context::RequestContext;

/// How an [`Identity`] came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityKind {
    /// A validated access token (or a subject named on the admin endpoint or CLI).
    Authenticated,
    /// An anonymous user of a public portal.
    Anonymous,
    /// No identity at all on a portal that needs one: the policy denies everything.
    Nobody,
}

/// Who is calling: what the policy engine reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// The subject (the configured subject claim, `sub` by default). Empty when anonymous.
    pub subject: String,
    /// Groups from the configured groups claim (`groups` by default).
    pub groups: Vec<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// How the identity was established.
    pub kind: IdentityKind,
    /// Where the request comes from (address, device certificate): what access conditions
    /// read besides the claims. Part of the identity so that every path that asks the policy
    /// (list, call, Code Mode search and execute) asks with the same facts.
    #[serde(skip_serializing_if = "RequestContext::is_empty")]
    pub context: RequestContext,
}

impl Identity {
    /// An anonymous user of a public portal.
    pub fn anonymous() -> Identity {
        Identity {
            subject: String::new(),
            groups: Vec::new(),
            claims: Map::new(),
            kind: IdentityKind::Anonymous,
            context: RequestContext::default(),
        }
    }

    /// No identity: sees nothing.
    pub fn nobody() -> Identity {
        Identity {
            kind: IdentityKind::Nobody,
            ..Identity::anonymous()
        }
    }

    /// An authenticated subject with groups (for the admin endpoint, the CLI and tests).
    pub fn user(
        subject: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Identity {
        Identity {
            subject: subject.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            claims: Map::new(),
            kind: IdentityKind::Authenticated,
            context: RequestContext::default(),
        }
    }

    /// An identity named on the admin endpoint or the CLI (absent or empty subject:
    /// anonymous). A claim named twice becomes an array.
    pub fn from_parts(
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

    /// The same identity with the request's context.
    pub fn with_context(mut self, context: RequestContext) -> Identity {
        self.context = context;
        self
    }

    /// Adds a claim.
    pub fn with_claim(mut self, name: impl Into<String>, value: Value) -> Identity {
        self.claims.insert(name.into(), value);
        self
    }

    /// Whether claim `name` holds `value`: string equality, membership of an array, or (for
    /// `scope`) membership of the space-separated list.
    pub fn claim_has(&self, name: &str, value: &str) -> bool {
        match self.claims.get(name) {
            Some(Value::String(s)) => {
                s == value || (name == "scope" && s.split(' ').any(|x| x == value))
            }
            Some(Value::Array(a)) => a.iter().any(|v| scalar_eq(v, value)),
            Some(v) => scalar_eq(v, value),
            None => false,
        }
    }

    /// Scopes granted by the token (`scope`, space-separated, or `scp`, string or array).
    pub fn scopes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for name in ["scope", "scp"] {
            match self.claims.get(name) {
                Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
                Some(Value::Array(a)) => out.extend(a.iter().filter_map(|v| v.as_str())),
                _ => {}
            }
        }
        out
    }
}

fn scalar_eq(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        _ => false,
    }
}

/// Default header carrying the token.
pub const DEFAULT_HEADER: &str = "X-Portcullis-Identity";
/// Default token lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// The `typ` of the tokens (RFC 8725 §3.11: explicit typing, so the token cannot be confused
/// with an access token).
pub const TOKEN_TYPE: &str = "portcullis-identity+jwt";
/// Claims the portal sets itself; a server cannot select them from the user's token.
pub const RESERVED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "groups"];

/// A signed identity token on its way to one upstream, in the rmcp request's extensions.
#[derive(Clone)]
pub struct SignedIdentity(pub String);

impl std::fmt::Debug for SignedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedIdentity(..)")
    }
}

/// `spec.identity` of one server, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Header name.
    pub header: String,
    /// Token lifetime.
    pub ttl: Duration,
    /// Claims copied from the user's token.
    pub claims: Vec<String>,
}

/// Headers a server's identity header may not replace: transport, session and credentials.
pub fn header_is_reserved(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "host"
            | "accept"
            | "connection"
            | "transfer-encoding"
            | "last-event-id"
    ) || n.starts_with("mcp-")
        || n.starts_with("content-")
}
