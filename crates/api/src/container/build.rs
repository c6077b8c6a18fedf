//! Dockerfile builds: `Container.build(context, dockerfile, buildArgs, target, secrets)` and
//! `Directory.dockerBuild(dockerfile, platform, buildArgs, target, secrets)`, through
//! `dagr-dockerfile`: the Dockerfile (and `<dockerfile>.dockerignore` or `.dockerignore`) is read
//! from the context, the images its needed stages name are resolved for the platform, and the
//! translation gives the rootfs vertex and the image config. Steps are ordinary ops, cached like
//! every other.
//!
//! As in Dagger, `secrets` are known to the Dockerfile by their names
//! (`RUN --mount=type=secret,id=NAME`), the built container also mounts them at
//! `/run/secrets/NAME` for its own execs, and the Dockerfile's image config is merged into the
//! container's (environment, labels and exposed ports merged; the rest replaced).

use std::collections::BTreeMap;
use std::sync::Arc;

use dagr_gql::{Arg, Args, Field, FieldError, InputObject, SchemaBuilder};
use dagr_solver::Platform;
use serde::Deserialize;

use super::{ok, parent};
use crate::args::null_as_default;
use crate::state::{Container, ContainerMount, Directory, Fs, ImageConfig, MountKind, Secret};
use crate::{Caller, Services, caller, graph_err, obj, services};

/// Adds the `BuildArg` input.
pub(crate) fn register_inputs(b: SchemaBuilder) -> SchemaBuilder {
    b.input(
        InputObject::new("BuildArg")
            .field(Arg::new("name", "String!"))
            .field(Arg::new("value", "String!")),
    )
}

/// One `--build-arg`.
#[derive(Deserialize, Clone)]
struct BuildArg {
    name: String,
    value: String,
}

/// What both fields take.
struct BuildRequest {
    context: Directory,
    dockerfile: String,
    build_args: Vec<BuildArg>,
    target: String,
    secrets: Vec<Arc<Secret>>,
    platform: Platform,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerBuildArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    build_args: Vec<BuildArg>,
    #[serde(default, deserialize_with = "null_as_default")]
    dockerfile: String,
    #[serde(default, deserialize_with = "null_as_default")]
    target: String,
}

impl Args for ContainerBuildArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("buildArgs", "[BuildArg!]").default(serde_json::json!([])),
            Arg::new("context", "DirectoryID!"),
            Arg::new("dockerfile", "String").default("Dockerfile"),
            Arg::new("secrets", "[SecretID!]").default(serde_json::json!([])),
            Arg::new("target", "String").default(""),
        ]
    }
}

/// `Container.build`: the container built from the Dockerfile in `context`, for the
/// container's platform.
pub(super) fn build() -> Field {
    Field::new("build", "Container!")
        .args::<ContainerBuildArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let c = parent(&ctx)?;
            let args: ContainerBuildArgs = ctx.args_as()?;
            let request = BuildRequest {
                context: ctx.loaded::<Directory>("context")?.as_ref().clone(),
                dockerfile: args.dockerfile,
                build_args: args.build_args,
                target: args.target,
                secrets: ctx.loaded_list::<Secret>("secrets")?,
                platform: c.platform.clone(),
            };
            ok(docker_build(&s, &caller, c, request).await?)
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerBuildArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    build_args: Vec<BuildArg>,
    #[serde(default, deserialize_with = "null_as_default")]
    dockerfile: String,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    target: String,
}

impl Args for DockerBuildArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("buildArgs", "[BuildArg!]").default(serde_json::json!([])),
            Arg::new("dockerfile", "String").default("Dockerfile"),
            Arg::new("platform", "Platform"),
            Arg::new("secrets", "[SecretID!]").default(serde_json::json!([])),
            Arg::new("target", "String").default(""),
        ]
    }
}

/// `Directory.dockerBuild`: a new container built from the Dockerfile in this directory, for
/// `platform` (the engine's by default).
pub(crate) fn docker_build_field() -> Field {
    Field::new("dockerBuild", "Container!")
        .args::<DockerBuildArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let args: DockerBuildArgs = ctx.args_as()?;
            let platform = match args.platform {
                Some(p) => p
                    .parse::<Platform>()
                    .map_err(|e| FieldError::new(e.to_string()))?,
                None => s.config.platform.clone(),
            };
            let request = BuildRequest {
                context: ctx.parent::<Directory>()?.clone(),
                dockerfile: args.dockerfile,
                build_args: args.build_args,
                target: args.target,
                secrets: ctx.loaded_list::<Secret>("secrets")?,
                platform: platform.clone(),
            };
            let c = crate::query::new_container(platform)?;
            Ok(obj(
                "Container",
                docker_build(&s, &caller, c, request).await?,
            ))
        })
}

