//! `Directory`, one function per field ([`register`] lists them in the order the schema serves
//! them, each beside the `Args` struct it reads), plus what `Container` and `File` share: the
//! file-op builders ([`mkfile`], [`mkdir`], [`copy`], [`rm`], [`set_timestamps`]) and reading
//! or exporting a solved result ([`read_view`], [`export_from`]).

use std::sync::Arc;

use dagr_gql::{Arg, Args, Field, FieldError, Object, SchemaBuilder, Value};
use dagr_solver::{CopyOp, InputRef, MkDirOp, MkFileOp, Op, RmOp, SetTimestampsOp, Vertex};
use serde::Deserialize;

use crate::args::{PathArgs, TimestampArgs, null_as_default};
use crate::ownership::{NEW_FILE_MODE, Owner, mode_arg};
use crate::state::{Directory, File, Fs, Inputs, join};
use crate::{Services, caller, graph_err, obj, services};

fn single(op: Op, inputs: Vec<Arc<Vertex>>) -> Result<Fs, FieldError> {
    Ok(Fs::main(Vertex::new(op, inputs).map_err(graph_err)?))
}

pub(crate) fn mkfile(
    fs: &Fs,
    path: &str,
    contents: Vec<u8>,
    mode: u32,
    owner: Option<Owner>,
) -> Result<Fs, FieldError> {
    let mut inputs = Inputs::default();
    let base = inputs.add(fs);
    single(
        Op::MkFile(MkFileOp {
            base,
            path: path.to_owned(),
            contents,
            mode,
            owner,
        }),
        inputs.into_vec(),
    )
}

pub(crate) fn mkdir(fs: &Fs, path: &str, mode: u32) -> Result<Fs, FieldError> {
    let mut inputs = Inputs::default();
    let base = inputs.add(fs);
    single(
        Op::MkDir(MkDirOp {
            base,
            path: path.to_owned(),
            mode,
            make_parents: true,
            owner: None,
        }),
        inputs.into_vec(),
    )
}

pub(crate) fn set_timestamps(fs: &Fs, path: &str, timestamp: i64) -> Result<Fs, FieldError> {
    let mut inputs = Inputs::default();
    let base = inputs.add(fs);
    single(
        Op::SetTimestamps(SetTimestampsOp {
            base,
            path: path.to_owned(),
            timestamp,
        }),
        inputs.into_vec(),
    )
}

pub(crate) fn rm(fs: &Fs, path: &str) -> Result<Fs, FieldError> {
    let mut inputs = Inputs::default();
    let base = inputs.add(fs);
    single(
        Op::Rm(RmOp {
            base,
            path: path.to_owned(),
            allow_not_found: true,
            allow_wildcard: false,
        }),
        inputs.into_vec(),
    )
}

/// Copies `src` of `from` to `dest` of `base`: a directory's contents are merged into `dest`, a
/// file is written at `dest`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy(
    base: &Fs,
    dest: &str,
    from: &Fs,
    src: &str,
    include: Vec<String>,
    exclude: Vec<String>,
    mode: Option<u32>,
    owner: Option<Owner>,
) -> Result<Fs, FieldError> {
    let mut inputs = Inputs::default();
    let base_ref: InputRef = inputs.add(base);
    let from_ref = inputs.add(from);
    single(
        Op::Copy(CopyOp {
            base: base_ref,
            from: from_ref,
            src: src.to_owned(),
            dest: dest.to_owned(),
            include,
            exclude,
            owner,
            mode,
            copy_dir_contents: true,
            create_dest_path: true,
            allow_wildcard: false,
            follow_symlinks: false,
            unpack_archive: false,
        }),
        inputs.into_vec(),
    )
}

