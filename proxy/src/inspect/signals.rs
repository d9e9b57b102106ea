//! The deterministic detectors: hidden Unicode, hidden HTML/markdown text, exfiltration links,
//! chat-template role markers, instruction overrides, and requests to call tools or reveal
//! secrets.
//!
//! One ASCII-case-insensitive Aho-Corasick pass finds anchor words; only at an anchor does a
//! small anchored regex (over at most [`LOOKAHEAD`] bytes) decide, so text without anchors costs
//! one SIMD-assisted pass. Hidden Unicode is looked for only in non-ASCII text.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;

/// How far past an anchor a validator looks, in bytes.
pub const LOOKAHEAD: usize = 400;

/// What a deterministic finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Signal {
    /// The linear model's score (not a deterministic detector; listed here so findings have
    /// one type).
    Classifier,
    /// Unicode tag characters (U+E0000-U+E007F): invisible ASCII.
    HiddenUnicode,
    /// Zero-width or bidirectional-control characters inside words.
    ZeroWidth,
    /// Text hidden by HTML or markdown (comments, `display:none`, `hidden`, zero font size)
    /// that reads as instructions.
    HiddenText,
    /// An image (markdown or HTML) or templated link whose URL carries data.
    ExfilLink,
    /// Chat-template role markers (`<|im_start|>`, `[INST]`, `<<SYS>>`, ...).
    RoleMarker,
    /// "Ignore previous instructions" and kin.
    Override,
    /// A request to call a tool or function, addressed to the model.
    ToolCall,
    /// A request to reveal the system prompt, secrets or credentials.
    RevealSecret,
    /// A phrase of an owner-defined topic.
    Topic,
}

impl Signal {
    /// The camelCase name.
    pub fn id(self) -> &'static str {
        match self {
            Signal::Classifier => "classifier",
            Signal::HiddenUnicode => "hiddenUnicode",
            Signal::ZeroWidth => "zeroWidth",
            Signal::HiddenText => "hiddenText",
            Signal::ExfilLink => "exfilLink",
            Signal::RoleMarker => "roleMarker",
            Signal::Override => "override",
            Signal::ToolCall => "toolCall",
            Signal::RevealSecret => "revealSecret",
            Signal::Topic => "topic",
        }
    }
}

/// One deterministic finding in a string (byte offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// What was found.
    pub signal: Signal,
    /// Score, 1-99.
    pub score: u8,
    /// Start byte.
    pub start: usize,
    /// End byte (exclusive).
    pub end: usize,
}

#[derive(Clone, Copy)]
enum Anchor {
    Override,
    NewInstructions,
    Role,
    Image,
    HtmlImage,
    TemplatedLink,
    Comment,
    MdComment,
    HiddenStyle,
    ToolVerb,
    Reveal,
}

