//! Function calls: `Module.initialize` (the registration call), the schema a served module adds
//! ([`extend`]), the call of a function as an exec of the runtime container, and what the SDK
//! inside reads and answers: `currentFunctionCall` (`FunctionCall`, `FunctionCallArgValue`),
//! `currentModule` (`CurrentModule`) and `currentTypeDefs`.

use std::sync::Arc;

use dagr_gql::{
    Arg, ArgValue, Field, FieldError, Object, Request, ResolveCtx, SchemaBuilder, Value,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::runtime::{RuntimeSource, runtime_for};
use super::source::{ModuleSource, id_below, single_leaf};
use super::typedef::{Function, Kind, ObjectTypeDef, TypeDef, lower_camel};
use super::{Initialized, Module, read_text, text};
use crate::container::exec::{ExecSpec, exec_container};
use crate::state::{Container, ContainerMount, Directory, Fs, MountKind};
use crate::{caller, graph_err, obj, services};

/// Where the exec of a call finds its metadata directory; the SDK's answer is written to
/// `output.json` in it (Dagger's `/.daggermod`).
const META_DIR: &str = "/.daggermod";
const OUTPUT_FILE: &str = "output.json";

/// What a function call is: the nested client of its exec reads it back with
/// `currentFunctionCall`. Serialized into the exec (`ExecOp::nested_call`), so results are
/// keyed by it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallIdentity {
    pub module_name: String,
    /// The digest of the module's runtime container (see [`Initialized::digest`]).
    pub module_digest: String,
    /// The function's name as the SDK registered it; empty for registration and constructors.
    pub name: String,
    /// The parent object's name as registered; empty for registration.
    pub parent_name: String,
    /// The parent object's state (JSON text; empty for registration).
    pub parent: String,
    pub input_args: Vec<CallArgValue>,
}

/// One argument of a call: its registered name and its JSON text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallArgValue {
    pub name: String,
    pub value: String,
}

/// An instance of a module's object: its state, as the SDK serialized it.
#[derive(Clone, Debug)]
pub struct ModuleObject {
    /// The object's name as registered.
    pub name: String,
    pub state: serde_json::Map<String, Json>,
}

/// What `currentModule` answers.
struct CurrentModule {
    module: Arc<Module>,
}

pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let call = Object::new("FunctionCall")
        .with_id()
        .field(
            Field::new("inputArgs", "[FunctionCallArgValue!]!").resolve_sync(|ctx| {
                let call = ctx.parent::<CallIdentity>()?;
                Ok(Value::List(
                    call.input_args
                        .iter()
                        .map(|a| obj("FunctionCallArgValue", a.clone()))
                        .collect(),
                ))
            }),
        )
        .field(text::<CallIdentity>("name", |c| c.name.clone()))
        .field(
            Field::new("parent", "JSON!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<CallIdentity>()?.parent.clone()))),
        )
        .field(text::<CallIdentity>("parentName", |c| {
            c.parent_name.clone()
        }))
        .field(
            Field::new("returnValue", "Void")
                .arg(Arg::new("value", "JSON!"))
                .resolve(|ctx| async move { return_value(&ctx).await }),
        );
    let arg_value = Object::new("FunctionCallArgValue")
        .with_id()
        .field(text::<CallArgValue>("name", |a| a.name.clone()))
        .field(
            Field::new("value", "JSON!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<CallArgValue>()?.value.clone()))),
        );
    let current = Object::new("CurrentModule")
        .with_id()
        .field(text::<CurrentModule>("name", |c| c.module.name.clone()))
        .field(
            Field::new("source", "Directory!").resolve(|ctx| async move {
                let c = ctx.parent_arc::<CurrentModule>()?;
                let src = c
                    .module
                    .source
                    .as_ref()
                    .ok_or_else(|| FieldError::new("the module has no source"))?;
                let config = src.config(&ctx).await?;
                let subpath = src.source_subpath(config.as_ref());
                Ok(obj(
                    "Directory",
                    Directory {
                        fs: src.context.fs.clone(),
                        path: crate::state::join(&src.context.path, &subpath),
                    },
                ))
            }),
        )
        .field(
            Field::new("workdir", "Directory!")
                .arg(Arg::new("exclude", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("include", "[String!]").default(serde_json::json!([])))
                .arg(Arg::new("path", "String!"))
                .resolve_sync(|ctx| {
                    // The runtime container is the call's host: its working directory is the
                    // module's, with what the call wrote there.
                    let caller = caller(ctx)?;
                    let path: String = ctx.arg("path")?;
                    let include: Option<Vec<String>> = ctx.arg("include")?;
                    let exclude: Option<Vec<String>> = ctx.arg("exclude")?;
                    let fs = crate::query::host_dir(
                        &caller,
                        &path,
                        include.unwrap_or_default(),
                        exclude.unwrap_or_default(),
                    )?;
                    Ok(obj(
                        "Directory",
                        Directory {
                            fs,
                            path: "/".into(),
                        },
                    ))
                }),
        )
        .field(
            Field::new("workdirFile", "File!")
                .arg(Arg::new("path", "String!"))
                .resolve(|ctx| async move {
                    let path: String = ctx.arg("path")?;
                    let q = format!(
                        "{{ host {{ file(path: {}) {{ id }} }} }}",
                        Json::String(path)
                    );
                    let id = single_leaf(&ctx.execute(Request::new(&q)).await, "workdirFile")?;
                    Ok(ctx.load(&id).await?.to_value())
                }),
        );
    b.object(call).object(arg_value).object(current)
}

/// The call the caller runs for.
fn current_call(ctx: &ResolveCtx) -> Result<Arc<CallIdentity>, FieldError> {
    let s = services(ctx)?;
    let caller = caller(ctx)?;
    s.modules.call_of(&caller.client).ok_or_else(|| {
        FieldError::new(
            "the caller is not a module function call (only a module's runtime has a current call)",
        )
    })
}

/// `Query.currentFunctionCall`.
pub(crate) fn query_current_function_call() -> Field {
    Field::new("currentFunctionCall", "FunctionCall!")
        .resolve_sync(|ctx| Ok(obj("FunctionCall", (*current_call(ctx)?).clone())))
}

/// `Query.currentModule`.
pub(crate) fn query_current_module() -> Field {
    Field::new("currentModule", "CurrentModule!").resolve_sync(|ctx| {
        let call = current_call(ctx)?;
        let caller = caller(ctx)?;
        let module = services(ctx)?
            .modules
            .module_of_call(&caller.client)
            .ok_or_else(|| {
                FieldError::new(format!(
                    "module {} is not loaded in this session",
                    call.module_name
                ))
            })?;
        Ok(obj("CurrentModule", CurrentModule { module }))
    })
}

/// `Query.currentTypeDefs`: the object definitions of the modules the caller serves (for a
/// function call: its module's dependencies).
pub(crate) fn query_current_type_defs() -> Field {
    Field::new("currentTypeDefs", "[TypeDef!]!").resolve_sync(|ctx| {
        let s = services(ctx)?;
        let caller = caller(ctx)?;
        let mut modules = s
            .modules
            .served
            .lock()
            .get(&caller.client)
            .cloned()
            .unwrap_or_default();
        if let Some(m) = s.modules.module_of_call(&caller.client)
            && let Some(init) = &m.initialized
        {
            modules.extend(init.dependencies.iter().cloned());
        }
        Ok(Value::List(
            modules
                .iter()
                .flat_map(|m| m.objects.iter().map(|t| obj("TypeDef", schema_named(m, t))))
                .collect(),
        ))
    })
}

/// A type definition with its objects under their schema names.
fn schema_named(m: &Module, t: &TypeDef) -> TypeDef {
    let mut t = t.clone();
    if let Kind::Object(o) = &mut t.kind {
        o.name = m.object_schema_name(&o.name);
    }
    t
}

/// `FunctionCall.returnValue`: writes the answer into the call's metadata directory.
async fn return_value(ctx: &ResolveCtx) -> Result<Value, FieldError> {
    let s = services(ctx)?;
    let caller = caller(ctx)?;
    current_call(ctx)?;
    let value: String = ctx.arg("value")?;
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<tempfile::NamedTempFile> {
        let mut f = tempfile::NamedTempFile::new()?;
        std::io::Write::write_all(&mut f, value.as_bytes())?;
        Ok(f)
    })
    .await
    .map_err(|e| FieldError::new(e.to_string()))?
    .map_err(|e| FieldError::new(format!("writing the return value: {e}")))?;
    s.host
        .push_file(
            &caller.client,
            file.path(),
            &format!("{META_DIR}/{OUTPUT_FILE}"),
            false,
        )
        .await
        .map_err(|e| FieldError::new(format!("writing the return value: {e}")))?;
    Ok(Value::Null)
}

/// `Module.initialize`: builds the runtime, initializes the dependencies and runs the
/// registration call.
pub(crate) async fn initialize(ctx: &ResolveCtx) -> Result<Value, FieldError> {
    let m = ctx.parent_arc::<Module>()?;
    let module_id = ctx.parent_chain().id();
    let module = initialize_module(ctx, (*m).clone(), module_id, Vec::new()).await?;
    Ok(obj("Module", (*module).clone()))
}

/// Initializes the dependencies of the module `name` (whose source is `src`); `stack` holds the
/// host paths of the modules being initialized, to find cycles.
pub(crate) async fn initialize_dependencies(
    ctx: &ResolveCtx,
    name: &str,
    src: &ModuleSource,
    stack: &[String],
) -> Result<Vec<Arc<Module>>, FieldError> {
    let mut dependencies = Vec::new();
    for dep in src.dependencies(ctx).await? {
        let what = format!("dependency {} of module {name}", dep.source.ref_string);
        let config = dep.source.config(ctx).await?.ok_or_else(|| {
            FieldError::new(format!(
                "{what}: {}/dagger.json: no such file",
                dep.source.key()
            ))
        })?;
        let dep_module = Module {
            name: config.name,
            sdk: config.sdk.unwrap_or_default(),
            source: Some(dep.source.clone()),
            ..Default::default()
        };
        let dep_id = dep_module_id(&dep.source);
        let initialized = initialize_module(ctx, dep_module, dep_id, stack.to_vec())
            .await
            .map_err(|e| prefixed(e, &what))?;
        dependencies.push(initialized);
    }
    Ok(dependencies)
}

fn initialize_module<'a>(
    ctx: &'a ResolveCtx,
    m: Module,
    module_id: String,
    mut stack: Vec<String>,
) -> BoxFuture<'a, Result<Arc<Module>, FieldError>> {
    Box::pin(async move {
        let s = services(ctx)?;
        let caller = caller(ctx)?;
        let src = m.source.clone().ok_or_else(|| {
            FieldError::new(format!("module {} has no source to initialize", m.name))
        })?;
        if stack.contains(&src.key()) {
            stack.push(src.key());
            return Err(FieldError::new(format!(
                "dependency cycle between modules: {}",
                stack.join(" -> ")
            )));
        }
        stack.push(src.key());
        let config = src.config(ctx).await?.ok_or_else(|| {
            FieldError::new(format!("{}/dagger.json: no such file", src.ref_string))
        })?;
        let runtime = runtime_for(&m.sdk)
            .ok_or_else(|| FieldError::new(format!("sdk {:?} is not supported", m.sdk)))?;

        // Dependencies first: their schemas are part of this module's view.
        let dependencies = initialize_dependencies(ctx, &m.name, &src, &stack).await?;

        // The runtime container.
        let subpath = src.source_subpath(Some(&config));
        let config_text = match runtime.config_file() {
            Some(file) => read_text(ctx, &src.context, &crate::state::join(&subpath, file)).await?,
            None => None,
        };
        let context_id = id_below(
            &chain_of_source(&module_id),
            &[("contextDirectory", "Directory")],
        );
        let query = runtime
            .container_query(
                &RuntimeSource {
                    source_subpath: &subpath,
                    config_file: config_text.as_deref(),
                    dependencies: &dependencies,
                },
                &s.modules.settings,
            )
            .map_err(|e| FieldError::new(format!("module {}: {e}", m.name)))?;
        let request = Request::new(&query).variables(serde_json::json!({ "context": context_id }));
        let runtime_id = single_leaf(
            &ctx.execute(request).await,
            &format!("building the runtime of module {}", m.name),
        )?;
        let runtime_ctr = ctx
            .load(&runtime_id)
            .await?
            .downcast::<Container>()
            .ok_or_else(|| FieldError::new("the runtime is not a container"))?;
        let solved = s
            .solver
            .solve(&runtime_ctr.rootfs.vertex, &caller.session_id, &caller.span)
            .await
            .map_err(|e| {
                prefixed(
                    s.solve_error(&caller, &e),
                    &format!("building the runtime of module {}", m.name),
                )
            })?;
        let digest = solved.key.to_string();

        let mut module = m.clone();
        module.initialized = Some(Arc::new(Initialized {
            runtime_id,
            runtime: (*runtime_ctr).clone(),
            digest: digest.clone(),
            dependencies,
        }));
        // Registered before the call: the call's `currentModule` reads it.
        let module = Arc::new(module);
        s.modules.remember(&caller.session_id, module.clone());

        let identity = CallIdentity {
            module_name: m.name.clone(),
            module_digest: digest,
            name: String::new(),
            parent_name: String::new(),
            parent: String::new(),
            input_args: Vec::new(),
        };
        let answer = run_call(ctx, &module, identity).await.map_err(|e| {
            prefixed(
                e,
                &format!(
                    "registering module {} (its runtime failed to load it)",
                    m.name
                ),
            )
        })?;
        let registered_id = answer.as_str().ok_or_else(|| {
            FieldError::new(format!(
                "registering module {}: the runtime answered no module ID",
                m.name
            ))
        })?;
        let registered = ctx
            .load(registered_id)
            .await?
            .downcast::<Module>()
            .ok_or_else(|| FieldError::new("the registration answered no module"))?;
        let mut done = (*module).clone();
        done.description = registered.description.clone();
        done.interfaces = registered.interfaces.clone();
        done.objects = registered
            .objects
            .iter()
            .cloned()
            .map(|mut t| {
                if let Kind::Object(o) = &mut t.kind {
                    o.source_module_name = m.name.clone();
                }
                t
            })
            .collect();
        if done.object(&done.main_object_name()).is_none() {
            return Err(FieldError::new(format!(
                "module {} registered no object named {} (the main object is named after the module)",
                m.name,
                done.main_object_name()
            )));
        }
        let done = Arc::new(done);
        s.modules.remember(&caller.session_id, done.clone());
        Ok(done)
    })
}

