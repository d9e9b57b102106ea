//! Secret values for resolution: Secret documents in the manifests first, then files mounted
//! at `<dir>/<name>/<key>` (how the operator mounts them in a pod).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crds::common::SecretKeyRef;

use super::Manifests;
use crate::error::{Error, Result};

/// Looks up secret values: Secret documents in the manifests first, then files mounted at
/// `<dir>/<name>/<key>`.
#[derive(Debug, Clone)]
pub struct Secrets<'a> {
    manifests: &'a BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    dir: PathBuf,
}

impl<'a> Secrets<'a> {
    /// A resolver over the manifests' secrets and a mount directory.
    pub fn new(manifests: &'a Manifests, dir: &Path) -> Self {
        Secrets {
            manifests: &manifests.secrets,
            dir: dir.to_owned(),
        }
    }

    /// The raw bytes of a secret key.
    pub fn bytes(&self, r: &SecretKeyRef) -> Result<Vec<u8>> {
        if let Some(v) = self.manifests.get(&r.name).and_then(|m| m.get(&r.key)) {
            return Ok(v.clone());
        }
        let path = self.dir.join(&r.name).join(&r.key);
        std::fs::read(&path).map_err(|_| Error::MissingSecret {
            name: r.name.clone(),
            key: r.key.clone(),
            dir: self.dir.display().to_string(),
        })
    }

    /// A secret key as text (trailing newline trimmed, as `kubectl create secret` files often
    /// have one).
    pub fn text(&self, r: &SecretKeyRef) -> Result<String> {
        let bytes = self.bytes(r)?;
        let s = String::from_utf8(bytes)
            .map_err(|_| Error::Config(format!("secret {}/{} is not UTF-8 text", r.name, r.key)))?;
        Ok(s.trim_end_matches(['\n', '\r']).to_owned())
    }
}