const ANCHORS: &[(&str, Anchor)] = &[
    ("ignore", Anchor::Override),
    ("disregard", Anchor::Override),
    ("forget", Anchor::Override),
    ("override", Anchor::Override),
    ("bypass", Anchor::Override),
    ("new instructions", Anchor::NewInstructions),
    ("updated instructions", Anchor::NewInstructions),
    ("from now on", Anchor::NewInstructions),
    ("<|im_start|>", Anchor::Role),
    ("<|im_end|>", Anchor::Role),
    ("<|system|>", Anchor::Role),
    ("<|user|>", Anchor::Role),
    ("<|assistant|>", Anchor::Role),
    ("<|start_header_id|>", Anchor::Role),
    ("<|eot_id|>", Anchor::Role),
    ("<|endoftext|>", Anchor::Role),
    ("[inst]", Anchor::Role),
    ("[/inst]", Anchor::Role),
    ("<<sys>>", Anchor::Role),
    ("<</sys>>", Anchor::Role),
    ("</system>", Anchor::Role),
    ("<system>", Anchor::Role),
    ("![", Anchor::Image),
    ("<img", Anchor::HtmlImage),
    ("](http", Anchor::TemplatedLink),
    ("<!--", Anchor::Comment),
    ("[//]: #", Anchor::MdComment),
    ("display:none", Anchor::HiddenStyle),
    ("display: none", Anchor::HiddenStyle),
    ("visibility:hidden", Anchor::HiddenStyle),
    ("visibility: hidden", Anchor::HiddenStyle),
    ("font-size:0", Anchor::HiddenStyle),
    ("font-size: 0", Anchor::HiddenStyle),
    (" hidden>", Anchor::HiddenStyle),
    ("call the", Anchor::ToolVerb),
    ("use the", Anchor::ToolVerb),
    ("invoke the", Anchor::ToolVerb),
    ("run the", Anchor::ToolVerb),
    ("execute the", Anchor::ToolVerb),
    ("reveal", Anchor::Reveal),
    ("print", Anchor::Reveal),
    ("output", Anchor::Reveal),
    ("repeat", Anchor::Reveal),
    ("send", Anchor::Reveal),
    ("leak", Anchor::Reveal),
    ("disclose", Anchor::Reveal),
    ("exfiltrate", Anchor::Reveal),
    ("show", Anchor::Reveal),
    ("tell me", Anchor::Reveal),
];

struct Compiled {
    ac: AhoCorasick,
    override_re: Regex,
    new_instr_re: Regex,
    image_re: Regex,
    html_image_re: Regex,
    link_re: Regex,
    tool_re: Regex,
    reveal_re: Regex,
    addressed_re: Regex,
    reader_re: Regex,
    instructive_re: Regex,
}

/// A validator regex. Word boundaries are ASCII ones (`(?-u:\b)`): every word the patterns
/// look for is ASCII, and a Unicode `\b` makes the regex engine leave its DFA for the much
/// slower PikeVM whenever the text holds a non-ASCII character (a fifth of tier 1's time on
/// MCP-like text with one accented sentence per string).
fn re(pattern: &str) -> Regex {
    Regex::new(&pattern.replace(r"\b", r"(?-u:\b)")).expect("inspection patterns compile")
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| Compiled {
        ac: AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            // A full DFA: the anchors are few (some KiB of table), every byte of every string
            // goes through it.
            .kind(Some(AhoCorasickKind::DFA))
            .build(ANCHORS.iter().map(|(a, _)| a))
            .expect("anchors compile"),
        override_re: re(
            r"(?i)^(?:ignore|disregard|forget|override|bypass)\s+(?:(?:all|any|every|the|your|my|of|these|those|what|everything|above|previous|prior|earlier|preceding|former|original|initial|system|safety|existing|you)\s+){0,4}(?:instructions?|prompts?|rules|directives|guidelines|guardrails|constraints|commands|programming|restrictions|messages|context|you\s+were\s+told)\b",
        ),
        new_instr_re: re(
            r"(?i)^(?:(?:new|updated)\s+instructions\s*[:\-]|from\s+now\s+on,?\s+(?:you|your|the\s+assistant|respond|answer|act|only))",
        ),
        // URLs are `+`, not a counted repetition: what a validator sees is at most LOOKAHEAD
        // bytes anyway, and `{1,2048}` built an NFA too large for the fast capture engines.
        image_re: re(r"^!\[[^\]\n]{0,200}\]\(\s*<?([^\s)>]+)"),
        html_image_re: re(r#"(?i)^<img\b[^>]{0,300}?\bsrc\s*=\s*["']?([^"'\s>]+)"#),
        link_re: re(r"^\]\((https?://[^\s)]+)\)"),
        tool_re: re(
            r#"(?i)^(?:call|use|invoke|run|execute)\s+the\s+[`'"]?[a-z0-9_./-]{1,64}[`'"]?\s+(?:tool|function|command)\b"#,
        ),
        reveal_re: re(
            r"(?i)^(?:reveal|print|output|repeat|send|leak|disclose|exfiltrate|show|tell\s+me)\s+(?:me\s+|us\s+|back\s+|out\s+)?(?:(?:all|any|the|your|its|full|entire|complete|original|hidden|exact|current|of|these|those)\s+){0,4}(system\s+prompts?|initial\s+(?:prompt|instructions)|hidden\s+instructions|instructions|prompt|api[\s_-]?keys?|secrets?|passwords?|credentials|access\s+tokens?|tokens?|private\s+keys?|env(?:ironment)?\s+variables|conversation(?:\s+history)?|chat\s+history)\b",
        ),
        addressed_re: re(
            r"(?i)\b(?:assistant|ai\b|llm|language\s+model|you\s+must|you\s+should|you\s+will|you\s+are\s+required|before\s+(?:answering|responding|replying|you\s+(?:answer|respond|reply))|instead|immediately|silently|without\s+(?:telling|asking|mentioning)|do\s+not\s+(?:tell|mention|inform))",
        ),
        reader_re: re(
            r"(?i)\b(?:you|your|yours|yourself|u|ignore|disregard|forget|pretend|act\s+as|roleplay|role-play|respond|reply|answer|say|print|reveal|output|repeat|tell|show|write|translate|generate|do\s+not|don't|never|always|stop|override|bypass|jailbreak|unlock|enable|activate|simulate|imagine|from\s+now\s+on)\b",
        ),
        instructive_re: re(
            r"(?i)\b(?:assistant|ai|llm|language\s+model|ignore\s+(?:all|any|the|previous|prior|above|your)|instructions?|you\s+must|you\s+should|you\s+are|do\s+not\s+(?:tell|mention|reveal)|system\s+prompt|call\s+the|send\s+(?:the|it|all|this|them)|secrets?|passwords?|api\s*keys?|credentials?|exfiltrate)\b",
        ),
    })
}