/// The chain of `Module.source` below a module's chain.
fn chain_of_source(module_id: &str) -> Arc<dagr_gql::CallChain> {
    let chain =
        dagr_gql::CallChain::decode(module_id).unwrap_or_else(|_| dagr_gql::CallChain::root());
    chain.append(dagr_gql::Call {
        field: "source".into(),
        args: Vec::new(),
        type_name: "ModuleSource".into(),
        nth: None,
        scope: None,
    })
}

/// The ID of a dependency's module (`moduleSource(...).asModule`, recorded as a call chain of
/// its source's owner).
fn dep_module_id(src: &ModuleSource) -> String {
    let chain = dagr_gql::CallChain::root()
        .append(dagr_gql::Call {
            field: "moduleSource".into(),
            args: vec![(
                "refString".into(),
                dagr_gql::CallArg::Value(Json::String(src.pinned_ref())),
            )],
            type_name: "ModuleSource".into(),
            nth: None,
            scope: match &src.location {
                super::source::Location::Local { owner, .. } => Some(owner.client_id.clone()),
                _ => None,
            },
        })
        .append(dagr_gql::Call {
            field: "asModule".into(),
            args: Vec::new(),
            type_name: "Module".into(),
            nth: None,
            scope: None,
        });
    chain.id()
}

