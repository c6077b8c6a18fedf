//! Where the engine listens ([`EngineHost`]) and how to open a byte stream to it: directly
//! (`unix://`, `tcp://`), through a command of the user's (`stdio://`), or through a well-known
//! tool that runs `dagr-engine dial-stdio` where the engine is ([`Driver`]: `ssh://`,
//! `docker-container://`, `docker-image://`, `podman-container://`, `kube-pod://`).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The address of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineHost {
    /// `unix:///run/dagr.sock`
    Unix(PathBuf),
    /// `tcp://127.0.0.1:1234` (any `host:port`).
    Tcp(String),
    /// `stdio://dagr-engine dial-stdio --addr ...`: a process per connection whose stdin/stdout is
    /// the byte stream (arguments split on whitespace).
    Stdio { program: String, args: Vec<String> },
    /// A tool that runs `dagr-engine dial-stdio` where the engine is.
    Driver(Driver),
    /// `tcp://` with TLS and a client certificate ([`EngineHost::with_tls`]).
    TlsTcp {
        addr: String,
        files: crate::tls::TlsFiles,
    },
}

/// A connection through a well-known tool (its own configuration applies: `~/.ssh/config`,
/// `DOCKER_HOST`, `CONTAINER_HOST`, `KUBECONFIG`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// The URL as given.
    url: String,
    kind: DriverKind,
    /// The `ssh` command line (`ssh` by default; see [`EngineHost::with_ssh_command`]).
    ssh: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DriverKind {
    /// `ssh://[user@]host[:port][/socket]`
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        socket: Option<String>,
    },
    /// `docker-container://NAME`
    DockerContainer { name: String },
    /// `docker-image://REF`: a privileged engine container of that image, started when none
    /// runs, its state on a named volume.
    DockerImage { reference: String },
    /// `podman-container://NAME`
    PodmanContainer { name: String },
    /// `kube-pod://NAME?namespace=..&container=..&context=..`
    KubePod {
        name: String,
        namespace: Option<String>,
        container: Option<String>,
        context: Option<String>,
    },
}

/// The command that connects to an engine's default socket where the engine runs.
const DIAL_STDIO: [&str; 2] = ["dagr-engine", "dial-stdio"];

impl Driver {
    /// The tool and its arguments for one connection.
    fn command(&self) -> (String, Vec<String>) {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match &self.kind {
            DriverKind::Ssh {
                user,
                host,
                port,
                socket,
            } => {
                let mut args: Vec<String> = self.ssh[1..].to_vec();
                // No prompts: a connection is not a terminal session.
                args.extend(owned(&["-T", "-o", "BatchMode=yes"]));
                if let Some(user) = user {
                    args.extend(["-l".to_owned(), user.clone()]);
                }
                if let Some(port) = port {
                    args.extend(["-p".to_owned(), port.to_string()]);
                }
                args.extend([host.clone(), "--".to_owned()]);
                args.extend(owned(&DIAL_STDIO));
                if let Some(socket) = socket {
                    args.extend(["--addr".to_owned(), format!("unix://{socket}")]);
                }
                (self.ssh[0].clone(), args)
            }
            DriverKind::DockerContainer { name } => {
                let mut args = owned(&["exec", "-i", name]);
                args.extend(owned(&DIAL_STDIO));
                ("docker".to_owned(), args)
            }
            DriverKind::DockerImage { reference } => {
                let mut args = owned(&["exec", "-i", &image_container_name(reference)]);
                args.extend(owned(&DIAL_STDIO));
                ("docker".to_owned(), args)
            }
            DriverKind::PodmanContainer { name } => {
                let mut args = owned(&["exec", "-i", name]);
                args.extend(owned(&DIAL_STDIO));
                ("podman".to_owned(), args)
            }
            DriverKind::KubePod {
                name,
                namespace,
                container,
                context,
            } => {
                let mut args = Vec::new();
                if let Some(context) = context {
                    args.extend(["--context".to_owned(), context.clone()]);
                }
                if let Some(namespace) = namespace {
                    args.extend(["--namespace".to_owned(), namespace.clone()]);
                }
                args.extend(owned(&["exec", "-i", name]));
                if let Some(container) = container {
                    args.extend(["-c".to_owned(), container.clone()]);
                }
                args.push("--".to_owned());
                args.extend(owned(&DIAL_STDIO));
                ("kubectl".to_owned(), args)
            }
        }
    }
}

