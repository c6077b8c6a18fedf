//! Image export: a container's rootfs snapshot turned into an OCI image in the content store
//! ([`build_image`] -> [`BuiltImage`]), then written as an `oci-archive` tarball
//! ([`export_tarball`]) or pushed to a registry ([`publish`]).
//!
//! The rootfs's snapshot chain is walked from the top down to the base image's top snapshot
//! (named by its chain id). The base image's layer blobs are reused as they are; every snapshot
//! above the base becomes a new gzip layer ([`dagr_snapshot::Snapshotter::diff`]). Snapshots
//! without changes add a history entry marked `empty_layer` and no layer. The config and
//! manifest carry no timestamps unless the caller gives one, so the same snapshots and config
//! give the same digests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use dagr_registry::image::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REF_NAME_ANNOTATION};
use dagr_registry::{Platform, PushError, Reference, ReferenceError};
use dagr_snapshot::{ContentError, DiffError, Digest, SnapshotError, chain_id};
use serde_json::{Map, Value, json};

use crate::Worker;

/// The `oci-layout` file of an OCI image layout.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

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
    #[error("writing the image archive {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image export task failed: {0}")]
    Task(String),
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
    /// RFC 3339 time written as the config's and the new history entries' `created`; `None`
    /// writes none (reproducible images).
    pub created: Option<String>,
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

/// Size of a tar block; entries and the archive end are padded to it.
const TAR_BLOCK: usize = 512;

/// A ustar header for a regular file or a directory owned by root with mtime 0. Names are at
/// most 100 bytes (ours are `blobs/sha256/<hex>` and a few fixed names); sizes of 8 GiB and
/// more use the GNU base-256 form.
fn tar_header(name: &str, size: u64, directory: bool) -> [u8; TAR_BLOCK] {
    fn put(h: &mut [u8; TAR_BLOCK], at: usize, bytes: &[u8]) {
        h[at..at + bytes.len()].copy_from_slice(bytes);
    }
    let mut h = [0u8; TAR_BLOCK];
    let name = &name.as_bytes()[..name.len().min(100)];
    put(&mut h, 0, name);
    let mode = if directory { 0o755 } else { 0o644 };
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    if size < 1 << 33 {
        put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    } else {
        h[124] = 0x80;
        put(&mut h, 128, &size.to_be_bytes());
    }
    put(&mut h, 136, b"00000000000\0");
    h[156] = if directory { b'5' } else { b'0' };
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Writes a tar archive of directories and regular files (deterministic headers).
struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    fn directory(&mut self, name: &str) -> std::io::Result<()> {
        self.out.write_all(&tar_header(name, 0, true))
    }

    fn file_bytes(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.file(name, bytes.len() as u64, bytes)
    }

    /// Appends exactly `size` bytes read from `data`.
    fn file(&mut self, name: &str, size: u64, data: impl Read) -> std::io::Result<()> {
        self.out.write_all(&tar_header(name, size, false))?;
        let copied = std::io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{name}: {copied} of {size} bytes"),
            ));
        }
        let rem = (size % TAR_BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; TAR_BLOCK][..TAR_BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the two zero blocks that end an archive and returns the output.
    fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&[0u8; 2 * TAR_BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
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

/// What goes into the archive besides the blobs.
struct ArchivePlan {
    index_json: Vec<u8>,
    docker_manifest_json: Vec<u8>,
    /// Manifest, config, layers.
    blobs: Vec<Digest>,
}

async fn plan_archive(
    worker: &Worker,
    built: &BuiltImage,
    tag: Option<&str>,
) -> Result<ArchivePlan, ExportError> {
    let bad = |digest: &Digest, reason: String| ExportError::Document {
        digest: digest.clone(),
        reason,
    };
    let manifest = read_json(worker, &built.manifest_digest).await?;
    let config = read_json(worker, &built.config_digest).await?;
    let mut layers = Vec::new();
    for l in manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(&built.manifest_digest, "no layers list".into()))?
    {
        let digest: Digest = l
            .get("digest")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .parse()
            .map_err(|e| bad(&built.manifest_digest, format!("layer digest: {e}")))?;
        layers.push(digest);
    }
    let blob_name = |d: &Digest| format!("blobs/sha256/{}", d.hex());

    let mut platform = Map::new();
    for key in ["architecture", "os", "variant"] {
        if let Some(v) = config.get(key).filter(|v| v.is_string()) {
            platform.insert(key.into(), v.clone());
        }
    }
    let mut descriptor = json!({
        "mediaType": built.media_type,
        "digest": built.manifest_digest.to_string(),
        "size": built.manifest_size,
        "platform": platform,
    });
    let full_name = tag.and_then(full_image_name);
    if let Some(t) = tag {
        let mut annotations = Map::new();
        if let Some(name) = &full_name {
            annotations.insert("io.containerd.image.name".into(), json!(name));
        }
        annotations.insert(REF_NAME_ANNOTATION.into(), json!(t));
        descriptor["annotations"] = Value::Object(annotations);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor],
    });
    // `docker save`'s manifest, read by `docker load` (which ignores index.json).
    let docker_manifest = json!([{
        "Config": blob_name(&built.config_digest),
        "RepoTags": full_name.map(|n| vec![n]).unwrap_or_default(),
        "Layers": layers.iter().map(blob_name).collect::<Vec<_>>(),
    }]);
    let mut blobs = vec![built.manifest_digest.clone(), built.config_digest.clone()];
    for l in layers {
        if !blobs.contains(&l) {
            blobs.push(l);
        }
    }
    Ok(ArchivePlan {
        index_json: encode("index", &index)?,
        docker_manifest_json: encode("docker manifest", &docker_manifest)?,
        blobs,
    })
}

