//! [`Executor`]: prepares an OCI bundle for an [`ExecSpec`], runs it with runc, captures its
//! output and cleans everything up (container, mounts, netns, bundle) however the run ends.

use std::future::Future;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::cgroup::{ExecCgroup, ExecLimits, LimitHit, container_cgroup_path};
use crate::mount::{Mount, MountError, MountOps, SyscallMountOps};
use crate::output::{CapturedOutput, OutputChunk, OutputStream, capture};
use crate::placed::{PlacedLaunchers, TakenLauncher, remove_placed};
use crate::pty::{Pty, TerminalInput, TerminalIo};
use crate::runtime::{Runtime, RuntimeError, runtime_log_errors};
use crate::spec::{
    ContainerMount, ExecMountKind, ExecSpec, MAX_OPEN_FILES, RuntimeSpecInput, SpecError,
    build_runtime_spec, validate,
};
use crate::user::{ResolvedUser, UserError, resolve_user};
use dagr_network::{ExecNetwork, NetnsError, Network, NetworkError};

/// Default cap of output kept in memory, per stream.
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;

/// How the executor is set up. Built by the composition root; nothing is read from the
/// environment.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Directory owned by this executor: network namespaces (`netns/`), launchers started
    /// ahead (`placed/`), and unless [`Self::run_dir`] is set, the runtime's state (`runc/`) and
    /// the bundles (`bundles/`) live under it.
    pub state_dir: PathBuf,
    /// Where the files of running containers that no reboot needs live: the runtime's state
    /// (`runtime/`, its `--root`) and the bundles (`bundles/`). A tmpfs here (as `/run/runc`
    /// is for runc) keeps the files written and deleted at every start and exit off the disk's
    /// journal. `None`: under the state dir.
    pub run_dir: Option<PathBuf>,
    /// The OCI runtime binary (a path, or a name looked up in `PATH`).
    pub runtime_binary: PathBuf,
    /// At most this many execs run at once; the others wait.
    pub max_concurrent_execs: usize,
    /// Bytes of stdout and of stderr kept in memory per exec; the rest is counted and dropped.
    pub output_cap: usize,
    /// Where execs get their network namespace (and `/etc/resolv.conf`).
    pub network: Arc<Network>,
    /// The processes and memory every exec may use.
    pub limits: ExecLimits,
    /// A static init (tini) run as every exec's PID 1 (see [`crate::RuntimeSpecInput::init`]);
    /// `None`: the exec's process is PID 1 itself.
    pub init: Option<PathBuf>,
    /// How many launchers to keep started ahead of their execs, each already in its exec's
    /// cgroups (see `placed.rs`); 0 (the default) for none. Only for runtimes that take
    /// `run --wait-in-cgroup` (dagr-launcher); runc does not.
    pub placed_launchers: usize,
}

impl ExecutorConfig {
    /// Defaults: `runc` from `PATH`, one exec per core, 1 MiB of output kept per stream,
    /// loopback-only networks pinned under the state dir's `netns/`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        ExecutorConfig {
            network: Arc::new(Network::loopback(state_dir.join("netns"))),
            state_dir,
            run_dir: None,
            runtime_binary: PathBuf::from("runc"),
            max_concurrent_execs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            output_cap: DEFAULT_OUTPUT_CAP,
            limits: ExecLimits::default(),
            init: None,
            placed_launchers: 0,
        }
    }
}

/// The root filesystem of an exec.
#[derive(Debug, Clone)]
pub enum Rootfs {
    /// A plain directory, used in place (mount points missing in it are created for the run and
    /// removed afterwards).
    Directory(PathBuf),
    /// containerd-style mounts, applied in order on the bundle's `rootfs` directory.
    Mounts(Vec<Mount>),
}

/// Called once the exec's network namespace exists and before its process starts (see
/// [`PrestartContext`]). Its future gives `KEY=value` entries added to the process environment
/// (e.g. the port of a listener it opened); an error aborts the exec. It runs on the runtime's
/// threads: blocking work belongs in `spawn_blocking`.
pub type PrestartHook = Arc<dyn Fn(PrestartContext) -> PrestartFuture + Send + Sync>;

/// What a [`PrestartHook`] returns.
pub type PrestartFuture = Pin<Box<dyn Future<Output = Result<Vec<String>, PrestartError>> + Send>>;

/// Why a [`PrestartHook`] refused an exec: the hook owner's own error, boxed.
pub type PrestartError = Box<dyn std::error::Error + Send + Sync>;

/// What a [`PrestartHook`] learns about the exec.
#[derive(Debug, Clone)]
pub struct PrestartContext {
    /// The exec (container) id.
    pub id: String,
    /// The file its network namespace is pinned on, valid until the exec ends (see
    /// [`PrestartContext::run_in_netns`], e.g. to open a listener the process can reach on
    /// loopback).
    pub netns: PathBuf,
    /// Where the runtime writes the process's host pid (atomically, just after starting it:
    /// the process may already run before the file exists). `/proc/<pid>/root` is the
    /// container's filesystem as the process sees it, mounts included.
    pub pid_file: PathBuf,
    /// Its address on the engine's bridge (none without one).
    pub address: Option<std::net::Ipv4Addr>,
}

impl PrestartContext {
    /// Runs `f` on a new thread that has joined the exec's network namespace, and gives its
    /// result. Sockets created by `f` (for example a listener on `127.0.0.1`) stay in the
    /// namespace.
    pub async fn run_in_netns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetnsError> {
        dagr_network::run_inside(&self.netns, f).await
    }
}

/// Per-run options.
#[derive(Default)]
pub struct RunOptions {
    /// Receives every chunk of stdout and stderr as it is read (for progress display).
    pub output_sink: Option<mpsc::Sender<OutputChunk>>,
    /// Cancels the run: the container is killed and everything cleaned up. Dropping the run
    /// future does the same.
    pub cancel: Option<CancellationToken>,
    /// Asks the process to stop: SIGTERM to the container's PID 1 (forwarded by the init), and
    /// the run goes on until the process exits (or `cancel` kills it).
    pub terminate: Option<CancellationToken>,
    /// Runs before the process starts (see [`PrestartHook`]).
    pub prestart: Option<PrestartHook>,
    /// Run without taking a slot of the concurrency limit: for execs that wait on other execs
    /// (nested clients), which would deadlock if the waiting ones held every slot.
    pub outside_limit: bool,
    /// The names it is known by and the names it sees (bridge mode only; see [`ExecNames`]).
    pub names: Option<ExecNames>,
    /// Run with a terminal: the process gets a pty as stdin, stdout and stderr (so its output
    /// is one stream, reported as stdout), fed and resized through [`TerminalIo`]; `TERM`
    /// defaults to `xterm`. The spec's `stdin` is ignored.
    pub terminal: Option<TerminalIo>,
}