fn prefixed(mut e: FieldError, what: &str) -> FieldError {
    e.message = format!("{what}: {}", e.message);
    e
}

/// Runs one call of `module` and answers the JSON the SDK returned.
async fn run_call(
    ctx: &ResolveCtx,
    module: &Module,
    identity: CallIdentity,
) -> Result<Json, FieldError> {
    let s = services(ctx)?;
    let caller = caller(ctx)?;
    let init = module
        .initialized
        .as_ref()
        .ok_or_else(|| FieldError::new(format!("module {} is not initialized", module.name)))?;
    let mut c = init.runtime.clone();
    c.mounts.retain(|m| m.target != META_DIR);
    c.mounts.push(ContainerMount {
        target: META_DIR.into(),
        kind: MountKind::Fs {
            fs: Fs::scratch().map_err(graph_err)?,
            path: "/".into(),
            file: false,
        },
    });
    let what = if identity.name.is_empty() && identity.parent_name.is_empty() {
        format!("registering module {}", module.name)
    } else if identity.name.is_empty() {
        format!("call constructor of {}", identity.parent_name)
    } else {
        format!("call function \"{}\"", identity.name)
    };
    let nested_call =
        serde_json::to_string(&identity).map_err(|e| FieldError::new(e.to_string()))?;
    let c = exec_container(
        c,
        ExecSpec {
            nested_call: Some(nested_call),
            ..Default::default()
        },
    )?;
    let exec = c
        .last_exec
        .clone()
        .ok_or_else(|| FieldError::new("the function call built no exec"))?;
    s.solve(&caller, &exec)
        .await
        .map_err(|e| prefixed(e, &what))?;
    let meta = c
        .mounts
        .iter()
        .find(|m| m.target == META_DIR)
        .and_then(|m| match &m.kind {
            MountKind::Fs { fs, .. } => Some(fs.clone()),
            _ => None,
        })
        .ok_or_else(|| FieldError::new("the function call lost its metadata mount"))?;
    let dir = Directory {
        fs: meta,
        path: "/".into(),
    };
    let text = read_text(ctx, &dir, OUTPUT_FILE).await?.ok_or_else(|| {
        FieldError::new(format!(
            "{what}: the runtime exited without returning a value"
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| FieldError::new(format!("{what}: the returned value is not JSON: {e}")))
}

/// A type's name in argument position: objects by ID.
fn input_type(m: &Module, t: &TypeDef) -> String {
    let base = match &t.kind {
        Kind::String => "String".to_owned(),
        Kind::Integer => "Int".to_owned(),
        Kind::Boolean => "Boolean".to_owned(),
        Kind::Void => "Void".to_owned(),
        Kind::Scalar(s) => s.name.clone(),
        Kind::List(item) => format!("[{}]", input_type(m, item)),
        Kind::Object(o) => format!("{}ID", object_name(m, &o.name)),
        Kind::Interface(i) => format!("{}ID", object_name(m, &i.name)),
        Kind::Input(i) => i.name.clone(),
    };
    if t.optional { base } else { format!("{base}!") }
}

/// A type's name in result position.
fn output_type(m: &Module, t: &TypeDef) -> String {
    let base = match &t.kind {
        Kind::List(item) => format!("[{}]", output_type(m, item)),
        Kind::Object(o) => object_name(m, &o.name),
        Kind::Interface(i) => object_name(m, &i.name),
        _ => return input_type(m, t),
    };
    if t.optional || matches!(t.kind, Kind::Void) {
        base
    } else {
        format!("{base}!")
    }
}

/// The schema name of an object named `name` by the module: its own (namespaced) or a core one.
fn object_name(m: &Module, name: &str) -> String {
    if m.objects
        .iter()
        .filter_map(TypeDef::as_object)
        .any(|o| o.name == name)
    {
        m.object_schema_name(name)
    } else {
        name.to_owned()
    }
}

/// What a function's argument becomes for the SDK: JSON (core objects by ID, module objects by
/// state).
fn to_sdk(v: &ArgValue) -> Result<Json, FieldError> {
    Ok(match v {
        ArgValue::Loaded(lo) => match lo.downcast::<ModuleObject>() {
            Some(o) => Json::Object(o.state.clone()),
            None => Json::String(lo.id()),
        },
        ArgValue::List(items) => Json::Array(items.iter().map(to_sdk).collect::<Result<_, _>>()?),
        other => other
            .to_json()
            .map_err(|e| FieldError::new(e.to_string()))?,
    })
}

/// What an SDK's answer of type `t` becomes in the caller's schema.
fn from_sdk<'a>(
    ctx: &'a ResolveCtx,
    m: &'a Module,
    t: &'a TypeDef,
    v: Json,
) -> BoxFuture<'a, Result<Value, FieldError>> {
    Box::pin(async move {
        if v.is_null() {
            return match t.kind {
                Kind::Void => Ok(Value::Null),
                _ if t.optional => Ok(Value::Null),
                _ => Err(FieldError::new(format!(
                    "the function returned null for a {}",
                    t.display_name()
                ))),
            };
        }
        match &t.kind {
            Kind::List(item) => {
                let Json::Array(items) = v else {
                    return Err(FieldError::new(
                        "the function returned a non-list for a list",
                    ));
                };
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(from_sdk(ctx, m, item, i).await?);
                }
                Ok(Value::List(out))
            }
            Kind::Object(o)
                if m.objects
                    .iter()
                    .filter_map(TypeDef::as_object)
                    .any(|mo| mo.name == o.name) =>
            {
                let state = match v {
                    Json::Object(map) => map,
                    other => {
                        return Err(FieldError::new(format!(
                            "the function returned {other} for an object {}",
                            o.name
                        )));
                    }
                };
                Ok(Value::object(
                    &m.object_schema_name(&o.name),
                    Arc::new(ModuleObject {
                        name: o.name.clone(),
                        state,
                    }),
                ))
            }
            Kind::Object(_) | Kind::Interface(_) => {
                let id = v.as_str().ok_or_else(|| {
                    FieldError::new(format!(
                        "the function returned {v} for a {}",
                        t.display_name()
                    ))
                })?;
                Ok(ctx.load(id).await?.to_value())
            }
            Kind::Void => Ok(Value::Null),
            _ => Ok(Value::leaf(v)),
        }
    })
}

