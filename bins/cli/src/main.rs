//! `dagr`: the command-line client of the dagr engine. `query` sends GraphQL, `run` runs a command
//! with a session (the way SDKs are driven), `session` serves a session to an SDK that started it,
//! `terminal` opens an interactive process in a container on this terminal.

mod engine;
mod module;
mod progress;
mod proxy;
mod receiver;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use dagr_client::{ConnectOptions, EngineHost, StdioTerminal};

#[derive(Parser, Debug)]
#[command(
    name = "dagr",
    version,
    about = "Client of the dagr build engine",
    long_about = "Client of the dagr build engine. The engine is chosen with --host or DAGR_HOST: \
unix:///path/to/engine.sock, tcp://127.0.0.1:PORT, or stdio://CMD ARGS... (a connection helper such \
as `dagr-engine dial-stdio`), or through a tool that runs `dagr-engine dial-stdio` where the engine \
is: ssh://[USER@]HOST[:PORT][/SOCKET] (the ssh command line from DAGR_SSH_COMMAND, default ssh), \
docker-container://NAME, docker-image://REF (starts a privileged engine container of that image \
when none runs, its state on a named volume), podman-container://NAME, \
kube-pod://NAME?namespace=NS&container=C&context=CTX. An engine whose TCP listener requires \
TLS with client certificates is reached with DAGR_TLS_CERT and DAGR_TLS_KEY (this client's \
certificate and key) and DAGR_TLS_CA (the CA of the engine's certificate). Without either, dagr uses the engine of its state directory \
(DAGR_STATE_DIR, default /var/lib/dagr as root, else $XDG_STATE_HOME/dagr) and starts it in the \
background when none answers there (`dagr-engine` beside `dagr`, else from the PATH, with the \
extra flags in DAGR_ENGINE_ARGS; its log is engine.log there); `dagr engine status` and `dagr \
engine stop` manage it. Inside a container started with privileged nesting, without --host, dagr \
joins that container's session through DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN. Remote \
caches come from Dagger's variables: _EXPERIMENTAL_DAGGER_CACHE_CONFIG (read and written), \
_EXPERIMENTAL_DAGGER_CACHE_IMPORT_CONFIG, _EXPERIMENTAL_DAGGER_CACHE_EXPORT_CONFIG \
(`type=registry,ref=REF[,mode=max]`, `;` between caches)."
)]
struct Cli {
    /// Engine address (unix://, tcp:// or stdio://).
    #[arg(long, env = "DAGR_HOST", global = true, value_name = "HOST")]
    host: Option<String>,
    /// Working directory that relative host paths are resolved against (default: the current one).
    #[arg(long, global = true, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// How to show the steps while they run, on stderr: `tty` a live tree, `plain` a line per
    /// step start, end and output line (for CI logs), `quiet` nothing; `auto` is `tty` on a
    /// terminal and `plain` otherwise.
    #[arg(
        long,
        env = "DAGR_PROGRESS",
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "MODE"
    )]
    progress: progress::ProgressArg,
    /// Show internal steps too (such as image reference resolution).
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send a GraphQL document (from FILE, or stdin with `-` or no FILE) and print the JSON result.
    Query {
        /// The file holding the query; `-` or nothing reads stdin.
        file: Option<String>,
        /// A variable, `name=value`; the value is parsed as JSON when it is valid JSON, else taken as
        /// a string. Repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// The operation to run when the document has several.
        #[arg(long, value_name = "NAME")]
        operation: Option<String>,
    },
    /// Open a session and run CMD with DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN set, so that an SDK
    /// inside it talks to the engine through this process; exits with CMD's exit code.
    Run {
        /// Label `key:value` for the session; repeatable.
        #[arg(long = "label", value_name = "KEY:VALUE")]
        labels: Vec<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Forward a service's ports to 127.0.0.1 on this machine until Ctrl-C. The service is given
    /// by its ID (`{container{...asService{id}}}` in a query), or `@FILE` to read the ID from a
    /// file. Each forward is printed on stderr once it listens.
    Up {
        /// The service's ID, or @FILE holding it.
        #[arg(value_name = "SERVICE_ID")]
        service: String,
        /// `FRONTEND:BACKEND` (listen on FRONTEND here, reach the service's BACKEND) or `PORT`
        /// (the same number on both sides); repeatable. Default: every TCP port the service
        /// exposes, each on its own number.
        #[arg(long = "port", short = 'p', value_name = "[FRONTEND:]BACKEND")]
        ports: Vec<String>,
        /// Listen on free ports chosen by the system instead.
        #[arg(long)]
        random: bool,
    },
    /// Show what the engine's cache holds, by kind: images, exec results, other results (files,
    /// uploads, git trees, downloaded files), cache volumes and the downloads of `http` sources
    /// kept to revalidate them.
    Du,
    /// Remove from the engine's cache what no session holds: every result, or with
    /// --older-than only those unused for that long, with the layers only they needed; cache
    /// volumes no exec holds (an exec that asks for one again starts it empty); downloads of
    /// `http` sources.
    Prune {
        /// Keep what was used within this duration (`90s`, `30m`, `12h`, `7d`).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<u64>,
        /// Keep every cache volume.
        #[arg(long)]
        keep_cache_volumes: bool,
    },
    /// Open an interactive terminal in a container on this terminal and exit with its command's
    /// exit code. The container is given by its ID (`{container{...{id}}}` in a query), or
    /// `@FILE` to read the ID from a file.
    Terminal {
        /// The container's ID, or @FILE holding it.
        #[arg(value_name = "CONTAINER_ID")]
        container: String,
        /// Let the command call the engine back (`dagr query` inside the terminal joins this
        /// session).
        #[arg(long)]
        experimental_privileged_nesting: bool,
        /// Grant the command every capability.
        #[arg(long)]
        insecure_root_capabilities: bool,
        /// The command and its arguments (default: the container's default terminal command,
        /// else `sh`).
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Call a module's functions.
    ///
    /// `dagr call FUNCTION [--arg value]... [FUNCTION ...]`. The module is the nearest directory
    /// with a dagger.json (or -m). Strings, numbers, booleans
    /// and lists (comma-separated, or the flag repeated) are given as text; a Directory or File
    /// as a host path, a Secret as env:NAME, file:PATH or cmd:COMMAND, a Container as an image
    /// address, a Service as tcp://HOST:PORT. Scalar results are printed, a Container,
    /// Directory or File is evaluated (or exported with -o). `dagr call --help` lists the
    /// functions, `dagr call FUNCTION --help` a function's arguments.
    #[command(disable_help_flag = true)]
    Call {
        /// The module: a directory, or a git reference (`github.com/owner/repo/sub@v1`,
        /// `git://host/repo.git/sub@main`).
        #[arg(short = 'm', long = "mod", value_name = "MODULE")]
        module: Option<String>,
        /// Export a Container, Directory or File result to this host path.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: Option<PathBuf>,
        /// Functions and their arguments.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "FUNCTION [ARGS]"
        )]
        args: Vec<String>,
    },
    /// List a module's functions, or those of the object that FUNCTION... returns.
    Functions {
        /// The module's directory.
        #[arg(short = 'm', long = "mod", value_name = "MODULE")]
        module: Option<String>,
        /// A chain of functions whose result's functions to list.
        #[arg(value_name = "FUNCTION")]
        path: Vec<String>,
    },
    /// Create a module in PATH (default: the current directory): its dagger.json and, with
    /// --sdk, the SDK's template files.
    Init {
        /// The SDK of the module's code (supported: python).
        #[arg(long)]
        sdk: Option<String>,
        /// The module's name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Where the code goes, relative to PATH (default: PATH itself).
        #[arg(long)]
        source: Option<String>,
        /// The module's directory, created if missing (default: the current directory).
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
    /// Bring a module up to date: writes its dagger.json and the SDK's template files that are
    /// missing (with --sdk, sets the SDK first).
    Develop {
        /// The module's directory.
        #[arg(short = 'm', long = "mod", value_name = "MODULE")]
        module: Option<String>,
        #[arg(long)]
        sdk: Option<String>,
        #[arg(long)]
        source: Option<String>,
    },
    /// Add a module (a directory or a git reference) to this module's dependencies.
    ///
    /// Its functions become callable from this module's code (`dag.<name>()` in Python), whose
    /// client code for it is generated into the module's `sdk/`.
    Install {
        /// The module's directory.
        #[arg(short = 'm', long = "mod", value_name = "MODULE")]
        module: Option<String>,
        /// The dependency's name (default: its own).
        #[arg(long)]
        name: Option<String>,
        /// A module directory, or a git reference (`github.com/owner/repo/sub@v1`,
        /// `https://host/repo.git/sub@main`).
        #[arg(value_name = "PATH|GIT")]
        dependency: String,
    },
    /// The engine of this machine that dagr starts when no --host is given.
    Engine {
        #[command(subcommand)]
        action: EngineAction,
    },
    /// Open a session, print `{"port":N,"session_token":"..."}` once ready, serve it until stdin is
    /// closed or SIGTERM/SIGINT arrives (how SDKs start the CLI).
    Session {
        /// Label `key:value` for the session; repeatable.
        #[arg(long = "label", value_name = "KEY:VALUE")]
        labels: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum EngineAction {
    /// Whether the engine answers, where, its pid and active sessions (exit code 1: none).
    Status,
    /// Stop the engine (it ends its sessions first) and wait until it has exited.
    Stop,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DAGR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dagr: starting the runtime failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dagr: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// This host's name in directory listings: its machine id (hashed: the id itself is not to be
/// shown) and the user's uid, so that the engine re-reads only what changed since this user's
/// last read of a directory here. Without a machine id, a random one: nothing is reused.
fn host_id() -> String {
    use sha2::Digest as _;
    let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty());
    match machine {
        Some(id) => {
            let digest = sha2::Sha256::digest(format!("dagr host {id}"));
            format!(
                "machine-{}-uid-{}",
                &hex::encode(digest)[..32],
                rustix::process::getuid().as_raw()
            )
        }
        None => dagr_attach::random_host_id(),
    }
}

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("label {l:?} is not KEY:VALUE"))
        })
        .collect()
}

