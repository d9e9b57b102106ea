//! The crate's layers, checked by `cargo test`: every `crate::` path (and every `super::` that
//! climbs to the crate root) in a module's non-test code must name a module that module is
//! declared to use in [`LAYERS`]. The table is in layer order, bottom first, and a module may
//! only use modules above it in the table (declared earlier), so the graph it allows has no
//! cycle; a new top-level module must be added to it.
//!
//! A workspace split (one crate per layer) would have the compiler enforce the same thing, but
//! it would cut `impl` blocks and private fields at crate boundaries the proxy does not need
//! and multiply the compile units of a 2-core build; one table a reader can see is cheaper.
//!
//! Children may use their parent and siblings freely (`super::`, `self::` inside a top-level
//! module are not edges). Test code (`tests.rs`, `tests/`, `#[cfg(test)] mod x;` files and
//! inline `#[cfg(test)] mod x { .. }` blocks) may reach anywhere: an end-to-end test of a layer
//! drives it through the layers above.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, bottom layer first, each with the modules it may use.
const LAYERS: &[(&str, &[&str])] = &[
    // Plain values: who is calling, what an upstream is sent.
    ("model", &[]),
    // Leaves anyone may use: the crate's error, TLS client settings, the metric registry, the
    // audit log, DLP detection, inbound inspection, the Code Mode sandbox.
    ("error", &[]),
    ("tls", &[]),
    ("metrics", &[]),
    ("audit", &["metrics"]),
    ("dlp", &[]),
    ("inspect", &[]),
    ("codemode", &[]),
    // Manifests to the resolved configuration of one portal (data and parsing only).
    ("config", &["model", "error"]),
    // The offline traffic scanner (reads manifests for the sanctioned servers).
    ("shadow", &["config", "error"]),
    // Signing user identities for upstreams.
    ("identity", &["model", "config", "error"]),
    // Connections to upstream MCP servers.
    ("upstream", &["model", "config", "identity", "tls", "error"]),
    // The merged, renamed view of the upstreams' lists.
    ("catalog", &["config", "upstream"]),
    // Decisions over model values: who sees and calls what, rate limits.
    ("policy", &["model", "config", "catalog"]),
    // Access-token verification.
    ("auth", &["model", "metrics", "tls"]),
    // The LLM gateway beside the MCP pipeline: model aliases to provider targets, failover,
    // translation between the OpenAI and Anthropic APIs. Model grants are policy's
    // `model_access` (the policies' access conditions); prompts and completions go through
    // `dlp` as tool arguments and results do.
    (
        "llm",
        &[
            "model", "error", "metrics", "audit", "dlp", "tls", "config", "policy",
        ],
    ),
    // The portal: shared state (the LLM gateway's among it), the MCP handler, the call pipeline.
    (
        "portal",
        &[
            "model", "error", "metrics", "audit", "dlp", "inspect", "codemode", "config",
            "identity", "upstream", "catalog", "policy", "auth", "llm",
        ],
    ),
    // axum: the portal router (authentication, validation, sessions, the fast path), admin,
    // the listeners (the HTTPS one installs `tls`'s crypto provider).
    (
        "http",
        &[
            "model", "error", "metrics", "audit", "tls", "config", "upstream", "policy", "auth",
            "llm", "portal",
        ],
    ),
];

/// Items the crate root re-exports, by the module they come from.
const ROOT_ITEMS: &[(&str, &str)] = &[("Error", "error"), ("Result", "error")];

