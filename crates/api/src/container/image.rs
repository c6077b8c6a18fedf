//! The container as an image: `from` (pull), registry credentials, `imageRef`, `platform`, and
//! the container as an OCI image: `asTarball` (an archive file), `export` (an archive written to
//! the caller's host), `publish` (pushed to a registry) and `import` (from an archive). Images
//! are built by `dagr_worker::export` from the solved rootfs, reusing the base image's layers.

use dagr_gql::{Arg, Args, Enum, Field, FieldError, ResolveCtx, SchemaBuilder, Value};
use dagr_solver::{ImageArchiveOp, ImageVariant, ImportImageOp, InputRef, Op, Vertex};
use dagr_worker::ResultMeta;
use dagr_worker::export::{BuiltImage, ImageConfigInput, build_image};
use serde::Deserialize;

use super::{ok, parent};
use crate::args::null_as_default;
use crate::state::{Container, File, Fs, ImageConfig, Inputs, Secret};
use crate::{Services, caller, graph_err, obj, services};

/// `ImageLayerCompression`: only `Gzip` is served.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
enum ImageLayerCompression {
    Gzip,
    Zstd,
    EStarGZ,
    Uncompressed,
}

/// `ImageMediaTypes`: only `OCIMediaTypes` is served.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
enum ImageMediaTypes {
    #[default]
    OCIMediaTypes,
    DockerMediaTypes,
}

/// Adds the enums of the image options.
pub(super) fn register_enums(b: SchemaBuilder) -> SchemaBuilder {
    b.enumeration(Enum::new("ImageLayerCompression").values([
        "Gzip",
        "Zstd",
        "EStarGZ",
        "Uncompressed",
    ]))
    .enumeration(Enum::new("ImageMediaTypes").values(["OCIMediaTypes", "DockerMediaTypes"]))
}

/// `(address: String!)`: an image address or registry host.
#[derive(Deserialize)]
struct AddressArgs {
    address: String,
}

impl Args for AddressArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("address", "String!")]
    }
}

/// `from`: the image at `address` (resolved to a digest for the container's platform), with
/// its config.
pub(super) fn from() -> Field {
    Field::new("from", "Container!")
        .args::<AddressArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let mut c = parent(&ctx)?;
            let AddressArgs { address } = ctx.args_as()?;
            // An internal step: live views show it with `--debug`.
            let span = caller.span.start_with(
                format!("resolve {address}"),
                vec![(dagr_telemetry::attr::INTERNAL, true.into())],
            );
            let resolved = s
                .worker()
                .resolve_image(&caller.session_id, &address, &c.platform)
                .await;
            span.end_with(&resolved);
            let resolved = resolved.map_err(|e| FieldError::new(e.to_string()))?;
            let v = Vertex::new(
                Op::Image {
                    reference: resolved.pinned.clone(),
                    platform: c.platform.clone(),
                },
                vec![],
            )
            .map_err(graph_err)?;
            c.rootfs = Fs::main(v);
            c.config = ImageConfig::from_oci(&resolved.config);
            c.base_image = resolved.pinned.rsplit_once('@').map(|(_, d)| d.to_owned());
            c.image_ref = Some(resolved.pinned);
            c.last_exec = None;
            ok(c)
        })
}

/// The registry host of an address (`registry.example.com/repo`, `docker.io`, `127.0.0.1:5000`).
fn registry_host(address: &str) -> Result<String, FieldError> {
    let first = address.split('/').next().unwrap_or_default();
    if first.contains('.') || first.contains(':') || first == "localhost" {
        return Ok(first.to_owned());
    }
    // A bare image name: Docker Hub.
    if first.is_empty() {
        return Err(FieldError::new(format!(
            "registry address {address:?} is empty"
        )));
    }
    Ok("docker.io".to_owned())
}

/// The arguments of `withRegistryAuth` (the `secret` holding the password is read with
/// `ctx.loaded`).
#[derive(Deserialize)]
struct WithRegistryAuthArgs {
    address: String,
    username: String,
}

impl Args for WithRegistryAuthArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("address", "String!"),
            Arg::new("secret", "SecretID!"),
            Arg::new("username", "String!"),
        ]
    }
}

