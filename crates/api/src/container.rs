//! `Container`: image config, mounts, file ops on the rootfs (or the mount a path falls under),
//! and `withExec` building exec vertices; `stdout`, `stderr` and `sync` solve them.

use dagr_gql::{Arg, Enum, Field, FieldError, Object, ResolveCtx, SchemaBuilder, Value};
use dagr_solver::{CacheSharing, ExecOp, MkDirOp, MountSource, Op, Vertex};
use dagr_worker::ResultMeta;

use crate::directory::{copy, mkfile, owner_arg, rm};
use crate::query::{format_platform, parse_platform};
use crate::state::{
    CacheVolume, Container, ContainerMount, Directory, EnvVariable, File, Fs, ImageConfig, Inputs,
    Label, MountKind, Secret, join,
};
use crate::{bool_arg, caller, graph_err, obj, services};

/// The registry host of an address (`registry.example.com/repo`, `docker.io`, `127.0.0.1:5000`).
fn registry_host(address: &str) -> Result<String, FieldError> {
    let first = address.split('/').next().unwrap_or_default();
    if first.contains('.') || first.contains(':') || first == "localhost" {
        return Ok(first.to_owned());
    }
    // A bare image name: Docker Hub.
    if first.is_empty() {
        return Err(FieldError::new(format!(
            "registry address {address:?} is empty"
        )));
    }
    Ok("docker.io".to_owned())
}

pub(crate) fn parent(ctx: &ResolveCtx) -> Result<Container, FieldError> {
    Ok(ctx.parent::<Container>()?.clone())
}

pub(crate) fn ok(c: Container) -> Result<Value, FieldError> {
    Ok(obj("Container", c))
}

/// An absolute container path (relative ones are against the workdir).
fn abs(c: &Container, path: &str) -> String {
    let wd = if c.config.workdir.is_empty() {
        "/"
    } else {
        c.config.workdir.as_str()
    };
    join(wd, path)
}

/// Where a container path lives: in the rootfs, or inside a mounted directory.
enum Location {
    Root(String),
    Mount { index: usize, fs: Fs, path: String },
}

fn locate(c: &Container, path: &str) -> Result<Location, FieldError> {
    let best = c
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            path == m.target || path.starts_with(&format!("{}/", m.target.trim_end_matches('/')))
        })
        .max_by_key(|(_, m)| m.target.len());
    match best {
        None => Ok(Location::Root(path.to_owned())),
        Some((index, m)) => match &m.kind {
            // A mounted file is its source file (as in Dagger); nothing lies below it.
            MountKind::Fs { file: true, .. } if path != m.target => Err(FieldError::new(format!(
                "{path}: {} is a mounted file, not a directory",
                m.target
            ))),
            MountKind::Fs { fs, path: base, .. } => {
                let rest = path[m.target.len()..].trim_start_matches('/');
                Ok(Location::Mount {
                    index,
                    fs: fs.clone(),
                    path: join(base, rest),
                })
            }
            _ => Err(FieldError::new(format!(
                "{path} is under the cache, tmpfs or secret mount at {}",
                m.target
            ))),
        },
    }
}

/// Applies a file op to whatever holds `path`.
fn with_fs_at(
    mut c: Container,
    path: &str,
    op: impl FnOnce(&Fs, &str) -> Result<Fs, FieldError>,
) -> Result<Container, FieldError> {
    match locate(&c, path)? {
        Location::Root(p) => {
            c.rootfs = op(&c.rootfs, &p)?;
            c.image_ref = None;
        }
        Location::Mount { index, fs, path } => {
            let new = op(&fs, &path)?;
            if let MountKind::Fs { fs, .. } = &mut c.mounts[index].kind {
                *fs = new;
            }
        }
    }
    Ok(c)
}

fn without_mount(c: &mut Container, target: &str) {
    c.mounts.retain(|m| m.target != target);
}

