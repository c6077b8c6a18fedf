//! Image export: a container's rootfs snapshot turned into an OCI image in the content store
//! ([`build_image`] -> [`BuiltImage`]), then written as an `oci-archive` tarball
//! ([`export_tarball`], with the registry crate's archive writer) or pushed to a registry
//! ([`publish`]).
//!
//! The rootfs's snapshot chain is walked from the top down to the base image's top snapshot
//! (named by its chain id). The base image's layer blobs are reused as they are; every snapshot
//! above the base becomes a new gzip layer ([`dagr_snapshot::Snapshotter::diff`]). Snapshots
//! without changes add a history entry marked `empty_layer` and no layer. The config and
//! manifest carry no timestamps unless the caller gives one, so the same snapshots and config
//! give the same digests.

/// The digest type of built images and indexes.
pub use dagr_snapshot::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dagr_registry::image::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use dagr_registry::layout::{self, LayoutError};
use dagr_registry::{ExportEntry, Platform, PushError, Reference, ReferenceError};
use dagr_snapshot::{ContentError, DiffError, SnapshotError, chain_id};
use serde_json::{Map, Value, json};

use crate::Worker;

/// What the `created_by` of history entries for layers made here says.
const CREATED_BY: &str = "dagr";

/// Why building, exporting or publishing an image failed; each names the snapshot, digest, path
/// or reference involved.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading snapshot {key}: {source}")]
    Snapshot {
        key: String,
        #[source]
        source: SnapshotError,
    },
    #[error(
        "snapshot {rootfs} does not sit on snapshot {base_top} (the top of base image {base_manifest})"
    )]
    NotOnBase {
        rootfs: String,
        base_top: String,
        base_manifest: Digest,
    },
    #[error("diffing snapshot {key}: {source}")]
    Diff {
        key: String,
        #[source]
        source: DiffError,
    },
    #[error("blob {digest}: {source}")]
    Content {
        digest: Digest,
        #[source]
        source: ContentError,
    },
    #[error("storing the image {what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: ContentError,
    },
    #[error("image document {digest}: {reason}")]
    Document { digest: Digest, reason: String },
    #[error("encoding the image {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the image archive: {0}")]
    Archive(#[from] LayoutError),
    #[error("image reference {reference:?}: {source}")]
    Reference {
        reference: String,
        #[source]
        source: ReferenceError,
    },
    #[error("publishing image {digest}: {source}")]
    Push {
        digest: Digest,
        #[source]
        source: Box<PushError>,
    },
}

/// The `config` section of the image to build (what `docker inspect` shows as `Config`), plus
/// its platform and an optional creation time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfigInput {
    /// `None`: the base image's platform, or the host's for a scratch image.
    pub platform: Option<Platform>,
    /// `NAME=value` entries, in order.
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `port/proto` (e.g. `8080/tcp`).
    pub exposed_ports: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub stop_signal: Option<String>,
    /// The section's other keys (`Healthcheck`, `OnBuild`, `Shell`, `ArgsEscaped`, ...), kept
    /// as they are.
    pub other: BTreeMap<String, Value>,
    /// RFC 3339 time written as the config's and the new history entries' `created`; `None`
    /// writes none (reproducible images).
    pub created: Option<String>,
}

/// The `config` keys [`ImageConfigInput`] has fields for.
const KNOWN_KEYS: [&str; 10] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    // Docker's legacy fields that other writers leave empty: not carried over.
    "Image",
];

/// Null, `""`, `false`, `[]`, `{}`: what Docker's legacy config fields hold when unused.
pub fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    })
}

/// Keys of an object (`{"80/tcp": {}}`) or items of an array (`["80/tcp"]`).
fn key_set(v: Option<&Value>) -> BTreeSet<String> {
    match v {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        _ => BTreeSet::new(),
    }
}

