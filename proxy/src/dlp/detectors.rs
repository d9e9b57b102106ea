//! Built-in detectors: cheap candidate finders followed by validators.
//!
//! Scanning a string is one pass over its bytes with a class table (digits, `@`, `:`) plus one
//! SIMD (Teddy) multi-substring pass for keyword-anchored detectors (token prefixes, `eyJ`, `-----BEGIN `,
//! secret-ish key names). Only candidates reach the validators (Luhn, IIN table, SSN ranges,
//! IBAN mod-97, JWT header decoding, IPv6 parsing, Shannon entropy), so plain prose and
//! structured data without sensitive values cost little more than the byte scan.

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use regex::Regex;

/// The built-in detectors: the catalogue (names, order) is the API's, in `crds`; this module
/// implements each one.
pub use crds::Detector;

/// The detector's bit in a [`DetectorSet`] (its position in [`Detector::ALL`]).
fn bit(d: Detector) -> u32 {
    1 << (d as u32)
}

/// A set of built-in detectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorSet(u32);

impl DetectorSet {
    /// No detector.
    pub const EMPTY: DetectorSet = DetectorSet(0);

    /// Every built-in detector.
    pub fn all() -> DetectorSet {
        Detector::ALL.into_iter().collect()
    }

    /// Whether `d` is in the set.
    pub fn contains(self, d: Detector) -> bool {
        self.0 & bit(d) != 0
    }

    /// Adds `d`.
    pub fn insert(&mut self, d: Detector) {
        self.0 |= bit(d);
    }

    /// Union of two sets.
    pub fn union(self, other: DetectorSet) -> DetectorSet {
        DetectorSet(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn any(self, ds: &[Detector]) -> bool {
        ds.iter().any(|d| self.contains(*d))
    }
}

impl FromIterator<Detector> for DetectorSet {
    fn from_iter<T: IntoIterator<Item = Detector>>(iter: T) -> Self {
        let mut s = DetectorSet::EMPTY;
        for d in iter {
            s.insert(d);
        }
        s
    }
}

/// A raw match of a built-in detector: byte offsets into the scanned string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub detector: Detector,
}

const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "accesskey",
    "access_key",
    "access-key",
];

const TOKEN_PREFIXES: &[(&str, Detector)] = &[
    ("AKIA", Detector::AwsAccessKey),
    ("ASIA", Detector::AwsAccessKey),
    ("ghp_", Detector::GithubToken),
    ("gho_", Detector::GithubToken),
    ("ghs_", Detector::GithubToken),
    ("ghu_", Detector::GithubToken),
    ("ghr_", Detector::GithubToken),
    ("github_pat_", Detector::GithubToken),
    ("glpat-", Detector::GitlabToken),
    ("xoxa-", Detector::SlackToken),
    ("xoxb-", Detector::SlackToken),
    ("xoxp-", Detector::SlackToken),
    ("xoxr-", Detector::SlackToken),
    ("AIza", Detector::GoogleApiKey),
    ("sk_live_", Detector::StripeKey),
    ("rk_live_", Detector::StripeKey),
    ("sk-", Detector::OpenaiKey),
    ("eyJ", Detector::Jwt),
    ("-----BEGIN ", Detector::PrivateKey),
];

/// No keyword-anchored detector matches fewer bytes than this.
const MIN_TOKEN_LEN: usize = 15;

const KEYWORD_DETECTORS: &[Detector] = &[
    Detector::Jwt,
    Detector::PrivateKey,
    Detector::AwsAccessKey,
    Detector::GithubToken,
    Detector::GitlabToken,
    Detector::SlackToken,
    Detector::GoogleApiKey,
    Detector::StripeKey,
    Detector::OpenaiKey,
    Detector::AnthropicKey,
    Detector::GenericSecret,
];

const DIGIT_DETECTORS: &[Detector] = &[
    Detector::CreditCard,
    Detector::UsSsn,
    Detector::Iban,
    Detector::Phone,
    Detector::Ipv4,
];

enum TokenSearch {
    Packed(aho_corasick::packed::Searcher),
    Dfa(AhoCorasick),
}