/// Docker's names of capabilities 0 to 37 (the ones every Docker release knows).
const DOCKER_CAPABILITIES: [&str; 38] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
];

/// The capabilities of this process's bounding set, by Docker's names.
fn bounding_capabilities() -> Vec<&'static str> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    DOCKER_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The container `docker-image://REF` runs its engine in: one per image reference.
pub fn image_container_name(reference: &str) -> String {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(reference.as_bytes()));
    format!("dagr-engine-{}", &digest[..12])
}

/// Parses `kube-pod://NAME?k=v&...`.
fn parse_kube_pod(rest: &str) -> Result<DriverKind, &'static str> {
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    let name = name.trim_end_matches('/');
    if name.is_empty() || name.contains('/') {
        return Err("expected kube-pod://NAME[?namespace=..&container=..&context=..]");
    }
    let (mut namespace, mut container, mut context) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or("kube-pod parameters are KEY=VALUE")?;
        let slot = match k {
            "namespace" => &mut namespace,
            "container" => &mut container,
            "context" => &mut context,
            _ => return Err("kube-pod parameters are namespace, container and context"),
        };
        *slot = Some(v.to_owned());
    }
    Ok(DriverKind::KubePod {
        name: name.to_owned(),
        namespace,
        container,
        context,
    })
}

/// Parses `ssh://[user@]host[:port][/socket]`.
fn parse_ssh(rest: &str) -> Result<DriverKind, &'static str> {
    let (authority, socket) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
        Some(_) => return Err("empty user in ssh://USER@HOST"),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [ in ssh host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| "invalid ssh port")?),
            None if after.is_empty() => None,
            None => return Err("expected ssh://[user@]host[:port][/socket]"),
        };
        (h.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                Some(p.parse::<u16>().map_err(|_| "invalid ssh port")?),
            ),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() || host.starts_with('-') {
        return Err("expected ssh://[user@]host[:port][/socket]");
    }
    Ok(DriverKind::Ssh {
        user,
        host,
        port,
        socket: socket.filter(|s| s.len() > 1).map(str::to_owned),
    })
}

/// Why an engine host string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid engine host {input:?}: {reason}")]
pub struct EngineHostError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for EngineHost {
    type Err = EngineHostError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| EngineHostError {
            input: input.to_string(),
            reason,
        };
        if let Some(path) = input.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(refuse("empty socket path"));
            }
            Ok(EngineHost::Unix(PathBuf::from(path)))
        } else if let Some(addr) = input.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(EngineHost::Tcp(addr.to_string()))
                }
                _ => Err(refuse("expected tcp://HOST:PORT")),
            }
        } else if let Some(command) = input.strip_prefix("stdio://") {
            let mut words = command.split_whitespace().map(String::from);
            let program = words.next().ok_or_else(|| refuse("empty command"))?;
            Ok(EngineHost::Stdio {
                program,
                args: words.collect(),
            })
        } else {
            let name = |rest: &str, usage| {
                let rest = rest.trim_end_matches('/');
                if rest.is_empty() || rest.starts_with('-') || rest.contains('/') {
                    Err(refuse(usage))
                } else {
                    Ok(rest.to_owned())
                }
            };
            let kind = if let Some(rest) = input.strip_prefix("ssh://") {
                parse_ssh(rest).map_err(refuse)?
            } else if let Some(rest) = input.strip_prefix("docker-container://") {
                DriverKind::DockerContainer {
                    name: name(rest, "expected docker-container://NAME")?,
                }
            } else if let Some(rest) = input.strip_prefix("docker-image://") {
                let reference = rest.trim();
                if reference.is_empty() || reference.starts_with('-') {
                    return Err(refuse("expected docker-image://REFERENCE"));
                }
                DriverKind::DockerImage {
                    reference: reference.to_owned(),
                }
            } else if let Some(rest) = input.strip_prefix("podman-container://") {
                DriverKind::PodmanContainer {
                    name: name(rest, "expected podman-container://NAME")?,
                }
            } else if let Some(rest) = input.strip_prefix("kube-pod://") {
                let kind = parse_kube_pod(rest).map_err(refuse)?;
                if matches!(&kind, DriverKind::KubePod { name, .. } if name.starts_with('-')) {
                    return Err(refuse("expected kube-pod://NAME"));
                }
                kind
            } else {
                return Err(refuse(
                    "expected unix://, tcp://, stdio://, ssh://, docker-container://, \
                     docker-image://, podman-container:// or kube-pod://",
                ));
            };
            Ok(EngineHost::Driver(Driver {
                url: input.to_owned(),
                kind,
                ssh: vec!["ssh".to_owned()],
            }))
        }
    }
}