/// The span this process runs under, from `TRACEPARENT` (set by `dagr run` and by the engine
/// for execs); a malformed value is ignored with a warning.
fn env_traceparent() -> Option<dagr_client::TraceParent> {
    let text = std::env::var(dagr_client::TraceParent::ENV).ok()?;
    match text.parse() {
        Ok(parent) => Some(parent),
        Err(e) => {
            eprintln!("dagr: ignoring {}: {e}", dagr_client::TraceParent::ENV);
            None
        }
    }
}

/// Connects to the engine; `terminal` offers this process's stdin/stdout as the user's terminal
/// for interactive processes.
async fn connect(
    cli: &Cli,
    labels: BTreeMap<String, String>,
    terminal: Option<(Arc<StdioTerminal>, progress::TerminalInUse)>,
) -> anyhow::Result<dagr_client::Client> {
    connect_with(
        cli,
        labels,
        terminal,
        Some(Arc::new(dagr_attach::HostTunnel)),
    )
    .await
}

/// [`connect`], lending the engine this machine's network through `tunnel` (`Host.service`,
/// `Host.tunnel`, `Service.up`, unix sockets).
async fn connect_with(
    cli: &Cli,
    labels: BTreeMap<String, String>,
    terminal: Option<(Arc<StdioTerminal>, progress::TerminalInUse)>,
    tunnel: Option<Arc<dyn dagr_attach::TunnelProvider>>,
) -> anyhow::Result<dagr_client::Client> {
    // Inside a container with privileged nesting: join the session it belongs to.
    if cli.host.is_none()
        && let Ok(port) = std::env::var("DAGGER_SESSION_PORT")
    {
        let port: u16 = port
            .parse()
            .with_context(|| format!("DAGGER_SESSION_PORT={port:?} is not a port"))?;
        let token = std::env::var("DAGGER_SESSION_TOKEN")
            .context("DAGGER_SESSION_PORT is set but DAGGER_SESSION_TOKEN is not")?;
        return dagr_client::Client::from_session_env(port, &token, env_traceparent())
            .await
            .with_context(|| format!("connecting to the session at 127.0.0.1:{port}"));
    }
    let host_text = match &cli.host {
        Some(host) => host.clone(),
        None => {
            let local = engine::LocalEngine::default_location();
            local.ensure_running().await?;
            local.host()
        }
    };
    let host: EngineHost = host_text
        .parse()
        .with_context(|| format!("engine host {host_text:?}"))?;
    let host = match std::env::var("DAGR_SSH_COMMAND") {
        Ok(ssh) => host.with_ssh_command(ssh.split_whitespace().map(str::to_owned).collect()),
        Err(_) => host,
    };
    let tls_var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let host = match (
        tls_var("DAGR_TLS_CERT"),
        tls_var("DAGR_TLS_KEY"),
        tls_var("DAGR_TLS_CA"),
    ) {
        (Some(cert), Some(key), Some(ca)) => host.with_tls(dagr_client::TlsFiles { cert, key, ca }),
        (None, None, None) => host,
        _ => bail!("DAGR_TLS_CERT, DAGR_TLS_KEY and DAGR_TLS_CA go together: set all three"),
    };
    let workdir = workdir(cli)?;
    let (cache_imports, cache_exports) =
        dagr_client::cache_config_from_env(|name| std::env::var(name).ok())
            .map_err(anyhow::Error::msg)?;
    let opts = ConnectOptions {
        host,
        session_id: None,
        client_id: None,
        token: None,
        workdir,
        labels,
        hostname: hostname(),
        attach: true,
        allow_send: true,
        terminal: terminal.map(|(terminal, in_use)| {
            Arc::new(TrackedTerminal { terminal, in_use }) as Arc<dyn dagr_attach::TerminalProvider>
        }),
        traceparent: env_traceparent(),
        tunnel,
        cache_imports,
        cache_exports,
        host_id: Some(host_id()),
    };
    dagr_client::connect(opts)
        .await
        .with_context(|| format!("connecting to the engine at {host_text}"))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Query {
            file,
            vars,
            operation,
        } => query(&cli, file.as_deref(), vars, operation.as_deref()).await,
        Command::Run { labels, cmd } => run_cmd(&cli, parse_labels(labels)?, cmd).await,
        Command::Session { labels } => session(&cli, parse_labels(labels)?).await,
        Command::Up {
            service,
            ports,
            random,
        } => up(&cli, &read_id(service)?, ports, *random).await,
        Command::Du => cache_usage(&cli).await,
        Command::Engine { action } => match (action, &cli.host) {
            (EngineAction::Status, Some(host)) => {
                let host = host.clone();
                with_client(&cli, async |client| {
                    let answer = client
                        .query(serde_json::json!({"query": "{ version }"}))
                        .await?;
                    println!(
                        "engine at {host} answers: version {}",
                        answer["data"]["version"].as_str().unwrap_or("?")
                    );
                    Ok(ExitCode::SUCCESS)
                })
                .await
            }
            (EngineAction::Stop, Some(host)) => bail!(
                "dagr engine stop stops the engine of this machine's state directory; the engine at {host} is stopped where it runs"
            ),
            (EngineAction::Status, None) => engine::LocalEngine::default_location().status(),
            (EngineAction::Stop, None) => engine::LocalEngine::default_location().stop(),
        },
        Command::Call {
            module,
            output,
            args,
        } => {
            let workdir = workdir(&cli)?;
            // Help outside a module needs no engine: the usage, and how to name a module.
            if args.first().is_some_and(|w| w == "--help" || w == "-h")
                && let Err(e) = module::find_module(module.as_deref(), &workdir)
            {
                println!("{}\n\n{e}", module::CALL_USAGE);
                return Ok(ExitCode::SUCCESS);
            }
            let output = output.as_ref().map(|o| workdir.join(o));
            with_client(&cli, async |client| {
                module::call(
                    client,
                    &workdir,
                    module::CallArgs {
                        module: module.as_deref(),
                        output: output.as_deref(),
                        args,
                    },
                )
                .await
            })
            .await
        }
        Command::Functions { module, path } => {
            let workdir = workdir(&cli)?;
            with_client(&cli, async |client| {
                module::functions(client, &workdir, module.as_deref(), path).await
            })
            .await
        }
        Command::Init {
            sdk,
            name,
            source,
            path,
        } => {
            let workdir = workdir(&cli)?;
            let dir = workdir.join(path.clone().unwrap_or_else(|| PathBuf::from(".")));
            let dir = std::path::absolute(&dir).with_context(|| format!("{}", dir.display()))?;
            if dir.join("dagger.json").exists() {
                bail!(
                    "{}: a module exists there already (dagr develop updates it)",
                    dir.display()
                );
            }
            let name = match name {
                Some(n) => n.clone(),
                None => dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the module's directory has no name: pass --name")?
                    .to_owned(),
            };
            let code = with_client(&cli, async |client| {
                module::init(client, &dir, Some(&name), sdk.as_deref(), source.as_deref()).await
            })
            .await?;
            eprintln!("initialized module {name} in {}", dir.display());
            Ok(code)
        }
        Command::Develop {
            module,
            sdk,
            source,
        } => {
            let workdir = workdir(&cli)?;
            let dir = workdir.join(module.as_deref().unwrap_or("."));
            with_client(&cli, async |client| {
                module::init(client, &dir, None, sdk.as_deref(), source.as_deref()).await
            })
            .await
        }
        Command::Install {
            module,
            name,
            dependency,
        } => {
            let workdir = workdir(&cli)?;
            let dir = workdir.join(module.as_deref().unwrap_or("."));
            with_client(&cli, async |client| {
                module::install(client, &dir, dependency, &workdir, name.as_deref()).await
            })
            .await
        }
        Command::Prune {
            older_than,
            keep_cache_volumes,
        } => cache_prune(&cli, *older_than, *keep_cache_volumes).await,
        Command::Terminal {
            container,
            experimental_privileged_nesting,
            insecure_root_capabilities,
            cmd,
        } => {
            let id = match container.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading the container ID from {path}"))?
                    .trim()
                    .to_owned(),
                None => container.clone(),
            };
            terminal(
                &cli,
                &id,
                cmd,
                *experimental_privileged_nesting,
                *insecure_root_capabilities,
            )
            .await
        }
    }
}

