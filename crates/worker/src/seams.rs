//! The worker's seams: what the composition root plugs in from the rest of the engine. Host
//! files of clients ([`HostAccess`]), the API served to nested clients ([`NestedClients`]),
//! per-session registry credentials ([`SessionRegistryAuth`]) and secret plaintexts
//! ([`SecretSource`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dagr_registry::CredentialsProvider;
use dagr_solver::HostScope;
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

/// Reads a client's host files (implemented by the engine with the client's attachables).
pub trait HostAccess: Send + Sync + 'static {
    /// Copies `path` of the client's host (relative paths against its working directory), filtered
    /// by the patterns, into the existing empty directory `dest`.
    fn pull_dir<'a>(
        &'a self,
        scope: &'a HostScope,
        path: &'a str,
        include: &'a [String],
        exclude: &'a [String],
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), String>>;
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
}

/// Serves the engine API to nested clients (implemented by the engine, which owns the stack).
pub trait NestedClients: Send + Sync + 'static {
    /// Serves the API on `listener` (opened inside the exec's network namespace) to `client`.
    /// Called on a blocking thread of the runtime (`spawn_blocking`: it may block), before the
    /// exec's process starts; returns once the client is ready. Serving stops when the returned
    /// guard is dropped (when the exec ends).
    fn serve(
        &self,
        listener: std::net::TcpListener,
        client: NestedClient,
    ) -> Result<Box<dyn std::any::Any + Send>, String>;
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
