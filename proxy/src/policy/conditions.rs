//! Access conditions (`include` any of, `require` all of, `exclude` none of) over an
//! [`Identity`] and its [`crate::model::RequestContext`]: one pure function,
//! [`Conditions::evaluate`], for McpPolicy coverage and for the portal's `spec.access` gate.
//!
//! Selector semantics (the CRD documents them; `crds::access`):
//! - `user`, `group`, `claim`, `emailDomain`, `authMethod`, `deviceClaim` read the token and
//!   never match an anonymous caller;
//! - `sourceCidrs` reads the client address (IPv4-mapped IPv6 addresses count as IPv4), and
//!   matches nothing when the address is unknown;
//! - `clientCertificate` reads the forwarded certificate's facts, and matches nothing without
//!   one;
//! - a selector validation refuses (none or several fields set, a bad CIDR) matches nothing.

use crds::access::Selector;
use crds::glob::Glob;
use serde::Serialize;
use serde_json::Value;

use crate::model::{Identity, IdentityKind};

#[derive(Debug, Clone)]
enum Sel {
    User(String),
    Group(String),
    Claim(String, String),
    EmailDomain(String),
    AuthMethod {
        amr: Vec<String>,
        acr: Vec<String>,
        min_acr: Option<u32>,
    },
    Cidrs(Vec<ipnet::IpNet>),
    Certificate {
        issuer: Option<Glob>,
        subject: Option<Glob>,
        san: Option<Glob>,
    },
    DeviceClaim(String, String),
    /// Refused by validation: matches nothing.
    Invalid,
}

impl Sel {
    fn compile(s: &Selector) -> Sel {
        if s.fields_set() != 1 {
            return Sel::Invalid;
        }
        if let Some(u) = &s.user {
            return Sel::User(u.clone());
        }
        if let Some(g) = &s.group {
            return Sel::Group(g.clone());
        }
        if let Some(c) = &s.claim {
            return Sel::Claim(c.name.clone(), c.value.clone());
        }
        if let Some(d) = &s.email_domain {
            return Sel::EmailDomain(d.to_ascii_lowercase());
        }
        if let Some(m) = &s.auth_method {
            if m.amr.is_empty() && m.acr.is_empty() && m.min_acr.is_none() {
                return Sel::Invalid;
            }
            return Sel::AuthMethod {
                amr: m.amr.clone(),
                acr: m.acr.clone(),
                min_acr: m.min_acr,
            };
        }
        if let Some(cidrs) = &s.source_cidrs {
            let nets: Option<Vec<_>> = cidrs
                .iter()
                .map(|c| crds::validate::parse_cidr(c))
                .collect();
            return match nets {
                Some(n) if !n.is_empty() => Sel::Cidrs(n),
                _ => Sel::Invalid,
            };
        }
        if let Some(c) = &s.client_certificate {
            if c.issuer.is_none() && c.subject.is_none() && c.san.is_none() {
                return Sel::Invalid;
            }
            let g = |p: &Option<String>| p.as_deref().map(Glob::new);
            return Sel::Certificate {
                issuer: g(&c.issuer),
                subject: g(&c.subject),
                san: g(&c.san),
            };
        }
        if let Some(c) = &s.device_claim {
            return Sel::DeviceClaim(c.name.clone(), c.value.clone());
        }
        Sel::Invalid
    }

    fn matches(&self, id: &Identity) -> bool {
        let authenticated = id.kind == IdentityKind::Authenticated;
        match self {
            Sel::User(u) => authenticated && *u == id.subject,
            Sel::Group(g) => authenticated && id.groups.iter().any(|x| x == g),
            Sel::Claim(n, v) | Sel::DeviceClaim(n, v) => authenticated && id.claim_has(n, v),
            Sel::EmailDomain(d) => authenticated && email_domain_is(id, d),
            Sel::AuthMethod { amr, acr, min_acr } => {
                authenticated && auth_method_meets(id, amr, acr, *min_acr)
            }
            Sel::Cidrs(nets) => id
                .context
                .source_ip
                .map(|ip| ip.to_canonical())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Sel::Certificate {
                issuer,
                subject,
                san,
            } => id.context.client_certificate.as_ref().is_some_and(|c| {
                issuer.as_ref().is_none_or(|g| g.matches(&c.issuer))
                    && subject.as_ref().is_none_or(|g| g.matches(&c.subject))
                    && san
                        .as_ref()
                        .is_none_or(|g| c.sans.iter().any(|s| g.matches(s)))
            }),
            Sel::Invalid => false,
        }
    }

    /// What a client can do about this selector failing: sign in again with stronger
    /// authentication (RFC 9470 step-up), for `authMethod` only.
    fn step_up(&self) -> Option<StepUp> {
        match self {
            Sel::AuthMethod { amr, acr, min_acr } => Some(StepUp {
                acr_values: if acr.is_empty() {
                    min_acr.map(|m| vec![m.to_string()]).unwrap_or_default()
                } else {
                    acr.clone()
                },
                amr: amr.clone(),
            }),
            _ => None,
        }
    }
}