/// How an exec takes part in the engine's DNS (see [`dagr_network::DnsTable`]).
#[derive(Debug, Clone, Default)]
pub struct ExecNames {
    /// Whose names it sees and publishes into (a session).
    pub scope: String,
    /// Names it is published under (a service's hostname).
    pub publish: Vec<String>,
    /// Aliases it alone resolves: alias -> a name of its scope.
    pub aliases: Vec<(String, String)>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("output_sink", &self.output_sink)
            .field("cancel", &self.cancel)
            .field("terminate", &self.terminate)
            .field("prestart", &self.prestart.as_ref().map(|_| "<hook>"))
            .field("outside_limit", &self.outside_limit)
            .field("names", &self.names)
            .field("terminal", &self.terminal)
            .finish()
    }
}

/// The outcome of a successful exec.
#[derive(Debug, Clone)]
pub struct ExecResult {
    /// The container id the exec ran as.
    pub id: String,
    /// Exit code (0).
    pub exit_code: i32,
    /// Captured stdout.
    pub stdout: CapturedOutput,
    /// Captured stderr.
    pub stderr: CapturedOutput,
    /// Where the run's time went.
    pub phases: ExecPhases,
    /// Whether it ran on a launcher started ahead of it (see [`ExecutorConfig::placed_launchers`]).
    pub placed_launcher: bool,
}

/// Wall time of each phase of a run (waiting for an exec slot excluded), for metrics and
/// benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecPhases {
    /// Bundle preparation: directories, rootfs mounts, user, `hosts`/`resolv.conf`, user
    /// mounts and the network namespace.
    pub bundle: Duration,
    /// The prestart hook (nested clients only).
    pub prestart: Duration,
    /// Creating the exec's cgroup.
    pub cgroup: Duration,
    /// Building and writing the runtime spec.
    pub spec: Duration,
    /// The runtime process, from its spawn to its exit with all output read.
    pub runtime: Duration,
    /// Removing the container, mounts, network namespace and bundle.
    pub cleanup: Duration,
}

/// Errors of an exec.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The process ran and exited with a non-zero code (or was killed: 128 + signal).
    #[error(
        "process \"{}\" did not complete successfully: exit code: {exit_code}{}",
        args.join(" "),
        limit.map(|l| format!(": {l}")).unwrap_or_default()
    )]
    Failed {
        /// argv of the process.
        args: Vec<String>,
        /// Exit code.
        exit_code: i32,
        /// The resource limit it ran into, when that is why it failed.
        limit: Option<LimitHit>,
        /// Captured stdout (up to the cap).
        stdout: Bytes,
        /// Captured stderr (up to the cap).
        stderr: Bytes,
    },
    /// The runtime could not start the process (for example: executable not found).
    #[error("start container {id}: {message}")]
    Start {
        /// Container id.
        id: String,
        /// The runtime's error.
        message: String,
    },
    /// The prestart hook refused the exec.
    #[error("prestart hook of exec {id}: {source}")]
    Prestart {
        /// Container id.
        id: String,
        /// The hook's error.
        #[source]
        source: PrestartError,
    },
    /// The run was cancelled.
    #[error("exec {id} cancelled")]
    Cancelled {
        /// Container id (empty when cancelled while waiting for a slot).
        id: String,
    },
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The user could not be resolved.
    #[error("resolve user of exec {id}: {source}")]
    User {
        /// Container id.
        id: String,
        /// The cause.
        source: UserError,
    },
    /// A host mount failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The exec's network could not be set up.
    #[error("network of exec {id}: {source}")]
    Network {
        /// Container id.
        id: String,
        /// The cause.
        source: NetworkError,
    },
    /// A runtime command failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Preparing the bundle failed.
    #[error("prepare {}: {source}", path.display())]
    Prepare {
        /// The path that failed.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Reading output or waiting for the runtime failed.
    #[error("exec {id}: {source}")]
    Io {
        /// Container id.
        id: String,
        /// The IO error.
        source: std::io::Error,
    },
}

/// What [`Executor::remove_stale_state`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleState {
    /// Ids of containers deleted from the runtime.
    pub containers: Vec<String>,
    /// Mount points unmounted.
    pub mounts: Vec<PathBuf>,
    /// Bundles and netns files removed.
    pub paths: Vec<PathBuf>,
}

