//! Engine half: accept the hijacked `/sessionAttachables` connection and call the client's services.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dagr_metadata::EXPOSE_METHOD_HEADER;
use futures::StreamExt;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::io::{CloseHandle, WatchedIo};
use crate::methods;
use crate::proto::file_send_client::FileSendClient;
use crate::proto::file_sync_client::FileSyncClient;
use crate::proto::{
    PullDirRequest, PullFileRequest, PushRequest, PushTarget, StatRequest, SyncRequest,
    sync_request,
};
use crate::tree::{HostStat, TransferStats, TreeError, TreeReader, TreeWriter, WriteTarget};
use crate::{AttachError, tree};
use dagr_pathfilter::PathFilter;

/// HTTP/2 flow-control windows and frame size of the attachables connection (both sides): large
/// enough for bulk transfers on one stream, small enough to bound buffering.
pub(crate) const STREAM_WINDOW: u32 = 4 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 8 << 20;
pub(crate) const MAX_FRAME: u32 = 256 << 10;
/// HTTP/2 pings from the engine on the attachables connection.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Validates an attachables request (GET, HTTP/1.1, an `Upgrade` header, at least one
/// `X-Docker-Expose-Session-Grpc-Method` header) and returns the `101` response to send plus the
/// pending handshake. Metadata, session and duplicate-connection checks are the caller's, before this.
pub fn accept<B>(
    req: &mut Request<B>,
) -> Result<(Response<Empty<Bytes>>, PendingAttach), AttachError> {
    if req.method() != Method::GET {
        return Err(AttachError::BadRequest(format!(
            "method must be GET, got {}",
            req.method()
        )));
    }
    if req.version() != Version::HTTP_11 {
        return Err(AttachError::BadRequest(format!(
            "must be HTTP/1.1 (an upgrade), got {:?}",
            req.version()
        )));
    }
    let upgrade = req
        .headers()
        .get(UPGRADE)
        .cloned()
        .ok_or_else(|| AttachError::BadRequest("missing Upgrade header".into()))?;
    let shares_network = req
        .headers()
        .get(crate::network::NETWORK_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|theirs| Some(theirs) == crate::network::own_network());
    let mut announced = Vec::new();
    for value in req.headers().get_all(EXPOSE_METHOD_HEADER) {
        let value = value.to_str().map_err(|_| {
            AttachError::BadRequest(format!("{EXPOSE_METHOD_HEADER} header is not ASCII"))
        })?;
        for method in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if !method.starts_with('/') {
                return Err(AttachError::BadRequest(format!(
                    "announced method {method:?} is not a /service/method path"
                )));
            }
            announced.push(method.to_string());
        }
    }
    if announced.is_empty() {
        return Err(AttachError::BadRequest(format!(
            "no {EXPOSE_METHOD_HEADER} header: the client must announce the methods it serves"
        )));
    }
    let on_upgrade = hyper::upgrade::on(req);
    let mut response = Response::new(Empty::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    response.headers_mut().insert(UPGRADE, upgrade);
    Ok((
        response,
        PendingAttach {
            on_upgrade,
            methods: announced,
            shares_network,
        },
    ))
}

/// An accepted attachables request whose `101` is being sent.
pub struct PendingAttach {
    on_upgrade: hyper::upgrade::OnUpgrade,
    methods: Vec<String>,
    /// The client runs in the engine's own network namespace (its handshake named the
    /// engine's network, see [`crate::network`]): its host's ports are the engine's, so
    /// [`AttachablesClient::listen`] binds them in the engine itself.
    shares_network: bool,
}

impl std::fmt::Debug for PendingAttach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAttach")
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl PendingAttach {
    /// The methods the client announced.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// Awaits the upgrade (the `101` must be on its way), reads the one `0x00` ack byte and opens the
    /// gRPC channel over the connection. Put a timeout around it if the client may be hostile.
    pub async fn finish(self) -> Result<AttachablesClient, AttachError> {
        let upgraded = self.on_upgrade.await.map_err(AttachError::Upgrade)?;
        let mut io = TokioIo::new(upgraded);
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack)
            .await
            .map_err(AttachError::AckMissing)?;
        if ack[0] != 0 {
            return Err(AttachError::BadAck(ack[0]));
        }
        let (watched, closed, close) = WatchedIo::new(io);
        let slot = Arc::new(Mutex::new(Some(TokioIo::new(watched))));
        let connector = tower::service_fn(move |_uri: http::Uri| {
            let io = slot.lock().ok().and_then(|mut slot| slot.take());
            async move {
                io.ok_or_else(|| {
                    std::io::Error::other(
                        "the attachables connection is gone and cannot be reopened",
                    )
                })
            }
        });
        let channel = Endpoint::from_static("http://attachables")
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            // A client host that vanishes without closing its socket is noticed by missing pings.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_with_connector(connector)
            .await
            .map_err(AttachError::Channel)?;
        Ok(AttachablesClient {
            inner: Arc::new(Inner {
                channel,
                methods: self.methods,
                shares_network: self.shares_network,
                closed,
                close,
            }),
        })
    }
}