pub(crate) fn base_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Adds `Directory` and `File` (in this order: that of their `load<Type>FromID` fields).
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    // The served order (SDL and introspection list fields as they are added here).
    let directory = Object::new("Directory")
        .with_id()
        .field(entries())
        .field(glob())
        .field(file())
        .field(directory())
        .field(with_new_file())
        .field(with_new_directory())
        .field(with_file())
        .field(with_files())
        .field(with_directory())
        .field(without_file())
        .field(without_directory())
        .field(with_timestamps())
        .field(diff())
        .field(crate::container::docker_build_field())
        .field(export())
        .field(sync());
    b.object(directory).object(crate::file::object())
}

/// The arguments of `Directory.entries`.
#[derive(Deserialize)]
struct EntriesArgs {
    path: Option<String>,
}

impl Args for EntriesArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("path", "String")]
    }
}

/// `Directory.entries`: the names in the directory (or its subdirectory `path`), sorted.
fn entries() -> Field {
    Field::new("entries", "[String!]!")
        .args::<EntriesArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let d = ctx.parent_arc::<Directory>()?;
            let EntriesArgs { path: sub } = ctx.args_as()?;
            let path = join(&d.path, sub.as_deref().unwrap_or("."));
            let snapshot = s.snapshot_of(&caller, &d.fs).await?;
            read_view(&s, &snapshot, move |root| {
                let dir = dagr_worker::fsops::resolve_in_root(root, &path, true)
                    .map_err(|e| e.to_string())?;
                let mut names: Vec<String> = std::fs::read_dir(&dir)
                    .map_err(|e| path_error(&path, &e))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                Ok(Value::leaf_list(names))
            })
            .await
        })
}

/// The arguments of `Directory.glob`.
#[derive(Deserialize)]
struct GlobArgs {
    pattern: String,
}

impl Args for GlobArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("pattern", "String!")]
    }
}

/// `Directory.glob`: the paths under the directory that match `pattern` (`*` stays within a
/// path component), sorted.
fn glob() -> Field {
    Field::new("glob", "[String!]!")
        .args::<GlobArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let d = ctx.parent_arc::<Directory>()?;
            let GlobArgs { pattern } = ctx.args_as()?;
            let matcher = globset::GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| FieldError::new(format!("invalid glob pattern {pattern:?}: {e}")))?
                .compile_matcher();
            let snapshot = s.snapshot_of(&caller, &d.fs).await?;
            let path = d.path.clone();
            read_view(&s, &snapshot, move |root| {
                let dir = dagr_worker::fsops::resolve_in_root(root, &path, true)
                    .map_err(|e| e.to_string())?;
                let mut found = Vec::new();
                walk(&dir, std::path::Path::new(""), &mut |rel| {
                    if matcher.is_match(rel) {
                        found.push(rel.to_string_lossy().into_owned());
                    }
                })
                .map_err(|e| path_error(&path, &e))?;
                found.sort();
                Ok(Value::leaf_list(found))
            })
            .await
        })
}

/// `Directory.file`: the file at `path`.
fn file() -> Field {
    Field::new("file", "File!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let PathArgs { path } = ctx.args_as()?;
            Ok(obj(
                "File",
                File {
                    fs: d.fs.clone(),
                    path: join(&d.path, &path),
                },
            ))
        })
}

/// `Directory.directory`: the subdirectory at `path`.
fn directory() -> Field {
    Field::new("directory", "Directory!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let PathArgs { path } = ctx.args_as()?;
            Ok(obj(
                "Directory",
                Directory {
                    fs: d.fs.clone(),
                    path: join(&d.path, &path),
                },
            ))
        })
}

/// The arguments of `Directory.withNewFile`.
#[derive(Deserialize)]
struct WithNewFileArgs {
    contents: String,
    path: String,
    #[serde(default, deserialize_with = "mode_arg")]
    permissions: Option<u32>,
}

impl Args for WithNewFileArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("contents", "String!"),
            Arg::new("path", "String!"),
            Arg::new("permissions", "Int").default(NEW_FILE_MODE),
        ]
    }
}

