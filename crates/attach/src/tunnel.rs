//! The tunnel attachable, both halves: network connections through the client's host
//! (`dagr.tunnel.v1.Tunnel`, two bidirectional streams).
//!
//! - Client half: with a [`TunnelProvider`] (set in [`crate::HostProviders::tunnel`], e.g.
//!   [`HostTunnel`]) the client serves `Dial`, a connection from its host to a TCP or
//!   unix-socket target there, and `Listen`, a TCP listener on its host whose connections are
//!   relayed to the engine over the one stream, numbered.
//! - Engine half: [`crate::AttachablesClient::dial`] returns the connection as a
//!   [`TunnelStream`]; [`crate::AttachablesClient::listen`] returns a [`RemoteListener`] whose
//!   [`RemoteListener::accept`] yields one [`TunnelStream`] per accepted connection.
//!
//! Both directions of a connection are independent: shutting down the write side of a tunnel
//! stream half-closes the host's socket (`shutdown(Write)`) and its reading goes on until the
//! host's EOF, and the other way round. Bytes travel in chunks of at most 64 KiB through bounded
//! queues (and the HTTP/2 windows), so a slow reader slows its writer down instead of growing
//! buffers. The connections of one listener share its stream: one that is not read holds the
//! others up once its buffers are full.
//!
//! Nothing outlives its stream: when the engine drops its side (a dropped tunnel stream or
//! [`RemoteListener`], a reset, the attachables connection ending) the client closes the
//! sockets and ends the tasks of that tunnel, and the client no longer serving its connection
//! ends every tunnel.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::AttachError;
use crate::proto::tunnel::tunnel_client::TunnelClient;
use crate::proto::tunnel::tunnel_server::Tunnel;
use crate::proto::tunnel::{
    ConnData, DialRequest, DialResponse, DialTarget, ListenRequest, ListenResponse, dial_request,
    dial_response, listen_request, listen_response,
};

/// Reads at most [`CHUNK`] bytes into `buf` (after what it holds), reserving room first.
async fn read_chunk<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    buf.clear();
    buf.reserve(CHUNK);
    let mut limited = (&mut *buf).limit(CHUNK);
    reader.read_buf(&mut limited).await
}

mod stream;
pub use stream::TunnelStream;

/// Largest data chunk.
const CHUNK: usize = 64 << 10;
/// Messages queued per direction of a tunnel's stream.
const STREAM_DEPTH: usize = 16;
/// Chunks queued per direction of one connection, between its socket or [`TunnelStream`] and
/// the tunnel's stream.
const CONN_DEPTH: usize = 4;
/// Accepted connections the engine's [`RemoteListener`] holds before they are taken.
const ACCEPT_DEPTH: usize = 16;
/// How long the client waits for the engine's first message (the target or address).
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client tries to connect to a dial target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the engine waits for the client's answer to a dial or listen (the client's connect
/// timeout plus some).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The client's side of tunnels, implemented by clients. The client relays the connections
/// itself; the provider hears about what happens (e.g. to tell its user).
pub trait TunnelProvider: Send + Sync + std::fmt::Debug + 'static {
    /// The engine listens on this host: `address` is where (for a message to the user).
    fn listening(&self, address: SocketAddr) {
        let _ = address;
    }
}

/// A [`TunnelProvider`] that tells nobody.
#[derive(Debug, Default)]
pub struct HostTunnel;

impl TunnelProvider for HostTunnel {}

// ---------------------------------------------------------------------------------------------
// Client half.

/// Ends every tunnel of a connection when dropped (the connection is no longer served).
#[derive(Debug)]
pub(crate) struct TunnelStop {
    _sender: watch::Sender<()>,
}

impl TunnelStop {
    pub(crate) fn new() -> (Self, watch::Receiver<()>) {
        let (sender, receiver) = watch::channel(());
        (TunnelStop { _sender: sender }, receiver)
    }
}

/// Resolves once the [`TunnelStop`] is dropped.
async fn stopped(stop: &mut watch::Receiver<()>) {
    while stop.changed().await.is_ok() {}
}

/// Serves `Tunnel/Dial` and `Tunnel/Listen` on the client's host.
#[derive(Debug, Clone)]
pub(crate) struct TunnelService {
    provider: Arc<dyn TunnelProvider>,
    stop: watch::Receiver<()>,
}

impl TunnelService {
    pub(crate) fn new(provider: Arc<dyn TunnelProvider>, stop: watch::Receiver<()>) -> Self {
        TunnelService { provider, stop }
    }
}