/// `withRegistryAuth`: credentials for the registry host of `address`. They belong to the
/// session (its pulls and publishes of that host), as in Dagger; the container is unchanged.
pub(super) fn with_registry_auth() -> Field {
    Field::new("withRegistryAuth", "Container!")
        .args::<WithRegistryAuthArgs>()
        .resolve_sync(|ctx| {
            let s = services(ctx)?;
            let caller = caller(ctx)?;
            let WithRegistryAuthArgs { address, username } = ctx.args_as()?;
            let secret = ctx.loaded::<Secret>("secret")?;
            s.registry_auth.set(
                &caller.session_id,
                &registry_host(&address)?,
                &username,
                &secret.digest,
            );
            ok(parent(ctx)?)
        })
}

/// `withoutRegistryAuth`: forgets the session's credentials for the registry host of `address`.
pub(super) fn without_registry_auth() -> Field {
    Field::new("withoutRegistryAuth", "Container!")
        .args::<AddressArgs>()
        .resolve_sync(|ctx| {
            let s = services(ctx)?;
            let caller = caller(ctx)?;
            let AddressArgs { address } = ctx.args_as()?;
            s.registry_auth
                .remove(&caller.session_id, &registry_host(&address)?);
            ok(parent(ctx)?)
        })
}

/// `imageRef`: the pinned reference `from` pulled, while the container is unchanged.
pub(super) fn image_ref() -> Field {
    Field::new("imageRef", "String!").resolve_sync(|ctx| {
        let c = ctx.parent::<Container>()?;
        c.image_ref.clone().map(Value::leaf).ok_or_else(|| {
            FieldError::new("imageRef is only known right after from(): this container was changed or built from scratch")
        })
    })
}

/// `platform`: the container's platform (`os/arch[/variant]`).
pub(super) fn platform() -> Field {
    Field::new("platform", "Platform!")
        .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<Container>()?.platform.to_string())))
}

/// The image options of `asTarball`, `export` and `publish`, in the order of the signatures
/// file, with `target` (`path` or `address`) before `platformVariants`.
fn image_arguments(target: Option<Arg>) -> Vec<Arg> {
    let mut args = vec![
        Arg::new("forcedCompression", "ImageLayerCompression"),
        Arg::new("mediaTypes", "ImageMediaTypes").default("OCIMediaTypes"),
    ];
    args.extend(target);
    args.push(Arg::new("platformVariants", "[ContainerID!]").default(serde_json::json!([])));
    args
}

/// Refuses the image options this engine does not implement (only the defaults are served;
/// `platformVariants` is read by [`platform_variants`]).
fn check_image_options(
    forced_compression: Option<ImageLayerCompression>,
    media_types: ImageMediaTypes,
) -> Result<(), FieldError> {
    if let Some(c) = forced_compression.filter(|c| *c != ImageLayerCompression::Gzip) {
        return Err(FieldError::new(format!(
            "forcedCompression {c:?} is not supported: layers are gzip"
        )));
    }
    if media_types != ImageMediaTypes::OCIMediaTypes {
        return Err(FieldError::new(
            "mediaTypes DockerMediaTypes is not supported: images use OCI media types",
        ));
    }
    Ok(())
}

/// The `platformVariants` containers; each must have a platform of its own, different from
/// the container's.
fn platform_variants(
    ctx: &ResolveCtx,
    c: &Container,
) -> Result<Vec<std::sync::Arc<Container>>, FieldError> {
    let variants = ctx.loaded_list::<Container>("platformVariants")?;
    let mut seen = vec![c.platform.clone()];
    for v in &variants {
        if seen.contains(&v.platform) {
            return Err(FieldError::new(format!(
                "platformVariants: platform {} appears twice",
                v.platform
            )));
        }
        seen.push(v.platform.clone());
    }
    Ok(variants)
}