/// Decodes the octal escapes (`\040` for a space...) of a `/proc/self/mountinfo` path field.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\' && i + 3 < bytes.len())
            .then(|| &bytes[i + 1..i + 4])
            .filter(|digits| digits.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|digits| {
                digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'))
            })
            .and_then(|value| u8::try_from(value).ok());
        if let Some(value) = escaped {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn prepare_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Prepare {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs processes in containers with an OCI runtime. Cheap to share behind an `Arc`; holds no
/// background task.
#[derive(Debug)]
pub struct Executor {
    config: ExecutorConfig,
    runtime: Runtime,
    mount_ops: Arc<dyn MountOps>,
    slots: Arc<Semaphore>,
    live: LiveExecs,
    /// Launchers started ahead of their execs (`None` when the config asks for none).
    placed: Option<Arc<PlacedLaunchers>>,
}

impl Executor {
    /// An executor applying mounts with real syscalls.
    pub fn new(config: ExecutorConfig) -> Self {
        Self::with_mount_ops(config, Arc::new(SyscallMountOps))
    }

    /// An executor applying host mounts through `mount_ops`.
    pub fn with_mount_ops(mut config: ExecutorConfig, mount_ops: Arc<dyn MountOps>) -> Self {
        // Bundles and rootfs paths are given to the runtime: they must not depend on its cwd.
        if let Ok(absolute) = std::path::absolute(&config.state_dir) {
            config.state_dir = absolute;
        }
        let runtime = Runtime::new(
            config.runtime_binary.clone(),
            run_path(&config, "runtime", "runc"),
        );
        let slots = Arc::new(Semaphore::new(config.max_concurrent_execs.max(1)));
        let placed = (config.placed_launchers > 0).then(|| {
            Arc::new(PlacedLaunchers::new(
                config.placed_launchers,
                runtime.clone(),
                config.limits,
                config.state_dir.join("placed"),
                run_path(&config, "bundles", "bundles"),
            ))
        });
        Executor {
            config,
            runtime,
            mount_ops,
            slots,
            live: LiveExecs::default(),
            placed,
        }
    }

    /// Brings the pool of placed launchers back to its depth, in the background (each start
    /// counts as a live exec until it is in the pool).
    fn refill_placed(&self) {
        let Some(placed) = &self.placed else {
            return;
        };
        for _ in 0..placed.reserve_refill() {
            let live = self.live.enter();
            let placed = placed.clone();
            tokio::spawn(async move {
                placed.start_one().await;
                drop(live);
            });
        }
    }

    /// The OCI runtime (for `check()` and for inspecting its state root).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Directory holding the bundles of running execs.
    pub fn bundles_dir(&self) -> PathBuf {
        run_path(&self.config, "bundles", "bundles")
    }

    /// Directory holding the markers of placed launchers (see `placed.rs`).
    fn placed_dir(&self) -> PathBuf {
        self.config.state_dir.join("placed")
    }

    /// Directory holding the network namespaces of running execs.
    pub fn netns_dir(&self) -> PathBuf {
        self.config.state_dir.join("netns")
    }

    /// Removes what execs of a previous process left under the state dir (after a crash or
    /// SIGKILL): containers in the runtime's state root, mounts, bundles and network
    /// namespaces. Blocking; call it at startup, before any [`Executor::run`] on this state dir.
    pub fn remove_stale_state(&self) -> Result<StaleState, ExecError> {
        let mut stale = StaleState::default();
        if self.runtime.root().exists() {
            for id in self.runtime.list_blocking()? {
                self.runtime.delete_force_blocking(&id)?;
                stale.containers.push(id);
            }
        }
        // A dead predecessor's execs are named by the bundles it left: their cgroups go too (its
        // placed launchers' cgroups go with their markers, below).
        let stale_execs: Vec<String> = std::fs::read_dir(self.bundles_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for id in stale_execs.iter().chain(&stale.containers) {
            crate::cgroup::remove_exec_cgroups(id);
        }
        let mountinfo_path = Path::new("/proc/self/mountinfo");
        let mountinfo =
            std::fs::read_to_string(mountinfo_path).map_err(prepare_err(mountinfo_path))?;
        let owned_dirs = [self.bundles_dir(), self.netns_dir(), self.placed_dir()]
            .map(|dir| std::fs::canonicalize(&dir).unwrap_or(dir));
        let mut mount_points: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(unescape_mountinfo)
            .filter(|point| owned_dirs.iter().any(|dir| point.starts_with(dir)))
            .collect();
        // Children before parents.
        mount_points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        mount_points.dedup();
        for point in mount_points {
            self.mount_ops.unmount(&point)?;
            stale.mounts.push(point);
        }
        // A predecessor's placed launcher exits once its stdin is closed (with its engine),
        // perhaps only now: its cgroups are retried briefly; a marker whose cgroups stay is
        // kept for the next sweep.
        let mut kept_markers = Vec::new();
        let [_, _, placed_dir] = &owned_dirs;
        if let Ok(entries) = std::fs::read_dir(placed_dir) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !remove_placed(&id, &entry.path()) {
                    kept_markers.push(entry.path());
                } else {
                    stale.paths.push(entry.path());
                }
            }
        }
        for dir in owned_dirs {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ExecError::Prepare { path: dir, source }),
            };
            for entry in entries {
                let path = entry.map_err(prepare_err(&dir))?.path();
                if kept_markers.contains(&path) {
                    continue;
                }
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(prepare_err(&path))?;
                stale.paths.push(path);
            }
        }
        Ok(stale)
    }

    /// Runs `spec` on `rootfs` and waits for it. A non-zero exit is [`ExecError::Failed`].
    /// Whatever way the run ends (success, failure, cancellation, the future being dropped),
    /// the container, its mounts and its network (names, namespace, address) are gone before
    /// it returns (the rootfs is then as the run left it), and its cgroups and bundle are
    /// removed right after, in the background; when the future is dropped, all of it goes on a
    /// thread of its own.
    /// [`Executor::wait_idle`] waits for those.
    pub async fn run(
        &self,
        rootfs: &Rootfs,
        spec: &ExecSpec,
        mut options: RunOptions,
    ) -> Result<ExecResult, ExecError> {
        validate(spec)?;
        let terminal = options.terminal.take();
        let cancel = options.cancel.clone().unwrap_or_default();
        let permit = if options.outside_limit {
            None
        } else {
            Some(tokio::select! {
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Err(ExecError::Cancelled { id: String::new() }),
                },
                _ = cancel.cancelled() => return Err(ExecError::Cancelled { id: String::new() }),
            })
        };
        // A launcher started ahead, already in its cgroups, or one started now, moving into
        // them while the bundle is prepared (never for a terminal: its stdio is the pty, made
        // for the run).
        // Counted as live from here: a launcher being placed for this exec is.
        let live = self.live.enter();
        let taken = match (&self.placed, &terminal) {
            (Some(placed), None) => match placed.take() {
                Some(taken) => Some(taken),
                None => placed.start_for_exec(self.live.enter()).await,
            },
            _ => None,
        };
        let id = match &taken {
            Some(taken) => taken.id.clone(),
            None => format!("dagr-{:016x}", rand::random::<u64>()),
        };
        let mut cleanup = ExecCleanup {
            runtime: self.runtime.clone(),
            mount_ops: self.mount_ops.clone(),
            id: id.clone(),
            bundle: self.bundles_dir().join(&id),
            child: None,
            mounted: Vec::new(),
            stubs: MountStubs::default(),
            network: None,
            permit,
            live: Some(live),
            cgroup: None,
            placed_marker: None,
            container_ended: false,
            unmount_failed: false,
            hand_off_on_drop: true,
            done: false,
        };
        if let Some(TakenLauncher {
            child,
            cgroup,
            marker,
            ..
        }) = taken
        {
            cleanup.child = Some(child);
            cleanup.cgroup = cgroup;
            cleanup.placed_marker = Some(marker);
        }
        // Bundle preparation writes files, mounts and creates the network namespace: on a
        // blocking thread, which owns the cleanup meanwhile (and runs it if this future is
        // dropped).
        let task = BundleTask {
            rootfs: rootfs.clone(),
            spec: spec.clone(),
            state_dirs: [
                self.bundles_dir(),
                self.netns_dir(),
                self.runtime.root().to_path_buf(),
            ],
            network: self.config.network.clone(),
            names: options.names.take(),
        };
        let mut phases = ExecPhases::default();
        let bundle_started = Instant::now();
        let prepared = tokio::task::spawn_blocking(move || {
            let prepared = task.prepare(&mut cleanup);
            (cleanup, prepared)
        })
        .await;
        phases.bundle = bundle_started.elapsed();
        let (mut cleanup, prepared) = match prepared {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: the task was dropped, and the cleanup with it.
            Err(_) => return Err(ExecError::Cancelled { id }),
        };
        let outcome = match prepared {
            Ok(bundle) => {
                self.start_and_wait(
                    &mut cleanup,
                    bundle,
                    spec,
                    &options,
                    terminal,
                    &cancel,
                    &mut phases,
                )
                .await
            }
            Err(e) => Err(e),
        };
        // The container has ended: start the launchers of the next execs meanwhile.
        self.refill_placed();
        // Cleanup blocks on runtime commands and syscalls: keep it off the async workers. If
        // this future is dropped meanwhile, the blocking task still finishes the cleanup. The
        // container, mounts and network go before the result is given; the cgroups and bundle
        // right after, in the background ([`Executor::wait_idle`] waits for them).
        let cleanup_started = Instant::now();
        let ended = tokio::task::spawn_blocking(move || {
            cleanup.end_container();
            cleanup
        })
        .await;
        phases.cleanup = cleanup_started.elapsed();
        match ended {
            // If the runtime is shutting down and the task never runs, dropping it hands the
            // cleanup to a thread of its own.
            Ok(mut cleanup) => drop(tokio::task::spawn_blocking(move || cleanup.run())),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => tracing::warn!(exec = %id, error = %e, "exec cleanup task failed"),
        }
        outcome.map(|mut result| {
            result.phases = ExecPhases {
                runtime: result.phases.runtime,
                ..phases
            };
            result
        })
    }

    /// Resolves once no exec holds anything (container, mounts, network namespace, bundle):
    /// every run has ended and its cleanup finished, including the cleanups that dropped run
    /// futures handed to a thread of their own. For an orderly shutdown, and for checking that
    /// nothing is left.
    pub async fn wait_idle(&self) {
        loop {
            self.live.idle().await;
            // Placed launchers waiting for execs go too (execs after this start them again).
            match &self.placed {
                Some(placed) if placed.drain().await => {}
                _ => return,
            }
        }
    }

    /// Runs the prepared `bundle`: the prestart hook, the runtime spec, then `runc run` until
    /// the process exits or the run is cancelled. Records the time of each step in `phases`.
    #[allow(clippy::too_many_arguments)]
    async fn start_and_wait(
        &self,
        cleanup: &mut ExecCleanup,
        bundle: PreparedBundle,
        spec: &ExecSpec,
        options: &RunOptions,
        terminal: Option<TerminalIo>,
        cancel: &CancellationToken,
        phases: &mut ExecPhases,
    ) -> Result<ExecResult, ExecError> {
        let id = cleanup.id.clone();
        let bundle_dir = cleanup.bundle.clone();
        let pid_file = bundle_dir.join("init.pid");
        let mut extra_env = Vec::new();
        if let Some(hook) = &options.prestart {
            let hook_started = Instant::now();
            let context = PrestartContext {
                id: id.clone(),
                netns: bundle.netns.clone(),
                pid_file: pid_file.clone(),
                address: bundle.address,
            };
            let answer = tokio::select! {
                answer = hook(context) => answer,
                _ = cancel.cancelled() => return Err(ExecError::Cancelled { id }),
            };
            extra_env = answer.map_err(|source| ExecError::Prestart {
                id: id.clone(),
                source,
            })?;
            phases.prestart = hook_started.elapsed();
        }
        if terminal.is_some() && !spec.env.iter().any(|e| e.starts_with("TERM=")) {
            extra_env.push("TERM=xterm".to_owned());
        }
        let with_env;
        let spec = if extra_env.is_empty() {
            spec
        } else {
            let mut extended = spec.clone();
            extended.env.extend(extra_env);
            with_env = extended;
            &with_env
        };

        // The exec's own cgroup with its limits (the container runs in a child of it); a placed
        // launcher's was made with it.
        let cgroup_started = Instant::now();
        let cgroup = if cleanup.placed_marker.is_some() {
            cleanup.cgroup.clone()
        } else {
            let limits = self.config.limits;
            let cgroup_id = id.clone();
            tokio::task::spawn_blocking(move || ExecCgroup::create(&cgroup_id, limits, false))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|made| made)
                .map_err(|source| ExecError::Io {
                    id: id.clone(),
                    source,
                })?
                .map(Arc::new)
        };
        let cgroups_path = container_cgroup_path(&id, cgroup.as_deref());
        cleanup.cgroup = cgroup.clone();
        phases.cgroup = cgroup_started.elapsed();
        let spec_started = Instant::now();
        let runtime_spec = build_runtime_spec(&RuntimeSpecInput {
            exec: spec,
            rootfs: &bundle.rootfs,
            user: &bundle.user,
            hostname: &bundle.hostname,
            hosts_file: &bundle.hosts_file,
            resolv_conf_file: &bundle.resolv_conf_file,
            netns: Some(&bundle.netns),
            cgroups_path: &cgroups_path,
            max_open_files: bundle.max_open_files,
            mounts: &bundle.mounts,
            capability_bound: bundle.capability_bound,
            terminal: terminal.is_some(),
            init: self.config.init.as_deref(),
        })?;
        let config_path = bundle_dir.join("config.json");
        let config_json =
            serde_json::to_vec_pretty(&runtime_spec).map_err(|e| ExecError::Prepare {
                path: config_path.clone(),
                source: e.into(),
            })?;
        tokio::fs::write(&config_path, config_json)
            .await
            .map_err(prepare_err(&config_path))?;
        phases.spec = spec_started.elapsed();

        // A placed launcher logs into its marker; one that did not get into its cgroups is
        // replaced by a launcher started the usual way (in the cgroups made for it).
        let (placed_child, log_path) = match (cleanup.child.take(), &cleanup.placed_marker) {
            (Some(child), Some(marker)) => {
                let log_path = marker.join(crate::placed::LOG_FILE);
                match placed_launcher_ready(child, &log_path, cancel, &id).await? {
                    Some(child) => (Some(child), log_path),
                    None => (None, bundle_dir.join("runc.log")),
                }
            }
            _ => (None, bundle_dir.join("runc.log")),
        };
        let placed = placed_child.is_some();
        let mut pty = None;
        let (started, mut child) = match placed_child {
            // A placed launcher starts on the byte the feed below sends first.
            Some(child) => (Instant::now(), child),
            None => self.spawn_runtime(
                &id,
                &bundle_dir,
                &pid_file,
                &log_path,
                spec,
                terminal.as_ref(),
                &mut pty,
            )?,
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let child = cleanup.child.insert(child);

        let cap = self.config.output_cap;
        let sink = options.output_sink.clone();
        if let (Some(pty), Some(io)) = (pty, terminal) {
            let (status, stdout) =
                run_with_terminal(child, &pty, io.input, cap, sink, cancel, &id).await?;
            return finish(
                &id,
                spec,
                &log_path,
                status,
                stdout,
                CapturedOutput::default(),
                started,
                cgroup,
            )
            .await;
        }
        let work = async {
            let feed = async {
                if let Some(mut pipe) = stdin {
                    // The process may exit without reading: a broken pipe is not an error.
                    if placed {
                        let _ = pipe.write_all(&[1]).await;
                    }
                    if let Some(bytes) = spec.stdin.as_ref() {
                        let _ = pipe.write_all(bytes).await;
                    }
                    let _ = pipe.shutdown().await;
                }
            };
            let out = async {
                match stdout {
                    Some(pipe) => capture(pipe, OutputStream::Stdout, cap, sink.clone()).await,
                    None => Ok(CapturedOutput::default()),
                }
            };
            let err = async {
                match stderr {
                    Some(pipe) => capture(pipe, OutputStream::Stderr, cap, sink.clone()).await,
                    None => Ok(CapturedOutput::default()),
                }
            };
            let (status, (), out, err) = tokio::join!(child.wait(), feed, out, err);
            (status, out, err)
        };
        // A terminate request sends SIGTERM to the container's PID 1 (the init forwards it to
        // the process) once; the run then ends when the process does, or when cancelled.
        let terminate = options.terminate.clone().unwrap_or_default();
        let mut work = std::pin::pin!(work);
        let mut terminated = false;
        let (status, stdout, stderr) = loop {
            tokio::select! {
                finished = &mut work => break finished,
                _ = cancel.cancelled() => return Err(ExecError::Cancelled { id }),
                _ = terminate.cancelled(), if !terminated => {
                    terminated = true;
                    let runtime = self.runtime.clone();
                    let target = id.clone();
                    let sent = tokio::task::spawn_blocking(move || {
                        runtime.signal_blocking(&target, "TERM")
                    })
                    .await;
                    if let Ok(Err(e)) = sent {
                        tracing::debug!(%id, error = %e, "terminating the exec failed");
                    }
                }
            }
        };
        let io_err = |source| ExecError::Io {
            id: id.clone(),
            source,
        };
        let status = status.map_err(io_err)?;
        let stdout = stdout.map_err(io_err)?;
        let stderr = stderr.map_err(io_err)?;
        let mut result = finish(
            &id, spec, &log_path, status, stdout, stderr, started, cgroup,
        )
        .await?;
        result.placed_launcher = placed;
        Ok(result)
    }

    /// Spawns the runtime's `run` of the bundle (the usual way, when no placed launcher waits),
    /// with piped stdio or, for a terminal, the pty's slave (its master goes to `pty`).
    #[allow(clippy::too_many_arguments)]
    fn spawn_runtime(
        &self,
        id: &str,
        bundle_dir: &Path,
        pid_file: &Path,
        log_path: &Path,
        spec: &ExecSpec,
        terminal: Option<&TerminalIo>,
        pty: &mut Option<Pty>,
    ) -> Result<(Instant, Child), ExecError> {
        let mut command = self
            .runtime
            .run_command(bundle_dir, id, pid_file, log_path, None);
        match terminal {
            Some(io) => {
                let (master, slave) = Pty::open(io.size).map_err(|source| ExecError::Io {
                    id: id.to_owned(),
                    source,
                })?;
                let dup = |fd: &std::os::fd::OwnedFd| {
                    fd.try_clone().map_err(|source| ExecError::Io {
                        id: id.to_owned(),
                        source,
                    })
                };
                command
                    .stdin(Stdio::from(dup(&slave)?))
                    .stdout(Stdio::from(dup(&slave)?))
                    .stderr(Stdio::from(slave));
                *pty = Some(master);
            }
            None => {
                command
                    .stdin(if spec.stdin.is_some() {
                        Stdio::piped()
                    } else {
                        Stdio::null()
                    })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
        }
        command.kill_on_drop(true);
        let started = Instant::now();
        let child = command.spawn().map_err(|source| {
            let binary = self.runtime.binary().to_path_buf();
            ExecError::Runtime(if source.kind() == std::io::ErrorKind::NotFound {
                RuntimeError::NotFound { binary, source }
            } else {
                RuntimeError::Spawn {
                    binary,
                    command: "run".into(),
                    source,
                }
            })
        })?;
        // The command holds the pty's slave descriptors: closing them lets the master read end
        // once runc exits.
        drop(command);
        Ok((started, child))
    }
}

