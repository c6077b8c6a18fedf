//! Modules and functions (Dagger's `core/module*.go`, `modfunc.go`, `typedef.go`).
//!
//! - [`source`]: `ModuleSource` (local kind): a directory of a client's host with a
//!   `dagger.json` ([`ModuleConfig`]), read when it is solved.
//! - `Module`: `ModuleSource.asModule` gives one; `initialize` builds its runtime container
//!   ([`runtime::ModuleRuntime`]) and runs the registration call, which answers the module's type
//!   definitions ([`typedef`]); `serve` adds it to the caller's schema.
//! - [`call`]: a function call is an exec of the runtime container with privileged nesting whose
//!   nested client carries the call's identity ([`call::CallIdentity`], through
//!   `ExecOp::nested_call`); the SDK reads it with `currentFunctionCall` and answers with
//!   `returnValue`, which the engine writes into the exec's `/.daggermod/output.json`, an output
//!   of the exec: results are cached by the solver per module digest, parent, function and
//!   arguments like any exec.
//! - [`Modules`]: what each client serves and which call each nested client runs for; the
//!   schema of a client that serves modules is the core schema extended with theirs
//!   ([`Modules::schema_for`]), so other clients keep their own view.

pub mod call;
pub mod codegen_python;
pub mod runtime;
pub mod source;
pub mod typedef;

use std::collections::HashMap;
use std::sync::Arc;

use dagr_gql::{Arg, Field, FieldError, Object, Schema, SchemaBuilder, Value};
use dagr_metadata::ClientRef;
use parking_lot::Mutex;

use crate::state::{Container, Directory};
use crate::{caller, obj, services};
use typedef::{Kind, TypeDef};

pub use call::CallIdentity;
pub use runtime::{ModuleRuntime, PythonRuntime, RuntimeSettings};
pub use source::{ModuleConfig, ModuleSource};

/// A module: its definitions (after `initialize`), its source and runtime.
#[derive(Clone, Debug, Default)]
pub struct Module {
    /// As in `dagger.json` (empty for a `Query.module` built by an SDK).
    pub name: String,
    pub description: String,
    pub sdk: String,
    pub source: Option<ModuleSource>,
    /// Object type definitions, the main object (named after the module) among them.
    pub objects: Vec<TypeDef>,
    pub interfaces: Vec<TypeDef>,
    /// Set by `initialize`.
    pub initialized: Option<Arc<Initialized>>,
}

/// What `initialize` adds to a module.
#[derive(Debug)]
pub struct Initialized {
    /// `ContainerID` of the runtime container.
    pub runtime_id: String,
    pub runtime: Container,
    /// The cache key of the runtime container: the digest of everything the module's code is
    /// (source, SDK, base image); function calls are keyed by it.
    pub digest: String,
    pub dependencies: Vec<Arc<Module>>,
}

impl Module {
    /// The schema name of the main object.
    pub fn main_object_name(&self) -> String {
        typedef::pascal(&self.name)
    }

    /// The schema name of an object of this module: Dagger namespaces objects other than the
    /// main one with the module's name.
    pub fn object_schema_name(&self, name: &str) -> String {
        let main = self.main_object_name();
        let name = typedef::pascal(name);
        if name.starts_with(&main) {
            name
        } else {
            format!("{main}{name}")
        }
    }

    /// The object definition of schema name `name`.
    pub fn object(&self, schema_name: &str) -> Option<&typedef::ObjectTypeDef> {
        self.objects
            .iter()
            .filter_map(TypeDef::as_object)
            .find(|o| self.object_schema_name(&o.name) == schema_name)
    }

    fn digest(&self) -> &str {
        self.initialized
            .as_ref()
            .map(|i| i.digest.as_str())
            .unwrap_or("")
    }
}