/// The directory host paths are relative to.
fn workdir(cli: &Cli) -> anyhow::Result<PathBuf> {
    match &cli.workdir {
        Some(w) => Ok(w.clone()),
        None => std::env::current_dir().context("reading the current directory"),
    }
}

/// Runs `f` with a client of a new session (showing progress as `--progress` says), then
/// closes the session; `f`'s error is the command's.
async fn with_client<F>(cli: &Cli, f: F) -> anyhow::Result<ExitCode>
where
    F: AsyncFnOnce(&dagr_client::Client) -> anyhow::Result<ExitCode>,
{
    let in_use = progress::TerminalInUse::default();
    let mut client = connect(cli, BTreeMap::new(), Some((Arc::default(), in_use.clone()))).await?;
    let progress = start_progress(cli, &mut client, in_use).await?;
    let result = f(&client).await;
    let closed = client.close().await;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    let code = result?;
    closed.context("closing the session")?;
    Ok(code)
}

/// `90s`, `30m`, `12h`, `7d` (or plain seconds) as seconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 12h or 7d"))?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Sends `method path` with `body` to the engine (an unscoped route) and returns its JSON.
async fn engine_json(
    cli: &Cli,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    let client = connect(cli, BTreeMap::new(), None).await?;
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .context("building the request")?;
    let answer = client.request(request).await;
    let answer = match answer {
        Ok(response) => {
            let status = response.status();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .context("reading the engine's answer")?
                .to_bytes();
            if !status.is_success() {
                anyhow::bail!("{path}: {status}: {}", String::from_utf8_lossy(&bytes));
            }
            serde_json::from_slice(&bytes).context("the engine's answer is not JSON")
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("{path} failed"))),
    };
    client.close().await.context("closing the session")?;
    answer
}