/// A directory of running containers' files: `in_run` under [`ExecutorConfig::run_dir`] when it
/// is set, else `in_state` under the state dir.
fn run_path(config: &ExecutorConfig, in_run: &str, in_state: &str) -> PathBuf {
    match &config.run_dir {
        Some(run) => run.join(in_run),
        None => config.state_dir.join(in_state),
    }
}

/// What bundle preparation needs, moved to a blocking thread (see [`BundleTask::prepare`]).
struct BundleTask {
    rootfs: Rootfs,
    spec: ExecSpec,
    /// Created if missing: the bundles, netns and runtime state directories.
    state_dirs: [PathBuf; 3],
    network: Arc<Network>,
    names: Option<ExecNames>,
}

/// A bundle ready for its runtime spec: what the spec is built from.
struct PreparedBundle {
    rootfs: PathBuf,
    user: ResolvedUser,
    hostname: String,
    hosts_file: PathBuf,
    resolv_conf_file: PathBuf,
    mounts: Vec<ContainerMount>,
    /// The file the exec's network namespace is pinned on.
    netns: PathBuf,
    /// Its address on the bridge.
    address: Option<std::net::Ipv4Addr>,
    max_open_files: u64,
    capability_bound: u64,
}

impl BundleTask {
    /// Blocking: creates the bundle directory, mounts the rootfs (for [`Rootfs::Mounts`]),
    /// resolves the user, writes `hosts` and `resolv.conf`, prepares the user mounts, records
    /// the mount stubs and creates the network namespace. Everything it creates is recorded in
    /// `cleanup`.
    fn prepare(self, cleanup: &mut ExecCleanup) -> Result<PreparedBundle, ExecError> {
        let BundleTask {
            rootfs,
            spec,
            state_dirs,
            network,
            names,
        } = self;
        let id = cleanup.id.clone();
        let bundle = cleanup.bundle.clone();
        for dir in &state_dirs {
            std::fs::create_dir_all(dir).map_err(prepare_err(dir))?;
        }
        std::fs::create_dir(&bundle).map_err(prepare_err(&bundle))?;

        let rootfs_path = match &rootfs {
            Rootfs::Directory(dir) => std::path::absolute(dir).map_err(prepare_err(dir))?,
            Rootfs::Mounts(mounts) => {
                let target = bundle.join("rootfs");
                std::fs::create_dir(&target).map_err(prepare_err(&target))?;
                for mount in mounts {
                    cleanup.mount_ops.mount(mount, &target)?;
                    cleanup.mounted.push(target.clone());
                }
                target
            }
        };
        let user = resolve_user(&rootfs_path, &spec.user).map_err(|source| ExecError::User {
            id: id.clone(),
            source,
        })?;

        let hostname = if spec.hostname.is_empty() {
            id.trim_start_matches("dagr-").chars().take(12).collect()
        } else {
            spec.hostname.clone()
        };
        let network_err = |source| ExecError::Network {
            id: id.clone(),
            source,
        };
        let acquired = if spec.network_disabled {
            network.acquire_isolated()
        } else {
            network.acquire()
        };
        let exec_network = cleanup.network.insert(acquired.map_err(network_err)?);
        if let Some(names) = names {
            exec_network
                .configure(&names.scope, &names.publish, names.aliases)
                .map_err(network_err)?;
        }
        let address = exec_network.address();
        let netns = exec_network.netns_path().to_path_buf();

        let hosts_file = bundle.join("hosts");
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        match address {
            Some(address) => hosts.push_str(&format!("{address}\t{hostname}\n")),
            None => hosts.push_str(&format!("127.0.0.1\t{hostname}\n")),
        }
        std::fs::write(&hosts_file, hosts).map_err(prepare_err(&hosts_file))?;
        let resolv_conf_file = bundle.join("resolv.conf");
        let resolv_conf = if spec.network_disabled {
            String::new()
        } else {
            network.resolv_conf()
        };
        std::fs::write(&resolv_conf_file, resolv_conf).map_err(prepare_err(&resolv_conf_file))?;

        let mounts = prepare_user_mounts(cleanup, &spec)?;

        let mut destinations: Vec<String> =
            ["/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf"]
                .iter()
                .map(|d| d.to_string())
                .collect();
        destinations.extend(spec.mounts.iter().map(|m| m.dest.clone()));
        cleanup.stubs = MountStubs::find(&rootfs_path, &destinations);

        let host_nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .maximum
            .unwrap_or(MAX_OPEN_FILES);
        Ok(PreparedBundle {
            rootfs: rootfs_path,
            user,
            hostname,
            hosts_file,
            resolv_conf_file,
            mounts,
            netns,
            address,
            max_open_files: host_nofile.min(MAX_OPEN_FILES),
            capability_bound: crate::spec::host_capability_bound(),
        })
    }
}

