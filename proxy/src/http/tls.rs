//! The portal's optional HTTPS listener (`spec.tls`): rustls (the workspace's one provider,
//! `ring`) with the server certificate and key from Secrets, and, when `clientCaFrom` is set,
//! client certificates requested and verified against that CA bundle. A verified certificate's
//! names become the request's [`PresentedCertificate`], which the access conditions read as
//! they read a certificate forwarded by a trusted ingress ([`super::client`]).
//!
//! Read once, when the proxy starts: a changed certificate takes effect at the next restart.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::{Manifests, Secrets};
use crate::error::{Error, Result};
use crate::model::CertificateFacts;

/// The client certificate presented on the request's own TLS connection (verified by the
/// listener against `spec.tls.clientCaFrom`): a request extension.
#[derive(Debug, Clone)]
pub struct PresentedCertificate(pub CertificateFacts);

/// The HTTPS listener of a portal: its acceptor and whether it asks for client certificates.
#[derive(Clone)]
pub struct Listener {
    /// Performs the handshake.
    pub acceptor: TlsAcceptor,
    /// Whether client certificates are requested (`clientCaFrom` set).
    pub client_certificates: bool,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("client_certificates", &self.client_certificates)
            .finish_non_exhaustive()
    }
}

fn config_error(portal: &str, field: &str, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("McpPortal {portal}: spec.tls.{field}: {what}"))
}

/// The listener of `spec.tls` of portal `name` (`None` without `spec.tls`), its Secrets read
/// from the manifests or `secrets_dir`. Errors name the field.
pub fn listener(
    manifests: &Manifests,
    name: &str,
    spec: &crds::McpPortalSpec,
    secrets_dir: &std::path::Path,
) -> Result<Option<Listener>> {
    let Some(tls) = &spec.tls else {
        return Ok(None);
    };
    crate::tls::install_crypto_provider();
    let secrets = Secrets::new(manifests, secrets_dir);
    let cert_pem = secrets.bytes(&tls.certificate_from)?;
    let key_pem = secrets.bytes(&tls.private_key_from)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| config_error(name, "certificateFrom", format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(config_error(
            name,
            "certificateFrom",
            "holds no PEM certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| config_error(name, "privateKeyFrom", format!("no PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(name, "certificateFrom", e))?;
    let client_certificates = tls.client_ca_from.is_some();
    let builder = match &tls.client_ca_from {
        Some(r) => {
            let ca_pem = secrets.bytes(r)?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca_pem) {
                let c =
                    c.map_err(|e| config_error(name, "clientCaFrom", format!("not PEM: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| config_error(name, "clientCaFrom", e))?;
            }
            if roots.is_empty() {
                return Err(config_error(
                    name,
                    "clientCaFrom",
                    "holds no PEM certificate",
                ));
            }
            // Asked of every client; a client without one is still served (it meets no
            // clientCertificate selector), one whose certificate does not verify is refused.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| config_error(name, "clientCaFrom", e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(name, "privateKeyFrom", e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Listener {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        client_certificates,
    }))
}

/// The names of the client certificate a finished handshake verified (the leaf), if any.
pub fn presented(conn: &rustls::ServerConnection) -> Option<PresentedCertificate> {
    let leaf = conn.peer_certificates()?.first()?;
    super::client::certificate_facts_der(leaf.as_ref(), SystemTime::now()).map(PresentedCertificate)
}
