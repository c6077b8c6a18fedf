//! The engine as one value, built from a [`Config`] in two steps: [`App::build`] opens the build
//! core (worker, solver, API) under the state directory, builds the service stack and binds the
//! listeners; [`App::serve`] serves them and collects the cache until SIGTERM or SIGINT, then shuts
//! down (sessions torn down, connections drained, the cache index flushed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dagr_engine_state::SessionRegistry;
use dagr_session::{ClientScopeLayer, ScopePolicy};

use crate::config::{Config, GcConfig};
use crate::routes::Engine;
use crate::server::Bound;
use crate::stack::EngineService;
use crate::watchdog::Watchdog;
use crate::{
    export, gc, group_commit, grpc, host, metrics, nested, query, remote_cache, run_dir, server,
    stack, telemetry,
};

/// The oldest client version this engine serves.
const MIN_CLIENT_VERSION: semver::Version = semver::Version::new(0, 1, 0);

/// A built engine: its API, its service stack and its bound listeners, not serving yet.
pub struct App {
    state_dir: PathBuf,
    api: dagr_api::CoreApi,
    engine: Arc<Engine>,
    service: EngineService,
    listeners: Vec<Bound>,
    gc: GcConfig,
    shutdown_grace: Duration,
    exporter: Option<export::Exporter>,
    /// Notified at every session end: the garbage collector runs then.
    session_ended: Arc<tokio::sync::Notify>,
    /// Kills this engine's containers if it dies; stopped after a clean shutdown.
    watchdog: Watchdog,
    /// The containers' network (bridge, DNS, NAT rules): removed after a clean shutdown.
    network: Arc<dagr_network::Network>,
}

impl App {
    /// Creates the state directory, opens the build core in it, builds the service stack (nested
    /// clients of privileged execs call back into it) and binds every listen address.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let state_dir = config.state_dir.clone();
        tokio::fs::create_dir_all(&state_dir)
            .await
            .with_context(|| format!("creating state directory {}", state_dir.display()))?;

        let registry = SessionRegistry::new();
        let nested = Arc::new(nested::NestedServer::new(tokio::runtime::Handle::current()));
        let network = Arc::new(start_network(&config).await?);
        register_emulators().await;
        let (api, watchdog) = open_api(&config, &registry, nested.clone(), network.clone()).await?;
        // Sessions release their cache leases, resolved tags and secrets when they end; then
        // the cache is collected (what they held may go now).
        let session_ended = Arc::new(tokio::sync::Notify::new());
        let remote_cache = remote_cache::RemoteCaches::new(api.clone(), &config.remote_cache);
        {
            let remote_cache = remote_cache.clone();
            registry.on_session_start(Arc::new(move |md| remote_cache.session_started(md)));
        }
        {
            let api = api.clone();
            let session_ended = session_ended.clone();
            let remote_cache = remote_cache.clone();
            registry.on_session_end(Arc::new(move |id| {
                // Before the leases go: an export holds the session's results until it ends.
                remote_cache.session_ended(id);
                api.release_session(id);
                session_ended.notify_one();
                Box::pin(async {})
            }));
        }
        let telemetry = telemetry::EngineTelemetry::new(
            dagr_telemetry::Telemetry::new(dagr_telemetry::TelemetryConfig::default()),
            registry.clone(),
            config.telemetry,
        );
        let exporter = match &config.otlp_export {
            Some(export) if config.telemetry => {
                Some(export::Exporter::start(telemetry.hub(), export)?)
            }
            _ => None,
        };
        let engine = Arc::new(Engine {
            registry: registry.clone(),
            metrics: metrics::EngineMetrics::default(),
            query: query::QueryEngine::new(api.clone(), telemetry.clone())?,
            otlp: dagr_telemetry::OtlpReceiver::new(telemetry.hub().clone()),
            remote_cache,
        });
        let scope = ClientScopeLayer::new(
            registry,
            ScopePolicy {
                min_client_version: MIN_CLIENT_VERSION,
            },
        );
        let grpc = grpc::routes(&MIN_CLIENT_VERSION, &telemetry, &engine.otlp).await;
        let service = stack::build(engine.clone(), grpc, scope);
        // Execs with privileged nesting call back into this same stack.
        nested.serve_with(service.clone(), engine.clone());