/// Modules of the engine's clients.
#[derive(Default)]
pub struct Modules {
    /// Modules each client serves, in the order served.
    served: Mutex<HashMap<ClientRef, Vec<Arc<Module>>>>,
    /// The call each nested client of a function call runs for.
    calls: Mutex<HashMap<ClientRef, Arc<CallIdentity>>>,
    /// Initialized modules by session and digest: the module of a call (`currentModule`, and
    /// the dependencies its nested client sees). Per session: a module's runtime reads its
    /// source from a client of the session that initialized it.
    by_digest: Mutex<HashMap<(String, String), Arc<Module>>>,
    /// Extended schemas by the digests of their modules.
    schemas: Mutex<HashMap<String, Schema>>,
    /// Runtime settings (from the engine's flags).
    pub settings: RuntimeSettings,
}

/// Extended schemas kept at most (each is a full copy of the core schema's definitions).
const SCHEMAS_KEPT: usize = 64;

impl Modules {
    pub fn new(settings: RuntimeSettings) -> Modules {
        Modules {
            settings,
            ..Default::default()
        }
    }

    /// The schema `client` sees: `core` extended with the modules it serves (and, for the
    /// nested client of a function call, with the dependencies of the call's module).
    pub fn schema_for(&self, client: &ClientRef, core: &Schema) -> Result<Schema, FieldError> {
        let mut modules = self.served.lock().get(client).cloned().unwrap_or_default();
        if let Some(module) = self.module_of_call(client)
            && let Some(init) = &module.initialized
        {
            modules.extend(init.dependencies.iter().cloned());
        }
        if modules.is_empty() {
            return Ok(core.clone());
        }
        let key = modules
            .iter()
            .map(|m| format!("{}@{}", m.name, m.digest()))
            .collect::<Vec<_>>()
            .join(",");
        if let Some(schema) = self.schemas.lock().get(&key) {
            return Ok(schema.clone());
        }
        let mut builder = crate::core_builder();
        for module in &modules {
            builder = call::extend(builder, module);
        }
        let schema = builder
            .finish()
            .map_err(|e| FieldError::new(format!("serving the modules' schema failed: {e}")))?;
        let mut schemas = self.schemas.lock();
        if schemas.len() >= SCHEMAS_KEPT {
            schemas.clear();
        }
        schemas.insert(key, schema.clone());
        Ok(schema)
    }

    /// Adds `module` to what `client` serves (serving it again is a no-op; another module of
    /// the same name is refused).
    fn serve(&self, client: &ClientRef, module: Arc<Module>) -> Result<(), FieldError> {
        let mut served = self.served.lock();
        let list = served.entry(client.clone()).or_default();
        if let Some(other) = list.iter().find(|m| m.name == module.name) {
            if other.digest() == module.digest() {
                return Ok(());
            }
            return Err(FieldError::new(format!(
                "a module named {} is already served to this client",
                module.name
            )));
        }
        list.push(module);
        Ok(())
    }

    fn remember(&self, session_id: &str, module: Arc<Module>) {
        let key = (session_id.to_owned(), module.digest().to_owned());
        self.by_digest.lock().insert(key, module);
    }

    /// The module of the call the nested client `client` runs for.
    pub(crate) fn module_of_call(&self, client: &ClientRef) -> Option<Arc<Module>> {
        let call = self.call_of(client)?;
        let key = (client.session_id.clone(), call.module_digest.clone());
        self.by_digest.lock().get(&key).cloned()
    }

    /// The module named `name` as `client` has it: one it serves, or, for the nested client of
    /// a function call, a dependency of the call's module. Function calls run on this one (its
    /// runtime reads the module's source from a client of `client`'s session); the schema's
    /// resolvers, shared by clients serving the same module, hold only its definitions.
    pub(crate) fn live_module(&self, client: &ClientRef, name: &str) -> Option<Arc<Module>> {
        if let Some(m) = self
            .served
            .lock()
            .get(client)
            .and_then(|list| list.iter().find(|m| m.name == name).cloned())
        {
            return Some(m);
        }
        let call_module = self.module_of_call(client)?;
        if call_module.name == name {
            return Some(call_module);
        }
        call_module
            .initialized
            .as_ref()?
            .dependencies
            .iter()
            .find(|d| d.name == name)
            .cloned()
    }

