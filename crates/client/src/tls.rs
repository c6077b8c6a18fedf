//! TLS with a client certificate to an engine's TCP listener ([`TlsFiles`]): the engine's
//! certificate is checked against the given CA, and the client presents its own.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// PEM files: the client's certificate chain and key, and the CA the engine's certificate
/// must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn invalid(path: &std::path::Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} {}: {e}", path.display()),
    )
}

impl TlsFiles {
    /// Reads the files into a client configuration (ring, TLS 1.2 and 1.3).
    pub(crate) fn client_config(&self) -> io::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca)
            .map_err(|e| invalid(&self.ca, "CA certificates", e))?
        {
            let cert = cert.map_err(|e| invalid(&self.ca, "CA certificates", e))?;
            roots
                .add(cert)
                .map_err(|e| invalid(&self.ca, "CA certificate", e))?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| invalid(&self.cert, "client certificate", e))?
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(&self.cert, "client certificate", e))?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| invalid(&self.key, "client key", e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid(&self.cert, "client certificate and key", e))?;
        Ok(Arc::new(config))
    }
}

/// Opens TLS over `tcp` to `addr` (`host:port`; the host is the name the certificate must
/// have).
pub(crate) async fn connect(
    files: &TlsFiles,
    addr: &str,
    tcp: tokio::net::TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let config = files.client_config()?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}
