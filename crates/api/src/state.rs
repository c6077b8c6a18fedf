//! The values behind the API's object types: lazy filesystems ([`Fs`]: an output of a solver
//! vertex), [`Container`], [`Directory`], [`File`], [`Secret`], [`CacheVolume`] and the small
//! [`EnvVariable`] / [`Label`] pairs. Nothing here runs anything: building a value only builds
//! graph vertices; leaf fields solve them.

use std::collections::BTreeMap;
use std::sync::Arc;

use dagr_solver::{CacheSharing, InputRef, Op, Platform, Vertex};

/// Output `output` of a graph vertex: a filesystem, not yet built.
#[derive(Clone, Debug)]
pub struct Fs {
    pub vertex: Arc<Vertex>,
    pub output: u32,
}

impl Fs {
    pub fn main(vertex: Arc<Vertex>) -> Fs {
        Fs { vertex, output: 0 }
    }

    /// The empty filesystem.
    pub fn scratch() -> Result<Fs, dagr_solver::GraphError> {
        Ok(Fs::main(Vertex::new(Op::Empty, vec![])?))
    }
}

/// Collects the distinct inputs of a new vertex and hands out [`InputRef`]s to them.
#[derive(Default)]
pub struct Inputs {
    vertices: Vec<Arc<Vertex>>,
}

impl Inputs {
    /// The reference to `fs` among this vertex's inputs (added if new).
    pub fn add(&mut self, fs: &Fs) -> InputRef {
        let index = match self.vertices.iter().position(|v| {
            Arc::ptr_eq(v, &fs.vertex) || v.structural_key() == fs.vertex.structural_key()
        }) {
            Some(i) => i,
            None => {
                self.vertices.push(fs.vertex.clone());
                self.vertices.len() - 1
            }
        };
        InputRef {
            input: u32::try_from(index).unwrap_or(u32::MAX),
            output: fs.output,
        }
    }

    pub fn into_vec(self) -> Vec<Arc<Vertex>> {
        self.vertices
    }
}

/// The image configuration a container carries (what `from` reads and `publish` writes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// In the order they were set; names unique.
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub default_args: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// `port/proto` (`8080/tcp`): the image's, plus `withExposedPort`'s.
    pub exposed_ports: std::collections::BTreeSet<String>,
    /// The config section's other keys (`Volumes`, `StopSignal`, `Healthcheck`, `OnBuild`,
    /// `Shell`, ...), kept as the image or Dockerfile set them and written back on export.
    pub rest: BTreeMap<String, serde_json::Value>,
}

/// The `config` keys [`ImageConfig`] models itself.
const MODELLED_KEYS: [&str; 8] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    // Docker's legacy field naming the parent image: never written back.
    "Image",
];

