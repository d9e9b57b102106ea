//! The portal's merged view of its upstreams: names, URIs and a deterministic order.
//!
//! Tools and prompts are named `<prefix>_<name>` (the prefix defaults to the McpServer name);
//! a name that would break the MCP rules (1-128 characters of `[A-Za-z0-9_.-]`) is sanitized
//! and, if needed, shortened with a hash so it stays unique and stable. Resource URIs are
//! rewritten to `portcullis://<prefix>/<original URI>` so a read routes back to its upstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rmcp::model::{JsonObject, Prompt, Resource, ResourceTemplate, Tool};
use sha2::{Digest, Sha256};

use crate::config::ServerConfig;
use crate::upstream::Lists;

/// Longest tool or prompt name MCP allows.
pub const MAX_NAME_LEN: usize = 128;
/// Scheme of rewritten resource URIs.
pub const URI_SCHEME: &str = "portcullis://";

/// SEP-2243 marker of a Base64-wrapped header value.
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// A tool as the portal exposes it.
#[derive(Debug, Clone)]
pub struct PortalTool {
    /// McpServer name.
    pub server: String,
    /// The tool's name at the upstream.
    pub upstream_name: String,
    /// The definition, renamed.
    pub tool: Tool,
    /// Whether the portal treats the tool as read-only (override, else `readOnlyHint == true`).
    pub read_only: bool,
    /// Whether a call may take the direct path to a stateless upstream (see [`fits_direct`]):
    /// decided once here, not on every call.
    pub direct: bool,
}

/// Whether a `tools/call` of `tool` can go the direct way: its name travels as a bare
/// `Mcp-Name` value, and its input schema asks for no `Mcp-Param-*` headers (rmcp computes
/// those; any `x-mcp-header` anywhere sends the call through rmcp).
pub fn fits_direct(tool: &Tool) -> bool {
    bare_header_value(&tool.name) && !mentions_param_header(&tool.input_schema)
}

/// The negation of rmcp's `requires_base64` (SEP-2243): printable ASCII, no surrounding space
/// or tab, not already shaped like the Base64 sentinel.
fn bare_header_value(v: &str) -> bool {
    let b = v.as_bytes();
    let padded = matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'));
    let printable = b.iter().all(|c| (0x20..=0x7e).contains(c));
    let sentinel = v.starts_with(BASE64_PREFIX) && v.ends_with(BASE64_SUFFIX);
    printable && !padded && !sentinel
}

fn mentions_param_header(schema: &JsonObject) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => m.iter().any(|(k, v)| k == "x-mcp-header" || walk(v)),
            serde_json::Value::Array(a) => a.iter().any(walk),
            _ => false,
        }
    }
    schema.iter().any(|(k, v)| k == "x-mcp-header" || walk(v))
}

/// A prompt as the portal exposes it.
#[derive(Debug, Clone)]
pub struct PortalPrompt {
    /// McpServer name.
    pub server: String,
    /// The prompt's name at the upstream.
    pub upstream_name: String,
    /// The definition, renamed.
    pub prompt: Prompt,
}

/// The merged catalog of all ready upstreams, in deterministic order.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// Tools sorted by exposed name.
    pub tools: Vec<PortalTool>,
    /// Prompts sorted by exposed name.
    pub prompts: Vec<PortalPrompt>,
    /// Resources with rewritten URIs, sorted by URI.
    pub resources: Vec<Resource>,
    /// Resource templates with rewritten URI templates, sorted.
    pub templates: Vec<ResourceTemplate>,
    tool_index: HashMap<String, usize>,
    prompt_index: HashMap<String, usize>,
    /// prefix -> McpServer name
    prefixes: BTreeMap<String, String>,
    /// McpServer name -> prefix
    server_prefix: BTreeMap<String, String>,
    /// SHA-256 over the exposed definitions: changes exactly when a list changes.
    pub hash: [u8; 32],
}