/// A container's image config as the OCI `config` section (canonical JSON: fixed key order).
fn oci_config_json(c: &Container) -> String {
    let env: Vec<String> = c
        .config
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut config = serde_json::Map::new();
    config.insert("Env".into(), serde_json::json!(env));
    config.insert("Cmd".into(), serde_json::json!(c.config.default_args));
    config.insert("Entrypoint".into(), serde_json::json!(c.config.entrypoint));
    if !c.config.workdir.is_empty() {
        config.insert("WorkingDir".into(), serde_json::json!(c.config.workdir));
    }
    if !c.config.user.is_empty() {
        config.insert("User".into(), serde_json::json!(c.config.user));
    }
    if !c.config.labels.is_empty() {
        config.insert("Labels".into(), serde_json::json!(c.config.labels));
    }
    if !c.config.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = c
            .config
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect();
        config.insert("ExposedPorts".into(), serde_json::Value::Object(ports));
    }
    for (k, v) in &c.config.rest {
        config.insert(k.clone(), v.clone());
    }
    serde_json::Value::Object(config).to_string()
}

fn config_input(c: &Container) -> ImageConfigInput {
    let section = serde_json::from_str(&oci_config_json(c)).unwrap_or_default();
    let mut input = ImageConfigInput::from_oci_config(&section);
    // The section always writes Cmd and Entrypoint (empty lists clear the base's).
    input.cmd = Some(c.config.default_args.clone());
    input.entrypoint = Some(c.config.entrypoint.clone());
    input.platform = Some(c.platform.clone());
    input
}

/// The image of `c`, or the index of it and its `variants`: the digest to export or push.
async fn build_all(
    s: &Services,
    caller: &crate::Caller,
    c: &Container,
    variants: &[std::sync::Arc<Container>],
) -> Result<dagr_worker::export::Digest, FieldError> {
    let main = build(s, caller, c).await?;
    if variants.is_empty() {
        return Ok(main.manifest_digest);
    }
    let mut built = vec![(main, c.platform.clone())];
    for v in variants {
        built.push((build(s, caller, v).await?, v.platform.clone()));
    }
    dagr_worker::export::build_index(s.worker(), &built)
        .await
        .map_err(|e| FieldError::new(format!("building the image index failed: {e}")))
}

async fn build(
    s: &Services,
    caller: &crate::Caller,
    c: &Container,
) -> Result<BuiltImage, FieldError> {
    let rootfs = s.snapshot_of(caller, &c.rootfs).await?;
    let base = match &c.base_image {
        Some(d) => Some(
            d.parse()
                .map_err(|e| FieldError::new(format!("base image digest {d}: {e}")))?,
        ),
        None => None,
    };
    build_image(s.worker(), &rootfs, base.as_ref(), config_input(c))
        .await
        .map_err(|e| FieldError::new(format!("building the image failed: {e}")))
}

/// The arguments of `asTarball`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AsTarballArgs {
    forced_compression: Option<ImageLayerCompression>,
    #[serde(default, deserialize_with = "null_as_default")]
    media_types: ImageMediaTypes,
}

impl Args for AsTarballArgs {
    fn arguments() -> Vec<Arg> {
        image_arguments(None)
    }
}

/// `asTarball`: the container as an OCI image archive (`/image.tar` of a new filesystem).
pub(super) fn as_tarball() -> Field {
    Field::new("asTarball", "File!")
        .args::<AsTarballArgs>()
        .resolve_sync(|ctx| {
            let args: AsTarballArgs = ctx.args_as()?;
            check_image_options(args.forced_compression, args.media_types)?;
            let c = ctx.parent::<Container>()?;
            let variants = platform_variants(ctx, c)?;
            let mut inputs = Inputs::default();
            let rootfs = inputs.add(&c.rootfs);
            let variants = variants
                .iter()
                .map(|v| ImageVariant {
                    rootfs: inputs.add(&v.rootfs),
                    base_manifest: v.base_image.clone(),
                    config: oci_config_json(v),
                    platform: v.platform.clone(),
                })
                .collect::<Vec<_>>();
            let v = Vertex::new(
                Op::ImageArchive(ImageArchiveOp {
                    rootfs,
                    base_manifest: c.base_image.clone(),
                    config: oci_config_json(c),
                    // Written when there are variants (existing single-platform keys stay).
                    platform: (!variants.is_empty()).then(|| c.platform.clone()),
                    variants,
                }),
                inputs.into_vec(),
            )
            .map_err(graph_err)?;
            Ok(obj(
                "File",
                File {
                    fs: Fs::main(v),
                    path: "/image.tar".into(),
                },
            ))
        })
}

/// The arguments of `import` (the archive `source` is read with `ctx.loaded`).
#[derive(Deserialize)]
struct ImportArgs {
    #[serde(default, deserialize_with = "null_as_default")]
    tag: String,
}

