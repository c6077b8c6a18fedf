//! The busybox test image, built from the host's static `/bin/busybox` with no registry access.
//!
//! [`busybox_image`] writes a one-layer OCI image into a directory: an OCI image layout (`oci/`,
//! tag `latest`), the same layout as an OCI archive (`busybox-oci.tar`), and the image's blobs as
//! plain files (`layer.tar.gz`, `config.json`, `manifest.json`). The bytes are reproducible: fixed
//! mtimes and owners, entries in byte order, gzip without a name or time; so the manifest digest
//! only changes with the host's busybox binary.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// Where the busybox binary of the image comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The tag of the image in its layout and archive.
pub const TAG: &str = "latest";

/// The image written by [`busybox_image`].
pub struct BusyboxImage {
    /// The directory everything was written to.
    pub dir: PathBuf,
    /// The OCI image layout (`<dir>/oci`), tag [`TAG`].
    pub layout: PathBuf,
    /// The OCI archive (`<dir>/busybox-oci.tar`): a tar of the layout.
    pub archive: PathBuf,
    /// The manifest, config and gzip layer blobs, byte for byte as in the layout.
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    /// `sha256:<hex>` of the uncompressed layer.
    pub diff_id: String,
}

/// One entry of the rootfs layer.
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(&'static str),
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Builds the image into `dir` (created if missing; earlier contents of the same names are
/// replaced). Panics with a clear message when `/bin/busybox` is missing or not static.
pub fn busybox_image(dir: &Path) -> BusyboxImage {
    busybox_image_of(dir, Path::new(BUSYBOX), "amd64")
}

/// Where `cargo xtask prereqs` puts the arm64 busybox of Debian's `busybox-static:arm64`,
/// relative to the target directory.
pub const ARM64_BUSYBOX: &str = "fixtures/busybox-arm64";

/// The `linux/arm64` busybox image, from the binary at [`ARM64_BUSYBOX`] under `target_dir`.
/// Panics saying how to get it when it is missing.
pub fn busybox_arm64_image(dir: &Path, target_dir: &Path) -> BusyboxImage {
    let binary = target_dir.join(ARM64_BUSYBOX);
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo xtask prereqs` (it extracts Debian's busybox-static:arm64)",
        binary.display()
    );
    busybox_image_of(dir, &binary, "arm64")
}

/// The image of the static busybox `binary` for `architecture` (applets as the host's busybox
/// lists them).
pub fn busybox_image_of(dir: &Path, binary: &Path, architecture: &str) -> BusyboxImage {
    let layer_tar = tar_of(&rootfs(binary));
    let diff_id = sha256_digest(&layer_tar);
    let layer = gzip(&layer_tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/"
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "busybox-static rootfs" }]
    }))
    .expect("config json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(&config),
            "size": config.len()
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256_digest(&layer),
            "size": layer.len()
        }]
    }))
    .expect("manifest json");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&manifest),
            "size": manifest.len(),
            "platform": { "architecture": architecture, "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": TAG }
        }]
    }))
    .expect("index json");

    // The layout, as files and as an archive of the same entries.
    let mut layout: BTreeMap<String, Entry> = BTreeMap::new();
    layout.insert("blobs".into(), Entry::Dir(0o755));
    layout.insert("blobs/sha256".into(), Entry::Dir(0o755));
    for blob in [&layer, &config, &manifest] {
        let hex = sha256_digest(blob)["sha256:".len()..].to_owned();
        layout.insert(
            format!("blobs/sha256/{hex}"),
            Entry::File(0o644, blob.clone()),
        );
    }
    layout.insert(
        "oci-layout".into(),
        Entry::File(0o644, br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    layout.insert("index.json".into(), Entry::File(0o644, index));

    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let layout_dir = dir.join("oci");
    let _ = std::fs::remove_dir_all(&layout_dir);
    for (path, entry) in &layout {
        let target = layout_dir.join(path);
        match entry {
            Entry::Dir(_) => std::fs::create_dir_all(&target),
            Entry::File(_, bytes) => write_file(&target, bytes),
            Entry::Symlink(_) => unreachable!("the layout has no symlinks"),
        }
        .unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
    }
    let archive = dir.join("busybox-oci.tar");
    for (name, bytes) in [
        (archive.clone(), tar_of(&layout)),
        (dir.join("layer.tar.gz"), layer.clone()),
        (dir.join("config.json"), config.clone()),
        (dir.join("manifest.json"), manifest.clone()),
    ] {
        write_file(&name, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", name.display()));
    }
    BusyboxImage {
        dir: dir.to_path_buf(),
        layout: layout_dir,
        archive,
        manifest,
        config,
        layer,
        diff_id,
    }
}

/// An OCI layout at `dir` (tag [`TAG`]) whose index lists the manifests of `images` (each with
/// its config's platform): a multi-platform image.
pub fn multi_platform_layout(dir: &Path, images: &[&BusyboxImage]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("create {}: {e}", blobs.display()));
    let mut manifests = Vec::new();
    for image in images {
        for blob in [&image.layer, &image.config, &image.manifest] {
            let hex = &sha256_digest(blob)["sha256:".len()..];
            write_file(&blobs.join(hex), blob).expect("write blob");
        }
        let config: serde_json::Value = serde_json::from_slice(&image.config).expect("config");
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&image.manifest),
            "size": image.manifest.len(),
            "platform": { "architecture": config["architecture"], "os": config["os"] },
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let index_bytes = serde_json::to_vec(&index).expect("index json");
    write_file(
        &blobs.join(&sha256_digest(&index_bytes)["sha256:".len()..]),
        &index_bytes,
    )
    .expect("write index blob");
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256_digest(&index_bytes),
            "size": index_bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": TAG }
        }]
    });
    write_file(
        &dir.join("index.json"),
        &serde_json::to_vec(&top).expect("json"),
    )
    .expect("index");
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("layout");
    dir.to_path_buf()
}

/// Writes through a temporary name then renames, so a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The rootfs: busybox, one absolute symlink per applet (as `busybox --install -s` makes them),
/// the usual directories and a minimal `/etc`.
fn rootfs(binary_path: &Path) -> BTreeMap<String, Entry> {
    let binary = std::fs::read(binary_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (apt-get install busybox-static)",
            binary_path.display()
        )
    });
    let ldd = Command::new("ldd").arg(binary_path).output();
    assert!(
        ldd.is_err() || ldd.is_ok_and(|o| !o.status.success()),
        "{} is dynamically linked: install busybox-static",
        binary_path.display()
    );
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .unwrap_or_else(|e| panic!("{BUSYBOX} --list-full: {e}"));
    assert!(list.status.success(), "{BUSYBOX} --list-full failed");

    let mut entries = BTreeMap::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "var", "run",
    ] {
        entries.insert(dir.to_owned(), Entry::Dir(0o755));
    }
    entries.insert("tmp".into(), Entry::Dir(0o1777));
    entries.insert("root".into(), Entry::Dir(0o700));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let mut parent = Path::new(applet).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir(0o755));
            parent = p.parent();
        }
        entries.insert(applet.to_owned(), Entry::Symlink("/bin/busybox"));
    }
    entries.insert("bin/busybox".into(), Entry::File(0o755, binary));
    for (name, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/nsswitch.conf", "hosts: files dns\n"),
        ("etc/hosts", ""),
        ("etc/resolv.conf", ""),
        ("etc/hostname", ""),
    ] {
        entries.insert(name.into(), Entry::File(0o644, text.as_bytes().to_vec()));
    }
    entries
}

/// A ustar archive of `entries` in key order, owned by 0:0 with mtime 0.
fn tar_of(entries: &BTreeMap<String, Entry>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let (kind, mode, data): (tar::EntryType, u32, &[u8]) = match entry {
            Entry::Dir(mode) => (tar::EntryType::Directory, *mode, &[]),
            Entry::File(mode, bytes) => (tar::EntryType::Regular, *mode, bytes),
            Entry::Symlink(target) => {
                header
                    .set_link_name(target)
                    .unwrap_or_else(|e| panic!("link name of {path}: {e}"));
                (tar::EntryType::Symlink, 0o777, &[])
            }
        };
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        let name = match entry {
            Entry::Dir(_) => format!("{path}/"),
            _ => path.clone(),
        };
        builder
            .append_data(&mut header, name, data)
            .unwrap_or_else(|e| panic!("tar entry {path}: {e}"));
    }
    builder.into_inner().expect("finish tar")
}

/// gzip without a file name or mtime, so equal input gives equal bytes.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_complete() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let first = busybox_image(a.path());
        let second = busybox_image(b.path());
        assert_eq!(first.manifest, second.manifest);
        assert_eq!(
            std::fs::read(&first.archive).expect("archive"),
            std::fs::read(&second.archive).expect("archive")
        );

        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&first.layer[..]));
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            if path == "bin/sh" {
                assert_eq!(
                    entry.link_name().expect("link").as_deref(),
                    Some(Path::new("/bin/busybox"))
                );
            }
            names.push(path);
        }
        for want in ["bin/busybox", "bin/sh", "etc/passwd", "tmp/", "root/"] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries in byte order");

        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(first.layout.join("index.json")).expect("index"))
                .expect("index json");
        assert_eq!(
            index["manifests"][0]["digest"],
            sha256_digest(&first.manifest).as_str()
        );
        let blob = first
            .layout
            .join("blobs/sha256")
            .join(&sha256_digest(&first.layer)["sha256:".len()..]);
        assert_eq!(std::fs::read(blob).expect("layer blob"), first.layer);
    }
}
