//! OCI image layouts: import from a layout directory or an `oci-archive` tarball into the content
//! store, and export images from the content store to a layout directory or tarball. The one
//! archive writer of the engine: exported tarballs also carry Docker's `manifest.json`, so that
//! `docker load` reads them too.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use dagr_snapshot::{ContentError, ContentStore, Digest};
use oci_spec::image::Descriptor;
use tokio::io::AsyncWriteExt as _;

use crate::image::{
    self, IMAGE_NAME_ANNOTATION, ImageError, MAX_MANIFEST_SIZE, ManifestKind, Platform,
    PulledImage, REF_NAME_ANNOTATION,
};

const OCI_LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
/// Docker's `docker save` manifest, read by `docker load` (which ignores `index.json`).
const DOCKER_MANIFEST_FILE: &str = "manifest.json";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const MAX_INDEX_DEPTH: usize = 4;

/// Why an OCI layout import or export failed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("oci layout {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("oci layout {path}: invalid {what}: {message}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("oci layout {path}: no image named {name:?}")]
    NoSuchImage { path: PathBuf, name: String },
    #[error("oci layout {path}: {count} images and no name given to choose one")]
    Ambiguous { path: PathBuf, count: usize },
    #[error("oci layout {path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error("oci layout {path}: blob {digest}: {source}")]
    Content {
        path: PathBuf,
        digest: Digest,
        #[source]
        source: ContentError,
    },
    #[error("oci layout {path}: blob {digest} has {actual} bytes, descriptor says {expected}")]
    BlobSize {
        path: PathBuf,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("oci layout {path}: blocking task failed: {message}")]
    Task { path: PathBuf, message: String },
}

/// One image to export: a manifest or index in the content store, with an optional
/// `org.opencontainers.image.ref.name` (usually the tag) and full image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    pub digest: Digest,
    pub ref_name: Option<String>,
    /// A full image name (`registry/repo:tag`), written as containerd's
    /// `io.containerd.image.name` annotation and, in archives, as Docker's `RepoTags`.
    pub image_name: Option<String>,
}

/// Where import reads blobs from.
enum BlobSource<'a> {
    /// A layout directory: blobs are copied into the store (verified) when needed.
    Directory(&'a Path),
    /// An archive whose blobs were all imported (verified) already.
    Imported(&'a Path),
}

impl BlobSource<'_> {
    fn path(&self) -> &Path {
        match self {
            BlobSource::Directory(p) | BlobSource::Imported(p) => p,
        }
    }
}

/// Imports the image named `ref_name` (the `org.opencontainers.image.ref.name` annotation; with
/// `None` the layout must hold exactly one image) from the layout directory `dir` into `store`,
/// choosing `platform` from an index. Every copied blob is digest- and size-verified.
pub async fn import_layout(
    store: &ContentStore,
    dir: &Path,
    ref_name: Option<&str>,
    platform: &Platform,
) -> Result<PulledImage, LayoutError> {
    let layout = read_file(dir, OCI_LAYOUT_FILE, 4096).await?;
    check_layout_file(dir, &layout)?;
    let index = read_file(dir, INDEX_FILE, MAX_MANIFEST_SIZE).await?;
    resolve(
        store,
        BlobSource::Directory(dir),
        &index,
        ref_name,
        platform,
    )
    .await
}

/// Imports the image named `ref_name` from an `oci-archive` tarball (a tar of a layout
/// directory). All blobs in the archive are stored (digest-verified) on the way.
pub async fn import_archive(
    store: &ContentStore,
    archive: &Path,
    ref_name: Option<&str>,
    platform: &Platform,
) -> Result<PulledImage, LayoutError> {
    let handle = tokio::runtime::Handle::current();
    let path = archive.to_path_buf();
    let store_for_task = store.clone();
    let ArchiveDocuments { layout, index } =
        tokio::task::spawn_blocking(move || read_archive(&handle, &store_for_task, &path))
            .await
            .map_err(|e| LayoutError::Task {
                path: archive.to_path_buf(),
                message: e.to_string(),
            })??;
    let layout = layout.ok_or_else(|| LayoutError::Invalid {
        path: archive.to_path_buf(),
        what: OCI_LAYOUT_FILE,
        message: "missing".into(),
    })?;
    check_layout_file(archive, &layout)?;
    let index = index.ok_or_else(|| LayoutError::Invalid {
        path: archive.to_path_buf(),
        what: INDEX_FILE,
        message: "missing".into(),
    })?;
    resolve(
        store,
        BlobSource::Imported(archive),
        &index,
        ref_name,
        platform,
    )
    .await
}