/// Blocking: the container mounts of `spec`'s user mounts, with secrets written to a tmpfs in
/// the bundle and snapshot mounts mounted in it (recorded in `cleanup`).
fn prepare_user_mounts(
    cleanup: &mut ExecCleanup,
    spec: &ExecSpec,
) -> Result<Vec<ContainerMount>, ExecError> {
    let bundle = cleanup.bundle.clone();
    let mut container_mounts = Vec::new();
    let mut secrets_dir: Option<PathBuf> = None;
    for (index, mount) in spec.mounts.iter().enumerate() {
        let dest = mount.dest.clone();
        match &mount.kind {
            ExecMountKind::Bind { source, readonly } => {
                container_mounts.push(ContainerMount::Bind {
                    dest,
                    source: source.clone(),
                    readonly: *readonly,
                    restricted: false,
                })
            }
            ExecMountKind::Tmpfs { size } => {
                container_mounts.push(ContainerMount::Tmpfs { dest, size: *size })
            }
            ExecMountKind::Secret {
                bytes,
                mode,
                uid,
                gid,
            } => {
                let dir = match &secrets_dir {
                    Some(dir) => dir.clone(),
                    None => {
                        let dir = bundle.join("secrets");
                        std::fs::create_dir(&dir).map_err(prepare_err(&dir))?;
                        cleanup.mount_ops.mount(
                            &Mount {
                                kind: "tmpfs".into(),
                                source: "tmpfs".into(),
                                options: vec![
                                    "nosuid".into(),
                                    "nodev".into(),
                                    "noexec".into(),
                                    "mode=0700".into(),
                                ],
                            },
                            &dir,
                        )?;
                        cleanup.mounted.push(dir.clone());
                        secrets_dir = Some(dir.clone());
                        dir
                    }
                };
                let file = dir.join(index.to_string());
                write_secret(&file, bytes, *mode, *uid, *gid)?;
                container_mounts.push(ContainerMount::Bind {
                    dest,
                    source: file,
                    readonly: true,
                    restricted: true,
                });
            }
            ExecMountKind::Snapshot { mounts, readonly } => {
                let target = bundle.join("mounts").join(index.to_string());
                std::fs::create_dir_all(&target).map_err(prepare_err(&target))?;
                for m in mounts {
                    cleanup.mount_ops.mount(m, &target)?;
                    cleanup.mounted.push(target.clone());
                }
                container_mounts.push(ContainerMount::Bind {
                    dest,
                    source: target,
                    readonly: *readonly,
                    restricted: false,
                });
            }
        }
    }
    Ok(container_mounts)
}

