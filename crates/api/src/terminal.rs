//! Interactive processes: `Container.terminal` and `withDefaultTerminalCmd`, and the `Terminal`
//! object. `Terminal.sync` (beyond the v0.11.8 signatures, whose `websocketEndpoint` served the
//! terminal over a websocket that dagr does not have) solves the container, opens the caller's
//! user terminal (its terminal attachable) and runs the command there on a pty; it returns when
//! the command exits, whatever its exit code, which the user's terminal receives.

use dagr_gql::{Arg, Field, FieldError, Object, ResolveCtx, SchemaBuilder, Value};
use dagr_solver::Op;

use crate::container::{ExecArgs, exec_container, ok, parent};
use crate::state::{Container, Terminal, TerminalCmd};
use crate::{bool_arg, caller, obj, services};

/// What `terminal` runs when neither the call nor the container names a command.
const DEFAULT_TERMINAL_CMD: &str = "sh";

/// The terminal of `container` for `ctx`'s arguments.
fn terminal(c: Container, ctx: &ResolveCtx) -> Result<Terminal, FieldError> {
    let cmd: Option<Vec<String>> = ctx.arg("cmd")?;
    let mut run = TerminalCmd {
        args: cmd.unwrap_or_default(),
        privileged_nesting: bool_arg(ctx, "experimentalPrivilegedNesting")?,
        insecure_root_capabilities: bool_arg(ctx, "insecureRootCapabilities")?,
    };
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
        Some(caller(ctx)?.session_id)
    } else {
        None
    };
    let exec = exec_container(
        c,
        ExecArgs {
            args: run.args,
            skip_entrypoint: Some(true),
            insecure: Some(run.insecure_root_capabilities),
            nesting_session,
            ..Default::default()
        },
    )?
    .last_exec
    .ok_or_else(|| FieldError::new("the terminal command built no exec"))?;
    Ok(Terminal { exec })
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
            let message = s.scrub(&caller, &format!("terminal failed: {e}"));
            let _ = user.exit.send(Err(message.clone()));
            Err(FieldError::new(message))
        }
    }
}

/// Adds `terminal` and `withDefaultTerminalCmd` to the Container object.
pub(crate) fn fields(container: Object) -> Object {
    container
        .field(
            Field::new("terminal", "Terminal!")
                .arg(Arg::new("cmd", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("experimentalPrivilegedNesting", "Boolean").default(false))
                .arg(Arg::new("insecureRootCapabilities", "Boolean").default(false))
                .resolve_sync(|ctx| Ok(obj("Terminal", terminal(parent(ctx)?, ctx)?))),
        )
        .field(
            Field::new("withDefaultTerminalCmd", "Container!")
                .arg(Arg::new("args", "[String!]!"))
                .arg(Arg::new("experimentalPrivilegedNesting", "Boolean").default(false))
                .arg(Arg::new("insecureRootCapabilities", "Boolean").default(false))
                .resolve_sync(|ctx| {
                    let mut c = parent(ctx)?;
                    let args: Vec<String> = ctx.arg("args")?;
                    if args.is_empty() {
                        return Err(FieldError::new(
                            "withDefaultTerminalCmd needs a command: args is empty",
                        ));
                    }
                    c.default_terminal = Some(TerminalCmd {
                        args,
                        privileged_nesting: bool_arg(ctx, "experimentalPrivilegedNesting")?,
                        insecure_root_capabilities: bool_arg(ctx, "insecureRootCapabilities")?,
                    });
                    ok(c)
                }),
        )
}

/// Registers the Terminal object.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    b.object(
        Object::new("Terminal")
            .with_id()
            .field(Field::new("sync", "TerminalID!").resolve(sync)),
    )
}