        let listeners = server::bind(&config.listen, config.tls.as_ref()).await?;
        Ok(App {
            state_dir,
            api,
            engine,
            service,
            listeners,
            gc: config.gc,
            shutdown_grace: config.shutdown_grace,
            exporter,
            session_ended,
            watchdog,
            network,
        })
    }

    /// Serves until SIGTERM or SIGINT, collecting the cache meanwhile; then stops accepting, tears
    /// down every session, lets open connections finish within the grace period and persists the
    /// cache index.
    pub async fn serve(self) {
        let App {
            state_dir,
            api,
            engine,
            service,
            listeners,
            gc,
            shutdown_grace,
            exporter,
            session_ended,
            watchdog,
            network,
        } = self;
        for l in &listeners {
            // One line per listener on stdout, for scripts and tests that asked for port 0.
            println!("dagr-engine listening on {}", l.describe());
        }
        // Where `dagr engine status|stop` find this engine.
        let pid_file = state_dir.join("engine.pid");
        if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            tracing::warn!(path = %pid_file.display(), error = %e, "writing the pid file");
        }
        tracing::info!(state_dir = %state_dir.display(), "engine ready");
        let group_commit_task = tokio::spawn(group_commit::run(api.clone()));
        let gc_task = tokio::spawn(gc::run(
            api.clone(),
            engine.clone(),
            gc,
            state_dir.clone(),
            session_ended,
        ));

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
        server::serve(listeners, service, engine.clone(), stop_rx, shutdown_grace).await;
        // Exports of the sessions that just ended get the grace period too.
        engine.remote_cache.finish(shutdown_grace).await;
        gc_task.abort();
        if let Some(exporter) = exporter {
            exporter.shutdown().await;
        }
        // Every session is torn down and its containers are gone; the launchers started ahead
        // of execs end now, and their cgroups go.
        if tokio::time::timeout(
            shutdown_grace,
            api.services().worker().executor().wait_idle(),
        )
        .await
        .is_err()
        {
            tracing::warn!("execs were still cleaning up at shutdown");
        }
        let _ = tokio::task::spawn_blocking(move || watchdog.stop()).await;
        network.shutdown().await;
        // What the last execs committed becomes durable before the engine exits.
        group_commit_task.abort();
        group_commit::pass(&api).await;
        // No container is left to keep state for.
        run_dir::unmount(&state_dir);
        // Cache hits keep last-used times in memory; persist them for the next start's GC.
        let solver = api.services().solver.clone();
        match tokio::task::spawn_blocking(move || solver.flush()).await {
            Ok(Ok(n)) => tracing::debug!(entries = n, "cache index flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing the cache index failed"),
            Err(e) => tracing::warn!(error = %e, "flushing the cache index failed"),
        }
        if std::fs::read_to_string(&pid_file)
            .is_ok_and(|p| p.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(&pid_file);
        }
        tracing::info!("engine stopped");
    }
}

/// Registers the QEMU handlers of `qemu-user-static` that `binfmt_misc` lacks, so execs of
/// other architectures run; without them such execs fail with an error saying what to install.
async fn register_emulators() {
    use dagr_executor::emulation::{BINFMT_CONF_DIR, BINFMT_MISC};
    let registered = tokio::task::spawn_blocking(|| {
        dagr_executor::register_qemu_handlers(
            std::path::Path::new(BINFMT_CONF_DIR),
            std::path::Path::new(BINFMT_MISC),
        )
    })
    .await;
    match registered {
        Ok(Ok(names)) if !names.is_empty() => {
            tracing::info!(handlers = ?names, "registered emulators for other platforms")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "other platforms will not run"),
        Err(e) => tracing::warn!(error = %e, "other platforms will not run"),
    }
}

/// Sets the containers' network up under `STATE/network` (removing what a killed predecessor
/// left there).
async fn start_network(config: &Config) -> anyhow::Result<dagr_network::Network> {
    let netns_dir = config.state_dir.join("network").join("netns");
    let mode = match &config.network.bridge {
        Some(bridge) => dagr_network::NetworkMode::Bridge(bridge.clone()),
        None => dagr_network::NetworkMode::Loopback,
    };
    let network = dagr_network::Network::start(dagr_network::NetworkConfig {
        netns_dir,
        mode,
        pool_size: dagr_network::DEFAULT_POOL_SIZE,
    })
    .await
    .context(
        "setting up the container network (--network=none runs containers with loopback only)",
    )?;
    if let Some(bridge) = network.bridge() {
        tracing::info!(bridge = %bridge.name, cidr = %bridge.cidr, dns_upstreams = ?bridge.dns_upstreams, "container network");
    }
    Ok(network)
}

