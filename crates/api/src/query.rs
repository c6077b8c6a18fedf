//! `Query` and the small objects: `Host`, `Secret`, `CacheVolume`, `EnvVariable`, `Label`.

use bytes::Bytes;
use dagr_gql::{Arg, Args, Field, FieldError, Object, Scalar, SchemaBuilder, Value};
use dagr_metadata::ClientRef;
use dagr_solver::{Op, Platform, Vertex};
use serde::Deserialize;

use crate::args::{PathArgs, null_as_default};
use crate::state::{
    CacheVolume, Container, Directory, EnvVariable, File, Fs, Host, ImageConfig, Label, Secret,
};
use crate::{caller, graph_err, obj, services};

pub(crate) fn new_container(platform: Platform) -> Result<Container, FieldError> {
    Ok(Container {
        rootfs: Fs::scratch().map_err(graph_err)?,
        config: ImageConfig::default(),
        mounts: Vec::new(),
        platform,
        image_ref: None,
        base_image: None,
        last_exec: None,
        secret_env: Default::default(),
        default_terminal: None,
        ports: Vec::new(),
        services: Vec::new(),
        sockets: Vec::new(),
    })
}

/// A host directory read through the caller's attachables.
pub(crate) fn host_dir(
    caller: &ClientRef,
    path: &str,
    include: Vec<String>,
    exclude: Vec<String>,
) -> Result<Fs, FieldError> {
    let v = Vertex::new(
        Op::HostDir {
            client: caller.clone(),
            path: path.to_owned(),
            include,
            exclude,
        },
        vec![],
    )
    .map_err(graph_err)?;
    Ok(Fs::main(v))
}

/// Adds `Query`, `Host`, `Secret`, `CacheVolume`, `EnvVariable`, `Label` and the `Platform`
/// scalar.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    // The served order (SDL and introspection list fields as they are added here).
    let query = Object::new("Query")
        .field(version())
        .field(check_version_compatibility())
        .field(default_platform())
        .field(container())
        .field(directory())
        .field(host())
        .field(cache_volume())
        .field(set_secret())
        .field(crate::git::query_git())
        .field(crate::http::query_http())
        .field(crate::container::query_socket());
    let host = Object::new("Host")
        .with_id()
        .field(host_directory())
        .field(host_file())
        .field(host_set_secret_file());
    let host = crate::service::host_fields()
        .into_iter()
        .chain([crate::container::host_unix_socket()])
        .fold(host, |host, field| host.field(field));
    let secret = Object::new("Secret")
        .with_id()
        .field(secret_name())
        .field(secret_plaintext());
    // CacheVolume has no fields besides `id`; gql needs at least one: it adds `id` itself.
    let cache = Object::new("CacheVolume").with_id();
    let env = Object::new("EnvVariable")
        .with_id()
        .field(
            Field::new("name", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<EnvVariable>()?.name.clone()))),
        )
        .field(
            Field::new("value", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<EnvVariable>()?.value.clone()))),
        );
    let label = Object::new("Label")
        .with_id()
        .field(
            Field::new("name", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Label>()?.name.clone()))),
        )
        .field(
            Field::new("value", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Label>()?.value.clone()))),
        );

    b.scalar(Scalar::new("Platform"))
        .object(query)
        .object(host)
        .object(secret)
        .object(crate::container::socket_object())
        .object(cache)
        .object(env)
        .object(label)
}

/// `Query.version`: the engine's version.
fn version() -> Field {
    Field::new("version", "String!")
        .resolve_sync(|ctx| Ok(Value::leaf(services(ctx)?.config.engine_version.clone())))
}

/// The arguments of `Query.checkVersionCompatibility`.
#[derive(Deserialize)]
struct CheckVersionCompatibilityArgs {
    version: String,
}

impl Args for CheckVersionCompatibilityArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("version", "String!")]
    }
}

