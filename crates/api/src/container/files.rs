//! Files in the container: file ops at a path (on the rootfs, or on the mounted directory the
//! path falls under), the `file` and `directory` at a path, and the `rootfs`.

use dagr_gql::{Arg, Args, Field, FieldError};
use serde::Deserialize;

use super::{abs, ok, parent};
use crate::args::{PathArgs, null_as_default};
use crate::directory::{copy, mkfile, rm};
use crate::ownership::{NEW_FILE_MODE, Owner, mode_arg, owner_arg};
use crate::state::{Container, Directory, File, Fs, MountKind, join};
use crate::{graph_err, obj};

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

/// The filesystem and path inside it that hold the container path `path`.
fn fs_at(c: &Container, path: &str) -> Result<(Fs, String), FieldError> {
    Ok(match locate(c, &abs(c, path))? {
        Location::Root(p) => (c.rootfs.clone(), p),
        Location::Mount { fs, path, .. } => (fs, path),
    })
}

/// Applies a file op to whatever holds the container path `path`.
fn with_fs_at(
    mut c: Container,
    path: &str,
    op: impl FnOnce(&Fs, &str) -> Result<Fs, FieldError>,
) -> Result<Container, FieldError> {
    let target = abs(&c, path);
    match locate(&c, &target)? {
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

/// The arguments of `withNewFile`.
#[derive(Deserialize)]
struct WithNewFileArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    contents: String,
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
    #[serde(default, deserialize_with = "mode_arg")]
    permissions: Option<u32>,
}

impl Args for WithNewFileArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("contents", "String").default(""),
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
            Arg::new("permissions", "Int").default(NEW_FILE_MODE),
        ]
    }
}

/// `withNewFile`: writes `contents` at `path`.
pub(super) fn with_new_file() -> Field {
    Field::new("withNewFile", "Container!")
        .args::<WithNewFileArgs>()
        .resolve_sync(|ctx| {
            let WithNewFileArgs {
                contents,
                owner,
                path,
                permissions,
            } = ctx.args_as()?;
            let mode = permissions.unwrap_or(NEW_FILE_MODE);
            ok(with_fs_at(parent(ctx)?, &path, |fs, p| {
                mkfile(fs, p, contents.into_bytes(), mode, owner)
            })?)
        })
}

/// The arguments of `withFile` (the `source` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct WithFileArgs {
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
    #[serde(default, deserialize_with = "mode_arg")]
    permissions: Option<u32>,
}

impl Args for WithFileArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
            Arg::new("permissions", "Int"),
            Arg::new("source", "FileID!"),
        ]
    }
}

/// `withFile`: copies a file to `path` (its own mode unless `permissions` are given).
pub(super) fn with_file() -> Field {
    Field::new("withFile", "Container!")
        .args::<WithFileArgs>()
        .resolve_sync(|ctx| {
            let WithFileArgs {
                owner,
                path,
                permissions,
            } = ctx.args_as()?;
            let f = ctx.loaded::<File>("source")?;
            ok(with_fs_at(parent(ctx)?, &path, |fs, p| {
                copy(fs, p, &f.fs, &f.path, vec![], vec![], permissions, owner)
            })?)
        })
}

/// The arguments of `withFiles` (the `sources` are read with `ctx.loaded_list`).
#[derive(Deserialize)]
struct WithFilesArgs {
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
    #[serde(default, deserialize_with = "mode_arg")]
    permissions: Option<u32>,
}

impl Args for WithFilesArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
            Arg::new("permissions", "Int"),
            Arg::new("sources", "[FileID!]!"),
        ]
    }
}

/// `withFiles`: copies files into the directory `path`, each under its own name.
pub(super) fn with_files() -> Field {
    Field::new("withFiles", "Container!")
        .args::<WithFilesArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithFilesArgs {
                owner,
                path,
                permissions,
            } = ctx.args_as()?;
            let dir = abs(&c, &path);
            for f in ctx.loaded_list::<File>("sources")? {
                let name = f.path.rsplit('/').next().unwrap_or_default();
                let target = join(&dir, name);
                c = with_fs_at(c, &target, |fs, p| {
                    copy(fs, p, &f.fs, &f.path, vec![], vec![], permissions, owner)
                })?;
            }
            ok(c)
        })
}

/// The arguments of `withDirectory` (the `directory` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct WithDirectoryArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    exclude: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    include: Vec<String>,
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
}

impl Args for WithDirectoryArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("directory", "DirectoryID!"),
            Arg::new("exclude", "[String!]").default(serde_json::json!([])),
            Arg::new("include", "[String!]").default(serde_json::json!([])),
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
        ]
    }
}

/// `withDirectory`: copies a directory's contents (filtered by `include` and `exclude`) into
/// `path`.
pub(super) fn with_directory() -> Field {
    Field::new("withDirectory", "Container!")
        .args::<WithDirectoryArgs>()
        .resolve_sync(|ctx| {
            let WithDirectoryArgs {
                exclude,
                include,
                owner,
                path,
            } = ctx.args_as()?;
            let d = ctx.loaded::<Directory>("directory")?;
            ok(with_fs_at(parent(ctx)?, &path, |fs, p| {
                copy(fs, p, &d.fs, &d.path, include, exclude, None, owner)
            })?)
        })
}

/// `withoutFile`: removes whatever is at `path`.
pub(super) fn without_file() -> Field {
    Field::new("withoutFile", "Container!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let PathArgs { path } = ctx.args_as()?;
            ok(with_fs_at(parent(ctx)?, &path, rm)?)
        })
}

/// `withoutDirectory`: removes whatever is at `path`.
pub(super) fn without_directory() -> Field {
    Field::new("withoutDirectory", "Container!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let PathArgs { path } = ctx.args_as()?;
            ok(with_fs_at(parent(ctx)?, &path, rm)?)
        })
}

/// `file`: the file at `path`.
pub(super) fn file() -> Field {
    Field::new("file", "File!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let PathArgs { path } = ctx.args_as()?;
            let (fs, path) = fs_at(ctx.parent::<Container>()?, &path)?;
            Ok(obj("File", File { fs, path }))
        })
}

/// `directory`: the directory at `path`.
pub(super) fn directory() -> Field {
    Field::new("directory", "Directory!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let PathArgs { path } = ctx.args_as()?;
            let (fs, path) = fs_at(ctx.parent::<Container>()?, &path)?;
            Ok(obj("Directory", Directory { fs, path }))
        })
}

/// `rootfs`: the root filesystem (without the mounts).
pub(super) fn rootfs() -> Field {
    Field::new("rootfs", "Directory!").resolve_sync(|ctx| {
        let c = ctx.parent::<Container>()?;
        Ok(obj(
            "Directory",
            Directory {
                fs: c.rootfs.clone(),
                path: "/".into(),
            },
        ))
    })
}

/// `withRootfs`: a directory as the root filesystem (the container is no longer its image).
pub(super) fn with_rootfs() -> Field {
    // Its only argument is an object ID, read with `ctx.loaded`.
    Field::new("withRootfs", "Container!")
        .arg(Arg::new("directory", "DirectoryID!"))
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let d = ctx.loaded::<Directory>("directory")?;
            c.rootfs = if d.path == "/" {
                d.fs.clone()
            } else {
                copy(
                    &Fs::scratch().map_err(graph_err)?,
                    "/",
                    &d.fs,
                    &d.path,
                    vec![],
                    vec![],
                    None,
                    None,
                )?
            };
            c.image_ref = None;
            c.base_image = None;
            ok(c)
        })
}
