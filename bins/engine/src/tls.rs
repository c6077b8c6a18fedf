//! TLS with client certificates on the engine's TCP listeners (`--tls-cert`, `--tls-key`,
//! `--tls-client-ca`): a client that presents no certificate, or one no CA of
//! `--tls-client-ca` signed, is refused at the handshake, before any request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The engine's certificate and key, and the CA its clients' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {what} {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{what} {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The acceptor of every TLS listener.
pub fn acceptor(settings: &TlsSettings) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(&settings.client_ca, "--tls-client-ca")? {
        roots
            .add(cert)
            .with_context(|| format!("--tls-client-ca {}", settings.client_ca.display()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("building the client certificate verifier")?;
    let chain = certificates(&settings.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .with_context(|| format!("reading --tls-key {}", settings.key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("--tls-cert and --tls-key do not make a certificate and its key")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
