//! Unpacking an image's layers into a chain of committed snapshots keyed by chain id:
//! [`Snapshotter::unpack_image_layers`]. A second unpack of the same layers is a no-op.

use std::io::BufReader;

use sha2::{Digest as _, Sha256};

use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::layer::{ApplyOptions, LayerError, apply_layer};
use crate::mount::{MountError, mount_all};
use crate::snapshotter::{DIFF_IDS, Kind, SnapshotError, Snapshotter};

/// Layer media types we unpack (compression is detected from the blob itself).
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// One layer of an image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// Digest of the (compressed) layer blob in the content store.
    pub digest: Digest,
    pub media_type: String,
}

/// Errors unpacking layers. Each names the layer that failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("no layers to unpack")]
    NoLayers,
    #[error("layer {digest} has unsupported media type {media_type:?}")]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("layer {digest}: {source}")]
    Apply { digest: Digest, source: LayerError },
    #[error("layer {digest}: {source}")]
    Content {
        digest: Digest,
        source: ContentError,
    },
    #[error("layer {digest}: {source}")]
    Mount { digest: Digest, source: MountError },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// The chain id of a layer on top of the chain `parent` (OCI image spec).
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => {
            let mut h = Sha256::new();
            h.update(format!("{p} {diff_id}").as_bytes());
            Digest::from_hasher(h)
        }
    }
}

impl Snapshotter {
    /// Unpacks `layers` (bottom first, blobs already in `content`) into committed snapshots named
    /// by their chain ids (`sha256:<hex>`) and returns the top one's key. Layers whose chain
    /// snapshot already exists are skipped.
    pub async fn unpack_image_layers(
        &self,
        content: &ContentStore,
        layers: &[LayerDescriptor],
        options: &ApplyOptions,
    ) -> Result<String, UnpackError> {
        if layers.is_empty() {
            return Err(UnpackError::NoLayers);
        }
        for l in layers {
            if !LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()) {
                return Err(UnpackError::UnsupportedMediaType {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                });
            }
        }
        let mut parent: Option<Digest> = None;
        for layer in layers {
            if let Some(diff_id) = self.known_diff_id(&layer.digest)? {
                let chain = chain_id(parent.as_ref(), &diff_id);
                if matches!(self.stat(&chain.to_string()), Ok(info) if info.kind == Kind::Committed)
                {
                    parent = Some(chain);
                    continue;
                }
            }
            parent = Some(
                self.unpack_one(content, layer, parent.as_ref(), options)
                    .await?,
            );
        }
        // `layers` is non-empty, so the loop set it.
        Ok(parent.map(|p| p.to_string()).unwrap_or_default())
    }

    /// For a snapshot unpacked from an image layer (named by its chain id), the layer blob it
    /// came from and that layer's diff id; `None` for any other snapshot. The blob may since
    /// have been collected from the content store.
    pub fn image_layer_of(&self, key: &str) -> Result<Option<(Digest, Digest)>, SnapshotError> {
        use redb::ReadableTable as _;
        let Ok(chain) = key.parse::<Digest>() else {
            return Ok(None);
        };
        let parent = match self.stat(key)?.parent {
            Some(p) => match p.parse::<Digest>() {
                Ok(d) => Some(d),
                Err(_) => return Ok(None),
            },
            None => None,
        };
        let table = self.diff_ids()?;
        for item in table.iter().map_err(|e| SnapshotError::Db(e.into()))? {
            let (blob, diff_id) = item.map_err(|e| SnapshotError::Db(e.into()))?;
            let (Ok(blob), Ok(diff_id)) = (
                blob.value().parse::<Digest>(),
                diff_id.value().parse::<Digest>(),
            ) else {
                continue;
            };
            if chain_id(parent.as_ref(), &diff_id) == chain {
                return Ok(Some((blob, diff_id)));
            }
        }
        Ok(None)
    }

    /// The table of layer blob -> diff id, for reading.
    fn diff_ids(&self) -> Result<redb::ReadOnlyTable<&'static str, &'static str>, SnapshotError> {
        use redb::ReadableDatabase as _;
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| SnapshotError::Db(e.into()))?;
        txn.open_table(DIFF_IDS)
            .map_err(|e| SnapshotError::Db(e.into()))
    }

    fn known_diff_id(&self, layer: &Digest) -> Result<Option<Digest>, SnapshotError> {
        let value = self
            .diff_ids()?
            .get(layer.to_string().as_str())
            .map_err(|e| SnapshotError::Db(e.into()))?;
        Ok(value.and_then(|v| v.value().parse().ok()))
    }

    async fn unpack_one(
        &self,
        content: &ContentStore,
        layer: &LayerDescriptor,
        parent: Option<&Digest>,
        options: &ApplyOptions,
    ) -> Result<Digest, UnpackError> {
        let content = content.clone();
        let layer = layer.clone();
        let parent = parent.cloned();
        let options = options.clone();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let digest = layer.digest.clone();
            let blob = content
                .open_blob_sync(&digest)
                .map_err(|source| UnpackError::Content {
                    digest: digest.clone(),
                    source,
                })?;
            let parent_key = parent.as_ref().map(|p| p.to_string());
            let temp_key = format!("unpack/{}/{}", inner.temp_name(), digest.hex());
            let mounts = inner.create(&temp_key, parent_key.as_deref(), Kind::Active)?;
            let applied = (|| {
                let target = inner.temp_mount_dir()?;
                let result = mount_all(&mounts, &target, inner.sys())
                    .map_err(|source| UnpackError::Mount {
                        digest: digest.clone(),
                        source,
                    })
                    .and_then(|guard| {
                        let stats = apply_layer(BufReader::new(blob), &target, &options).map_err(
                            |source| UnpackError::Apply {
                                digest: digest.clone(),
                                source,
                            },
                        );
                        guard.unmount().map_err(|source| UnpackError::Mount {
                            digest: digest.clone(),
                            source,
                        })?;
                        stats
                    });
                let _ = std::fs::remove_dir(&target);
                result
            })();
            let stats = match applied {
                Ok(s) => s,
                Err(e) => {
                    let _ = inner.remove(&temp_key, false);
                    return Err(e);
                }
            };
            let chain = chain_id(parent.as_ref(), &stats.diff_id);
            inner.remember_diff_id(&digest, &stats.diff_id)?;
            match inner.commit(&chain.to_string(), &temp_key) {
                Ok(()) => {}
                // Unpacked concurrently by someone else: keep theirs.
                Err(SnapshotError::AlreadyExists(_)) => {
                    inner.remove(&temp_key, false)?;
                }
                Err(e) => {
                    let _ = inner.remove(&temp_key, false);
                    return Err(e.into());
                }
            }
            Ok(chain)
        })
        .await
        .map_err(|e| UnpackError::Snapshot(SnapshotError::Task(e.to_string())))?
    }
}
