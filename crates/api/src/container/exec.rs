//! Running the container: `withExec` builds an exec vertex over the rootfs and the mounts;
//! `stdout`, `stderr` and `sync` solve it.

use dagr_gql::{Arg, Args, Field, FieldError, ResolveCtx, Value};
use dagr_solver::{ExecOp, MountSource, Op, Vertex};
use dagr_worker::ResultMeta;
use serde::Deserialize;

use super::{ok, parent};
use crate::args::null_as_default;
use crate::state::{Container, Fs, Inputs, MountKind};
use crate::{caller, graph_err, services};

/// What an exec runs: `withExec`'s arguments, or a terminal's command.
#[derive(Default)]
pub(crate) struct ExecSpec {
    pub(crate) args: Vec<String>,
    pub(crate) skip_entrypoint: bool,
    pub(crate) stdin: String,
    pub(crate) redirect_stdout: String,
    pub(crate) redirect_stderr: String,
    pub(crate) insecure_root_capabilities: bool,
    /// The session whose engine the process may call back (`experimentalPrivilegedNesting`).
    pub(crate) nesting_session: Option<String>,
    /// A module function call's identity: the process calls the engine back (in the session
    /// that solves it) as that call's nested client.
    pub(crate) nested_call: Option<String>,
}

/// The arguments of `withExec`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithExecArgs {
    args: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    experimental_privileged_nesting: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    insecure_root_capabilities: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    redirect_stderr: String,
    #[serde(default, deserialize_with = "null_as_default")]
    redirect_stdout: String,
    #[serde(default, deserialize_with = "null_as_default")]
    skip_entrypoint: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    stdin: String,
}

impl Args for WithExecArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("args", "[String!]!"),
            Arg::new("experimentalPrivilegedNesting", "Boolean").default(false),
            Arg::new("insecureRootCapabilities", "Boolean").default(false),
            Arg::new("redirectStderr", "String").default(""),
            Arg::new("redirectStdout", "String").default(""),
            Arg::new("skipEntrypoint", "Boolean").default(false),
            Arg::new("stdin", "String").default(""),
        ]
    }
}

/// `withExec`: the container after running `args` (nothing runs until a leaf field solves it).
pub(super) fn with_exec() -> Field {
    Field::new("withExec", "Container!")
        .args::<WithExecArgs>()
        .resolve_sync(|ctx| {
            let args: WithExecArgs = ctx.args_as()?;
            let nesting_session = if args.experimental_privileged_nesting {
                Some(caller(ctx)?.client.session_id)
            } else {
                None
            };
            let spec = ExecSpec {
                args: args.args,
                skip_entrypoint: args.skip_entrypoint,
                stdin: args.stdin,
                redirect_stdout: args.redirect_stdout,
                redirect_stderr: args.redirect_stderr,
                insecure_root_capabilities: args.insecure_root_capabilities,
                nesting_session,
                nested_call: None,
            };
            ok(exec_container(parent(ctx)?, spec)?)
        })
}

/// The container after running `spec` (the entrypoint first unless skipped; the default args
/// when `spec.args` is empty).
pub(crate) fn exec_container(c: Container, spec: ExecSpec) -> Result<Container, FieldError> {
    let ExecSpec {
        args,
        skip_entrypoint,
        stdin,
        redirect_stdout,
        redirect_stderr,
        insecure_root_capabilities,
        nesting_session,
        nested_call,
    } = spec;
    let mut argv = Vec::new();
    if !skip_entrypoint {
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
    mounts.extend(c.sockets.iter().map(|m| dagr_solver::Mount {
        dest: m.target.clone(),
        source: MountSource::UnixSocket {
            session_id: m.socket.client.session_id.clone(),
            client_id: m.socket.client.client_id.clone(),
            path: m.socket.path.clone(),
            uid: m.uid,
            gid: m.gid,
        },
        readonly: false,
    }));
    // Another architecture runs under emulation; the worker checks that an emulator exists.
    let host = dagr_solver::Platform::host();
    let foreign_platform = (c.platform.os != host.os
        || c.platform.architecture != host.architecture)
        .then(|| c.platform.clone());
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
        stdin: Some(stdin).filter(|s| !s.is_empty()),
        redirect_stdout: Some(redirect_stdout).filter(|s| !s.is_empty()),
        redirect_stderr: Some(redirect_stderr).filter(|s| !s.is_empty()),
        hostname: None,
        privileged_nesting: nesting_session.is_some() || nested_call.is_some(),
        nesting_session,
        nested_call,
        insecure_root_capabilities,
        service_bindings: c
            .services
            .iter()
            .map(|b| dagr_solver::ServiceBinding {
                alias: b.alias.clone(),
                hostname: b.service.hostname.clone(),
            })
            .collect(),
        network_disabled: false,
        platform: foreign_platform,
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

/// The exec of the container's default command (entrypoint and default args).
pub(crate) fn default_exec(c: Container) -> Result<std::sync::Arc<Vertex>, FieldError> {
    exec_container(c, ExecSpec::default())?
        .last_exec
        .ok_or_else(|| FieldError::new("no command has been set"))
}

/// Solves the container's last exec (or, without one, its default command, as Dagger v0.11
/// does) and answers what `pick` takes of its output.
async fn exec_output(
    ctx: ResolveCtx,
    pick: fn(dagr_worker::ExecMeta) -> String,
) -> Result<Value, FieldError> {
    let s = services(&ctx)?;
    let caller = caller(&ctx)?;
    let c = ctx.parent_arc::<Container>()?;
    let exec = match &c.last_exec {
        Some(exec) => exec.clone(),
        None => default_exec(c.as_ref().clone())?,
    };
    let result = s.solve(&caller, &exec).await?;
    let meta = ResultMeta::of(&result)
        .exec
        .ok_or_else(|| FieldError::new("the last exec recorded no output"))?;
    Ok(Value::leaf(s.scrub(&caller.session_id, &pick(meta))))
}

/// `stdout`: the last exec's standard output (secrets scrubbed).
pub(super) fn stdout() -> Field {
    Field::new("stdout", "String!").resolve(|ctx| exec_output(ctx, |m| m.stdout))
}

/// `stderr`: the last exec's standard error (secrets scrubbed).
pub(super) fn stderr() -> Field {
    Field::new("stderr", "String!").resolve(|ctx| exec_output(ctx, |m| m.stderr))
}

/// `sync`: solves the rootfs and every mounted directory; answers the container's ID.
pub(super) fn sync() -> Field {
    Field::new("sync", "ContainerID!").resolve(|ctx| async move {
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
    })
}