fn add_mount(c: &mut Container, target: String, kind: MountKind) {
    without_mount(c, &target);
    c.mounts.push(ContainerMount { target, kind });
}

/// Where [`chowned_copy`] puts the directory.
const CHOWNED: &str = "/chown";

/// A copy of `d` at [`CHOWNED`] owned by `owner`, the directory itself included: Dagger re-owns a
/// mounted directory the same way (a directory made with the owner, the contents copied into it).
fn chowned_copy(d: &Directory, owner: String) -> Result<Fs, FieldError> {
    let mut inputs = Inputs::default();
    let base = inputs.add(&Fs::scratch().map_err(graph_err)?);
    let op = Op::MkDir(MkDirOp {
        base,
        path: CHOWNED.to_owned(),
        mode: 0o755,
        make_parents: true,
        owner: Some(owner.clone()),
    });
    let made = Fs::main(Vertex::new(op, inputs.into_vec()).map_err(graph_err)?);
    copy(
        &made,
        CHOWNED,
        &d.fs,
        &d.path,
        vec![],
        vec![],
        None,
        Some(owner),
    )
}

fn owner_ids(owner: Option<String>) -> Result<(u32, u32), FieldError> {
    match owner_arg(owner)? {
        None => Ok((0, 0)),
        Some(o) => {
            let (u, g) = o.split_once(':').unwrap_or((&o, &o));
            let n = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| FieldError::new(format!("owner {o:?}")))
            };
            Ok((n(u)?, n(g)?))
        }
    }
}

fn sharing(ctx: &ResolveCtx) -> Result<CacheSharing, FieldError> {
    let mode: Option<String> = ctx.arg("sharing")?;
    match mode.as_deref() {
        None | Some("SHARED") => Ok(CacheSharing::Shared),
        Some("PRIVATE") => Ok(CacheSharing::Private),
        Some("LOCKED") => Ok(CacheSharing::Locked),
        Some(other) => Err(FieldError::new(format!("unknown sharing mode {other}"))),
    }
}

/// The arguments of `withExec`.
#[derive(Default)]
pub(crate) struct ExecArgs {
    pub(crate) args: Vec<String>,
    pub(crate) skip_entrypoint: Option<bool>,
    pub(crate) stdin: Option<String>,
    pub(crate) redirect_stdout: Option<String>,
    pub(crate) redirect_stderr: Option<String>,
    pub(crate) insecure: Option<bool>,
    /// The session whose engine the process may call back (`experimentalPrivilegedNesting`).
    pub(crate) nesting_session: Option<String>,
}

/// Builds the exec vertex of `withExec` and the container after it.
fn with_exec(c: Container, ctx: &ResolveCtx) -> Result<Container, FieldError> {
    let args = ExecArgs {
        args: ctx.arg("args")?,
        skip_entrypoint: ctx.arg("skipEntrypoint")?,
        stdin: ctx.arg("stdin")?,
        redirect_stdout: ctx.arg("redirectStdout")?,
        redirect_stderr: ctx.arg("redirectStderr")?,
        insecure: ctx.arg("insecureRootCapabilities")?,
        nesting_session: if bool_arg(ctx, "experimentalPrivilegedNesting")? {
            Some(caller(ctx)?.session_id)
        } else {
            None
        },
    };
    exec_container(c, args)
}

