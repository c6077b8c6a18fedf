//! dagr-worker: runs the solver's ops on this machine. [`Worker`] implements
//! [`dagr_solver::OpRunner`] with the build-core crates, one module per op kind under `ops/`
//! (like BuildKit's `solver/llbsolver/ops`):
//! - `Image` (`ops/image.rs`): pulled with [`dagr_registry::RegistryClient`] into the
//!   [`dagr_snapshot::ContentStore`] and unpacked into committed snapshots (one per layer chain);
//! - `Exec` (`ops/exec.rs`): a writable snapshot on the rootfs input, mounted and run with
//!   [`dagr_executor::Executor`] (runc), with input snapshots, cache volumes ([`CacheVolumes`]),
//!   tmpfs, secrets and forwarded unix sockets of clients mounted, and the services it binds
//!   started first through the [`ServiceStarter`] seam; writable input mounts become extra
//!   outputs. A non-zero exit is [`WorkerError::ExecFailed`] ([`ExecFailed`]: exit code and
//!   output). [`Worker::run_service`] runs an exec live as a service ([`ServiceRun`]);
//! - `MkFile`, `MkDir`, `Copy`, `Rm`, `Diff`, `SetTimestamps` (`ops/file.rs`): [`fsops`] on a
//!   writable snapshot, resolved inside it;
//! - `HostDir` (`ops/host.rs`): pulled from the client through [`HostAccess`] and keyed by content;
//! - `ImageArchive`, `ImportImage` (`ops/archive.rs`): OCI archives written with [`export`] and
//!   read with [`dagr_registry::layout`];
//! - `Empty`: the shared empty snapshot.
//!
//! What the engine plugs in (host files, nested clients, registry credentials, secrets) are the
//! traits of `seams.rs`. Every result is a committed snapshot; its [`ResultRef`] carries
//! [`ResultMeta`] (extra outputs, image config, exec output). [`Worker::mount_view`] mounts a
//! result read-only for readers (file contents, entries, exports). Failed or cancelled runs
//! remove their snapshots and mounts (`mounts.rs`).

pub mod export;
pub mod fsops;

mod cache_volume;
mod exec_phases;
mod host_sync;
mod mounts;
mod ops;
mod remote;
mod result_meta;
mod seams;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use dagr_executor::{Executor, ExecutorConfig};
use dagr_registry::{Reference, RegistryClient, RegistryConfig};
use dagr_snapshot::{ContentStore, Snapshotter, SnapshotterOptions};
use dagr_solver::{InputRef, Op, OpRunner, ResultRef, RunCtx, RunError, RunOutput, Vertex};

pub use cache_volume::{CacheVolumeUse, CacheVolumes};
pub use exec_phases::ExecPhaseTotals;
pub use fsops::FsError;
pub use mounts::View;
pub use ops::exec::ExecFailed;
pub use ops::exec::{ServiceRun, relay_to_host, splice};
pub use ops::host::HostSyncStats;
pub use ops::image::ResolvedImageRef;
pub use remote::RemoteCacheStats;
pub use result_meta::{ExecMeta, ImageMeta, ResultMeta, output_snapshot};
pub use seams::{
    BoxError, HostAccess, HostConnection, HostEntry, HostEntryKind, HostError, HostFetch,
    HostListener, HostListing, HostStream, NestedClient, NestedClients, NestedError, NestedServing,
    SecretSource, ServiceGuard, ServiceStarter, SessionRegistryAuth, UserTerminal, WorkerSeams,
};

