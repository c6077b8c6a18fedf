//! The operation graph: [`Op`] definitions (plain serde data), [`Vertex`] (an op plus its input
//! vertices, with its structural cache key computed once at construction) and [`Definition`] (the
//! flattened, serializable form of a graph).
//!
//! Ops name their inputs with [`InputRef`]: an index into the vertex's input list plus the output
//! of that input (0 for the main output; an exec's other outputs are defined by the runner).
//!
//! Optional fields holding their default value (none, empty, false) are left out of the
//! serialized form, and so out of the cache key encoding: a field added later with such a default
//! leaves existing keys unchanged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use dagr_platform::Platform;
use serde::{Deserialize, Serialize};

use crate::key::{self, CacheKey};

/// Errors building a graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{kind} op refers to input {input} but the vertex has {count} inputs")]
    InputOutOfRange {
        kind: &'static str,
        input: u32,
        count: usize,
    },
    #[error("definition vertex {vertex} refers to vertex {input}, which does not come before it")]
    ForwardReference { vertex: usize, input: u32 },
    #[error("definition root {root} is out of range ({count} vertices)")]
    RootOutOfRange { root: u32, count: usize },
    #[error("definition has {0} vertices, more than an u32 index can address")]
    TooLarge(usize),
    #[error("encoding {kind} op for its cache key failed: {source}")]
    Encode {
        kind: &'static str,
        source: serde_json::Error,
    },
}

/// A reference from an op to one of its vertex's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputRef {
    /// Index into [`Vertex::inputs`].
    pub input: u32,
    /// Which output of that input: 0 is the main output (a filesystem); an exec's further
    /// outputs (its writable mounts) are numbered by the runner.
    #[serde(default)]
    pub output: u32,
}

impl InputRef {
    /// The main output of input `input`.
    pub fn main(input: u32) -> Self {
        Self { input, output: 0 }
    }
}

/// Whose host a host read comes from.
pub use dagr_metadata::ClientRef;

/// How concurrent execs share a cache volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// What is mounted at an exec mount point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountSource {
    /// An input's filesystem, or the subpath `path` of it.
    Input { input: InputRef, path: String },
    /// A persistent cache volume, optionally seeded from an input.
    Cache {
        id: String,
        sharing: CacheSharing,
        #[serde(default)]
        base: Option<InputRef>,
    },
    /// An empty tmpfs.
    Tmpfs {
        #[serde(default)]
        size: Option<u64>,
    },
    /// A secret as a file.
    Secret {
        secret_id: String,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// A unix socket of a client's host, forwarded (each connection to the socket at the
    /// mount point is a connection to `path` on the client's host). The client is part of the
    /// key: its socket is its own.
    UnixSocket {
        session_id: String,
        client_id: String,
        path: String,
        uid: u32,
        gid: u32,
    },
}

/// One mount of an exec; the mount at `/` is the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub dest: String,
    pub source: MountSource,
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
}

/// Run a process in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    pub args: Vec<String>,
    /// Environment; a map, so the order variables were set in does not matter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Environment variable name -> secret id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_stderr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged_nesting: bool,
    /// The session a nested exec belongs to: a process that can call the engine back acts in
    /// its session, so its result is never shared with another session (part of the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesting_session: Option<String>,
    /// What the nested client of a privileged exec is for, opaque to the solver and the
    /// worker: a module function call's identity (module, function, parent, arguments), which
    /// the API reads back for that client (`currentFunctionCall`). Part of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_call: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_root_capabilities: bool,
    /// Services running while it runs, each reachable under its alias (part of the key: the
    /// service's hostname is a digest of its definition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_bindings: Vec<ServiceBinding>,
    /// Loopback only: no address on the engine's network (Dockerfile `RUN --network=none`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub network_disabled: bool,
    /// The platform it runs as, when not the engine's own (it runs under emulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// A service an exec binds: its hostname (which names its definition, see the worker's
/// `ServiceStarter`) and the alias the exec reaches it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBinding {
    pub alias: String,
    pub hostname: String,
}

/// The numeric owner file ops give what they write: `uid:gid` in serialized ops, parsed from
/// `uid[:gid]` (a lone `uid` is also the group, as in Dagger). Names would need the target's
/// passwd file, which file ops do not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Text that is not a numeric `uid[:gid]` owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("owner {0:?} is not uid[:gid]: only numeric 32-bit ids are supported")]
pub struct OwnerError(pub String);

