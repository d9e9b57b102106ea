//! Reading multi-document YAML manifests: the same files `kubectl apply` takes. The one reader
//! of the proxy (`--manifests`, the ConfigMap the operator renders) and of
//! `portcullis-operator render`.
//!
//! Documents of our API group are parsed strictly (unknown fields are errors, as with
//! `kubectl apply --validate=strict`) and checked with [`crate::validate`] (what the CRD's
//! schema and CEL rules check, plus what they cannot), so a laptop user gets the answer the
//! apiserver and the operator give. `v1/Secret` documents supply secret values when the proxy
//! runs on a laptop; every other kind is ignored, so one file can hold a whole application.
//! Every error names the file, the document (1-based) and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::{McpPolicy, McpPortal, McpServer, validate};

/// Every resource found in a set of manifest files.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    /// McpServer documents, in file order.
    pub servers: Vec<McpServer>,
    /// McpPortal documents, in file order.
    pub portals: Vec<McpPortal>,
    /// McpPolicy documents, in file order.
    pub policies: Vec<McpPolicy>,
    /// Secret name -> key -> value, from `v1/Secret` documents.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Lists the manifest files of `path`: the file itself, or the `*.yaml`/`*.yml`/`*.json` files
/// directly inside a directory, sorted (hidden entries such as a ConfigMap's `..data` skipped).
/// A directory without any is an error.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    if !std::fs::metadata(path).map_err(read_err)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        let is_manifest = matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if is_manifest && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::NoManifests(path.to_owned()));
    }
    Ok(files)
}

/// Loads every manifest under `path` (a file or a directory).
pub fn load(path: &Path) -> Result<Manifests> {
    let mut out = Manifests::default();
    for file in manifest_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        parse_into(&mut out, &file, &text)?;
        out.files.push(file);
    }
    check_unique(&out)?;
    Ok(out)
}

/// Parses the documents of one file into `out`. `file` is only used in error messages.
pub fn parse_into(out: &mut Manifests, file: &Path, text: &str) -> Result<()> {
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let err = |kind: &str, field: &str, message: String| Error::Manifest {
            path: file.to_owned(),
            document,
            kind: kind.to_owned(),
            field: field.to_owned(),
            message,
        };
        let value: serde_yaml::Value = serde::Deserialize::deserialize(de)
            .map_err(|e| err("", ".", format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let map = value
            .as_mapping()
            .ok_or_else(|| err("", ".", "a document must be a mapping".into()))?;
        let api_version = map.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
        let kind = map.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("");
        let label = format!(" ({kind}/{name})");
        if kind.is_empty() {
            return Err(err("", "kind", "missing".into()));
        }
        let ours = api_version.starts_with(&format!("{}/", crate::GROUP));
        if ours && api_version != crate::API_VERSION {
            return Err(err(
                &label,
                "apiVersion",
                format!(
                    "unsupported version {api_version:?}; this release reads {}",
                    crate::API_VERSION
                ),
            ));
        }
        if ours || (api_version == "v1" && kind == "Secret") {
            if name.is_empty() {
                return Err(err(&label, "metadata.name", "missing".into()));
            }
            if let Some(reason) = invalid_dns_subdomain(name) {
                return Err(err(&label, "metadata.name", reason));
            }
        }
        let first = |problems: Vec<validate::Problem>| match problems.into_iter().next() {
            Some(p) => Err(err(&label, &p.field, p.message)),
            None => Ok(()),
        };
        match (ours, kind) {
            (true, "McpServer") => {
                let server: McpServer = strict(value, &label, &err)?;
                first(validate::server_problems(&server))?;
                out.servers.push(server);
            }
            (true, "McpPortal") => {
                let portal: McpPortal = strict(value, &label, &err)?;
                first(validate::portal_problems(&portal))?;
                out.portals.push(portal);
            }
            (true, "McpPolicy") => {
                let policy: McpPolicy = strict(value, &label, &err)?;
                first(validate::policy_problems(&policy))?;
                out.policies.push(policy);
            }
            (true, other) => {
                return Err(err(
                    &label,
                    "kind",
                    format!("unknown kind {other:?} (expected McpServer, McpPortal or McpPolicy)"),
                ));
            }
            (false, "Secret") if api_version == "v1" => {
                let data = secret_data(map).map_err(|(f, m)| err(&label, &f, m))?;
                out.secrets.insert(name.to_owned(), data);
            }
            // Documents of other kinds: one file may hold a whole application.
            _ => {}
        }
    }
    Ok(())
}

/// Deserializes with field paths in errors, and refuses unknown fields.
fn strict<T: DeserializeOwned>(
    value: serde_yaml::Value,
    label: &str,
    err: &dyn Fn(&str, &str, String) -> Error,
) -> Result<T> {
    let mut unknown = Vec::new();
    let mut track = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(value, &mut track);
    let parsed: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        err(label, &field, e.into_inner().to_string())
    })?;
    if let Some(field) = unknown.into_iter().find(|f: &String| {
        // kube's generated types read apiVersion/kind themselves; metadata is ObjectMeta's.
        !matches!(f.as_str(), "apiVersion" | "kind" | "status")
            && !f.starts_with("metadata.")
            && !f.starts_with("status.")
    }) {
        // serde_ignored marks Option layers with `?`; people do not write those.
        let field = field.replace(".?", "").replace("?.", "");
        return Err(err(label, &field, "unknown field".into()));
    }
    Ok(parsed)
}

