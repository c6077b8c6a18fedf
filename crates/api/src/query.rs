//! `Query` and the small objects: `Host`, `Secret`, `CacheVolume`, `EnvVariable`, `Label`.

use bytes::Bytes;
use dagr_gql::{Arg, Field, FieldError, Object, Scalar, SchemaBuilder, Value};
use dagr_solver::{HostScope, Op, Platform, Vertex};

use crate::state::{
    CacheVolume, Container, Directory, EnvVariable, File, Fs, Host, ImageConfig, Label, Secret,
};
use crate::{caller, graph_err, obj, services};

pub(crate) fn parse_platform(s: &str) -> Result<Platform, FieldError> {
    let mut parts = s.split('/');
    let (Some(os), Some(arch)) = (parts.next(), parts.next()) else {
        return Err(FieldError::new(format!(
            "platform {s:?} is not os/arch[/variant]"
        )));
    };
    Ok(Platform {
        os: os.to_owned(),
        architecture: arch.to_owned(),
        variant: parts.next().map(str::to_owned),
    })
}

pub(crate) fn format_platform(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

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
    })
}

/// A host directory read through the caller's attachables.
pub(crate) fn host_dir(
    caller: &crate::Caller,
    path: &str,
    include: Vec<String>,
    exclude: Vec<String>,
) -> Result<Fs, FieldError> {
    let v = Vertex::new(
        Op::HostDir {
            scope: HostScope {
                session_id: caller.session_id.clone(),
                client_id: caller.client_id.clone(),
            },
            path: path.to_owned(),
            include,
            exclude,
        },
        vec![],
    )
    .map_err(graph_err)?;
    Ok(Fs::main(v))
}

pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let query = Object::new("Query")
        .field(
            Field::new("version", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(services(ctx)?.config.engine_version.clone()))),
        )
        .field(
            Field::new("checkVersionCompatibility", "Boolean!")
                .arg(Arg::new("version", "String!"))
                .resolve_sync(|ctx| {
                    let min = &services(ctx)?.config.min_client_version;
                    let v: String = ctx.arg("version")?;
                    let trimmed = v.trim().trim_start_matches('v');
                    match semver::Version::parse(trimmed) {
                        Ok(parsed) if &parsed < min => Err(FieldError::new(format!(
                            "incompatible client version {v}: this engine needs at least {min}"
                        ))),
                        _ => Ok(Value::leaf(true)),
                    }
                }),
        )
        .field(
            Field::new("defaultPlatform", "Platform!").resolve_sync(|ctx| {
                Ok(Value::leaf(format_platform(
                    &services(ctx)?.config.platform,
                )))
            }),
        )
        .field(
            Field::new("container", "Container!")
                .arg(Arg::new("id", "ContainerID"))
                .arg(Arg::new("platform", "Platform"))
                .resolve_sync(|ctx| {
                    let dp2 = services(ctx)?.config.platform.clone();
                    if ctx.loaded::<Container>("id").is_ok() {
                        // The loaded container itself, keeping its ID.
                        return Ok(ctx.loaded_object("id")?.to_value());
                    }
                    let platform = match ctx.arg::<Option<String>>("platform")? {
                        Some(p) => parse_platform(&p)?,
                        None => dp2.clone(),
                    };
                    if platform.os != dp2.os || platform.architecture != dp2.architecture {
                        return Err(FieldError::new(format!(
                            "platform {} cannot run on this engine ({})",
                            format_platform(&platform),
                            format_platform(&dp2)
                        )));
                    }
                    Ok(obj("Container", new_container(platform)?))
                }),
        )
        .field(
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
                }),
        )
        .field(Field::new("host", "Host!").resolve_sync(|_| Ok(obj("Host", Host))))
        .field(
            Field::new("cacheVolume", "CacheVolume!")
                .arg(Arg::new("key", "String!"))
                .resolve_sync(|ctx| {
                    let key: String = ctx.arg("key")?;
                    if key.is_empty() {
                        return Err(FieldError::new("cache volume key must not be empty"));
                    }
                    Ok(obj("CacheVolume", CacheVolume { key }))
                }),
        )
        .field(
            Field::new("setSecret", "Secret!")
                .arg(Arg::new("name", "String!"))
                .arg(Arg::new("plaintext", "String!").sensitive())
                .resolve_sync(|ctx| {
                    let secrets = &services(ctx)?.secrets;
                    let caller = caller(ctx)?;
                    let name: String = ctx.arg("name")?;
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
                }),
        );

    let host = Object::new("Host")
        .with_id()
        .field(
            Field::new("directory", "Directory!")
                .arg(Arg::new("exclude", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("include", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let caller = caller(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let include: Option<Vec<String>> = ctx.arg("include")?;
                    let exclude: Option<Vec<String>> = ctx.arg("exclude")?;
                    let fs = host_dir(
                        &caller,
                        &path,
                        include.unwrap_or_default(),
                        exclude.unwrap_or_default(),
                    )?;
                    Ok(obj(
                        "Directory",
                        Directory {
                            fs,
                            path: "/".into(),
                        },
                    ))
                }),
        )
        .field(
            Field::new("file", "File!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let caller = caller(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let p = std::path::Path::new(&path);
                    let name = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .ok_or_else(|| {
                            FieldError::new(format!("host path {path:?} names no file"))
                        })?
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
                }),
        )
        .field(
            Field::new("setSecretFile", "Secret!")
                .arg(Arg::new("name", "String!"))
                .arg(Arg::new("path", "String!"))
                .resolve(|ctx| async move {
                    let services = services(&ctx)?;
                    let caller = caller(&ctx)?;
                    let name: String = ctx.arg("name")?;
                    let path: String = ctx.arg("path")?;
                    let bytes =
                        services.host.read_file(&caller, &path).await.map_err(|e| {
                            FieldError::new(format!("reading secret file {path}: {e}"))
                        })?;
                    let digest = services.secrets.put(&caller.session_id, Bytes::from(bytes));
                    Ok(obj("Secret", Secret { name, digest }))
                }),
        );

    let secret = Object::new("Secret")
        .with_id()
        .field(
            Field::new("name", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Secret>()?.name.clone()))),
        )
        .field(Field::new("plaintext", "String!").resolve_sync(|ctx| {
            let secrets2 = &services(ctx)?.secrets;
            let caller = caller(ctx)?;
            let s = ctx.parent::<Secret>()?;
            let bytes = secrets2.get(&caller.session_id, &s.digest).ok_or_else(|| {
                FieldError::new(format!("secret {} is not set in this session", s.name))
            })?;
            Ok(Value::leaf(String::from_utf8_lossy(&bytes).into_owned()))
        }));

    let cache = Object::new("CacheVolume").with_id();
    // CacheVolume has no fields besides `id`; gql needs at least one: it adds `id` itself.

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
        .object(cache)
        .object(env)
        .object(label)
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
