//! The worker's seams: what the composition root plugs in from the rest of the engine. The
//! clients' hosts ([`HostAccess`]: files and user terminals, failing with [`HostError`]), the API served to nested clients ([`NestedClients`]),
//! per-session registry credentials ([`SessionRegistryAuth`]) and secret plaintexts
//! ([`SecretSource`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dagr_metadata::ClientRef;
use dagr_registry::CredentialsProvider;
use futures::future::BoxFuture;

/// Everything the worker calls out to, given to [`crate::Worker::open`] by the composition root.
pub struct WorkerSeams {
    /// The clients' host files (host directories).
    pub host: Arc<dyn HostAccess>,
    /// Secret plaintexts (secret mounts and env variables of execs).
    pub secrets: Arc<dyn SecretSource>,
    /// Registry credentials per session; a host without any is pulled from anonymously.
    pub registry_auth: Arc<dyn SessionRegistryAuth>,
    /// The engine API for nested clients; without it, execs asking for privileged nesting fail.
    pub nested: Option<Arc<dyn NestedClients>>,
}

/// A boxed error from the other side of a seam (the engine's attachables, its API server).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's host: its files and its user terminal (implemented by the engine with the client's
/// attachables). The worker reads host directories through it; the API writes exports, reads
/// secret files and opens terminals.
pub trait HostAccess: Send + Sync + 'static {
    /// Lists `path` of the client's host (relative paths against its working directory),
    /// filtered by the patterns: its entries' metadata, no content. The listing's
    /// [`HostListing::fetch`] then brings the files wanted.
    fn list_dir<'a>(
        &'a self,
        client: &'a ClientRef,
        path: &'a str,
        include: &'a [String],
        exclude: &'a [String],
    ) -> BoxFuture<'a, Result<HostListing, HostError>>;
    /// Writes the local directory `src` to `host_path` on the client's host (`wipe`: remove
    /// what is there first).
    fn push_dir<'a>(
        &'a self,
        client: &'a ClientRef,
        src: &'a Path,
        host_path: &'a str,
        wipe: bool,
    ) -> BoxFuture<'a, Result<(), HostError>>;
    /// Writes the local file `src` to `host_path` (parents created). An existing directory at
    /// `host_path` is refused ([`HostError::IsDirectory`]) unless `allow_parent_dir`, which writes
    /// the file into it under its own name.
    fn push_file<'a>(
        &'a self,
        client: &'a ClientRef,
        src: &'a Path,
        host_path: &'a str,
        allow_parent_dir: bool,
    ) -> BoxFuture<'a, Result<(), HostError>>;
    /// Reads a file of the client's host.
    fn read_file<'a>(
        &'a self,
        client: &'a ClientRef,
        host_path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, HostError>>;
    /// Opens the client's user terminal for one interactive process.
    fn open_terminal<'a>(
        &'a self,
        client: &'a ClientRef,
    ) -> BoxFuture<'a, Result<UserTerminal, HostError>>;
    /// Connects, from the client's host, to `address` there (`network` "tcp" with
    /// `host:port`, or "unix" with a socket path). The stream is the connection; shutting
    /// down its write side half-closes it.
    fn dial<'a>(
        &'a self,
        client: &'a ClientRef,
        network: &'a str,
        address: &'a str,
    ) -> BoxFuture<'a, Result<HostStream, HostError>>;
    /// Listens on the client's host at `address` (`127.0.0.1:PORT`, 0 for any port).
    fn listen<'a>(
        &'a self,
        client: &'a ClientRef,
        address: &'a str,
    ) -> BoxFuture<'a, Result<HostListener, HostError>>;
}

/// The kind of a [`HostEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEntryKind {
    Dir,
    File,
    Symlink,
}

/// One entry of a host directory listing: what the host's `lstat` said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// Relative to the listed directory, '/'-separated, only normal components; empty for
    /// the directory itself.
    pub path: Vec<u8>,
    pub kind: HostEntryKind,
    /// Permission bits (0o7777).
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    /// For symlinks: the target, as stored.
    pub link_target: Vec<u8>,
}

/// A listing of a client's host directory ([`HostAccess::list_dir`]). Its entries are checked:
/// the root first, then in pre-order with the names of each directory sorted bytewise, each
/// entry's parent a listed directory.
pub struct HostListing {
    /// Names the client's host: listings with the same name come from the same host.
    pub host: String,
    /// The listed directory's absolute path on that host.
    pub root: PathBuf,
    /// The host's clock when the listing started (nanoseconds since the epoch).
    pub walk_started_ns: i64,
    pub entries: Vec<HostEntry>,
    /// Brings the content of files of the listing; dropping it ends the read.
    pub fetch: Box<dyn HostFetch>,
}

/// The rest of a host directory read, once listed.
pub trait HostFetch: Send {
    /// Writes the files at `wanted` (indices into the listing's entries, ascending), and the
    /// directories leading to them, into the existing directory `dest` (a file already at a
    /// wanted path is replaced). Returns the bytes of content received.
    fn fetch(
        self: Box<Self>,
        wanted: Vec<usize>,
        dest: PathBuf,
    ) -> BoxFuture<'static, Result<u64, HostError>>;
}

/// A TCP listener on a client's host (see [`HostAccess::listen`]); dropping it closes it.
#[derive(Debug)]
pub struct HostListener {
    /// Where it listens, as the client bound it.
    pub address: std::net::SocketAddr,
    /// The connections it accepts; ends when the client or its connection goes away.
    pub connections: tokio::sync::mpsc::Receiver<HostStream>,
}