impl Catalog {
    /// Builds the merged catalog from each server's configuration and its last lists.
    pub fn build(servers: &[(ServerConfig, Arc<Lists>)]) -> Catalog {
        let mut c = Catalog::default();
        for (cfg, _) in servers {
            c.prefixes.insert(cfg.prefix.clone(), cfg.name.clone());
            c.server_prefix.insert(cfg.name.clone(), cfg.prefix.clone());
        }
        let mut taken = std::collections::HashSet::new();
        for (cfg, upstream) in servers {
            for tool in &upstream.tools {
                let ov = cfg.overrides.iter().find(|o| o.name == tool.name);
                if ov.is_some_and(|o| o.hidden) {
                    continue;
                }
                let read_only = ov.and_then(|o| o.read_only).unwrap_or_else(|| {
                    tool.annotations
                        .as_ref()
                        .and_then(|a| a.read_only_hint)
                        .unwrap_or(false)
                });
                let name = unique_name(&cfg.prefix, &tool.name, &mut taken);
                let mut exposed = tool.clone();
                exposed.name = name.into();
                c.tools.push(PortalTool {
                    server: cfg.name.clone(),
                    upstream_name: tool.name.to_string(),
                    direct: fits_direct(tool),
                    tool: exposed,
                    read_only,
                });
            }
            for prompt in &upstream.prompts {
                let name = unique_name(&cfg.prefix, &prompt.name, &mut taken);
                let mut exposed = prompt.clone();
                exposed.name = name;
                c.prompts.push(PortalPrompt {
                    server: cfg.name.clone(),
                    upstream_name: prompt.name.clone(),
                    prompt: exposed,
                });
            }
            for r in &upstream.resources {
                let mut r = r.clone();
                r.uri = rewrite_uri(&cfg.prefix, &r.uri);
                c.resources.push(r);
            }
            for t in &upstream.templates {
                let mut t = t.clone();
                t.uri_template = rewrite_uri(&cfg.prefix, &t.uri_template);
                c.templates.push(t);
            }
        }
        c.tools.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
        c.prompts.sort_by(|a, b| a.prompt.name.cmp(&b.prompt.name));
        c.resources.sort_by(|a, b| a.uri.cmp(&b.uri));
        c.templates
            .sort_by(|a, b| a.uri_template.cmp(&b.uri_template));
        c.tool_index = c
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| (t.tool.name.to_string(), i))
            .collect();
        c.prompt_index = c
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.prompt.name.clone(), i))
            .collect();
        c.hash = c.compute_hash();
        c
    }

    /// A tool by exposed name.
    pub fn tool(&self, name: &str) -> Option<&PortalTool> {
        self.tool_index.get(name).map(|&i| &self.tools[i])
    }

    /// A prompt by exposed name.
    pub fn prompt(&self, name: &str) -> Option<&PortalPrompt> {
        self.prompt_index.get(name).map(|&i| &self.prompts[i])
    }

    /// The server a name (tool or prompt) would belong to by its prefix, even when the server is
    /// down and its tools are gone: lets a call to a down server fail with a clear reason.
    pub fn server_for_name(&self, name: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .filter(|(p, _)| !p.is_empty())
            .find(|(p, _)| {
                name.len() > p.len() + 1
                    && name.starts_with(p.as_str())
                    && name.as_bytes()[p.len()] == b'_'
            })
            .map(|(_, s)| s.as_str())
    }

    /// Maps a portal resource URI to (McpServer name, upstream URI).
    pub fn route_uri(&self, uri: &str) -> Option<(String, String)> {
        if let Some(rest) = uri.strip_prefix(URI_SCHEME)
            && let Some((prefix, original)) = rest.split_once('/')
            && let Some(server) = self.prefixes.get(prefix)
            && !prefix.is_empty()
        {
            return Some((server.clone(), original.to_owned()));
        }
        // A server with an empty prefix keeps its URIs as they are.
        self.prefixes.get("").map(|s| (s.clone(), uri.to_owned()))
    }

    /// Rewrites an upstream URI of `server` into the portal's form.
    pub fn portal_uri(&self, server: &str, uri: &str) -> String {
        match self.server_prefix.get(server) {
            Some(p) => rewrite_uri(p, uri),
            None => uri.to_owned(),
        }
    }

    fn compute_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for t in &self.tools {
            h.update(serde_json::to_vec(&t.tool).unwrap_or_default());
        }
        for p in &self.prompts {
            h.update(serde_json::to_vec(&p.prompt).unwrap_or_default());
        }
        for r in &self.resources {
            h.update(serde_json::to_vec(r).unwrap_or_default());
        }
        for t in &self.templates {
            h.update(serde_json::to_vec(t).unwrap_or_default());
        }
        h.finalize().into()
    }
}

/// `portcullis://<prefix>/<uri>`, or the URI unchanged for an unprefixed server.
pub fn rewrite_uri(prefix: &str, uri: &str) -> String {
    if prefix.is_empty() {
        uri.to_owned()
    } else {
        format!("{URI_SCHEME}{prefix}/{uri}")
    }
}