type DialStream = Pin<Box<dyn Stream<Item = Result<DialResponse, Status>> + Send>>;
type ListenStream = Pin<Box<dyn Stream<Item = Result<ListenResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Tunnel for TunnelService {
    type DialStream = DialStream;
    type ListenStream = ListenStream;

    async fn dial(
        &self,
        request: Request<Streaming<DialRequest>>,
    ) -> Result<Response<DialStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        tokio::spawn(host_dial(request.into_inner(), tx, self.stop.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }

    async fn listen(
        &self,
        request: Request<Streaming<ListenRequest>>,
    ) -> Result<Response<ListenStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        tokio::spawn(host_listen(
            request.into_inner(),
            tx,
            self.provider.clone(),
            self.stop.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}

fn dial_message(item: dial_response::Item) -> DialResponse {
    DialResponse { item: Some(item) }
}

fn listen_message(item: listen_response::Item) -> ListenResponse {
    ListenResponse { item: Some(item) }
}

/// An I/O error without the " (os error N)" suffix ("Connection refused").
fn io_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Connects to a dial target on this host; the error is the message for the engine.
async fn connect(target: &DialTarget) -> Result<(Reader, Writer), String> {
    let address = &target.address;
    let failed = |err: std::io::Error| format!("connect {address}: {}", io_text(&err));
    match target.network.as_str() {
        "tcp" => {
            let socket = TcpStream::connect(address.as_str()).await.map_err(failed)?;
            // Relayed protocols may be interactive: no batching of small writes.
            let _ = socket.set_nodelay(true);
            let (reader, writer) = socket.into_split();
            Ok((Box::new(reader), Box::new(writer)))
        }
        "unix" => {
            let socket = UnixStream::connect(address).await.map_err(failed)?;
            let (reader, writer) = socket.into_split();
            Ok((Box::new(reader), Box::new(writer)))
        }
        other => Err(format!(
            "unsupported network {other:?} (\"tcp\" or \"unix\")"
        )),
    }
}

/// The first message of a tunnel's request stream; `None` when the engine went away (nothing to
/// answer), `Some(None)` when it did not send one in time.
async fn first_message<T>(
    inbound: &mut Streaming<T>,
    tx: &mpsc::Sender<impl Send>,
    stop: &mut watch::Receiver<()>,
) -> Option<Option<T>> {
    tokio::select! {
        first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()) => match first {
            Ok(Ok(first)) => Some(first),
            Ok(Err(_)) => None,
            Err(_) => Some(None),
        },
        () = tx.closed() => None,
        () = stopped(stop) => None,
    }
}

/// One dial on the client's host: connects, then relays until both directions ended or the
/// engine went away.
async fn host_dial(
    mut inbound: Streaming<DialRequest>,
    tx: mpsc::Sender<DialResponse>,
    mut stop: watch::Receiver<()>,
) {
    let fail = |message: String| dial_message(dial_response::Item::Error(message));
    let target = match first_message(&mut inbound, &tx, &mut stop).await {
        None => return,
        Some(Some(DialRequest {
            item: Some(dial_request::Item::Target(target)),
        })) => target,
        Some(_) => {
            let message = "the first message of a dial must name its target".to_string();
            let _ = tx.send(fail(message)).await;
            return;
        }
    };
    let connected = tokio::select! {
        connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&target)) => connected,
        () = tx.closed() => return,
        () = stopped(&mut stop) => return,
    };
    let (reader, writer) = match connected {
        Ok(Ok(halves)) => halves,
        Ok(Err(message)) => {
            let _ = tx.send(fail(message)).await;
            return;
        }
        Err(_) => {
            let message = format!(
                "connect {}: timed out after {}s",
                target.address,
                CONNECT_TIMEOUT.as_secs()
            );
            let _ = tx.send(fail(message)).await;
            return;
        }
    };
    if tx
        .send(dial_message(dial_response::Item::Connected(true)))
        .await
        .is_err()
    {
        return;
    }
    tokio::select! {
        () = relay_dial(inbound, reader, writer, tx, target.address) => {}
        () = stopped(&mut stop) => {}
    }
}

/// The engine went away (its stream failed, or it dropped the response stream).
struct Gone;

/// Relays a connected dial both ways. Returns when both directions ended, or at once when the
/// engine went away; the sockets close when the halves drop.
async fn relay_dial(
    mut inbound: Streaming<DialRequest>,
    mut reader: Reader,
    mut writer: Writer,
    tx: mpsc::Sender<DialResponse>,
    address: String,
) {
    // Engine -> target. The end of the engine's stream half-closes the target connection.
    let up = async move {
        let mut ahead = None;
        loop {
            let message = match ahead.take() {
                Some(message) => message,
                None => inbound.message().await,
            };
            match message {
                Ok(Some(DialRequest {
                    item: Some(dial_request::Item::Data(data)),
                })) => match watching(&mut inbound, &mut ahead, writer.write_all(&data)).await {
                    Err(Gone) => return Err(Gone),
                    Ok(Ok(())) => {}
                    // The target does not take bytes any more: this direction is over (the
                    // other one goes on until the target's EOF).
                    Ok(Err(_)) => return Ok(()),
                },
                Ok(Some(_)) => {}
                Ok(None) => {
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                Err(_) => return Err(Gone),
            }
        }
    };
    // Target -> engine. The target's EOF ends the response stream (`tx` dropped).
    let down = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            let read = tokio::select! {
                read = read_chunk(&mut reader, &mut buf) => read,
                () = tx.closed() => return Err(Gone),
            };
            match read {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    let data = dial_message(dial_response::Item::Data(buf.split_to(n).freeze()));
                    if tx.send(data).await.is_err() {
                        return Err(Gone);
                    }
                }
                Err(err) => {
                    let message = format!("read {address}: {}", io_text(&err));
                    let _ = tx
                        .send(dial_message(dial_response::Item::Error(message)))
                        .await;
                    return Ok(());
                }
            }
        }
    };
    let mut up = pin!(up);
    let mut down = pin!(down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        let result = tokio::select! {
            result = &mut up, if !up_done => {
                up_done = true;
                result
            }
            result = &mut down, if !down_done => {
                down_done = true;
                result
            }
        };
        if result.is_err() {
            return;
        }
    }
}

