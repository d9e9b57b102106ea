//! Addresses: email (around an `@`) and IPv6 (around a `:`).

use std::net::Ipv6Addr;

use super::{Detector, Hit, glued_left, glued_right};

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// Email address around the `@` at `a`.
pub(super) fn email_at(b: &[u8], a: usize, out: &mut Vec<Hit>) {
    let mut l = a;
    while l > 0 && local_char(b[l - 1]) && a - l <= 64 {
        l -= 1;
    }
    while l < a && b[l] == b'.' {
        l += 1;
    }
    if l == a || a - l > 64 || b[a - 1] == b'.' {
        return;
    }
    let mut r = a + 1;
    while r < b.len() && domain_char(b[r]) && r - a <= 255 {
        r += 1;
    }
    while r > a + 1 && matches!(b[r - 1], b'.' | b'-') {
        r -= 1;
    }
    let domain = &b[a + 1..r];
    let mut labels = 0;
    for label in domain.split(|&c| c == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
        {
            return;
        }
        labels += 1;
    }
    let tld = domain.rsplit(|&c| c == b'.').next().unwrap_or_default();
    if labels < 2 || tld.len() < 2 || tld.len() > 24 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return;
    }
    const FILE_EXT: &[&str] = &[
        "png", "jpg", "jpeg", "gif", "svg", "webp", "css", "js", "ico",
    ];
    if FILE_EXT
        .iter()
        .any(|e| tld.eq_ignore_ascii_case(e.as_bytes()))
    {
        return;
    }
    out.push(Hit {
        start: l,
        end: r,
        detector: Detector::Email,
    });
}

fn hexish(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// IPv6 address around the `:` at `c`; returns the end of the examined span.
pub(super) fn ipv6_at(s: &str, c: usize, out: &mut Vec<Hit>) -> Option<usize> {
    let b = s.as_bytes();
    let near = |i: usize| i < b.len() && (b[i].is_ascii_hexdigit() || b[i] == b':');
    if !(near(c + 1) || (c > 0 && near(c - 1))) {
        return None;
    }
    let mut l = c;
    while l > 0 && hexish(b[l - 1]) && c - l < 45 {
        l -= 1;
    }
    let mut r = c + 1;
    while r < b.len() && hexish(b[r]) && r - l < 45 {
        r += 1;
    }
    while r > c + 1 && b[r - 1] == b'.' {
        r -= 1;
    }
    while l < c && b[l] == b'.' {
        l += 1;
    }
    let span = &s[l..r];
    let colons = span.bytes().filter(|&x| x == b':').count();
    if glued_left(b, l)
        || glued_right(b, r)
        || colons < 2
        || !span.bytes().any(|x| x.is_ascii_digit())
    {
        return Some(r.max(c + 1));
    }
    if !span.contains("::") && colons < 7 {
        return Some(r.max(c + 1));
    }
    if span.parse::<Ipv6Addr>().is_ok() {
        out.push(Hit {
            start: l,
            end: r,
            detector: Detector::Ipv6,
        });
    }
    Some(r.max(c + 1))
}