/// Builds `request` on top of `c` (whose config the Dockerfile's is merged into).
async fn docker_build(
    s: &Services,
    caller: &Caller,
    mut c: Container,
    request: BuildRequest,
) -> Result<Container, FieldError> {
    let BuildRequest {
        context,
        dockerfile,
        build_args,
        target,
        secrets,
        platform,
    } = request;
    let dockerfile = if dockerfile.is_empty() {
        "Dockerfile".to_owned()
    } else {
        dockerfile
    };
    let context_fs = context_root(&context)?;
    let (text, ignore) = read_dockerfile(s, caller, &context, &dockerfile).await?;
    let parsed =
        dagr_dockerfile::parse(&text).map_err(|e| FieldError::new(format!("{dockerfile}: {e}")))?;
    let opts = dagr_dockerfile::BuildOptions {
        build_args: build_args
            .into_iter()
            .map(|a| (a.name, a.value))
            .collect::<BTreeMap<_, _>>(),
        target: Some(target).filter(|t| !t.is_empty()),
        target_platform: platform.clone(),
        build_platform: s.config.platform.clone(),
        secrets: secrets
            .iter()
            .map(|secret| (secret.name.clone(), secret.digest.clone()))
            .collect(),
        context: (context_fs.vertex.clone(), context_fs.output),
        dockerignore: ignore
            .as_deref()
            .map(dagr_dockerfile::parse_dockerignore)
            .unwrap_or_default(),
    };
    let requests = dagr_dockerfile::images_needed(&parsed, &opts)
        .map_err(|e| FieldError::new(format!("{dockerfile}: {e}")))?;
    let mut resolved = Vec::new();
    for request in requests {
        let image = s
            .worker()
            .resolve_image(&caller.session_id, &request.reference, &request.platform)
            .await
            .map_err(|e| FieldError::new(s.scrub(&caller.session_id, &e.to_string())))?;
        resolved.push((
            request,
            dagr_dockerfile::BaseImage {
                pinned: image.pinned.clone(),
                config: image.config.clone(),
            },
        ));
    }
    let lookup = |wanted: &dagr_dockerfile::ImageRequest| {
        resolved
            .iter()
            .find(|(r, _)| r == wanted)
            .map(|(_, image)| image.clone())
    };
    let built = dagr_dockerfile::translate(&parsed, &opts, &lookup)
        .map_err(|e| FieldError::new(format!("{dockerfile}: {e}")))?;

    c.rootfs = Fs {
        vertex: built.rootfs.0,
        output: built.rootfs.1,
    };
    c.config = merge_config(&c.config, ImageConfig::from_oci(&built.config));
    c.base_image = built
        .base_image
        .as_deref()
        .and_then(|pinned| pinned.rsplit_once('@'))
        .map(|(_, digest)| digest.to_owned());
    c.image_ref = None;
    c.last_exec = None;
    c.platform = platform;
    for secret in secrets {
        let target = format!("/run/secrets/{}", secret.name);
        c.mounts.retain(|m| m.target != target);
        c.mounts.push(ContainerMount {
            target,
            kind: MountKind::Secret {
                secret: secret.as_ref().clone(),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        });
    }
    Ok(c)
}

/// Dagger's merge of a build's config into the container's: environment, labels and exposed
/// ports merged (the build's values win), everything else the build's.
fn merge_config(current: &ImageConfig, built: ImageConfig) -> ImageConfig {
    let mut merged = built;
    let mut env = current.env.clone();
    for (name, value) in std::mem::take(&mut merged.env) {
        match env.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => env.push((name, value)),
        }
    }
    merged.env = env;
    let mut labels = current.labels.clone();
    labels.append(&mut merged.labels);
    merged.labels = labels;
    merged
        .exposed_ports
        .extend(current.exposed_ports.iter().cloned());
    merged
}

/// The context as a filesystem of its own (the directory's subpath copied out when it is not
/// the root).
fn context_root(context: &Directory) -> Result<Fs, FieldError> {
    if context.path == "/" || context.path.is_empty() {
        return Ok(context.fs.clone());
    }
    crate::directory::copy(
        &Fs::scratch().map_err(graph_err)?,
        "/",
        &context.fs,
        &context.path,
        Vec::new(),
        Vec::new(),
        None,
        None,
    )
}

/// The Dockerfile's text and the ignore file's (`<dockerfile>.dockerignore`, else
/// `.dockerignore` at the context's root), read from the solved context.
async fn read_dockerfile(
    s: &Services,
    caller: &Caller,
    context: &Directory,
    dockerfile: &str,
) -> Result<(String, Option<String>), FieldError> {
    let snapshot = s.snapshot_of(caller, &context.fs).await?;
    let path = crate::state::join(&context.path, dockerfile);
    let ignore_candidates = [
        crate::state::join(&context.path, &format!("{dockerfile}.dockerignore")),
        crate::state::join(&context.path, ".dockerignore"),
    ];
    let view = s
        .worker()
        .mount_view(&snapshot)
        .await
        .map_err(|e| FieldError::new(e.to_string()))?;
    let root = view.path().to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let read = |p: &str| -> Result<Option<String>, String> {
            let resolved =
                dagr_worker::fsops::resolve_in_root(&root, p, true).map_err(|e| e.to_string())?;
            match std::fs::read(&resolved) {
                Ok(bytes) if bytes.len() <= MAX_DOCKERFILE => {
                    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
                }
                Ok(bytes) => Err(format!(
                    "{p}: {} bytes is larger than a Dockerfile may be",
                    bytes.len()
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(crate::directory::path_error(p, &e)),
            }
        };
        let text = read(&path)?.ok_or_else(|| format!("{path}: no such file or directory"))?;
        let mut ignore = None;
        for candidate in &ignore_candidates {
            if let Some(found) = read(candidate)? {
                ignore = Some(found);
                break;
            }
        }
        Ok::<_, String>((text, ignore))
    })
    .await;
    view.release().await;
    read.map_err(|e| FieldError::new(format!("reading the Dockerfile failed: {e}")))?
        .map_err(FieldError::new)
}

/// Largest Dockerfile or ignore file read.
const MAX_DOCKERFILE: usize = 4 << 20;
