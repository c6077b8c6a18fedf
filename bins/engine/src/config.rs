//! The engine's command line ([`Cli`]: the serve flags [`ServeArgs`] and the subcommands
//! [`Command`]) and the [`Config`] an [`App`](crate::app::App) is built from: every value parsed
//! and checked by clap, every default resolved.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "dagr-engine",
    version,
    about = "The dagr build engine: a GraphQL API over HTTP/1.1 and h2c on unix and loopback TCP sockets",
    long_about = "The dagr build engine. Clients (the dagr CLI, Dagger SDKs through `dagr session`) \
connect to one of its listeners; each listener serves HTTP/1.1 and cleartext HTTP/2 (and gRPC health) \
on the same socket. Log filtering follows RUST_LOG (default: info)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Debian's static tini, the default init of containers.
pub const DEFAULT_INIT: &str = "/usr/bin/tini-static";

/// The flags of the engine itself (no subcommand).
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, `unix:///path` or `tcp://IP:PORT`; repeatable. A TCP address other
    /// than loopback requires TLS with client certificates (--tls-cert, --tls-key,
    /// --tls-client-ca). Default: the unix socket `engine.sock` in the state directory.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<ListenAddr>,
    /// Directory for the engine's state (sockets, caches).
    /// Default: /var/lib/dagr as root, else $XDG_STATE_HOME/dagr.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How long open connections may take to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    shutdown_grace: u64,
    /// What runs containers: `dagr-launcher` (dagr's own launcher, found beside this binary or
    /// in PATH: no Go runtime and no re-exec per container; an uncached exec costs a third of
    /// what it costs on runc, see BENCHMARKS.md), `runc` (the binary --runc names), or `auto`:
    /// dagr-launcher when it is installed beside this binary, else runc (--runc implies runc).
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    runtime: RuntimeChoice,
    /// The runc binary (with --runtime runc).
    /// Default: `runc`, looked up in PATH.
    #[arg(long, value_name = "PATH")]
    runc: Option<PathBuf>,
    /// A static init run as every container's PID 1 (it reaps zombies, forwards signals and
    /// keeps the exit status), or `none`.
    /// Default: /usr/bin/tini-static (Debian's tini) when it exists, else none.
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// At most this many containers run at once. Default: no limit (service containers and
    /// the execs that bind them never count against it).
    #[arg(long, value_name = "N")]
    max_execs: Option<usize>,
    /// How many container launchers dagr-launcher keeps started ahead of execs, each already in
    /// its exec's cgroups: moving a process into a cgroup waits for an RCU grace period (about
    /// 10 ms on a cgroup v1 host), which then stays off the exec's path. 0 turns this off.
    /// Ignored on runc.
    #[arg(long, value_name = "N", default_value_t = 2)]
    placed_launchers: usize,
    /// How containers are networked: `bridge` (an address on the engine's bridge, NAT to the
    /// host's network, the engine's DNS for service names; needs iptables) or `none`
    /// (loopback only; services are then unavailable).
    #[arg(long, value_name = "MODE", default_value = "bridge")]
    network: NetworkModeArg,
    /// The subnet of the engine's bridge; it must not overlap a route of the host.
    #[arg(long, value_name = "CIDR", default_value = dagr_network::DEFAULT_CIDR)]
    network_cidr: dagr_network::Ipv4Cidr,
    /// The name of the engine's bridge interface.
    #[arg(long, value_name = "NAME", default_value = dagr_network::DEFAULT_BRIDGE)]
    network_bridge: String,
    /// A DNS server that containers' lookups of names other than services go to, `IP` or
    /// `IP:PORT`; repeatable. Default: the nameservers of the host's /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_name = "ADDR", value_parser = parse_dns_upstream)]
    dns_upstreams: Vec<SocketAddr>,
    /// At most this many processes and threads per exec (a fork bomb fails its exec with
    /// "pids limit reached"); 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    exec_pids_limit: u64,
    /// At most this much memory per exec (suffixes K, M, G, T; powers of 1024); above it the
    /// exec is killed and fails with "killed: out of memory". Default: no limit.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    exec_memory_limit: Option<u64>,
    /// A pull mirror for a registry, `HOST=ENDPOINT` (e.g. `docker.io=http://127.0.0.1:5000`);
    /// repeatable, tried in order before the registry itself.
    #[arg(long = "registry-mirror", value_name = "HOST=ENDPOINT")]
    registry_mirrors: Vec<RegistryMirror>,
    /// Cache budget: garbage collection removes unused layers and results, oldest first, until the
    /// cache uses at most this much (suffixes K, M, G, T; powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "20G", value_parser = parse_bytes)]
    gc_keep_bytes: u64,
    /// How often garbage collection runs.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    gc_interval: u64,
    /// Free space the state directory's filesystem should keep: below it, garbage collection
    /// runs at once (checked every 10 seconds) and removes as much as gets it back, down to
    /// --gc-reserved.
    #[arg(long, value_name = "BYTES", default_value = "2G", value_parser = parse_bytes)]
    gc_min_free: u64,
    /// What garbage collection always leaves: it never prunes the cache below this size.
    #[arg(long, value_name = "BYTES", default_value = "512M", value_parser = parse_bytes)]
    gc_reserved: u64,
    /// The engine's TLS certificate (PEM, its chain): with --tls-key and --tls-client-ca, every
    /// TCP listener speaks TLS and admits only clients with a certificate of that CA.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_client_ca"])]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that clients' certificates must chain to.
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    tls_client_ca: Option<PathBuf>,
    /// A remote cache that every session reads before running an op, `type=registry,ref=REF`
    /// (an OCI registry tag); repeatable, read in order. Blobs are fetched only for hits; a
    /// cache that cannot be read is a warning, and the ops run here.
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<dagr_remote_cache::CacheSpec>,
    /// A remote cache that every session's results are written to after it ends, in the
    /// background, `type=registry,ref=REF[,mode=min|max]` (min: the results the session asked
    /// for; max: every result its pipelines produced or used); repeatable. Results derived
    /// from a secret and cache volumes are never written.
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<dagr_remote_cache::CacheSpec>,
    /// How long one session's export may take before it is abandoned.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    cache_export_timeout: u64,
    /// Remote cache uploads stay under this many bytes per second (suffixes K, M, G, T;
    /// powers of 1024). Default: no limit.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    cache_export_rate: Option<u64>,
    /// Docker's config.json (its `auths`) with the credentials the engine itself uses for
    /// remote caches. Default: none (anonymous).
    #[arg(long, value_name = "PATH")]
    registry_auth_file: Option<PathBuf>,
    /// A registry host reached over plain http (loopback hosts always are); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Also export every finished span and every log record to this OpenTelemetry collector
    /// (e.g. `http://127.0.0.1:4317`).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// The protocol of `--otlp-endpoint`: `grpc` or `http/protobuf` (to `URL/v1/traces` and
    /// `URL/v1/logs`).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_name = "PROTOCOL",
        default_value = "grpc"
    )]
    otlp_protocol: OtlpProtocol,
    /// Record no spans and no logs: clients that subscribe get none and `--otlp-endpoint`
    /// exports nothing.
    #[arg(long)]
    no_telemetry: bool,
    /// The package index of Python module runtimes (`PIP_INDEX_URL` and `UV_INDEX_URL` of
    /// their installs); without it, their base image's settings or PyPI.
    #[arg(long, env = "PIP_INDEX_URL", value_name = "URL")]
    python_index_url: Option<String>,
    /// `--find-links` of Python module runtimes' installs: a URL, or a directory of their base
    /// image (for offline installs from a wheelhouse).
    #[arg(long, env = "PIP_FIND_LINKS", value_name = "URL_OR_DIR")]
    python_find_links: Option<String>,
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkModeArg {
    Bridge,
    None,
}

