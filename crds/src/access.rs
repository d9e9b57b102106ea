//! Access conditions, in the shape zero-trust gateways use: who (identity claims), how they
//! signed in (`amr`/`acr`), from where (source address) and from what (a device certificate or
//! a device claim). An McpPolicy's `include`/`require`/`exclude` decide whom the policy covers;
//! an McpPortal's `spec.access` gates the whole portal with the same conditions.
//!
//! Semantics (evaluated by the proxy's `policy` module; one function for every request path):
//! a caller meets a set of conditions when `include` is empty or one of its selectors matches,
//! every selector of `require` matches, and no selector of `exclude` matches.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL shared by every list of selectors: a selector both required and excluded matches
/// nobody, so the conditions can never be met. CEL compares the selectors by their string fields (user, group, email domain): it has no
/// equality over whole objects; `crds::validate` compares every kind.
pub const CONTRADICTION_RULE: &str = "!has(self.require) || !has(self.exclude) || !self.require.exists(r, self.exclude.exists(e, (has(r.user) && has(e.user) && r.user == e.user) || (has(r.group) && has(e.group) && r.group == e.group) || (has(r.emailDomain) && has(e.emailDomain) && r.emailDomain == e.emailDomain)))";

/// The kinds of selector, by their field name (what decisions and audit events name).
pub const SELECTOR_KINDS: &[&str] = &[
    "user",
    "group",
    "claim",
    "emailDomain",
    "authMethod",
    "sourceCidrs",
    "clientCertificate",
    "deviceClaim",
];

/// One condition on the caller: exactly one field is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.user) ? 1 : 0) + (has(self.group) ? 1 : 0) + (has(self.claim) ? 1 : 0) + (has(self.emailDomain) ? 1 : 0) + (has(self.authMethod) ? 1 : 0) + (has(self.sourceCidrs) ? 1 : 0) + (has(self.clientCertificate) ? 1 : 0) + (has(self.deviceClaim) ? 1 : 0) == 1",
    "message": "set exactly one of user, group, claim, emailDomain, authMethod, sourceCidrs, clientCertificate and deviceClaim"
}]))]
pub struct Selector {
    /// The subject (`sub` claim, or the portal's `auth.subjectClaim`) of one user or client.
    /// 1-256 characters. Never matches an anonymous caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub user: Option<String>,
    /// A group from the groups claim (`groups`, or the portal's `auth.groupsClaim`). 1-256
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub group: Option<String>,
    /// A token claim that must hold a value: string equality, membership of an array claim,
    /// or of the space-separated `scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimMatch>,
    /// The domain of the token's `email` claim, for example `example.com` (case-insensitive;
    /// subdomains do not match). A token whose `email_verified` claim is `false` never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
        )
    )]
    pub email_domain: Option<String>,
    /// How the user signed in: values of the token's `amr` claim (RFC 8176, for example `mfa`,
    /// `hwk`, `otp`) and/or its `acr` (authentication context class). A portal-level denial
    /// by this selector answers 401 `insufficient_user_authentication` with an `acr_values`
    /// hint (RFC 9470 step-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<AuthMethod>,
    /// The client's IP address is in one of these CIDRs (`10.0.0.0/8`, `2001:db8::/32`; a
    /// bare address is a /32 or /128). The address is the TCP peer's, or, when the peer is one
    /// of the portal's `spec.access.trustedProxies`, the rightmost untrusted hop of
    /// `X-Forwarded-For`. 1-64 entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 2, max = 64)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(c, isCIDR(c) || isIP(c))",
        "message": "each entry must be an IP address or a CIDR such as 10.0.0.0/8"
    }]))]
    pub source_cidrs: Option<Vec<String>>,
    /// A client (device) certificate: forwarded by a trusted ingress in the portal's
    /// `spec.access.clientCertificateHeader` after the ingress verified it against its CA.
    /// Matched by issuer and subject distinguished names and subject alternative names; a
    /// certificate outside its validity period never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<CertificateMatch>,
    /// A claim the identity provider sets for managed or compliant devices (same matching as
    /// `claim`). Examples: Okta (a custom claim from the device-assurance policy, say
    /// `device_trusted: "true"`), Microsoft Entra ID (the `deviceid` optional claim is present
    /// only for registered devices: match a claim mapped from it), Keycloak (a protocol mapper
    /// setting `device_managed`). Documented separately from `claim` so that audit events and
    /// decisions name the device condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_claim: Option<ClaimMatch>,
}