/// The container after running `args` (the entrypoint first unless skipped; the default args
/// when `args.args` is empty).
pub(crate) fn exec_container(c: Container, args: ExecArgs) -> Result<Container, FieldError> {
    let ExecArgs {
        args,
        skip_entrypoint,
        stdin,
        redirect_stdout,
        redirect_stderr,
        insecure,
        nesting_session,
    } = args;
    let mut argv = Vec::new();
    if !skip_entrypoint.unwrap_or(false) {
        argv.extend(c.config.entrypoint.iter().cloned());
    }
    if args.is_empty() {
        argv.extend(c.config.default_args.iter().cloned());
    } else {
        argv.extend(args);
    }
    if argv.is_empty() {
        return Err(FieldError::new(
            "no command has been set: no exec args, and the container has no entrypoint or default args",
        ));
    }
    let mut inputs = Inputs::default();
    let root = inputs.add(&c.rootfs);
    let mut mounts = vec![dagr_solver::Mount {
        dest: "/".into(),
        source: MountSource::Input {
            input: root,
            path: String::new(),
        },
        readonly: false,
    }];
    // Container mount index of each writable exec output (output k+1 <-> writable[k]).
    let mut writable = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        let (source, readonly) = match &m.kind {
            MountKind::Fs { fs, path, file } => {
                let input = inputs.add(fs);
                if !file {
                    writable.push(i);
                }
                (
                    MountSource::Input {
                        input,
                        path: path.clone(),
                    },
                    *file,
                )
            }
            MountKind::Cache { volume, sharing } => (
                MountSource::Cache {
                    id: volume.clone(),
                    sharing: *sharing,
                    base: None,
                },
                false,
            ),
            MountKind::Temp => (MountSource::Tmpfs { size: None }, false),
            MountKind::Secret {
                secret,
                mode,
                uid,
                gid,
            } => (
                MountSource::Secret {
                    secret_id: secret.digest.clone(),
                    uid: *uid,
                    gid: *gid,
                    mode: *mode,
                },
                true,
            ),
        };
        mounts.push(dagr_solver::Mount {
            dest: m.target.clone(),
            source,
            readonly,
        });
    }
    let op = ExecOp {
        args: argv,
        env: c.config.env.iter().cloned().collect(),
        workdir: if c.config.workdir.is_empty() {
            "/".into()
        } else {
            c.config.workdir.clone()
        },
        user: Some(c.config.user.clone()).filter(|u| !u.is_empty()),
        mounts,
        secret_env: c
            .secret_env
            .iter()
            .map(|(k, s)| (k.clone(), s.digest.clone()))
            .collect(),
        stdin: stdin.filter(|s| !s.is_empty()),
        redirect_stdout: redirect_stdout.filter(|s| !s.is_empty()),
        redirect_stderr: redirect_stderr.filter(|s| !s.is_empty()),
        hostname: None,
        privileged_nesting: nesting_session.is_some(),
        nesting_session,
        insecure_root_capabilities: insecure.unwrap_or(false),
    };
    let vertex = Vertex::new(Op::Exec(op), inputs.into_vec()).map_err(graph_err)?;
    let mut next = c;
    next.rootfs = Fs::main(vertex.clone());
    for (k, i) in writable.into_iter().enumerate() {
        if let MountKind::Fs { fs, .. } = &mut next.mounts[i].kind {
            *fs = Fs {
                vertex: vertex.clone(),
                output: u32::try_from(k + 1).unwrap_or(u32::MAX),
            };
        }
    }
    next.last_exec = Some(vertex);
    next.image_ref = None;
    Ok(next)
}

async fn exec_output(
    ctx: ResolveCtx,
    pick: fn(dagr_worker::ExecMeta) -> String,
) -> Result<Value, FieldError> {
    let s = services(&ctx)?;
    let caller = caller(&ctx)?;
    let c = ctx.parent_arc::<Container>()?;
    // Without an exec, Dagger v0.11 runs the default command (entrypoint and default args).
    let exec = match &c.last_exec {
        Some(exec) => exec.clone(),
        None => exec_container(c.as_ref().clone(), ExecArgs::default())?
            .last_exec
            .ok_or_else(|| FieldError::new("no command has been set"))?,
    };
    let result = s.solve(&caller, &exec).await?;
    let meta = ResultMeta::of(&result)
        .exec
        .ok_or_else(|| FieldError::new("the last exec recorded no output"))?;
    Ok(Value::leaf(s.scrub(&caller, &pick(meta))))
}