/// The two documents of an archive's layout: `oci-layout` and `index.json`, if present.
struct ArchiveDocuments {
    layout: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
}

/// Reads an archive on a blocking thread: returns `oci-layout` and `index.json`, stores blobs.
fn read_archive(
    handle: &tokio::runtime::Handle,
    store: &ContentStore,
    path: &Path,
) -> Result<ArchiveDocuments, LayoutError> {
    let io_err = |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut layout = None;
    let mut index = None;
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let entry_path = entry.path().map_err(io_err)?;
        let parts: Vec<String> = entry_path
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        match parts.as_slice() {
            [name] if name == OCI_LAYOUT_FILE => {
                layout = Some(read_entry(&mut entry, 4096, path, OCI_LAYOUT_FILE)?);
            }
            [name] if name == INDEX_FILE => {
                index = Some(read_entry(&mut entry, MAX_MANIFEST_SIZE, path, INDEX_FILE)?);
            }
            [blobs, algorithm, hex] if blobs == "blobs" && algorithm == "sha256" => {
                let digest = Digest::from_hex(hex).map_err(|e| LayoutError::Invalid {
                    path: path.to_path_buf(),
                    what: "blob name",
                    message: e.to_string(),
                })?;
                if store.has(&digest) {
                    continue;
                }
                let content_err = |source| LayoutError::Content {
                    path: path.to_path_buf(),
                    digest: digest.clone(),
                    source,
                };
                let mut writer = handle
                    .block_on(store.writer(Some(digest.clone())))
                    .map_err(content_err)?;
                let mut buffer = vec![0u8; 256 * 1024];
                loop {
                    let n = entry.read(&mut buffer).map_err(io_err)?;
                    if n == 0 {
                        break;
                    }
                    handle
                        .block_on(writer.write_all(&buffer[..n]))
                        .map_err(io_err)?;
                }
                handle.block_on(writer.commit()).map_err(content_err)?;
            }
            _ => {}
        }
    }
    Ok(ArchiveDocuments { layout, index })
}

fn read_entry(
    entry: &mut impl std::io::Read,
    limit: usize,
    path: &Path,
    what: &'static str,
) -> Result<Vec<u8>, LayoutError> {
    let mut out = Vec::new();
    entry
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| LayoutError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() > limit {
        return Err(LayoutError::Invalid {
            path: path.to_path_buf(),
            what,
            message: format!("larger than {limit} bytes"),
        });
    }
    Ok(out)
}

async fn read_file(dir: &Path, name: &'static str, limit: usize) -> Result<Vec<u8>, LayoutError> {
    let path = dir.join(name);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|source| LayoutError::Io {
            path: path.clone(),
            source,
        })?;
    if bytes.len() > limit {
        return Err(LayoutError::Invalid {
            path,
            what: name,
            message: format!("larger than {limit} bytes"),
        });
    }
    Ok(bytes)
}

fn check_layout_file(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct LayoutFile {
        image_layout_version: String,
    }
    let parsed: LayoutFile = serde_json::from_slice(bytes).map_err(|e| LayoutError::Invalid {
        path: path.to_path_buf(),
        what: OCI_LAYOUT_FILE,
        message: e.to_string(),
    })?;
    if !parsed.image_layout_version.starts_with("1.") {
        return Err(LayoutError::Invalid {
            path: path.to_path_buf(),
            what: OCI_LAYOUT_FILE,
            message: format!("unsupported version {:?}", parsed.image_layout_version),
        });
    }
    Ok(())
}

