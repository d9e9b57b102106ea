//! Where a request comes from, beyond the token: the client's address and the facts of its
//! device certificate. Filled in at the HTTP edge (`http::auth`), read by the policy's access
//! conditions. Plain values: no parsing here.

use std::net::IpAddr;

use serde::Serialize;

/// The network and device facts of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// The client's address: the TCP peer, or the rightmost untrusted `X-Forwarded-For` hop
    /// when the peer is a trusted proxy. `None` where there is no connection (tests, the CLI
    /// without `--source-ip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
    /// The client certificate a trusted proxy forwarded, if any (and only if it parsed and is
    /// within its validity period).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<CertificateFacts>,
}

impl RequestContext {
    /// Whether nothing is known about the request.
    pub fn is_empty(&self) -> bool {
        self.source_ip.is_none() && self.client_certificate.is_none()
    }
}

/// What the access conditions read from a client certificate. Never the certificate itself
/// (audit events and reports carry these names, not the PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateFacts {
    /// The issuer's distinguished name, RFC 4514 (`CN=Device CA,O=Example`).
    pub issuer: String,
    /// The subject's distinguished name, RFC 4514.
    pub subject: String,
    /// Subject alternative names: DNS names, email addresses, URIs and IP addresses.
    pub sans: Vec<String>,
}