fn non_empty_string(v: Option<&Value>) -> Option<String> {
    v?.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

impl ImageConfigInput {
    /// Reads an OCI/Docker image config's `config` section (e.g. [`crate::ImageMeta::config`]);
    /// unknown or malformed fields are left out. The platform is left to the base image.
    pub fn from_oci_config(config: &Value) -> ImageConfigInput {
        let field = |name: &str| config.get(name).filter(|v| !v.is_null());
        ImageConfigInput {
            platform: None,
            env: string_list(field("Env")).unwrap_or_default(),
            cmd: string_list(field("Cmd")),
            entrypoint: string_list(field("Entrypoint")),
            working_dir: non_empty_string(field("WorkingDir")),
            user: non_empty_string(field("User")),
            labels: field("Labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
            exposed_ports: key_set(field("ExposedPorts")),
            volumes: key_set(field("Volumes")),
            stop_signal: non_empty_string(field("StopSignal")),
            other: config
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, v)| !KNOWN_KEYS.contains(&k.as_str()) && !is_blank(v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            created: None,
        }
    }

    /// The `config` section as written into the image config (empty fields left out).
    fn to_json(&self) -> Value {
        let mut c = Map::new();
        let set_of = |s: &BTreeSet<String>| {
            Value::Object(s.iter().map(|k| (k.clone(), json!({}))).collect())
        };
        if let Some(u) = &self.user {
            c.insert("User".into(), json!(u));
        }
        if !self.exposed_ports.is_empty() {
            c.insert("ExposedPorts".into(), set_of(&self.exposed_ports));
        }
        if !self.env.is_empty() {
            c.insert("Env".into(), json!(self.env));
        }
        if let Some(e) = &self.entrypoint {
            c.insert("Entrypoint".into(), json!(e));
        }
        if let Some(cmd) = &self.cmd {
            c.insert("Cmd".into(), json!(cmd));
        }
        if !self.volumes.is_empty() {
            c.insert("Volumes".into(), set_of(&self.volumes));
        }
        if let Some(w) = &self.working_dir {
            c.insert("WorkingDir".into(), json!(w));
        }
        if !self.labels.is_empty() {
            c.insert("Labels".into(), json!(self.labels));
        }
        if let Some(s) = &self.stop_signal {
            c.insert("StopSignal".into(), json!(s));
        }
        for (k, v) in &self.other {
            c.insert(k.clone(), v.clone());
        }
        Value::Object(c)
    }
}

/// An image manifest (with its config and layers) in the worker's content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    /// Always the OCI image manifest media type.
    pub media_type: String,
    pub config_digest: Digest,
    /// Number of layers in the manifest (base layers included).
    pub layer_count: usize,
}

/// The base image as far as building on it goes.
struct BaseImage {
    /// Layer descriptors as written into the new manifest.
    layers: Vec<Value>,
    diff_ids: Vec<Digest>,
    history: Vec<Value>,
    platform: Option<Platform>,
    /// The chain id of the top layer: the key of the base's top snapshot.
    top: Option<String>,
}

/// OCI equivalents of Docker layer media types (the blob bytes are the same).
fn oci_layer_media_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        other => other,
    }
}

