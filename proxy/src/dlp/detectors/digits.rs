//! Detectors found from a run of digits and separators: payment cards (Luhn and issuer
//! checks), US SSNs (range rules), phone numbers (E.164 and NANP) and IPv4 addresses; an IBAN
//! whose country letters precede the digits is handed to [`super::iban`].

use super::iban::iban_at;
use super::{C_SEP, CLASS, Detector, DetectorSet, Hit, glued_left, glued_right};

#[derive(Clone, Copy, Default)]
struct Group {
    s: usize,
    e: usize,
}

impl Group {
    fn len(self) -> usize {
        self.e - self.s
    }
}

const MAX_GROUPS: usize = 48;

/// Processes the digit cluster that starts at digit `i`; returns where scanning resumes.
pub(super) fn digit_cluster(b: &[u8], i: usize, set: DetectorSet, out: &mut Vec<Hit>) -> usize {
    if set.contains(Detector::Iban)
        && i >= 2
        && b[i - 2].is_ascii_uppercase()
        && b[i - 1].is_ascii_uppercase()
        && !glued_left(b, i - 2)
        && let Some(end) = iban_at(b, i - 2)
    {
        out.push(Hit {
            start: i - 2,
            end,
            detector: Detector::Iban,
        });
        return end;
    }
    let mut groups = [Group::default(); MAX_GROUPS];
    let mut ng = 0;
    let mut j = i;
    let mut digits = 0;
    loop {
        let s = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        groups[ng] = Group { s, e: j };
        ng += 1;
        digits += j - s;
        if ng == MAX_GROUPS {
            break;
        }
        let mut k = j;
        while k < b.len() && CLASS[b[k] as usize] == C_SEP && k - j < 3 {
            k += 1;
        }
        if k > j && k < b.len() && b[k].is_ascii_digit() {
            j = k;
        } else {
            break;
        }
    }
    let g = &groups[..ng];
    if digits >= 4 {
        if set.contains(Detector::Ipv4) {
            ipv4_groups(b, g, out);
        }
        if set.contains(Detector::UsSsn) {
            ssn_groups(b, g, out);
        }
        if set.contains(Detector::Phone) {
            phone_groups(b, g, out);
        }
        if set.contains(Detector::CreditCard) && digits >= 13 {
            card_groups(b, g, out);
        }
    }
    j
}

/// The separator between two digit groups (at most 3 bytes), packed as
/// `len << 24 | b0 << 16 | b1 << 8 | b2` for cheap comparison.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Sep(u32);

impl Sep {
    const fn of(s: &[u8]) -> Sep {
        let mut v = (s.len() as u32) << 24;
        let mut i = 0;
        while i < s.len() && i < 3 {
            v |= (s[i] as u32) << (16 - 8 * i);
            i += 1;
        }
        Sep(v)
    }
    fn contains(self, c: u8) -> bool {
        let n = (self.0 >> 24) as usize;
        (0..n).any(|i| ((self.0 >> (16 - 8 * i)) & 0xff) as u8 == c)
    }
    fn is(self, options: &[&[u8]]) -> bool {
        options.iter().any(|o| self == Sep::of(o))
    }
}

