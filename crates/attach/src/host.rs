//! Client half: open the attachables connection and serve the host's files over it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use dagr_metadata::{
    ATTACHABLES_PATH, ATTACHABLES_UPGRADE_TOKEN, CLIENT_METADATA_HEADER, ClientMetadata,
    EXPOSE_METHOD_HEADER,
};
use futures::{Stream, StreamExt};
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use crate::engine::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
use crate::proto::file_send_server::{FileSend, FileSendServer};
use crate::proto::file_sync_server::{FileSync, FileSyncServer};
use crate::proto::terminal::terminal_server::TerminalServer;
use crate::proto::tunnel::tunnel_server::TunnelServer;
use crate::proto::{
    Batch, Packet, PullDirRequest, PullFileRequest, PushRequest, PushResponse, StatRequest,
    StatResponse, SyncRequest, sync_request,
};
use crate::tree::{self, TreeError, TreeReader, TreeWriter, WriteTarget};
use crate::{AttachError, methods};
use dagr_pathfilter::PathFilter;

/// Largest error body read from a refusing engine.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What the client serves to the engine on its attachables connection.
#[derive(Debug, Clone)]
pub struct HostProviders {
    /// Relative host paths asked by the engine are resolved against this directory.
    pub root: PathBuf,
    /// Whether the engine may write to the host (FileSend: exports).
    pub allow_send: bool,
    /// When the "host" is a container's root filesystem (a nested client), every path is
    /// resolved inside it instead: absolute paths and symlinks stay within `rootfs`.
    pub container: Option<ContainerRoot>,
    /// The user's terminal, for interactive processes (`Container.terminal`).
    pub terminal: Option<std::sync::Arc<dyn crate::TerminalProvider>>,
    /// Network tunnels through this host (the engine dials targets here and listens on its
    /// ports); none without a provider.
    pub tunnel: Option<std::sync::Arc<dyn crate::TunnelProvider>>,
    /// The name of this host in listings: the engine reuses what it received from a host only
    /// for listings with the same name. Stable across sessions of one host (e.g. derived from
    /// its machine id) and unique to it; [`HostProviders::new`] makes a random one, which
    /// shares nothing with another session.
    pub host_id: String,
}

/// A container root filesystem (as seen from where it is mounted) and its working directory.
#[derive(Debug, Clone)]
pub struct ContainerRoot {
    pub rootfs: PathBuf,
    /// Absolute, inside the container.
    pub workdir: String,
    /// A file holding the pid of the container's process once it runs: paths are then
    /// resolved in `/proc/<pid>/root`, the container as its process sees it (mounts included),
    /// instead of in `rootfs`.
    pub pid_file: Option<PathBuf>,
}

impl ContainerRoot {
    /// The directory the container's paths are resolved in, found once per connection (the
    /// process does not change) in `resolved`. The runtime writes the pid file just after the
    /// process started, so a request of the process itself may come first: it waits for the
    /// file (briefly; without one, `rootfs` is used, and looked for again next time).
    async fn root(&self, resolved: &tokio::sync::OnceCell<PathBuf>) -> PathBuf {
        let Some(pid_file) = &self.pid_file else {
            return self.rootfs.clone();
        };
        let found = resolved
            .get_or_try_init(|| async {
                for _ in 0..PID_FILE_POLLS {
                    let pid = tokio::fs::read_to_string(pid_file)
                        .await
                        .ok()
                        .and_then(|pid| pid.trim().parse::<u32>().ok());
                    if let Some(pid) = pid {
                        return Ok(PathBuf::from(format!("/proc/{pid}/root")));
                    }
                    tokio::time::sleep(PID_FILE_POLL).await;
                }
                Err(())
            })
            .await;
        found.cloned().unwrap_or_else(|()| self.rootfs.clone())
    }
}

/// How long [`ContainerRoot::root`] waits for the pid file: `PID_FILE_POLLS` x `PID_FILE_POLL`.
const PID_FILE_POLLS: u32 = 400;
const PID_FILE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

impl HostProviders {
    /// Serves health and file sync (reads) relative to `root`; no writes until `allow_send` is set.
    pub fn new(root: PathBuf) -> Self {
        HostProviders {
            root,
            allow_send: false,
            container: None,
            terminal: None,
            tunnel: None,
            host_id: random_host_id(),
        }
    }