/// Calls `f` of the object `o` of `m` on `parent` with the resolver's arguments.
async fn invoke(
    ctx: ResolveCtx,
    m: Arc<Module>,
    o: Arc<ObjectTypeDef>,
    f: Arc<Function>,
    constructor: bool,
) -> Result<Value, FieldError> {
    // The module as the caller has it (see `Modules::live_module`).
    let caller = caller(&ctx)?;
    let m = services(&ctx)?
        .modules
        .live_module(&caller.client, &m.name)
        .ok_or_else(|| {
            FieldError::new(format!("module {} is not served to this client", m.name))
        })?;
    let parent = if constructor {
        String::new()
    } else {
        let p = ctx.parent::<ModuleObject>()?;
        Json::Object(p.state.clone()).to_string()
    };
    let mut input_args = Vec::new();
    for a in &f.args {
        match ctx.arg_value(&lower_camel(&a.name)) {
            None | Some(ArgValue::Null) => {}
            Some(v) => input_args.push(CallArgValue {
                name: a.name.clone(),
                value: to_sdk(v)?.to_string(),
            }),
        }
    }
    let identity = CallIdentity {
        module_name: m.name.clone(),
        module_digest: m.digest().to_owned(),
        name: if constructor {
            String::new()
        } else {
            f.name.clone()
        },
        parent_name: o.name.clone(),
        parent,
        input_args,
    };
    let answer = run_call(&ctx, &m, identity).await?;
    let return_type = if constructor {
        TypeDef {
            kind: Kind::Object((*o).clone()),
            optional: false,
        }
    } else {
        f.return_type.clone()
    };
    from_sdk(&ctx, &m, &return_type, answer).await
}