/// Bytes for people: `1.5 GiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `dagr du`.
async fn cache_usage(cli: &Cli) -> anyhow::Result<ExitCode> {
    let usage = engine_json(cli, http::Method::GET, "/cache/usage", Vec::new()).await?;
    println!("{:<15} {:>8} {:>12}", "KIND", "ENTRIES", "SIZE");
    let mut total = 0;
    for (key, label) in [
        ("images", "images"),
        ("execs", "execs"),
        ("other", "other results"),
        ("cache_volumes", "cache volumes"),
        ("downloads", "downloads"),
    ] {
        let entries = usage[key]["entries"].as_u64().unwrap_or(0);
        let bytes = usage[key]["bytes"].as_u64().unwrap_or(0);
        total += bytes;
        println!("{label:<15} {entries:>8} {:>12}", human_bytes(bytes));
    }
    println!("{:<15} {:>8} {:>12}", "total", "", human_bytes(total));
    Ok(ExitCode::SUCCESS)
}

/// `dagr prune`.
async fn cache_prune(
    cli: &Cli,
    older_than: Option<u64>,
    keep_cache_volumes: bool,
) -> anyhow::Result<ExitCode> {
    let body = serde_json::to_vec(&serde_json::json!({
        "olderThanSeconds": older_than,
        "pruneCacheVolumes": !keep_cache_volumes,
    }))
    .context("encoding the request")?;
    let report = engine_json(cli, http::Method::POST, "/cache/prune", body).await?;
    println!(
        "removed {} results, {} cache volumes and {} downloads, freed {}; the cache now holds {}",
        report["removedResults"].as_u64().unwrap_or(0),
        report["removedCacheVolumes"].as_u64().unwrap_or(0),
        report["removedDownloads"].as_u64().unwrap_or(0),
        human_bytes(report["freedBytes"].as_u64().unwrap_or(0)),
        human_bytes(report["remainingBytes"].as_u64().unwrap_or(0)),
    );
    Ok(ExitCode::SUCCESS)
}

