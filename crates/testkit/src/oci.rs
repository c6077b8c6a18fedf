//! Reading images in tests: [`read_rootfs_tar`] reads a root filesystem tar; [`read_archive`]
//! follows `index.json` (through nested
//! indexes, choosing `linux/amd64`) to one image and gives its config and its layers applied in
//! order, whiteouts included, as a map of [`Entry`]s: what a container of the image sees,
//! without touching the filesystem. Timestamps are left out (they are not comparable between
//! builders); hard links are resolved to the content they share.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// One path of a flattened image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        mode: u32,
        uid: u64,
        gid: u64,
        size: u64,
        sha256: String,
    },
    Symlink {
        uid: u64,
        gid: u64,
        target: String,
    },
    Other {
        kind: String,
        mode: u32,
    },
}

/// An image read out of an archive.
pub struct Image {
    /// The image config (with its `config` section).
    pub config: serde_json::Value,
    /// Path (without a leading `/`) -> entry.
    pub files: BTreeMap<String, Entry>,
}

/// Reads the image of the OCI archive at `path`.
pub fn read_archive(path: &Path) -> Image {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut index = None;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().expect("archive entries") {
        let mut entry = entry.expect("archive entry");
        let name = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        let name = name.trim_start_matches("./").to_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read entry");
        if name == "index.json" {
            index = Some(bytes);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{hex}"), bytes);
        }
    }
    let json = |bytes: &[u8]| -> serde_json::Value { serde_json::from_slice(bytes).expect("json") };
    let mut doc = json(&index.expect("index.json in the archive"));
    // Follow indexes down to a manifest.
    while doc.get("manifests").is_some() {
        let manifests = doc["manifests"].as_array().expect("manifests").clone();
        let chosen = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64" || m.get("platform").is_none())
            .or_else(|| manifests.first())
            .expect("a manifest");
        let digest = chosen["digest"].as_str().expect("digest");
        doc = json(blobs.get(digest).expect("manifest blob"));
    }
    let config = json(
        blobs
            .get(doc["config"]["digest"].as_str().expect("config digest"))
            .expect("config blob"),
    );
    let mut files = BTreeMap::new();
    for layer in doc["layers"].as_array().expect("layers") {
        let blob = blobs
            .get(layer["digest"].as_str().expect("layer digest"))
            .expect("layer blob");
        apply_layer(&mut files, blob);
    }
    Image { config, files }
}

/// The file tree of a plain root filesystem tar (`docker build --output type=tar`).
pub fn read_rootfs_tar(path: &Path) -> BTreeMap<String, Entry> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut files = BTreeMap::new();
    apply_layer(&mut files, &bytes);
    files
}

fn apply_layer(files: &mut BTreeMap<String, Entry>, blob: &[u8]) {
    let reader: Box<dyn Read + '_> = if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().expect("layer entries") {
        let mut entry = entry.expect("layer entry");
        let raw = entry.path().expect("path").to_string_lossy().into_owned();
        let path = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if path.is_empty() || path == "." {
            continue;
        }
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (format!("{p}/"), n.to_owned()),
            None => (String::new(), path.clone()),
        };
        if name == ".wh..wh..opq" {
            files.retain(|k, _| !(k.starts_with(&parent) && k.len() > parent.len()));
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let gone = format!("{parent}{hidden}");
            let under = format!("{gone}/");
            files.retain(|k, _| *k != gone && !k.starts_with(&under));
            continue;
        }
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0) & 0o7777;
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let kind = header.entry_type();
        let value = if kind.is_dir() {
            Entry::Dir { mode, uid, gid }
        } else if kind.is_symlink() {
            Entry::Symlink {
                uid,
                gid,
                target: entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            }
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().trim_start_matches("./").to_owned())
                .unwrap_or_default();
            match files.get(target.trim_start_matches('/')) {
                Some(Entry::File { size, sha256, .. }) => Entry::File {
                    mode,
                    uid,
                    gid,
                    size: *size,
                    sha256: sha256.clone(),
                },
                _ => Entry::Other {
                    kind: format!("hardlink to missing {target}"),
                    mode,
                },
            }
        } else if kind.is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read file");
            Entry::File {
                mode,
                uid,
                gid,
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            }
        } else {
            Entry::Other {
                kind: format!("{kind:?}"),
                mode,
            }
        };
        // A non-directory replaces a directory with everything under it.
        if !matches!(value, Entry::Dir { .. }) {
            let under = format!("{path}/");
            files.retain(|k, _| !k.starts_with(&under));
        }
        files.insert(path, value);
    }
}