impl Selector {
    /// The name of the field that is set (the selector's kind), or `"empty"`.
    pub fn kind(&self) -> &'static str {
        let set = [
            self.user.is_some(),
            self.group.is_some(),
            self.claim.is_some(),
            self.email_domain.is_some(),
            self.auth_method.is_some(),
            self.source_cidrs.is_some(),
            self.client_certificate.is_some(),
            self.device_claim.is_some(),
        ];
        match set.iter().filter(|b| **b).count() {
            0 => "empty",
            1 => SELECTOR_KINDS[set.iter().position(|b| *b).unwrap_or_default()],
            _ => "several",
        }
    }

    /// How many fields are set (exactly one is valid).
    pub fn fields_set(&self) -> usize {
        [
            self.user.is_some(),
            self.group.is_some(),
            self.claim.is_some(),
            self.email_domain.is_some(),
            self.auth_method.is_some(),
            self.source_cidrs.is_some(),
            self.client_certificate.is_some(),
            self.device_claim.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// The older name of [`Selector`] (`subjects` entries).
pub type Subject = Selector;

/// A claim name and the value it must hold.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMatch {
    /// Claim name, for example `department`. 1-256 characters.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Required value (compared as a string; numbers and booleans by their JSON text).
    /// Up to 256 characters.
    #[schemars(length(max = 256))]
    pub value: String,
}

/// How the user authenticated, from the access token's `amr` and `acr` claims.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.amr) && size(self.amr) > 0) || (has(self.acr) && size(self.acr) > 0) || has(self.minAcr)",
    "message": "set amr, acr or minAcr: an empty authMethod would match every caller"
}, {
    "rule": "!(has(self.acr) && size(self.acr) > 0 && has(self.minAcr))",
    "message": "set acr (a list of accepted values) or minAcr (a numeric level), not both"
}]))]
pub struct AuthMethod {
    /// Authentication method references (RFC 8176) the token's `amr` must contain, every one
    /// of them: for example `[mfa]`, or `[hwk]` for a hardware key. Up to 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 64)))]
    pub amr: Vec<String>,
    /// Accepted values of the token's `acr`, any of them (list the level you need and every
    /// stronger one, strongest last). Sent as the `acr_values` step-up hint. Up to 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 256)))]
    pub acr: Vec<String>,
    /// The lowest accepted numeric `acr` level (for providers whose `acr` is a level such as
    /// Keycloak's `0`, `1`, `2`): the token's `acr`, read as an integer, must be at least this.
    /// A non-numeric `acr` never matches. 0-1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_acr: Option<u32>,
}

/// Patterns a client certificate must match, all of those set. Patterns compare whole
/// strings; `*` matches any run of characters (also none), everything else is literal and
/// case-sensitive. Distinguished names are in RFC 4514 form, most specific first, as OpenSSL
/// prints them with `-nameopt RFC2253`: `CN=laptop-42,O=Example Corp`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.issuer) || has(self.subject) || has(self.san)",
    "message": "set issuer, subject or san: an empty clientCertificate would match any certificate"
}]))]
pub struct CertificateMatch {
    /// The issuing CA's distinguished name, for example `CN=Example Device CA,O=Example Corp`.
    /// 1-1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// The certificate's subject distinguished name, for example `CN=*,OU=Laptops,O=Example
    /// Corp`. 1-1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub subject: Option<String>,
    /// A subject alternative name (DNS name, email address, URI or IP address); some SAN must
    /// match, for example `*.devices.example.com`. 1-1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub san: Option<String>,
}

/// `McpPortal.spec.access`: conditions every request to the portal must meet, and where the
/// client's address and device certificate are read from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": CONTRADICTION_RULE,
    "message": "a selector both in require and in exclude matches nobody",
    "fieldPath": ".exclude"
}, {
    "rule": "!has(self.clientCertificateHeader) || (has(self.trustedProxies) && size(self.trustedProxies) > 0)",
    "message": "clientCertificateHeader is read only from trustedProxies: list the ingress addresses",
    "fieldPath": ".trustedProxies"
}]))]
pub struct PortalAccess {
    /// The caller must match one of these (empty or absent: anyone). 1-64 selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64))]
    pub include: Vec<Selector>,
    /// The caller must match every one of these. 1-64 selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64))]
    pub require: Vec<Selector>,
    /// The caller must match none of these. 1-64 selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64))]
    pub exclude: Vec<Selector>,
    /// Addresses (CIDRs) of the ingresses and load balancers in front of the portal. Only a
    /// request whose TCP peer is in one of them has its `X-Forwarded-For` read (the client is
    /// the rightmost address that is not itself a trusted proxy) and its forwarded client
    /// certificate accepted; from any other peer both headers are ignored. 1-64 entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 2, max = 64)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(c, isCIDR(c) || isIP(c))",
        "message": "each entry must be an IP address or a CIDR such as 10.0.0.0/8"
    }]))]
    pub trusted_proxies: Vec<String>,
    /// The request header in which a trusted ingress forwards the client certificate it
    /// verified: a URL-encoded PEM certificate (nginx `$ssl_client_escaped_cert`, ingress-nginx
    /// `ssl-client-cert`) or an Envoy `x-forwarded-client-cert` element (its `Cert="..."`
    /// field). The format is recognised from the value. Absent: no client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub client_certificate_header: Option<String>,
}