impl Args for ImportArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("source", "FileID!"),
            Arg::new("tag", "String").default(""),
        ]
    }
}

/// `import`: the image in an OCI archive (the one tagged `tag` when it holds several), with its
/// config; the archive is read right away.
pub(super) fn import() -> Field {
    Field::new("import", "Container!")
        .args::<ImportArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let mut c = parent(&ctx)?;
            let file = ctx.loaded::<File>("source")?;
            let ImportArgs { tag } = ctx.args_as()?;
            let mut inputs = Inputs::default();
            let archive: InputRef = inputs.add(&file.fs);
            let v = Vertex::new(
                Op::ImportImage(ImportImageOp {
                    archive,
                    path: file.path.clone(),
                    tag: Some(tag).filter(|t| !t.is_empty()),
                    platform: c.platform.clone(),
                }),
                inputs.into_vec(),
            )
            .map_err(graph_err)?;
            // The image's config is part of the container: load it now.
            let result = s.solve(&caller, &v).await?;
            let image = ResultMeta::of(&result)
                .image
                .ok_or_else(|| FieldError::new("the imported archive gave no image"))?;
            c.rootfs = Fs::main(v);
            c.config = ImageConfig::from_oci(&image.config);
            c.base_image = Some(image.manifest_digest);
            c.image_ref = None;
            c.last_exec = None;
            ok(c)
        })
}

/// The arguments of `export`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportArgs {
    forced_compression: Option<ImageLayerCompression>,
    #[serde(default, deserialize_with = "null_as_default")]
    media_types: ImageMediaTypes,
    path: String,
}

impl Args for ExportArgs {
    fn arguments() -> Vec<Arg> {
        image_arguments(Some(Arg::new("path", "String!")))
    }
}

/// `export`: writes the container as an OCI image archive to `path` on the caller's host.
pub(super) fn export() -> Field {
    Field::new("export", "Boolean!")
        .args::<ExportArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let args: ExportArgs = ctx.args_as()?;
            check_image_options(args.forced_compression, args.media_types)?;
            let host_path = args.path;
            let c = ctx.parent_arc::<Container>()?;
            let variants = platform_variants(&ctx, &c)?;
            let root = build_all(&s, &caller, &c, &variants).await?;
            let dir = tempfile::tempdir().map_err(|e| FieldError::new(format!("temp dir: {e}")))?;
            let tarball = dir.path().join("image.tar");
            dagr_worker::export::export_tarball(s.worker(), &root, &tarball, None)
                .await
                .map_err(|e| FieldError::new(format!("writing the image archive failed: {e}")))?;
            s.host
                .push_file(&caller, &tarball, &host_path, true)
                .await
                .map_err(|e| FieldError::new(format!("exporting to {host_path}: {e}")))?;
            Ok(Value::leaf(true))
        })
}

/// The arguments of `publish`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishArgs {
    forced_compression: Option<ImageLayerCompression>,
    #[serde(default, deserialize_with = "null_as_default")]
    media_types: ImageMediaTypes,
    address: String,
}

impl Args for PublishArgs {
    fn arguments() -> Vec<Arg> {
        image_arguments(Some(Arg::new("address", "String!")))
    }
}

/// `publish`: pushes the container as an image to `address`; answers the pushed reference
/// (with its digest).
pub(super) fn publish() -> Field {
    Field::new("publish", "String!")
        .args::<PublishArgs>()
        .resolve(|ctx| async move {
            let s = services(&ctx)?;
            let caller = caller(&ctx)?;
            let args: PublishArgs = ctx.args_as()?;
            check_image_options(args.forced_compression, args.media_types)?;
            let address = args.address;
            let c = ctx.parent_arc::<Container>()?;
            let variants = platform_variants(&ctx, &c)?;
            let root = build_all(&s, &caller, &c, &variants).await?;
            let pushed =
                dagr_worker::export::publish(s.worker(), &root, &address, &caller.session_id)
                    .await
                    .map_err(|e| {
                        FieldError::new(s.scrub(
                            &caller.session_id,
                            &format!("publishing {address} failed: {e}"),
                        ))
                    })?;
            Ok(Value::leaf(pushed))
        })
}
