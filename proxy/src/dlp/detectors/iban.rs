//! IBANs: per-country lengths and the ISO 7064 mod-97-10 check.

use super::glued_right;

const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// IBAN starting at `p` (two uppercase letters): compact or grouped by four with single
/// spaces; returns the end offset when length and mod-97 check are right.
pub(super) fn iban_at(b: &[u8], p: usize) -> Option<usize> {
    let cc = [b[p], b[p + 1]];
    let len = IBAN_LENGTHS.iter().find(|(c, _)| **c == cc)?.1;
    let mut buf = [0u8; 34];
    let mut n = 0;
    let mut i = p;
    while n < len && i < b.len() {
        let c = b[i];
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            buf[n] = c;
            n += 1;
            i += 1;
        } else if c == b' '
            && n % 4 == 0
            && n > 0
            && i + 1 < b.len()
            && b[i + 1].is_ascii_alphanumeric()
        {
            i += 1;
        } else {
            return None;
        }
    }
    if n != len || glued_right(b, i) || !buf[2].is_ascii_digit() || !buf[3].is_ascii_digit() {
        return None;
    }
    iban_mod97(&buf[..n]).then_some(i)
}

/// ISO 7064 mod-97-10 over an IBAN (country, check digits, BBAN).
pub(crate) fn iban_mod97(iban: &[u8]) -> bool {
    let mut r = 0u32;
    for &c in iban[4..].iter().chain(iban[..4].iter()) {
        r = if c.is_ascii_digit() {
            (r * 10 + (c - b'0') as u32) % 97
        } else if c.is_ascii_uppercase() {
            (r * 100 + (c - b'A' + 10) as u32) % 97
        } else {
            return false;
        };
    }
    r == 1
}
