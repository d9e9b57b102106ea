//! The glob syntax of `servers` and `tools` patterns in McpPolicy rules and DLP rules.
//!
//! One syntax, documented in the CRD: 1-128 characters of `[A-Za-z0-9_.-]` (the characters of
//! MCP tool names and Kubernetes object names) and `*`, which matches any run of characters,
//! also none. There is no other wildcard (`?` is refused, not matched). [`GLOB_PATTERN`] is the
//! same rule as a regular expression, in the CRD schema, so the apiserver refuses a bad
//! pattern at `kubectl apply`.

/// The CRD schema's `pattern` for one glob.
pub const GLOB_PATTERN: &str = r"^[A-Za-z0-9_.*-]{1,128}$";

/// A compiled glob: `*` matches any run of characters (also none); everything else is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    parts: Vec<String>,
    star_start: bool,
    star_end: bool,
}

impl Glob {
    /// Compiles `pattern` (any string; [`glob_problem`] says whether it is a valid one).
    pub fn new(pattern: &str) -> Glob {
        Glob {
            parts: pattern
                .split('*')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            star_start: pattern.starts_with('*'),
            star_end: pattern.ends_with('*'),
        }
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        if self.parts.is_empty() {
            // "" matches only ""; "*", "**" match everything.
            return self.star_start || s.is_empty();
        }
        let mut rest = s;
        let n = self.parts.len();
        for (i, part) in self.parts.iter().enumerate() {
            if i == 0 && !self.star_start {
                let Some(r) = rest.strip_prefix(part.as_str()) else {
                    return false;
                };
                rest = r;
                if n == 1 && !self.star_end {
                    return rest.is_empty();
                }
                continue;
            }
            if i == n - 1 && !self.star_end {
                return rest.len() >= part.len() && rest.ends_with(part.as_str());
            }
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Whether `text` matches `pattern` (compiles the glob each time; compile once with
/// [`Glob::new`] on a hot path).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).matches(text)
}

/// The CRD schema's `pattern` for a resource URI glob (`resources` of an inspection rule): no
/// whitespace (the schema's `maxLength` bounds it to 2048 characters: the apiserver's regular
/// expressions allow no repeat count over 1000). `*` matches any run of characters (also
/// none, also `/`), as in [`Glob`]; everything else is literal.
pub const URI_GLOB_PATTERN: &str = r"^\S+$";

/// Why `g` is not a valid resource URI glob, or `None`.
pub fn uri_glob_problem(g: &str) -> Option<String> {
    if g.is_empty() || g.len() > 2048 {
        return Some("must be 1-2048 characters".into());
    }
    g.chars()
        .find(|c| c.is_whitespace())
        .map(|c| format!("{g:?}: whitespace {c:?} is not allowed in a URI glob"))
}

/// Why `g` is not a valid glob, or `None`.
pub fn glob_problem(g: &str) -> Option<String> {
    if g.is_empty() || g.len() > 128 {
        return Some("must be 1-128 characters".into());
    }
    g.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*')))
        .map(|c| format!("{g:?}: character {c:?} is not allowed (use [A-Za-z0-9_.-] and *)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run_and_everything_else_is_literal() {
        let cases = [
            ("*", "", true),
            ("*", "abc", true),
            ("", "", true),
            ("", "a", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("get_*", "get_x", true),
            ("get_*", "get_", true),
            ("get_*", "xget_", false),
            ("*_ticket", "close_ticket", true),
            ("*_ticket", "ticket", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*a*", "bab", true),
            ("**", "x", true),
            ("crm-*", "crm-eu", true),
            ("crm-*", "wiki", false),
            ("a*b", "acbx", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p).matches(s), want, "{p:?} vs {s:?}");
            assert_eq!(glob_match(p, s), want, "{p:?} vs {s:?}");
        }
    }

    #[test]
    fn a_question_mark_is_not_a_wildcard_and_is_refused_as_a_pattern() {
        assert!(!glob_match("a?c", "abc"));
        assert!(glob_problem("a?c").unwrap().contains("'?'"));
    }

    #[test]
    fn uri_globs_cross_slashes_and_the_schema_pattern_agrees_with_the_validator() {
        assert!(glob_match("memo://notes/*", "memo://notes/a/b"));
        assert!(glob_match("file:///srv/*.md", "file:///srv/docs/x.md"));
        assert!(!glob_match("memo://notes/*", "memo://other/a"));
        let re = regex::Regex::new(URI_GLOB_PATTERN).unwrap();
        let long = "a".repeat(2049);
        for g in [
            "memo://notes/*",
            "*",
            "https://x/?q=1&r=*",
            "",
            "a b",
            "a\tb",
            long.as_str(),
        ] {
            let schema_ok = re.is_match(g) && g.len() <= 2048;
            assert_eq!(schema_ok, uri_glob_problem(g).is_none(), "{g:?}");
        }
    }

    #[test]
    fn the_schema_pattern_and_the_validator_agree() {
        let re = regex::Regex::new(GLOB_PATTERN).unwrap();
        let long = "a".repeat(129);
        for g in [
            "*",
            "get_*",
            "a.b-c_d",
            "",
            "a?b",
            "a b",
            "a/b",
            long.as_str(),
        ] {
            assert_eq!(re.is_match(g), glob_problem(g).is_none(), "{g:?}");
        }
    }
}
