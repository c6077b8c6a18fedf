//! `ModuleSource` (local kind), `LocalModuleSource`, `ModuleDependency` and the module
//! configuration file, `dagger.json` ([`ModuleConfig`]).
//!
//! A local source is a directory of a client's host (the client that called
//! `Query.moduleSource`, recorded in its ID like `Host.directory`), read when something needs it:
//! its contents are the module's context directory, so everything built from it is keyed by
//! content.

use dagr_gql::{
    Arg, Call, CallChain, Field, FieldError, Object, Request, ResolveCtx, SchemaBuilder, Value,
};
use dagr_metadata::ClientRef;
use serde::{Deserialize, Serialize};

use super::Module;
use super::runtime::{SDKS, runtime_for};
use crate::obj;
use crate::state::Directory;

/// The configuration file of a module.
pub const CONFIG_FILE: &str = "dagger.json";

/// `dagger.json` as Dagger v0.11 writes it. Unknown fields are refused, so that a typo does not
/// silently drop a setting.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModuleConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
    /// The module's source directory, relative to `dagger.json` (default `.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<DependencyConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
}

/// A dependency in `dagger.json`: `{"name": .., "source": ..}` (or, as older configs write it,
/// the source alone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DependencyConfig {
    Full(DependencyEntry),
    Source(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencyEntry {
    #[serde(default)]
    pub name: String,
    pub source: String,
}

impl DependencyConfig {
    pub fn source(&self) -> &str {
        match self {
            DependencyConfig::Full(e) => &e.source,
            DependencyConfig::Source(s) => s,
        }
    }
}

/// Why a `dagger.json` is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: field \"sdk\" is missing: a module needs an SDK (dagr supports: {sdks})")]
    MissingSdk { path: String, sdks: String },
    #[error("{path}: field \"sdk\": {sdk:?} is not supported (dagr supports: {sdks})")]
    UnsupportedSdk {
        path: String,
        sdk: String,
        sdks: String,
    },
    #[error("{path}: field \"name\" is empty")]
    MissingName { path: String },
}

impl ModuleConfig {
    /// Parses and checks `dagger.json` (`path` names it in errors).
    pub fn parse(path: &str, text: &str) -> Result<ModuleConfig, ConfigError> {
        let config = ModuleConfig::from_json(path, text)?;
        config.check(path)?;
        Ok(config)
    }

    /// Parses `dagger.json` without checking what overrides may still set.
    fn from_json(path: &str, text: &str) -> Result<ModuleConfig, ConfigError> {
        serde_json::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// A name and a supported SDK.
    fn check(&self, path: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::MissingName {
                path: path.to_owned(),
            });
        }
        self.check_sdk(path)
    }

    fn check_sdk(&self, path: &str) -> Result<(), ConfigError> {
        let sdks = SDKS.join(", ");
        match &self.sdk {
            None => Err(ConfigError::MissingSdk {
                path: path.to_owned(),
                sdks,
            }),
            Some(sdk) if runtime_for(sdk).is_none() => Err(ConfigError::UnsupportedSdk {
                path: path.to_owned(),
                sdk: sdk.clone(),
                sdks,
            }),
            Some(_) => Ok(()),
        }
    }
}

/// A module's source: where its files are and what overrides its configuration.
#[derive(Clone, Debug)]
pub struct ModuleSource {
    /// As given to `Query.moduleSource`.
    pub ref_string: String,
    /// The client whose host holds it, and the path there.
    pub owner: ClientRef,
    pub host_path: String,
    /// The module's files (the context directory).
    pub context: Directory,
    pub name: Option<String>,
    pub sdk: Option<String>,
    pub source_subpath: Option<String>,
    pub dependencies: Option<Vec<ModuleDependency>>,
}

/// A dependency of a module: its name and source.
#[derive(Clone, Debug)]
pub struct ModuleDependency {
    pub name: String,
    pub source: ModuleSource,
}

