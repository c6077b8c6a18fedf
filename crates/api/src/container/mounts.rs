//! What is mounted into the container's execs: directories and files (re-owned copies when an
//! `owner` is given), cache volumes, tmpfs and secrets.

use dagr_gql::{Arg, Args, Enum, Field, FieldError, SchemaBuilder, Value};
use dagr_solver::{CacheSharing, MkDirOp, Op, Vertex};
use serde::Deserialize;

use super::{abs, ok, parent};
use crate::args::{PathArgs, null_as_default};
use crate::directory::copy;
use crate::graph_err;
use crate::ownership::{Owner, mode_arg, owner_arg};
use crate::state::{
    CacheVolume, Container, ContainerMount, Directory, File, Fs, Inputs, MountKind, Secret,
};

/// The mode of a mounted secret file when `withMountedSecret` is given none.
const SECRET_MODE: u32 = 0o400;

/// Replaces whatever is mounted at `target`.
fn add_mount(c: &mut Container, target: String, kind: MountKind) {
    without_mount_at(c, &target);
    c.mounts.push(ContainerMount { target, kind });
}

fn without_mount_at(c: &mut Container, target: &str) {
    c.mounts.retain(|m| m.target != target);
}

/// Where [`chowned_copy`] puts the directory.
const CHOWNED: &str = "/chown";

/// A copy of `d` at [`CHOWNED`] owned by `owner`, the directory itself included: Dagger re-owns a
/// mounted directory the same way (a directory made with the owner, the contents copied into it).
fn chowned_copy(d: &Directory, owner: Owner) -> Result<Fs, FieldError> {
    let mut inputs = Inputs::default();
    let base = inputs.add(&Fs::scratch().map_err(graph_err)?);
    let op = Op::MkDir(MkDirOp {
        base,
        path: CHOWNED.to_owned(),
        mode: 0o755,
        make_parents: true,
        owner: Some(owner),
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

/// The arguments of `withMountedDirectory` (the `source` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct WithMountedDirectoryArgs {
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
}

impl Args for WithMountedDirectoryArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
            Arg::new("source", "DirectoryID!"),
        ]
    }
}

/// `withMountedDirectory`: mounts a directory (writable: execs change the mounted copy, which
/// `directory` at that path then reads); with an `owner`, a copy owned by them.
pub(super) fn with_mounted_directory() -> Field {
    Field::new("withMountedDirectory", "Container!")
        .args::<WithMountedDirectoryArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithMountedDirectoryArgs { owner, path } = ctx.args_as()?;
            let d = ctx.loaded::<Directory>("source")?;
            let (fs, sub) = match owner {
                None => (d.fs.clone(), d.path.clone()),
                Some(owner) => (chowned_copy(&d, owner)?, CHOWNED.to_owned()),
            };
            let target = abs(&c, &path);
            add_mount(
                &mut c,
                target,
                MountKind::Fs {
                    fs,
                    path: sub,
                    file: false,
                },
            );
            ok(c)
        })
}

/// The arguments of `withMountedFile` (the `source` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct WithMountedFileArgs {
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
}

impl Args for WithMountedFileArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
            Arg::new("source", "FileID!"),
        ]
    }
}

/// `withMountedFile`: mounts a file, read-only; with an `owner`, a copy owned by them.
pub(super) fn with_mounted_file() -> Field {
    Field::new("withMountedFile", "Container!")
        .args::<WithMountedFileArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithMountedFileArgs { owner, path } = ctx.args_as()?;
            let f = ctx.loaded::<File>("source")?;
            let (fs, sub) = match owner {
                None => (f.fs.clone(), f.path.clone()),
                Some(owner) => (
                    copy(
                        &Fs::scratch().map_err(graph_err)?,
                        "/file",
                        &f.fs,
                        &f.path,
                        vec![],
                        vec![],
                        None,
                        Some(owner),
                    )?,
                    "/file".to_owned(),
                ),
            };
            let target = abs(&c, &path);
            add_mount(
                &mut c,
                target,
                MountKind::Fs {
                    fs,
                    path: sub,
                    file: true,
                },
            );
            ok(c)
        })
}

/// `CacheSharingMode`: how concurrent execs share a cache volume.
#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum CacheSharingMode {
    #[default]
    Shared,
    Private,
    Locked,
}

