//! `dagr-engine`: the composition root. Parses configuration, builds the service stack from the
//! library crates, binds the listeners and owns the runtime and the signals.

mod config;
mod dial_stdio;
mod gc;
mod grpc;
mod host;
mod metrics;
mod nested;
mod query;
mod routes;
mod server;
mod stack;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dagr_engine_state::SessionRegistry;
use dagr_session::{ClientScopeLayer, ScopePolicy};

use config::{ListenAddr, default_socket, default_state_dir};

/// The oldest client version this engine serves.
const MIN_CLIENT_VERSION: semver::Version = semver::Version::new(0, 1, 0);

#[derive(Parser, Debug)]
#[command(
    name = "dagr-engine",
    version,
    about = "The dagr build engine: a GraphQL API over HTTP/1.1 and h2c on unix and loopback TCP sockets",
    long_about = "The dagr build engine. Clients (the dagr CLI, Dagger SDKs through `dagr session`) \
connect to one of its listeners; each listener serves HTTP/1.1 and cleartext HTTP/2 (and gRPC health) \
on the same socket. Log filtering follows RUST_LOG (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on, `unix:///path` or `tcp://127.0.0.1:PORT` (loopback only); repeatable.
    /// Default: the unix socket `engine.sock` in the state directory.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<ListenAddr>,
    /// Directory for the engine's state (sockets, caches).
    /// Default: /var/lib/dagr as root, else $XDG_STATE_HOME/dagr.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How long open connections may take to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    shutdown_grace: u64,
    /// The OCI runtime binary that runs containers.
    #[arg(long, value_name = "PATH", default_value = "runc")]
    runc: PathBuf,
    /// At most this many containers run at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    max_execs: Option<usize>,
    /// A pull mirror for a registry, `HOST=ENDPOINT` (e.g. `docker.io=http://127.0.0.1:5000`);
    /// repeatable, tried in order before the registry itself.
    #[arg(long = "registry-mirror", value_name = "HOST=ENDPOINT")]
    registry_mirrors: Vec<String>,
    /// Cache budget: garbage collection removes unused layers and results, oldest first, until the
    /// cache uses at most this much (suffixes K, M, G, T; powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "20G", value_parser = parse_bytes)]
    gc_keep_bytes: u64,
    /// How often garbage collection runs.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    gc_interval: u64,
    /// A registry host reached over plain http (loopback hosts always are); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the engine's GraphQL schema as SDL.
    Schema,
    /// Connect stdin/stdout to a running engine's listener (connection helper for `stdio://` hosts).
    DialStdio {
        /// The engine address; default: the default unix socket of the default state directory.
        #[arg(long, value_name = "ADDR")]
        addr: Option<ListenAddr>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(dagr_api::ENGINE_THREAD_STACK)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Some(Command::DialStdio { addr }) => {
            let addr =
                addr.unwrap_or_else(|| ListenAddr::Unix(default_socket(&default_state_dir())));
            runtime.block_on(dial_stdio::run(addr))
        }
        Some(Command::Schema) => {
            print!("{}", dagr_api::schema()?.sdl());
            Ok(())
        }
        None => runtime.block_on(serve(cli.serve)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    let listen = if args.listen.is_empty() {
        vec![ListenAddr::Unix(default_socket(&state_dir))]
    } else {
        args.listen.clone()
    };

    let registry = SessionRegistry::new();
    let api = open_api(&args, &state_dir, &registry).await?;
    {
        // Sessions release their cache leases, resolved tags and secrets when they end.
        let api = api.clone();
        registry.on_session_end(Arc::new(move |id| {
            api.release_session(id);
            Box::pin(async {})
        }));
    }
    let engine = Arc::new(routes::Engine {
        registry: registry.clone(),
        metrics: metrics::EngineMetrics::default(),
        query: query::QueryEngine::new(api.clone())?,
    });
    let scope = ClientScopeLayer::new(
        registry,
        ScopePolicy {
            min_client_version: MIN_CLIENT_VERSION,
        },
    );
    let grpc = grpc::routes(&MIN_CLIENT_VERSION).await;
    let service = stack::build(engine.clone(), grpc, scope);
    // Execs with privileged nesting call back into this same stack.
    api.services()
        .worker()
        .set_nested_clients(Arc::new(nested::NestedServer {
            handle: tokio::runtime::Handle::current(),
            service: service.clone(),
            engine: engine.clone(),
        }));

    let listeners = server::bind(&listen).await?;
    for l in &listeners {
        // One line per listener on stdout, for scripts and tests that asked for port 0.
        println!("dagr-engine listening on {}", l.describe());
    }
    tracing::info!(state_dir = %state_dir.display(), "engine ready");
    let gc_task = tokio::spawn(gc::run(
        api.clone(),
        args.gc_keep_bytes,
        Duration::from_secs(args.gc_interval.max(1)),
    ));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    server::serve(
        listeners,
        service,
        engine,
        stop_rx,
        Duration::from_secs(args.shutdown_grace),
    )
    .await;
    gc_task.abort();
    // Cache hits keep last-used times in memory; persist them for the next start's GC.
    let solver = api.services().solver.clone();
    match tokio::task::spawn_blocking(move || solver.flush()).await {
        Ok(Ok(n)) => tracing::debug!(entries = n, "cache index flushed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing the cache index failed"),
        Err(e) => tracing::warn!(error = %e, "flushing the cache index failed"),
    }
    tracing::info!("engine stopped");
    Ok(())
}

/// Opens the build core (worker, solver) under the state directory and the API on it.
async fn open_api(
    args: &ServeArgs,
    state_dir: &std::path::Path,
    registry: &SessionRegistry,
) -> anyhow::Result<dagr_api::CoreApi> {
    let runtime = dagr_executor::Runtime::new(&args.runc, state_dir.join("worker/exec/runc"));
    let version = runtime.check().with_context(|| {
        format!(
            "the OCI runtime {} does not work; install runc (apt-get install runc) or pass --runc PATH",
            args.runc.display()
        )
    })?;
    tracing::info!(runtime = %version.lines().next().unwrap_or_default(), "container runtime");
    let mut config = dagr_worker::WorkerConfig::new(state_dir.join("worker"));
    config.runtime_binary = args.runc.clone();
    if let Some(n) = args.max_execs {
        config.max_concurrent_execs = n.max(1);
    }
    for m in &args.registry_mirrors {
        let (host, endpoint) = m
            .split_once('=')
            .with_context(|| format!("--registry-mirror {m:?} is not HOST=ENDPOINT"))?;
        config
            .registry
            .mirrors
            .entry(host.to_owned())
            .or_default()
            .push(endpoint.to_owned());
    }
    config
        .registry
        .insecure
        .extend(args.insecure_registries.iter().cloned());
    let hosts = Arc::new(host::ClientHosts::new(registry.clone()));
    let secrets = Arc::new(dagr_api::SecretStore::default());
    let exec_concurrency = config.max_concurrent_execs;
    let solver_db = state_dir.join("worker/solver.redb");
    let (worker_hosts, worker_secrets) = (hosts.clone(), secrets.clone());
    let solver = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let worker = dagr_worker::Worker::open(
            &config,
            Arc::new(dagr_registry::Anonymous),
            worker_hosts,
            worker_secrets,
        )
        .context("opening the worker state")?;
        let solver = dagr_solver::Solver::open(
            &solver_db,
            worker,
            dagr_solver::SolverOptions { exec_concurrency },
        )
        .context("opening the solver's cache index")?;
        Ok(solver)
    })
    .await
    .context("opening the build core")??;
    let registry_auth = Arc::new(dagr_api::RegistryAuthStore::new(secrets.clone()));
    solver.runner().set_registry_auth(registry_auth.clone());
    Ok(dagr_api::CoreApi::new(dagr_api::Services {
        solver,
        secrets,
        registry_auth,
        host: hosts,
        config: dagr_api::ApiConfig {
            engine_version: env!("CARGO_PKG_VERSION").to_owned(),
            min_client_version: MIN_CLIENT_VERSION,
            platform: host_platform(),
        },
    }))
}

fn host_platform() -> dagr_solver::Platform {
    let p = dagr_registry::Platform::host();
    dagr_solver::Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant,
    }
}

/// `20G`, `512M`, `1048576`: a byte count with an optional binary suffix.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count like 20G, 512M or 1048576"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

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

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("20G"), Ok(20 << 30));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }
}
