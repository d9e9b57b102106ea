//! Portal tool names -> JavaScript identifiers for `codemode.<name>(args)`.

use std::collections::{BTreeSet, HashSet};

use super::ToolInfo;

/// Names that must never be tool functions on the `codemode` object: properties that the
/// language or the promise machinery looks up implicitly (`then` makes an object a thenable,
/// `__proto__` rewires prototypes, `toString`/`valueOf` run on coercion), our own `tools()`,
/// and reserved words (valid as property names, but awkward and confusing as identifiers).
const RESERVED: &[&str] = &[
    // implicit lookups and Object.prototype members
    "then",
    "catch",
    "finally",
    "constructor",
    "prototype",
    "__proto__",
    "toString",
    "toLocaleString",
    "valueOf",
    "toJSON",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    // the search API
    "tools",
    // reserved words and restricted identifiers
    "arguments",
    "async",
    "await",
    "break",
    "case",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "eval",
    "export",
    "extends",
    "false",
    "for",
    "function",
    "if",
    "implements",
    "import",
    "in",
    "instanceof",
    "interface",
    "let",
    "new",
    "null",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "undefined",
    "var",
    "void",
    "while",
    "with",
    "yield",
];

/// The identifier a portal name maps to before collisions are resolved: every character
/// outside `[A-Za-z0-9_]` becomes `_`, a leading digit gets a `_` prefix and a reserved or
/// dangerous name (`then`, `constructor`, `__proto__`, `tools`, keywords, ...) gets a `_`
/// suffix.
pub(crate) fn base_identifier(portal_name: &str) -> String {
    let mut out: String = portal_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if RESERVED.contains(&out.as_str()) {
        out.push('_');
    }
    out
}

/// Maps each portal tool to a JavaScript identifier, deterministically:
///
/// 1. duplicate portal names are dropped (the first wins);
/// 2. a tool whose name is already a valid, unreserved identifier keeps it;
/// 3. the others, in sorted order of portal name, take their [`base_identifier`], or on a
///    collision the first free of `<base>_2`, `<base>_3`, ...
///
/// The result is sorted by portal name and does not depend on the input order.
pub fn sanitize_names(tools: &[ToolInfo]) -> Vec<(String, String)> {
    let portal: BTreeSet<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    let mut taken: HashSet<String> = HashSet::new();
    let mut assigned: Vec<(String, String)> = Vec::with_capacity(portal.len());
    let mut rest = Vec::new();
    for name in &portal {
        let base = base_identifier(name);
        if base == *name {
            taken.insert(base.clone());
            assigned.push((base, (*name).to_string()));
        } else {
            rest.push((*name, base));
        }
    }
    for (name, base) in rest {
        let mut candidate = base.clone();
        let mut n = 2u32;
        while taken.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        taken.insert(candidate.clone());
        assigned.push((candidate, name.to_string()));
    }
    assigned.sort_by(|a, b| a.1.cmp(&b.1));
    assigned
}