/// A field for function `f` of object `o`.
fn function_field(
    m: &Arc<Module>,
    o: &Arc<ObjectTypeDef>,
    f: &Function,
    name: String,
    constructor: bool,
) -> Field {
    let ty = if constructor {
        format!("{}!", m.object_schema_name(&o.name))
    } else {
        output_type(m, &f.return_type)
    };
    let mut field = Field::new(&name, &ty).description(&f.description);
    for a in &f.args {
        let mut arg = Arg::new(&lower_camel(&a.name), &input_type(m, &a.type_def))
            .description(&a.description);
        if let Some(default) = a
            .default_value
            .as_deref()
            .and_then(|d| serde_json::from_str::<Json>(d).ok())
        {
            arg = arg.default(default);
        }
        field = field.arg(arg);
    }
    let (m, o, f) = (m.clone(), o.clone(), Arc::new(f.clone()));
    field.resolve(move |ctx| invoke(ctx, m.clone(), o.clone(), f.clone(), constructor))
}

/// The schema a served module adds: its objects and a `Query` field for its main object.
pub(crate) fn extend(mut b: SchemaBuilder, m: &Arc<Module>) -> SchemaBuilder {
    for o in m.objects.iter().filter_map(TypeDef::as_object) {
        let o = Arc::new(o.clone());
        let mut object = Object::new(&m.object_schema_name(&o.name)).with_id();
        if !o.description.is_empty() {
            object = object.description(&o.description);
        }
        for fd in &o.fields {
            let (m2, ty) = (m.clone(), fd.type_def.clone());
            let key = fd.name.clone();
            object = object.field(
                Field::new(&lower_camel(&fd.name), &output_type(m, &fd.type_def))
                    .description(&fd.description)
                    .resolve(move |ctx| {
                        let (m2, ty, key) = (m2.clone(), ty.clone(), key.clone());
                        async move {
                            let state = ctx.parent::<ModuleObject>()?;
                            let v = state.state.get(&key).cloned().unwrap_or(Json::Null);
                            from_sdk(&ctx, &m2, &ty, v).await
                        }
                    }),
            );
        }
        for f in &o.functions {
            object = object.field(function_field(m, &o, f, lower_camel(&f.name), false));
        }
        b = b.object(object);
        if m.object_schema_name(&o.name) == m.main_object_name() {
            let constructor = o.constructor.as_deref().cloned().unwrap_or(Function {
                name: String::new(),
                description: o.description.clone(),
                args: Vec::new(),
                return_type: TypeDef::default(),
            });
            let field = if o.constructor.is_some() {
                function_field(m, &o, &constructor, lower_camel(&m.name), true)
            } else {
                let name = m.object_schema_name(&o.name);
                let obj_name = o.name.clone();
                Field::new(&lower_camel(&m.name), &format!("{name}!")).resolve_sync(move |_| {
                    Ok(Value::object(
                        &name,
                        Arc::new(ModuleObject {
                            name: obj_name.clone(),
                            state: Default::default(),
                        }),
                    ))
                })
            };
            b = b.extend_object("Query", [field]);
        }
    }
    b
}