/// An object ID given on the command line, or `@FILE` holding it.
fn read_id(arg: &str) -> anyhow::Result<String> {
    Ok(match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the ID from {path}"))?
            .trim()
            .to_owned(),
        None => arg.to_owned(),
    })
}

/// `--port [FRONTEND:]BACKEND` as a `PortForward` input.
fn parse_port_forward(text: &str) -> anyhow::Result<serde_json::Value> {
    let port = |p: &str| -> anyhow::Result<u16> {
        p.parse::<u16>().ok().filter(|&n| n > 0).with_context(|| {
            format!("port {p:?} in --port {text:?} is not a number from 1 to 65535")
        })
    };
    let (frontend, backend) = match text.split_once(':') {
        Some((frontend, backend)) => (port(frontend)?, port(backend)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    Ok(serde_json::json!({ "frontend": frontend, "backend": backend }))
}

/// Prints where `dagr up` listens.
#[derive(Debug)]
struct PrintForwards;

impl dagr_attach::TunnelProvider for PrintForwards {
    fn listening(&self, address: std::net::SocketAddr) {
        eprintln!("dagr up: forwarding {address}");
    }
}

/// `dagr up`: the service's ports here until Ctrl-C (or SIGTERM), then the session ends and
/// the service stops.
async fn up(
    cli: &Cli,
    service_id: &str,
    ports: &[String],
    random: bool,
) -> anyhow::Result<ExitCode> {
    let ports = ports
        .iter()
        .map(|p| parse_port_forward(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut client =
        connect_with(cli, BTreeMap::new(), None, Some(Arc::new(PrintForwards))).await?;
    let progress = start_progress(cli, &mut client, progress::TerminalInUse::default()).await?;
    let body = serde_json::json!({
        "query": "query($id: ServiceID!, $ports: [PortForward!], $random: Boolean) { \
            loadServiceFromID(id: $id) { up(ports: $ports, random: $random) } }",
        "variables": { "id": service_id, "ports": ports, "random": random },
    });
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let result = tokio::select! {
        result = client.query(body) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    let closed = client.close().await;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    closed.context("closing the session")?;
    match result {
        // Stopped by the user: the forwards and the service end with the session.
        None => Ok(ExitCode::SUCCESS),
        Some(response) => {
            let response = response.context("forwarding the service")?;
            print_errors(&response);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn parse_vars(vars: &[String]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for v in vars {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("variable {v:?} is not NAME=VALUE"))?;
        let parsed =
            serde_json::from_str(val).unwrap_or_else(|_| serde_json::Value::String(val.to_owned()));
        out.insert(k.to_owned(), parsed);
    }
    Ok(out)
}

async fn query(
    cli: &Cli,
    file: Option<&str>,
    vars: &[String],
    operation: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let document = match file {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the query from stdin")?;
            s
        }
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
    };
    if document.trim().is_empty() {
        bail!("the query document is empty");
    }
    let mut body = serde_json::json!({ "query": document, "variables": parse_vars(vars)? });
    if let Some(op) = operation {
        body["operationName"] = serde_json::Value::String(op.to_owned());
    }
    // A query may open a terminal (`terminal{sync}`) on this process's terminal.
    let in_use = progress::TerminalInUse::default();
    let mut client = connect(cli, BTreeMap::new(), Some((Arc::default(), in_use.clone()))).await?;
    let progress = start_progress(cli, &mut client, in_use).await?;
    let result = client.query(body).await;
    let closed = client.close().await;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    let response = result.context("running the query")?;
    closed.context("closing the session")?;
    if let Some(data) = response.get("data").filter(|d| !d.is_null()) {
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(data)?))?;
    }
    Ok(if print_errors(&response) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes `text` to stdout. A reader that has gone away (`dagr query | head`) is not an error:
/// there is no one left to tell.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.context("writing to stdout"),
    }
}

/// Prints a GraphQL response's errors to stderr (`error: MSG`, then `  extensions: JSON`);
/// whether it had any.
fn print_errors(response: &serde_json::Value) -> bool {
    let errors = match response.get("errors").and_then(|e| e.as_array()) {
        Some(errors) if !errors.is_empty() => errors,
        _ => return false,
    };
    for e in errors {
        let msg = e
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("unknown error");
        eprintln!("error: {msg}");
        if let Some(ext) = e.get("extensions") {
            eprintln!("  extensions: {ext}");
        }
    }
    true
}

/// Subscribes to the client's telemetry and shows it as `--progress` says (nothing for
/// `quiet`). Call right after connecting; [`progress::Progress::finish`] after closing.
async fn start_progress(
    cli: &Cli,
    client: &mut dagr_client::Client,
    terminal: progress::TerminalInUse,
) -> anyhow::Result<Option<progress::Progress>> {
    let mode = progress::Mode::resolve(cli.progress);
    if mode == progress::Mode::Quiet {
        return Ok(None);
    }
    let feed = client
        .subscribe()
        .await
        .context("subscribing to the session's telemetry")?;
    Ok(Some(progress::Progress::start(
        mode, cli.debug, feed, terminal,
    )))
}

/// The exit code of dagr for a command's exit code (1 when it does not fit).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run_cmd(
    cli: &Cli,
    labels: BTreeMap<String, String>,
    cmd: &[String],
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    use std::process::Stdio;
    let Some((program, args)) = cmd.split_first() else {
        bail!("dagr run needs a command after --");
    };
    // CMD shares this terminal: its pipelines may open interactive processes on it.
    let in_use = progress::TerminalInUse::default();
    let mut client = connect(cli, labels, Some((Arc::default(), in_use.clone()))).await?;
    let progress = start_progress(cli, &mut client, in_use).await?;
    // CMD's own spans (an SDK's) come to this process and join the view, under the session's
    // trace: TRACEPARENT and the OTEL_* variables point CMD at a local OTLP receiver.
    let receiver = match &progress {
        Some(progress) => {
            let (receiver, events) = receiver::LocalReceiver::start(client.traceparent()).await?;
            progress.add_source(events);
            Some(receiver)
        }
        None => None,
    };
    let client = Arc::new(client);
    let proxy = proxy::SessionProxy::start(client.clone()).await?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("DAGGER_SESSION_PORT", proxy.port.to_string())
        .env("DAGGER_SESSION_TOKEN", &proxy.token);
    match &receiver {
        Some(receiver) => command.envs(receiver.env()),
        None => command.env(
            dagr_client::TraceParent::ENV,
            client.traceparent().to_string(),
        ),
    };
    // Under the live tree, CMD's output is printed above it; a stdout that is not a terminal
    // gets CMD's stdout untouched.
    let live = progress
        .as_ref()
        .is_some_and(|_| progress::Mode::resolve(cli.progress) == progress::Mode::Tty);
    let pipe_stdout = live && std::io::stdout().is_terminal();
    if live {
        command.stderr(Stdio::piped());
        if pipe_stdout {
            command.stdout(Stdio::piped());
        }
    }
    let status = match command.spawn() {
        Ok(mut child) => {
            let mut copies = Vec::new();
            if let Some(progress) = &progress {
                if let Some(out) = child.stdout.take() {
                    copies.push(progress.copy_lines_above(out));
                }
                if let Some(err) = child.stderr.take() {
                    copies.push(progress.copy_lines_above(err));
                }
            }
            let status = child.wait().await;
            for copy in copies {
                let _ = copy.await;
            }
            status
        }
        Err(e) => Err(e),
    };
    proxy.stop().await;
    let closed = close_shared(client).await;
    if let Some(receiver) = receiver {
        receiver.stop().await;
    }
    if let Some(progress) = progress {
        progress.finish().await;
    }
    closed?;
    let status = status.with_context(|| format!("running {program}"))?;
    Ok(match status.code() {
        Some(code) => exit_code(code),
        None => {
            eprintln!("dagr: {program} was killed by a signal");
            ExitCode::FAILURE
        }
    })
}

async fn session(cli: &Cli, labels: BTreeMap<String, String>) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::signal::unix::{SignalKind, signal};
    // stdin and stdout carry the session protocol: no terminal.
    let client = Arc::new(connect(cli, labels, None).await?);
    let proxy = proxy::SessionProxy::start(client.clone()).await?;
    let line = serde_json::json!({ "port": proxy.port, "session_token": proxy.token }).to_string();
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("{line}\n").as_bytes()).await?;
    stdout.flush().await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stdin_eof = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = stdin_eof => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    proxy.stop().await;
    close_shared(client).await?;
    Ok(ExitCode::SUCCESS)
}

/// How long `dagr terminal` waits for the exit code once the engine answered.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn terminal(
    cli: &Cli,
    container_id: &str,
    cmd: &[String],
    nesting: bool,
    insecure: bool,
) -> anyhow::Result<ExitCode> {
    let user_terminal = Arc::new(StdioTerminal::new());
    let in_use = progress::TerminalInUse::default();
    let mut client = connect(
        cli,
        BTreeMap::new(),
        Some((user_terminal.clone(), in_use.clone())),
    )
    .await?;
    let progress = start_progress(cli, &mut client, in_use).await?;
    let body = serde_json::json!({
        "query": "query($id: ContainerID!, $cmd: [String!], $nesting: Boolean, $insecure: Boolean) { \
            loadContainerFromID(id: $id) { terminal(cmd: $cmd, \
            experimentalPrivilegedNesting: $nesting, insecureRootCapabilities: $insecure) { sync } } }",
        "variables": { "id": container_id, "cmd": cmd, "nesting": nesting, "insecure": insecure },
    });
    // SIGTERM or SIGHUP (the user's terminal went away) end the session, and with it the
    // process, instead of killing dagr with its terminal left in raw mode.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let result = tokio::select! {
        result = client.query(body) => Ok(result),
        _ = term.recv() => Err("terminated: the terminal's process was stopped"),
        _ = hangup.recv() => Err("hung up: the terminal's process was stopped"),
    };
    let result = match result {
        Ok(result) => result,
        Err(why) => {
            user_terminal.restore();
            // The session ends (and with it the process), then the live view with its
            // summary, before the reason is printed: its last redraw cannot erase it.
            let _ = client.close().await;
            if let Some(progress) = progress {
                progress.finish().await;
            }
            bail!("{why}");
        }
    };
    let closed = client.close().await;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    let response = result.context("running the terminal")?;
    closed.context("closing the session")?;
    if print_errors(&response) {
        return Ok(ExitCode::FAILURE);
    }
    Ok(match user_terminal.wait_exit(EXIT_WAIT).await {
        Some((code, _)) => exit_code(code),
        None => {
            eprintln!("dagr: the terminal ended without an exit code");
            ExitCode::FAILURE
        }
    })
}