/// A prefix of `s[at..]` of at most [`LOOKAHEAD`] bytes, cut on a character boundary.
fn ahead(s: &str, at: usize) -> &str {
    let mut end = (at + LOOKAHEAD).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[at..end]
}

fn quoted_before(s: &str, at: usize) -> bool {
    s[..at]
        .chars()
        .next_back()
        .is_some_and(|c| matches!(c, '"' | '\'' | '`' | '“' | '‘' | '«'))
}

fn word_start(s: &str, at: usize) -> bool {
    s[..at]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric())
}

/// The sentence around a byte span: back to the previous and on to the next `.`, `!`, `?` or
/// newline, at most [`LOOKAHEAD`] bytes each way.
fn sentence(s: &str, start: usize, end: usize) -> &str {
    let stop = |c: char| matches!(c, '.' | '!' | '?' | '\n');
    let mut a = start.saturating_sub(LOOKAHEAD);
    while !s.is_char_boundary(a) {
        a += 1;
    }
    let a = s[a..start].rfind(stop).map_or(a, |i| a + i + 1);
    let mut b = (end + LOOKAHEAD).min(s.len());
    while !s.is_char_boundary(b) {
        b -= 1;
    }
    let b = s[end..b].find(stop).map_or(b, |i| end + i);
    &s[a..b]
}

/// How much a URL looks like it carries data: templated placeholders 95, a long opaque query
/// or path value 90, a query parameter whose name suggests data 85, other queries 40.
fn url_score(url: &str) -> u8 {
    let templated = ["{", "}", "$", "<", "%7b", "%7B", "[", "]"]
        .iter()
        .any(|t| url.contains(t));
    if templated {
        return 95;
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let opaque = |v: &str| {
        v.len() >= 24
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=_-%.".contains(&b))
    };
    let mut best = 0;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if opaque(value) {
            best = best.max(90);
        }
        let name = name.to_ascii_lowercase();
        let dataish = [
            "data", "d", "q", "secret", "token", "key", "conv", "chat", "history", "msg",
            "message", "content", "context", "prompt", "info", "payload", "exfil", "leak",
            "memory", "p", "text",
        ];
        if !value.is_empty() && dataish.contains(&name.as_str()) {
            best = best.max(85);
        }
        if !value.is_empty() {
            best = best.max(40);
        }
    }
    if path
        .rsplit('/')
        .next()
        .is_some_and(|seg| seg.len() >= 48 && opaque(seg))
    {
        best = best.max(90);
    }
    best
}