/// `Query.checkVersionCompatibility`: refuses client versions older than the engine accepts
/// (a version that does not parse, such as a development build, is accepted).
fn check_version_compatibility() -> Field {
    Field::new("checkVersionCompatibility", "Boolean!")
        .args::<CheckVersionCompatibilityArgs>()
        .resolve_sync(|ctx| {
            let min = &services(ctx)?.config.min_client_version;
            let CheckVersionCompatibilityArgs { version: v } = ctx.args_as()?;
            let trimmed = v.trim().trim_start_matches('v');
            match semver::Version::parse(trimmed) {
                Ok(parsed) if &parsed < min => Err(FieldError::new(format!(
                    "incompatible client version {v}: this engine needs at least {min}"
                ))),
                _ => Ok(Value::leaf(true)),
            }
        })
}

/// `Query.defaultPlatform`: the engine's platform.
fn default_platform() -> Field {
    Field::new("defaultPlatform", "Platform!")
        .resolve_sync(|ctx| Ok(Value::leaf(services(ctx)?.config.platform.to_string())))
}

/// The arguments of `Query.container` (the `id` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct ContainerArgs {
    platform: Option<String>,
}

impl Args for ContainerArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("id", "ContainerID"),
            Arg::new("platform", "Platform"),
        ]
    }
}

/// `Query.container`: the container `id`, or an empty one for `platform` (the engine's by
/// default; execs of another architecture run under emulation).
fn container() -> Field {
    Field::new("container", "Container!")
        .args::<ContainerArgs>()
        .resolve_sync(|ctx| {
            let engine_platform = services(ctx)?.config.platform.clone();
            if ctx.loaded::<Container>("id").is_ok() {
                // The loaded container itself, keeping its ID.
                return Ok(ctx.loaded_object("id")?.to_value());
            }
            let ContainerArgs { platform } = ctx.args_as()?;
            let platform = match platform {
                Some(p) => p
                    .parse::<Platform>()
                    .map_err(|e| FieldError::new(e.to_string()))?,
                None => engine_platform,
            };
            Ok(obj("Container", new_container(platform)?))
        })
}

/// `Query.directory`: the directory `id`, or an empty one.
fn directory() -> Field {
    // Its only argument is an object ID, read with `ctx.loaded`.
    Field::new("directory", "Directory!")
        .arg(Arg::new("id", "DirectoryID"))
        .resolve_sync(|ctx| {
            if ctx.loaded::<Directory>("id").is_ok() {
                return Ok(ctx.loaded_object("id")?.to_value());
            }
            Ok(obj(
                "Directory",
                Directory {
                    fs: Fs::scratch().map_err(graph_err)?,
                    path: "/".into(),
                },
            ))
        })
}

/// `Query.host`: the caller's host.
fn host() -> Field {
    Field::new("host", "Host!").resolve_sync(|_| Ok(obj("Host", Host)))
}

/// The arguments of `Query.cacheVolume`.
#[derive(Deserialize)]
struct CacheVolumeArgs {
    key: String,
}

impl Args for CacheVolumeArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("key", "String!")]
    }
}

/// `Query.cacheVolume`: the cache volume named `key`.
fn cache_volume() -> Field {
    Field::new("cacheVolume", "CacheVolume!")
        .args::<CacheVolumeArgs>()
        .resolve_sync(|ctx| {
            let CacheVolumeArgs { key } = ctx.args_as()?;
            if key.is_empty() {
                return Err(FieldError::new("cache volume key must not be empty"));
            }
            Ok(obj("CacheVolume", CacheVolume { key }))
        })
}

/// The arguments of `Query.setSecret` (the sensitive `plaintext` is read apart: replayed from
/// an ID, only its digest is known).
#[derive(Deserialize)]
struct SetSecretArgs {
    name: String,
}

impl Args for SetSecretArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("name", "String!"),
            Arg::new("plaintext", "String!").sensitive(),
        ]
    }
}

