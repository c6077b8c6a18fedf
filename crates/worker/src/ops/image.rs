//! `Image` ops: a reference resolved to its manifest digest per session ([`ResolvedImageRef`]),
//! pulled into the content store and unpacked into committed snapshots (one per layer chain).

use dagr_registry::Reference;
use dagr_snapshot::LayerDescriptor;
use dagr_solver::{ResultRef, RunCtx, RunOutput};

use crate::{ImageMeta, ResultMeta, Worker, WorkerError, op_err};

/// An image reference pinned to its manifest digest, with its config.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImageRef {
    /// `name@sha256:...` (the platform's manifest when the tag names an index).
    pub pinned: String,
    /// The OCI image config's `config` section (Env, Cmd, Entrypoint, WorkingDir, User, ...).
    pub config: serde_json::Value,
}

impl Worker {
    /// Resolves an image reference to `name@sha256:...` and its config, for a session (once per
    /// session, tag and platform: a session sees one image per tag).
    pub async fn resolve_image(
        &self,
        session_id: &str,
        reference: &str,
        platform: &dagr_solver::Platform,
    ) -> Result<ResolvedImageRef, WorkerError> {
        let parsed = Reference::parse(reference)?;
        let cache_key = (
            session_id.to_owned(),
            format!("{reference}|{}/{}", platform.os, platform.architecture),
        );
        if let Some(hit) = self.inner.resolved.lock().get(&cache_key) {
            return Ok(hit.clone());
        }
        let resolved = self
            .registry_for(session_id)
            .resolve(&parsed, platform, &self.inner.content)
            .await?;
        let config = resolved
            .config
            .config()
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or(serde_json::Value::Null);
        let pinned = if parsed.digest().is_some() {
            parsed.to_string()
        } else {
            parsed.with_digest(resolved.manifest_digest).to_string()
        };
        let answer = ResolvedImageRef { pinned, config };
        self.inner.resolved.lock().insert(cache_key, answer.clone());
        Ok(answer)
    }

    pub(crate) async fn run_image(
        &self,
        reference: &str,
        platform: &dagr_solver::Platform,
        ctx: &RunCtx,
    ) -> Result<RunOutput, WorkerError> {
        let mut parsed = Reference::parse(reference)?;
        if let Some(d) = ctx.resolved_digest()
            && parsed.digest().is_none()
        {
            parsed = parsed.with_digest(d.parse().map_err(|e| op_err("image", format!("{e}")))?);
        }
        let image = self
            .registry_for(ctx.session_id())
            .pull(&parsed, platform, &self.inner.content)
            .await?;
        self.image_result(image).await
    }

    /// Unpacks a pulled or imported image into snapshots: the result is its top layer, with the
    /// image's manifest digest and config.
    pub(crate) async fn image_result(
        &self,
        image: dagr_registry::PulledImage,
    ) -> Result<RunOutput, WorkerError> {
        let layers: Vec<LayerDescriptor> = image
            .layers
            .iter()
            .map(|d| {
                Ok(LayerDescriptor {
                    digest: d
                        .digest()
                        .to_string()
                        .parse()
                        .map_err(|e| op_err("image", format!("layer digest: {e}")))?,
                    media_type: d.media_type().to_string(),
                })
            })
            .collect::<Result<_, WorkerError>>()?;
        let top = if layers.is_empty() {
            self.empty_snapshot().await?
        } else {
            self.inner
                .snapshots
                .unpack_image_layers(&self.inner.content, &layers, &Default::default())
                .await?
        };
        let config = image
            .config
            .config()
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or(serde_json::Value::Null);
        let meta = ResultMeta {
            image: Some(ImageMeta {
                manifest_digest: image.manifest_digest.to_string(),
                config,
            }),
            ..Default::default()
        };
        Ok(RunOutput::new(ResultRef::new(top, meta.into_value())))
    }
}