use seams::SessionCredentials;

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
    /// An exec's process exited non-zero (or was killed).
    #[error(transparent)]
    ExecFailed(ExecFailed),
    /// An exec could not run or complete (never a non-zero exit: that is
    /// [`WorkerError::ExecFailed`]).
    #[error(transparent)]
    Exec(dagr_executor::ExecError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{op} op: {reason}")]
    Op { op: &'static str, reason: String },
    #[error("result {id} has no output {output}")]
    NoOutput { id: String, output: u32 },
    #[error("secret {id} is not known to session {session}")]
    UnknownSecret { id: String, session: String },
    #[error("reading host path {path} of {client}: {source}")]
    Host {
        path: String,
        client: dagr_metadata::ClientRef,
        #[source]
        source: Box<HostError>,
    },
    #[error("worker task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Git(Box<dagr_source::GitError>),
    #[error(transparent)]
    Http(Box<dagr_source::HttpError>),
    #[error(transparent)]
    Emulation(Box<dagr_executor::EmulationError>),
    #[error(transparent)]
    RemoteCache(Box<dagr_remote_cache::RemoteCacheError>),
}

impl WorkerError {
    fn git(e: dagr_source::GitError) -> Self {
        WorkerError::Git(Box::new(e))
    }
}

impl From<dagr_executor::ExecError> for WorkerError {
    fn from(e: dagr_executor::ExecError) -> Self {
        match e {
            dagr_executor::ExecError::Failed {
                args,
                exit_code,
                limit,
                stdout,
                stderr,
            } => WorkerError::ExecFailed(ExecFailed {
                args,
                exit_code,
                limit,
                stdout,
                stderr,
            }),
            other => WorkerError::Exec(other),
        }
    }
}

fn op_err(op: &'static str, reason: impl Into<String>) -> WorkerError {
    WorkerError::Op {
        op,
        reason: reason.into(),
    }
}

/// Entries and bytes of one kind of cached data (see [`Worker::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindUsage {
    pub entries: u64,
    pub bytes: u64,
}

/// What a prune of cache volumes ([`Worker::prune_cache_volumes`]) or downloads
/// ([`Worker::prune_downloads`]) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    pub freed_bytes: u64,
}

/// What the cache holds, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheUsage {
    /// Pulled or imported images: their snapshots, layers and blobs.
    pub images: KindUsage,
    /// Exec results.
    pub execs: KindUsage,
    /// Other results: file ops, host uploads, git trees, downloads.
    pub other: KindUsage,
    pub cache_volumes: KindUsage,
    /// Downloads of `Query.http` kept to revalidate their URLs (one per URL).
    pub downloads: KindUsage,
}

/// Processes (and threads) an exec may have by default: a fork bomb stops here, well before
/// the host's limits.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// How the worker is set up; the composition root fills it in.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Everything lives under it: `content/`, `snapshots/`, `exec/`, `cache-volumes/`, `work/`.
    pub state_dir: PathBuf,
    /// The OCI runtime (`runc`).
    pub runtime_binary: PathBuf,
    /// Where the files of running containers that no reboot needs live (the runtime's state,
    /// the bundles; see `ExecutorConfig::run_dir`); default: under `exec/`.
    pub run_dir: Option<PathBuf>,
    /// At most this many containers run at once.
    pub max_concurrent_execs: usize,
    pub registry: RegistryConfig,
    pub snapshots: SnapshotterOptions,
    /// Bytes of stdout/stderr kept per exec (default 16 MiB each).
    pub output_cap: usize,
    /// Processes and memory each exec may use (default: 4096 processes, no memory limit).
    pub exec_limits: dagr_executor::ExecLimits,
    /// Where execs get their network (default: loopback-only namespaces under `exec/netns`).
    pub network: Option<Arc<dagr_executor::Network>>,
    /// The `git` binary git sources run (default: `git` on the `PATH`).
    pub git_binary: PathBuf,
    /// The static init every exec runs under as PID 1 (default: none).
    pub init: Option<PathBuf>,
    /// Launchers kept started ahead of execs, each in its exec's cgroups (dagr-launcher only;
    /// default 0: none).
    pub placed_launchers: usize,
    /// Credentials of the engine itself by registry host: remote caches are read and written
    /// with them (default: none, anonymous).
    pub registry_credentials: dagr_registry::StaticCredentials,
    /// Remote cache uploads stay under this many bytes per second (default: no limit).
    pub cache_upload_rate: Option<u64>,
    /// Memory the baselines of host reads may take (what the last read of each directory
    /// listed, to read it again incrementally); beyond it the least recently used go (default
    /// 128 MiB, about a million entries).
    pub host_baselines_budget: u64,
}

impl WorkerConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        WorkerConfig {
            state_dir: state_dir.into(),
            runtime_binary: PathBuf::from("runc"),
            run_dir: None,
            max_concurrent_execs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            registry: RegistryConfig::default(),
            snapshots: SnapshotterOptions::default(),
            // Dagger returns an exec's whole output; keep up to this much of each stream.
            output_cap: 16 << 20,
            network: None,
            git_binary: PathBuf::from("git"),
            init: None,
            placed_launchers: 0,
            registry_credentials: dagr_registry::StaticCredentials::new(),
            cache_upload_rate: None,
            host_baselines_budget: 128 << 20,
            exec_limits: dagr_executor::ExecLimits {
                pids: Some(DEFAULT_PIDS_LIMIT),
                memory_bytes: None,
            },
        }
    }
}