impl Owner {
    /// Parses `uid[:gid]`; the empty string is no owner.
    pub fn parse(text: &str) -> Result<Option<Owner>, OwnerError> {
        if text.is_empty() {
            return Ok(None);
        }
        let (uid, gid) = text.split_once(':').unwrap_or((text, text));
        let id = |s: &str| {
            // `u32::from_str` also takes a leading `+`: only digits are an id.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(OwnerError(text.to_owned()));
            }
            s.parse::<u32>().map_err(|_| OwnerError(text.to_owned()))
        };
        Ok(Some(Owner {
            uid: id(uid)?,
            gid: id(gid)?,
        }))
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> String {
        owner.to_string()
    }
}

impl TryFrom<String> for Owner {
    type Error = OwnerError;
    fn try_from(text: String) -> Result<Owner, OwnerError> {
        Owner::parse(&text)?.ok_or(OwnerError(text))
    }
}

/// Write a file into `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkFileOp {
    pub base: InputRef,
    pub path: String,
    #[serde(with = "base64_bytes")]
    pub contents: Vec<u8>,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Create a directory in `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkDirOp {
    pub base: InputRef,
    pub path: String,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub make_parents: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Copy `src` of `from` to `dest` in `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOp {
    pub base: InputRef,
    pub from: InputRef,
    pub src: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Override the mode of copied files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Copy the contents of a source directory rather than the directory itself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub copy_dir_contents: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub create_dest_path: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_wildcard: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow_symlinks: bool,
    /// A source file that is a tar archive (plain, gzip, bzip2 or xz) is extracted into `dest`
    /// instead of copied, as Dockerfile `ADD` does; other files are copied.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unpack_archive: bool,
}

/// Remove `path` from `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmOp {
    pub base: InputRef,
    pub path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_not_found: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_wildcard: bool,
}

/// An operation definition. Pure data: how it runs is the [`crate::OpRunner`]'s business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// An image's root filesystem; the runner resolves `reference` to a digest
    /// ([`crate::OpRunner::resolve`]) and the cache key follows that digest.
    Image {
        reference: String,
        platform: Platform,
    },
    /// A directory read from a client's host. Impure: it runs on every solve and dependents are
    /// keyed by the content digest the runner reports.
    HostDir {
        client: ClientRef,
        path: String,
        #[serde(default)]
        include: Vec<String>,
        #[serde(default)]
        exclude: Vec<String>,
    },
    /// An empty filesystem.
    Empty,
    Exec(ExecOp),
    MkFile(MkFileOp),
    MkDir(MkDirOp),
    Copy(CopyOp),
    Rm(RmOp),
    /// Layer the inputs in order (later ones win).
    Merge {
        inputs: Vec<InputRef>,
    },
    /// What changed from `lower` to `upper`.
    Diff {
        lower: InputRef,
        upper: InputRef,
    },
    /// Set the modification and access times of `path` in `base` and everything under it.
    SetTimestamps(SetTimestampsOp),
    /// An OCI image archive of a root filesystem, as `/image.tar` of a new filesystem.
    ImageArchive(ImageArchiveOp),
    /// An image loaded from an OCI archive file.
    ImportImage(ImportImageOp),
    /// A git repository's tree at a ref; the runner resolves the ref to a commit
    /// ([`crate::OpRunner::resolve`]) and the cache key follows that commit.
    Git(GitOp),
    /// A file downloaded over HTTP(S); the runner downloads or revalidates it when resolving
    /// and the cache key follows the content's digest.
    Http(HttpOp),
}

/// The tree of `reference` in the git repository at `remote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitOp {
    /// The repository URL (`https://`, `http://`, `git://`, `ssh://`, or scp-like
    /// `user@host:path`), never with credentials in it.
    pub remote: String,
    /// A branch, tag, full ref (`refs/...`), `HEAD`, or a full commit hash.
    pub reference: String,
    /// Keep the `.git` directory (a shallow repository at the commit).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_git_dir: bool,
    /// HTTP authentication from a secret of the session (by digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GitAuth>,
    /// SSH: the client's agent socket forwarded to `ssh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_auth_socket: Option<HostSocket>,
    /// SSH: `known_hosts` lines to check the server's key against.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ssh_known_hosts: String,
    /// Services of the session started for the fetch, whose hostnames the URL may name (part
    /// of the key: a service's hostname is a digest of its definition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_hostnames: Vec<String>,
}

/// How a git remote over HTTP is authenticated: the secret holds a token (sent as basic auth
/// with user `x-access-token`) or a whole `Authorization` header value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GitAuth {
    Token { secret_id: String },
    Header { secret_id: String },
}