/// Picks the entry of the top-level `index.json` and follows it to one image manifest.
async fn resolve(
    store: &ContentStore,
    source: BlobSource<'_>,
    index_bytes: &[u8],
    ref_name: Option<&str>,
    platform: &Platform,
) -> Result<PulledImage, LayoutError> {
    let path = source.path().to_path_buf();
    let index_digest = Digest::of_bytes(index_bytes);
    let image_err = |source| LayoutError::Image {
        path: path.clone(),
        source,
    };
    let top = image::parse_index(&index_digest, index_bytes).map_err(image_err)?;
    let entry = match ref_name {
        Some(name) => top
            .manifests()
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME_ANNOTATION))
                    .is_some_and(|n| n == name)
            })
            .ok_or_else(|| LayoutError::NoSuchImage {
                path: path.clone(),
                name: name.to_string(),
            })?,
        None => match top.manifests().as_slice() {
            [only] => only,
            all => {
                return Err(LayoutError::Ambiguous {
                    path: path.clone(),
                    count: all.len(),
                });
            }
        },
    };

    let mut descriptor = entry.clone();
    let mut parent = index_digest;
    let mut chosen_from = None;
    for _ in 0..=MAX_INDEX_DEPTH {
        let digest = image::descriptor_digest(&parent, &descriptor).map_err(image_err)?;
        ensure_blob(store, &source, &digest, descriptor.size()).await?;
        let bytes = store
            .read_bytes(&digest)
            .await
            .map_err(|e| content_error(&path, &digest, e))?;
        let declared = descriptor.media_type().to_string();
        let (kind, media_type) =
            image::detect_kind(&digest, Some(&declared), &bytes).map_err(image_err)?;
        if kind == ManifestKind::Manifest {
            let manifest = image::parse_manifest(&digest, &bytes).map_err(image_err)?;
            let mut blobs: Vec<&Descriptor> = vec![manifest.config()];
            blobs.extend(manifest.layers());
            for blob in blobs {
                let blob_digest = image::descriptor_digest(&digest, blob).map_err(image_err)?;
                ensure_blob(store, &source, &blob_digest, blob.size()).await?;
            }
            return image::image_from_store(store, &digest, media_type, chosen_from)
                .await
                .map_err(image_err);
        }
        let index = image::parse_index(&digest, &bytes).map_err(image_err)?;
        let next = image::choose(platform, &index).ok_or_else(|| {
            image_err(ImageError::NoMatchingPlatform {
                digest: digest.clone(),
                platform: platform.clone(),
            })
        })?;
        descriptor = next.clone();
        chosen_from.get_or_insert_with(|| digest.clone());
        parent = digest;
    }
    Err(image_err(ImageError::TooDeep { digest: parent }))
}

fn content_error(path: &Path, digest: &Digest, source: ContentError) -> LayoutError {
    LayoutError::Content {
        path: path.to_path_buf(),
        digest: digest.clone(),
        source,
    }
}

/// Makes sure `digest` is in the store, copying it from a layout directory if needed.
async fn ensure_blob(
    store: &ContentStore,
    source: &BlobSource<'_>,
    digest: &Digest,
    expected_size: u64,
) -> Result<(), LayoutError> {
    let path = source.path();
    if !store.has(digest) {
        let BlobSource::Directory(dir) = source else {
            return Err(content_error(
                path,
                digest,
                ContentError::NotFound(digest.clone()),
            ));
        };
        let blob_path = dir.join("blobs").join("sha256").join(digest.hex());
        let io_err = |source| LayoutError::Io {
            path: blob_path.clone(),
            source,
        };
        let mut file = tokio::fs::File::open(&blob_path).await.map_err(io_err)?;
        let mut writer = store
            .writer(Some(digest.clone()))
            .await
            .map_err(|e| content_error(path, digest, e))?;
        tokio::io::copy(&mut file, &mut writer)
            .await
            .map_err(io_err)?;
        writer
            .commit()
            .await
            .map_err(|e| content_error(path, digest, e))?;
    }
    let actual = store
        .size(digest)
        .map_err(|e| content_error(path, digest, e))?;
    if actual != expected_size {
        return Err(LayoutError::BlobSize {
            path: path.to_path_buf(),
            digest: digest.clone(),
            expected: expected_size,
            actual,
        });
    }
    Ok(())
}

/// What an export writes: the `index.json` bytes, the blobs in order, and Docker's
/// `manifest.json` (archives only; `None` when no entry is an image manifest).
struct ExportPlan {
    index_json: Vec<u8>,
    blobs: Vec<Digest>,
    docker_manifest_json: Option<Vec<u8>>,
}