    /// The `/service/method` paths to announce.
    pub fn methods(&self) -> Vec<String> {
        let mut list = vec![
            methods::HEALTH_CHECK,
            methods::HEALTH_WATCH,
            methods::PULL_DIR,
            methods::PULL_FILE,
            methods::STAT,
            methods::SYNC_DIR,
        ];
        if self.allow_send {
            list.extend([methods::PUSH_DIR, methods::PUSH_FILE]);
        }
        if self.terminal.is_some() {
            list.push(methods::TERMINAL_SESSION);
        }
        if self.tunnel.is_some() {
            list.extend([methods::TUNNEL_DIAL, methods::TUNNEL_LISTEN]);
        }
        list.into_iter().map(String::from).collect()
    }

    /// The services, and what ends the tunnels when the connection stops being served.
    fn routes(&self) -> (tonic::service::Routes, crate::tunnel::TunnelStop) {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let files = HostFiles {
            root: self.root.clone(),
            container: self.container.clone(),
            container_root: Default::default(),
            host_id: self.host_id.clone(),
        };
        let mut routes =
            tonic::service::Routes::new(health).add_service(FileSyncServer::new(files.clone()));
        if self.allow_send {
            routes = routes.add_service(FileSendServer::new(files));
        }
        if let Some(provider) = &self.terminal {
            routes = routes.add_service(TerminalServer::new(
                crate::terminal::TerminalService::new(provider.clone()),
            ));
        }
        let (stop, stopped) = crate::tunnel::TunnelStop::new();
        if let Some(provider) = &self.tunnel {
            routes = routes.add_service(TunnelServer::new(crate::tunnel::TunnelService::new(
                provider.clone(),
                stopped,
            )));
        }
        (routes, stop)
    }
}

/// Performs the attachables handshake on `io`, a fresh connection to the engine: sends
/// `GET /sessionAttachables` with the metadata and method headers, reads the whole `101` and writes
/// the `0x00` ack. When this returns the engine has accepted and the session is ready; call
/// [`AttachedSession::serve`] to answer the engine's calls.
pub async fn attach<IO>(
    io: IO,
    metadata: &ClientMetadata,
    providers: HostProviders,
) -> Result<AttachedSession, AttachError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(AttachError::Http)?;
    let mut conn = std::pin::pin!(conn.with_upgrades());
    let mut request = Request::get(ATTACHABLES_PATH)
        .header(HOST, "dagger")
        .header(CLIENT_METADATA_HEADER, metadata.encode())
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, ATTACHABLES_UPGRADE_TOKEN);
    for method in providers.methods() {
        request = request.header(EXPOSE_METHOD_HEADER, method);
    }
    if let Some(network) = crate::network::own_network() {
        request = request.header(crate::network::NETWORK_HEADER, network);
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| AttachError::BadRequest(e.to_string()))?;
    let mut conn_done = false;
    let response = {
        let send = std::pin::pin!(sender.send_request(request));
        match futures::future::select(send, conn.as_mut()).await {
            futures::future::Either::Left((response, _)) => response.map_err(AttachError::Http)?,
            // The connection finishes as soon as the 101 is parsed (it hands its IO over to the
            // upgrade), possibly before the response future was polled again.
            futures::future::Either::Right((done, send)) => {
                conn_done = true;
                done.map_err(AttachError::Http)?;
                send.await.map_err(AttachError::Http)?
            }
        }
    };
    // No more requests on this connection: it ends after this response (or hands over its IO).
    drop(sender);
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY).collect();
        let body = if conn_done {
            body.await
        } else {
            futures::future::join(body, conn).await.0
        };
        let body = body.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(AttachError::Refused {
            status,
            message: error_message(&body),
        });
    }
    if !conn_done {
        conn.await.map_err(AttachError::Http)?;
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(AttachError::Upgrade)?;
    let mut io = TokioIo::new(upgraded);
    io.write_all(&[0]).await.map_err(AttachError::Io)?;
    io.flush().await.map_err(AttachError::Io)?;
    let (routes, tunnels) = providers.routes();
    Ok(AttachedSession {
        io: io.into_inner(),
        routes,
        tunnels,
    })
}

