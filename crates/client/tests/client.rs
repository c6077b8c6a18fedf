//! `connect`/`query`/`close` against a real in-test engine-side server (hyper auto builder with
//! upgrades, `dagr_attach::accept` on `/sessionAttachables`) over 127.0.0.1, a unix socket and a
//! stdio bridge process.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dagr_attach::AttachablesClient;
use dagr_client::{ClientError, ConnectOptions, EngineHost};
use dagr_metadata::ClientMetadata;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const HANG: Duration = Duration::from_secs(120);

type Body = BoxBody<Bytes, hyper::Error>;

fn answer(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
enum Event {
    Attached(AttachablesClient),
    Shutdown(String),
}

struct Engine {
    host: EngineHost,
    connections: Arc<AtomicUsize>,
    events: mpsc::UnboundedReceiver<Event>,
    _listener: TaskGuard,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Clone, Copy)]
enum Mode {
    Tcp,
    Unix,
    /// Requires basic auth with this token instead of metadata.
    Nested(&'static str),
}

async fn handle(
    req: Request<Incoming>,
    mode: Mode,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Response<Body>, hyper::Error> {
    let mut req = req;
    let client_id = match mode {
        Mode::Nested(token) => {
            let want = format!("Basic {}", base64_encode(&format!("{token}:")));
            if req.headers().get("authorization").map(|v| v.as_bytes()) != Some(want.as_bytes()) {
                let mut response = answer(StatusCode::UNAUTHORIZED, json!({"error": "bad token"}));
                response
                    .headers_mut()
                    .insert("www-authenticate", "Basic realm=\"dagr\"".parse().unwrap());
                return Ok(response);
            }
            "nested".to_string()
        }
        _ => {
            let header = req
                .headers()
                .get(dagr_metadata::CLIENT_METADATA_HEADER)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            match ClientMetadata::decode(&header) {
                Ok(md) => md.client_id,
                Err(err) => {
                    return Ok(answer(
                        StatusCode::BAD_REQUEST,
                        json!({"error": err.to_string()}),
                    ));
                }
            }
        }
    };
    match req.uri().path() {
        dagr_metadata::ATTACHABLES_PATH => match dagr_attach::accept(&mut req) {
            Ok((response, pending)) => {
                tokio::spawn(async move {
                    if let Ok(client) = pending.finish().await {
                        let _ = events.send(Event::Attached(client));
                    }
                });
                Ok(response.map(|b| b.map_err(|n| match n {}).boxed()))
            }
            Err(err) => Ok(answer(
                StatusCode::BAD_REQUEST,
                json!({"error": err.to_string()}),
            )),
        },
        "/query" => {
            let version = format!("{:?}", req.version());
            let body = req.into_body().collect().await?.to_bytes();
            let parsed: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            if parsed.get("fail").is_some() {
                return Ok(answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"errors": [{"message": "query failed on purpose"}]}),
                ));
            }
            Ok(answer(
                StatusCode::OK,
                json!({"data": {"echo": parsed, "clientId": client_id, "version": version}}),
            ))
        }
        "/shutdown" => {
            let _ = events.send(Event::Shutdown(client_id));
            Ok(answer(StatusCode::OK, json!({})))
        }
        _ => Ok(answer(
            StatusCode::NOT_FOUND,
            json!({"error": "no such route"}),
        )),
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn serve_conn<IO>(io: IO, mode: Mode, events: mpsc::UnboundedSender<Event>)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| handle(req, mode, events.clone()));
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .await;
    });
}

async fn start(mode: Mode) -> Engine {
    let (tx, events) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    match mode {
        Mode::Unix => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("engine.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    serve_conn(stream, mode, tx.clone());
                }
            });
            Engine {
                host: EngineHost::Unix(path),
                connections,
                events,
                _listener: TaskGuard(task),
                _dir: Some(dir),
            }
        }
        Mode::Tcp | Mode::Nested(_) => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    serve_conn(stream, mode, tx.clone());
                }
            });
            Engine {
                host: EngineHost::Tcp(addr.to_string()),
                connections,
                events,
                _listener: TaskGuard(task),
                _dir: None,
            }
        }
    }
}

