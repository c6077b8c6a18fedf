//! Unpacking an image's layers into a chain of committed snapshots keyed by chain id:
//! [`Snapshotter::unpack_image_layers`] (blobs from the content store; a second unpack of the
//! same layers is a no-op) and [`Snapshotter::unpack_layer_from`] (one layer as it is read,
//! verified before it is committed; [`Snapshotter::unpacked_chain`] says whether a chain is
//! there already).

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
    #[error("layer {digest}: its bytes have digest {actual}")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Hashes every byte read through it (the compressed blob, whatever the unpacker consumes).
struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: std::io::Read> std::io::Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Applies `layer` read from `blob` into a new active snapshot on `parent` (mounted while it
/// is applied) and commits it under its chain id (unless another unpack committed it first).
/// With `verify`, the blob's bytes must be exactly `layer.digest` (all of them: what the
/// unpacker leaves unread is read too), else the snapshot is removed.
fn apply_and_commit(
    inner: &std::sync::Arc<crate::snapshotter::Inner>,
    blob: impl std::io::Read,
    layer: &LayerDescriptor,
    parent: Option<Digest>,
    options: &ApplyOptions,
    verify: bool,
) -> Result<Digest, UnpackError> {
    let digest = layer.digest.clone();
    let mut blob = VerifyingReader {
        inner: blob,
        hasher: Sha256::new(),
    };
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
                let stats =
                    apply_layer(&mut blob, &target, options).map_err(|source| UnpackError::Apply {
                        digest: digest.clone(),
                        source,
                    });
                guard.unmount().map_err(|source| UnpackError::Mount {
                    digest: digest.clone(),
                    source,
                })?;
                stats
            });
        let _ = std::fs::remove_dir(&target);
        let stats = result?;
        if verify {
            std::io::copy(&mut blob, &mut std::io::sink()).map_err(|source| {
                UnpackError::Apply {
                    digest: digest.clone(),
                    source: LayerError::Read(source),
                }
            })?;
            let actual = Digest::from_hasher(std::mem::take(&mut blob.hasher));
            if actual != digest {
                return Err(UnpackError::DigestMismatch {
                    digest: digest.clone(),
                    actual,
                });
            }
        }
        Ok(stats)
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
            let blob =
                content
                    .open_blob_sync(&layer.digest)
                    .map_err(|source| UnpackError::Content {
                        digest: layer.digest.clone(),
                        source,
                    })?;
            // The content store verified the blob when it stored it.
            apply_and_commit(
                &inner,
                BufReader::new(blob),
                &layer,
                parent,
                &options,
                false,
            )
        })
        .await
        .map_err(|e| UnpackError::Snapshot(SnapshotError::Task(e.to_string())))?
    }

    /// Unpacks the one layer `layer` read from `blob` (its compressed bytes, e.g. as they
    /// download) onto the committed chain snapshot `parent`, and returns the new chain id. The
    /// bytes are hashed as they are read and the snapshot is committed only if they are exactly
    /// `layer.digest`: nothing unverified is kept. The blob itself is not stored. Blocking
    /// reads of `blob` happen on a blocking thread.
    pub async fn unpack_layer_from<R: std::io::Read + Send + 'static>(
        &self,
        blob: R,
        layer: &LayerDescriptor,
        parent: Option<&str>,
    ) -> Result<String, UnpackError> {
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
            return Err(UnpackError::UnsupportedMediaType {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
        let parent = match parent {
            Some(p) => Some(p.parse::<Digest>().map_err(|_| {
                UnpackError::Snapshot(SnapshotError::NotFound(format!("{p} (not a layer chain)")))
            })?),
            None => None,
        };
        let layer = layer.clone();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            apply_and_commit(&inner, blob, &layer, parent, &ApplyOptions::default(), true)
                .map(|chain| chain.to_string())
        })
        .await
        .map_err(|e| UnpackError::Snapshot(SnapshotError::Task(e.to_string())))?
    }

    /// The top snapshot of `layers` when every one of them is unpacked already (by chain id).
    pub fn unpacked_chain(
        &self,
        layers: &[LayerDescriptor],
    ) -> Result<Option<String>, SnapshotError> {
        let mut parent: Option<Digest> = None;
        for layer in layers {
            let Some(diff_id) = self.known_diff_id(&layer.digest)? else {
                return Ok(None);
            };
            let chain = chain_id(parent.as_ref(), &diff_id);
            if !matches!(self.stat(&chain.to_string()), Ok(info) if info.kind == Kind::Committed) {
                return Ok(None);
            }
            parent = Some(chain);
        }
        Ok(parent.map(|p| p.to_string()))
    }
}
