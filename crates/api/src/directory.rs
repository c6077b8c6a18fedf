//! `Directory` and `File`, plus the file-op builders `Container` shares ([`mkfile`], [`mkdir`],
//! [`copy`], [`rm`]).

use std::sync::Arc;

use dagr_gql::{Arg, Field, FieldError, Object, SchemaBuilder, Value};
use dagr_solver::{CopyOp, InputRef, MkDirOp, MkFileOp, Op, RmOp, SetTimestampsOp, Vertex};

use crate::ownership::{Owner, file_mode};
use crate::state::{Directory, File, Fs, Inputs, join};
use crate::{Services, bool_arg, caller, graph_err, obj, services};

/// Largest file `File.contents` returns.
const MAX_CONTENTS: u64 = 128 << 20;

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
            owner: owner.map(|o| o.to_string()),
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
            owner: owner.map(|o| o.to_string()),
            mode,
            copy_dir_contents: true,
            create_dest_path: true,
            allow_wildcard: false,
            follow_symlinks: false,
        }),
        inputs.into_vec(),
    )
}

fn perms(ctx: &dagr_gql::ResolveCtx, default: Option<u32>) -> Result<Option<u32>, FieldError> {
    let p: Option<i64> = ctx.arg("permissions")?;
    match p {
        Some(p) => file_mode(p)
            .map(Some)
            .map_err(|e| FieldError::new(e.to_string())),
        None => Ok(default),
    }
}

