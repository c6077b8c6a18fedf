//! Interactive processes: `Container.terminal` and `withDefaultTerminalCmd`, and the `Terminal`
//! object. `Terminal.sync` (beyond the v0.11.8 signatures, whose `websocketEndpoint` served the
//! terminal over a websocket that dagr does not have) solves the container, opens the caller's
//! user terminal (its terminal attachable) and runs the command there on a pty; it returns when
//! the command exits, whatever its exit code, which the user's terminal receives.

use dagr_gql::{Arg, Args, Field, FieldError, Object, ResolveCtx, SchemaBuilder, Value};
use dagr_solver::Op;
use serde::Deserialize;

use super::exec::{ExecSpec, exec_container};
use super::{ok, parent};
use crate::args::null_as_default;
use crate::state::{Container, Terminal, TerminalCmd};
use crate::{caller, obj, services};

/// What `terminal` runs when neither the call nor the container names a command.
const DEFAULT_TERMINAL_CMD: &str = "sh";

/// The arguments of `terminal`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TerminalArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    cmd: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    experimental_privileged_nesting: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    insecure_root_capabilities: bool,
}

impl Args for TerminalArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("cmd", "[String!]").default(serde_json::json!([])),
            Arg::new("experimentalPrivilegedNesting", "Boolean").default(false),
            Arg::new("insecureRootCapabilities", "Boolean").default(false),
        ]
    }
}

/// The terminal of `c` running `run` (the container's default terminal command, or
/// [`DEFAULT_TERMINAL_CMD`], when `run.args` is empty).
fn terminal_of(
    c: Container,
    mut run: TerminalCmd,
    ctx: &ResolveCtx,
) -> Result<Terminal, FieldError> {
    if run.args.is_empty() {
        match &c.default_terminal {
            Some(default) => {
                run.args = default.args.clone();
                run.privileged_nesting |= default.privileged_nesting;
                run.insecure_root_capabilities |= default.insecure_root_capabilities;
            }
            None => run.args = vec![DEFAULT_TERMINAL_CMD.to_owned()],
        }
    }
    let nesting_session = if run.privileged_nesting {
        Some(caller(ctx)?.client.session_id)
    } else {
        None
    };
    let exec = exec_container(
        c,
        ExecSpec {
            args: run.args,
            skip_entrypoint: true,
            insecure_root_capabilities: run.insecure_root_capabilities,
            nesting_session,
            ..Default::default()
        },
    )?
    .last_exec
    .ok_or_else(|| FieldError::new("the terminal command built no exec"))?;
    Ok(Terminal { exec })
}

/// `terminal`: a terminal running `cmd` (or the default terminal command) in the container,
/// run when its `sync` is called.
pub(super) fn terminal() -> Field {
    Field::new("terminal", "Terminal!")
        .args::<TerminalArgs>()
        .resolve_sync(|ctx| {
            let args: TerminalArgs = ctx.args_as()?;
            let run = TerminalCmd {
                args: args.cmd,
                privileged_nesting: args.experimental_privileged_nesting,
                insecure_root_capabilities: args.insecure_root_capabilities,
            };
            Ok(obj("Terminal", terminal_of(parent(ctx)?, run, ctx)?))
        })
}

/// The arguments of `withDefaultTerminalCmd`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithDefaultTerminalCmdArgs {
    args: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    experimental_privileged_nesting: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    insecure_root_capabilities: bool,
}

impl Args for WithDefaultTerminalCmdArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("args", "[String!]!"),
            Arg::new("experimentalPrivilegedNesting", "Boolean").default(false),
            Arg::new("insecureRootCapabilities", "Boolean").default(false),
        ]
    }
}

/// `withDefaultTerminalCmd`: what `terminal` runs when it is given no command.
pub(super) fn with_default_terminal_cmd() -> Field {
    Field::new("withDefaultTerminalCmd", "Container!")
        .args::<WithDefaultTerminalCmdArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let args: WithDefaultTerminalCmdArgs = ctx.args_as()?;
            if args.args.is_empty() {
                return Err(FieldError::new(
                    "withDefaultTerminalCmd needs a command: args is empty",
                ));
            }
            c.default_terminal = Some(TerminalCmd {
                args: args.args,
                privileged_nesting: args.experimental_privileged_nesting,
                insecure_root_capabilities: args.insecure_root_capabilities,
            });
            ok(c)
        })
}

/// Runs the terminal on the caller's user terminal; returns its ID once the command exited.
async fn sync(ctx: ResolveCtx) -> Result<Value, FieldError> {
    let s = services(&ctx)?;
    let caller = caller(&ctx)?;
    let t = ctx.parent_arc::<Terminal>()?;
    let Op::Exec(op) = t.exec.op() else {
        return Err(FieldError::new("a terminal must run an exec"));
    };
    let mut inputs = Vec::with_capacity(t.exec.inputs().len());
    for input in t.exec.inputs() {
        inputs.push(s.solve(&caller, input).await?);
    }
    let user = s.host.open_terminal(&caller).await.map_err(|e| {
        FieldError::new(format!(
            "client {} cannot open a terminal: {e}",
            caller.client_id
        ))
    })?;
    let io = dagr_executor::TerminalIo {
        size: user.size,
        input: user.input,
    };
    // The sink closes when the run ends, after its last output: the exit follows it.
    let ran = s
        .worker()
        .run_terminal(op, &inputs, &caller.session_id, io, user.output)
        .await;
    match ran {
        Ok(code) => {
            let _ = user.exit.send(Ok(code));
            Ok(Value::leaf(ctx.parent_chain().id()))
        }
        Err(e) => {
            let message = s.scrub(&caller.session_id, &format!("terminal failed: {e}"));
            let _ = user.exit.send(Err(message.clone()));
            Err(FieldError::new(message))
        }
    }
}

/// Registers the Terminal object.
pub(super) fn register(b: SchemaBuilder) -> SchemaBuilder {
    b.object(
        Object::new("Terminal")
            .with_id()
            .field(Field::new("sync", "TerminalID!").resolve(sync)),
    )
}
