//! A small test schema shaped like the Dagger core API.
#![allow(dead_code, clippy::unwrap_used)]

pub mod core_api;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dagr_gql::{
    Arg, ArgValue, Directive, Enum, EnumValue, Field, FieldError, InputObject, Object, Request,
    RequestData, Response, Scalar, Schema, Value,
};
use serde_json::{Value as Json, json};

#[derive(Debug, Clone, Default)]
pub struct Container {
    pub platform: String,
    pub args: Vec<String>,
    pub secret: Option<String>,
    pub mounts: Vec<String>,
}

#[derive(Debug)]
pub struct Mount {
    pub path: String,
}

/// Counts resolver runs (request data; clones share the counter).
#[derive(Default, Clone)]
pub struct Counters {
    pub with_exec: Arc<AtomicUsize>,
}

/// Both `barrierA` and `barrierB` wait on this (request data).
pub struct Gate(pub tokio::sync::Barrier);

fn container(ctx: &dagr_gql::ResolveCtx) -> Result<Arc<Container>, FieldError> {
    ctx.parent_arc::<Container>()
}

fn with(c: &Container, f: impl FnOnce(&mut Container)) -> Value {
    let mut next = c.clone();
    f(&mut next);
    Value::object("Container", Arc::new(next))
}

pub fn schema() -> Schema {
    schema_with(dagr_gql::Limits::default())
}