impl FromStr for NetworkModeArg {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "bridge" => Ok(NetworkModeArg::Bridge),
            "none" => Ok(NetworkModeArg::None),
            other => bail!("network mode {other:?} is not `bridge` or `none`"),
        }
    }
}

/// `IP` (port 53) or `IP:PORT`.
fn parse_dns_upstream(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip: std::net::IpAddr = s
        .parse()
        .with_context(|| format!("DNS upstream {s:?} is not IP or IP:PORT"))?;
    Ok(SocketAddr::new(ip, 53))
}

/// The container network as configured.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// `None`: loopback only.
    pub bridge: Option<dagr_network::BridgeConfig>,
}

/// How spans and logs reach an external collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl FromStr for OtlpProtocol {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => bail!("OTLP protocol {other:?} is not `grpc` or `http/protobuf`"),
        }
    }
}

/// An external collector to export to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the engine's GraphQL schema as SDL.
    Schema,
    /// Connect stdin/stdout to a running engine's listener (connection helper for `stdio://` hosts).
    DialStdio {
        /// The engine address; default: the default unix socket of the default state directory.
        #[arg(long, value_name = "ADDR")]
        addr: Option<ListenAddr>,
        /// Only check that the engine accepts a connection, then exit (0: it does).
        #[arg(long)]
        probe: bool,
    },
    /// Started by the engine itself: kills the engine's containers once the engine has ended.
    #[command(hide = true)]
    Watchdog(crate::watchdog::WatchdogArgs),
}