/// Runs `work` while reading the engine's stream one message ahead (into `ahead`), so that the
/// stream failing (the engine went away) interrupts work that waits on a socket.
async fn watching<T, F: Future>(
    inbound: &mut Streaming<T>,
    ahead: &mut Option<Result<Option<T>, Status>>,
    work: F,
) -> Result<F::Output, Gone> {
    let mut work = pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Ok(output),
            message = inbound.message(), if ahead.is_none() => {
                let failed = message.is_err();
                *ahead = Some(message);
                if failed {
                    return Err(Gone);
                }
            }
        }
    }
}

/// One listener on the client's host: binds, then relays its connections until the engine ends
/// the stream or goes away.
async fn host_listen(
    mut inbound: Streaming<ListenRequest>,
    tx: mpsc::Sender<ListenResponse>,
    provider: Arc<dyn TunnelProvider>,
    mut stop: watch::Receiver<()>,
) {
    let fail = |message: String| listen_message(listen_response::Item::Error(message));
    let address = match first_message(&mut inbound, &tx, &mut stop).await {
        None => return,
        Some(Some(ListenRequest {
            item: Some(listen_request::Item::Address(address)),
        })) => address,
        Some(Some(ListenRequest {
            item: Some(listen_request::Item::Announce(address)),
        })) => {
            host_announce(&address, inbound, tx, provider, stop).await;
            return;
        }
        Some(_) => {
            let message = "the first message of a listen must name its address".to_string();
            let _ = tx.send(fail(message)).await;
            return;
        }
    };
    let (listener, bound) = match bind(&address).await {
        Ok(bound) => bound,
        Err(message) => {
            let _ = tx.send(fail(message)).await;
            return;
        }
    };
    if !report_listening(&tx, provider.as_ref(), bound).await {
        return;
    }
    tokio::select! {
        () = relay_listen(listener, inbound, tx) => {}
        () = stopped(&mut stop) => {}
    }
}

/// A TCP listener at `address` and the address it is bound to, or why not.
async fn bind(address: &str) -> Result<(TcpListener, SocketAddr), String> {
    let bound = match TcpListener::bind(address).await {
        Ok(listener) => listener.local_addr().map(|bound| (listener, bound)),
        Err(err) => Err(err),
    };
    bound.map_err(|err| format!("listen {address}: {}", io_text(&err)))
}

/// Answers the engine that this host listens at `bound` and tells the provider; `false` when
/// the engine is gone.
async fn report_listening(
    tx: &mpsc::Sender<ListenResponse>,
    provider: &dyn TunnelProvider,
    bound: SocketAddr,
) -> bool {
    let listening = listen_message(listen_response::Item::Listening(bound.to_string()));
    if tx.send(listening).await.is_err() {
        return false;
    }
    provider.listening(bound);
    true
}

/// The engine listens itself at `address` (this host's network is the engine's): the client
/// answers, tells its provider, and holds on until either side ends the stream.
async fn host_announce(
    address: &str,
    mut inbound: Streaming<ListenRequest>,
    tx: mpsc::Sender<ListenResponse>,
    provider: Arc<dyn TunnelProvider>,
    mut stop: watch::Receiver<()>,
) {
    let bound: SocketAddr = match address.parse() {
        Ok(bound) => bound,
        Err(err) => {
            let message = format!("the engine announces a bad address {address:?}: {err}");
            let _ = tx
                .send(listen_message(listen_response::Item::Error(message)))
                .await;
            return;
        }
    };
    if !report_listening(&tx, provider.as_ref(), bound).await {
        return;
    }
    loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
            () = tx.closed() => return,
            () = stopped(&mut stop) => return,
        }
    }
}

/// Chunks for a connection whose queue was full, delivered before the next message is read.
type Blocked = Option<(mpsc::Sender<Bytes>, Bytes)>;

