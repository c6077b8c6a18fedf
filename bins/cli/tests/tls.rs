//! Remote TCP that lets no one else in: an engine with `--tls-cert`, `--tls-key` and
//! `--tls-client-ca` on its TCP listener (loopback here) answers `dagr` with `DAGR_TLS_*` set,
//! and refuses at the handshake a TLS client without a certificate, one with a certificate of
//! another CA, and a client without TLS. Without TLS, the engine refuses to listen beyond
//! loopback. Certificates are made by `openssl` for the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `name` (`name.pem`, `name.key`).
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// A leaf `name` signed by `ca`, with the extensions `ext`.
fn leaf(dir: &Path, name: &str, ca: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

const SERVER_EXT: &str = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n";
const CLIENT_EXT: &str =
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";

fn dagr_query(host: &str, tls: Option<(&Path, &str, &str)>) -> std::process::Output {
    let files = tls.map(|(dir, client, ca)| {
        [
            dir.join(format!("{client}.pem")),
            dir.join(format!("{client}.key")),
            dir.join(format!("{ca}.pem")),
        ]
        .map(|p| p.to_string_lossy().into_owned())
    });
    let envs: Vec<(&str, &str)> = match &files {
        Some([cert, key, ca]) => vec![
            ("DAGR_TLS_CERT", cert),
            ("DAGR_TLS_KEY", key),
            ("DAGR_TLS_CA", ca),
        ],
        None => Vec::new(),
    };
    common::run_dagr(
        &["--host", host, "query", "--progress", "quiet"],
        &envs,
        "{ version }",
    )
}

/// A TLS client that trusts `ca` and presents no certificate: what it reads after sending a
/// request (the engine refuses it before any request is read).
async fn without_certificate(addr: std::net::SocketAddr, ca: PathBuf) -> std::io::Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: dagr\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn only_clients_with_a_certificate_of_the_ca_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    ca(d, "other-ca");
    leaf(d, "server", "ca", SERVER_EXT);
    leaf(d, "client", "ca", CLIENT_EXT);
    leaf(d, "stranger", "other-ca", CLIENT_EXT);
    let path = |name: &str| d.join(name).to_string_lossy().into_owned();
    let (cert, key, client_ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let engine = dagr_testkit::EngineProcess::start(
        &common::engine_bin(),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &client_ca,
        ],
    );
    let host = engine.host();

    let ok = dagr_query(&host, Some((d, "client", "ca")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"version\""));

    let stranger = dagr_query(&host, Some((d, "stranger", "ca")));
    assert!(!stranger.status.success());
    let said = String::from_utf8_lossy(&stranger.stderr);
    assert!(said.contains("TLS: received fatal alert"), "{said}");
    let plain = dagr_query(&host, None);
    assert!(!plain.status.success());

    match without_certificate(engine.tcp, d.join("ca.pem")).await {
        Ok(bytes) => assert!(
            !String::from_utf8_lossy(&bytes).contains("HTTP/1.1"),
            "answered without a client certificate: {}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => assert!(
            e.to_string().to_lowercase().contains("certificate"),
            "refused for another reason: {e}"
        ),
    }

    // The engine says why it refuses to listen beyond loopback without TLS.
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(common::engine_bin())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--listen", "tcp://0.0.0.0:0", "--network", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--tls-client-ca"),
        "{stderr}"
    );
}