/// What the engine is built from: [`ServeArgs`] with every default resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The engine's state (sockets, caches); created if missing.
    pub state_dir: PathBuf,
    /// At least one address.
    pub listen: Vec<ListenAddr>,
    /// How long open connections may take to finish after the stop signal.
    pub shutdown_grace: Duration,
    /// The OCI runtime binary; `None`: the worker's default.
    pub runc: Option<PathBuf>,
    /// The containers' init; `None`: none.
    pub init: Option<PathBuf>,
    /// At most this many containers run at once; `None`: the worker's default.
    pub max_execs: Option<usize>,
    /// Launchers started ahead of execs (dagr-launcher only; 0 with runc).
    pub placed_launchers: usize,
    /// The container network.
    pub network: NetworkSettings,
    /// What each exec may use.
    pub exec_limits: dagr_executor::ExecLimits,
    /// In the order given: a host's mirrors are tried in this order.
    pub registry_mirrors: Vec<RegistryMirror>,
    pub insecure_registries: Vec<String>,
    pub gc: GcConfig,
    /// Whether spans and logs are recorded at all.
    pub telemetry: bool,
    /// Where they are exported besides the engine's own subscriptions.
    pub otlp_export: Option<OtlpExport>,
    /// How module runtimes install packages.
    pub module_runtimes: dagr_api::module::RuntimeSettings,
    pub remote_cache: RemoteCacheSettings,
    /// TLS of the TCP listeners.
    pub tls: Option<crate::tls::TlsSettings>,
}

/// The remote caches of every session.
#[derive(Debug, Clone)]
pub struct RemoteCacheSettings {
    pub from: Vec<dagr_remote_cache::CacheSpec>,
    pub to: Vec<dagr_remote_cache::CacheSpec>,
    pub export_timeout: Duration,
    pub upload_rate: Option<u64>,
    pub auth_file: Option<PathBuf>,
}

/// How the cache is collected.
#[derive(Debug, Clone, Copy)]
pub struct GcConfig {
    /// The cache's budget.
    pub keep_bytes: u64,
    /// How often collection runs (at least a second).
    pub interval: Duration,
    /// Free space below which collection runs at once.
    pub min_free: u64,
    /// The cache is never collected below this.
    pub reserved: u64,
}

