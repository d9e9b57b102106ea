//! The crate's error type: reading manifests.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading McpServer, McpPortal and McpPolicy manifests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest file or directory could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A manifest document is invalid. `document` counts from 1 within the file.
    #[error("{path}: document {document}{kind}: {field}: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// 1-based index of the YAML document in the file.
        document: usize,
        /// ` (Kind/name)` when known, else empty.
        kind: String,
        /// Dotted path of the offending field (`.` when the whole document).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A directory holds no manifest files.
    #[error("{0}: no *.yaml, *.yml or *.json files in this directory")]
    NoManifests(PathBuf),
    /// Two documents of one kind share a name.
    #[error("{kind} {name:?} is defined more than once")]
    Duplicate {
        /// `McpServer`, `McpPortal` or `McpPolicy`.
        kind: &'static str,
        /// The name.
        name: String,
    },
}
