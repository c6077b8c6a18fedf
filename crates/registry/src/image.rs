//! Image documents: media types, manifest kind detection, platform choice, and [`PulledImage`].

use std::str::FromStr;

pub use dagr_platform::Platform;
use dagr_snapshot::{ContentError, ContentStore, Digest};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The annotation naming an image in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd reads as the full image name (`registry/repo:tag`) of an index entry.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// The `Accept` header of manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (the distribution spec's limit).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_SIZE: usize = 8 << 20;

/// Problems with image documents.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("manifest {digest} has unsupported media type {media_type:?}")]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("document {digest} is not a valid {kind}: {message}")]
    InvalidDocument {
        digest: Digest,
        kind: &'static str,
        message: String,
    },
    #[error("descriptor in {parent} has unsupported digest {digest:?}")]
    UnsupportedDigest { parent: Digest, digest: String },
    #[error("index {digest} has no manifest for platform {platform}")]
    NoMatchingPlatform { digest: Digest, platform: Platform },
    #[error("index {digest} nests indexes too deeply")]
    TooDeep { digest: Digest },
    #[error("content store: {0}")]
    Content(#[from] ContentError),
}

/// Whether a document is a single-image manifest or an index of manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Manifest,
    Index,
}

/// Decides what `bytes` (with digest `digest`) is, from the transport's media type if given, else
/// its `mediaType` field, else its shape.
pub fn detect_kind(
    digest: &Digest,
    media_type: Option<&str>,
    bytes: &[u8],
) -> Result<(ManifestKind, String), ImageError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| ImageError::InvalidDocument {
        digest: digest.clone(),
        kind: "manifest",
        message: e.to_string(),
    })?;
    // A transport media type like "application/json" says nothing: fall back to the document.
    let declared = media_type
        .map(|m| m.split(';').next().unwrap_or(m).trim().to_string())
        .filter(|m| m.starts_with("application/vnd."))
        .or(probe.media_type);
    let kind_of = |m: &str| match m {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Manifest),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    };
    match declared {
        Some(m) => match kind_of(&m) {
            Some(kind) => Ok((kind, m)),
            None => Err(ImageError::UnsupportedMediaType {
                digest: digest.clone(),
                media_type: m,
            }),
        },
        None if probe.manifests.is_some() => Ok((ManifestKind::Index, OCI_INDEX.to_string())),
        None if probe.layers.is_some() => Ok((ManifestKind::Manifest, OCI_MANIFEST.to_string())),
        None => Err(ImageError::UnsupportedMediaType {
            digest: digest.clone(),
            media_type: String::new(),
        }),
    }
}

pub(crate) fn parse_manifest(digest: &Digest, bytes: &[u8]) -> Result<ImageManifest, ImageError> {
    ImageManifest::from_reader(bytes).map_err(|e| ImageError::InvalidDocument {
        digest: digest.clone(),
        kind: "image manifest",
        message: e.to_string(),
    })
}

pub(crate) fn parse_index(digest: &Digest, bytes: &[u8]) -> Result<ImageIndex, ImageError> {
    ImageIndex::from_reader(bytes).map_err(|e| ImageError::InvalidDocument {
        digest: digest.clone(),
        kind: "image index",
        message: e.to_string(),
    })
}

pub(crate) fn parse_config(
    digest: &Digest,
    bytes: &[u8],
) -> Result<ImageConfiguration, ImageError> {
    ImageConfiguration::from_reader(bytes).map_err(|e| ImageError::InvalidDocument {
        digest: digest.clone(),
        kind: "image config",
        message: e.to_string(),
    })
}

/// The content-store digest of a descriptor (sha256 only).
pub fn descriptor_digest(parent: &Digest, descriptor: &Descriptor) -> Result<Digest, ImageError> {
    let text = descriptor.digest().to_string();
    Digest::from_str(&text).map_err(|_| ImageError::UnsupportedDigest {
        parent: parent.clone(),
        digest: text,
    })
}