    /// The call the nested client `client` runs for, if it is one.
    pub fn call_of(&self, client: &ClientRef) -> Option<Arc<CallIdentity>> {
        self.calls.lock().get(client).cloned()
    }

    /// Marks `client` (a nested client being served) as running the call `call` (an exec's
    /// `nested_call`); undone by [`Modules::leave_call`]. A call that is not a function call's
    /// identity is ignored.
    pub fn enter_call(&self, client: ClientRef, call: &str) {
        match serde_json::from_str::<CallIdentity>(call) {
            Ok(identity) => {
                self.calls.lock().insert(client, Arc::new(identity));
            }
            Err(e) => tracing::warn!(error = %e, "nested call is not a function call"),
        }
    }

    pub fn leave_call(&self, client: &ClientRef) {
        self.calls.lock().remove(client);
    }

    /// Forgets what the session's clients served.
    pub fn release_session(&self, session_id: &str) {
        self.served.lock().retain(|c, _| c.session_id != session_id);
        self.calls.lock().retain(|c, _| c.session_id != session_id);
        self.by_digest.lock().retain(|(s, _), _| s != session_id);
    }
}

/// Adds the module objects and their `Query` fields to the core schema.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let b = typedef::register(b);
    let b = source::register(b);
    let b = call::register(b);
    let b = register_generated_code(b);
    let module = Object::new("Module")
        .with_id()
        .field(
            Field::new("dependencies", "[Module!]!").resolve_sync(|ctx| {
                let m = ctx.parent::<Module>()?;
                let deps = m
                    .initialized
                    .as_ref()
                    .map(|i| i.dependencies.clone())
                    .unwrap_or_default();
                Ok(Value::List(
                    deps.iter().map(|d| obj("Module", (**d).clone())).collect(),
                ))
            }),
        )
        .field(source::module_dependency_config())
        .field(text::<Module>("description", |m| m.description.clone()))
        .field(generated_context_diff())
        .field(generated_context_directory())
        .field(
            Field::new("initialize", "Module!")
                .resolve(|ctx| async move { call::initialize(&ctx).await }),
        )
        .field(Field::new("interfaces", "[TypeDef!]!").resolve_sync(|ctx| {
            let m = ctx.parent::<Module>()?;
            Ok(Value::List(
                m.interfaces
                    .iter()
                    .map(|t| obj("TypeDef", t.clone()))
                    .collect(),
            ))
        }))
        .field(text::<Module>("name", |m| m.name.clone()))
        .field(Field::new("objects", "[TypeDef!]!").resolve_sync(|ctx| {
            let m = ctx.parent::<Module>()?;
            Ok(Value::List(
                m.objects
                    .iter()
                    .map(|t| obj("TypeDef", t.clone()))
                    .collect(),
            ))
        }))
        .field(
            Field::new("runtime", "Container!").resolve(|ctx| async move {
                let m = ctx.parent_arc::<Module>()?;
                let init = m.initialized.as_ref().ok_or_else(|| not_initialized(&m))?;
                Ok(ctx.load(&init.runtime_id).await?.to_value())
            }),
        )
        .field(text::<Module>("sdk", |m| m.sdk.clone()))
        .field(Field::new("serve", "Void").resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let m = ctx.parent_arc::<Module>()?;
            if m.initialized.is_none() {
                return Err(not_initialized(&m));
            }
            s.modules.serve(&caller.client, m)?;
            Ok(Value::Null)
        }))
        .field(Field::new("source", "ModuleSource!").resolve_sync(|ctx| {
            let m = ctx.parent::<Module>()?;
            m.source
                .clone()
                .map(|s| obj("ModuleSource", s))
                .ok_or_else(|| FieldError::new("the module has no source"))
        }))
        .field(
            Field::new("withDescription", "Module!")
                .arg(Arg::new("description", "String!"))
                .resolve_sync(|ctx| {
                    let mut m = ctx.parent::<Module>()?.clone();
                    m.description = ctx.arg("description")?;
                    Ok(obj("Module", m))
                }),
        )
        .field(with_typedef("withInterface", "iface", true))
        .field(with_typedef("withObject", "object", false))
        .field(
            Field::new("withSource", "Module!")
                .arg(Arg::new("source", "ModuleSourceID!"))
                .resolve_sync(|ctx| {
                    let source = ctx.loaded::<ModuleSource>("source")?;
                    let mut m = ctx.parent::<Module>()?.clone();
                    m.source = Some((*source).clone());
                    Ok(obj("Module", m))
                }),
        );
    b.object(module)
        .extend_object(
            "Query",
            [
                call::query_current_function_call(),
                call::query_current_module(),
                call::query_current_type_defs(),
                typedef::query_function(),
                query_module(),
                source::query_module_dependency(),
                source::query_module_source(),
                typedef::query_type_def(),
            ],
        )
        .extend_object("Directory", [directory_as_module()])
}