impl From<CacheSharingMode> for CacheSharing {
    fn from(mode: CacheSharingMode) -> CacheSharing {
        match mode {
            CacheSharingMode::Shared => CacheSharing::Shared,
            CacheSharingMode::Private => CacheSharing::Private,
            CacheSharingMode::Locked => CacheSharing::Locked,
        }
    }
}

/// Adds the `CacheSharingMode` enum.
pub(super) fn register_enums(b: SchemaBuilder) -> SchemaBuilder {
    b.enumeration(Enum::new("CacheSharingMode").values(["SHARED", "PRIVATE", "LOCKED"]))
}

/// The arguments of `withMountedCache` (the `cache` volume and the `source` are read with
/// `ctx.loaded`).
#[derive(Deserialize)]
struct WithMountedCacheArgs {
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    sharing: CacheSharingMode,
}

impl Args for WithMountedCacheArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("cache", "CacheVolumeID!"),
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
            Arg::new("sharing", "CacheSharingMode").default("SHARED"),
            Arg::new("source", "DirectoryID"),
        ]
    }
}

/// `withMountedCache`: mounts a cache volume (neither seeded from a `source` nor re-owned).
pub(super) fn with_mounted_cache() -> Field {
    Field::new("withMountedCache", "Container!")
        .args::<WithMountedCacheArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithMountedCacheArgs {
                owner,
                path,
                sharing,
            } = ctx.args_as()?;
            let cache = ctx.loaded::<CacheVolume>("cache")?;
            if ctx.loaded::<Directory>("source").is_ok() {
                return Err(FieldError::new(
                    "withMountedCache: seeding a cache volume from a source directory is not supported",
                ));
            }
            if owner.is_some() {
                return Err(FieldError::new("withMountedCache: owner is not supported"));
            }
            let target = abs(&c, &path);
            add_mount(
                &mut c,
                target,
                MountKind::Cache {
                    volume: format!("cache:{}", cache.key),
                    sharing: sharing.into(),
                },
            );
            ok(c)
        })
}

/// `withMountedTemp`: mounts a tmpfs.
pub(super) fn with_mounted_temp() -> Field {
    Field::new("withMountedTemp", "Container!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let PathArgs { path } = ctx.args_as()?;
            let target = abs(&c, &path);
            add_mount(&mut c, target, MountKind::Temp);
            ok(c)
        })
}

/// The arguments of `withMountedSecret` (the `source` secret is read with `ctx.loaded`).
#[derive(Deserialize)]
struct WithMountedSecretArgs {
    #[serde(default, deserialize_with = "mode_arg")]
    mode: Option<u32>,
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
}

impl Args for WithMountedSecretArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("mode", "Int").default(SECRET_MODE),
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
            Arg::new("source", "SecretID!"),
        ]
    }
}

/// `withMountedSecret`: mounts the secret's plaintext as a read-only file (`mode`, owned by
/// `owner`, root by default).
pub(super) fn with_mounted_secret() -> Field {
    Field::new("withMountedSecret", "Container!")
        .args::<WithMountedSecretArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithMountedSecretArgs { mode, owner, path } = ctx.args_as()?;
            let secret = ctx.loaded::<Secret>("source")?;
            let Owner { uid, gid } = owner.unwrap_or(Owner { uid: 0, gid: 0 });
            let target = abs(&c, &path);
            add_mount(
                &mut c,
                target,
                MountKind::Secret {
                    secret: (*secret).clone(),
                    mode: mode.unwrap_or(SECRET_MODE),
                    uid,
                    gid,
                },
            );
            ok(c)
        })
}

/// `withoutMount`: unmounts whatever is mounted at `path`.
pub(super) fn without_mount() -> Field {
    Field::new("withoutMount", "Container!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let PathArgs { path } = ctx.args_as()?;
            let target = abs(&c, &path);
            without_mount_at(&mut c, &target);
            ok(c)
        })
}

/// `mounts`: the mount targets.
pub(super) fn mounts() -> Field {
    Field::new("mounts", "[String!]!").resolve_sync(|ctx| {
        let c = ctx.parent::<Container>()?;
        Ok(Value::leaf_list(c.mounts.iter().map(|m| m.target.clone())))
    })
}