/// Writes the archive of `plan` into `out` (a temporary file that becomes `dest`).
fn write_archive(
    content: &dagr_snapshot::ContentStore,
    plan: &ArchivePlan,
    out: std::fs::File,
    dest: &Path,
) -> Result<(), ExportError> {
    let write_err = |source| ExportError::Write {
        path: dest.to_path_buf(),
        source,
    };
    let mut tar = TarWriter {
        out: std::io::BufWriter::new(out),
    };
    tar.file_bytes("oci-layout", OCI_LAYOUT)
        .map_err(write_err)?;
    tar.file_bytes("index.json", &plan.index_json)
        .map_err(write_err)?;
    tar.file_bytes("manifest.json", &plan.docker_manifest_json)
        .map_err(write_err)?;
    tar.directory("blobs/").map_err(write_err)?;
    tar.directory("blobs/sha256/").map_err(write_err)?;
    for digest in &plan.blobs {
        let path = content.blob_path(digest);
        let blob_err = |source: std::io::Error| ExportError::Content {
            digest: digest.clone(),
            source: ContentError::Io {
                path: path.clone(),
                source,
            },
        };
        let file = std::fs::File::open(&path).map_err(blob_err)?;
        let size = file.metadata().map_err(blob_err)?.len();
        tar.file(&format!("blobs/sha256/{}", digest.hex()), size, file)
            .map_err(write_err)?;
    }
    let out = tar.finish().map_err(write_err)?;
    out.get_ref().sync_all().map_err(write_err)
}

/// Writes `built` as an `oci-archive` tarball at `dest` (replaced atomically if it exists):
/// an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/...`, read by skopeo, podman and
/// containerd) that also carries Docker's `manifest.json` (read by `docker load`). `tag` is
/// written as the `org.opencontainers.image.ref.name`; a full image name (`repo:tag`,
/// `registry/repo:tag`) is also written as Docker's `RepoTags` and containerd's image name.
pub async fn export_tarball(
    worker: &Worker,
    built: &BuiltImage,
    dest: &Path,
    tag: Option<&str>,
) -> Result<(), ExportError> {
    let plan = plan_archive(worker, built, tag).await?;
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dest.with_file_name(format!(
        ".{file_name}.tmp-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let content = worker.content().clone();
    let (temp_path, dest_path) = (temp.clone(), dest.to_path_buf());
    let written = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&temp_path).map_err(|source| ExportError::Write {
            path: temp_path.clone(),
            source,
        })?;
        write_archive(&content, &plan, file, &dest_path)?;
        std::fs::rename(&temp_path, &dest_path).map_err(|source| ExportError::Write {
            path: dest_path.clone(),
            source,
        })
    })
    .await
    .map_err(|e| ExportError::Task(e.to_string()))
    .and_then(|r| r);
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Pushes `built` to `reference` (a tag; `latest` when none is given) and returns the pushed
/// reference pinned to the manifest digest (`registry/repo:tag@sha256:...`).
pub async fn publish(
    worker: &Worker,
    built: &BuiltImage,
    reference: &str,
    session_id: &str,
) -> Result<String, ExportError> {
    let parsed = Reference::parse(reference).map_err(|source| ExportError::Reference {
        reference: reference.to_owned(),
        source,
    })?;
    let digest = worker
        .registry_for(session_id)
        .push(worker.content(), &built.manifest_digest, &parsed, None)
        .await
        .map_err(|source| ExportError::Push {
            digest: built.manifest_digest.clone(),
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
    fn tar_headers_are_ustar_with_a_valid_checksum() {
        let h = tar_header("blobs/sha256/abc", 1234, false);
        assert_eq!(&h[0..16], b"blobs/sha256/abc");
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut blank = h;
        blank[148..156].fill(b' ');
        assert_eq!(stored, blank.iter().map(|&b| u32::from(b)).sum::<u32>());
        let big = tar_header("big", 10 << 30, false);
        assert_eq!(big[124], 0x80);
        assert_eq!(&big[128..136], &(10u64 << 30).to_be_bytes());
        assert_eq!(tar_header("d/", 0, true)[156], b'5');
    }

    #[test]
    fn tar_entries_are_padded_to_blocks() {
        let mut tar = TarWriter { out: Vec::new() };
        tar.file_bytes("a", b"hello").unwrap();
        tar.directory("d/").unwrap();
        let out = tar.finish().unwrap();
        assert_eq!(out.len(), 512 + 512 + 512 + 1024);
        assert_eq!(&out[512..517], b"hello");
        assert!(out[517..1024].iter().all(|&b| b == 0));
        let short = TarWriter { out: Vec::new() }.file("b", 10, &b"abc"[..]);
        assert!(short.is_err(), "a short source is an error");
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