impl ImageConfig {
    /// From an OCI image config's `config` section (JSON with Docker's capitalized keys).
    pub fn from_oci(config: &serde_json::Value) -> ImageConfig {
        let strings = |key: &str| -> Vec<String> {
            config
                .get(key)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let env = strings("Env")
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv, String::new()),
            })
            .collect();
        let labels = config
            .get("Labels")
            .and_then(|v| v.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let string = |key: &str| {
            config
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        ImageConfig {
            env,
            workdir: string("WorkingDir"),
            user: string("User"),
            entrypoint: strings("Entrypoint"),
            default_args: strings("Cmd"),
            labels,
            exposed_ports: config
                .get("ExposedPorts")
                .and_then(|v| v.as_object())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            rest: config
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, v)| {
                            !MODELLED_KEYS.contains(&k.as_str())
                                && !dagr_worker::export::is_blank(v)
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_env(&mut self, name: &str, value: String) {
        match self.env.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.env.push((name.to_owned(), value)),
        }
    }

    /// Expands `$NAME` and `${NAME}` with this environment (unknown names expand to nothing).
    pub fn expand(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' {
                out.push(c);
                continue;
            }
            let braced = chars.peek() == Some(&'{');
            if braced {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&n) = chars.peek() {
                if braced {
                    chars.next();
                    if n == '}' {
                        break;
                    }
                    name.push(n);
                } else if n.is_ascii_alphanumeric() || n == '_' {
                    name.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() && !braced {
                out.push('$');
            } else {
                out.push_str(self.env_var(&name).unwrap_or_default());
            }
        }
        out
    }
}

/// What is mounted at a container path.
#[derive(Clone, Debug)]
pub enum MountKind {
    /// A directory or file of a filesystem (`path` inside it).
    Fs {
        fs: Fs,
        path: String,
        file: bool,
    },
    Cache {
        volume: String,
        sharing: CacheSharing,
    },
    Temp,
    Secret {
        secret: Secret,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Clone, Debug)]
pub struct ContainerMount {
    pub target: String,
    pub kind: MountKind,
}

/// A container: rootfs, image config, mounts, and the last exec (for stdout/stderr).
#[derive(Clone, Debug)]
pub struct Container {
    pub rootfs: Fs,
    pub config: ImageConfig,
    pub mounts: Vec<ContainerMount>,
    pub platform: Platform,
    /// The pinned reference of the image it was made `from`, until the rootfs changes.
    pub image_ref: Option<String>,
    /// Manifest digest of the image the rootfs is built on (`from`), kept through execs and file
    /// ops so that published images reuse its layers; `None` for scratch or `withRootfs`.
    pub base_image: Option<String>,
    /// The last `withExec` vertex; `stdout`/`stderr` read its output.
    pub last_exec: Option<Arc<Vertex>>,
    /// Environment variables whose values are secrets (name -> secret).
    pub secret_env: BTreeMap<String, Secret>,
    /// What `terminal` runs when given no command (`withDefaultTerminalCmd`).
    pub default_terminal: Option<TerminalCmd>,
    /// Ports it exposes as a service (`withExposedPort`), in the order they were added.
    pub ports: Vec<Port>,
    /// Services its execs bind (`withServiceBinding`), by alias.
    pub services: Vec<ServiceBinding>,
    /// Unix sockets of clients' hosts mounted in its execs (`withUnixSocket`).
    pub sockets: Vec<SocketMount>,
}

/// A unix socket on a client's host (`Host.unixSocket`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub client: dagr_metadata::ClientRef,
    /// As the client resolves it (relative: against its working directory).
    pub path: String,
}

/// A socket mounted at `target`, owned by `uid:gid` there.
#[derive(Clone, Debug)]
pub struct SocketMount {
    pub target: String,
    pub socket: Socket,
    pub uid: u32,
    pub gid: u32,
}

/// The protocol of a [`Port`] (`NetworkProtocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NetworkProtocol {
    Tcp,
    Udp,
}

impl NetworkProtocol {
    pub fn name(self) -> &'static str {
        match self {
            NetworkProtocol::Tcp => "TCP",
            NetworkProtocol::Udp => "UDP",
        }
    }

    /// The name in an OCI image config's `ExposedPorts` (`8080/tcp`).
    pub fn oci_name(self) -> &'static str {
        match self {
            NetworkProtocol::Tcp => "tcp",
            NetworkProtocol::Udp => "udp",
        }
    }
}

/// A port a service exposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub port: u16,
    pub protocol: NetworkProtocol,
    pub description: Option<String>,
    /// Not waited for when the service starts.
    pub skip_healthcheck: bool,
}

/// A service: something reachable by hostname in the engine's network, or a tunnel to one.
#[derive(Clone, Debug)]
pub struct Service {
    /// Stable for its ID: a digest of the call chain that made it.
    pub hostname: String,
    pub kind: ServiceKind,
    /// Its ports (a container's exposed ports; a host service's frontends).
    pub ports: Vec<Port>,
}

/// What a service runs.
#[derive(Clone, Debug)]
pub enum ServiceKind {
    /// A container's exec (its inputs are the container's rootfs and mounts).
    Container { exec: Arc<Vertex> },
    /// Ports of a client's host (`Host.service`): each frontend port on the service's address
    /// in the engine's network is forwarded to `host:backend` as the client sees it.
    Host {
        client: dagr_metadata::ClientRef,
        host: String,
        forwards: Vec<PortForward>,
    },
    /// A service's ports on a client's host (`Host.tunnel`).
    Tunnel {
        upstream: Arc<Service>,
        client: dagr_metadata::ClientRef,
        /// Empty: every TCP port of the upstream.
        forwards: Vec<PortForward>,
        /// Each frontend is its backend's number (else any free port when not given).
        native: bool,
    },
}

