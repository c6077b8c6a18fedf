//! A real in-test engine-side HTTP server (hyper auto builder with upgrades on 127.0.0.1) whose
//! `/sessionAttachables` route calls `dagr_attach::accept`, and the client half connected to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use dagr_attach::{AttachablesClient, HostProviders};
use dagr_metadata::ClientMetadata;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const HANG: Duration = Duration::from_secs(120);

pub type Body = BoxBody<Bytes, hyper::Error>;

fn full(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_string()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// Aborts the task when dropped (test cleanup even on panic).
pub struct TaskGuard(pub JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct TestEngine {
    pub addr: SocketAddr,
    pub attached: mpsc::UnboundedReceiver<Result<AttachablesClient, dagr_attach::AttachError>>,
    _accept_loop: TaskGuard,
}

/// Starts the server. `refuse` makes `/sessionAttachables` answer 400 with a JSON error.
pub async fn start_engine(refuse: bool) -> TestEngine {
    start_engine_with(refuse, false).await
}

/// Starts the server; with `elsewhere` it treats every client as one on another host (it
/// drops the client's network identity from the handshake).
pub async fn start_engine_with(refuse: bool, elsewhere: bool) -> TestEngine {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, attached) = mpsc::unbounded_channel();
    let accept_loop = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        if req.uri().path() != dagr_metadata::ATTACHABLES_PATH {
                            let body = req.into_body().collect().await?.to_bytes();
                            return Ok::<_, hyper::Error>(full(
                                StatusCode::OK,
                                &String::from_utf8_lossy(&body),
                            ));
                        }
                        if refuse {
                            return Ok(full(
                                StatusCode::BAD_REQUEST,
                                r#"{"error":"client c1 already has an attachables connection"}"#,
                            ));
                        }
                        let header = req
                            .headers()
                            .get(dagr_metadata::CLIENT_METADATA_HEADER)
                            .map(|v| v.as_bytes().to_vec())
                            .unwrap_or_default();
                        if ClientMetadata::decode(&header).is_err() {
                            return Ok(full(
                                StatusCode::BAD_REQUEST,
                                r#"{"error":"bad metadata"}"#,
                            ));
                        }
                        if elsewhere {
                            req.headers_mut()
                                .remove(dagr_attach::network::NETWORK_HEADER);
                        }
                        match dagr_attach::accept(&mut req) {
                            Ok((response, pending)) => {
                                tokio::spawn(async move {
                                    let _ = tx.send(pending.finish().await);
                                });
                                Ok(response.map(|b| b.map_err(|n| match n {}).boxed()))
                            }
                            Err(err) => Ok(full(StatusCode::BAD_REQUEST, &err.to_string())),
                        }
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestEngine {
        addr,
        attached,
        _accept_loop: TaskGuard(accept_loop),
    }
}

pub fn metadata() -> ClientMetadata {
    ClientMetadata {
        client_id: "c1".into(),
        client_secret_token: "secret".into(),
        session_id: "s1".into(),
        client_hostname: "test-host".into(),
        client_version: "0.1.0".into(),
        labels: Default::default(),
        ..Default::default()
    }
}

/// Both halves connected: the engine's client and the client's serve task.
pub struct Pair {
    pub engine: TestEngine,
    pub client: AttachablesClient,
    pub serve: TaskGuard,
}

/// A pair whose client shares the engine's network (both run here).
pub async fn connect_pair(providers: HostProviders) -> Pair {
    connect_pair_with(providers, false).await
}

/// A pair whose client the engine treats as one on another host.
pub async fn connect_pair_elsewhere(providers: HostProviders) -> Pair {
    connect_pair_with(providers, true).await
}

async fn connect_pair_with(providers: HostProviders, elsewhere: bool) -> Pair {
    let mut engine = start_engine_with(false, elsewhere).await;
    let stream = TcpStream::connect(engine.addr).await.unwrap();
    let session = dagr_attach::attach(stream, &metadata(), providers)
        .await
        .unwrap();
    let serve = TaskGuard(tokio::spawn(async move {
        let _ = session.serve().await;
    }));
    let client = tokio::time::timeout(HANG, engine.attached.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    Pair {
        engine,
        client,
        serve,
    }
}
