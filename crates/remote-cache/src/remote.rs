//! [`RemoteCache`]: reads a cache tag's [`CacheIndex`] (kept per tag and manifest digest, so
//! a session start costs one manifest request when nothing changed), fetches the layers of an
//! entry, and exports entries by merging them into what the tag holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dagr_registry::push::retrying;
use dagr_registry::{PullError, PushError, Reference, RegistryClient};
use dagr_snapshot::{ContentError, ContentStore, Digest};

use crate::index::{
    CacheIndex, INDEX_MEDIA_TYPE, IndexError, MANIFEST_MEDIA_TYPE, MAX_INDEX_BYTES,
};

/// How many times an export merges and writes again when another exporter's write replaced
/// its own before it could check it.
const EXPORT_ROUNDS: usize = 5;

/// Why reading from or writing to a remote cache failed; each names the cache's reference.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCacheError {
    #[error("remote cache {reference}: {source}")]
    Pull {
        reference: String,
        #[source]
        source: PullError,
    },
    #[error("remote cache {reference}: {source}")]
    Push {
        reference: String,
        #[source]
        source: PushError,
    },
    #[error("remote cache {reference}: {source}")]
    Index {
        reference: String,
        #[source]
        source: IndexError,
    },
    #[error("remote cache {reference}: blob {digest}: {source}")]
    Content {
        reference: String,
        digest: Digest,
        #[source]
        source: ContentError,
    },
    #[error("remote cache {reference}: manifest {digest}: {reason}")]
    Manifest {
        reference: String,
        digest: Digest,
        reason: String,
    },
    #[error(
        "remote cache {reference}: other exporters replaced this export's entries {rounds} times in a row"
    )]
    Contended { reference: String, rounds: usize },
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Entries the tag did not have before.
    pub entries_added: usize,
    /// Layer blobs uploaded (others were in the registry already).
    pub layers_uploaded: usize,
    pub bytes_uploaded: u64,
}

/// An index as read, with the digest of the manifest that named it.
type LoadedIndex = (Digest, Arc<CacheIndex>);

/// A registry used as a cache. Cheap to clone.
#[derive(Clone)]
pub struct RemoteCache {
    client: RegistryClient,
    content: ContentStore,
    /// The last index read per tag, with its manifest's digest.
    loaded: Arc<parking_lot::Mutex<HashMap<String, LoadedIndex>>>,
}

impl RemoteCache {
    /// A cache reached with `client` (its credentials, transport and upload rate), keeping blobs
    /// in `content`.
    pub fn new(client: RegistryClient, content: ContentStore) -> RemoteCache {
        RemoteCache {
            client,
            content,
            loaded: Default::default(),
        }
    }

    /// The index `reference` points to now (an empty one when the tag does not exist yet).
    pub async fn load(&self, reference: &Reference) -> Result<Arc<CacheIndex>, RemoteCacheError> {
        Ok(self.read(reference).await?.1)
    }