/// `Directory.withNewFile`: writes `contents` at `path`.
fn with_new_file() -> Field {
    Field::new("withNewFile", "Directory!")
        .args::<WithNewFileArgs>()
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let WithNewFileArgs {
                contents,
                path,
                permissions,
            } = ctx.args_as()?;
            let fs = mkfile(
                &d.fs,
                &join(&d.path, &path),
                contents.into_bytes(),
                permissions.unwrap_or(NEW_FILE_MODE),
                None,
            )?;
            Ok(same_path(d, fs))
        })
}

/// The arguments of `Directory.withNewDirectory`.
#[derive(Deserialize)]
struct WithNewDirectoryArgs {
    path: String,
    #[serde(default, deserialize_with = "mode_arg")]
    permissions: Option<u32>,
}

impl Args for WithNewDirectoryArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("path", "String!"),
            Arg::new("permissions", "Int").default(NEW_FILE_MODE),
        ]
    }
}

/// `Directory.withNewDirectory`: makes the directory `path` (and its parents).
fn with_new_directory() -> Field {
    Field::new("withNewDirectory", "Directory!")
        .args::<WithNewDirectoryArgs>()
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let WithNewDirectoryArgs { path, permissions } = ctx.args_as()?;
            let mode = permissions.unwrap_or(NEW_FILE_MODE);
            let fs = mkdir(&d.fs, &join(&d.path, &path), mode)?;
            Ok(same_path(d, fs))
        })
}

/// The arguments of `Directory.withFile` (the `source` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct WithFileArgs {
    path: String,
    #[serde(default, deserialize_with = "mode_arg")]
    permissions: Option<u32>,
}

impl Args for WithFileArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("path", "String!"),
            Arg::new("permissions", "Int"),
            Arg::new("source", "FileID!"),
        ]
    }
}

/// `Directory.withFile`: copies a file to `path` (its own mode unless `permissions` are given).
fn with_file() -> Field {
    Field::new("withFile", "Directory!")
        .args::<WithFileArgs>()
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let WithFileArgs { path, permissions } = ctx.args_as()?;
            let f = ctx.loaded::<File>("source")?;
            let fs = copy(
                &d.fs,
                &join(&d.path, &path),
                &f.fs,
                &f.path,
                vec![],
                vec![],
                permissions,
                None,
            )?;
            Ok(same_path(d, fs))
        })
}

/// The arguments of `Directory.withFiles` (the `sources` are read with `ctx.loaded_list`).
#[derive(Deserialize)]
struct WithFilesArgs {
    path: String,
    #[serde(default, deserialize_with = "mode_arg")]
    permissions: Option<u32>,
}

impl Args for WithFilesArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("path", "String!"),
            Arg::new("permissions", "Int"),
            Arg::new("sources", "[FileID!]!"),
        ]
    }
}

/// `Directory.withFiles`: copies files into the directory `path`, each under its own name.
fn with_files() -> Field {
    Field::new("withFiles", "Directory!")
        .args::<WithFilesArgs>()
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let WithFilesArgs { path, permissions } = ctx.args_as()?;
            let mut fs = d.fs.clone();
            for f in ctx.loaded_list::<File>("sources")? {
                let dest = join(&join(&d.path, &path), &base_name(&f.path));
                fs = copy(
                    &fs,
                    &dest,
                    &f.fs,
                    &f.path,
                    vec![],
                    vec![],
                    permissions,
                    None,
                )?;
            }
            Ok(same_path(d, fs))
        })
}

/// The arguments of `Directory.withDirectory` (the `directory` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct WithDirectoryArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    exclude: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    include: Vec<String>,
    path: String,
}

impl Args for WithDirectoryArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("directory", "DirectoryID!"),
            Arg::new("exclude", "[String!]").default(serde_json::json!([])),
            Arg::new("include", "[String!]").default(serde_json::json!([])),
            Arg::new("path", "String!"),
        ]
    }
}