/// Joins prefix and name, sanitizes to `[A-Za-z0-9_.-]{1,128}`, and keeps the result unique.
pub fn unique_name(
    prefix: &str,
    name: &str,
    taken: &mut std::collections::HashSet<String>,
) -> String {
    let joined = if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}_{name}")
    };
    let mut clean: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        clean.push('_');
    }
    let needs_hash = clean != joined || clean.len() > MAX_NAME_LEN || taken.contains(&clean);
    if needs_hash {
        let digest = Sha256::digest(joined.as_bytes());
        let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        clean.truncate(MAX_NAME_LEN - suffix.len() - 1);
        clean = format!("{clean}_{suffix}");
    }
    taken.insert(clean.clone());
    clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Transport;
    use rmcp::model::ToolAnnotations;
    use serde_json::{Value, json};

    fn server(name: &str, prefix: &str) -> ServerConfig {
        ServerConfig {
            name: name.into(),
            prefix: prefix.into(),
            timeout: std::time::Duration::from_secs(1),
            transport: Transport::Stdio {
                command: "x".into(),
                args: vec![],
                env: vec![],
            },
            overrides: vec![],
            oauth: None,
            identity: None,
        }
    }

    fn tool(name: &str, read_only: Option<bool>) -> Tool {
        let mut t = Tool::new(name.to_string(), "d", Arc::new(serde_json::Map::new()));
        if let Some(ro) = read_only {
            t.annotations = Some(ToolAnnotations::new().read_only(ro));
        }
        t
    }

    fn upstream(tools: Vec<Tool>) -> Arc<Lists> {
        Arc::new(Lists {
            tools,
            ..Default::default()
        })
    }

    #[test]
    fn tools_are_prefixed_sorted_and_routable() {
        let c = Catalog::build(&[
            (
                server("zeta", "zeta"),
                upstream(vec![tool("b", None), tool("a", Some(true))]),
            ),
            (
                server("alpha", "alpha"),
                upstream(vec![tool("x", Some(false))]),
            ),
        ]);
        let names: Vec<_> = c.tools.iter().map(|t| t.tool.name.to_string()).collect();
        assert_eq!(names, ["alpha_x", "zeta_a", "zeta_b"]);
        let t = c.tool("zeta_a").unwrap();
        assert_eq!(
            (t.server.as_str(), t.upstream_name.as_str(), t.read_only),
            ("zeta", "a", true)
        );
        assert!(!c.tool("zeta_b").unwrap().read_only, "no hint means write");
        assert_eq!(c.server_for_name("alpha_gone"), Some("alpha"));
        assert_eq!(c.server_for_name("nobody_x"), None);
    }

    #[test]
    fn invalid_and_overlong_names_are_sanitized_uniquely() {
        let mut taken = Default::default();
        let a = unique_name("srv", "has space/slash", &mut taken);
        assert!(a.starts_with("srv_has_space_slash_"), "{a}");
        let long = "t".repeat(300);
        let b = unique_name("srv", &long, &mut taken);
        assert_eq!(b.len(), MAX_NAME_LEN);
        let c1 = unique_name("srv", "dup", &mut taken);
        let c2 = unique_name("srv", "dup", &mut taken);
        assert_ne!(c1, c2);
        for n in [a, b, c1, c2] {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            );
        }
    }

    #[test]
    fn resource_uris_round_trip_through_the_portal_form() {
        let c = Catalog::build(&[
            (server("files", "files"), upstream(vec![])),
            (server("raw", ""), upstream(vec![])),
        ]);
        let portal = c.portal_uri("files", "file:///tmp/a.txt");
        assert_eq!(portal, "portcullis://files/file:///tmp/a.txt");
        assert_eq!(
            c.route_uri(&portal),
            Some(("files".into(), "file:///tmp/a.txt".into()))
        );
        assert_eq!(
            c.route_uri("test://static/1"),
            Some(("raw".into(), "test://static/1".into()))
        );
    }

    #[test]
    fn hidden_override_removes_a_tool_and_read_only_override_wins() {
        let mut s = server("s", "s");
        s.overrides = vec![
            crds::server::ToolOverride {
                name: "secret".into(),
                read_only: None,
                hidden: true,
            },
            crds::server::ToolOverride {
                name: "claims_ro".into(),
                read_only: Some(false),
                hidden: false,
            },
        ];
        let c = Catalog::build(&[(
            s,
            upstream(vec![
                tool("secret", Some(true)),
                tool("claims_ro", Some(true)),
            ]),
        )]);
        assert!(c.tool("s_secret").is_none());
        assert!(!c.tool("s_claims_ro").unwrap().read_only);
    }

    #[test]
    fn hash_changes_exactly_when_definitions_change() {
        let a = Catalog::build(&[(server("s", "s"), upstream(vec![tool("a", None)]))]);
        let b = Catalog::build(&[(server("s", "s"), upstream(vec![tool("a", None)]))]);
        let mut changed = tool("a", None);
        changed.description = Some("new".into());
        let c = Catalog::build(&[(server("s", "s"), upstream(vec![changed]))]);
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn tools_needing_rmcp_computed_headers_do_not_fit_the_direct_path() {
        let tool = |name: &str, schema: Value| {
            Tool::new(
                name.to_string(),
                "d",
                Arc::new(schema.as_object().unwrap().clone()),
            )
        };
        let plain = json!({"type": "object", "properties": {"q": {"type": "string"}}});
        assert!(fits_direct(&tool("search.v2_x-1", plain.clone())));
        // Names rmcp would Base64-wrap in Mcp-Name.
        for name in [" lead", "trail\t", "caf\u{e9}", "=?base64?abc?=", "nl\n"] {
            assert!(!fits_direct(&tool(name, plain.clone())), "{name:?}");
        }
        // x-mcp-header anywhere: on a property, nested, or in a $defs subschema.
        for schema in [
            json!({"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}),
            json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string", "x-mcp-header": "B"}}}}}),
            json!({"type": "object", "$defs": {"x": {"anyOf": [{"x-mcp-header": "X"}]}}}),
        ] {
            assert!(!fits_direct(&tool("t", schema.clone())), "{schema}");
        }
    }
}