/// The user's terminal as offered to the engine, telling the progress view while an
/// interactive process owns it (from its start until its exit arrives).
#[derive(Debug)]
struct TrackedTerminal {
    terminal: Arc<StdioTerminal>,
    in_use: progress::TerminalInUse,
}

impl dagr_attach::TerminalProvider for TrackedTerminal {
    fn open(
        &self,
        mut output: tokio::sync::mpsc::Receiver<dagr_attach::TerminalOutput>,
    ) -> std::io::Result<tokio::sync::mpsc::Receiver<dagr_attach::TerminalInput>> {
        self.in_use.set(true);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let in_use = self.in_use.clone();
        tokio::spawn(async move {
            while let Some(item) = output.recv().await {
                let exit = matches!(item, dagr_attach::TerminalOutput::Exit { .. });
                if tx.send(item).await.is_err() || exit {
                    break;
                }
            }
            in_use.set(false);
        });
        match self.terminal.open(rx) {
            Ok(input) => Ok(input),
            Err(e) => {
                self.in_use.set(false);
                Err(e)
            }
        }
    }
}

/// Closes a client that the (stopped) proxy shared.
async fn close_shared(client: Arc<dagr_client::Client>) -> anyhow::Result<()> {
    match Arc::try_unwrap(client) {
        Ok(c) => c.close().await.context("closing the session"),
        Err(_) => bail!("the session is still shared after the proxy stopped"),
    }
}