struct Inner {
    channel: Channel,
    methods: Vec<String>,
    shares_network: bool,
    closed: watch::Receiver<bool>,
    close: Arc<CloseHandle>,
}

/// The engine's handle on a client's attachables: typed calls of the announced gRPC methods.
/// Cloning shares the one connection; it closes when the last clone is dropped.
#[derive(Clone)]
pub struct AttachablesClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AttachablesClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachablesClient")
            .field("methods", &self.inner.methods)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl AttachablesClient {
    /// The methods the client announced.
    pub fn methods(&self) -> &[String] {
        &self.inner.methods
    }

    /// Resolves as soon as the connection ends (EOF or error on it), or at once if it already has.
    pub async fn closed(&self) {
        let mut closed = self.inner.closed.clone();
        // An error means the IO is gone, which is a close too.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Ends the connection now (for every clone): calls in flight fail, [`Self::closed`] resolves,
    /// and the client's serving side sees the connection end.
    pub fn close(&self) {
        self.inner.close.close();
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    fn check(&self, method: &'static str) -> Result<(), AttachError> {
        if self.inner.methods.iter().any(|m| m == method) {
            Ok(())
        } else {
            Err(AttachError::NotAnnounced { method })
        }
    }

    fn sync_client(&self) -> FileSyncClient<Channel> {
        FileSyncClient::new(self.inner.channel.clone())
    }

    fn send_client(&self) -> FileSendClient<Channel> {
        FileSendClient::new(self.inner.channel.clone())
    }

    /// Opens a terminal session on the client's user terminal (see [`crate::terminal`]); resolves
    /// once the client reported its size.
    pub async fn open_terminal(&self) -> Result<crate::RemoteTerminal, AttachError> {
        const METHOD: &str = methods::TERMINAL_SESSION;
        self.check(METHOD)?;
        let client = crate::proto::terminal::terminal_client::TerminalClient::new(
            self.inner.channel.clone(),
        );
        crate::terminal::open(client, METHOD).await
    }

    fn tunnel_client(&self) -> crate::proto::tunnel::tunnel_client::TunnelClient<Channel> {
        crate::proto::tunnel::tunnel_client::TunnelClient::new(self.inner.channel.clone())
    }

    /// Connects to `address` on the client's host (network "tcp" with "host:port", or "unix" with a
    /// path). The returned stream is the connection: reading gives the target's bytes, writing
    /// sends to it, and shutting down its write side half-closes. Resolves once the client is
    /// connected; a failed connect is an [`AttachError::Tunnel`] with the client's reason (see
    /// [`crate::tunnel`]). Dropping the stream closes the connection.
    pub async fn dial(
        &self,
        network: &str,
        address: &str,
    ) -> Result<crate::TunnelStream, AttachError> {
        self.check(methods::TUNNEL_DIAL)?;
        crate::tunnel::dial(self.tunnel_client(), network, address).await
    }

    /// Listens on `address` (e.g. "127.0.0.1:0") on the client's host; resolves once the client
    /// listens (see [`crate::tunnel`]). For a client in the engine's network namespace
    /// ([`crate::network`]) the engine binds a loopback address with an
    /// unprivileged port itself and the client only announces it (other addresses are the
    /// client's to bind, with its own privileges).
    pub async fn listen(&self, address: &str) -> Result<crate::RemoteListener, AttachError> {
        self.check(methods::TUNNEL_LISTEN)?;
        if self.inner.shares_network && crate::tunnel::can_listen_here(address) {
            crate::tunnel::listen_here(self.tunnel_client(), address).await
        } else {
            crate::tunnel::listen(self.tunnel_client(), address).await
        }
    }

    /// Asks `grpc.health.v1.Health/Check` for the overall status ("").
    pub async fn health_check(&self) -> Result<(), AttachError> {
        self.check(methods::HEALTH_CHECK)?;
        let response = HealthClient::new(self.inner.channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| AttachError::Unhealthy(status.to_string()))?;
        let status = response.into_inner().status;
        if status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(AttachError::Unhealthy(format!(
                "client reports status {}",
                ServingStatus::try_from(status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("unknown")
            )))
        }
    }

    /// Describes a host path (relative paths are relative to the client's working directory; a
    /// final symlink is not followed). A missing path is an [`AttachError::Rpc`] with code NotFound.
    pub async fn stat(&self, host_path: &str) -> Result<HostStat, AttachError> {
        const METHOD: &str = methods::STAT;
        self.check(METHOD)?;
        let rpc = |status| AttachError::Rpc {
            method: METHOD,
            path: host_path.to_string(),
            status,
        };
        let response = self
            .sync_client()
            .stat(StatRequest {
                path: host_path.to_string(),
            })
            .await
            .map_err(rpc)?;
        let header = response
            .into_inner()
            .header
            .ok_or_else(|| rpc(tonic::Status::internal("stat answer without header")))?;
        Ok(HostStat::from_header(&header))
    }

    /// Copies a host directory into the local directory `dest` (created; merged into if it exists),
    /// filtered by include/exclude patterns (see the crate docs of [`crate::tree`]).
    pub async fn pull_dir(
        &self,
        host_path: &str,
        include: &[String],
        exclude: &[String],
        dest: &Path,
    ) -> Result<TransferStats, AttachError> {
        const METHOD: &str = methods::PULL_DIR;
        self.check(METHOD)?;
        let stream = self
            .sync_client()
            .pull_dir(PullDirRequest {
                path: host_path.to_string(),
                include: include.to_vec(),
                exclude: exclude.to_vec(),
            })
            .await
            .map_err(|status| AttachError::Rpc {
                method: METHOD,
                path: host_path.to_string(),
                status,
            })?
            .into_inner();
        let target = WriteTarget::Dir {
            root: dest.to_path_buf(),
            wipe: false,
        };
        receive(METHOD, host_path, stream, target).await
    }

    /// Lists a host directory, filtered by include/exclude patterns: its entries' metadata and
    /// nothing of their content. The files wanted from it are fetched with the returned
    /// [`crate::PendingFetch`]; dropping it ends the call.
    pub async fn list_dir(
        &self,
        host_path: &str,
        include: &[String],
        exclude: &[String],
    ) -> Result<(crate::Listing, crate::PendingFetch), AttachError> {
        const METHOD: &str = methods::SYNC_DIR;
        self.check(METHOD)?;
        let (requests, requests_rx) = tokio::sync::mpsc::channel(4);
        let start = SyncRequest {
            item: Some(sync_request::Item::Start(PullDirRequest {
                path: host_path.to_string(),
                include: include.to_vec(),
                exclude: exclude.to_vec(),
            })),
        };
        // The channel is empty: the first send cannot wait.
        requests
            .send(start)
            .await
            .map_err(|_| AttachError::Transfer {
                method: METHOD,
                path: host_path.to_string(),
                source: TreeError::Cancelled,
            })?;
        let responses = self
            .sync_client()
            .sync_dir(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
            .await
            .map_err(|status| AttachError::Rpc {
                method: METHOD,
                path: host_path.to_string(),
                status,
            })?
            .into_inner();
        crate::sync::receive_listing(host_path, requests, responses).await
    }

    /// Copies one host file (symlinks followed) to the local path `dest` (parents created, replaced
    /// atomically).
    pub async fn pull_file(
        &self,
        host_path: &str,
        dest: &Path,
    ) -> Result<TransferStats, AttachError> {
        const METHOD: &str = methods::PULL_FILE;
        self.check(METHOD)?;
        let stream = self
            .sync_client()
            .pull_file(PullFileRequest {
                path: host_path.to_string(),
            })
            .await
            .map_err(|status| AttachError::Rpc {
                method: METHOD,
                path: host_path.to_string(),
                status,
            })?
            .into_inner();
        let target = WriteTarget::File {
            path: dest.to_path_buf(),
            mode: None,
        };
        receive(METHOD, host_path, stream, target).await
    }

    /// Writes the local directory `src` to the host directory `host_path` (created; merged into
    /// unless `wipe`, which empties it first).
    pub async fn push_dir(
        &self,
        src: &Path,
        host_path: &str,
        wipe: bool,
    ) -> Result<TransferStats, AttachError> {
        self.check(methods::PUSH_DIR)?;
        let target = PushTarget {
            path: host_path.to_string(),
            wipe,
            mode: None,
        };
        send(Push::Dir, target, src.to_path_buf(), self.send_client()).await
    }

    /// Writes the local file `src` to the host path `host_path` (parents created, replaced
    /// atomically), with `mode` or else the mode of `src`.
    pub async fn push_file(
        &self,
        src: &Path,
        host_path: &str,
        mode: Option<u32>,
    ) -> Result<TransferStats, AttachError> {
        self.check(methods::PUSH_FILE)?;
        let target = PushTarget {
            path: host_path.to_string(),
            wipe: false,
            mode,
        };
        send(Push::File, target, src.to_path_buf(), self.send_client()).await
    }
}

async fn receive(
    method: &'static str,
    host_path: &str,
    stream: tonic::Streaming<crate::proto::Batch>,
    target: WriteTarget,
) -> Result<TransferStats, AttachError> {
    let transfer = |source| AttachError::Transfer {
        method,
        path: host_path.to_string(),
        source,
    };
    let writer = tokio::task::spawn_blocking(move || TreeWriter::new(target))
        .await
        .map_err(|e| transfer(TreeError::Worker(e.to_string())))?
        .map_err(transfer)?;
    let batches = stream.map(|item| item.map(|batch| batch.packets).map_err(TreeError::Stream));
    tree::write_stream(batches, writer).await.map_err(transfer)
}

#[derive(Clone, Copy)]
enum Push {
    Dir,
    File,
}

/// Streams the local `src` as a push to the host; a local read failure wins over the remote error it
/// provokes. Owned arguments and no generic callbacks: the future must be `Send` for callers.
async fn send(
    kind: Push,
    target: PushTarget,
    src: PathBuf,
    mut client: FileSendClient<Channel>,
) -> Result<TransferStats, AttachError> {
    let method = match kind {
        Push::Dir => methods::PUSH_DIR,
        Push::File => methods::PUSH_FILE,
    };
    let host_path = target.path.clone();
    let batches = tree::spawn_reader(move |out| {
        let reader = TreeReader::new(out);
        match kind {
            Push::File => reader.send_file(&src),
            Push::Dir => reader.send_dir(&src, &PathFilter::default()),
        }
    });
    let local_error: Arc<Mutex<Option<TreeError>>> = Arc::new(Mutex::new(None));
    let requests = PushStream {
        batches,
        target: Some(target),
        local_error: local_error.clone(),
    };
    let result = match kind {
        Push::Dir => client.push_dir(requests).await,
        Push::File => client.push_file(requests).await,
    };
    let local = local_error.lock().ok().and_then(|mut slot| slot.take());
    if let Some(source) = local {
        return Err(AttachError::Transfer {
            method,
            path: host_path,
            source,
        });
    }
    let response = match result {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Err(AttachError::Rpc {
                method,
                path: host_path,
                status,
            });
        }
    };
    Ok(TransferStats {
        files: response.files,
        dirs: response.dirs,
        symlinks: response.symlinks,
        bytes: response.bytes,
    })
}

/// The request stream of a push: the reader's batches, the target in the first message; it ends
/// (without End, so the receiver discards the transfer) at a local failure, kept in `local_error`.
/// A named type rather than a boxed closure stream: tonic's client-streaming future is only `Send`
/// for every lifetime with a concrete stream type.
struct PushStream {
    batches: tokio::sync::mpsc::Receiver<Result<Vec<crate::proto::Packet>, TreeError>>,
    target: Option<PushTarget>,
    local_error: Arc<Mutex<Option<TreeError>>>,
}

impl futures::Stream for PushStream {
    type Item = PushRequest;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<PushRequest>> {
        match self.batches.poll_recv(cx) {
            std::task::Poll::Ready(Some(Ok(packets))) => {
                let target = self.target.take();
                std::task::Poll::Ready(Some(PushRequest { target, packets }))
            }
            std::task::Poll::Ready(Some(Err(err))) => {
                if let Ok(mut slot) = self.local_error.lock() {
                    *slot = Some(err);
                }
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