/// `Directory.asModule(sourceRootPath)`: the module whose `dagger.json` is at `sourceRootPath`
/// of the directory (its dependencies must be inside it).
fn directory_as_module() -> Field {
    Field::new("asModule", "Module!")
        .arg(Arg::new("sourceRootPath", "String").default("."))
        .resolve(|ctx| async move {
            let dir = ctx.parent::<Directory>()?.clone();
            let root: Option<String> = ctx.arg("sourceRootPath")?;
            let root = root.unwrap_or_else(|| ".".into());
            let src = ModuleSource::of_directory(
                &root,
                source::Location::Directory,
                dir,
                source::normalize(&root),
            );
            let config = src.config(&ctx).await?.ok_or_else(|| {
                FieldError::new(format!("{root}/dagger.json: no such file in the directory"))
            })?;
            Ok(obj(
                "Module",
                Module {
                    name: config.name,
                    sdk: config.sdk.unwrap_or_default(),
                    source: Some(src),
                    ..Default::default()
                },
            ))
        })
}

/// `Query.module`: an empty module to build on (SDKs register their definitions with it).
pub(crate) fn query_module() -> Field {
    Field::new("module", "Module!").resolve_sync(|_| Ok(obj("Module", Module::default())))
}

fn not_initialized(m: &Module) -> FieldError {
    FieldError::new(format!(
        "module {} is not initialized: call initialize first",
        m.name
    ))
}

/// A `String!` field: `pick` of the parent (of Rust type `T`).
pub(crate) fn text<T: Send + Sync + 'static>(name: &str, pick: fn(&T) -> String) -> Field {
    Field::new(name, "String!").resolve_sync(move |ctx| Ok(Value::leaf(pick(ctx.parent::<T>()?))))
}

/// `Module.withObject(object)` / `withInterface(iface)`.
fn with_typedef(field: &'static str, arg: &'static str, interface: bool) -> Field {
    Field::new(field, "Module!")
        .arg(Arg::new(arg, "TypeDefID!"))
        .resolve_sync(move |ctx| {
            let def = (*ctx.loaded::<TypeDef>(arg)?).clone();
            let mut m = ctx.parent::<Module>()?.clone();
            match (&def.kind, interface) {
                (Kind::Object(_), false) => m.objects.push(def),
                (Kind::Interface(_), true) => m.interfaces.push(def),
                _ => {
                    return Err(FieldError::new(format!(
                        "{field}: expected {} type definition, got {}",
                        if interface {
                            "an interface"
                        } else {
                            "an object"
                        },
                        def.display_name()
                    )));
                }
            }
            Ok(obj("Module", m))
        })
}