impl PartialEq<&[u8]> for Sep {
    fn eq(&self, other: &&[u8]) -> bool {
        *self == Sep::of(other)
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Sep {
    fn eq(&self, other: &&[u8; N]) -> bool {
        *self == Sep::of(&other[..])
    }
}

fn sep(b: &[u8], g: &[Group], k: usize) -> Sep {
    Sep::of(&b[g[k].e..g[k + 1].s])
}

fn collect_digits(b: &[u8], g: &[Group], buf: &mut [u8; 32]) -> usize {
    let mut n = 0;
    for gr in g {
        for &c in &b[gr.s..gr.e] {
            if n < 32 {
                buf[n] = c - b'0';
            }
            n += 1;
        }
    }
    n
}

/// Payment cards: one run of 13–19 digits, or 4-4-4-4(-1..3), 4-6-5, 4-6-4 with one
/// consistent space or dash separator.
fn card_groups(b: &[u8], g: &[Group], out: &mut Vec<Hit>) {
    const SHAPES: &[&[usize]] = &[
        &[4, 4, 4, 4, 3],
        &[4, 4, 4, 4, 2],
        &[4, 4, 4, 4, 1],
        &[4, 4, 4, 4],
        &[4, 6, 5],
        &[4, 6, 4],
    ];
    let mut k = 0;
    'outer: while k < g.len() {
        if glued_left(b, g[k].s) {
            k += 1;
            continue;
        }
        if (13..=19).contains(&g[k].len())
            && !joined_left(b, g, k)
            && !joined_right(b, g, k + 1)
            && card_ok(b, &g[k..k + 1])
        {
            out.push(Hit {
                start: g[k].s,
                end: g[k].e,
                detector: Detector::CreditCard,
            });
            k += 1;
            continue;
        }
        for shape in SHAPES {
            let w = shape.len();
            if k + w > g.len() {
                continue;
            }
            let win = &g[k..k + w];
            if win.iter().zip(shape.iter()).any(|(gr, &l)| gr.len() != l) {
                continue;
            }
            let s0 = sep(b, g, k);
            if !s0.is(&[b" ", b"-"]) || (1..w - 1).any(|x| sep(b, g, k + x) != s0) {
                continue;
            }
            // The grouping starts earlier with the same separator (`DE83 3935 0590 0423 1239
            // 30`, an IBAN with a typo): the groups are the tail of a longer number, not a
            // card. (A group after the card may be its CVV: `4111 1111 1111 1111 123`.)
            if k > 0 && sep(b, g, k - 1) == s0 {
                continue;
            }
            if card_ok(b, win) {
                out.push(Hit {
                    start: win[0].s,
                    end: win[w - 1].e,
                    detector: Detector::CreditCard,
                });
                k += w;
                continue 'outer;
            }
        }
        k += 1;
    }
}

/// Whether group `k` is joined to what comes before it by something other than white space:
/// another group of the cluster (`194511006526-4247463409592`, inside a token), or a word
/// through `-`, `_` or `.` (`xoxb-…`).
fn joined_left(b: &[u8], g: &[Group], k: usize) -> bool {
    let s = g[k].s;
    (k > 0 && !b[g[k - 1].e..s].iter().all(u8::is_ascii_whitespace))
        || (s >= 2 && matches!(b[s - 1], b'-' | b'_' | b'.') && b[s - 2].is_ascii_alphanumeric())
}

/// Whether the group before `k` (`k` is one past it) is joined to what follows the same way.
fn joined_right(b: &[u8], g: &[Group], k: usize) -> bool {
    let e = g[k - 1].e;
    (k < g.len() && !b[e..g[k].s].iter().all(u8::is_ascii_whitespace))
        || (e + 1 < b.len()
            && matches!(b[e], b'-' | b'_' | b'.')
            && b[e + 1].is_ascii_alphanumeric())
}

fn card_ok(b: &[u8], g: &[Group]) -> bool {
    let mut d = [0u8; 32];
    let n = collect_digits(b, g, &mut d);
    n <= 19 && luhn(&d[..n]) && iin_ok(&d[..n])
}

/// Luhn checksum over digit values.
pub(crate) fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &x) in d.iter().rev().enumerate() {
        let mut v = x as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Issuer identification number and length plausibility.
pub(crate) fn iin_ok(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| d.iter().take(k).fold(0u32, |a, &x| a * 10 + x as u32);
    let (p1, p2, p3, p4, p6) = (p(1), p(2), p(3), p(4), p(6));
    if d.iter().all(|&x| x == d[0]) {
        return false;
    }
    match p1 {
        4 => matches!(n, 13 | 16 | 19),
        5 => {
            ((51..=55).contains(&p2) && n == 16)
                || (matches!(p4, 5018 | 5020 | 5038 | 5893) && (12..=19).contains(&n))
        }
        2 => {
            ((2221..=2720).contains(&p4) && n == 16)
                || ((2200..=2204).contains(&p4) && (16..=19).contains(&n))
        }
        3 => {
            (matches!(p2, 34 | 37) && n == 15)
                || (((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39))
                    && (14..=19).contains(&n))
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&n))
        }
        6 => {
            (p4 == 6011
                || (644..=649).contains(&p3)
                || p2 == 65
                || (622126..=622925).contains(&p6)
                || p2 == 62)
                && (16..=19).contains(&n)
                || (matches!(p4, 6304 | 6759 | 6761 | 6762 | 6763) && (12..=19).contains(&n))
        }
        _ => false,
    }
}

