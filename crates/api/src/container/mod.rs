//! `Container`: one function per field, grouped by family:
//! - [`build`]: `build` (a Dockerfile; also `Directory.dockerBuild`);
//! - [`image`]: `from`, registry auth, `imageRef`, `platform`, `export`, `publish`,
//!   `asTarball`, `import`;
//! - [`exec`]: `withExec`, `stdout`, `stderr`, `sync`;
//! - [`config`]: env variables (plain and secret), workdir, user, entrypoint, default args,
//!   labels;
//! - [`mounts`]: `withMountedX`, `withoutMount`, `mounts` (and the `CacheSharingMode` enum);
//! - [`files`]: file ops on the rootfs or the mount a path falls under, `file`, `directory`,
//!   `rootfs`;
//! - [`terminal`]: `terminal`, `withDefaultTerminalCmd`, and the `Terminal` object.
//!
//! Each field function declares the field, its arguments (an `Args` struct beside it) and its
//! resolver; [`register`] lists them in the order the schema serves them.

mod build;
mod config;
pub(crate) mod exec;
mod files;
mod image;
mod mounts;
mod sockets;
mod terminal;

pub(crate) use build::docker_build_field;
pub(crate) use exec::default_exec;
pub(crate) use sockets::{host_unix_socket, query_socket, socket_object};

use dagr_gql::{FieldError, Object, ResolveCtx, SchemaBuilder, Value};

use crate::obj;
use crate::state::{Container, join};

/// Adds `Container` and its enums.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    // The served order (SDL and introspection list fields as they are added here).
    let container = Object::new("Container")
        .with_id()
        .field(image::from())
        .field(build::build())
        .field(exec::with_exec())
        .field(exec::stdout())
        .field(exec::stderr())
        .field(exec::sync())
        .field(config::with_env_variable())
        .field(config::without_env_variable())
        .field(config::env_variable())
        .field(config::env_variables())
        .field(config::with_workdir())
        .field(config::without_workdir())
        .field(config::workdir())
        .field(config::with_user())
        .field(config::without_user())
        .field(config::user())
        .field(config::with_entrypoint())
        .field(config::without_entrypoint())
        .field(config::entrypoint())
        .field(config::with_default_args())
        .field(config::without_default_args())
        .field(config::default_args())
        .field(config::with_label())
        .field(config::without_label())
        .field(config::label())
        .field(config::labels())
        .field(mounts::with_mounted_directory())
        .field(mounts::with_mounted_file())
        .field(mounts::with_mounted_cache())
        .field(mounts::with_mounted_temp())
        .field(mounts::with_mounted_secret())
        .field(mounts::without_mount())
        .field(mounts::mounts())
        .field(config::with_secret_variable())
        .field(config::without_secret_variable())
        .field(files::with_new_file())
        .field(files::with_file())
        .field(files::with_files())
        .field(files::with_directory())
        .field(files::without_file())
        .field(files::without_directory())
        .field(files::file())
        .field(files::directory())
        .field(files::rootfs())
        .field(files::with_rootfs())
        .field(image::with_registry_auth())
        .field(image::without_registry_auth())
        .field(image::image_ref())
        .field(image::platform())
        .field(terminal::terminal())
        .field(terminal::with_default_terminal_cmd())
        .field(image::as_tarball())
        .field(image::import())
        .field(image::export())
        .field(image::publish());
    let container = crate::service::container_fields()
        .into_iter()
        .chain([sockets::with_unix_socket(), sockets::without_unix_socket()])
        .fold(container, |container, field| container.field(field));
    let b = build::register_inputs(b);
    mounts::register_enums(image::register_enums(b)).object(container)
}

/// Adds the `Terminal` object (that `Container.terminal` answers).
pub(crate) fn register_terminal(b: SchemaBuilder) -> SchemaBuilder {
    terminal::register(b)
}

/// The container a field is called on, to change.
fn parent(ctx: &ResolveCtx) -> Result<Container, FieldError> {
    Ok(ctx.parent::<Container>()?.clone())
}

/// A `Container!` answer.
fn ok(c: Container) -> Result<Value, FieldError> {
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