/// `Query.setSecret`: stores `plaintext` in the session; the secret (and its ID) carries only
/// its digest.
fn set_secret() -> Field {
    Field::new("setSecret", "Secret!")
        .args::<SetSecretArgs>()
        .resolve_sync(|ctx| {
            let secrets = &services(ctx)?.secrets;
            let caller = caller(ctx)?;
            let SetSecretArgs { name } = ctx.args_as()?;
            let digest = match ctx.redacted("plaintext") {
                // Replayed from an ID: the plaintext must still be in the session.
                Some(d) => {
                    if secrets.get(&caller.session_id, d).is_none() {
                        return Err(FieldError::new(format!(
                            "secret {name} is not set in this session"
                        )));
                    }
                    d.to_owned()
                }
                None => {
                    let plaintext: String = ctx.arg("plaintext")?;
                    secrets.put(&caller.session_id, Bytes::from(plaintext))
                }
            };
            Ok(obj("Secret", Secret { name, digest }))
        })
}

/// The arguments of `Host.directory`.
#[derive(Deserialize)]
struct HostDirectoryArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    exclude: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    include: Vec<String>,
    path: String,
}

impl Args for HostDirectoryArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("exclude", "[String!]").default(serde_json::json!([])),
            Arg::new("include", "[String!]").default(serde_json::json!([])),
            Arg::new("path", "String!"),
        ]
    }
}

/// What host reads record in their IDs: the client whose host they read.
pub(crate) fn host_scope(data: &dagr_gql::RequestData) -> Option<String> {
    data.get::<ClientRef>().map(|c| c.client_id.clone())
}

/// The client whose host a scoped call (`Host.directory`, `Host.file`, `Host.service`, ...)
/// reaches: the one that made the call (recorded in its ID), so that an ID passed to another
/// client of the session (a module function, a nested exec) still names the same files.
///
/// Only IDs that their client used itself are honoured for another client of its session: each
/// client's scoped calls are recorded ([`ScopedCalls`]), and a call naming a client of the
/// session that never made exactly that call is refused, so a container cannot forge an ID that
/// reads its caller's host (Dagger gets the same from its per-session cache of evaluated IDs). A
/// call naming a client the session does not know (an ID kept from another session) reads the
/// caller's own host, as unscoped IDs always did.
pub(crate) fn host_owner(ctx: &dagr_gql::ResolveCtx) -> Result<ClientRef, FieldError> {
    let caller = caller(ctx)?.client;
    let made = ctx.parent_chain().append(ctx.call().clone()).digest();
    let scoped = &services(ctx)?.scoped_calls;
    match &ctx.call().scope {
        Some(client_id) if *client_id != caller.client_id => {
            match scoped.check(&caller.session_id, client_id, &made) {
                Scoped::Made => Ok(ClientRef {
                    session_id: caller.session_id,
                    client_id: client_id.clone(),
                }),
                Scoped::Forged => Err(FieldError::new(format!(
                    "{}: this ID reaches the host of another client of the session ({client_id}), which never used it; \
                     host files, sockets and services are shared only through IDs their own client made",
                    ctx.call().field
                ))),
                Scoped::Foreign => Ok(caller),
            }
        }
        _ => {
            scoped.record(&caller.session_id, &caller.client_id, made);
            Ok(caller)
        }
    }
}

/// What [`ScopedCalls::check`] finds about a call naming another client.
enum Scoped {
    /// That client made it.
    Made,
    /// That client is of the session but never made it.
    Forged,
    /// The session does not know that client.
    Foreign,
}

/// The scoped calls each session's clients made (see [`host_owner`]): the clients, and the calls
/// by digest of their chains (which name the client); forgotten with the session.
#[derive(Default)]
pub struct ScopedCalls {
    sessions: parking_lot::Mutex<std::collections::HashMap<String, SessionScopes>>,
}

#[derive(Default)]
struct SessionScopes {
    clients: std::collections::HashSet<String>,
    calls: std::collections::HashSet<String>,
}

impl ScopedCalls {
    fn record(&self, session_id: &str, client_id: &str, digest: String) {
        let mut sessions = self.sessions.lock();
        let scopes = sessions.entry(session_id.to_owned()).or_default();
        scopes.clients.insert(client_id.to_owned());
        scopes.calls.insert(digest);
    }