/// Files never uploaded with a module's source.
const SOURCE_EXCLUDES: &[&str] = &[".venv", "**/__pycache__", ".git", "**/.mypy_cache"];

impl ModuleSource {
    /// The local source at `host_path` of `owner`'s host.
    pub fn local(
        ref_string: &str,
        owner: ClientRef,
        host_path: &str,
    ) -> Result<ModuleSource, FieldError> {
        let fs = crate::query::host_dir(
            &owner,
            host_path,
            Vec::new(),
            SOURCE_EXCLUDES.iter().map(|s| (*s).to_owned()).collect(),
        )?;
        Ok(ModuleSource {
            ref_string: ref_string.to_owned(),
            owner,
            host_path: host_path.to_owned(),
            context: Directory {
                fs,
                path: "/".into(),
            },
            name: None,
            sdk: None,
            source_subpath: None,
            dependencies: None,
        })
    }

    /// Its `dagger.json`, if it has one.
    pub async fn config(&self, ctx: &ResolveCtx) -> Result<Option<ModuleConfig>, FieldError> {
        let Some(text) = super::read_text(ctx, &self.context, CONFIG_FILE).await? else {
            return Ok(None);
        };
        let path = format!("{}/{CONFIG_FILE}", self.ref_string.trim_end_matches('/'));
        // Overrides (`withSDK`) may fix what the file lacks.
        let mut config: ModuleConfig = serde_json::from_str(&text).map_err(|source| {
            FieldError::new(
                ConfigError::Parse {
                    path: path.clone(),
                    source,
                }
                .to_string(),
            )
        })?;
        if let Some(sdk) = &self.sdk {
            config.sdk = Some(sdk.clone());
        }
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        if config.name.is_empty() {
            return Err(FieldError::new(
                ConfigError::MissingName { path }.to_string(),
            ));
        }
        config
            .check_sdk(&path)
            .map_err(|e| FieldError::new(e.to_string()))?;
        Ok(Some(config))
    }

    /// Its configuration, or the one its overrides give a new module (`dagr init`).
    pub async fn config_or_new(&self, ctx: &ResolveCtx) -> Result<ModuleConfig, FieldError> {
        if let Some(config) = self.config(ctx).await? {
            return Ok(config);
        }
        let path = format!("{}/{CONFIG_FILE}", self.ref_string.trim_end_matches('/'));
        let name = self.name.clone().ok_or_else(|| {
            FieldError::new(format!(
                "{path}: no such file (and no name given for a new module)"
            ))
        })?;
        let config = ModuleConfig {
            name,
            sdk: self.sdk.clone(),
            source: self.source_subpath.clone().filter(|s| s != "."),
            ..Default::default()
        };
        config
            .check_sdk(&path)
            .map_err(|e| FieldError::new(e.to_string()))?;
        Ok(config)
    }

    /// The source directory inside the context.
    fn source_subpath(&self, config: Option<&ModuleConfig>) -> String {
        self.source_subpath
            .clone()
            .or_else(|| config.and_then(|c| c.source.clone()))
            .unwrap_or_else(|| ".".into())
    }

    /// The local source of a dependency given relative to this module.
    fn dependency(&self, source: &str) -> Result<ModuleSource, FieldError> {
        if source.contains("://") || source.starts_with("github.com/") {
            return Err(FieldError::new(format!(
                "dependency {source}: git module sources are not supported yet; use a local path"
            )));
        }
        let path = if source.starts_with('/') {
            source.to_owned()
        } else {
            format!("{}/{source}", self.host_path.trim_end_matches('/'))
        };
        ModuleSource::local(source, self.owner.clone(), &normalize(&path))
    }

    /// Its dependencies: the overrides, else those of its configuration.
    pub async fn dependencies(
        &self,
        ctx: &ResolveCtx,
    ) -> Result<Vec<ModuleDependency>, FieldError> {
        if let Some(deps) = &self.dependencies {
            return Ok(deps.clone());
        }
        let Some(config) = self.config(ctx).await? else {
            return Ok(Vec::new());
        };
        config
            .dependencies
            .iter()
            .map(|d| {
                let source = self.dependency(d.source())?;
                let name = match d {
                    DependencyConfig::Full(e) if !e.name.is_empty() => e.name.clone(),
                    _ => String::new(),
                };
                Ok(ModuleDependency { name, source })
            })
            .collect()
    }
}

