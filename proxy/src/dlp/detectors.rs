//! Built-in detectors: cheap candidate finders followed by validators.
//!
//! Scanning a string is one pass over its bytes with a class table (digits, `@`, `:`) plus one
//! SIMD (Teddy) multi-substring pass for keyword-anchored detectors (token prefixes, `eyJ`, `-----BEGIN `,
//! secret-ish key names). Only candidates reach the validators (Luhn, IIN table, SSN ranges,
//! IBAN mod-97, JWT header decoding, IPv6 parsing, Shannon entropy), so plain prose and
//! structured data without sensitive values cost little more than the byte scan.
//!
//! This file holds the detector names, the sets, and the scan that dispatches candidates; the
//! validators live by family: [`digits`] (payment cards, US SSNs, phone numbers, IPv4, all
//! found from one digit cluster), [`iban`], [`addresses`] (email, IPv6) and [`secrets`] (token
//! prefixes, JWTs, private keys, secret-named assignments, entropy).

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;

mod addresses;
mod digits;
mod iban;
mod secrets;

use addresses::{email_at, ipv6_at};
use digits::digit_cluster;
pub use secrets::{SECRET_ENTROPY_THRESHOLD, shannon_entropy};
use secrets::{SECRET_NAMES, TOKEN_PREFIXES};
pub(crate) use secrets::{is_secret_key_name, looks_like_secret};

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