/// A port forwarding rule (`PortForward`): `frontend` (0 or absent: chosen by whoever listens)
/// to `backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct PortForward {
    pub backend: u16,
    #[serde(default)]
    pub frontend: Option<u16>,
    #[serde(default = "tcp_protocol")]
    pub protocol: NetworkProtocol,
}

fn tcp_protocol() -> NetworkProtocol {
    NetworkProtocol::Tcp
}

/// A service bound into a container under an alias.
#[derive(Clone, Debug)]
pub struct ServiceBinding {
    pub alias: String,
    pub service: Arc<Service>,
}

/// A terminal command and how it runs.
#[derive(Clone, Debug, Default)]
pub struct TerminalCmd {
    pub args: Vec<String>,
    pub privileged_nesting: bool,
    pub insecure_root_capabilities: bool,
}

/// An interactive process, not started: `exec` is the exec vertex it would be (its inputs are
/// the container's rootfs and mounts). `Terminal.sync` runs it on the caller's terminal.
#[derive(Clone, Debug)]
pub struct Terminal {
    pub exec: Arc<Vertex>,
}

/// A directory: `path` inside a filesystem.
#[derive(Clone, Debug)]
pub struct Directory {
    pub fs: Fs,
    pub path: String,
}

/// A file: `path` inside a filesystem.
#[derive(Clone, Debug)]
pub struct File {
    pub fs: Fs,
    pub path: String,
}

/// A secret of a session: its name and the digest its plaintext is stored under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    /// `sha256:<hex>` of the plaintext (the key in the session's secret store and in exec ops).
    pub digest: String,
}

#[derive(Clone, Debug)]
pub struct CacheVolume {
    pub key: String,
}

#[derive(Clone, Debug)]
pub struct EnvVariable {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// The caller's host (its files are read through its attachables).
#[derive(Clone, Debug)]
pub struct Host;

/// Joins `rel` to the directory `base` inside a filesystem, normalizing to an absolute path
/// (`..` cannot climb above `/`; symlinks are resolved later, inside the snapshot).
pub fn join(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let start = if rel.starts_with('/') { "" } else { base };
    for comp in start.split('/').chain(rel.split('/')) {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_normalizes() {
        assert_eq!(join("/", "a/b"), "/a/b");
        assert_eq!(join("/src", "./x/../y"), "/src/y");
        assert_eq!(join("/src", "/abs"), "/abs");
        assert_eq!(join("/a", "../../.."), "/");
        assert_eq!(join("/a/", ""), "/a");
    }

    #[test]
    fn env_expansion() {
        let mut c = ImageConfig::default();
        c.set_env("A", "x".into());
        c.set_env("PATH", "/bin".into());
        c.set_env("A", "y".into());
        assert_eq!(
            c.env,
            vec![("A".into(), "y".into()), ("PATH".into(), "/bin".into())]
        );
        assert_eq!(c.expand("$PATH:${A}/z $NOPE$"), "/bin:y/z $");
    }

    #[test]
    fn image_config_from_oci() {
        let c = ImageConfig::from_oci(&serde_json::json!({
            "Env": ["PATH=/bin", "EMPTY"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/w",
            "Labels": {"a": "b"},
            "ExposedPorts": {"80/tcp": {}}
        }));
        assert_eq!(c.env_var("PATH"), Some("/bin"));
        assert_eq!(c.env_var("EMPTY"), Some(""));
        assert_eq!(c.default_args, ["/bin/sh"]);
        assert_eq!(c.workdir, "/w");
        assert_eq!(c.labels.get("a").map(String::as_str), Some("b"));
        assert!(c.exposed_ports.contains("80/tcp"));
    }
}