/// A unix socket on a client's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSocket {
    pub session_id: String,
    pub client_id: String,
    pub path: String,
}

/// The file at `url`, written as `filename` in a new filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpOp {
    pub url: String,
    pub filename: String,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Services started for the download (see [`GitOp::service_hostnames`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_hostnames: Vec<String>,
}

/// Build an OCI image of `rootfs` (on the layers of `base_manifest` when given) and write it as
/// an OCI archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageArchiveOp {
    pub rootfs: InputRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_manifest: Option<String>,
    /// The image config's `config` section as canonical JSON.
    pub config: String,
    /// The image's platform (default: the base image's, else the engine's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Images of other platforms: the archive then holds an index of this image and them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<ImageVariant>,
}

/// One platform's image of a multi-platform [`ImageArchiveOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVariant {
    pub rootfs: InputRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_manifest: Option<String>,
    pub config: String,
    pub platform: Platform,
}

/// Load the image of the OCI archive at `path` of `archive` (the one tagged `tag` when given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportImageOp {
    pub archive: InputRef,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub platform: Platform,
}

/// Set the times of `path` (and everything under it) in `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTimestampsOp {
    pub base: InputRef,
    pub path: String,
    /// Seconds since the Unix epoch.
    pub timestamp: i64,
}

/// How an op's cache key is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// From the definition and the inputs' keys alone.
    Structural,
    /// From the definition, the inputs' keys and a digest the runner resolves before running.
    Resolved,
    /// From the content digest the runner reports after running (it runs on every solve).
    Content,
}

impl Op {
    /// A short name of the op's kind, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Image { .. } => "image",
            Op::HostDir { .. } => "host_dir",
            Op::Empty => "empty",
            Op::Exec(_) => "exec",
            Op::MkFile(_) => "mkfile",
            Op::MkDir(_) => "mkdir",
            Op::Copy(_) => "copy",
            Op::Rm(_) => "rm",
            Op::Merge { .. } => "merge",
            Op::Diff { .. } => "diff",
            Op::SetTimestamps(_) => "set_timestamps",
            Op::ImageArchive(_) => "image_archive",
            Op::ImportImage(_) => "import_image",
            Op::Git(_) => "git",
            Op::Http(_) => "http",
        }
    }

    /// What the op does, in a line for people (the name of its span): the command of an
    /// exec, the reference of an image, the path a file op writes.
    pub fn describe(&self) -> String {
        match self {
            Op::Image { reference, .. } => format!("pull {reference}"),
            Op::HostDir { path, .. } => format!("upload {path} from the client"),
            Op::Empty => "empty".to_owned(),
            Op::Exec(exec) => format!("exec {}", exec.args.join(" ")),
            Op::MkFile(op) => format!("write {}", op.path),
            Op::MkDir(op) => format!("mkdir {}", op.path),
            Op::Copy(op) => format!("copy {} to {}", op.src, op.dest),
            Op::Rm(op) => format!("rm {}", op.path),
            Op::Merge { inputs } => format!("merge {} filesystems", inputs.len()),
            Op::Diff { .. } => "diff".to_owned(),
            Op::SetTimestamps(op) => format!("set timestamps of {}", op.path),
            Op::ImageArchive(_) => "write image archive".to_owned(),
            Op::ImportImage(op) => format!("import image from {}", op.path),
            Op::Git(op) => format!("git {} {}", op.remote, op.reference),
            Op::Http(op) => format!("download {}", op.url),
        }
    }

    /// How this op's cache key is obtained.
    pub fn key_mode(&self) -> KeyMode {
        match self {
            // A reference pinned to a digest names immutable content: no resolution needed.
            Op::Image { reference, .. } if reference.contains("@sha256:") => KeyMode::Structural,
            Op::Image { .. } | Op::Git(_) | Op::Http(_) => KeyMode::Resolved,
            Op::HostDir { .. } => KeyMode::Content,
            _ => KeyMode::Structural,
        }
    }

    /// Whether the op counts against the solver's exec concurrency limit: execs, except those
    /// with privileged nesting. Those mostly wait for the nested client's own solves, whose
    /// execs would deadlock if the waiting parents held every slot.
    pub fn is_limited_exec(&self) -> bool {
        matches!(self, Op::Exec(exec) if !exec.privileged_nesting)
    }

    /// Whether the op reads a secret's value, or may: secret variables and mounts, a nested
    /// client (it can ask for any secret of its session), authenticated git fetches.
    pub fn reads_secret(&self) -> bool {
        match self {
            Op::Exec(exec) => {
                !exec.secret_env.is_empty()
                    || exec.privileged_nesting
                    || exec.nested_call.is_some()
                    || exec
                        .mounts
                        .iter()
                        .any(|m| matches!(m.source, MountSource::Secret { .. }))
            }
            Op::Git(git) => git.auth.is_some(),
            _ => false,
        }
    }

    /// Kinds whose results a remote cache holds: everything the engine produces itself.
    fn is_exportable_kind(&self) -> bool {
        !matches!(self, Op::Image { .. } | Op::HostDir { .. } | Op::Empty)
    }

    /// Every input reference the op makes.
    pub fn input_refs(&self) -> Vec<InputRef> {
        match self {
            Op::Image { .. } | Op::HostDir { .. } | Op::Empty | Op::Git(_) | Op::Http(_) => {
                Vec::new()
            }
            Op::Exec(exec) => exec
                .mounts
                .iter()
                .filter_map(|m| match &m.source {
                    MountSource::Input { input, .. } => Some(*input),
                    MountSource::Cache { base, .. } => *base,
                    MountSource::Tmpfs { .. }
                    | MountSource::Secret { .. }
                    | MountSource::UnixSocket { .. } => None,
                })
                .collect(),
            Op::MkFile(op) => vec![op.base],
            Op::MkDir(op) => vec![op.base],
            Op::Copy(op) => vec![op.base, op.from],
            Op::Rm(op) => vec![op.base],
            Op::Merge { inputs } => inputs.clone(),
            Op::Diff { lower, upper } => vec![*lower, *upper],
            Op::SetTimestamps(op) => vec![op.base],
            Op::ImageArchive(op) => std::iter::once(op.rootfs)
                .chain(op.variants.iter().map(|v| v.rootfs))
                .collect(),
            Op::ImportImage(op) => vec![op.archive],
        }
    }
}

