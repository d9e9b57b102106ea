use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use super::*;

/// A device certificate made with openssl for this test (valid 2026-12-04 to 2126): subject
/// `CN=laptop-42,OU=Laptops,O=Example Corp`, issuer `CN=Example Device CA,O=Example Corp`,
/// SANs DNS `laptop-42.devices.example.com`, email `alice@example.com`, IP `10.1.2.3`.
const DEVICE_PEM: &str = include_str!("device.pem");

fn trust(proxies: &[&str], header: Option<&str>) -> ClientTrust {
    ClientTrust::new(Some(&crds::access::PortalAccess {
        trusted_proxies: proxies.iter().map(|s| s.to_string()).collect(),
        client_certificate_header: header.map(str::to_owned),
        ..Default::default()
    }))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn peer(s: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(s.parse().unwrap(), 40000))
}

fn escaped(pem: &str) -> String {
    // nginx's $ssl_client_escaped_cert: the PEM with newlines, spaces and the like escaped.
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn a_forwarded_for_header_from_an_untrusted_peer_is_ignored() {
    let t = trust(&["127.0.0.1/32"], None);
    let h = headers(&[("x-forwarded-for", "10.9.9.9")]);
    let ctx = t.context(peer("127.0.0.2"), &h, None);
    assert_eq!(ctx.source_ip, Some("127.0.0.2".parse().unwrap()));
    // No trusted proxies at all: the same.
    let ctx = ClientTrust::default().context(peer("127.0.0.2"), &h, None);
    assert_eq!(ctx.source_ip, Some("127.0.0.2".parse().unwrap()));
}

#[test]
fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
    let t = trust(&["127.0.0.1/32", "10.0.0.0/8"], None);
    // The client wrote "6.6.6.6" itself; 203.0.113.5 is what the first trusted proxy saw.
    let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.1.1.1")]);
    let ctx = t.context(peer("127.0.0.1"), &h, None);
    assert_eq!(ctx.source_ip, Some("203.0.113.5".parse().unwrap()));
    // Several headers are one list, in order.
    let h = headers(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "198.51.100.7:5555, 10.2.2.2"),
    ]);
    assert_eq!(
        t.context(peer("127.0.0.1"), &h, None).source_ip,
        Some("198.51.100.7".parse().unwrap())
    );
    // Every hop trusted: the leftmost one seen. No header: the peer.
    let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.1.1.1")]);
    assert_eq!(
        t.context(peer("127.0.0.1"), &h, None).source_ip,
        Some("10.3.3.3".parse().unwrap())
    );
    assert_eq!(
        t.context(peer("127.0.0.1"), &HeaderMap::new(), None)
            .source_ip,
        Some("127.0.0.1".parse().unwrap())
    );
    // Garbage stops the walk at the last trusted hop, never further left.
    let h = headers(&[("x-forwarded-for", "6.6.6.6, junk, 10.1.1.1")]);
    assert_eq!(
        t.context(peer("127.0.0.1"), &h, None).source_ip,
        Some("10.1.1.1".parse().unwrap())
    );
    // An IPv4-mapped IPv6 peer is the IPv4 address.
    let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
    assert_eq!(
        t.context(peer("::ffff:127.0.0.1"), &h, None).source_ip,
        Some("203.0.113.9".parse().unwrap())
    );
}

#[test]
fn a_forwarded_certificate_is_read_only_from_a_trusted_peer() {
    let t = trust(&["127.0.0.1/32"], Some("ssl-client-cert"));
    let h = headers(&[("ssl-client-cert", &escaped(DEVICE_PEM))]);
    let facts = t
        .context(peer("127.0.0.1"), &h, None)
        .client_certificate
        .expect("parsed");
    assert_eq!(facts.subject, "CN=laptop-42,OU=Laptops,O=Example Corp");
    assert_eq!(facts.issuer, "CN=Example Device CA,O=Example Corp");
    assert_eq!(
        facts.sans,
        [
            "laptop-42.devices.example.com",
            "alice@example.com",
            "10.1.2.3"
        ]
    );
    assert!(
        t.context(peer("127.0.0.2"), &h, None)
            .client_certificate
            .is_none(),
        "an untrusted peer cannot present a certificate in a header"
    );
    // Another header name: not read.
    let other = headers(&[("x-client-cert", &escaped(DEVICE_PEM))]);
    assert!(
        t.context(peer("127.0.0.1"), &other, None)
            .client_certificate
            .is_none()
    );
}

#[test]
fn envoy_xfcc_raw_pem_and_validity_are_understood() {
    let now = SystemTime::now() + Duration::from_secs(3600);
    let xfcc = format!(
        "By=spiffe://cluster/portal;Hash=abc;Cert=\"{}\";Subject=\"CN=laptop-42\",By=x;Cert=\"junk\"",
        escaped(DEVICE_PEM)
    );
    let f = certificate_facts(&xfcc, now).expect("xfcc");
    assert_eq!(f.subject, "CN=laptop-42,OU=Laptops,O=Example Corp");
    assert!(certificate_facts(DEVICE_PEM, now).is_some());
    assert!(certificate_facts("%2D%2D%2D%2D%2Dgarbage", now).is_none());
    assert!(certificate_facts("By=x;Hash=y", now).is_none());
    // Before notBefore or after notAfter: no certificate.
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    assert!(certificate_facts(DEVICE_PEM, past).is_none());
    let future = SystemTime::UNIX_EPOCH + Duration::from_secs(5_000_000_000);
    assert!(certificate_facts(DEVICE_PEM, future).is_none());
}
