//! Reloading the manifests when they change.
//!
//! Polls a fingerprint of the files (path, size, mtime, content hash) instead of using inotify:
//! a ConfigMap volume updates by swapping a symlink, which inotify watchers routinely miss, and
//! a poll every couple of seconds costs nothing. A bad edit is logged and the running
//! configuration stays in place: nothing is lost.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{PortalConfig, manifests};

/// A fingerprint of every manifest file under a path.
pub fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    let files = manifests::manifest_files(path).ok()?;
    let mut h = Sha256::new();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(&f).ok()?);
    }
    Some(h.finalize().into())
}

/// Watches `path` and publishes every successfully resolved new configuration.
pub fn spawn(
    path: PathBuf,
    portal: String,
    secrets_dir: PathBuf,
    interval: Duration,
    tx: watch::Sender<std::sync::Arc<PortalConfig>>,
    shutdown: CancellationToken,
    on_result: impl Fn(bool) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = fingerprint(&path);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = fingerprint(&path);
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            let loaded = manifests::load(&path)
                .map_err(crate::error::Error::from)
                .and_then(|m| super::resolve(&m, &portal, &secrets_dir));
            match loaded {
                Ok(cfg) => {
                    tracing::info!(path = %path.display(), servers = cfg.servers.len(), "configuration reloaded");
                    on_result(true);
                    let _ = tx.send(std::sync::Arc::new(cfg));
                }
                Err(e) => {
                    on_result(false);
                    tracing::error!(error = %e, "configuration change rejected; still serving the previous configuration");
                }
            }
        }
    })
}