/// Drives an exec with a terminal: copies the pty's output to the capture and sink and the
/// user's input to the pty (resizes set its size and signal runc) until runc exits. The user's
/// input closing first kills the exec, like a cancellation.
async fn run_with_terminal(
    child: &mut Child,
    pty: &Pty,
    mut input: mpsc::Receiver<TerminalInput>,
    cap: usize,
    sink: Option<mpsc::Sender<OutputChunk>>,
    cancel: &CancellationToken,
    id: &str,
) -> Result<(std::process::ExitStatus, CapturedOutput), ExecError> {
    let runtime_pid = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid.try_into().ok()?));
    let finished = async {
        let (status, output) =
            tokio::join!(child.wait(), capture(pty, OutputStream::Stdout, cap, sink));
        (status, output)
    };
    let feed = async {
        while let Some(message) = input.recv().await {
            match message {
                // Writes fail once the process is gone; its exit ends the run.
                TerminalInput::Data(bytes) => {
                    let _ = pty.write_all(&bytes).await;
                }
                TerminalInput::Resize(size) => {
                    if pty.resize(size).is_ok()
                        && let Some(pid) = runtime_pid
                    {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
                    }
                }
            }
        }
    };
    let (status, output) = tokio::select! {
        biased;
        finished = finished => finished,
        () = feed => return Err(ExecError::Cancelled { id: id.to_owned() }),
        () = cancel.cancelled() => return Err(ExecError::Cancelled { id: id.to_owned() }),
    };
    let io_err = |source| ExecError::Io {
        id: id.to_owned(),
        source,
    };
    Ok((status.map_err(io_err)?, output.map_err(io_err)?))
}

/// The outcome of a run whose runtime exited with `status`: a start error from the runtime's
/// log, [`ExecError::Failed`] for a non-zero exit (with the limit it ran into, read from the
/// exec's cgroup), else the result.
#[allow(clippy::too_many_arguments)]
async fn finish(
    id: &str,
    spec: &ExecSpec,
    log_path: &Path,
    status: std::process::ExitStatus,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    started: Instant,
    cgroup: Option<Arc<ExecCgroup>>,
) -> Result<ExecResult, ExecError> {
    let runtime = started.elapsed();
    let log = tokio::fs::read_to_string(log_path)
        .await
        .unwrap_or_default();
    let runtime_errors = runtime_log_errors(&log);
    if !runtime_errors.is_empty() {
        return Err(ExecError::Start {
            id: id.to_owned(),
            message: runtime_errors.join("; "),
        });
    }
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    // The init could not start the process: a start error, as the runtime's own would be.
    if let Some(message) = init_exec_failure(spec, exit_code, &stderr.bytes) {
        return Err(ExecError::Start {
            id: id.to_owned(),
            message,
        });
    }
    if exit_code != 0 {
        let killed = status.signal() == Some(9) || exit_code == 137;
        let limit = match cgroup {
            Some(cgroup) => tokio::task::spawn_blocking(move || cgroup.limit_hit(killed))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        return Err(ExecError::Failed {
            args: spec.args.clone(),
            exit_code,
            limit,
            stdout: stdout.bytes,
            stderr: stderr.bytes,
        });
    }
    Ok(ExecResult {
        id: id.to_owned(),
        exit_code,
        stdout,
        stderr,
        phases: ExecPhases {
            runtime,
            ..ExecPhases::default()
        },
        placed_launcher: false,
    })
}

fn write_secret(file: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> Result<(), ExecError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
        .map_err(prepare_err(file))?;
    std::os::unix::fs::chown(file, Some(uid), Some(gid)).map_err(prepare_err(file))?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(prepare_err(file))
}

/// Mount points the runtime will have to create in the rootfs, recorded before the run so they
/// can be removed afterwards, leaving the rootfs (and a layer diffed from it) as it was.
#[derive(Debug, Default)]
pub(crate) struct MountStubs {
    /// Paths that do not exist yet, parents before children.
    missing: Vec<PathBuf>,
    /// Existing directories that will receive a new entry, with their access and modification
    /// times (restored after the stubs are removed).
    parents: Vec<(PathBuf, rustix::fs::Timestamps)>,
}

fn timestamps(meta: &std::fs::Metadata) -> rustix::fs::Timestamps {
    use std::os::unix::fs::MetadataExt;
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    }
}