/// This file and the crate roots: not modules of a layer.
const NOT_LAYERS: &[&str] = &["lib", "main", "bin", "layering"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module path of a source file (`a/b.rs` and `a/b/mod.rs` -> `[a, b]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// The text of a file without its inline `#[cfg(test)] mod x { .. }` blocks.
fn without_inline_tests(text: &str) -> String {
    let re = regex::Regex::new(r"#\[cfg\(test\)\]\s*(pub(\(\w+\))?\s+)?mod\s+\w+\s*\{").unwrap();
    let mut out = String::new();
    let mut rest = text;
    while let Some(m) = re.find(rest) {
        out.push_str(&rest[..m.start()]);
        // Skip to the brace that closes the block.
        let body = &rest[m.end()..];
        let mut depth = 1usize;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Files declared `#[cfg(test)] mod x;` by `file` (their paths relative to `src`).
fn test_children(file_rel: &Path, text: &str) -> Vec<PathBuf> {
    let re = regex::Regex::new(r"#\[cfg\(test\)\]\s*(pub(\(\w+\))?\s+)?mod\s+(\w+)\s*;").unwrap();
    let dir = match file_rel.file_name().and_then(|f| f.to_str()) {
        Some("mod.rs" | "lib.rs" | "main.rs") => file_rel.parent().unwrap().to_path_buf(),
        _ => file_rel.with_extension(""),
    };
    re.captures_iter(text)
        .flat_map(|c| {
            let name = &c[3];
            [
                dir.join(format!("{name}.rs")),
                dir.join(name).join("mod.rs"),
            ]
        })
        .collect()
}

/// The top-level modules a file's code names: `crate::x`, `crate::{x, y::z}`, and `super::`
/// chains that climb out of its top-level module.
fn named_modules(module: &[String], text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let path = regex::Regex::new(r"\bcrate::([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    for c in path.captures_iter(text) {
        out.insert(c[1].to_owned());
    }
    let group = regex::Regex::new(r"\bcrate::\{").unwrap();
    for m in group.find_iter(text) {
        // The group's items at brace depth 1, split at its commas; each names a module first.
        let mut depth = 1usize;
        let mut items = vec![String::new()];
        for c in text[m.end()..].chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => items.push(String::new()),
                c => items.last_mut().unwrap().push(c),
            }
        }
        for item in items {
            let name: String = item
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    let supers = regex::Regex::new(r"\b((?:super::)+)([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    for c in supers.captures_iter(text) {
        let climbs = c[1].len() / "super::".len();
        if climbs >= module.len() {
            out.insert(c[2].to_owned());
        }
    }
    out
}

/// Every edge `from -> to` between different top-level modules, with a file that makes it.
fn edges() -> BTreeMap<(String, String), PathBuf> {
    let src = src();
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p.strip_prefix(&src).unwrap().to_path_buf());
            }
        }
    }
    let texts: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(src.join(f)).unwrap()))
        .collect();
    let test_files: BTreeSet<PathBuf> = texts
        .iter()
        .flat_map(|(f, t)| test_children(f, t))
        .collect();
    let mut out = BTreeMap::new();
    for (file, text) in &texts {
        let module = module_path(file);
        let Some(top) = module.first() else { continue };
        if NOT_LAYERS.contains(&top.as_str())
            || test_files.contains(file)
            || module.iter().any(|m| m == "tests")
        {
            continue;
        }
        for name in named_modules(&module, &without_inline_tests(text)) {
            let to = ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == name)
                .map(|(_, m)| m.to_string())
                .unwrap_or(name);
            if &to != top {
                out.entry((top.clone(), to)).or_insert_with(|| file.clone());
            }
        }
    }
    out
}

#[test]
fn the_layer_table_only_points_down() {
    let mut seen = BTreeSet::new();
    for (module, uses) in LAYERS {
        for u in *uses {
            assert!(
                seen.contains(u),
                "{module} may use {u}, which is not declared below it in LAYERS"
            );
        }
        assert!(seen.insert(*module), "{module} is declared twice");
    }
}

#[test]
fn every_top_level_module_has_a_place_in_the_layers() {
    let declared: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    for e in std::fs::read_dir(src()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if (p.is_dir() || p.extension().is_some_and(|x| x == "rs"))
            && !NOT_LAYERS.contains(&name.as_str())
        {
            assert!(
                declared.contains(name.as_str()),
                "module {name} is not in layering::LAYERS: give it a place (and the modules it may use)"
            );
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it_that_it_declares() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let roots: BTreeSet<&str> = ROOT_ITEMS.iter().map(|(i, _)| *i).collect();
    let mut wrong = Vec::new();
    for ((from, to), file) in edges() {
        let Some(uses) = allowed.get(from.as_str()) else {
            continue; // reported by every_top_level_module_has_a_place_in_the_layers
        };
        if !allowed.contains_key(to.as_str()) && !roots.contains(to.as_str()) {
            // Not a module of this crate (`crate::` in a string, a macro's own path).
            continue;
        }
        if !uses.contains(&to.as_str()) {
            wrong.push(format!("{from} -> {to} (in src/{})", file.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order (see proxy/src/layering.rs):\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_check_sees_paths_groups_and_climbing_supers_but_not_test_code() {
    let module = vec!["portal".to_owned(), "pipeline".to_owned()];
    let text = "use crate::config::X;\nuse crate::{auth::{A, B}, model, policy::ratelimit};\n\
                let x = super::super::http::app();\nlet y = super::Portal;\n\
                fn f() -> crate::Result<()> {}\n\
                #[cfg(test)]\nmod tests {\n    use crate::audit::Y;\n    fn g() { {} }\n}\n\
                use crate::dlp::Z;\n";
    let named = named_modules(&module, &without_inline_tests(text));
    let want: BTreeSet<String> = ["config", "auth", "model", "policy", "http", "Result", "dlp"]
        .map(String::from)
        .into();
    assert_eq!(named, want);
    assert_eq!(
        test_children(Path::new("upstream/h1.rs"), "#[cfg(test)]\nmod tests;\n"),
        [
            PathBuf::from("upstream/h1/tests.rs"),
            PathBuf::from("upstream/h1/tests/mod.rs")
        ]
    );
}
