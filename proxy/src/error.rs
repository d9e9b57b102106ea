//! The proxy's error type.

use std::path::PathBuf;

/// Result with the proxy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the proxy outside a single request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the proxy reads itself (shadow-MCP records, classifier rules) could not be read;
    /// manifests are read by `crds` ([`Error::Manifests`]).
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading manifests failed (the API's reader, in `crds`): the message names the file,
    /// the document and the field.
    #[error(transparent)]
    Manifests(#[from] crds::Error),
    /// The configuration is consistent per document but not as a whole.
    #[error("configuration: {0}")]
    Config(String),
    /// A secret the configuration refers to is missing.
    #[error("secret {name}/{key} not found (looked in the manifests and in {dir})")]
    MissingSecret {
        /// Secret name.
        name: String,
        /// Key within the Secret.
        key: String,
        /// Directory searched for mounted secrets.
        dir: String,
    },
    /// Binding or serving a socket failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A shadow-MCP rules file is invalid.
    #[error("{path}: {message}")]
    Rules {
        /// The rules file.
        path: PathBuf,
        /// What is wrong, with the field.
        message: String,
    },
    /// An input file of a shadow-MCP scan cannot be read as a whole.
    #[error("{path}: {message}")]
    Scan {
        /// The input file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}
