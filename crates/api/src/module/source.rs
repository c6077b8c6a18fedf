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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<ModuleSourceView>,
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
    /// As given to `Query.moduleSource` (or, for a dependency, as its module names it).
    pub ref_string: String,
    pub location: Location,
    /// The files around the module (the context directory): a local module's directory, or a
    /// git repository's tree.
    pub context: Directory,
    /// Where the module's `dagger.json` is in the context (`.` for a local module).
    pub root: String,
    pub name: Option<String>,
    pub sdk: Option<String>,
    pub source_subpath: Option<String>,
    pub dependencies: Option<Vec<ModuleDependency>>,
    pub views: Option<Vec<ModuleSourceView>>,
    /// The text of its `dagger.json` once read (none: no such file): every field and step of a
    /// request that needs the configuration reads the context once (a local context is an
    /// upload from the client's host). Shared by copies with the same context and root.
    config_text: ConfigText,
}

/// See [`ModuleSource::config_text`].
type ConfigText = std::sync::Arc<tokio::sync::OnceCell<Option<String>>>;

/// A named set of include patterns of the module's files (`withView`, `dagger.json`'s
/// `views`), for `resolveDirectoryFromCaller`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSourceView {
    pub name: String,
    pub patterns: Vec<String>,
}

/// Where a module's files come from.
#[derive(Clone, Debug)]
pub enum Location {
    /// A directory of a client's host.
    Local { owner: ClientRef, host_path: String },
    /// A directory given by ID (`Directory.asModule`).
    Directory,
    /// A directory of a git repository at a commit.
    Git {
        /// The repository's URL.
        url: String,
        /// The ref asked for (a branch, tag, commit or `HEAD`).
        version: String,
        /// The commit it resolved to.
        commit: String,
    },
}

/// A dependency of a module: its name and source.
#[derive(Clone, Debug)]
pub struct ModuleDependency {
    pub name: String,
    pub source: ModuleSource,
}

/// Files never uploaded with a module's source.
const SOURCE_EXCLUDES: &[&str] = &[".venv", "**/__pycache__", ".git", "**/.mypy_cache"];

/// What a module reference names.
#[derive(Debug, PartialEq, Eq)]
pub enum ParsedRef {
    /// A path of the caller's host.
    Local(String),
    /// `url` (a repository), the module's directory in it and the ref.
    Git {
        url: String,
        root: String,
        version: String,
    },
}

/// Hosts whose repositories are `host/owner/name`, as Go's import paths (and Dagger) know them.
const KNOWN_GIT_HOSTS: &[&str] = &["github.com", "gitlab.com", "bitbucket.org"];

/// Tells a local path from a git reference: `URL[/SUBPATH][@VERSION]`, where URL has a scheme
/// (`https://`, `http://`, `git://`, `ssh://`) or is `host/path` (https), and the repository is
/// the path up to a component ending in `.git`, or `host/owner/name` on GitHub, GitLab and
/// Bitbucket (Dagger's rule for import paths). Anything else is a local path.
pub fn parse_ref(reference: &str) -> Result<ParsedRef, String> {
    let has_scheme = reference.contains("://");
    let first = reference.split('/').next().unwrap_or_default();
    let hosty = !has_scheme && first.contains('.') && first != "." && first != "..";
    let (path, version) = match reference.rsplit_once('@') {
        // `user@host:...` (scp-like) is not a version.
        Some((p, v)) if !v.contains('/') && !v.contains(':') && !v.is_empty() => (p, Some(v)),
        _ => (reference, None),
    };
    let git_like = has_scheme
        || version.is_some()
        || (hosty
            && (KNOWN_GIT_HOSTS.contains(&first) || path.split('/').any(|c| c.ends_with(".git"))));
    if !git_like {
        return Ok(ParsedRef::Local(reference.to_owned()));
    }
    let (scheme, rest) = match path.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => ("https://".to_owned(), path),
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let repo_len = match parts.iter().position(|p| p.ends_with(".git")) {
        Some(i) => i + 1,
        None if parts.first().is_some_and(|h| KNOWN_GIT_HOSTS.contains(h)) && parts.len() >= 3 => 3,
        None => {
            return Err(format!(
                "module {reference}: cannot tell the git repository from the path (end the repository's path with .git, as in example.com/repo.git/sub@main)"
            ));
        }
    };
    let url = format!("{scheme}{}", parts[..repo_len].join("/"));
    let root = normalize(&parts[repo_len..].join("/"));
    if root.starts_with("..") {
        return Err(format!(
            "module {reference}: the path leaves the repository"
        ));
    }
    Ok(ParsedRef::Git {
        url,
        root,
        version: version.unwrap_or("HEAD").to_owned(),
    })
}

