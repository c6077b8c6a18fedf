//! Listeners and connections: every listener serves HTTP/1.1 and h2c (prior knowledge) on the same
//! socket through hyper-util's auto builder, with upgrades enabled for the attachables hijack.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::config::ListenAddr;
use crate::routes::Engine;
use crate::stack::EngineService;

/// How long a client may take to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener (TCP with its TLS acceptor when the engine has one).
pub enum Bound {
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
    Unix(UnixListener, PathBuf),
}

impl Bound {
    pub fn describe(&self) -> String {
        match self {
            Bound::Tcp(l, _) => match l.local_addr() {
                Ok(a) => format!("tcp://{a}"),
                Err(_) => "tcp://?".to_owned(),
            },
            Bound::Unix(_, p) => format!("unix://{}", p.display()),
        }
    }
}

/// Binds every address. Unix sockets get mode 0660 and a 0700 parent created if missing; a stale
/// socket file (nobody listening) is replaced, a live one is an error. TCP listeners speak TLS
/// with `tls` when given.
pub async fn bind(
    addrs: &[ListenAddr],
    tls: Option<&crate::tls::TlsSettings>,
) -> anyhow::Result<Vec<Bound>> {
    let acceptor = tls.map(crate::tls::acceptor).transpose()?;
    let mut out = Vec::new();
    for addr in addrs {
        match addr {
            ListenAddr::Tcp(a) => {
                let l = TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                if acceptor.is_some() {
                    tracing::info!(listener = %addr, "TLS with client certificates");
                }
                out.push(Bound::Tcp(l, acceptor.clone()));
            }
            ListenAddr::Unix(path) => {
                if let Some(parent) = path.parent()
                    && !tokio::fs::try_exists(parent).await.unwrap_or(false)
                {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .with_context(|| format!("creating {}", parent.display()))?;
                    tokio::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                        .await
                        .with_context(|| format!("setting the mode of {}", parent.display()))?;
                }
                if tokio::fs::try_exists(path).await.unwrap_or(false) {
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        anyhow::bail!("{addr}: another engine is already listening there");
                    }
                    tokio::fs::remove_file(path)
                        .await
                        .with_context(|| format!("removing stale socket {}", path.display()))?;
                }
                let l = UnixListener::bind(path).with_context(|| format!("binding {addr}"))?;
                tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                    .await
                    .with_context(|| format!("setting the mode of {}", path.display()))?;
                out.push(Bound::Unix(l, path.clone()));
            }
        }
    }
    Ok(out)
}

/// Serves connections from all listeners until `stop` turns true, then stops accepting, tears down
/// every session and lets open connections finish (bounded by `grace`).
pub async fn serve(
    listeners: Vec<Bound>,
    service: EngineService,
    engine: Arc<Engine>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accept_tasks = Vec::new();
    let mut sockets = Vec::new();
    for l in listeners {
        let service = service.clone();
        let engine = engine.clone();
        let graceful = graceful.clone();
        let stop = stop.clone();
        if let Bound::Unix(_, p) = &l {
            sockets.push(p.clone());
        }
        accept_tasks.push(tokio::spawn(accept_loop(
            l, service, engine, graceful, stop,
        )));
    }
    let _ = stop.wait_for(|s| *s).await;
    for t in accept_tasks {
        let _ = t.await;
    }
    for p in sockets {
        let _ = tokio::fs::remove_file(&p).await;
    }
    engine.registry.shutdown().await;
    match Arc::try_unwrap(graceful) {
        Ok(g) => {
            if tokio::time::timeout(grace, g.shutdown()).await.is_err() {
                tracing::warn!("connections still open after {grace:?}; closing them");
            }
        }
        Err(_) => tracing::warn!("connection tracker still shared; not waiting for connections"),
    }
}

async fn accept_loop(
    listener: Bound,
    service: EngineService,
    engine: Arc<Engine>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(Conn::Tcp(s)) => {
                let _ = s.set_nodelay(true);
                match &listener {
                    Bound::Tcp(_, Some(tls)) => {
                        // The handshake runs on its own task: a slow client holds up no one.
                        let (tls, service, engine) = (tls.clone(), service.clone(), engine.clone());
                        let peer = s.peer_addr().ok();
                        let watcher = graceful.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(s)).await {
                                Ok(Ok(stream)) => {
                                    spawn_conn(stream, &service, &engine, Some(&watcher));
                                }
                                Ok(Err(e)) => {
                                    tracing::info!(?peer, error = %e, "TLS handshake refused");
                                }
                                Err(_) => tracing::info!(?peer, "TLS handshake timed out"),
                            }
                        });
                    }
                    _ => {
                        spawn_conn(s, &service, &engine, Some(&graceful));
                    }
                }
            }
            Ok(Conn::Unix(s)) => {
                spawn_conn(s, &service, &engine, Some(&graceful));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = listener.describe(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Bound) -> std::io::Result<Conn> {
    match l {
        Bound::Tcp(l, _) => Ok(Conn::Tcp(l.accept().await?.0)),
        Bound::Unix(l, _) => Ok(Conn::Unix(l.accept().await?.0)),
    }
}

/// Serves one connection (HTTP/1.1 or h2c) on the engine's stack; `graceful` tracks it for
/// engine shutdown (connections of nested clients end with their exec instead).
pub fn spawn_conn<IO>(
    io: IO,
    service: &EngineService,
    engine: &Arc<Engine>,
    graceful: Option<&GracefulShutdown>,
) -> tokio::task::JoinHandle<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    engine.metrics.connection_accepted();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(1024)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service.clone()))
        .into_owned();
    let engine = engine.clone();
    match graceful {
        Some(g) => {
            let conn = g.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                engine.metrics.connection_closed();
            })
        }
        None => tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            engine.metrics.connection_closed();
        }),
    }
}