impl fmt::Display for EngineHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineHost::Unix(path) => write!(f, "unix://{}", path.display()),
            EngineHost::Tcp(addr) => write!(f, "tcp://{addr}"),
            EngineHost::Stdio { program, args } => {
                write!(f, "stdio://{program}")?;
                for arg in args {
                    write!(f, " {arg}")?;
                }
                Ok(())
            }
            EngineHost::Driver(d) => f.write_str(&d.url),
            EngineHost::TlsTcp { addr, .. } => write!(f, "tcp://{addr}"),
        }
    }
}

/// A byte stream to the engine. A concrete type, not a boxed trait object: futures generic over a
/// `dyn` IO trip rustc's higher-ranked `Send` inference, and callers spawn `connect`.
pub(crate) enum EngineStream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Stdio(Box<ChildIo>),
    Tls(Box<TlsIo>),
}

/// A TLS stream that remembers its first error (a refused certificate arrives as an alert on
/// the first read after the handshake, which the HTTP layer above reports only as a closed
/// connection).
pub(crate) struct TlsIo {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    error: std::sync::Arc<parking_lot::Mutex<Option<String>>>,
}

impl TlsIo {
    fn note<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &polled {
            self.error.lock().get_or_insert_with(|| e.to_string());
        }
        polled
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.note(polled)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note(polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.note(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl AsyncRead for EngineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            EngineStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            EngineStream::Stdio(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            EngineStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EngineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            EngineStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            EngineStream::Stdio(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            EngineStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_flush(cx),
            EngineStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            EngineStream::Stdio(s) => Pin::new(s.as_mut()).poll_flush(cx),
            EngineStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            EngineStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            EngineStream::Stdio(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            EngineStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to engine at {host}: {source}")]
    Connect { host: String, source: io::Error },
    #[error("cannot start {program:?} for engine host {host}: {source}{hint}")]
    Spawn {
        host: String,
        program: String,
        source: io::Error,
        /// What to install, when the tool is missing.
        hint: String,
    },
    #[error("engine host {host}: `{command}` failed: {output}")]
    Tool {
        host: String,
        command: String,
        output: String,
    },
}

/// What to install when `program` is missing.
fn install_hint(program: &str, source: &io::Error) -> String {
    if source.kind() != io::ErrorKind::NotFound {
        return String::new();
    }
    let package = match program {
        "ssh" => "openssh-client",
        "docker" => "docker.io",
        "podman" => "podman",
        "kubectl" => "kubernetes-client",
        _ => return String::new(),
    };
    format!(" (is {program} installed? on Debian: apt-get install {package})")
}

impl EngineHost {
    /// Opens a fresh connection. (Owned arguments to tokio's generic connects keep the future
    /// `Send` for callers that box or spawn `connect`.)
    pub(crate) async fn dial(&self) -> Result<EngineStream, DialError> {
        let connected = match self.clone() {
            EngineHost::Unix(path) => UnixStream::connect(path).await.map(EngineStream::Unix),
            EngineHost::Tcp(addr) => match TcpStream::connect(addr).await {
                Ok(stream) => stream.set_nodelay(true).map(|()| EngineStream::Tcp(stream)),
                Err(e) => Err(e),
            },
            EngineHost::Stdio { program, args } => return self.spawn(&program, &args),
            EngineHost::TlsTcp { addr, files } => match TcpStream::connect(addr.clone()).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    crate::tls::connect(&files, &addr, tcp).await.map(|stream| {
                        EngineStream::Tls(Box::new(TlsIo {
                            stream,
                            error: Default::default(),
                        }))
                    })
                }
                Err(e) => Err(e),
            },
            EngineHost::Driver(driver) => {
                if let DriverKind::DockerImage { reference } = &driver.kind {
                    self.ensure_image_engine(reference).await?;
                }
                let (program, args) = driver.command();
                return self.spawn(&program, &args);
            }
        };
        connected.map_err(|source| DialError::Connect {
            host: self.to_string(),
            source,
        })
    }

    /// The same `tcp://` host over TLS with a client certificate; other hosts are unchanged.
    pub fn with_tls(self, files: crate::tls::TlsFiles) -> EngineHost {
        match self {
            EngineHost::Tcp(addr) => EngineHost::TlsTcp { addr, files },
            other => other,
        }
    }

    /// Runs the ssh of `command` (e.g. `ssh -i KEY -o UserKnownHostsFile=FILE`) instead of
    /// plain `ssh` for `ssh://` hosts; other hosts are unchanged.
    pub fn with_ssh_command(mut self, command: Vec<String>) -> EngineHost {
        if let EngineHost::Driver(d) = &mut self
            && !command.is_empty()
        {
            d.ssh = command;
        }
        self
    }

    /// The tool command of a driver host (what a connection runs), for messages and tests.
    pub fn driver_command(&self) -> Option<Vec<String>> {
        match self {
            EngineHost::Driver(d) => {
                let (program, args) = d.command();
                Some(std::iter::once(program).chain(args).collect())
            }
            _ => None,
        }
    }

    /// Runs `docker ARGS` to completion: its stdout, or an error with what it printed.
    async fn docker(&self, args: &[&str]) -> Result<String, DialError> {
        let out = Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| DialError::Spawn {
                host: self.to_string(),
                program: "docker".to_owned(),
                hint: install_hint("docker", &source),
                source,
            })?;
        if !out.status.success() {
            return Err(DialError::Tool {
                host: self.to_string(),
                command: format!("docker {}", args.join(" ")),
                output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Starts the engine container of `docker-image://REF` unless it runs: privileged
    /// ([`EngineHost::run_image_engine`]), its state on the named volume of the same name,
    /// restarted unless stopped; then waits until its engine answers on its socket.
    async fn ensure_image_engine(&self, reference: &str) -> Result<(), DialError> {
        let name = image_container_name(reference);
        let state = self
            .docker(&["inspect", "--format", "{{.State.Running}}", &name])
            .await;
        match state.as_deref() {
            Ok("true") => return Ok(()),
            Ok(_) => {
                self.docker(&["start", &name]).await?;
            }
            Err(_) => self.run_image_engine(&name, reference).await?,
        }
        let started = std::time::Instant::now();
        loop {
            let probe = self
                .docker(&["exec", &name, "dagr-engine", "dial-stdio", "--probe"])
                .await;
            match probe {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > std::time::Duration::from_secs(60) => {
                    let logs = self
                        .docker(&["logs", "--tail", "20", &name])
                        .await
                        .unwrap_or_default();
                    return Err(DialError::Tool {
                        host: self.to_string(),
                        command: format!("docker exec {name} dagr-engine dial-stdio --probe"),
                        output: format!("{e}; the engine container's log ends with:\n{logs}"),
                    });
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// `docker run` of the engine container: privileged, as Dagger's driver does. A runtime
    /// that cannot grant every capability (docker inside a sandbox whose bounding set lacks
    /// some) refuses `--privileged` with "unable to apply caps"; then the container gets what
    /// `--privileged` gives except those: each capability of this process's bounding set (the
    /// daemon's, when it runs here), unconfined seccomp, AppArmor and /proc, and the cgroup
    /// filesystem writable.
    async fn run_image_engine(&self, name: &str, reference: &str) -> Result<(), DialError> {
        let volume = format!("{name}:/var/lib/dagr");
        let common = [
            "run",
            "--detach",
            "--name",
            name,
            "--volume",
            &volume,
            "--restart",
            "unless-stopped",
        ];
        let mut privileged: Vec<&str> = common.to_vec();
        privileged.extend(["--privileged", reference]);
        match self.docker(&privileged).await {
            Ok(_) => Ok(()),
            // Another client started it meanwhile.
            Err(DialError::Tool { output, .. }) if output.contains("already in use") => Ok(()),
            Err(DialError::Tool { output, .. }) if output.contains("unable to apply caps") => {
                // The container was created before its start failed.
                let _ = self.docker(&["rm", "--force", name]).await;
                let caps = bounding_capabilities();
                let mut args: Vec<&str> = common.to_vec();
                for cap in &caps {
                    args.extend(["--cap-add", cap]);
                }
                args.extend([
                    "--security-opt",
                    "seccomp=unconfined",
                    "--security-opt",
                    "apparmor=unconfined",
                    "--security-opt",
                    "systempaths=unconfined",
                    "--volume",
                    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                    reference,
                ]);
                self.docker(&args).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    fn spawn(&self, program: &str, args: &[String]) -> Result<EngineStream, DialError> {
        let spawn = |source: io::Error| DialError::Spawn {
            host: self.to_string(),
            program: program.to_string(),
            hint: install_hint(program, &source),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        let missing = || spawn(io::Error::other("child stdio not captured"));
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take().ok_or_else(missing)?;
        Ok(EngineStream::Stdio(Box::new(ChildIo {
            child: Some(child),
            stdin,
            stdout,
            stderr: ToolOutput::collect(stderr),
        })))
    }
}

/// The last bytes a connection helper wrote to its stderr (what it says when it fails: a
/// refused key, a missing container), kept to explain a connection that fails.
#[derive(Clone)]
pub(crate) struct ToolOutput {
    tail: std::sync::Arc<parking_lot::Mutex<Vec<u8>>>,
    ended: tokio::sync::watch::Receiver<bool>,
}

/// How much of a helper's stderr is kept.
const TOOL_OUTPUT_TAIL: usize = 4096;

impl ToolOutput {
    fn collect(mut stderr: tokio::process::ChildStderr) -> ToolOutput {
        use tokio::io::AsyncReadExt as _;
        let tail = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        let sink = tail.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut tail = sink.lock();
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(TOOL_OUTPUT_TAIL);
                tail.drain(..excess);
            }
            let _ = ended_tx.send(true);
        });
        ToolOutput { tail, ended }
    }

    /// What the helper printed, once it closed its stderr (waiting at most half a second):
    /// `""` when nothing.
    pub(crate) async fn text(&self) -> String {
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            ended.wait_for(|e| *e),
        )
        .await;
        String::from_utf8_lossy(&self.tail.lock()).trim().to_owned()
    }
}

/// What the transport under a connection can tell about its failure.
#[derive(Clone)]
pub(crate) enum Diagnosis {
    /// A connection helper's stderr.
    Tool(ToolOutput),
    /// The first TLS error.
    Tls(std::sync::Arc<parking_lot::Mutex<Option<String>>>),
}

impl Diagnosis {
    /// `"; <what it knows>"`, or `""`.
    pub(crate) async fn explain(&self) -> String {
        match self {
            Diagnosis::Tool(output) => match output.text().await {
                text if text.is_empty() => String::new(),
                text => format!("; the connection helper printed: {text}"),
            },
            Diagnosis::Tls(error) => match error.lock().as_deref() {
                Some(e) => format!("; TLS: {e}"),
                None => String::new(),
            },
        }
    }
}

impl EngineStream {
    /// What can explain this connection's failure, for connections through a process or TLS.
    pub(crate) fn diagnosis(&self) -> Option<Diagnosis> {
        match self {
            EngineStream::Stdio(io) => Some(Diagnosis::Tool(io.stderr.clone())),
            EngineStream::Tls(io) => Some(Diagnosis::Tls(io.error.clone())),
            _ => None,
        }
    }
}

/// A child process's stdout (read) and stdin (write) as one stream; the child is killed and reaped
/// when this is dropped.
pub(crate) struct ChildIo {
    child: Option<Child>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ToolOutput,
}

impl Drop for ChildIo {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        // Reap it now rather than leaving a zombie until tokio's next orphan sweep.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

impl AsyncRead for ChildIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_hosts() {
        let cases = [
            (
                "unix:///run/dagr.sock",
                EngineHost::Unix("/run/dagr.sock".into()),
            ),
            (
                "tcp://127.0.0.1:1234",
                EngineHost::Tcp("127.0.0.1:1234".into()),
            ),
            ("tcp://[::1]:99", EngineHost::Tcp("[::1]:99".into())),
            (
                "stdio://dagr-engine dial-stdio --addr x",
                EngineHost::Stdio {
                    program: "dagr-engine".into(),
                    args: vec!["dial-stdio".into(), "--addr".into(), "x".into()],
                },
            ),
        ];
        for (input, want) in cases {
            let got: EngineHost = input.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, want);
            assert_eq!(got.to_string(), input);
        }
        for bad in [
            "",
            "http://x",
            "ssh://",
            "ssh://host:port",
            "ssh://@host",
            "ssh://-oProxyCommand=x",
            "docker-container://",
            "docker-container://a/b",
            "docker-image://",
            "podman-container://-x",
            "kube-pod://",
            "kube-pod://p?colour=red",
            "unix://",
            "tcp://host",
            "tcp://:80",
            "tcp://h:notaport",
            "stdio://  ",
        ] {
            let err = bad.parse::<EngineHost>().expect_err(bad);
            assert_eq!(err.input, bad);
            assert!(err.to_string().contains("invalid engine host"));
        }
    }

    #[test]
    fn drivers_run_dial_stdio_through_their_tool() {
        let command = |url: &str| {
            let host: EngineHost = url.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(host.to_string(), url);
            host.driver_command().expect("a driver").join(" ")
        };
        assert_eq!(
            command("ssh://alice@build.example:2222/run/dagr/engine.sock"),
            "ssh -T -o BatchMode=yes -l alice -p 2222 build.example -- dagr-engine dial-stdio --addr unix:///run/dagr/engine.sock"
        );
        assert_eq!(
            command("ssh://[::1]"),
            "ssh -T -o BatchMode=yes ::1 -- dagr-engine dial-stdio"
        );
        assert_eq!(
            command("docker-container://engine"),
            "docker exec -i engine dagr-engine dial-stdio"
        );
        assert_eq!(
            command("docker-image://ghcr.io/x/dagr-engine:1"),
            format!(
                "docker exec -i {} dagr-engine dial-stdio",
                image_container_name("ghcr.io/x/dagr-engine:1")
            )
        );
        assert_eq!(
            command("podman-container://engine"),
            "podman exec -i engine dagr-engine dial-stdio"
        );
        assert_eq!(
            command("kube-pod://dagr-engine-x7?namespace=dagr&container=engine&context=prod"),
            "kubectl --context prod --namespace dagr exec -i dagr-engine-x7 -c engine -- dagr-engine dial-stdio"
        );
        assert_eq!(
            command("kube-pod://p"),
            "kubectl exec -i p -- dagr-engine dial-stdio"
        );
        let custom: EngineHost = "ssh://h".parse().expect("ssh");
        let custom = custom.with_ssh_command(vec!["ssh".into(), "-i".into(), "/k".into()]);
        assert_eq!(
            custom.driver_command().expect("driver").join(" "),
            "ssh -i /k -T -o BatchMode=yes h -- dagr-engine dial-stdio"
        );
    }
}