impl ModuleSource {
    /// A source of the files `context`, its module at `root`.
    pub fn of_directory(
        ref_string: &str,
        location: Location,
        context: Directory,
        root: String,
    ) -> ModuleSource {
        ModuleSource {
            ref_string: ref_string.to_owned(),
            location,
            context,
            root,
            name: None,
            sdk: None,
            source_subpath: None,
            dependencies: None,
            views: None,
            config_text: ConfigText::default(),
        }
    }

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
        Ok(ModuleSource::of_directory(
            ref_string,
            Location::Local {
                owner,
                host_path: host_path.to_owned(),
            },
            Directory {
                fs,
                path: "/".into(),
            },
            ".".into(),
        ))
    }

    /// The source at `root` of the git repository `url` at `version` (resolved to a commit
    /// now; the tree is keyed by it).
    pub async fn git(
        ctx: &ResolveCtx,
        ref_string: &str,
        url: &str,
        root: &str,
        version: &str,
    ) -> Result<ModuleSource, FieldError> {
        let q = "query($url: String!, $ref: String!) { git(url: $url) { ref(name: $ref) { commit tree { id } } } }";
        let response = ctx
            .execute(Request::new(q).variables(serde_json::json!({ "url": url, "ref": version })))
            .await;
        if let Some(e) = response.errors.first() {
            return Err(FieldError::new(format!(
                "module {ref_string}: {}",
                e.message
            )));
        }
        let data = response.data.unwrap_or_default();
        let reference = &data["git"]["ref"];
        let commit = reference["commit"].as_str().unwrap_or_default().to_owned();
        let tree_id = reference["tree"]["id"].as_str().unwrap_or_default();
        let context = ctx
            .load(tree_id)
            .await?
            .downcast::<Directory>()
            .ok_or_else(|| FieldError::new("the git tree is not a directory"))?;
        Ok(ModuleSource::of_directory(
            ref_string,
            Location::Git {
                url: url.to_owned(),
                version: version.to_owned(),
                commit,
            },
            (*context).clone(),
            root.to_owned(),
        ))
    }

    /// Where it is, for messages and to find cycles: a host path, or `URL@COMMIT/ROOT`.
    pub fn key(&self) -> String {
        match &self.location {
            Location::Local { host_path, .. } => host_path.clone(),
            Location::Git { url, commit, .. } => format!("{url}@{commit}/{}", self.root),
            Location::Directory => format!("{}/{}", self.ref_string, self.root),
        }
    }

    /// How a module names it again (`Query.moduleSource`): a host path, or a git reference
    /// pinned to its commit.
    pub fn pinned_ref(&self) -> String {
        match &self.location {
            Location::Local { host_path, .. } => host_path.clone(),
            Location::Directory => self.root.clone(),
            Location::Git { url, commit, .. } if self.root == "." => format!("{url}@{commit}"),
            Location::Git { url, commit, .. } => format!("{url}/{}@{commit}", self.root),
        }
    }

    /// The path of the module's `dagger.json` for messages.
    fn config_path(&self) -> String {
        format!("{}/{CONFIG_FILE}", self.ref_string.trim_end_matches('/'))
    }

    /// Its `dagger.json`, if it has one.
    pub async fn config(&self, ctx: &ResolveCtx) -> Result<Option<ModuleConfig>, FieldError> {
        let file = crate::state::join(&self.root, CONFIG_FILE);
        let text = self
            .config_text
            .get_or_try_init(|| super::read_text(ctx, &self.context, &file))
            .await?;
        let Some(text) = text else {
            return Ok(None);
        };
        let path = self.config_path();
        let field_error = |e: ConfigError| FieldError::new(e.to_string());
        let mut config = ModuleConfig::from_json(&path, text).map_err(field_error)?;
        // Overrides (`withSDK`, `withName`) may fix what the file lacks.
        if let Some(sdk) = &self.sdk {
            config.sdk = Some(sdk.clone());
        }
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        config.check(&path).map_err(field_error)?;
        Ok(Some(config))
    }

    /// Its configuration, or the one its overrides give a new module (`dagr init`).
    pub async fn config_or_new(&self, ctx: &ResolveCtx) -> Result<ModuleConfig, FieldError> {
        if let Some(config) = self.config(ctx).await? {
            return Ok(config);
        }
        let path = self.config_path();
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

    /// The module's code directory in the context.
    pub(crate) fn source_subpath(&self, config: Option<&ModuleConfig>) -> String {
        let source = self
            .source_subpath
            .clone()
            .or_else(|| config.and_then(|c| c.source.clone()))
            .unwrap_or_else(|| ".".into());
        normalize(&format!("{}/{source}", self.root))
    }

    /// The source of a dependency as this module names it: a path relative to it (in the same
    /// directory tree or repository), or a git reference.
    async fn dependency(&self, ctx: &ResolveCtx, source: &str) -> Result<ModuleSource, FieldError> {
        match parse_ref(source).map_err(FieldError::new)? {
            ParsedRef::Git { url, root, version } => {
                ModuleSource::git(ctx, source, &url, &root, &version).await
            }
            ParsedRef::Local(path) => match &self.location {
                Location::Local { owner, host_path } => {
                    let path = if path.starts_with('/') {
                        path
                    } else {
                        format!("{}/{path}", host_path.trim_end_matches('/'))
                    };
                    ModuleSource::local(source, owner.clone(), &normalize(&path))
                }
                Location::Git { .. } | Location::Directory => {
                    let root = normalize(&format!("{}/{path}", self.root));
                    if path.starts_with('/') || root.starts_with("..") {
                        return Err(FieldError::new(format!(
                            "dependency {source} of {}: the local dependencies of a git or directory module are paths inside it",
                            self.ref_string
                        )));
                    }
                    Ok(ModuleSource::of_directory(
                        source,
                        self.location.clone(),
                        self.context.clone(),
                        root,
                    ))
                }
            },
        }
    }

    /// Its views: the overrides, else those of its configuration.
    pub async fn views(&self, ctx: &ResolveCtx) -> Result<Vec<ModuleSourceView>, FieldError> {
        if let Some(views) = &self.views {
            return Ok(views.clone());
        }
        Ok(self.config(ctx).await?.map(|c| c.views).unwrap_or_default())
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
        let mut deps = Vec::new();
        for d in &config.dependencies {
            let source = self.dependency(ctx, d.source()).await?;
            let name = match d {
                DependencyConfig::Full(e) if !e.name.is_empty() => e.name.clone(),
                _ => String::new(),
            };
            deps.push(ModuleDependency { name, source });
        }
        Ok(deps)
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

/// Adds `ModuleSource`, `LocalModuleSource`, `GitModuleSource`, `ModuleSourceView`,
/// `ModuleDependency` and `ModuleSourceKind`.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    fn src(ctx: &ResolveCtx) -> Result<&ModuleSource, FieldError> {
        ctx.parent::<ModuleSource>()
    }
    let source = Object::new("ModuleSource")
        .with_id()
        .field(Field::new("asGitSource", "GitModuleSource").resolve_sync(|ctx| {
            let s = src(ctx)?;
            Ok(match s.location {
                Location::Git { .. } => obj("GitModuleSource", s.clone()),
                _ => Value::Null,
            })
        }))
        .field(Field::new("asLocalSource", "LocalModuleSource").resolve_sync(|ctx| {
            let s = src(ctx)?;
            Ok(match s.location {
                Location::Git { .. } => Value::Null,
                _ => obj("LocalModuleSource", s.clone()),
            })
        }))
        .field(Field::new("asModule", "Module!").resolve(|ctx| async move {
            let s = ctx.parent_arc::<ModuleSource>()?;
            as_module(&ctx, &s).await.map(|m| obj("Module", m))
        }))
        .field(Field::new("asString", "String!").resolve_sync(|ctx| {
            Ok(Value::leaf(src(ctx)?.ref_string.clone()))
        }))
        .field(Field::new("configExists", "Boolean!").resolve(|ctx| async move {
            let s = ctx.parent_arc::<ModuleSource>()?;
            let file = crate::state::join(&s.root, CONFIG_FILE);
            let text = super::read_text(&ctx, &s.context, &file).await?;
            Ok(Value::leaf(text.is_some()))
        }))
        .field(Field::new("contextDirectory", "Directory!").resolve_sync(|ctx| {
            Ok(obj("Directory", src(ctx)?.context.clone()))
        }))
        .field(Field::new("dependencies", "[ModuleDependency!]!").resolve(|ctx| async move {
            let s = ctx.parent_arc::<ModuleSource>()?;
            let deps = s.dependencies(&ctx).await?;
            Ok(Value::List(deps.into_iter().map(|d| obj("ModuleDependency", d)).collect()))
        }))
        .field(
            Field::new("directory", "Directory!")
                .arg(Arg::new("path", "String!"))
                .resolve(|ctx| async move {
                    let s = ctx.parent_arc::<ModuleSource>()?;
                    let path: String = ctx.arg("path")?;
                    let config = s.config(&ctx).await?;
                    let base = crate::state::join(&s.context.path, &s.source_subpath(config.as_ref()));
                    Ok(obj(
                        "Directory",
                        Directory {
                            fs: s.context.fs.clone(),
                            path: crate::state::join(&base, &path),
                        },
                    ))
                }),
        )
        .field(Field::new("kind", "ModuleSourceKind!").resolve_sync(|ctx| {
            Ok(Value::leaf(match src(ctx)?.location {
                Location::Git { .. } => "GIT_SOURCE",
                _ => "LOCAL_SOURCE",
            }))
        }))
        .field(Field::new("moduleName", "String!").resolve(|ctx| async move {
            let s = ctx.parent_arc::<ModuleSource>()?;
            Ok(Value::leaf(s.config_or_new(&ctx).await?.name))
        }))
        .field(Field::new("moduleOriginalName", "String!").resolve(|ctx| async move {
            let s = ctx.parent_arc::<ModuleSource>()?;
            let config = s.config(&ctx).await?;
            Ok(Value::leaf(
                config.map(|c| c.name).or_else(|| s.name.clone()).unwrap_or_default(),
            ))
        }))
        .field(Field::new("resolveContextPathFromCaller", "String!").resolve_sync(|ctx| {
            match &src(ctx)?.location {
                Location::Local { host_path, .. } => Ok(Value::leaf(host_path.clone())),
                _ => Err(FieldError::new(
                    "the module's files are not on the caller's host (a git or directory source)",
                )),
            }
        }))
        .field(
            Field::new("resolveDependency", "ModuleSource!")
                .arg(Arg::new("dep", "ModuleSourceID!"))
                .resolve(|ctx| async move {
                    let s = ctx.parent_arc::<ModuleSource>()?;
                    let dep = ctx.loaded::<ModuleSource>("dep")?;
                    Ok(obj("ModuleSource", s.dependency(&ctx, &dep.ref_string).await?))
                }),
        )
        .field(
            Field::new("resolveDirectoryFromCaller", "Directory!")
                .arg(Arg::new("path", "String!"))
                .arg(Arg::new("viewName", "String"))
                .resolve(|ctx| async move {
                    let s = ctx.parent_arc::<ModuleSource>()?;
                    let path: String = ctx.arg("path")?;
                    let view: Option<String> = ctx.arg("viewName")?;
                    let Location::Local { owner, host_path } = &s.location else {
                        return Err(FieldError::new(
                            "resolveDirectoryFromCaller: the module's files are not on the caller's host",
                        ));
                    };
                    let include = match view {
                        Some(name) => s
                            .views(&ctx)
                            .await?
                            .into_iter()
                            .find(|v| v.name == name)
                            .map(|v| v.patterns)
                            .ok_or_else(|| FieldError::new(format!("module has no view named {name}")))?,
                        None => Vec::new(),
                    };
                    let full = if path.starts_with('/') {
                        path
                    } else {
                        normalize(&format!("{host_path}/{path}"))
                    };
                    let fs = crate::query::host_dir(owner, &full, include, Vec::new())?;
                    Ok(obj("Directory", Directory { fs, path: "/".into() }))
                }),
        )
        .field(Field::new("resolveFromCaller", "ModuleSource!").resolve_sync(|ctx| {
            // A local source reads the caller's host when solved: it is resolved already.
            Ok(obj("ModuleSource", src(ctx)?.clone()))
        }))
        .field(Field::new("sourceRootSubpath", "String!").resolve_sync(|ctx| {
            Ok(Value::leaf(src(ctx)?.root.clone()))
        }))
        .field(Field::new("sourceSubpath", "String!").resolve(|ctx| async move {
            let s = ctx.parent_arc::<ModuleSource>()?;
            let config = s.config(&ctx).await?;
            Ok(Value::leaf(s.source_subpath(config.as_ref())))
        }))
        .field(
            Field::new("view", "ModuleSourceView!")
                .arg(Arg::new("name", "String!"))
                .resolve(|ctx| async move {
                    let s = ctx.parent_arc::<ModuleSource>()?;
                    let name: String = ctx.arg("name")?;
                    s.views(&ctx)
                        .await?
                        .into_iter()
                        .find(|v| v.name == name)
                        .map(|v| obj("ModuleSourceView", v))
                        .ok_or_else(|| FieldError::new(format!("module has no view named {name}")))
                }),
        )
        .field(Field::new("views", "[ModuleSourceView!]!").resolve(|ctx| async move {
            let s = ctx.parent_arc::<ModuleSource>()?;
            Ok(Value::List(
                s.views(&ctx).await?.into_iter().map(|v| obj("ModuleSourceView", v)).collect(),
            ))
        }))
        .field(
            Field::new("withContextDirectory", "ModuleSource!")
                .arg(Arg::new("dir", "DirectoryID!"))
                .resolve_sync(|ctx| {
                    let mut s = src(ctx)?.clone();
                    s.context = (*ctx.loaded::<Directory>("dir")?).clone();
                    s.config_text = ConfigText::default();
                    Ok(obj("ModuleSource", s))
                }),
        )
        .field(
            Field::new("withDependencies", "ModuleSource!")
                .arg(Arg::new("dependencies", "[ModuleDependencyID!]!"))
                .resolve(|ctx| async move {
                    let mut s = src(&ctx)?.clone();
                    let mut deps = s.dependencies(&ctx).await?;
                    for d in ctx.loaded_list::<ModuleDependency>("dependencies")? {
                        deps.retain(|have| have.source.key() != d.source.key());
                        deps.push((*d).clone());
                    }
                    s.dependencies = Some(deps);
                    Ok(obj("ModuleSource", s))
                }),
        )
        .field(with_override("withName", "name", |s, v| s.name = Some(v)))
        .field(with_override("withSDK", "sdk", |s, v| s.sdk = Some(v)))
        .field(with_override("withSourceSubpath", "path", |s, v| s.source_subpath = Some(v)))
        .field(
            Field::new("withView", "ModuleSource!")
                .arg(Arg::new("name", "String!"))
                .arg(Arg::new("patterns", "[String!]!"))
                .resolve(|ctx| async move {
                    let mut s = src(&ctx)?.clone();
                    let view = ModuleSourceView {
                        name: ctx.arg("name")?,
                        patterns: ctx.arg("patterns")?,
                    };
                    let mut views = s.views(&ctx).await?;
                    views.retain(|v| v.name != view.name);
                    views.push(view);
                    s.views = Some(views);
                    Ok(obj("ModuleSource", s))
                }),
        );
    let local = Object::new("LocalModuleSource")
        .with_id()
        .field(
            Field::new("contextDirectory", "Directory")
                .resolve_sync(|ctx| Ok(obj("Directory", src(ctx)?.context.clone()))),
        )
        .field(
            Field::new("rootSubpath", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(src(ctx)?.root.clone()))),
        );
    let git = Object::new("GitModuleSource")
        .with_id()
        .field(git_text("cloneURL", |url, _, _, _| url.to_owned()))
        .field(git_text("commit", |_, _, commit, _| commit.to_owned()))
        .field(
            Field::new("contextDirectory", "Directory!")
                .resolve_sync(|ctx| Ok(obj("Directory", src(ctx)?.context.clone()))),
        )
        .field(git_text("htmlURL", |url, version, _, root| {
            let web = url.trim_end_matches(".git");
            if web.starts_with("https://") || web.starts_with("http://") {
                format!(
                    "{web}/tree/{version}/{}",
                    root.trim_start_matches("./").trim_start_matches('.')
                )
                .trim_end_matches('/')
                .to_owned()
            } else {
                url.to_owned()
            }
        }))
        .field(git_text("root", |url, _, _, _| {
            url.split_once("://")
                .map(|(_, rest)| rest)
                .unwrap_or(url)
                .trim_end_matches(".git")
                .to_owned()
        }))
        .field(
            Field::new("rootSubpath", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(src(ctx)?.root.clone()))),
        )
        .field(git_text("version", |_, version, _, _| version.to_owned()));
    let view =
        Object::new("ModuleSourceView")
            .with_id()
            .field(Field::new("name", "String!").resolve_sync(|ctx| {
                Ok(Value::leaf(ctx.parent::<ModuleSourceView>()?.name.clone()))
            }))
            .field(Field::new("patterns", "[String!]!").resolve_sync(|ctx| {
                Ok(Value::leaf_list(
                    ctx.parent::<ModuleSourceView>()?.patterns.clone(),
                ))
            }));
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
    b.enumeration(dagr_gql::Enum::new("ModuleSourceKind").values(["LOCAL_SOURCE", "GIT_SOURCE"]))
        .object(source)
        .object(local)
        .object(git)
        .object(view)
        .object(dependency)
}