/// `Directory.withDirectory`: copies a directory's contents (filtered by `include` and
/// `exclude`) into `path`.
fn with_directory() -> Field {
    Field::new("withDirectory", "Directory!")
        .args::<WithDirectoryArgs>()
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let WithDirectoryArgs {
                exclude,
                include,
                path,
            } = ctx.args_as()?;
            let src = ctx.loaded::<Directory>("directory")?;
            let fs = copy(
                &d.fs,
                &join(&d.path, &path),
                &src.fs,
                &src.path,
                include,
                exclude,
                None,
                None,
            )?;
            Ok(same_path(d, fs))
        })
}

/// `Directory.withoutFile`: removes whatever is at `path`.
fn without_file() -> Field {
    Field::new("withoutFile", "Directory!")
        .args::<PathArgs>()
        .resolve_sync(without_path)
}

/// `Directory.withoutDirectory`: removes whatever is at `path`.
fn without_directory() -> Field {
    Field::new("withoutDirectory", "Directory!")
        .args::<PathArgs>()
        .resolve_sync(without_path)
}

/// `Directory.withTimestamps`: sets the modification time of everything in the directory.
fn with_timestamps() -> Field {
    Field::new("withTimestamps", "Directory!")
        .args::<TimestampArgs>()
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let TimestampArgs { timestamp } = ctx.args_as()?;
            let fs = set_timestamps(&d.fs, &d.path, timestamp)?;
            Ok(same_path(d, fs))
        })
}

/// `Directory.diff`: what `other` adds to or changes in this directory (both at the same path).
fn diff() -> Field {
    // Its only argument is an object ID, read with `ctx.loaded`.
    Field::new("diff", "Directory!")
        .arg(Arg::new("other", "DirectoryID!"))
        .resolve_sync(|ctx| {
            let d = ctx.parent::<Directory>()?;
            let other = ctx.loaded::<Directory>("other")?;
            if d.path != other.path {
                return Err(FieldError::new(format!(
                    "cannot diff with different relative paths: {:?} != {:?}",
                    d.path, other.path
                )));
            }
            let mut inputs = Inputs::default();
            let lower = inputs.add(&d.fs);
            let upper = inputs.add(&other.fs);
            let fs = single(Op::Diff { lower, upper }, inputs.into_vec())?;
            Ok(same_path(d, fs))
        })
}

/// The arguments of `Directory.export`.
#[derive(Deserialize)]
struct ExportArgs {
    path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    wipe: bool,
}

impl Args for ExportArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("path", "String!"),
            Arg::new("wipe", "Boolean").default(false),
        ]
    }
}

/// `Directory.export`: writes the directory to `path` on the caller's host (what is there
/// removed first when `wipe`).
fn export() -> Field {
    Field::new("export", "Boolean!")
        .args::<ExportArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let d = ctx.parent_arc::<Directory>()?;
            let ExportArgs {
                path: host_path,
                wipe,
            } = ctx.args_as()?;
            let (host, who, to) = (&s.host, &caller, &host_path);
            export_from(&s, &caller, &d.fs, &d.path, &host_path, |src| async move {
                host.push_dir(who, &src, to, wipe).await
            })
            .await
        })
}

/// `Directory.sync`: solves the directory; answers its ID.
fn sync() -> Field {
    Field::new("sync", "DirectoryID!").resolve(|ctx| async move {
        let s = services(&ctx)?;
        let caller = caller(&ctx)?;
        let d = ctx.parent_arc::<Directory>()?;
        let snapshot = s.snapshot_of(&caller, &d.fs).await?;
        check_kind(&s, &snapshot, &d.path, PathKind::Directory).await?;
        Ok(Value::leaf(ctx.parent_chain().id()))
    })
}

/// What a path must be for [`check_kind`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathKind {
    Directory,
    File,
}

