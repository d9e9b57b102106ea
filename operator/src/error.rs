//! The operator's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be turned into JSON for server-side apply.
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// YAML could not be written or read.
    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A manifest file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading McpServer/McpPortal/McpPolicy manifests failed (the shared reader in `crds`).
    #[error(transparent)]
    Manifests(#[from] crds::Error),
    /// A manifest document is malformed.
    #[error("{path}: document {document}{kind}: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// 1-based document index.
        document: usize,
        /// ` (Kind/name)` when known.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// Probing an MCP server failed.
    #[error("probing {url}: {message}")]
    Probe {
        /// The endpoint probed.
        url: String,
        /// What failed.
        message: String,
    },
    /// A cache's watch ended before its first list (the operator is stopping).
    #[error("the {0} cache was dropped before its first list")]
    StoreClosed(&'static str),
    /// A resource lacks a field the operator needs (name, namespace).
    #[error("{0} has no {1}")]
    MissingField(&'static str, &'static str),
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short label for metrics (`error` label of the reconcile counter).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize { .. } => "serialize",
            Error::Yaml(_) => "yaml",
            Error::Read { .. } => "read",
            Error::Manifest { .. } | Error::Manifests(_) => "manifest",
            Error::Probe { .. } => "probe",
            Error::StoreClosed(_) => "store_closed",
            Error::MissingField(..) => "missing_field",
        }
    }
}
