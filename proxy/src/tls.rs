//! Outbound HTTPS: the identity provider's discovery and JWKS documents, upstream MCP servers and
//! their token endpoints.
//!
//! One rustls crypto provider is built into the workspace: `ring`, which the operator's kube
//! client also uses (two providers in one build would make rustls refuse to pick one). reqwest is
//! built without a provider of its own, so every client here is made by [`client_builder`], which
//! installs `ring` as the process default first.
//!
//! Certificates are checked against the platform's trust store (rustls-platform-verifier). A
//! private company CA is trusted by pointing `SSL_CERT_FILE` (a PEM bundle) or `SSL_CERT_DIR` at
//! it, as for most Linux programs; plain `http://` keeps working for loopback and in-cluster
//! traffic.

use std::sync::Once;

/// Installs the process-wide rustls crypto provider (idempotent, thread-safe).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means another provider was installed first (by an embedding program); that one
        // stays, which is what the embedding program asked for.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder with the crypto provider installed and `TCP_NODELAY` set (see
/// DESIGN.md: without it, SSE answers wait for delayed ACKs).
pub fn client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder().tcp_nodelay(true)
}