/// Fails unless `path` of `snapshot` exists and is of `kind` (symlinks followed inside the
/// snapshot), with Dagger's wording: `<path>: no such file or directory`, `not a directory`,
/// `is a directory`.
pub(crate) async fn check_kind(
    s: &Services,
    snapshot: &str,
    path: &str,
    kind: PathKind,
) -> Result<(), FieldError> {
    let path = path.to_owned();
    read_view(s, snapshot, move |root| {
        let resolved =
            dagr_worker::fsops::resolve_in_root(root, &path, true).map_err(|e| e.to_string())?;
        let md = std::fs::metadata(&resolved).map_err(|e| path_error(&path, &e))?;
        match (kind, md.is_dir()) {
            (PathKind::Directory, false) => Err(format!("{path}: not a directory")),
            (PathKind::File, true) => Err(format!("{path}: is a directory")),
            _ => Ok(Value::Null),
        }
    })
    .await
    .map(drop)
}

/// `<path>: <reason>` for an IO error on a path inside a snapshot, in the lower-case wording
/// SDK users match on (`no such file or directory`, as Dagger words it).
pub(crate) fn path_error(path: &str, e: &std::io::Error) -> String {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::NotADirectory => "not a directory".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => {
            let text = e.to_string();
            // Drop std's " (os error N)" suffix and lower the first letter, like Go's errors.
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    };
    format!("{path}: {reason}")
}

/// The directory at `d`'s path on a new filesystem (what every `Directory` file op returns).
fn same_path(d: &Directory, fs: Fs) -> Value {
    obj(
        "Directory",
        Directory {
            fs,
            path: d.path.clone(),
        },
    )
}

/// `withoutFile` and `withoutDirectory`: both remove whatever is at the path.
fn without_path(ctx: &dagr_gql::ResolveCtx) -> Result<Value, FieldError> {
    let d = ctx.parent::<Directory>()?;
    let PathArgs { path } = ctx.args_as()?;
    let fs = rm(&d.fs, &join(&d.path, &path))?;
    Ok(same_path(d, fs))
}

/// Solves `fs`, mounts it read-only and hands `path` inside it to `push` (which writes it to the
/// caller's host), then releases the mount whatever happened.
pub(crate) async fn export_from<F, Fut>(
    s: &Services,
    caller: &crate::Caller,
    fs: &Fs,
    path: &str,
    host_path: &str,
    push: F,
) -> Result<Value, FieldError>
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), dagr_worker::HostError>>,
{
    let snapshot = s.snapshot_of(caller, fs).await?;
    let view = s
        .worker()
        .mount_view(&snapshot)
        .await
        .map_err(|e| FieldError::new(e.to_string()))?;
    let pushed = match dagr_worker::fsops::resolve_in_root(view.path(), path, true) {
        Ok(src) => push(src)
            .await
            .map_err(|e| FieldError::new(format!("exporting to {host_path}: {e}"))),
        Err(e) => Err(FieldError::new(e.to_string())),
    };
    view.release().await;
    pushed.map(|()| Value::leaf(true))
}

/// Mounts a result read-only, runs `f` on its root on a blocking thread, and releases it.
pub(crate) async fn read_view<F>(s: &Services, snapshot: &str, f: F) -> Result<Value, FieldError>
where
    F: FnOnce(&std::path::Path) -> Result<Value, String> + Send + 'static,
{
    let view = s
        .worker()
        .mount_view(snapshot)
        .await
        .map_err(|e| FieldError::new(e.to_string()))?;
    let root = view.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || f(&root))
        .await
        .map_err(|e| FieldError::new(format!("reading the result failed: {e}")));
    view.release().await;
    out?.map_err(FieldError::new)
}

fn walk(
    dir: &std::path::Path,
    rel: &std::path::Path,
    f: &mut dyn FnMut(&std::path::Path),
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let r = rel.join(e.file_name());
        f(&r);
        if e.file_type()?.is_dir() {
            walk(&e.path(), &r, f)?;
        }
    }
    Ok(())
}