/// `AAA-GG-SSSS` (dash or space) with area not 000/666/900–999, group not 00, serial not 0000.
fn ssn_groups(b: &[u8], g: &[Group], out: &mut Vec<Hit>) {
    for k in 0..g.len().saturating_sub(2) {
        let w = &g[k..k + 3];
        if w[0].len() != 3 || w[1].len() != 2 || w[2].len() != 4 {
            continue;
        }
        let s0 = sep(b, g, k);
        if !s0.is(&[b"-", b" "]) || sep(b, g, k + 1) != s0 {
            continue;
        }
        if glued_left(b, w[0].s) || glued_right(b, w[2].e) {
            continue;
        }
        // Part of a longer run with the same separator (e.g. a dashed id): not an SSN.
        if (k > 0 && sep(b, g, k - 1) == s0) || (k + 3 < g.len() && sep(b, g, k + 2) == s0) {
            continue;
        }
        let num = |gr: Group| {
            b[gr.s..gr.e]
                .iter()
                .fold(0u32, |a, &c| a * 10 + (c - b'0') as u32)
        };
        if ssn_ok(num(w[0]), num(w[1]), num(w[2])) {
            out.push(Hit {
                start: w[0].s,
                end: w[2].e,
                detector: Detector::UsSsn,
            });
        }
    }
}

/// SSN range rules (area, group, serial).
pub(crate) fn ssn_ok(area: u32, group: u32, serial: u32) -> bool {
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && !(area == 78 && group == 5 && serial == 1120)
        && !(area == 219 && group == 9 && serial == 9999)
}

/// Phone numbers: `+` followed by 8–15 digits (country code not 0), or NANP
/// `(NXX) NXX-XXXX`, `NXX-NXX-XXXX`, `NXX.NXX.XXXX` with an optional leading `1`.
fn phone_groups(b: &[u8], g: &[Group], out: &mut Vec<Hit>) {
    let mut k = 0;
    while k < g.len() {
        // E.164.
        let gs = g[k].s;
        if gs >= 1 && b[gs - 1] == b'+' && !glued_left(b, gs - 1) && b[gs] != b'0' {
            let mut digits = g[k].len();
            let mut last = k;
            let mut too_long = false;
            while last + 1 < g.len() && phone_sep(sep(b, g, last)) {
                digits += g[last + 1].len();
                last += 1;
                if digits > 15 {
                    too_long = true;
                    break;
                }
            }
            if !too_long && (8..=15).contains(&digits) && !glued_right(b, g[last].e) {
                let mut d = [0u8; 32];
                let n = collect_digits(b, &g[k..=last], &mut d);
                let nanp_ok = d[0] != 1 || (n == 11 && nanp_ok(&d[1..11]));
                if nanp_ok {
                    out.push(Hit {
                        start: gs - 1,
                        end: g[last].e,
                        detector: Detector::Phone,
                    });
                    k = last + 1;
                    continue;
                }
            }
        }
        // NANP.
        if k + 3 <= g.len() && g[k].len() == 3 && g[k + 1].len() == 3 && g[k + 2].len() == 4 {
            let s1 = sep(b, g, k);
            let s2 = sep(b, g, k + 1);
            let paren = g[k].s >= 1
                && b[g[k].s - 1] == b'('
                && s1.is(&[b")", b") ", b")-"])
                && s2.is(&[b"-", b".", b" "]);
            let plain = s1 == s2 && s1.is(&[b"-", b"."]);
            let mut start = if paren { g[k].s - 1 } else { g[k].s };
            let mut ok = (paren || plain) && !glued_right(b, g[k + 2].e);
            // Not followed by more groups with the same separator.
            if ok && k + 3 < g.len() && sep(b, g, k + 2) == s2 {
                ok = false;
            }
            if ok && k > 0 {
                // Only a leading country code `1` may precede.
                let prev = g[k - 1];
                let ps = sep(b, g, k - 1);
                let ps_ok = if paren {
                    ps == b" (" || ps == b"(" || ps == b"-("
                } else {
                    ps == s1 || ps == b" "
                };
                if prev.len() == 1 && b[prev.s] == b'1' && ps_ok && !glued_left(b, prev.s) {
                    start = prev.s;
                    if prev.s >= 1 && b[prev.s - 1] == b'+' {
                        start -= 1;
                    }
                } else if ps.contains(b'-') || ps.contains(b'.') {
                    ok = false;
                }
            } else if ok && glued_left(b, start) {
                ok = false;
            }
            if ok {
                let mut d = [0u8; 32];
                let n = collect_digits(b, &g[k..k + 3], &mut d);
                if n == 10 && nanp_ok(&d[..10]) {
                    out.push(Hit {
                        start,
                        end: g[k + 2].e,
                        detector: Detector::Phone,
                    });
                    k += 3;
                    continue;
                }
            }
        }
        k += 1;
    }
}