/// A `String!` of a git source: `pick(url, version, commit, root)`.
fn git_text(name: &str, pick: fn(&str, &str, &str, &str) -> String) -> Field {
    Field::new(name, "String!").resolve_sync(move |ctx| {
        let s = ctx.parent::<ModuleSource>()?;
        match &s.location {
            Location::Git {
                url,
                version,
                commit,
            } => Ok(Value::leaf(pick(url, version, commit, &s.root))),
            _ => Err(FieldError::new("not a git module source")),
        }
    })
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

/// `Query.moduleSource(refString, stable)`: a local module (a path of the caller's host) or a
/// git one (see [`parse_ref`]).
pub(crate) fn query_module_source() -> Field {
    Field::new("moduleSource", "ModuleSource!")
        .arg(Arg::new("refString", "String!"))
        .arg(Arg::new("stable", "Boolean").default(false))
        .scoped(crate::query::host_scope)
        .resolve(|ctx| async move {
            let ref_string: String = ctx.arg("refString")?;
            let source = match parse_ref(&ref_string).map_err(FieldError::new)? {
                ParsedRef::Local(path) => {
                    let owner = crate::query::host_owner(&ctx)?;
                    ModuleSource::local(&ref_string, owner, &normalize(&path))?
                }
                ParsedRef::Git { url, root, version } => {
                    ModuleSource::git(&ctx, &ref_string, &url, &root, &version).await?
                }
            };
            Ok(obj("ModuleSource", source))
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
    let stack = vec![src.key()];
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