/// Stubs some run of this process recorded and has not removed yet, with how many runs use
/// each: execs sharing a directory rootfs must not remove a stub another one still mounts on.
static LIVE_STUBS: std::sync::LazyLock<
    parking_lot::Mutex<std::collections::HashMap<PathBuf, usize>>,
> = std::sync::LazyLock::new(Default::default);

impl MountStubs {
    /// Records what is missing under `rootfs` for `destinations` (and the stubs another live
    /// run made). Destinations reached through a symlink in the rootfs are skipped (the runtime
    /// resolves those inside the rootfs; the host must not follow them).
    pub(crate) fn find(rootfs: &Path, destinations: &[String]) -> Self {
        let mut live = LIVE_STUBS.lock();
        let mut stubs = MountStubs::default();
        'dest: for dest in destinations {
            let mut current = rootfs.to_path_buf();
            let mut found_missing = false;
            for component in Path::new(dest).components() {
                let Component::Normal(name) = component else {
                    continue;
                };
                let parent = current.clone();
                current.push(name);
                if found_missing {
                    if !stubs.missing.contains(&current) {
                        stubs.missing.push(current.clone());
                    }
                    continue;
                }
                match std::fs::symlink_metadata(&current) {
                    Ok(meta) if meta.file_type().is_symlink() => continue 'dest,
                    Ok(_) if !live.contains_key(&current) => {}
                    // Missing, or a stub of another live run: ours to count too.
                    _ => {
                        found_missing = true;
                        if stubs.missing.contains(&current) {
                            continue;
                        }
                        stubs.missing.push(current.clone());
                        if !stubs.parents.iter().any(|(p, _)| *p == parent)
                            && let Ok(meta) = std::fs::symlink_metadata(&parent)
                        {
                            stubs.parents.push((parent, timestamps(&meta)));
                        }
                    }
                }
            }
        }
        for stub in &stubs.missing {
            *live.entry(stub.clone()).or_default() += 1;
        }
        stubs
    }

    /// Removes the stubs that are still empty and that no other live run uses, children first,
    /// and restores the times of the directories that held them.
    pub(crate) fn remove(&self) {
        let mut live = LIVE_STUBS.lock();
        for stub in self.missing.iter().rev() {
            if let Some(count) = live.get_mut(stub) {
                *count -= 1;
                if *count > 0 {
                    continue;
                }
                live.remove(stub);
            }
            match std::fs::symlink_metadata(stub) {
                Ok(meta) if meta.is_dir() => {
                    let _ = std::fs::remove_dir(stub);
                }
                Ok(meta) if meta.is_file() && meta.len() == 0 => {
                    let _ = std::fs::remove_file(stub);
                }
                _ => {}
            }
        }
        for (parent, times) in &self.parents {
            let _ = rustix::fs::utimensat(
                rustix::fs::CWD,
                parent,
                times,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            );
        }
    }
}

/// Everything one exec holds. `run` (or `Drop`, when the run future was dropped before the
/// cleanup started) releases it all.
struct ExecCleanup {
    runtime: Runtime,
    mount_ops: Arc<dyn MountOps>,
    id: String,
    bundle: PathBuf,
    child: Option<Child>,
    mounted: Vec<PathBuf>,
    stubs: MountStubs,
    network: Option<ExecNetwork>,
    permit: Option<OwnedSemaphorePermit>,
    /// Counts this exec as live until its cleanup has finished.
    live: Option<LiveExec>,
    /// The exec's cgroup with its limits, removed once the runtime is done with it.
    cgroup: Option<Arc<ExecCgroup>>,
    /// The marker of the placed launcher it runs on: the launcher stays in its cgroups to
    /// the end, so they are removed here (in every hierarchy), then the marker.
    placed_marker: Option<PathBuf>,
    /// [`ExecCleanup::end_container`] has run.
    container_ended: bool,
    /// An unmount failed: the bundle (which may still hold a mounted rootfs) stays.
    unmount_failed: bool,
    /// Whether `Drop` hands the cleanup to a thread of its own (the cleanup of a dropped run
    /// future) rather than running it on the dropping thread (that thread itself).
    hand_off_on_drop: bool,
    done: bool,
}

const STOP_POLL: Duration = Duration::from_millis(10);
const STOP_GRACE: Duration = Duration::from_secs(10);
const KILL_GRACE: Duration = Duration::from_secs(5);

impl ExecCleanup {
    /// Waits for the runtime process to exit, killing the container (and then the runtime)
    /// while it does not.
    fn stop_runtime_process(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // A placed launcher that never got its start byte exits at the end of its stdin.
        drop(child.stdin.take());
        let deadline = Instant::now() + STOP_GRACE;
        let mut killed_container = false;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => {}
            }
            if Instant::now() > deadline {
                break;
            }
            if !killed_container && self.runtime.has_container(&self.id) {
                killed_container = self.runtime.kill_blocking(&self.id).is_ok();
            }
            std::thread::sleep(STOP_POLL);
        }
        tracing::warn!(exec = %self.id, "runtime did not exit after the container was killed");
        let _ = child.start_kill();
        let deadline = Instant::now() + KILL_GRACE;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(STOP_POLL);
        }
    }

    /// Blocking: what must be done before the exec's result is given, so that its rootfs is
    /// as the run left it, ready to be committed, and its network identity is free (a stopped
    /// service's names and address are gone when `stop` answers): stops the runtime process,
    /// deletes the container, removes the mount stubs, unmounts what the executor mounted and
    /// releases the network (names, namespace, address).
    fn end_container(&mut self) {
        if self.done || self.container_ended {
            return;
        }
        self.container_ended = true;
        self.stop_runtime_process();
        self.child = None;
        if self.runtime.has_container(&self.id)
            && let Err(e) = self.runtime.delete_force_blocking(&self.id)
        {
            tracing::warn!(exec = %self.id, error = %e, "runtime delete failed");
        }
        std::mem::take(&mut self.stubs).remove();
        while let Some(target) = self.mounted.pop() {
            if let Err(e) = self.mount_ops.unmount(&target) {
                tracing::warn!(exec = %self.id, error = %e, "unmount failed");
                self.unmount_failed = true;
            }
        }
        if let Some(network) = self.network.take()
            && let Err(e) = network.release()
        {
            tracing::warn!(exec = %self.id, error = %e, "network release failed");
        }
    }

    /// Blocking: [`ExecCleanup::end_container`] (unless done already), then removes the
    /// cgroups and the bundle, and frees the exec's slot.
    fn run(&mut self) {
        self.end_container();
        if self.done {
            return;
        }
        self.done = true;
        // `mounted` is empty unless `end_container` was cut short (a panic).
        let all_unmounted = !self.unmount_failed && self.mounted.is_empty();
        // A placed launcher's removal covers the exec's cgroups (it retries while the last
        // process leaves them); otherwise one pass.
        let cgroup = self.cgroup.take();
        match self.placed_marker.take() {
            Some(marker) => {
                remove_placed(&self.id, &marker);
            }
            None => {
                if let Some(cgroup) = cgroup {
                    cgroup.remove();
                }
            }
        }
        // Never recurse into a bundle that may still hold a mounted rootfs.
        if all_unmounted {
            match std::fs::remove_dir_all(&self.bundle) {
                Ok(()) => {}
                // Preparation failed before creating it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(exec = %self.id, bundle = %self.bundle.display(), error = %e, "bundle removal failed");
                }
            }
        } else {
            tracing::warn!(exec = %self.id, bundle = %self.bundle.display(), "bundle kept: a mount could not be removed");
        }
        self.permit = None;
        self.live = None;
    }

    /// What this cleanup holds, moved into a new one that runs on the thread dropping it;
    /// this one is left with nothing to do.
    fn take_over(&mut self) -> ExecCleanup {
        self.done = true;
        ExecCleanup {
            runtime: self.runtime.clone(),
            mount_ops: self.mount_ops.clone(),
            id: std::mem::take(&mut self.id),
            bundle: std::mem::take(&mut self.bundle),
            child: self.child.take(),
            mounted: std::mem::take(&mut self.mounted),
            stubs: std::mem::take(&mut self.stubs),
            network: self.network.take(),
            permit: self.permit.take(),
            live: self.live.take(),
            cgroup: self.cgroup.take(),
            placed_marker: self.placed_marker.take(),
            container_ended: self.container_ended,
            unmount_failed: self.unmount_failed,
            hand_off_on_drop: false,
            done: false,
        }
    }
}