/// Opens the build core (worker, solver) under the state directory and the API on it.
async fn open_api(
    config: &Config,
    registry: &SessionRegistry,
    nested: Arc<nested::NestedServer>,
    network: Arc<dagr_network::Network>,
) -> anyhow::Result<(dagr_api::CoreApi, Watchdog)> {
    let worker_dir = config.state_dir.join("worker");
    let mut worker_config = dagr_worker::WorkerConfig::new(&worker_dir);
    worker_config.run_dir = Some(run_dir::mount(&config.state_dir)?);
    if let Some(runc) = &config.runc {
        worker_config.runtime_binary = runc.clone();
    }
    match &config.init {
        Some(init) if !init.is_file() => {
            anyhow::bail!(
                "--init {}: no such file (install tini, or pass --init none)",
                init.display()
            )
        }
        Some(_) => {}
        None => tracing::warn!(
            "containers run without an init as PID 1 (zombies are not reaped): install tini or pass --init"
        ),
    }
    worker_config.init = config.init.clone();
    worker_config.placed_launchers = config.placed_launchers;
    // No limit unless the user asks for one: BuildKit runs every ready exec at once too.
    worker_config.max_concurrent_execs = config
        .max_execs
        .unwrap_or(tokio::sync::Semaphore::MAX_PERMITS);
    worker_config.network = Some(network);
    worker_config.exec_limits = config.exec_limits;
    worker_config.cache_upload_rate = config.remote_cache.upload_rate;
    if let Some(path) = &config.remote_cache.auth_file {
        worker_config.registry_credentials = remote_cache::read_auth_file(path)?;
    }
    for mirror in &config.registry_mirrors {
        worker_config
            .registry
            .mirrors
            .entry(mirror.host.clone())
            .or_default()
            .push(mirror.endpoint.clone());
    }
    worker_config
        .registry
        .insecure
        .extend(config.insecure_registries.iter().cloned());
    let hosts = Arc::new(host::ClientHosts::new(registry.clone()));
    let secrets = Arc::new(dagr_api::SecretStore::default());
    let exec_concurrency = worker_config.max_concurrent_execs;
    let solver_db = worker_dir.join("solver.redb");
    let registry_auth = Arc::new(dagr_api::RegistryAuthStore::new(secrets.clone()));
    let seams = dagr_worker::WorkerSeams {
        host: hosts.clone(),
        secrets: secrets.clone(),
        registry_auth: registry_auth.clone(),
        nested: Some(nested),
    };
    let (solver, watchdog) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let worker = dagr_worker::Worker::open(&worker_config, seams)
        .context("opening the worker state")?;
        // The runtime as the worker's executor runs it: its binary and state root are known there.
        let runtime = worker.executor().runtime();
        let version = runtime.check().with_context(|| {
            format!(
                "the OCI runtime {} does not work; install runc (apt-get install runc) or pass --runc PATH (dagr-launcher: build it with `cargo build -p dagr-launcher-bin`)",
                runtime.binary().display()
            )
        })?;
        tracing::info!(runtime = %version, "container runtime");
        // From now on containers may run: the watchdog kills them if this engine dies.
        let watchdog = crate::watchdog::Watchdog::start(runtime.binary(), runtime.root())?;
        let options = dagr_solver::SolverOptions { exec_concurrency };
        let solver = match dagr_solver::Solver::open(&solver_db, worker.clone(), options.clone()) {
            // A damaged index is set aside (never a crash loop): the cache starts empty and
            // what it held is collected as unreferenced.
            Err(e) if e.is_damaged_index() => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = solver_db.with_extension(format!("damaged-{stamp}"));
                std::fs::rename(&solver_db, &aside).with_context(|| {
                    format!("setting the damaged cache index {} aside", solver_db.display())
                })?;
                tracing::warn!(error = %e, set_aside = %aside.display(), "the cache index was damaged: starting with an empty one");
                dagr_solver::Solver::open(&solver_db, worker, options)
            }
            opened => opened,
        }
        .context("opening the solver's cache index")?;
        // Results whose snapshots a crash took (they were committed after the last group
        // commit), or a collection removed just before a crash, are run again.
        match solver.prune(|r| solver.runner().has_result(r)) {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => tracing::info!(results = gone.len(), "dropped cache entries whose data is gone"),
            Err(e) => tracing::warn!(error = %e, "checking the cache index against the snapshots"),
        }
        Ok((solver, watchdog))
    })
    .await
    .context("opening the build core")??;
    let api = dagr_api::CoreApi::new(dagr_api::Services {
        running: dagr_api::RunningServices::new(solver.clone()),
        modules: dagr_api::module::Modules::new(config.module_runtimes.clone()),
        scoped_calls: Default::default(),
        solver,
        secrets,
        registry_auth,
        host: hosts,
        config: dagr_api::ApiConfig {
            engine_version: env!("CARGO_PKG_VERSION").to_owned(),
            min_client_version: MIN_CLIENT_VERSION,
            platform: dagr_solver::Platform::host(),
        },
    });
    Ok((api, watchdog))
}

/// Resolves on SIGTERM or SIGINT (never, if the handlers cannot be installed).
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the engine with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