/// The message of a JSON error body (`{"error": ...}` or `{"message": ...}`), else the body as text.
fn error_message(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["error", "message"] {
            match map.get(key) {
                Some(serde_json::Value::String(message)) => return message.clone(),
                Some(serde_json::Value::Object(inner)) => {
                    if let Some(serde_json::Value::String(message)) = inner.get("message") {
                        return message.clone();
                    }
                }
                _ => {}
            }
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text
    }
}

/// An accepted attachables connection, ready to serve the engine's calls.
pub struct AttachedSession {
    io: Upgraded,
    routes: tonic::service::Routes,
    /// Dropped when serving stops: ends the tunnels.
    tunnels: crate::tunnel::TunnelStop,
}

impl std::fmt::Debug for AttachedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedSession").finish_non_exhaustive()
    }
}

impl AttachedSession {
    /// Serves gRPC on the connection until it ends; the engine closing it is a normal end.
    pub async fn serve(self) -> Result<(), AttachError> {
        self.serve_until(std::future::pending()).await
    }

    /// Serves gRPC until the connection ends or `shutdown` resolves; then closes gracefully (GOAWAY,
    /// in-flight calls finish, except tunnels, which end at once) and returns when the connection
    /// is closed.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> Result<(), AttachError> {
        let tunnels = self.tunnels;
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .serve_connection(self.io, TowerToHyperService::new(self.routes));
        let mut connection = std::pin::pin!(connection);
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            result = connection.as_mut() => return ended(result),
            () = shutdown.as_mut() => {}
        }
        // Tunnels live as long as the engine keeps them: they would hold the graceful shutdown.
        drop(tunnels);
        connection.as_mut().graceful_shutdown();
        ended(connection.await)
    }
}

/// The peer closing the connection (even abruptly, e.g. right after our GOAWAY) is a normal end.
fn ended(result: Result<(), hyper::Error>) -> Result<(), AttachError> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if peer_closed(&err) => Ok(()),
        Err(err) => Err(AttachError::Serve(err)),
    }
}

fn peer_closed(err: &hyper::Error) -> bool {
    if err.is_closed() || err.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

/// FileSync and FileSend over the host filesystem.
#[derive(Debug, Clone)]
struct HostFiles {
    root: PathBuf,
    container: Option<ContainerRoot>,
    /// The container's root once found (see [`ContainerRoot::root`]).
    container_root: std::sync::Arc<tokio::sync::OnceCell<PathBuf>>,
    host_id: String,
}

/// A host name that no other one has (128 random bits): what [`HostProviders::new`] uses.
pub fn random_host_id() -> String {
    format!("random-{}", hex::encode(rand::random::<[u8; 16]>()))
}

impl HostFiles {
    async fn resolve(&self, path: &str) -> Result<PathBuf, Status> {
        if let Some(c) = &self.container {
            let logical = if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("{}/{path}", c.workdir.trim_end_matches('/'))
            };
            let root = c.root(&self.container_root).await;
            return dagr_pathfilter::resolve_in_root(&root, &logical, true)
                .map_err(|e| Status::invalid_argument(e.to_string()));
        }
        Ok(if path.is_empty() {
            self.root.clone()
        } else if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            self.root.join(path)
        })
    }
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<Batch, Status>> + Send>>;

fn batch_stream(rx: tokio::sync::mpsc::Receiver<Result<Vec<Packet>, TreeError>>) -> BatchStream {
    ReceiverStream::new(rx)
        .map(|item| {
            item.map(|packets| Batch { packets })
                .map_err(|e| e.to_status())
        })
        .boxed()
}

async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, TreeError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(|e| e.to_status())
}

impl HostFiles {
    /// The directory a pull or sync reads and its filter; a missing or non-directory path is
    /// refused with a status, before streaming.
    async fn directory(&self, request: &PullDirRequest) -> Result<(PathBuf, PathFilter), Status> {
        let path = self.resolve(&request.path).await?;
        let filter = PathFilter::new(&request.include, &request.exclude).map_err(|e| {
            TreeError::Pattern {
                pattern: e.pattern,
                source: e.source,
            }
            .to_status()
        })?;
        let checked = path.clone();
        blocking(move || match std::fs::metadata(&checked) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(TreeError::NotADirectory { path: checked }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(TreeError::NotFound { path: checked })
            }
            Err(source) => Err(TreeError::Read {
                path: checked,
                source,
            }),
        })
        .await?;
        Ok((path, filter))
    }
}

