//! Unix sockets of the client's host in containers: `Host.unixSocket` names one,
//! `withUnixSocket` mounts it in the container's execs (each connection is forwarded to the
//! client's socket through its attachables), `withoutUnixSocket` removes it.

use dagr_gql::{Arg, Args, Field, FieldError, Value};
use dagr_solver::Owner;
use serde::Deserialize;

use super::{abs, ok, parent};
use crate::obj;
use crate::ownership::owner_arg;
use crate::state::{Socket, SocketMount};

#[derive(Deserialize)]
struct UnixSocketArgs {
    path: String,
}

impl Args for UnixSocketArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("path", "String!")]
    }
}

/// `Host.unixSocket`: the socket at `path` on the calling client's host.
pub(crate) fn host_unix_socket() -> Field {
    Field::new("unixSocket", "Socket!")
        .args::<UnixSocketArgs>()
        .scoped(crate::query::host_scope)
        .resolve_sync(|ctx| {
            let UnixSocketArgs { path } = ctx.args_as()?;
            if path.is_empty() {
                return Err(FieldError::new("a unix socket needs a path"));
            }
            Ok(obj(
                "Socket",
                Socket {
                    // The client whose socket it is, also when another client of the session
                    // uses its ID.
                    client: crate::query::host_owner(ctx)?,
                    path,
                },
            ))
        })
}

#[derive(Deserialize)]
struct WithUnixSocketArgs {
    #[serde(default, deserialize_with = "owner_arg")]
    owner: Option<Owner>,
    path: String,
}

impl Args for WithUnixSocketArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("owner", "String").default(""),
            Arg::new("path", "String!"),
            Arg::new("source", "SocketID!"),
        ]
    }
}

/// `withUnixSocket`: execs find `source` at `path` (owned by `owner`, else root).
pub(super) fn with_unix_socket() -> Field {
    Field::new("withUnixSocket", "Container!")
        .args::<WithUnixSocketArgs>()
        .resolve_sync(|ctx| {
            let WithUnixSocketArgs { owner, path } = ctx.args_as()?;
            let socket = ctx.loaded::<Socket>("source")?;
            let mut c = parent(ctx)?;
            let target = abs(&c, &path);
            let owner = owner.unwrap_or(Owner { uid: 0, gid: 0 });
            c.sockets.retain(|m| m.target != target);
            c.sockets.push(SocketMount {
                target,
                socket: socket.as_ref().clone(),
                uid: owner.uid,
                gid: owner.gid,
            });
            ok(c)
        })
}

#[derive(Deserialize)]
struct WithoutUnixSocketArgs {
    path: String,
}

impl Args for WithoutUnixSocketArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("path", "String!")]
    }
}

/// `withoutUnixSocket`: removes the socket mounted at `path`.
pub(super) fn without_unix_socket() -> Field {
    Field::new("withoutUnixSocket", "Container!")
        .args::<WithoutUnixSocketArgs>()
        .resolve_sync(|ctx| {
            let WithoutUnixSocketArgs { path } = ctx.args_as()?;
            let mut c = parent(ctx)?;
            let target = abs(&c, &path);
            c.sockets.retain(|m| m.target != target);
            ok(c)
        })
}

/// The `Socket` object (only its `id`).
pub(crate) fn socket_object() -> dagr_gql::Object {
    dagr_gql::Object::new("Socket").with_id()
}

#[derive(Deserialize)]
struct SocketArgs {}

impl Args for SocketArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("id", "SocketID!")]
    }
}

/// `Query.socket(id)`: deprecated spelling of `loadSocketFromID`.
pub(crate) fn query_socket() -> Field {
    Field::new("socket", "Socket!")
        .deprecated("Use `loadSocketFromID` instead.")
        .args::<SocketArgs>()
        .resolve_sync(|ctx| {
            let socket = ctx.loaded::<Socket>("id")?;
            Ok(Value::object("Socket", socket))
        })
}