impl From<ServeArgs> for Config {
    fn from(args: ServeArgs) -> Config {
        let state_dir = args.state_dir.unwrap_or_else(default_state_dir);
        let listen = if args.listen.is_empty() {
            vec![ListenAddr::Unix(default_socket(&state_dir))]
        } else {
            args.listen
        };
        // The runtime binary (`None`: runc from PATH), and whether it is dagr-launcher.
        let (runc, on_launcher) = match (args.runtime, args.runc) {
            (RuntimeChoice::Runc, runc) => (runc, false),
            (RuntimeChoice::DagrLauncher, _) => (
                Some(launcher_beside().unwrap_or_else(|| PathBuf::from("dagr-launcher"))),
                true,
            ),
            (RuntimeChoice::Auto, Some(runc)) => (Some(runc), false),
            // dagr-launcher resolves mounts with openat2(2) (Linux 5.6): runc before that.
            (RuntimeChoice::Auto, None) => {
                let launcher = launcher_beside().filter(|_| kernel_has_openat2());
                let on_launcher = launcher.is_some();
                (launcher, on_launcher)
            }
        };
        Config {
            state_dir,
            listen,
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            placed_launchers: if on_launcher {
                args.placed_launchers
            } else {
                0
            },
            runc,
            init: match args.init {
                Some(path) if path.as_os_str() == "none" => None,
                Some(path) => Some(path),
                None => Some(PathBuf::from(DEFAULT_INIT)).filter(|p| p.is_file()),
            },
            max_execs: args.max_execs.map(|n| n.max(1)),
            network: NetworkSettings {
                bridge: (args.network == NetworkModeArg::Bridge).then(|| {
                    dagr_network::BridgeConfig {
                        name: args.network_bridge,
                        cidr: args.network_cidr,
                        dns_upstreams: if args.dns_upstreams.is_empty() {
                            host_nameservers()
                        } else {
                            args.dns_upstreams
                        },
                        iptables: PathBuf::from("iptables"),
                    }
                }),
            },
            exec_limits: dagr_executor::ExecLimits {
                pids: (args.exec_pids_limit > 0).then_some(args.exec_pids_limit),
                memory_bytes: args.exec_memory_limit.filter(|&b| b > 0),
            },
            registry_mirrors: args.registry_mirrors,
            insecure_registries: args.insecure_registries,
            gc: GcConfig {
                keep_bytes: args.gc_keep_bytes,
                interval: Duration::from_secs(args.gc_interval.max(1)),
                min_free: args.gc_min_free,
                reserved: args.gc_reserved,
            },
            telemetry: !args.no_telemetry,
            otlp_export: args
                .otlp_endpoint
                .filter(|e| !e.is_empty())
                .map(|endpoint| OtlpExport {
                    endpoint,
                    protocol: args.otlp_protocol,
                }),
            module_runtimes: dagr_api::module::RuntimeSettings {
                python_index_url: args.python_index_url.filter(|u| !u.is_empty()),
                python_find_links: args.python_find_links.filter(|u| !u.is_empty()),
            },
            tls: match (args.tls_cert, args.tls_key, args.tls_client_ca) {
                (Some(cert), Some(key), Some(client_ca)) => Some(crate::tls::TlsSettings {
                    cert,
                    key,
                    client_ca,
                }),
                _ => None,
            },
            remote_cache: RemoteCacheSettings {
                from: args.cache_from,
                to: args.cache_to,
                export_timeout: Duration::from_secs(args.cache_export_timeout.max(1)),
                upload_rate: args.cache_export_rate.filter(|&r| r > 0),
                auth_file: args.registry_auth_file,
            },
        }
    }
}

impl Config {
    /// Refuses what must not start: the API runs containers as root, so a TCP listener beyond
    /// loopback must admit only clients with a certificate.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.tls.is_none()
            && let Some(open) = self
                .listen
                .iter()
                .find(|l| matches!(l, ListenAddr::Tcp(a) if !a.ip().is_loopback()))
        {
            bail!(
                "--listen {open} is not a loopback address: the engine API runs containers as \
                 root, so beyond this machine it only listens with TLS and client certificates \
                 (pass --tls-cert, --tls-key and --tls-client-ca)"
            );
        }
        Ok(())
    }
}

/// The nameservers of the host's `/etc/resolv.conf` (none if it cannot be read).
fn host_nameservers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| dagr_network::parse_resolv_conf(&text))
        .unwrap_or_default()
}