/// Compiled built-in detectors, shared by every engine.
pub(crate) struct Builtins {
    /// Case-sensitive token prefixes (`AKIA`, `ghp_`, `eyJ`, …), searched with Teddy (SIMD)
    /// where the CPU has it, else with an Aho-Corasick DFA.
    tokens: TokenSearch,
    /// Case-insensitive secret-ish names, run only over the identifier before a `=` or `:`.
    names: AhoCorasick,
    token_res: Vec<(Detector, Regex)>,
    private_key_header: Regex,
}

impl Builtins {
    /// The process-wide compiled built-ins.
    pub fn get() -> &'static Builtins {
        static B: OnceLock<Builtins> = OnceLock::new();
        B.get_or_init(Builtins::build)
    }

    fn build() -> Builtins {
        let tokens = match aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(TOKEN_PREFIXES.iter().map(|(p, _)| p))
            .build()
        {
            Some(s) => TokenSearch::Packed(s),
            // The prefixes start with common letters (`s`, `e`, `g`, `A`), so a prefilter
            // rarely skips ahead: a full DFA keeps the per-byte cost lowest.
            None => TokenSearch::Dfa(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(TOKEN_PREFIXES.iter().map(|(p, _)| p))
                    .expect("built-in token prefixes compile"),
            ),
        };
        let names = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(SECRET_NAMES)
            .expect("built-in secret names compile");
        let re = |s: &str| Regex::new(s).expect("built-in regex compiles");
        let token_res = vec![
            (Detector::AwsAccessKey, re(r"^(?:AKIA|ASIA)[A-Z0-9]{16}")),
            (
                Detector::GithubToken,
                re(r"^(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})"),
            ),
            (Detector::GitlabToken, re(r"^glpat-[A-Za-z0-9_-]{20,}")),
            (
                Detector::SlackToken,
                re(r"^xox[abpr]-[0-9]{6,}-[A-Za-z0-9-]{8,}"),
            ),
            (Detector::GoogleApiKey, re(r"^AIza[0-9A-Za-z_-]{35}")),
            (Detector::StripeKey, re(r"^[sr]k_live_[0-9A-Za-z]{20,}")),
            (
                Detector::OpenaiKey,
                re(r"^sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
            ),
            (
                Detector::AnthropicKey,
                re(r"^sk-ant-[a-z]+[0-9]*-[A-Za-z0-9_-]{32,}"),
            ),
            (
                Detector::Jwt,
                re(r"^eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"),
            ),
        ];
        Builtins {
            tokens,
            names,
            token_res,
            private_key_header: re(r"^-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"),
        }
    }

    /// Appends the raw matches of the detectors in `set` found in `s` to `out`.
    pub fn find(&self, s: &str, set: DetectorSet, out: &mut Vec<Hit>) {
        if set.is_empty() {
            return;
        }
        let b = s.as_bytes();
        let digits = set.any(DIGIT_DETECTORS);
        let email = set.contains(Detector::Email);
        let ipv6 = set.contains(Detector::Ipv6);
        let secrets = set.contains(Detector::GenericSecret);
        if digits || email || ipv6 || secrets {
            let mut mask = 0u8;
            if digits {
                mask |= C_DIGIT;
            }
            if email {
                mask |= C_AT;
            }
            if ipv6 {
                mask |= C_COLON;
            }
            if secrets {
                mask |= C_ASSIGN;
            }
            let mut i = 0;
            let n = b.len();
            while i < n {
                let c = CLASS[b[i] as usize] & mask;
                if c == 0 {
                    i += 1;
                    continue;
                }
                if c & C_DIGIT != 0 {
                    i = digit_cluster(b, i, set, out);
                } else if c & C_AT != 0 {
                    email_at(b, i, out);
                    i += 1;
                } else {
                    if c & C_ASSIGN != 0 {
                        self.secret_before(b, i, out);
                    }
                    i = if c & C_COLON != 0 {
                        ipv6_at(s, i, out).unwrap_or(i + 1)
                    } else {
                        i + 1
                    };
                }
            }
        }
        // Every keyword-anchored match is longer than MIN_TOKEN_LEN (the shortest, a JWT, is
        // `eyJ` + 8 + `.` + 2 + `.`), so short strings (most object keys, ids, enum values)
        // skip the automaton and its per-call setup.
        if s.len() >= MIN_TOKEN_LEN && set.any(KEYWORD_DETECTORS) {
            // Each prefix match is examined by its detector; `sk-` covers both OpenAI and
            // Anthropic keys. Matches do not overlap: the search resumes after each prefix.
            let mut at = |start: usize, pattern: usize| {
                let d = TOKEN_PREFIXES[pattern].1;
                match d {
                    Detector::OpenaiKey if s[start..].starts_with("sk-ant-") => {
                        self.anthropic_at(s, start, set, out)
                    }
                    d if set.contains(d) => self.token_at(s, start, d, out),
                    _ => {}
                }
            };
            match &self.tokens {
                TokenSearch::Packed(p) => {
                    for m in p.find_iter(b) {
                        at(m.start(), m.pattern().as_usize());
                    }
                }
                TokenSearch::Dfa(ac) => {
                    for m in ac.find_iter(b) {
                        at(m.start(), m.pattern().as_usize());
                    }
                }
            }
        }
    }

    /// At a `=` or `:` at `i`: when the identifier before it (optionally quoted) contains a
    /// secret-like name on identifier boundaries, examine the assignment.
    fn secret_before(&self, b: &[u8], i: usize, out: &mut Vec<Hit>) {
        let mut j = i;
        while j > 0 && matches!(b[j - 1], b' ' | b'\t') && i - j < 2 {
            j -= 1;
        }
        if j > 0 && matches!(b[j - 1], b'"' | b'\'') {
            j -= 1;
            if j > 0 && b[j - 1] == b'\\' {
                j -= 1;
            }
        }
        let end = j;
        while j > 0
            && (b[j - 1].is_ascii_alphanumeric() || matches!(b[j - 1], b'_' | b'.' | b'-'))
            && end - j < 64
        {
            j -= 1;
        }
        if j == end {
            return;
        }
        for m in self.names.find_iter(&b[j..end]) {
            let (ks, ke) = (j + m.start(), j + m.end());
            if keyword_bounded(b, ks, ke) {
                secret_assignment(b, ks, ke, out);
                return;
            }
        }
    }

    fn anthropic_at(&self, s: &str, start: usize, set: DetectorSet, out: &mut Vec<Hit>) {
        if set.contains(Detector::AnthropicKey) {
            self.token_at(s, start, Detector::AnthropicKey, out)
        }
    }

    fn token_at(&self, s: &str, start: usize, d: Detector, out: &mut Vec<Hit>) {
        let b = s.as_bytes();
        if d == Detector::PrivateKey {
            if let Some(end) = self.private_key_at(s, start) {
                out.push(Hit {
                    start,
                    end,
                    detector: d,
                });
            }
            return;
        }
        let tokenish = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        if start > 0 && tokenish(b[start - 1]) {
            return;
        }
        let Some((_, re)) = self.token_res.iter().find(|(td, _)| *td == d) else {
            return;
        };
        let Some(m) = re.find(&s[start..]) else {
            return;
        };
        let end = start + m.end();
        let text = &s[start..end];
        let ok = match d {
            Detector::Jwt => {
                (end >= b.len() || !(tokenish(b[end]) || b[end] == b'.')) && jwt_ok(text)
            }
            _ => {
                (end >= b.len() || !tokenish(b[end]))
                    && match d {
                        Detector::OpenaiKey => openai_ok(text),
                        Detector::AwsAccessKey => text[4..].bytes().any(|c| c.is_ascii_digit()),
                        _ => true,
                    }
            }
        };
        if ok {
            out.push(Hit {
                start,
                end,
                detector: d,
            });
        }
    }

    fn private_key_at(&self, s: &str, start: usize) -> Option<usize> {
        let m = self.private_key_header.find(&s[start..])?;
        let body = start + m.end();
        let mut lim = s.len().min(body + 65536);
        while !s.is_char_boundary(lim) {
            lim -= 1;
        }
        let window = &s[body..lim];
        if let Some(e) = window.find("-----END ") {
            let after = body + e + 9;
            if let Some(close) = s[after..].find("-----") {
                return Some(after + close + 5);
            }
        }
        // No END line: take the base64 body.
        let b = s.as_bytes();
        let mut end = body;
        while end < b.len()
            && (b[end].is_ascii_alphanumeric() || b"+/=\r\n \t".contains(&b[end]))
            && end - body < 65536
        {
            end += 1;
        }
        Some(end)
    }
}