/// The first entry of `index` for `platform`: an exact variant match first, then any entry the
/// platform accepts; an entry without platform is taken only when it is the only entry.
pub fn choose<'a>(platform: &Platform, index: &'a ImageIndex) -> Option<&'a Descriptor> {
    let accepts = |p: &oci_spec::image::Platform| {
        platform.accepts(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    };
    let manifests = index.manifests();
    let exact = manifests.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| accepts(p) && p.variant().as_deref() == platform.variant.as_deref())
    });
    exact
        .or_else(|| {
            manifests
                .iter()
                .find(|d| d.platform().as_ref().is_some_and(accepts))
        })
        .or_else(|| {
            (manifests.len() == 1 && manifests[0].platform().is_none()).then(|| &manifests[0])
        })
}

/// An image whose manifest, config and layers are all in the content store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// Digest of the image manifest (the platform-specific one when resolved through an index).
    pub manifest_digest: Digest,
    /// Media type of the manifest (OCI or Docker schema 2).
    pub manifest_media_type: String,
    /// The index (or manifest list) the manifest was chosen from, if any.
    pub index_digest: Option<Digest>,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    /// Layer descriptors, base layer first.
    pub layers: Vec<Descriptor>,
}

/// Reads a manifest (whose config and layers must already be in `store`) into a [`PulledImage`],
/// checking that every blob it names is present.
pub(crate) async fn image_from_store(
    store: &ContentStore,
    manifest_digest: &Digest,
    manifest_media_type: String,
    index_digest: Option<Digest>,
) -> Result<PulledImage, ImageError> {
    let bytes = store.read_bytes(manifest_digest).await?;
    let manifest = parse_manifest(manifest_digest, &bytes)?;
    let config_digest = descriptor_digest(manifest_digest, manifest.config())?;
    let config_bytes = store.read_bytes(&config_digest).await?;
    let config = parse_config(&config_digest, &config_bytes)?;
    for layer in manifest.layers() {
        let digest = descriptor_digest(manifest_digest, layer)?;
        if !store.has(&digest) {
            return Err(ContentError::NotFound(digest).into());
        }
    }
    Ok(PulledImage {
        manifest_digest: manifest_digest.clone(),
        manifest_media_type,
        index_digest,
        layers: manifest.layers().clone(),
        manifest,
        config_digest,
        config,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn index_with(platforms: &[(&str, &str, Option<&str>)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut platform = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": format!("sha256:{}", format!("{i}").repeat(64)),
                    "size": 1,
                    "platform": platform,
                })
            })
            .collect();
        let doc =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        ImageIndex::from_reader(doc.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn platform_choice() {
        let index = index_with(&[
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "amd64", None),
            ("linux", "arm64", None),
        ]);
        let pick = |p: &str| {
            choose(&Platform::from_str(p).unwrap(), &index)
                .map(|d| d.digest().to_string()[7..8].to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("2"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("1"));
        assert_eq!(pick("linux/arm").as_deref(), Some("0"));
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("3"));
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(pick("linux/arm/v5"), None);
    }

    #[test]
    fn kind_detection() {
        let d = Digest::of_bytes(b"x");
        let manifest = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            detect_kind(&d, Some("application/json"), manifest)
                .unwrap()
                .0,
            ManifestKind::Manifest
        );
        assert_eq!(detect_kind(&d, None, index).unwrap().0, ManifestKind::Index);
        assert_eq!(
            detect_kind(&d, Some(DOCKER_MANIFEST_LIST), index).unwrap(),
            (ManifestKind::Index, DOCKER_MANIFEST_LIST.to_string())
        );
        assert!(matches!(
            detect_kind(
                &d,
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                manifest
            ),
            Err(ImageError::UnsupportedMediaType { .. })
        ));
        assert!(detect_kind(&d, None, b"nope").is_err());
    }
}