/// Runs blocking filesystem or mount work on the runtime's blocking threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WorkerError> + Send + 'static,
) -> Result<T, WorkerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WorkerError::Task(e.to_string()))?
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
    nested: Option<Arc<dyn NestedClients>>,
    registry_auth: Arc<dyn SessionRegistryAuth>,
    /// Starts the services execs bind; set once the API exists.
    services: std::sync::OnceLock<Arc<dyn ServiceStarter>>,
    git: dagr_source::Git,
    http: dagr_source::HttpFetcher,
    /// One collection at a time: each run keeps what it must keep with the one GC lease, so a
    /// second run (a session ending during `dagr prune`) waits for the first. An async mutex,
    /// held across the run's awaits by design; nothing else takes it.
    gc_run: tokio::sync::Mutex<()>,
    remote: remote::RemoteCaches,
    /// Exec ops started since the engine started (cache hits and imports run none).
    execs_run: std::sync::atomic::AtomicU64,
    /// Where exec runs spent their time.
    exec_phases: exec_phases::ExecPhaseCounters,
    /// The last read of each host directory, to read it again incrementally.
    host_baselines: host_sync::HostBaselines,
    host_sync: ops::host::HostSyncCounters,
}

/// Runs ops on this machine; see the crate docs. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl Worker {
    /// Plugs in what starts the services execs bind (once; later calls are ignored).
    pub fn set_service_starter(&self, starter: Arc<dyn ServiceStarter>) {
        let _ = self.inner.services.set(starter);
    }

    /// The clients' hosts.
    pub fn host(&self) -> &Arc<dyn HostAccess> {
        &self.inner.host
    }

    /// How many exec ops this worker has started (cache hits and imports start none).
    pub fn execs_run(&self) -> u64 {
        self.inner
            .execs_run
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The phases of the exec ops run so far, summed.
    pub fn exec_phases(&self) -> ExecPhaseTotals {
        self.inner.exec_phases.totals()
    }

    /// The containers' network.
    pub fn network(&self) -> &Arc<dagr_executor::Network> {
        &self.inner.executor.config().network
    }

    /// Opens (or creates) the worker state under `config.state_dir`. Blocking: call it at start-up.
    pub fn open(config: &WorkerConfig, seams: WorkerSeams) -> Result<Worker, WorkerError> {
        let WorkerSeams {
            host,
            secrets,
            registry_auth,
            nested,
        } = seams;
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
        // The baselines of host reads and the exports under way lived in a previous process's
        // memory.
        for (prefix, what) in [
            (host_sync::LEASE_PREFIX, "host read baselines"),
            (remote::EXPORT_LEASE_PREFIX, "remote cache exports"),
        ] {
            match snapshots.delete_leases_with_prefix(prefix) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(leases = n, what, "released the leases of a previous engine")
                }
                Err(e) => {
                    tracing::warn!(error = %e, what, "releasing the leases of a previous engine")
                }
            }
        }
        // Leftover work directories of a previous run (now unmounted).
        if let Ok(entries) = std::fs::read_dir(&work_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let mut exec_config = ExecutorConfig::new(dir("exec")?);
        exec_config.runtime_binary = config.runtime_binary.clone();
        exec_config.run_dir = config.run_dir.clone();
        exec_config.max_concurrent_execs = config.max_concurrent_execs.max(1);
        exec_config.output_cap = config.output_cap;
        if let Some(network) = &config.network {
            exec_config.network = network.clone();
        }
        exec_config.limits = config.exec_limits;
        exec_config.init = config.init.clone();
        exec_config.placed_launchers = config.placed_launchers;
        let executor = Executor::new(exec_config);
        // Containers, mounts and bundles of a previous engine that died without cleaning up.
        let stale = executor.remove_stale_state()?;
        tracing::debug!(?stale, "removed stale executor state");
        let mut cache_client = RegistryClient::new(
            config.registry.clone(),
            Arc::new(config.registry_credentials.clone()),
        );
        if let Some(rate) = config.cache_upload_rate {
            // Requests of about a second's worth, each paced.
            cache_client = cache_client
                .with_upload_rate(rate)
                .with_chunk_size(rate.max(64 << 10));
        }
        let remote = remote::RemoteCaches::new(dagr_remote_cache::RemoteCache::new(
            cache_client,
            content.clone(),
        ));
        Ok(Worker {
            inner: Arc::new(Inner {
                content,
                snapshots,
                // Every pull and push goes through `registry_for`, with its session's credentials.
                registry: RegistryClient::new(
                    config.registry.clone(),
                    Arc::new(dagr_registry::Anonymous),
                ),
                executor,
                host,
                secrets,
                volumes: CacheVolumes::open(dir("cache-volumes")?),
                work_dir,
                resolved: parking_lot::Mutex::new(HashMap::new()),
                nested,
                registry_auth,
                services: std::sync::OnceLock::new(),
                git: dagr_source::Git::new(config.git_binary.clone()),
                http: dagr_source::HttpFetcher::new(),
                gc_run: tokio::sync::Mutex::new(()),
                remote,
                execs_run: Default::default(),
                exec_phases: Default::default(),
                host_baselines: host_sync::HostBaselines::new(config.host_baselines_budget),
                host_sync: Default::default(),
            }),
        })
    }

    /// The registry client for a session's pulls and pushes: its credentials, the shared
    /// connection pool.
    pub fn registry_for(&self, session_id: &str) -> RegistryClient {
        self.inner
            .registry
            .with_credentials(Arc::new(SessionCredentials {
                auth: self.inner.registry_auth.clone(),
                session_id: session_id.to_owned(),
            }))
    }

    pub fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    pub fn snapshots(&self) -> &Snapshotter {
        &self.inner.snapshots
    }

    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// Forgets what a session resolved.
    pub fn release_session(&self, session_id: &str) {
        self.inner
            .resolved
            .lock()
            .retain(|(s, _), _| s != session_id);
        self.end_cache_imports(session_id);
    }

    /// Snapshot keys of every output of a result.
    pub fn result_snapshots(result: &ResultRef) -> Vec<String> {
        let mut keys = vec![result.id().to_owned()];
        keys.extend(ResultMeta::of(result).outputs);
        keys
    }

    /// Removes the snapshots a run committed for `dropped` that `kept` does not use (only the
    /// run's own: snapshots named by a chain id or the empty one are shared and stay).
    pub(crate) async fn discard_result(&self, dropped: &ResultRef, kept: &ResultRef) {
        self.move_baselines(dropped.id(), kept.id()).await;
        let keep = Self::result_snapshots(kept);
        for key in Self::result_snapshots(dropped) {
            if keep.contains(&key) || !mounts::is_run_snapshot(&key) {
                continue;
            }
            if let Err(e) = self.inner.snapshots.remove(&key).await {
                tracing::warn!(snapshot = %key, error = %e, "removing a result's duplicate copy");
            }
        }
    }

    /// The blobs an image result stands on besides its snapshots: its manifest, config and
    /// layers, which an image built on it is published or exported from. Empty for other
    /// results; just the manifest when the manifest itself is gone. Blocking.
    fn image_blobs(&self, result: &ResultRef) -> Vec<dagr_snapshot::Digest> {
        let Some(image) = ResultMeta::of(result).image else {
            return Vec::new();
        };
        let Ok(manifest) = image.manifest_digest.parse::<dagr_snapshot::Digest>() else {
            return Vec::new();
        };
        let document = std::fs::read(self.inner.content.blob_path(&manifest))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        let mut blobs = vec![manifest];
        if let Some(document) = document {
            let config = document.pointer("/config/digest");
            let layers = document
                .get("layers")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|layer| layer.get("digest"));
            blobs.extend(
                config
                    .into_iter()
                    .chain(layers)
                    .filter_map(serde_json::Value::as_str)
                    .filter_map(|d| d.parse().ok()),
            );
        }
        blobs
    }

    /// Whether every snapshot of a result still exists, and for an image its manifest, config
    /// and layer blobs (false once GC removed one: the image is pulled again when next asked
    /// for). Blocking.
    pub fn has_result(&self, result: &ResultRef) -> bool {
        Self::result_snapshots(result)
            .iter()
            .all(|k| self.inner.snapshots.stat(k).is_ok())
            && self
                .image_blobs(result)
                .iter()
                .all(|d| self.inner.content.has(d))
    }

    /// What the cache holds, by kind: results (images, execs, the rest: files, uploads,
    /// sources), their snapshots each counted once (an image's layers with it), content blobs
    /// with images, and cache volumes. `results` are the solver's cached results.
    pub async fn usage(&self, results: &[ResultRef]) -> Result<CacheUsage, WorkerError> {
        let snapshots = self.inner.snapshots.list()?;
        let parents: HashMap<String, Option<String>> = snapshots
            .iter()
            .map(|i| (i.key.clone(), i.parent.clone()))
            .collect();
        let mut counted = std::collections::HashSet::new();
        let mut usage = CacheUsage::default();
        for result in results {
            let meta = ResultMeta::of(result);
            let kind = if meta.image.is_some() {
                &mut usage.images
            } else if meta.exec.is_some() {
                &mut usage.execs
            } else {
                &mut usage.other
            };
            kind.entries += 1;
            let mut keys = Self::result_snapshots(result);
            if meta.image.is_some() {
                // An image's snapshot stands on its layers.
                let mut at = parents.get(result.id()).cloned().flatten();
                while let Some(parent) = at {
                    at = parents.get(&parent).cloned().flatten();
                    keys.push(parent);
                }
            }
            for key in keys {
                if counted.insert(key.clone())
                    && let Ok(u) = self.inner.snapshots.usage(&key).await
                {
                    kind.bytes += u.size;
                }
            }
        }
        let content = self.inner.content.clone();
        let blobs = blocking(move || Ok(content.list()?)).await?;
        usage.images.bytes += blobs.iter().map(|b| b.size).sum::<u64>();
        let volumes_root = self.inner.volumes.root().to_path_buf();
        let volumes = blocking(move || {
            CacheVolumes::usage_of(&volumes_root).map_err(|source| WorkerError::Open {
                path: volumes_root.clone(),
                source,
            })
        })
        .await?;
        usage.cache_volumes.entries = volumes.len() as u64;
        usage.cache_volumes.bytes = volumes.iter().map(|(_, b)| b).sum();
        usage.downloads = self.downloads_usage().await?;
        Ok(usage)
    }

    /// Removes the cache volumes no exec holds (with `unused_for`, only those whose last use
    /// is at least that old); an exec that asks for a removed volume later starts it empty.
    pub async fn prune_cache_volumes(
        &self,
        unused_for: Option<std::time::Duration>,
    ) -> Result<Pruned, WorkerError> {
        let worker = self.clone();
        blocking(move || worker.inner.volumes.prune(unused_for)).await
    }

    /// Garbage-collects blobs and snapshots down to `keep_bytes`, oldest unused first, never
    /// touching what `in_use` (the results sessions hold) needs (their snapshots, and an
    /// image's blobs) nor snapshots used in the last `grace` (results being handed to their
    /// requesters). The caller then prunes its index of results whose snapshots or image blobs
    /// are gone ([`Worker::has_result`]).
    pub async fn gc(
        &self,
        in_use: &[ResultRef],
        keep_bytes: u64,
        grace: std::time::Duration,
    ) -> Result<dagr_snapshot::GcReport, WorkerError> {
        const LEASE: &str = "dagr-worker-gc";
        let _one_at_a_time = self.inner.gc_run.lock().await;
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
        // An image a session holds keeps its blobs too: it may still be published.
        let blobs: Vec<dagr_snapshot::Digest> = {
            let (worker, in_use) = (self.clone(), in_use.to_vec());
            blocking(move || Ok(in_use.iter().flat_map(|r| worker.image_blobs(r)).collect()))
                .await?
        };
        for blob in &blobs {
            snapshots.lease_blob(LEASE, blob).await?;
        }
        let mut report = snapshots.gc(&self.inner.content, keep_bytes).await;
        if report
            .as_ref()
            .is_ok_and(|r| r.remaining_bytes > keep_bytes)
        {
            // Not enough: the baselines of host reads give their snapshots up too.
            self.drop_baselines().await;
            let first = report;
            report = snapshots.gc(&self.inner.content, keep_bytes).await;
            if let (Ok(first), Ok(second)) = (first, report.as_mut()) {
                second.removed_blobs.splice(0..0, first.removed_blobs);
                second
                    .removed_snapshots
                    .splice(0..0, first.removed_snapshots);
                second.freed_bytes += first.freed_bytes;
            }
        }
        let _ = snapshots.delete_lease(LEASE).await;
        report.map_err(|e| op_err("gc", e.to_string()))
    }

    async fn run_vertex(
        &self,
        vertex: &Vertex,
        inputs: Vec<ResultRef>,
        ctx: &RunCtx,
    ) -> Result<RunOutput, WorkerError> {
        let input = |r: &InputRef| -> Result<&ResultRef, WorkerError> {
            inputs
                .get(r.input as usize)
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
            Op::Exec(exec) => {
                self.inner
                    .execs_run
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.run_exec(exec, &inputs, ctx).await
            }
            Op::HostDir {
                client,
                path,
                include,
                exclude,
            } => self.run_host_dir(client, path, include, exclude).await,
            Op::MkFile(op) => self.run_mkfile(op, input(&op.base)?).await,
            Op::MkDir(op) => self.run_mkdir(op, input(&op.base)?).await,
            Op::Rm(op) => self.run_rm(op, input(&op.base)?).await,
            Op::Copy(op) => self.run_copy(op, input(&op.base)?, input(&op.from)?).await,
            Op::Merge { .. } => Err(op_err(
                "merge",
                "merge ops are not supported by this worker",
            )),
            Op::Diff { lower, upper } => {
                self.run_diff((input(lower)?, lower), (input(upper)?, upper))
                    .await
            }
            Op::ImageArchive(op) => self.run_image_archive(op, &inputs).await,
            Op::ImportImage(op) => self.run_import_image(op, input(&op.archive)?).await,
            Op::SetTimestamps(op) => self.run_set_timestamps(op, input(&op.base)?).await,
            Op::Git(op) => self.run_git(op, ctx).await,
            Op::Http(op) => self.run_http(op, ctx).await,
        }
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

    async fn discard(&self, dropped: ResultRef, kept: &ResultRef) {
        // In the background: removing a copy of a large tree takes long, and no one waits
        // for it (the snapshotter's recovery finishes a removal an engine stop interrupts).
        let (worker, kept) = (self.clone(), kept.clone());
        tokio::spawn(async move { worker.discard_result(&dropped, &kept).await });
    }

    async fn import(&self, vertex: &Vertex, ctx: &RunCtx) -> Option<RunOutput> {
        self.import_result(vertex, ctx).await
    }

    async fn resolve(&self, vertex: &Vertex, ctx: &RunCtx) -> Result<Option<String>, RunError> {
        let (reference, platform) = match vertex.op() {
            Op::Image {
                reference,
                platform,
            } => (reference, platform),
            Op::Git(op) => {
                let span = ctx.span().start_with(
                    format!("resolve {} {}", op.remote, op.reference),
                    vec![(dagr_telemetry::attr::INTERNAL, true.into())],
                );
                let commit = self.git_commit(op, ctx.session_id()).await;
                span.end_with(&commit);
                return commit.map(Some).map_err(RunError::new);
            }
            Op::Http(op) => {
                let span = ctx.span().start_with(
                    format!("download {}", op.url),
                    vec![(dagr_telemetry::attr::INTERNAL, true.into())],
                );
                let digest = self.resolve_http(op, ctx.session_id()).await;
                span.end_with(&digest);
                return digest.map(Some).map_err(RunError::new);
            }
            _ => return Ok(None),
        };
        let parsed = Reference::parse(reference).map_err(RunError::new)?;
        if let Some(d) = parsed.digest() {
            // Already pinned: no registry round trip.
            return Ok(Some(d.to_string()));
        }
        // An internal step: shown by live views only when asked for (`--debug`).
        let span = ctx.span().start_with(
            format!("resolve {reference}"),
            vec![(dagr_telemetry::attr::INTERNAL, true.into())],
        );
        let resolved = self
            .resolve_image(ctx.session_id(), reference, platform)
            .await;
        span.end_with(&resolved);
        let resolved = resolved.map_err(RunError::new)?;
        let digest = resolved
            .pinned
            .rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .ok_or_else(|| RunError::msg(format!("resolving {reference} gave no digest")))?;
        Ok(Some(digest))
    }
}