    /// The tag's manifest digest (`None`: no tag) and index.
    async fn read(
        &self,
        reference: &Reference,
    ) -> Result<(Option<Digest>, Arc<CacheIndex>), RemoteCacheError> {
        let name = reference.to_string();
        let manifest = match self.client.fetch_manifest(reference).await {
            Ok(m) => m,
            Err(PullError::ManifestNotFound { .. }) => {
                return Ok((None, Arc::new(CacheIndex::new())));
            }
            Err(source) => {
                return Err(RemoteCacheError::Pull {
                    reference: name,
                    source,
                });
            }
        };
        if let Some((digest, index)) = self.loaded.lock().get(&name)
            && *digest == manifest.digest
        {
            return Ok((Some(manifest.digest), index.clone()));
        }
        let bad = |reason: String| RemoteCacheError::Manifest {
            reference: name.clone(),
            digest: manifest.digest.clone(),
            reason,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&manifest.bytes).map_err(|e| bad(e.to_string()))?;
        let config = doc
            .get("config")
            .ok_or_else(|| bad("no config".to_owned()))?;
        if config.get("mediaType").and_then(|m| m.as_str()) != Some(INDEX_MEDIA_TYPE) {
            return Err(bad(format!(
                "not a dagr cache (its config is not {INDEX_MEDIA_TYPE})"
            )));
        }
        let index_digest: Digest = config
            .get("digest")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .parse()
            .map_err(|e| bad(format!("config digest: {e}")))?;
        let size = config
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("config has no size".to_owned()))?;
        if size > MAX_INDEX_BYTES {
            return Err(bad(format!(
                "its index has {size} bytes, more than {MAX_INDEX_BYTES}"
            )));
        }
        self.fetch(reference, &index_digest, size).await?;
        let bytes = self
            .content
            .read_bytes(&index_digest)
            .await
            .map_err(|source| RemoteCacheError::Content {
                reference: name.clone(),
                digest: index_digest.clone(),
                source,
            })?;
        let index =
            CacheIndex::parse(&index_digest, &bytes).map_err(|source| RemoteCacheError::Index {
                reference: name.clone(),
                source,
            })?;
        let index = Arc::new(index);
        self.loaded
            .lock()
            .insert(name, (manifest.digest.clone(), index.clone()));
        Ok((Some(manifest.digest), index))
    }

    /// Blob `digest` of `size` bytes as it downloads, for a reader that verifies it (nothing is
    /// stored).
    pub async fn stream(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<dagr_registry::BlobStream, RemoteCacheError> {
        self.client
            .blob_stream(reference, digest, size)
            .await
            .map_err(|source| RemoteCacheError::Pull {
                reference: reference.to_string(),
                source,
            })
    }

    /// Fetches blob `digest` of `size` bytes (a layer the index describes) into the content
    /// store, verified; nothing is fetched when the store has it.
    pub async fn fetch(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RemoteCacheError> {
        self.client
            .fetch_blob_into(reference, digest, size, &self.content)
            .await
            .map_err(|source| RemoteCacheError::Pull {
                reference: reference.to_string(),
                source,
            })
    }

    /// Adds `additions` (whose layers are in the content store) to the cache at `reference`:
    /// uploads the layers the registry lacks, then merges the additions into the index the tag
    /// holds and points the tag at the result. Registries have no compare-and-swap, so after
    /// writing it reads the tag again: when another exporter's write replaced this one, it
    /// merges and writes again (up to [`EXPORT_ROUNDS`] times). Entries already in the cache
    /// are kept as they are: no export removes or replaces another's.
    pub async fn export(
        &self,
        reference: &Reference,
        additions: &CacheIndex,
    ) -> Result<ExportReport, RemoteCacheError> {
        let name = reference.to_string();
        let push_err = |source| RemoteCacheError::Push {
            reference: name.clone(),
            source,
        };
        let mut report = ExportReport::default();
        let (_, current) = self.read(reference).await?;
        let mut needed: Vec<Digest> = Vec::new();
        for (key, entry) in &additions.entries {
            if !current.entries.contains_key(key) {
                needed.extend(entry.outputs.iter().flatten().cloned());
            }
        }
        needed.sort();
        needed.dedup();
        needed.retain(|d| !current.layers.contains_key(d));
        for digest in &needed {
            let pushed = retrying(reference, "blob", || {
                self.client
                    .push_blob(&self.content, reference, digest, None)
            })
            .await
            .map_err(push_err)?;
            if pushed == dagr_registry::BlobPush::Uploaded {
                report.layers_uploaded += 1;
                report.bytes_uploaded += additions.layers.get(digest).map_or(0, |l| l.size);
            }
        }
        let mut base = current;
        for round in 0..EXPORT_ROUNDS {
            if base.contains_all(additions) {
                return Ok(report);
            }
            let mut merged = (*base).clone();
            let added = merged.merge(additions);
            if round == 0 {
                report.entries_added = added;
            }
            let index_bytes = merged.to_bytes();
            let index_digest = self.put(reference, index_bytes.clone()).await?;
            retrying(reference, "blob", || {
                self.client
                    .push_blob(&self.content, reference, &index_digest, None)
            })
            .await
            .map_err(push_err)?;
            let manifest = merged.manifest(&index_digest, index_bytes.len() as u64);
            let key = reference.manifest_key();
            retrying(reference, "manifest", || {
                self.client
                    .push_manifest(reference, &key, MANIFEST_MEDIA_TYPE, manifest.clone())
            })
            .await
            .map_err(push_err)?;
            // Another exporter may have written between this one's read and write: read again
            // (after a moment, so that a write racing this one lands first) and merge again
            // if ours is gone.
            let pause = rand::random_range(50..250u64) * (round as u64 + 1);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            base = self.read(reference).await?.1;
        }
        if base.contains_all(additions) {
            return Ok(report);
        }
        Err(RemoteCacheError::Contended {
            reference: name,
            rounds: EXPORT_ROUNDS,
        })
    }

    async fn put(&self, reference: &Reference, bytes: Bytes) -> Result<Digest, RemoteCacheError> {
        self.content
            .put_bytes(&bytes)
            .await
            .map_err(|source| RemoteCacheError::Content {
                reference: reference.to_string(),
                digest: Digest::of_bytes(&bytes),
                source,
            })
    }
}