/// `Module.generatedContextDirectory`: the context directory with what the SDK generates for a
/// new module (its template files, where missing) and the module's `dagger.json`.
fn generated_context_directory() -> Field {
    Field::new("generatedContextDirectory", "Directory!")
        .resolve(|ctx| async move { source::generated_context(&ctx, false).await })
}

/// `Module.generatedContextDiff`: only what `generatedContextDirectory` adds or changes.
fn generated_context_diff() -> Field {
    Field::new("generatedContextDiff", "Directory!")
        .resolve(|ctx| async move { source::generated_context(&ctx, true).await })
}

/// Reads `path` of a directory (solved for the caller); `None` when it does not exist.
pub(crate) async fn read_text(
    ctx: &dagr_gql::ResolveCtx,
    dir: &Directory,
    path: &str,
) -> Result<Option<String>, FieldError> {
    let s = services(ctx)?;
    let caller = caller(ctx)?;
    let snapshot = s.snapshot_of(&caller, &dir.fs).await?;
    let path = crate::state::join(&dir.path, path);
    let value = crate::directory::read_view(&s, &snapshot, move |root| {
        let p = match dagr_worker::fsops::resolve_in_root(root, &path, true) {
            Ok(p) => p,
            Err(_) => return Ok(Value::Null),
        };
        match std::fs::read(&p) {
            Ok(bytes) => Ok(Value::leaf(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
            Err(e) => Err(crate::directory::path_error(&path, &e)),
        }
    })
    .await?;
    Ok(match value {
        Value::Leaf(serde_json::Value::String(text)) => Some(text),
        _ => None,
    })
}

/// Generated code (`Query.generatedCode`): a directory and which of its paths are generated or
/// to be ignored by version control.
#[derive(Clone, Debug)]
pub struct GeneratedCode {
    pub code: Directory,
    pub vcs_generated_paths: Vec<String>,
    pub vcs_ignored_paths: Vec<String>,
}

/// `Query.generatedCode` and the `GeneratedCode` object.
fn register_generated_code(b: SchemaBuilder) -> SchemaBuilder {
    fn paths(name: &str, pick: fn(&GeneratedCode) -> &Vec<String>) -> Field {
        Field::new(name, "[String!]!").resolve_sync(move |ctx| {
            Ok(Value::leaf_list(
                pick(ctx.parent::<GeneratedCode>()?).clone(),
            ))
        })
    }
    fn with_paths(name: &str, set: fn(&mut GeneratedCode, Vec<String>)) -> Field {
        Field::new(name, "GeneratedCode!")
            .arg(Arg::new("paths", "[String!]!"))
            .resolve_sync(move |ctx| {
                let mut g = ctx.parent::<GeneratedCode>()?.clone();
                set(&mut g, ctx.arg("paths")?);
                Ok(obj("GeneratedCode", g))
            })
    }
    let generated = Object::new("GeneratedCode")
        .with_id()
        .field(Field::new("code", "Directory!").resolve_sync(|ctx| {
            Ok(obj(
                "Directory",
                ctx.parent::<GeneratedCode>()?.code.clone(),
            ))
        }))
        .field(paths("vcsGeneratedPaths", |g| &g.vcs_generated_paths))
        .field(paths("vcsIgnoredPaths", |g| &g.vcs_ignored_paths))
        .field(with_paths("withVCSGeneratedPaths", |g, p| {
            g.vcs_generated_paths = p
        }))
        .field(with_paths("withVCSIgnoredPaths", |g, p| {
            g.vcs_ignored_paths = p
        }));
    let query = Field::new("generatedCode", "GeneratedCode!")
        .arg(Arg::new("code", "DirectoryID!"))
        .resolve_sync(|ctx| {
            Ok(obj(
                "GeneratedCode",
                GeneratedCode {
                    code: (*ctx.loaded::<Directory>("code")?).clone(),
                    vcs_generated_paths: Vec::new(),
                    vcs_ignored_paths: Vec::new(),
                },
            ))
        });
    b.object(generated).extend_object("Query", [query])
}