fn email_domain_is(id: &Identity, domain: &str) -> bool {
    if id.claims.get("email_verified") == Some(&Value::Bool(false)) {
        return false;
    }
    id.claims
        .get("email")
        .and_then(Value::as_str)
        .and_then(|e| e.rsplit_once('@'))
        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
}

fn auth_method_meets(id: &Identity, amr: &[String], acr: &[String], min_acr: Option<u32>) -> bool {
    let has_amr = |want: &String| match id.claims.get("amr") {
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
        Some(Value::String(s)) => s == want,
        _ => false,
    };
    let token_acr = id.claims.get("acr").and_then(Value::as_str);
    amr.iter().all(has_amr)
        && (acr.is_empty() || token_acr.is_some_and(|t| acr.iter().any(|a| a == t)))
        && min_acr.is_none_or(|m| {
            token_acr
                .and_then(|t| t.trim().parse::<u32>().ok())
                .is_some_and(|t| t >= m)
        })
}

/// A step-up hint: what a stronger sign-in would need (RFC 9470 `acr_values`, and the `amr`
/// values the selector asks for, named in the error description).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepUp {
    /// Acceptable `acr` values (may be empty when only `amr` is asked for).
    pub acr_values: Vec<String>,
    /// `amr` values required.
    pub amr: Vec<String>,
}

/// Why conditions are not met: the selector that decided, named by its place
/// (`require[0].authMethod`, `exclude[1].group`, or `include` when none of its selectors
/// matched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unmet {
    /// The selector's place and kind.
    pub selector: String,
    /// The step-up a client could take, when the selector is an `authMethod`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUp>,
    /// Whether the caller is in the audience (`include` met) and fails `require` or
    /// `exclude`: then a decision names this policy as the one that would have granted.
    #[serde(skip)]
    pub in_audience: bool,
}

/// The outcome of [`Conditions::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Met; the `include` selector that matched (`None` when `include` is empty).
    Met(Option<String>),
    /// Not met, and which selector decided.
    NotMet(Unmet),
}

impl Outcome {
    /// Whether the conditions are met.
    pub fn is_met(&self) -> bool {
        matches!(self, Outcome::Met(_))
    }
}

/// Compiled `include` / `require` / `exclude`.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// `include` (or its older name `subjects`, which names the list in decisions).
    include: Vec<(Sel, &'static str)>,
    include_name: &'static str,
    require: Vec<(Sel, &'static str)>,
    exclude: Vec<(Sel, &'static str)>,
}

fn compile_list(list: &[Selector]) -> Vec<(Sel, &'static str)> {
    list.iter().map(|s| (Sel::compile(s), s.kind())).collect()
}

impl Conditions {
    /// Compiles conditions. `subjects` is the older name of `include`: both lists count as
    /// `include` (validation refuses setting both).
    pub fn compile(
        subjects: &[Selector],
        include: &[Selector],
        require: &[Selector],
        exclude: &[Selector],
    ) -> Conditions {
        let mut inc = compile_list(include);
        inc.extend(compile_list(subjects));
        Conditions {
            include_name: if include.is_empty() && !subjects.is_empty() {
                "subjects"
            } else {
                "include"
            },
            include: inc,
            require: compile_list(require),
            exclude: compile_list(exclude),
        }
    }

    /// The conditions of an McpPolicy.
    pub fn of_policy(spec: &crds::McpPolicySpec) -> Conditions {
        Conditions::compile(&spec.subjects, &spec.include, &spec.require, &spec.exclude)
    }

    /// The conditions of a portal's `spec.access` (none: everyone).
    pub fn of_portal(access: Option<&crds::access::PortalAccess>) -> Conditions {
        access
            .map(|a| Conditions::compile(&[], &a.include, &a.require, &a.exclude))
            .unwrap_or_default()
    }

    /// Whether there are no conditions at all (everyone meets them).
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.require.is_empty() && self.exclude.is_empty()
    }

    /// THE evaluation: `include` empty or one of it matches, every `require` matches, no
    /// `exclude` matches. Names the selector that decided.
    pub fn evaluate(&self, id: &Identity) -> Outcome {
        let mut by = None;
        if !self.include.is_empty() {
            match self.include.iter().position(|(s, _)| s.matches(id)) {
                Some(i) => by = Some(format!("{}[{i}].{}", self.include_name, self.include[i].1)),
                None => {
                    return Outcome::NotMet(Unmet {
                        selector: format!("{} (no selector matched)", self.include_name),
                        step_up: None,
                        in_audience: false,
                    });
                }
            }
        }
        if let Some(i) = self.require.iter().position(|(s, _)| !s.matches(id)) {
            return Outcome::NotMet(Unmet {
                selector: format!("require[{i}].{}", self.require[i].1),
                step_up: self.require[i].0.step_up(),
                in_audience: true,
            });
        }
        if let Some(i) = self.exclude.iter().position(|(s, _)| s.matches(id)) {
            return Outcome::NotMet(Unmet {
                selector: format!("exclude[{i}].{}", self.exclude[i].1),
                step_up: None,
                in_audience: true,
            });
        }
        Outcome::Met(by)
    }
}
