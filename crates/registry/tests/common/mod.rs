//! Test harness: the busybox fixture image, a loopback `docker-registry`, skopeo, and a tiny
//! in-test HTTP server. Everything started here is stopped by a Drop guard.

#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagr_snapshot::Digest;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// The busybox fixture image of `dagr_testkit::image` (built once per test process).
pub struct Fixture {
    pub dir: PathBuf,
    pub layout: PathBuf,
    pub archive: PathBuf,
    pub manifest_digest: Digest,
    pub manifest: Vec<u8>,
    pub config_digest: Digest,
    pub config: Vec<u8>,
    pub layer_digest: Digest,
    pub layer: Vec<u8>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dagr-registry-fixture");
        let image = dagr_testkit::image::busybox_image(&dir);
        Fixture {
            layout: image.layout,
            archive: image.archive,
            manifest_digest: Digest::of_bytes(&image.manifest),
            config_digest: Digest::of_bytes(&image.config),
            layer_digest: Digest::of_bytes(&image.layer),
            manifest: image.manifest,
            config: image.config,
            layer: image.layer,
            dir,
        }
    })
}

fn free_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn http_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200")
        || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.0 200")
}

/// A `docker-registry` on 127.0.0.1 with its own config and data dir; killed on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with_tls(None)
    }

    /// With `tls = Some((certificate, key))` the registry serves https only.
    pub fn start_with_tls(tls: Option<(&Path, &Path)>) -> Self {
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let addr = format!("127.0.0.1:{}", free_port());
            let config = dir.path().join("config.yml");
            let mut yaml = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            );
            if let Some((certificate, key)) = tls {
                yaml.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    certificate.display(),
                    key.display()
                ));
            }
            std::fs::write(&config, yaml).unwrap();
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry must be installed (apt-get install docker-registry)");
            let mut registry = Registry { child, addr, dir };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let ready = if tls.is_some() {
                    std::net::TcpStream::connect(&registry.addr).is_ok()
                } else {
                    http_ok(&registry.addr)
                };
                if ready {
                    return registry;
                }
                if registry.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = registry.child.kill();
            let _ = registry.child.wait();
        }
        panic!("docker-registry did not start: {last_log}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs skopeo with a permissive policy and plain-http registries; panics with its stderr if it fails.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo must be installed");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A request as the in-test server handler sees it.
pub struct SeenRequest {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Bytes,
}

pub type Handler = Arc<dyn Fn(&SeenRequest) -> Response<Full<Bytes>> + Send + Sync>;

/// An HTTP/1.1 server on 127.0.0.1:<free port>; its accept loop is aborted on drop.
pub struct TestServer {
    pub addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(handler: Handler) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        async move {
                            use http_body_util::BodyExt as _;
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let seen = SeenRequest {
                                method: parts.method.clone(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().unwrap_or_default().to_string(),
                                authorization: parts
                                    .headers
                                    .get(http::header::AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string),
                                body,
                            };
                            Ok::<_, Infallible>(handler(&seen))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { addr, task }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn respond(
    status: u16,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    builder.body(Full::new(body.into())).unwrap()
}

/// A private CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
pub struct TestCertificates {
    pub dir: tempfile::TempDir,
    pub ca_pem: Vec<u8>,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
}

pub fn test_certificates() -> TestCertificates {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=dagr test ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    TestCertificates {
        ca_pem: std::fs::read(p("ca.pem")).unwrap(),
        server_certificate: p("server.pem"),
        server_key: p("server.key"),
        dir,
    }
}