/// Why `name` is not a DNS-1123 subdomain (what Kubernetes requires of these objects' names).
fn invalid_dns_subdomain(name: &str) -> Option<String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > 253 || !ok_chars || !ok_ends {
        Some(format!(
            "{name:?} is not a valid name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ))
    } else {
        None
    }
}

type SecretData = BTreeMap<String, Vec<u8>>;

fn secret_data(map: &serde_yaml::Mapping) -> std::result::Result<SecretData, (String, String)> {
    let mut out = BTreeMap::new();
    if let Some(data) = map.get("data").and_then(|d| d.as_mapping()) {
        for (k, v) in data {
            let key = k.as_str().unwrap_or_default().to_owned();
            let text = v.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| (format!("data.{key}"), "not valid base64".to_owned()))?;
            out.insert(key, bytes);
        }
    }
    if let Some(data) = map.get("stringData").and_then(|d| d.as_mapping()) {
        for (k, v) in data {
            let key = k.as_str().unwrap_or_default().to_owned();
            let text = v
                .as_str()
                .ok_or_else(|| (format!("stringData.{key}"), "must be a string".to_owned()))?;
            out.insert(key, text.as_bytes().to_vec());
        }
    }
    Ok(out)
}

/// Refuses two documents of one kind with the same name.
pub fn check_unique(m: &Manifests) -> Result<()> {
    fn dupes<'a>(kind: &'static str, names: impl Iterator<Item = &'a str>) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for n in names {
            if !seen.insert(n) {
                return Err(Error::Duplicate {
                    kind,
                    name: n.to_owned(),
                });
            }
        }
        Ok(())
    }
    dupes(
        "McpServer",
        m.servers.iter().filter_map(|s| s.metadata.name.as_deref()),
    )?;
    dupes(
        "McpPortal",
        m.portals.iter().filter_map(|s| s.metadata.name.as_deref()),
    )?;
    dupes(
        "McpPolicy",
        m.policies.iter().filter_map(|s| s.metadata.name.as_deref()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifests> {
        let mut m = Manifests::default();
        parse_into(&mut m, Path::new("test.yaml"), text)?;
        check_unique(&m)?;
        Ok(m)
    }

    const HEAD: &str = "apiVersion: portcullis.dev/v1alpha1\n";

    #[test]
    fn the_demo_manifest_parses_into_two_servers_and_one_portal() {
        let text = include_str!("../../examples/demo/portal.yaml");
        let m = parse(text).unwrap();
        assert_eq!(m.servers.len(), 2);
        assert_eq!(m.portals.len(), 1);
    }

    #[test]
    fn every_operator_example_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/operator");
        let m = load(&dir).unwrap();
        assert!(!m.servers.is_empty() && !m.portals.is_empty() && !m.policies.is_empty());
    }

    #[test]
    fn an_unknown_field_is_named_with_file_and_document() {
        let text = format!(
            "{HEAD}kind: McpPortal\nmetadata: {{name: p}}\nspec: {{public: true}}\n---\n{HEAD}kind: McpServer\nmetadata: {{name: s}}\nspec:\n  remote: {{url: 'http://x/mcp', trasnport: sse}}\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("test.yaml: document 2 (McpServer/s)"), "{e}");
        assert!(e.contains("spec.remote.trasnport: unknown field"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_field_path() {
        let text = format!(
            "{HEAD}kind: McpServer\nmetadata: {{name: s}}\nspec:\n  timeoutSeconds: soon\n  remote: {{url: 'http://x/mcp'}}\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("spec.timeoutSeconds"), "{e}");
    }

    #[test]
    fn a_server_with_both_remote_and_deployment_is_refused() {
        let text = format!(
            "{HEAD}kind: McpServer\nmetadata: {{name: s}}\nspec:\n  remote: {{url: 'http://x/mcp'}}\n  deployment: {{image: i, command: [x]}}\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("exactly one of remote and deployment"), "{e}");
    }

    #[test]
    fn an_unknown_detector_is_refused_naming_the_field_and_the_known_names() {
        let text = format!(
            "{HEAD}kind: McpPolicy\nmetadata: {{name: p}}\nspec:\n  dlp:\n  - name: r\n    detectors: [email, phoneNumber]\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("spec.dlp[0].detectors[1]"), "{e}");
        assert!(
            e.contains("phoneNumber") && e.contains("genericSecret"),
            "{e}"
        );
    }

    #[test]
    fn an_invalid_policy_is_refused_with_the_first_problem() {
        let text = format!(
            "{HEAD}kind: McpPolicy\nmetadata: {{name: p}}\nspec:\n  dlp:\n  - name: r\n    patterns: ['(']\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("(McpPolicy/p): spec.dlp[0].patterns[0]"), "{e}");
    }

    #[test]
    fn secrets_come_from_data_and_string_data_and_other_kinds_are_ignored() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\ndata: {a: aGVsbG8=}\nstringData: {b: world}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: whatever}\n";
        let m = parse(text).unwrap();
        assert_eq!(m.secrets["k"]["a"], b"hello");
        assert_eq!(m.secrets["k"]["b"], b"world");
    }

    #[test]
    fn duplicate_names_and_bad_yaml_are_errors() {
        let one = format!("{HEAD}kind: McpPortal\nmetadata: {{name: p}}\nspec: {{public: true}}\n");
        let e = parse(&format!("{one}---\n{one}")).unwrap_err().to_string();
        assert!(e.contains("defined more than once"), "{e}");
        let e = parse("kind: [unclosed").unwrap_err().to_string();
        assert!(
            e.contains("document 1") && e.contains("not valid YAML"),
            "{e}"
        );
    }

    #[test]
    fn other_api_versions_of_our_group_are_refused() {
        let text =
            "apiVersion: portcullis.dev/v2\nkind: McpPortal\nmetadata: {name: p}\nspec: {}\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("apiVersion") && e.contains("unsupported"), "{e}");
    }

    #[test]
    fn an_empty_directory_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("crds-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("no *.yaml"), "{e}");
    }
}
