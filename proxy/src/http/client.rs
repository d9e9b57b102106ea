//! Who is on the other end of the connection: the client's address and its device
//! certificate, for the access conditions (`model::RequestContext`).
//!
//! - The address is the TCP peer's. Only when the peer is one of the portal's
//!   `spec.access.trustedProxies` is `X-Forwarded-For` read, from the right: the client is the
//!   rightmost address that is not itself a trusted proxy (every hop to its right was added by
//!   a proxy we trust; anything to its left the client may have written). A header from any
//!   other peer is ignored, so a client cannot claim an address.
//! - The forwarded client certificate (`spec.access.clientCertificateHeader`) is read only from
//!   a trusted peer: a URL-encoded PEM certificate (nginx `$ssl_client_escaped_cert`) or an
//!   Envoy `x-forwarded-client-cert` element (its `Cert="<URL-encoded PEM>"` field). It is
//!   parsed with `x509-cert`; only its names reach the policy, never the certificate itself. A
//!   certificate that does not parse or is outside its validity period counts as none.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use http::HeaderMap;
use ipnet::IpNet;
use x509_cert::Certificate;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, DecodePem};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::model::{CertificateFacts, RequestContext};

/// At most this many `X-Forwarded-For` entries are read (a longer chain is cut from the left).
const MAX_HOPS: usize = 32;
/// Largest forwarded certificate header read, in bytes.
const MAX_CERT_HEADER: usize = 16 * 1024;

/// The portal's trust settings (`spec.access`), compiled.
#[derive(Debug, Clone, Default)]
pub struct ClientTrust {
    proxies: Vec<IpNet>,
    cert_header: Option<http::HeaderName>,
}

impl ClientTrust {
    /// From `spec.access` (entries validation refuses are left out: they trust nothing).
    pub fn new(access: Option<&crds::access::PortalAccess>) -> ClientTrust {
        let Some(a) = access else {
            return ClientTrust::default();
        };
        ClientTrust {
            proxies: a
                .trusted_proxies
                .iter()
                .filter_map(|c| crds::validate::parse_cidr(c))
                .collect(),
            cert_header: a
                .client_certificate_header
                .as_deref()
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.proxies.iter().any(|n| n.contains(&ip))
    }

    /// The request context of a request from `peer` with `headers`. `presented`: the client
    /// certificate of the request's own TLS connection (the portal's `spec.tls` listener),
    /// which is the client's whatever the peer: a forwarded one is then not read.
    pub fn context(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
        presented: Option<&CertificateFacts>,
    ) -> RequestContext {
        let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
            return RequestContext::default();
        };
        if !self.trusts(peer) {
            return RequestContext {
                source_ip: Some(peer),
                client_certificate: presented.cloned(),
            };
        }
        RequestContext {
            source_ip: Some(self.forwarded_client(peer, headers)),
            client_certificate: presented.cloned().or_else(|| {
                self.cert_header
                    .as_ref()
                    .and_then(|h| headers.get(h))
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| v.len() <= MAX_CERT_HEADER)
                    .and_then(|v| certificate_facts(v, SystemTime::now()))
            }),
        }
    }

    /// The rightmost untrusted hop of `X-Forwarded-For` (all headers, in order), or `peer`
    /// when every hop is trusted or the header is absent. An entry that is not an address
    /// stops the walk there: what is left of it cannot be trusted, so the client is the last
    /// trusted hop seen.
    fn forwarded_client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip().to_canonical())
}

/// The facts of a forwarded certificate: URL-encoded PEM, or an Envoy XFCC element whose
/// `Cert` field holds one. `None` if it does not parse or is not valid at `now`.
pub fn certificate_facts(value: &str, now: SystemTime) -> Option<CertificateFacts> {
    let value = value.trim();
    let encoded = if value.starts_with('-') || value.starts_with('%') {
        // PEM, URL-encoded (`-----BEGIN%20CERTIFICATE-----%0A...`) or not.
        value
    } else {
        // Envoy XFCC: `By=...;Hash=...;Cert="...";Subject="..."`, elements separated by
        // commas, the client's first.
        let first = value.split(',').next()?;
        first
            .split(';')
            .find_map(|kv| kv.trim().strip_prefix("Cert="))
            .map(|c| c.trim_matches('"'))?
    };
    let pem = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?
        .replace('\t', "\n");
    let cert = Certificate::from_pem(pem.trim().as_bytes()).ok()?;
    facts(&cert, now)
}

/// The facts of a DER certificate (one presented on the portal's own TLS listener). `None` if
/// it does not parse or is not valid at `now`.
pub fn certificate_facts_der(der: &[u8], now: SystemTime) -> Option<CertificateFacts> {
    facts(&Certificate::from_der(der).ok()?, now)
}

fn facts(cert: &Certificate, now: SystemTime) -> Option<CertificateFacts> {
    let tbs = &cert.tbs_certificate;
    let validity = &tbs.validity;
    if now < validity.not_before.to_system_time() || now > validity.not_after.to_system_time() {
        return None;
    }
    let mut sans = Vec::new();
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id != SubjectAltName::OID {
            continue;
        }
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for name in san.0 {
            match name {
                GeneralName::DnsName(d) => sans.push(d.to_string()),
                GeneralName::Rfc822Name(e) => sans.push(e.to_string()),
                GeneralName::UniformResourceIdentifier(u) => sans.push(u.to_string()),
                GeneralName::IpAddress(ip) => {
                    let b = ip.as_bytes();
                    if let Ok(a) = <[u8; 4]>::try_from(b) {
                        sans.push(IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(b) {
                        sans.push(IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(CertificateFacts {
        issuer: tbs.issuer.to_string(),
        subject: tbs.subject.to_string(),
        sans,
    })
}

#[cfg(test)]
mod tests;