/// `path` with `.` and `..` components resolved lexically (a module's dependencies are found by
/// path: a cycle must meet the same path again).
pub(crate) fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The ID of the object `call`s below the parent of `ctx` (e.g. the context directory of the
/// parent source: `[("contextDirectory", "Directory")]`).
pub(crate) fn id_below(chain: &std::sync::Arc<CallChain>, calls: &[(&str, &str)]) -> String {
    let mut chain = chain.clone();
    for (field, type_name) in calls {
        chain = chain.append(Call {
            field: (*field).to_owned(),
            args: Vec::new(),
            type_name: (*type_name).to_owned(),
            nth: None,
            scope: None,
        });
    }
    chain.id()
}

/// Adds `ModuleSource`, `LocalModuleSource`, `ModuleDependency` and `ModuleSourceKind`.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let source = Object::new("ModuleSource")
        .with_id()
        .field(
            Field::new("asLocalSource", "LocalModuleSource").resolve_sync(|ctx| {
                Ok(obj(
                    "LocalModuleSource",
                    ctx.parent::<ModuleSource>()?.clone(),
                ))
            }),
        )
        .field(Field::new("asModule", "Module!").resolve(|ctx| async move {
            let src = ctx.parent_arc::<ModuleSource>()?;
            as_module(&ctx, &src).await.map(|m| obj("Module", m))
        }))
        .field(Field::new("asString", "String!").resolve_sync(|ctx| {
            Ok(Value::leaf(
                ctx.parent::<ModuleSource>()?.ref_string.clone(),
            ))
        }))
        .field(
            Field::new("configExists", "Boolean!").resolve(|ctx| async move {
                let src = ctx.parent_arc::<ModuleSource>()?;
                let text = super::read_text(&ctx, &src.context, CONFIG_FILE).await?;
                Ok(Value::leaf(text.is_some()))
            }),
        )
        .field(
            Field::new("contextDirectory", "Directory!").resolve_sync(|ctx| {
                Ok(obj(
                    "Directory",
                    ctx.parent::<ModuleSource>()?.context.clone(),
                ))
            }),
        )
        .field(
            Field::new("dependencies", "[ModuleDependency!]!").resolve(|ctx| async move {
                let src = ctx.parent_arc::<ModuleSource>()?;
                let deps = src.dependencies(&ctx).await?;
                Ok(Value::List(
                    deps.into_iter()
                        .map(|d| obj("ModuleDependency", d))
                        .collect(),
                ))
            }),
        )
        .field(
            Field::new("directory", "Directory!")
                .arg(Arg::new("path", "String!"))
                .resolve(|ctx| async move {
                    let src = ctx.parent_arc::<ModuleSource>()?;
                    let path: String = ctx.arg("path")?;
                    let config = src.config(&ctx).await?;
                    let base = crate::state::join("/", &src.source_subpath(config.as_ref()));
                    Ok(obj(
                        "Directory",
                        Directory {
                            fs: src.context.fs.clone(),
                            path: crate::state::join(&base, &path),
                        },
                    ))
                }),
        )
        .field(
            Field::new("kind", "ModuleSourceKind!")
                .resolve_sync(|_| Ok(Value::leaf("LOCAL_SOURCE"))),
        )
        .field(
            Field::new("moduleName", "String!").resolve(|ctx| async move {
                let src = ctx.parent_arc::<ModuleSource>()?;
                Ok(Value::leaf(src.config_or_new(&ctx).await?.name))
            }),
        )
        .field(
            Field::new("moduleOriginalName", "String!").resolve(|ctx| async move {
                let src = ctx.parent_arc::<ModuleSource>()?;
                let config = src.config(&ctx).await?;
                Ok(Value::leaf(
                    config
                        .map(|c| c.name)
                        .or_else(|| src.name.clone())
                        .unwrap_or_default(),
                ))
            }),
        )
        .field(
            Field::new("resolveContextPathFromCaller", "String!").resolve_sync(|ctx| {
                Ok(Value::leaf(ctx.parent::<ModuleSource>()?.host_path.clone()))
            }),
        )
        .field(
            Field::new("resolveDependency", "ModuleSource!")
                .arg(Arg::new("dep", "ModuleSourceID!"))
                .resolve_sync(|ctx| {
                    let src = ctx.parent::<ModuleSource>()?;
                    let dep = ctx.loaded::<ModuleSource>("dep")?;
                    Ok(obj("ModuleSource", src.dependency(&dep.ref_string)?))
                }),
        )
        .field(
            Field::new("resolveFromCaller", "ModuleSource!").resolve_sync(|ctx| {
                // A local source reads the caller's host when solved: it is resolved already.
                Ok(obj("ModuleSource", ctx.parent::<ModuleSource>()?.clone()))
            }),
        )
        .field(Field::new("sourceRootSubpath", "String!").resolve_sync(|_| Ok(Value::leaf("."))))
        .field(
            Field::new("sourceSubpath", "String!").resolve(|ctx| async move {
                let src = ctx.parent_arc::<ModuleSource>()?;
                let config = src.config(&ctx).await?;
                Ok(Value::leaf(src.source_subpath(config.as_ref())))
            }),
        )
        .field(
            Field::new("withContextDirectory", "ModuleSource!")
                .arg(Arg::new("dir", "DirectoryID!"))
                .resolve_sync(|ctx| {
                    let mut src = ctx.parent::<ModuleSource>()?.clone();
                    src.context = (*ctx.loaded::<Directory>("dir")?).clone();
                    Ok(obj("ModuleSource", src))
                }),
        )
        .field(
            Field::new("withDependencies", "ModuleSource!")
                .arg(Arg::new("dependencies", "[ModuleDependencyID!]!"))
                .resolve(|ctx| async move {
                    let mut src = ctx.parent::<ModuleSource>()?.clone();
                    let mut deps = src.dependencies(&ctx).await?;
                    for d in ctx.loaded_list::<ModuleDependency>("dependencies")? {
                        deps.retain(|have| have.source.host_path != d.source.host_path);
                        deps.push((*d).clone());
                    }
                    src.dependencies = Some(deps);
                    Ok(obj("ModuleSource", src))
                }),
        )
        .field(with_override("withName", "name", |s, v| s.name = Some(v)))
        .field(with_override("withSDK", "sdk", |s, v| s.sdk = Some(v)))
        .field(with_override("withSourceSubpath", "path", |s, v| {
            s.source_subpath = Some(v)
        }));
    let local = Object::new("LocalModuleSource")
        .with_id()
        .field(
            Field::new("contextDirectory", "Directory").resolve_sync(|ctx| {
                Ok(obj(
                    "Directory",
                    ctx.parent::<ModuleSource>()?.context.clone(),
                ))
            }),
        )
        .field(Field::new("rootSubpath", "String!").resolve_sync(|_| Ok(Value::leaf("."))));
    let dependency = Object::new("ModuleDependency")
        .with_id()
        .field(Field::new("name", "String!").resolve(|ctx| async move {
            let d = ctx.parent_arc::<ModuleDependency>()?;
            if !d.name.is_empty() {
                return Ok(Value::leaf(d.name.clone()));
            }
            Ok(Value::leaf(d.source.config_or_new(&ctx).await?.name))
        }))
        .field(Field::new("source", "ModuleSource!").resolve_sync(|ctx| {
            Ok(obj(
                "ModuleSource",
                ctx.parent::<ModuleDependency>()?.source.clone(),
            ))
        }));
    b.enumeration(dagr_gql::Enum::new("ModuleSourceKind").values(["LOCAL_SOURCE"]))
        .object(source)
        .object(local)
        .object(dependency)
}