fn options(host: EngineHost, workdir: PathBuf) -> ConnectOptions {
    ConnectOptions {
        host,
        session_id: None,
        client_id: None,
        token: None,
        workdir,
        labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
        hostname: "test-host".into(),
        attach: true,
        allow_send: false,
        terminal: None,
        traceparent: None,
        tunnel: None,
        cache_imports: Vec::new(),
        cache_exports: Vec::new(),
        host_id: None,
    }
}

async fn next_event(engine: &mut Engine) -> Event {
    tokio::time::timeout(HANG, engine.events.recv())
        .await
        .expect("no event")
        .expect("server gone")
}

/// Connects, checks the attachables serve the workdir, runs many concurrent queries, closes.
async fn full_session(mut engine: Engine) {
    let workdir = tempfile::tempdir().unwrap();
    std::fs::create_dir(workdir.path().join("proj")).unwrap();
    std::fs::write(workdir.path().join("proj/a.txt"), b"from the host").unwrap();
    let client = dagr_client::connect(options(engine.host.clone(), workdir.path().to_path_buf()))
        .await
        .unwrap();
    let md = client.metadata().clone();
    assert_eq!(md.client_id.len(), 32);
    assert_eq!(md.session_id.len(), 32);
    assert_eq!(md.client_secret_token.len(), 32);
    assert_ne!(md.client_id, md.session_id);
    assert_eq!(md.client_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(md.labels["k"], "v");

    // The session is ready when connect returns: the engine already holds the attachables.
    let Event::Attached(attachables) = next_event(&mut engine).await else {
        panic!("expected attach")
    };
    attachables.health_check().await.unwrap();
    let dest = tempfile::tempdir().unwrap();
    attachables
        .pull_dir("proj", &[], &[], dest.path())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dest.path().join("a.txt")).unwrap(),
        b"from the host"
    );

    // Many concurrent queries, one connection.
    let queries = (0..64).map(|i| {
        let client = &client;
        async move { client.query(json!({"query": format!("{{ n{i} }}")})).await }
    });
    let answers = futures::future::join_all(queries).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap();
        assert_eq!(answer["data"]["echo"]["query"], format!("{{ n{i} }}"));
        assert_eq!(answer["data"]["clientId"], md.client_id.as_str());
        assert_eq!(answer["data"]["version"], "HTTP/2.0");
    }
    assert_eq!(
        engine.connections.load(Ordering::SeqCst),
        2,
        "attachables + one query connection"
    );

    // A failed answer carries status and message.
    let err = client.query(json!({"fail": true})).await.unwrap_err();
    match &err {
        ClientError::Status {
            status,
            message,
            path,
            ..
        } => {
            assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(message, "query failed on purpose");
            assert_eq!(path, "/query");
        }
        other => panic!("unexpected {other}"),
    }

    assert!(!attachables.is_closed());
    tokio::time::timeout(HANG, client.close())
        .await
        .unwrap()
        .unwrap();
    // /shutdown came first, then the attachables connection closed.
    let Event::Shutdown(id) = next_event(&mut engine).await else {
        panic!("expected shutdown")
    };
    assert_eq!(id, md.client_id);
    tokio::time::timeout(HANG, attachables.closed())
        .await
        .expect("attachables not closed");
}

#[tokio::test]
async fn session_over_tcp() {
    full_session(start(Mode::Tcp).await).await;
}

#[tokio::test]
async fn session_over_unix_socket() {
    full_session(start(Mode::Unix).await).await;
}

const BRIDGE: &str = r#"
import os, socket, sys, threading
with open(sys.argv[2], "a") as pids:
    pids.write(f"{os.getpid()}\n")
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(d)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    os.write(1, d)
"#;

#[tokio::test]
async fn session_over_stdio_process() {
    let mut engine = start(Mode::Tcp).await;
    let EngineHost::Tcp(addr) = engine.host.clone() else {
        unreachable!()
    };
    let port = addr.rsplit_once(':').unwrap().1.to_string();
    let pids = tempfile::NamedTempFile::new().unwrap();
    let pid_file = pids.path().to_str().unwrap().to_string();
    engine.host = EngineHost::Stdio {
        program: "python3".into(),
        args: vec!["-c".into(), BRIDGE.into(), port, pid_file],
    };
    full_session(engine).await;
    // One process per connection; both are killed and reaped once the client is closed.
    let pids: Vec<u32> = std::fs::read_to_string(pids.path())
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        tokio::time::timeout(HANG, async {
            while proc_dir.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("bridge process {pid} was not reaped"));
    }
}