/// An op together with the vertices it takes as inputs. Immutable; built with [`Vertex::new`],
/// which computes the structural cache key once.
#[derive(Debug)]
pub struct Vertex {
    op: Op,
    inputs: Vec<Arc<Vertex>>,
    op_digest: [u8; 32],
    structural_key: CacheKey,
    needs_runtime_key: bool,
    /// This op or one below it reads a secret's value (or may: a nested client can ask for any
    /// secret of its session).
    secret_derived: bool,
}

impl Vertex {
    /// Builds a vertex, checking that every [`InputRef`] of `op` names one of `inputs`.
    pub fn new(op: Op, inputs: Vec<Arc<Vertex>>) -> Result<Arc<Vertex>, GraphError> {
        for r in op.input_refs() {
            if r.input as usize >= inputs.len() {
                return Err(GraphError::InputOutOfRange {
                    kind: op.kind(),
                    input: r.input,
                    count: inputs.len(),
                });
            }
        }
        let op_digest = key::op_digest(&op).map_err(|source| GraphError::Encode {
            kind: op.kind(),
            source,
        })?;
        let structural_key = key::derive(&op_digest, inputs.iter().map(|i| i.structural_key));
        let needs_runtime_key =
            op.key_mode() != KeyMode::Structural || inputs.iter().any(|i| i.needs_runtime_key);
        let secret_derived = op.reads_secret() || inputs.iter().any(|i| i.secret_derived);
        Ok(Arc::new(Vertex {
            op,
            inputs,
            op_digest,
            structural_key,
            needs_runtime_key,
            secret_derived,
        }))
    }

    pub fn op(&self) -> &Op {
        &self.op
    }

    pub fn inputs(&self) -> &[Arc<Vertex>] {
        &self.inputs
    }

    /// The key computed from the definitions alone. It is the cache key unless
    /// [`Vertex::needs_runtime_key`].
    pub fn structural_key(&self) -> CacheKey {
        self.structural_key
    }

    /// Whether this vertex or one below it is keyed by something only known when solving (a
    /// resolved image digest, host content).
    pub fn needs_runtime_key(&self) -> bool {
        self.needs_runtime_key
    }

    /// Whether this vertex's result may leave the engine (a remote cache): not derived from a
    /// secret's value, and produced here (images come from their own registry, host reads from
    /// the client, and both are read again by every solve anyway).
    pub fn exportable(&self) -> bool {
        !self.secret_derived && self.op.is_exportable_kind()
    }

    pub(crate) fn op_digest(&self) -> &[u8; 32] {
        &self.op_digest
    }
}