fn with_override(
    field: &'static str,
    arg: &'static str,
    set: fn(&mut ModuleSource, String),
) -> Field {
    Field::new(field, "ModuleSource!")
        .arg(Arg::new(arg, "String!"))
        .resolve_sync(move |ctx| {
            let mut src = ctx.parent::<ModuleSource>()?.clone();
            set(&mut src, ctx.arg(arg)?);
            Ok(obj("ModuleSource", src))
        })
}

/// `Query.moduleSource(refString, stable)`: a local module (a path of the caller's host).
pub(crate) fn query_module_source() -> Field {
    Field::new("moduleSource", "ModuleSource!")
        .arg(Arg::new("refString", "String!"))
        .arg(Arg::new("stable", "Boolean").default(false))
        .scoped(crate::query::host_scope)
        .resolve_sync(|ctx| {
            let owner = crate::query::host_owner(ctx)?;
            let ref_string: String = ctx.arg("refString")?;
            if ref_string.contains("://") || ref_string.starts_with("github.com/") || ref_string.contains('@') {
                return Err(FieldError::new(format!(
                    "module {ref_string}: git module sources are not supported yet; use a local path"
                )));
            }
            Ok(obj(
                "ModuleSource",
                ModuleSource::local(&ref_string, owner, &normalize(&ref_string))?,
            ))
        })
}

