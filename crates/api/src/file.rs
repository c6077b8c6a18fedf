//! `File`, one function per field ([`object`] lists them in the order the schema serves them,
//! each beside the `Args` struct it reads).

use dagr_gql::{Arg, Args, Field, FieldError, Object, Value};
use serde::Deserialize;

use crate::args::{NameArgs, TimestampArgs, null_as_default};
use crate::directory::{base_name, copy, export_from, read_view, set_timestamps};
use crate::state::{File, Fs};
use crate::{caller, graph_err, obj, services};

/// Largest file `File.contents` returns.
const MAX_CONTENTS: u64 = 128 << 20;

/// The `File` object.
pub(crate) fn object() -> Object {
    // The served order (SDL and introspection list fields as they are added here).
    Object::new("File")
        .with_id()
        .field(contents())
        .field(size())
        .field(name())
        .field(with_name())
        .field(with_timestamps())
        .field(export())
        .field(sync())
}

/// `File.contents`: the file's contents (up to [`MAX_CONTENTS`] bytes), as UTF-8 (lossy).
fn contents() -> Field {
    Field::new("contents", "String!").resolve(|ctx| async move {
        let s = services(&ctx)?;
        let caller = caller(&ctx)?;
        let f = ctx.parent_arc::<File>()?;
        let snapshot = s.snapshot_of(&caller, &f.fs).await?;
        let path = f.path.clone();
        read_view(&s, &snapshot, move |root| {
            let p = dagr_worker::fsops::resolve_in_root(root, &path, true)
                .map_err(|e| e.to_string())?;
            let md = std::fs::metadata(&p).map_err(|e| crate::directory::path_error(&path, &e))?;
            if md.is_dir() {
                return Err(format!("{path}: is a directory"));
            }
            if md.len() > MAX_CONTENTS {
                return Err(format!(
                    "{path}: {} bytes is more than contents returns",
                    md.len()
                ));
            }
            let bytes = std::fs::read(&p).map_err(|e| crate::directory::path_error(&path, &e))?;
            Ok(Value::leaf(String::from_utf8_lossy(&bytes).into_owned()))
        })
        .await
    })
}

/// `File.size`: the file's size in bytes.
fn size() -> Field {
    Field::new("size", "Int!").resolve(|ctx| async move {
        let s = services(&ctx)?;
        let caller = caller(&ctx)?;
        let f = ctx.parent_arc::<File>()?;
        let snapshot = s.snapshot_of(&caller, &f.fs).await?;
        let path = f.path.clone();
        read_view(&s, &snapshot, move |root| {
            let p = dagr_worker::fsops::resolve_in_root(root, &path, true)
                .map_err(|e| e.to_string())?;
            let md = std::fs::metadata(&p).map_err(|e| crate::directory::path_error(&path, &e))?;
            Ok(Value::leaf(md.len()))
        })
        .await
    })
}

/// `File.name`: the file's base name.
fn name() -> Field {
    Field::new("name", "String!")
        .resolve_sync(|ctx| Ok(Value::leaf(base_name(&ctx.parent::<File>()?.path))))
}

/// `File.withName`: the file under another name (one path component).
fn with_name() -> Field {
    Field::new("withName", "File!")
        .args::<NameArgs>()
        .resolve_sync(|ctx| {
            let f = ctx.parent::<File>()?;
            let NameArgs { name } = ctx.args_as()?;
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
        })
}

/// `File.withTimestamps`: sets the file's modification time.
fn with_timestamps() -> Field {
    Field::new("withTimestamps", "File!")
        .args::<TimestampArgs>()
        .resolve_sync(|ctx| {
            let f = ctx.parent::<File>()?;
            let TimestampArgs { timestamp } = ctx.args_as()?;
            let fs = set_timestamps(&f.fs, &f.path, timestamp)?;
            Ok(obj(
                "File",
                File {
                    fs,
                    path: f.path.clone(),
                },
            ))
        })
}

/// The arguments of `File.export`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    allow_parent_dir_path: bool,
    path: String,
}

impl Args for ExportArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("allowParentDirPath", "Boolean").default(false),
            Arg::new("path", "String!"),
        ]
    }
}

/// `File.export`: writes the file to `path` on the caller's host (its parent directories made
/// when `allowParentDirPath`).
fn export() -> Field {
    Field::new("export", "Boolean!")
        .args::<ExportArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let f = ctx.parent_arc::<File>()?;
            let ExportArgs {
                allow_parent_dir_path,
                path: host_path,
            } = ctx.args_as()?;
            let (host, who, to) = (&s.host, &caller, &host_path);
            export_from(&s, &caller, &f.fs, &f.path, &host_path, |src| async move {
                host.push_file(who, &src, to, allow_parent_dir_path).await
            })
            .await
        })
}

/// `File.sync`: solves the file; answers its ID.
fn sync() -> Field {
    Field::new("sync", "FileID!").resolve(|ctx| async move {
        let s = services(&ctx)?;
        let caller = caller(&ctx)?;
        let f = ctx.parent_arc::<File>()?;
        let snapshot = s.snapshot_of(&caller, &f.fs).await?;
        crate::directory::check_kind(&s, &snapshot, &f.path, crate::directory::PathKind::File)
            .await?;
        Ok(Value::leaf(ctx.parent_chain().id()))
    })
}