#[tokio::test]
async fn given_ids_are_used_and_a_request_carries_them() {
    let mut engine = start(Mode::Tcp).await;
    let workdir = tempfile::tempdir().unwrap();
    let mut opts = options(engine.host.clone(), workdir.path().to_path_buf());
    opts.client_id = Some("client-1".into());
    opts.session_id = Some("session-1".into());
    opts.token = Some("token-1".into());
    assert!(
        !format!("{opts:?}").contains("token-1"),
        "the token is not logged"
    );
    let client = dagr_client::connect(opts).await.unwrap();
    assert_eq!(client.metadata().client_id, "client-1");
    let Event::Attached(attachables) = next_event(&mut engine).await else {
        panic!("expected attach")
    };
    assert!(
        !attachables
            .methods()
            .iter()
            .any(|m| m == dagr_attach::methods::PUSH_DIR)
    );
    // Raw request, as the CLI's proxy sends it (HTTP/1-style headers are dropped).
    let request = Request::post("http://127.0.0.1:9/query?x=1")
        .header("connection", "keep-alive")
        .header("host", "127.0.0.1:9")
        .body(Full::new(Bytes::from_static(br#"{"query":"{ raw }"}"#)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["data"]["clientId"], "client-1");
    assert_eq!(value["data"]["echo"]["query"], "{ raw }");
    client.close().await.unwrap();
}

#[tokio::test]
async fn refused_attach_is_reported() {
    let engine = start(Mode::Tcp).await;
    let workdir = tempfile::tempdir().unwrap();
    let mut opts = options(engine.host.clone(), workdir.path().to_path_buf());
    // An empty token makes the server's metadata check fail with 400.
    opts.token = Some(String::new());
    let err = dagr_client::connect(opts).await.unwrap_err();
    match &err {
        ClientError::Attach {
            source: dagr_attach::AttachError::Refused { status, message },
            host,
            ..
        } => {
            assert_eq!(*status, StatusCode::BAD_REQUEST);
            assert!(message.contains("client_secret_token"), "{message}");
            assert_eq!(host, &engine.host.to_string());
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn unreachable_engine_names_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let host = EngineHost::Unix(dir.path().join("absent.sock"));
    let err = dagr_client::connect(options(host, dir.path().to_path_buf()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("absent.sock"), "{err}");
    let host = EngineHost::Stdio {
        program: "/nonexistent/dagr-engine".into(),
        args: vec![],
    };
    let err = dagr_client::connect(options(host, dir.path().to_path_buf()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/dagr-engine"),
        "{err}"
    );
}

#[tokio::test]
async fn nested_client_uses_basic_auth() {
    let mut engine = start(Mode::Nested("tok")).await;
    let EngineHost::Tcp(addr) = engine.host.clone() else {
        unreachable!()
    };
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let client = dagr_client::Client::from_session_env(port, "tok", None)
        .await
        .unwrap();
    let answer = client.query(json!({"query": "{ nested }"})).await.unwrap();
    assert_eq!(answer["data"]["clientId"], "nested");
    // Nested clients do not shut the session down.
    client.close().await.unwrap();
    assert!(engine.events.try_recv().is_err());

    let client = dagr_client::Client::from_session_env(port, "wrong", None)
        .await
        .unwrap();
    let err = client
        .query(json!({"query": "{ nested }"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Status { status, .. } if *status == StatusCode::UNAUTHORIZED),
        "{err}"
    );
}

/// The proxy forwards hyper server requests as they are, and every future is `Send`.
#[allow(dead_code)]
fn calls_are_send(client: dagr_client::Client, forwarded: Request<Incoming>, opts: ConnectOptions) {
    fn send<T: Send>(_: T) {}
    send(client.request(forwarded));
    send(client.query(json!({})));
    send(dagr_client::connect(opts));
    send(dagr_client::Client::from_session_env(1, "t", None));
    send(client.close());
}
