//! Image archive ops: `ImageArchive` writes the OCI archive of an image built from a rootfs as
//! `/image.tar` of a new filesystem ([`crate::export`]); `ImportImage` loads the image of an OCI
//! archive file found in a filesystem.

use dagr_solver::{ImageVariant, ResultRef, RunOutput};

use crate::mounts::Cleanup;
use crate::{Worker, WorkerError, blocking, export, fsops, op_err, output_snapshot};

impl Worker {
    /// `/image.tar`: the OCI archive of an image built from `op.rootfs`, or of an index of it
    /// and `op.variants` (each built from its own rootfs among `inputs`).
    pub(crate) async fn run_image_archive(
        &self,
        op: &dagr_solver::ImageArchiveOp,
        inputs: &[ResultRef],
    ) -> Result<RunOutput, WorkerError> {
        let main = ImageVariant {
            rootfs: op.rootfs,
            base_manifest: op.base_manifest.clone(),
            config: op.config.clone(),
            platform: op
                .platform
                .clone()
                .unwrap_or_else(dagr_solver::Platform::host),
        };
        let root = if op.variants.is_empty() {
            self.build_variant(&main, op.platform.is_some(), inputs)
                .await?
                .manifest_digest
        } else {
            let mut built = Vec::new();
            for variant in std::iter::once(&main).chain(&op.variants) {
                let image = self.build_variant(variant, true, inputs).await?;
                built.push((image, variant.platform.clone()));
            }
            export::build_index(self, &built)
                .await
                .map_err(|e| op_err("image_archive", e.to_string()))?
        };
        let mut cleanup = Cleanup::new(self.clone());
        let empty = self.empty_snapshot().await?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&empty), "archive")
            .await?;
        export::export_tarball(self, &root, &dir.join("image.tar"), None)
            .await
            .map_err(|e| op_err("image_archive", e.to_string()))?;
        self.commit_output(cleanup, key).await
    }

    /// The image of one variant (with its platform written when `set_platform`).
    async fn build_variant(
        &self,
        variant: &ImageVariant,
        set_platform: bool,
        inputs: &[ResultRef],
    ) -> Result<export::BuiltImage, WorkerError> {
        let rootfs = inputs.get(variant.rootfs.input as usize).ok_or_else(|| {
            op_err(
                "image_archive",
                format!("input {} missing", variant.rootfs.input),
            )
        })?;
        let rootfs_key = output_snapshot(rootfs, variant.rootfs.output)?;
        let base: Option<dagr_snapshot::Digest> = match &variant.base_manifest {
            Some(d) => Some(
                d.parse()
                    .map_err(|e| op_err("image_archive", format!("{d}: {e}")))?,
            ),
            None => None,
        };
        let config: serde_json::Value = serde_json::from_str(&variant.config)
            .map_err(|e| op_err("image_archive", format!("config: {e}")))?;
        let mut input = export::ImageConfigInput::from_oci_config(&config);
        if set_platform {
            input.platform = Some(variant.platform.clone());
        }
        export::build_image(self, &rootfs_key, base.as_ref(), input)
            .await
            .map_err(|e| op_err("image_archive", e.to_string()))
    }

    /// The image of an OCI archive file in a filesystem.
    pub(crate) async fn run_import_image(
        &self,
        op: &dagr_solver::ImportImageOp,
        archive: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let view = self
            .mount_view(&output_snapshot(archive, op.archive.output)?)
            .await?;
        let (root, path) = (view.path().to_path_buf(), op.path.clone());
        let path = blocking(move || Ok(fsops::resolve_in_root(&root, &path, true)?)).await;
        let imported = match path {
            Ok(path) => dagr_registry::layout::import_archive(
                &self.inner.content,
                &path,
                op.tag.as_deref().filter(|t| !t.is_empty()),
                &op.platform,
            )
            .await
            .map_err(|e| op_err("import_image", format!("{}: {e}", op.path))),
            Err(e) => Err(e),
        };
        view.release().await;
        self.image_result(imported?).await
    }
}