async fn plan_export(
    store: &ContentStore,
    path: &Path,
    entries: &[ExportEntry],
) -> Result<ExportPlan, LayoutError> {
    let image_err = |source| LayoutError::Image {
        path: path.to_path_buf(),
        source,
    };
    let mut seen = HashSet::new();
    let mut blobs = Vec::new();
    let mut descriptors = Vec::new();
    let mut docker_manifest = Vec::new();
    let blob_name = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    for entry in entries {
        let bytes = store
            .read_bytes(&entry.digest)
            .await
            .map_err(|e| content_error(path, &entry.digest, e))?;
        let (kind, media_type) =
            image::detect_kind(&entry.digest, None, &bytes).map_err(image_err)?;
        let mut descriptor = serde_json::json!({
            "mediaType": media_type,
            "digest": entry.digest.to_string(),
            "size": bytes.len(),
        });
        if kind == ManifestKind::Manifest {
            let manifest = image::parse_manifest(&entry.digest, &bytes).map_err(image_err)?;
            let config_digest =
                image::descriptor_digest(&entry.digest, manifest.config()).map_err(image_err)?;
            let config_bytes = store
                .read_bytes(&config_digest)
                .await
                .map_err(|e| content_error(path, &config_digest, e))?;
            if let Ok(config) = image::parse_config(&config_digest, &config_bytes) {
                let mut platform = serde_json::json!({
                    "architecture": config.architecture().to_string(),
                    "os": config.os().to_string(),
                });
                if let Some(variant) = config.variant() {
                    platform["variant"] = serde_json::json!(variant);
                }
                descriptor["platform"] = platform;
            }
            let layers = manifest
                .layers()
                .iter()
                .map(|l| image::descriptor_digest(&entry.digest, l).map(|d| blob_name(&d)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(image_err)?;
            docker_manifest.push(serde_json::json!({
                "Config": blob_name(&config_digest),
                "RepoTags": entry.image_name.iter().collect::<Vec<_>>(),
                "Layers": layers,
            }));
        }
        let mut annotations = serde_json::Map::new();
        if let Some(name) = &entry.image_name {
            annotations.insert(IMAGE_NAME_ANNOTATION.into(), serde_json::json!(name));
        }
        if let Some(name) = &entry.ref_name {
            annotations.insert(REF_NAME_ANNOTATION.into(), serde_json::json!(name));
        }
        if !annotations.is_empty() {
            descriptor["annotations"] = serde_json::Value::Object(annotations);
        }
        descriptors.push(descriptor);
        collect_blobs(store, path, &entry.digest, &mut seen, &mut blobs, 0).await?;
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::OCI_INDEX,
        "manifests": descriptors,
    });
    let encode = |what: &'static str, value: &serde_json::Value| {
        serde_json::to_vec(value).map_err(|e| LayoutError::Invalid {
            path: path.to_path_buf(),
            what,
            message: e.to_string(),
        })
    };
    let index_json = encode(INDEX_FILE, &index)?;
    let docker_manifest_json = match docker_manifest.is_empty() {
        true => None,
        false => Some(encode(
            DOCKER_MANIFEST_FILE,
            &serde_json::Value::Array(docker_manifest),
        )?),
    };
    Ok(ExportPlan {
        index_json,
        blobs,
        docker_manifest_json,
    })
}

/// Adds `root` and everything it references to `blobs` (each once).
async fn collect_blobs(
    store: &ContentStore,
    path: &Path,
    root: &Digest,
    seen: &mut HashSet<Digest>,
    blobs: &mut Vec<Digest>,
    depth: usize,
) -> Result<(), LayoutError> {
    let image_err = |source| LayoutError::Image {
        path: path.to_path_buf(),
        source,
    };
    if depth > MAX_INDEX_DEPTH {
        return Err(image_err(ImageError::TooDeep {
            digest: root.clone(),
        }));
    }
    if !seen.insert(root.clone()) {
        return Ok(());
    }
    blobs.push(root.clone());
    let bytes = store
        .read_bytes(root)
        .await
        .map_err(|e| content_error(path, root, e))?;
    let (kind, _) = image::detect_kind(root, None, &bytes).map_err(image_err)?;
    match kind {
        ManifestKind::Manifest => {
            let manifest = image::parse_manifest(root, &bytes).map_err(image_err)?;
            let mut referenced = vec![manifest.config()];
            referenced.extend(manifest.layers());
            for descriptor in referenced {
                let digest = image::descriptor_digest(root, descriptor).map_err(image_err)?;
                if !store.has(&digest) {
                    return Err(content_error(
                        path,
                        &digest,
                        ContentError::NotFound(digest.clone()),
                    ));
                }
                if seen.insert(digest.clone()) {
                    blobs.push(digest);
                }
            }
        }
        ManifestKind::Index => {
            let index = image::parse_index(root, &bytes).map_err(image_err)?;
            for child in index.manifests() {
                let digest = image::descriptor_digest(root, child).map_err(image_err)?;
                Box::pin(collect_blobs(store, path, &digest, seen, blobs, depth + 1)).await?;
            }
        }
    }
    Ok(())
}