/// Where the engine listens: `unix:///path/to/sock` or `tcp://127.0.0.1:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                bail!("listen address {s:?} has no socket path");
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("listen address {s:?} is not tcp://IP:PORT"))?;
            return Ok(ListenAddr::Tcp(addr));
        }
        bail!("listen address {s:?} must start with unix:// or tcp://")
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// A pull mirror of a registry, `--registry-mirror HOST=ENDPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryMirror {
    /// The registry it mirrors, e.g. `docker.io`.
    pub host: String,
    /// Where the mirror is, e.g. `http://127.0.0.1:5000`.
    pub endpoint: String,
}

impl FromStr for RegistryMirror {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let Some((host, endpoint)) = s.split_once('=') else {
            bail!("registry mirror {s:?} is not HOST=ENDPOINT");
        };
        if host.is_empty() || endpoint.is_empty() {
            bail!("registry mirror {s:?} has an empty HOST or ENDPOINT");
        }
        Ok(RegistryMirror {
            host: host.to_owned(),
            endpoint: endpoint.to_owned(),
        })
    }
}

/// `/var/lib/dagr` as root, else `$XDG_STATE_HOME/dagr` (or `~/.local/state/dagr`).
pub fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/dagr");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("dagr");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".local/state/dagr")
}

/// The default unix socket of an engine with this state directory.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("engine.sock")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "unix:///run/x.sock".parse::<ListenAddr>().expect("unix"),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:0".parse::<ListenAddr>().expect("tcp"),
            ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr"))
        );
        assert!("tcp://[::1]:80".parse::<ListenAddr>().is_ok());
        let config = |args: &[&str]| {
            use clap::Parser as _;
            let cli =
                Cli::try_parse_from(std::iter::once("dagr-engine").chain(args.iter().copied()))
                    .expect("flags");
            Config::from(cli.serve)
        };
        let err = config(&["--listen", "tcp://0.0.0.0:80"])
            .check()
            .expect_err("open without TLS");
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        assert!(err.to_string().contains("--tls-client-ca"), "{err}");
        let with_tls = config(&[
            "--listen",
            "tcp://0.0.0.0:80",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ]);
        with_tls.check().expect("TLS with client certificates");
        config(&["--listen", "tcp://127.0.0.1:80"])
            .check()
            .expect("loopback");
        {
            use clap::Parser as _;
            assert!(
                Cli::try_parse_from(["dagr-engine", "--tls-cert", "c.pem"]).is_err(),
                "a certificate alone"
            );
        }
        assert!("http://x".parse::<ListenAddr>().is_err());
        assert!("unix://".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn parses_registry_mirrors() {
        assert_eq!(
            "docker.io=http://127.0.0.1:5000"
                .parse::<RegistryMirror>()
                .expect("mirror"),
            RegistryMirror {
                host: "docker.io".into(),
                endpoint: "http://127.0.0.1:5000".into(),
            }
        );
        let err = "docker.io"
            .parse::<RegistryMirror>()
            .expect_err("no endpoint");
        assert!(err.to_string().contains("is not HOST=ENDPOINT"));
        assert!("=http://x".parse::<RegistryMirror>().is_err());
        assert!("docker.io=".parse::<RegistryMirror>().is_err());
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("20G"), Ok(20 << 30));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }
}

/// The OCI runtimes the engine can run containers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// dagr-launcher when installed beside the engine, else runc.
    Auto,
    /// runc.
    Runc,
    /// dagr's own launcher (`dagr-launcher`).
    DagrLauncher,
}

/// Whether this kernel has openat2(2), which dagr-launcher needs.
fn kernel_has_openat2() -> bool {
    rustix::fs::openat2(
        rustix::fs::CWD,
        "/",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::empty(),
    )
    .is_ok()
}

/// `dagr-launcher` beside this binary, if it is there.
fn launcher_beside() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("dagr-launcher")))
        .filter(|path| path.is_file())
}
