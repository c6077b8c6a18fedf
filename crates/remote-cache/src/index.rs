//! [`CacheIndex`]: the document a remote cache's tag points to (as the config blob of an OCI
//! image manifest whose layers are every layer the entries use, so a registry's own garbage
//! collection keeps them), with [`CacheIndex::merge`] for concurrent exporters.

use std::collections::BTreeMap;

use bytes::Bytes;
use dagr_snapshot::Digest;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Media type of the index blob (the manifest's config).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.dagr.cache.index.v1+json";
/// Media type of the manifest a cache tag points to.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The format version written and read.
pub const VERSION: u32 = 1;
/// Largest index document read (a damaged or hostile registry cannot make an engine read more).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The entries of a remote cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheIndex {
    pub version: u32,
    /// By cache key (as the solver prints it).
    pub entries: BTreeMap<String, CacheEntry>,
    /// Every layer an entry names, by its blob digest.
    pub layers: BTreeMap<Digest, LayerInfo>,
}

/// One cached result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The result's outputs (the first is the result itself), each a snapshot given as its layer
    /// chain, bottom first (empty: an empty snapshot).
    pub outputs: Vec<Vec<Digest>>,
    /// What the runner recorded with the result besides its snapshots (opaque here).
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// When the first exporter wrote it (seconds since the Unix epoch).
    #[serde(default)]
    pub created_unix: u64,
}

/// A layer blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub media_type: String,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
}

/// Why an index document was refused.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cache index {digest}: {reason}")]
    Invalid { digest: Digest, reason: String },
}

impl CacheIndex {
    pub fn new() -> CacheIndex {
        CacheIndex {
            version: VERSION,
            ..CacheIndex::default()
        }
    }

    /// Parses an index blob. Entries naming a layer the index does not describe are dropped
    /// (logged), so whatever a lookup finds can be fetched and verified.
    pub fn parse(digest: &Digest, bytes: &[u8]) -> Result<CacheIndex, IndexError> {
        let invalid = |reason: String| IndexError::Invalid {
            digest: digest.clone(),
            reason,
        };
        let mut index: CacheIndex =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if index.version != VERSION {
            return Err(invalid(format!(
                "format version {} (this engine reads {VERSION})",
                index.version
            )));
        }
        let layers = &index.layers;
        let before = index.entries.len();
        index
            .entries
            .retain(|_, e| e.outputs.iter().flatten().all(|d| layers.contains_key(d)));
        if index.entries.len() != before {
            tracing::warn!(%digest, dropped = before - index.entries.len(), "cache index entries name undescribed layers");
        }
        Ok(index)
    }

    /// The index blob.
    pub fn to_bytes(&self) -> Bytes {
        // Plain maps of strings and numbers: serializing cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Adds `other`'s entries and layers that this index lacks; an entry both have stays as it
    /// is here (cache keys are content addresses: either is right). Returns how many entries
    /// were added.
    pub fn merge(&mut self, other: &CacheIndex) -> usize {
        let mut added = 0;
        for (key, entry) in &other.entries {
            if !self.entries.contains_key(key) {
                for d in entry.outputs.iter().flatten() {
                    if let Some(layer) = other.layers.get(d) {
                        self.layers
                            .entry(d.clone())
                            .or_insert_with(|| layer.clone());
                    }
                }
                self.entries.insert(key.clone(), entry.clone());
                added += 1;
            }
        }
        added
    }

    /// Whether every entry of `other` is here.
    pub fn contains_all(&self, other: &CacheIndex) -> bool {
        other.entries.keys().all(|k| self.entries.contains_key(k))
    }

    /// The manifest that points to this index (stored as `index_digest`, `index_size` bytes):
    /// an OCI image manifest whose config is the index and whose layers are every layer.
    pub fn manifest(&self, index_digest: &Digest, index_size: u64) -> Bytes {
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|(digest, l)| {
                json!({"mediaType": l.media_type, "digest": digest.to_string(), "size": l.size})
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": INDEX_MEDIA_TYPE,
                "digest": index_digest.to_string(),
                "size": index_size,
            },
            "layers": layers,
        });
        Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> (Digest, LayerInfo) {
        (
            Digest::of_bytes(&[n]),
            LayerInfo {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                size: u64::from(n),
                diff_id: Digest::of_bytes(&[n, n]),
            },
        )
    }

    fn index_with(key: &str, layers: &[u8]) -> CacheIndex {
        let mut index = CacheIndex::new();
        let chain: Vec<Digest> = layers.iter().map(|n| layer(*n).0).collect();
        for n in layers {
            let (d, l) = layer(*n);
            index.layers.insert(d, l);
        }
        index.entries.insert(
            key.to_owned(),
            CacheEntry {
                outputs: vec![chain],
                metadata: json!({"k": key}),
                created_unix: 1,
            },
        );
        index
    }

    #[test]
    fn merge_keeps_both_sides_and_existing_entries() {
        let mut a = index_with("k1", &[1, 2]);
        let b = index_with("k2", &[1, 3]);
        let mut b_conflict = index_with("k1", &[4]);
        b_conflict.merge(&b);
        assert_eq!(a.merge(&b_conflict), 1);
        assert!(a.contains_all(&b));
        assert_eq!(a.entries["k1"].outputs[0].len(), 2, "existing entry kept");
        assert_eq!(
            a.layers.len(),
            3,
            "layer 4 only served the dropped duplicate"
        );
        let bytes = a.to_bytes();
        let digest = Digest::of_bytes(&bytes);
        assert_eq!(CacheIndex::parse(&digest, &bytes).expect("parse"), a);
    }

    #[test]
    fn parse_drops_entries_with_undescribed_layers_and_refuses_other_versions() {
        let mut index = index_with("k1", &[1]);
        index.entries.insert(
            "k2".into(),
            CacheEntry {
                outputs: vec![vec![Digest::of_bytes(b"nowhere")]],
                metadata: serde_json::Value::Null,
                created_unix: 0,
            },
        );
        let bytes = index.to_bytes();
        let d = Digest::of_bytes(&bytes);
        let parsed = CacheIndex::parse(&d, &bytes).expect("parse");
        assert_eq!(parsed.entries.len(), 1);
        index.version = 9;
        let err = CacheIndex::parse(&d, &index.to_bytes()).expect_err("version");
        assert!(err.to_string().contains("format version 9"), "{err}");
        assert!(CacheIndex::parse(&d, b"{").is_err());
    }

    #[test]
    fn manifest_lists_every_layer_once() {
        let mut a = index_with("k1", &[1, 2]);
        a.merge(&index_with("k2", &[2, 3]));
        let m: serde_json::Value =
            serde_json::from_slice(&a.manifest(&Digest::of_bytes(b"i"), 5)).expect("json");
        assert_eq!(m["layers"].as_array().map(Vec::len), Some(3));
        assert_eq!(m["config"]["mediaType"], INDEX_MEDIA_TYPE);
    }
}
