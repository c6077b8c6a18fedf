//! Image archive ops: `ImageArchive` writes the OCI archive of an image built from a rootfs as
//! `/image.tar` of a new filesystem ([`crate::export`]); `ImportImage` loads the image of an OCI
//! archive file found in a filesystem.

use dagr_solver::{ResultRef, RunOutput};

use crate::mounts::Cleanup;
use crate::{Worker, WorkerError, blocking, export, fsops, op_err, output_snapshot};

impl Worker {
    /// `/image.tar`: the OCI archive of an image built from `rootfs`.
    pub(crate) async fn run_image_archive(
        &self,
        op: &dagr_solver::ImageArchiveOp,
        rootfs: &ResultRef,
    ) -> Result<RunOutput, WorkerError> {
        let rootfs_key = output_snapshot(rootfs, op.rootfs.output)?;
        let base: Option<dagr_snapshot::Digest> = match &op.base_manifest {
            Some(d) => Some(
                d.parse()
                    .map_err(|e| op_err("image_archive", format!("{d}: {e}")))?,
            ),
            None => None,
        };
        let config: serde_json::Value = serde_json::from_str(&op.config)
            .map_err(|e| op_err("image_archive", format!("config: {e}")))?;
        let built = export::build_image(
            self,
            &rootfs_key,
            base.as_ref(),
            export::ImageConfigInput::from_oci_config(&config),
        )
        .await
        .map_err(|e| op_err("image_archive", e.to_string()))?;
        let mut cleanup = Cleanup::new(self.clone());
        let empty = self.empty_snapshot().await?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&empty), "archive")
            .await?;
        export::export_tarball(self, &built, &dir.join("image.tar"), None)
            .await
            .map_err(|e| op_err("image_archive", e.to_string()))?;
        self.commit_output(cleanup, key).await
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