/// `Query.moduleDependency(source, name)`.
pub(crate) fn query_module_dependency() -> Field {
    Field::new("moduleDependency", "ModuleDependency!")
        .arg(Arg::new("name", "String").default(""))
        .arg(Arg::new("source", "ModuleSourceID!"))
        .resolve_sync(|ctx| {
            let name: Option<String> = ctx.arg("name")?;
            let source = (*ctx.loaded::<ModuleSource>("source")?).clone();
            Ok(obj(
                "ModuleDependency",
                ModuleDependency {
                    name: name.unwrap_or_default(),
                    source,
                },
            ))
        })
}

/// `ModuleSource.asModule`: the module of a source, not initialized yet.
async fn as_module(ctx: &ResolveCtx, src: &ModuleSource) -> Result<Module, FieldError> {
    let config = match src.config(ctx).await? {
        Some(config) => config,
        // A new module (`dagr init`): its name and SDK come from the overrides.
        None if src.name.is_some() => src.config_or_new(ctx).await?,
        None => {
            return Err(FieldError::new(format!(
                "{}/{CONFIG_FILE}: no such file: not a module (dagr init creates one)",
                src.ref_string.trim_end_matches('/')
            )));
        }
    };
    Ok(Module {
        name: config.name,
        sdk: config.sdk.unwrap_or_default(),
        source: Some(src.clone()),
        ..Default::default()
    })
}

/// `Module.dependencyConfig`: the dependencies its source declares.
pub(crate) fn module_dependency_config() -> Field {
    Field::new("dependencyConfig", "[ModuleDependency!]!").resolve(|ctx| async move {
        let m = ctx.parent_arc::<Module>()?;
        let Some(src) = &m.source else {
            return Ok(Value::List(Vec::new()));
        };
        let deps = src.dependencies(&ctx).await?;
        Ok(Value::List(
            deps.into_iter()
                .map(|d| obj("ModuleDependency", d))
                .collect(),
        ))
    })
}