fn base_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let directory = Object::new("Directory")
        .with_id()
        .field(
            Field::new("entries", "[String!]!")
                .arg(Arg::new("path", "String"))
                .resolve(|ctx| async move {
                    let s = services(&ctx)?;
                    let caller = caller(&ctx)?;
                    let d = ctx.parent_arc::<Directory>()?;
                    let sub: Option<String> = ctx.arg("path")?;
                    let path = join(&d.path, sub.as_deref().unwrap_or("."));
                    let snapshot = s.snapshot_of(&caller, &d.fs).await?;
                    read_view(&s, &snapshot, move |root| {
                        let dir = dagr_worker::fsops::resolve_in_root(root, &path, true)
                            .map_err(|e| e.to_string())?;
                        let mut names: Vec<String> = std::fs::read_dir(&dir)
                            .map_err(|e| format!("{path}: {e}"))?
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect();
                        names.sort();
                        Ok(Value::leaf_list(names))
                    })
                    .await
                }),
        )
        .field(
            Field::new("glob", "[String!]!")
                .arg(Arg::new("pattern", "String!"))
                .resolve(|ctx| async move {
                    let s = services(&ctx)?;
                    let caller = caller(&ctx)?;
                    let d = ctx.parent_arc::<Directory>()?;
                    let pattern: String = ctx.arg("pattern")?;
                    let matcher = globset::GlobBuilder::new(&pattern)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| {
                            FieldError::new(format!("invalid glob pattern {pattern:?}: {e}"))
                        })?
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
                        .map_err(|e| format!("{path}: {e}"))?;
                        found.sort();
                        Ok(Value::leaf_list(found))
                    })
                    .await
                }),
        )
        .field(
            Field::new("file", "File!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let d = ctx.parent::<Directory>()?;
                    let path: String = ctx.arg("path")?;
                    Ok(obj(
                        "File",
                        File {
                            fs: d.fs.clone(),
                            path: join(&d.path, &path),
                        },
                    ))
                }),
        )
        .field(
            Field::new("directory", "Directory!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let d = ctx.parent::<Directory>()?;
                    let path: String = ctx.arg("path")?;
                    Ok(obj(
                        "Directory",
                        Directory {
                            fs: d.fs.clone(),
                            path: join(&d.path, &path),
                        },
                    ))
                }),
        )
        .field(
            Field::new("withNewFile", "Directory!")
                .arg(Arg::new("contents", "String!"))
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("permissions", "Int").default(420))
                .resolve_sync(|ctx| {
                    let d = ctx.parent::<Directory>()?;
                    let path: String = ctx.arg("path")?;
                    let contents: String = ctx.arg("contents")?;
                    let mode = perms(ctx, Some(0o644))?.unwrap_or(0o644);
                    let fs = mkfile(
                        &d.fs,
                        &join(&d.path, &path),
                        contents.into_bytes(),
                        mode,
                        None,
                    )?;
                    Ok(same_path(d, fs))
                }),
        )
        .field(
            Field::new("withNewDirectory", "Directory!")
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("permissions", "Int").default(420))
                .resolve_sync(|ctx| {
                    let d = ctx.parent::<Directory>()?;
                    let path: String = ctx.arg("path")?;
                    let mode = perms(ctx, Some(0o644))?.unwrap_or(0o644);
                    let fs = mkdir(&d.fs, &join(&d.path, &path), mode)?;
                    Ok(same_path(d, fs))
                }),
        )
        .field(
            Field::new("withFile", "Directory!")
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("permissions", "Int"))
                .arg(Arg::new("source", "FileID!"))
                .resolve_sync(|ctx| {
                    let d = ctx.parent::<Directory>()?;
                    let path: String = ctx.arg("path")?;
                    let f = ctx.loaded::<File>("source")?;
                    let fs = copy(
                        &d.fs,
                        &join(&d.path, &path),
                        &f.fs,
                        &f.path,
                        vec![],
                        vec![],
                        perms(ctx, None)?,
                        None,
                    )?;
                    Ok(same_path(d, fs))
                }),
        )
        .field(
            Field::new("withFiles", "Directory!")
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("permissions", "Int"))
                .arg(Arg::new("sources", "[FileID!]!"))
                .resolve_sync(|ctx| {
                    let d = ctx.parent::<Directory>()?;
                    let path: String = ctx.arg("path")?;
                    let mode = perms(ctx, None)?;
                    let mut fs = d.fs.clone();
                    for f in ctx.loaded_list::<File>("sources")? {
                        let dest = join(&join(&d.path, &path), &base_name(&f.path));
                        fs = copy(&fs, &dest, &f.fs, &f.path, vec![], vec![], mode, None)?;
                    }
                    Ok(same_path(d, fs))
                }),
        )
        .field(
            Field::new("withDirectory", "Directory!")
                .arg(Arg::new("directory", "DirectoryID!"))
                .arg(Arg::new("exclude", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("include", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    let d = ctx.parent::<Directory>()?;
                    let path: String = ctx.arg("path")?;
                    let src = ctx.loaded::<Directory>("directory")?;
                    let include: Option<Vec<String>> = ctx.arg("include")?;
                    let exclude: Option<Vec<String>> = ctx.arg("exclude")?;
                    let fs = copy(
                        &d.fs,
                        &join(&d.path, &path),
                        &src.fs,
                        &src.path,
                        include.unwrap_or_default(),
                        exclude.unwrap_or_default(),
                        None,
                        None,
                    )?;
                    Ok(same_path(d, fs))
                }),
        )
        .field(
            Field::new("withoutFile", "Directory!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(without_path),
        )
        .field(
            Field::new("withoutDirectory", "Directory!")
                .arg(Arg::new("path", "String!"))
                .resolve_sync(without_path),
        )
        .field(
            Field::new("withTimestamps", "Directory!")
                .arg(Arg::new("timestamp", "Int!"))
                .resolve_sync(|ctx| {
                    let d = ctx.parent::<Directory>()?;
                    let timestamp: i64 = ctx.arg("timestamp")?;
                    let fs = set_timestamps(&d.fs, &d.path, timestamp)?;
                    Ok(same_path(d, fs))
                }),
        )
        .field(
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
                }),
        )
        .field(
            Field::new("export", "Boolean!")
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("wipe", "Boolean").default(false))
                .resolve(|ctx| async move {
                    let s = services(&ctx)?;
                    let caller = caller(&ctx)?;
                    let d = ctx.parent_arc::<Directory>()?;
                    let host_path: String = ctx.arg("path")?;
                    let wipe = bool_arg(&ctx, "wipe")?;
                    let (host, who, to) = (&s.host, &caller, &host_path);
                    export_from(&s, &caller, &d.fs, &d.path, &host_path, |src| async move {
                        host.push_dir(who, &src, to, wipe).await
                    })
                    .await
                }),
        )
        .field(
            Field::new("sync", "DirectoryID!").resolve(|ctx| async move {
                let s = services(&ctx)?;
                let caller = caller(&ctx)?;
                let d = ctx.parent_arc::<Directory>()?;
                s.snapshot_of(&caller, &d.fs).await?;
                Ok(Value::leaf(ctx.parent_chain().id()))
            }),
        );

    let file = Object::new("File")
        .with_id()
        .field(Field::new("contents", "String!").resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let f = ctx.parent_arc::<File>()?;
            let snapshot = s.snapshot_of(&caller, &f.fs).await?;
            let path = f.path.clone();
            read_view(&s, &snapshot, move |root| {
                let p = dagr_worker::fsops::resolve_in_root(root, &path, true)
                    .map_err(|e| e.to_string())?;
                let md = std::fs::metadata(&p).map_err(|e| format!("{path}: {e}"))?;
                if md.is_dir() {
                    return Err(format!("{path}: is a directory"));
                }
                if md.len() > MAX_CONTENTS {
                    return Err(format!(
                        "{path}: {} bytes is more than contents returns",
                        md.len()
                    ));
                }
                let bytes = std::fs::read(&p).map_err(|e| format!("{path}: {e}"))?;
                Ok(Value::leaf(String::from_utf8_lossy(&bytes).into_owned()))
            })
            .await
        }))
        .field(Field::new("size", "Int!").resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let f = ctx.parent_arc::<File>()?;
            let snapshot = s.snapshot_of(&caller, &f.fs).await?;
            let path = f.path.clone();
            read_view(&s, &snapshot, move |root| {
                let p = dagr_worker::fsops::resolve_in_root(root, &path, true)
                    .map_err(|e| e.to_string())?;
                let md = std::fs::metadata(&p).map_err(|e| format!("{path}: {e}"))?;
                Ok(Value::leaf(md.len()))
            })
            .await
        }))
        .field(
            Field::new("name", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(base_name(&ctx.parent::<File>()?.path)))),
        )
        .field(
            Field::new("withName", "File!")
                .arg(Arg::new("name", "String!"))
                .resolve_sync(|ctx| {
                    let f = ctx.parent::<File>()?;
                    let name: String = ctx.arg("name")?;
                    if name.is_empty() || name.contains('/') {
                        return Err(FieldError::new(format!(
                            "file name {name:?} must be one path component"
                        )));
                    }
                    let dest = format!("/{name}");
                    let fs = copy(
                        &Fs::scratch().map_err(graph_err)?,
                        &dest,
                        &f.fs,
                        &f.path,
                        vec![],
                        vec![],
                        None,
                        None,
                    )?;
                    Ok(obj("File", File { fs, path: dest }))
                }),
        )
        .field(
            Field::new("withTimestamps", "File!")
                .arg(Arg::new("timestamp", "Int!"))
                .resolve_sync(|ctx| {
                    let f = ctx.parent::<File>()?;
                    let timestamp: i64 = ctx.arg("timestamp")?;
                    let fs = set_timestamps(&f.fs, &f.path, timestamp)?;
                    Ok(obj(
                        "File",
                        File {
                            fs,
                            path: f.path.clone(),
                        },
                    ))
                }),
        )
        .field(
            Field::new("export", "Boolean!")
                .arg(Arg::new("allowParentDirPath", "Boolean").default(false))
                .arg(Arg::new("path", "String!"))
                .resolve(|ctx| async move {
                    let s = services(&ctx)?;
                    let caller = caller(&ctx)?;
                    let f = ctx.parent_arc::<File>()?;
                    let host_path: String = ctx.arg("path")?;
                    let allow = bool_arg(&ctx, "allowParentDirPath")?;
                    let (host, who, to) = (&s.host, &caller, &host_path);
                    export_from(&s, &caller, &f.fs, &f.path, &host_path, |src| async move {
                        host.push_file(who, &src, to, allow).await
                    })
                    .await
                }),
        )
        .field(Field::new("sync", "FileID!").resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let f = ctx.parent_arc::<File>()?;
            s.snapshot_of(&caller, &f.fs).await?;
            Ok(Value::leaf(ctx.parent_chain().id()))
        }));
    b.object(directory).object(file)
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
    let path: String = ctx.arg("path")?;
    let fs = rm(&d.fs, &join(&d.path, &path))?;
    Ok(same_path(d, fs))
}

/// Solves `fs`, mounts it read-only and hands `path` inside it to `push` (which writes it to the
/// caller's host), then releases the mount whatever happened.
async fn export_from<F, Fut>(
    s: &Services,
    caller: &crate::Caller,
    fs: &Fs,
    path: &str,
    host_path: &str,
    push: F,
) -> Result<Value, FieldError>
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
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