fn phone_sep(s: Sep) -> bool {
    s.is(&[b" ", b"-", b".", b" (", b") ", b")", b"(", b")-"])
}

/// NANP area code and exchange both start with 2–9.
fn nanp_ok(d: &[u8]) -> bool {
    d.len() == 10 && d[0] >= 2 && d[3] >= 2 && !(d[1] == 1 && d[2] == 1)
}

/// Four dot-separated octets ≤ 255 without leading zeros, not part of a longer dotted run
/// and not a version string (`v1.2.3.4`, `version 1.2.3.4`).
fn ipv4_groups(b: &[u8], g: &[Group], out: &mut Vec<Hit>) {
    if g.len() < 4 {
        return;
    }
    for k in 0..=g.len() - 4 {
        let w = &g[k..k + 4];
        if (0..3).any(|x| sep(b, g, k + x) != b".") {
            continue;
        }
        if (k > 0 && sep(b, g, k - 1) == b".") || (k + 4 < g.len() && sep(b, g, k + 3) == b".") {
            continue;
        }
        let octet_ok = |gr: &Group| {
            let t = &b[gr.s..gr.e];
            !t.is_empty()
                && t.len() <= 3
                && (t.len() == 1 || t[0] != b'0')
                && t.iter().fold(0u32, |a, &c| a * 10 + (c - b'0') as u32) <= 255
        };
        if !w.iter().all(octet_ok) {
            continue;
        }
        let (s, e) = (w[0].s, w[3].e);
        if glued_left(b, s) || glued_right(b, e) || version_context(b, s) {
            continue;
        }
        out.push(Hit {
            start: s,
            end: e,
            detector: Detector::Ipv4,
        });
    }
}

/// Whether the bytes before `s` name a version (`v`, `ver`, `version`, `release`, `rev`).
fn version_context(b: &[u8], s: usize) -> bool {
    let mut i = s;
    let mut skipped = 0;
    while i > 0
        && matches!(b[i - 1], b' ' | b':' | b'=' | b'"' | b'\'' | b'-' | b'_')
        && skipped < 3
    {
        i -= 1;
        skipped += 1;
    }
    let end = i;
    while i > 0 && b[i - 1].is_ascii_alphabetic() && end - i < 8 {
        i -= 1;
    }
    let word = &b[i..end];
    ["v", "ver", "version", "release", "rev", "build"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
}