/// Every deterministic hit in `s` (byte offsets), in order of position.
pub fn find(s: &str, out: &mut Vec<Hit>) {
    let c = compiled();
    if !s.is_ascii() {
        hidden_unicode(s, out);
    }
    for m in c.ac.find_iter(s) {
        let (at, anchor) = (m.start(), ANCHORS[m.pattern().as_usize()].1);
        let rest = ahead(s, at);
        let hit = |signal, score, len: usize| Hit {
            signal,
            score,
            start: at,
            end: at + len,
        };
        match anchor {
            Anchor::Override if word_start(s, at) => {
                if let Some(m) = c.override_re.find(rest) {
                    let score = if quoted_before(s, at) { 45 } else { 90 };
                    out.push(hit(Signal::Override, score, m.end()));
                }
            }
            Anchor::NewInstructions if word_start(s, at) => {
                if let Some(m) = c.new_instr_re.find(rest) {
                    let score = if quoted_before(s, at) { 45 } else { 85 };
                    out.push(hit(Signal::Override, score, m.end()));
                }
            }
            Anchor::Role => out.push(hit(Signal::RoleMarker, 95, m.len())),
            Anchor::Image | Anchor::HtmlImage => {
                let re = if matches!(anchor, Anchor::Image) {
                    &c.image_re
                } else {
                    &c.html_image_re
                };
                if let Some(cap) = re.captures(rest) {
                    let url = cap.get(1).unwrap();
                    if url.as_str().starts_with("http") || url.as_str().starts_with("//") {
                        let score = url_score(url.as_str());
                        if score > 0 {
                            out.push(hit(Signal::ExfilLink, score, url.end()));
                        }
                    }
                }
            }
            Anchor::TemplatedLink => {
                if let Some(cap) = c.link_re.captures(rest) {
                    let url = cap.get(1).unwrap().as_str();
                    // Plain links are common; only placeholders waiting for data count.
                    if url_score(url) >= 95 {
                        out.push(hit(Signal::ExfilLink, 80, cap.get(0).unwrap().end()));
                    }
                }
            }
            Anchor::Comment => {
                let (body, end) = match rest[4..].find("-->") {
                    Some(i) => (&rest[4..4 + i], 4 + i + 3),
                    None => (&rest[4..], rest.len()),
                };
                hidden_text(at, at + end, body, out);
            }
            Anchor::MdComment => {
                let end = rest.find('\n').unwrap_or(rest.len());
                hidden_text(at, at + end, &rest[..end], out);
            }
            Anchor::HiddenStyle => {
                // The hidden element's text: from the end of the tag to the next `<`.
                if let Some(gt) = rest.find('>') {
                    let body = &rest[gt + 1..];
                    let len = body.find('<').unwrap_or(body.len());
                    hidden_text(at, at + gt + 1 + len, &body[..len], out);
                }
            }
            Anchor::ToolVerb if word_start(s, at) => {
                if let Some(m) = c.tool_re.find(rest) {
                    let around = sentence(s, at, at + m.end());
                    let score = if c.addressed_re.is_match(around) {
                        85
                    } else {
                        45
                    };
                    out.push(hit(Signal::ToolCall, score, m.end()));
                }
            }
            Anchor::Reveal if word_start(s, at) => {
                if let Some(cap) = c.reveal_re.captures(rest) {
                    let whole = cap.get(0).unwrap();
                    let what = cap.get(1).unwrap().as_str().to_ascii_lowercase();
                    let yours = whole.as_str().to_ascii_lowercase().contains("your");
                    let score = if what.starts_with("system")
                        || what.starts_with("initial")
                        || what.starts_with("hidden")
                        || (yours
                            && (what.starts_with("instructions") || what.starts_with("prompt")))
                    {
                        90
                    } else if c.addressed_re.is_match(sentence(s, at, at + whole.end())) {
                        85
                    } else {
                        45
                    };
                    out.push(hit(Signal::RevealSecret, score, whole.end()));
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|h| (h.start, h.end));
}

/// Whether `text` addresses its reader: a second-person word, or a verb that commands a model
/// (`ignore`, `pretend`, `reveal`, `respond`, `act as`, ...). Text *about* prompts and
/// instructions (documentation, tickets, code) usually does neither; an injection does one or
/// the other. The classifier's score counts fully only on text that does (see [`READER_CAP`]).
pub fn addresses_reader(text: &str) -> bool {
    compiled().reader_re.is_match(text)
}

/// The highest classifier score of a window that does not address its reader.
pub const READER_CAP: u8 = 45;

fn hidden_text(start: usize, end: usize, body: &str, out: &mut Vec<Hit>) {
    let letters = body.chars().filter(|c| c.is_alphabetic()).count();
    if letters < 8 {
        return;
    }
    let score = if compiled().instructive_re.is_match(body) {
        90
    } else {
        30
    };
    out.push(Hit {
        signal: Signal::HiddenText,
        score,
        start,
        end,
    });
}

/// Whether `c` is a Unicode tag character (invisible ASCII).
pub fn is_tag(c: char) -> bool {
    ('\u{E0000}'..='\u{E007F}').contains(&c)
}

/// Zero-width characters and bidirectional controls: invisible, and able to split or reorder
/// words.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}'
            | '\u{180E}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
    )
}

fn hidden_unicode(s: &str, out: &mut Vec<Hit>) {
    // Every character looked for here starts with one of these UTF-8 lead bytes (U+180E: E1;
    // U+200B-U+2069: E2; U+FEFF: EF; tag characters: F3): text without any is done in one
    // byte pass, instead of decoding every character.
    if !s.bytes().any(|b| matches!(b, 0xE1 | 0xE2 | 0xEF | 0xF3)) {
        return;
    }
    let mut iter = s.char_indices().peekable();
    let mut prev: Option<char> = None;
    let mut zw: Vec<(usize, usize)> = Vec::new();
    while let Some((i, c)) = iter.next() {
        if is_tag(c) {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = iter.peek() {
                if !is_tag(d) {
                    break;
                }
                end = j + d.len_utf8();
                iter.next();
            }
            out.push(Hit {
                signal: Signal::HiddenUnicode,
                score: 99,
                start: i,
                end,
            });
            prev = None;
            continue;
        }
        if is_invisible(c) {
            // A zero-width joiner between emoji is how emoji sequences are written; an
            // invisible character touching a letter or digit is not.
            let next = iter.peek().map(|&(_, d)| d);
            let touches =
                prev.is_some_and(char::is_alphanumeric) || next.is_some_and(char::is_alphanumeric);
            if touches || (!matches!(c, '\u{200D}' | '\u{FE0F}') && i > 0) {
                zw.push((i, i + c.len_utf8()));
            }
        }
        prev = Some(c);
    }
    if !zw.is_empty() {
        let score = match zw.len() {
            1 => 60,
            2 => 75,
            _ => 95,
        };
        out.push(Hit {
            signal: Signal::ZeroWidth,
            score,
            start: zw[0].0,
            end: zw[zw.len() - 1].1,
        });
    }
}

/// Removes tag characters and invisible characters (what a flagged string is delivered
/// without, so the model cannot read what a human cannot see).
pub fn strip_invisible(s: &str) -> Option<String> {
    if s.is_ascii() || !s.chars().any(|c| is_tag(c) || is_invisible(c)) {
        return None;
    }
    Some(
        s.chars()
            .filter(|&c| !is_tag(c) && !is_invisible(c))
            .collect(),
    )
}