#[tonic::async_trait]
impl FileSync for HostFiles {
    type PullDirStream = BatchStream;
    type PullFileStream = BatchStream;
    type SyncDirStream = BatchStream;

    async fn pull_dir(
        &self,
        request: tonic::Request<PullDirRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        let request = request.into_inner();
        let (path, filter) = self.directory(&request).await?;
        let rx = tree::spawn_reader(move |out| TreeReader::new(out).send_dir(&path, &filter));
        Ok(Response::new(batch_stream(rx)))
    }

    async fn sync_dir(
        &self,
        request: tonic::Request<tonic::Streaming<SyncRequest>>,
    ) -> Result<Response<BatchStream>, Status> {
        let mut requests = request.into_inner();
        let start = match requests.message().await? {
            Some(SyncRequest {
                item: Some(sync_request::Item::Start(start)),
            }) => start,
            _ => return Err(Status::invalid_argument("a sync starts with its request")),
        };
        let (path, filter) = self.directory(&start).await?;
        let name = match &self.container {
            Some(_) => crate::sync::RootName::Given(PathBuf::from(&start.path)),
            None => crate::sync::RootName::Canonical,
        };
        let (wants, wants_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let Some(sync_request::Item::Want(want)) = request.item else {
                    break;
                };
                if wants.send(want).await.is_err() {
                    break;
                }
            }
        });
        let host_id = self.host_id.clone();
        let rx = tree::spawn_reader(move |out| {
            crate::sync::serve_sync(out, &path, name, &filter, host_id, wants_rx)
        });
        Ok(Response::new(batch_stream(rx)))
    }

    async fn pull_file(
        &self,
        request: tonic::Request<PullFileRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        let path = self.resolve(&request.into_inner().path).await?;
        let checked = path.clone();
        blocking(move || match std::fs::metadata(&checked) {
            Ok(meta) if meta.is_file() => Ok(()),
            Ok(_) => Err(TreeError::NotAFile { path: checked }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(TreeError::NotFound { path: checked })
            }
            Err(source) => Err(TreeError::Read {
                path: checked,
                source,
            }),
        })
        .await?;
        let rx = tree::spawn_reader(move |out| TreeReader::new(out).send_file(&path));
        Ok(Response::new(batch_stream(rx)))
    }

    async fn stat(
        &self,
        request: tonic::Request<StatRequest>,
    ) -> Result<Response<StatResponse>, Status> {
        let path = self.resolve(&request.into_inner().path).await?;
        let header = blocking(move || {
            let meta = std::fs::symlink_metadata(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    TreeError::NotFound { path: path.clone() }
                } else {
                    TreeError::Read {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
            tree::header_for(b"", &path, &meta)
        })
        .await?;
        Ok(Response::new(StatResponse {
            header: Some(header),
        }))
    }
}

impl HostFiles {
    async fn push(
        &self,
        request: tonic::Request<tonic::Streaming<PushRequest>>,
        single_file: bool,
    ) -> Result<Response<PushResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| {
            Status::invalid_argument("push stream ended before its first message")
        })?;
        let target = first
            .target
            .ok_or_else(|| Status::invalid_argument("first push message has no target"))?;
        let path = self.resolve(&target.path).await?;
        let write_target = if single_file {
            WriteTarget::File {
                path,
                mode: target.mode,
            }
        } else {
            WriteTarget::Dir {
                root: path,
                wipe: target.wipe,
            }
        };
        let writer = blocking(move || TreeWriter::new(write_target)).await?;
        let rest = stream.map(|item| {
            item.map(|message| message.packets)
                .map_err(TreeError::Stream)
        });
        let batches = futures::stream::once(async move { Ok(first.packets) }).chain(rest);
        let stats = tree::write_stream(Box::pin(batches), writer)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(PushResponse {
            files: stats.files,
            dirs: stats.dirs,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
        }))
    }
}

#[tonic::async_trait]
impl FileSend for HostFiles {
    async fn push_dir(
        &self,
        request: tonic::Request<tonic::Streaming<PushRequest>>,
    ) -> Result<Response<PushResponse>, Status> {
        self.push(request, false).await
    }

    async fn push_file(
        &self,
        request: tonic::Request<tonic::Streaming<PushRequest>>,
    ) -> Result<Response<PushResponse>, Status> {
        self.push(request, true).await
    }
}
