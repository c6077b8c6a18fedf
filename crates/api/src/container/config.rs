//! The container's image config and process environment: env variables (plain and secret),
//! workdir, user, entrypoint, default args and labels.

use dagr_gql::{Arg, Args, Field, Value};
use serde::Deserialize;

use super::{abs, ok, parent};
use crate::args::{NameArgs, PathArgs, null_as_default};
use crate::obj;
use crate::state::{Container, EnvVariable, Label, Secret};

/// The arguments of `withEnvVariable`.
#[derive(Deserialize)]
struct WithEnvVariableArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    expand: bool,
    name: String,
    value: String,
}

impl Args for WithEnvVariableArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("expand", "Boolean").default(false),
            Arg::new("name", "String!"),
            Arg::new("value", "String!"),
        ]
    }
}

/// `withEnvVariable`: sets `name` (`${VAR}`s in the value expanded from the container's env when
/// `expand`); a secret variable of that name goes away.
pub(super) fn with_env_variable() -> Field {
    Field::new("withEnvVariable", "Container!")
        .args::<WithEnvVariableArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithEnvVariableArgs {
                expand,
                name,
                value,
            } = ctx.args_as()?;
            let value = if expand {
                c.config.expand(&value)
            } else {
                value
            };
            c.secret_env.remove(&name);
            c.config.set_env(&name, value);
            ok(c)
        })
}

/// `withoutEnvVariable`: unsets `name`.
pub(super) fn without_env_variable() -> Field {
    Field::new("withoutEnvVariable", "Container!")
        .args::<NameArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let NameArgs { name } = ctx.args_as()?;
            c.config.env.retain(|(k, _)| k != &name);
            ok(c)
        })
}

/// `envVariable`: the value of `name`, or null.
pub(super) fn env_variable() -> Field {
    Field::new("envVariable", "String")
        .args::<NameArgs>()
        .resolve_sync(|ctx| {
            let c = ctx.parent::<Container>()?;
            let NameArgs { name } = ctx.args_as()?;
            Ok(c.config
                .env_var(&name)
                .map_or(Value::Null, |v| Value::leaf(v.to_owned())))
        })
}

/// `envVariables`: the env variables in the order they were set.
pub(super) fn env_variables() -> Field {
    Field::new("envVariables", "[EnvVariable!]!").resolve_sync(|ctx| {
        let c = ctx.parent::<Container>()?;
        Ok(Value::List(
            c.config
                .env
                .iter()
                .map(|(name, value)| {
                    obj(
                        "EnvVariable",
                        EnvVariable {
                            name: name.clone(),
                            value: value.clone(),
                        },
                    )
                })
                .collect(),
        ))
    })
}

/// The arguments of `withSecretVariable` (the `secret` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct WithSecretVariableArgs {
    name: String,
}

impl Args for WithSecretVariableArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("name", "String!"), Arg::new("secret", "SecretID!")]
    }
}

/// `withSecretVariable`: sets `name` to the secret's plaintext in execs (a plain variable of
/// that name goes away).
pub(super) fn with_secret_variable() -> Field {
    Field::new("withSecretVariable", "Container!")
        .args::<WithSecretVariableArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithSecretVariableArgs { name } = ctx.args_as()?;
            let secret = ctx.loaded::<Secret>("secret")?;
            c.config.env.retain(|(k, _)| k != &name);
            c.secret_env.insert(name, (*secret).clone());
            ok(c)
        })
}

/// `withoutSecretVariable`: unsets the secret variable `name`.
pub(super) fn without_secret_variable() -> Field {
    Field::new("withoutSecretVariable", "Container!")
        .args::<NameArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let NameArgs { name } = ctx.args_as()?;
            c.secret_env.remove(&name);
            ok(c)
        })
}

/// `withWorkdir`: the working directory (relative to the current one).
pub(super) fn with_workdir() -> Field {
    Field::new("withWorkdir", "Container!")
        .args::<PathArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let PathArgs { path } = ctx.args_as()?;
            c.config.workdir = abs(&c, &path);
            ok(c)
        })
}

/// `withoutWorkdir`: back to the default working directory (`/`).
pub(super) fn without_workdir() -> Field {
    Field::new("withoutWorkdir", "Container!").resolve_sync(|ctx| {
        let mut c = parent(ctx)?;
        c.config.workdir.clear();
        ok(c)
    })
}

/// `workdir`: the configured working directory (empty for the default).
pub(super) fn workdir() -> Field {
    Field::new("workdir", "String!").resolve_sync(|ctx| {
        Ok(Value::leaf(
            ctx.parent::<Container>()?.config.workdir.clone(),
        ))
    })
}

/// `withUser`: the user execs run as (`name`, `uid` or `uid:gid`).
pub(super) fn with_user() -> Field {
    Field::new("withUser", "Container!")
        .args::<NameArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let NameArgs { name } = ctx.args_as()?;
            c.config.user = name;
            ok(c)
        })
}

