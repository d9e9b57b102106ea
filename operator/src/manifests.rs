//! Reading McpServer, McpPortal and McpPolicy documents from a file or a directory, for
//! `portcullis-operator render` (the same files `kubectl apply` and the proxy take).

use std::path::{Path, PathBuf};

use crds::{McpPolicy, McpPortal, McpServer};

use crate::error::{Error, Result};

/// The resources found in a set of manifests.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    /// McpServers, in file order.
    pub servers: Vec<McpServer>,
    /// McpPortals, in file order.
    pub portals: Vec<McpPortal>,
    /// McpPolicies, in file order.
    pub policies: Vec<McpPolicy>,
}

/// The manifest files of `path`: the file itself, or the `*.yaml`/`*.yml`/`*.json` files
/// directly inside a directory, sorted, hidden entries skipped.
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
        let p = entry.map_err(read_err)?.path();
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let ext = p.extension().and_then(|e| e.to_str());
        if !hidden && matches!(ext, Some("yaml" | "yml" | "json")) && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every manifest under `path`.
pub fn load(path: &Path) -> Result<Manifests> {
    let mut out = Manifests::default();
    for file in manifest_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        parse_into(&mut out, &file, &text)?;
    }
    Ok(out)
}

/// Parses the documents of one file; documents of other kinds are ignored.
pub fn parse_into(out: &mut Manifests, file: &Path, text: &str) -> Result<()> {
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let err = |kind: String, message: String| Error::Manifest {
            path: file.to_owned(),
            document,
            kind,
            message,
        };
        let value: serde_yaml::Value = serde::Deserialize::deserialize(de)
            .map_err(|e| err(String::new(), format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        if api_version != crds::API_VERSION {
            continue;
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_owned();
        let label = format!(" ({kind}/{name})");
        let parse_err = |e: serde_yaml::Error| err(label.clone(), e.to_string());
        match kind.as_str() {
            "McpServer" => out
                .servers
                .push(serde_yaml::from_value(value).map_err(parse_err)?),
            "McpPortal" => out
                .portals
                .push(serde_yaml::from_value(value).map_err(parse_err)?),
            "McpPolicy" => out
                .policies
                .push(serde_yaml::from_value(value).map_err(parse_err)?),
            other => return Err(err(label.clone(), format!("unknown kind {other:?}"))),
        }
    }
    Ok(())
}