/// Writes `entries` (with everything they reference) from `store` as an OCI layout in `dir`
/// (created if missing; an existing `index.json` is replaced).
pub async fn export_layout(
    store: &ContentStore,
    dir: &Path,
    entries: &[ExportEntry],
) -> Result<(), LayoutError> {
    let plan = plan_export(store, dir, entries).await?;
    let blobs_dir = dir.join("blobs").join("sha256");
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayoutError::Io { path, source }
    };
    tokio::fs::create_dir_all(&blobs_dir)
        .await
        .map_err(io_err(&blobs_dir))?;
    for digest in &plan.blobs {
        let target = blobs_dir.join(digest.hex());
        let expected = store
            .size(digest)
            .map_err(|e| content_error(dir, digest, e))?;
        if tokio::fs::metadata(&target)
            .await
            .is_ok_and(|m| m.len() == expected)
        {
            continue;
        }
        tokio::fs::copy(store.blob_path(digest), &target)
            .await
            .map_err(io_err(&target))?;
    }
    let layout_path = dir.join(OCI_LAYOUT_FILE);
    tokio::fs::write(&layout_path, OCI_LAYOUT_CONTENT)
        .await
        .map_err(io_err(&layout_path))?;
    let index_path = dir.join(INDEX_FILE);
    tokio::fs::write(&index_path, &plan.index_json)
        .await
        .map_err(io_err(&index_path))?;
    Ok(())
}

/// Writes `entries` (with everything they reference) from `store` as an `oci-archive` tarball
/// at `archive` (replaced atomically if it exists): an OCI layout (`oci-layout`, `index.json`,
/// `blobs/sha256/...`, read by skopeo, podman and containerd) that also carries Docker's
/// `manifest.json` for the image manifests among `entries` (read by `docker load`). Headers are
/// deterministic: the same entries give the same bytes.
pub async fn export_archive(
    store: &ContentStore,
    archive: &Path,
    entries: &[ExportEntry],
) -> Result<(), LayoutError> {
    let plan = plan_export(store, archive, entries).await?;
    let store = store.clone();
    let path = archive.to_path_buf();
    tokio::task::spawn_blocking(move || write_archive_atomically(&store, &path, &plan))
        .await
        .map_err(|e| LayoutError::Task {
            path: archive.to_path_buf(),
            message: e.to_string(),
        })?
}

/// Writes the archive into a temporary file next to `path`, then renames it over `path`.
fn write_archive_atomically(
    store: &ContentStore,
    path: &Path,
    plan: &ExportPlan,
) -> Result<(), LayoutError> {
    // Unique per process and call: concurrent exports to one path never share a temp file.
    static EXPORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        EXPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let written = write_archive(store, &temp, plan).and_then(|()| {
        std::fs::rename(&temp, path).map_err(|source| LayoutError::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

fn write_archive(store: &ContentStore, path: &Path, plan: &ExportPlan) -> Result<(), LayoutError> {
    let io_err = |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io_err)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        builder
            .append_data(&mut h, dir, std::io::empty())
            .map_err(io_err)?;
    }
    for digest in &plan.blobs {
        let blob_path = store.blob_path(digest);
        let file = std::fs::File::open(&blob_path).map_err(|source| LayoutError::Io {
            path: blob_path.clone(),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| LayoutError::Io {
                path: blob_path.clone(),
                source,
            })?
            .len();
        let mut h = header(tar::EntryType::Regular, size, 0o644);
        builder
            .append_data(&mut h, format!("blobs/sha256/{}", digest.hex()), file)
            .map_err(io_err)?;
    }
    let mut files = vec![
        (INDEX_FILE, plan.index_json.as_slice()),
        (OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT),
    ];
    if let Some(docker) = &plan.docker_manifest_json {
        files.push((DOCKER_MANIFEST_FILE, docker.as_slice()));
    }
    for (name, bytes) in files {
        let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
        builder.append_data(&mut h, name, bytes).map_err(io_err)?;
    }
    let mut writer = builder.into_inner().map_err(io_err)?;
    std::io::Write::flush(&mut writer).map_err(io_err)?;
    writer.get_ref().sync_all().map_err(io_err)?;
    Ok(())
}