impl Drop for Vertex {
    /// Drops input chains iteratively: a deep graph must not overflow the stack.
    fn drop(&mut self) {
        let mut stack = std::mem::take(&mut self.inputs);
        while let Some(v) = stack.pop() {
            if let Some(mut owned) = Arc::into_inner(v) {
                stack.append(&mut owned.inputs);
            }
        }
    }
}

/// One vertex of a [`Definition`]: inputs are indices of earlier vertices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionVertex {
    pub op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<u32>,
}

/// A graph flattened for serialization: vertices in dependency order (inputs before the vertices
/// using them, shared vertices once) and the index of the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub vertices: Vec<DefinitionVertex>,
    pub root: u32,
}

impl Definition {
    /// Flattens the graph under `root`; vertices with equal structural keys are stored once.
    pub fn from_root(root: &Arc<Vertex>) -> Result<Definition, GraphError> {
        let mut index: HashMap<CacheKey, u32> = HashMap::new();
        let mut vertices = Vec::new();
        // Iterative post-order: (vertex, whether its inputs were pushed).
        let mut stack: Vec<(&Arc<Vertex>, bool)> = vec![(root, false)];
        while let Some((v, expanded)) = stack.pop() {
            if index.contains_key(&v.structural_key) {
                continue;
            }
            if !expanded {
                stack.push((v, true));
                for input in v.inputs.iter().rev() {
                    if !index.contains_key(&input.structural_key) {
                        stack.push((input, false));
                    }
                }
                continue;
            }
            let inputs = v
                .inputs
                .iter()
                .map(|i| index.get(&i.structural_key).copied())
                .collect::<Option<Vec<u32>>>()
                .ok_or(GraphError::TooLarge(vertices.len()))?;
            let at =
                u32::try_from(vertices.len()).map_err(|_| GraphError::TooLarge(vertices.len()))?;
            vertices.push(DefinitionVertex {
                op: v.op.clone(),
                inputs,
            });
            index.insert(v.structural_key, at);
        }
        let root = index
            .get(&root.structural_key)
            .copied()
            .ok_or(GraphError::TooLarge(vertices.len()))?;
        Ok(Definition { vertices, root })
    }

    /// Rebuilds the vertex graph, checking that inputs only refer to earlier vertices.
    pub fn to_vertex(&self) -> Result<Arc<Vertex>, GraphError> {
        let mut built: Vec<Arc<Vertex>> = Vec::with_capacity(self.vertices.len());
        for (at, dv) in self.vertices.iter().enumerate() {
            let inputs = dv
                .inputs
                .iter()
                .map(|&i| {
                    built
                        .get(i as usize)
                        .cloned()
                        .ok_or(GraphError::ForwardReference {
                            vertex: at,
                            input: i,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            built.push(Vertex::new(dv.op.clone(), inputs)?);
        }
        built
            .get(self.root as usize)
            .cloned()
            .ok_or(GraphError::RootOutOfRange {
                root: self.root,
                count: self.vertices.len(),
            })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod owner_tests {
    use super::{Owner, OwnerError};

    #[test]
    fn owners_are_numeric_uid_and_optional_gid() {
        assert_eq!(Owner::parse(""), Ok(None));
        let owner = |uid, gid| Ok(Some(Owner { uid, gid }));
        assert_eq!(Owner::parse("1000:1001"), owner(1000, 1001));
        assert_eq!(Owner::parse("7"), owner(7, 7));
        assert_eq!(Owner::parse("0:0"), owner(0, 0));
        for bad in [
            "root",
            "1000:staff",
            ":1",
            "1:",
            "+1",
            "-1",
            "1:2:3",
            "4294967296",
        ] {
            assert_eq!(Owner::parse(bad), Err(OwnerError(bad.to_owned())), "{bad}");
        }
        assert_eq!(
            Owner::parse("x").map_err(|e| e.to_string()),
            Err(r#"owner "x" is not uid[:gid]: only numeric 32-bit ids are supported"#.to_owned())
        );
    }

    #[test]
    fn owners_print_as_uid_and_gid() {
        assert_eq!(Owner { uid: 7, gid: 7 }.to_string(), "7:7");
    }

    #[test]
    fn owners_serialize_as_uid_colon_gid_and_read_a_lone_uid() {
        let owner = Owner { uid: 7, gid: 8 };
        assert_eq!(
            serde_json::to_string(&owner).expect("serializes"),
            r#""7:8""#
        );
        assert_eq!(
            serde_json::from_str::<Owner>(r#""7""#).expect("parses"),
            Owner { uid: 7, gid: 7 }
        );
        assert!(serde_json::from_str::<Owner>(r#""""#).is_err());
    }
}