/// A connection of a client's host ([`HostAccess::dial`], [`HostListener`]): reading gives the
/// peer's bytes, writing sends to it, shutting down the write side half-closes it, dropping it
/// closes it.
pub type HostStream = Box<dyn HostConnection>;

/// What a [`HostStream`] is: any byte stream a task can own.
pub trait HostConnection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> HostConnection for T {}

/// Why a client's host could not be reached, read or written.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("session {session_id} is gone")]
    SessionGone { session_id: String },
    #[error("{client} is gone")]
    ClientGone { client: ClientRef },
    #[error("{client} has no attachables connection, so its host cannot be read or written")]
    NoAttachables { client: ClientRef },
    #[error(
        "destination {path:?} is a directory; must be a file path unless allowParentDirPath is set"
    )]
    IsDirectory { path: String },
    #[error("{path} has no file name")]
    NoFileName { path: PathBuf },
    /// The client's attachables failed (their error names the method and path).
    #[error("{source}")]
    Attachables {
        #[source]
        source: BoxError,
    },
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A client's user terminal, open for one interactive process.
#[derive(Debug)]
pub struct UserTerminal {
    /// The user's terminal size when it opened.
    pub size: dagr_executor::WindowSize,
    /// Keystrokes and resizes; closed when the user went away.
    pub input: tokio::sync::mpsc::Receiver<dagr_executor::TerminalInput>,
    /// What the process writes (the run's output sink; closed when the run ends).
    pub output: tokio::sync::mpsc::Sender<dagr_executor::OutputChunk>,
    /// The process's exit code, or the message of why it could not run, shown to the user;
    /// sent after the last output.
    pub exit: tokio::sync::oneshot::Sender<Result<i32, String>>,
}

/// A nested client: the process of an exec with privileged nesting, calling the engine back.
#[derive(Debug, Clone)]
pub struct NestedClient {
    pub session_id: String,
    pub client_id: String,
    /// Requests must carry basic auth with this token as the user name.
    pub token: String,
    pub hostname: String,
    /// The container's root filesystem as mounted on the engine's host, and its working
    /// directory: the nested client's "host" (`host.directory` reads it, exports write into it).
    pub rootfs: PathBuf,
    pub workdir: String,
    /// The file holding the process's host pid once it runs: through `/proc/<pid>/root` the
    /// nested client's host is the container as its process sees it, mounts included.
    pub pid_file: PathBuf,
    /// The exec's `nested_call` (see [`dagr_solver::ExecOp::nested_call`]).
    pub call: Option<String>,
}

/// Serves the engine API to nested clients (implemented by the engine, which owns the stack).
pub trait NestedClients: Send + Sync + 'static {
    /// Serves the API on `listener` (opened inside the exec's network namespace) to `client`,
    /// before the exec's process starts; resolves once the client is ready. Serving stops when
    /// the returned [`NestedServing`] is dropped (when the exec ends).
    fn serve(
        &self,
        listener: std::net::TcpListener,
        client: NestedClient,
    ) -> BoxFuture<'_, Result<NestedServing, NestedError>>;
}

/// The serving of one nested client: dropping it stops the listener, its connections and the
/// client's attachables.
pub struct NestedServing {
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl NestedServing {
    /// `stop` runs once, when the serving is dropped.
    pub fn new(stop: impl FnOnce() + Send + 'static) -> Self {
        NestedServing {
            stop: Some(Box::new(stop)),
        }
    }
}

impl Drop for NestedServing {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl std::fmt::Debug for NestedServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NestedServing").finish_non_exhaustive()
    }
}

/// Why a nested client could not be served.
#[derive(Debug, thiserror::Error)]
pub enum NestedError {
    #[error("this engine cannot serve nested clients yet: it is still starting")]
    Starting,
    #[error("the nested client's listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("attaching the nested client's host: {source}")]
    Attach {
        #[source]
        source: BoxError,
    },
}

/// Registry credentials per session (implemented by the API: `withRegistryAuth`).
pub trait SessionRegistryAuth: Send + Sync + 'static {
    /// `(username, secret)` for registry `host` (as named in references) in `session_id`.
    fn credentials(&self, session_id: &str, host: &str) -> Option<(String, String)>;
}

/// One session's view of [`SessionRegistryAuth`], as the registry client asks for it.
pub(crate) struct SessionCredentials {
    pub(crate) auth: Arc<dyn SessionRegistryAuth>,
    pub(crate) session_id: String,
}

impl CredentialsProvider for SessionCredentials {
    fn credentials<'a>(&'a self, host: &'a str) -> dagr_registry::auth::CredentialsFuture<'a> {
        let found = self
            .auth
            .credentials(&self.session_id, host)
            .map(|(username, secret)| dagr_registry::Credentials { username, secret });
        Box::pin(async move { found })
    }
}

/// Secret plaintexts by id, per session (implemented by the API's secret store).
pub trait SecretSource: Send + Sync + 'static {
    fn secret(&self, session_id: &str, secret_id: &str) -> Option<Bytes>;
}

/// Starts the services an exec binds ([`dagr_solver::ServiceBinding`]) in a session and keeps
/// them running while the returned guard lives (implemented by the API, which knows each
/// hostname's definition). Set once with [`crate::Worker::set_service_starter`].
pub trait ServiceStarter: Send + Sync + 'static {
    /// Starts (or joins) each service named by `hostnames` and waits until all are healthy; the
    /// error names the service that failed.
    fn start<'a>(
        &'a self,
        session_id: &'a str,
        hostnames: &'a [String],
    ) -> BoxFuture<'a, Result<ServiceGuard, BoxError>>;
}

/// Holds services running (see [`ServiceStarter`]); dropping it lets them stop.
pub type ServiceGuard = Box<dyn Send + Sync>;