/// `withoutUser`: back to the default user.
pub(super) fn without_user() -> Field {
    Field::new("withoutUser", "Container!").resolve_sync(|ctx| {
        let mut c = parent(ctx)?;
        c.config.user.clear();
        ok(c)
    })
}

/// `user`: the configured user (empty for the default).
pub(super) fn user() -> Field {
    Field::new("user", "String!")
        .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Container>()?.config.user.clone())))
}

/// `(args: [String!]!)`: a command.
#[derive(Deserialize)]
struct CommandArgs {
    args: Vec<String>,
}

impl Args for CommandArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("args", "[String!]!")]
    }
}

/// The arguments of `withEntrypoint`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithEntrypointArgs {
    args: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    keep_default_args: bool,
}

impl Args for WithEntrypointArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("args", "[String!]!"),
            Arg::new("keepDefaultArgs", "Boolean").default(false),
        ]
    }
}

/// `withEntrypoint`: the entrypoint; the default args are dropped unless `keepDefaultArgs`.
pub(super) fn with_entrypoint() -> Field {
    Field::new("withEntrypoint", "Container!")
        .args::<WithEntrypointArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithEntrypointArgs {
                args,
                keep_default_args,
            } = ctx.args_as()?;
            c.config.entrypoint = args;
            if !keep_default_args {
                c.config.default_args.clear();
            }
            ok(c)
        })
}

/// The arguments of `withoutEntrypoint`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithoutEntrypointArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    keep_default_args: bool,
}

impl Args for WithoutEntrypointArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("keepDefaultArgs", "Boolean").default(false)]
    }
}

/// `withoutEntrypoint`: no entrypoint; the default args are dropped unless `keepDefaultArgs`.
pub(super) fn without_entrypoint() -> Field {
    Field::new("withoutEntrypoint", "Container!")
        .args::<WithoutEntrypointArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithoutEntrypointArgs { keep_default_args } = ctx.args_as()?;
            c.config.entrypoint.clear();
            if !keep_default_args {
                c.config.default_args.clear();
            }
            ok(c)
        })
}

fn string_list(v: &[String]) -> Value {
    Value::leaf_list(v.iter().cloned())
}

/// `entrypoint`: the entrypoint.
pub(super) fn entrypoint() -> Field {
    Field::new("entrypoint", "[String!]!")
        .resolve_sync(|ctx| Ok(string_list(&ctx.parent::<Container>()?.config.entrypoint)))
}

/// `withDefaultArgs`: the default args (run after the entrypoint when `withExec` has none).
pub(super) fn with_default_args() -> Field {
    Field::new("withDefaultArgs", "Container!")
        .args::<CommandArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let CommandArgs { args } = ctx.args_as()?;
            c.config.default_args = args;
            ok(c)
        })
}

/// `withoutDefaultArgs`: no default args.
pub(super) fn without_default_args() -> Field {
    Field::new("withoutDefaultArgs", "Container!").resolve_sync(|ctx| {
        let mut c = parent(ctx)?;
        c.config.default_args.clear();
        ok(c)
    })
}

/// `defaultArgs`: the default args.
pub(super) fn default_args() -> Field {
    Field::new("defaultArgs", "[String!]!")
        .resolve_sync(|ctx| Ok(string_list(&ctx.parent::<Container>()?.config.default_args)))
}

/// The arguments of `withLabel`.
#[derive(Deserialize)]
struct WithLabelArgs {
    name: String,
    value: String,
}

impl Args for WithLabelArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("name", "String!"), Arg::new("value", "String!")]
    }
}

/// `withLabel`: sets the image label `name`.
pub(super) fn with_label() -> Field {
    Field::new("withLabel", "Container!")
        .args::<WithLabelArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let WithLabelArgs { name, value } = ctx.args_as()?;
            c.config.labels.insert(name, value);
            ok(c)
        })
}

/// `withoutLabel`: removes the label `name`.
pub(super) fn without_label() -> Field {
    Field::new("withoutLabel", "Container!")
        .args::<NameArgs>()
        .resolve_sync(|ctx| {
            let mut c = parent(ctx)?;
            let NameArgs { name } = ctx.args_as()?;
            c.config.labels.remove(&name);
            ok(c)
        })
}

/// `label`: the value of the label `name`, or null.
pub(super) fn label() -> Field {
    Field::new("label", "String")
        .args::<NameArgs>()
        .resolve_sync(|ctx| {
            let c = ctx.parent::<Container>()?;
            let NameArgs { name } = ctx.args_as()?;
            Ok(c.config
                .labels
                .get(&name)
                .map_or(Value::Null, |v| Value::leaf(v.clone())))
        })
}

/// `labels`: the labels, by name.
pub(super) fn labels() -> Field {
    Field::new("labels", "[Label!]!").resolve_sync(|ctx| {
        let c = ctx.parent::<Container>()?;
        Ok(Value::List(
            c.config
                .labels
                .iter()
                .map(|(name, value)| {
                    obj(
                        "Label",
                        Label {
                            name: name.clone(),
                            value: value.clone(),
                        },
                    )
                })
                .collect(),
        ))
    })
}
