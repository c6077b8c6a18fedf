//! dagr-worker: runs the solver's ops on this machine. [`Worker`] implements
//! [`dagr_solver::OpRunner`] with the build-core crates:
//! - `Image`: pulled with [`dagr_registry::RegistryClient`] into the [`dagr_snapshot::ContentStore`]
//!   and unpacked into committed snapshots (one per layer chain);
//! - `Exec`: a writable snapshot on the rootfs input, mounted and run with
//!   [`dagr_executor::Executor`] (runc), with input snapshots, cache volumes ([`CacheVolumes`]),
//!   tmpfs and secrets mounted; writable input mounts become extra outputs;
//! - `MkFile`, `MkDir`, `Copy`, `Rm`: [`fsops`] on a writable snapshot, resolved inside it;
//! - `HostDir`: pulled from the client through [`HostAccess`] and keyed by content;
//! - `Empty`: the shared empty snapshot.
//!
//! Every result is a committed snapshot; its [`ResultRef`] carries [`ResultMeta`] (extra outputs,
//! image config, exec output). [`Worker::mount_view`] mounts a result read-only for readers
//! (file contents, entries, exports). Failed or cancelled runs remove their snapshots and mounts.

pub mod export;
pub mod fsops;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dagr_executor::{
    ExecMount, ExecMountKind, ExecSpec, Executor, ExecutorConfig, OutputChunk, Rootfs, RunOptions,
    TerminalIo,
};
use dagr_registry::{CredentialsProvider, Reference, RegistryClient, RegistryConfig};
use dagr_snapshot::{ContentStore, LayerDescriptor, MountGuard, Snapshotter, SnapshotterOptions};
use dagr_solver::{
    CacheSharing, HostScope, InputRef, MountSource, Op, OpRunner, ResultRef, RunCtx, RunError,
    RunOutput, Vertex,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use fsops::FsError;

/// Errors of the worker, naming the op, snapshot or path involved.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("opening the worker state in {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Content(#[from] dagr_snapshot::ContentError),
    #[error(transparent)]
    Snapshot(#[from] dagr_snapshot::SnapshotError),
    #[error(transparent)]
    Unpack(#[from] dagr_snapshot::UnpackError),
    #[error(transparent)]
    Mount(#[from] dagr_snapshot::MountError),
    #[error(transparent)]
    Reference(#[from] dagr_registry::ReferenceError),
    #[error(transparent)]
    Pull(#[from] dagr_registry::PullError),
    #[error(transparent)]
    Exec(#[from] dagr_executor::ExecError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{op} op: {reason}")]
    Op { op: &'static str, reason: String },
    #[error("result {id} has no output {output}")]
    NoOutput { id: String, output: u32 },
    #[error("secret {id} is not known to session {session}")]
    UnknownSecret { id: String, session: String },
    #[error("reading host path {path} of client {client}: {reason}")]
    Host {
        path: String,
        client: String,
        reason: String,
    },
    #[error("worker task failed: {0}")]
    Task(String),
}

fn op_err(op: &'static str, reason: impl Into<String>) -> WorkerError {
    WorkerError::Op {
        op,
        reason: reason.into(),
    }
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
    /// Called from a runtime worker thread of a multi-threaded runtime, before the exec's
    /// process starts; returns once the client is ready. Serving stops when the returned guard
    /// is dropped (when the exec ends).
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
struct SessionCredentials {
    auth: Arc<dyn SessionRegistryAuth>,
    session_id: String,
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

/// How the worker is set up; the composition root fills it in.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Everything lives under it: `content/`, `snapshots/`, `exec/`, `cache-volumes/`, `work/`.
    pub state_dir: PathBuf,
    /// The OCI runtime (`runc`).
    pub runtime_binary: PathBuf,
    /// At most this many containers run at once.
    pub max_concurrent_execs: usize,
    pub registry: RegistryConfig,
    pub snapshots: SnapshotterOptions,
    /// Bytes of stdout/stderr kept per exec (default 16 MiB each).
    pub output_cap: usize,
}

impl WorkerConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        WorkerConfig {
            state_dir: state_dir.into(),
            runtime_binary: PathBuf::from("runc"),
            max_concurrent_execs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            registry: RegistryConfig::default(),
            snapshots: SnapshotterOptions::default(),
            // Dagger returns an exec's whole output; keep up to this much of each stream.
            output_cap: 16 << 20,
        }
    }
}

/// What the worker records with each result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultMeta {
    /// Snapshot keys of outputs 1.. (output 0 is the result's id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecMeta>,
}

/// The image an `Image` result came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub manifest_digest: String,
    /// The OCI image config's `config` section (Env, Cmd, Entrypoint, WorkingDir, User, ...).
    #[serde(default)]
    pub config: serde_json::Value,
}

/// The process of an `Exec` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecMeta {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl ResultMeta {
    pub fn of(r: &ResultRef) -> ResultMeta {
        serde_json::from_value(r.metadata().clone()).unwrap_or_default()
    }

    fn into_value(self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The snapshot key of output `output` of a result.
pub fn output_snapshot(r: &ResultRef, output: u32) -> Result<String, WorkerError> {
    if output == 0 {
        return Ok(r.id().to_owned());
    }
    ResultMeta::of(r)
        .outputs
        .get(output as usize - 1)
        .cloned()
        .ok_or_else(|| WorkerError::NoOutput {
            id: r.id().to_owned(),
            output,
        })
}

/// Name of the committed empty snapshot every `Empty` op returns.
const EMPTY_SNAPSHOT: &str = "empty";

/// Persistent cache volumes: one directory each, with the locking of their sharing mode.
#[derive(Default)]
pub struct CacheVolumes {
    root: PathBuf,
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A cache volume held for one exec.
pub struct CacheVolumeUse {
    pub dir: PathBuf,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    _private: Option<tempdir::PrivateDir>,
}

mod tempdir {
    use std::path::PathBuf;
    /// A throwaway directory removed on drop (a private cache volume's extra copy).
    pub struct PrivateDir(pub PathBuf);
    impl Drop for PrivateDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl CacheVolumes {
    fn new(root: PathBuf) -> Self {
        CacheVolumes {
            root,
            locks: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn dir_of(&self, id: &str) -> PathBuf {
        use sha2::Digest as _;
        self.root
            .join(hex::encode(sha2::Sha256::digest(id.as_bytes())))
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(id.to_owned()).or_default().clone()
    }

    /// Takes volume `id` for one exec: `Shared` binds the volume as is, `Locked` waits until no
    /// other exec holds it, `Private` uses the volume when free and a fresh empty directory when not.
    pub async fn acquire(
        &self,
        id: &str,
        sharing: CacheSharing,
    ) -> Result<CacheVolumeUse, WorkerError> {
        let dir = self.dir_of(id);
        std::fs::create_dir_all(&dir).map_err(|source| WorkerError::Open {
            path: dir.clone(),
            source,
        })?;
        match sharing {
            CacheSharing::Shared => Ok(CacheVolumeUse {
                dir,
                _lock: None,
                _private: None,
            }),
            CacheSharing::Locked => {
                let guard = self.lock_of(id).lock_owned().await;
                Ok(CacheVolumeUse {
                    dir,
                    _lock: Some(guard),
                    _private: None,
                })
            }
            CacheSharing::Private => match self.lock_of(id).try_lock_owned() {
                Ok(guard) => Ok(CacheVolumeUse {
                    dir,
                    _lock: Some(guard),
                    _private: None,
                }),
                Err(_) => {
                    let extra = self.root.join(format!("private-{}", random_id()));
                    std::fs::create_dir_all(&extra).map_err(|source| WorkerError::Open {
                        path: extra.clone(),
                        source,
                    })?;
                    Ok(CacheVolumeUse {
                        dir: extra.clone(),
                        _lock: None,
                        _private: Some(tempdir::PrivateDir(extra)),
                    })
                }
            },
        }
    }
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

struct Inner {
    content: ContentStore,
    snapshots: Snapshotter,
    registry: RegistryClient,
    executor: Executor,
    host: Arc<dyn HostAccess>,
    secrets: Arc<dyn SecretSource>,
    volumes: CacheVolumes,
    work_dir: PathBuf,
    /// Tag -> digest answers, per session (a session sees one image per tag).
    resolved: parking_lot::Mutex<HashMap<(String, String), ResolvedImageRef>>,
    /// Set once by the composition root when the API stack exists.
    nested: std::sync::OnceLock<Arc<dyn NestedClients>>,
    /// Per-session registry credentials, set once by the composition root.
    registry_auth: std::sync::OnceLock<Arc<dyn SessionRegistryAuth>>,
}

/// An image reference pinned to its manifest digest, with its config.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImageRef {
    /// `name@sha256:...` (the platform's manifest when the tag names an index).
    pub pinned: String,
    /// The OCI image config's `config` section (Env, Cmd, Entrypoint, WorkingDir, User, ...).
    pub config: serde_json::Value,
}

/// Runs ops on this machine; see the crate docs. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

fn to_registry_platform(p: &dagr_solver::Platform) -> dagr_registry::Platform {
    dagr_registry::Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
    }
}

impl Worker {
    /// Opens (or creates) the worker state under `config.state_dir`. Blocking: call it at start-up.
    pub fn open(
        config: &WorkerConfig,
        credentials: Arc<dyn CredentialsProvider>,
        host: Arc<dyn HostAccess>,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Worker, WorkerError> {
        let dir = |name: &str| -> Result<PathBuf, WorkerError> {
            let p = config.state_dir.join(name);
            std::fs::create_dir_all(&p).map_err(|source| WorkerError::Open {
                path: p.clone(),
                source,
            })?;
            Ok(p)
        };
        let work_dir = dir("work")?;
        // Mounts a previous engine left in the work directory (it was killed): detach them first,
        // so that neither the snapshotter's recovery nor the removal below goes through them.
        if let Ok(mounted) = dagr_snapshot::mount::mounts_under(&work_dir) {
            for m in mounted {
                if let Err(e) = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH) {
                    tracing::warn!(path = %m.display(), error = %e, "detaching a stale mount");
                }
            }
        }
        let content = ContentStore::open(&dir("content")?)?;
        let snapshots = Snapshotter::open(&dir("snapshots")?, config.snapshots.clone())?;
        // Leftover work directories of a previous run (now unmounted).
        if let Ok(entries) = std::fs::read_dir(&work_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let mut exec_config = ExecutorConfig::new(dir("exec")?);
        exec_config.runtime_binary = config.runtime_binary.clone();
        exec_config.max_concurrent_execs = config.max_concurrent_execs.max(1);
        exec_config.output_cap = config.output_cap;
        let executor = Executor::new(exec_config);
        // Containers, mounts and bundles of a previous engine that died without cleaning up.
        let stale = executor.remove_stale_state()?;
        tracing::debug!(?stale, "removed stale executor state");
        Ok(Worker {
            inner: Arc::new(Inner {
                content,
                snapshots,
                registry: RegistryClient::new(config.registry.clone(), credentials),
                executor,
                host,
                secrets,
                volumes: CacheVolumes::new(dir("cache-volumes")?),
                work_dir,
                resolved: parking_lot::Mutex::new(HashMap::new()),
                nested: std::sync::OnceLock::new(),
                registry_auth: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Lets execs with privileged nesting call the engine back through `nested` (set once; the
    /// engine's stack is built after the worker).
    pub fn set_nested_clients(&self, nested: Arc<dyn NestedClients>) {
        let _ = self.inner.nested.set(nested);
    }

    /// Pulls and pushes of a session use the credentials `auth` gives for it (set once).
    pub fn set_registry_auth(&self, auth: Arc<dyn SessionRegistryAuth>) {
        let _ = self.inner.registry_auth.set(auth);
    }

    /// The registry client for a session's pulls and pushes: its credentials, the shared
    /// connection pool.
    pub fn registry_for(&self, session_id: &str) -> RegistryClient {
        match self.inner.registry_auth.get() {
            Some(auth) => self
                .inner
                .registry
                .with_credentials(Arc::new(SessionCredentials {
                    auth: auth.clone(),
                    session_id: session_id.to_owned(),
                })),
            None => self.inner.registry.clone(),
        }
    }

    pub fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    pub fn snapshots(&self) -> &Snapshotter {
        &self.inner.snapshots
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.inner.registry
    }

    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// Resolves an image reference to `name@sha256:...` and its config, for a session (once per
    /// session, tag and platform: a session sees one image per tag).
    pub async fn resolve_image(
        &self,
        session_id: &str,
        reference: &str,
        platform: &dagr_solver::Platform,
    ) -> Result<ResolvedImageRef, WorkerError> {
        let parsed = Reference::parse(reference)?;
        let cache_key = (
            session_id.to_owned(),
            format!("{reference}|{}/{}", platform.os, platform.architecture),
        );
        if let Some(hit) = self.inner.resolved.lock().get(&cache_key) {
            return Ok(hit.clone());
        }
        let resolved = self
            .registry_for(session_id)
            .resolve(
                &parsed,
                &to_registry_platform(platform),
                &self.inner.content,
            )
            .await?;
        let config = resolved
            .config
            .config()
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or(serde_json::Value::Null);
        let pinned = if parsed.digest().is_some() {
            parsed.to_string()
        } else {
            parsed.with_digest(resolved.manifest_digest).to_string()
        };
        let answer = ResolvedImageRef { pinned, config };
        self.inner.resolved.lock().insert(cache_key, answer.clone());
        Ok(answer)
    }

    /// Forgets what a session resolved.
    pub fn release_session(&self, session_id: &str) {
        self.inner
            .resolved
            .lock()
            .retain(|(s, _), _| s != session_id);
    }

    /// Snapshot keys of every output of a result.
    pub fn result_snapshots(result: &ResultRef) -> Vec<String> {
        let mut keys = vec![result.id().to_owned()];
        keys.extend(ResultMeta::of(result).outputs);
        keys
    }

    /// Whether every snapshot of a result still exists (false once GC removed one).
    pub fn has_result(&self, result: &ResultRef) -> bool {
        Self::result_snapshots(result)
            .iter()
            .all(|k| self.inner.snapshots.stat(k).is_ok())
    }

    /// Garbage-collects blobs and snapshots down to `keep_bytes`, oldest unused first, never
    /// touching what `in_use` (the results sessions hold) needs nor snapshots used in the last
    /// `grace` (results being handed to their requesters). The caller then prunes its index of
    /// results whose snapshots are gone ([`Worker::has_result`]).
    pub async fn gc(
        &self,
        in_use: &[ResultRef],
        keep_bytes: u64,
        grace: std::time::Duration,
    ) -> Result<dagr_snapshot::GcReport, WorkerError> {
        const LEASE: &str = "dagr-worker-gc";
        let snapshots = &self.inner.snapshots;
        let _ = snapshots.delete_lease(LEASE).await;
        snapshots.create_lease(LEASE).await?;
        let now = std::time::SystemTime::now();
        let mut keep: std::collections::BTreeSet<String> =
            in_use.iter().flat_map(Self::result_snapshots).collect();
        for info in snapshots.list()? {
            let recent = now
                .duration_since(info.last_used)
                .map_or(true, |age| age < grace);
            if recent {
                keep.insert(info.key);
            }
        }
        for key in &keep {
            snapshots.lease_snapshot(LEASE, key).await?;
        }
        let report = snapshots.gc(&self.inner.content, keep_bytes).await;
        let _ = snapshots.delete_lease(LEASE).await;
        report.map_err(|e| op_err("gc", e.to_string()))
    }

    /// Mounts a committed snapshot read-only for reading; released by [`View::release`] (or, less
    /// promptly, on drop).
    pub async fn mount_view(&self, snapshot: &str) -> Result<View, WorkerError> {
        let key = format!("view-{}", random_id());
        let mut cleanup = Cleanup::new(self.clone());
        let mounts = self.inner.snapshots.view(&key, Some(snapshot)).await?;
        cleanup.snapshots.push(key.clone());
        let dir = self.inner.work_dir.join(&key);
        std::fs::create_dir_all(&dir).map_err(|source| WorkerError::Open {
            path: dir.clone(),
            source,
        })?;
        cleanup.dirs.push(dir.clone());
        let guard = if mounts.is_empty() {
            None
        } else {
            Some(self.inner.snapshots.mount(&key, &dir)?)
        };
        // The copy backend's view may be a plain directory reported without mounts.
        let path = match guard {
            Some(_) => dir.clone(),
            None => self.inner.snapshots.root().join(&key),
        };
        cleanup.guards.extend(guard);
        Ok(View { path, cleanup })
    }

    /// A writable snapshot on `parent` mounted in a work directory.
    async fn prepare_mounted(
        &self,
        cleanup: &mut Cleanup,
        parent: Option<&str>,
        label: &str,
    ) -> Result<(String, PathBuf), WorkerError> {
        let key = format!("active-{label}-{}", random_id());
        self.inner.snapshots.prepare(&key, parent).await?;
        cleanup.snapshots.push(key.clone());
        let dir = self.inner.work_dir.join(&key);
        std::fs::create_dir_all(&dir).map_err(|source| WorkerError::Open {
            path: dir.clone(),
            source,
        })?;
        cleanup.dirs.push(dir.clone());
        let guard = self.inner.snapshots.mount(&key, &dir)?;
        cleanup.guards.push(guard);
        Ok((key, dir))
    }

    /// Unmounts everything `cleanup` holds, then commits `key` as a new result snapshot.
    async fn commit(
        &self,
        cleanup: &mut Cleanup,
        keys: &[String],
    ) -> Result<Vec<String>, WorkerError> {
        cleanup.unmount_all()?;
        let mut names = Vec::new();
        for key in keys {
            let name = format!("r-{}", random_id());
            self.inner.snapshots.commit(&name, key).await?;
            cleanup.snapshots.retain(|k| k != key);
            names.push(name);
        }
        Ok(names)
    }

    /// Commits `key`, the one output of a run, and returns it as the run's result.
    async fn commit_output(
        &self,
        mut cleanup: Cleanup,
        key: String,
    ) -> Result<RunOutput, WorkerError> {
        let name = self
            .commit(&mut cleanup, &[key])
            .await?
            .pop()
            .ok_or_else(|| op_err("commit", "no snapshot committed"))?;
        cleanup.disarm();
        Ok(RunOutput::new(ResultRef::new(
            name,
            serde_json::Value::Null,
        )))
    }

    async fn empty_snapshot(&self) -> Result<String, WorkerError> {
        if self.inner.snapshots.stat(EMPTY_SNAPSHOT).is_ok() {
            return Ok(EMPTY_SNAPSHOT.to_owned());
        }
        let key = format!("active-empty-{}", random_id());
        self.inner.snapshots.prepare(&key, None).await?;
        match self.inner.snapshots.commit(EMPTY_SNAPSHOT, &key).await {
            Ok(()) => {}
            // Another run committed it first.
            Err(_) if self.inner.snapshots.stat(EMPTY_SNAPSHOT).is_ok() => {
                let _ = self.inner.snapshots.remove(&key).await;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(EMPTY_SNAPSHOT.to_owned())
    }

    async fn run_image(
        &self,
        reference: &str,
        platform: &dagr_solver::Platform,
        ctx: &RunCtx,
    ) -> Result<RunOutput, WorkerError> {
        let mut parsed = Reference::parse(reference)?;
        if let Some(d) = ctx.resolved_digest()
            && parsed.digest().is_none()
        {
            parsed = parsed.with_digest(d.parse().map_err(|e| op_err("image", format!("{e}")))?);
        }
        let image = self
            .registry_for(ctx.session_id())
            .pull(
                &parsed,
                &to_registry_platform(platform),
                &self.inner.content,
            )
            .await?;
        self.image_result(image).await
    }

    /// Unpacks a pulled or imported image into snapshots: the result is its top layer, with the
    /// image's manifest digest and config.
    async fn image_result(
        &self,
        image: dagr_registry::PulledImage,
    ) -> Result<RunOutput, WorkerError> {
        let layers: Vec<LayerDescriptor> = image
            .layers
            .iter()
            .map(|d| {
                Ok(LayerDescriptor {
                    digest: d
                        .digest()
                        .to_string()
                        .parse()
                        .map_err(|e| op_err("image", format!("layer digest: {e}")))?,
                    media_type: d.media_type().to_string(),
                })
            })
            .collect::<Result<_, WorkerError>>()?;
        let top = if layers.is_empty() {
            self.empty_snapshot().await?
        } else {
            self.inner
                .snapshots
                .unpack_image_layers(&self.inner.content, &layers, &Default::default())
                .await?
        };
        let config = image
            .config
            .config()
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or(serde_json::Value::Null);
        let meta = ResultMeta {
            image: Some(ImageMeta {
                manifest_digest: image.manifest_digest.to_string(),
                config,
            }),
            ..Default::default()
        };
        Ok(RunOutput::new(ResultRef::new(top, meta.into_value())))
    }

    /// `/image.tar`: the OCI archive of an image built from `rootfs`.
    async fn run_image_archive(
        &self,
        op: &dagr_solver::ImageArchiveOp,
        rootfs: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let rootfs_key = output_snapshot(rootfs, op.rootfs.output)?;
        let base: Option<dagr_snapshot::Digest> = match &op.base_manifest {
            Some(d) => Some(
                d.parse()
                    .map_err(|e| op_err("image_archive", format!("{d}: {e}")))?,
            ),
            None => None,
        };
        let config: serde_json::Value = serde_json::from_str(&op.config)
            .map_err(|e| op_err("image_archive", format!("config: {e}")))?;
        let built = export::build_image(
            self,
            &rootfs_key,
            base.as_ref(),
            export::ImageConfigInput::from_oci_config(&config),
        )
        .await
        .map_err(|e| op_err("image_archive", e.to_string()))?;
        let mut cleanup = Cleanup::new(self.clone());
        let empty = self.empty_snapshot().await?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&empty), "archive")
            .await?;
        export::export_tarball(self, &built, &dir.join("image.tar"), None)
            .await
            .map_err(|e| op_err("image_archive", e.to_string()))?;
        self.commit_output(cleanup, key).await
    }

    /// The image of an OCI archive file in a filesystem.
    async fn run_import_image(
        &self,
        op: &dagr_solver::ImportImageOp,
        archive: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let view = self
            .mount_view(&output_snapshot(archive, op.archive.output)?)
            .await?;
        let path = fsops::resolve_in_root(view.path(), &op.path, true);
        let imported = match path {
            Ok(path) => dagr_registry::layout::import_archive(
                &self.inner.content,
                &path,
                op.tag.as_deref().filter(|t| !t.is_empty()),
                &to_registry_platform(&op.platform),
            )
            .await
            .map_err(|e| op_err("import_image", format!("{}: {e}", op.path))),
            Err(e) => Err(e.into()),
        };
        view.release().await;
        self.image_result(imported?).await
    }

    /// Everything an exec op needs before it runs: writable snapshots of its root and mounts,
    /// cache volumes, secrets, the process spec and (with nesting) the prestart hook.
    async fn prepare_exec(
        &self,
        op: &dagr_solver::ExecOp,
        inputs: &[ResultRef],
        session_id: &str,
    ) -> Result<PreparedExec, WorkerError> {
        let input_snapshot = |r: &InputRef| -> Result<String, WorkerError> {
            let result = inputs
                .get(r.input as usize)
                .ok_or_else(|| op_err("exec", format!("input {} missing", r.input)))?;
            output_snapshot(result, r.output)
        };
        let root = op
            .mounts
            .iter()
            .find(|m| m.dest == "/")
            .ok_or_else(|| op_err("exec", "no root filesystem mount"))?;
        let MountSource::Input { input, .. } = &root.source else {
            return Err(op_err("exec", "the root filesystem must be an input"));
        };
        let mut cleanup = Cleanup::new(self.clone());
        let (root_key, rootfs) = self
            .prepare_mounted(&mut cleanup, Some(&input_snapshot(input)?), "exec")
            .await?;
        let mut writable = vec![root_key];
        let mut mounts = Vec::new();
        let mut volumes = Vec::new();
        for m in op.mounts.iter().filter(|m| m.dest != "/") {
            let kind = match &m.source {
                MountSource::Input { input, path } => {
                    let parent = input_snapshot(input)?;
                    let (key, dir) = self
                        .prepare_mounted(&mut cleanup, Some(&parent), "mount")
                        .await?;
                    if !m.readonly {
                        writable.push(key);
                    }
                    let source = fsops::resolve_in_root(&dir, path, true)?;
                    ExecMountKind::Bind {
                        source,
                        readonly: m.readonly,
                    }
                }
                MountSource::Cache { id, sharing, .. } => {
                    let used = self.inner.volumes.acquire(id, *sharing).await?;
                    let source = used.dir.clone();
                    volumes.push(used);
                    ExecMountKind::Bind {
                        source,
                        readonly: m.readonly,
                    }
                }
                MountSource::Tmpfs { size } => ExecMountKind::Tmpfs { size: *size },
                MountSource::Secret {
                    secret_id,
                    uid,
                    gid,
                    mode,
                } => ExecMountKind::Secret {
                    bytes: self.secret(session_id, secret_id)?,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                },
            };
            mounts.push(ExecMount {
                dest: m.dest.clone(),
                kind,
            });
        }
        let mut env: Vec<String> = op.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (name, id) in &op.secret_env {
            let value = self.secret(session_id, id)?;
            env.push(format!("{name}={}", String::from_utf8_lossy(&value)));
        }
        let spec = ExecSpec {
            args: op.args.clone(),
            env,
            workdir: op.workdir.clone(),
            user: op.user.clone().unwrap_or_default(),
            stdin: op.stdin.clone().map(Bytes::from),
            hostname: op.hostname.clone().unwrap_or_default(),
            mounts,
            insecure_root_capabilities: op.insecure_root_capabilities,
        };
        let mut options = RunOptions::default();
        if op.privileged_nesting {
            options.prestart = Some(self.nesting_hook(op, session_id, &rootfs)?);
            // It may wait for execs of its own nested client.
            options.outside_limit = true;
        }
        Ok(PreparedExec {
            cleanup,
            rootfs,
            writable,
            volumes,
            spec,
            options,
        })
    }

    async fn run_exec(
        &self,
        op: &dagr_solver::ExecOp,
        inputs: &[ResultRef],
        ctx: &RunCtx,
    ) -> Result<RunOutput, WorkerError> {
        let PreparedExec {
            mut cleanup,
            rootfs,
            writable,
            volumes,
            spec,
            options,
        } = self.prepare_exec(op, inputs, ctx.session_id()).await?;
        let result = self
            .inner
            .executor
            .run(&Rootfs::Directory(rootfs.clone()), &spec, options)
            .await?;
        drop(volumes);
        let stdout = String::from_utf8_lossy(&result.stdout.bytes).into_owned();
        let stderr = String::from_utf8_lossy(&result.stderr.bytes).into_owned();
        if let Some(p) = &op.redirect_stdout {
            fsops::mkfile(
                &rootfs,
                &absolute(&op.workdir, p),
                stdout.as_bytes(),
                0o644,
                None,
            )?;
        }
        if let Some(p) = &op.redirect_stderr {
            fsops::mkfile(
                &rootfs,
                &absolute(&op.workdir, p),
                stderr.as_bytes(),
                0o644,
                None,
            )?;
        }
        let mut names = self.commit(&mut cleanup, &writable).await?;
        cleanup.disarm();
        let id = names.remove(0);
        let meta = ResultMeta {
            outputs: names,
            exec: Some(ExecMeta {
                stdout,
                stderr,
                exit_code: result.exit_code,
            }),
            ..Default::default()
        };
        Ok(RunOutput::new(ResultRef::new(id, meta.into_value())))
    }

    /// Runs `op` (an exec whose inputs are solved to `inputs`) interactively on a terminal for
    /// session `session_id`: the process reads `terminal`'s input and its output is sent to
    /// `output`. Nothing is cached or committed: what it changes is discarded, like a
    /// container's scratch layer. Returns the process's exit code, zero or not.
    pub async fn run_terminal(
        &self,
        op: &dagr_solver::ExecOp,
        inputs: &[ResultRef],
        session_id: &str,
        terminal: TerminalIo,
        output: tokio::sync::mpsc::Sender<OutputChunk>,
    ) -> Result<i32, WorkerError> {
        let PreparedExec {
            cleanup,
            rootfs,
            volumes,
            spec,
            mut options,
            ..
        } = self.prepare_exec(op, inputs, session_id).await?;
        options.terminal = Some(terminal);
        options.output_sink = Some(output);
        // A terminal waits on its user for as long as they like: it takes no exec slot.
        options.outside_limit = true;
        let ran = self
            .inner
            .executor
            .run(&Rootfs::Directory(rootfs), &spec, options)
            .await;
        drop(volumes);
        // Unmounts and removes the scratch snapshots.
        drop(cleanup);
        match ran {
            Ok(result) => Ok(result.exit_code),
            Err(dagr_executor::ExecError::Failed { exit_code, .. }) => Ok(exit_code),
            Err(e) => Err(e.into()),
        }
    }

    /// The prestart hook of a nested exec: a listener on 127.0.0.1:0 inside the exec's network
    /// namespace, served by the engine for a fresh nested client of the session, whose port and
    /// token go into the process environment. The serving guard lives as long as the hook, which
    /// the executor drops when the exec ends.
    fn nesting_hook(
        &self,
        op: &dagr_solver::ExecOp,
        session_id: &str,
        rootfs: &Path,
    ) -> Result<dagr_executor::PrestartHook, WorkerError> {
        let nested = self
            .inner
            .nested
            .get()
            .cloned()
            .ok_or_else(|| op_err("exec", "this engine cannot serve nested clients"))?;
        let client = NestedClient {
            session_id: op
                .nesting_session
                .clone()
                .unwrap_or_else(|| session_id.to_owned()),
            client_id: format!("nested-{}", random_id()),
            token: hex::encode(rand::random::<[u8; 16]>()),
            hostname: op.hostname.clone().unwrap_or_default(),
            rootfs: rootfs.to_path_buf(),
            workdir: if op.workdir.is_empty() {
                "/".to_owned()
            } else {
                op.workdir.clone()
            },
            pid_file: PathBuf::new(),
        };
        let guard: Arc<parking_lot::Mutex<Vec<Box<dyn std::any::Any + Send>>>> = Arc::default();
        Ok(Arc::new(move |ctx| {
            let mut client = client.clone();
            client.pid_file = ctx.pid_file.to_path_buf();
            let listener = ctx
                .netns
                .run_inside(|| std::net::TcpListener::bind("127.0.0.1:0"))
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("listening in the exec's network namespace: {e}"))?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let token = client.token.clone();
            let serving = nested.serve(listener, client)?;
            guard.lock().push(serving);
            Ok(vec![
                format!("DAGGER_SESSION_PORT={port}"),
                format!("DAGGER_SESSION_TOKEN={token}"),
            ])
        }))
    }

    fn secret(&self, session_id: &str, id: &str) -> Result<Bytes, WorkerError> {
        self.inner
            .secrets
            .secret(session_id, id)
            .ok_or_else(|| WorkerError::UnknownSecret {
                id: id.to_owned(),
                session: session_id.to_owned(),
            })
    }

    /// Runs a file op on a writable snapshot of `base`, with `from` mounted read-only when given.
    async fn run_file_op<F>(
        &self,
        base: &ResultRef,
        base_ref: &InputRef,
        from: Option<(&ResultRef, &InputRef)>,
        label: &'static str,
        f: F,
    ) -> Result<RunOutput, WorkerError>
    where
        F: FnOnce(&Path, Option<&Path>) -> Result<(), WorkerError> + Send + 'static,
    {
        let mut cleanup = Cleanup::new(self.clone());
        let base_snapshot = output_snapshot(base, base_ref.output)?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&base_snapshot), label)
            .await?;
        let from_view = match from {
            Some((r, input)) => Some(self.mount_view(&output_snapshot(r, input.output)?).await?),
            None => None,
        };
        let from_path = from_view.as_ref().map(|v| v.path().to_path_buf());
        let ran = tokio::task::spawn_blocking(move || f(&dir, from_path.as_deref()))
            .await
            .map_err(|e| WorkerError::Task(e.to_string()))?;
        if let Some(v) = from_view {
            v.release().await;
        }
        ran?;
        self.commit_output(cleanup, key).await
    }

    async fn run_host_dir(
        &self,
        scope: &HostScope,
        path: &str,
        include: &[String],
        exclude: &[String],
    ) -> Result<RunOutput, WorkerError> {
        let mut cleanup = Cleanup::new(self.clone());
        let empty = self.empty_snapshot().await?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&empty), "host")
            .await?;
        self.inner
            .host
            .pull_dir(scope, path, include, exclude, &dir)
            .await
            .map_err(|reason| WorkerError::Host {
                path: path.to_owned(),
                client: scope.client_id.clone(),
                reason,
            })?;
        let digest_dir = dir.clone();
        let digest = tokio::task::spawn_blocking(move || fsops::tree_digest(&digest_dir))
            .await
            .map_err(|e| WorkerError::Task(e.to_string()))??;
        let mut out = self.commit_output(cleanup, key).await?;
        out.content_digest = Some(digest);
        Ok(out)
    }

    async fn run_vertex(
        &self,
        vertex: &Vertex,
        inputs: Vec<ResultRef>,
        ctx: &RunCtx,
    ) -> Result<RunOutput, WorkerError> {
        let input = |r: &InputRef| -> Result<ResultRef, WorkerError> {
            inputs
                .get(r.input as usize)
                .cloned()
                .ok_or_else(|| op_err("file", format!("input {} missing", r.input)))
        };
        match vertex.op() {
            Op::Empty => Ok(RunOutput::new(ResultRef::new(
                self.empty_snapshot().await?,
                serde_json::Value::Null,
            ))),
            Op::Image {
                reference,
                platform,
            } => self.run_image(reference, platform, ctx).await,
            Op::Exec(exec) => self.run_exec(exec, &inputs, ctx).await,
            Op::HostDir {
                scope,
                path,
                include,
                exclude,
            } => self.run_host_dir(scope, path, include, exclude).await,
            Op::MkFile(op) => {
                let base = input(&op.base)?;
                let (path, contents, mode) = (op.path.clone(), op.contents.clone(), op.mode);
                let owner = parse_owner(op.owner.as_deref())?;
                self.run_file_op(&base, &op.base, None, "mkfile", move |root, _| {
                    Ok(fsops::mkfile(root, &path, &contents, mode, owner)?)
                })
                .await
            }
            Op::MkDir(op) => {
                let base = input(&op.base)?;
                let (path, mode, parents) = (op.path.clone(), op.mode, op.make_parents);
                let owner = parse_owner(op.owner.as_deref())?;
                self.run_file_op(&base, &op.base, None, "mkdir", move |root, _| {
                    Ok(fsops::mkdir(root, &path, mode, parents, owner)?)
                })
                .await
            }
            Op::Rm(op) => {
                let base = input(&op.base)?;
                let (path, allow) = (op.path.clone(), op.allow_not_found);
                self.run_file_op(&base, &op.base, None, "rm", move |root, _| {
                    Ok(fsops::rm(root, &path, allow)?)
                })
                .await
            }
            Op::Copy(op) => {
                let base = input(&op.base)?;
                let from = input(&op.from)?;
                let (src, dest) = (op.src.clone(), op.dest.clone());
                let opts = fsops::CopyOptions {
                    include: op.include.clone(),
                    exclude: op.exclude.clone(),
                    mode: op.mode,
                    owner: parse_owner(op.owner.as_deref())?,
                };
                self.run_file_op(
                    &base,
                    &op.base,
                    Some((&from, &op.from)),
                    "copy",
                    move |root, from| {
                        let from = from.ok_or_else(|| op_err("copy", "source not mounted"))?;
                        fsops::copy(from, &src, root, &dest, &opts)?;
                        Ok(())
                    },
                )
                .await
            }
            Op::Merge { .. } => Err(op_err(
                "merge",
                "merge ops are not supported by this worker",
            )),
            Op::Diff { lower, upper } => {
                let lower_result = input(lower)?;
                let upper_result = input(upper)?;
                let empty = ResultRef::new(self.empty_snapshot().await?, serde_json::Value::Null);
                let lower_view = self
                    .mount_view(&output_snapshot(&lower_result, lower.output)?)
                    .await?;
                let lower_path = lower_view.path().to_path_buf();
                let out = self
                    .run_file_op(
                        &empty,
                        &InputRef::main(0),
                        Some((&upper_result, upper)),
                        "diff",
                        move |root, upper| {
                            let upper = upper.ok_or_else(|| op_err("diff", "upper not mounted"))?;
                            fsops::diff_into(&lower_path, upper, root)?;
                            Ok(())
                        },
                    )
                    .await;
                lower_view.release().await;
                out
            }
            Op::ImageArchive(op) => self.run_image_archive(op, &input(&op.rootfs)?).await,
            Op::ImportImage(op) => self.run_import_image(op, &input(&op.archive)?).await,
            Op::SetTimestamps(op) => {
                let base = input(&op.base)?;
                let (path, timestamp) = (op.path.clone(), op.timestamp);
                self.run_file_op(&base, &op.base, None, "timestamps", move |root, _| {
                    Ok(fsops::set_timestamps(root, &path, timestamp)?)
                })
                .await
            }
        }
    }
}

/// `uid[:gid]` owners of file ops (names need the rootfs and are resolved by the API).
fn parse_owner(owner: Option<&str>) -> Result<Option<fsops::Owner>, WorkerError> {
    let Some(o) = owner.filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    let (u, g) = o.split_once(':').unwrap_or((o, o));
    let num = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| op_err("file", format!("owner {o:?} is not uid[:gid]")))
    };
    Ok(Some(fsops::Owner {
        uid: num(u)?,
        gid: num(g)?,
    }))
}

/// `p` made absolute against `workdir`.
fn absolute(workdir: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("{}/{p}", workdir.trim_end_matches('/'))
    }
}

impl OpRunner for Worker {
    async fn run(
        &self,
        vertex: &Vertex,
        inputs: Vec<ResultRef>,
        ctx: &RunCtx,
    ) -> Result<RunOutput, RunError> {
        self.run_vertex(vertex, inputs, ctx)
            .await
            .map_err(RunError::new)
    }

    async fn resolve(&self, vertex: &Vertex, ctx: &RunCtx) -> Result<Option<String>, RunError> {
        let Op::Image {
            reference,
            platform,
        } = vertex.op()
        else {
            return Ok(None);
        };
        let parsed = Reference::parse(reference).map_err(RunError::new)?;
        if let Some(d) = parsed.digest() {
            // Already pinned: no registry round trip.
            return Ok(Some(d.to_string()));
        }
        let resolved = self
            .resolve_image(ctx.session_id(), reference, platform)
            .await
            .map_err(RunError::new)?;
        let digest = resolved
            .pinned
            .rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .ok_or_else(|| RunError::msg(format!("resolving {reference} gave no digest")))?;
        Ok(Some(digest))
    }
}

/// A read-only mount of a result.
pub struct View {
    path: PathBuf,
    cleanup: Cleanup,
}

impl View {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and removes the view now.
    pub async fn release(mut self) {
        let _ = self.cleanup.unmount_all();
        for key in std::mem::take(&mut self.cleanup.snapshots) {
            let _ = self.cleanup.worker.inner.snapshots.remove(&key).await;
        }
        for d in std::mem::take(&mut self.cleanup.dirs) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

/// An exec op ready to run (see [`Worker::prepare_exec`]); its cleanup removes the snapshots
/// unless they are committed.
struct PreparedExec {
    cleanup: Cleanup,
    rootfs: PathBuf,
    /// Snapshot keys of the root and the writable mounts, in output order.
    writable: Vec<String>,
    volumes: Vec<CacheVolumeUse>,
    spec: ExecSpec,
    options: RunOptions,
}

/// Undoes a run's partial work (mounts, active snapshots, work directories) unless disarmed.
struct Cleanup {
    worker: Worker,
    guards: Vec<MountGuard>,
    snapshots: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Cleanup {
    fn new(worker: Worker) -> Self {
        Cleanup {
            worker,
            guards: Vec::new(),
            snapshots: Vec::new(),
            dirs: Vec::new(),
        }
    }

    fn unmount_all(&mut self) -> Result<(), WorkerError> {
        while let Some(g) = self.guards.pop() {
            g.unmount()?;
        }
        for d in std::mem::take(&mut self.dirs) {
            let _ = std::fs::remove_dir(&d);
        }
        Ok(())
    }

    /// The run succeeded: what is left (if anything) was committed.
    fn disarm(&mut self) {
        self.snapshots.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Mount guards unmount on drop (lazily if busy), innermost first.
        while let Some(g) = self.guards.pop() {
            drop(g);
        }
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir(&d);
        }
        let keys = std::mem::take(&mut self.snapshots);
        if keys.is_empty() {
            return;
        }
        let snapshots = self.worker.inner.snapshots.clone();
        let remove = async move {
            for key in keys {
                if let Err(e) = snapshots.remove(&key).await {
                    tracing::warn!(snapshot = key, error = %e, "removing a snapshot of a failed run");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(remove);
            }
            Err(_) => futures::executor::block_on(remove),
        }
    }
}