pub fn schema_with(limits: dagr_gql::Limits) -> Schema {
    let query = Object::new("Query")
        .description("The root of all queries.")
        .field(Field::new("version", "String!").resolve_sync(|_| Ok(Value::leaf("v0.11.8"))))
        .field(
            Field::new("checkVersionCompatibility", "Boolean!")
                .arg(Arg::new("version", "String!"))
                .resolve_sync(|ctx| {
                    Ok(Value::leaf(
                        ctx.arg::<String>("version")?.starts_with("v0.11"),
                    ))
                }),
        )
        .field(
            Field::new("container", "Container!")
                .description("Creates a scratch container.")
                .arg(Arg::new("id", "ContainerID"))
                .arg(
                    Arg::new("platform", "Platform")
                        .description("Platform to initialize the container with."),
                )
                .resolve(|ctx| async move {
                    if ctx.arg_value("id").is_some() {
                        let c = ctx.loaded::<Container>("id")?;
                        return Ok(Value::object("Container", c));
                    }
                    let platform = ctx
                        .arg::<Option<String>>("platform")?
                        .unwrap_or_else(|| "linux/amd64".into());
                    Ok(Value::object(
                        "Container",
                        Arc::new(Container {
                            platform,
                            ..Default::default()
                        }),
                    ))
                }),
        )
        .field(
            Field::new("echo", "JSON")
                .description("Returns its coerced arguments as JSON.")
                .arg(Arg::new("s", "String").default("hi"))
                .arg(Arg::new("n", "Int"))
                .arg(Arg::new("f", "Float"))
                .arg(Arg::new("list", "[String!]").default(json!([])))
                .arg(Arg::new("e", "NetworkProtocol").default("TCP"))
                .arg(Arg::new("input", "BuildArg"))
                .arg(Arg::new("json", "JSON"))
                .resolve_sync(|ctx| {
                    let mut out = serde_json::Map::new();
                    for (k, v) in ctx.args() {
                        out.insert(
                            k.clone(),
                            v.to_json().map_err(|e| FieldError::new(e.to_string()))?,
                        );
                    }
                    Ok(Value::Leaf(Json::Object(out)))
                }),
        )
        .field(
            Field::new("labels", "[String!]!")
                .arg(Arg::new("labels", "[PipelineLabel!]").default(json!([])))
                .resolve_sync(|ctx| {
                    let labels: Vec<Json> = ctx.arg("labels")?;
                    Ok(Value::leaf_list(
                        labels
                            .iter()
                            .map(|l| format!("{}={}", l["name"], l["value"])),
                    ))
                }),
        )
        .field(
            Field::new("nullableFail", "String")
                .resolve_sync(|_| Err(FieldError::new("nullable failure"))),
        )
        .field(
            Field::new("nonNullFail", "String!")
                .resolve_sync(|_| Err(FieldError::new("non-null failure"))),
        )
        .field(Field::new("nullReturn", "String!").resolve_sync(|_| Ok(Value::Null)))
        .field(Field::new("wrongLeaf", "Int").resolve_sync(|_| Ok(Value::leaf("not a number"))))
        .field(
            Field::new("deep", "Deep").resolve_sync(|_| Ok(Value::object("Deep", Arc::new(0u32)))),
        )
        .field(Field::new("deepList", "[Deep]!").resolve_sync(|_| {
            Ok(Value::List(vec![
                Value::object("Deep", Arc::new(0u32)),
                Value::Null,
            ]))
        }))
        .field(Field::new("barrierA", "String!").resolve(|ctx| async move {
            ctx.data::<Gate>()?.0.wait().await;
            Ok(Value::leaf("a"))
        }))
        .field(Field::new("barrierB", "String!").resolve(|ctx| async move {
            ctx.data::<Gate>()?.0.wait().await;
            Ok(Value::leaf("b"))
        }))
        .field(
            Field::new("old", "String")
                .deprecated("Use `version` instead.")
                .resolve_sync(|_| Ok(Value::leaf("old"))),
        )
        .field(Field::new("execError", "String").resolve_sync(|_| {
            Err(
                FieldError::new("process \"false\" did not complete successfully: exit code: 1")
                    .with_extension("_type", "EXEC_ERROR")
                    .with_extension("cmd", json!(["false"]))
                    .with_extension("exitCode", 1)
                    .with_extension("stdout", "")
                    .with_extension("stderr", "boom"),
            )
        }))
        .field(Field::new("nothing", "Void").resolve_sync(|_| Ok(Value::Null)))
        .field(Field::new("panics", "String").resolve(|_| async move {
            if std::hint::black_box(true) {
                panic!("resolver bug");
            }
            Ok(Value::Null)
        }));

    let deep = Object::new("Deep")
        .field(
            Field::new("level", "Int!").resolve_sync(|ctx| Ok(Value::leaf(*ctx.parent::<u32>()?))),
        )
        .field(
            Field::new("inner", "Deep!")
                .resolve_sync(|ctx| Ok(Value::object("Deep", Arc::new(*ctx.parent::<u32>()? + 1)))),
        )
        .field(Field::new("boom", "String!").resolve_sync(|_| Err(FieldError::new("boom"))))
        .field(Field::new("maybe", "String").resolve_sync(|_| Ok(Value::Null)));

    let ctr = Object::new("Container")
        .description("An OCI-compatible container.")
        .with_id()
        .field(
            Field::new("platform", "Platform!")
                .resolve_sync(|ctx| Ok(Value::leaf(container(ctx)?.platform.clone()))),
        )
        .field(
            Field::new("args", "[String!]!")
                .resolve_sync(|ctx| Ok(Value::leaf_list(container(ctx)?.args.clone()))),
        )
        .field(
            Field::new("withExec", "Container!")
                .arg(Arg::new("args", "[String!]!").description("Command to run."))
                .arg(Arg::new("stdin", "String").default(""))
                .arg(Arg::new("protocol", "NetworkProtocol").default("TCP"))
                .resolve(|ctx| async move {
                    let c = container(&ctx)?;
                    if let Ok(counters) = ctx.data::<Counters>() {
                        counters.with_exec.fetch_add(1, Ordering::SeqCst);
                    }
                    // Yield like real work does, so concurrent loads overlap.
                    tokio::task::yield_now().await;
                    let args: Vec<String> = ctx.arg("args")?;
                    Ok(with(&c, |n| n.args.extend(args)))
                }),
        )
        .field(
            Field::new("withSecret", "Container!")
                .arg(Arg::new("plaintext", "String!").sensitive())
                .resolve_sync(|ctx| {
                    let c = container(ctx)?;
                    let secret = match ctx.redacted("plaintext") {
                        Some(digest) => format!("redacted:{digest}"),
                        None => ctx.arg::<String>("plaintext")?,
                    };
                    Ok(with(&c, |n| n.secret = Some(secret)))
                }),
        )
        .field(Field::new("secret", "String").resolve_sync(|ctx| {
            Ok(container(ctx)?
                .secret
                .clone()
                .map_or(Value::Null, Value::leaf))
        }))
        .field(
            Field::new("withDirectory", "Container!")
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("directory", "ContainerID!"))
                .resolve_sync(|ctx| {
                    let c = container(ctx)?;
                    let source = ctx.loaded::<Container>("directory")?;
                    let path: String = ctx.arg("path")?;
                    Ok(with(&c, |n| {
                        n.mounts.push(format!("{path}:{}", source.args.join(" ")))
                    }))
                }),
        )
        .field(
            Field::new("withMounts", "Container!")
                .arg(Arg::new("sources", "[ContainerID!]!"))
                .resolve_sync(|ctx| {
                    let c = container(ctx)?;
                    let sources = ctx.loaded_list::<Container>("sources")?;
                    Ok(with(&c, |n| {
                        n.mounts.extend(sources.iter().map(|s| s.args.join(" ")))
                    }))
                }),
        )
        .field(Field::new("mounts", "[Mount!]!").resolve_sync(|ctx| {
            Ok(Value::List(
                container(ctx)?
                    .mounts
                    .iter()
                    .map(|m| Value::object("Mount", Arc::new(Mount { path: m.clone() })))
                    .collect(),
            ))
        }))
        .field(Field::new("self", "Container!").resolve_sync(|ctx| {
            Ok(Value::object_with_chain(
                "Container",
                container(ctx)?,
                Arc::clone(ctx.parent_chain()),
            ))
        }))
        .field(
            Field::new("sync", "ContainerID!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent_chain().id()))),
        )
        .field(
            Field::new("chainDigest", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent_chain().digest()))),
        );

    let mount = Object::new("Mount").with_id().field(
        Field::new("path", "String!")
            .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Mount>()?.path.clone()))),
    );

    Schema::build()
        .object(query)
        .object(deep)
        .object(ctr)
        .object(mount)
        .enumeration(
            Enum::new("NetworkProtocol")
                .description("Transport layer network protocol")
                .value(EnumValue::new("TCP"))
                .value(EnumValue::new("UDP"))
                .value(EnumValue::new("SCTP").deprecated("Not supported.")),
        )
        .enumeration(Enum::new("CacheSharingMode").values(["SHARED", "PRIVATE", "LOCKED"]))
        .input(
            InputObject::new("BuildArg")
                .description("Key value object that represents a build argument.")
                .field(Arg::new("name", "String!"))
                .field(Arg::new("value", "String!").default("")),
        )
        .input(
            InputObject::new("PipelineLabel")
                .field(Arg::new("name", "String!"))
                .field(Arg::new("value", "String!"))
                .field(Arg::new("legacy", "String").deprecated("Unused.")),
        )
        .scalar(
            Scalar::new("Platform")
                .description("The platform config OS and architecture in a Container."),
        )
        .scalar(Scalar::new("JSON").description("An arbitrary JSON-encoded value."))
        .scalar(Scalar::new("Void").description("The absence of a value."))
        .scalar(Scalar::new("URL").specified_by("https://url.spec.whatwg.org/"))
        .directive(
            Directive::new("impure", &["FIELD_DEFINITION"])
                .description("Marks a field as impure.")
                .arg(Arg::new("reason", "String!")),
        )
        .directive(Directive::new("meta", &["FIELD_DEFINITION"]))
        .limits(limits)
        .finish()
        .unwrap()
}

pub async fn run(schema: &Schema, query: &str, variables: Json) -> Response {
    schema
        .execute(Request::new(query).variables(variables), RequestData::new())
        .await
}

pub async fn run_json(schema: &Schema, query: &str, variables: Json) -> Json {
    run(schema, query, variables).await.to_json()
}

/// Extracts `data` from a successful response, panicking with the errors otherwise.
pub fn ok_data(response: Response) -> Json {
    assert!(
        response.errors.is_empty(),
        "unexpected errors: {:#?}",
        response.errors
    );
    response.data.unwrap()
}

pub fn arg_is_redacted(v: &ArgValue) -> bool {
    matches!(v, ArgValue::Redacted { .. })
}
