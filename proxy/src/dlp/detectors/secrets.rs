//! Secrets: vendor tokens found by their prefix (then a shape regex and checks), JWTs, PEM
//! private keys, and values assigned to secret-like names that look random enough (entropy).

use base64::Engine as _;

use super::{Builtins, Detector, DetectorSet, Hit};

pub(super) const SECRET_NAMES: &[&str] = &[
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

pub(super) const TOKEN_PREFIXES: &[(&str, Detector)] = &[
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

impl Builtins {
    /// At a `=` or `:` at `i`: when the identifier before it (optionally quoted) contains a
    /// secret-like name on identifier boundaries, examine the assignment.
    pub(super) fn secret_before(&self, b: &[u8], i: usize, out: &mut Vec<Hit>) {
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

    pub(super) fn anthropic_at(&self, s: &str, start: usize, set: DetectorSet, out: &mut Vec<Hit>) {
        if set.contains(Detector::AnthropicKey) {
            self.token_at(s, start, Detector::AnthropicKey, out)
        }
    }

    pub(super) fn token_at(&self, s: &str, start: usize, d: Detector, out: &mut Vec<Hit>) {
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
            // A dot right after the third segment ends the token when no token character
            // follows it (the full stop of a sentence); before one, it is a longer dotted
            // value (a five-part JWE, a hostname), not a JWT.
            Detector::Jwt => {
                let next_is_token = |k: usize| k < b.len() && tokenish(b[k]);
                let dot_then_token = end < b.len() && b[end] == b'.' && next_is_token(end + 1);
                !next_is_token(end) && !dot_then_token && jwt_ok(text)
            }
            _ => {
                (end >= b.len() || !tokenish(b[end]))
                    && match d {
                        Detector::OpenaiKey => openai_ok(text),
                        Detector::AwsAccessKey => aws_key_id_ok(&text[4..]),
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

/// The 16 characters of an AWS access key id after `AKIA`/`ASIA` (the shape regex has taken
/// `[A-Z0-9]{16}`). A digit is not required: real ids are base32 and about one in 28 has none.
/// A digitless run must not read as a placeholder or a word: no run of five letters in
/// alphabetical order (`ABCDE…`), no letter five times over, and no more vowels than random
/// letters carry (at most 6 of 16; uppercase English has about 40%).
fn aws_key_id_ok(id: &str) -> bool {
    let b = id.as_bytes();
    if b.iter().any(u8::is_ascii_digit) {
        return true;
    }
    let ascending_run = b.windows(5).any(|w| w.windows(2).all(|p| p[1] == p[0] + 1));
    let mut counts = [0u8; 26];
    for &c in b {
        if let Some(n) = c
            .checked_sub(b'A')
            .and_then(|i| counts.get_mut(usize::from(i)))
        {
            *n += 1;
        }
    }
    let vowels = b.iter().filter(|c| b"AEIOU".contains(c)).count();
    !ascending_run && counts.iter().all(|&n| n < 5) && vowels <= 6
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

/// `$NAME`, `${NAME}`, `$(cmd)`, `%NAME%`, `%(name)s`, `%s`: a variable or format placeholder.
/// Other values that merely start with `$` or `%` (`%nQw%3Kdjp89`) can be secrets.
fn template_variable(v: &[u8]) -> bool {
    let ident = |w: &[u8]| {
        !w.is_empty()
            && w.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    };
    match v {
        [b'$', b'{' | b'(', ..] => true,
        [b'$', rest @ ..] => ident(rest),
        [b'%', b'(', ..] => true,
        [b'%', rest @ .., b'%'] => ident(rest),
        [b'%', rest @ ..] => rest.len() <= 2,
        _ => false,
    }
}

/// Whether a value assigned to a secret-like name looks like a real secret rather than a word,
/// a placeholder, a path, a URL or a number.
pub(crate) fn looks_like_secret(v: &[u8]) -> bool {
    if v.len() < 8 || v.len() > 512 {
        return false;
    }
    if matches!(v[0], b'{' | b'<' | b'/' | b'[' | b'(') || template_variable(v) {
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
    // Words and plain numbers joined by separators (`strict-mode`, `Not_Set`, `read.only`,
    // `min_length=12`, `v2.0`): a setting, not a secret. A segment that mixes letters and digits
    // (`s3cr3t`) keeps the value in.
    let wordy = v
        .split(|c| matches!(c, b'-' | b'_' | b'.' | b'/' | b'=' | b':' | b',' | b'+'))
        .all(|w| {
            w.iter().all(u8::is_ascii_alphabetic) && w.iter().skip(1).all(u8::is_ascii_lowercase)
                || w.iter().all(u8::is_ascii_digit)
        })
        && v.iter().any(u8::is_ascii_alphabetic);
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

/// Words that, after a secret-like keyword in a name, make the name one of the secret's
/// properties rather than the secret (`password_policy`, `tokenTtl`, `secret_name`,
/// `api_key_file`): its value is a setting, a name or a path.
const PROPERTY_WORDS: &[&str] = &[
    "policy",
    "policies",
    "length",
    "len",
    "min",
    "max",
    "minimum",
    "maximum",
    "expiry",
    "expires",
    "expiration",
    "ttl",
    "lifetime",
    "age",
    "hint",
    "rule",
    "rules",
    "strength",
    "complexity",
    "type",
    "kind",
    "count",
    "limit",
    "file",
    "path",
    "dir",
    "url",
    "uri",
    "endpoint",
    "name",
    "ref",
    "env",
    "field",
    "label",
    "format",
    "version",
    "enabled",
    "required",
];

/// Whether the rest of a name after its secret-like keyword (`_policy`, `MinLength`, `-file`)
/// holds a [`PROPERTY_WORDS`] word; words split at `_`, `-`, `.` and lower-to-upper case steps.
fn names_a_property(rest: &[u8]) -> bool {
    let mut words: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for i in 0..=rest.len() {
        let boundary = i == rest.len()
            || matches!(rest[i], b'_' | b'-' | b'.')
            || (i > start && rest[i].is_ascii_uppercase() && rest[i - 1].is_ascii_lowercase());
        if boundary {
            if i > start {
                words.push(&rest[start..i]);
            }
            start = if i < rest.len() && !rest[i].is_ascii_alphanumeric() {
                i + 1
            } else {
                i
            };
        }
    }
    words.iter().any(|w| {
        PROPERTY_WORDS
            .iter()
            .any(|p| w.eq_ignore_ascii_case(p.as_bytes()))
    })
}

/// Whether an object key names a secret (`password`, `client_secret`, `apiKey`, …), not one of
/// its properties (`password_policy`).
pub(crate) fn is_secret_key_name(key: &str) -> bool {
    if key.len() > 64 || key.bytes().any(|c| c.is_ascii_whitespace()) {
        return false;
    }
    let b = key.as_bytes();
    let bi = Builtins::get();
    bi.names
        .find_iter(key)
        .any(|m| keyword_bounded(b, m.start(), m.end()) && !names_a_property(&b[m.end()..]))
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
    if names_a_property(&b[ke..i]) {
        return;
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
    // Unquoted, a full stop at the end is the sentence's (`password=x7Qz9kLm. Rotate it`).
    if quote.is_none() && i > vs && b[i - 1] == b'.' {
        i -= 1;
    }
    if looks_like_secret(&b[vs..i]) {
        out.push(Hit {
            start: vs,
            end: i,
            detector: Detector::GenericSecret,
        });
    }
}