fn string_list(v: &[String]) -> Value {
    Value::leaf_list(v.iter().cloned())
}

pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let container = Object::new("Container")
        .with_id()
        .field(
            Field::new("from", "Container!")
                .arg(Arg::new("address", "String!"))
                .resolve(|ctx| {
                    async move {
                        let s = services(&ctx)?;
                        let caller = caller(&ctx)?;
                        let mut c = parent(&ctx)?;
                        let address: String = ctx.arg("address")?;
                        let resolved = s
                            .worker()
                            .resolve_image(&caller.session_id, &address, &c.platform)
                            .await
                            .map_err(|e| FieldError::new(e.to_string()))?;
                        let v = Vertex::new(
                            Op::Image {
                                reference: resolved.pinned.clone(),
                                platform: c.platform.clone(),
                            },
                            vec![],
                        )
                        .map_err(graph_err)?;
                        c.rootfs = Fs::main(v);
                        c.config = ImageConfig::from_oci(&resolved.config);
                        c.base_image = resolved.pinned.rsplit_once('@').map(|(_, d)| d.to_owned());
                        c.image_ref = Some(resolved.pinned);
                        c.last_exec = None;
                        ok(c)
                    }
                }),
        )
        .field(
            Field::new("withExec", "Container!")
                .arg(Arg::new("args", "[String!]!"))
                .arg(Arg::new("experimentalPrivilegedNesting", "Boolean").default(false))
                .arg(Arg::new("insecureRootCapabilities", "Boolean").default(false))
                .arg(Arg::new("redirectStderr", "String").default(""))
                .arg(Arg::new("redirectStdout", "String").default(""))
                .arg(Arg::new("skipEntrypoint", "Boolean").default(false))
                .arg(Arg::new("stdin", "String").default(""))
                .resolve_sync(|ctx| ok(with_exec(parent(ctx)?, ctx)?)),
        )
        .field(Field::new("stdout", "String!").resolve(|ctx| exec_output(ctx, |m| m.stdout)))
        .field(Field::new("stderr", "String!").resolve(|ctx| exec_output(ctx, |m| m.stderr)))
        .field(Field::new("sync", "ContainerID!").resolve(|ctx| {
            async move {
                let s = services(&ctx)?;
                let caller = caller(&ctx)?;
                let c = ctx.parent_arc::<Container>()?;
                s.solve(&caller, &c.rootfs.vertex).await?;
                for m in &c.mounts {
                    if let MountKind::Fs { fs, .. } = &m.kind {
                        s.solve(&caller, &fs.vertex).await?;
                    }
                }
                Ok(Value::leaf(ctx.parent_chain().id()))
            }
        }))
        .field(
            Field::new("withEnvVariable", "Container!")
                .arg(Arg::new("expand", "Boolean").default(false))
                .arg(Arg::new("name", "String!"))
                .arg(Arg::new("value", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let name: String = ctx.arg("name")?;
                    let value: String = ctx.arg("value")?;
                    let value = if bool_arg(ctx, "expand")? {
                        c.config.expand(&value)
                    } else {
                        value
                    };
                    c.secret_env.remove(&name);
                    c.config.set_env(&name, value);
                    ok(c)
                }),
        )
        .field(
            Field::new("withoutEnvVariable", "Container!")
                .arg(Arg::new("name", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let name: String = ctx.arg("name")?;
                    c.config.env.retain(|(k, _)| k != &name);
                    ok(c)
                }),
        )
        .field(
            Field::new("envVariable", "String")
                .arg(Arg::new("name", "String!"))
                .resolve_sync(|ctx| {
                    let c = ctx.parent::<Container>()?;
                    let name: String = ctx.arg("name")?;
                    Ok(c.config.env_var(&name).map_or(Value::Null, |v| Value::leaf(v.to_owned())))
                }),
        )
        .field(Field::new("envVariables", "[EnvVariable!]!").resolve_sync(|ctx| {
            let c = ctx.parent::<Container>()?;
            Ok(Value::List(
                c.config
                    .env
                    .iter()
                    .map(|(name, value)| {
                        obj(
                            "EnvVariable",
                            EnvVariable {
                                name: name.clone(),
                                value: value.clone(),
                            },
                        )
                    })
                    .collect(),
            ))
        }))
        .field(
            Field::new("withWorkdir", "Container!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    c.config.workdir = abs(&c, &path);
                    ok(c)
                }),
        )
        .field(Field::new("withoutWorkdir", "Container!").resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            c.config.workdir.clear();
            ok(c)
        }))
        .field(Field::new("workdir", "String!").resolve_sync(|ctx| {
            Ok(Value::leaf(ctx.parent::<Container>()?.config.workdir.clone()))
        }))
        .field(
            Field::new("withUser", "Container!")
                .arg(Arg::new("name", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    c.config.user = ctx.arg("name")?;
                    ok(c)
                }),
        )
        .field(Field::new("withoutUser", "Container!").resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            c.config.user.clear();
            ok(c)
        }))
        .field(Field::new("user", "String!").resolve_sync(|ctx| {
            Ok(Value::leaf(ctx.parent::<Container>()?.config.user.clone()))
        }))
        .field(
            Field::new("withEntrypoint", "Container!")
                .arg(Arg::new("args", "[String!]!"))
                .arg(Arg::new("keepDefaultArgs", "Boolean").default(false))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    c.config.entrypoint = ctx.arg("args")?;
                    if !bool_arg(ctx, "keepDefaultArgs")? {
                        c.config.default_args.clear();
                    }
                    ok(c)
                }),
        )
        .field(
            Field::new("withoutEntrypoint", "Container!")
                .arg(Arg::new("keepDefaultArgs", "Boolean").default(false))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    c.config.entrypoint.clear();
                    if !bool_arg(ctx, "keepDefaultArgs")? {
                        c.config.default_args.clear();
                    }
                    ok(c)
                }),
        )
        .field(Field::new("entrypoint", "[String!]!").resolve_sync(|ctx| {
            Ok(string_list(&ctx.parent::<Container>()?.config.entrypoint))
        }))
        .field(
            Field::new("withDefaultArgs", "Container!")
                .arg(Arg::new("args", "[String!]!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    c.config.default_args = ctx.arg("args")?;
                    ok(c)
                }),
        )
        .field(Field::new("withoutDefaultArgs", "Container!").resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            c.config.default_args.clear();
            ok(c)
        }))
        .field(Field::new("defaultArgs", "[String!]!").resolve_sync(|ctx| {
            Ok(string_list(&ctx.parent::<Container>()?.config.default_args))
        }))
        .field(
            Field::new("withLabel", "Container!")
                .arg(Arg::new("name", "String!"))
                .arg(Arg::new("value", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let name: String = ctx.arg("name")?;
                    c.config.labels.insert(name, ctx.arg("value")?);
                    ok(c)
                }),
        )
        .field(
            Field::new("withoutLabel", "Container!")
                .arg(Arg::new("name", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let name: String = ctx.arg("name")?;
                    c.config.labels.remove(&name);
                    ok(c)
                }),
        )
        .field(
            Field::new("label", "String")
                .arg(Arg::new("name", "String!"))
                .resolve_sync(|ctx| {
                    let c = ctx.parent::<Container>()?;
                    let name: String = ctx.arg("name")?;
                    Ok(c.config.labels.get(&name).map_or(Value::Null, |v| Value::leaf(v.clone())))
                }),
        )
        .field(Field::new("labels", "[Label!]!").resolve_sync(|ctx| {
            let c = ctx.parent::<Container>()?;
            Ok(Value::List(
                c.config
                    .labels
                    .iter()
                    .map(|(name, value)| {
                        obj(
                            "Label",
                            Label {
                                name: name.clone(),
                                value: value.clone(),
                            },
                        )
                    })
                    .collect(),
            ))
        }))
        .field(
            Field::new("withMountedDirectory", "Container!")
                .arg(Arg::new("owner", "String").default(""))
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("source", "DirectoryID!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let d = ctx.loaded::<Directory>("source")?;
                    let (fs, sub) = match owner_arg(ctx.arg("owner")?)? {
                        None => (d.fs.clone(), d.path.clone()),
                        Some(o) => (chowned_copy(&d, o)?, CHOWNED.to_owned()),
                    };
                    let target = abs(&c, &path);
                    add_mount(&mut c, target, MountKind::Fs { fs, path: sub, file: false });
                    ok(c)
                }),
        )
        .field(
            Field::new("withMountedFile", "Container!")
                .arg(Arg::new("owner", "String").default(""))
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("source", "FileID!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let f = ctx.loaded::<File>("source")?;
                    let (fs, sub) = match owner_arg(ctx.arg("owner")?)? {
                        None => (f.fs.clone(), f.path.clone()),
                        Some(o) => (
                            copy(&Fs::scratch().map_err(graph_err)?, "/file", &f.fs, &f.path, vec![], vec![], None, Some(o))?,
                            "/file".to_owned(),
                        ),
                    };
                    let target = abs(&c, &path);
                    add_mount(&mut c, target, MountKind::Fs { fs, path: sub, file: true });
                    ok(c)
                }),
        )
        .field(
            Field::new("withMountedCache", "Container!")
                .arg(Arg::new("cache", "CacheVolumeID!"))
                .arg(Arg::new("owner", "String").default(""))
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("sharing", "CacheSharingMode").default("SHARED"))
                .arg(Arg::new("source", "DirectoryID"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let cache = ctx.loaded::<CacheVolume>("cache")?;
                    if ctx.loaded::<Directory>("source").is_ok() {
                        return Err(FieldError::new("withMountedCache: seeding a cache volume from a source directory is not supported"));
                    }
                    if owner_arg(ctx.arg("owner")?)?.is_some() {
                        return Err(FieldError::new("withMountedCache: owner is not supported"));
                    }
                    let target = abs(&c, &path);
                    add_mount(
                        &mut c,
                        target,
                        MountKind::Cache {
                            volume: format!("cache:{}", cache.key),
                            sharing: sharing(ctx)?,
                        },
                    );
                    ok(c)
                }),
        )
        .field(
            Field::new("withMountedTemp", "Container!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let target = abs(&c, &path);
                    add_mount(&mut c, target, MountKind::Temp);
                    ok(c)
                }),
        )
        .field(
            Field::new("withMountedSecret", "Container!")
                .arg(Arg::new("mode", "Int").default(256))
                .arg(Arg::new("owner", "String").default(""))
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("source", "SecretID!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let secret = ctx.loaded::<Secret>("source")?;
                    let mode: Option<i64> = ctx.arg("mode")?;
                    let (uid, gid) = owner_ids(ctx.arg("owner")?)?;
                    let target = abs(&c, &path);
                    add_mount(
                        &mut c,
                        target,
                        MountKind::Secret {
                            secret: (*secret).clone(),
                            mode: u32::try_from(mode.unwrap_or(0o400)).unwrap_or(0o400) & 0o7777,
                            uid,
                            gid,
                        },
                    );
                    ok(c)
                }),
        )
        .field(
            Field::new("withoutMount", "Container!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let target = abs(&c, &path);
                    without_mount(&mut c, &target);
                    ok(c)
                }),
        )
        .field(Field::new("mounts", "[String!]!").resolve_sync(|ctx| {
            let c = ctx.parent::<Container>()?;
            Ok(Value::leaf_list(c.mounts.iter().map(|m| m.target.clone())))
        }))
        .field(
            Field::new("withSecretVariable", "Container!")
                .arg(Arg::new("name", "String!"))
                .arg(Arg::new("secret", "SecretID!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let name: String = ctx.arg("name")?;
                    let secret = ctx.loaded::<Secret>("secret")?;
                    c.config.env.retain(|(k, _)| k != &name);
                    c.secret_env.insert(name, (*secret).clone());
                    ok(c)
                }),
        )
        .field(
            Field::new("withoutSecretVariable", "Container!")
                .arg(Arg::new("name", "String!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let name: String = ctx.arg("name")?;
                    c.secret_env.remove(&name);
                    ok(c)
                }),
        )
        .field(
            Field::new("withNewFile", "Container!")
                .arg(Arg::new("contents", "String").default(""))
                .arg(Arg::new("owner", "String").default(""))
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("permissions", "Int").default(420))
                .resolve_sync(|ctx| {
                    let c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let contents: Option<String> = ctx.arg("contents")?;
                    let mode: Option<i64> = ctx.arg("permissions")?;
                    let owner = owner_arg(ctx.arg("owner")?)?;
                    let target = abs(&c, &path);
                    let mode = u32::try_from(mode.unwrap_or(0o644)).unwrap_or(0o644) & 0o7777;
                    ok(with_fs_at(c, &target, |fs, p| {
                        mkfile(fs, p, contents.unwrap_or_default().into_bytes(), mode, owner)
                    })?)
                }),
        )
        .field(
            Field::new("withFile", "Container!")
                .arg(Arg::new("owner", "String").default(""))
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("permissions", "Int"))
                .arg(Arg::new("source", "FileID!"))
                .resolve_sync(|ctx| {
                    let c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let f = ctx.loaded::<File>("source")?;
                    let mode = ctx
                        .arg::<Option<i64>>("permissions")?
                        .map(|m| u32::try_from(m).unwrap_or(0o644) & 0o7777);
                    let owner = owner_arg(ctx.arg("owner")?)?;
                    let target = abs(&c, &path);
                    ok(with_fs_at(c, &target, |fs, p| copy(fs, p, &f.fs, &f.path, vec![], vec![], mode, owner))?)
                }),
        )
        .field(
            Field::new("withFiles", "Container!")
                .arg(Arg::new("owner", "String").default(""))
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("permissions", "Int"))
                .arg(Arg::new("sources", "[FileID!]!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let mode = ctx
                        .arg::<Option<i64>>("permissions")?
                        .map(|m| u32::try_from(m).unwrap_or(0o644) & 0o7777);
                    let owner = owner_arg(ctx.arg("owner")?)?;
                    let dir = abs(&c, &path);
                    for f in ctx.loaded_list::<File>("sources")? {
                        let name = f.path.rsplit('/').next().unwrap_or_default().to_owned();
                        let target = join(&dir, &name);
                        let owner = owner.clone();
                        c = with_fs_at(c, &target, |fs, p| copy(fs, p, &f.fs, &f.path, vec![], vec![], mode, owner))?;
                    }
                    ok(c)
                }),
        )
        .field(
            Field::new("withDirectory", "Container!")
                .arg(Arg::new("directory", "DirectoryID!"))
                .arg(Arg::new("exclude", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("include", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("owner", "String").default(""))
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let d = ctx.loaded::<Directory>("directory")?;
                    let include: Option<Vec<String>> = ctx.arg("include")?;
                    let exclude: Option<Vec<String>> = ctx.arg("exclude")?;
                    let owner = owner_arg(ctx.arg("owner")?)?;
                    let target = abs(&c, &path);
                    ok(with_fs_at(c, &target, |fs, p| {
                        copy(
                            fs,
                            p,
                            &d.fs,
                            &d.path,
                            include.unwrap_or_default(),
                            exclude.unwrap_or_default(),
                            None,
                            owner,
                        )
                    })?)
                }),
        )
        .field(
            Field::new("withoutFile", "Container!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let target = abs(&c, &path);
                    ok(with_fs_at(c, &target, rm)?)
                }),
        )
        .field(
            Field::new("withoutDirectory", "Container!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let c = parent(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let target = abs(&c, &path);
                    ok(with_fs_at(c, &target, rm)?)
                }),
        )
        .field(
            Field::new("file", "File!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let c = ctx.parent::<Container>()?;
                    let path: String = ctx.arg("path")?;
                    let (fs, path) = match locate(c, &abs(c, &path))? {
                        Location::Root(p) => (c.rootfs.clone(), p),
                        Location::Mount { fs, path, .. } => (fs, path),
                    };
                    Ok(obj("File", File { fs, path }))
                }),
        )
        .field(
            Field::new("directory", "Directory!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let c = ctx.parent::<Container>()?;
                    let path: String = ctx.arg("path")?;
                    let (fs, path) = match locate(c, &abs(c, &path))? {
                        Location::Root(p) => (c.rootfs.clone(), p),
                        Location::Mount { fs, path, .. } => (fs, path),
                    };
                    Ok(obj("Directory", Directory { fs, path }))
                }),
        )
        .field(Field::new("rootfs", "Directory!").resolve_sync(|ctx| {
            let c = ctx.parent::<Container>()?;
            Ok(obj(
                "Directory",
                Directory {
                    fs: c.rootfs.clone(),
                    path: "/".into(),
                },
            ))
        }))
        .field(
            Field::new("withRootfs", "Container!")
                .arg(Arg::new("directory", "DirectoryID!"))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let d = ctx.loaded::<Directory>("directory")?;
                    c.rootfs = if d.path == "/" {
                        d.fs.clone()
                    } else {
                        copy(&Fs::scratch().map_err(graph_err)?, "/", &d.fs, &d.path, vec![], vec![], None, None)?
                    };
                    c.image_ref = None;
                    c.base_image = None;
                    ok(c)
                }),
        )
        .field(
            Field::new("withRegistryAuth", "Container!")
                .arg(Arg::new("address", "String!"))
                .arg(Arg::new("secret", "SecretID!"))
                .arg(Arg::new("username", "String!"))
                .resolve_sync(|ctx| {
                    let s = services(ctx)?;
                    let caller = caller(ctx)?;
                    let address: String = ctx.arg("address")?;
                    let username: String = ctx.arg("username")?;
                    let secret = ctx.loaded::<Secret>("secret")?;
                    // Credentials belong to the session (pulls and publishes of the registry
                    // host), as in Dagger; the container itself is unchanged.
                    s.registry_auth
                        .set(&caller.session_id, &registry_host(&address)?, &username, &secret.digest);
                    ok(parent(ctx)?)
                }),
        )
        .field(
            Field::new("withoutRegistryAuth", "Container!")
                .arg(Arg::new("address", "String!"))
                .resolve_sync(|ctx| {
                    let s = services(ctx)?;
                    let caller = caller(ctx)?;
                    let address: String = ctx.arg("address")?;
                    s.registry_auth
                        .remove(&caller.session_id, &registry_host(&address)?);
                    ok(parent(ctx)?)
                }),
        )
        .field(Field::new("imageRef", "String!").resolve_sync(|ctx| {
            let c = ctx.parent::<Container>()?;
            c.image_ref.clone().map(Value::leaf).ok_or_else(|| {
                FieldError::new("imageRef is only known right after from(): this container was changed or built from scratch")
            })
        }))
        .field(Field::new("platform", "Platform!").resolve_sync(|ctx| {
            Ok(Value::leaf(format_platform(&ctx.parent::<Container>()?.platform)))
        }));
    let _ = parse_platform;
    b.enumeration(Enum::new("ImageLayerCompression").values([
        "Gzip",
        "Zstd",
        "EStarGZ",
        "Uncompressed",
    ]))
    .enumeration(Enum::new("ImageMediaTypes").values(["OCIMediaTypes", "DockerMediaTypes"]))
    .object(crate::image::fields(crate::terminal::fields(container)))
}