/// `Module.generatedContextDirectory` (`diff`: only the generated files): the module's
/// `dagger.json` and, where missing, the runtime's template files.
pub(crate) async fn generated_context(ctx: &ResolveCtx, diff: bool) -> Result<Value, FieldError> {
    let m = ctx.parent_arc::<Module>()?;
    let src = m
        .source
        .as_ref()
        .ok_or_else(|| FieldError::new("the module has no source"))?;
    let mut config = src.config_or_new(ctx).await?;
    if let Some(deps) = &src.dependencies {
        config.dependencies = deps
            .iter()
            .map(|d| {
                DependencyConfig::Full(DependencyEntry {
                    name: d.name.clone(),
                    source: d.source.ref_string.clone(),
                })
            })
            .collect();
    }
    let sdk = config.sdk.clone().unwrap_or_default();
    let runtime = runtime_for(&sdk)
        .ok_or_else(|| FieldError::new(format!("sdk {sdk:?} is not supported")))?;
    let subpath = src.source_subpath(Some(&config));
    let mut files = vec![(
        CONFIG_FILE.to_owned(),
        format!(
            "{}\n",
            serde_json::to_string_pretty(&config).map_err(|e| FieldError::new(e.to_string()))?
        ),
    )];
    for (path, contents) in runtime.template(&config.name) {
        let path = crate::state::join(&subpath, &path)
            .trim_start_matches('/')
            .to_owned();
        if super::read_text(ctx, &src.context, &path).await?.is_none() {
            files.push((path, contents));
        }
    }
    // The client code of the dependencies (what the runtime generates too), for editors.
    let stack = vec![src.host_path.clone()];
    let deps = super::call::initialize_dependencies(ctx, &config.name, src, &stack).await?;
    if let Some((path, code)) = runtime.generated_code(&deps) {
        let path = crate::state::join(&subpath, &path)
            .trim_start_matches('/')
            .to_owned();
        files.push((path, code));
    }
    let base = if diff {
        "directory".to_owned()
    } else {
        format!(
            "loadDirectoryFromID(id: {})",
            serde_json::Value::String(id_below(
                ctx.parent_chain(),
                &[
                    ("source", "ModuleSource"),
                    ("contextDirectory", "Directory")
                ]
            ))
        )
    };
    let mut q = format!("{{ {base} {{ ");
    for (path, contents) in &files {
        q.push_str(&format!(
            "withNewFile(path: {}, contents: {}) {{ ",
            serde_json::Value::String(path.clone()),
            serde_json::Value::String(contents.clone())
        ));
    }
    q.push_str("id");
    for _ in 0..files.len() + 2 {
        q.push_str(" }");
    }
    let response = ctx.execute(Request::new(&q)).await;
    let id = single_leaf(&response, "generating the module's files")?;
    Ok(ctx.load(&id).await?.to_value())
}

/// The one string leaf of an internal request's answer (its deepest `id`), or its first error.
pub(crate) fn single_leaf(response: &dagr_gql::Response, what: &str) -> Result<String, FieldError> {
    if let Some(e) = response.errors.first() {
        return Err(FieldError::new(format!("{what}: {}", e.message)));
    }
    let mut cur = response.data.as_ref();
    while let Some(serde_json::Value::Object(map)) = cur {
        cur = map.values().next();
    }
    match cur {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err(FieldError::new(format!(
            "{what}: the engine answered no ID"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(normalize("/a/b/../c/./d"), "/a/c/d");
        assert_eq!(normalize("/a/../../b"), "/b");
        assert_eq!(normalize("a/../../b"), "../b");
        assert_eq!(normalize("./"), ".");
        assert_eq!(normalize("/tmp/x/app/../greeter/../app"), "/tmp/x/app");
    }

    #[test]
    fn config_errors_name_the_file_and_field() {
        let err = ModuleConfig::parse("m/dagger.json", r#"{"name":"m","sdk":"python","colour":1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m/dagger.json") && err.contains("unknown field `colour`"),
            "{err}"
        );
        let err = ModuleConfig::parse("m/dagger.json", r#"{"name":"m"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("field \"sdk\" is missing"), "{err}");
        let err = ModuleConfig::parse("m/dagger.json", r#"{"name":"m","sdk":"cobol"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"cobol\" is not supported (dagr supports: python)"),
            "{err}"
        );
        let ok = ModuleConfig::parse(
            "m/dagger.json",
            r#"{"name":"m","sdk":"python","dependencies":[{"name":"d","source":"../d"},"../e"]}"#,
        )
        .unwrap();
        assert_eq!(ok.dependencies[0].source(), "../d");
        assert_eq!(ok.dependencies[1].source(), "../e");
    }
}