const C_DIGIT: u8 = 1;
const C_AT: u8 = 2;
const C_COLON: u8 = 4;
const C_SEP: u8 = 8;
const C_ASSIGN: u8 = 16;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = C_DIGIT;
        c += 1;
    }
    t[b'@' as usize] = C_AT;
    t[b':' as usize] = C_COLON | C_ASSIGN;
    t[b'=' as usize] = C_ASSIGN;
    t[b' ' as usize] = C_SEP;
    t[b'-' as usize] = C_SEP;
    t[b'.' as usize] = C_SEP;
    t[b'(' as usize] = C_SEP;
    t[b')' as usize] = C_SEP;
    t[b'+' as usize] = C_SEP;
    t
};

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Byte before `i` is a word character (the candidate is glued to a word).
fn glued_left(b: &[u8], i: usize) -> bool {
    i > 0 && is_word(b[i - 1])
}

fn glued_right(b: &[u8], i: usize) -> bool {
    i < b.len() && is_word(b[i])
}

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
fn digit_cluster(b: &[u8], i: usize, set: DetectorSet, out: &mut Vec<Hit>) -> usize {
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
        if (13..=19).contains(&g[k].len()) && card_ok(b, &g[k..k + 1]) {
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
fn iban_at(b: &[u8], p: usize) -> Option<usize> {
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

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// Email address around the `@` at `a`.
fn email_at(b: &[u8], a: usize, out: &mut Vec<Hit>) {
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
fn ipv6_at(s: &str, c: usize, out: &mut Vec<Hit>) -> Option<usize> {
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

/// JWT: header is base64url JSON with a string `alg`; payload is base64url; the signature may
/// be empty only for `alg: none`.
fn jwt_ok(t: &str) -> bool {
    let mut parts = t.split('.');
    let (Some(h), Some(p), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let dec = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(hdr) = dec.decode(h.trim_end_matches('=')) else {
        return false;
    };
    let Ok(serde_json::Value::Object(hdr)) = serde_json::from_slice::<serde_json::Value>(&hdr)
    else {
        return false;
    };
    let Some(alg) = hdr.get("alg").and_then(|a| a.as_str()) else {
        return false;
    };
    if sig.is_empty() && !alg.eq_ignore_ascii_case("none") {
        return false;
    }
    dec.decode(p.trim_end_matches('=')).is_ok()
}

fn openai_ok(t: &str) -> bool {
    if t.starts_with("sk-ant-") {
        return false;
    }
    let body = t
        .trim_start_matches("sk-")
        .trim_start_matches("proj-")
        .trim_start_matches("svcacct-")
        .trim_start_matches("admin-");
    body.bytes().any(|c| c.is_ascii_digit())
        && body.bytes().any(|c| c.is_ascii_alphabetic())
        && shannon_entropy(body.as_bytes()) >= 3.5
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &c in s {
        counts[c as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Entropy threshold (bits per character) for [`Detector::GenericSecret`] values.
pub const SECRET_ENTROPY_THRESHOLD: f64 = 3.0;

/// Whether a value assigned to a secret-like name looks like a real secret rather than a word,
/// a placeholder, a path, a URL or a number.
pub(crate) fn looks_like_secret(v: &[u8]) -> bool {
    if v.len() < 8 || v.len() > 512 {
        return false;
    }
    if matches!(v[0], b'$' | b'{' | b'<' | b'%' | b'/' | b'[' | b'(') {
        return false;
    }
    if v.iter().any(|c| c.is_ascii_whitespace()) || v.windows(3).any(|w| w == b"://") {
        return false;
    }
    if v.iter().all(u8::is_ascii_digit) || v.iter().all(|&c| c == v[0]) {
        return false;
    }
    const PLACEHOLDERS: &[&str] = &[
        "redacted",
        "changeme",
        "password",
        "example",
        "placeholder",
        "required",
        "optional",
        "undefined",
        "null",
        "none",
        "secret",
        "hidden",
        "xxxxxxxx",
        "********",
    ];
    if PLACEHOLDERS.iter().any(|p| {
        v.len() <= p.len() + 4
            && v.windows(p.len())
                .any(|w| w.eq_ignore_ascii_case(p.as_bytes()))
    }) {
        return false;
    }
    // Words joined by separators (`strict-mode`, `Not_Set`, `read.only`): not a secret.
    let wordy = v
        .split(|c| matches!(c, b'-' | b'_' | b'.' | b'/'))
        .all(|w| {
            w.iter().all(u8::is_ascii_alphabetic) && w.iter().skip(1).all(u8::is_ascii_lowercase)
                || w.is_empty()
        });
    if wordy {
        return false;
    }
    shannon_entropy(v) >= SECRET_ENTROPY_THRESHOLD
}

/// Whether a key-name keyword found at `[ks, ke)` of `b` sits on identifier boundaries
/// (`db_password`, `apiToken`, `SECRET_KEY`, but not `tokenizer` or `max_tokens`).
fn keyword_bounded(b: &[u8], ks: usize, ke: usize) -> bool {
    let left_ok = ks == 0
        || !b[ks - 1].is_ascii_alphanumeric()
        || (b[ks - 1].is_ascii_lowercase() && b[ks].is_ascii_uppercase());
    let right_ok = ke >= b.len()
        || !b[ke].is_ascii_alphanumeric()
        || (b[ke].is_ascii_uppercase() && b[ke - 1].is_ascii_lowercase());
    left_ok && right_ok
}

/// Whether an object key names a secret (`password`, `client_secret`, `apiKey`, …).
pub(crate) fn is_secret_key_name(key: &str) -> bool {
    if key.len() > 64 || key.bytes().any(|c| c.is_ascii_whitespace()) {
        return false;
    }
    let b = key.as_bytes();
    let bi = Builtins::get();
    bi.names
        .find_iter(key)
        .any(|m| keyword_bounded(b, m.start(), m.end()))
}

/// `name[rest] [quote] (=|:) [quote] value` after a secret-like keyword at `[ks, ke)`.
fn secret_assignment(b: &[u8], ks: usize, ke: usize, out: &mut Vec<Hit>) {
    if !keyword_bounded(b, ks, ke) {
        return;
    }
    let mut i = ke;
    while i < b.len()
        && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.' | b'-'))
        && i - ke < 48
    {
        i += 1;
    }
    if i < b.len() && b[i] == b'\\' {
        i += 1;
    }
    if i < b.len() && matches!(b[i], b'"' | b'\'') {
        i += 1;
    }
    while i < b.len() && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    if i >= b.len() || !matches!(b[i], b'=' | b':') {
        return;
    }
    i += 1;
    if i < b.len() && matches!(b[i], b'=' | b'>') {
        i += 1;
    }
    while i < b.len() && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    if i < b.len() && b[i] == b'\\' {
        i += 1;
    }
    let quote = if i < b.len() && matches!(b[i], b'"' | b'\'') {
        i += 1;
        Some(b[i - 1])
    } else {
        None
    };
    let vs = i;
    while i < b.len() && i - vs <= 512 {
        let c = b[i];
        let stop = !c.is_ascii()
            || match quote {
                Some(q) => c == q || c == b'\\' || c == b'\n',
                None => {
                    c.is_ascii_whitespace()
                        || matches!(
                            c,
                            b'"' | b'\''
                                | b','
                                | b';'
                                | b'&'
                                | b'\\'
                                | b'}'
                                | b')'
                                | b']'
                                | b'<'
                                | b'>'
                        )
                }
            };
        if stop {
            break;
        }
        i += 1;
    }
    if looks_like_secret(&b[vs..i]) {
        out.push(Hit {
            start: vs,
            end: i,
            detector: Detector::GenericSecret,
        });
    }
}