/// Resolves when the queue of the blocked chunk has room (`false`: the connection is gone).
async fn room(blocked: &Blocked) -> bool {
    match blocked {
        Some((queue, _)) => queue.reserve().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Accepts connections and relays them over the stream until it ends; dropping the listener and
/// the connection tasks (when this returns or is dropped) closes every socket.
async fn relay_listen(
    listener: TcpListener,
    mut inbound: Streaming<ListenRequest>,
    tx: mpsc::Sender<ListenResponse>,
) {
    // The engine's bytes for each connection; `None` once the engine closed its side. A
    // connection is forgotten when its task ended (both directions done).
    let mut conns: HashMap<u64, Option<mpsc::Sender<Bytes>>> = HashMap::new();
    let mut tasks: JoinSet<u64> = JoinSet::new();
    let mut last_id = 0u64;
    let mut blocked: Blocked = None;
    loop {
        tokio::select! {
            () = tx.closed() => return,
            Some(done) = tasks.join_next() => {
                if let Ok(id) = done {
                    conns.remove(&id);
                }
            }
            ready = room(&blocked), if blocked.is_some() => {
                if let Some((queue, data)) = blocked.take()
                    && ready
                    && let Err(TrySendError::Full(data)) = queue.try_send(data)
                {
                    blocked = Some((queue, data));
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    last_id += 1;
                    let (queue, from_engine) = mpsc::channel(CONN_DEPTH);
                    conns.insert(last_id, Some(queue));
                    tasks.spawn(host_conn(last_id, socket, from_engine, tx.clone()));
                }
                Err(err) => {
                    tracing::debug!(error = %err, "tunnel listener accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            message = inbound.message(), if blocked.is_none() => match message {
                Ok(Some(ListenRequest { item: Some(item) })) => match item {
                    listen_request::Item::Data(ConnData { conn, data }) => {
                        if let Some(Some(queue)) = conns.get(&conn)
                            && let Err(TrySendError::Full(data)) = queue.try_send(data)
                        {
                            blocked = Some((queue.clone(), data));
                        }
                    }
                    listen_request::Item::Close(conn) => {
                        if let Some(queue) = conns.get_mut(&conn) {
                            *queue = None;
                        }
                    }
                    listen_request::Item::Address(_) | listen_request::Item::Announce(_) => {}
                },
                Ok(Some(ListenRequest { item: None })) => {}
                Ok(None) | Err(_) => return,
            },
        }
    }
}

/// Relays one accepted connection: announces it, then both directions until each ended.
async fn host_conn(
    id: u64,
    socket: TcpStream,
    mut from_engine: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<ListenResponse>,
) -> u64 {
    let _ = socket.set_nodelay(true);
    let (mut reader, mut writer) = socket.into_split();
    if tx
        .send(listen_message(listen_response::Item::Accepted(id)))
        .await
        .is_err()
    {
        return id;
    }
    let down = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            match read_chunk(&mut reader, &mut buf).await {
                Ok(n) if n > 0 => {
                    let data = listen_message(listen_response::Item::Data(ConnData {
                        conn: id,
                        data: buf.split_to(n).freeze(),
                    }));
                    if tx.send(data).await.is_err() {
                        return;
                    }
                }
                // EOF, or a reset: nothing more comes from this side.
                _ => {
                    let _ = tx
                        .send(listen_message(listen_response::Item::Close(id)))
                        .await;
                    return;
                }
            }
        }
    };
    let up = async move {
        while let Some(data) = from_engine.recv().await {
            if writer.write_all(&data).await.is_err() {
                // The peer does not take bytes any more: dropping the queue discards the rest.
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    tokio::join!(down, up);
    id
}

// ---------------------------------------------------------------------------------------------
// Engine half.

fn status_text(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Dials `network` `address` on the client's host over `client`.
pub(crate) async fn dial(
    mut client: TunnelClient<Channel>,
    network: &str,
    address: &str,
) -> Result<TunnelStream, AttachError> {
    let failed = |message: String| AttachError::Tunnel {
        operation: "dial",
        target: format!("{network} {address}"),
        message,
    };
    let (requests, requests_rx) = mpsc::channel(STREAM_DEPTH);
    let target = DialRequest {
        item: Some(dial_request::Item::Target(DialTarget {
            network: network.to_string(),
            address: address.to_string(),
        })),
    };
    // A fresh channel has room for the first message.
    let _ = requests.try_send(target);
    let answer = async {
        let mut responses = client
            .dial(ReceiverStream::new(requests_rx))
            .await?
            .into_inner();
        let first = responses.message().await?;
        Ok::<_, Status>((responses, first))
    };
    let (responses, first) = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .map_err(|_| {
            failed(format!(
                "no answer from the client within {}s",
                ANSWER_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|status| failed(status_text(&status)))?;
    match first.and_then(|message| message.item) {
        Some(dial_response::Item::Connected(true)) => {}
        Some(dial_response::Item::Error(message)) => return Err(failed(message)),
        Some(_) => {
            return Err(failed(
                "the client did not report the connection".to_string(),
            ));
        }
        None => {
            return Err(failed(
                "the client ended the tunnel before connecting".to_string(),
            ));
        }
    }
    let (to_user, from_target) = mpsc::channel(CONN_DEPTH);
    let (to_target, from_user) = mpsc::channel(CONN_DEPTH);
    tokio::spawn(engine_dial_up(from_user, requests));
    tokio::spawn(engine_dial_down(responses, to_user));
    Ok(TunnelStream::new(from_target, to_target))
}

/// User -> target: the user's EOF (a shutdown or a drop of its stream) ends the request stream,
/// which half-closes the target connection.
async fn engine_dial_up(mut from_user: mpsc::Receiver<Bytes>, requests: mpsc::Sender<DialRequest>) {
    loop {
        let data = tokio::select! {
            data = from_user.recv() => data,
            () = requests.closed() => return,
        };
        let Some(data) = data else { return };
        let data = DialRequest {
            item: Some(dial_request::Item::Data(data)),
        };
        if requests.send(data).await.is_err() {
            return;
        }
    }
}

/// Target -> user, until the target's EOF (the end of the response stream, which closes the
/// user's queue), a failure, or the user dropping its stream (dropping the responses then
/// cancels the call, and the client closes the connection).
async fn engine_dial_down(mut responses: Streaming<DialResponse>, to_user: mpsc::Sender<Bytes>) {
    loop {
        let message = tokio::select! {
            message = responses.message() => message,
            () = to_user.closed() => return,
        };
        match message {
            Ok(Some(DialResponse {
                item: Some(dial_response::Item::Data(data)),
            })) => {
                if to_user.send(data).await.is_err() {
                    return;
                }
            }
            Ok(Some(DialResponse {
                item: Some(dial_response::Item::Error(message)),
            })) => {
                tracing::debug!(%message, "tunnel dial connection failed on the client's host");
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(%status, "tunnel dial stream failed");
                return;
            }
        }
    }
}

/// Aborts the task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A TCP listener on the client's host (engine half). Dropping it ends the tunnel: the client
/// closes the listener and every connection accepted on it.
#[derive(Debug)]
pub struct RemoteListener {
    /// Where the client's host listens.
    pub address: SocketAddr,
    accepted: mpsc::Receiver<TunnelStream>,
    _relay: AbortOnDrop,
}

impl RemoteListener {
    /// The next connection accepted on the client's host: reading gives the peer's bytes,
    /// writing sends to it, shutting down the write side half-closes. `None` once the tunnel
    /// ended (the client stopped listening or the attachables connection is gone).
    pub async fn accept(&mut self) -> Option<TunnelStream> {
        self.accepted.recv().await
    }
}

/// Opens a `Listen` stream whose first message is `first`, and waits for the client's answer:
/// the address it listens at (or that it announced).
async fn open_listen(
    mut client: TunnelClient<Channel>,
    first: listen_request::Item,
    failed: impl Fn(String) -> AttachError,
) -> Result<
    (
        Streaming<ListenResponse>,
        mpsc::Sender<ListenRequest>,
        SocketAddr,
    ),
    AttachError,
> {
    let (requests, requests_rx) = mpsc::channel(STREAM_DEPTH);
    // A fresh channel has room for the first message.
    let _ = requests.try_send(ListenRequest { item: Some(first) });
    let answer = async {
        let mut responses = client
            .listen(ReceiverStream::new(requests_rx))
            .await?
            .into_inner();
        let first = responses.message().await?;
        Ok::<_, Status>((responses, first))
    };
    let (responses, first) = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .map_err(|_| {
            failed(format!(
                "no answer from the client within {}s",
                ANSWER_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|status| failed(status_text(&status)))?;
    let bound = match first.and_then(|message| message.item) {
        Some(listen_response::Item::Listening(bound)) => bound
            .parse()
            .map_err(|err| failed(format!("the client reports a bad address {bound:?}: {err}")))?,
        Some(listen_response::Item::Error(message)) => return Err(failed(message)),
        Some(_) => {
            return Err(failed(
                "the client did not report where it listens".to_string(),
            ));
        }
        None => {
            return Err(failed(
                "the client ended the tunnel before listening".to_string(),
            ));
        }
    };
    Ok((responses, requests, bound))
}

/// The error of a listen at `address`.
fn listen_failed(address: &str) -> impl Fn(String) -> AttachError + '_ {
    move |message| AttachError::Tunnel {
        operation: "listen",
        target: address.to_string(),
        message,
    }
}

/// Listens on `address` on the client's host over `client`.
pub(crate) async fn listen(
    client: TunnelClient<Channel>,
    address: &str,
) -> Result<RemoteListener, AttachError> {
    let first = listen_request::Item::Address(address.to_string());
    let (responses, requests, bound) = open_listen(client, first, listen_failed(address)).await?;
    let (accepted_tx, accepted) = mpsc::channel(ACCEPT_DEPTH);
    let relay = tokio::spawn(engine_listen(responses, requests, accepted_tx));
    Ok(RemoteListener {
        address: bound,
        accepted,
        _relay: AbortOnDrop(relay),
    })
}

/// Whether the engine may bind `address` for a client in its network namespace: a loopback
/// address with port 0 or an unprivileged one (a client could bind those itself, whatever its
/// user).
pub(crate) fn can_listen_here(address: &str) -> bool {
    address
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback() && (a.port() == 0 || a.port() >= 1024))
}

/// Listens on `address` here, for a client in the engine's own network namespace (its host's
/// ports are the engine's), which only announces the address to its user: accepted
/// connections are the engine's own sockets, with no hop through the client. Listening stops
/// when the [`RemoteListener`] is dropped or the client ends the stream.
pub(crate) async fn listen_here(
    client: TunnelClient<Channel>,
    address: &str,
) -> Result<RemoteListener, AttachError> {
    let failed = listen_failed(address);
    let (listener, bound) = bind(address).await.map_err(&failed)?;
    let first = listen_request::Item::Announce(bound.to_string());
    let (responses, requests, _) = open_listen(client, first, failed).await?;
    let (accepted_tx, accepted) = mpsc::channel(ACCEPT_DEPTH);
    let relay = tokio::spawn(engine_listen_here(
        listener,
        responses,
        requests,
        accepted_tx,
    ));
    Ok(RemoteListener {
        address: bound,
        accepted,
        _relay: AbortOnDrop(relay),
    })
}

/// Hands out the connections of a listener of the engine's own until the client ends the
/// stream (or the task is aborted); `_requests` keeps the engine's side of the stream open.
async fn engine_listen_here(
    listener: TcpListener,
    mut responses: Streaming<ListenResponse>,
    _requests: mpsc::Sender<ListenRequest>,
    accepted: mpsc::Sender<TunnelStream>,
) {
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((socket, _)) => {
                    let _ = socket.set_nodelay(true);
                    if accepted.send(TunnelStream::direct(socket)).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "tunnel listener accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            message = responses.message() => match message {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
            () = accepted.closed() => return,
        }
    }
}

/// The engine's state of one connection of a listener.
struct EngineConn {
    /// Toward the user; `None` once the host's side ended or the user dropped its stream.
    writer: Option<mpsc::Sender<Bytes>>,
    host_done: bool,
    user_done: bool,
}

/// Relays a listener's stream: hands out accepted connections and dispatches their bytes, until
/// the stream ends. Returning (or being aborted) drops every connection's halves and reader
/// tasks, which closes the users' streams.
async fn engine_listen(
    mut responses: Streaming<ListenResponse>,
    requests: mpsc::Sender<ListenRequest>,
    accepted: mpsc::Sender<TunnelStream>,
) {
    let mut conns: HashMap<u64, EngineConn> = HashMap::new();
    let mut readers: JoinSet<u64> = JoinSet::new();
    loop {
        let message = tokio::select! {
            Some(done) = readers.join_next() => {
                if let Ok(id) = done
                    && let Some(conn) = conns.get_mut(&id)
                {
                    conn.user_done = true;
                    if conn.host_done {
                        conns.remove(&id);
                    }
                }
                continue;
            }
            message = responses.message() => message,
        };
        let item = match message {
            Ok(Some(ListenResponse { item: Some(item) })) => item,
            Ok(Some(ListenResponse { item: None })) => continue,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(%status, "tunnel listen stream failed");
                return;
            }
        };
        match item {
            listen_response::Item::Accepted(id) => {
                let (writer, from_host) = mpsc::channel(CONN_DEPTH);
                let (to_host, from_user) = mpsc::channel(CONN_DEPTH);
                if accepted
                    .send(TunnelStream::new(from_host, to_host))
                    .await
                    .is_err()
                {
                    return;
                }
                readers.spawn(engine_conn_up(id, from_user, requests.clone()));
                conns.insert(
                    id,
                    EngineConn {
                        writer: Some(writer),
                        host_done: false,
                        user_done: false,
                    },
                );
            }
            listen_response::Item::Data(ConnData { conn, data }) => {
                if let Some(state) = conns.get_mut(&conn)
                    && let Some(writer) = state.writer.as_ref()
                    && writer.send(data).await.is_err()
                {
                    // The user dropped this connection: its bytes go nowhere.
                    state.writer = None;
                }
            }
            listen_response::Item::Close(conn) => {
                if let Some(state) = conns.get_mut(&conn) {
                    // The end of the user's queue is the host peer's EOF.
                    state.writer = None;
                    state.host_done = true;
                    if state.user_done {
                        conns.remove(&conn);
                    }
                }
            }
            listen_response::Item::Error(message) => {
                tracing::debug!(%message, "tunnel listen failed on the client's host");
                return;
            }
            listen_response::Item::Listening(_) => {}
        }
    }
}

/// User -> host peer of one listened connection; the user's EOF sends its `close`.
async fn engine_conn_up(
    id: u64,
    mut from_user: mpsc::Receiver<Bytes>,
    requests: mpsc::Sender<ListenRequest>,
) -> u64 {
    while let Some(data) = from_user.recv().await {
        let data = ListenRequest {
            item: Some(listen_request::Item::Data(ConnData { conn: id, data })),
        };
        if requests.send(data).await.is_err() {
            return id;
        }
    }
    let close = ListenRequest {
        item: Some(listen_request::Item::Close(id)),
    };
    let _ = requests.send(close).await;
    id
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap

    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UnixListener};
    use tokio::time::timeout;

    use crate::test_common::{HANG, Pair, TaskGuard, connect_pair, connect_pair_elsewhere};
    use crate::{AttachError, HostProviders, HostTunnel, TunnelProvider, methods};

    /// Remembers where the engine listened.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<SocketAddr>>);

    impl TunnelProvider for Recorder {
        fn listening(&self, address: SocketAddr) {
            self.0.lock().unwrap().push(address);
        }
    }

    fn providers(tunnel: Option<Arc<dyn TunnelProvider>>) -> HostProviders {
        HostProviders {
            tunnel,
            ..HostProviders::new(std::env::temp_dir())
        }
    }

    /// A client on another host: its tunnels are relayed.
    async fn pair() -> Pair {
        connect_pair_elsewhere(providers(Some(Arc::new(HostTunnel)))).await
    }

    /// Echoes until EOF, then half-closes.
    async fn echo(stream: impl AsyncRead + AsyncWrite) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
        let _ = writer.shutdown().await;
    }

    /// A TCP echo server on 127.0.0.1.
    async fn echo_server() -> (SocketAddr, TaskGuard) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(echo(socket));
            }
        });
        (address, TaskGuard(task))
    }

    /// Writes `data` then shuts down the write side, while reading everything back.
    async fn exchange(stream: impl AsyncRead + AsyncWrite, data: &[u8]) -> Vec<u8> {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let write = async {
            writer.write_all(data).await.unwrap();
            writer.shutdown().await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        };
        timeout(HANG, async { tokio::join!(write, read).1 })
            .await
            .expect("the exchange hangs")
    }

    fn payload(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// Waits until connecting to `address` is refused.
    async fn wait_refused(address: SocketAddr) {
        timeout(HANG, async {
            loop {
                match TcpStream::connect(address).await {
                    Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => return,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("the host still listens");
    }

    #[tokio::test]
    async fn dial_tcp_relays_both_ways_with_half_close_from_the_engine() {
        let pair = pair().await;
        let (address, _server) = echo_server().await;
        let conn = pair.client.dial("tcp", &address.to_string()).await.unwrap();
        // The echo only ends once the engine's shutdown reached it as the host socket's EOF.
        assert_eq!(exchange(conn, b"hello tunnel").await, b"hello tunnel");
    }

    #[tokio::test]
    async fn dial_half_close_from_the_target_keeps_the_engine_writing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(b"greeting").await.unwrap();
            socket.shutdown().await.unwrap();
            let mut got = Vec::new();
            socket.read_to_end(&mut got).await.unwrap();
            got
        });
        let pair = pair().await;
        let mut conn = pair.client.dial("tcp", &address.to_string()).await.unwrap();
        let mut greeting = Vec::new();
        timeout(HANG, conn.read_to_end(&mut greeting))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(greeting, b"greeting");
        conn.write_all(b"after the target's eof").await.unwrap();
        conn.shutdown().await.unwrap();
        let got = timeout(HANG, server).await.unwrap().unwrap();
        assert_eq!(got, b"after the target's eof");
    }

    #[tokio::test]
    async fn dial_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("echo.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _server = TaskGuard(tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(echo(socket));
            }
        }));
        let pair = pair().await;
        let conn = pair
            .client
            .dial("unix", path.to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(
            exchange(conn, b"over a unix socket").await,
            b"over a unix socket"
        );
    }

    #[tokio::test]
    async fn dial_refused_reports_the_clients_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let pair = pair().await;
        let err = pair.client.dial("tcp", &address).await.unwrap_err();
        match &err {
            AttachError::Tunnel {
                operation,
                target,
                message,
            } => {
                assert_eq!(*operation, "dial");
                assert_eq!(*target, format!("tcp {address}"));
                assert_eq!(*message, format!("connect {address}: Connection refused"));
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("refused"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sock");
        let err = pair
            .client
            .dial("unix", missing.to_str().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");

        let err = pair.client.dial("udp", &address).await.unwrap_err();
        assert!(err.to_string().contains("unsupported network"), "{err}");
        // The connection is still fine.
        pair.client.health_check().await.unwrap();
    }

    #[tokio::test]
    async fn tunnels_are_not_announced_without_a_provider() {
        let pair = connect_pair(providers(None)).await;
        for method in [methods::TUNNEL_DIAL, methods::TUNNEL_LISTEN] {
            assert!(!pair.client.methods().iter().any(|m| m == method));
        }
        let err = pair.client.dial("tcp", "127.0.0.1:1").await.unwrap_err();
        assert!(
            matches!(err, AttachError::NotAnnounced { method } if method == methods::TUNNEL_DIAL),
            "{err}"
        );
        let err = pair.client.listen("127.0.0.1:0").await.unwrap_err();
        assert!(
            matches!(err, AttachError::NotAnnounced { method } if method == methods::TUNNEL_LISTEN),
            "{err}"
        );
    }

    /// Concurrent connections with half-close through a listener; `here`: a client in the
    /// engine's network (the engine listens itself), else one elsewhere (relayed).
    async fn listen_carries_concurrent_connections_with_half_close(here: bool) {
        let recorder = Arc::new(Recorder::default());
        let providers = providers(Some(recorder.clone()));
        let pair = if here {
            connect_pair(providers).await
        } else {
            connect_pair_elsewhere(providers).await
        };
        for method in [methods::TUNNEL_DIAL, methods::TUNNEL_LISTEN] {
            assert!(pair.client.methods().iter().any(|m| m == method));
        }
        let mut listener = pair.client.listen("127.0.0.1:0").await.unwrap();
        let address = listener.address;
        assert_eq!(address.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(address.port(), 0);
        assert_eq!(*recorder.0.lock().unwrap(), [address]);
        // The engine's side echoes every connection it accepts.
        let _echo = TaskGuard(tokio::spawn(async move {
            while let Some(conn) = listener.accept().await {
                tokio::spawn(echo(conn));
            }
        }));
        let (one, two) = (payload(1, 300_000), payload(2, 200_000));
        let (got_one, got_two) = tokio::join!(
            async { exchange(TcpStream::connect(address).await.unwrap(), &one).await },
            async { exchange(TcpStream::connect(address).await.unwrap(), &two).await },
        );
        assert!(got_one == one, "the first connection's bytes differ");
        assert!(got_two == two, "the second connection's bytes differ");
        // And again on the same listener.
        let conn = TcpStream::connect(address).await.unwrap();
        assert_eq!(exchange(conn, b"third").await, b"third");
    }

    #[tokio::test]
    async fn listen_relays_concurrent_connections_with_half_close() {
        listen_carries_concurrent_connections_with_half_close(false).await;
    }

    #[tokio::test]
    async fn listen_here_serves_concurrent_connections_with_half_close() {
        listen_carries_concurrent_connections_with_half_close(true).await;
    }

    #[tokio::test]
    async fn listen_here_binds_in_the_engine_until_the_listener_or_the_client_goes() {
        let recorder = Arc::new(Recorder::default());
        let pair = connect_pair(providers(Some(recorder.clone()))).await;
        let mut listener = pair.client.listen("127.0.0.1:0").await.unwrap();
        let address = listener.address;
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [address],
            "the client announces it"
        );
        let mut peer = TcpStream::connect(address).await.unwrap();
        let mut conn = timeout(HANG, listener.accept()).await.unwrap().unwrap();
        // Dropping the listener stops listening; the engine's connection is its own socket and
        // lives until dropped.
        drop(listener);
        wait_refused(address).await;
        peer.write_all(b"still here").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        timeout(HANG, conn.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"still here");
        // The client ending its side (its connection gone) stops the engine listening too.
        let listener = pair.client.listen("127.0.0.1:0").await.unwrap();
        let address = listener.address;
        drop(pair.serve);
        wait_refused(address).await;
        // Connections accepted before (`wait_refused`'s tries) come out first, then the end.
        let mut listener = listener;
        timeout(HANG, async { while listener.accept().await.is_some() {} })
            .await
            .expect("the listener ends");
        // A taken port is the engine's error at once.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let recorder = Arc::new(Recorder::default());
        let pair = connect_pair(providers(Some(recorder.clone()))).await;
        let err = pair
            .client
            .listen(&taken.local_addr().unwrap().to_string())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        assert!(recorder.0.lock().unwrap().is_empty(), "nothing announced");
    }

    #[tokio::test]
    async fn listen_half_close_from_the_host_keeps_the_engine_writing() {
        let pair = pair().await;
        let mut listener = pair.client.listen("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.address).await.unwrap();
        let mut conn = timeout(HANG, listener.accept()).await.unwrap().unwrap();
        peer.write_all(b"request").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut request = Vec::new();
        timeout(HANG, conn.read_to_end(&mut request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(request, b"request");
        conn.write_all(b"response after the host's eof")
            .await
            .unwrap();
        conn.shutdown().await.unwrap();
        let mut response = Vec::new();
        timeout(HANG, peer.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response, b"response after the host's eof");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listen_holds_back_for_a_slow_host_peer_and_loses_nothing() {
        let pair = pair().await;
        let mut listener = pair.client.listen("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.address).await.unwrap();
        let mut conn = timeout(HANG, listener.accept()).await.unwrap().unwrap();
        let data = payload(4, 8 << 20);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            conn.write_all(&sent).await.unwrap();
            conn.shutdown().await.unwrap();
            conn
        });
        // The peer reads nothing for a while: the engine's writes back up through the queues.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = Vec::new();
        timeout(HANG, peer.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the bytes differ");
        timeout(HANG, writer).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn listen_on_a_taken_port_fails() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let pair = pair().await;
        let err = pair.client.listen(&address).await.unwrap_err();
        assert!(
            matches!(
                &err,
                AttachError::Tunnel {
                    operation: "listen",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[tokio::test]
    async fn dropping_the_remote_listener_closes_the_host_listener_and_connections() {
        let pair = pair().await;
        let mut listener = pair.client.listen("127.0.0.1:0").await.unwrap();
        let address = listener.address;
        let mut peer = TcpStream::connect(address).await.unwrap();
        let mut conn = timeout(HANG, listener.accept()).await.unwrap().unwrap();
        drop(listener);
        wait_refused(address).await;
        // The accepted connection ends on both sides.
        let mut rest = Vec::new();
        let read = timeout(HANG, peer.read_to_end(&mut rest))
            .await
            .expect("the host connection stays open");
        assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");
        let mut rest = Vec::new();
        timeout(HANG, conn.read_to_end(&mut rest))
            .await
            .expect("the engine's stream stays open")
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn dropping_the_dialed_stream_ends_the_tunnel_on_the_client() {
        // The target never closes by itself and stays silent after the engine's EOF: only the
        // engine noticing the dropped stream ends the tunnel.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (eof_tx, eof) = tokio::sync::oneshot::channel();
        let _server = TaskGuard(tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while socket.read(&mut buf).await.unwrap() > 0 {}
            let _ = eof_tx.send(());
            std::future::pending::<()>().await;
        }));
        let pair = pair().await;
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let conn = pair.client.dial("tcp", &address.to_string()).await.unwrap();
        assert!(metrics.num_alive_tasks() > before);
        drop(conn);
        timeout(HANG, eof).await.unwrap().unwrap();
        // Every task of the tunnel, on both sides, ends.
        timeout(HANG, async {
            while metrics.num_alive_tasks() > before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("tunnel tasks are left");
    }

    #[tokio::test]
    async fn the_end_of_the_connection_ends_every_tunnel() {
        let pair = pair().await;
        let (address, _server) = echo_server().await;
        let mut conn = pair.client.dial("tcp", &address.to_string()).await.unwrap();
        let mut listener = pair.client.listen("127.0.0.1:0").await.unwrap();
        let listened = listener.address;
        let mut peer = TcpStream::connect(listened).await.unwrap();
        let _accepted = timeout(HANG, listener.accept()).await.unwrap().unwrap();
        // The client stops serving: its side of the connection is gone.
        drop(pair.serve);
        wait_refused(listened).await;
        let mut rest = Vec::new();
        let read = timeout(HANG, peer.read_to_end(&mut rest))
            .await
            .expect("the host connection stays open");
        assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");
        assert!(timeout(HANG, listener.accept()).await.unwrap().is_none());
        timeout(HANG, conn.read_to_end(&mut rest))
            .await
            .expect("the dialed stream stays open")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dial_carries_32_mib_intact() {
        let pair = pair().await;
        let (address, _server) = echo_server().await;
        let conn = pair.client.dial("tcp", &address.to_string()).await.unwrap();
        let data = payload(3, 32 << 20);
        let got = exchange(conn, &data).await;
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the bytes differ");
    }

    /// Every call's future is `Send` (callers spawn them).
    #[allow(dead_code)]
    fn calls_are_send(client: &crate::AttachablesClient, listener: &mut crate::RemoteListener) {
        fn send<T: Send>(_: T) {}
        send(client.dial("tcp", "x"));
        send(client.listen("x"));
        send(listener.accept());
    }
}