    fn check(&self, session_id: &str, client_id: &str, digest: &str) -> Scoped {
        let sessions = self.sessions.lock();
        match sessions.get(session_id) {
            Some(s) if s.calls.contains(digest) => Scoped::Made,
            Some(s) if s.clients.contains(client_id) => Scoped::Forged,
            _ => Scoped::Foreign,
        }
    }

    pub fn release_session(&self, session_id: &str) {
        self.sessions.lock().remove(session_id);
    }
}

/// `Host.directory`: the caller's directory `path` (filtered by `include` and `exclude`), read
/// when it is solved.
fn host_directory() -> Field {
    Field::new("directory", "Directory!")
        .args::<HostDirectoryArgs>()
        .scoped(host_scope)
        .resolve_sync(|ctx| {
            let caller = host_owner(ctx)?;
            let HostDirectoryArgs {
                exclude,
                include,
                path,
            } = ctx.args_as()?;
            let fs = host_dir(&caller, &path, include, exclude)?;
            Ok(obj(
                "Directory",
                Directory {
                    fs,
                    path: "/".into(),
                },
            ))
        })
}

/// `Host.file`: the caller's file `path`, read when it is solved.
fn host_file() -> Field {
    Field::new("file", "File!")
        .args::<PathArgs>()
        .scoped(host_scope)
        .resolve_sync(|ctx| {
            let caller = host_owner(ctx)?;
            let PathArgs { path } = ctx.args_as()?;
            let p = std::path::Path::new(&path);
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| FieldError::new(format!("host path {path:?} names no file")))?
                .to_owned();
            let parent = p
                .parent()
                .and_then(|d| d.to_str())
                .filter(|d| !d.is_empty())
                .unwrap_or(".")
                .to_owned();
            // The file's directory, restricted to the file (the way Dagger reads host files).
            let fs = host_dir(&caller, &parent, vec![glob_escape(&name)], vec![])?;
            Ok(obj(
                "File",
                File {
                    fs,
                    path: format!("/{name}"),
                },
            ))
        })
}

/// The arguments of `Host.setSecretFile`.
#[derive(Deserialize)]
struct SetSecretFileArgs {
    name: String,
    path: String,
}

impl Args for SetSecretFileArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("name", "String!"), Arg::new("path", "String!")]
    }
}

/// `Host.setSecretFile`: stores the contents of the caller's file `path` as a secret.
fn host_set_secret_file() -> Field {
    Field::new("setSecretFile", "Secret!")
        .args::<SetSecretFileArgs>()
        .resolve(|ctx| async move {
            let services = services(&ctx)?;
            let caller = caller(&ctx)?;
            let SetSecretFileArgs { name, path } = ctx.args_as()?;
            let bytes = services
                .host
                .read_file(&caller, &path)
                .await
                .map_err(|e| FieldError::new(format!("reading secret file {path}: {e}")))?;
            let digest = services.secrets.put(&caller.session_id, Bytes::from(bytes));
            Ok(obj("Secret", Secret { name, digest }))
        })
}

/// `Secret.name`: the name it was set with.
fn secret_name() -> Field {
    Field::new("name", "String!")
        .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Secret>()?.name.clone())))
}

/// `Secret.plaintext`: the secret's value, while its session holds it.
fn secret_plaintext() -> Field {
    Field::new("plaintext", "String!").resolve_sync(|ctx| {
        let secrets = &services(ctx)?.secrets;
        let caller = caller(ctx)?;
        let s = ctx.parent::<Secret>()?;
        let bytes = secrets.get(&caller.session_id, &s.digest).ok_or_else(|| {
            FieldError::new(format!("secret {} is not set in this session", s.name))
        })?;
        Ok(Value::leaf(String::from_utf8_lossy(&bytes).into_owned()))
    })
}

/// A file name as a glob pattern matching only itself.
fn glob_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