impl Drop for ExecCleanup {
    /// Never blocks the dropping thread (a runtime worker, when a run future is dropped): the
    /// cleanup, which may wait for the runtime for seconds, moves to a thread of its own. If no
    /// thread can be started, the moved cleanup is dropped with the failed thread's closure and
    /// runs right here, so nothing is ever left behind.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if !self.hand_off_on_drop {
            self.run();
            return;
        }
        let owned = self.take_over();
        let id = owned.id.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("dagr-exec-cleanup".into())
            .spawn(move || drop(owned))
        {
            tracing::warn!(exec = %id, error = %e, "no cleanup thread: cleaned up in place");
        }
    }
}

/// Counts the execs holding resources, from bundle preparation to the end of their cleanup
/// (see [`Executor::wait_idle`]).
#[derive(Debug, Default)]
struct LiveExecs(Arc<watch::Sender<usize>>);

impl LiveExecs {
    fn enter(&self) -> LiveExec {
        self.0.send_modify(|n| *n += 1);
        LiveExec(self.0.clone())
    }

    async fn idle(&self) {
        let mut counts = self.0.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = counts.wait_for(|n| *n == 0).await;
    }
}

/// One live exec; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct LiveExec(Arc<watch::Sender<usize>>);

impl Drop for LiveExec {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A placed launcher once it is in its cgroups: it writes one byte to its stdout once there.
/// Waits for it (it is there already unless the launcher was placed for this very exec) unless
/// `cancel` fires first. `None` (logged with the launcher's `log`) when its stdout ends first:
/// it failed, and is reaped.
async fn placed_launcher_ready(
    mut child: Child,
    log: &Path,
    cancel: &CancellationToken,
    id: &str,
) -> Result<Option<Child>, ExecError> {
    let mut byte = [0u8; 1];
    let ready = match child.stdout.as_mut() {
        Some(stdout) => tokio::select! {
            read = stdout.read(&mut byte) => matches!(read, Ok(1)),
            _ = cancel.cancelled() => return Err(ExecError::Cancelled { id: id.to_owned() }),
        },
        None => false,
    };
    if ready {
        return Ok(Some(child));
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let log = tokio::fs::read_to_string(log).await.unwrap_or_default();
    tracing::warn!(exec = %id, log = %log.trim(), "a placed launcher failed; starting the exec's launcher the usual way");
    Ok(None)
}

/// When the init (tini) reports that it could not exec the process (exit 126 or 127 with its
/// `[FATAL tini (N)] exec ARG0 failed: REASON` line), the error in the runtime's words.
fn init_exec_failure(spec: &ExecSpec, exit_code: i32, stderr: &[u8]) -> Option<String> {
    if exit_code != 126 && exit_code != 127 {
        return None;
    }
    let program = spec.args.first()?;
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("[FATAL tini ("))?;
    let reason = line
        .split_once("] exec ")?
        .1
        .strip_prefix(program.as_str())?
        .strip_prefix(" failed: ")?;
    Some(
        if reason == "No such file or directory" && !program.contains('/') {
            format!("exec: {program:?}: executable file not found in $PATH")
        } else {
            format!("exec: {program:?}: {}", reason.to_lowercase())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mountinfo(r"/state/with\040space/x\011tab"),
            PathBuf::from("/state/with space/x\ttab")
        );
        assert_eq!(unescape_mountinfo(r"/plain"), PathBuf::from("/plain"));
        // Not an escape: kept as is.
        assert_eq!(unescape_mountinfo(r"/a\9z\"), PathBuf::from(r"/a\9z\"));
    }

    #[test]
    fn mount_stubs_record_missing_paths_parents_first() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(rootfs.path().join("etc/hosts"), "x").unwrap();
        std::os::unix::fs::symlink("/", rootfs.path().join("escape")).unwrap();
        let dests: Vec<String> = [
            "/etc/hosts",
            "/etc/resolv.conf",
            "/run/secrets/a",
            "/run/b",
            "/escape/x",
        ]
        .iter()
        .map(|d| d.to_string())
        .collect();
        let stubs = MountStubs::find(rootfs.path(), &dests);
        let relative: Vec<PathBuf> = stubs
            .missing
            .iter()
            .map(|p| p.strip_prefix(rootfs.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            relative,
            [
                PathBuf::from("etc/resolv.conf"),
                PathBuf::from("run"),
                PathBuf::from("run/secrets"),
                PathBuf::from("run/secrets/a"),
                PathBuf::from("run/b"),
            ]
        );
        // Simulate what the runtime creates, plus a file the process wrote.
        std::fs::write(rootfs.path().join("etc/resolv.conf"), "").unwrap();
        std::fs::create_dir_all(rootfs.path().join("run/secrets")).unwrap();
        std::fs::write(rootfs.path().join("run/secrets/a"), "").unwrap();
        std::fs::create_dir(rootfs.path().join("run/b")).unwrap();
        std::fs::write(rootfs.path().join("run/written"), "data").unwrap();
        stubs.remove();
        assert!(!rootfs.path().join("etc/resolv.conf").exists());
        assert!(rootfs.path().join("etc/hosts").exists());
        assert!(!rootfs.path().join("run/secrets").exists());
        assert!(!rootfs.path().join("run/b").exists());
        // A directory the process wrote into is kept.
        assert!(rootfs.path().join("run/written").exists());
    }
}
