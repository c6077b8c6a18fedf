//! Containers as OCI images: `Container.export` (an OCI archive written to the caller's host) and
//! `Container.publish` (pushed to a registry). The image is built by `dagr_worker::export` from the
//! solved rootfs, reusing the base image's layers.

use dagr_gql::{Arg, Field, FieldError, Object, ResolveCtx, Value};
use dagr_solver::{ImageArchiveOp, ImportImageOp, InputRef, Op, Vertex};
use dagr_worker::ResultMeta;
use dagr_worker::export::{BuiltImage, ImageConfigInput, build_image};

use crate::state::{Container, File, Fs, ImageConfig, Inputs};
use crate::{Caller, Services, caller, graph_err, obj, services};

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
    serde_json::Value::Object(config).to_string()
}

/// Refuses the export options this engine does not implement (only the defaults are served).
fn check_image_options(ctx: &ResolveCtx) -> Result<(), FieldError> {
    let compression: Option<String> = ctx.arg("forcedCompression")?;
    if let Some(c) = compression.filter(|c| c != "Gzip") {
        return Err(FieldError::new(format!(
            "forcedCompression {c} is not supported: layers are gzip"
        )));
    }
    let media: Option<String> = ctx.arg("mediaTypes")?;
    if media.as_deref().is_some_and(|m| m != "OCIMediaTypes") {
        return Err(FieldError::new(
            "mediaTypes DockerMediaTypes is not supported: images use OCI media types",
        ));
    }
    if ctx.args().get("platformVariants").is_some_and(|v| {
        !matches!(v, dagr_gql::ArgValue::List(l) if l.is_empty())
            && !matches!(v, dagr_gql::ArgValue::Null)
    }) {
        return Err(FieldError::new(
            "platformVariants are not supported: images have one platform",
        ));
    }
    Ok(())
}

fn config_input(c: &Container) -> ImageConfigInput {
    ImageConfigInput {
        env: c
            .config
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        cmd: Some(c.config.default_args.clone()),
        entrypoint: Some(c.config.entrypoint.clone()),
        working_dir: Some(c.config.workdir.clone()).filter(|w| !w.is_empty()),
        user: Some(c.config.user.clone()).filter(|u| !u.is_empty()),
        labels: c.config.labels.clone(),
        ..Default::default()
    }
}

async fn build(s: &Services, caller: &Caller, c: &Container) -> Result<BuiltImage, FieldError> {
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

/// `name: String!` between the image options, in the order of the signatures file.
fn image_args(field: Field, name: &str) -> Field {
    field
        .arg(Arg::new("forcedCompression", "ImageLayerCompression"))
        .arg(Arg::new("mediaTypes", "ImageMediaTypes").default("OCIMediaTypes"))
        .arg(Arg::new(name, "String!"))
        .arg(Arg::new("platformVariants", "[ContainerID!]").default(serde_json::json!([])))
}

/// Adds `export`, `publish`, `asTarball` and `import` to the Container object.
pub(crate) fn fields(container: Object) -> Object {
    container
        .field(
            Field::new("asTarball", "File!")
                .arg(Arg::new("forcedCompression", "ImageLayerCompression"))
                .arg(Arg::new("mediaTypes", "ImageMediaTypes").default("OCIMediaTypes"))
                .arg(Arg::new("platformVariants", "[ContainerID!]").default(serde_json::json!([])))
                .resolve_sync(|ctx| {
                    check_image_options(ctx)?;
                    let c = ctx.parent::<Container>()?;
                    let mut inputs = Inputs::default();
                    let rootfs = inputs.add(&c.rootfs);
                    let v = Vertex::new(
                        Op::ImageArchive(ImageArchiveOp {
                            rootfs,
                            base_manifest: c.base_image.clone(),
                            config: oci_config_json(c),
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
                }),
        )
        .field(
            Field::new("import", "Container!")
                .arg(Arg::new("source", "FileID!"))
                .arg(Arg::new("tag", "String").default(""))
                .resolve(|ctx| async move {
                    let s = services(&ctx)?;
                    let caller = caller(&ctx)?;
                    let mut c = ctx.parent::<Container>()?.clone();
                    let file = ctx.loaded::<File>("source")?;
                    let tag: Option<String> = ctx.arg("tag")?;
                    let mut inputs = Inputs::default();
                    let archive: InputRef = inputs.add(&file.fs);
                    let v = Vertex::new(
                        Op::ImportImage(ImportImageOp {
                            archive,
                            path: file.path.clone(),
                            tag: tag.filter(|t| !t.is_empty()),
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
                    Ok(obj("Container", c))
                }),
        )
        .field(
            image_args(Field::new("export", "Boolean!"), "path").resolve(|ctx| async move {
                let s = services(&ctx)?;
                let caller = caller(&ctx)?;
                check_image_options(&ctx)?;
                let c = ctx.parent_arc::<Container>()?;
                let host_path: String = ctx.arg("path")?;
                let built = build(&s, &caller, &c).await?;
                let dir =
                    tempfile::tempdir().map_err(|e| FieldError::new(format!("temp dir: {e}")))?;
                let tarball = dir.path().join("image.tar");
                dagr_worker::export::export_tarball(s.worker(), &built, &tarball, None)
                    .await
                    .map_err(|e| {
                        FieldError::new(format!("writing the image archive failed: {e}"))
                    })?;
                s.host
                    .push_file(&caller, &tarball, &host_path, true)
                    .await
                    .map_err(|e| FieldError::new(format!("exporting to {host_path}: {e}")))?;
                Ok(Value::leaf(true))
            }),
        )
        .field(
            image_args(Field::new("publish", "String!"), "address").resolve(|ctx| async move {
                let s = services(&ctx)?;
                let caller = caller(&ctx)?;
                check_image_options(&ctx)?;
                let c = ctx.parent_arc::<Container>()?;
                let address: String = ctx.arg("address")?;
                let built = build(&s, &caller, &c).await?;
                let pushed =
                    dagr_worker::export::publish(s.worker(), &built, &address, &caller.session_id)
                        .await
                        .map_err(|e| {
                            FieldError::new(
                                s.scrub(&caller, &format!("publishing {address} failed: {e}")),
                            )
                        })?;
                Ok(Value::leaf(pushed))
            }),
        )
}