async fn read_json(worker: &Worker, digest: &Digest) -> Result<Value, ExportError> {
    let bytes = worker
        .content()
        .read_bytes(digest)
        .await
        .map_err(|source| ExportError::Content {
            digest: digest.clone(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ExportError::Document {
        digest: digest.clone(),
        reason: e.to_string(),
    })
}

async fn read_base(worker: &Worker, manifest_digest: &Digest) -> Result<BaseImage, ExportError> {
    let bad = |digest: &Digest, reason: String| ExportError::Document {
        digest: digest.clone(),
        reason,
    };
    let manifest = read_json(worker, manifest_digest).await?;
    let config_digest: Digest = manifest
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(manifest_digest, "no config digest".into()))?
        .parse()
        .map_err(|e| bad(manifest_digest, format!("config digest: {e}")))?;
    let config = read_json(worker, &config_digest).await?;
    let empty = Vec::new();
    let manifest_layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let diff_ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
        .iter()
        .map(|d| {
            d.as_str()
                .unwrap_or_default()
                .parse::<Digest>()
                .map_err(|e| bad(&config_digest, format!("diff id: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != manifest_layers.len() {
        return Err(bad(
            manifest_digest,
            format!(
                "{} layers but its config {config_digest} lists {} diff ids",
                manifest_layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for l in manifest_layers {
        let digest: Digest = l
            .get("digest")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .parse()
            .map_err(|e| bad(manifest_digest, format!("layer digest: {e}")))?;
        let size = l
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(manifest_digest, format!("layer {digest} has no size")))?;
        let media_type = l
            .get("mediaType")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(manifest_digest, format!("layer {digest} has no media type")))?;
        if !worker.content().has(&digest) {
            return Err(ExportError::Content {
                source: ContentError::NotFound(digest.clone()),
                digest,
            });
        }
        let mut d = json!({
            "mediaType": oci_layer_media_type(media_type),
            "digest": digest.to_string(),
            "size": size,
        });
        if let Some(a) = l.get("annotations").filter(|a| a.is_object()) {
            d["annotations"] = a.clone();
        }
        layers.push(d);
    }
    let mut top: Option<Digest> = None;
    for d in &diff_ids {
        top = Some(chain_id(top.as_ref(), d));
    }
    let platform = match (
        config.get("os").and_then(Value::as_str),
        config.get("architecture").and_then(Value::as_str),
    ) {
        (Some(os), Some(arch)) => Some(Platform {
            os: os.to_owned(),
            architecture: arch.to_owned(),
            variant: config
                .get("variant")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }),
        _ => None,
    };
    Ok(BaseImage {
        layers,
        diff_ids,
        history: config
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        platform,
        top: top.map(|t| t.to_string()),
    })
}

/// The diff id of a layer without entries (a tar of just its two end blocks).
fn empty_layer_diff_id() -> Digest {
    Digest::of_bytes(&[0u8; 1024])
}

/// Snapshot keys from just above `stop` (or the bottom of the chain) up to `rootfs`, bottom first.
fn chain_above(
    worker: &Worker,
    rootfs: &str,
    stop: Option<&str>,
    base_manifest: Option<&Digest>,
) -> Result<Vec<String>, ExportError> {
    let mut keys = Vec::new();
    let mut current = rootfs.to_owned();
    loop {
        if Some(current.as_str()) == stop {
            break;
        }
        let info = worker
            .snapshots()
            .stat(&current)
            .map_err(|source| ExportError::Snapshot {
                key: current.clone(),
                source,
            })?;
        keys.push(current);
        match (info.parent, stop, base_manifest) {
            (Some(parent), _, _) => current = parent,
            (None, Some(top), Some(manifest)) => {
                return Err(ExportError::NotOnBase {
                    rootfs: rootfs.to_owned(),
                    base_top: top.to_owned(),
                    base_manifest: manifest.clone(),
                });
            }
            (None, _, _) => break,
        }
    }
    keys.reverse();
    Ok(keys)
}

fn encode(what: &'static str, v: &Value) -> Result<Vec<u8>, ExportError> {
    serde_json::to_vec(v).map_err(|source| ExportError::Encode { what, source })
}

/// Builds an OCI image of the committed snapshot `rootfs` on the base image whose manifest is
/// `base_manifest` (in the content store; `None` for a scratch image) and stores its new layers,
/// config and manifest in the content store. See the module docs.
pub async fn build_image(
    worker: &Worker,
    rootfs: &str,
    base_manifest: Option<&Digest>,
    config: ImageConfigInput,
) -> Result<BuiltImage, ExportError> {
    let base = match base_manifest {
        Some(d) => Some(read_base(worker, d).await?),
        None => None,
    };
    let stop = base.as_ref().and_then(|b| b.top.clone());
    let keys = chain_above(worker, rootfs, stop.as_deref(), base_manifest)?;

    let (mut layers, mut diff_ids, mut history) = match &base {
        Some(b) => (b.layers.clone(), b.diff_ids.clone(), b.history.clone()),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let empty = empty_layer_diff_id();
    for key in &keys {
        let layer = worker
            .snapshots()
            .diff(worker.content(), key)
            .await
            .map_err(|source| ExportError::Diff {
                key: key.clone(),
                source,
            })?;
        let mut entry = Map::new();
        if let Some(c) = &config.created {
            entry.insert("created".into(), json!(c));
        }
        entry.insert("created_by".into(), json!(CREATED_BY));
        if layer.diff_id == empty {
            entry.insert("empty_layer".into(), json!(true));
        } else {
            layers.push(json!({
                "mediaType": layer.media_type,
                "digest": layer.digest.to_string(),
                "size": layer.size,
            }));
            diff_ids.push(layer.diff_id);
        }
        history.push(Value::Object(entry));
    }

    let platform = config
        .platform
        .clone()
        .or_else(|| base.as_ref().and_then(|b| b.platform.clone()))
        .unwrap_or_else(Platform::host);
    let mut image_config = Map::new();
    if let Some(c) = &config.created {
        image_config.insert("created".into(), json!(c));
    }
    image_config.insert("architecture".into(), json!(platform.architecture));
    image_config.insert("os".into(), json!(platform.os));
    if let Some(v) = &platform.variant {
        image_config.insert("variant".into(), json!(v));
    }
    image_config.insert("config".into(), config.to_json());
    image_config.insert(
        "rootfs".into(),
        json!({
            "type": "layers",
            "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    );
    if !history.is_empty() {
        image_config.insert("history".into(), Value::Array(history));
    }
    let config_bytes = encode("config", &Value::Object(image_config))?;
    let config_digest = worker
        .content()
        .put_bytes(&config_bytes)
        .await
        .map_err(|source| ExportError::Store {
            what: "config",
            source,
        })?;

    let layer_count = layers.len();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers,
    });
    let manifest_bytes = encode("manifest", &manifest)?;
    let manifest_digest = worker
        .content()
        .put_bytes(&manifest_bytes)
        .await
        .map_err(|source| ExportError::Store {
            what: "manifest",
            source,
        })?;
    Ok(BuiltImage {
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        media_type: OCI_MANIFEST.to_owned(),
        config_digest,
        layer_count,
    })
}

/// Stores an OCI image index of `images` (each manifest with its platform, in order) and
/// returns its digest: a multi-platform image.
pub async fn build_index(
    worker: &Worker,
    images: &[(BuiltImage, Platform)],
) -> Result<Digest, ExportError> {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(built, platform)| {
            let mut p = Map::new();
            p.insert("architecture".into(), json!(platform.architecture));
            p.insert("os".into(), json!(platform.os));
            if let Some(v) = &platform.variant {
                p.insert("variant".into(), json!(v));
            }
            json!({
                "mediaType": built.media_type,
                "digest": built.manifest_digest.to_string(),
                "size": built.manifest_size,
                "platform": Value::Object(p),
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = encode("index", &index)?;
    worker
        .content()
        .put_bytes(&bytes)
        .await
        .map_err(|source| ExportError::Store {
            what: "index",
            source,
        })
}

/// Whether an export tag is a full image name (`repo:tag`, `registry/repo`) rather than a bare
/// tag, and its normalized form.
fn full_image_name(tag: &str) -> Option<String> {
    if !tag.contains([':', '/']) {
        return None;
    }
    Reference::parse(tag)
        .ok()
        .filter(|r| r.digest().is_none())
        .map(|r| r.to_string())
}

/// Writes `built` as an `oci-archive` tarball at `dest` (replaced atomically if it exists) with
/// [`dagr_registry::layout::export_archive`]: an OCI layout that also carries Docker's
/// `manifest.json` (read by `docker load`). `tag` is written as the
/// `org.opencontainers.image.ref.name`; a full image name (`repo:tag`, `registry/repo:tag`) is
/// also written as Docker's `RepoTags` and containerd's image name.
pub async fn export_tarball(
    worker: &Worker,
    root: &Digest,
    dest: &Path,
    tag: Option<&str>,
) -> Result<(), ExportError> {
    let entry = ExportEntry {
        digest: root.clone(),
        ref_name: tag.map(str::to_owned),
        image_name: tag.and_then(full_image_name),
    };
    Ok(layout::export_archive(worker.content(), dest, &[entry]).await?)
}

/// Pushes the manifest or index `root` to `reference` (a tag; `latest` when none is given)
/// and returns the pushed reference pinned to its digest (`registry/repo:tag@sha256:...`).
pub async fn publish(
    worker: &Worker,
    root: &Digest,
    reference: &str,
    session_id: &str,
) -> Result<String, ExportError> {
    let parsed = Reference::parse(reference).map_err(|source| ExportError::Reference {
        reference: reference.to_owned(),
        source,
    })?;
    let digest = worker
        .registry_for(session_id)
        .push(worker.content(), root, &parsed, None)
        .await
        .map_err(|source| ExportError::Push {
            digest: root.clone(),
            source: Box::new(source),
        })?;
    Ok(parsed.with_digest(digest).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_layer_diff_id_is_the_well_known_one() {
        assert_eq!(
            empty_layer_diff_id().to_string(),
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        );
    }

    #[test]
    fn config_section_round_trips_and_drops_empty_fields() {
        let section = json!({
            "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "Env": ["PATH=/bin", "A=b"],
            "Entrypoint": null,
            "Cmd": ["/bin/sh"],
            "WorkingDir": "",
            "Labels": {"z": "1", "a": "2"},
        });
        let input = ImageConfigInput::from_oci_config(&section);
        assert_eq!(input.user.as_deref(), Some("1000:1000"));
        assert_eq!(input.entrypoint, None);
        assert_eq!(input.working_dir, None);
        assert_eq!(input.exposed_ports.len(), 2);
        let out = input.to_json();
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"User":"1000:1000","ExposedPorts":{"53/udp":{},"8080/tcp":{}},"Env":["PATH=/bin","A=b"],"Cmd":["/bin/sh"],"Labels":{"a":"2","z":"1"}}"#
        );
        // oci-spec serializes exposed ports as a map but some writers use a list.
        let listed = ImageConfigInput::from_oci_config(&json!({"ExposedPorts": ["80/tcp"]}));
        assert_eq!(listed.exposed_ports, BTreeSet::from(["80/tcp".to_owned()]));
    }

    #[test]
    fn docker_layer_types_become_oci_ones() {
        assert_eq!(
            oci_layer_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            oci_layer_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }

    #[test]
    fn only_full_names_become_repo_tags() {
        assert_eq!(full_image_name("v1"), None);
        assert_eq!(
            full_image_name("example.test/app:v1").as_deref(),
            Some("example.test/app:v1")
        );
        assert_eq!(
            full_image_name("app:v1").as_deref(),
            Some("docker.io/library/app:v1")
        );
        assert_eq!(full_image_name("Bad Name:x"), None);
    }
}
